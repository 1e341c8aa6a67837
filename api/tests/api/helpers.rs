//! Starting the real application on port 0, each test with its own store.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use links::{
    Code, Link, LinkChanges, LinkStore, StoreError,
    clicks::ClickBatch,
    stats::{ClickStats, StatsQuery},
    storage::{IdBlock, Uniqueness},
};
use reqwest::{Client, Response, StatusCode, redirect::Policy};
use serde_json::{Value, json};
use shortener_api::{
    Application,
    config::{LoadSettings, Settings},
    startup::open_store,
};
use stores::fixtures::{DropKeyspace, scylla_test_options};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The real store, with a count of link reads, and a bug on demand: it
/// panics on inserting a link whose URL contains `panic_on_url`.
/// Delegates everything else.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn LinkStore>,
    pub link_reads: AtomicUsize,
    pub panic_on_url: std::sync::Mutex<Option<String>>,
}

#[async_trait]
impl LinkStore for CountingStore {
    async fn lease_ids(&self, count: u64) -> Result<IdBlock, StoreError> {
        self.inner.lease_ids(count).await
    }
    async fn reserve_id(&self, id: u64) -> Result<bool, StoreError> {
        self.inner.reserve_id(id).await
    }
    async fn insert_link(&self, link: &Link, uniqueness: Uniqueness) -> Result<(), StoreError> {
        let bug = self.panic_on_url.lock().expect("fault").clone();
        if let Some(bug) = bug {
            assert!(
                !link.url.as_str().contains(&bug),
                "a bug reached by a request"
            );
        }
        self.inner.insert_link(link, uniqueness).await
    }
    async fn get_link_elsewhere(
        &self,
        code: &Code,
        home: Option<links::region::RegionSlot>,
    ) -> Result<Option<Link>, StoreError> {
        self.inner.get_link_elsewhere(code, home).await
    }
    async fn get_link(&self, code: &Code) -> Result<Option<Link>, StoreError> {
        self.link_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get_link(code).await
    }
    async fn update_link(
        &self,
        code: &Code,
        changes: &LinkChanges,
    ) -> Result<Option<Link>, StoreError> {
        self.inner.update_link(code, changes).await
    }
    async fn delete_link(
        &self,
        code: &Code,
        at: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError> {
        self.inner.delete_link(code, at).await
    }
    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), links::UnwrittenClicks> {
        self.inner.record_clicks(batch).await
    }
    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError> {
        self.inner.click_stats(code, query).await
    }
    async fn get_or_init_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.inner.get_or_init_setting(name, value).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub store: Arc<CountingStore>,
    pub settings: Settings,
    stop: CancellationToken,
    server: JoinHandle<()>,
    pub tier: Arc<Tier>,
    _dir: TempDir,
}

/// The servers a test runs against, chosen by `SHORTENER_TEST_TIER`:
///
/// - `embedded` (the default): SQLite in the test's own directory, no L2;
/// - `production`: the dev stack's Cassandra, in a keyspace of the test's
///   own (dropped afterwards), and its Redis, under a key prefix of the
///   test's own.
///
/// Expressed as the environment the binary reads, so in-process apps and
/// spawned binaries are configured alike.
pub struct Tier {
    pub env: Vec<(String, String)>,
    _keyspace: Option<DropKeyspace>,
}

impl Tier {
    pub fn production() -> bool {
        match std::env::var("SHORTENER_TEST_TIER").as_deref() {
            Ok("production") => true,
            Ok("embedded") | Err(_) => false,
            Ok(other) => panic!("SHORTENER_TEST_TIER={other}: use embedded or production"),
        }
    }

    /// The tier `SHORTENER_TEST_TIER` names.
    pub fn new(dir: &Path) -> Self {
        Self::build(dir, Self::production())
    }

    /// The production tier, whatever `SHORTENER_TEST_TIER` says.
    pub fn production_tier(dir: &Path) -> Self {
        Self::build(dir, true)
    }

