//! Opening a connection, and the schema of both files: numbered
//! migrations, applied in order at open; each records its version in
//! `user_version`.

use std::{path::Path, time::Duration};

use rusqlite_migration::{M, Migrations};
use tokio_rusqlite::Connection;

use super::rows::{from_call, from_sqlite};
use links::storage::StoreError;

/// The schema of `links.db`, one migration per file; never edit one that
/// has shipped.
pub(super) fn link_migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/sqlite/links/0001_links.sql")),
        M::up(include_str!(
            "../../migrations/sqlite/links/0002_reserved_ids.sql"
        )),
        M::up(include_str!(
            "../../migrations/sqlite/links/0003_revision.sql"
        )),
    ])
}

/// The schema of `clicks.db`.
pub(super) fn click_migrations() -> Migrations<'static> {
    Migrations::new(vec![M::up(include_str!(
        "../../migrations/sqlite/clicks/0001_clicks.sql"
    ))])
}

pub(super) async fn migrate(
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

pub(super) async fn open_connection(
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
