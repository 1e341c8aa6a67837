//! Prometheus metrics, named `shortener_*`.
//!
//! Every handle is resolved once, at start; recording on the redirect path
//! is a few relaxed atomic adds and one histogram observation. Every series
//! a dashboard or alert reads exists from the start (at zero), so a rate
//! over it is never "no data".
//!
//! Names are an interface: `dashboards/` and the alert rules use them, and
//! a test scrapes a running service to keep them in step.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use runtime::telemetry::Register;

mod http;

pub use http::{HttpMetrics, Route, resource};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    tier: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TierLabel {
    tier: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

/// Calls to the link store, per operation.
#[derive(Debug)]
pub struct StoreMetrics {
    family_seconds: Family<OperationLabel, Histogram>,
    family_errors: Family<OperationLabel, Counter>,
}

impl StoreMetrics {
    /// The duration histogram and error counter of one operation.
    pub fn operation(&self, operation: &'static str) -> (Histogram, Counter) {
        let label = OperationLabel { operation };
        (
            self.family_seconds.get_or_create(&label).clone(),
            self.family_errors.get_or_create(&label).clone(),
        )
    }
}

/// The store's operations, as labelled.
pub const STORE_OPERATIONS: [&str; 11] = [
    "lease_ids",
    "reserve_id",
    "insert_link",
    "get_link",
    "get_link_elsewhere",
    "update_link",
    "delete_link",
    "record_clicks",
    "click_stats",
    "get_or_init_setting",
    "ping",
];

/// The service's metrics, and the registry that exports them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub store: StoreMetrics,
    /// Time from handing a click event to the producer to its
    /// acknowledgement by Kafka.
    pub kafka_delivery_seconds: Histogram,
    /// Errors librdkafka reported (broker down, authentication, ...).
    pub kafka_errors: Counter,
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
    /// Link changes told to other regions, not told (Kafka did not take
    /// them), and heard from them.
    pub link_changes_sent: Counter,
    pub link_changes_unsent: Counter,
    pub link_changes_heard: Counter,
    /// L2 write-backs not made because as many were in flight already.
    pub redis_write_backs_skipped: Counter,
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
    /// Click-count rows given up after a write that may have been applied.
    pub click_rows_uncertain: Counter,
    /// HTTP connections open on the public listener, and those closed for
    /// a late head or a stalled write.
    pub connections: crate::server::ConnectionMetrics,
    /// Request bodies that did not arrive in time (answered 408).
    pub body_timeouts: Counter,
    /// Connections the public listener serves at once, at most (workers ×
    /// per-worker limit); beyond, new ones wait in the backlog.
    pub http_connections_limit: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut root = runtime::telemetry::metrics_registry();
        let registry = root.sub_registry_with_prefix("shortener");

        let http = HttpMetrics::default();
        registry.register_collector(Box::new(http.clone()));
        // 100 µs to about 3.3 s: a cached partition read to a timeout.
        let store_seconds = registry.metric(
            "storage_operation_duration_seconds",
            "Duration of link store operations, errors included",
            Family::<OperationLabel, Histogram>::new_with_constructor(
                (|| Histogram::new(exponential_buckets(0.0001, 2.0, 16))) as fn() -> Histogram,
            ),
        );
        let store_errors = registry.metric(
            "storage_errors",
            "Link store operations that failed (unavailable, timed out)",
            Family::<OperationLabel, Counter>::default(),
        );
        let store = StoreMetrics {
            family_seconds: store_seconds,
            family_errors: store_errors,
        };
        for operation in STORE_OPERATIONS {
            store.operation(operation);
        }
        // 1 ms to about 33 s: an acknowledgement by all in-sync replicas,
        // to the delivery timeout.
        let kafka_delivery_seconds = registry.metric(
            "kafka_delivery_duration_seconds",
            "Time from producing a click event to its acknowledgement by Kafka",
            Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        );

        let cache_requests = registry.metric(
            "cache_requests",
            "Link lookups per cache tier and result",
            Family::<CacheLabels, Counter>::default(),
        );
        let cache_loads = registry.metric(
            "cache_loads",
            "Loads from the next tier after a cache miss (one per key however many requests wait)",
            Family::<TierLabel, Counter>::default(),
        );
        for tier in ["l1", "l2"] {
            for result in ["hit", "negative_hit", "miss"] {
                drop(cache_requests.get_or_create(&CacheLabels { tier, result }));
            }
        }
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
        let redis_seconds = registry.metric(
            "redis_call_duration_seconds",
            "Duration of Redis calls made (pool wait included)",
            Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
        );
        let kafka_buffered = registry.gauge(
            "kafka_buffered_events",
            "Click events in the producer awaiting delivery to Kafka",
        );
        let redis_breaker_open = registry.gauge(
            "redis_breaker_open",
            "1 while the Redis breaker is open and L2 is skipped",
        );

        let links_created = registry.counter("links_created", "Links created");
        let clicks_enqueued =
            registry.counter("clicks_enqueued", "Click events queued for processing");
        let clicks_dropped = registry.counter(
            "clicks_dropped",
            "Click events dropped because the queue was full (the redirect was served)",
        );
        let clicks_recorded = registry.counter(
            "clicks_recorded",
            "Click events whose counts reached the store",
        );
        let clicks_produced = registry.counter(
            "clicks_produced",
            "Click events acknowledged by Kafka (all in-sync replicas)",
        );
        let kafka_delivery_failures = registry.counter(
            "kafka_delivery_failures",
            "Click events not delivered to Kafka in time (counted as dropped too)",
        );
        let click_flush_failures = registry.counter(
            "click_flush_failures",
            "Failed writes of aggregated click counts",
        );
        let click_rows_uncertain = registry.counter(
            "click_rows_uncertain",
            "Click-count rows given up after a failed write that may have been applied \
             (written again, they could count twice)",
        );
        let redis_errors = registry.counter("redis_errors", "Redis calls that failed or timed out");
        let kafka_errors = registry.counter("kafka_errors", runtime::telemetry::KAFKA_ERRORS_HELP);
        let redis_rejected = registry.counter(
            "redis_rejected",
            "Redis calls skipped because the breaker was open",
        );
        let redis_write_backs_skipped = registry.counter(
            "redis_write_backs_skipped",
            "L2 write-backs skipped because as many as allowed were in flight",
        );
        let redis_invalidations_lost = registry.counter(
            "redis_invalidations_lost",
            "Cache invalidations neither sent nor kept for retry (the TTLs bound staleness)",
        );
        let link_changes_sent = registry.counter(
            "link_changes_sent",
            "Link changes produced to this region's Kafka for the other regions",
        );
        let link_changes_unsent = registry.counter(
            "link_changes_unsent",
            "Link changes Kafka did not take in time (other regions keep the old answer until their TTLs end)",
        );
        let link_changes_heard = registry.counter(
            "link_changes_heard",
            "Link changes heard from other regions and applied to this instance's caches",
        );
        let click_queue_depth =
            registry.gauge("click_queue_depth", "Click events waiting in the queue");

        let http_connections = registry.gauge(
            "http_connections",
            "HTTP connections open on the public listener",
        );
        let timeouts = registry.metric(
            "http_timeouts",
            "Requests cut short because the client was too slow: a head or a body late, or responses not read",
            Family::<PhaseLabel, Counter>::default(),
        );
        let timeout = |phase| timeouts.get_or_create(&PhaseLabel { phase }).clone();
        let connections = crate::server::ConnectionMetrics {
            open: http_connections,
            head_timeouts: timeout("head"),
            write_timeouts: timeout("write"),
        };
        let body_timeouts = timeout("body");
        let http_connections_limit = registry.gauge(
            "http_connections_limit",
            "HTTP connections the public listener serves at once, at most; beyond, they wait",
        );

        Self {
            registry: root,
            http,
            store,
            kafka_delivery_seconds,
            kafka_errors,
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
            link_changes_sent,
            link_changes_unsent,
            link_changes_heard,
            redis_write_backs_skipped,
            links_created,
            clicks_enqueued,
            clicks_dropped,
            click_queue_depth,
            clicks_recorded,
            clicks_produced,
            kafka_delivery_failures,
            kafka_buffered,
            click_flush_failures,
            click_rows_uncertain,
            connections,
            body_timeouts,
            http_connections_limit,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        runtime::telemetry::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::http::StatusCode;

    use super::*;

    #[test]
    fn requests_are_counted_per_route_and_status_class() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.http.record(Route::Redirect, StatusCode::FOUND, ms);
        metrics
            .http
            .record(Route::Redirect, StatusCode::NOT_FOUND, ms);
        metrics
            .http
            .record(Route::Create, StatusCode::SERVICE_UNAVAILABLE, ms);
        let text = metrics.render();
        for line in [
            r#"shortener_http_requests_total{route="redirect",status="3xx"} 1"#,
            r#"shortener_http_requests_total{route="redirect",status="4xx"} 1"#,
            r#"shortener_http_requests_total{route="create",status="5xx"} 1"#,
            r#"shortener_http_requests_total{route="stats",status="2xx"} 0"#,
            r#"shortener_http_request_duration_seconds_count{route="redirect"} 2"#,
            r#"shortener_http_request_duration_seconds_sum{route="redirect"} 0.002"#,
            r#"shortener_http_request_duration_seconds_bucket{le="0.0005",route="redirect"} 0"#,
            r#"shortener_http_request_duration_seconds_bucket{le="0.001",route="redirect"} 2"#,
            r#"shortener_http_request_duration_seconds_bucket{le="+Inf",route="redirect"} 2"#,
            r#"shortener_http_request_duration_seconds_bucket{le="+Inf",route="create"} 1"#,
            r#"shortener_cache_requests_total{tier="l2",result="negative_hit"} 0"#,
            r#"shortener_storage_errors_total{operation="get_link"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
