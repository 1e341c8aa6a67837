//! Link changes across regions.
//!
//! A PATCH or DELETE in one region must reach the caches of every other.
//! Each change is produced to this region's Kafka (`events.kafka.
//! changes_topic`, keyed by code, so one link's changes stay in order);
//! Kafka's MirrorMaker 2 copies the topic to every other region's Kafka as
//! `<region>.<topic>`; every API instance listens to those copies, and to
//! its own region's topic, and drops the link from its L1 and its region's
//! Redis, remembering the change's revision: a reload that reads an older
//! row (this region's replica not reached yet) is not served nor cached,
//! but read again where the change is (see [`crate::cache`]).
//!
//! A change that cannot be produced (this region's Kafka down for longer
//! than the timeout) is counted and logged; the other regions' caches then
//! serve the old answer until their TTLs end.
//!
//! A starting instance (a region back from an outage among them) is not
//! ready (`/readyz`) until it has read every change its region's Kafka held
//! when it started: its region's Redis and its datacenter's replicas may
//! hold links changed elsewhere meanwhile, and only the fences of those
//! changes keep it from serving them. Changes MirrorMaker 2 copies into
//! that Kafka later (a region just back, whose copies are behind) are
//! applied as they arrive. To hear those too, a starting instance first
//! waits (`events.kafka.mirror_wait` at most) until MirrorMaker 2 has
//! copied into its Kafka a heartbeat sent after the instance started from
//! every region whose changes it copies: the same flow carries both, so
//! the copies of the changes are then about as current.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use futures_util::StreamExt;
use links::Code;
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::KafkaResult,
    message::Timestamp,
    producer::{FutureProducer, FutureRecord},
    topic_partition_list::{Offset, TopicPartitionList},
    util::Timeout,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{cache::LinkCache, config::KafkaSettings, metrics::Metrics};

/// One change, as produced: the link's code, its revision after the change,
/// and the region where it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub code: String,
    pub revision: u32,
    pub region: String,
}

