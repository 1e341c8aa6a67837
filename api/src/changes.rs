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

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use links::Code;
use rdkafka::{
    ClientConfig, Message,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
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

/// Produces this region's link changes.
pub struct ChangeFeed {
    producer: FutureProducer,
    topic: String,
    region: String,
    metrics: Arc<Metrics>,
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
        })
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
/// topic that appears later (a region added) is read whole.
pub async fn listen(
    kafka: KafkaSettings,
    region: String,
    cache: LinkCache,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
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
        Err(error) => {
            tracing::error!(%error, "cannot listen to other regions' link changes");
            return;
        }
    };
    // This region's own topic too: a change commits to a majority of all
    // replicas, which need not include this region's, so its own instances
    // fence it as well.
    let pattern = mirrored_topics(&kafka.changes_topic);
    if let Err(error) = consumer.subscribe(&[kafka.changes_topic.as_str(), &pattern]) {
        tracing::error!(%error, pattern, "cannot subscribe to other regions' link changes");
        return;
    }
    tracing::info!(pattern, "listening to other regions' link changes");
    let mut stream = consumer.stream();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            () = stop.cancelled() => return,
        };
        let Some(message) = message else { return };
        let message = match message {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "reading link changes");
                continue;
            }
        };
        let change = message
            .payload()
            .and_then(|value| serde_json::from_slice::<Change>(value).ok());
        let Some(change) = change else {
            tracing::warn!(
                topic = message.topic(),
                "an unreadable link change; skipped"
            );
            continue;
        };
        let Ok(code) = Code::parse(&change.code) else {
            continue;
        };
        metrics.link_changes_heard.inc();
        cache.heard_change(&code, change.revision).await;
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
