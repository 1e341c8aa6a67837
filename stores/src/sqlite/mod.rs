//! The embedded store: two SQLite files in the data directory.
//!
//! - `links.db`: links, id blocks and settings, written by one connection.
//! - `clicks.db`: click counts, written by another connection whose thread
//!   runs at background priority (see [`runtime::background`]). Counting
//!   clicks yields the CPU to serving links, and because SQLite locks per
//!   file, a click write that is waiting for the CPU never holds a lock that
//!   creating a link needs.
//!
//! WAL mode lets readers run beside the writers: a few reader connections
//! open `links.db` with `clicks.db` attached. Each connection lives on its
//! own thread (`tokio-rusqlite`), so no SQLite call ever blocks the async
//! executor, and a semaphore bounds the calls in flight.
//!
//! Schema migrations are the numbered files in `migrations/sqlite/links`
//! and `migrations/sqlite/clicks`, applied in order at open; each file
//! records its version in `user_version`.

use std::{
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::{FutureExt, future::BoxFuture};
use rusqlite::params;
use tokio::sync::Semaphore;
use tokio_rusqlite::Connection;

mod clicks;
mod rows;
mod schema;
#[cfg(test)]
mod tests;

use self::{
    rows::{LINK_COLUMNS, broken, from_call, from_sqlite, millis, select_link},
    schema::{click_migrations, link_migrations, migrate, open_connection},
};
use links::{
    clicks::ClickBatch,
    code::Code,
    link::{Link, LinkChanges},
    stats::{ClickStats, StatsQuery},
    storage::{IdBlock, LinkStore, StoreError, Uniqueness, UnwrittenClicks},
};
use runtime::background::Priority;

const LINKS_FILE: &str = "links.db";
const CLICKS_FILE: &str = "clicks.db";

/// Page cache of each writer, in KiB: the click tables take random updates
/// all over.
const WRITER_CACHE_KIB: u32 = 32 * 1024;
/// Page cache of each reader, in KiB.
const READER_CACHE_KIB: u32 = 8 * 1024;

/// How often rows past their retention are deleted.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// How the embedded store is opened.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The data directory, created if missing.
    pub dir: PathBuf,
    /// Reader connections beside the one writer.
    pub readers: usize,
    /// Calls waiting for or running on a connection, at most.
    pub max_in_flight: usize,
    /// How long a call waits for a slot (and SQLite for a lock) before it
    /// fails as unavailable.
    pub busy_timeout: Duration,
    /// How long expired or deleted links keep answering 410 before the store
    /// forgets them.
    pub retention: chrono::Duration,
    /// Scheduling of the thread that writes click counts.
    pub background: Priority,
}