/// Longest a change's production may take before it is given up.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the listener looks for mirrored topics it has not seen yet
/// (a region added, or MirrorMaker 2 starting after this instance).
const TOPIC_REFRESH: Duration = Duration::from_secs(5);
/// Longest a look at the topics' ends may take before it is tried again.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// While catching up, how often the topics' ends are looked at again: a
/// topic deleted (or deleted and made again) since the start must not be
/// waited for.
const ENDS_REFRESH: Duration = Duration::from_secs(5);
/// Waits before listening again after the listener stopped by itself,
/// doubling up to the second.
const RESTART_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
/// A listener that ran this long before it stopped starts again after the
/// shortest wait.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Produces this region's link changes, and knows whether this instance
/// has heard every change made before it started.
pub struct ChangeFeed {
    producer: FutureProducer,
    topic: String,
    region: String,
    metrics: Arc<Metrics>,
    caught_up: Arc<AtomicBool>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("topic", &self.topic)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    pub fn new(
        kafka: &KafkaSettings,
        region: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(Self {
            producer,
            topic: kafka.changes_topic.clone(),
            region: region.to_owned(),
            metrics,
            caught_up: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The region this instance serves.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether the listener has read every change the topics held when it
    /// started.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// The flag [`listen`] raises once it has caught up.
    pub fn catch_up_flag(&self) -> Arc<AtomicBool> {
        self.caught_up.clone()
    }

    /// Produces a change, waiting for Kafka's acknowledgement (bounded).
    pub async fn publish(&self, code: &Code, revision: u32) {
        let change = Change {
            code: code.as_str().to_owned(),
            revision,
            region: self.region.clone(),
        };
        let Ok(value) = serde_json::to_vec(&change) else {
            return;
        };
        let record = FutureRecord::to(&self.topic)
            .key(code.as_str())
            .payload(&value);
        match self
            .producer
            .send(record, Timeout::After(PRODUCE_TIMEOUT))
            .await
        {
            Ok(_) => {
                self.metrics.link_changes_sent.inc();
            }
            Err((error, _)) => {
                self.metrics.link_changes_unsent.inc();
                tracing::error!(%error, %code, revision, "a link change did not reach Kafka; other regions' caches keep the old answer until their TTLs end");
            }
        };
    }
}

/// The topics MirrorMaker 2 makes of other regions' change topics:
/// `<region>.<topic>` (its default replication policy).
pub fn mirrored_topics(topic: &str) -> String {
    format!("^[A-Za-z0-9_-]+\\.{}$", regex_escape(topic))
}

/// Whether `name` is this region's changes topic or another region's copy
/// of it (what [`mirrored_topics`] matches).
fn is_changes_topic(name: &str, topic: &str) -> bool {
    name == topic
        || name
            .strip_suffix(topic)
            .and_then(|rest| rest.strip_suffix('.'))
            .is_some_and(|region| {
                !region.is_empty()
                    && region
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
}

/// Where the changes topics end now: every non-empty partition, and the
/// offset after its last change. Blocking.
fn ends_now(kafka: &KafkaSettings) -> KafkaResult<Vec<(String, i32, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .create()?;
    let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    let mut ends = Vec::new();
    for topic in metadata.topics() {
        if !is_changes_topic(topic.name(), &kafka.changes_topic) {
            continue;
        }
        // A topic Kafka cannot describe now is not taken for gone.
        if let Some(error) = topic.error() {
            return Err(rdkafka::error::KafkaError::MetadataFetch(error.into()));
        }
        for partition in topic.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(topic.name(), partition.id(), METADATA_TIMEOUT)?;
            if high > low {
                ends.push((topic.name().to_owned(), partition.id(), high));
            }
        }
    }
    Ok(ends)
}

/// MirrorMaker 2's heartbeats topic, and the name of its copies
/// (`<region>.heartbeats`, its default replication policy).
const HEARTBEATS: &str = "heartbeats";

/// Each of `others` whose changes this Kafka holds a copy of
/// (`<region>.<topic>`) and whose heartbeats MirrorMaker 2 copies too, with
/// the time (ms since the epoch) its newest heartbeat copied here was sent,
/// if any. Blocking.
fn mirrored_heartbeats(
    kafka: &KafkaSettings,
    others: &[String],
) -> KafkaResult<Vec<(String, Option<i64>)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        // Read by assignment, never committed.
        .set("group.id", "shortener-api-heartbeats")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    let mut regions = Vec::new();
    let mut newest = TopicPartitionList::new();
    for topic in metadata.topics() {
        let Some(region) = topic
            .name()
            .strip_suffix(kafka.changes_topic.as_str())
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|region| others.iter().any(|other| other == region))
        else {
            continue;
        };
        let heartbeats = format!("{region}.{HEARTBEATS}");
        // A MirrorMaker 2 that sends no heartbeats leaves nothing to wait for.
        let Some(copy) = metadata.topics().iter().find(|t| t.name() == heartbeats) else {
            continue;
        };
        regions.push((region.to_owned(), None));
        for partition in copy.partitions() {
            let (low, high) =
                consumer.fetch_watermarks(&heartbeats, partition.id(), METADATA_TIMEOUT)?;
            if high > low {
                newest.add_partition_offset(
                    &heartbeats,
                    partition.id(),
                    Offset::Offset(high - 1),
                )?;
            }
        }
    }
    if newest.count() == 0 {
        return Ok(regions);
    }
    consumer.assign(&newest)?;
    let mut unread = newest.count();
    let deadline = Instant::now() + METADATA_TIMEOUT;
    while unread > 0 && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        unread = unread.saturating_sub(1);
        // When it was sent, which MirrorMaker 2 keeps in its copies; a time
        // of appending would be when it was copied.
        let Timestamp::CreateTime(sent) = message.timestamp() else {
            continue;
        };
        let region = message.topic().strip_suffix(HEARTBEATS).unwrap_or_default();
        for (name, newest) in &mut regions {
            if region.strip_suffix('.') == Some(name.as_str()) {
                *newest = Some(newest.map_or(sent, |n: i64| n.max(sent)));
            }
        }
    }
    Ok(regions)
}

/// Waits until the copied heartbeats of every one of `others` include one
/// sent after `since` (ms since the epoch): while Kafka does not answer,
/// and then `kafka.mirror_wait` at most. Returns false if `stop` came
/// first.
async fn wait_for_mirrors(
    kafka: &KafkaSettings,
    others: &[String],
    since: i64,
    stop: &CancellationToken,
) -> bool {
    if kafka.mirror_wait.is_zero() || others.is_empty() {
        return true;
    }
    let started = Instant::now();
    // The wait is counted from Kafka's first answer: a region coming back
    // may start its instances before its Kafka.
    let mut answered: Option<Instant> = None;
    let mut warned: Option<Instant> = None;
    loop {
        let (settings, regions) = (kafka.clone(), others.to_vec());
        match tokio::task::spawn_blocking(move || mirrored_heartbeats(&settings, &regions)).await {
            Ok(Ok(heartbeats)) => {
                let answered = *answered.get_or_insert_with(Instant::now);
                let behind: Vec<String> = heartbeats
                    .into_iter()
                    .filter(|(_, sent)| sent.is_none_or(|sent| sent < since))
                    .map(|(region, _)| region)
                    .collect();
                if behind.is_empty() {
                    tracing::info!(took = ?started.elapsed(), "MirrorMaker 2's copies from every region are current");
                    return true;
                }
                if answered.elapsed() >= kafka.mirror_wait {
                    tracing::warn!(
                        regions = ?behind,
                        waited = ?started.elapsed(),
                        "MirrorMaker 2's copies of these regions' link changes are not current; going on, and applying their changes as they are copied"
                    );
                    return true;
                }
            }
            Ok(Err(error)) => {
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    warned = Some(Instant::now());
                    tracing::warn!(%error, "cannot read MirrorMaker 2's heartbeats; not ready until Kafka answers");
                }
            }
            Err(error) => tracing::error!(%error, "reading MirrorMaker 2's heartbeats failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => return false,
        }
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The partitions still to be read to their `ends`, given what was read.
struct CatchUp {
    pending: Vec<(String, i32, i64)>,
    flag: Arc<AtomicBool>,
    started: Instant,
    heard: u64,
}

impl CatchUp {
    fn new(pending: Vec<(String, i32, i64)>, flag: Arc<AtomicBool>) -> Self {
        let catch_up = Self {
            pending,
            flag,
            started: Instant::now(),
            heard: 0,
        };
        catch_up.finish_if_done();
        catch_up
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    /// A change was read of `topic`'s `partition`, before `next`.
    fn read(&mut self, topic: &str, partition: i32, next: i64) {
        if self.pending.is_empty() {
            return;
        }
        self.heard += 1;
        self.reached(topic, partition, next);
    }

    /// The consumer's position in `topic`'s `partition` is `next`.
    fn reached(&mut self, topic: &str, partition: i32, next: i64) {
        self.pending
            .retain(|(t, p, end)| !(t == topic && *p == partition && next >= *end));
        self.finish_if_done();
    }

    /// Where the topics end now: a partition gone since (its topic
    /// deleted, or emptied by retention) is not waited for, and one that
    /// ends earlier than it did (its topic deleted and made again) is read
    /// to its new end.
    fn refresh(&mut self, now: &[(String, i32, i64)]) {
        self.pending.retain_mut(|(topic, partition, end)| {
            match now.iter().find(|(t, p, _)| t == topic && p == partition) {
                Some((_, _, now)) => {
                    *end = (*end).min(*now);
                    true
                }
                None => false,
            }
        });
        self.finish_if_done();
    }

    fn finish_if_done(&self) {
        if self.pending.is_empty() && !self.flag.swap(true, Ordering::AcqRel) {
            tracing::info!(
                changes = self.heard,
                took = ?self.started.elapsed(),
                "caught up with the link changes made before this instance started"
            );
        }
    }
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for c in text.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Listens to every region's changes (the copies of the others', and this
/// region's own) until `stop`, applying each to this instance's caches.
/// Each instance listens for itself (a group of its own: every instance
/// must hear every change), from the start of what the
/// topics keep: the changes topic keeps changes as long as any cache keeps
/// a copy (its retention is set so when it is created, and MirrorMaker 2
/// copies it to the other regions' topics), so a starting instance fences
/// every copy its region's Redis may hold from before it started, and a
/// topic that appears later (a region added) is read whole. `caught_up`
/// is raised once every change the topics held at the start is read.
///
/// A listener that stops by itself (its consumer could not be made or
/// subscribed, or failed fatally) lowers `caught_up`, since changes made
/// from then on are not applied, and starts again after a pause: the
/// instance is ready again once the new listener has caught up.
pub async fn listen(
    kafka: KafkaSettings,
    region: String,
    others: Vec<String>,
    cache: LinkCache,
    metrics: Arc<Metrics>,
    caught_up: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let (first, longest) = RESTART_BACKOFF;
    let mut backoff = first;
    loop {
        let started = Instant::now();
        let stopped = listen_once(
            &kafka, &region, &others, &cache, &metrics, &caught_up, &stop,
        )
        .await;
        if stop.is_cancelled() {
            return;
        }
        caught_up.store(false, Ordering::Release);
        if started.elapsed() >= HEALTHY_RUN {
            backoff = first;
        }
        tracing::error!(
            reason = stopped,
            again_in = ?backoff,
            "stopped listening to link changes; not ready until listening again and caught up"
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(longest);
    }
}

/// One listener, from where the topics end now; returns why it stopped
/// unless `stop` did it.
async fn listen_once(
    kafka: &KafkaSettings,
    region: &str,
    others: &[String],
    cache: &LinkCache,
    metrics: &Metrics,
    caught_up: &Arc<AtomicBool>,
    stop: &CancellationToken,
) -> String {
    if !wait_for_mirrors(kafka, others, now_millis(), stop).await {
        return String::new();
    }
    // Where the topics end before listening: what must be read before
    // this instance serves from its caches. Until Kafka answers, it is not
    // ready.
    let ends = loop {
        let settings = kafka.clone();
        match tokio::task::spawn_blocking(move || ends_now(&settings)).await {
            Ok(Ok(ends)) => break ends,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot see where the link-change topics end; not ready until Kafka answers");
            }
            Err(error) => tracing::error!(%error, "looking at the link-change topics failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return String::new(),
        }
    };
    let group = format!("shortener-api-changes.{region}.{}", uuid::Uuid::now_v7());
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "topic.metadata.refresh.interval.ms",
            TOPIC_REFRESH.as_millis().to_string(),
        )
        .create()
    {
        Ok(consumer) => consumer,
        Err(error) => return format!("cannot make a consumer: {error}"),
    };
    // This region's own topic too: a change commits to a majority of all
    // replicas, which need not include this region's, so its own instances
    // fence it as well.
    let pattern = mirrored_topics(&kafka.changes_topic);
    if let Err(error) = consumer.subscribe(&[kafka.changes_topic.as_str(), &pattern]) {
        return format!("cannot subscribe to {pattern}: {error}");
    }
    tracing::info!(pattern, "listening to other regions' link changes");
    // Only now: with nothing to read, it is caught up at once.
    let mut catch_up = CatchUp::new(ends, caught_up.clone());
    let mut stream = consumer.stream();
    // A partition whose changes up to its end were all dropped by retention
    // meanwhile has no message left to read: its position tells.
    let mut positions = tokio::time::interval(Duration::from_secs(1));
    let mut ends =
        tokio::time::interval_at(tokio::time::Instant::now() + ENDS_REFRESH, ENDS_REFRESH);
    ends.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = positions.tick(), if !catch_up.is_done() => {
                if let Ok(list) = consumer.position() {
                    for element in list.elements() {
                        if let rdkafka::Offset::Offset(next) = element.offset() {
                            catch_up.reached(element.topic(), element.partition(), next);
                        }
                    }
                }
                continue;
            }
            _ = ends.tick(), if !catch_up.is_done() => {
                let settings = kafka.clone();
                if let Ok(Ok(now)) = tokio::task::spawn_blocking(move || ends_now(&settings)).await {
                    catch_up.refresh(&now);
                }
                continue;
            }
            () = stop.cancelled() => return String::new(),
        };
        let Some(message) = message else {
            return "the consumer's stream ended".to_owned();
        };
        let message = match message {
            Ok(message) => message,
            // One the consumer cannot go on after: a new one.
            Err(error @ rdkafka::error::KafkaError::MessageConsumptionFatal(_)) => {
                return format!("the consumer failed: {error}");
            }
            Err(error) => {
                tracing::debug!(%error, "reading link changes");
                continue;
            }
        };
        let change = message
            .payload()
            .and_then(|value| serde_json::from_slice::<Change>(value).ok())
            .and_then(|change| Some((Code::parse(&change.code).ok()?, change.revision)));
        match change {
            Some((code, revision)) => {
                metrics.link_changes_heard.inc();
                cache.heard_change(&code, revision).await;
            }
            None => tracing::warn!(
                topic = message.topic(),
                "an unreadable link change; skipped"
            ),
        }
        // Counted once applied: ready means every fence is in place.
        catch_up.read(message.topic(), message.partition(), message.offset() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_topic_names_are_matched_exactly() {
        let pattern = mirrored_topics("shortener.link-changes");
        assert_eq!(pattern, "^[A-Za-z0-9_-]+\\.shortener\\.link-changes$");
    }

    #[test]
    fn changes_topics_are_told_apart() {
        let topic = "shortener.link-changes";
        assert!(is_changes_topic(topic, topic));
        assert!(is_changes_topic("us.shortener.link-changes", topic));
        assert!(is_changes_topic("ap-south_1.shortener.link-changes", topic));
        assert!(!is_changes_topic(".shortener.link-changes", topic));
        assert!(!is_changes_topic("shortener.link-changes.x", topic));
        assert!(!is_changes_topic("u.s.shortener.link-changes", topic));
        assert!(!is_changes_topic("usshortener.link-changes", topic));
        assert!(!is_changes_topic("shortener.clicks", topic));
    }

    #[test]
    fn an_instance_catches_up_once_every_partition_is_read_to_its_end() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut catch_up = CatchUp::new(
            vec![("t".into(), 0, 3), ("us.t".into(), 1, 1)],
            flag.clone(),
        );
        catch_up.read("t", 0, 1);
        catch_up.read("us.t", 0, 5);
        catch_up.read("us.t", 1, 1);
        assert!(
            !flag.load(Ordering::Acquire),
            "partition t/0 is not read to 3"
        );
        catch_up.read("t", 0, 3);
        assert!(flag.load(Ordering::Acquire));
        // Nothing to read: caught up at once.
        let flag = Arc::new(AtomicBool::new(false));
        CatchUp::new(Vec::new(), flag.clone());
        assert!(flag.load(Ordering::Acquire));
    }

    #[test]
    fn a_topic_gone_or_made_again_is_not_waited_for() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut catch_up = CatchUp::new(
            vec![
                ("t".into(), 0, 9),
                ("eu.t".into(), 0, 4),
                ("us.t".into(), 2, 7),
            ],
            flag.clone(),
        );
        // eu.t deleted; us.t deleted and made again, now ending at 2.
        catch_up.refresh(&[("t".into(), 0, 12), ("us.t".into(), 2, 2)]);
        assert_eq!(
            catch_up.pending,
            vec![("t".into(), 0, 9), ("us.t".into(), 2, 2)],
            "what is still there is read to the earlier of its two ends"
        );
        catch_up.read("us.t", 2, 2);
        catch_up.read("t", 0, 9);
        assert!(flag.load(Ordering::Acquire));
        // Every topic gone: nothing to wait for.
        let flag = Arc::new(AtomicBool::new(false));
        let mut catch_up = CatchUp::new(vec![("t".into(), 0, 3)], flag.clone());
        catch_up.refresh(&[]);
        assert!(flag.load(Ordering::Acquire));
    }

    #[test]
    fn changes_read_back_as_written() {
        let change = Change {
            code: "abc123x".into(),
            revision: 7,
            region: "eu".into(),
        };
        let bytes = serde_json::to_vec(&change).expect("json");
        assert_eq!(
            serde_json::from_slice::<Change>(&bytes).expect("parse"),
            change
        );
    }
}
