//! The OpenAPI document, generated from the handlers and types
//! (`GET /api/v1/openapi.json`).

use actix_web::HttpResponse;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use crate::{error, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shortener",
        description = "Short links: create, follow, manage, and count their clicks. \
                       Errors are application/problem+json (RFC 9457).",
    ),
    paths(
        routes::redirect::follow,
        routes::links::create,
        routes::links::get,
        routes::links::update,
        routes::links::delete,
        routes::stats::get,
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::metrics,
    ),
    components(schemas(error::Problem)),
    modifiers(&LinkToken),
    tags(
        (name = "redirect", description = "Following short links"),
        (name = "links", description = "Creating and managing links"),
        (name = "stats", description = "Click statistics"),
        (name = "health", description = "Probes and metrics"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct LinkToken;

impl Modify for LinkToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "link_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
