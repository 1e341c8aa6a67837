//! Configuration: the one place that reads the environment.
//!
//! The same layers as the API's (see [`runtime::settings`]); the worker takes
//! the sections it needs and ignores the API's, so one file can configure
//! both. Everything is checked at start, and an error names the bad key.

use std::{net::SocketAddr, num::NonZeroUsize, time::Duration};

pub use runtime::settings::{LoadSettings, SettingsError};
use runtime::{
    settings::{self, InvalidKey, LogSettings, invalid},
    telemetry::TraceSettings,
};
use serde::Deserialize;
use stores::scylla::{RegionSettings, ScyllaSettings};

/// The built-in defaults, and the reference of every key.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub region: RegionSettings,
    pub storage: StorageSettings,
    pub events: EventSettings,
    pub worker: WorkerSettings,
    pub log: LogSettings,
    pub traces: TraceSettings,
}

/// `storage`: the worker reads only `storage.scylla`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    pub scylla: ScyllaSettings,
}

/// `events`: the worker reads only where the events are.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSettings {
    pub kafka: KafkaSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub brokers: String,
    pub topic: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub group: String,
    pub dead_letter_topic: String,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub max_pending_rows: NonZeroUsize,
    pub write_concurrency: NonZeroUsize,
    pub cached_rows: u64,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub prefetch_kbytes: u32,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Where `/metrics` is served.
    pub metrics_listen: SocketAddr,
}

impl WorkerSettings {
    fn validate(&self, topic: &str) -> Result<(), InvalidKey> {
        if self.group.trim().is_empty() {
            return Err(invalid("worker.group", "must not be empty"));
        }
        if !settings::is_topic_name(&self.dead_letter_topic) || self.dead_letter_topic == topic {
            return Err(invalid(
                "worker.dead_letter_topic",
                "1 to 249 letters, digits, '.', '_' or '-', other than events.kafka.topic",
            ));
        }
        if self.flush_interval < Duration::from_millis(10) {
            return Err(invalid("worker.flush_interval", "must be at least 10ms"));
        }
        if self.max_backoff < Duration::from_millis(50) {
            return Err(invalid("worker.max_backoff", "must be at least 50ms"));
        }
        if !(1..=2_097_151).contains(&self.prefetch_kbytes) {
            return Err(invalid(
                "worker.prefetch_kbytes",
                "must be between 1 and 2097151",
            ));
        }
        if self.session_timeout < Duration::from_secs(1) {
            return Err(invalid("worker.session_timeout", "must be at least 1s"));
        }
        if self.max_poll_interval <= self.session_timeout {
            return Err(invalid(
                "worker.max_poll_interval",
                "must be longer than worker.session_timeout",
            ));
        }
        Ok(())
    }
}

impl LoadSettings for Settings {
    const DEFAULTS: &'static str = DEFAULTS;
    const LISTS: &'static [&'static str] = &["storage.scylla.nodes"];

    fn validate(&self) -> Result<(), InvalidKey> {
        self.storage.scylla.validate()?;
        self.storage.scylla.validate_regions(&self.region)?;
        let kafka = &self.events.kafka;
        settings::check_kafka(&kafka.brokers, &kafka.topic)?;
        self.worker.validate(&kafka.topic)?;
        self.log.validate()?;
        self.traces.validate()
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
    fn defaults_match_the_api_defaults_for_shared_keys() {
        let s = Settings::defaults();
        assert_eq!(s.events.kafka.topic, "shortener.clicks");
        assert_eq!(s.storage.scylla.keyspace, "shortener");
        assert_eq!(s.worker.flush_interval, Duration::from_secs(1));
    }

    #[test]
    fn the_api_sections_are_ignored_and_the_worker_section_is_checked() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(
            dir.path().join("production.toml"),
            "[http]\nlisten = \"0.0.0.0:8080\"\n[storage]\nbackend = \"scylla\"\n\
             [events]\nbackend = \"kafka\"\n[events.kafka]\npartitions = 24\n\
             topic = \"clicks\"\n",
        )
        .expect("write");
        let s = Settings::load_from(Some(dir.path()), std::iter::empty()).expect("valid");
        assert_eq!(s.events.kafka.topic, "clicks");

        let err = load(&[("SHORTENER__WORKER__FLUSH_INTERVL", "1s")]).expect_err("typo");
        assert!(err.to_string().contains("flush_intervl"), "{err}");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases: &[(&str, &str)] = &[
            ("SHORTENER__WORKER__FLUSH_INTERVAL", "1ms"),
            ("SHORTENER__WORKER__DEAD_LETTER_TOPIC", "shortener.clicks"),
            ("SHORTENER__WORKER__MAX_POLL_INTERVAL", "5s"),
            ("SHORTENER__STORAGE__SCYLLA__REPLICATION", "dc1"),
            ("SHORTENER__EVENTS__KAFKA__TOPIC", "no spaces"),
            ("SHORTENER__WORKER__METRICS_LISTEN", "localhost"),
            ("SHORTENER__WORKER__WRITE_CONCURRENCY", "0"),
            ("SHORTENER__WORKER__CACHED_ROWS", "lots"),
        ];
        for (name, value) in cases {
            let err = load(&[(name, value)]).expect_err(name).to_string();
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn the_configuration_reference_documents_every_key() {
        let reference = include_str!("../../docs/configuration.md");
        let all = runtime::settings::keys_of(DEFAULTS).expect("defaults parse");
        assert!(all.len() > 20, "{all:?}");
        for key in all {
            let env = settings::env_name(&key);
            assert!(
                reference.contains(&format!("`{env}`")),
                "docs/configuration.md does not document {env}"
            );
        }
    }
}
