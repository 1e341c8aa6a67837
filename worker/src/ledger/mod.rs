//! The worker's side of the click ledger: the partitions it owns, what it
//! has counted of each since the last write, and the write itself.
//!
//! For each partition, events are counted in segments. A segment starts
//! where every earlier event is in the stored counts (`start`) and ends one
//! past its last event (`end`). Writing it takes three steps:
//!
//! 1. record `pending = end` in the partition's progress row, on condition
//!    that this worker still owns it (else it is fenced off: drop it);
//! 2. replace every row the segment touches: a row whose `through` is at
//!    or past `end` has the segment already (a write that was cut short is
//!    being redone), so it is left alone; any other has its `through` at or
//!    before `start`, and gets the segment's counts added, and `end`;
//! 3. commit `end` to Kafka, only now that every row is durable.
//!
//! A worker that claims a partition reads its progress: events before
//! `committed` are skipped, and if the last write may be half done, the
//! first segment ends exactly at its `pending`, neither before nor after
//! (it holds at most one write's worth of events, so memory stays
//! bounded). So every row is either wholly before or wholly past each
//! segment, whoever wrote it and however often it was cut short. That is
//! what makes the counts exact however often events are delivered again.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream};
use links::{
    Code,
    clicks::{Aggregator, ClickBatch, ClickEvent, Counts, TopKey, UserAgentClassifier},
    storage::scylla::{Progress, ScyllaStore, Tally, TallyKey},
};
use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The first wait after a failed call; it doubles up to `worker.max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The give-up signal fired while a call was being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gave up retrying: the worker is stopping")]
pub struct Abandoned;

/// Retries `call` with capped exponential backoff until it succeeds or
/// `abandon` fires.
pub async fn with_retries<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    failures: &Counter,
    max_backoff: Duration,
    abandon: &CancellationToken,
    mut call: impl FnMut() -> F,
) -> Result<T, Abandoned> {
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        let error = tokio::select! {
            biased;
            () = abandon.cancelled() => return Err(Abandoned),
            result = call() => match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            },
        };
        failures.inc();
        tracing::warn!(what, attempt, %error, retry_in = ?wait, "call failed; retrying");
        tokio::select! {
            () = abandon.cancelled() => return Err(Abandoned),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(max_backoff);
        attempt += 1;
    }
}

/// What to do with the event at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counted before: skip it.
    Skip,
    /// Count it (or set it aside as a dead letter), then call
    /// [`Source::taken`].
    Take,
    /// Write what is pending first, then ask again: the event lies past
    /// the end of a write another worker may have left half done.
    FlushFirst,
}

/// One partition this worker owns.
#[derive(Debug)]
pub struct Source {
    pub partition: i32,
    owner: Uuid,
    start: i64,
    end: i64,
    /// While events before it may already be in some rows: the `pending`
    /// read when the partition was claimed.
    replay_end: Option<i64>,
    aggregator: Aggregator,
}

impl Source {
    pub fn new(
        partition: i32,
        owner: Uuid,
        progress: Progress,
        classifier: Arc<UserAgentClassifier>,
    ) -> Self {
        Self {
            partition,
            owner,
            start: progress.committed,
            end: progress.committed,
            replay_end: (progress.pending > progress.committed).then_some(progress.pending),
            aggregator: Aggregator::new(classifier),
        }
    }

    pub fn admit(&mut self, offset: i64) -> Admit {
        if offset < self.start {
            return Admit::Skip;
        }
        if let Some(replay_end) = self.replay_end
            && offset >= replay_end
        {
            if self.end > self.start {
                // No event lies between the last one and `replay_end`, so
                // the segment may end there, where some rows already are.
                self.end = replay_end;
                return Admit::FlushFirst;
            }
            self.start = replay_end;
            self.end = replay_end;
            self.replay_end = None;
        }
        Admit::Take
    }

    /// The event at `offset` was taken: counted, or set aside.
    pub fn taken(&mut self, offset: i64) {
        self.end = self.end.max(offset + 1);
    }

    pub fn record(&mut self, event: &ClickEvent) {
        self.aggregator.record(event);
    }

    /// Rows counted in memory since the last write.
    pub fn pending_rows(&self) -> usize {
        self.aggregator.pending_rows()
    }

    /// Whether events were taken since the last write.
    pub fn has_segment(&self) -> bool {
        self.end > self.start
    }

    /// Whether the segment may be written now. Not while it ends short of
    /// a write another worker may have left half done: some rows may
    /// already hold events up to there, others not, so the segment must
    /// end exactly there ([`Admit::FlushFirst`] or its last event).
    pub fn writable(&self) -> bool {
        self.has_segment() && self.replay_end.is_none_or(|r| self.end >= r)
    }

    #[cfg(test)]
    fn end(&self) -> i64 {
        self.end
    }

    fn progress(&self) -> Progress {
        Progress {
            committed: self.start,
            pending: self.replay_end.map_or(self.end, |r| r.max(self.end)),
        }
    }

    /// Takes the segment out to be written, if it may be (see
    /// [`Source::writable`]); the next one starts where it ends. Call it
    /// only when no write is under way: `committed` says the previous
    /// segment is written.
    pub fn cut(&mut self) -> Option<Cut> {
        if !self.writable() {
            return None;
        }
        let cut = Cut {
            partition: self.partition,
            owner: self.owner,
            progress: self.progress(),
            start: self.start,
            end: self.end,
            batch: self.aggregator.take(),
        };
        self.start = self.end;
        if self.replay_end.is_some_and(|r| r <= self.start) {
            self.replay_end = None;
        }
        Some(cut)
    }
}

/// A segment taken out of its source to be written.
#[derive(Debug)]
pub struct Cut {
    partition: i32,
    owner: Uuid,
    progress: Progress,
    start: i64,
    end: i64,
    batch: ClickBatch,
}

/// What a write did, for the log and the tests' arithmetic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Partitions whose segment was written, with the offset to commit.
    pub committed: Vec<(i32, i64)>,
    /// Partitions another worker claimed: drop them.
    pub fenced: Vec<i32>,
    pub rows_written: usize,
    /// Rows that already held their segment (a write being redone).
    pub rows_skipped: usize,
}

/// The ledger writer of one worker: the store, and the rows' current
/// tallies it remembers so that a row written again needs no read.
#[derive(Debug)]
pub struct Ledger {
    store: Arc<ScyllaStore>,
    topic: String,
    known: moka::sync::Cache<(i32, TallyKey), Tally>,
    concurrency: usize,
    max_backoff: Duration,
    /// Failed (and retried) calls to ScyllaDB.
    failures: Counter,
}

/// One row change of a write.
struct RowChange {
    partition: i32,
    key: TallyKey,
    delta: Counts,
    start: i64,
    end: i64,
}

impl Ledger {
    pub fn new(
        store: Arc<ScyllaStore>,
        topic: String,
        cached_rows: u64,
        concurrency: usize,
        max_backoff: Duration,
        failures: Counter,
    ) -> Self {
        Self {
            failures,
            store,
            topic,
            known: moka::sync::Cache::builder()
                .max_capacity(cached_rows)
                .support_invalidation_closures()
                .build(),
            concurrency,
            max_backoff,
        }
    }

    /// Claims a partition just assigned: from now on only this worker
    /// writes its rows.
    pub async fn claim(
        &self,
        partition: i32,
        classifier: Arc<UserAgentClassifier>,
        abandon: &CancellationToken,
    ) -> Result<Source, Abandoned> {
        // Another worker may have written the rows since we last had them.
        self.forget(partition);
        let owner = Uuid::now_v7();
        let progress = with_retries(
            "claim a partition",
            &self.failures,
            self.max_backoff,
            abandon,
            || self.store.claim_tallies(&self.topic, partition, owner),
        )
        .await?;
        tracing::info!(
            partition,
            committed = progress.committed,
            pending = progress.pending,
            replay = progress.pending > progress.committed,
            "claimed a partition"
        );
        Ok(Source::new(partition, owner, progress, classifier))
    }

    /// Forgets the tallies of a partition this worker no longer owns.
    pub fn forget(&self, partition: i32) {
        // Only fails without support_invalidation_closures, set in `new`.
        let _ = self
            .known
            .invalidate_entries_if(move |(p, _), _| *p == partition);
    }

    /// Writes cut segments: step 1 for all their partitions at once, then
    /// step 2 for all their rows. The caller commits (step 3).
    pub async fn write(
        &self,
        cuts: Vec<Cut>,
        abandon: &CancellationToken,
    ) -> Result<Written, Abandoned> {
        let mut written = Written::default();
        let checks = stream::iter(cuts.into_iter().map(|cut| async move {
            let still_owner = with_retries(
                "record progress",
                &self.failures,
                self.max_backoff,
                abandon,
                || {
                    self.store
                        .advance_tallies(&self.topic, cut.partition, cut.owner, cut.progress)
                },
            )
            .await?;
            Ok::<_, Abandoned>((cut, still_owner))
        }))
        .buffer_unordered(self.concurrency)
        .collect::<Vec<_>>()
        .await;
        let mut changes = Vec::new();
        for check in checks {
            let (cut, still_owner) = check?;
            if still_owner {
                written.committed.push((cut.partition, cut.end));
                changes.extend(segment_work(cut.partition, cut.batch, cut.start, cut.end));
            } else {
                tracing::warn!(
                    partition = cut.partition,
                    "another worker claimed this partition"
                );
                self.forget(cut.partition);
                written.fenced.push(cut.partition);
            }
        }

        let results = stream::iter(
            changes
                .into_iter()
                .map(|change| self.apply(change, abandon)),
        )
        .buffer_unordered(self.concurrency)
        .collect::<Vec<_>>()
        .await;
        for result in results {
            let (rows_written, rows_skipped) = result?;
            written.rows_written += rows_written;
            written.rows_skipped += rows_skipped;
        }
        Ok(written)
    }

    /// Applies one piece of work; how many rows it wrote and how many
    /// already had their segment.
    async fn apply(
        &self,
        work: Work,
        abandon: &CancellationToken,
    ) -> Result<(usize, usize), Abandoned> {
        match work {
            Work::Row(change) => self.apply_row(change, abandon).await,
            Work::DayTops(tops) => self.apply_day_tops(tops, abandon).await,
        }
    }

    async fn apply_row(
        &self,
        change: RowChange,
        abandon: &CancellationToken,
    ) -> Result<(usize, usize), Abandoned> {
        let cache_key = (change.partition, change.key);
        let current = match self.known.get(&cache_key) {
            Some(tally) => tally,
            None => with_retries(
                "read a count",
                &self.failures,
                self.max_backoff,
                abandon,
                || self.store.read_tally(cache_key.0, &cache_key.1),
            )
            .await?
            .unwrap_or_default(),
        };
        let Some(next) = next_tally(current, change.delta, change.start, change.end, || {
            format!("{:?} of partition {}", cache_key.1, cache_key.0)
        }) else {
            self.known.insert(cache_key, current);
            return Ok((0, 1));
        };
        with_retries(
            "write a count",
            &self.failures,
            self.max_backoff,
            abandon,
            || self.store.write_tally(cache_key.0, &cache_key.1, next),
        )
        .await?;
        self.known.insert(cache_key, next);
        Ok((1, 0))
    }

    /// A link's top-list rows of one day: one partition, read at most once
    /// and written in batches.
    async fn apply_day_tops(
        &self,
        tops: DayTops,
        abandon: &CancellationToken,
    ) -> Result<(usize, usize), Abandoned> {
        let DayTops {
            partition,
            code,
            day,
            start,
            end,
            deltas,
        } = tops;
        let cache_key = |top: &TopKey| (partition, TallyKey::Top(code.clone(), top.clone()));
        let cached: Vec<Option<Tally>> = deltas
            .iter()
            .map(|(top, _)| self.known.get(&cache_key(top)))
            .collect();
        let stored: HashMap<TopKey, Tally> = if cached.iter().any(Option::is_none) {
            with_retries(
                "read a day's top lists",
                &self.failures,
                self.max_backoff,
                abandon,
                || self.store.read_day_tops(partition, &code, day),
            )
            .await?
            .into_iter()
            .collect()
        } else {
            HashMap::new()
        };
        let mut next = Vec::with_capacity(deltas.len());
        let mut skipped = 0;
        for ((top, clicks), cached) in deltas.into_iter().zip(cached) {
            let current = cached
                .or_else(|| stored.get(&top).copied())
                .unwrap_or_default();
            let delta = Counts {
                clicks,
                bot_clicks: 0,
            };
            match next_tally(current, delta, start, end, || {
                format!("{top:?} of {code}, partition {partition}")
            }) {
                Some(tally) => next.push((top, tally)),
                None => {
                    self.known.insert(cache_key(&top), current);
                    skipped += 1;
                }
            }
        }
        for chunk in next.chunks(TOPS_PER_BATCH) {
            with_retries(
                "write a day's top lists",
                &self.failures,
                self.max_backoff,
                abandon,
                || self.store.write_day_tops(partition, &code, chunk),
            )
            .await?;
        }
        for (top, tally) in &next {
            self.known.insert(cache_key(top), *tally);
        }
        Ok((next.len(), skipped))
    }
}

/// A row's tally after a segment, or `None` if it has the segment already.
fn next_tally(
    current: Tally,
    delta: Counts,
    start: i64,
    end: i64,
    row: impl FnOnce() -> String,
) -> Option<Tally> {
    if current.through >= end {
        return None;
    }
    if current.through > start {
        // Only a second writer outside the progress protocol (another
        // consumer group on the same keyspace) can leave this.
        tracing::error!(
            row = row(),
            through = current.through,
            start,
            end,
            "a count row is ahead of its partition's progress; leaving it as it is"
        );
        return None;
    }
    let mut counts = current.counts;
    counts.add(delta);
    Some(Tally {
        counts,
        through: end,
    })
}

/// Top-list rows written in one batch, at most: well under the cluster's
/// batch size warning (5 KiB by default in Cassandra) for typical values.
const TOPS_PER_BATCH: usize = 32;

/// The top-list changes of one link and day, in one partition.
struct DayTops {
    partition: i32,
    code: Code,
    day: i64,
    start: i64,
    end: i64,
    deltas: Vec<(TopKey, u64)>,
}

/// One piece of a write: a row, or a partition of top-list rows.
enum Work {
    Row(RowChange),
    DayTops(DayTops),
}

/// The work of one partition's segment.
fn segment_work(partition: i32, batch: ClickBatch, start: i64, end: i64) -> Vec<Work> {
    let mut work = Vec::new();
    for (code, link) in batch.links {
        let change = |key: TallyKey, delta: Counts| {
            Work::Row(RowChange {
                partition,
                key,
                delta,
                start,
                end,
            })
        };
        work.push(change(TallyKey::Totals(code.clone()), link.totals));
        for b in link.buckets {
            work.push(change(
                TallyKey::Bucket(code.clone(), b.granularity, b.start),
                b.counts,
            ));
        }
        let mut days: HashMap<i64, Vec<(TopKey, u64)>> = HashMap::new();
        for (top, clicks) in link.tops {
            days.entry(top.day).or_default().push((top, clicks));
        }
        for (day, deltas) in days {
            work.push(Work::DayTops(DayTops {
                partition,
                code: code.clone(),
                day,
                start,
                end,
                deltas,
            }));
        }
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(committed: i64, pending: i64) -> Source {
        Source::new(
            0,
            Uuid::now_v7(),
            Progress { committed, pending },
            UserAgentClassifier::shared(),
        )
    }

    #[test]
    fn events_before_committed_are_skipped() {
        let mut s = source(100, 100);
        assert_eq!(s.admit(99), Admit::Skip);
        assert_eq!(s.admit(100), Admit::Take);
        s.taken(100);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 100,
                pending: 101
            }
        );
        assert!(s.cut().is_some());
        assert_eq!(s.admit(100), Admit::Skip);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 101,
                pending: 101
            }
        );
    }

    #[test]
    fn a_half_done_write_ends_the_first_segment_exactly() {
        let mut s = source(100, 150);
        for offset in 100..125 {
            assert_eq!(s.admit(offset), Admit::Take);
            s.taken(offset);
        }
        // Not written short of the half-done write's end.
        assert!(s.has_segment() && !s.writable());
        // The next event is past it: write up to there first.
        assert_eq!(s.admit(160), Admit::FlushFirst);
        assert_eq!(s.end(), 150);
        assert!(s.writable());
        assert_eq!(
            s.progress(),
            Progress {
                committed: 100,
                pending: 150
            }
        );
        let cut = s.cut().expect("writable");
        assert_eq!((cut.start, cut.end), (100, 150));
        assert_eq!(s.admit(160), Admit::Take);
        s.taken(160);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 161
            }
        );
    }

    #[test]
    fn the_last_event_before_a_half_done_end_makes_the_segment_writable() {
        let mut s = source(100, 150);
        for offset in 100..150 {
            assert_eq!(s.admit(offset), Admit::Take);
            s.taken(offset);
            assert_eq!(s.writable(), offset == 149);
        }
        assert!(s.cut().is_some() && s.cut().is_none());
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 150
            }
        );
    }

    #[test]
    fn nothing_left_to_replay_moves_the_start_to_the_pending_end() {
        let mut s = source(100, 150);
        assert_eq!(s.admit(150), Admit::Take);
        s.taken(150);
        assert_eq!(
            s.progress(),
            Progress {
                committed: 150,
                pending: 151
            }
        );
    }
}
