//! Folding click events into the counts the stats API reads.
//!
//! The same code runs in the API's in-process pipeline (the embedded default)
//! and in the analytics worker. It counts in memory and hands the store one
//! batch of increments per flush, so a link clicked a million times between
//! flushes costs a handful of row updates, not a million.

use std::{collections::HashMap, sync::Arc};

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
    fn add(&mut self, other: Counts) {
        self.clicks += other.clicks;
        self.bot_clicks += other.bot_clicks;
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub code: Code,
    pub granularity: Granularity,
    /// Seconds since the epoch, UTC, aligned to the granularity.
    pub start: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopKey {
    pub code: Code,
    /// Start of the UTC day, seconds since the epoch: tops are kept per day
    /// so any range of days can be ranked.
    pub day: i64,
    pub dimension: Dimension,
    pub value: CompactString,
}

/// Increments to add to the store, all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickBatch {
    pub totals: HashMap<Code, Counts>,
    pub buckets: HashMap<BucketKey, Counts>,
    pub tops: HashMap<TopKey, u64>,
    /// Events folded into this batch.
    pub events: u64,
}

impl ClickBatch {
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// Rows the batch will touch: what its memory and its write cost grow with.
    pub fn rows(&self) -> usize {
        self.totals.len() + self.buckets.len() + self.tops.len()
    }

    /// Adds another batch's increments, e.g. one whose write failed.
    pub fn merge(&mut self, other: ClickBatch) {
        for (code, counts) in other.totals {
            self.totals.entry(code).or_default().add(counts);
        }
        for (key, counts) in other.buckets {
            self.buckets.entry(key).or_default().add(counts);
        }
        for (key, clicks) in other.tops {
            *self.tops.entry(key).or_default() += clicks;
        }
        self.events += other.events;
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
        let bot = agent.is_bot();
        let one = Counts::one(bot);
        let batch = &mut self.batch;
        batch.events += 1;
        batch.totals.entry(event.code.clone()).or_default().add(one);
        for granularity in [Granularity::Hour, Granularity::Day] {
            let key = BucketKey {
                code: event.code.clone(),
                granularity,
                start: granularity.bucket_of(event.at),
            };
            batch.buckets.entry(key).or_default().add(one);
        }

        let day = Granularity::Day.bucket_of(event.at);
        let mut top = |dimension: Dimension, value: &str| {
            let key = TopKey {
                code: event.code.clone(),
                day,
                dimension,
                value: value.into(),
            };
            *batch.tops.entry(key).or_default() += 1;
        };
        if let Some(name) = &agent.bot {
            top(Dimension::Bot, name);
            return;
        }
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

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    fn click(code: &str, at: DateTime<Utc>, ua: &str, referer: Option<&str>) -> ClickEvent {
        ClickEvent::from_request(
            Code::parse(code).expect("valid"),
            at,
            referer.map(str::as_bytes),
            Some(ua.as_bytes()),
            Some(b"FR"),
        )
    }

    fn top(batch: &ClickBatch, code: &str, day: i64, dimension: Dimension, value: &str) -> u64 {
        let key = TopKey {
            code: Code::parse(code).expect("valid"),
            day,
            dimension,
            value: value.into(),
        };
        batch.tops.get(&key).copied().unwrap_or(0)
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
        let batch = agg.take();
        assert!(agg.is_empty());

        let code = Code::parse("abcdefg").expect("valid");
        assert_eq!(batch.events, 6);
        assert_eq!(
            batch.totals[&code],
            Counts {
                clicks: 4,
                bot_clicks: 1
            }
        );
        let hour = BucketKey {
            code: code.clone(),
            granularity: Granularity::Hour,
            start: Utc
                .with_ymd_and_hms(2026, 3, 1, 13, 0, 0)
                .single()
                .expect("valid")
                .timestamp(),
        };
        assert_eq!(
            batch.buckets[&hour],
            Counts {
                clicks: 4,
                bot_clicks: 1
            }
        );
        let day = Granularity::Day.bucket_of(at);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Referrer, "t.co"), 3);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Referrer, DIRECT), 1);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Country, "FR"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Browser, "Chrome"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Device, "desktop"), 4);
        assert_eq!(top(&batch, "abcdefg", day, Dimension::Bot, "Googlebot"), 1);
    }

    #[test]
    fn merged_batches_add_up() {
        let mut agg = Aggregator::new(UserAgentClassifier::shared());
        let at = Utc::now();
        agg.record(&click("abcdefg", at, CHROME, None));
        let mut first = agg.take();
        agg.record(&click("abcdefg", at, CHROME, None));
        agg.record(&click("abcdefg", at, GOOGLEBOT, None));
        first.merge(agg.take());
        let code = Code::parse("abcdefg").expect("valid");
        assert_eq!(
            first.totals[&code],
            Counts {
                clicks: 2,
                bot_clicks: 1
            }
        );
        assert_eq!(first.events, 3);
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
