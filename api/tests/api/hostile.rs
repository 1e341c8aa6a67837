//! Hostile requests: extreme values in every field a client controls, ids
//! at the end of their space, links that would lead back to the service,
//! wrong methods, panics and a store that breaks. Each answer is a clear
//! problem, never a panic, and the service goes on serving afterwards.

use std::time::Duration;

use chrono::Utc;
use links::codegen::{CodeGenerator, CodeKey, MAX_ID};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shortener_api::Application;
use stores::sqlite::{SqliteOptions, SqliteStore};

use crate::helpers::{Tier, assert_problem, spawn_app, spawn_app_with};

/// Times at the edges of what RFC 3339 and chrono can say.
const EXTREME_TIMES: [&str; 6] = [
    "+262142-12-31T00:00:00Z",
    "-262143-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
];

#[tokio::test]
async fn extreme_expiries_are_refused_and_writes_go_on() {
    let app = spawn_app().await;
    let (code, token) = app.shorten("https://example.com/extreme").await;
    for at in EXTREME_TIMES {
        let created = app
            .create(json!({ "url": "https://example.com/x", "expires_at": at }))
            .await;
        assert_problem(created, StatusCode::BAD_REQUEST).await;
        let patched = app.patch(&code, &token, json!({ "expires_at": at })).await;
        let problem = assert_problem(patched, StatusCode::BAD_REQUEST).await;
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("expires_at")),
            "{at}: {problem}"
        );
    }
    // A century ahead is the limit, and is accepted.
    let century = Utc::now() + chrono::Duration::days(36_500);
    let patched = app
        .patch(&code, &token, json!({ "expires_at": century }))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    // Every kind of write still works: create, change, delete, and the
    // id leases behind generated codes.
    for i in 0..5 {
        app.shorten(&format!("https://example.com/after/{i}")).await;
    }
    let patched = app
        .patch(&code, &token, json!({ "url": "https://example.com/v2" }))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(
        app.delete(&code, &token).await.status(),
        StatusCode::NO_CONTENT
    );
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
}

#[tokio::test]
async fn extreme_stats_ranges_are_refused_for_any_code() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/ranges").await;
    for target in [code.as_str(), "NoSuchCode", "x"] {
        for at in EXTREME_TIMES {
            let encoded = at.replace('+', "%2B");
            for query in [format!("?to={encoded}"), format!("?from={encoded}")] {
                let response = app
                    .get(&format!("/api/v1/links/{target}/stats{query}"))
                    .await;
                assert!(
                    matches!(
                        response.status(),
                        StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::OK
                    ),
                    "{target}{query}: {}",
                    response.status()
                );
                assert_eq!(
                    response
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok()),
                    Some(if response.status() == StatusCode::OK {
                        "application/json"
                    } else {
                        "application/problem+json"
                    }),
                    "{target}{query}"
                );
            }
        }
    }
    let out_of_range = app
        .get(&format!(
            "/api/v1/links/{code}/stats?to=-262143-01-01T00:00:00Z"
        ))
        .await;
    assert_problem(out_of_range, StatusCode::BAD_REQUEST).await;
    let huge_top = app
        .get(&format!(
            "/api/v1/links/{code}/stats?top=99999999999999999999999"
        ))
        .await;
    assert_problem(huge_top, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn stats_of_a_deleted_link_are_gone_with_it() {
    let app = spawn_app().await;
    let (code, token) = app.shorten("https://example.com/short-lived").await;
    app.stats(&code, "").await;
    assert_eq!(
        app.delete(&code, &token).await.status(),
        StatusCode::NO_CONTENT
    );
    let gone = app.get(&format!("/api/v1/links/{code}/stats")).await;
    assert_problem(gone, StatusCode::GONE).await;
}

/// Eleven characters straddle the end of the id space (2⁶³): every valid
/// alias of that length is created, whatever id it names.
#[tokio::test]
async fn every_eleven_character_alias_can_be_created() {
    let app = spawn_app().await;
    let generator = CodeGenerator::new(&CodeKey::generate(), 7).expect("generator");
    let mut aliases: Vec<String> = (0..40)
        .map(|_| {
            let n: u128 = rand::random();
            let mut alias = base62(n);
            alias.truncate(11);
            while alias.len() < 11 {
                alias.push('x');
            }
            alias
        })
        .collect();
    // The code of the last id is not the store's key's, but it is a valid
    // 11-character alias all the same.
    aliases.push(generator.code(MAX_ID).to_string());
    for alias in aliases {
        let response = app
            .create(json!({ "url": "https://example.com/eleven", "alias": alias }))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{alias}");
        assert_eq!(
            app.get(&format!("/{alias}")).await.status(),
            StatusCode::FOUND,
            "{alias}"
        );
    }
}

fn base62(mut n: u128) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::new();
    while out.len() < 22 {
        out.push(char::from(DIGITS[(n % 62) as usize]));
        n /= 62;
    }
    out
}

