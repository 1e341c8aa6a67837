//! `shortener-worker`: the analytics consumer of the production tier.
//!
//! It joins a Kafka consumer group on the clicks topic (the events
//! `shortener-api` produces with `events.backend = "kafka"`, schema in
//! `links/proto/shortener/clicks/v1/click.proto`), folds them with the
//! aggregation of `links::clicks` (the code the API's in-process pipeline
//! runs), and writes exact counts to ScyllaDB, where the stats API reads
//! them.
//!
//! - [`config`]: the settings, read like the API's.
//! - [`app`]: [`Worker`], its loop (consume, count, write, commit) and
//!   its graceful shutdown.
//! - [`ledger`]: why the counts are exact under redelivery, crashes and
//!   rebalances, and the writes that make them so.
//! - [`kafka`]: the group consumer and the dead-letter producer.
//! - [`metrics`]: the worker's Prometheus metrics and their `/metrics`.
//! - [`retry`]: calls that must eventually succeed, retried until the
//!   worker stops.

pub mod app;
pub mod config;
pub mod kafka;
pub mod ledger;
pub mod metrics;
pub mod retry;

pub use app::{Totals, Worker, WorkerError};
