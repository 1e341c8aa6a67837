//! Exact click counts: the tables `shortener-worker` writes
//! (`migrations/scylla/0002_click_ledger.cql` explains the scheme).
//!
//! The worker owns the partitions of the clicks topic that Kafka assigns
//! it. For each, it claims the partition's progress row by a lightweight
//! transaction, then repeats: record the end of the next flush (`pending`)
//! conditionally on still being the owner, replace each touched row with
//! its new running count and `through`, and only then move `committed` on.
//! Rows are plain (not counter) cells, replaced whole: a write repeated
//! after a timeout or a crash writes the same values again.

use futures_util::TryStreamExt;
use scylla::{
    statement::batch::{Batch, BatchType},
    value::CqlValue,
};
use uuid::Uuid;

use super::{
    CAS_ATTEMPTS, ScyllaStore, backoff, column, corrupt, from_execution, is_contention, lwt_row,
    maybe_applied,
};
use links::{
    clicks::{Counts, Dimension, Granularity, TopKey},
    code::Code,
    storage::StoreError,
};

/// One row of exact counts, as the worker addresses it (its source apart).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TallyKey {
    /// All-time totals of a link.
    Totals(Code),
    /// One hour or one day of a link, by bucket start (seconds since the epoch).
    Bucket(Code, Granularity, i64),
    /// One value of a link's daily top list; its count is in `clicks`.
    Top(Code, TopKey),
}

/// A row's running count for one source, and the offset before which every
/// event of that source is in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub counts: Counts,
    /// Offset of the first event of the source not counted yet; 0 for a
    /// row never written.
    pub through: i64,
}

/// How far one partition's counts are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every event before this offset is counted in every row it touches.
    pub committed: i64,
    /// The end of a flush that may be partly written: a row holds either a
    /// `through` at most `committed`, or exactly this. Equal to `committed`
    /// when no flush is under way.
    pub pending: i64,
}

/// A row of `click_ledger_tops` as read: dimension, value, source,
/// clicks, through.
type TopRow = (String, String, i32, Option<i64>, Option<i64>);

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: Option<i64>) -> u64 {
    n.map_or(0, |n| n.max(0) as u64)
}

/// Partitions per region in the ledger's `source` key.
pub(super) const SOURCES_PER_REGION: i32 = 1 << 16;

impl ScyllaStore {
    /// A partition of this region's clicks topic as the ledger keys it.
    /// Every region has a topic of its own with the same partition numbers,
    /// each counted by the region's own worker, so the region's slot is in
    /// the key: partition + slot × 2¹⁶. A deployment of one region keys by
    /// partition alone, as slot 0 does.
    fn ledger_source(&self, partition: i32) -> Result<i32, StoreError> {
        if !(0..SOURCES_PER_REGION).contains(&partition) {
            return Err(StoreError::Other(
                format!("partition {partition} is outside 0..{SOURCES_PER_REGION}").into(),
            ));
        }
        let slot = self
            .topology
            .as_ref()
            .map_or(0, |t| t.regions.local().slot.get() as i32);
        Ok(slot * SOURCES_PER_REGION + partition)
    }

    /// A row's tally for one source; `None` if it was never written.
    pub async fn read_tally(
        &self,
        source: i32,
        key: &TallyKey,
    ) -> Result<Option<Tally>, StoreError> {
        let source = self.ledger_source(source)?;
        let s = &self.statements.ledger;
        let result = match key {
            TallyKey::Totals(code) => self.execute(&s.read_totals, (code.as_str(), source)).await,
            TallyKey::Bucket(code, granularity, start) => {
                self.execute(
                    &s.read_bucket,
                    (code.as_str(), granularity.as_str(), *start, source),
                )
                .await
            }
            TallyKey::Top(code, top) => {
                self.execute(
                    &s.read_top,
                    (
                        code.as_str(),
                        top.day,
                        top.dimension.as_str(),
                        top.value.as_str(),
                        source,
                    ),
                )
                .await
            }
        }
        .map_err(from_execution)?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        let tally = match key {
            TallyKey::Top(..) => rows
                .maybe_first_row::<(Option<i64>, Option<i64>)>()
                .map_err(corrupt)?
                .map(|(clicks, through)| Tally {
                    counts: Counts {
                        clicks: to_u64(clicks),
                        bot_clicks: 0,
                    },
                    through: through.unwrap_or(0),
                }),
            _ => rows
                .maybe_first_row::<(Option<i64>, Option<i64>, Option<i64>)>()
                .map_err(corrupt)?
                .map(|(clicks, bots, through)| Tally {
                    counts: Counts {
                        clicks: to_u64(clicks),
                        bot_clicks: to_u64(bots),
                    },
                    through: through.unwrap_or(0),
                }),
        };
        Ok(tally)
    }

