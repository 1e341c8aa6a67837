//! `GET /healthz` (the process is alive) and `GET /readyz` (it can serve:
//! its dependencies answer, it is not shutting down and, with several
//! regions, it has heard the link changes made before it started).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use links::StoreError;

use crate::state::AppState;

/// A readiness probe that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// "ready", or "unavailable" (answered with 503).
    pub status: &'static str,
    /// "ok"; "unavailable" (the store does not answer now), "timeout" (not
    /// within a second) or "broken" (only a restart brings it back). The
    /// error itself is logged, never sent to the prober.
    pub storage: &'static str,
    /// False once shutdown began.
    pub accepting: bool,
    /// With several regions: "caught_up" once this instance has read every
    /// link change made before it started, "catching_up" until then (not
    /// ready: its caches may hold links changed meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<&'static str>,
    /// With several regions: the region that answered, so that whoever
    /// reaches the service through a global load balancer can tell where
    /// it landed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "health",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "health",
    responses(
        (status = 200, description = "Ready for traffic", body = Readiness),
        (status = 503, description = "Not ready: a dependency is down, or shutting down", body = Readiness),
    ))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let storage = match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the store does not answer");
            match error {
                StoreError::Broken(_) => "broken",
                _ => "unavailable",
            }
        }
        Err(_) => {
            tracing::warn!(timeout = ?PROBE_TIMEOUT, "readiness: the store does not answer in time");
            "timeout"
        }
    };
    let accepting = state.is_accepting();
    let caught_up = state.changes.as_ref().map(|feed| feed.caught_up());
    let ready = accepting && storage == "ok" && caught_up != Some(false);
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        storage,
        accepting,
        changes: caught_up.map(|yes| if yes { "caught_up" } else { "catching_up" }),
        region: state.changes.as_ref().map(|feed| feed.region().to_owned()),
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
