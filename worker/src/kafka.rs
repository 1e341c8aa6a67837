//! The worker's Kafka clients: the group consumer of the clicks topic, and
//! the producer of the dead-letter topic.
//!
//! - **Offsets are the worker's to commit**: auto-commit is off, and an
//!   offset is committed only after the counts before it are durable (see
//!   [`crate::ledger`]). A group that never committed starts from the
//!   earliest event, never the latest: nothing is skipped.
//! - **Cooperative rebalancing** (`cooperative-sticky`): a worker joining or
//!   leaving moves only the partitions that change hands; the others keep
//!   counting. The assignment changes reach the worker's loop in order, on
//!   its own task, before any message of a newly assigned partition.
//! - **Dead letters** carry the original key, value and headers, with the
//!   reason in an `error` header and where they came from in `source.*`;
//!   they are delivered before the offsets past them are committed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use rdkafka::{
    ClientConfig, ClientContext, Message, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    statistics::Statistics,
    types::RDKafkaErrorCode,
    util::Timeout,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings,
    metrics::{PartitionLabel, WorkerMetrics},
    retry::{Abandoned, with_retries},
};

/// Header of a dead letter saying why it is one.
pub const ERROR_HEADER: &str = "error";
/// Headers of a dead letter saying where it came from.
pub const SOURCE_TOPIC_HEADER: &str = "source.topic";
pub const SOURCE_PARTITION_HEADER: &str = "source.partition";
pub const SOURCE_OFFSET_HEADER: &str = "source.offset";

/// How long the worker waits for Kafka's answer to an admin request at start.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A change of the partitions this worker owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Receives rebalances on the consumer's polling (the worker's own task),
/// and keeps them until the worker's loop takes them.
#[derive(Debug)]
pub struct GroupContext {
    topic: String,
    changes: Mutex<Vec<Assignment>>,
    metrics: Arc<WorkerMetrics>,
}

impl GroupContext {
    /// Whether changes wait to be taken.
    pub fn has_changes(&self) -> bool {
        !self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The changes since the last call, in order.
    pub fn take_changes(&self) -> Vec<Assignment> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn partitions(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        tracing::warn!(%error, reason, "Kafka client error");
    }

    /// Every [`STATISTICS_INTERVAL`]: the lag of each partition this worker
    /// fetches, from the high watermark to the committed offset.
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let lag = &self.metrics.consumer_lag;
        for (&partition, stats) in &topic.partitions {
            let label = PartitionLabel { partition };
            if partition >= 0 && stats.fetch_state == "active" && stats.consumer_lag >= 0 {
                lag.get_or_create(&label).set(stats.consumer_lag);
            } else {
                lag.remove(&label);
            }
        }
    }
}

/// How often librdkafka reports statistics (the consumer lag).
const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let change = match rebalance {
            Rebalance::Assign(list) => {
                self.metrics.assigned.inc();
                Assignment::Assigned(self.partitions(list))
            }
            Rebalance::Revoke(list) => {
                self.metrics.revoked.inc();
                let partitions = self.partitions(list);
                for &partition in &partitions {
                    self.metrics
                        .consumer_lag
                        .remove(&PartitionLabel { partition });
                }
                Assignment::Revoked(partitions)
            }
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance failed");
                return;
            }
        };
        tracing::info!(?change, "partitions changed hands");
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(change);
    }

    fn commit_callback(&self, result: KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(error) = result {
            // The next commit carries a later offset; a restart replays a
            // little more, and the ledger skips what it has.
            tracing::debug!(%error, "an offset commit failed");
        }
    }
}

pub type GroupConsumer = StreamConsumer<GroupContext>;

/// Joins the group on the clicks topic.
pub fn consumer(
    settings: &Settings,
    metrics: Arc<WorkerMetrics>,
) -> Result<GroupConsumer, KafkaError> {
    let w = &settings.worker;
    let topic = &settings.events.kafka.topic;
    let consumer: GroupConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.events.kafka.brokers)
        .set("group.id", &w.group)
        .set("client.id", "shortener-worker")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "session.timeout.ms",
            w.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (w.session_timeout.as_millis() / 3).max(1).to_string(),
        )
        .set(
            "max.poll.interval.ms",
            w.max_poll_interval.as_millis().to_string(),
        )
        .set("queued.max.messages.kbytes", w.prefetch_kbytes.to_string())
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        )
        .create_with_context(GroupContext {
            topic: topic.clone(),
            changes: Mutex::new(Vec::new()),
            metrics,
        })?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// Creates the dead-letter topic if it does not exist, replicated like the