    /// Replaces a row's tally for one source, timestamped with its
    /// `through`: of two writes of one row, the further one wins, whichever
    /// lands last.
    pub async fn write_tally(
        &self,
        source: i32,
        key: &TallyKey,
        tally: Tally,
    ) -> Result<(), StoreError> {
        let source = self.ledger_source(source)?;
        let s = &self.statements.ledger;
        let clicks = to_i64(tally.counts.clicks);
        let bots = to_i64(tally.counts.bot_clicks);
        let through = tally.through;
        match key {
            TallyKey::Totals(code) => {
                self.execute(
                    &s.write_totals,
                    (code.as_str(), source, clicks, bots, through, through),
                )
                .await
            }
            TallyKey::Bucket(code, granularity, start) => {
                self.execute(
                    &s.write_bucket,
                    (
                        code.as_str(),
                        granularity.as_str(),
                        *start,
                        source,
                        clicks,
                        bots,
                        through,
                        through,
                    ),
                )
                .await
            }
            TallyKey::Top(code, top) => {
                self.execute(
                    &s.write_top,
                    (
                        code.as_str(),
                        top.day,
                        top.dimension.as_str(),
                        top.value.as_str(),
                        source,
                        clicks,
                        through,
                        through,
                    ),
                )
                .await
            }
        }
        .map(drop)
        .map_err(from_execution)
    }

    /// One source's tallies of a link's top lists of one day: one
    /// partition, read whole (it holds every source's rows; normally one).
    pub async fn read_day_tops(
        &self,
        source: i32,
        code: &Code,
        day: i64,
    ) -> Result<Vec<(TopKey, Tally)>, StoreError> {
        let source = self.ledger_source(source)?;
        let mut statement = self.statements.ledger.read_day_tops.clone();
        statement.set_page_size(super::PAGE_ROWS);
        let _permit = self.permit().await?;
        let rows: Vec<TopRow> = self
            .session
            .execute_iter(statement, (code.as_str(), day))
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?
            .rows_stream()
            .map_err(corrupt)?
            .try_collect()
            .await
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(rows
            .into_iter()
            .filter(|row| row.2 == source)
            .filter_map(|(dimension, value, _, clicks, through)| {
                let key = TopKey {
                    day,
                    dimension: Dimension::parse(&dimension)?,
                    value: value.into(),
                };
                let tally = Tally {
                    counts: Counts {
                        clicks: to_u64(clicks),
                        bot_clicks: 0,
                    },
                    through: through.unwrap_or(0),
                };
                Some((key, tally))
            })
            .collect())
    }

    /// Replaces tallies of one link's top lists of one day, for one source,
    /// in one unlogged batch: one partition, so one mutation for the
    /// cluster, however many values.
    pub async fn write_day_tops(
        &self,
        source: i32,
        code: &Code,
        tops: &[(TopKey, Tally)],
    ) -> Result<(), StoreError> {
        let source = self.ledger_source(source)?;
        let statement = &self.statements.ledger.write_top;
        let mut batch = Batch::new(BatchType::Unlogged);
        let mut values = Vec::with_capacity(tops.len());
        for (top, tally) in tops {
            batch.append_statement(statement.clone());
            values.push((
                code.as_str(),
                top.day,
                top.dimension.as_str(),
                top.value.as_str(),
                source,
                to_i64(tally.counts.clicks),
                tally.through,
                tally.through,
            ));
        }
        batch.set_is_idempotent(true);
        let _permit = self.permit().await?;
        self.session
            .batch(&batch, values)
            .await
            .map(drop)
            .map_err(|e| from_execution(super::Failure::Cql(Box::new(e))))
    }

