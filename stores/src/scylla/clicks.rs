//! Click counts in counter tables, written by the in-process pipeline, and
//! the stats reads of either kind of counts.

use futures_util::{FutureExt, StreamExt, TryStreamExt, stream};
use scylla::{
    deserialize::value::DeserializeValue, statement::prepared::PreparedStatement, value::Counter,
};

use super::{
    ClickCounts, Failure, PAGE_ROWS, ScyllaStore, TOP_DAYS_IN_FLIGHT, certainly_not_applied,
    corrupt, from_execution,
};
use links::{
    clicks::{ClickBatch, ClickRow, Counts, Dimension},
    code::Code,
    stats::{ClickStats, StatsQuery},
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
                self.read_counts::<Counter>(
                    [&s.select_totals, &s.select_buckets, &s.select_tops],
                    code,
                    query,
                )
                .await
            }
            ClickCounts::Ledger => {
                let s = &self.statements.ledger;
                self.read_counts::<i64>(
                    [&s.select_totals, &s.select_buckets, &s.select_tops],
                    code,
                    query,
                )
                .await
            }
        }
    }

    /// The stats of one link from a totals, a buckets and a tops statement
    /// whose count columns are of type `C`. Rows with the same key (the
    /// ledger's sources) add up.
    async fn read_counts<C: CountCell>(
        &self,
        [totals, buckets, tops]: [&PreparedStatement; 3],
        code: &Code,
        query: &StatsQuery,
    ) -> Result<ClickStats, StoreError> {
        let result = self
            .execute(totals, (code.as_str(),))
            .await
            .map_err(from_execution)?;
        let mut sum = Counts::default();
        for row in result
            .into_rows_result()
            .map_err(corrupt)?
            .rows::<(Option<C>, Option<C>)>()
            .map_err(corrupt)?
        {
            let (clicks, bots) = row.map_err(corrupt)?;
            sum.add(Counts {
                clicks: C::count(clicks),
                bot_clicks: C::count(bots),
            });
        }

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
        Ok(ClickStats::assemble(query, sum, buckets, tops))
    }
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
