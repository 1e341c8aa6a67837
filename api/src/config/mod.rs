//! Configuration: the one place that reads the environment.
//!
//! Layers, each overriding the one before: the built-in defaults
//! (`defaults.toml`, which documents every key), then `config/*.toml` in
//! name order, then environment variables `SHORTENER__SECTION__KEY`.
//! Everything is checked at start, and an error names the offending key.

use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use actix_web::http::header::HeaderName;
use links::{
    HostIdentity,
    codegen::{CodeKey, MAX_CODE_LEN, MIN_CODE_LEN},
};
use runtime::settings::{self, InvalidKey, invalid};
pub use runtime::settings::{LoadSettings, LogFormat, LogSettings, SettingsError, env_name};
pub use runtime::telemetry::TraceSettings;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stores::scylla::{RegionSettings, ScyllaSettings};

/// The built-in defaults, and the reference of every key.
pub const DEFAULTS: &str = include_str!("../defaults.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub region: RegionSettings,
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
    /// A separate admin listener for `/metrics`; empty (`None`) serves it
    /// on `http.listen` with everything else.
    #[serde(deserialize_with = "settings::optional")]
    pub listen: Option<SocketAddr>,
}

/// An absolute `http` or `https` URL with a host and no query or fragment,
/// kept as written but for a trailing `/`: short links are this, `/`, and
/// the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicBaseUrl(String);

impl PublicBaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PublicBaseUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an http or https URL with a host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: SocketAddr,
    /// The base of the short links the API returns; empty (`None`): the
    /// address it listens on.
    #[serde(deserialize_with = "settings::optional")]
    pub public_base_url: Option<PublicBaseUrl>,
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
    pub max_connections: NonZeroUsize,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// The header holding the client's country (set by a CDN); empty
    /// (`None`): none.
    #[serde(deserialize_with = "settings::optional")]
    pub country_header: Option<HeaderName>,
    pub access_log_ratio: f64,
}

impl HttpSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        if self.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        if !(1024..=131_072).contains(&self.max_header_bytes) {
            return Err(invalid(
                "http.max_header_bytes",
                "must be between 1024 and 131072",
            ));
        }
        // Deadlines of clients: long enough for a slow network, short
        // enough to be deadlines at all.
        for (key, value) in [
            ("http.client_request_timeout", self.client_request_timeout),
            ("http.client_body_timeout", self.client_body_timeout),
            ("http.send_timeout", self.send_timeout),
            ("http.keep_alive", self.keep_alive),
        ] {
            if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&value) {
                return Err(invalid(key, "must be between 100ms and 1h"));
            }
        }
        // Whole seconds: the server counts its shutdown timeout in them.
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.shutdown_timeout) {
            return Err(invalid(
                "http.shutdown_timeout",
                "must be between 1s and 1h",
            ));
        }
        if self.workers > 512 {
            return Err(invalid(
                "http.workers",
                "must be at most 512 (0: one per core)",
            ));
        }
        if !(0.0..=1.0).contains(&self.access_log_ratio) {
            return Err(invalid("http.access_log_ratio", "must be between 0 and 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    pub code_length: usize,
    /// The key of the code bijection (64 hex digits); empty (`None`): one
    /// the store generates and keeps.
    #[serde(deserialize_with = "settings::optional")]
    pub code_key: Option<CodeKey>,
    pub id_block_size: NonZeroU64,
    pub max_url_length: usize,
    #[serde(deserialize_with = "hosts")]
    pub blocked_hosts: Vec<HostIdentity>,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub admin_token: SecretString,
}

impl LinkSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        let code_length = self.code_length;
        if !(MIN_CODE_LEN..=MAX_CODE_LEN).contains(&code_length) {
            return Err(invalid(
                "links.code_length",
                format!("must be between {MIN_CODE_LEN} and {MAX_CODE_LEN}"),
            ));
        }
        if !(64..=65_536).contains(&self.max_url_length) {
            return Err(invalid(
                "links.max_url_length",
                "must be between 64 and 65536",
            ));
        }
        if self.retention > links::link::MAX_LIFETIME.to_std().unwrap_or_default() {
            return Err(invalid("links.retention", "must be at most 100 years"));
        }
        if secret(&self.admin_token).is_some_and(|token| token.len() < 16) {
            return Err(invalid(
                "links.admin_token",
                "must be at least 16 characters",
            ));
        }
        Ok(())
    }
}

/// `links.blocked_hosts`: each a host name or address, checked as it is read.
fn hosts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<HostIdentity>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|host| HostIdentity::parse(host).map_err(serde::de::Error::custom))
        .collect()
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

