//! What clients ask for, as they send it, and how it is checked: the
//! documents of a create and a change, and the query of the stats.
//!
//! Each is deserialised as it arrives (unknown fields refused, so that a
//! misspelt `expires_at` is an error rather than a link that never
//! expires) and then turned, once, into checked domain values by its
//! `parse`. The API converts bodies and queries with these alone, and the
//! fuzz targets (`api/fuzz`) run the very same code. With the `openapi`
//! feature the types also describe themselves for the OpenAPI document.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Deserialize;

use crate::{
    Alias, CodeError, LinkChanges, RedirectStatus, TargetUrl, UrlError, UrlPolicy,
    clicks::Granularity,
    link::{ExpiryError, RedirectStatusError, parse_expiry},
    stats::{self, StatsQuery},
};

/// Why a request is refused, in terms a client can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("the alias {0}")]
    Alias(CodeError),
    #[error(transparent)]
    Expiry(#[from] ExpiryError),
    #[error(transparent)]
    Redirect(#[from] RedirectStatusError),
    /// A stats query that cannot be answered as asked.
    #[error("{0}")]
    Query(String),
}

/// A link to create.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// Absolute http or https URL to redirect to, with a host that can
    /// exist in DNS and is not this service's.
    #[cfg_attr(
        feature = "openapi",
        schema(
            format = "uri",
            min_length = 1,
            example = "https://example.com/a/long/path?with=query"
        )
    )]
    pub url: String,
    /// Code of your choice instead of a generated one: 3 to 64 of
    /// `A-Z a-z 0-9 _ -`, not a reserved word.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9_-]{3,64}$", example = "spring-launch")
    )]
    pub alias: Option<String>,
    /// When the link stops redirecting (answering 410 Gone). RFC 3339; in
    /// the future, at most 100 years ahead.
    pub expires_at: Option<DateTime<Utc>>,
    /// Redirect status: 301, 302 (default), 307 or 308.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<RedirectCode>, example = 302)
    )]
    pub redirect: Option<u16>,
    /// Append the query string of each visit to the target URL.
    pub forward_query: Option<bool>,
}

/// A create request, checked: everything a link needs but its code and
/// its token.
#[derive(Debug)]
pub struct NewLink {
    pub alias: Option<Alias>,
    pub url: TargetUrl,
    pub expires_at: Option<DateTime<Utc>>,
    pub redirect: RedirectStatus,
    pub forward_query: bool,
}

impl CreateLink {
    /// Checks every field, at `now`.
    pub fn parse(self, policy: &UrlPolicy, now: DateTime<Utc>) -> Result<NewLink, RequestError> {
        Ok(NewLink {
            url: TargetUrl::parse(&self.url, policy)?,
            alias: self
                .alias
                .as_deref()
                .map(Alias::parse)
                .transpose()
                .map_err(RequestError::Alias)?,
            expires_at: self
                .expires_at
                .map(|at| parse_expiry(at, now))
                .transpose()?,
            redirect: self
                .redirect
                .map(RedirectStatus::try_from)
                .transpose()?
                .unwrap_or_default(),
            forward_query: self.forward_query.unwrap_or(false),
        })
    }
}

/// Changes to a link; absent fields stay as they are.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateLink {
    /// A new target, checked as on create.
    #[cfg_attr(feature = "openapi", schema(format = "uri", min_length = 1))]
    pub url: Option<String>,
    /// A new expiry (in the future, at most 100 years ahead), or `null` to
    /// remove it. An expired link can be renewed.
    #[serde(default, with = "::serde_with::rust::double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<DateTime<Utc>>))]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<RedirectCode>))]
    pub redirect: Option<u16>,
    pub forward_query: Option<bool>,
}

impl UpdateLink {
    /// Checks every field, at `now`.
    pub fn parse(
        self,
        policy: &UrlPolicy,
        now: DateTime<Utc>,
    ) -> Result<LinkChanges, RequestError> {
        Ok(LinkChanges {
            url: self
                .url
                .as_deref()
                .map(|url| TargetUrl::parse(url, policy))
                .transpose()?,
            expires_at: self
                .expires_at
                .map(|at| at.map(|at| parse_expiry(at, now)).transpose())
                .transpose()?,
            redirect: self.redirect.map(RedirectStatus::try_from).transpose()?,
            forward_query: self.forward_query,
        })
    }
}

/// The redirect statuses a link may answer with, as the OpenAPI document
/// describes them.
#[cfg(feature = "openapi")]
#[derive(Debug)]
pub struct RedirectCode;

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RedirectCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some([301, 302, 307, 308]))
            .description(Some("301, 302, 307 or 308"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RedirectCode {}

/// Most buckets one series may have: 41 days by the hour, years by the day.
pub const MAX_BUCKETS: i64 = 1000;
/// Entries per top list when the query does not say.
pub const DEFAULT_TOP: usize = 10;
/// Most entries per top list.
pub const MAX_TOP: usize = 100;

#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum GranularityParam {
    Hour,
    Day,
}

/// The query string of a stats request.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    /// Start of the range (RFC 3339, 1970 to 9999). Default: 48 hours
    /// (hourly) or 30 days (daily) before `to`.
    #[cfg_attr(feature = "openapi", param(value_type = Option<DateTime<Utc>>))]
    pub from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339, 1970 to 9999), after `from`. Default:
    /// now. At most 1000 buckets between them.
    #[cfg_attr(feature = "openapi", param(value_type = Option<DateTime<Utc>>))]
    pub to: Option<DateTime<Utc>>,
    /// Width of the series' buckets. Default: day.
    #[cfg_attr(
        feature = "openapi",
        param(inline, value_type = Option<GranularityParam>)
    )]
    pub granularity: Option<GranularityParam>,
    /// Entries per top list, 1 to 100. Default: 10.
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub top: Option<usize>,
}

