//! The storage contract, against the embedded SQLite adapter.

use links::storage::contract::Fixture;
use stores::fixtures::sqlite_fixture;

async fn fresh_store() -> Fixture {
    sqlite_fixture().await
}

links::link_store_contract!(fresh_store);
