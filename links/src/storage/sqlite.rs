//! The embedded store: two SQLite files in the data directory.
//!
//! - `links.db`: links, id blocks and settings, written by one connection.
//! - `clicks.db`: click counts, written by another connection whose thread
//!   runs at background priority (see [`crate::background`]). Counting
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
use futures_util::FutureExt;
use rusqlite::{OptionalExtension, Row, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::Semaphore;
use tokio_rusqlite::Connection;

use super::{BoxError, IdBlock, LinkStore, StoreError, Uniqueness};
use crate::{
    background::Priority,
    clicks::{ClickBatch, Counts, Dimension, Granularity},
    code::Code,
    link::{Link, LinkChanges, RedirectStatus, TokenDigest},
    stats::{ClickStats, StatsQuery},
    target::TargetUrl,
};

/// The schema of `links.db`, one migration per file; never edit one that
/// has shipped.
fn link_migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/links/0001_links.sql")),
        M::up(include_str!(
            "../../migrations/sqlite/links/0002_reserved_ids.sql"
        )),
    ])
}

/// The schema of `clicks.db`.
fn click_migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(include_str!(
        "../../migrations/sqlite/clicks/0001_clicks.sql"
    ))])
}

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
    /// Opens (creating if needed) and migrates the database, and starts the
    /// periodic purge of rows past their retention.
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
                Ok::<_, rusqlite::Error>(crate::background::set_current_thread(background))
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
        tokio::spawn(purge_periodically(Arc::downgrade(&store)));
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
                    crate::panics::message(panic.as_ref())
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
    #[cfg(any(test, feature = "contract-tests"))]
    pub async fn stop_writer_thread(&self) {
        let _ = self.writer.clone().close().await;
    }
}

/// A connection's thread is gone: every call to it fails from now on.
fn broken() -> StoreError {
    StoreError::Broken("a SQLite connection's thread has stopped".into())
}

async fn migrate(
    conn: &Connection,
    migrations: fn() -> Migrations<'static>,
) -> Result<(), StoreError> {
    conn.call(move |conn| {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        migrations().to_latest(conn)
    })
    .await
    .map_err(|e| match e {
        tokio_rusqlite::Error::Error(rusqlite_migration::Error::RusqliteError { err, .. }) => {
            from_sqlite(err)
        }
        tokio_rusqlite::Error::Error(e) => {
            StoreError::Corrupt(format!("schema migration failed: {e}"))
        }
        other => StoreError::Unavailable(other.to_string().into()),
    })
}

async fn open_connection(
    path: &Path,
    busy: Duration,
    cache_kib: u32,
) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).await.map_err(|e| {
        StoreError::Unavailable(format!("cannot open {}: {e}", path.display()).into())
    })?;
    conn.call(move |conn| {
        conn.busy_timeout(busy)?;
        // WAL makes a commit an append; NORMAL syncs at checkpoints, so a
        // power cut can lose the last commits but never corrupts the file.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Pages kept in this connection's memory: the click tables take
        // random updates all over, which otherwise cost a read per page.
        conn.pragma_update(None, "cache_size", -(cache_kib as i64))?;
        Ok(())
    })
    .await
    .map_err(from_call)?;
    Ok(conn)
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

fn from_call(e: tokio_rusqlite::Error<rusqlite::Error>) -> StoreError {
    match e {
        tokio_rusqlite::Error::Error(e) => from_sqlite(e),
        tokio_rusqlite::Error::ConnectionClosed => broken(),
        other => StoreError::Unavailable(other.to_string().into()),
    }
}

fn from_sqlite(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(ConstraintViolation) => StoreError::Conflict,
        Some(DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen) => {
            StoreError::Unavailable(Box::new(e))
        }
        _ => match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, inner) => {
                StoreError::Corrupt(inner.to_string())
            }
            other => StoreError::Other(BoxError::from(other)),
        },
    }
}

