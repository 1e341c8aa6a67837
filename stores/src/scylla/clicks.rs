//! Click counts in counter tables, written by the in-process pipeline, and
//! the stats reads of either kind of counts.

use futures_util::{FutureExt, StreamExt, TryStreamExt, stream};
use scylla::{
    deserialize::value::DeserializeValue, statement::prepared::PreparedStatement, value::Counter,
};

use std::collections::BTreeMap;

use super::{
    ClickCounts, Failure, PAGE_ROWS, ScyllaStore, TOP_DAYS_IN_FLIGHT, certainly_not_applied,
    corrupt, from_execution, ledger::SOURCES_PER_REGION,
};
use links::{
    clicks::{ClickBatch, ClickRow, Counts, Dimension},
    code::Code,
    region::{RegionSlot, Regions},
    stats::{ClickStats, RegionCounts, StatsQuery},
    storage::{StoreError, UnwrittenClicks},
};

impl ScyllaStore {
    /// Adds the batch's counts, row by row. A row that failed is handed
    /// back to write again only if it certainly was not applied (never
    /// sent, or refused before it ran); one that may have been (a timeout,
    /// a lost or unreadable answer) is given up, since a counter written
    /// twice counts twice.
    pub(super) async fn add_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks> {
        let mut writes = Vec::with_capacity(batch.rows());
        for (code, row) in batch.row_increments() {
            // A link's totals are zero only in a batch of rows to write
            // again, where they were written already.
            if row != ClickRow::Totals(Counts::default()) {
                writes.push(self.add_row(code, row).boxed());
            }
        }
        let mut results = stream::iter(writes).buffer_unordered(64);
        let mut unwritten: Option<UnwrittenClicks> = None;
        while let Some(result) = results.next().await {
            let Err((code, row, e)) = result else {
                continue;
            };
            let uncertain = !certainly_not_applied(&e);
            let failed = unwritten.get_or_insert_with(|| UnwrittenClicks {
                retry: ClickBatch::default(),
                uncertain_rows: 0,
                error: from_execution(e),
            });
            if uncertain {
                failed.uncertain_rows += 1;
            } else {
                failed.retry.add_row(code.clone(), row);
            }
        }
        unwritten.map_or(Ok(()), Err)
    }

    /// Adds one row's increment; on failure, hands the row back.
    async fn add_row<'b>(
        &self,
        code: &'b Code,
        row: ClickRow,
    ) -> Result<(), (&'b Code, ClickRow, Failure)> {
        let s = &self.statements;
        let c = code.as_str();
        let written = match &row {
            ClickRow::Totals(t) => {
                let (clicks, bots) = (counter(t.clicks), counter(t.bot_clicks));
                self.execute(&s.add_totals, (clicks, bots, c)).await
            }
            ClickRow::Bucket(b) => {
                let (clicks, bots) = (counter(b.counts.clicks), counter(b.counts.bot_clicks));
                let (granularity, start) = (b.granularity.as_str(), b.start);
                self.execute(&s.add_bucket, (clicks, bots, c, granularity, start))
                    .await
            }
            ClickRow::Top(key, clicks) => {
                let (day, dimension, value) = (key.day, key.dimension.as_str(), key.value.as_str());
                self.execute(&s.add_top, (counter(*clicks), c, day, dimension, value))
                    .await
            }
        };
        written.map(drop).map_err(|e| (code, row, e))
    }

    /// Totals, the bucket range (one partition, paged) and the tops of each
    /// day in the range (a partition per day, a few at once), from the
    /// tables the configured [`ClickCounts`] names.
    pub(super) async fn read_click_stats(
        &self,
        code: &Code,
        query: &StatsQuery,
    ) -> Result<ClickStats, StoreError> {
        match self.click_counts {
            ClickCounts::Counters => {
                let s = &self.statements;
                let rows = self
                    .read_totals::<(Option<Counter>, Option<Counter>)>(&s.select_totals, code)
                    .await?;
                let mut totals = Counts::default();
                for (clicks, bots) in rows {
                    totals.add(Counts {
                        clicks: Counter::count(clicks),
                        bot_clicks: Counter::count(bots),
                    });
                }
                self.read_counts::<Counter>(
                    [&s.select_buckets, &s.select_tops],
                    totals,
                    code,
                    query,
                )
                .await
            }
            ClickCounts::Ledger => {
                let s = &self.statements.ledger;
                let rows = self
                    .read_totals::<(i32, Option<i64>, Option<i64>)>(&s.select_totals, code)
                    .await?;
                let by_source: Vec<(i32, Counts)> = rows
                    .into_iter()
                    .map(|(source, clicks, bots)| {
                        let counts = Counts {
                            clicks: i64::count(clicks),
                            bot_clicks: i64::count(bots),
                        };
                        (source, counts)
                    })
                    .collect();
                let mut totals = Counts::default();
                for (_, counts) in &by_source {
                    totals.add(*counts);
                }
                let mut stats = self
                    .read_counts::<i64>([&s.select_buckets, &s.select_tops], totals, code, query)
                    .await?;
                if let Some(topology) = &self.topology {
                    stats.by_region = by_region(&topology.regions, &by_source);
                }
                Ok(stats)
            }
        }
    }

    /// A link's totals rows (one per source in the ledger).
    async fn read_totals<R>(
        &self,
        statement: &PreparedStatement,
        code: &Code,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let result = self
            .execute(statement, (code.as_str(),))
            .await
            .map_err(from_execution)?;
        result
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<R>()
            .map_err(corrupt)?
            .map(|row| row.map_err(corrupt))
            .collect()
    }

    /// The stats of one link with these totals, from a buckets and a tops
    /// statement whose count columns are of type `C`. Rows with the same
    /// key (the ledger's sources) add up.
    async fn read_counts<C: CountCell>(
        &self,
        [buckets, tops]: [&PreparedStatement; 2],
        totals: Counts,
        code: &Code,
        query: &StatsQuery,
    ) -> Result<ClickStats, StoreError> {
        let (first, end) = query.bucket_range();
        let mut bucket_statement = buckets.clone();
        bucket_statement.set_page_size(PAGE_ROWS);
        let buckets: Vec<(i64, Counts)> = {
            let _permit = self.permit().await?;
            self.session
                .execute_iter(
                    bucket_statement,
                    (code.as_str(), query.granularity.as_str(), first, end),
                )
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                .rows_stream::<(i64, Option<C>, Option<C>)>()
                .map_err(corrupt)?
                .map_ok(|(start, clicks, bots)| {
                    (
                        start,
                        Counts {
                            clicks: C::count(clicks),
                            bot_clicks: C::count(bots),
                        },
                    )
                })
                .try_collect()
                .await
                .map_err(|e| StoreError::Unavailable(Box::new(e)))?
        };

        let (first_day, end_day) = query.day_range();
        let days = (first_day..end_day).step_by(86_400);
        let per_day = stream::iter(days)
            .map(|day| async move {
                let mut statement = tops.clone();
                statement.set_page_size(PAGE_ROWS);
                let _permit = self.permit().await?;
                self.session
                    .execute_iter(statement, (code.as_str(), day))
                    .await
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                    .rows_stream::<(String, String, Option<C>)>()
                    .map_err(corrupt)?
                    .try_collect::<Vec<_>>()
                    .await
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))
            })
            .buffer_unordered(TOP_DAYS_IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await?;
        let tops = per_day
            .into_iter()
            .flatten()
            .filter_map(|(dimension, value, clicks)| {
                Dimension::parse(&dimension).map(|d| (d, value, C::count(clicks)))
            });
        Ok(ClickStats::assemble(query, totals, buckets, tops))
    }
}