    async fn serial_progress(
        &self,
        topic: &str,
        source: i32,
    ) -> Result<Option<(Option<Uuid>, Progress)>, StoreError> {
        let result = self
            .execute(
                &self.statements.ledger.select_progress_serial,
                (topic, source),
            )
            .await
            .map_err(from_execution)?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        Ok(rows
            .maybe_first_row::<(Option<Uuid>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?
            .map(|(owner, committed, pending)| {
                (
                    owner,
                    Progress {
                        committed: committed.unwrap_or(0),
                        pending: pending.unwrap_or(0),
                    },
                )
            }))
    }

    /// Makes `owner` the only writer of the source's rows, and returns how
    /// far they are written. Whoever owned it before is fenced off: its
    /// next [`ScyllaStore::advance_tallies`] fails.
    pub async fn claim_tallies(
        &self,
        topic: &str,
        source: i32,
        owner: Uuid,
    ) -> Result<Progress, StoreError> {
        let source = self.ledger_source(source)?;
        let s = &self.statements.ledger;
        for attempt in 0..CAS_ATTEMPTS {
            let current = self.serial_progress(topic, source).await?;
            let outcome = match current {
                None => {
                    self.execute(&s.insert_progress_if_absent, (topic, source, owner))
                        .await
                }
                Some((previous, progress)) => {
                    self.execute(
                        &s.claim_progress_if,
                        (
                            owner,
                            topic,
                            source,
                            previous,
                            progress.committed,
                            progress.pending,
                        ),
                    )
                    .await
                }
            };
            let expected = current.map(|(_, p)| p).unwrap_or_default();
            match outcome {
                Ok(result) => {
                    if lwt_row(result)?.0 {
                        return Ok(expected);
                    }
                }
                Err(e) if maybe_applied(&e) || is_contention(&e) => {
                    if let Some((Some(now), progress)) = self.serial_progress(topic, source).await?
                        && now == owner
                    {
                        return Ok(progress);
                    }
                }
                Err(e) => return Err(from_execution(e)),
            }
            tracing::debug!(topic, source, attempt, "progress changed while claiming it");
            backoff(attempt).await;
        }
        Err(StoreError::Unavailable(
            format!("could not claim partition {source} of {topic}").into(),
        ))
    }

    /// Records new progress if `owner` still owns the source; `false` if
    /// another worker claimed it since (this one must stop writing it).
    pub async fn advance_tallies(
        &self,
        topic: &str,
        source: i32,
        owner: Uuid,
        progress: Progress,
    ) -> Result<bool, StoreError> {
        let source = self.ledger_source(source)?;
        let statement = &self.statements.ledger.advance_progress_if;
        for attempt in 0..CAS_ATTEMPTS {
            let outcome = self
                .execute(
                    statement,
                    (progress.committed, progress.pending, topic, source, owner),
                )
                .await;
            match outcome {
                Ok(result) => {
                    let (applied, row) = lwt_row(result)?;
                    if applied {
                        return Ok(true);
                    }
                    return match column(&row, "owner") {
                        Some(CqlValue::Uuid(now)) if *now == owner => Err(StoreError::Corrupt(
                            "a conditional write on our own progress did not apply".into(),
                        )),
                        _ => Ok(false),
                    };
                }
                Err(e) if maybe_applied(&e) || is_contention(&e) => {
                    match self.serial_progress(topic, source).await? {
                        Some((Some(now), _)) if now != owner => return Ok(false),
                        Some((_, now)) if now == progress => return Ok(true),
                        _ => backoff(attempt).await,
                    }
                }
                Err(e) => return Err(from_execution(e)),
            }
        }
        Err(StoreError::Unavailable(
            format!("could not record progress of partition {source} of {topic}").into(),
        ))
    }
}