/// The embedded [`LinkStore`].
pub struct SqliteStore {
    writer: Connection,
    clicks_writer: Connection,
    readers: Vec<Connection>,
    next_reader: AtomicUsize,
    in_flight: Semaphore,
    busy_timeout: Duration,
    retention: chrono::Duration,
    dir: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("dir", &self.dir)
            .field("readers", &self.readers.len())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database. Rows past
    /// their retention are purged by its [`LinkStore::maintenance`], which
    /// the owner runs.
    pub async fn open(options: SqliteOptions) -> Result<Arc<Self>, StoreError> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()).into())
        })?;
        let (links, clicks) = (dir.join(LINKS_FILE), dir.join(CLICKS_FILE));
        let busy = options.busy_timeout;

        let writer = open_connection(&links, busy, WRITER_CACHE_KIB).await?;
        migrate(&writer, link_migrations).await?;

        let clicks_writer = open_connection(&clicks, busy, WRITER_CACHE_KIB).await?;
        let background = options.background;
        clicks_writer
            .call(move |_| {
                Ok::<_, rusqlite::Error>(runtime::background::set_current_thread(background))
            })
            .await
            .map_err(from_call)?
            .map_err(|e| {
                StoreError::Other(format!("cannot set background priority: {e}").into())
            })?;
        migrate(&clicks_writer, click_migrations).await?;

        let mut readers = Vec::with_capacity(options.readers.max(1));
        for _ in 0..options.readers.max(1) {
            let reader = open_connection(&links, busy, READER_CACHE_KIB).await?;
            let clicks = clicks.clone();
            reader
                .call(move |conn| {
                    conn.execute("ATTACH DATABASE ?1 AS clicks", [clicks.to_string_lossy()])?;
                    conn.pragma_update(Some("clicks"), "cache_size", -(READER_CACHE_KIB as i64))
                })
                .await
                .map_err(from_call)?;
            readers.push(reader);
        }
        let store = Arc::new(Self {
            writer,
            clicks_writer,
            readers,
            next_reader: AtomicUsize::new(0),
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            busy_timeout: busy,
            retention: options.retention,
            dir: options.dir,
        });
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes links (and their counts) whose retention ended before `now`.
    /// Returns how many links were forgotten.
    pub async fn purge(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let now = now.timestamp_millis();
        let codes = self
            .write(move |conn| {
                let tx = conn.transaction()?;
                let codes: Vec<String> = tx
                    .prepare(
                        "SELECT code FROM links WHERE purge_at IS NOT NULL AND purge_at <= ?1",
                    )?
                    .query_map([now], |row| row.get(0))?
                    .collect::<Result<_, _>>()?;
                tx.execute(
                    "DELETE FROM links WHERE purge_at IS NOT NULL AND purge_at <= ?1",
                    [now],
                )?;
                tx.commit()?;
                Ok(codes)
            })
            .await?;
        let purged = codes.len();
        if purged > 0 {
            self.call(&self.clicks_writer, move |conn| {
                let tx = conn.transaction()?;
                for table in ["click_totals", "click_buckets", "click_tops"] {
                    let mut delete = tx.prepare(&format!("DELETE FROM {table} WHERE code = ?1"))?;
                    for code in &codes {
                        delete.execute([code])?;
                    }
                }
                tx.commit()
            })
            .await?;
        }
        Ok(purged)
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.call(&self.writer, f).await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.call(&self.readers[i], f).await
    }

    /// Runs `f` on the connection's thread. A panic in `f` fails this call
    /// alone: it is caught there, any transaction it left open is rolled
    /// back, and the thread goes on serving.
    async fn call<T, F>(&self, conn: &Connection, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = tokio::time::timeout(self.busy_timeout, self.in_flight.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("too many storage calls in flight".into()))?
            .map_err(|e| StoreError::Other(e.into()))?;
        let outcome = conn
            .call_raw(move |conn| {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)));
                if outcome.is_err() && !conn.is_autocommit() {
                    // A `Transaction` rolls back as it unwinds; this is for
                    // one begun otherwise.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                outcome
            })
            .await
            .map_err(|_| broken())?;
        match outcome {
            Ok(result) => result.map_err(from_sqlite),
            Err(panic) => Err(StoreError::Other(
                format!(
                    "a storage call panicked: {}",
                    runtime::panics::message(panic.as_ref())
                )
                .into(),
            )),
        }
    }

    /// Whether the thread of every connection is still there, without
    /// waiting for any of them: a call to a connection whose thread is gone
    /// fails as it is sent, and one that is sent is left to run (it does
    /// nothing).
    fn threads_alive(&self) -> bool {
        [&self.writer, &self.clicks_writer]
            .into_iter()
            .chain(&self.readers)
            .all(|conn| !matches!(conn.call_raw(|_| ()).now_or_never(), Some(Err(_))))
    }

    /// Stops the thread of the link writer, as a crash of it would: the
    /// store is broken from then on. For tests of what the service does
    /// then.
    #[cfg(any(test, feature = "test-fixtures"))]
    pub async fn stop_writer_thread(&self) {
        let _ = self.writer.clone().close().await;
    }
}

async fn purge_periodically(store: Weak<SqliteStore>) {
    let mut every = tokio::time::interval(PURGE_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(store) = store.upgrade() else { return };
        match store.purge(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(links = n, "purged links past their retention"),
            Err(error) => tracing::warn!(%error, "purging links past their retention failed"),
        }
    }
}

