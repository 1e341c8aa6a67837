//! Folding click events into the counts the stats API reads.
//!
//! The same code runs in the API's in-process pipeline (the embedded default)
//! and in the analytics worker. It counts in memory and hands the store one
//! batch of increments per flush, so a link clicked a million times between
//! flushes costs a handful of row updates, not a million.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use compact_str::CompactString;

use super::{ClickEvent, UserAgentClassifier};
use crate::code::Code;

/// Clicks by people, and clicks by bots, which never count in the headline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub clicks: u64,
    pub bot_clicks: u64,
}

impl Counts {
    /// Adds `other`; a sum past `u64::MAX` (only corrupt rows could make
    /// one) stays at the maximum.
    pub fn add(&mut self, other: Counts) {
        self.clicks = self.clicks.saturating_add(other.clicks);
        self.bot_clicks = self.bot_clicks.saturating_add(other.bot_clicks);
    }

    fn one(bot: bool) -> Self {
        Self {
            clicks: u64::from(!bot),
            bot_clicks: u64::from(bot),
        }
    }
}

/// The width of a time-series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The start of the bucket holding `at`, in seconds since the epoch (UTC).
    pub fn bucket_of(self, at: DateTime<Utc>) -> i64 {
        let secs = at.timestamp();
        secs - secs.rem_euclid(self.seconds())
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }
}

/// What a top list ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Referrer,
    Country,
    Browser,
    Os,
    Device,
    /// Bots by name; bot clicks appear in no other top list.
    Bot,
}

impl Dimension {
    pub const ALL: [Dimension; 6] = [
        Self::Referrer,
        Self::Country,
        Self::Browser,
        Self::Os,
        Self::Device,
        Self::Bot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Referrer => "referrer",
            Self::Country => "country",
            Self::Browser => "browser",
            Self::Os => "os",
            Self::Device => "device",
            Self::Bot => "bot",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// Value of the referrer dimension for visits without a `Referer`. Brackets
/// cannot occur in a host name, so it never collides with a real referrer.
pub const DIRECT: &str = "(direct)";
/// Value of the country dimension when the country header is absent.
pub const UNKNOWN_COUNTRY: &str = "(unknown)";

/// Counts of one hour or one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub granularity: Granularity,
    /// Seconds since the epoch, UTC, aligned to the granularity.
    pub start: i64,
    pub counts: Counts,
}

/// One entry of a daily top list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopKey {
    /// Start of the UTC day, seconds since the epoch: tops are kept per day
    /// so any range of days can be ranked.
    pub day: i64,
    pub dimension: Dimension,
    pub value: CompactString,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The increments of one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkClicks {
    pub totals: Counts,
    /// A handful per flush: the current hour and day, and the previous ones
    /// around midnight.
    pub buckets: Vec<Bucket>,
    pub tops: FastMap<TopKey, u64>,
}

impl LinkClicks {
    fn add_bucket(&mut self, granularity: Granularity, start: i64, counts: Counts) {
        match self
            .buckets
            .iter_mut()
            .find(|b| b.granularity == granularity && b.start == start)
        {
            Some(bucket) => bucket.counts.add(counts),
            None => self.buckets.push(Bucket {
                granularity,
                start,
                counts,
            }),
        }
    }

    fn merge(&mut self, other: LinkClicks) {
        self.totals.add(other.totals);
        for bucket in other.buckets {
            self.add_bucket(bucket.granularity, bucket.start, bucket.counts);
        }
        for (key, clicks) in other.tops {
            *self.tops.entry(key).or_default() += clicks;
        }
    }

    /// Rows this link's increments touch in a store.
    pub fn rows(&self) -> usize {
        1 + self.buckets.len() + self.tops.len()
    }

    /// Events counted here.
    pub fn events(&self) -> u64 {
        self.totals.clicks + self.totals.bot_clicks
    }
}

/// One row's increment in a [`ClickBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClickRow {
    /// The link's all-time totals; the batch's events are counted here.
    Totals(Counts),
    Bucket(Bucket),
    /// One value of a daily top list, and its clicks.
    Top(TopKey, u64),
}

/// Increments to add to the store, per link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickBatch {
    pub links: FastMap<Code, LinkClicks>,
    /// Rows the batch touches: what its memory and its write cost grow with.
    rows: usize,
}

impl ClickBatch {
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Events folded into this batch.
    pub fn events(&self) -> u64 {
        self.links.values().map(LinkClicks::events).sum()
    }

