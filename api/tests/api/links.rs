//! Creating, following and managing links.

use std::{collections::HashSet, num::NonZeroU64};

use chrono::{Duration, Utc};
use futures_util::future::join_all;
use links::codegen::{CodeGenerator, CodeKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn create_then_follow_with_get_and_head() {
    let app = spawn_app().await;
    let response = app
        .create(json!({ "url": "https://example.com/a/b?c=d#e" }))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("JSON");
    let code = body["code"].as_str().expect("code");
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(body["short_url"], format!("{}/{code}", app.address));
    assert_eq!(body["url"], "https://example.com/a/b?c=d#e");
    assert_eq!(body["redirect"], 302);
    assert_eq!(body["expires_at"], Value::Null);
    assert!(body["created_at"].is_string());
    assert_eq!(body["token"].as_str().expect("token").len(), 43);
    assert_eq!(location, format!("/api/v1/links/{code}"));

    let get = app.get(&format!("/{code}")).await;
    assert_eq!(get.status(), StatusCode::FOUND);
    assert_eq!(get.headers()["location"], "https://example.com/a/b?c=d#e");
    assert_eq!(get.headers()["cache-control"], "private, max-age=90");

    let head = app.head(&format!("/{code}")).await;
    assert_eq!(head.status(), StatusCode::FOUND);
    assert_eq!(head.headers()["location"], "https://example.com/a/b?c=d#e");
}

#[tokio::test]
async fn links_answer_with_their_own_redirect_status() {
    let app = spawn_app().await;
    for status in [301u16, 302, 307, 308] {
        let body = app
            .create_ok(json!({ "url": "https://example.com/s", "redirect": status }))
            .await;
        assert_eq!(body["redirect"], status);
        let code = body["code"].as_str().expect("code");
        let get = app.get(&format!("/{code}")).await;
        assert_eq!(get.status().as_u16(), status);
        assert_eq!(get.headers()["location"], "https://example.com/s");
        let head = app.head(&format!("/{code}")).await;
        assert_eq!(head.status().as_u16(), status);
    }
    let bad = app
        .create(json!({ "url": "https://example.com/", "redirect": 303 }))
        .await;
    assert_problem(bad, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn concurrent_creates_get_distinct_codes() {
    let app =
        spawn_app_with(|s| s.links.id_block_size = NonZeroU64::new(7).expect("not zero")).await;
    let creates =
        (0..100).map(|i| app.create_ok(json!({ "url": format!("https://example.com/{i}") })));
    let bodies = join_all(creates).await;
    let codes: HashSet<&str> = bodies
        .iter()
        .map(|b| b["code"].as_str().expect("code"))
        .collect();
    assert_eq!(codes.len(), 100);
    for body in &bodies {
        let code = body["code"].as_str().expect("code");
        let get = app.get(&format!("/{code}")).await;
        assert_eq!(
            get.headers()["location"],
            body["url"].as_str().expect("url")
        );
    }
}

#[tokio::test]
async fn aliases_are_first_come_first_served() {
    let app = spawn_app().await;
    let body = app
        .create_ok(json!({ "url": "https://example.com/one", "alias": "spring-launch_26" }))
        .await;
    assert_eq!(body["code"], "spring-launch_26");
    assert_eq!(
        body["short_url"],
        format!("{}/spring-launch_26", app.address)
    );
    let taken = app
        .create(json!({ "url": "https://example.com/two", "alias": "spring-launch_26" }))
        .await;
    let problem = assert_problem(taken, StatusCode::CONFLICT).await;
    assert_eq!(problem["type"], "urn:shortener:problem:alias-taken");
    let get = app.get("/spring-launch_26").await;
    assert_eq!(get.headers()["location"], "https://example.com/one");
}

#[tokio::test]
async fn invalid_aliases_are_refused() {
    let app = spawn_app().await;
    for alias in [
        "api",
        "Healthz",
        "readyz",
        "metrics",
        "static",
        "admin",
        "ab",
        "has space",
        "a/b",
        "ünï",
        &"x".repeat(65),
    ] {
        let response = app
            .create(json!({ "url": "https://example.com/", "alias": alias }))
            .await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "urn:shortener:problem:invalid-alias",
            "{alias}"
        );
    }
}

#[tokio::test]
async fn unsafe_or_invalid_urls_are_refused() {
    let app = spawn_app().await;
    let own = format!("{}/abc", app.address);
    let long = format!("https://example.com/{}", "a".repeat(2100));
    let cases = [
        "javascript:alert(document.cookie)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "ftp://example.com/file",
        "/relative/path",
        "example.com",
        "https://user:secret@example.com/",
        "https://trusted.example@evil.example/",
        "https://example.com/\r\nSet-Cookie: a=b",
        "https://example.com/%0d%0aSet-Cookie:%20a=b",
        "https://example.com/\u{0}",
        "http://",
        "",
        own.as_str(),
        long.as_str(),
    ];
    for url in cases {
        let response = app.create(json!({ "url": url })).await;
        let problem = assert_problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            problem["type"], "urn:shortener:problem:invalid-url",
            "{url:?}"
        );
    }
    let idn = app
        .create_ok(json!({ "url": "https://bücher.example/straße" }))
        .await;
    assert_eq!(idn["url"], "https://xn--bcher-kva.example/stra%C3%9Fe");
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let app = spawn_app_with(|s| s.http.max_body_bytes = 4096).await;
    let post = |body: String, content_type: &'static str| {
        app.client
            .post(app.url("/api/v1/links"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = post("{\"url\": ".into(), "application/json")
        .await
        .expect("request");
    let problem = assert_problem(malformed, StatusCode::BAD_REQUEST).await;
    assert_eq!(problem["type"], "urn:shortener:problem:malformed-json");

    let missing = post("{}".into(), "application/json")
        .await
        .expect("request");
    let problem = assert_problem(missing, StatusCode::BAD_REQUEST).await;
    assert!(problem["detail"].as_str().expect("detail").contains("url"));

    let unknown_field = post(
        r#"{"url":"https://e.com/","expiry":"2030-01-01T00:00:00Z"}"#.into(),
        "application/json",
    )
    .await
    .expect("request");
    let problem = assert_problem(unknown_field, StatusCode::BAD_REQUEST).await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("expiry")
    );

    let wrong_type = post(r#"{"url": 42}"#.into(), "application/json")
        .await
        .expect("request");
    assert_problem(wrong_type, StatusCode::BAD_REQUEST).await;

    let bad_time = post(
        r#"{"url":"https://e.com/","expires_at":"tomorrow"}"#.into(),
        "application/json",
    )
    .await
    .expect("request");
    assert_problem(bad_time, StatusCode::BAD_REQUEST).await;

    let oversized = format!(r#"{{"url":"https://example.com/{}"}}"#, "a".repeat(5000));
    let response = post(oversized, "application/json").await.expect("request");
    assert_problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let not_json = post(
        "url=https://example.com".into(),
        "application/x-www-form-urlencoded",
    )
    .await
    .expect("request");
    assert_problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    // Still serving after all of that.
    app.shorten("https://example.com/still-fine").await;
}

#[tokio::test]
async fn unknown_codes_are_404_and_routes_answer_problems() {
    let app = spawn_app().await;
    for path in [
        "/nosuchcode",
        "/zzzzzzz",
        "/ab",
        "/bad.code",
        "/a/b/c",
        "/api/v1/nothing",
    ] {
        let problem = assert_problem(app.get(path).await, StatusCode::NOT_FOUND).await;
        assert!(
            problem["type"]
                .as_str()
                .expect("type")
                .ends_with("not-found"),
            "{path}"
        );
    }
    let head = app.head("/nosuchcode").await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    let wrong_method = app
        .client
        .put(app.url("/api/v1/links"))
        .send()
        .await
        .expect("PUT");
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let wrong_method = app
        .client
        .post(app.url("/somecode"))
        .send()
        .await
        .expect("POST");
    assert_problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn expired_links_are_gone() {
    let app = spawn_app().await;
    let soon = Utc::now() + Duration::milliseconds(600);
    let body = app
        .create_ok(json!({ "url": "https://example.com/brief", "expires_at": soon }))
        .await;
    let code = body["code"].as_str().expect("code").to_owned();
    assert!(body["expires_at"].is_string());
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        StatusCode::FOUND
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let problem = assert_problem(app.get(&format!("/{code}")).await, StatusCode::GONE).await;
    assert_eq!(problem["type"], "urn:shortener:problem:link-expired");

    let past = app
        .create(
            json!({ "url": "https://example.com/", "expires_at": Utc::now() - Duration::hours(1) }),
        )
        .await;
    assert_problem(past, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn the_api_reads_links_back() {
    let app = spawn_app().await;
    let at = (Utc::now() + Duration::days(7)).to_rfc3339();
    let created = app
        .create_ok(json!({ "url": "https://example.com/r", "expires_at": at, "redirect": 308, "forward_query": true }))
        .await;
    let code = created["code"].as_str().expect("code");
    let response = app.get(&format!("/api/v1/links/{code}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    for field in [
        "code",
        "short_url",
        "url",
        "created_at",
        "expires_at",
        "redirect",
        "forward_query",
    ] {
        assert_eq!(body[field], created[field], "{field}");
    }
    assert!(
        body.get("token").is_none(),
        "the token is shown only at creation"
    );
    assert_problem(
        app.get("/api/v1/links/nosuchcode").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn query_strings_are_forwarded_when_the_link_asks() {
    let app = spawn_app().await;
    let forwarding = app
        .create_ok(json!({ "url": "https://example.com/p?x=1#frag", "forward_query": true }))
        .await;
    let code = forwarding["code"].as_str().expect("code");
    let get = app
        .get(&format!("/{code}?utm_source=news&utm_medium=mail"))
        .await;
    assert_eq!(
        get.headers()["location"],
        "https://example.com/p?x=1&utm_source=news&utm_medium=mail#frag"
    );
    let plain = app.get(&format!("/{code}")).await;
    assert_eq!(
        plain.headers()["location"],
        "https://example.com/p?x=1#frag"
    );

    let (code, _) = app.shorten("https://example.com/q").await;
    let get = app.get(&format!("/{code}?utm_source=news")).await;
    assert_eq!(get.headers()["location"], "https://example.com/q");
}

#[tokio::test]
async fn changing_and_deleting_needs_the_links_token() {
    let app =
        spawn_app_with(|s| s.links.admin_token = "an-admin-token-for-tests".to_owned().into())
            .await;
    let (code, token) = app.shorten("https://example.com/mine").await;
    let (_, other_token) = app.shorten("https://example.com/theirs").await;
    let path = app.url(&format!("/api/v1/links/{code}"));
    let change = json!({ "url": "https://example.com/changed" });

    let anonymous = app
        .client
        .patch(&path)
        .json(&change)
        .send()
        .await
        .expect("PATCH");
    let problem = assert_problem(anonymous, StatusCode::UNAUTHORIZED).await;
    assert_eq!(problem["type"], "urn:shortener:problem:unauthorized");
    let wrong = app.patch(&code, &other_token, change.clone()).await;
    assert_problem(wrong, StatusCode::FORBIDDEN).await;
    let wrong = app.delete(&code, "nonsense").await;
    assert_problem(wrong, StatusCode::FORBIDDEN).await;
    assert_eq!(
        app.get(&format!("/{code}")).await.headers()["location"],
        "https://example.com/mine"
    );

    let own = app.patch(&code, &token, change.clone()).await;
    assert_eq!(own.status(), StatusCode::OK);
    let admin = app
        .patch(
            &code,
            "an-admin-token-for-tests",
            json!({ "redirect": 307 }),
        )
        .await;
    assert_eq!(admin.status(), StatusCode::OK);
    let body: Value = admin.json().await.expect("JSON");
    assert_eq!(body["url"], "https://example.com/changed");
    assert_eq!(body["redirect"], 307);
}

#[tokio::test]
async fn patch_validates_like_create() {
    let app = spawn_app().await;
    let (code, token) = app.shorten("https://example.com/v").await;
    for body in [
        json!({ "url": "javascript:alert(1)" }),
        json!({ "redirect": 200 }),
        json!({ "expires_at": (Utc::now() - Duration::hours(1)).to_rfc3339() }),
        json!({ "code": "renamed" }),
    ] {
        let response = app.patch(&code, &token, body.clone()).await;
        assert_problem(response, StatusCode::BAD_REQUEST).await;
    }
    let later = Utc::now() + Duration::days(1);
    let set = app
        .patch(&code, &token, json!({ "expires_at": later }))
        .await;
    let body: Value = set.json().await.expect("JSON");
    assert!(body["expires_at"].is_string());
    let clear = app
        .patch(&code, &token, json!({ "expires_at": null }))
        .await;
    let body: Value = clear.json().await.expect("JSON");
    assert_eq!(body["expires_at"], Value::Null);
}

#[tokio::test]
async fn racing_creates_of_one_alias_admit_exactly_one() {
    let app = spawn_app().await;
    let creates = (0..32).map(|i| {
        app.create(
            json!({ "url": format!("https://example.com/race/{i}"), "alias": "race-for-it" }),
        )
    });
    let mut created = Vec::new();
    let mut conflicts = 0;
    for response in join_all(creates).await {
        match response.status() {
            StatusCode::CREATED => created.push(response.json::<Value>().await.expect("JSON")),
            StatusCode::CONFLICT => {
                assert_problem(response, StatusCode::CONFLICT).await;
                conflicts += 1;
            }
            other => panic!("a racing create answered {other}"),
        }
    }
    assert_eq!((created.len(), conflicts), (1, 31));
    let winner = created[0]["url"].as_str().expect("url");
    assert_eq!(app.get("/race-for-it").await.headers()["location"], winner);
}

#[tokio::test]
async fn generated_codes_never_take_an_alias() {
    let key = CodeKey::generate();
    let generator = CodeGenerator::new(&key, 7).expect("generator");
    let app = spawn_app_with(|s| {
        s.links.code_key = Some(key.clone());
        s.links.id_block_size = NonZeroU64::new(10).expect("not zero");
    })
    .await;
    // The code of an id not yet leased: the alias sets it aside.
    let ahead = generator.code(14).to_string();
    app.create_ok(json!({ "url": "https://example.com/alias", "alias": ahead }))
        .await;
    let mut codes = HashSet::new();
    for i in 0..30 {
        let (code, _) = app.shorten(&format!("https://example.com/gen/{i}")).await;
        codes.insert(code);
    }
    assert_eq!(codes.len(), 30);
    assert!(!codes.contains(&ahead), "a generated code took the alias");
    assert_eq!(
        app.get(&format!("/{ahead}")).await.headers()["location"],
        "https://example.com/alias"
    );
    // The code of an id already leased may be issued any moment: refused.
    let leased = generator.code(31).to_string();
    let taken = app
        .create(json!({ "url": "https://example.com/late", "alias": leased }))
        .await;
    assert_problem(taken, StatusCode::CONFLICT).await;
}
