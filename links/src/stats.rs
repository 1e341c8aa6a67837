//! What the stats API answers: totals, a time series and top lists, built
//! the same way from whatever rows an adapter reads.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::clicks::{Counts, Dimension, Granularity};

/// The earliest instant a stats range may name: no click is older than
/// the Unix epoch.
pub const EARLIEST: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// The latest instant a stats range may name: the end of year 9999, the last
/// one RFC 3339 can write, so that every bucket computed from a range stays
/// far inside what times and the stores represent.
pub fn latest() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A stats request, already checked: `from` < `to`, both between
/// [`EARLIEST`] and [`latest`], and a bounded number of buckets between
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
    /// Entries per top list.
    pub top: usize,
}

impl StatsQuery {
    /// First bucket start (inclusive) and last bucket end (exclusive), in
    /// seconds since the epoch.
    pub fn bucket_range(&self) -> (i64, i64) {
        let step = self.granularity.seconds();
        let first = self.granularity.bucket_of(self.from);
        let end = self.to.timestamp();
        let last = end + (step - end.rem_euclid(step)) % step;
        (first, last)
    }

    /// Days the top lists cover: `[first, end)` in seconds since the epoch.
    pub fn day_range(&self) -> (i64, i64) {
        let first = Granularity::Day.bucket_of(self.from);
        let end = self.to.timestamp();
        let day = Granularity::Day.seconds();
        (first, end + (day - end.rem_euclid(day)) % day)
    }

    pub fn buckets(&self) -> i64 {
        let (first, end) = self.bucket_range();
        (end - first) / self.granularity.seconds()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    pub start: DateTime<Utc>,
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopEntry {
    pub value: String,
    pub clicks: u64,
}

/// All-time clicks made in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCounts {
    pub region: String,
    pub counts: Counts,
}

/// Click statistics of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickStats {
    /// All-time totals.
    pub totals: Counts,
    /// With several regions, the all-time totals by the region where the
    /// clicks were made, every region named (zeros included); empty where
    /// a store does not know regions.
    pub by_region: Vec<RegionCounts>,
    /// One point per bucket in the query's range, zeros included.
    pub series: Vec<SeriesPoint>,
    /// Ranked per dimension over the days of the query's range.
    pub tops: HashMap<Dimension, Vec<TopEntry>>,
}

impl ClickStats {
    /// Assembles the answer from stored rows: bucket starts with their
    /// counts, and per-dimension counts over the range of days (summed here
    /// when a bucket or a value comes more than once: once per source, or
    /// once per day).
    pub fn assemble(
        query: &StatsQuery,
        totals: Counts,
        buckets: impl IntoIterator<Item = (i64, Counts)>,
        top_sums: impl IntoIterator<Item = (Dimension, String, u64)>,
    ) -> Self {
        let mut by_start: HashMap<i64, Counts> = HashMap::new();
        for (start, counts) in buckets {
            by_start.entry(start).or_default().add(counts);
        }
        let (first, end) = query.bucket_range();
        let step = query.granularity.seconds();
        let series = (first..end)
            .step_by(step as usize)
            .map(|start| SeriesPoint {
                start: DateTime::from_timestamp(start, 0).unwrap_or_default(),
                counts: by_start.get(&start).copied().unwrap_or_default(),
            })
            .collect();

        let mut tops: HashMap<Dimension, Vec<TopEntry>> =
            Dimension::ALL.iter().map(|d| (*d, Vec::new())).collect();
        let mut sums: HashMap<(Dimension, String), u64> = HashMap::new();
        for (dimension, value, clicks) in top_sums {
            *sums.entry((dimension, value)).or_default() += clicks;
        }
        for ((dimension, value), clicks) in sums {
            if clicks > 0 {
                tops.entry(dimension)
                    .or_default()
                    .push(TopEntry { value, clicks });
            }
        }
        for entries in tops.values_mut() {
            // Most clicks first; ties by value so answers are stable.
            entries.sort_by(|a, b| b.clicks.cmp(&a.clicks).then_with(|| a.value.cmp(&b.value)));
            entries.truncate(query.top);
        }
        Self {
            totals,
            by_region: Vec::new(),
            series,
            tops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 5, d, h, m, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn ranges_cover_whole_buckets() {
        let q = StatsQuery {
            from: at(1, 10, 30),
            to: at(1, 12, 0),
            granularity: Granularity::Hour,
            top: 3,
        };
        assert_eq!(
            q.bucket_range(),
            (at(1, 10, 0).timestamp(), at(1, 12, 0).timestamp())
        );
        assert_eq!(q.buckets(), 2);
        let q = StatsQuery {
            to: at(1, 12, 1),
            ..q
        };
        assert_eq!(q.buckets(), 3);
        assert_eq!(
            q.day_range(),
            (at(1, 0, 0).timestamp(), at(2, 0, 0).timestamp())
        );
    }

    #[test]
    fn series_is_dense_and_tops_ranked() {
        let q = StatsQuery {
            from: at(1, 0, 0),
            to: at(4, 0, 0),
            granularity: Granularity::Day,
            top: 2,
        };
        let one = Counts {
            clicks: 5,
            bot_clicks: 1,
        };
        let stats = ClickStats::assemble(
            &q,
            one,
            [(at(2, 0, 0).timestamp(), one)],
            [
                (Dimension::Country, "DE".into(), 2),
                (Dimension::Country, "FR".into(), 3),
                (Dimension::Country, "AT".into(), 2),
                (Dimension::Country, "US".into(), 1),
            ],
        );
        let counts: Vec<u64> = stats.series.iter().map(|p| p.counts.clicks).collect();
        assert_eq!(counts, [0, 5, 0]);
        let countries: Vec<(&str, u64)> = stats.tops[&Dimension::Country]
            .iter()
            .map(|e| (e.value.as_str(), e.clicks))
            .collect();
        assert_eq!(countries, [("FR", 3), ("AT", 2)]);
        assert!(stats.tops[&Dimension::Referrer].is_empty());
    }
}
