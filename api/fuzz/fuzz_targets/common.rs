//! What the targets share: the rules as a deployment would set them, and a
//! fixed "now", so that every input behaves the same on every run.

#![allow(dead_code, reason = "each target uses part")]

use chrono::{DateTime, Utc};
use links::{HostIdentity, UrlPolicy};

/// The instant every target takes as now.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_795_000_000, 123_000_000).expect("a valid time")
}

/// A public host, a blocked host, and the loopback addresses of a service
/// listening on loopback.
pub fn policy() -> UrlPolicy {
    UrlPolicy::new(
        2048,
        [
            HostIdentity::parse("sho.rt").expect("a host"),
            HostIdentity::parse("blocked.example").expect("a host"),
            HostIdentity::Loopback,
        ],
    )
}

/// The longest retention the configuration accepts.
pub fn longest_retention() -> chrono::Duration {
    links::link::MAX_LIFETIME
}
