//! Configuration: the one place that reads the environment.
//!
//! Layers, each overriding the one before: the built-in defaults
//! (`defaults.toml`, which documents every key), then `config/*.toml` in
//! name order, then environment variables `SHORTENER__SECTION__KEY`.
//! Everything is checked at start, and an error names the offending key.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use runtime::settings::{self, config_dir};
pub use runtime::settings::{LogFormat, LogSettings, SettingsError, env_name};
pub use runtime::telemetry::TraceSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stores::scylla::ScyllaSettings;

/// The built-in defaults, and the reference of every key.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub links: LinkSettings,
    pub storage: StorageSettings,
    pub cache: CacheSettings,
    pub events: EventSettings,
    pub log: LogSettings,
    pub traces: TraceSettings,
    pub metrics: MetricsSettings,
}

/// `metrics.*`: whether requests are measured, and where `/metrics` is
/// served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// False: no per-request metrics, no access log, no `/metrics`.
    pub enabled: bool,
    /// A separate admin listener for `/metrics`; empty serves it on
    /// `http.listen` with everything else.
    pub listen: String,
}

impl MetricsSettings {
    /// The admin listener's address, if one is configured.
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, SettingsError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| invalid("metrics.listen", "not an address such as 0.0.0.0:9464"))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: String,
    pub public_base_url: String,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub client_request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub client_body_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub client_disconnect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub country_header: String,
    pub access_log_ratio: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    pub code_length: usize,
    pub code_key: SecretString,
    pub id_block_size: u64,
    pub max_url_length: usize,
    pub blocked_hosts: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub admin_token: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Sqlite,
    Scylla,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: StorageBackend,
    pub sqlite: SqliteSettings,
    pub scylla: ScyllaSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    pub dir: PathBuf,
    pub readers: usize,
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub l1: L1Settings,
    pub redis: RedisSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// May hold a password: never printed.
    pub url: SecretString,
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    pub ttl_jitter: f64,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub pool_size: usize,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl RedisSettings {
    /// The URL, if L2 is configured.
    pub fn url(&self) -> Option<&str> {
        Some(self.url.expose_secret()).filter(|u| !u.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1Settings {
    pub max_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventBackend {
    Inprocess,
    Kafka,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    pub backend: EventBackend,
    pub queue_capacity: usize,
    pub priority: runtime::background::Priority,
    pub inprocess: InProcessSettings,
    pub kafka: KafkaSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    pub create_topic: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    pub max_buffered: u32,
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub compression: String,
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InProcessSettings {
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub max_pending_rows: usize,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    settings::invalid(key, reason).into()
}

impl Settings {
    /// Reads the configuration of this process.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(Some(&config_dir()), std::env::vars())
    }

    /// Reads defaults, then `dir/*.toml` if there is such a directory, then
    /// the given environment.
    pub fn load_from(
        dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let settings: Settings = settings::load(
            DEFAULTS,
            dir,
            env,
            &["links.blocked_hosts", "storage.scylla.nodes"],
        )?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::load_from(None, std::iter::empty()).expect("the built-in defaults are valid")
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.listen_addr()?;
        if !self.http.public_base_url.is_empty() {
            let url = url::Url::parse(&self.http.public_base_url).map_err(|e| {
                invalid("http.public_base_url", format!("not an absolute URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(
                    "http.public_base_url",
                    "must be an http or https URL with a host",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid(
                    "http.public_base_url",
                    "must not have a query or fragment",
                ));
            }
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if !(1024..=131_072).contains(&self.http.max_header_bytes) {
            return Err(invalid(
                "http.max_header_bytes",
                "must be between 1024 and 131072",
            ));
        }
        // Deadlines of clients: long enough for a slow network, short
        // enough to be deadlines at all.
        for (key, value) in [
            (
                "http.client_request_timeout",
                self.http.client_request_timeout,
            ),
            ("http.client_body_timeout", self.http.client_body_timeout),
            ("http.send_timeout", self.http.send_timeout),
            ("http.keep_alive", self.http.keep_alive),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&value) {
                return Err(invalid(key, "must be between 100ms and 1h"));
            }
        }
        // Whole seconds: the server counts its shutdown timeout in them.
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&self.http.shutdown_timeout)
        {
            return Err(invalid(
                "http.shutdown_timeout",
                "must be between 1s and 1h",
            ));
        }
        if self.http.workers > 512 {
            return Err(invalid(
                "http.workers",
                "must be at most 512 (0: one per core)",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if !self.http.country_header.is_empty()
            && actix_web::http::header::HeaderName::try_from(self.http.country_header.as_str())
                .is_err()
        {
            return Err(invalid("http.country_header", "not a valid header name"));
        }
        let code_length = self.links.code_length;
        if !(links::codegen::MIN_CODE_LEN..=links::codegen::MAX_CODE_LEN).contains(&code_length) {
            return Err(invalid(
                "links.code_length",
                format!(
                    "must be between {} and {}",
                    links::codegen::MIN_CODE_LEN,
                    links::codegen::MAX_CODE_LEN
                ),
            ));
        }
        if let Some(key) = self.code_key() {
            links::codegen::CodeKey::from_hex(key)
                .map_err(|e| invalid("links.code_key", e.to_string()))?;
        }
        if self.links.id_block_size == 0 {
            return Err(invalid("links.id_block_size", "must be at least 1"));
        }
        if !(64..=65_536).contains(&self.links.max_url_length) {
            return Err(invalid(
                "links.max_url_length",
                "must be between 64 and 65536",
            ));
        }
        for host in &self.links.blocked_hosts {
            links::HostIdentity::parse(host)
                .map_err(|e| invalid("links.blocked_hosts", e.to_string()))?;
        }
        if self.links.retention > links::link::MAX_LIFETIME.to_std().unwrap_or_default() {
            return Err(invalid("links.retention", "must be at most 100 years"));
        }
        let token = self.links.admin_token.expose_secret();
        if !token.is_empty() && token.len() < 16 {
            return Err(invalid(
                "links.admin_token",
                "must be at least 16 characters",
            ));
        }
        if self.storage.sqlite.readers == 0 {
            return Err(invalid("storage.sqlite.readers", "must be at least 1"));
        }
        if self.storage.sqlite.max_in_flight == 0 {
            return Err(invalid(
                "storage.sqlite.max_in_flight",
                "must be at least 1",
            ));
        }
        if self.storage.backend == StorageBackend::Scylla {
            self.storage.scylla.validate()?;
        }
        if let Some(url) = self.cache.redis.url() {
            let parsed = url::Url::parse(url).ok();
            // TLS (rediss://) is not compiled in: refused here rather than
            // failing every call at run time behind an open breaker.
            if !parsed.is_some_and(|u| matches!(u.scheme(), "redis" | "unix")) {
                return Err(invalid(
                    "cache.redis.url",
                    "must be a redis:// or unix:// URL (this build has no TLS for Redis)",
                ));
            }
            let redis = &self.cache.redis;
            if redis.timeout.is_zero() {
                return Err(invalid("cache.redis.timeout", "must be longer than zero"));
            }
            if redis.ttl.as_secs() < 1 || redis.negative_ttl.as_secs() < 1 {
                return Err(invalid(
                    "cache.redis.ttl",
                    "ttl and negative_ttl must be at least 1s",
                ));
            }
            if !(0.0..=0.5).contains(&redis.ttl_jitter) {
                return Err(invalid(
                    "cache.redis.ttl_jitter",
                    "must be between 0 and 0.5",
                ));
            }
            if redis.pool_size == 0 {
                return Err(invalid("cache.redis.pool_size", "must be at least 1"));
            }
        }
        if self.cache.l1.max_bytes < 1 << 20 {
            return Err(invalid("cache.l1.max_bytes", "must be at least 1 MiB"));
        }
        if self.cache.l1.ttl.is_zero() {
            return Err(invalid("cache.l1.ttl", "must be longer than zero"));
        }
        if self.events.queue_capacity == 0 {
            return Err(invalid("events.queue_capacity", "must be at least 1"));
        }
        if self.events.inprocess.flush_interval < Duration::from_millis(10) {
            return Err(invalid(
                "events.inprocess.flush_interval",
                "must be at least 10ms",
            ));
        }
        if self.events.inprocess.max_pending_rows == 0 {
            return Err(invalid(
                "events.inprocess.max_pending_rows",
                "must be at least 1",
            ));
        }
        if self.events.backend == EventBackend::Kafka {
            let kafka = &self.events.kafka;
            if kafka.brokers.split(',').all(|b| b.trim().is_empty()) {
                return Err(invalid("events.kafka.brokers", "name at least one broker"));
            }
            if !settings::is_topic_name(&kafka.topic) {
                return Err(invalid(
                    "events.kafka.topic",
                    "1 to 249 letters, digits, '.', '_' or '-'",
                ));
            }
            if kafka.partitions < 1 {
                return Err(invalid("events.kafka.partitions", "must be at least 1"));
            }
            if kafka.replication_factor < 1 {
                return Err(invalid(
                    "events.kafka.replication_factor",
                    "must be at least 1",
                ));
            }
            if kafka.max_buffered == 0 {
                return Err(invalid("events.kafka.max_buffered", "must be at least 1"));
            }
            if kafka.delivery_timeout < Duration::from_secs(1) {
                return Err(invalid(
                    "events.kafka.delivery_timeout",
                    "must be at least 1s",
                ));
            }
            if kafka.linger >= kafka.delivery_timeout {
                return Err(invalid(
                    "events.kafka.linger",
                    "must be shorter than events.kafka.delivery_timeout",
                ));
            }
            if !matches!(
                kafka.compression.as_str(),
                "none" | "gzip" | "snappy" | "lz4" | "zstd"
            ) {
                return Err(invalid(
                    "events.kafka.compression",
                    "none, gzip, snappy, lz4 or zstd",
                ));
            }
            if self.storage.backend != StorageBackend::Scylla {
                return Err(invalid(
                    "events.backend",
                    "\"kafka\" needs storage.backend = \"scylla\": shortener-worker \
                     writes the counts that the stats API reads to ScyllaDB",
                ));
            }
        }
        self.log
            .validate()
            .map_err(|reason| invalid("log.level", reason))?;
        self.traces.validate()?;
        self.metrics.listen_addr()?;
        if !(0.0..=1.0).contains(&self.http.access_log_ratio) {
            return Err(invalid("http.access_log_ratio", "must be between 0 and 1"));
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.http.listen.parse().map_err(|_| {
            invalid(
                "http.listen",
                "must be an IP address and port, like 127.0.0.1:8080",
            )
        })
    }

    /// The longest a store call may take.
    pub fn storage_timeout(&self) -> Duration {
        match self.storage.backend {
            StorageBackend::Sqlite => self.storage.sqlite.busy_timeout,
            StorageBackend::Scylla => self.storage.scylla.request_timeout,
        }
    }

    /// The configured code key, if any.
    pub fn code_key(&self) -> Option<&str> {
        Some(self.links.code_key.expose_secret()).filter(|k| !k.is_empty())
    }

    /// The configured admin token, if any.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.links.admin_token.expose_secret()).filter(|k| !k.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(None, env)
    }

    #[test]
    fn defaults_are_the_embedded_default() {
        let s = Settings::defaults();
        assert_eq!(s.http.listen, "127.0.0.1:8080");
        assert_eq!(s.storage.backend, StorageBackend::Sqlite);
        assert_eq!(s.events.backend, EventBackend::Inprocess);
        assert_eq!(s.links.code_length, 7);
        assert_eq!(s.code_key(), None);
        assert_eq!(s.links.retention, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn environment_overrides_defaults() {
        let s = load(&[
            ("SHORTENER__HTTP__LISTEN", "0.0.0.0:9000"),
            ("SHORTENER__HTTP__PUBLIC_BASE_URL", "https://sho.rt"),
            ("SHORTENER__CACHE__L1__TTL", "10m"),
            (
                "SHORTENER__LINKS__BLOCKED_HOSTS",
                "evil.example,worse.example",
            ),
            ("SHORTENER__HTTP__WORKERS", "3"),
            ("OTHER__HTTP__LISTEN", "ignored"),
        ])
        .expect("valid");
        assert_eq!(s.http.listen, "0.0.0.0:9000");
        assert_eq!(s.http.public_base_url, "https://sho.rt");
        assert_eq!(s.cache.l1.ttl, Duration::from_secs(600));
        assert_eq!(s.links.blocked_hosts, ["evil.example", "worse.example"]);
        assert_eq!(s.http.workers, 3);
    }

    #[test]
    fn files_override_defaults_and_the_environment_overrides_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("10-base.toml"),
            "[http]\nworkers = 2\nlisten = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("20-site.toml"), "[http]\nworkers = 5\n").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not toml").expect("write");
        let env = [(
            "SHORTENER__HTTP__LISTEN".to_string(),
            "127.0.0.1:2".to_string(),
        )];
        let s = Settings::load_from(Some(dir.path()), env).expect("valid");
        assert_eq!(s.http.workers, 5);
        assert_eq!(s.http.listen, "127.0.0.1:2");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "SHORTENER__HTTP__LISTEN",
                "nonsense",
                "SHORTENER__HTTP__LISTEN",
            ),
            (
                "SHORTENER__HTTP__PUBLIC_BASE_URL",
                "sho.rt",
                "SHORTENER__HTTP__PUBLIC_BASE_URL",
            ),
            (
                "SHORTENER__LINKS__CODE_LENGTH",
                "3",
                "SHORTENER__LINKS__CODE_LENGTH",
            ),
            (
                "SHORTENER__LINKS__CODE_KEY",
                "abc",
                "SHORTENER__LINKS__CODE_KEY",
            ),
            ("SHORTENER__LOG__LEVEL", "info,[", "SHORTENER__LOG__LEVEL"),
            ("SHORTENER__HTTP__WORKERS", "many", "http.workers"),
            (
                "SHORTENER__HTTP__WORKERS",
                "513",
                "SHORTENER__HTTP__WORKERS",
            ),
            (
                "SHORTENER__HTTP__SEND_TIMEOUT",
                "1000years",
                "SHORTENER__HTTP__SEND_TIMEOUT",
            ),
            (
                "SHORTENER__HTTP__SHUTDOWN_TIMEOUT",
                "500ms",
                "SHORTENER__HTTP__SHUTDOWN_TIMEOUT",
            ),
            (
                "SHORTENER__LINKS__RETENTION",
                "1000years",
                "SHORTENER__LINKS__RETENTION",
            ),
            (
                "SHORTENER__LINKS__BLOCKED_HOSTS",
                "a..b",
                "SHORTENER__LINKS__BLOCKED_HOSTS",
            ),
            ("SHORTENER__CACHE__L1__TTL", "soon", "cache.l1.ttl"),
            ("SHORTENER__STORAGE__BACKEND", "oracle", "storage.backend"),
            (
                "SHORTENER__CACHE__REDIS__URL",
                "http://cache:6379",
                "SHORTENER__CACHE__REDIS__URL",
            ),
            (
                "SHORTENER__CACHE__REDIS__URL",
                "rediss://cache:6380",
                "SHORTENER__CACHE__REDIS__URL",
            ),
        ];
        for (name, value, mentioned) in cases {
            let err = load(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(mentioned), "{name}={value}: {err}");
        }
    }

    #[test]
    fn production_settings_are_checked_when_chosen() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[
                    ("SHORTENER__STORAGE__BACKEND", "scylla"),
                    ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "dc1"),
                ],
                "SHORTENER__STORAGE__SCYLLA__REPLICATION",
            ),
            (
                &[
                    ("SHORTENER__STORAGE__BACKEND", "scylla"),
                    ("SHORTENER__STORAGE__SCYLLA__KEYSPACE", "Bad-Name"),
                ],
                "SHORTENER__STORAGE__SCYLLA__KEYSPACE",
            ),
            (
                &[
                    ("SHORTENER__EVENTS__BACKEND", "kafka"),
                    ("SHORTENER__EVENTS__KAFKA__LINGER", "1m"),
                ],
                "SHORTENER__EVENTS__KAFKA__LINGER",
            ),
            (
                &[
                    ("SHORTENER__EVENTS__BACKEND", "kafka"),
                    ("SHORTENER__EVENTS__KAFKA__TOPIC", "no spaces"),
                ],
                "SHORTENER__EVENTS__KAFKA__TOPIC",
            ),
        ];
        for (env, mentioned) in cases {
            let err = load(env).expect_err(mentioned).to_string();
            assert!(err.contains(mentioned), "{env:?}: {err}");
        }
        let s = load(&[
            ("SHORTENER__STORAGE__BACKEND", "scylla"),
            ("SHORTENER__STORAGE__SCYLLA__NODES", "a:9042,b:9042"),
            ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "eu:3, us:2"),
            ("SHORTENER__CACHE__REDIS__URL", "redis://cache:6379/0"),
            ("SHORTENER__EVENTS__BACKEND", "kafka"),
        ])
        .expect("valid");
        assert_eq!(s.storage.scylla.nodes, ["a:9042", "b:9042"]);
        assert_eq!(
            s.storage.scylla.replication().expect("valid"),
            [("eu".to_owned(), 3), ("us".to_owned(), 2)]
        );
        assert!(
            !format!("{s:?}").contains("redis://cache"),
            "the URL may hold a password"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load(&[("SHORTENER__HTTP__LISTN", "127.0.0.1:1")]).expect_err("typo");
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let s = load(&[("SHORTENER__LINKS__ADMIN_TOKEN", "a-very-secret-token")]).expect("valid");
        assert_eq!(s.admin_token(), Some("a-very-secret-token"));
        assert!(!format!("{s:?}").contains("a-very-secret-token"));
    }

    #[test]
    fn the_configuration_reference_documents_every_key() {
        let reference = include_str!("../../docs/configuration.md");
        let all = runtime::settings::keys_of(DEFAULTS).expect("defaults parse");
        assert!(all.len() > 30, "{all:?}");
        for key in all {
            let env = env_name(&key);
            assert!(
                reference.contains(&format!("`{env}`")),
                "docs/configuration.md does not document {env}"
            );
        }
    }

    #[test]
    fn env_names_follow_keys() {
        assert_eq!(
            env_name("cache.l1.max_bytes"),
            "SHORTENER__CACHE__L1__MAX_BYTES"
        );
    }
}
