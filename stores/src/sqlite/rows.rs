//! Rows to links and back, and SQLite's errors as the store's.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Row};

use links::{
    clicks::Granularity,
    code::Code,
    link::{Link, RedirectStatus, TokenDigest},
    storage::{BoxError, StoreError},
    target::TargetUrl,
};

/// A connection's thread is gone: every call to it fails from now on.
pub(super) fn broken() -> StoreError {
    StoreError::Broken("a SQLite connection's thread has stopped".into())
}

pub(super) fn from_call(e: tokio_rusqlite::Error<rusqlite::Error>) -> StoreError {
    match e {
        tokio_rusqlite::Error::Error(e) => from_sqlite(e),
        tokio_rusqlite::Error::ConnectionClosed => broken(),
        other => StoreError::Unavailable(other.to_string().into()),
    }
}

pub(super) fn from_sqlite(e: rusqlite::Error) -> StoreError {
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

pub(super) const LINK_COLUMNS: &str = "code, url, created_at, expires_at, redirect, forward_query, \
                                       deleted_at, token_digest, revision";

pub(super) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn conversion(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

pub(super) fn link_from_row(row: &Row<'_>) -> rusqlite::Result<Link> {
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
        revision: row.get(8)?,
    })
}

pub(super) fn select_link(
    conn: &rusqlite::Connection,
    code: &str,
) -> rusqlite::Result<Option<Link>> {
    conn.prepare_cached(&format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?1"))?
        .query_row([code], link_from_row)
        .optional()
}

pub(super) fn granularity_name(g: Granularity) -> &'static str {
    g.as_str()
}
