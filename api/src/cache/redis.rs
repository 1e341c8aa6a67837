//! L2: Redis, shared by every instance, between L1 and the store.
//!
//! Redis is a cache only: any failure reads as a miss and the store
//! answers, so nothing correct depends on it.
//!
//! - **Cache-aside**: L1 misses read `GET`; store loads are written back
//!   with `SET … EX`, the TTL jittered so entries loaded together do not
//!   expire together. Unknown codes are cached too, for the negative TTL.
//! - **Bounded**: every call (pool wait and connect included) has one
//!   timeout. A failed or timed-out connection is dropped, not reused.
//! - **Breaker**: after a few consecutive failures the breaker opens and
//!   calls fail at once, without touching the network; a background probe
//!   pings Redis every cooldown and closes it when Redis answers. A dead or
//!   frozen Redis thus costs a few timeouts, not one per request.
//! - **Invalidation**: creating, changing or deleting a link replaces its
//!   entry with a short-lived tombstone and publishes the code; every other
//!   instance subscribes and drops it from L1. Write-backs only fill empty
//!   keys (`SET … NX`), so a load that read the store before the change
//!   cannot put the old link back while the tombstone lasts (longer than
//!   any store read may take). An invalidation that fails is kept (bounded)
//!   and retried when the breaker closes; an instance that loses its
//!   subscription clears its L1 when it subscribes again, since it may have
//!   missed messages. The L1 TTL is the last safety net.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use deadpool_redis::{Config, Connection, Pool, PoolConfig, Runtime, Timeouts, redis};
use futures_util::StreamExt;
use links::Code;
use rand::Rng;
use runtime::tasks::Tasks;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Entry;
use crate::{config::RedisSettings, metrics::Metrics};

/// Failed invalidations kept for retry, at most; beyond, the L1 and L2 TTLs
/// bound the staleness.
const MAX_PENDING_INVALIDATIONS: usize = 10_000;
/// What an invalidated key holds while a load that read the store before
/// the change may still try to write the old link back.
const TOMBSTONE: &[u8] = b"!";
/// Write-backs in flight at most; a miss beyond them is not written back
/// (the next miss of that code writes it), so a slow Redis cannot pile up
/// tasks and memory.
const MAX_WRITE_BACKS: usize = 1024;
/// Pause between attempts to subscribe again.
const RESUBSCRIBE_EVERY: Duration = Duration::from_secs(1);

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("the breaker is open")]
    Open,
    #[error("timed out")]
    Timeout,
    #[error("no connection: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The L2 cache.
pub struct RedisCache {
    pool: Pool,
    client: redis::Client,
    breaker: Breaker,
    settings: RedisSettings,
    channel: String,
    /// Tags this instance's invalidation messages, which it skips: it has
    /// applied them already.
    instance: String,
    /// How long tombstones last: longer than any store read.
    tombstone_secs: u64,
    pending: Mutex<HashSet<Code>>,
    metrics: Arc<Metrics>,
    /// Where write-backs run, and how many may.
    tasks: Tasks,
    write_backs: Arc<Semaphore>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("open", &self.breaker.is_open())
            .finish_non_exhaustive()
    }
}

/// A consecutive-failure breaker whose probing is done by a background
/// task, so that no request ever waits on a probe.
#[derive(Debug)]
struct Breaker {
    open: AtomicBool,
    failures: AtomicU32,
    threshold: u32,
    opened: Notify,
}

impl Breaker {
    fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    fn succeeded(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a failure; true if this one opened the breaker.
    fn failed(&self) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold && !self.open.swap(true, Ordering::AcqRel) {
            self.opened.notify_one();
            return true;
        }
        false
    }

    fn close(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
    }
}

