//! Click counts in counter tables, written by the in-process pipeline, and
//! the stats reads of either kind of counts.

use futures_util::{FutureExt, StreamExt, TryStreamExt, stream};
use scylla::{
    deserialize::value::DeserializeValue, statement::prepared::PreparedStatement, value::Counter,
};

use super::{ClickCounts, PAGE_ROWS, ScyllaStore, TOP_DAYS_IN_FLIGHT, corrupt, from_execution};
use links::{
    clicks::{ClickBatch, Counts, Dimension},
    code::Code,
    stats::{ClickStats, StatsQuery},
    storage::StoreError,
};

impl ScyllaStore {
    /// Adds the batch's counts, row by row; a failed increment is not
    /// retried (it could count twice), so a failure leaves the counts short.
    pub(super) async fn add_clicks(&self, batch: &ClickBatch) -> Result<(), StoreError> {
        let s = &self.statements;
        let mut writes = Vec::new();
        for (code, link) in &batch.links {
            let code = code.as_str();
            let t = link.totals;
            writes.push(
                self.execute(
                    &s.add_totals,
                    (counter(t.clicks), counter(t.bot_clicks), code),
                )
                .boxed(),
            );
            for b in &link.buckets {
                writes.push(
                    self.execute(
                        &s.add_bucket,
                        (
                            counter(b.counts.clicks),
                            counter(b.counts.bot_clicks),
                            code,
                            b.granularity.as_str(),
                            b.start,
                        ),
                    )
                    .boxed(),
                );
            }
            for (key, clicks) in &link.tops {
                writes.push(
                    self.execute(
                        &s.add_top,
                        (
                            counter(*clicks),
                            code,
                            key.day,
                            key.dimension.as_str(),
                            key.value.as_str(),
                        ),
                    )
                    .boxed(),
                );
            }
        }
        let mut results = stream::iter(writes).buffer_unordered(64);
        let mut first_error = None;
        while let Some(result) = results.next().await {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), |e| Err(from_execution(e)))
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
