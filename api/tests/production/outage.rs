//! Outages of dev-stack servers, and load to observe them under.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rand::seq::IndexedRandom;
use reqwest::{Client, StatusCode, redirect::Policy};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use shortener_testkit::stack::dev_stack;

use crate::helpers::TestApp;

/// Held by each test for its whole run: outages must not overlap.
pub use shortener_testkit::one_at_a_time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The process is stopped: connections are refused.
    Stopped,
    /// The process is frozen (SIGSTOP): connections hang.
    Frozen,
}

/// A server down until [`Outage::end`], or until dropped (so a failing test
/// never leaves the stack broken for the next).
#[derive(Debug)]
pub struct Outage {
    service: &'static str,
    kind: Kind,
    ended: bool,
}

impl Outage {
    pub async fn begin(service: &'static str, kind: Kind) -> Self {
        let verb = match kind {
            Kind::Stopped => "stop",
            Kind::Frozen => "pause",
        };
        tokio::task::spawn_blocking(move || dev_stack(&[verb, service]))
            .await
            .expect("dev-stack task");
        Self {
            service,
            kind,
            ended: false,
        }
    }

    /// Brings the server back; returns when it answers.
    pub async fn end(mut self) {
        let (service, kind) = (self.service, self.kind);
        self.ended = true;
        tokio::task::spawn_blocking(move || dev_stack(&[verb_back(kind), service]))
            .await
            .expect("dev-stack task");
    }
}

fn verb_back(kind: Kind) -> &'static str {
    match kind {
        Kind::Stopped => "start",
        Kind::Frozen => "resume",
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.ended {
            dev_stack(&[verb_back(self.kind), self.service]);
        }
    }
}

/// One request of a load run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: Instant,
    pub latency: Duration,
    pub ok: bool,
}

/// Redirect requests for random codes from `concurrency` clients, until
/// finished.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    workers: Vec<JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub fn start(app: &TestApp, codes: &[String], concurrency: usize) -> Self {
        Self::at(&app.address, codes, concurrency)
    }

    /// The same load, sent to `base` (a load balancer in front of
    /// instances).
    pub fn at(base: &str, codes: &[String], concurrency: usize) -> Self {
        let stop = CancellationToken::new();
        let codes = Arc::new(codes.to_vec());
        let workers = (0..concurrency)
            .map(|_| {
                let (stop, codes, base) = (stop.clone(), codes.clone(), base.to_owned());
                tokio::spawn(async move {
                    let client = Client::builder()
                        .redirect(Policy::none())
                        // A request that hangs is a failed one, not a hung test.
                        .timeout(Duration::from_secs(10))
                        .build()
                        .expect("client");
                    let mut samples = Vec::new();
                    while !stop.is_cancelled() {
                        let code = codes.choose(&mut rand::rng()).expect("codes");
                        let at = Instant::now();
                        let response = client.get(format!("{base}/{code}")).send().await;
                        samples.push(Sample {
                            at,
                            latency: at.elapsed(),
                            ok: response.is_ok_and(|r| r.status() == StatusCode::FOUND),
                        });
                    }
                    samples
                })
            })
            .collect();
        Self { stop, workers }
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let mut all = Vec::new();
        for worker in self.workers {
            all.extend(worker.await.expect("load worker"));
        }
        all.sort_by_key(|s| s.at);
        all
    }
}

/// The 99th percentile latency of the samples taken in `[from, to)`.
pub fn p99(samples: &[Sample], from: Instant, to: Instant) -> Duration {
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .map(|s| s.latency)
        .collect();
    assert!(
        latencies.len() >= 100,
        "too few samples: {}",
        latencies.len()
    );
    latencies.sort();
    latencies[latencies.len() * 99 / 100]
}

/// Polls `check` every 20 ms until it holds; panics after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