impl RedisCache {
    /// A pool to `settings.url`; connects lazily, so a Redis that is down
    /// at start only means an open breaker.
    /// `store_timeout` bounds how long a store read may take, which is how
    /// long an invalidation's tombstone must last.
    pub fn new(
        settings: &RedisSettings,
        store_timeout: Duration,
        metrics: Arc<Metrics>,
        tasks: Tasks,
    ) -> Result<Arc<Self>, RedisError> {
        let url = settings.url().unwrap_or_default();
        let mut config = Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: settings.pool_size.get(),
            timeouts: Timeouts {
                wait: Some(settings.timeout),
                create: Some(settings.timeout),
                recycle: Some(settings.timeout),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisError::Redis(redis::RedisError::from(std::io::Error::other(e))))?;
        let client = redis::Client::open(url)?;
        Ok(Arc::new(Self {
            pool,
            client,
            breaker: Breaker {
                open: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                threshold: settings.breaker_failures.max(1),
                opened: Notify::new(),
            },
            channel: format!("{}invalidate", settings.key_prefix),
            instance: format!("{:016x}", rand::random::<u64>()),
            tombstone_secs: (store_timeout * 2).as_secs().max(5),
            settings: settings.clone(),
            pending: Mutex::new(HashSet::new()),
            metrics,
            tasks,
            write_backs: Arc::new(Semaphore::new(MAX_WRITE_BACKS)),
        }))
    }

    fn key(&self, code: &Code) -> String {
        format!("{}link:{}", self.settings.key_prefix, code)
    }

    /// Runs one call under the timeout and the breaker.
    async fn call<T, F>(&self, op: F) -> Result<T, RedisError>
    where
        F: AsyncFnOnce(&mut Connection) -> Result<T, redis::RedisError>,
    {
        if self.breaker.is_open() {
            self.metrics.redis_rejected.inc();
            return Err(RedisError::Open);
        }
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.settings.timeout, async {
            let mut conn = self.pool.get().await?;
            match op(&mut conn).await {
                Ok(value) => Ok(value),
                Err(e) => {
                    // Its state is unknown: do not hand it to the next call.
                    let _ = deadpool_redis::Connection::take(conn);
                    Err(RedisError::Redis(e))
                }
            }
        })
        .await
        .unwrap_or(Err(RedisError::Timeout));
        self.metrics
            .redis_seconds
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.breaker.succeeded(),
            Err(error) => {
                self.metrics.redis_errors.inc();
                if self.breaker.failed() {
                    self.metrics.redis_breaker_open.set(1);
                    tracing::warn!(%error, "Redis failing: breaker open, serving without L2");
                }
            }
        }
        result
    }

    /// The cached entry of `code`; `None` on a miss or any failure.
    pub async fn get(&self, code: &Code) -> Option<Entry> {
        let key = self.key(code);
        let bytes: Option<Vec<u8>> = self
            .call(async |conn| redis::cmd("GET").arg(&key).query_async(conn).await)
            .await
            .ok()
            .flatten();
        bytes.filter(|bytes| bytes != TOMBSTONE).and_then(|bytes| {
            match serde_json::from_slice(&bytes) {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::warn!(%error, %code, "unreadable L2 entry; ignored");
                    None
                }
            }
        })
    }

    /// Writes `entry` back in the background, unless the key holds
    /// anything (a tombstone among others); the caller never waits. Skipped
    /// when [`MAX_WRITE_BACKS`] are in flight already.
    pub fn put(self: &Arc<Self>, code: &Code, entry: &Entry) {
        if self.breaker.is_open() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.write_backs).try_acquire_owned() else {
            self.metrics.redis_write_backs_skipped.inc();
            return;
        };
        let ttl = match entry {
            Entry::Missing => self.settings.negative_ttl,
            Entry::Link { .. } => self.settings.ttl,
        };
        let Ok(bytes) = serde_json::to_vec(entry) else {
            return;
        };
        let secs = jittered(ttl, self.settings.ttl_jitter).as_secs().max(1);
        let (this, key) = (self.clone(), self.key(code));
        self.tasks.spawn_until_stopped(async move {
            let _permit = permit;
            let _ = this
                .call(async |conn| {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&bytes)
                        .arg("EX")
                        .arg(secs)
                        .arg("NX")
                        .query_async::<()>(conn)
                        .await
                })
                .await;
        });
    }

    /// Replaces the entry of `code` with a tombstone and tells every other
    /// instance to drop it from L1. Kept for retry if Redis cannot be
    /// reached.
    pub async fn invalidate(&self, code: &Code) {
        if self.tombstone_and_publish(code).await.is_err() {
            self.keep_pending(code);
        }
    }

    async fn tombstone_and_publish(&self, code: &Code) -> Result<(), RedisError> {
        let key = self.key(code);
        let message = format!("{}:{code}", self.instance);
        self.call(async |conn| {
            redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(TOMBSTONE)
                .arg("EX")
                .arg(self.tombstone_secs)
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&message)
                .ignore()
                .query_async::<()>(conn)
                .await
        })
        .await
    }

    fn keep_pending(&self, code: &Code) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() < MAX_PENDING_INVALIDATIONS {
            pending.insert(code.clone());
        } else {
            self.metrics.redis_invalidations_lost.inc();
        }
    }

    /// While the breaker is open: ping every cooldown; when Redis answers,
    /// close it and send the invalidations that failed meanwhile.
    pub async fn probe(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = self.breaker.opened.notified() => {}
                () = stop.cancelled() => return,
            }
            while self.breaker.is_open() {
                tokio::select! {
                    () = tokio::time::sleep(self.settings.breaker_cooldown) => {}
                    () = stop.cancelled() => return,
                }
                let ping = tokio::time::timeout(self.settings.timeout, async {
                    let mut conn = self.pool.get().await?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .map_err(RedisError::from)
                })
                .await;
                if matches!(ping, Ok(Ok(_))) {
                    self.breaker.close();
                    self.metrics.redis_breaker_open.set(0);
                    tracing::info!("Redis answers again: breaker closed");
                }
            }
            let codes: Vec<Code> = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending.drain().collect()
            };
            for code in codes {
                if self.tombstone_and_publish(&code).await.is_err() {
                    self.keep_pending(&code);
                }
            }
        }
    }

    /// Listens for invalidations from every instance and applies them to
    /// this instance's L1, until `stop`. After a lost subscription is back,
    /// L1 is cleared: messages may have been missed meanwhile.
    pub async fn subscribe(self: Arc<Self>, l1: super::LinkCache, stop: CancellationToken) {
        let mut lost = false;
        loop {
            let subscribed = tokio::time::timeout(self.settings.timeout * 10, async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            })
            .await;
            match subscribed {
                Ok(Ok(pubsub)) => {
                    if lost {
                        tracing::info!("subscribed to invalidations again; clearing L1");
                        l1.forget_all();
                    }
                    let mut messages = pubsub.into_on_message();
                    loop {
                        tokio::select! {
                            message = messages.next() => match message {
                                Some(message) => {
                                    let payload: Result<String, _> = message.get_payload();
                                    if let Some(code) = payload.ok().and_then(|p| self.foreign_code(&p)) {
                                        l1.forget(&code).await;
                                    }
                                }
                                None => break,
                            },
                            () = stop.cancelled() => return,
                        }
                    }
                    tracing::warn!("lost the invalidation subscription; subscribing again");
                }
                Ok(Err(error)) => tracing::debug!(%error, "cannot subscribe to invalidations"),
                Err(_) => tracing::debug!("subscribing to invalidations timed out"),
            }
            lost = true;
            tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE_EVERY) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

