//! `shortener-api`: the HTTP service.
//!
//! - [`config`]: settings from defaults, `config/*.toml` and the environment.
//! - [`startup`]: [`Application`] — builds everything from the settings,
//!   serves, and shuts down without losing clicks.
//! - [`server`]: listeners and connections, and the deadline of every phase
//!   of a request (slow and hostile clients), panics turned into `500`s.
//! - [`routes`]: the handlers, one module per path; [`routes::redirect`] is
//!   the hot path.
//! - [`cache`]: L1, the in-process link cache.
//! - [`changes`]: link changes told to and heard from other regions.
//! - [`clicks`]: the bounded click queue and the pipeline that drains it.
//! - [`error`]: the API's error type and its `problem+json` responses.
//! - [`observe`]: the outermost middleware: each request's RED metrics,
//!   span and access-log line.
//! - [`metered_store`]: the link store as the API uses it, each call timed,
//!   counted and traced.
//! - [`state`], [`metrics`], [`openapi`]: shared state,
//!   Prometheus metrics, the OpenAPI document.

pub mod cache;
pub mod changes;
pub mod clicks;
pub mod config;
pub mod error;
pub mod metered_store;
pub mod metrics;
pub mod observe;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod startup;
pub mod state;

pub use startup::Application;
