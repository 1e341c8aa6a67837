//! Click counts in counter tables, written by the in-process pipeline.

use futures_util::{FutureExt, StreamExt, TryStreamExt, stream};
use scylla::value::Counter;

use super::{PAGE_ROWS, ScyllaStore, TOP_DAYS_IN_FLIGHT, corrupt, from_execution};
use crate::{
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
    /// day in the range (a partition per day, a few at once).
    pub(super) async fn read_click_stats(
        &self,
        code: &Code,
        query: &StatsQuery,
    ) -> Result<ClickStats, StoreError> {
        let s = &self.statements;
        let result = self
            .execute(&s.select_totals, (code.as_str(),))
            .await
            .map_err(from_execution)?;
        let totals = result
            .into_rows_result()
            .map_err(corrupt)?
            .maybe_first_row::<(Option<Counter>, Option<Counter>)>()
            .map_err(corrupt)?
            .map(|(clicks, bots)| Counts {
                clicks: count(clicks),
                bot_clicks: count(bots),
            })
            .unwrap_or_default();

        let (first, end) = query.bucket_range();
        let mut bucket_statement = s.select_buckets.clone();
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
                .rows_stream::<(i64, Option<Counter>, Option<Counter>)>()
                .map_err(corrupt)?
                .map_ok(|(start, clicks, bots)| {
                    (
                        start,
                        Counts {
                            clicks: count(clicks),
                            bot_clicks: count(bots),
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
                let mut statement = self.statements.select_tops.clone();
                statement.set_page_size(PAGE_ROWS);
                let _permit = self.permit().await?;
                self.session
                    .execute_iter(statement, (code.as_str(), day))
                    .await
                    .map_err(|e| StoreError::Unavailable(Box::new(e)))?
                    .rows_stream::<(String, String, Option<Counter>)>()
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
                Dimension::parse(&dimension).map(|d| (d, value, count(clicks)))
            });
        Ok(ClickStats::assemble(query, totals, buckets, tops))
    }
}

fn counter(n: u64) -> Counter {
    Counter(i64::try_from(n).unwrap_or(i64::MAX))
}

fn count(c: Option<Counter>) -> u64 {
    c.map_or(0, |Counter(n)| n.max(0) as u64)
}
