//! One cluster, three regions (`infra/multi-region`): generated codes stay
//! in their region, aliases are unique worldwide, and a link one region
//! lacks is found in the others. Each test works in a keyspace of its own,
//! replicated once in every region's datacenter.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use links::{
    Alias, Code, Link, LinkStore,
    codegen::{CodeAllocator, CodeGenerator, CodeKey, InsertError},
    region::{LinkFinder, RegionSlot, Regions},
    storage::contract::sample_link,
};
use scylla::{
    client::{execution_profile::ExecutionProfile, session_builder::SessionBuilder},
    policies::load_balancing::DefaultPolicy,
};
use stores::{
    fixtures::{DropRegionKeyspace, region_test_node, region_test_options, scaled},
    scylla::{Consistency, ScyllaOptions, ScyllaStore, migrate},
};

const REGION_NAMES: [&str; 3] = ["eu", "us", "ap"];

/// A region's instance: its store and code allocator.
struct Instance {
    regions: Regions,
    store: Arc<ScyllaStore>,
    codes: Arc<CodeAllocator>,
}

/// A fresh keyspace on the three-region cluster, and one instance per
/// region sharing one code key.
async fn three_regions() -> (Vec<Instance>, DropRegionKeyspace, CodeKey) {
    let keyspace = format!("test_{:016x}", rand::random::<u64>());
    let first = region_test_options(&keyspace, "eu");
    migrate(&first).await.unwrap_or_else(|e| {
        panic!(
            "no three-region cluster at {:?} ({e}); start it with `infra/multi-region up`",
            first.nodes
        )
    });
    let guard = DropRegionKeyspace(keyspace.clone());
    let key = CodeKey::generate();
    let mut instances = Vec::new();
    for name in REGION_NAMES {
        instances.push(instance(&key, region_test_options(&keyspace, name)).await);
    }
    (instances, guard, key)
}

/// An instance of the region its options name.
async fn instance(key: &CodeKey, options: ScyllaOptions) -> Instance {
    let regions = options.regions.clone().expect("regions");
    let store = ScyllaStore::connect(options).await.expect("connect");
    let generator = CodeGenerator::for_store(store.as_ref(), Some(key), 7)
        .await
        .expect("generator");
    let codes = Arc::new(CodeAllocator::new(generator, store.clone(), 100));
    Instance {
        regions,
        store,
        codes,
    }
}

/// A new link under `code`, as the API makes one.
fn link_of(code: Code) -> Link {
    let sample = sample_link("regions");
    Link { code, ..sample }
}

/// Partition keys of `keyspace.table` for which this node promised a
/// ballot: it took part in a consensus round (`system.paxos` is each node's
/// own; a node that only received a round's commit holds no promise).
async fn paxos_partitions(region: &str, keyspace: &str, table: &str) -> HashSet<Vec<u8>> {
    // The node's own local table: whichever node coordinates answers from
    // its own, so requests go to this region's datacenter (its one node).
    let datacenter = region_test_options(keyspace, region).local_dc;
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(datacenter)
        .permit_dc_failover(false)
        .build();
    let profile = ExecutionProfile::builder()
        .load_balancing_policy(policy)
        .build();
    let session = SessionBuilder::new()
        .known_node(region_test_node(region))
        .default_execution_profile_handle(profile.into_handle())
        .build()
        .await
        .expect("connect to the node");
    let (id,): (uuid::Uuid,) = session
        .query_unpaged(
            "SELECT id FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
            (keyspace, table),
        )
        .await
        .expect("table id")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one table");
    let rows = session
        .query_unpaged(
            "SELECT row_key, cf_id, in_progress_ballot FROM system.paxos",
            (),
        )
        .await
        .expect("read system.paxos")
        .into_rows_result()
        .expect("rows");
    rows.rows::<(Vec<u8>, uuid::Uuid, Option<scylla::value::CqlTimeuuid>)>()
        .expect("typed")
        .map(|row| row.expect("row"))
        .filter(|(_, cf, promised)| *cf == id && promised.is_some())
        .map(|(key, _, _)| key)
        .collect()
}

