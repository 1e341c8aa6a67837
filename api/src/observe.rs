//! What every request records: its RED metrics, its span when its trace is
//! sampled, and a line in the access log when that is sampled.
//!
//! One middleware, outermost, so the duration covers every other layer.
//! An unsampled request costs two clock reads, a few atomic adds, one
//! histogram observation and, with tracing on, one random number.

use std::{
    future::{Future, Ready, ready},
    pin::Pin,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use actix_web::{
    Error,
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::{
        Method, StatusCode,
        header::{HeaderMap, HeaderName},
    },
};
use links::clicks::wire::TRACEPARENT as TRACEPARENT_KEY;
use opentelemetry::{propagation::Extractor, trace::TraceContextExt};
use pin_project_lite::pin_project;
use runtime::telemetry::Sampler;
use tracing::{Instrument, Span, field::Empty, instrument::Instrumented};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{HttpMetrics, Metrics, Route};

/// The request headers, as OpenTelemetry's propagator reads them.
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

static TRACEPARENT: HeaderName = HeaderName::from_static(TRACEPARENT_KEY);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // Asked of every request when tracing is on: a static name spares
        // parsing (and allocating) one for the lookup.
        let value = match key {
            TRACEPARENT_KEY => self.0.get(&TRACEPARENT),
            _ => self.0.get(key),
        };
        value.and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// What the middleware needs, shared by every HTTP worker.
#[derive(Debug)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    pub sampler: Sampler,
    /// Fraction of redirects written to the access log.
    pub access_log_ratio: f64,
}

/// The middleware (see the module documentation). Written out rather than
/// with `from_fn`, so that a request costs no allocation and no dynamic
/// call here: its future wraps the inner one directly.
#[derive(Debug, Clone)]
pub struct Observe(pub Arc<Observer>);

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            http: Rc::new(self.0.metrics.http.clone()),
            observer: Arc::clone(&self.0),
        }))
    }
}

#[derive(Debug)]
pub struct ObserveService<S> {
    service: S,
    /// This worker's handle: each request's future holds a clone, and an
    /// `Rc` clone is a plain add on this thread, where an `Arc` clone would
    /// be an atomic one on a line every worker writes.
    http: Rc<HttpMetrics>,
    observer: Arc<Observer>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Observed<S::Future>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let start = Instant::now();
        let span = match self
            .observer
            .sampler
            .decide(&HeaderExtractor(req.headers()))
        {
            Some(parent) => request_span(&req, parent),
            None => Span::none(),
        };
        Observed {
            inner: self.service.call(req).instrument(span),
            start,
            access_log_ratio: self.observer.access_log_ratio,
            http: Rc::clone(&self.http),
        }
    }
}

pin_project! {
    /// A request under way: records it when the inner service answers.
    pub struct Observed<F> {
        #[pin]
        inner: Instrumented<F>,
        start: Instant,
        access_log_ratio: f64,
        http: Rc<HttpMetrics>,
    }
}

impl<F, B> Future for Observed<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = std::task::ready!(this.inner.as_mut().poll(cx));
        let elapsed = this.start.elapsed();
        // The route is the router's: the name of the resource that took
        // the request. Only a panic outside every route (in a middleware,
        // or the router) comes as an error, without its request.
        let (route, request, status) = match &result {
            Ok(response) => {
                let request = response.request();
                let route = Route::of_resource(request.match_name());
                (route, Some(request), response.status())
            }
            Err(error) => (
                Route::Redirect,
                None,
                error.as_response_error().status_code(),
            ),
        };
        this.http.record(route, status, elapsed);
        let span = this.inner.as_ref().get_ref().span();
        if !span.is_none() {
            let method = request.map_or("", |r| r.method().as_str());
            // The span is under way (its trace id was read): renamed
            // through OpenTelemetry, as a late `otel.name` is not applied.
            span.context()
                .span()
                .update_name(format!("{method} {}", route.pattern()));
            span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        let ratio = *this.access_log_ratio;
        if route != Route::Redirect || (ratio > 0.0 && rand::random::<f64>() < ratio) {
            let _entered = span.enter();
            let (method, path) = request.map_or((&Method::GET, "-"), |r| (r.method(), r.path()));
            access_log(route, method, path, status, elapsed.as_micros() as u64);
        }
        Poll::Ready(result)
    }
}

/// The server span of a sampled request, child of the caller's span if
/// it sent one. Its `trace_id` field puts the trace id on every log line
/// written while it is current.
fn request_span(req: &ServiceRequest, parent: opentelemetry::Context) -> Span {
    // Few `tracing` fields: the log layer formats each of them for every
    // span it sees. The HTTP attributes go to the trace alone.
    let span = tracing::info_span!(
        // Renamed "METHOD /route" once the router has taken the request.
        "request",
        otel.kind = "server",
        otel.status_code = Empty,
        trace_id = Empty,
    );
    // Fails only if the span is disabled (no trace layer): then it is a
    // span of nothing.
    let _ = span.set_parent(parent);
    span.set_attribute("http.request.method", req.method().as_str().to_owned());
    span.set_attribute("url.path", req.path().to_owned());
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

/// One access-log line: every API request at debug, sampled redirects at
/// info, failures (5xx) at warn.
fn access_log(route: Route, method: &Method, path: &str, status: StatusCode, micros: u64) {
    let status = status.as_u16();
    let route = route.label();
    if status >= 500 {
        tracing::warn!(target: "access", %method, path, status, micros, route, "request failed");
    } else if route == "redirect" {
        tracing::info!(target: "access", %method, path, status, micros, route, "request");
    } else {
        tracing::debug!(target: "access", %method, path, status, micros, route, "request");
    }
}
