//! Fixtures for tests of the adapters and of the services built on them:
//! a fresh store of each kind for the contract suite
//! ([`links::link_store_contract!`]), and the test cluster's address.

use chrono::Duration;
use links::storage::contract::Fixture;

/// A fresh SQLite store in a temporary directory.
pub async fn sqlite_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = crate::sqlite::SqliteStore::open(crate::sqlite::SqliteOptions {
        dir: dir.path().to_owned(),
        readers: 2,
        max_in_flight: 64,
        busy_timeout: std::time::Duration::from_secs(5),
        retention: Duration::days(30),
        background: runtime::background::Priority::Idle,
    })
    .await
    .expect("open SQLite store");
    Fixture {
        store,
        guard: Box::new(dir),
    }
}

/// Where the Scylla-compatible test cluster listens: `SHORTENER_TEST_SCYLLA_NODES`
/// (comma-separated), by default the dev stack's Cassandra.
pub fn scylla_test_nodes() -> Vec<String> {
    std::env::var("SHORTENER_TEST_SCYLLA_NODES")
        .unwrap_or_else(|_| "127.0.0.1:9042".into())
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Options for a fresh test keyspace on the test cluster (one datacenter,
/// one replica, the dev stack's `datacenter1`).
pub fn scylla_test_options() -> crate::scylla::ScyllaOptions {
    crate::scylla::ScyllaOptions {
        nodes: scylla_test_nodes(),
        local_dc: std::env::var("SHORTENER_TEST_SCYLLA_DC")
            .unwrap_or_else(|_| "datacenter1".into()),
        keyspace: format!("test_{:016x}", rand::random::<u64>()),
        replication: vec![(
            std::env::var("SHORTENER_TEST_SCYLLA_DC").unwrap_or_else(|_| "datacenter1".into()),
            1,
        )],
        consistency: scylla::frame::types::Consistency::LocalQuorum,
        create_consistency: None,
        regions: None,
        request_timeout: std::time::Duration::from_secs(10),
        connect_timeout: std::time::Duration::from_secs(5),
        speculative_after: None,
        username: None,
        password: None,
        max_in_flight: 256,
        retention: Duration::days(30),
        click_counts: crate::scylla::ClickCounts::Counters,
    }
}

/// A fresh keyspace on the test cluster, migrated. Panics, naming the
/// cluster, if there is none: start it with `infra/dev-stack up`.
pub async fn scylla_fixture() -> Fixture {
    let options = scylla_test_options();
    crate::scylla::migrate(&options).await.unwrap_or_else(|e| {
        panic!(
            "no Scylla-compatible cluster at {:?} ({e}); start one with `infra/dev-stack up`",
            options.nodes
        )
    });
    let keyspace = options.keyspace.clone();
    let store = crate::scylla::ScyllaStore::connect(options)
        .await
        .expect("connect to the migrated keyspace");
    Fixture {
        store,
        guard: Box::new(DropKeyspace(keyspace)),
    }
}

/// Drops a test keyspace when the test ends, so test runs do not pile up
/// tables in the dev cluster.
#[derive(Debug)]
pub struct DropKeyspace(pub String);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        drop_keyspace(scylla_test_nodes(), std::mem::take(&mut self.0));
    }
}

/// A count for a test that has a quick variant, run by default and in CI,
/// and a long one with the counts its acceptance names, run by
/// `infra/test --long` (which sets `SHORTENER_TEST_LONG=1`).
pub fn scaled(quick: usize, long: usize) -> usize {
    match std::env::var("SHORTENER_TEST_LONG").as_deref() {
        Ok("1") => long,
        Ok("0") | Ok("") | Err(_) => quick,
        Ok(other) => panic!("SHORTENER_TEST_LONG={other}: use 1 or 0"),
    }
}

/// The regions of `infra/multi-region`, as `region.all` names them.
pub const TEST_REGIONS: &str = "eu:0:dc_eu,us:1:dc_us,ap:2:dc_ap";

/// The CQL address of a region's node in `infra/multi-region`.
pub fn region_test_node(region: &str) -> String {
    let host = match region {
        "eu" => "127.0.1.1",
        "us" => "127.0.2.1",
        "ap" => "127.0.3.1",
        other => panic!("infra/multi-region has no region {other}"),
    };
    format!("{host}:9042")
}

/// Options for one region's instances of a test keyspace on
/// `infra/multi-region`'s cluster, replicated once in every region.
pub fn region_test_options(keyspace: &str, region: &str) -> crate::scylla::ScyllaOptions {
    let regions = links::region::Regions::parse(TEST_REGIONS, region).expect("valid regions");
    crate::scylla::ScyllaOptions {
        nodes: vec![region_test_node(region)],
        local_dc: regions.local().datacenter.clone(),
        keyspace: keyspace.to_owned(),
        replication: regions
            .all()
            .iter()
            .map(|r| (r.datacenter.clone(), 1))
            .collect(),
        regions: Some(regions),
        ..scylla_test_options()
    }
}

/// Drops a test keyspace of `infra/multi-region`'s cluster when the test
/// ends.
#[derive(Debug)]
pub struct DropRegionKeyspace(pub String);

impl Drop for DropRegionKeyspace {
    fn drop(&mut self) {
        drop_keyspace(vec![region_test_node("eu")], std::mem::take(&mut self.0));
    }
}

fn drop_keyspace(nodes: Vec<String>, keyspace: String) {
    // Drop runs inside the test's runtime, which cannot block on itself.
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let session = scylla::client::session_builder::SessionBuilder::new()
                .known_nodes(nodes)
                .build()
                .await
                .ok()?;
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
                .await
                .ok()
        })
    })
    .join();
    if !matches!(dropped, Ok(Some(_))) {
        eprintln!("could not drop a test keyspace; it stays in the dev cluster");
    }
}
