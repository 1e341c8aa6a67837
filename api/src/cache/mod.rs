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
//! - With several regions, a change made elsewhere arrives as its revision
//!   ([`crate::changes`]): the entry is dropped here and in this region's
//!   Redis, and the revision is remembered as a *fence* for the code. A
//!   copy older than the fence (in Redis, or read from a replica the change
//!   has not reached) is never served nor cached: the link is read again
//!   where the change is (its home region and a majority of replicas), and
//!   if even there it is older, the request fails with 503 rather than
//!   answer the old target.
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
        /// The link's revision (0 in entries written before revisions).
        #[serde(default)]
        revision: u32,
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
                revision: link.revision,
            },
        }
    }

    /// The revision of the link this entry holds; `None` for an unknown
    /// code.
    fn revision(&self) -> Option<u32> {
        match self {
            Self::Link { revision, .. } => Some(*revision),
            Self::Missing => None,
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
            ..
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
    /// Per code changed in another region, the revision of the change.
    fences: Option<Fences>,
}

/// Revisions of changes heard of, per code, and how long a load may take
/// (a load that began before a fence was set may still end after it).
#[derive(Clone)]
struct Fences {
    revisions: moka::sync::Cache<Code, u32, foldhash::fast::RandomState>,
    load_within: Duration,
}

/// Codes whose fences are kept at most; beyond, the least recently set
/// are dropped first (their changes are older than most caches' copies).
const MAX_FENCES: u64 = 1_000_000;

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
            fences: None,
        }
    }

    /// Remembers changes made in other regions (see the module's notes),
    /// for `keep` (the longest any cache keeps a copy); `load_within`
    /// bounds one load from L2 or the store.
    pub fn with_fences(mut self, keep: Duration, load_within: Duration) -> Self {
        self.fences = Some(Fences {
            revisions: moka::sync::Cache::builder()
                .max_capacity(MAX_FENCES)
                // The newest fences matter most: never refuse one for
                // being new (moka's default admission may).
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(keep)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            load_within,
        });
        self
    }

    fn fence(&self, code: &Code) -> Option<u32> {
        self.fences.as_ref()?.revisions.get(code)
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
                        let fence = self.fence(code);
                        // A copy older than a change heard of is a miss.
                        let found =
                            found.filter(|entry| fence.is_none_or(|f| entry.revision() >= Some(f)));
                        if let Some(entry) = found {
                            match entry {
                                Entry::Link { .. } => self.metrics.l2_hits.inc(),
                                Entry::Missing => self.metrics.l2_negative_hits.inc(),
                            };
                            return Lookup::of(entry, Utc::now());
                        }
                        self.metrics.l2_misses.inc();
                    }
                    let mut link = self.links.find(code).await?;
                    if let Some(fence) = self.fence(code)
                        && link.as_ref().is_none_or(|l| l.revision < fence)
                    {
                        link = Some(self.links.find_at_least(code, fence).await?);
                    }
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

    /// A change to `code` at `revision`, made in another region: forgotten
    /// here and in this region's L2, and fenced. Forgotten again once any
    /// load that began before the fence has ended, since moka inserts a
    /// load's result even after an invalidation.
    pub async fn heard_change(&self, code: &Code, revision: u32) {
        let Some(fences) = &self.fences else { return };
        fences
            .revisions
            .entry(code.clone())
            .and_compute_with(|current| match current {
                Some(current) if *current.value() >= revision => moka::ops::compute::Op::Nop,
                _ => moka::ops::compute::Op::Put(revision),
            });
        self.invalidate(code).await;
        let (entries, code, after) = (self.entries.clone(), code.clone(), fences.load_within);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            entries.invalidate(&code).await;
        });
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use links::{
        LinkChanges, LinkStore, TargetUrl, UnwrittenClicks, UrlPolicy,
        clicks::ClickBatch,
        codegen::{CodeGenerator, CodeKey},
        region::{RegionSlot, Regions},
        stats::{ClickStats, StatsQuery},
        storage::{IdBlock, Uniqueness, contract::sample_link},
    };

    use super::*;

    /// This region's replica, and what the other regions have.
    #[derive(Debug, Default)]
    struct Replicas {
        here: Mutex<Option<Link>>,
        elsewhere: Mutex<Option<Link>>,
    }

    fn unused() -> StoreError {
        StoreError::Other("not used by the cache".into())
    }

    #[async_trait]
    impl LinkStore for Replicas {
        async fn lease_ids(&self, _: u64) -> Result<IdBlock, StoreError> {
            Err(unused())
        }
        async fn reserve_id(&self, _: u64) -> Result<bool, StoreError> {
            Err(unused())
        }
        async fn insert_link(&self, _: &Link, _: Uniqueness) -> Result<(), StoreError> {
            Err(unused())
        }
        async fn get_link(&self, _: &Code) -> Result<Option<Link>, StoreError> {
            Ok(self.here.lock().expect("lock").clone())
        }
        async fn get_link_elsewhere(
            &self,
            _: &Code,
            _: Option<RegionSlot>,
        ) -> Result<Option<Link>, StoreError> {
            Ok(self.elsewhere.lock().expect("lock").clone())
        }
        async fn update_link(&self, _: &Code, _: &LinkChanges) -> Result<Option<Link>, StoreError> {
            Err(unused())
        }
        async fn delete_link(
            &self,
            _: &Code,
            _: DateTime<Utc>,
        ) -> Result<Option<Link>, StoreError> {
            Err(unused())
        }
        async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks> {
            Err(UnwrittenClicks::all(batch, unused()))
        }
        async fn click_stats(&self, _: &Code, _: &StatsQuery) -> Result<ClickStats, StoreError> {
            Err(unused())
        }
        async fn get_or_init_setting(&self, _: &str, _: &str) -> Result<String, StoreError> {
            Err(unused())
        }
        async fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn at(revision: u32, url: &str) -> Link {
        let mut link = sample_link("fence");
        link.code = Code::parse("fenced1").expect("valid");
        link.url = TargetUrl::parse(url, &UrlPolicy::new(2048, [])).expect("valid");
        link.revision = revision;
        link
    }

    fn target(lookup: &Lookup) -> &str {
        match lookup {
            Lookup::Active(target) => target.location.to_str().expect("ascii"),
            other => panic!("not a link: {other:?}"),
        }
    }

    /// A change heard of from another region fences the code: this
    /// region's older copy is neither served nor cached, the link is read
    /// where the change is, and if nobody has it yet the lookup fails
    /// rather than answer the old target.
    #[tokio::test]
    async fn a_copy_older_than_a_change_heard_of_is_never_served() {
        let replicas = Arc::new(Replicas::default());
        *replicas.here.lock().expect("lock") = Some(at(1, "https://old.example/"));
        *replicas.elsewhere.lock().expect("lock") = Some(at(2, "https://new.example/"));
        let generator = CodeGenerator::new(&CodeKey::generate(), 7).expect("generator");
        let regions = Regions::parse("eu:0:dc_eu,us:1:dc_us", "us").expect("regions");
        let links = LinkFinder::regional(replicas.clone(), Arc::new(generator), regions);
        let settings = L1Settings {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(1),
        };
        let cache = LinkCache::new(&settings, None, links, Arc::new(Metrics::new()))
            .with_fences(Duration::from_secs(300), Duration::from_millis(50));
        let code = Code::parse("fenced1").expect("valid");

        // No change heard of: this region's copy answers, and is cached.
        let first = cache.lookup(&code).await.expect("lookup");
        assert_eq!(target(&first), "https://old.example/");

        cache.heard_change(&code, 2).await;
        let fresh = cache.lookup(&code).await.expect("lookup");
        assert_eq!(target(&fresh), "https://new.example/");

        // A later change nobody has yet: unavailable, not the old target.
        cache.heard_change(&code, 3).await;
        assert!(cache.lookup(&code).await.is_err());
        // An older change heard late lowers nothing.
        cache.heard_change(&code, 1).await;
        assert!(cache.lookup(&code).await.is_err());
        *replicas.elsewhere.lock().expect("lock") = Some(at(3, "https://newer.example/"));
        let newer = cache.lookup(&code).await.expect("lookup");
        assert_eq!(target(&newer), "https://newer.example/");
    }
}
