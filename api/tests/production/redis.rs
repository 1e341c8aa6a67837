//! Redis stopped or frozen under sustained redirect load.

use std::time::{Duration, Instant};

use crate::{
    helpers::{TestApp, spawn_app_in, spawn_production_app},
    outage::{Kind, Load, Outage, eventually, one_at_a_time, p99},
};

const HITS: &str = r#"shortener_cache_requests_total{tier="l2",result="hit"}"#;
const BREAKER: &str = "shortener_redis_breaker_open";
const CODES: usize = 100;
const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_costs_no_request() {
    redis_outage(Kind::Stopped).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_no_request() {
    redis_outage(Kind::Frozen).await;
}

async fn create_links(app: &TestApp) -> Vec<String> {
    let mut codes = Vec::with_capacity(CODES);
    for i in 0..CODES {
        codes.push(app.shorten(&format!("https://example.com/l2/{i}")).await.0);
    }
    codes
}

async fn redis_outage(kind: Kind) {
    let _serial = one_at_a_time().await;
    // An L1 this short sends nearly every request on to L2, which is what
    // is under test.
    let short_l1 = |s: &mut shortener_api::config::Settings| {
        s.cache.l1.ttl = Duration::from_millis(20);
        s.cache.redis.timeout = Duration::from_millis(100);
    };
    let app = spawn_production_app(short_l1).await;
    let codes = create_links(&app).await;

    // The same instance without Redis, under the same load: the reference.
    let dir = tempfile::tempdir().expect("temporary directory");
    let without = spawn_app_in(app.tier.clone(), dir, |s| {
        short_l1(s);
        s.cache.redis.url = String::new().into();
    })
    .await;
    let load = Load::start(&without, &codes, CLIENTS);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let reference = load.finish().await;
    assert!(reference.iter().all(|s| s.ok), "failures without Redis");
    let p99_without = p99(
        &reference,
        reference[0].at,
        reference[reference.len() - 1].at,
    );
    without.stop().await;

    let load = Load::start(&app, &codes, CLIENTS);
    eventually(Duration::from_secs(10), "L2 serves hits", || async {
        app.metric(HITS).await > 100.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let outage = Outage::begin("redis", kind).await;
    let down = Instant::now();
    eventually(Duration::from_secs(10), "the breaker opens", || async {
        app.metric(BREAKER).await == 1.0
    })
    .await;
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let back = Instant::now();
    outage.end().await;

    eventually(Duration::from_secs(15), "the breaker closes", || async {
        app.metric(BREAKER).await == 0.0
    })
    .await;
    let hits = app.metric(HITS).await;
    eventually(Duration::from_secs(10), "L2 hits resume", || async {
        app.metric(HITS).await > hits + 100.0
    })
    .await;
    let samples = load.finish().await;

    let failed = samples.iter().filter(|s| !s.ok).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", samples.len());
    let p99_open = p99(&samples, opened, back);
    let p99_before = p99(&samples, samples[0].at, down);
    eprintln!(
        "redis {kind:?}: {} requests; p99 with L2 {p99_before:?}, breaker open {p99_open:?}, \
         without Redis {p99_without:?} (ratio open/without {:.2}); opened after {:?}",
        samples.len(),
        p99_open.as_secs_f64() / p99_without.as_secs_f64(),
        opened - down,
    );
    // An open breaker fails without touching the network: requests must
    // not be waiting for Redis timeouts.
    assert!(
        p99_open < app.settings.cache.redis.timeout,
        "p99 {p99_open:?} with the breaker open: requests still wait for Redis"
    );
}
