//! The one error type of the API, and the one place it becomes a response:
//! `application/problem+json` (RFC 9457) with `type`, `title`, `status` and
//! `detail`. Client errors say what to fix; server errors say nothing about
//! internals and are logged here, once.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    error::{JsonPayloadError, QueryPayloadError},
    http::{StatusCode, header},
};
use links::{CodeError, StoreError, UrlError, codegen::InsertError};
use serde::Serialize;
use utoipa::ToSchema;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Problem types are URNs: stable identifiers that need no web page.
const TYPE_PREFIX: &str = "urn:shortener:problem:";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    InvalidUrl(#[from] UrlError),
    #[error("the alias {0}")]
    InvalidAlias(CodeError),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("no link has this code")]
    NotFound,
    #[error("no such resource")]
    NoRoute,
    /// With the methods the resource does allow, for the `Allow` header.
    #[error("this method is not allowed here; allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("the request body did not arrive before the service stopped")]
    BodyCutShort,
    #[error("this link has expired")]
    Expired,
    #[error("this link was deleted")]
    Deleted,
    #[error("the alias '{0}' is taken")]
    AliasTaken(String),
    #[error("this operation needs the link's token: Authorization: Bearer <token>")]
    Unauthorized,
    #[error("the token does not grant access to this link")]
    Forbidden,
    #[error("the service cannot store or read links right now; retry later")]
    Unavailable(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
    /// A panic while answering: a 500 like `Internal`, logged once, by the
    /// panic hook, with its location.
    #[error("internal error")]
    Panicked,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:shortener:problem:invalid-url`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    fn kind_and_title(&self) -> (&'static str, &'static str) {
        match self {
            Self::InvalidRequest(_) => ("invalid-request", "Invalid request"),
            Self::MalformedJson(_) => ("malformed-json", "Malformed JSON"),
            Self::InvalidUrl(_) => ("invalid-url", "Invalid URL"),
            Self::InvalidAlias(_) => ("invalid-alias", "Invalid alias"),
            Self::PayloadTooLarge(_) => ("payload-too-large", "Payload too large"),
            Self::HeadersTooLarge(_) => ("headers-too-large", "Request header fields too large"),
            Self::UnsupportedMediaType => ("unsupported-media-type", "Unsupported media type"),
            Self::NotFound => ("link-not-found", "Link not found"),
            Self::NoRoute => ("not-found", "Not found"),
            Self::MethodNotAllowed(_) => ("method-not-allowed", "Method not allowed"),
            Self::BodyTimeout(_) => ("request-timeout", "Request timeout"),
            Self::BodyCutShort => ("request-timeout", "Request timeout"),
            Self::Expired => ("link-expired", "Link expired"),
            Self::Deleted => ("link-deleted", "Link deleted"),
            Self::AliasTaken(_) => ("alias-taken", "Alias taken"),
            Self::Unauthorized => ("unauthorized", "Unauthorized"),
            Self::Forbidden => ("forbidden", "Forbidden"),
            Self::Unavailable(_) => ("unavailable", "Service unavailable"),
            Self::Internal(_) | Self::Panicked => ("internal", "Internal server error"),
        }
    }

    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }
}

impl From<InsertError> for ApiError {
    fn from(error: InsertError) -> Self {
        match error {
            InsertError::AliasTaken(code) => Self::AliasTaken(code.to_string()),
            InsertError::Store(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) | StoreError::Broken(_) => {
                Self::Unavailable(Box::new(error))
            }
            other => Self::internal(other),
        }
    }
}

impl From<links::request::RequestError> for ApiError {
    fn from(error: links::request::RequestError) -> Self {
        use links::request::RequestError;
        match error {
            RequestError::Url(e) => Self::InvalidUrl(e),
            RequestError::Alias(e) => Self::InvalidAlias(e),
            other => Self::InvalidRequest(other.to_string()),
        }
    }
}

/// A store error shared by every request that waited on one cache load.
impl From<std::sync::Arc<StoreError>> for ApiError {
    fn from(error: std::sync::Arc<StoreError>) -> Self {
        match *error {
            StoreError::Unavailable(_) | StoreError::Broken(_) => {
                Self::Unavailable(error.to_string().into())
            }
            _ => Self::Internal(error.to_string().into()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::MalformedJson(_)
            | Self::InvalidUrl(_)
            | Self::InvalidAlias(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound | Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BodyCutShort => StatusCode::REQUEST_TIMEOUT,
            Self::Expired | Self::Deleted => StatusCode::GONE,
            Self::AliasTaken(_) => StatusCode::CONFLICT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Panicked => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Internal(error) => {
                tracing::error!(error = %error, source = ?error.source(), "request failed")
            }
            Self::Unavailable(error) => tracing::warn!(error = %error, "storage unavailable"),
            _ => {}
        }
        let (kind, title) = self.kind_and_title();
        let problem = Problem {
            kind: format!("{TYPE_PREFIX}{kind}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        match self {
            Self::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            Self::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        response.json(problem)
    }
}

/// Turns JSON body extraction failures into problems.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge(limit),
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidRequest(e.to_string()),
        JsonPayloadError::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        other => ApiError::InvalidRequest(other.to_string()),
    }
    .into()
}

/// Turns query-string extraction failures into problems.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::InvalidRequest(format!("invalid query string: {err}")).into()
}

/// Answers requests no route matches.
pub async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

/// Answers requests whose path exists but not for their method; `allow`
/// lists the methods it takes.
pub fn method_not_allowed(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, ApiError>> + Clone + 'static {
    move || std::future::ready(Err(ApiError::MethodNotAllowed(allow)))
}