/// 10,000 generated creates (1,000 in the quick run) in each region at
/// once: all distinct, each
/// decoding to its own region, and not one consensus round outside the
/// creating region's datacenter (no Paxos state on any node for the links,
/// and each node's only for its own region's id row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_codes_stay_in_their_region_and_never_collide() {
    let per_region = scaled(1_000, 10_000);
    let (instances, guard, _) = three_regions().await;
    let mut tasks = Vec::new();
    for instance in &instances {
        let codes = instance.codes.clone();
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::with_capacity(per_region);
            let mut took = Vec::with_capacity(per_region);
            for _ in 0..per_region {
                let started = Instant::now();
                let link = codes.insert(None, link_of).await.expect("create");
                took.push(started.elapsed());
                made.push(link.code);
            }
            (made, took)
        }));
    }
    let mut all = HashSet::new();
    for (instance, task) in instances.iter().zip(tasks) {
        let (made, mut took) = task.await.expect("task");
        let local = instance.regions.local();
        for code in made {
            let id = instance
                .codes
                .generator()
                .id(code.as_str())
                .expect("a generated code");
            assert_eq!(
                RegionSlot::of_id(id),
                local.slot,
                "{code} made in {}",
                local.name
            );
            assert!(all.insert(code.clone()), "{code} made twice");
        }
        took.sort();
        println!(
            "{}: generated create p50 {:?}, p99 {:?}",
            local.name,
            took[took.len() / 2],
            took[took.len() * 99 / 100]
        );
    }
    assert_eq!(all.len(), 3 * per_region);

    for instance in &instances {
        let region = instance.regions.local();
        let links = paxos_partitions(&region.name, &guard.0, "links").await;
        assert!(
            links.is_empty(),
            "{}: {} links had a consensus round",
            region.name,
            links.len()
        );
        let rows = paxos_partitions(&region.name, &guard.0, "id_blocks").await;
        let own = format!("links/{}", region.slot).into_bytes();
        let allowed: HashSet<Vec<u8>> = [own, b"links".to_vec()].into();
        assert!(
            rows.is_subset(&allowed),
            "{}: consensus on id rows {:?}",
            region.name,
            rows.iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        );
        assert!(
            !rows.is_empty(),
            "{}: its own id row had no consensus round",
            region.name
        );
    }
}

/// Ten creates of one alias in each region at once: one wins worldwide,
/// and every region then finds the winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_is_created_once_worldwide() {
    let (instances, guard, _) = three_regions().await;
    let alias = Alias::parse("worldwide-once").expect("valid alias");
    let mut tasks = Vec::new();
    for instance in &instances {
        for _ in 0..10 {
            let codes = instance.codes.clone();
            let alias = alias.clone();
            tasks.push(tokio::spawn(async move {
                codes.insert(Some(alias), link_of).await
            }));
        }
    }
    let mut created = Vec::new();
    let mut taken = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(link) => created.push(link),
            Err(InsertError::AliasTaken(_)) => taken += 1,
            Err(e) => panic!("an alias create failed: {e}"),
        }
    }
    assert_eq!(created.len(), 1, "winners: {created:?}");
    assert_eq!(taken, 29);
    for instance in &instances {
        let finder = LinkFinder::regional(
            instance.store.clone(),
            instance.codes.generator().clone(),
            instance.regions.clone(),
        );
        let found = finder.find(&created[0].code).await.expect("find");
        assert_eq!(
            found.as_ref(),
            Some(&created[0]),
            "in {}",
            instance.regions.local().name
        );
    }
    // A consensus of all datacenters: a majority of the nodes took part.
    let mut nodes = 0;
    for name in REGION_NAMES {
        nodes += usize::from(!paxos_partitions(name, &guard.0, "links").await.is_empty());
    }
    assert!(nodes >= 2, "only {nodes} node(s) ran the alias's consensus");
}

/// What a create costs by what acknowledges it, in the same run:
/// sequential creates in one region, a generated code acknowledged by its
/// own datacenter (LOCAL_QUORUM, the default), one acknowledged by every
/// datacenter (EACH_QUORUM), and an alias (a consensus of all
/// datacenters). The round trips between regions are what the cluster has
/// (`infra/multi-region` adds 75–95 ms unless started without latency;
/// without, an EACH_QUORUM create costs about what a local one does, so
/// only its success is asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_create_costs_by_what_acknowledges_it() {
    const N: usize = 40;
    let (instances, guard, key) = three_regions().await;
    let eu = &instances[0];
    let mut options = region_test_options(&guard.0, "eu");
    options.create_consistency = Some(Consistency::EachQuorum);
    let everywhere = instance(&key, options).await;
    let mut local = Vec::new();
    let mut each = Vec::new();
    let mut aliases = Vec::new();
    for i in 0..N {
        let started = Instant::now();
        eu.codes.insert(None, link_of).await.expect("generated");
        local.push(started.elapsed());
        let started = Instant::now();
        everywhere
            .codes
            .insert(None, link_of)
            .await
            .expect("each_quorum");
        each.push(started.elapsed());
        let alias = Alias::parse(&format!("cost-{i}")).expect("valid");
        let started = Instant::now();
        eu.codes.insert(Some(alias), link_of).await.expect("alias");
        aliases.push(started.elapsed());
    }
    let [local, each, aliases] = [local, each, aliases].map(|mut took| {
        took.sort();
        (took[N / 2], took[N - 1])
    });
    let ratio = |(p50, _): (Duration, Duration)| p50.as_secs_f64() / local.0.as_secs_f64();
    println!(
        "create p50 / max of {N}: generated at LOCAL_QUORUM {:?} / {:?}; \
         at EACH_QUORUM {:?} / {:?} ({:.1}x); alias {:?} / {:?} ({:.1}x)",
        local.0,
        local.1,
        each.0,
        each.1,
        ratio(each),
        aliases.0,
        aliases.1,
        ratio(aliases),
    );
    assert!(
        aliases.0 > local.0,
        "an alias ({:?}) cannot be cheaper than a generated code ({:?})",
        aliases.0,
        local.0
    );
}

