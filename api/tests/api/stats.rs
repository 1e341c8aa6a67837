//! Click statistics: exact counts, bots apart, the right tops, and nothing
//! lost across a graceful restart of the process.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::{Value, json};

use crate::helpers::{ApiProcess, Tier, assert_problem, spawn_app};

/// (user agent, bot name or browser, device) of the simulated visitors.
const AGENTS: [(&str, Option<&str>, &str, &str); 6] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        None,
        "Chrome",
        "desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        None,
        "Mobile Safari",
        "mobile",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
        None,
        "Firefox",
        "desktop",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.39 Mobile Safari/537.36",
        None,
        "Chrome Mobile",
        "mobile",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        Some("Googlebot"),
        "",
        "",
    ),
    ("curl/8.5.0", Some("curl"), "", ""),
];
const REFERERS: [(Option<&str>, &str); 4] = [
    (Some("https://t.co/abc123"), "t.co"),
    (
        Some("https://news.ycombinator.com/item?id=1"),
        "news.ycombinator.com",
    ),
    (None, "(direct)"),
    (Some("https://www.google.com/"), "www.google.com"),
];
const COUNTRIES: [(Option<&str>, &str); 5] = [
    (Some("DE"), "DE"),
    (Some("us"), "US"),
    (None, "(unknown)"),
    (Some("FR"), "FR"),
    (Some("JP"), "JP"),
];

/// What the stats API must answer, computed from the traffic sent.
#[derive(Debug, Default, PartialEq, Eq)]
struct Truth {
    clicks: u64,
    bot_clicks: u64,
    referrers: BTreeMap<String, u64>,
    countries: BTreeMap<String, u64>,
    browsers: BTreeMap<String, u64>,
    devices: BTreeMap<String, u64>,
    bots: BTreeMap<String, u64>,
}

/// Sends `n` varied redirects to `code`, 50 at a time; returns the truth.
async fn send_traffic(client: &Client, base: &str, code: &str, n: usize) -> Truth {
    let mut truth = Truth::default();
    let mut requests = Vec::new();
    for i in 0..n {
        let (ua, bot, browser, device) = AGENTS[i % AGENTS.len()];
        let (referer, referrer) = REFERERS[i % REFERERS.len()];
        let (country_header, country) = COUNTRIES[i % COUNTRIES.len()];
        match bot {
            Some(name) => {
                truth.bot_clicks += 1;
                *truth.bots.entry(name.into()).or_default() += 1;
            }
            None => {
                truth.clicks += 1;
                *truth.referrers.entry(referrer.into()).or_default() += 1;
                *truth.countries.entry(country.into()).or_default() += 1;
                *truth.browsers.entry(browser.into()).or_default() += 1;
                *truth.devices.entry(device.into()).or_default() += 1;
            }
        }
        let mut request = client
            .get(format!("{base}/{code}"))
            .header("user-agent", ua);
        if let Some(referer) = referer {
            request = request.header("referer", referer);
        }
        if let Some(country) = country_header {
            request = request.header("cloudfront-viewer-country", country);
        }
        requests.push(request);
    }
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let chunk: Vec<_> = requests.by_ref().take(50).map(|r| r.send()).collect();
        for response in join_all(chunk).await {
            assert_eq!(response.expect("redirect").status(), StatusCode::FOUND);
        }
    }
    truth
}

fn top(stats: &Value, list: &str) -> BTreeMap<String, u64> {
    stats[list]
        .as_array()
        .expect("top list")
        .iter()
        .map(|e| {
            (
                e["value"].as_str().expect("value").to_owned(),
                e["clicks"].as_u64().expect("clicks"),
            )
        })
        .collect()
}

fn observed(stats: &Value) -> Truth {
    Truth {
        clicks: stats["total_clicks"].as_u64().expect("total"),
        bot_clicks: stats["bot_clicks"].as_u64().expect("bots"),
        referrers: top(stats, "top_referrers"),
        countries: top(stats, "top_countries"),
        browsers: top(stats, "top_browsers"),
        devices: top(stats, "top_devices"),
        bots: top(stats, "top_bots"),
    }
}

async fn fetch_stats(client: &Client, base: &str, code: &str) -> Value {
    let response = client
        .get(format!("{base}/api/v1/links/{code}/stats?top=100"))
        .send()
        .await
        .expect("stats");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("JSON")
}

