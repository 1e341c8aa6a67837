//! The worker against the dev stack's real Kafka and Cassandra: exact
//! counts from a clean run, through crashes, a failover within the group,
//! a Kafka restart and malformed events. (Clicks through the API to the
//! stats API, and the observability of both, are in `e2e/`.)

mod counts;
mod faults;
