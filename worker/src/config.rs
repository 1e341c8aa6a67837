//! Configuration: the one place that reads the environment.
//!
//! The same layers as the API's (see [`runtime::settings`]); the worker takes
//! the sections it needs and ignores the API's, so one file can configure
//! both. Everything is checked at start, and an error names the bad key.

use std::{path::Path, time::Duration};

pub use runtime::settings::SettingsError;
use runtime::{
    settings::{self, LogSettings, config_dir},
    telemetry::TraceSettings,
};
use serde::Deserialize;
use stores::scylla::ScyllaSettings;

/// The built-in defaults, and the reference of every key.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
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
    pub max_pending_rows: usize,
    pub write_concurrency: usize,
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
    pub metrics_listen: String,
}

impl WorkerSettings {
    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> Result<std::net::SocketAddr, SettingsError> {
        self.metrics_listen.parse().map_err(|_| {
            invalid(
                "worker.metrics_listen",
                "not an address such as 0.0.0.0:9465",
            )
        })
    }
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
        let settings: Settings = settings::load(DEFAULTS, dir, env, &["storage.scylla.nodes"])?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone.
    pub fn defaults() -> Self {
        Self::load_from(None, std::iter::empty()).expect("the built-in defaults are valid")
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.storage.scylla.validate()?;
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
        let w = &self.worker;
        if w.group.trim().is_empty() {
            return Err(invalid("worker.group", "must not be empty"));
        }
        if !settings::is_topic_name(&w.dead_letter_topic) || w.dead_letter_topic == kafka.topic {
            return Err(invalid(
                "worker.dead_letter_topic",
                "1 to 249 letters, digits, '.', '_' or '-', other than events.kafka.topic",
            ));
        }
        if w.flush_interval < Duration::from_millis(10) {
            return Err(invalid("worker.flush_interval", "must be at least 10ms"));
        }
        if w.max_pending_rows == 0 {
            return Err(invalid("worker.max_pending_rows", "must be at least 1"));
        }
        if w.write_concurrency == 0 {
            return Err(invalid("worker.write_concurrency", "must be at least 1"));
        }
        if w.max_backoff < Duration::from_millis(50) {
            return Err(invalid("worker.max_backoff", "must be at least 50ms"));
        }
        if !(1..=2_097_151).contains(&w.prefetch_kbytes) {
            return Err(invalid(
                "worker.prefetch_kbytes",
                "must be between 1 and 2097151",
            ));
        }
        if w.session_timeout < Duration::from_secs(1) {
            return Err(invalid("worker.session_timeout", "must be at least 1s"));
        }
        if w.max_poll_interval <= w.session_timeout {
            return Err(invalid(
                "worker.max_poll_interval",
                "must be longer than worker.session_timeout",
            ));
        }
        self.log
            .validate()
            .map_err(|reason| invalid("log.level", reason))?;
        self.traces.validate()?;
        w.metrics_addr()?;
        Ok(())
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