impl StatsParams {
    /// The query these parameters ask for, at `now`, checked: both ends
    /// between 1970 and 9999, `from` before `to`, at most [`MAX_BUCKETS`].
    pub fn query(&self, now: DateTime<Utc>) -> Result<StatsQuery, RequestError> {
        let granularity = match self.granularity {
            Some(GranularityParam::Hour) => Granularity::Hour,
            Some(GranularityParam::Day) | None => Granularity::Day,
        };
        for (name, at) in [("from", self.from), ("to", self.to)] {
            if at.is_some_and(|at| at < stats::EARLIEST || at > stats::latest()) {
                return Err(RequestError::Query(format!(
                    "{name} must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
                )));
            }
        }
        let to = self
            .to
            .unwrap_or_else(|| now.duration_trunc(Duration::seconds(1)).unwrap_or(now));
        let from = self.from.unwrap_or_else(|| {
            let span = match granularity {
                Granularity::Hour => Duration::hours(48),
                Granularity::Day => Duration::days(30),
            };
            to.checked_sub_signed(span).unwrap_or(stats::EARLIEST)
        });
        if from >= to {
            return Err(RequestError::Query("from must be before to".into()));
        }
        let top = self.top.unwrap_or(DEFAULT_TOP);
        if !(1..=MAX_TOP).contains(&top) {
            return Err(RequestError::Query(format!(
                "top must be between 1 and {MAX_TOP}"
            )));
        }
        let query = StatsQuery {
            from,
            to,
            granularity,
            top,
        };
        if query.buckets() > MAX_BUCKETS {
            return Err(RequestError::Query(format!(
                "the range spans {} buckets; at most {MAX_BUCKETS} (use granularity=day or a shorter range)",
                query.buckets()
            )));
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HostIdentity;

    fn policy() -> UrlPolicy {
        UrlPolicy::new(2048, [HostIdentity::parse("sho.rt").expect("a host")])
    }

    #[test]
    fn creates_are_checked_field_by_field() {
        let now = Utc::now();
        let parse = |json: &str| {
            serde_json::from_str::<CreateLink>(json)
                .map_err(|e| e.to_string())
                .and_then(|body| body.parse(&policy(), now).map_err(|e| e.to_string()))
        };
        let made = parse(r#"{"url": "https://example.com/", "alias": "spring", "redirect": 308}"#)
            .expect("valid");
        assert_eq!(made.redirect, RedirectStatus::PermanentRedirect);
        assert_eq!(made.alias.expect("alias").as_code().as_str(), "spring");
        for (json, says) in [
            (r#"{"url": "https://sho.rt/x"}"#, "not allowed"),
            (r#"{"url": "https://e.com/", "alias": "api"}"#, "reserved"),
            (r#"{"url": "https://e.com/", "redirect": 303}"#, "303"),
            (
                r#"{"url": "https://e.com/", "expires_at": "+262142-12-31T00:00:00Z"}"#,
                "100 years",
            ),
            (
                r#"{"url": "https://e.com/", "expiry": "2030-01-01T00:00:00Z"}"#,
                "expiry",
            ),
        ] {
            let error = parse(json).expect_err(json);
            assert!(error.contains(says), "{json}: {error}");
        }
    }

    #[test]
    fn changes_tell_absent_from_null() {
        let now = Utc::now();
        let changes = |json: &str| {
            serde_json::from_str::<UpdateLink>(json)
                .expect("JSON")
                .parse(&policy(), now)
                .expect("valid")
        };
        assert_eq!(changes("{}").expires_at, None);
        assert_eq!(changes(r#"{"expires_at": null}"#).expires_at, Some(None));
        assert!(changes("{}").is_empty());
    }

    #[test]
    fn stats_queries_stay_inside_the_calendar() {
        let now = Utc::now();
        let query = |q: &str| {
            serde_json::from_value::<StatsParams>(serde_json::from_str(q).expect("JSON"))
                .expect("params")
                .query(now)
        };
        assert!(query(r#"{}"#).is_ok());
        for bad in [
            r#"{"to": "-262143-01-01T00:00:00Z"}"#,
            r#"{"from": "+262142-12-31T00:00:00Z"}"#,
            r#"{"from": "1969-12-31T23:59:59Z"}"#,
            r#"{"top": 0}"#,
            r#"{"granularity": "hour", "from": "2020-01-01T00:00:00Z", "to": "2021-01-01T00:00:00Z"}"#,
        ] {
            assert!(matches!(query(bad), Err(RequestError::Query(_))), "{bad}");
        }
        let earliest = query(r#"{"to": "1970-01-02T00:00:00Z"}"#).expect("valid");
        assert!(earliest.from < earliest.to);
    }
}