/// A link created in one region is found in every other at once, by the
/// finder; a code no region has is unknown only once every region said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_elsewhere_is_found_in_its_home_region() {
    let (instances, _guard, _) = three_regions().await;
    let finders: Vec<LinkFinder> = instances
        .iter()
        .map(|i| {
            LinkFinder::regional(
                i.store.clone(),
                i.codes.generator().clone(),
                i.regions.clone(),
            )
        })
        .collect();
    let mut homes = HashMap::new();
    for (maker, instance) in instances.iter().enumerate() {
        for _ in 0..20 {
            let link = instance.codes.insert(None, link_of).await.expect("create");
            for (reader, finder) in finders.iter().enumerate() {
                let found = finder.find(&link.code).await.expect("find");
                assert_eq!(
                    found.as_ref(),
                    Some(&link),
                    "made in {maker}, read in {reader}"
                );
                assert_eq!(
                    finder.home_of(&link.code).map(|r| r.name.as_str()),
                    Some(instance.regions.local().name.as_str())
                );
            }
            // Asked directly of the home region from elsewhere.
            let other = &instances[(maker + 1) % instances.len()];
            let elsewhere = other
                .store
                .get_link_elsewhere(&link.code, Some(instance.regions.local().slot))
                .await
                .expect("read elsewhere");
            assert_eq!(elsewhere.as_ref(), Some(&link));
            *homes
                .entry(instance.regions.local().name.clone())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(homes.len(), 3);
    let unknown = Code::parse("nosuch1").expect("valid");
    for finder in &finders {
        assert_eq!(finder.find(&unknown).await.expect("find"), None);
    }
}

/// Every region's worker counts the clicks of its own Kafka, whose
/// partitions have the same numbers as every other region's: the ledger
/// keys them apart, each region owns its own, and every region's stats
/// add up all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_region_counts_its_own_clicks_and_every_region_sees_the_sum() {
    use links::{
        clicks::{Counts, Granularity},
        stats::StatsQuery,
    };
    use stores::scylla::{ClickCounts, Progress, Tally, TallyKey};

    let keyspace = format!("test_{:016x}", rand::random::<u64>());
    migrate(&region_test_options(&keyspace, "eu"))
        .await
        .expect("three-region cluster (infra/multi-region up)");
    let _guard = DropRegionKeyspace(keyspace.clone());
    let mut stores = Vec::new();
    for name in REGION_NAMES {
        let mut options = region_test_options(&keyspace, name);
        options.click_counts = ClickCounts::Ledger;
        stores.push(ScyllaStore::connect(options).await.expect("connect"));
    }
    let code = Code::parse("counted1").expect("valid");
    let (topic, partition) = ("shortener.clicks", 3);
    let mut owners = Vec::new();
    for (i, store) in stores.iter().enumerate() {
        // The same partition number in every region: claims do not fence
        // each other.
        let owner = uuid::Uuid::new_v4();
        store
            .claim_tallies(topic, partition, owner)
            .await
            .expect("claim");
        owners.push(owner);
        let n = 10 * (i as u64 + 1);
        store
            .write_tally(
                partition,
                &TallyKey::Totals(code.clone()),
                Tally {
                    counts: Counts {
                        clicks: n,
                        bot_clicks: i as u64,
                    },
                    through: 100,
                },
            )
            .await
            .expect("write");
    }
    for (store, owner) in stores.iter().zip(&owners) {
        let progress = Progress {
            committed: 100,
            pending: 100,
        };
        assert!(
            store
                .advance_tallies(topic, partition, *owner, progress)
                .await
                .expect("advance"),
            "a region's claim fenced another's"
        );
        let read = store
            .read_tally(partition, &TallyKey::Totals(code.clone()))
            .await
            .expect("read");
        assert_eq!(read.map(|t| t.through), Some(100));
    }
    let now = chrono::Utc::now();
    let query = StatsQuery {
        from: now - chrono::Duration::hours(1),
        to: now,
        granularity: Granularity::Hour,
        top: 5,
    };
    // Rows written elsewhere arrive by replication: within moments.
    let expected = Counts {
        clicks: 60,
        bot_clicks: 3,
    };
    for (name, store) in REGION_NAMES.iter().zip(&stores) {
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stats = store.click_stats(&code, &query).await.expect("stats");
            if stats.totals == expected {
                // And by region: each wrote its own share.
                let by_region: Vec<(&str, u64, u64)> = stats
                    .by_region
                    .iter()
                    .map(|r| (r.region.as_str(), r.counts.clicks, r.counts.bot_clicks))
                    .collect();
                assert_eq!(
                    by_region,
                    [("eu", 10, 0), ("us", 20, 1), ("ap", 30, 2)],
                    "clicks by region read in {name}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "totals read in {name}: {:?}",
                stats.totals
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
