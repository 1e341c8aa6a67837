//! The production click sink: each event to Kafka, for the analytics worker.
//!
//! - **Never blocks**: events go to librdkafka's local queue with a
//!   non-blocking send; its own thread delivers them. When that queue is
//!   full (Kafka slow or down for long) the event is dropped and counted.
//! - **Exact accounting**: every event handed to the producer ends as
//!   exactly one of `shortener_clicks_produced_total` (acknowledged by all
//!   in-sync replicas) or `shortener_clicks_dropped_total` (refused by the
//!   full queue, or not delivered within `events.kafka.delivery_timeout`).
//! - **No duplicates from retries**: the idempotent producer (`acks=all`,
//!   ordered retries) lets the broker discard a retried batch it already
//!   has. Across producer sessions (a restart) the worker deduplicates.
//! - **Order per link**: the key is the code, so one link's clicks share a
//!   partition.
//! - **Shutdown** flushes what is buffered, for up to
//!   `events.kafka.flush_timeout`.
//!
//! The value is the protobuf of [`links::clicks::wire`]; headers carry the
//! schema name and the W3C trace context.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use links::clicks::{
    ClickEvent,
    wire::{self, SCHEMA_HEADER, SCHEMA_V1, TRACEPARENT, TRACESTATE},
};
use rdkafka::{
    ClientConfig, ClientContext,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
    types::RDKafkaErrorCode as Code,
    util::Timeout,
};
use runtime::background::Priority;

use super::{ClickSink, Trace};
use crate::{config::KafkaSettings, metrics::Metrics};

/// Counts every delivery outcome, on librdkafka's polling thread.
struct Deliveries {
    metrics: Arc<Metrics>,
    /// What send times are measured from: each message carries its own, in
    /// microseconds since then, as its delivery opaque (no allocation).
    epoch: Instant,
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        tracing::warn!(%error, reason, "Kafka client error");
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_micros: usize) {
        match result {
            Ok(_) => {
                self.metrics.clicks_produced.inc();
                let sent = Duration::from_micros(sent_micros as u64);
                self.metrics
                    .kafka_delivery_seconds
                    .observe(self.epoch.elapsed().saturating_sub(sent).as_secs_f64());
            }
            Err((error, _)) => {
                self.metrics.clicks_dropped.inc();
                self.metrics.kafka_delivery_failures.inc();
                tracing::debug!(%error, "a click event was not delivered");
            }
        }
    }
}

/// The Kafka [`ClickSink`].
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    epoch: Instant,
    topic: String,
    flush_timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// The librdkafka configuration of the producer.
fn producer_config(settings: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", "shortener-api")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", settings.compression.as_str())
        .set("linger.ms", settings.linger.as_millis().to_string())
        .set(
            "queue.buffering.max.messages",
            settings.max_buffered.to_string(),
        )
        .set(
            "message.timeout.ms",
            settings.delivery_timeout.as_millis().to_string(),
        )
        // Brokers that come back are found again quickly.
        .set("reconnect.backoff.max.ms", "1000");
    config
}

impl KafkaSink {
    /// A producer for `settings.topic`. It connects in the background: a
    /// Kafka that is down at start only means buffered, then dropped, events.
    ///
    /// librdkafka's threads (one per broker, and the polling thread) are
    /// started from a thread scheduled at `priority`, whose scheduling they
    /// inherit: producing clicks then yields the CPU to serving redirects,
    /// as the rest of the click pipeline does.
    pub fn new(
        settings: &KafkaSettings,
        priority: Priority,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let config = producer_config(settings);
        let epoch = Instant::now();
        let context = Deliveries {
            metrics: metrics.clone(),
            epoch,
        };
        let producer = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    if let Err(error) = runtime::background::set_current_thread(priority) {
                        tracing::warn!(%error, "cannot lower the Kafka producer's priority");
                    }
                    config.create_with_context(context)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        Ok(Self {
            producer,
            epoch,
            topic: settings.topic.clone(),
            flush_timeout: settings.flush_timeout,
            metrics,
        })
    }
}

/// Creates `topic` if it does not exist, with the configured partitions
/// and replication, and `retention` if given. Fails if Kafka cannot be
/// reached within `timeout`.
pub async fn ensure_topic(
    settings: &KafkaSettings,
    topic: &str,
    retention: Option<Duration>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .create()?;
    let retention_ms = retention.map(|r| r.as_millis().to_string());
    let mut topic = NewTopic::new(
        topic,
        settings.partitions,
        TopicReplication::Fixed(settings.replication_factor),
    );
    if let Some(ms) = &retention_ms {
        topic = topic.set("retention.ms", ms);
    }
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| {
                    tracing::warn!(topic, ?code, "cannot create a topic");
                });
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ClickSink for KafkaSink {
    async fn accept(&mut self, event: ClickEvent, trace: Trace) {
        let value = wire::encode(&event);
        let mut headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header {
                key: SCHEMA_HEADER,
                value: Some(SCHEMA_V1),
            })
            .insert(Header {
                key: TRACEPARENT,
                value: Some(trace.parent.as_str()),
            });
        if let Some(state) = &trace.state {
            headers = headers.insert(Header {
                key: TRACESTATE,
                value: Some(state.as_str()),
            });
        }
        let sent = self.epoch.elapsed().as_micros() as usize;
        let record = BaseRecord::with_opaque_to(&self.topic, sent)
            .key(event.code.as_str())
            .payload(&value)
            .headers(headers);
        match self.producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                self.metrics.clicks_dropped.inc();
            }
            Err((error, _)) => {
                self.metrics.clicks_dropped.inc();
                tracing::warn!(%error, "a click event could not be queued for Kafka");
            }
        }
    }

    async fn tick(&mut self) {
        self.metrics
            .kafka_buffered
            .set(i64::from(self.producer.in_flight_count()));
    }

    fn tick_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn close(&mut self) {
        let buffered = self.producer.in_flight_count();
        tracing::info!(buffered, "delivering buffered click events to Kafka");
        // Blocking, but this thread does nothing else any more.
        if let Err(error) = self.producer.flush(Timeout::After(self.flush_timeout)) {
            tracing::error!(
                %error,
                undelivered = self.producer.in_flight_count(),
                "click events still buffered at shutdown are lost (counted as dropped)"
            );
        }
    }
}