#[async_trait]
impl LinkStore for SqliteStore {
    async fn lease_ids(&self, count: u64) -> Result<IdBlock, StoreError> {
        let count = i64::try_from(count).map_err(|e| StoreError::Other(e.into()))?;
        let (ids, reserved) = self
            .write(move |conn| {
                let tx = conn.transaction()?;
                let start: i64 = tx
                    .prepare_cached(
                        "UPDATE id_blocks SET next = next + ?1 WHERE name = 'links' \
                         RETURNING next - ?1",
                    )?
                    .query_row([count], |row| row.get(0))?;
                // Ids are signed 64-bit; a block past the last one is never
                // handed out (the transaction rolls back).
                let Some(end) = start.checked_add(count).filter(|_| start >= 0) else {
                    return Ok(None);
                };
                let reserved = tx
                    .prepare_cached(
                        "SELECT id FROM reserved_ids WHERE id >= ?1 AND id < ?2 ORDER BY id",
                    )?
                    .query_map([start, end], |row| row.get::<_, u64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                tx.commit()?;
                Ok(Some((start as u64..end as u64, reserved)))
            })
            .await?
            .ok_or_else(|| StoreError::Other("the id space is used up".into()))?;
        Ok(IdBlock::consecutive(ids, reserved))
    }

    async fn reserve_id(&self, id: u64) -> Result<bool, StoreError> {
        let id = i64::try_from(id).map_err(|e| StoreError::Other(e.into()))?;
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let next: i64 = tx
                .prepare_cached("SELECT next FROM id_blocks WHERE name = 'links'")?
                .query_row([], |row| row.get(0))?;
            if id < next {
                return Ok(false);
            }
            tx.prepare_cached("INSERT OR IGNORE INTO reserved_ids (id) VALUES (?1)")?
                .execute([id])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    /// The primary key checks every insert, generated or not.
    async fn insert_link(&self, link: &Link, _: Uniqueness) -> Result<(), StoreError> {
        let link = link.clone();
        let purge_at = link.purge_at(self.retention).map(millis);
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO links ({LINK_COLUMNS}, purge_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                link.code.as_str(),
                link.url.as_str(),
                millis(link.created_at),
                link.expires_at.map(millis),
                link.redirect.as_u16(),
                link.forward_query,
                link.deleted_at.map(millis),
                link.token.as_bytes().as_slice(),
                link.revision,
                purge_at,
            ])?;
            Ok(())
        })
        .await
    }

    async fn get_link(&self, code: &Code) -> Result<Option<Link>, StoreError> {
        let code = code.clone();
        self.read(move |conn| select_link(conn, code.as_str()))
            .await
    }

    async fn update_link(
        &self,
        code: &Code,
        changes: &LinkChanges,
    ) -> Result<Option<Link>, StoreError> {
        let code = code.clone();
        let changes = changes.clone();
        let retention = self.retention;
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let Some(mut link) = select_link(&tx, code.as_str())? else {
                return Ok(None);
            };
            if link.deleted_at.is_some() {
                return Ok(None);
            }
            changes.apply_to(&mut link);
            link.revision = link.revision.wrapping_add(1);
            tx.prepare_cached(
                "UPDATE links SET url = ?2, expires_at = ?3, redirect = ?4, forward_query = ?5, \
                 purge_at = ?6, revision = ?7 WHERE code = ?1",
            )?
            .execute(params![
                link.code.as_str(),
                link.url.as_str(),
                link.expires_at.map(millis),
                link.redirect.as_u16(),
                link.forward_query,
                link.purge_at(retention).map(millis),
                link.revision,
            ])?;
            tx.commit()?;
            Ok(Some(link))
        })
        .await
    }

    async fn delete_link(
        &self,
        code: &Code,
        at: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError> {
        let code = code.clone();
        let retention = self.retention;
        self.write(move |conn| {
            let tx = conn.transaction()?;
            let purge_at = millis(links::link::later_by(at, retention));
            let changed = tx
                .prepare_cached(
                    "UPDATE links SET deleted_at = ?2, \
                     purge_at = MIN(?3, COALESCE(purge_at, ?3)), revision = revision + 1 \
                     WHERE code = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![code.as_str(), millis(at), purge_at])?;
            let deleted = match changed {
                1 => select_link(&tx, code.as_str())?,
                _ => None,
            };
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks> {
        // One transaction: a failure applied nothing.
        self.write_clicks(batch)
            .await
            .map_err(|e| UnwrittenClicks::all(batch, e))
    }

    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError> {
        self.read_click_stats(code, query).await
    }

    async fn get_or_init_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
            )?
            .execute([&name, &value])?;
            conn.prepare_cached("SELECT value FROM settings WHERE name = ?1")?
                .query_row([&name], |row| row.get(0))
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if !self.threads_alive() {
            return Err(broken());
        }
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    fn maintenance(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        Some(Box::pin(purge_periodically(Arc::downgrade(&self))))
    }
}
