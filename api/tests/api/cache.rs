//! The L1 cache: coalesced loads, negative entries, and writes that apply on
//! the next request.

use std::sync::atomic::Ordering;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_stampede_on_an_uncached_code_reads_the_store_once() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/stampede").await;
    app.store.link_reads.store(0, Ordering::SeqCst);

    let path = format!("/{code}");
    let responses = join_all((0..200).map(|_| app.get(&path))).await;
    for response in &responses {
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            response.headers()["location"],
            "https://example.com/stampede"
        );
    }
    assert_eq!(app.store.link_reads.load(Ordering::SeqCst), 1);

    // And later requests are served from the cache.
    for _ in 0..20 {
        assert_eq!(app.get(&path).await.status(), StatusCode::FOUND);
    }
    assert_eq!(app.store.link_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_codes_are_cached_negatively() {
    let app = spawn_app().await;
    app.store.link_reads.store(0, Ordering::SeqCst);
    let responses = join_all((0..100).map(|_| app.get("/NoSuch42"))).await;
    assert!(
        responses
            .iter()
            .all(|r| r.status() == StatusCode::NOT_FOUND)
    );
    for _ in 0..50 {
        assert_eq!(app.get("/NoSuch42").await.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(app.store.link_reads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_alias_created_after_a_miss_is_served_at_once() {
    let app = spawn_app().await;
    assert_eq!(
        app.get("/later-alias").await.status(),
        StatusCode::NOT_FOUND
    );
    app.create_ok(json!({ "url": "https://example.com/later", "alias": "later-alias" }))
        .await;
    let get = app.get("/later-alias").await;
    assert_eq!(get.status(), StatusCode::FOUND);
    assert_eq!(get.headers()["location"], "https://example.com/later");
}

#[tokio::test]
async fn patch_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let (code, token) = app.shorten("https://example.com/before").await;
    let path = format!("/{code}");
    // Load it into the cache with a stampede first.
    join_all((0..50).map(|_| app.get(&path))).await;
    assert_eq!(
        app.get(&path).await.headers()["location"],
        "https://example.com/before"
    );

    let patched = app
        .patch(
            &code,
            &token,
            json!({ "url": "https://example.com/after", "redirect": 301 }),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);

    let get = app.get(&path).await;
    assert_eq!(get.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(get.headers()["location"], "https://example.com/after");
}

#[tokio::test]
async fn delete_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let (code, token) = app.shorten("https://example.com/doomed").await;
    let path = format!("/{code}");
    join_all((0..50).map(|_| app.get(&path))).await;

    let deleted = app.delete(&code, &token).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);

    let problem = assert_problem(app.get(&path).await, StatusCode::GONE).await;
    assert_eq!(problem["type"], "urn:shortener:problem:link-deleted");
    let head = app.head(&path).await;
    assert_eq!(head.status(), StatusCode::GONE);
    assert_problem(
        app.get(&format!("/api/v1/links/{code}")).await,
        StatusCode::GONE,
    )
    .await;
    let again = app.delete(&code, &token).await;
    assert_problem(again, StatusCode::GONE).await;
    let patch = app
        .patch(
            &code,
            &token,
            json!({ "url": "https://example.com/revived" }),
        )
        .await;
    assert_problem(patch, StatusCode::GONE).await;
}

#[tokio::test]
async fn renewing_an_expired_link_takes_effect_on_the_next_request() {
    let app = spawn_app().await;
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    let body = app
        .create_ok(json!({ "url": "https://example.com/renew", "expires_at": soon }))
        .await;
    let code = body["code"].as_str().expect("code");
    let token = body["token"].as_str().expect("token");
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        StatusCode::GONE
    );
    let renewed = app.patch(code, token, json!({ "expires_at": null })).await;
    assert_eq!(renewed.status(), StatusCode::OK);
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        StatusCode::FOUND
    );
}

#[tokio::test]
async fn negative_entries_expire_after_their_ttl() {
    let app = spawn_app_with(|s| {
        s.cache.l1.negative_ttl = std::time::Duration::from_millis(300);
        // L2, where there is one, remembers unknown codes as well.
        s.cache.redis.negative_ttl = std::time::Duration::from_secs(1);
    })
    .await;
    app.store.link_reads.store(0, Ordering::SeqCst);
    assert_eq!(app.get("/Unknown77").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/Unknown77").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.store.link_reads.load(Ordering::SeqCst), 1);
    let longest = app
        .settings
        .cache
        .l1
        .negative_ttl
        .max(app.settings.cache.redis.negative_ttl);
    tokio::time::sleep(longest + std::time::Duration::from_millis(100)).await;
    assert_eq!(app.get("/Unknown77").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.store.link_reads.load(Ordering::SeqCst), 2);
}
