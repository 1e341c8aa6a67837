//! What a request's outcome means: whether a lightweight transaction
//! applied (and the row it found when it did not), whether a failure may
//! still have been applied, is worth another compare-and-set, or makes the
//! store unavailable; and the pause between racing writers' attempts.

use std::time::Duration;

use scylla::{
    errors::{ExecutionError, RequestAttemptError},
    response::query_result::QueryResult,
    value::{CqlValue, Row},
};

use links::storage::StoreError;

/// Whether a lightweight transaction applied: the `[applied]` column.
pub(super) fn lwt_applied(result: QueryResult) -> Result<bool, StoreError> {
    lwt_row(result).map(|(applied, _)| applied)
}

/// The `[applied]` column and, when it did not apply, the current row.
/// The columns of a row, by name.
pub(super) type Columns = Vec<(String, Option<CqlValue>)>;

pub(super) fn lwt_row(result: QueryResult) -> Result<(bool, Columns), StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    let names: Vec<String> = rows
        .column_specs()
        .iter()
        .map(|spec| spec.name().to_owned())
        .collect();
    let row = rows
        .maybe_first_row::<Row>()
        .map_err(corrupt)?
        .ok_or_else(|| StoreError::Corrupt("a conditional write returned no row".into()))?;
    let columns: Columns = names.into_iter().zip(row.columns).collect();
    match columns.first() {
        Some((name, Some(CqlValue::Boolean(applied)))) if name == "[applied]" => {
            Ok((*applied, columns))
        }
        _ => Err(StoreError::Corrupt(
            "a conditional write returned no [applied] column".into(),
        )),
    }
}

pub(super) fn column<'a>(
    columns: &'a [(String, Option<CqlValue>)],
    name: &str,
) -> Option<&'a CqlValue> {
    columns
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_ref())
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    /// It was never sent (no slot in time).
    #[error(transparent)]
    NotSent(StoreError),
    #[error(transparent)]
    Cql(Box<ExecutionError>),
}

/// Whether a failed request may still have been applied: it reached a node
/// and its answer was lost or late.
pub(super) fn maybe_applied(e: &Failure) -> bool {
    use scylla::errors::DbError;
    let Failure::Cql(e) = e else { return false };
    match &**e {
        ExecutionError::RequestTimeout(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_) => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::WriteTimeout { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::ServerError
                    | DbError::Other(_)
            ),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a failed request certainly was not applied: it was never sent,
/// or refused before it ran. Everything else (an answer lost, late or
/// unreadable) may have been applied: what counter increments, which a
/// retry would count twice, must assume.
pub(super) fn certainly_not_applied(e: &Failure) -> bool {
    use scylla::errors::DbError;
    let e = match e {
        Failure::NotSent(_) => return true,
        Failure::Cql(e) => e,
    };
    match &**e {
        ExecutionError::BadQuery(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::PrepareError(_)
        | ExecutionError::ConnectionPoolError(_) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::SerializationError(_)
            | RequestAttemptError::CqlRequestSerialization(_)
            | RequestAttemptError::UnableToAllocStreamId
            | RequestAttemptError::RepreparedIdChanged { .. } => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::SyntaxError
                    | DbError::Invalid
                    | DbError::AlreadyExists { .. }
                    | DbError::AuthenticationError
                    | DbError::Unauthorized
                    | DbError::ConfigError
                    | DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::Unprepared { .. }
            ),
            _ => false,
        },
        _ => false,
    }
}

pub(super) fn from_execution(e: Failure) -> StoreError {
    use scylla::errors::DbError;
    let e = match e {
        Failure::NotSent(e) => return e,
        Failure::Cql(e) => *e,
    };
    let unavailable = match &e {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::RateLimitReached { .. }
            ),
            _ => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Other(Box::new(e))
    }
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// A conditional write that lost a Paxos round to another (Cassandra says
/// so as a write timeout of type CAS; ScyllaDB too): worth another try.
pub(super) fn is_contention(e: &Failure) -> bool {
    use scylla::errors::{DbError, WriteType};
    let Failure::Cql(e) = e else { return false };
    matches!(
        &**e,
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(
            DbError::WriteTimeout {
                write_type: WriteType::Cas,
                ..
            } | DbError::Unavailable { .. },
            _
        ))
    )
}

/// A short random pause before another compare-and-set, growing with the
/// attempts, so racing writers spread out.
pub(super) async fn backoff(attempt: u32) {
    let cap_ms = 5u64 << attempt.min(6);
    let ms = rand::random_range(1..=cap_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use scylla::errors::DbError;

    use super::*;

    fn db(error: DbError) -> Failure {
        Failure::Cql(Box::new(ExecutionError::LastAttemptError(
            RequestAttemptError::DbError(error, String::new()),
        )))
    }

    #[test]
    fn only_refusals_before_running_are_certainly_not_applied() {
        let not_sent = Failure::NotSent(StoreError::Unavailable("no slot".into()));
        assert!(certainly_not_applied(&not_sent));
        assert!(certainly_not_applied(&db(DbError::Overloaded)));
        assert!(certainly_not_applied(&db(DbError::Invalid)));
        assert!(certainly_not_applied(&db(DbError::IsBootstrapping)));
        // An answer lost, late, or an error the node hit while writing.
        let timeout = Failure::Cql(Box::new(ExecutionError::RequestTimeout(
            Duration::from_secs(1),
        )));
        assert!(!certainly_not_applied(&timeout));
        assert!(maybe_applied(&timeout));
        assert!(!certainly_not_applied(&db(DbError::ServerError)));
        assert!(!certainly_not_applied(&db(DbError::Other(0x1234))));
    }
}
