//! One deployment in three regions (`infra/multi-region`'s cluster, a
//! datacenter per region), an instance in each, each with its own Redis
//! keys: what users of one region see of what users of another did.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{FutureExt, future::join_all};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shortener_testkit::stack::multi_region;
use stores::fixtures::{DropRegionKeyspace, TEST_REGIONS, region_test_options, scaled};
use tokio_util::sync::CancellationToken;

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

/// 1,000 links (200 in the quick run) created in one region, each
/// followed at once in the two others: every one redirects, none is a 404, whether the region had it
/// already or asked its home region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_made_in_one_region_redirects_at_once_in_the_others() {
    let links = scaled(200, 1000);
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let [eu, us, ap] = &deployment.apps[..] else {
        unreachable!("three regions")
    };
    // Ten creators at once, each following its link at once elsewhere.
    let ids: Vec<usize> = (0..links).collect();
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
        "{links} links followed in two other regions: {fallbacks} of {} follows asked the home region",
        2 * links
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

/// 200 PATCHes and 200 DELETEs (50 of each in the quick run) in random
/// regions reach every region through Kafka and MirrorMaker 2: each region
/// answers the new target (or 410) within moments, and once all do, none
/// answers the old one again, though every region had it cached (in L1
/// and Redis) before the change. Changes run ten at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_one_region_reaches_every_region() {
    let links = scaled(100, 400);
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

    let ids: Vec<usize> = (0..links).collect();
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
        heard >= (2 * (links + 1)) as f64,
        "only {heard} changes heard"
    );
    for app in deployment.apps {
        app.stop().await;
    }
}

/// An instance that starts after changes were made elsewhere (a region
/// back from an outage, or a new instance) is not ready until it has heard
/// them: its region's Redis keeps the old answers, and only those
/// changes' fences keep it from serving them. Here MirrorMaker 2 copies
/// nothing into us while the changes are made and the instance starts, as
/// when us was away: the instance waits for the copies to be current (a
/// heartbeat of each region sent after it started), reads them, and once
/// ready answers every new target, none of the old ones us had cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_instance_is_ready_only_once_it_heard_the_changes_before_it() {
    const CHANGES: usize = 30;
    const HEARD: &str = "shortener_link_changes_heard_total";
    let _serial = one_at_a_time().await;
    let deployment = three_regions().await;
    let [eu, us, _] = &deployment.apps[..] else {
        unreachable!("three regions")
    };
    let old = |i: usize| format!("https://example.com/v1/{i}");
    let new = |i: usize| format!("https://example.com/v2/{i}");
    // Links made in eu, each cached in us (its L1 and Redis).
    let mut links = Vec::new();
    for i in 0..CHANGES {
        let link = eu.shorten(&old(i)).await;
        crate::outage::eventually(Duration::from_secs(30), "us has eu's link", || async {
            answer(us, &link.0).await == old(i)
        })
        .await;
        links.push(link);
    }
    let change = |i: usize| {
        let (code, token) = &links[i];
        async move {
            let response = eu.patch(code, token, json!({ "url": new(i) })).await;
            assert_eq!(response.status(), StatusCode::OK);
        }
    };
    // A first change, heard in us: us's Kafka has its copy of eu's topic.
    let before = us.metric(HEARD).await;
    change(0).await;
    let started = Instant::now();
    while us.metric(HEARD).await < before + 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "us did not hear eu's change (is MirrorMaker 2 of infra/multi-region running?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The others while MirrorMaker 2 copies nothing into us.
    tokio::task::spawn_blocking(|| multi_region(&["mirror", "us", "off"]))
        .await
        .expect("mirror off");
    let mut resume = Undo::new(&["mirror", "us", "on"]);
    for i in 1..CHANGES {
        change(i).await;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let late = spawn_app_in(deployment.tiers[1].clone(), dir, |settings| {
        settings.events.kafka.mirror_wait = Duration::from_secs(120);
    })
    .await;
    let readiness = || async {
        let response = late.get("/readyz").await;
        let status = response.status();
        let body: Value = response.json().await.expect("readiness body");
        // Not ready for want of the changes, unless the store's probe was
        // slow on this loaded machine.
        if status != StatusCode::OK && body["storage"] == "ok" {
            assert_eq!(body["changes"], "catching_up", "{body}");
        }
        (status, body)
    };
    let cut = Instant::now();
    let mut not_ready = 0;
    while cut.elapsed() < Duration::from_secs(5) {
        let (status, body) = readiness().await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "ready while MirrorMaker 2 copied nothing into us: {body}"
        );
        not_ready += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::spawn_blocking(|| multi_region(&["mirror", "us", "on"]))
        .await
        .expect("mirror on");
    resume.disarm();
    let resumed = Instant::now();
    let body = loop {
        let (status, body) = readiness().await;
        if status == StatusCode::OK {
            break body;
        }
        not_ready += 1;
        assert!(
            resumed.elapsed() < Duration::from_secs(90),
            "not ready 90 s after MirrorMaker 2 could copy again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let ready = resumed.elapsed();
    // At once: us's Redis held every old target.
    for (i, (code, _)) in links.iter().enumerate() {
        assert_eq!(answer(&late, code).await, new(i), "{code} once ready");
    }
    let heard = late.metric(HEARD).await;
    println!(
        "a new us instance was ready {ready:?} after MirrorMaker 2 could copy into us again ({not_ready} probes said not yet), having heard {heard} changes, and answered every new target"
    );
    assert_eq!(body["changes"], "caught_up");
    assert!(
        heard >= CHANGES as f64,
        "ready having heard {heard} of the {CHANGES} changes made before it started"
    );
    late.stop().await;
    for app in deployment.apps {
        app.stop().await;
    }
}

/// Runs `infra/multi-region` with its arguments when dropped, unless
/// disarmed: brings the simulation back whole if a test ends before it did
/// (without panicking again while a failed test unwinds).
struct Undo {
    args: &'static [&'static str],
    armed: bool,
}

impl Undo {
    fn new(args: &'static [&'static str]) -> Self {
        Self { args, armed: true }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if self.armed {
            let script = shortener_testkit::repo().join("infra/multi-region");
            match std::process::Command::new(&script).args(self.args).status() {
                Ok(status) if status.success() => {}
                outcome => eprintln!("infra/multi-region {:?}: {outcome:?}", self.args),
            }
        }
    }
}