/// clicks topic (or once, if that is not known yet).
pub async fn ensure_dead_letter_topic(settings: &Settings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.events.kafka.brokers)
        .create()?;
    let replication = {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&settings.events.kafka.topic), ADMIN_TIMEOUT)?;
        metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().first())
            .map_or(1, |p| p.replicas().len().max(1) as i32)
    };
    let topic = NewTopic::new(
        &settings.worker.dead_letter_topic,
        1,
        TopicReplication::Fixed(replication),
    );
    let options = AdminOptions::new().request_timeout(Some(ADMIN_TIMEOUT));
    for result in admin.create_topics([&topic], &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}

/// A message set aside, waiting for delivery to the dead-letter topic.
#[derive(Debug)]
struct Letter {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: OwnedHeaders,
}

/// The dead-letter producer, and the letters not delivered yet.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    waiting: Vec<Letter>,
    /// Failed (and retried) deliveries.
    failures: Counter,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("topic", &self.topic)
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    pub fn new(settings: &Settings, failures: Counter) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &settings.events.kafka.brokers)
            .set("client.id", "shortener-worker-dead-letters")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()?;
        Ok(Self {
            producer,
            topic: settings.worker.dead_letter_topic.clone(),
            waiting: Vec::new(),
            failures,
        })
    }

    /// Letters waiting for delivery.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sets a message aside with the reason it cannot be counted.
    pub fn set_aside(&mut self, message: &BorrowedMessage<'_>, reason: &str) {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for header in original.iter() {
                headers = headers.insert(header);
            }
        }
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        for (key, value) in [
            (ERROR_HEADER, reason),
            (SOURCE_TOPIC_HEADER, message.topic()),
            (SOURCE_PARTITION_HEADER, partition.as_str()),
            (SOURCE_OFFSET_HEADER, offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        self.waiting.push(Letter {
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers,
        });
    }

    /// Takes the waiting letters out, to be delivered.
    pub fn take(&mut self) -> LetterBatch {
        LetterBatch {
            producer: self.producer.clone(),
            topic: self.topic.clone(),
            letters: std::mem::take(&mut self.waiting),
            failures: self.failures.clone(),
        }
    }
}

/// Dead letters on their way.
pub struct LetterBatch {
    producer: FutureProducer,
    topic: String,
    letters: Vec<Letter>,
    failures: Counter,
}

impl std::fmt::Debug for LetterBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LetterBatch")
            .field("letters", &self.letters.len())
            .finish_non_exhaustive()
    }
}

impl LetterBatch {
    pub fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }

    /// Delivers every letter, each retried until Kafka has it.
    pub async fn deliver(
        self,
        max_backoff: Duration,
        abandon: &CancellationToken,
    ) -> Result<usize, Abandoned> {
        let (producer, topic, failures) = (&self.producer, self.topic.as_str(), &self.failures);
        let sends = self.letters.iter().map(|letter| {
            with_retries(
                "deliver a dead letter",
                failures,
                max_backoff,
                abandon,
                move || {
                    let mut record: FutureRecord<'_, [u8], [u8]> =
                        FutureRecord::to(topic).headers(letter.headers.clone());
                    if let Some(key) = &letter.key {
                        record = record.key(key.as_slice());
                    }
                    if let Some(value) = &letter.value {
                        record = record.payload(value.as_slice());
                    }
                    async move {
                        producer
                            .send(record, Timeout::After(max_backoff))
                            .await
                            .map_err(|(error, _)| error)
                    }
                },
            )
        });
        let results = futures_util::future::join_all(sends).await;
        if results.iter().any(Result::is_err) {
            return Err(Abandoned);
        }
        Ok(self.letters.len())
    }
}
