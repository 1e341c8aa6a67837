//! Two instances of one deployment, sharing the store and Redis.

use std::{sync::Arc, time::Duration};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    helpers::{Tier, spawn_app_in},
    outage::{eventually, one_at_a_time},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_instance_reach_the_other_within_a_second() {
    let _serial = one_at_a_time().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let tier = Arc::new(Tier::production_tier(dir.path()));
    let a = spawn_app_in(tier.clone(), tempfile::tempdir().expect("dir"), |_| {}).await;
    let b = spawn_app_in(tier, tempfile::tempdir().expect("dir"), |_| {}).await;
    // L1 alone would keep B's view for its whole TTL.
    assert!(b.settings.cache.l1.ttl >= Duration::from_secs(60));

    let (code, token) = a.shorten("https://example.com/before").await;
    let path = format!("/{code}");
    let location = |app: &crate::helpers::TestApp| {
        let path = path.clone();
        let client = app.client.clone();
        let url = app.url(&path);
        async move {
            let response = client.get(url).send().await.expect("GET");
            (
                response.status(),
                response
                    .headers()
                    .get("location")
                    .map(|v| v.to_str().expect("ascii").to_owned()),
            )
        }
    };
    assert_eq!(
        location(&b).await,
        (StatusCode::FOUND, Some("https://example.com/before".into()))
    );

    let patched = a
        .patch(&code, &token, json!({ "url": "https://example.com/after" }))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let took = eventually(Duration::from_secs(1), "B follows the PATCH", || async {
        location(&b).await.1.as_deref() == Some("https://example.com/after")
    })
    .await;
    eprintln!("PATCH on A seen by B after {took:?}");

    assert_eq!(
        a.delete(&code, &token).await.status(),
        StatusCode::NO_CONTENT
    );
    let took = eventually(Duration::from_secs(1), "B follows the DELETE", || async {
        location(&b).await.0 == StatusCode::GONE
    })
    .await;
    eprintln!("DELETE on A seen by B after {took:?}");
}