/// The ledger's totals by source, summed by the region that counted them
/// (a source is its region's slot × 2¹⁶ plus a partition): every region
/// named, in slot order; a slot no region has now is named by its number.
fn by_region(regions: &Regions, by_source: &[(i32, Counts)]) -> Vec<RegionCounts> {
    let mut sums: BTreeMap<u64, Counts> = regions
        .all()
        .iter()
        .map(|r| (r.slot.get(), Counts::default()))
        .collect();
    for (source, counts) in by_source {
        let slot = u64::try_from(source.div_euclid(SOURCES_PER_REGION)).unwrap_or(u64::MAX);
        sums.entry(slot).or_default().add(*counts);
    }
    sums.into_iter()
        .map(|(slot, counts)| RegionCounts {
            region: RegionSlot::new(slot)
                .and_then(|slot| regions.by_slot(slot))
                .map_or_else(|| format!("slot {slot}"), |r| r.name.clone()),
            counts,
        })
        .collect()
}

/// A count column: a counter (in-process counts) or a bigint (the ledger).
trait CountCell: for<'f, 'm> DeserializeValue<'f, 'm> + Send {
    fn count(cell: Option<Self>) -> u64;
}

impl CountCell for Counter {
    fn count(cell: Option<Self>) -> u64 {
        cell.map_or(0, |Counter(n)| n.max(0) as u64)
    }
}

impl CountCell for i64 {
    fn count(cell: Option<Self>) -> u64 {
        cell.map_or(0, |n| n.max(0) as u64)
    }
}

fn counter(n: u64) -> Counter {
    Counter(i64::try_from(n).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(clicks: u64, bot_clicks: u64) -> Counts {
        Counts { clicks, bot_clicks }
    }

    #[test]
    fn ledger_sources_add_up_by_the_region_that_counted_them() {
        let regions = Regions::parse("eu:0:dc_eu,us:1:dc_us,ap:2:dc_ap", "us").expect("valid");
        let region = |slot: i32, partition: i32| slot * SOURCES_PER_REGION + partition;
        let sums = by_region(
            &regions,
            &[
                (region(0, 0), counts(1, 0)),
                (region(0, 7), counts(2, 1)),
                (region(2, SOURCES_PER_REGION - 1), counts(5, 0)),
                // A slot no region has now: a region removed since.
                (region(9, 0), counts(4, 4)),
            ],
        );
        let named: Vec<(&str, Counts)> =
            sums.iter().map(|r| (r.region.as_str(), r.counts)).collect();
        assert_eq!(
            named,
            [
                ("eu", counts(3, 1)),
                ("us", counts(0, 0)),
                ("ap", counts(5, 0)),
                ("slot 9", counts(4, 4)),
            ]
        );
    }
}
