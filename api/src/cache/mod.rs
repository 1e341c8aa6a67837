//! The link caches: L1 in process (this module), L2 in Redis
//! ([`redis`], optional), then the store.
//!
//! - Bounded by memory: each entry weighs its code, its `Location` and a
//!   fixed overhead, against `cache.l1.max_bytes`.
//! - An entry never outlives its link: a hit past the link's expiry drops
//!   the entry and reloads, so the code answers 410 from that instant.
//! - Unknown codes are cached too (for `negative_ttl`), so a flood of
//!   requests for codes that do not exist never reaches the store.
//! - Misses are coalesced: however many requests wait for one code, L2 and
//!   the store are read once.
//! - Writes through this instance invalidate the entry, so they apply on the
//!   next request; with L2, every other instance drops it too (Redis
//!   pub/sub), and the TTL bounds how long an instance can lag if that
//!   message is lost.
//!
//! Expiry is checked by the lookup rather than by moka's per-entry expiry
//! policy: that policy costs a callback and timer-wheel upkeep on every hit,
//! which is measurable on the redirect path, while the checks here cost a
//! comparison, and a clock read only for entries that can expire.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::http::{StatusCode, header::HeaderValue};
use chrono::{DateTime, Utc};
use links::{Code, Link, LinkState, StoreError, region::LinkFinder};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use self::redis::RedisCache;
use crate::{config::L1Settings, metrics::Metrics};

pub mod redis;

/// Per-entry memory beyond the code and the URL, as measured (resident
/// memory grows by about 700 bytes per cached 45-byte URL): moka's bucket,
/// entry, entry info, key `Arc` and deque nodes, the value, and the
/// allocator's own overhead on each.
const ENTRY_OVERHEAD: u32 = 640;

/// What the cache knows about a code.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Held inline: one pointer fewer to chase on every hit.
    Active(Target),
    Expired,
    Deleted,
    /// No link had this code when the store was asked, at `checked`.
    Missing {
        checked: Instant,
    },
}

/// Everything a redirect needs, prepared once per load.
#[derive(Debug, Clone)]
pub struct Target {
    pub location: HeaderValue,
    pub status: StatusCode,
    pub expires_at: Option<DateTime<Utc>>,
    pub forward_query: bool,
}

/// What the shared tier (L2) keeps of a code: what a redirect needs, and
/// the link's state-changing times, so each reader decides its state now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Link {
        url: String,
        status: u16,
        /// Milliseconds since the epoch.
        expires_at: Option<i64>,
        forward_query: bool,
        deleted_at: Option<i64>,
    },
    Missing,
}

impl Entry {
    pub fn of(link: Option<&Link>) -> Self {
        match link {
            None => Self::Missing,
            Some(link) => Self::Link {
                url: link.url.as_str().to_owned(),
                status: link.redirect.as_u16(),
                expires_at: link.expires_at.map(|at| at.timestamp_millis()),
                forward_query: link.forward_query,
                deleted_at: link.deleted_at.map(|at| at.timestamp_millis()),
            },
        }
    }
}

impl Lookup {
    fn of(entry: Entry, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let Entry::Link {
            url,
            status,
            expires_at,
            forward_query,
            deleted_at,
        } = entry
        else {
            return Ok(Self::Missing {
                checked: Instant::now(),
            });
        };
        let expires_at = expires_at.and_then(DateTime::from_timestamp_millis);
        let state = LinkState::of(
            expires_at,
            deleted_at.and_then(DateTime::from_timestamp_millis),
            now,
        );
        Ok(match state {
            LinkState::Deleted => Self::Deleted,
            LinkState::Expired => Self::Expired,
            LinkState::Active => Self::Active(Target {
                location: HeaderValue::from_str(&url).map_err(|_| {
                    StoreError::Corrupt(format!("stored URL {url:?} is not a header value"))
                })?,
                status: StatusCode::from_u16(status)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                expires_at,
                forward_query,
            }),
        })
    }

