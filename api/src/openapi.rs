//! The OpenAPI document, generated from the handlers and types
//! (`GET /api/v1/openapi.json`).
//!
//! Each handler documents the answers it gives itself; the answers every
//! request can get from the layers around the handlers (a head too large,
//! a body too slow or large or not JSON, the store unavailable, a bug) are
//! added here, once, to every operation they apply to. The suite checks
//! the service against this document with schemathesis
//! (`infra/openapi-test`), so a status, header or body it does not
//! describe is a failure.

use actix_web::{HttpResponse, web, web::Bytes};
use serde_json::json;
use utoipa::{
    IntoParams, Modify, OpenApi, PartialSchema,
    openapi::{
        Content, HttpMethod, Required, ResponseBuilder,
        path::{Operation, Parameter, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
        security::{Http, HttpAuthScheme, SecurityScheme},
    },
};

use crate::{error, routes, state::AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shortener",
        description = "Short links: create, follow, manage, and count their clicks. \
                       Errors are application/problem+json (RFC 9457).",
    ),
    paths(
        routes::redirect::follow,
        routes::redirect::peek,
        routes::links::create,
        routes::links::get,
        routes::links::update,
        routes::links::delete,
        routes::stats::get,
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::metrics,
    ),
    components(schemas(error::Problem, links::request::GranularityParam)),
    modifiers(&LinkToken, &CommonAnswers),
    tags(
        (name = "redirect", description = "Following short links"),
        (name = "links", description = "Creating and managing links"),
        (name = "stats", description = "Click statistics"),
        (name = "health", description = "Probes and metrics"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

/// The `{code}` of a path: a generated code or an alias. Anything else
/// names no link (404).
#[derive(Debug)]
pub struct CodeParam;

impl IntoParams for CodeParam {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("code")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("Short code or alias"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[A-Za-z0-9_-]{3,64}$"))
                        .min_length(Some(links::Code::MIN_LEN))
                        .max_length(Some(links::Code::MAX_LEN))
                        .examples([json!("aZ3kP9q")]),
                ))
                .build(),
        ]
    }
}

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

/// The answers of the layers around the handlers.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Head, &mut item.head),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation.as_mut() else {
                    continue;
                };
                let head = method == HttpMethod::Head;
                add(operation, head, "431", "The request head is too large");
                add(
                    operation,
                    head,
                    "500",
                    "A bug; the detail says nothing more",
                );
                if path != "/healthz" && path != "/readyz" && path != "/metrics" {
                    add(
                        operation,
                        head,
                        "503",
                        "The store cannot be reached now; retry",
                    );
                }
                if operation.request_body.is_some() {
                    add(
                        operation,
                        head,
                        "400",
                        "The body is not valid: the detail says why",
                    );
                    add(operation, head, "408", "The body did not arrive in time");
                    add(operation, head, "413", "The body is too large");
                    add(operation, head, "415", "The body is not JSON");
                }
            }
        }
    }
}

/// Adds a problem answer to an operation that does not document it.
fn add(operation: &mut Operation, head: bool, status: &str, description: &str) {
    let mut response = ResponseBuilder::new().description(description);
    if !head {
        response = response.content(
            "application/problem+json",
            Content::new(Some(error::Problem::schema())),
        );
    }
    operation
        .responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| response.build().into());
}

/// The document as JSON, with this instance's limits filled in: made once,
/// at start, and served as it is.
pub fn document_json(max_url_len: usize) -> Result<Bytes, serde_json::Error> {
    let mut doc = serde_json::to_value(ApiDoc::openapi())?;
    for schema in ["CreateLink", "UpdateLink"] {
        if let Some(url) = doc
            .pointer_mut(&format!("/components/schemas/{schema}/properties/url"))
            .and_then(|url| url.as_object_mut())
        {
            url.insert("maxLength".into(), json!(max_url_len));
        }
    }
    serde_json::to_vec(&doc).map(Bytes::from)
}

/// `GET /api/v1/openapi.json`.
pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi.clone())
}
