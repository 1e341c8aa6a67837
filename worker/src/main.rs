//! `shortener-worker`: the analytics consumer of the production tier.
//!
//! It will join a Kafka consumer group on the clicks topic (the events the
//! API produces with `events.backend = "kafka"`, schema in
//! `links/proto/shortener/clicks/v1/click.proto`) and fold them into exact
//! counts in ScyllaDB with the aggregation in `links::clicks`, the same code
//! the API's in-process pipeline runs. It is not written yet, and says so
//! rather than pretend to run: until it is, events wait on the topic for
//! its retention.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "shortener-worker: consuming click events is not implemented in this version; events \
         produced to Kafka wait on the topic. With events.backend = \"inprocess\", \
         shortener-api aggregates clicks itself."
    );
    ExitCode::from(2)
}
