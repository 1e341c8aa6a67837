//! Prometheus metrics, named `shortener_*`.
//!
//! Every handle is resolved once, at start; recording on the redirect path
//! is one relaxed atomic add.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    tier: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

/// The service's metrics, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Lookups answered by the in-process cache with a link.
    pub l1_hits: Counter,
    /// Lookups answered by the in-process cache as unknown or gone.
    pub l1_negative_hits: Counter,
    /// Lookups the in-process cache could not answer.
    pub l1_misses: Counter,
    /// Loads from the next tier; `misses - loads` were coalesced into
    /// another request's load.
    pub l1_loads: Counter,
    /// Loads answered by Redis with a link, as unknown, or not at all.
    pub l2_hits: Counter,
    pub l2_negative_hits: Counter,
    pub l2_misses: Counter,
    /// Redis calls that failed or timed out.
    pub redis_errors: Counter,
    /// Redis calls not made because the breaker was open.
    pub redis_rejected: Counter,
    /// 1 while the Redis breaker is open.
    pub redis_breaker_open: Gauge,
    pub redis_seconds: Histogram,
    /// Invalidations that could not be sent nor kept for retry.
    pub redis_invalidations_lost: Counter,
    pub links_created: Counter,
    pub clicks_enqueued: Counter,
    pub clicks_dropped: Counter,
    pub click_queue_depth: Gauge,
    pub clicks_recorded: Counter,
    /// Click events acknowledged by Kafka.
    pub clicks_produced: Counter,
    /// Click events Kafka did not take in time (also in `clicks_dropped`).
    pub kafka_delivery_failures: Counter,
    /// Click events in the producer awaiting delivery.
    pub kafka_buffered: Gauge,
    pub click_flush_failures: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shortener");

        let cache_requests = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_requests",
            "Link lookups per cache tier and result",
            cache_requests.clone(),
        );
        let cache_loads = Family::<TierLabel, Counter>::default();
        registry.register(
            "cache_loads",
            "Loads from the next tier after a cache miss (one per key however many requests wait)",
            cache_loads.clone(),
        );
        let lookup = |result| {
            cache_requests
                .get_or_create(&CacheLabels { tier: "l1", result })
                .clone()
        };
        let (l1_hits, l1_negative_hits, l1_misses) =
            (lookup("hit"), lookup("negative_hit"), lookup("miss"));
        let l1_loads = cache_loads.get_or_create(&TierLabel { tier: "l1" }).clone();
        let l2 = |result| {
            cache_requests
                .get_or_create(&CacheLabels { tier: "l2", result })
                .clone()
        };
        let (l2_hits, l2_negative_hits, l2_misses) = (l2("hit"), l2("negative_hit"), l2("miss"));
        // 100 µs to about 1.6 s: a loopback GET to a frozen Redis's timeout.
        let redis_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "redis_call_duration_seconds",
            "Duration of Redis calls made (pool wait included)",
            redis_seconds.clone(),
        );
        let kafka_buffered = Gauge::default();
        registry.register(
            "kafka_buffered_events",
            "Click events in the producer awaiting delivery to Kafka",
            kafka_buffered.clone(),
        );
        let redis_breaker_open = Gauge::default();
        registry.register(
            "redis_breaker_open",
            "1 while the Redis breaker is open and L2 is skipped",
            redis_breaker_open.clone(),
        );

        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let links_created = counter("links_created", "Links created");
        let clicks_enqueued = counter("clicks_enqueued", "Click events queued for processing");
        let clicks_dropped = counter(
            "clicks_dropped",
            "Click events dropped because the queue was full (the redirect was served)",
        );
        let clicks_recorded = counter(
            "clicks_recorded",
            "Click events whose counts reached the store",
        );
        let clicks_produced = counter(
            "clicks_produced",
            "Click events acknowledged by Kafka (all in-sync replicas)",
        );
        let kafka_delivery_failures = counter(
            "kafka_delivery_failures",
            "Click events not delivered to Kafka in time (counted as dropped too)",
        );
        let click_flush_failures = counter(
            "click_flush_failures",
            "Failed writes of aggregated click counts",
        );
        let redis_errors = counter("redis_errors", "Redis calls that failed or timed out");
        let redis_rejected = counter(
            "redis_rejected",
            "Redis calls skipped because the breaker was open",
        );
        let redis_invalidations_lost = counter(
            "redis_invalidations_lost",
            "Cache invalidations neither sent nor kept for retry (the TTLs bound staleness)",
        );
        let click_queue_depth = Gauge::default();
        registry.register(
            "click_queue_depth",
            "Click events waiting in the queue",
            click_queue_depth.clone(),
        );

        Self {
            registry,
            l1_hits,
            l1_negative_hits,
            l1_misses,
            l1_loads,
            l2_hits,
            l2_negative_hits,
            l2_misses,
            redis_errors,
            redis_rejected,
            redis_breaker_open,
            redis_seconds,
            redis_invalidations_lost,
            links_created,
            clicks_enqueued,
            clicks_dropped,
            click_queue_depth,
            clicks_recorded,
            clicks_produced,
            kafka_delivery_failures,
            kafka_buffered,
            click_flush_failures,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