#[tokio::test]
async fn stats_count_people_and_bots_exactly() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/counted").await;
    let truth = send_traffic(&app.client, &app.address, &code, 1000).await;
    assert_eq!(truth.clicks + truth.bot_clicks, 1000);
    assert!(truth.bot_clicks > 0 && truth.clicks > 0);

    // Counts land within a flush interval (100 ms here); allow for a slow
    // machine (the production tier shares two cores with Cassandra and
    // Kafka), then demand exactness.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stats = fetch_stats(&app.client, &app.address, &code).await;
    while observed(&stats).clicks + observed(&stats).bot_clicks < 1000 && Instant::now() < deadline
    {
        tokio::time::sleep(app.settings.events.inprocess.flush_interval).await;
        stats = fetch_stats(&app.client, &app.address, &code).await;
    }
    // On the production tier a counter write that timed out is given up
    // (written again, it could count twice): say so if that is the cause.
    let failures = app.metric("shortener_click_flush_failures_total").await;
    let uncertain = app.metric("shortener_click_rows_uncertain_total").await;
    assert_eq!(
        observed(&stats),
        truth,
        "{failures} failed click flushes, {uncertain} rows given up as uncertain"
    );

    let series_total: u64 = stats["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|p| p["clicks"].as_u64().expect("clicks"))
        .sum();
    assert_eq!(series_total, truth.clicks);
    assert_eq!(stats["granularity"], "day");
    // 30 days back from now, in whole days: 31 buckets.
    assert_eq!(stats["series"].as_array().expect("series").len(), 31);

    // HEAD requests do not count.
    for _ in 0..10 {
        app.head(&format!("/{code}")).await;
    }
    tokio::time::sleep(app.settings.events.inprocess.flush_interval * 3).await;
    assert_eq!(
        observed(&fetch_stats(&app.client, &app.address, &code).await),
        truth
    );
}

#[tokio::test]
async fn stats_validate_their_range() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/ranged").await;
    let hourly = app.stats(&code, "?granularity=hour").await;
    assert_eq!(hourly["granularity"], "hour");
    assert_eq!(hourly["series"].as_array().expect("series").len(), 49);
    let fixed = app
        .stats(
            &code,
            "?granularity=hour&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
        )
        .await;
    let series = fixed["series"].as_array().expect("series");
    assert_eq!(series.len(), 24);
    assert_eq!(series[0]["start"], "2026-01-01T00:00:00Z");
    assert_eq!(series[0]["clicks"], 0);
    for query in [
        "?granularity=minute",
        "?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?granularity=hour&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "?top=0",
        "?top=101",
        "?from=yesterday",
        "?colour=blue",
    ] {
        let response = app.get(&format!("/api/v1/links/{code}/stats{query}")).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    assert_problem(
        app.get("/api/v1/links/nosuchcode/stats").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_graceful_restart_loses_no_click() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let client = Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");

    let tier = Tier::new(dir.path());
    // Only the shutdown flush can write the counts in time.
    let flush = [("SHORTENER__EVENTS__INPROCESS__FLUSH_INTERVAL", "1h")];
    let first = ApiProcess::start(dir.path(), &tier, &flush).await;
    let created: Value = client
        .post(format!("{}/api/v1/links", first.address))
        .json(&json!({ "url": "https://example.com/restart" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let code = created["code"].as_str().expect("code").to_owned();
    let truth = send_traffic(&client, &first.address, &code, 1000).await;
    // Nothing written yet: the flush interval is an hour.
    let before = fetch_stats(&client, &first.address, &code).await;
    assert_eq!(observed(&before).clicks + observed(&before).bot_clicks, 0);
    first.terminate(Duration::from_secs(30)).await;

    let second = ApiProcess::start(dir.path(), &tier, &flush).await;
    let stats = fetch_stats(&client, &second.address, &code).await;
    assert_eq!(observed(&stats), truth);
    let get = client
        .get(format!("{}/{code}", second.address))
        .send()
        .await
        .expect("redirect");
    assert_eq!(get.headers()["location"], "https://example.com/restart");
    second.terminate(Duration::from_secs(30)).await;
}
