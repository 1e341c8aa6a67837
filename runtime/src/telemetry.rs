//! Logs and traces, set up the same way by both binaries, and the process
//! metrics both export.
//!
//! - **Logs** go through `tracing`: text for people or JSON for pipelines,
//!   the level from `log.level` (or `RUST_LOG`). A line written inside a
//!   traced request or event carries its span's `trace_id`.
//! - **Traces** go to an OTLP endpoint (gRPC or HTTP/protobuf) when
//!   `traces.endpoint` is set, and cost nothing when it is not: no layer is
//!   installed and no span is created. Sampling is parent-based: a trace
//!   the caller sampled is recorded, one it did not is not, and a trace
//!   that starts here is recorded with probability `traces.sampling_ratio`.
//!   That decision is taken once, where a trace enters the service (see
//!   [`Sampler`]), before any span exists, so an unsampled request pays one
//!   random number and nothing else.

use std::{io::IsTerminal, time::Duration};

use opentelemetry::{
    Context, KeyValue,
    propagation::{Extractor, TextMapPropagator},
    trace::{SpanContext, TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler as SdkSampler, SdkTracerProvider},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::{Metric, Registry},
};
use serde::Deserialize;
use tracing::Level;
use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, fmt, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::settings::{InvalidKey, LogFormat, LogSettings, invalid};

pub mod process;

/// An `info` span for work done within a recorded trace, or a disabled
/// span (free) when there is none: spans of unsampled requests are never
/// created, and this keeps their callees from starting traces of their own.
#[macro_export]
macro_rules! child_span {
    ($($span:tt)*) => {
        if ::tracing::Span::current().is_none() {
            ::tracing::Span::none()
        } else {
            ::tracing::info_span!($($span)*)
        }
    };
}

/// The media type of what [`render`] writes.
pub const EXPOSITION_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metrics registry holding the process metrics and the count of panics,
/// for a binary to add its own to.
pub fn metrics_registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(process::ProcessCollector));
    registry.register_collector(Box::new(PanicCollector));
    registry
}

/// Exports `shortener_panics_total`.
#[derive(Debug)]
struct PanicCollector;

impl Collector for PanicCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(crate::panics::count());
        counter.encode(encoder.encode_descriptor(
            "shortener_panics",
            "Panics in any thread of the process (each is a bug; a request's panic is also a 500)",
            None,
            counter.metric_type(),
        )?)
    }
}

/// Clients' malformed requests are logged by actix-http's dispatcher at
/// ERROR (target `actix_http::h1::dispatcher`); they are the clients' faults,
/// not the service's, and anyone could fill the log with them. Silenced
/// unless the filter names `actix_http` itself.
const CLIENT_FAULTS: &str = "actix_http::h1::dispatcher=off";

fn log_filter(level: &str) -> EnvFilter {
    let filter = EnvFilter::new(level);
    if level.contains("actix_http") {
        return filter;
    }
    match CLIENT_FAULTS.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Registers a metric and hands back the handle a service keeps, in one
/// step: `registry.counter("links_created", "Links created")`.
pub trait Register {
    fn metric<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M;

    fn counter(&mut self, name: &str, help: &str) -> Counter {
        self.metric(name, help, Counter::default())
    }

    fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        self.metric(name, help, Gauge::default())
    }

    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        buckets: impl Iterator<Item = f64>,
    ) -> Histogram {
        self.metric(name, help, Histogram::new(buckets))
    }
}

impl Register for Registry {
    fn metric<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.register(name, help, metric.clone());
        metric
    }
}

/// Help of the Kafka client's error count, which both binaries export.
pub const KAFKA_ERRORS_HELP: &str =
    "Errors reported by the Kafka client (brokers unreachable, requests failed)";

/// The text exposition of every metric of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String cannot fail");
    text
}

/// How spans are sent to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC, port 4317 by convention.
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies, port 4318 by convention.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `traces.*`: the same keys in both binaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceSettings {
    /// The collector's URL; empty turns tracing off.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Probability that a trace starting here is recorded.
    pub sampling_ratio: f64,
    /// Longest wait for one export.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl TraceSettings {
    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }

    pub fn validate(&self) -> Result<(), InvalidKey> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(invalid("traces.sampling_ratio", "must be between 0 and 1"));
        }
        if self.enabled() {
            let url = url::Url::parse(&self.endpoint)
                .map_err(|e| invalid("traces.endpoint", format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid("traces.endpoint", "must be an http or https URL"));
            }
        }
        if self.export_timeout.is_zero() {
            return Err(invalid("traces.export_timeout", "must be more than zero"));
        }
        Ok(())
    }
}

/// A telemetry setup that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Installed telemetry; [`Telemetry::shutdown`] sends the spans still
/// buffered.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    sampler: Sampler,
}

impl Telemetry {
    /// Where traces start in this process: decides which are recorded.
    pub fn sampler(&self) -> Sampler {
        self.sampler
    }

    /// Exports the spans still buffered; call last, after the work stopped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last spans");
        }
    }
}

