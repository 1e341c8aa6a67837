//! `shortener-worker`: the analytics consumer of the production tier.
//!
//! It will join a Kafka consumer group on the clicks topic and fold events
//! into counts in ScyllaDB with the aggregation in `links::clicks`, the same
//! code the API's in-process pipeline runs on the embedded default. Until
//! the Kafka and ScyllaDB adapters exist it has nothing to consume, and it
//! says so rather than pretend to run.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "shortener-worker: consuming click events needs the Kafka event backend, which this \
         version does not have yet. On the embedded default, shortener-api aggregates clicks \
         itself (events.backend = \"inprocess\")."
    );
    ExitCode::from(2)
}
