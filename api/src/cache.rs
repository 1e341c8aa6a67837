//! L1: the in-process link cache, in front of the store.
//!
//! - Bounded by memory: each entry weighs its code, its `Location` and a
//!   fixed overhead, against `cache.l1.max_bytes`.
//! - An entry never outlives its link: a hit past the link's expiry drops
//!   the entry and reloads, so the code answers 410 from that instant.
//! - Unknown codes are cached too (for `negative_ttl`), so a flood of
//!   requests for codes that do not exist never reaches the store.
//! - Misses are coalesced: however many requests wait for one code, the
//!   store is read once.
//! - Writes through this instance invalidate the entry, so they apply on the
//!   next request; the TTL bounds how long other instances can lag.
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
use links::{Code, Link, LinkState, LinkStore, StoreError};
use moka::future::Cache;

use crate::{config::L1Settings, metrics::Metrics};

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

impl Lookup {
    fn of(link: Option<Link>, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let Some(link) = link else {
            return Ok(Self::Missing {
                checked: Instant::now(),
            });
        };
        Ok(match link.state(now) {
            LinkState::Deleted => Self::Deleted,
            LinkState::Expired => Self::Expired,
            LinkState::Active => Self::Active(Target {
                location: HeaderValue::from_str(link.url.as_str()).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "stored URL of {} is not a header value",
                        link.code
                    ))
                })?,
                status: StatusCode::from_u16(link.redirect.as_u16())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                expires_at: link.expires_at,
                forward_query: link.forward_query,
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
    store: Arc<dyn LinkStore>,
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
    pub fn new(settings: &L1Settings, store: Arc<dyn LinkStore>, metrics: Arc<Metrics>) -> Self {
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
            store,
            metrics,
        }
    }

    /// What is known about `code`, from the cache or (once, for all waiting
    /// requests) from the store.
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
            .try_get_with_by_ref(code, async {
                self.metrics.l1_loads.inc();
                let link = self.store.get_link(code).await?;
                Lookup::of(link, Utc::now())
            })
            .await
    }

    /// Forgets `code`, after it was created, changed or deleted.
    pub async fn invalidate(&self, code: &Code) {
        self.entries.invalidate(code).await;
    }
}
