//! `/api/v1/links`: create, read, change and delete links.
//!
//! Creating a link returns a `token`, shown only then. Changing or deleting
//! the link needs it (`Authorization: Bearer <token>`), or the configured
//! admin token.

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use chrono::{DateTime, Utc};
use links::{
    Code, Link, LinkState, ManageToken,
    request::{CreateLink, NewLink, UpdateLink},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::code_param;
use crate::{error::ApiError, state::AppState};

/// A link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkBody {
    #[schema(example = "aZ3kP9q")]
    pub code: String,
    #[schema(example = "https://sho.rt/aZ3kP9q")]
    pub short_url: String,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(value_type = links::request::RedirectCode, example = 302)]
    pub redirect: u16,
    pub forward_query: bool,
}

/// A link just created, with the token that may change or delete it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedLink {
    #[serde(flatten)]
    pub link: LinkBody,
    /// Shown once: send it as `Authorization: Bearer <token>` to change or
    /// delete the link.
    pub token: String,
}

impl LinkBody {
    fn of(link: &Link, state: &AppState) -> Self {
        Self {
            code: link.code.to_string(),
            short_url: state.short_url(&link.code),
            url: link.url.to_string(),
            created_at: link.created_at,
            expires_at: link.expires_at,
            redirect: link.redirect.as_u16(),
            forward_query: link.forward_query,
        }
    }
}

/// A link that exists and is not deleted.
async fn live_link(state: &AppState, code: &Code) -> Result<Link, ApiError> {
    match state.links.find(code).await? {
        None => Err(ApiError::NotFound),
        Some(link) if link.state(Utc::now()) == LinkState::Deleted => Err(ApiError::Deleted),
        Some(link) => Ok(link),
    }
}

/// Why a change found no live link that was live a moment before: deleted
/// meanwhile (410), or, across regions, not yet seen by the majority a
/// change is decided by (a link just made elsewhere: 503, try again).
async fn vanished(state: &AppState, code: &Code) -> ApiError {
    match state.links.find(code).await {
        Ok(Some(link)) if link.deleted_at.is_some() => ApiError::Deleted,
        Ok(None) => ApiError::NotFound,
        Ok(Some(_)) => ApiError::from(links::StoreError::Unavailable(
            format!("{code} is not visible to a majority of all regions yet").into(),
        )),
        Err(error) => error.into(),
    }
}

/// A link that exists, is not deleted, and that `token` may change: the
/// token is checked before the link's state is told.
async fn owned_link(state: &AppState, code: &Code, token: &str) -> Result<Link, ApiError> {
    let link = state.links.find(code).await?.ok_or(ApiError::NotFound)?;
    state.authorize(token, &link)?;
    if link.state(Utc::now()) == LinkState::Deleted {
        return Err(ApiError::Deleted);
    }
    Ok(link)
}

#[utoipa::path(
    post,
    path = "/api/v1/links",
    operation_id = "create_link",
    tag = "links",
    request_body = CreateLink,
    responses(
        (status = 201, description = "Created", body = CreatedLink,
         headers(("Location" = String, description = "The link's API resource"))),
        (status = 409, description = "The alias is taken", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    state: web::Data<AppState>,
    body: web::Json<CreateLink>,
) -> Result<HttpResponse, ApiError> {
    let NewLink {
        alias,
        url,
        expires_at,
        redirect,
        forward_query,
    } = body.into_inner().parse(&state.url_policy, Utc::now())?;
    let token = ManageToken::generate();
    let now = Utc::now();
    let created_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let new_link = |code: Code| Link {
        code,
        url: url.clone(),
        created_at,
        expires_at,
        redirect,
        forward_query,
        deleted_at: None,
        token: token.digest(),
        revision: 0,
    };

    let link = state.codes.insert(alias, new_link).await?;
    // A request for this code may have cached it as unknown.
    state.cache.invalidate(&link.code).await;
    state.metrics.links_created.inc();

    let location = format!("/api/v1/links/{}", link.code);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(CreatedLink {
            link: LinkBody::of(&link, &state),
            token: token.as_str().to_owned(),
        }))
}

#[utoipa::path(
    get,
    path = "/api/v1/links/{code}",
    operation_id = "get_link",
    tag = "links",
    params(crate::openapi::CodeParam),
    responses(
        (status = 200, description = "The link (also when expired)", body = LinkBody),
        (status = 404, description = "No link has this code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let code = code_param(&req)?;
    let link = live_link(&state, &code).await?;
    Ok(HttpResponse::Ok().json(LinkBody::of(&link, &state)))
}

#[utoipa::path(
    patch,
    path = "/api/v1/links/{code}",
    operation_id = "update_link",
    tag = "links",
    params(crate::openapi::CodeParam),
    request_body = UpdateLink,
    security(("link_token" = [])),
    responses(
        (status = 200, description = "The changed link", body = LinkBody),
        (status = 401, description = "No token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No link has this code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Json<UpdateLink>,
) -> Result<HttpResponse, ApiError> {
    let token = state.bearer(&req)?;
    let code = code_param(&req)?;
    let link = owned_link(&state, &code, token).await?;
    let changes = body.into_inner().parse(&state.url_policy, Utc::now())?;
    let updated = if changes.is_empty() {
        link
    } else {
        // Forgotten whatever the outcome: a change whose answer was lost
        // may have been applied.
        let updated = state.store.update_link(&code, &changes).await;
        state.cache.invalidate(&code).await;
        let Some(updated) = updated? else {
            return Err(vanished(&state, &code).await);
        };
        state.announce(&updated).await;
        updated
    };
    Ok(HttpResponse::Ok().json(LinkBody::of(&updated, &state)))
}

#[utoipa::path(
    delete,
    path = "/api/v1/links/{code}",
    operation_id = "delete_link",
    tag = "links",
    params(crate::openapi::CodeParam),
    security(("link_token" = [])),
    responses(
        (status = 204, description = "Deleted; the code answers 410 from now on"),
        (status = 401, description = "No token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No link has this code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "Already deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let token = state.bearer(&req)?;
    let code = code_param(&req)?;
    owned_link(&state, &code, token).await?;
    let deleted = state.store.delete_link(&code, Utc::now()).await;
    state.cache.invalidate(&code).await;
    let Some(deleted) = deleted? else {
        return Err(vanished(&state, &code).await);
    };
    state.announce(&deleted).await;
    Ok(HttpResponse::NoContent().finish())
}
