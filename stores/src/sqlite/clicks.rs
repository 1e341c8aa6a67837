//! Click counts in `clicks.db`: written in one transaction per batch, read
//! back as a link's stats.

use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, rows::granularity_name};
use links::{
    clicks::{ClickBatch, Counts, Dimension},
    code::Code,
    stats::{ClickStats, StatsQuery},
    storage::StoreError,
};

impl SqliteStore {
    /// Adds a batch's counts in one transaction on `clicks.db`.
    pub(super) async fn write_clicks(&self, batch: &ClickBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.clone();
        self.call(&self.clicks_writer, move |conn| {
            let tx = conn.transaction()?;
            {
                let mut totals = tx.prepare_cached(
                    "INSERT INTO click_totals (code, clicks, bot_clicks) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (code) DO UPDATE SET clicks = clicks + excluded.clicks, \
                     bot_clicks = bot_clicks + excluded.bot_clicks",
                )?;
                let mut buckets = tx.prepare_cached(
                    "INSERT INTO click_buckets (code, granularity, start, clicks, bot_clicks) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (code, granularity, start) DO UPDATE SET \
                     clicks = clicks + excluded.clicks, bot_clicks = bot_clicks + excluded.bot_clicks",
                )?;
                let mut tops = tx.prepare_cached(
                    "INSERT INTO click_tops (code, day, dimension, value, clicks) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (code, day, dimension, value) DO UPDATE SET \
                     clicks = clicks + excluded.clicks",
                )?;
                for (code, link) in &batch.links {
                    let code = code.as_str();
                    let c = link.totals;
                    totals.execute(params![code, c.clicks, c.bot_clicks])?;
                    for b in &link.buckets {
                        buckets.execute(params![
                            code,
                            granularity_name(b.granularity),
                            b.start,
                            b.counts.clicks,
                            b.counts.bot_clicks
                        ])?;
                    }
                    for (key, clicks) in &link.tops {
                        tops.execute(params![
                            code,
                            key.day,
                            key.dimension.as_str(),
                            key.value.as_str(),
                            clicks
                        ])?;
                    }
                }
            }
            tx.commit()
        })
        .await
    }

    /// A link's totals, series and tops over a query's range.
    pub(super) async fn read_click_stats(
        &self,
        code: &Code,
        query: &StatsQuery,
    ) -> Result<ClickStats, StoreError> {
        let code = code.clone();
        let query = query.clone();
        self.read(move |conn| {
            let totals = conn
                .prepare_cached(
                    "SELECT clicks, bot_clicks FROM clicks.click_totals WHERE code = ?1",
                )?
                .query_row([code.as_str()], |row| {
                    Ok(Counts {
                        clicks: row.get(0)?,
                        bot_clicks: row.get(1)?,
                    })
                })
                .optional()?
                .unwrap_or_default();
            let (first, end) = query.bucket_range();
            let buckets = conn
                .prepare_cached(
                    "SELECT start, clicks, bot_clicks FROM clicks.click_buckets \
                     WHERE code = ?1 AND granularity = ?2 AND start >= ?3 AND start < ?4",
                )?
                .query_map(
                    params![
                        code.as_str(),
                        granularity_name(query.granularity),
                        first,
                        end
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            Counts {
                                clicks: row.get(1)?,
                                bot_clicks: row.get(2)?,
                            },
                        ))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let (first_day, end_day) = query.day_range();
            let tops = conn
                .prepare_cached(
                    "SELECT dimension, value, SUM(clicks) FROM clicks.click_tops \
                     WHERE code = ?1 AND day >= ?2 AND day < ?3 GROUP BY dimension, value",
                )?
                .query_map(params![code.as_str(), first_day, end_day], |row| {
                    let dimension: String = row.get(0)?;
                    Ok((dimension, row.get::<_, String>(1)?, row.get::<_, u64>(2)?))
                })?
                .filter_map(|row| match row {
                    Ok((dimension, value, clicks)) => {
                        Dimension::parse(&dimension).map(|d| Ok((d, value, clicks)))
                    }
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClickStats::assemble(&query, totals, buckets, tops))
        })
        .await
    }
}
