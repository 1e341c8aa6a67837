//! What every handler shares.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use actix_web::{HttpRequest, http::header};
use links::{
    Code, Link, LinkStore, TokenDigest, UrlPolicy, codegen::CodeAllocator, region::LinkFinder,
};

use crate::{
    cache::LinkCache, changes::ChangeFeed, clicks::ClickQueue, error::ApiError, metrics::Metrics,
};

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<dyn LinkStore>,
    /// Reads links: the store, and other regions for what it lacks.
    pub links: LinkFinder,
    pub cache: LinkCache,
    /// With several regions: where changes are told to the others.
    pub changes: Option<ChangeFeed>,
    pub codes: CodeAllocator,
    pub clicks: ClickQueue,
    pub url_policy: UrlPolicy,
    /// Base of short URLs, without a trailing slash.
    pub public_base: String,
    /// Header carrying the visitor's country, if one is configured.
    pub country_header: Option<header::HeaderName>,
    pub admin_token: Option<TokenDigest>,
    pub metrics: Arc<Metrics>,
    /// Whether requests may be traced (`traces.endpoint` is set).
    pub tracing: bool,
    /// False once shutdown has begun, so load balancers stop sending traffic.
    pub accepting: AtomicBool,
    /// The OpenAPI document, as served.
    pub openapi: actix_web::web::Bytes,
}

impl AppState {
    pub fn short_url(&self, code: &Code) -> String {
        format!("{}/{}", self.public_base, code)
    }

    /// Tells the other regions that `link` changed (it is at its new
    /// revision), so their caches drop their copies.
    pub async fn announce(&self, link: &Link) {
        if let Some(changes) = &self.changes {
            changes.publish(&link.code, link.revision).await;
        }
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }

    /// The bearer token of a request: 401 without one, before anything
    /// about the link it names is told.
    pub fn bearer<'r>(&self, req: &'r HttpRequest) -> Result<&'r str, ApiError> {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)
    }

    /// Checks that `token` is the link's token, or the admin token.
    pub fn authorize(&self, token: &str, link: &Link) -> Result<(), ApiError> {
        let admin = self.admin_token.is_some_and(|admin| admin.matches(token));
        if admin || link.token.matches(token) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}
