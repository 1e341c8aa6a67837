//! The production tier under failure: the real application against the dev
//! stack's Redis and Cassandra (and Kafka), whose processes these tests stop,
//! freeze and restart with `infra/dev-stack`. They run one at a time, since
//! each outage is shared by everything on the machine.

#[path = "../api/helpers.rs"]
#[expect(dead_code, reason = "shared with the API suite; each suite uses part")]
mod helpers;
mod outage;

mod instances;
mod kafka;
mod redis;
mod regions;
mod scylla;
