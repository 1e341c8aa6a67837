//! The storage contract, against a real Scylla-compatible cluster (the dev
//! stack's Cassandra), each test in a keyspace of its own.

use links::storage::{LinkStore, contract::Fixture};
use stores::fixtures::scylla_fixture;

async fn fresh_store() -> Fixture {
    scylla_fixture().await
}

links::link_store_contract!(fresh_store);

/// Beyond the contract: ScyllaDB forgets a link by TTL, row and all, so an
/// alias whose link was deleted can be taken again after the retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_link_is_forgotten_whole_after_its_retention() {
    use links::storage::{Uniqueness, contract::sample_link};
    use stores::{
        fixtures::{DropKeyspace, scylla_test_options},
        scylla::{ScyllaStore, migrate},
    };
    let mut options = scylla_test_options();
    options.retention = chrono::Duration::seconds(2);
    migrate(&options).await.expect("migrate");
    let _drop = DropKeyspace(options.keyspace.clone());
    let store = ScyllaStore::connect(options).await.expect("connect");

    // No expiry: the row is written without a TTL.
    let link = sample_link("ttl");
    store
        .insert_link(&link, Uniqueness::Checked)
        .await
        .expect("insert");
    assert!(
        store
            .delete_link(&link.code, chrono::Utc::now())
            .await
            .expect("delete")
    );
    let deleted = store.get_link(&link.code).await.expect("get");
    assert!(deleted.is_some_and(|l| l.deleted_at.is_some()));

    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(store.get_link(&link.code).await.expect("get"), None);
    let mut again = sample_link("ttl");
    again.code = link.code.clone();
    store
        .insert_link(&again, Uniqueness::Checked)
        .await
        .expect("the forgotten code can be taken again");
    assert_eq!(store.get_link(&link.code).await.expect("get"), Some(again));
}
