//! Calls to ScyllaDB and Kafka that must eventually succeed: retried with
//! capped exponential backoff until they do, or until the worker stops.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_util::sync::CancellationToken;

/// The first wait after a failed call; it doubles up to `worker.max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// The give-up signal fired while a call was being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("gave up retrying: the worker is stopping")]
pub struct Abandoned;

/// Retries `call` with capped exponential backoff until it succeeds or
/// `abandon` fires.
pub async fn with_retries<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    failures: &Counter,
    max_backoff: Duration,
    abandon: &CancellationToken,
    mut call: impl FnMut() -> F,
) -> Result<T, Abandoned> {
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        let error = tokio::select! {
            biased;
            () = abandon.cancelled() => return Err(Abandoned),
            result = call() => match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            },
        };
        failures.inc();
        tracing::warn!(what, attempt, %error, retry_in = ?wait, "call failed; retrying");
        tokio::select! {
            () = abandon.cancelled() => return Err(Abandoned),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(max_backoff);
        attempt += 1;
    }
}
