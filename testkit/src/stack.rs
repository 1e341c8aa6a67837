//! The dev stack (`infra/dev-stack up`): where its servers listen, and its
//! script, for tests that take a server down and bring it back. Every
//! address can be pointed elsewhere from the environment; the Scylla
//! addresses are the storage contract suite's
//! ([`stores::fixtures::scylla_test_nodes`]).

use tokio::sync::{Mutex, MutexGuard};

/// The dev stack's Kafka, or `SHORTENER_TEST_KAFKA_BROKERS`.
pub fn brokers() -> String {
    std::env::var("SHORTENER_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The dev stack's Redis, or `SHORTENER_TEST_REDIS_URL`.
pub fn redis_url() -> String {
    std::env::var("SHORTENER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The dev stack's Prometheus, or `SHORTENER_TEST_PROMETHEUS_URL`.
pub fn prometheus_url() -> String {
    std::env::var("SHORTENER_TEST_PROMETHEUS_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9090".into())
}

/// The dev stack's Jaeger query API, or `SHORTENER_TEST_JAEGER_URL`.
pub fn jaeger_url() -> String {
    std::env::var("SHORTENER_TEST_JAEGER_URL").unwrap_or_else(|_| "http://127.0.0.1:16686".into())
}

/// The dev stack's OTLP receiver (Jaeger's): gRPC, or
/// `SHORTENER_TEST_OTLP_GRPC`.
pub fn otlp_grpc() -> String {
    std::env::var("SHORTENER_TEST_OTLP_GRPC").unwrap_or_else(|_| "http://127.0.0.1:4317".into())
}

/// The dev stack's OTLP receiver over HTTP, or `SHORTENER_TEST_OTLP_HTTP`.
pub fn otlp_http() -> String {
    std::env::var("SHORTENER_TEST_OTLP_HTTP").unwrap_or_else(|_| "http://127.0.0.1:4318".into())
}

/// Where the dev stack keeps its state (Prometheus' scrape targets among
/// it): `SHORTENER_STACK_DIR`, by default `.stack` in the workspace.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var_os("SHORTENER_STACK_DIR")
        .map_or_else(|| crate::repo().join(".stack"), std::path::PathBuf::from)
}

/// Runs `infra/dev-stack` with `args` (`stop kafka`, `pause cassandra`,
/// …), for tests that take the dev stack's servers down and back; panics
/// if it fails. Blocking: call it from `spawn_blocking` in async tests.
pub fn dev_stack(args: &[&str]) {
    run_script("infra/dev-stack", args);
}

/// Runs `infra/multi-region` with `args` (e.g. `kill us`), asserting it
/// succeeded.
pub fn multi_region(args: &[&str]) {
    run_script("infra/multi-region", args);
}

fn run_script(script: &str, args: &[&str]) {
    let path = crate::repo().join(script);
    let status = std::process::Command::new(&path)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(status.success(), "{script} {args:?} failed: {status}");
}

/// Held by each test of a suite for its whole run, where tests must not
/// overlap: they load the same two cores and servers, and some stop and
/// restart those servers. (An async mutex: each test has a runtime of its
/// own, and holds it across awaits. One per test binary; cargo runs the
/// binaries one after another.)
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}
