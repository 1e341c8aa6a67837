//! What the test suites share, so each says once where the dev stack is and
//! how a deployment under test is made:
//!
//! - [`stack`]: the dev stack's addresses (each overridable from the
//!   environment), `infra/dev-stack` itself for tests that stop and restart
//!   its servers, and [`one_at_a_time`] for tests that must not overlap;
//! - [`deployment`]: a fresh keyspace and clicks topic, worker processes,
//!   and events with the counts they must make, computed apart from the
//!   worker's code;
//! - [`free_port`], [`repo`] and [`binary`]: the small things every suite
//!   that starts processes needs.
//!
//! Nothing here depends on the API or the worker crates, so both can use
//! it from their own tests without a dependency cycle.

pub mod deployment;
pub mod stack;

use std::{net::TcpListener, path::PathBuf};

pub use stack::one_at_a_time;

/// The workspace's root directory.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// A loopback port free now, for a process that cannot report the one it
/// bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A binary of the workspace, from the same build as the running test
/// (`target/<profile>/<name>`, beside the test's own `deps/` directory).
/// Cargo builds a package's binaries before its integration tests; a suite
/// in another package names the binary's package in its build (`infra/test`
/// builds the whole workspace). Panics, saying how to build it, if missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p {name}`)",
        path.display()
    );
    path
}
