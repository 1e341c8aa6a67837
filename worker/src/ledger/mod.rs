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

mod segment;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::{StreamExt, stream};
use links::{
    Code,
    clicks::{ClickBatch, Counts, TopKey, UserAgentClassifier},
};
use prometheus_client::metrics::counter::Counter;
use stores::scylla::{ScyllaStore, Tally, TallyKey};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use self::segment::{Admit, Cut, Source};
use crate::retry::{Abandoned, with_retries};

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
