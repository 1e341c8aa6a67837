//! The signals that stop either binary gracefully.
//!
//! Only `main` listens for them: it makes the root token of the process's
//! shutdown with [`shutdown_token`] and hands it to the service, which
//! stops in its own order once the token is cancelled. Services built in a
//! test (or embedded in another program) never take the process's signals.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT: the root of a
/// binary's shutdown. Fails if the signals cannot be listened for.
pub fn shutdown_token() -> std::io::Result<CancellationToken> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let token = CancellationToken::new();
    let cancel = token.clone();
    // The watcher lives as long as the process, or until the token is
    // cancelled by other means.
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
            () = cancel.cancelled() => return,
        }
        cancel.cancel();
    });
    Ok(token)
}
