//! Starting the real application on port 0, each test with its own store.

use std::{
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
use shortener_api::{Application, config::Settings, startup::open_store};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The real SQLite store, with a count of link reads. Delegates everything.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn LinkStore>,
    pub link_reads: AtomicUsize,
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
        self.inner.insert_link(link, uniqueness).await
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
    async fn delete_link(&self, code: &Code, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.delete_link(code, at).await
    }
    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), StoreError> {
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
    _dir: TempDir,
}

/// Settings for a test: port 0, a fresh data directory, fast flushes.
pub fn test_settings(dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults();
    settings.http.listen = "127.0.0.1:0".into();
    settings.http.workers = 2;
    settings.http.shutdown_timeout = Duration::from_secs(5);
    settings.storage.sqlite.dir = dir.path().join("data");
    settings.events.inprocess.flush_interval = Duration::from_millis(100);
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = test_settings(&dir);
    configure(&mut settings);
    let store = Arc::new(CountingStore {
        inner: open_store(&settings).await.expect("open store"),
        link_reads: AtomicUsize::new(0),
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
