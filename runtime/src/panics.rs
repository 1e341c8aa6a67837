//! Panics: each is a bug, and none may pass unseen. The hook [`install_hook`]
//! (which [`crate::telemetry::init`] installs) writes every panic, in any
//! thread, to the log as one error event and counts it ([`count`], exported
//! as `shortener_panics_total`); those that can be caught (a request, a
//! store call) are turned into that one call's failure where they happen.

use std::{
    any::Any,
    sync::atomic::{AtomicU64, Ordering},
};

/// Panics in any thread of this process, counted by the hook.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// How many panics this process has seen (once the hook is installed).
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// The message a panic was raised with.
pub fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a panic without a message)")
}

/// Sends panics to the log, as one error event (JSON when logs are), and
/// counts them, instead of writing them to standard error. The backtrace
/// is captured as `RUST_BACKTRACE` says (off by default: a burst of panics
/// must not cost a symbolised backtrace each).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        PANICS.fetch_add(1, Ordering::Relaxed);
        let panic = message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("(unnamed)");
        let backtrace = std::backtrace::Backtrace::capture().to_string();
        tracing::error!(
            target: "panic",
            panic,
            location,
            thread,
            backtrace,
            "a thread panicked"
        );
    }));
}
