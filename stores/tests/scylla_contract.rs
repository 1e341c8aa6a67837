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
            .is_some()
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

/// Beyond the contract: counters cannot be written twice, so a batch that
/// failed part way hands back only the rows certainly not applied, and
/// writing those again makes the counts exact, not doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_failed_click_batch_hands_back_only_its_unwritten_rows() {
    use chrono::{Duration, TimeZone, Utc};
    use links::{
        clicks::{Aggregator, ClickEvent, ClickRow, Dimension, Granularity, UserAgentClassifier},
        code::Code,
        stats::StatsQuery,
    };
    use stores::{
        fixtures::{DropKeyspace, scylla_test_nodes, scylla_test_options},
        scylla::{ScyllaStore, migrate},
    };
    let options = scylla_test_options();
    migrate(&options).await.expect("migrate");
    let keyspace = options.keyspace.clone();
    let _drop = DropKeyspace(keyspace.clone());
    let store = ScyllaStore::connect(options).await.expect("connect");
    let admin = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(scylla_test_nodes())
        .build()
        .await
        .expect("connect");

    let day = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let code = Code::parse("partly").expect("code");
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    let mut agg = Aggregator::new(UserAgentClassifier::shared());
    for minute in 0..10 {
        agg.record(&ClickEvent::from_request(
            code.clone(),
            day + Duration::minutes(minute),
            Some(b"https://t.co/x"),
            Some(chrome.as_bytes()),
            Some(b"DE"),
        ));
    }
    let batch = agg.take();

    // The top lists' table is gone: those rows fail before being applied.
    admin
        .query_unpaged(format!("DROP TABLE {keyspace}.click_tops"), ())
        .await
        .expect("drop");
    let unwritten = store
        .record_clicks(&batch)
        .await
        .expect_err("the top lists cannot be written");
    assert_eq!(unwritten.uncertain_rows, 0);
    let handed_back: Vec<_> = unwritten.retry.row_increments().collect();
    let tops = batch
        .row_increments()
        .filter(|(_, row)| matches!(row, ClickRow::Top(..)))
        .count();
    assert!(tops > 0);
    // The tops, and the link's totals as zero (already written).
    assert_eq!(handed_back.len(), tops + 1, "{handed_back:?}");
    assert!(handed_back.iter().all(|(_, row)| match row {
        ClickRow::Top(..) => true,
        ClickRow::Totals(t) => *t == Default::default(),
        ClickRow::Bucket(_) => false,
    }));

    admin
        .query_unpaged(
            format!(
                "CREATE TABLE {keyspace}.click_tops (code text, day bigint, dimension text, \
                 value text, clicks counter, PRIMARY KEY ((code, day), dimension, value))"
            ),
            (),
        )
        .await
        .expect("create");
    store
        .record_clicks(&unwritten.retry)
        .await
        .expect("the rest is written");

    let stats = store
        .click_stats(
            &code,
            &StatsQuery {
                from: day,
                to: day + Duration::days(1),
                granularity: Granularity::Hour,
                top: 10,
            },
        )
        .await
        .expect("stats");
    assert_eq!(stats.totals.clicks, 10);
    assert_eq!(
        stats.series.iter().map(|p| p.counts.clicks).sum::<u64>(),
        10
    );
    let referrers: Vec<_> = stats.tops[&Dimension::Referrer]
        .iter()
        .map(|e| (e.value.as_str(), e.clicks))
        .collect();
    assert_eq!(referrers, [("t.co", 10)]);
}
