//! `GET /metrics`: Prometheus text format.

use actix_web::{HttpResponse, web};

use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "health",
    responses((status = 200, description = "Every metric, in the OpenMetrics text format",
               body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // Read from the queue when scraped, not kept up to date on the hot path.
    state
        .metrics
        .click_queue_depth
        .set(state.clicks.depth() as i64);
    HttpResponse::Ok()
        .content_type(runtime::telemetry::EXPOSITION_CONTENT_TYPE)
        .body(state.metrics.render())
}
