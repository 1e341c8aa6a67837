//! Probes, metrics, the OpenAPI document, and HTTP limits.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.expect("JSON")["status"], "ok");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["storage"], "ok");
}

#[tokio::test]
async fn metrics_count_links_cache_and_clicks() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/metered").await;
    for _ in 0..3 {
        app.get(&format!("/{code}")).await;
    }
    app.get("/NoSuchCode").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("text");
    for expected in [
        "shortener_links_created_total 1",
        "shortener_clicks_enqueued_total 3",
        "shortener_clicks_dropped_total 0",
        r#"shortener_cache_requests_total{tier="l1",result="miss"} 2"#,
        r#"shortener_cache_requests_total{tier="l1",result="hit"} 2"#,
        r#"shortener_cache_loads_total{tier="l1"} 2"#,
    ] {
        assert!(
            text.lines().any(|line| line == expected),
            "missing {expected:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.expect("JSON");
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/{code}", &["get"][..]),
        ("/api/v1/links", &["post"]),
        ("/api/v1/links/{code}", &["get", "patch", "delete"]),
        ("/api/v1/links/{code}/stats", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/metrics", &["get"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for schema in [
        "CreateLink",
        "CreatedLink",
        "LinkBody",
        "UpdateLink",
        "StatsBody",
        "Problem",
    ] {
        assert!(schemas.contains_key(schema), "{schema} is not documented");
    }
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().expect("a name");
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
    // Operation ids are unique; parameters are where they are read from.
    let mut ids = std::collections::HashSet::new();
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().expect("methods") {
            let id = operation["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().expect("name");
                let expected = if path.contains(&format!("{{{name}}}")) {
                    "path"
                } else {
                    "query"
                };
                assert_eq!(parameter["in"], expected, "{method} {path} {name}");
                assert_eq!(
                    parameter["required"].as_bool().unwrap_or(false),
                    expected == "path",
                    "{method} {path} {name}"
                );
            }
        }
    }
    assert!(
        paths["/{code}"]["head"].is_object(),
        "HEAD is not documented"
    );
    assert_eq!(
        schemas["CreateLink"]["properties"]["url"]["maxLength"],
        app.settings.links.max_url_length
    );
    assert!(text.contains("[301,302,307,308]"), "redirect statuses");
    let create = &paths["/api/v1/links"]["post"]["responses"];
    for status in [
        "201", "400", "408", "409", "413", "415", "431", "500", "503",
    ] {
        assert!(create[status].is_object(), "POST /api/v1/links {status}");
    }
    let metrics = &paths["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(
        metrics
            .as_object()
            .expect("content")
            .keys()
            .all(|k| k.starts_with("application/openmetrics-text")),
        "{metrics}"
    );
}

