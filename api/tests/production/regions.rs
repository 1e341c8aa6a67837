//! One deployment in three regions (`infra/multi-region`'s cluster, a
//! datacenter per region), an instance in each, each with its own Redis
//! keys: what users of one region see of what users of another did.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stores::fixtures::{DropRegionKeyspace, TEST_REGIONS, region_test_options};

use crate::{
    helpers::{TestApp, Tier, spawn_app_in},
    outage::one_at_a_time,
};

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

struct Deployment {
    apps: Vec<TestApp>,
    /// Each region's configuration, for more instances.
    tiers: Vec<Arc<Tier>>,
    _keyspace: DropRegionKeyspace,
}

/// The topic each region's instance tells its changes on, in its region's
/// Kafka; `infra/multi-region`'s MirrorMaker 2 copies `test_<hex>.link-changes`
/// to every other region's Kafka as `<region>.<topic>`.
fn changes_topic(keyspace: &str) -> String {
    format!("{keyspace}.link-changes")
}

/// A region's Kafka in `infra/multi-region`: on its node's address.
fn region_kafka(region: &str) -> String {
    stores::fixtures::region_test_node(region).replace(":9042", ":9092")
}

/// One instance per region, started one after another (the first
/// migrates the keyspace and sets the code key everyone shares).
async fn three_regions() -> Deployment {
    let keyspace = format!("test_{:016x}", rand::random::<u64>());
    let guard = DropRegionKeyspace(keyspace.clone());
    let mut apps = Vec::new();
    let mut tiers = Vec::new();
    for name in REGIONS {
        let options = region_test_options(&keyspace, name);
        let replication: Vec<String> = options
            .replication
            .iter()
            .map(|(dc, n)| format!("{dc}:{n}"))
            .collect();
        let env = [
            ("REGION__NAME", name.to_owned()),
            ("REGION__ALL", TEST_REGIONS.to_owned()),
            ("STORAGE__BACKEND", "scylla".to_owned()),
            ("STORAGE__SCYLLA__NODES", options.nodes.join(",")),
            ("STORAGE__SCYLLA__KEYSPACE", keyspace.clone()),
            ("STORAGE__SCYLLA__REPLICATION", replication.join(",")),
            ("STORAGE__SCYLLA__MIGRATE_ON_START", "true".to_owned()),
            ("STORAGE__SCYLLA__REQUEST_TIMEOUT", "5s".to_owned()),
            ("CACHE__REDIS__URL", shortener_testkit::stack::redis_url()),
            ("CACHE__REDIS__KEY_PREFIX", format!("{keyspace}:{name}:")),
            ("CACHE__REDIS__TIMEOUT", "1s".to_owned()),
            ("EVENTS__BACKEND", "kafka".to_owned()),
            ("EVENTS__KAFKA__BROKERS", region_kafka(name)),
            ("EVENTS__KAFKA__TOPIC", format!("{keyspace}.clicks")),
            ("EVENTS__KAFKA__CHANGES_TOPIC", changes_topic(&keyspace)),
            ("EVENTS__KAFKA__PARTITIONS", "1".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (format!("SHORTENER__{key}"), value))
        .collect();
        let tier = Arc::new(Tier::with_env(env));
        let dir = tempfile::tempdir().expect("temporary directory");
        apps.push(spawn_app_in(tier.clone(), dir, |_| {}).await);
        tiers.push(tier);
    }
    Deployment {
        apps,
        tiers,
        _keyspace: guard,
    }
}

const ELSEWHERE: &str =
    r#"shortener_storage_operation_duration_seconds_count{operation="get_link_elsewhere"}"#;

/// 1,000 links created in one region, each followed at once in the two
/// others: every one redirects, none is a 404, whether the region had it
/// already or asked its home region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_in_one_region_redirects_at_once_in_the_others() {
    const LINKS: usize = 1000;
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let [eu, us, ap] = &deployment.apps[..] else {
        unreachable!("three regions")
    };
    // Ten creators at once, each following its link at once elsewhere.
    let ids: Vec<usize> = (0..LINKS).collect();
    let mut not_found = 0;
    for wave in ids.chunks(10) {
        let answers = join_all(wave.iter().map(|i| async move {
            let created = eu
                .create_ok(json!({ "url": format!("https://example.com/fresh/{i}") }))
                .await;
            let code = created["code"].as_str().expect("code").to_owned();
            let mut statuses = Vec::new();
            for app in [us, ap] {
                statuses.push((code.clone(), app.get(&format!("/{code}")).await.status()));
            }
            statuses
        }))
        .await;
        for (code, status) in answers.into_iter().flatten() {
            match status {
                StatusCode::NOT_FOUND => not_found += 1,
                status => assert!(status.is_redirection(), "{code}: {status}"),
            }
        }
    }
    let fallbacks = us.metric(ELSEWHERE).await + ap.metric(ELSEWHERE).await;
    println!(
        "{LINKS} links followed in two other regions: {fallbacks} of {} follows asked the home region",
        2 * LINKS
    );
    assert_eq!(not_found, 0, "links made elsewhere answered 404");
    // An unknown code is unknown everywhere, after asking the others.
    let before = us.metric(ELSEWHERE).await;
    assert_eq!(us.get("/nosuch42").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(us.metric(ELSEWHERE).await, before + 1.0);
    for app in deployment.apps {
        app.stop().await;
    }
}

/// Ten creates of one alias in each region at once: one `201` worldwide,
/// 29 `409`s, and every region then redirects to the winner's target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_is_created_once_across_regions() {
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let mut requests = Vec::new();
    for (region, app) in deployment.apps.iter().enumerate() {
        for i in 0..10 {
            let body = json!({
                "url": format!("https://example.com/{region}/{i}"),
                "alias": "launch-day",
            });
            requests.push(app.create(body));
        }
    }
    let responses = futures_util::future::join_all(requests).await;
    let mut winners: Vec<Value> = Vec::new();
    let mut conflicts = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => winners.push(response.json().await.expect("body")),
            StatusCode::CONFLICT => conflicts += 1,
            status => panic!("unexpected {status}: {:?}", response.text().await),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(conflicts, 29);
    let target = winners[0]["url"].as_str().expect("url").to_owned();
    for app in &deployment.apps {
        let response = app.get("/launch-day").await;
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        assert_eq!(location.as_deref(), Some(target.as_str()));
    }
    for app in deployment.apps {
        app.stop().await;
    }
}

