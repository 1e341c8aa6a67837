//! What both binaries run on, apart from the domain they serve.
//!
//! - [`settings`]: the configuration layers (defaults, files, environment)
//!   and the environment variable of each key.
//! - [`telemetry`]: logs, traces (OTLP) and process metrics, set up the same
//!   way by both binaries, and the Prometheus text they serve.
//! - [`signals`], [`tasks`]: the shutdown signals, and the background
//!   tasks of a service as one tree that shutdown waits for.
//! - [`panics`]: every panic logged and counted.
//! - [`background`]: lower CPU priority for the threads of click processing.
//! - [`http`] (feature `http`): the HTTP server with a deadline on every
//!   phase a client controls, and the `/metrics` listener built on it.
//!
//! The domain (`links`) needs none of this, so what only seeds or reads
//! links (the load-test tools, the fuzz targets) builds without it.

pub mod background;
#[cfg(feature = "http")]
pub mod http;
pub mod panics;
pub mod settings;
pub mod signals;
pub mod tasks;
pub mod telemetry;
