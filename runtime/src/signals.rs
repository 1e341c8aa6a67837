//! The signals that stop either binary gracefully.

use tokio_util::sync::CancellationToken;

/// Returns on SIGTERM, SIGINT or when `stop` is cancelled.
pub async fn shutdown_requested(stop: &CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; stop with the stop token only");
        return stop.cancelled().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
        () = stop.cancelled() => {}
    }
}