/// What a region answers for a code: the target, or the status.
async fn answer(app: &TestApp, code: &str) -> String {
    let response = app.get(&format!("/{code}")).await;
    response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map_or_else(|| response.status().to_string(), str::to_owned)
}

/// What a change did: the link, the region that made it, and what every
/// region must answer once it is visible.
struct Change {
    code: String,
    old: String,
    new: String,
}

/// Waits until every region answers `change.new`, failing if any answers
/// something else than the old or the new answer, or if it takes longer
/// than `limit`; then checks that none goes back. How long it took.
async fn until_everywhere(apps: &[TestApp], change: &Change, limit: Duration) -> Duration {
    let Change { code, old, new } = change;
    let started = Instant::now();
    loop {
        let mut answers = Vec::new();
        for app in apps {
            answers.push(answer(app, code).await);
        }
        assert!(
            !answers.iter().any(|a| a != old && a != new),
            "{code}: unexpected answers {answers:?}"
        );
        if answers.iter().all(|a| a == new) {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "{code} still answers {answers:?} after {limit:?} (is MirrorMaker 2 of \
             infra/multi-region running?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    // Once every region has the change, none goes back.
    for _ in 0..3 {
        for app in apps {
            assert_eq!(&answer(app, code).await, new, "{code} went back");
        }
    }
    took
}

/// 200 PATCHes and 200 DELETEs in random regions reach every region
/// through Kafka and MirrorMaker 2: each region answers the new target (or
/// 410) within moments, and once all do, none answers the old one again,
/// though every region had it cached (in L1 and Redis) before the change.
/// Changes run ten at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_one_region_reaches_every_region() {
    const LINKS: usize = 400;
    const AT_ONCE: usize = 10;
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let apps = &deployment.apps;
    // MirrorMaker 2 needs a while to start copying the test's new topic:
    // a first change, untimed, waits for it.
    let first = {
        let created = apps[0]
            .create_ok(json!({ "url": "https://example.com/first" }))
            .await;
        let code = created["code"].as_str().expect("code").to_owned();
        let token = created["token"].as_str().expect("token");
        for app in apps {
            assert_eq!(answer(app, &code).await, "https://example.com/first");
        }
        let response = apps[1].delete(&code, token).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        Change {
            code,
            old: "https://example.com/first".to_owned(),
            new: StatusCode::GONE.to_string(),
        }
    };
    until_everywhere(apps, &first, Duration::from_secs(120)).await;

    let ids: Vec<usize> = (0..LINKS).collect();
    let mut took = Vec::new();
    for wave in ids.chunks(AT_ONCE) {
        // Made in turn in each region, and cached in every region (L1,
        // and its Redis).
        let made = join_all(wave.iter().map(|&i| async move {
            let maker = &apps[i % apps.len()];
            let url = format!("https://example.com/old/{i}");
            let created = maker.create_ok(json!({ "url": url })).await;
            let code = created["code"].as_str().expect("code").to_owned();
            let token = created["token"].as_str().expect("token").to_owned();
            for app in apps {
                assert_eq!(answer(app, &code).await, url);
            }
            (i, code, token, url)
        }))
        .await;
        let timed = join_all(made.into_iter().map(|(i, code, token, old)| async move {
            let changer = &apps[rand::random_range(0..apps.len())];
            let new = if i % 2 == 0 {
                let new = format!("https://example.com/new/{i}");
                let response = changer.patch(&code, &token, json!({ "url": new })).await;
                assert_eq!(response.status(), StatusCode::OK);
                new
            } else {
                let response = changer.delete(&code, &token).await;
                assert_eq!(response.status(), StatusCode::NO_CONTENT);
                StatusCode::GONE.to_string()
            };
            until_everywhere(apps, &Change { code, old, new }, Duration::from_secs(20)).await
        }))
        .await;
        took.extend(timed);
    }
    took.sort();
    println!(
        "{} changes visible in every region after p50 {:?}, p99 {:?}, max {:?}",
        took.len(),
        took[took.len() / 2],
        took[took.len() * 99 / 100],
        took[took.len() - 1]
    );
    let heard: f64 = {
        let mut sum = 0.0;
        for app in apps {
            sum += app.metric("shortener_link_changes_heard_total").await;
        }
        sum
    };
    // Every change heard by the two other regions at least.
    assert!(
        heard >= (2 * (LINKS + 1)) as f64,
        "only {heard} changes heard"
    );
    for app in deployment.apps {
        app.stop().await;
    }
}

/// An instance that starts after changes were made elsewhere (a region
/// back from an outage, or a new instance) is not ready until it has heard
/// every change its region's Kafka holds: its region's Redis may keep the
/// old answers, and only those changes' fences keep it from serving them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_instance_is_ready_only_once_it_heard_the_changes_before_it() {
    const CHANGES: usize = 30;
    const HEARD: &str = "shortener_link_changes_heard_total";
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let [eu, us, _] = &deployment.apps[..] else {
        unreachable!("three regions")
    };
    let before = us.metric(HEARD).await;
    for i in 0..CHANGES {
        let (code, token) = eu.shorten(&format!("https://example.com/v1/{i}")).await;
        let response = eu
            .patch(
                &code,
                &token,
                json!({ "url": format!("https://example.com/v2/{i}") }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The changes are in us's Kafka once us's instance heard them.
    let started = Instant::now();
    while us.metric(HEARD).await < before + CHANGES as f64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "us heard {} of {CHANGES} changes (is MirrorMaker 2 of infra/multi-region running?)",
            us.metric(HEARD).await - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let late = spawn_app_in(deployment.tiers[1].clone(), dir, |_| {}).await;
    let started = Instant::now();
    let mut not_ready = 0;
    let body: Value = loop {
        let response = late.get("/readyz").await;
        let status = response.status();
        let body: Value = response.json().await.expect("readiness body");
        if status == StatusCode::OK {
            break body;
        }
        // Not ready for want of the changes, unless the store's probe was
        // slow on this loaded machine.
        if body["storage"] == "ok" {
            assert_eq!(body["changes"], "catching_up", "{body}");
        }
        not_ready += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not ready after 60 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let heard = late.metric(HEARD).await;
    println!(
        "a new us instance was ready after {:?} ({not_ready} probes said not yet), having heard {heard} changes",
        started.elapsed()
    );
    assert_eq!(body["changes"], "caught_up");
    assert!(
        heard >= CHANGES as f64,
        "ready having heard {heard} of the {CHANGES} changes before it started"
    );
    late.stop().await;
    for app in deployment.apps {
        app.stop().await;
    }
}

/// A region lost whole (its datacenter's node and its Kafka SIGKILLed, its
/// instance and worker gone) under load from clients of the two others:
/// they keep answering every request, links made in the lost region before
/// its loss still redirect there, and it serves again once revived, with
/// no step but starting it; the clicks its Kafka held uncounted are
/// counted then, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_region_leaves_the_others_serving_and_comes_back() {
    use crate::outage::{Load, p99};
    use shortener_testkit::stack::multi_region;

    /// Brings the region back if the test ends before it did (without
    /// panicking again while a failed test unwinds).
    struct Revive(bool);
    impl Drop for Revive {
        fn drop(&mut self) {
            if !self.0 {
                let script = shortener_testkit::repo().join("infra/multi-region");
                match std::process::Command::new(&script)
                    .args(["revive", "us"])
                    .status()
                {
                    Ok(status) if status.success() => {}
                    outcome => eprintln!("infra/multi-region revive us: {outcome:?}"),
                }
            }
        }
    }

    let _serial = one_at_a_time().await;
    let mut deployment = three_regions().await;
    let keyspace = deployment.apps[0].settings.storage.scylla.keyspace.clone();
    let logs = tempfile::tempdir().expect("temporary directory");
    let mut workers: Vec<_> = REGIONS
        .iter()
        .map(|name| region_worker(&keyspace, name, logs.path()))
        .collect();
    let mut made = Vec::new();
    for (i, app) in deployment.apps.iter().enumerate() {
        for n in 0..30 {
            let (code, _) = app
                .shorten(&format!("https://example.com/region/{i}/{n}"))
                .await;
            made.push((i, code));
        }
    }
    // Replication to the other datacenters is not waited for by a create
    // (LOCAL_QUORUM): give it a moment, as the region's RPO.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let us_made: Vec<String> = made
        .iter()
        .filter(|(i, _)| *i == 1)
        .map(|(_, code)| code.clone())
        .collect();
    let served: Vec<String> = made
        .iter()
        .filter(|(i, _)| *i != 1)
        .map(|(_, code)| code.clone())
        .collect();
    // us's worker goes first: the clicks of 500 redirects in us then wait
    // in us's Kafka, uncounted, when the region is lost.
    workers[1].kill().await.expect("kill us's worker");
    let mut truth: HashMap<String, u64> = HashMap::new();
    for _ in 0..500 {
        let code = &us_made[rand::random_range(0..us_made.len())];
        let response = deployment.apps[1].get(&format!("/{code}")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        *truth.entry(code.clone()).or_default() += 1;
    }
    let [eu, _, ap] = &deployment.apps[..] else {
        unreachable!("three regions")
    };
    let loads = [Load::start(eu, &served, 2), Load::start(ap, &served, 2)];
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lost_at = Instant::now();
    let us = deployment.apps.remove(1);
    let mut revive = Revive(false);
    tokio::task::spawn_blocking(|| multi_region(&["kill", "us"]))
        .await
        .expect("kill");
    us.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let [eu, ap] = &deployment.apps[..] else {
        unreachable!("two regions left")
    };
    // Made in us before its loss: still there, in both other regions.
    for code in &us_made {
        for app in [eu, ap] {
            let status = app.get(&format!("/{code}")).await.status();
            assert_eq!(
                status,
                StatusCode::FOUND,
                "{code} made in us, after its loss"
            );
            *truth.entry(code.clone()).or_default() += 1;
        }
    }
    // Creates go on in the regions left.
    let (fresh, _) = eu.shorten("https://example.com/while-us-was-away").await;
    assert_eq!(
        ap.get(&format!("/{fresh}")).await.status(),
        StatusCode::FOUND
    );
    let ended = Instant::now();
    for (region, load) in ["eu", "ap"].into_iter().zip(loads) {
        let samples = load.finish().await;
        let failed = samples.iter().filter(|s| !s.ok).count();
        let first = samples.first().expect("samples").at;
        println!(
            "{region}: {} redirects, {failed} failed; p99 before the loss {:?}, after {:?}",
            samples.len(),
            p99(&samples, first, lost_at),
            p99(&samples, lost_at, ended)
        );
        assert_eq!(failed, 0, "{region}: requests failed while us was lost");
    }
    let started = Instant::now();
    tokio::task::spawn_blocking(|| multi_region(&["revive", "us"]))
        .await
        .expect("revive");
    revive.0 = true;
    let dir = tempfile::tempdir().expect("temporary directory");
    let back = spawn_app_in(deployment.tiers[1].clone(), dir, |_| {}).await;
    crate::outage::eventually(Duration::from_secs(60), "us ready again", || async {
        back.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    println!("us revived and ready after {:?}", started.elapsed());
    for code in us_made.iter().chain(served.iter()).chain([&fresh]) {
        assert_eq!(
            back.get(&format!("/{code}")).await.status(),
            StatusCode::FOUND,
            "{code} in us, back"
        );
    }
    for code in &us_made {
        *truth.entry(code.clone()).or_default() += 1;
    }
    let (again, _) = back.shorten("https://example.com/us-is-back").await;
    assert_eq!(
        eu.get(&format!("/{again}")).await.status(),
        StatusCode::FOUND
    );
    // us's worker, started again, counts what its Kafka kept: every
    // region's stats show each link's clicks exactly, and no more later.
    workers[1] = region_worker(&keyspace, "us", logs.path());
    let regions = [eu, &back, ap];
    let took = crate::outage::eventually(
        Duration::from_secs(120),
        "the clicks us's Kafka kept are counted",
        || async {
            for app in regions {
                for (code, n) in &truth {
                    if counted(app, code).await != *n {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    println!(
        "us's worker back: {} clicks of us's links counted exactly in every region after {took:?}",
        truth.values().sum::<u64>()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for app in regions {
        for (code, n) in &truth {
            assert_eq!(counted(app, code).await, *n, "{code} counted again");
        }
    }
    back.stop().await;
    for app in deployment.apps {
        app.stop().await;
    }
}

/// A region's worker, as a process: it counts the clicks of its region's
/// Kafka into the shared ledger. Killed when dropped.
fn region_worker(keyspace: &str, name: &str, logs: &std::path::Path) -> tokio::process::Child {
    let options = region_test_options(keyspace, name);
    let replication: Vec<String> = options
        .replication
        .iter()
        .map(|(dc, n)| format!("{dc}:{n}"))
        .collect();
    let env = [
        ("REGION__NAME", name.to_owned()),
        ("REGION__ALL", TEST_REGIONS.to_owned()),
        ("STORAGE__SCYLLA__NODES", options.nodes.join(",")),
        ("STORAGE__SCYLLA__KEYSPACE", keyspace.to_owned()),
        ("STORAGE__SCYLLA__REPLICATION", replication.join(",")),
        ("STORAGE__SCYLLA__REQUEST_TIMEOUT", "10s".to_owned()),
        ("EVENTS__KAFKA__BROKERS", region_kafka(name)),
        ("EVENTS__KAFKA__TOPIC", format!("{keyspace}.clicks")),
        ("WORKER__GROUP", format!("{keyspace}.worker")),
        (
            "WORKER__DEAD_LETTER_TOPIC",
            format!("{keyspace}.clicks.dead-letter"),
        ),
        ("WORKER__FLUSH_INTERVAL", "250ms".to_owned()),
        ("WORKER__SESSION_TIMEOUT", "3s".to_owned()),
        ("WORKER__METRICS_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let log = std::fs::File::create(logs.join(format!("worker-{name}.log"))).expect("log file");
    tokio::process::Command::new(shortener_testkit::binary("shortener-worker"))
        .envs(env.map(|(k, v)| (format!("SHORTENER__{k}"), v)))
        .env("SHORTENER_CONFIG_DIR", logs.join("no-config"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::from(
            log.try_clone().expect("log file"),
        ))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start shortener-worker (cargo build -p shortener-worker)")
}

/// Every click a region's stats API shows for `code`, people and bots.
async fn counted(app: &TestApp, code: &str) -> u64 {
    let stats: Value = app
        .get(&format!("/api/v1/links/{code}/stats"))
        .await
        .json()
        .await
        .expect("stats");
    stats["total_clicks"].as_u64().expect("total") + stats["bot_clicks"].as_u64().expect("bots")
}

/// 10,000 redirects in each region, of links made in all three, counted by
/// each region's own worker from its own Kafka: every region's stats API
/// shows every link's exact total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_in_every_region_add_up_in_every_region() {
    const PER_REGION: usize = 10_000;
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let apps = &deployment.apps;
    let logs = tempfile::tempdir().expect("temporary directory");
    let keyspace = apps[0].settings.storage.scylla.keyspace.clone();
    let _workers: Vec<_> = REGIONS
        .iter()
        .map(|name| region_worker(&keyspace, name, logs.path()))
        .collect();
    let mut codes = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        for n in 0..10 {
            let (code, _) = app
                .shorten(&format!("https://example.com/counted/{i}/{n}"))
                .await;
            codes.push(code);
        }
    }
    let mut truth: HashMap<String, u64> = HashMap::new();
    for app in apps {
        let picks: Vec<&String> = (0..PER_REGION)
            .map(|_| &codes[rand::random_range(0..codes.len())])
            .collect();
        for chunk in picks.chunks(50) {
            let statuses = join_all(
                chunk
                    .iter()
                    .map(|code| async move { app.get(&format!("/{code}")).await }),
            )
            .await;
            for (code, response) in chunk.iter().zip(statuses) {
                assert_eq!(response.status(), StatusCode::FOUND, "{code}");
                *truth.entry((*code).clone()).or_default() += 1;
            }
        }
    }
    assert_eq!(truth.values().sum::<u64>(), (3 * PER_REGION) as u64);
    let took = crate::outage::eventually(
        Duration::from_secs(120),
        "every region's stats show every click",
        || async {
            for app in apps {
                for (code, n) in &truth {
                    if counted(app, code).await != *n {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    println!(
        "{} redirects in three regions counted exactly in every region's stats {took:?} after the last",
        3 * PER_REGION
    );
    // And no more later: exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for app in apps {
        for (code, n) in &truth {
            assert_eq!(counted(app, code).await, *n, "{code}");
        }
    }
    for app in deployment.apps {
        app.stop().await;
    }
}
