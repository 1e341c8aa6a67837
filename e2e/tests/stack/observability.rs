//! Observability kept in step with the code: the dashboards and the alert
//! rules use only metrics a running API and worker export; the dashboards
//! are well-formed; the rules pass promtool's checks and unit tests, and
//! every alert has tests and a runbook; the dev stack's Prometheus scrapes
//! both with the rules loaded; a redirect's trace reaches Jaeger with the
//! worker's span in it.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, redirect::Policy};
use runtime::{
    settings::{LogFormat, LogSettings},
    telemetry::{OtlpProtocol, TraceSettings},
};
use serde_json::Value;
use shortener_api::Application;

use shortener_testkit::{deployment::Deployment, free_port, one_at_a_time, repo, stack};

use crate::api_settings;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every dashboard of `dashboards/grafana/`, by file name.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("dashboards/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "dashboards: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (
                path.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned(),
                json,
            )
        })
        .collect()
}

/// A dashboard's panels, those inside collapsed rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// Every query of every dashboard panel, with where it is.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for (file, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_default();
                queries.push((format!("{file}: {}", panel["title"]), expr.to_owned()));
            }
        }
    }
    queries
}

fn alert_rules() -> Value {
    serde_yaml_ng::from_str(&read(&repo().join("dashboards/prometheus/alerts.yml")))
        .expect("alerts.yml is YAML")
}

