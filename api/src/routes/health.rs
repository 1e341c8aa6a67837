//! `GET /healthz` (the process is alive) and `GET /readyz` (it can serve:
//! its dependencies answer and it is not shutting down).

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
    let ready = accepting && storage == "ok";
    let body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        storage,
        accepting,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