    /// Exactly this environment (a test owns what it names).
    pub fn with_env(env: Vec<(String, String)>) -> Self {
        Self {
            env,
            _keyspace: None,
        }
    }

    fn build(dir: &Path, production: bool) -> Self {
        let mut env = vec![(
            "SHORTENER__STORAGE__SQLITE__DIR".to_owned(),
            dir.join("data").display().to_string(),
        )];
        let mut keyspace = None;
        if production {
            let scylla = scylla_test_options();
            let dc = scylla.local_dc.clone();
            let redis = shortener_testkit::stack::redis_url();
            for (key, value) in [
                ("STORAGE__BACKEND", "scylla".to_owned()),
                ("STORAGE__SCYLLA__NODES", scylla.nodes.join(",")),
                ("STORAGE__SCYLLA__LOCAL_DC", dc.clone()),
                ("STORAGE__SCYLLA__KEYSPACE", scylla.keyspace.clone()),
                ("STORAGE__SCYLLA__REPLICATION", format!("{dc}:1")),
                ("STORAGE__SCYLLA__MIGRATE_ON_START", "true".into()),
                // Generous: the test machine runs Cassandra, Kafka and the
                // suite on two cores.
                ("STORAGE__SCYLLA__REQUEST_TIMEOUT", "5s".into()),
                ("CACHE__REDIS__URL", redis),
                ("CACHE__REDIS__KEY_PREFIX", format!("{}:", scylla.keyspace)),
                ("CACHE__REDIS__TIMEOUT", "1s".into()),
            ] {
                env.push((format!("SHORTENER__{key}"), value));
            }
            keyspace = Some(DropKeyspace(scylla.keyspace));
        }
        Self {
            env,
            _keyspace: keyspace,
        }
    }