/// Every rule (recording and alerting) of alerts.yml.
fn rules() -> Vec<Value> {
    alert_rules()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

/// Metric names a PromQL expression reads: identifiers outside quotes
/// that are not functions, keywords or label names (label names are inside
/// braces or after `by`/`without`; ours never look like metric names, so
/// only the prefixes below are taken).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.chars().peekable();
    let mut word = String::new();
    let mut quoted = None;
    while let Some(c) = chars.next() {
        if let Some(quote) = quoted {
            if c == '\\' {
                chars.next();
            } else if c == quote {
                quoted = None;
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            names.insert(std::mem::take(&mut word));
        }
        if c == '"' || c == '\'' || c == '`' {
            quoted = Some(c);
        }
    }
    if !word.is_empty() {
        names.insert(word);
    }
    names.retain(|name| {
        name.starts_with("shortener_")
            || name.starts_with("shortener:")
            || name.starts_with("process_")
    });
    names
}

/// The sample names of a Prometheus text exposition.
fn exported(exposition: &str) -> HashSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool cannot run ({e}); install it with `infra/dev-stack up prometheus`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = HashSet::new();
    for (file, dashboard) in dashboards() {
        let uid = dashboard["uid"].as_str().expect("a uid");
        assert!(uids.insert(uid.to_owned()), "{file}: uid {uid} is taken");
        assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("variables");
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{file}: no Prometheus data source variable"
        );
        let mut ids = HashSet::new();
        for panel in panels(&dashboard) {
            let title = &panel["title"];
            let id = panel["id"].as_u64().expect("a panel id");
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            let grid = &panel["gridPos"];
            let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
            assert!(
                matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
                "{file}: {title} is off the grid"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: {title} does not use the data source variable"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: a query of {title} does not use the data source variable"
                );
                assert!(
                    target["expr"]
                        .as_str()
                        .is_some_and(|e| !e.trim().is_empty()),
                    "{file}: {title} has an empty query"
                );
            }
        }
    }

    // Every query is valid PromQL: promtool checks them as recording rules,
    // with Grafana's variables replaced by what they stand for.
    let mut check = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    for (n, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$worker", ".*");
        let expr = serde_json::to_string(&expr).expect("a JSON string is a YAML string");
        check.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("queries.yml");
    std::fs::write(&path, check).expect("write the queries");
    let (ok, output) = promtool(&["check", "rules", path.to_str().expect("a UTF-8 path")]);
    assert!(ok, "a dashboard query is not valid PromQL:\n{output}");

    let datasource: Value = serde_yaml_ng::from_str(&read(
        &repo().join("dashboards/grafana/provisioning/datasources/prometheus.yml"),
    ))
    .expect("YAML");
    assert_eq!(datasource["datasources"][0]["type"], "prometheus");
    let provider: Value = serde_yaml_ng::from_str(&read(
        &repo().join("dashboards/grafana/provisioning/dashboards/shortener.yml"),
    ))
    .expect("YAML");
    assert_eq!(provider["providers"][0]["type"], "file");
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_is_tested_and_has_a_runbook() {
    let (ok, output) = promtool(&["check", "rules", "dashboards/prometheus/alerts.yml"]);
    assert!(ok, "promtool check rules:\n{output}");
    let (ok, output) = promtool(&["test", "rules", "dashboards/prometheus/alerts.test.yml"]);
    assert!(ok, "promtool test rules:\n{output}");

    let runbook = read(&repo().join("dashboards/RUNBOOK.md"));
    let tests: Value =
        serde_yaml_ng::from_str(&read(&repo().join("dashboards/prometheus/alerts.test.yml")))
            .expect("YAML");
    // Per alert: whether a test expects it firing, and one expects it not.
    let mut tested: HashMap<String, (bool, bool)> = HashMap::new();
    for test in tests["tests"].as_array().expect("tests") {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = tested.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    let alerts: Vec<Value> = rules()
        .into_iter()
        .filter(|rule| rule["alert"].is_string())
        .collect();
    assert!(alerts.len() >= 10, "{} alerts", alerts.len());
    for alert in alerts {
        let name = alert["alert"].as_str().expect("a name");
        assert!(
            matches!(
                alert["labels"]["severity"].as_str(),
                Some("page" | "ticket")
            ),
            "{name}: severity must be page or ticket"
        );
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "{name}: no summary"
        );
        let anchor = format!("dashboards/RUNBOOK.md#{}", name.to_lowercase());
        assert_eq!(alert["annotations"]["runbook"], anchor.as_str(), "{name}");
        let section = runbook
            .split("\n## ")
            .find(|section| section.starts_with(name) && section[name.len()..].starts_with('\n'))
            .unwrap_or_else(|| panic!("RUNBOOK.md has no section ## {name}"));
        for part in ["What it means", "What to check", "What to do"] {
            assert!(section.contains(part), "{name}: runbook lacks \"{part}\"");
        }
        assert_eq!(
            tested.get(name),
            Some(&(true, true)),
            "{name} needs a promtool test firing and one not firing"
        );
    }
}

/// Creates a link, and returns its code.
async fn create_link(client: &Client, base: &str) -> String {
    let created: Value = client
        .post(format!("{base}/api/v1/links"))
        .json(&serde_json::json!({ "url": "https://example.com/observed" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("created link");
    created["code"].as_str().expect("a code").to_owned()
}

/// The value of one sample, `name{labels}` as exported.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Waits for `done` to hold of `/metrics` at `url`.
async fn scrape_until(
    client: &Client,
    url: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A process just spawned may not listen yet: refused connections
        // are retried until the deadline like an unfinished scrape.
        let text = match client.get(url).send().await {
            Ok(response) => {
                assert_eq!(response.status(), StatusCode::OK, "{url}");
                response.text().await.expect("a body")
            }
            Err(e) if e.is_connect() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            Err(e) => panic!("{url}: {e}"),
        };
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 30 s; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_use_only_metrics_the_running_services_export() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(2).await;
    let mut settings = api_settings(&deployment);
    settings.metrics.listen = Some(([127, 0, 0, 1], 0).into());
    let app = Application::build(settings).await.expect("build the API");
    let base = format!("http://127.0.0.1:{}", app.port());
    let api_metrics = format!("http://{}/metrics", app.metrics_addr());
    let stop = app.stop_token();
    let api = tokio::spawn(app.run_until_stopped());
    let worker_port = free_port();
    let worker_listen = format!("127.0.0.1:{worker_port}");
    let worker = deployment.spawn_worker_with(1, &[("WORKER__METRICS_LISTEN", &worker_listen)]);
    let worker_metrics = format!("http://{worker_listen}/metrics");
    let client = Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");

    // /metrics is on the admin listener only, not on the public port.
    let public = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET");
    assert_eq!(public.status(), StatusCode::NOT_FOUND);

    let code = create_link(&client, &base).await;
    const REDIRECTS: u64 = 20;
    for _ in 0..REDIRECTS {
        let response = client
            .get(format!("{base}/{code}"))
            .send()
            .await
            .expect("redirect");
        assert_eq!(response.status(), StatusCode::FOUND);
    }
    let missing = client
        .get(format!("{base}/nosuchcode"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let api_text = scrape_until(&client, &api_metrics, "the API's clicks produced", |text| {
        sample(text, "shortener_clicks_produced_total") == Some(REDIRECTS as f64)
    })
    .await;
    assert_eq!(
        sample(
            &api_text,
            r#"shortener_http_requests_total{route="redirect",status="3xx"}"#
        ),
        Some(REDIRECTS as f64)
    );
    assert_eq!(
        sample(
            &api_text,
            r#"shortener_http_requests_total{route="redirect",status="4xx"}"#
        ),
        // `/nosuchcode`, and `/metrics` on the public port, where no
        // resource serves it: the router's fallback, a code, took it.
        Some(2.0)
    );
    assert_eq!(
        sample(
            &api_text,
            r#"shortener_http_requests_total{route="create",status="2xx"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &api_text,
            r#"shortener_storage_operation_duration_seconds_count{operation="get_link"}"#
        )
        .is_some_and(|calls| calls >= 1.0)
    );
    // The worker reports lag every 5 s (librdkafka's statistics).
    let worker_text = scrape_until(
        &client,
        &worker_metrics,
        "the worker's events and lag",
        |text| {
            sample(text, "shortener_worker_events_consumed_total") == Some(REDIRECTS as f64)
                && text.contains("shortener_worker_consumer_lag_events{")
        },
    )
    .await;
    assert_eq!(
        sample(&worker_text, "shortener_worker_partitions_owned"),
        Some(2.0)
    );

    let (api_names, worker_names) = (exported(&api_text), exported(&worker_text));
    let recorded: HashSet<String> = rules()
        .iter()
        .filter_map(|rule| rule["record"].as_str().map(str::to_owned))
        .collect();
    let mut used: Vec<(String, String)> = dashboard_queries();
    used.extend(rules().iter().filter_map(|rule| {
        let name = rule["alert"].as_str().or(rule["record"].as_str())?;
        Some((
            format!("alerts.yml: {name}"),
            rule["expr"].as_str()?.to_owned(),
        ))
    }));
    let mut checked = BTreeSet::new();
    for (place, expr) in &used {
        for name in metric_names(expr) {
            let found = if name.starts_with("shortener:") {
                recorded.contains(&name)
            } else if name.starts_with("process_") {
                api_names.contains(&name) && worker_names.contains(&name)
            } else {
                api_names.contains(&name) || worker_names.contains(&name)
            };
            assert!(
                found,
                "{place} uses {name}, which nothing exports (or records)"
            );
            checked.insert(name);
        }
    }
    assert!(
        checked.len() >= 40,
        "only {} names checked: {checked:?}",
        checked.len()
    );
    println!(
        "{} metric names used by dashboards and alerts, all exported",
        checked.len()
    );

    // The dev stack's Prometheus scrapes both, with the rules loaded.
    let targets = stack::state_dir().join("prometheus/targets");
    let id = &deployment.group;
    let files = [
        (
            targets.join(format!("api-{id}.json")),
            app_target(&api_metrics),
        ),
        (
            targets.join(format!("worker-{id}.json")),
            worker_listen.clone(),
        ),
    ];
    for (file, target) in &files {
        std::fs::write(
            file,
            serde_json::json!([{ "targets": [target] }]).to_string(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; start Prometheus with `infra/dev-stack up`",
                file.display()
            )
        });
    }
    let prometheus = stack::prometheus_url();
    let deadline = Instant::now() + Duration::from_secs(45);
    let up = loop {
        let targets: Value = client
            .get(format!("{prometheus}/api/v1/targets?state=active"))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("no Prometheus at {prometheus} ({e}); start it with `infra/dev-stack up`")
            })
            .json()
            .await
            .expect("targets");
        let up: HashSet<String> = targets["data"]["activeTargets"]
            .as_array()
            .expect("active targets")
            .iter()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["scrapeUrl"].as_str().map(str::to_owned))
            .collect();
        if up.contains(&api_metrics) && up.contains(&worker_metrics) {
            break up;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape both: {targets}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (file, _) in &files {
        std::fs::remove_file(file).ok();
    }
    println!("Prometheus scrapes {} targets, ours among them", up.len());
    let loaded: Value = client
        .get(format!("{prometheus}/api/v1/rules"))
        .send()
        .await
        .expect("rules")
        .json()
        .await
        .expect("rules");
    let loaded: BTreeSet<String> = loaded["data"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    let ours: BTreeSet<String> = alert_rules()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        ours.is_subset(&loaded),
        "Prometheus has {loaded:?}, not {ours:?}"
    );

    worker.stop().await;
    stop.cancel();
    api.await
        .expect("the API task")
        .expect("the API stops cleanly");
}

/// `host:port` of a `/metrics` URL.
fn app_target(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned()
}

/// The spans of a trace as Jaeger's query API (v3, OTLP JSON) returns
/// them, each with its service's name.
async fn jaeger_spans(client: &Client, trace_id: &str) -> Vec<(String, Value)> {
    let url = format!("{}/api/v3/traces/{trace_id}", stack::jaeger_url());
    let response =
        client.get(&url).send().await.unwrap_or_else(|e| {
            panic!("no Jaeger at {url} ({e}); start it with `infra/dev-stack up`")
        });
    if response.status() != StatusCode::OK {
        return Vec::new();
    }
    let body: Value = response.json().await.expect("OTLP JSON");
    let mut spans = Vec::new();
    for resource in body["result"]["resourceSpans"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                spans.push((service.clone(), span.clone()));
            }
        }
    }
    spans
}

/// OTLP JSON writes a span kind as a number or as its enum name.
fn kind_is(span: &Value, number: u64, name: &str) -> bool {
    span["kind"].as_u64() == Some(number) || span["kind"].as_str() == Some(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirects_trace_reaches_jaeger_with_the_workers_linked_span() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(1).await;
    let traces = TraceSettings {
        endpoint: stack::otlp_grpc(),
        protocol: OtlpProtocol::Grpc,
        // Only callers' sampled traces: this test's.
        sampling_ratio: 0.0,
        export_timeout: Duration::from_secs(5),
    };
    // The API runs in this process: its spans go through this subscriber.
    let log = LogSettings {
        level: "warn".into(),
        format: LogFormat::Text,
    };
    let telemetry =
        runtime::telemetry::init("shortener-api", &log, &traces).expect("the OTLP exporter");
    let mut settings = api_settings(&deployment);
    settings.traces = traces;
    let app = Application::build(settings).await.expect("build the API");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop = app.stop_token();
    let api = tokio::spawn(app.run_until_stopped());
    // The worker exports over the other OTLP transport, HTTP/protobuf.
    let otlp_http = stack::otlp_http();
    let worker = deployment.spawn_worker_with(
        1,
        &[
            ("TRACES__ENDPOINT", &otlp_http),
            ("TRACES__PROTOCOL", "http/protobuf"),
            ("TRACES__SAMPLING_RATIO", "0"),
        ],
    );
    let client = Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");

    let code = create_link(&client, &base).await;
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let client_span = format!("{:016x}", rand::random::<u64>() | 1);
    let response = client
        .get(format!("{base}/{code}"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(response.status(), StatusCode::FOUND);
    // A request without a sampled trace records nothing (ratio 0).
    let untraced = client
        .get(format!("{base}/{code}"))
        .send()
        .await
        .expect("redirect");
    assert_eq!(untraced.status(), StatusCode::FOUND);

    // The worker counts both; stopping it, and shutting down this
    // process's exporter, sends the spans still buffered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment.lag().await > 0 || deployment.log_lines_with(&["counts written"]) == 0 {
        assert!(Instant::now() < deadline, "the worker did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    worker.stop().await;
    stop.cancel();
    api.await
        .expect("the API task")
        .expect("the API stops cleanly");
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush the spans");

    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = jaeger_spans(&client, &trace_id).await;
        if spans
            .iter()
            .any(|(service, _)| service == "shortener-worker")
            && spans.iter().any(|(service, _)| service == "shortener-api")
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace_id} did not reach Jaeger with both services: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let names: Vec<String> = spans
        .iter()
        .map(|(service, span)| format!("{service}: {}", span["name"]))
        .collect();
    println!("trace {trace_id}: {names:?}");

    let (_, server) = spans
        .iter()
        .find(|(service, span)| service == "shortener-api" && kind_is(span, 2, "SPAN_KIND_SERVER"))
        .unwrap_or_else(|| panic!("no server span of the API: {names:?}"));
    assert_eq!(server["name"], "GET /{code}");
    assert_eq!(
        server["parentSpanId"],
        client_span.as_str(),
        "the caller's span is the parent"
    );
    let server_id = server["spanId"].as_str().expect("a span id");
    // The lookup went to the store (L1 was empty): spans below the request.
    assert!(
        spans
            .iter()
            .any(|(service, span)| service == "shortener-api"
                && span["name"] == "get_link"
                && kind_is(span, 3, "SPAN_KIND_CLIENT")),
        "no store span: {names:?}"
    );
    let consumers: Vec<&Value> = spans
        .iter()
        .filter(|(service, span)| {
            service == "shortener-worker" && kind_is(span, 5, "SPAN_KIND_CONSUMER")
        })
        .map(|(_, span)| span)
        .collect();
    assert_eq!(consumers.len(), 1, "one event, one worker span: {names:?}");
    let consumer = consumers[0];
    assert_eq!(
        consumer["parentSpanId"], server_id,
        "the worker continues the redirect's span"
    );
    let links = consumer["links"].as_array().expect("links");
    assert!(
        links
            .iter()
            .any(|link| link["traceId"] == trace_id.as_str() && link["spanId"] == server_id),
        "the worker's span links to the redirect's: {links:?}"
    );
}
