//! L1: the in-process link cache, in front of the store.
//!
//! - Bounded by memory: each entry weighs its code, its `Location` and a
//!   fixed overhead, against `cache.l1.max_bytes`.
//! - An entry never outlives its link: it expires at the link's own expiry
//!   when that comes before the cache TTL.
//! - Unknown codes are cached too (for `negative_ttl`), so a flood of
//!   requests for codes that do not exist never reaches the store.
//! - Misses are coalesced: however many requests wait for one code, the
//!   store is read once.
//! - Writes through this instance invalidate the entry, so they apply on the
//!   next request; the TTL bounds how long other instances can lag.

use std::{sync::Arc, time::Duration};

use actix_web::http::{StatusCode, header::HeaderValue};
use chrono::{DateTime, Utc};
use links::{Code, Link, LinkState, LinkStore, StoreError};
use moka::{Expiry, future::Cache};

use crate::{config::L1Settings, metrics::Metrics};

/// Per-entry memory beyond the code and the URL: moka's node and
/// frequency-sketch share, the `Arc`, and the `HeaderValue`'s buffer.
const ENTRY_OVERHEAD: u32 = 192;

/// What the cache knows about a code.
#[derive(Debug, Clone)]
pub enum Lookup {
    Active(Arc<Target>),
    Expired,
    Deleted,
    /// No link has this code.
    Missing,
}

/// Everything a redirect needs, prepared once per load.
#[derive(Debug)]
pub struct Target {
    pub location: HeaderValue,
    pub status: StatusCode,
    pub expires_at: Option<DateTime<Utc>>,
    pub forward_query: bool,
}

impl Lookup {
    fn of(link: Option<Link>, now: DateTime<Utc>) -> Result<Self, StoreError> {
        let Some(link) = link else {
            return Ok(Self::Missing);
        };
        Ok(match link.state(now) {
            LinkState::Deleted => Self::Deleted,
            LinkState::Expired => Self::Expired,
            LinkState::Active => Self::Active(Arc::new(Target {
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
            })),
        })
    }

    fn weight(&self, code: &Code) -> u32 {
        let url = match self {
            Self::Active(target) => target.location.len(),
            _ => 0,
        };
        ENTRY_OVERHEAD + code.as_str().len() as u32 + url as u32
    }
}

struct LinkExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<Code, Lookup> for LinkExpiry {
    fn expire_after_create(
        &self,
        _: &Code,
        value: &Lookup,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(match value {
            Lookup::Active(target) => match target.expires_at {
                Some(at) => (at - Utc::now()).to_std().unwrap_or_default().min(self.ttl),
                None => self.ttl,
            },
            Lookup::Expired | Lookup::Deleted => self.ttl,
            Lookup::Missing => self.negative_ttl,
        })
    }
}

/// The L1 cache.
#[derive(Clone)]
pub struct LinkCache {
    entries: Cache<Code, Lookup>,
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
            .expire_after(LinkExpiry {
                ttl: settings.ttl,
                negative_ttl: settings.negative_ttl,
            })
            .build();
        Self {
            entries,
            store,
            metrics,
        }
    }

    /// What is known about `code`, from the cache or (once, for all waiting
    /// requests) from the store.
    pub async fn lookup(&self, code: &Code) -> Result<Lookup, Arc<StoreError>> {
        if let Some(found) = self.entries.get(code).await {
            match found {
                Lookup::Active(_) => self.metrics.l1_hits.inc(),
                _ => self.metrics.l1_negative_hits.inc(),
            };
            return Ok(found);
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

    /// Entries and their total weight, after pending maintenance.
    pub async fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks().await;
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}
