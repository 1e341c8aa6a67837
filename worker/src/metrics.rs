//! The worker's Prometheus metrics, named `shortener_worker_*`, and the
//! small HTTP server that exposes them.
//!
//! Names are an interface: `dashboards/` and the alert rules use them, and
//! a test scrapes a running worker to keep them in step.

use std::net::{SocketAddr, TcpListener};

use actix_web::{App, HttpResponse, dev::ServerHandle, web};
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
use runtime::{
    http::{ConnectionMetrics, ServerOptions},
    telemetry::Register,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub partition: i32,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabel {
    dependency: &'static str,
}

/// The worker's metrics, and the registry that exports them.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    /// Valid click events counted.
    pub events_consumed: Counter,
    /// Events skipped because the ledger already counted them (replays).
    pub events_skipped: Counter,
    /// Messages set aside to the dead-letter topic.
    pub dead_letters: Counter,
    /// Per owned partition: events in Kafka not yet durably counted.
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    /// Partitions this worker owns.
    pub partitions: Gauge,
    pub assigned: Counter,
    pub revoked: Counter,
    /// Duration of a write: dead letters, fence, rows.
    pub flush_seconds: Histogram,
    /// Ledger rows written.
    pub rows_written: Counter,
    /// Unix time of the last write that succeeded.
    pub last_flush: Gauge,
    /// Failed calls, retried: to ScyllaDB, and to Kafka (dead letters).
    pub scylla_failures: Counter,
    pub kafka_failures: Counter,
    /// Errors reported by the Kafka client.
    pub kafka_errors: Counter,
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let mut root = runtime::telemetry::metrics_registry();
        let registry = root.sub_registry_with_prefix("shortener_worker");

        let events_consumed = registry.counter("events_consumed", "Valid click events counted");
        let events_skipped = registry.counter(
            "events_skipped",
            "Events skipped because the ledger had counted them already (replays)",
        );
        let dead_letters = registry.counter(
            "dead_letters",
            "Messages that are not click events, set aside to the dead-letter topic",
        );
        let rows_written = registry.counter("rows_written", "Ledger rows written");
        let kafka_errors = registry.counter("kafka_errors", runtime::telemetry::KAFKA_ERRORS_HELP);

        let changes = registry.metric(
            "rebalances",
            "Partition assignment changes this worker took part in",
            Family::<ChangeLabel, Counter>::default(),
        );
        let assigned = changes
            .get_or_create(&ChangeLabel { change: "assigned" })
            .clone();
        let revoked = changes
            .get_or_create(&ChangeLabel { change: "revoked" })
            .clone();

        let failures = registry.metric(
            "call_failures",
            "Calls that failed and were retried, per dependency",
            Family::<DependencyLabel, Counter>::default(),
        );
        let scylla_failures = failures
            .get_or_create(&DependencyLabel {
                dependency: "scylla",
            })
            .clone();
        let kafka_failures = failures
            .get_or_create(&DependencyLabel {
                dependency: "kafka",
            })
            .clone();

        let consumer_lag = registry.metric(
            "consumer_lag_events",
            "Per owned partition, events in Kafka past the committed offset (not yet durably counted)",
            Family::<PartitionLabel, Gauge>::default(),
        );
        let partitions = registry.gauge(
            "partitions_owned",
            "Partitions of the clicks topic this worker owns",
        );
        // 1 ms to about 65 s: a small write, to one retried through a
        // ScyllaDB outage.
        let flush_seconds = registry.histogram(
            "flush_duration_seconds",
            "Duration of a write of counts (dead letters, progress fence, rows)",
            exponential_buckets(0.001, 2.0, 17),
        );
        let last_flush = registry.gauge(
            "last_flush_timestamp_seconds",
            "Unix time at which the last write of counts finished",
        );

        Self {
            registry: root,
            events_consumed,
            events_skipped,
            dead_letters,
            consumer_lag,
            partitions,
            assigned,
            revoked,
            flush_seconds,
            rows_written,
            last_flush,
            scylla_failures,
            kafka_failures,
            kafka_errors,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        runtime::telemetry::render(&self.registry)
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

async fn scrape(metrics: web::Data<WorkerMetrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(runtime::telemetry::EXPOSITION_CONTENT_TYPE)
        .body(metrics.render())
}

/// Serves `/metrics` and `/healthz` on `listener`, on one thread, with
/// `options`' deadlines on every request, until stopped.
pub fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<WorkerMetrics>,
    options: &ServerOptions,
    tasks: &runtime::tasks::Tasks,
) -> std::io::Result<(SocketAddr, ServerHandle)> {
    let addr = listener.local_addr()?;
    let metrics = web::Data::from(metrics);
    let server = runtime::http::serve(
        "shortener-worker-metrics",
        listener,
        options,
        ConnectionMetrics::default(),
        move || {
            App::new()
                .app_data(metrics.clone())
                .route("/metrics", web::get().to(scrape))
                .route("/healthz", web::get().to(HttpResponse::Ok))
        },
    )?;
    let handle = server.handle();
    tasks.spawn(server);
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
    };

    use super::*;

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn the_metrics_listener_serves_scrapes_and_times_out_slow_clients() {
        let mut options = ServerOptions::scrapes();
        // Not under a second: actix-http reads the time from a clock it
        // updates every 500 ms.
        let deadline = Duration::from_secs(1);
        options.client_request_timeout = deadline;
        options.limits.request_head = deadline;
        // Only the head's deadline can end a connection in time.
        options.keep_alive = Duration::from_secs(30);
        options.shutdown_timeout = Duration::from_secs(1);
        let tasks = runtime::tasks::Tasks::new();
        let metrics = std::sync::Arc::new(WorkerMetrics::new());
        let listener = runtime::http::bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let (addr, _handle) = serve(listener, metrics, &options, &tasks).expect("serve");

        let mut scrape = TcpStream::connect(addr).await.expect("connect");
        scrape
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let answer = read_to_close(&mut scrape).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("shortener_worker_events_consumed_total"),
            "{answer}"
        );

        // A first head that never ends: 408 once the deadline passes.
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metr").await.expect("write");
        let started = Instant::now();
        let answer = read_to_close(&mut slow).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(5));

        // A later head on a kept-alive connection that never ends: closed.
        let mut later = TcpStream::connect(addr).await.expect("connect");
        later
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut first = [0; 512];
        let n = later.read(&mut first).await.expect("read");
        assert!(
            first[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&first[..n])
        );
        later.write_all(b"GET /heal").await.expect("write");
        let started = Instant::now();
        let answer = read_to_close(&mut later).await;
        assert!(!answer.contains("200"), "{answer:?}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "{took:?}");

        tasks.shut_down(Duration::from_secs(5)).await;
    }
}
