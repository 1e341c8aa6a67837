//! `GET /api/v1/links/{code}/stats`: totals, a time series and top lists.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use links::{
    Code, LinkState,
    clicks::Dimension,
    request::StatsParams,
    stats::{ClickStats, StatsQuery},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{error::ApiError, state::AppState};

#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPointBody {
    pub start: DateTime<Utc>,
    pub clicks: u64,
    pub bot_clicks: u64,
}

/// All-time clicks made in one region.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegionClicksBody {
    #[schema(example = "eu")]
    pub region: String,
    pub clicks: u64,
    pub bot_clicks: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TopEntryBody {
    pub value: String,
    pub clicks: u64,
}

/// Click statistics of a link. Bot clicks are counted apart and appear in
/// no total or top list but their own.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsBody {
    pub code: String,
    /// All-time clicks by people.
    pub total_clicks: u64,
    /// All-time clicks by bots, crawlers and HTTP tools.
    pub bot_clicks: u64,
    /// In a deployment of several regions, the all-time totals by the
    /// region where the clicks were made, every region listed; absent
    /// otherwise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionClicksBody>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    #[schema(example = "day")]
    pub granularity: &'static str,
    /// One point per bucket from `from` to `to`, zeros included.
    pub series: Vec<SeriesPointBody>,
    /// Referrer hosts over the days of the range; `(direct)` for none.
    pub top_referrers: Vec<TopEntryBody>,
    /// ISO country codes; `(unknown)` when the country header was absent.
    pub top_countries: Vec<TopEntryBody>,
    pub top_browsers: Vec<TopEntryBody>,
    pub top_os: Vec<TopEntryBody>,
    /// desktop, mobile, tablet or other.
    pub top_devices: Vec<TopEntryBody>,
    pub top_bots: Vec<TopEntryBody>,
}

#[utoipa::path(
    get,
    path = "/api/v1/links/{code}/stats",
    tag = "stats",
    operation_id = "get_link_stats",
    params(crate::openapi::CodeParam, StatsParams),
    responses(
        (status = 200, description = "Statistics, up to one flush interval behind", body = StatsBody),
        (status = 400, description = "Invalid range or query", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No link has this code", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 410, description = "The link was deleted", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    req: HttpRequest,
    state: web::Data<AppState>,
    params: web::Query<StatsParams>,
) -> Result<HttpResponse, ApiError> {
    let code = super::code_param(&req)?;
    let now = Utc::now();
    let query = params.query(now)?;
    // Like the link itself: expired links keep their stats, deleted ones
    // are gone.
    match state.links.find(&code).await? {
        None => return Err(ApiError::NotFound),
        Some(link) if link.state(now) == LinkState::Deleted => return Err(ApiError::Deleted),
        Some(_) => {}
    }
    let stats = state.store.click_stats(&code, &query).await?;
    Ok(HttpResponse::Ok().json(body(&code, &query, stats)))
}

fn body(code: &Code, query: &StatsQuery, mut stats: ClickStats) -> StatsBody {
    let mut top = |dimension| {
        stats
            .tops
            .remove(&dimension)
            .unwrap_or_default()
            .into_iter()
            .map(|e| TopEntryBody {
                value: e.value,
                clicks: e.clicks,
            })
            .collect()
    };
    StatsBody {
        code: code.to_string(),
        total_clicks: stats.totals.clicks,
        bot_clicks: stats.totals.bot_clicks,
        regions: stats
            .by_region
            .into_iter()
            .map(|r| RegionClicksBody {
                region: r.region,
                clicks: r.counts.clicks,
                bot_clicks: r.counts.bot_clicks,
            })
            .collect(),
        from: query.from,
        to: query.to,
        granularity: query.granularity.as_str(),
        top_referrers: top(Dimension::Referrer),
        top_countries: top(Dimension::Country),
        top_browsers: top(Dimension::Browser),
        top_os: top(Dimension::Os),
        top_devices: top(Dimension::Device),
        top_bots: top(Dimension::Bot),
        series: stats
            .series
            .into_iter()
            .map(|p| SeriesPointBody {
                start: p.start,
                clicks: p.counts.clicks,
                bot_clicks: p.counts.bot_clicks,
            })
            .collect(),
    }
}