    /// Each row's increment, link by link: what a store that writes row
    /// by row writes.
    pub fn row_increments(&self) -> impl Iterator<Item = (&Code, ClickRow)> + '_ {
        self.links.iter().flat_map(|(code, link)| {
            let totals = std::iter::once(ClickRow::Totals(link.totals));
            let buckets = link.buckets.iter().map(|b| ClickRow::Bucket(*b));
            let tops = link
                .tops
                .iter()
                .map(|(key, clicks)| ClickRow::Top(key.clone(), *clicks));
            totals
                .chain(buckets)
                .chain(tops)
                .map(move |row| (code, row))
        })
    }

    /// Adds one row's increment, e.g. one whose write failed.
    pub fn add_row(&mut self, code: Code, row: ClickRow) {
        let (link, before) = match self.links.entry(code) {
            Entry::Occupied(entry) => {
                let link = entry.into_mut();
                let rows = link.rows();
                (link, rows)
            }
            Entry::Vacant(entry) => (entry.insert(LinkClicks::default()), 0),
        };
        match row {
            ClickRow::Totals(counts) => link.totals.add(counts),
            ClickRow::Bucket(b) => link.add_bucket(b.granularity, b.start, b.counts),
            ClickRow::Top(key, clicks) => *link.tops.entry(key).or_default() += clicks,
        }
        self.rows += link.rows() - before;
    }

    /// Adds another batch's increments, e.g. one whose write failed.
    pub fn merge(&mut self, other: ClickBatch) {
        for (code, clicks) in other.links {
            match self.links.entry(code) {
                Entry::Occupied(mut entry) => {
                    let link = entry.get_mut();
                    self.rows -= link.rows();
                    link.merge(clicks);
                    self.rows += link.rows();
                }
                Entry::Vacant(entry) => {
                    self.rows += clicks.rows();
                    entry.insert(clicks);
                }
            }
        }
    }
}

/// Folds events into a [`ClickBatch`].
#[derive(Debug)]
pub struct Aggregator {
    classifier: Arc<UserAgentClassifier>,
    batch: ClickBatch,
}

impl Aggregator {
    pub fn new(classifier: Arc<UserAgentClassifier>) -> Self {
        Self {
            classifier,
            batch: ClickBatch::default(),
        }
    }

    pub fn record(&mut self, event: &ClickEvent) {
        let agent = self.classifier.classify(event.user_agent.as_deref());
        let one = Counts::one(agent.is_bot());
        let batch = &mut self.batch;
        let (link, rows_before) = match batch.links.entry(event.code.clone()) {
            Entry::Occupied(entry) => {
                let link = entry.into_mut();
                let rows = link.rows();
                (link, rows)
            }
            Entry::Vacant(entry) => (entry.insert(LinkClicks::default()), 0),
        };
        link.totals.add(one);
        for granularity in [Granularity::Hour, Granularity::Day] {
            link.add_bucket(granularity, granularity.bucket_of(event.at), one);
        }

        let day = Granularity::Day.bucket_of(event.at);
        let mut top = |dimension: Dimension, value: &str| {
            let key = TopKey {
                day,
                dimension,
                value: value.into(),
            };
            *link.tops.entry(key).or_default() += 1;
        };
        if let Some(name) = &agent.bot {
            top(Dimension::Bot, name);
        } else {
            top(
                Dimension::Referrer,
                event.referrer.as_deref().unwrap_or(DIRECT),
            );
            top(
                Dimension::Country,
                event
                    .country
                    .as_ref()
                    .map_or(UNKNOWN_COUNTRY, |c| c.as_str()),
            );
            top(Dimension::Browser, &agent.browser);
            top(Dimension::Os, &agent.os);
            top(Dimension::Device, agent.device.as_str());
        }
        batch.rows += link.rows() - rows_before;
    }