impl RedisCache {
    /// The code of an invalidation message from another instance.
    fn foreign_code(&self, message: &str) -> Option<Code> {
        let (instance, code) = message.rsplit_once(':')?;
        (instance != self.instance)
            .then(|| Code::parse(code).ok())
            .flatten()
    }
}

/// `ttl` spread by ± `jitter` (a fraction), so entries written together
/// expire apart.
fn jittered(ttl: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return ttl;
    }
    let factor = rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter));
    ttl.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_spreads_within_bounds() {
        let ttl = Duration::from_secs(3600);
        let spread: Vec<Duration> = (0..1000).map(|_| jittered(ttl, 0.1)).collect();
        assert!(spread.iter().all(|d| (3240..=3960).contains(&d.as_secs())));
        let distinct: HashSet<u64> = spread.iter().map(Duration::as_secs).collect();
        assert!(distinct.len() > 100, "{}", distinct.len());
        assert_eq!(jittered(ttl, 0.0), ttl);
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_only() {
        let breaker = Breaker {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            threshold: 3,
            opened: Notify::new(),
        };
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        breaker.succeeded();
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(!breaker.is_open());
        assert!(breaker.failed(), "the third in a row opens it");
        assert!(breaker.is_open());
        assert!(!breaker.failed(), "it opens once");
        breaker.close();
        assert!(!breaker.is_open());
    }
}