const LINK_COLUMNS: &str =
    "code, url, created_at, expires_at, redirect, forward_query, deleted_at, token_digest";

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn conversion(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

fn link_from_row(row: &Row<'_>) -> rusqlite::Result<Link> {
    let code: String = row.get(0)?;
    let redirect: u16 = row.get(4)?;
    let digest: Vec<u8> = row.get(7)?;
    Ok(Link {
        code: Code::parse(&code).map_err(|e| conversion(0, format!("code {code:?}: {e}")))?,
        url: TargetUrl::from_stored(row.get(1)?),
        created_at: from_millis(row.get(2)?),
        expires_at: row.get::<_, Option<i64>>(3)?.map(from_millis),
        redirect: RedirectStatus::try_from(redirect).map_err(|e| conversion(4, e.to_string()))?,
        forward_query: row.get(5)?,
        deleted_at: row.get::<_, Option<i64>>(6)?.map(from_millis),
        token: TokenDigest::from_bytes(
            digest
                .try_into()
                .map_err(|_| conversion(7, "token digest is not 32 bytes".into()))?,
        ),
    })
}

fn select_link(conn: &rusqlite::Connection, code: &str) -> rusqlite::Result<Option<Link>> {
    conn.prepare_cached(&format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?1"))?
        .query_row([code], link_from_row)
        .optional()
}

fn granularity_name(g: Granularity) -> &'static str {
    g.as_str()
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
        Ok(IdBlock { ids, reserved })
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
                "INSERT INTO links ({LINK_COLUMNS}, purge_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
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
            tx.prepare_cached(
                "UPDATE links SET url = ?2, expires_at = ?3, redirect = ?4, forward_query = ?5, \
                 purge_at = ?6 WHERE code = ?1",
            )?
            .execute(params![
                link.code.as_str(),
                link.url.as_str(),
                link.expires_at.map(millis),
                link.redirect.as_u16(),
                link.forward_query,
                link.purge_at(retention).map(millis),
            ])?;
            tx.commit()?;
            Ok(Some(link))
        })
        .await
    }

    async fn delete_link(&self, code: &Code, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let code = code.clone();
        let retention = self.retention;
        self.write(move |conn| {
            let purge_at = millis(crate::link::later_by(at, retention));
            let changed = conn
                .prepare_cached(
                    "UPDATE links SET deleted_at = ?2, \
                     purge_at = MIN(?3, COALESCE(purge_at, ?3)) \
                     WHERE code = ?1 AND deleted_at IS NULL",
                )?
                .execute(params![code.as_str(), millis(at), purge_at])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let batch = batch.clone();
        self.call(&self.clicks_writer, move |conn| {
            let tx = conn.transaction()?;
            {
                let mut totals = tx.prepare_cached(
                    "INSERT INTO click_totals (code, clicks, bot_clicks) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (code) DO UPDATE SET clicks = clicks + excluded.clicks, \
                     bot_clicks = bot_clicks + excluded.bot_clicks",
                )?;
                let mut buckets = tx.prepare_cached(
                    "INSERT INTO click_buckets (code, granularity, start, clicks, bot_clicks) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (code, granularity, start) DO UPDATE SET \
                     clicks = clicks + excluded.clicks, bot_clicks = bot_clicks + excluded.bot_clicks",
                )?;
                let mut tops = tx.prepare_cached(
                    "INSERT INTO click_tops (code, day, dimension, value, clicks) \
                     VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (code, day, dimension, value) DO UPDATE SET \
                     clicks = clicks + excluded.clicks",
                )?;
                for (code, link) in &batch.links {
                    let code = code.as_str();
                    let c = link.totals;
                    totals.execute(params![code, c.clicks, c.bot_clicks])?;
                    for b in &link.buckets {
                        buckets.execute(params![
                            code,
                            granularity_name(b.granularity),
                            b.start,
                            b.counts.clicks,
                            b.counts.bot_clicks
                        ])?;
                    }
                    for (key, clicks) in &link.tops {
                        tops.execute(params![
                            code,
                            key.day,
                            key.dimension.as_str(),
                            key.value.as_str(),
                            clicks
                        ])?;
                    }
                }
            }
            tx.commit()
        })
        .await
    }

    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError> {
        let code = code.clone();
        let query = query.clone();
        self.read(move |conn| {
            let totals = conn
                .prepare_cached(
                    "SELECT clicks, bot_clicks FROM clicks.click_totals WHERE code = ?1",
                )?
                .query_row([code.as_str()], |row| {
                    Ok(Counts {
                        clicks: row.get(0)?,
                        bot_clicks: row.get(1)?,
                    })
                })
                .optional()?
                .unwrap_or_default();
            let (first, end) = query.bucket_range();
            let buckets = conn
                .prepare_cached(
                    "SELECT start, clicks, bot_clicks FROM clicks.click_buckets \
                     WHERE code = ?1 AND granularity = ?2 AND start >= ?3 AND start < ?4",
                )?
                .query_map(
                    params![
                        code.as_str(),
                        granularity_name(query.granularity),
                        first,
                        end
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            Counts {
                                clicks: row.get(1)?,
                                bot_clicks: row.get(2)?,
                            },
                        ))
                    },
                )?
                .collect::<Result<Vec<_>, _>>()?;
            let (first_day, end_day) = query.day_range();
            let tops = conn
                .prepare_cached(
                    "SELECT dimension, value, SUM(clicks) FROM clicks.click_tops \
                     WHERE code = ?1 AND day >= ?2 AND day < ?3 GROUP BY dimension, value",
                )?
                .query_map(params![code.as_str(), first_day, end_day], |row| {
                    let dimension: String = row.get(0)?;
                    Ok((dimension, row.get::<_, String>(1)?, row.get::<_, u64>(2)?))
                })?
                .filter_map(|row| match row {
                    Ok((dimension, value, clicks)) => {
                        Dimension::parse(&dimension).map(|d| Ok((d, value, clicks)))
                    }
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ClickStats::assemble(&query, totals, buckets, tops))
        })
        .await
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
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(dir: &Path) -> Arc<SqliteStore> {
        SqliteStore::open(SqliteOptions {
            dir: dir.to_owned(),
            readers: 1,
            max_in_flight: 8,
            busy_timeout: Duration::from_secs(5),
            retention: chrono::Duration::days(30),
            background: Priority::Normal,
        })
        .await
        .expect("open")
    }

    #[tokio::test]
    async fn a_panic_in_a_call_fails_that_call_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path()).await;
        // A panic inside a transaction that already wrote.
        let error = store
            .write(|conn| {
                let tx = conn.transaction()?;
                tx.execute(
                    "INSERT INTO settings (name, value) VALUES ('half', 'done')",
                    [],
                )?;
                panic!("a bug halfway through a write");
                #[expect(unreachable_code, reason = "the closure's type")]
                Ok(())
            })
            .await
            .expect_err("the call fails");
        assert!(
            matches!(&error, StoreError::Other(e) if e.to_string().contains("a bug halfway")),
            "{error}"
        );
        // The writer goes on, and the half-done write was rolled back.
        assert_eq!(
            store
                .get_or_init_setting("half", "fresh")
                .await
                .expect("the writer still serves"),
            "fresh"
        );
        store.ping().await.expect("still ready");
        // One not inside a `Transaction`.
        let error = store
            .write(|conn| {
                conn.execute_batch("BEGIN")?;
                panic!("a bug in a hand-made transaction");
                #[expect(unreachable_code, reason = "the closure's type")]
                Ok(())
            })
            .await
            .expect_err("the call fails");
        assert!(matches!(error, StoreError::Other(_)), "{error}");
        store
            .get_or_init_setting("after", "x")
            .await
            .expect("no transaction left open");
    }

    #[tokio::test]
    async fn a_connection_whose_thread_is_gone_breaks_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store(dir.path()).await;
        store.ping().await.expect("ready");
        store.stop_writer_thread().await;
        // The thread answers the close before it ends: give it a moment.
        let mut pinged = store.ping().await;
        for _ in 0..100 {
            if matches!(pinged, Err(StoreError::Broken(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            pinged = store.ping().await;
        }
        assert!(matches!(pinged, Err(StoreError::Broken(_))), "{pinged:?}");
        assert!(matches!(
            store.get_or_init_setting("x", "y").await,
            Err(StoreError::Broken(_))
        ));
    }
}
