//! Cassandra (the stand-in for ScyllaDB) stopped.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{assert_problem, spawn_production_app},
    outage::{Kind, Outage, eventually, one_at_a_time},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_cached_links_redirect_and_writes_fail_fast() {
    let _serial = one_at_a_time().await;
    let app = spawn_production_app(|s| {
        s.storage.scylla.request_timeout = Duration::from_secs(1);
    })
    .await;
    let mut codes = Vec::new();
    for i in 0..20 {
        let (code, _) = app.shorten(&format!("https://example.com/db/{i}")).await;
        assert_eq!(
            app.get(&format!("/{code}")).await.status(),
            StatusCode::FOUND
        );
        codes.push(code);
    }

    let outage = Outage::begin("cassandra", Kind::Stopped).await;
    for code in &codes {
        let response = app.get(&format!("/{code}")).await;
        assert_eq!(response.status(), StatusCode::FOUND, "cached {code}");
        assert_eq!(
            response.headers()["location"],
            format!(
                "https://example.com/db/{}",
                codes.iter().position(|c| c == code).expect("known")
            )
        );
    }
    for i in 0..10 {
        let started = Instant::now();
        let response = app
            .create(json!({ "url": format!("https://example.com/down/{i}") }))
            .await;
        let took = started.elapsed();
        let problem = assert_problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(problem["type"], "urn:shortener:problem:unavailable");
        assert!(took < Duration::from_secs(1), "a create took {took:?}");
    }
    let alias = app
        .create(json!({ "url": "https://example.com/down", "alias": "while-down" }))
        .await;
    assert_problem(alias, StatusCode::SERVICE_UNAVAILABLE).await;
    let unknown = app.get("/NotCached9").await;
    assert_problem(unknown, StatusCode::SERVICE_UNAVAILABLE).await;

    outage.end().await;
    let resumed = eventually(Duration::from_secs(60), "creates succeed again", || async {
        app.create(json!({ "url": "https://example.com/back" }))
            .await
            .status()
            == StatusCode::CREATED
    })
    .await;
    eprintln!("creates resumed {resumed:?} after Cassandra answered again");
    let (code, _) = app.shorten("https://example.com/after").await;
    assert_eq!(
        app.get(&format!("/{code}")).await.headers()["location"],
        "https://example.com/after"
    );
}
