//! The worker against the dev stack's real Kafka and Cassandra: exact
//! counts from a clean run, through crashes, a failover within the group,
//! a Kafka restart and malformed events; and clicks through the API seen
//! by the stats API; and the metrics, dashboards, alert rules and traces
//! that make all of it observable.

mod counts;
mod end_to_end;
mod faults;
mod helpers;
mod observability;