/// A region lost whole (its load balancer, its datacenter's node and its
/// Kafka SIGKILLed, its instance and worker gone) under load from clients
/// of all three, each entering through their edge: the two others keep
/// answering every request, the lost region's clients land in the nearest
/// region left (how long, and what failed meanwhile, is printed), links
/// made in the lost region before its loss still redirect elsewhere, and
/// it serves again once revived, its clients back, with no step but
/// starting it; the clicks its Kafka held uncounted are counted then,
/// once. Creates go on in us until its node dies, at each create
/// consistency: none acknowledged at `each_quorum` is missing in eu, and
/// how many at `local_quorum` are (the RPO) is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_region_leaves_the_others_serving_and_comes_back() {
    use crate::outage::{Load, p99};

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
    // Each region's instance behind its region's load balancer, and each
    // region's clients at their way in, served by their own region.
    for (name, app) in REGIONS.into_iter().zip(&deployment.apps) {
        register(name, app).await;
    }
    // A check that hangs fails, rather than hanging the test.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    for (i, name) in REGIONS.into_iter().enumerate() {
        crate::outage::eventually(
            Duration::from_secs(30),
            "each region's clients served by their region",
            || async { serving(&client, i).await.as_deref() == Some(name) },
        )
        .await;
    }
    let loads: Vec<Load> = (0..REGIONS.len())
        .map(|i| Load::at(&entry(i), &served, 2))
        .collect();
    // Creates in us up to its loss: at local_quorum on its instance, at
    // each_quorum on a second one.
    let each = spawn_app_in(
        deployment.tiers[1].clone(),
        tempfile::tempdir().expect("temporary directory"),
        |settings| {
            settings.storage.scylla.create_consistency =
                Some(stores::scylla::CreateConsistency::EachQuorum);
        },
    )
    .await;
    let creating = CancellationToken::new();
    let creators: Vec<_> = [&deployment.apps[1].address, &each.address]
        .into_iter()
        .map(|base| tokio::spawn(create_until(base.clone(), creating.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let lost_at = Instant::now();
    let us = deployment.apps.remove(1);
    let mut revive = Undo::new(&["revive", "us"]);
    tokio::task::spawn_blocking(|| multi_region(&["kill", "us"]))
        .await
        .expect("kill");
    creating.cancel();
    let mut acknowledged = Vec::new();
    for creator in creators {
        acknowledged.push(creator.await.expect("creator"));
    }
    us.stop().await;
    each.stop().await;
    // us's clients land in the nearest region left, eu.
    crate::outage::eventually(
        Duration::from_secs(30),
        "us's clients served by eu",
        || async { serving(&client, 1).await.as_deref() == Some("eu") },
    )
    .await;
    let failed_over = lost_at.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let [eu, ap] = &deployment.apps[..] else {
        unreachable!("two regions left")
    };
    // The creates acknowledged in us before it was lost, as eu has them.
    let mut missing = [0; 2];
    for (n, codes) in acknowledged.iter().enumerate() {
        for code in codes {
            if !eu.get(&format!("/{code}")).await.status().is_redirection() {
                missing[n] += 1;
            }
        }
    }
    println!(
        "creates acknowledged in us until its loss, missing in eu after it: {} of {} at local_quorum, {} of {} at each_quorum",
        missing[0],
        acknowledged[0].len(),
        missing[1],
        acknowledged[1].len()
    );
    assert!(
        acknowledged.iter().all(|codes| !codes.is_empty()),
        "creates were acknowledged in us before its loss"
    );
    assert_eq!(
        missing[1], 0,
        "a create acknowledged at each_quorum was lost with its region"
    );
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
    // Creates go on in the regions left, us's clients' among them.
    let (fresh, _) = eu.shorten("https://example.com/while-us-was-away").await;
    assert_eq!(
        ap.get(&format!("/{fresh}")).await.status(),
        StatusCode::FOUND
    );
    let elsewhere = client
        .post(format!("{}/api/v1/links", entry(1)))
        .json(&json!({ "url": "https://example.com/made-by-us-clients-elsewhere" }))
        .send()
        .await
        .expect("create at us's clients' way in");
    assert_eq!(elsewhere.status(), StatusCode::CREATED);
    let ended = Instant::now();
    for (region, load) in REGIONS.into_iter().zip(loads) {
        let samples = load.finish().await;
        let first = samples.first().expect("samples").at;
        let failed: Vec<&crate::outage::Sample> = samples.iter().filter(|s| !s.ok).collect();
        // A p99 where there are enough samples for one (on two loaded
        // cores a window can hold fewer than a hundred).
        let p99_in = |from: Instant, to: Instant| {
            let n = samples.iter().filter(|s| s.at >= from && s.at < to).count();
            (n >= 100).then(|| p99(&samples, from, to))
        };
        println!(
            "{region}'s clients: {} redirects, {} failed; p99 before the loss {:?}, after {:?}",
            samples.len(),
            failed.len(),
            p99_in(first, lost_at),
            p99_in(lost_at + failed_over, ended)
        );
        if region == "us" {
            // The failover: what failed, and for how long it lasted.
            if let (Some(a), Some(b)) = (failed.first(), failed.last()) {
                println!(
                    "us's clients: failures from {:?} to {:?} after the loss",
                    a.at.saturating_duration_since(lost_at),
                    (b.at + b.latency).saturating_duration_since(lost_at)
                );
            }
            println!("us's clients: served by eu {failed_over:?} after the loss");
            let last = samples
                .iter()
                .filter(|s| s.at >= ended - Duration::from_secs(5));
            assert!(
                last.clone().count() > 0 && last.clone().all(|s| s.ok),
                "us's clients are served again"
            );
        } else {
            assert!(
                failed.is_empty(),
                "{region}: requests failed while us was lost"
            );
        }
    }
    let started = Instant::now();
    tokio::task::spawn_blocking(|| multi_region(&["revive", "us"]))
        .await
        .expect("revive");
    revive.disarm();
    let dir = tempfile::tempdir().expect("temporary directory");
    let back = spawn_app_in(deployment.tiers[1].clone(), dir, |_| {}).await;
    // us's clients, still served by eu, while us comes back behind its
    // load balancer.
    let returning = Load::at(&entry(1), &served, 2);
    register("us", &back).await;
    // Its node's start, then MirrorMaker 2's copies into us current
    // (events.kafka.mirror_wait, 30 s at most).
    crate::outage::eventually(Duration::from_secs(120), "us ready again", || async {
        back.get("/readyz").await.status() == StatusCode::OK
    })
    .await;
    println!("us revived and ready after {:?}", started.elapsed());
    let failback = crate::outage::eventually(
        Duration::from_secs(30),
        "us's clients served by us again",
        || async { serving(&client, 1).await.as_deref() == Some("us") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = returning.finish().await;
    let failed = samples.iter().filter(|s| !s.ok).count();
    println!(
        "us's clients: served by us again {failback:?} after it was ready; {} redirects while it came back, {failed} failed",
        samples.len()
    );
    assert_eq!(failed, 0, "requests failed while us came back");
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

/// Where the clients of region `i` enter (`infra/multi-region`'s edge):
/// their region's load balancer while it is healthy, else the nearest
/// healthy region's.
/// Creates links at `base` two at a time until `stop`; the codes of the
/// creates answered `201`.
async fn create_until(base: String, stop: CancellationToken) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let create = || async {
        let response = client
            .post(format!("{base}/api/v1/links"))
            .json(&json!({ "url": "https://example.com/up-to-the-loss" }))
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::CREATED {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        Some(body["code"].as_str()?.to_owned())
    };
    let mut codes = Vec::new();
    while !stop.is_cancelled() {
        let (a, b) = tokio::join!(create(), create());
        codes.extend(a.into_iter().chain(b));
    }
    codes
}

fn entry(i: usize) -> String {
    format!("http://127.0.{}.3:8080", i + 1)
}

/// Puts `app` behind its region's load balancer, alone, as a deployment
/// registers its tasks with its target group.
async fn register(region: &'static str, app: &TestApp) {
    let target = app.address.trim_start_matches("http://").to_owned();
    tokio::task::spawn_blocking(move || {
        multi_region(&["targets", region, &target]);
    })
    .await
    .expect("targets");
}

/// The region that answers the clients of region `i` now, by the
/// `/readyz` they reach; None while nothing ready answers.
async fn serving(client: &reqwest::Client, i: usize) -> Option<String> {
    let response = client
        .get(format!("{}/readyz", entry(i)))
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: Value = response.json().await.ok()?;
    body["region"].as_str().map(str::to_owned)
}

/// A region cut off from the others (both ways, its servers and its
/// instance) while its clients still reach it: it goes on serving what it
/// has, makes generated codes of its own, and refuses alias creates fast
/// (503) once its node knows the others are gone, and so a change of one
/// of its own links and a follow of a link made elsewhere meanwhile (it
/// cannot ask the link's home region: a `503`, never a `404`); the others
/// go on too. After healing, every region has every link made on either
/// side, the change made elsewhere during the partition reaches it, and
/// the change it refused can be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_region_serves_its_clients_and_converges_after_healing() {
    use crate::helpers::ApiProcess;

    let _serial = one_at_a_time().await;
    let mut deployment = three_regions().await;
    // us is served by an instance of its own process, which the partition
    // puts on its side.
    deployment.apps.remove(1).stop().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let us = ApiProcess::start(dir.path(), &deployment.tiers[1], &[]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let in_us = |path: String| client.get(format!("{}{path}", us.address)).send();
    let create_in_us = |body: Value| {
        client
            .post(format!("{}/api/v1/links", us.address))
            .json(&body)
            .send()
    };
    crate::outage::eventually(Duration::from_secs(60), "us's instance ready", || async {
        in_us("/readyz".into())
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    let [eu, ap] = &deployment.apps[..] else {
        unreachable!("two in-process regions")
    };
    // Links of every region, followed in us (cached there); links of us
    // never followed (in its datacenter only).
    let mut cached = Vec::new();
    for (i, app) in [eu, ap].into_iter().enumerate() {
        for n in 0..10 {
            cached.push(app.shorten(&format!("https://example.com/p/{i}/{n}")).await);
        }
    }
    // A generated create in us, asserting 201; its code.
    let shorten_in_us = |url: String| {
        let created = create_in_us(json!({ "url": url }));
        async move {
            let created = created.await.expect("create in us");
            assert_eq!(created.status(), StatusCode::CREATED);
            let body: Value = created.json().await.expect("body");
            body["code"].as_str().expect("code").to_owned()
        }
    };
    let mut local = Vec::new();
    for n in 0..10 {
        local.push(shorten_in_us(format!("https://example.com/p/us/{n}")).await);
    }
    // One of us's links with its token, to change during the partition.
    let (own, own_token) = {
        let created: Value = create_in_us(json!({ "url": "https://example.com/p/us-own" }))
            .await
            .expect("create in us")
            .json()
            .await
            .expect("body");
        let field = |name: &str| created[name].as_str().expect(name).to_owned();
        (field("code"), field("token"))
    };
    let change_in_us = |url: &str| {
        client
            .patch(format!("{}/api/v1/links/{own}", us.address))
            .bearer_auth(&own_token)
            .json(&json!({ "url": url }))
            .send()
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (code, _) in &cached {
        let status = in_us(format!("/{code}")).await.expect("follow").status();
        assert_eq!(status, StatusCode::FOUND, "{code} in us");
    }

    let mut heal = Undo::new(&["heal", "us"]);
    let pid = us.pid().to_string();
    tokio::task::spawn_blocking(move || multi_region(&["partition", "us", &pid]))
        .await
        .expect("partition");
    let cut = Instant::now();
    // An alias create in us needs a majority of all datacenters: it fails,
    // with 503, and fast once us's node has seen the others go (gossip).
    let mut slow = Vec::new();
    let fast = loop {
        let started = Instant::now();
        let response = create_in_us(json!({
            "url": "https://example.com/p/alias",
            "alias": format!("cut-{}", rand::random::<u32>()),
        }))
        .await
        .expect("alias create in us");
        let took = started.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "an alias create in a partitioned region"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        if took < Duration::from_secs(1) {
            break took;
        }
        slow.push(took);
        assert!(
            cut.elapsed() < Duration::from_secs(90),
            "alias creates in us still slow: {slow:?}"
        );
    };
    println!(
        "partitioned us: alias creates answered 503 in {slow:?} until its node saw the others go, \
         then in {fast:?}, {:?} after the cut",
        cut.elapsed()
    );
    // Cached and local reads go on in us, and generated creates.
    for (code, _) in &cached {
        let status = in_us(format!("/{code}")).await.expect("follow").status();
        assert_eq!(status, StatusCode::FOUND, "{code}, cached in us");
    }
    for code in &local {
        let status = in_us(format!("/{code}")).await.expect("follow").status();
        assert_eq!(status, StatusCode::FOUND, "{code}, made in us");
    }
    let mut made_in_us = Vec::new();
    for n in 0..50 {
        made_in_us.push(shorten_in_us(format!("https://example.com/p/us-cut/{n}")).await);
    }
    // The other side goes on: creates, aliases (two datacenters of three
    // are a majority), and a change to a link us has cached.
    let mut made_in_eu = Vec::new();
    for n in 0..50 {
        made_in_eu.push(
            eu.shorten(&format!("https://example.com/p/eu-cut/{n}"))
                .await
                .0,
        );
    }
    let alias = format!("while-cut-{}", rand::random::<u32>());
    eu.create_ok(json!({ "url": "https://example.com/p/eu-alias", "alias": alias }))
        .await;
    let (changed, token) = &cached[0];
    let response = eu
        .patch(
            changed,
            token,
            json!({ "url": "https://example.com/p/changed" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // In us, what needs the other regions fails fast, with 503: a link
    // made in eu meanwhile (us's replica lacks it and cannot ask its home
    // region: not a 404, which would be a lie), a change of its own link
    // (a majority of all replicas) and its deletion.
    let refused = [
        (
            "a follow of a link made in eu",
            in_us(format!("/{}", made_in_eu[0])).boxed(),
        ),
        (
            "a PATCH",
            change_in_us("https://example.com/p/us-own-changed").boxed(),
        ),
        (
            "a DELETE",
            client
                .delete(format!("{}/api/v1/links/{own}", us.address))
                .bearer_auth(&own_token)
                .send()
                .boxed(),
        ),
    ];
    for (what, request) in refused {
        let started = Instant::now();
        let response = request.await.expect(what);
        let took = started.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{what} in partitioned us"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        println!("partitioned us: {what} answered 503 in {took:?}");
    }
    let mut all: Vec<&String> = made_in_us.iter().chain(&made_in_eu).chain(&local).collect();
    all.extend(cached.iter().map(|(code, _)| code));
    let distinct: std::collections::HashSet<&&String> = all.iter().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "codes made on both sides collide"
    );

    tokio::task::spawn_blocking(|| multi_region(&["heal", "us"]))
        .await
        .expect("heal");
    heal.disarm();
    let healed = Instant::now();
    // What is still missing, until nothing is.
    let missing = || async {
        let mut missing = Vec::new();
        for code in made_in_us.iter().chain(&local) {
            for (name, app) in [("eu", eu), ("ap", ap)] {
                let status = app.get(&format!("/{code}")).await.status();
                if !status.is_redirection() {
                    missing.push(format!("{code} in {name}: {status}"));
                }
            }
        }
        for code in made_in_eu.iter().chain([&alias]) {
            match in_us(format!("/{code}")).await {
                Ok(r) if r.status().is_redirection() => {}
                Ok(r) => missing.push(format!("{code} in us: {}", r.status())),
                Err(e) => missing.push(format!("{code} in us: {e}")),
            }
        }
        let location = in_us(format!("/{changed}")).await.ok().and_then(|r| {
            r.headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned)
        });
        if location.as_deref() != Some("https://example.com/p/changed") {
            missing.push(format!("the change in us: {location:?}"));
        }
        // Neither the refused PATCH nor the refused DELETE happened.
        let own_target = answer(eu, &own).await;
        if own_target != "https://example.com/p/us-own" {
            missing.push(format!("us's own link in eu: {own_target}"));
        }
        missing
    };
    let took = loop {
        let left = missing().await;
        if left.is_empty() {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < Duration::from_secs(120),
            "not converged 120 s after healing; {} missing, among them {:?}",
            left.len(),
            &left[..left.len().min(8)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "healed: every region had the {} links made on both sides, and us the change, after {took:?}",
        made_in_us.len() + made_in_eu.len() + 1
    );
    // The change us refused can be made now.
    crate::outage::eventually(Duration::from_secs(60), "a PATCH in us again", || async {
        change_in_us("https://example.com/p/us-own-changed")
            .await
            .is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
    // And us makes aliases again.
    crate::outage::eventually(
        Duration::from_secs(60),
        "alias creates in us again",
        || async {
            create_in_us(json!({
                "url": "https://example.com/p/healed",
                "alias": format!("healed-{}", rand::random::<u32>()),
            }))
            .await
            .is_ok_and(|r| r.status() == StatusCode::CREATED)
        },
    )
    .await;
    println!(
        "us made an alias again {:?} after healing",
        healed.elapsed()
    );
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
    by_region(app, code).await.iter().sum()
}

/// A link's clicks (people's and bots') by the region where they were
/// made, in [`REGIONS`]' order, as a region's stats API tells them; their
/// sum is the total it tells.
async fn by_region(app: &TestApp, code: &str) -> [u64; 3] {
    let stats: Value = app
        .get(&format!("/api/v1/links/{code}/stats"))
        .await
        .json()
        .await
        .expect("stats");
    let total = stats["total_clicks"].as_u64().expect("total")
        + stats["bot_clicks"].as_u64().expect("bots");
    let regions = stats["regions"].as_array().expect("clicks by region");
    let named: Vec<&str> = regions
        .iter()
        .map(|r| r["region"].as_str().expect("region"))
        .collect();
    assert_eq!(named, REGIONS, "every region, in slot order");
    let counts: Vec<u64> = regions
        .iter()
        .map(|r| r["clicks"].as_u64().expect("clicks") + r["bot_clicks"].as_u64().expect("bots"))
        .collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        total,
        "{code}: regions add up to the total"
    );
    [counts[0], counts[1], counts[2]]
}

/// 10,000 redirects (2,000 in the quick run) in each region, of links made in all three, counted by
/// each region's own worker from its own Kafka: every region's stats API
/// shows every link's exact total, and how many of its clicks each region
/// saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_in_every_region_add_up_in_every_region() {
    let per_region = scaled(2_000, 10_000);
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
    // Each link's clicks by the region they were made in.
    let mut truth: HashMap<String, [u64; 3]> = HashMap::new();
    for (region, app) in apps.iter().enumerate() {
        let picks: Vec<&String> = (0..per_region)
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
                truth.entry((*code).clone()).or_default()[region] += 1;
            }
        }
    }
    assert_eq!(
        truth.values().flatten().sum::<u64>(),
        (3 * per_region) as u64
    );
    let took = crate::outage::eventually(
        Duration::from_secs(120),
        "every region's stats show every click, by region",
        || async {
            for app in apps {
                for (code, n) in &truth {
                    if by_region(app, code).await != *n {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    println!(
        "{} redirects in three regions counted exactly, by region of click, in every region's stats {took:?} after the last",
        3 * per_region
    );
    // And no more later: exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for app in apps {
        for (code, n) in &truth {
            assert_eq!(by_region(app, code).await, *n, "{code}");
        }
    }
    for app in deployment.apps {
        app.stop().await;
    }
}
