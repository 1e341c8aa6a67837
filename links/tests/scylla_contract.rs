//! The storage contract, against a real Scylla-compatible cluster (the dev
//! stack's Cassandra), each test in a keyspace of its own.

use links::storage::contract::{Fixture, scylla_fixture};

async fn fresh_store() -> Fixture {
    scylla_fixture().await
}

links::link_store_contract!(fresh_store);