    fn weight(&self, code: &Code) -> u32 {
        let url = match self {
            Self::Active(target) => target.location.len(),
            _ => 0,
        };
        ENTRY_OVERHEAD + code.as_str().len() as u32 + url as u32
    }

    /// Whether this entry no longer says what the store would.
    fn is_stale(&self, negative_ttl: Duration) -> bool {
        match self {
            Self::Active(target) => target.expires_at.is_some_and(|at| at <= Utc::now()),
            Self::Missing { checked } => checked.elapsed() >= negative_ttl,
            Self::Expired | Self::Deleted => false,
        }
    }
}

/// The L1 cache.
#[derive(Clone)]
pub struct LinkCache {
    entries: Cache<Code, Lookup, foldhash::fast::RandomState>,
    negative_ttl: Duration,
    l2: Option<Arc<RedisCache>>,
    links: LinkFinder,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LinkCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkCache")
            .field("entries", &self.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl LinkCache {
    pub fn new(
        settings: &L1Settings,
        l2: Option<Arc<RedisCache>>,
        links: LinkFinder,
        metrics: Arc<Metrics>,
    ) -> Self {
        let entries = Cache::builder()
            .name("links-l1")
            .max_capacity(settings.max_bytes)
            .weigher(|code: &Code, value: &Lookup| value.weight(code))
            .time_to_live(settings.ttl)
            // Codes come from request paths: foldhash is seeded per process,
            // and several times faster than the default SipHash.
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            entries,
            negative_ttl: settings.negative_ttl,
            l2,
            links,
            metrics,
        }
    }

    /// What is known about `code`, from L1 or (once, for all waiting
    /// requests) from L2 or the store.
    pub async fn lookup(&self, code: &Code) -> Result<Lookup, Arc<StoreError>> {
        if let Some(found) = self.entries.get(code).await {
            if !found.is_stale(self.negative_ttl) {
                match found {
                    Lookup::Active(_) => self.metrics.l1_hits.inc(),
                    _ => self.metrics.l1_negative_hits.inc(),
                };
                return Ok(found);
            }
            self.entries.invalidate(code).await;
        }
        self.metrics.l1_misses.inc();
        self.entries
            .try_get_with_by_ref(
                code,
                async {
                    self.metrics.l1_loads.inc();
                    if let Some(l2) = &self.l2 {
                        let span = runtime::child_span!(
                            "cache.l2",
                            otel.name = "redis GET",
                            otel.kind = "client",
                            db.system.name = "redis",
                            cache.hit = tracing::field::Empty,
                        );
                        let found = l2.get(code).instrument(span.clone()).await;
                        span.record("cache.hit", found.is_some());
                        if let Some(entry) = found {
                            match entry {
                                Entry::Link { .. } => self.metrics.l2_hits.inc(),
                                Entry::Missing => self.metrics.l2_negative_hits.inc(),
                            };
                            return Lookup::of(entry, Utc::now());
                        }
                        self.metrics.l2_misses.inc();
                    }
                    let link = self.links.find(code).await?;
                    let entry = Entry::of(link.as_ref());
                    if let Some(l2) = &self.l2 {
                        l2.put(code, &entry);
                    }
                    Lookup::of(entry, Utc::now())
                }
                .instrument(runtime::child_span!("cache.load", otel.name = "cache load")),
            )
            .await
    }

    /// Forgets `code` here and, through L2, in every instance, after it
    /// was created, changed or deleted.
    pub async fn invalidate(&self, code: &Code) {
        self.entries.invalidate(code).await;
        if let Some(l2) = &self.l2 {
            l2.invalidate(code).await;
        }
    }

    /// Forgets `code` in this instance only (another instance changed it).
    pub async fn forget(&self, code: &Code) {
        self.entries.invalidate(code).await;
    }

    /// Forgets everything in this instance (invalidations may have been
    /// missed).
    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }
}
