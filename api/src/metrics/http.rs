//! The RED metrics of HTTP requests, per route: a collector sharded by
//! thread, so recording on the redirect path is a few relaxed integer adds
//! on a cache line no other HTTP worker writes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::http::StatusCode;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet},
    metrics::MetricType,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

/// The names the router gives the resources it serves; a request's
/// `route` label is the one of the resource that took it.
pub mod resource {
    pub const HEALTHZ: &str = "healthz";
    pub const READYZ: &str = "readyz";
    pub const METRICS: &str = "metrics";
    pub const OPENAPI: &str = "openapi";
    pub const CREATE: &str = "create";
    pub const LINK: &str = "link";
    pub const STATS: &str = "stats";
    /// Any other path under `/api/v1` (answered 404).
    pub const API_UNKNOWN: &str = "api-unknown";
}

/// What a request was for: the `route` label of the HTTP metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET`/`HEAD /{code}`: the router's fallback, so any path no
    /// resource takes.
    Redirect,
    /// `/api/v1/links`.
    Create,
    /// `/api/v1/links/{code}/stats`.
    Stats,
    /// The rest of `/api/v1`: read, change, delete a link; the OpenAPI
    /// document; unknown API paths.
    Api,
    /// `/healthz`, `/readyz`, `/metrics`.
    Admin,
}

impl Route {
    pub const ALL: [Route; 5] = [
        Route::Redirect,
        Route::Create,
        Route::Stats,
        Route::Api,
        Route::Admin,
    ];

    /// The route of the resource the router matched, by its name; `None`
    /// (no resource: the fallback) is the redirect.
    pub fn of_resource(name: Option<&str>) -> Self {
        match name {
            None => Route::Redirect,
            Some(resource::CREATE) => Route::Create,
            Some(resource::STATS) => Route::Stats,
            Some(resource::HEALTHZ | resource::READYZ | resource::METRICS) => Route::Admin,
            Some(_) => Route::Api,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Redirect => "redirect",
            Route::Create => "create",
            Route::Stats => "stats",
            Route::Api => "api",
            Route::Admin => "admin",
        }
    }

    /// The route's path pattern, as in the OpenAPI document.
    pub fn pattern(self) -> &'static str {
        match self {
            Route::Redirect => "/{code}",
            Route::Create => "/api/v1/links",
            Route::Stats => "/api/v1/links/{code}/stats",
            Route::Api => "/api/v1/links/{code}",
            Route::Admin => "/admin",
        }
    }
}

const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// Latency buckets from 50 µs, so an L1-hit redirect (tens of µs) and a
/// store-bound one (milliseconds) fall in different buckets, to 10 s.
/// 25 ms, the redirect latency objective, is a bucket boundary.
const REQUEST_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Shards of the HTTP metrics: each thread records into its own, so the
/// HTTP workers never write a cache line another one writes (a shared
/// atomic, or prometheus-client's locked histogram, makes the cores trade
/// that line on every request). A scrape adds the shards up.
const SHARDS: usize = 16;

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, assigned round-robin at its first request.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// One thread's counts: per route, requests per status class, and the
/// latency histogram (a count per bucket, the last one `+Inf`, and the sum
/// in nanoseconds, so every update is one integer add).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: [[AtomicU64; STATUS_CLASSES.len()]; Route::ALL.len()],
    buckets: [[AtomicU64; REQUEST_BUCKETS.len() + 1]; Route::ALL.len()],
    nanos: [AtomicU64; Route::ALL.len()],
}

/// Requests and their latency per route: the RED metrics, exported as
/// `shortener_http_requests_total{route,status}` and
/// `shortener_http_request_duration_seconds{route}`.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    shards: Arc<[Shard; SHARDS]>,
}

impl HttpMetrics {
    /// Counts one request and its duration: three relaxed adds to this
    /// thread's shard.
    pub fn record(&self, route: Route, status: StatusCode, elapsed: Duration) {
        let class = match status.as_u16() {
            ..300 => 0,
            300..400 => 1,
            400..500 => 2,
            _ => 3,
        };
        let seconds = elapsed.as_secs_f64();
        let bucket = REQUEST_BUCKETS.partition_point(|&upper| upper < seconds);
        let shard = &self.shards[SHARD.with(|shard| *shard)];
        let route = route as usize;
        shard.requests[route][class].fetch_add(1, Ordering::Relaxed);
        shard.buckets[route][bucket].fetch_add(1, Ordering::Relaxed);
        shard.nanos[route].fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn sum(&self, read: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| read(shard).load(Ordering::Relaxed))
            .sum()
    }
}

impl Collector for HttpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut requests = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, per route and status class",
            None,
            MetricType::Counter,
        )?;
        for route in Route::ALL {
            for (class, status) in STATUS_CLASSES.into_iter().enumerate() {
                let total = self.sum(|shard| &shard.requests[route as usize][class]);
                let labels = RequestLabels {
                    route: route.label(),
                    status,
                };
                requests
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&total, None)?;
            }
        }
        let mut durations = encoder.encode_descriptor(
            "http_request_duration_seconds",
            "Time from a request's head being read to its response being ready, per route",
            None,
            MetricType::Histogram,
        )?;
        for route in Route::ALL {
            let r = route as usize;
            let uppers = REQUEST_BUCKETS.into_iter().chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = uppers
                .enumerate()
                .map(|(i, upper)| (upper, self.sum(|shard| &shard.buckets[r][i])))
                .collect();
            let count = buckets.iter().map(|(_, n)| n).sum();
            let seconds = self.sum(|shard| &shard.nanos[r]) as f64 / 1e9;
            durations
                .encode_family(&RouteLabel {
                    route: route.label(),
                })?
                .encode_histogram::<NoLabelSet>(seconds, count, &buckets, None)?;
        }
        Ok(())
    }
}