/// Installs the global subscriber: logs as `log` says, and spans to the
/// OTLP endpoint if `traces` names one. `service` names this process in
/// traces. Must be called from within a Tokio runtime when traces go over
/// gRPC.
pub fn init(
    service: &'static str,
    log: &LogSettings,
    traces: &TraceSettings,
) -> Result<Telemetry, TelemetryError> {
    // `RUST_LOG`, when set, wins over `log.level`, so one run can be
    // debugged without editing configuration.
    let level = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| log.level.clone());
    let filter = log_filter(&level);
    let logs = match log.format {
        LogFormat::Text => fmt::layer()
            .with_target(false)
            .with_ansi(std::io::stdout().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            // The current span's fields, `trace_id` among them.
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let provider = traces
        .enabled()
        .then(|| tracer_provider(service, traces))
        .transpose()?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_tracked_inactivity(false)
            // Only this project's spans (and its events, as span events): a
            // dependency's own spans would start traces of their own. A
            // target filter decides per callsite, once: the `trace!` and
            // `debug!` of every dependency stay disabled statically, with
            // no per-call check on the hot path.
            .with_filter(OWN_TARGETS.iter().fold(Targets::new(), |targets, own| {
                targets.with_target(*own, Level::INFO)
            }))
    });
    let result = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    } else {
        crate::panics::install_hook();
    }
    Ok(Telemetry {
        provider,
        sampler: Sampler::for_settings(traces),
    })
}

/// The crates whose spans are exported.
const OWN_TARGETS: [&str; 3] = ["shortener_api", "shortener_worker", "links"];

fn tracer_provider(
    service: &'static str,
    traces: &TraceSettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = match traces.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(&traces.endpoint)
            .with_timeout(traces.export_timeout)
            .build()?,
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!(
                "{}/v1/traces",
                traces.endpoint.trim_end_matches('/')
            ))
            .with_timeout(traces.export_timeout)
            .build()?,
    };
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        // Roots are sampled where they start (`Sampler`); the SDK follows
        // the parent's decision for everything else.
        .with_sampler(SdkSampler::ParentBased(Box::new(SdkSampler::AlwaysOn)))
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// Where a trace enters the service, decides whether it is recorded:
/// parent-based, with a ratio for traces that start here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    enabled: bool,
    ratio: f64,
}

impl Sampler {
    /// Records nothing: tracing is off.
    pub const OFF: Self = Self {
        enabled: false,
        ratio: 0.0,
    };

    /// The sampler `traces.*` configure: off without an endpoint.
    pub fn for_settings(traces: &TraceSettings) -> Self {
        if traces.enabled() {
            Self::ratio(traces.sampling_ratio)
        } else {
            Self::OFF
        }
    }

    pub fn ratio(ratio: f64) -> Self {
        Self {
            enabled: true,
            ratio: ratio.clamp(0.0, 1.0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The caller's context, if it sent a valid `traceparent`, and whether
    /// this request is to be recorded. With tracing off, nothing is parsed.
    pub fn decide(&self, headers: &impl Extractor) -> Option<Context> {
        if !self.enabled {
            return None;
        }
        match headers.get(links::clicks::wire::TRACEPARENT) {
            Some(_) => {
                let parent = TraceContextPropagator::new().extract(headers);
                let span = parent.span();
                let context = span.span_context();
                if context.is_valid() {
                    return context.is_sampled().then(|| parent.clone());
                }
                // An invalid traceparent starts a new trace.
                self.start().then(Context::new)
            }
            None => self.start().then(Context::new),
        }
    }

    fn start(&self) -> bool {
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
    }
}

/// The W3C `traceparent` of a span context: how a sampled trace continues
/// in another process.
pub fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The remote span context a `traceparent` (and `tracestate`) names, if it
/// is valid and sampled: what a consumer continues.
pub fn sampled_remote(parent: &str, state: Option<&str>) -> Option<SpanContext> {
    struct Headers<'a>(&'a str, Option<&'a str>);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                links::clicks::wire::TRACEPARENT => Some(self.0),
                links::clicks::wire::TRACESTATE => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec![
                links::clicks::wire::TRACEPARENT,
                links::clicks::wire::TRACESTATE,
            ]
        }
    }
    let context = TraceContextPropagator::new().extract(&Headers(parent, state));
    let span = context.span().span_context().clone();
    (span.is_valid() && span.is_sampled()).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One(&'static str);
    impl Extractor for One {
        fn get(&self, key: &str) -> Option<&str> {
            (key == "traceparent").then_some(self.0)
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent"]
        }
    }
    struct NoHeaders;
    impl Extractor for NoHeaders {
        fn get(&self, _: &str) -> Option<&str> {
            None
        }
        fn keys(&self) -> Vec<&str> {
            Vec::new()
        }
    }

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    #[test]
    fn the_callers_decision_wins() {
        let never = Sampler::ratio(0.0);
        let parent = never
            .decide(&One(SAMPLED))
            .expect("a sampled caller is recorded");
        assert_eq!(
            parent.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(Sampler::ratio(1.0).decide(&One(UNSAMPLED)).is_none());
    }

    #[test]
    fn traces_starting_here_follow_the_ratio() {
        assert!(Sampler::ratio(1.0).decide(&NoHeaders).is_some());
        assert!(Sampler::ratio(0.0).decide(&NoHeaders).is_none());
        assert!(Sampler::ratio(1.0).decide(&One("00-garbage")).is_some());
        let half = Sampler::ratio(0.5);
        let recorded = (0..10_000)
            .filter(|_| half.decide(&NoHeaders).is_some())
            .count();
        assert!((4_500..5_500).contains(&recorded), "{recorded} of 10000");
        assert!(Sampler::OFF.decide(&One(SAMPLED)).is_none());
    }

    #[test]
    fn traceparents_round_trip() {
        let remote = sampled_remote(SAMPLED, Some("vendor=1")).expect("sampled");
        assert_eq!(traceparent(&remote), SAMPLED);
        assert!(sampled_remote(UNSAMPLED, None).is_none());
        assert!(sampled_remote("00-nothing", None).is_none());
    }
}