#[tokio::test]
async fn links_back_to_the_service_are_refused_however_spelt() {
    let app = spawn_app_with(|s| {
        s.http.public_base_url = Some("https://Sho.RT".parse().expect("valid base URL"));
        s.links.blocked_hosts = ["evil.example", "[2001:db8::1]"]
            .map(|host| links::HostIdentity::parse(host).expect("valid"))
            .to_vec();
    })
    .await;
    for url in [
        "https://sho.rt/abc",
        "https://SHO.RT./abc",
        "https://ｓｈｏ.ｒｔ/abc",
        "http://sho.rt:8080/abc",
        // Listening on loopback: every loopback name and address is the
        // service too.
        "http://localhost/abc",
        "http://LocalHost./abc",
        "http://api.localhost/abc",
        "http://127.0.0.1/abc",
        "http://127.9.9.9:1/abc",
        "http://2130706433/abc",
        "http://0x7f.1/abc",
        "http://[::1]/abc",
        "http://[::ffff:127.0.0.1]/abc",
        "http://0.0.0.0/abc",
        "http://evil.example./x",
        "http://[2001:DB8:0:0::1]/x",
    ] {
        let response = app.create(json!({ "url": url })).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "urn:shortener:problem:invalid-url",
            "{url}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("not allowed")),
            "{url}: {problem}"
        );
    }
    let two_thousand = format!("https://{}.example/", "a".repeat(2000));
    for url in [
        "https://./",
        "https://a..b/",
        "https://-/x",
        two_thousand.as_str(),
    ] {
        let problem = assert_problem(
            app.create(json!({ "url": url })).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(
            problem["type"], "urn:shortener:problem:invalid-url",
            "{url}"
        );
    }
    for url in [
        "https://sub.sho.rt/abc",
        "https://sho.rt.example/abc",
        "https://example.com./trailing-dot",
    ] {
        app.create_ok(json!({ "url": url })).await;
    }
}

#[tokio::test]
async fn wrong_methods_name_the_allowed_ones() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/methods").await;
    let code_path = format!("/{code}");
    let link_path = format!("/api/v1/links/{code}");
    let stats_path = format!("/api/v1/links/{code}/stats");
    for (method, path, allow) in [
        ("PUT", "/api/v1/links", "POST"),
        ("GET", "/api/v1/links", "POST"),
        ("PUT", link_path.as_str(), "GET, PATCH, DELETE"),
        ("POST", link_path.as_str(), "GET, PATCH, DELETE"),
        ("DELETE", stats_path.as_str(), "GET"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/readyz", "GET"),
        ("POST", "/metrics", "GET"),
        ("PUT", "/api/v1/openapi.json", "GET"),
        ("POST", code_path.as_str(), "GET, HEAD"),
        ("DELETE", "/NoSuchCode", "GET, HEAD"),
    ] {
        let response = app
            .client
            .request(method.parse().expect("method"), app.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        assert_problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    }
}

/// A panic on a request's path is that request's opaque 500, counted as
/// one, and the service goes on.
#[tokio::test]
async fn a_panicking_request_is_an_opaque_500_and_counted() {
    runtime::panics::install_hook();
    let app = spawn_app().await;
    *app.store.panic_on_url.lock().expect("fault") = Some("panic".into());
    let panics_before = runtime::panics::count();
    for _ in 0..3 {
        let response = app
            .create(json!({ "url": "https://example.com/panic" }))
            .await;
        let problem = assert_problem(response, StatusCode::INTERNAL_SERVER_ERROR).await;
        assert_eq!(problem["detail"], "internal error", "{problem}");
    }
    assert!(runtime::panics::count() >= panics_before + 3);
    // The same workers go on serving.
    app.shorten("https://example.com/fine").await;
    assert_eq!(
        app.metric(r#"shortener_http_requests_total{route="create",status="5xx"}"#)
            .await,
        3.0
    );
    assert!(app.metric("shortener_panics_total").await >= 3.0);
}

/// The SQLite writer's thread gone: writes answer 503, readiness too, and
/// the service stops by itself, with an error, to be restarted.
#[tokio::test]
async fn a_broken_store_fails_readiness_and_stops_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = Tier::new(dir.path());
    let settings = tier.settings();
    let store = SqliteStore::open(SqliteOptions {
        dir: dir.path().join("broken"),
        readers: 2,
        max_in_flight: 64,
        busy_timeout: Duration::from_secs(5),
        retention: chrono::Duration::days(30),
        background: runtime::background::Priority::Normal,
    })
    .await
    .expect("store");
    let app = Application::build_with_store(settings, store.clone())
        .await
        .expect("app");
    let base = format!("http://{}", app.local_addr());
    let server = tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        StatusCode::OK
    );
    store.stop_writer_thread().await;
    let create = client
        .post(format!("{base}/api/v1/links"))
        .json(&json!({ "url": "https://example.com/after-the-break", "alias": "broken1" }))
        .send()
        .await
        .expect("answer");
    assert_problem(create, StatusCode::SERVICE_UNAVAILABLE).await;
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.expect("JSON");
    // The state, not the error's text: that is logged, not sent.
    assert_eq!(body["storage"], "broken", "{body}");
    let outcome = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the service stops by itself")
        .expect("task");
    assert!(
        matches!(
            outcome,
            Err(shortener_api::startup::StartupError::StoreBroken(_))
        ),
        "{outcome:?}"
    );
}
