//! `GET /{code}` and `HEAD /{code}`: the hot path.
//!
//! Served as the application's fallback route: any path no other route
//! takes is a code, or answers 404.
//!
//! Parse the code, look it up (L1, then the store, once per key however
//! many requests wait), answer with the link's redirect, and queue a click
//! event without waiting for it. A hit in L1 does no I/O and allocates
//! nothing beyond the response itself.

use actix_web::{
    HttpRequest, HttpResponse,
    http::{
        Method,
        header::{self, HeaderValue},
    },
    web,
};
use chrono::Utc;
use links::Code;
use opentelemetry::trace::TraceContextExt;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    cache::{Lookup, Target},
    clicks::Click,
    error::ApiError,
    state::AppState,
};

static TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");
static TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");

/// Browsers may reuse a redirect for this long: repeated clicks by one
/// visitor within it are not re-counted, and a changed link reaches every
/// browser within it.
const CACHE_CONTROL: HeaderValue = HeaderValue::from_static("private, max-age=90");

/// Routes a request for `/{code}` by method.
pub async fn dispatch(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match *req.method() {
        Method::GET => follow(req, state).await,
        Method::HEAD => peek(req, state).await,
        _ if path_code(&req).is_some() => Err(ApiError::MethodNotAllowed("GET, HEAD")),
        _ => Err(ApiError::NoRoute),
    }
}

/// The code a path names: its only segment.
fn path_code(req: &HttpRequest) -> Option<&str> {
    req.path()
        .strip_prefix('/')
        .filter(|code| !code.is_empty() && !code.contains('/'))
}

#[utoipa::path(
    get,
    path = "/{code}",
    operation_id = "follow_link",
    tag = "redirect",
    params(crate::openapi::CodeParam),
    responses(
        (status = 302, description = "Redirect to the link's URL (the default status)",
         headers(("Location" = String, description = "The target URL"))),
        (status = 301, description = "Redirect, for a link made with `redirect: 301`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 307, description = "Redirect, for a link made with `redirect: 307`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 308, description = "Redirect, for a link made with `redirect: 308`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 404, description = "No link has this code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link expired or was deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn follow(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (code, target) = resolve(&req, &state).await?;
    let response = redirect(&req, target);
    // A recorded trace goes on in the worker from this request's span.
    let traced = state
        .tracing
        .then(Span::current)
        .filter(|span| !span.is_none())
        .map(|span| runtime::telemetry::traceparent(span.context().span().span_context()));
    state.clicks.offer(|| {
        let headers = req.headers();
        let header = |name| headers.get(name).map(HeaderValue::as_bytes);
        Click::new(
            code,
            Utc::now(),
            header(&header::REFERER),
            header(&header::USER_AGENT),
            state.country_header.as_ref().and_then(header),
        )
        .with_trace(
            traced
                .as_deref()
                .map(str::as_bytes)
                .or_else(|| header(&TRACEPARENT)),
            header(&TRACESTATE),
        )
    });
    Ok(response)
}

/// `HEAD /{code}`: the same answer as `GET`, without counting a click — link
/// checkers and unfurlers ask HEAD, people's browsers do not.
#[utoipa::path(
    head,
    path = "/{code}",
    operation_id = "peek_link",
    tag = "redirect",
    params(crate::openapi::CodeParam),
    responses(
        (status = 302, description = "The answer GET would give, without counting a click",
         headers(("Location" = String, description = "The target URL"))),
        (status = 301, description = "For a link made with `redirect: 301`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 307, description = "For a link made with `redirect: 307`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 308, description = "For a link made with `redirect: 308`",
         headers(("Location" = String, description = "The target URL"))),
        (status = 404, description = "No link has this code"),
        (status = 410, description = "The link expired or was deleted"),
    )
)]
pub async fn peek(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, target) = resolve(&req, &state).await?;
    Ok(redirect(&req, target))
}

async fn resolve(req: &HttpRequest, state: &AppState) -> Result<(Code, Target), ApiError> {
    let code = path_code(req)
        .and_then(|code| Code::parse(code).ok())
        .ok_or(ApiError::NotFound)?;
    match state.cache.lookup(&code).await? {
        Lookup::Active(target) => Ok((code, target)),
        Lookup::Expired => Err(ApiError::Expired),
        Lookup::Deleted => Err(ApiError::Deleted),
        Lookup::Missing { .. } => Err(ApiError::NotFound),
    }
}

fn redirect(req: &HttpRequest, target: Target) -> HttpResponse {
    let query = req.query_string();
    let location = if target.forward_query && !query.is_empty() {
        with_query(&target.location, query).unwrap_or(target.location)
    } else {
        target.location
    };
    HttpResponse::build(target.status)
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, CACHE_CONTROL))
        .finish()
}

/// The target with the visit's query string appended (before any fragment).
fn with_query(location: &HeaderValue, query: &str) -> Option<HeaderValue> {
    let target = location.to_str().ok()?;
    let (base, fragment) = match target.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (target, None),
    };
    let separator = if base.contains('?') { '&' } else { '?' };
    let mut url = String::with_capacity(target.len() + query.len() + 2);
    url.push_str(base);
    url.push(separator);
    url.push_str(query);
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    HeaderValue::from_str(&url).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn appended(target: &'static str, query: &str) -> String {
        let location = HeaderValue::from_static(target);
        with_query(&location, query)
            .expect("valid")
            .to_str()
            .expect("ascii")
            .to_owned()
    }

    #[test]
    fn queries_go_before_the_fragment() {
        assert_eq!(appended("https://e.com/p", "a=1"), "https://e.com/p?a=1");
        assert_eq!(
            appended("https://e.com/p?x=2", "a=1"),
            "https://e.com/p?x=2&a=1"
        );
        assert_eq!(
            appended("https://e.com/p?x=2#top", "a=1&b"),
            "https://e.com/p?x=2&a=1&b#top"
        );
        assert_eq!(
            appended("https://e.com/#f?g", "a=1"),
            "https://e.com/?a=1#f?g"
        );
    }
}