    /// Settings for a test on this tier: port 0, fast flushes.
    pub fn settings(&self) -> Settings {
        let mut settings =
            Settings::load_from(None, self.env.clone()).expect("valid test settings");
        settings.http.listen = ([127, 0, 0, 1], 0).into();
        settings.http.workers = 2;
        settings.http.shutdown_timeout = Duration::from_secs(5);
        settings.events.inprocess.flush_interval = Duration::from_millis(100);
        settings
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tier = Arc::new(Tier::new(dir.path()));
    spawn_app_in(tier, dir, configure).await
}

/// An application on the production tier, whatever `SHORTENER_TEST_TIER`
/// says.
pub async fn spawn_production_app(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let tier = Arc::new(Tier::production_tier(dir.path()));
    spawn_app_in(tier, dir, configure).await
}

/// An application on `tier`, which other applications may share (the same
/// keyspace and Redis prefix: instances of one deployment).
pub async fn spawn_app_in(
    tier: Arc<Tier>,
    dir: TempDir,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = tier.settings();
    configure(&mut settings);
    let store = Arc::new(CountingStore {
        inner: open_store(&settings).await.expect("open store"),
        link_reads: AtomicUsize::new(0),
        panic_on_url: std::sync::Mutex::new(None),
    });
    let app = Application::build_with_store(settings.clone(), store.clone())
        .await
        .expect("build application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let stop = app.stop_token();
    let server = tokio::spawn(async move {
        app.run_until_stopped().await.expect("application runs");
    });
    TestApp {
        address,
        client: Client::builder()
            .redirect(Policy::none())
            .build()
            .expect("HTTP client"),
        store,
        settings,
        stop,
        server,
        tier,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn create(&self, body: Value) -> Response {
        self.client
            .post(self.url("/api/v1/links"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Creates a link, asserting 201; returns the response body.
    pub async fn create_ok(&self, body: Value) -> Value {
        let response = self.create(body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.expect("JSON body")
    }

    pub async fn shorten(&self, url: &str) -> (String, String) {
        let body = self.create_ok(json!({ "url": url })).await;
        (
            body["code"].as_str().expect("code").to_owned(),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn head(&self, path: &str) -> Response {
        self.client.head(self.url(path)).send().await.expect("HEAD")
    }

    /// `PATCH /api/v1/links/{code}` with a bearer token.
    pub async fn patch(&self, code: &str, token: &str, body: Value) -> Response {
        self.client
            .patch(self.url(&format!("/api/v1/links/{code}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("PATCH")
    }

    /// `DELETE /api/v1/links/{code}` with a bearer token.
    pub async fn delete(&self, code: &str, token: &str) -> Response {
        self.client
            .delete(self.url(&format!("/api/v1/links/{code}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("DELETE")
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `shortener_cache_requests_total{tier="l2",result="hit"}`; 0 if absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().expect("a number"))
            })
            .unwrap_or(0.0)
    }

    pub async fn stats(&self, code: &str, query: &str) -> Value {
        let response = self
            .get(&format!("/api/v1/links/{code}/stats{query}"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("JSON body")
    }

    /// Stops the application as SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        self.stop.cancel();
        self.server.await.expect("server task");
    }
}

/// Asserts a problem+json response with this status; returns its body.
pub async fn assert_problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:shortener:problem:"))
    );
    assert!(body["title"].is_string());
    assert!(body["detail"].is_string());
    body
}

/// The real binary, started with the tier's environment and `extra` as its
/// configuration; its JSON log lines are kept.
pub struct ApiProcess {
    child: tokio::process::Child,
    pub address: String,
    pub logs: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ApiProcess {
    pub async fn start(data_dir: &Path, tier: &Tier, extra: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, BufReader};

        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_shortener-api"))
            .current_dir(data_dir)
            .env("SHORTENER_CONFIG_DIR", data_dir.join("no-config"))
            .env("SHORTENER__HTTP__LISTEN", "127.0.0.1:0")
            .env("SHORTENER__HTTP__WORKERS", "2")
            .envs(tier.env.iter().cloned())
            .envs(extra.iter().copied())
            .env("SHORTENER__LOG__FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start shortener-api");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let address = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let log: Value = serde_json::from_str(&line).expect("JSON log line");
                if log["message"] == "listening" {
                    return format!("http://{}", log["addr"].as_str().expect("addr"));
                }
            }
            panic!("shortener-api exited before listening");
        })
        .await
        .expect("shortener-api listens within 30 s");
        // Keep reading its logs so it never blocks on a full pipe.
        let kept = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().expect("logs").push(line);
            }
        });
        Self {
            child,
            address,
            logs,
        }
    }

    /// `host:port`.
    pub fn socket_addr(&self) -> String {
        self.address.trim_start_matches("http://").to_owned()
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// Sends SIGTERM; asserts a clean exit within `within`, and returns how
    /// long it took.
    pub async fn terminate(mut self, within: Duration) -> Duration {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        let started = std::time::Instant::now();
        kill(Pid::from_raw(self.pid()), Signal::SIGTERM).expect("SIGTERM");
        let Ok(status) = tokio::time::timeout(within, self.child.wait()).await else {
            let logs = self.logs.lock().expect("logs");
            let last = &logs[logs.len().saturating_sub(20)..];
            panic!(
                "still running {within:?} after SIGTERM; last log lines:\n{}",
                last.join("\n")
            );
        };
        let status = status.expect("exit status");
        assert!(status.success(), "exited with {status}");
        started.elapsed()
    }

    /// The log lines at `level` so far.
    pub fn logged_at(&self, level: &str) -> Vec<String> {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|line| {
                serde_json::from_str::<Value>(line).is_ok_and(|log| log["level"] == level)
            })
            .cloned()
            .collect()
    }
}

/// Reads until the server closes the connection (or `within` passes, which
/// fails the test); returns what it sent.
pub async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
    use tokio::io::AsyncReadExt;

    let mut answer = Vec::new();
    let closed = tokio::time::timeout(within, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection is still open after {within:?}: {}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}