    /// Rows pending in memory.
    pub fn pending_rows(&self) -> usize {
        self.batch.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Takes what was counted so far, leaving the aggregator empty.
    pub fn take(&mut self) -> ClickBatch {
        std::mem::take(&mut self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn counts_add_up_and_stop_at_the_maximum() {
        let mut counts = Counts {
            clicks: 2,
            bot_clicks: u64::MAX - 1,
        };
        counts.add(Counts {
            clicks: 3,
            bot_clicks: 5,
        });
        assert_eq!(
            counts,
            Counts {
                clicks: 5,
                bot_clicks: u64::MAX
            }
        );
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn code(code: &str) -> Code {
        Code::parse(code).expect("valid")
    }

    fn click(c: &str, at: DateTime<Utc>, ua: &str, referer: Option<&str>) -> ClickEvent {
        ClickEvent::from_request(
            code(c),
            at,
            referer.map(str::as_bytes),
            Some(ua.as_bytes()),
            Some(b"FR"),
        )
    }

    fn top(batch: &ClickBatch, c: &str, day: i64, dimension: Dimension, value: &str) -> u64 {
        let key = TopKey {
            day,
            dimension,
            value: value.into(),
        };
        batch.links[&code(c)].tops.get(&key).copied().unwrap_or(0)
    }

    #[test]
    fn counts_people_and_bots_apart() {
        let mut agg = Aggregator::new(UserAgentClassifier::shared());
        let at = Utc
            .with_ymd_and_hms(2026, 3, 1, 13, 45, 0)
            .single()
            .expect("valid");
        for _ in 0..3 {
            agg.record(&click("abcdefg", at, CHROME, Some("https://t.co/x")));
        }
        agg.record(&click("abcdefg", at, CHROME, None));
        agg.record(&click("abcdefg", at, GOOGLEBOT, Some("https://t.co/x")));
        agg.record(&click("zzzzzzz", at, CHROME, None));
        let rows = agg.pending_rows();
        let batch = agg.take();
        assert!(agg.is_empty());
        assert_eq!(batch.rows(), rows);
        assert_eq!(
            batch.rows(),
            batch.links.values().map(LinkClicks::rows).sum::<usize>()
        );

        assert_eq!(batch.events(), 6);
        let link = &batch.links[&code("abcdefg")];
        assert_eq!(
            link.totals,
            Counts {
                clicks: 4,
                bot_clicks: 1
            }
        );
        let hour = Utc
            .with_ymd_and_hms(2026, 3, 1, 13, 0, 0)
            .single()
            .expect("valid")
            .timestamp();
        let day = Granularity::Day.bucket_of(at);
        assert_eq!(
            link.buckets,
            [
                Bucket {
                    granularity: Granularity::Hour,
                    start: hour,
                    counts: Counts {
                        clicks: 4,
                        bot_clicks: 1
                    }
                },
                Bucket {
                    granularity: Granularity::Day,
                    start: day,
                    counts: Counts {
                        clicks: 4,
                        bot_clicks: 1
                    }
                },
            ]
        );
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Referrer, "t.co"), 3);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Referrer, DIRECT), 1);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Country, "FR"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Browser, "Chrome"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Device, "desktop"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Bot, "Googlebot"), 1);
        assert_eq!(
            top(&batch, "abcdefg", day, Dimension::Referrer, "Googlebot"),
            0
        );
    }

    #[test]
    fn merged_batches_add_up() {
        let mut agg = Aggregator::new(UserAgentClassifier::shared());
        let at = Utc::now();
        agg.record(&click("abcdefg", at, CHROME, None));
        let mut first = agg.take();
        agg.record(&click("abcdefg", at, CHROME, None));
        agg.record(&click("abcdefg", at, GOOGLEBOT, None));
        agg.record(&click("bcdefgh", at, CHROME, None));
        let second = agg.take();
        let rows = first.rows() + second.rows();
        first.merge(second);
        assert_eq!(
            first.links[&code("abcdefg")].totals,
            Counts {
                clicks: 2,
                bot_clicks: 1
            }
        );
        assert_eq!(first.events(), 4);
        // The shared rows of abcdefg count once.
        assert!(first.rows() < rows);
        assert_eq!(
            first.rows(),
            first.links.values().map(LinkClicks::rows).sum::<usize>()
        );
    }

    #[test]
    fn a_batch_is_the_sum_of_its_row_increments() {
        let mut agg = Aggregator::new(UserAgentClassifier::shared());
        let at = Utc::now();
        agg.record(&click("abcdefg", at, CHROME, Some("https://t.co/a")));
        agg.record(&click("abcdefg", at, GOOGLEBOT, None));
        agg.record(&click("bcdefgh", at, CHROME, None));
        let batch = agg.take();
        let mut rebuilt = ClickBatch::default();
        for (code, row) in batch.row_increments() {
            rebuilt.add_row(code.clone(), row);
        }
        assert_eq!(rebuilt, batch);
        assert_eq!(batch.row_increments().count(), batch.rows());

        // Rows alone (no totals) still count as their link's rows.
        let mut tops = ClickBatch::default();
        for (code, row) in batch.row_increments() {
            if matches!(row, ClickRow::Top(..)) {
                tops.add_row(code.clone(), row);
            }
        }
        assert_eq!(tops.events(), 0);
        assert_eq!(
            tops.rows(),
            tops.links.values().map(LinkClicks::rows).sum::<usize>()
        );
    }

    #[test]
    fn buckets_align_to_utc_hours_and_days_before_the_epoch_too() {
        let before = Utc
            .with_ymd_and_hms(1969, 12, 31, 23, 30, 0)
            .single()
            .expect("valid");
        assert_eq!(Granularity::Hour.bucket_of(before), -3_600);
        assert_eq!(Granularity::Day.bucket_of(before), -86_400);
    }
}