#[tokio::test]
async fn slow_clients_are_timed_out() {
    let app = spawn_app_with(|s| s.http.client_request_timeout = Duration::from_millis(300)).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let app = spawn_app().await;
    // The server closes these connections: keep them out of the app's pool.
    let abuser = reqwest::Client::new();
    let response = abuser
        .get(app.url("/healthz"))
        .header("x-padding", "a".repeat(20 * 1024))
        .send()
        .await
        .expect("request");
    assert_problem(response, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    let mut many = reqwest::Client::new().get(app.url("/healthz"));
    for i in 0..100 {
        many = many.header(format!("x-header-{i}"), "1");
    }
    // More than 96 headers: refused by the HTTP parser itself.
    match many.send().await {
        Ok(response) => assert_eq!(
            response.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
    // And goes on serving.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn stopping_answers_not_ready_then_stops() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/stop").await;
    assert_eq!(
        app.get(&format!("/{code}")).await.status(),
        StatusCode::FOUND
    );
    let address = app.address.clone();
    app.stop().await;
    let after = reqwest::get(format!("{address}/healthz")).await;
    assert!(after.is_err(), "still answering after stop");
}

#[tokio::test]
async fn problems_never_leak_internals() {
    let app = spawn_app().await;
    let problem =
        assert_problem(app.get("/api/v1/links/%FF%FE").await, StatusCode::NOT_FOUND).await;
    assert!(
        !problem["detail"]
            .as_str()
            .expect("detail")
            .contains("panicked")
    );
}

/// `main` listens for SIGTERM from the start: a process still waiting for
/// its store stops at once, cleanly, instead of waiting out the connect
/// timeout (or being killed by the signal).
#[tokio::test]
async fn sigterm_while_starting_stops_cleanly() {
    use nix::{
        sys::signal::{Signal, kill},
        unistd::Pid,
    };
    // A "node" that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let node = silent.local_addr().expect("address").to_string();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shortener-api"))
        .current_dir(dir.path())
        .env("SHORTENER_CONFIG_DIR", dir.path().join("no-config"))
        .env("SHORTENER__HTTP__LISTEN", "127.0.0.1:0")
        .env("SHORTENER__STORAGE__BACKEND", "scylla")
        .env("SHORTENER__STORAGE__SCYLLA__NODES", &node)
        .env("SHORTENER__STORAGE__SCYLLA__CONNECT_TIMEOUT", "60s")
        .env("SHORTENER__LOG__LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start shortener-api");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        child.try_wait().expect("status").is_none(),
        "still starting"
    );
    let pid = Pid::from_raw(child.id().expect("running") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s of SIGTERM")
        .expect("status");
    assert!(status.success(), "{status:?}");
}

/// The `route` label is the router's: the resource that took a request,
/// refused ones and panicking ones included; any path no resource takes is
/// the redirect fallback's.
#[tokio::test]
async fn requests_are_labelled_by_the_resource_that_took_them() {
    let app = spawn_app().await;
    let (code, _) = app.shorten("https://example.com/labelled").await;
    // The server closes refused connections: keep them out of the app's pool.
    let abuser = reqwest::Client::new();
    let sent = [
        (app.get(&format!("/{code}")).await, "redirect", "3xx"),
        (app.get("/nosuchcode").await, "redirect", "4xx"),
        (app.get("/no/such/path").await, "redirect", "4xx"),
        (
            app.get(&format!("/api/v1/links/{code}")).await,
            "api",
            "2xx",
        ),
        (app.get("/api/v1/nothing/here").await, "api", "4xx"),
        (app.get("/api/v1/openapi.json").await, "api", "2xx"),
        (
            app.get(&format!("/api/v1/links/{code}/stats")).await,
            "stats",
            "2xx",
        ),
        (app.get("/api/v1/links").await, "create", "4xx"),
        (
            abuser
                .post(app.url("/api/v1/links"))
                .header("content-type", "application/json")
                .body(vec![b' '; app.settings.http.max_body_bytes + 1])
                .send()
                .await
                .expect("request"),
            "create",
            "4xx",
        ),
        (
            abuser
                .post(app.url("/api/v1/links"))
                .header("x-filler", "a".repeat(app.settings.http.max_header_bytes))
                .send()
                .await
                .expect("request"),
            "create",
            "4xx",
        ),
        (app.get("/healthz").await, "admin", "2xx"),
    ];
    let mut expected = std::collections::BTreeMap::new();
    // The link created first.
    expected.insert(("create", "2xx"), 1.0);
    for (response, route, class) in sent {
        let status = response.status().as_u16();
        assert_eq!(
            format!("{}xx", status / 100),
            class,
            "{route}: {status} {}",
            response.text().await.unwrap_or_default()
        );
        *expected.entry((route, class)).or_insert(0.0) += 1.0;
    }
    // One scrape, which counts itself only once answered.
    let text = app.get("/metrics").await.text().await.expect("metrics");
    for ((route, class), count) in expected {
        let sample =
            format!(r#"shortener_http_requests_total{{route="{route}",status="{class}"}}"#);
        let value: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(&sample)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{sample} missing"));
        assert_eq!(value, count, "{sample}");
    }
}