impl StorageSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        match self.backend {
            StorageBackend::Sqlite => Ok(()),
            StorageBackend::Scylla => self.scylla.validate(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSettings {
    pub dir: PathBuf,
    pub readers: NonZeroUsize,
    pub max_in_flight: NonZeroUsize,
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    pub l1: L1Settings,
    pub redis: RedisSettings,
    /// In a deployment of several regions, how long a code found in none
    /// is remembered as unknown (it may be a link just made elsewhere).
    #[serde(with = "humantime_serde")]
    pub remote_miss_ttl: Duration,
}

impl CacheSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        if self.redis.url().is_some() {
            self.redis.validate()?;
        }
        if self.l1.max_bytes < 1 << 20 {
            return Err(invalid("cache.l1.max_bytes", "must be at least 1 MiB"));
        }
        if self.l1.ttl.is_zero() {
            return Err(invalid("cache.l1.ttl", "must be longer than zero"));
        }
        if self.remote_miss_ttl.as_secs() < 1 {
            return Err(invalid("cache.remote_miss_ttl", "must be at least 1s"));
        }
        Ok(())
    }
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
    pub pool_size: NonZeroUsize,
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl RedisSettings {
    /// The URL, if L2 is configured.
    pub fn url(&self) -> Option<&str> {
        secret(&self.url)
    }

    fn validate(&self) -> Result<(), InvalidKey> {
        let parsed = self.url().and_then(|url| url::Url::parse(url).ok());
        // TLS (rediss://) is not compiled in: refused here rather than
        // failing every call at run time behind an open breaker.
        if !parsed.is_some_and(|u| matches!(u.scheme(), "redis" | "unix")) {
            return Err(invalid(
                "cache.redis.url",
                "must be a redis:// or unix:// URL (this build has no TLS for Redis)",
            ));
        }
        if self.timeout.is_zero() {
            return Err(invalid("cache.redis.timeout", "must be longer than zero"));
        }
        if self.ttl.as_secs() < 1 || self.negative_ttl.as_secs() < 1 {
            return Err(invalid(
                "cache.redis.ttl",
                "ttl and negative_ttl must be at least 1s",
            ));
        }
        if !(0.0..=0.5).contains(&self.ttl_jitter) {
            return Err(invalid(
                "cache.redis.ttl_jitter",
                "must be between 0 and 0.5",
            ));
        }
        Ok(())
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
    pub queue_capacity: NonZeroUsize,
    pub priority: runtime::background::Priority,
    pub inprocess: InProcessSettings,
    pub kafka: KafkaSettings,
}

impl EventSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        if self.inprocess.flush_interval < Duration::from_millis(10) {
            return Err(invalid(
                "events.inprocess.flush_interval",
                "must be at least 10ms",
            ));
        }
        match self.backend {
            EventBackend::Inprocess => Ok(()),
            EventBackend::Kafka => self.kafka.validate(),
        }
    }
}

/// `events.kafka.compression`: the codecs librdkafka offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The value of librdkafka's `compression.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
    /// With several regions: the topic link changes are told on.
    pub changes_topic: String,
    /// With several regions: longest wait at start for MirrorMaker 2's
    /// copies of every other region's changes to be current.
    #[serde(with = "humantime_serde")]
    pub mirror_wait: Duration,
    pub create_topic: bool,
    pub partitions: i32,
    pub replication_factor: i32,
    pub max_buffered: NonZeroU32,
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub compression: Compression,
    #[serde(with = "humantime_serde")]
    pub flush_timeout: Duration,
}

impl KafkaSettings {
    fn validate(&self) -> Result<(), InvalidKey> {
        settings::check_kafka(&self.brokers, &self.topic)?;
        if self.changes_topic == self.topic {
            return Err(invalid(
                "events.kafka.changes_topic",
                "must differ from events.kafka.topic",
            ));
        }
        settings::check_kafka(&self.brokers, &self.changes_topic)
            .map_err(|e| invalid("events.kafka.changes_topic", e.reason))?;
        if self.mirror_wait > Duration::from_secs(3600) {
            return Err(invalid("events.kafka.mirror_wait", "must be at most 1h"));
        }
        if self.partitions < 1 {
            return Err(invalid("events.kafka.partitions", "must be at least 1"));
        }
        if self.replication_factor < 1 {
            return Err(invalid(
                "events.kafka.replication_factor",
                "must be at least 1",
            ));
        }
        if self.delivery_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "events.kafka.delivery_timeout",
                "must be at least 1s",
            ));
        }
        if self.linger >= self.delivery_timeout {
            return Err(invalid(
                "events.kafka.linger",
                "must be shorter than events.kafka.delivery_timeout",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InProcessSettings {
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub max_pending_rows: NonZeroUsize,
}

/// A secret, if it is set (not empty).
fn secret(value: &SecretString) -> Option<&str> {
    Some(value.expose_secret()).filter(|v| !v.is_empty())
}

impl LoadSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;
    const LISTS: &'static [&'static str] = &["links.blocked_hosts", "storage.scylla.nodes"];

    fn validate(&self) -> Result<(), InvalidKey> {
        self.http.validate()?;
        self.links.validate()?;
        self.storage.validate()?;
        if self.region.regions().is_some() {
            if self.storage.backend != StorageBackend::Scylla {
                return Err(invalid(
                    "region.name",
                    "regions need storage.backend = \"scylla\": one cluster with a datacenter \
                     per region",
                ));
            }
            self.storage.scylla.validate_regions(&self.region)?;
            if self.events.backend != EventBackend::Kafka {
                return Err(invalid(
                    "events.backend",
                    "regions need \"kafka\": each region's Kafka carries its clicks to its \
                     worker and its link changes to the other regions",
                ));
            }
        }
        self.cache.validate()?;
        self.events.validate()?;
        if self.events.backend == EventBackend::Kafka
            && self.storage.backend != StorageBackend::Scylla
        {
            return Err(invalid(
                "events.backend",
                "\"kafka\" needs storage.backend = \"scylla\": shortener-worker \
                 writes the counts that the stats API reads to ScyllaDB",
            ));
        }
        self.log.validate()?;
        self.traces.validate()
    }
}

impl Settings {
    /// The longest a store call may take.
    pub fn storage_timeout(&self) -> Duration {
        match self.storage.backend {
            StorageBackend::Sqlite => self.storage.sqlite.busy_timeout,
            StorageBackend::Scylla => self.storage.scylla.request_timeout,
        }
    }

    /// The configured admin token, if any.
    pub fn admin_token(&self) -> Option<&str> {
        secret(&self.links.admin_token)
    }
}

#[cfg(test)]
mod tests;
