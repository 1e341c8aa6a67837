//! HTTP routes; each module mirrors a path.
//!
//! - [`redirect`] — `GET`/`HEAD /{code}`, the hot path.
//! - [`links`] — `/api/v1/links` and `/api/v1/links/{code}`.
//! - [`stats`] — `/api/v1/links/{code}/stats`.
//! - [`health`] — `/healthz`, `/readyz`.
//! - [`metrics`] — `/metrics`.

pub mod health;
pub mod links;
pub mod metrics;
pub mod redirect;
pub mod stats;

use ::links::Code;
use actix_web::{
    HttpRequest,
    body::BoxBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
};

use crate::error::ApiError;

/// The `{code}` of an API path; a malformed one names no link (404).
pub fn code_param(req: &HttpRequest) -> Result<Code, ApiError> {
    Code::parse(req.match_info().get("code").unwrap_or_default()).map_err(|_| ApiError::NotFound)
}

/// Refuses requests whose head is larger than `limit` bytes (431).
pub async fn limit_headers(
    limit: usize,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let head = req.uri().path().len()
        + req.uri().query().map_or(0, str::len)
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>();
    if head > limit {
        // An answer that keeps the request, so its route is known.
        return Ok(req.error_response(ApiError::HeadersTooLarge(limit)));
    }
    next.call(req).await
}
