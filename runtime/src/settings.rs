//! Configuration plumbing shared by `shortener-api` and `shortener-worker`:
//! the layers a configuration is read from, the environment variable of
//! each key, and the logging both set up from it.
//!
//! Layers, each overriding the one before: the binary's built-in defaults
//! (its `defaults.toml`, which documents every key), then `config/*.toml`
//! in name order, then environment variables `SHORTENER__SECTION__KEY`.
//! Each binary deserializes the result straight into its own typed
//! settings ([`LoadSettings`]) and checks them, section by section, at
//! start; every error names the key and its environment variable.

use std::{
    fmt::Display,
    path::{Path, PathBuf},
    str::FromStr,
};

use config::{Config, ConfigError, Environment, File, FileFormat};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use tracing_subscriber::EnvFilter;

const ENV_PREFIX: &str = "SHORTENER";
/// Names the directory of `*.toml` overrides (default `./config`).
const CONFIG_DIR_VAR: &str = "SHORTENER_CONFIG_DIR";

/// A configuration a binary cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Unreadable, or not of the expected shape (an unknown key, a value
    /// of the wrong type).
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    #[error("configuration: cannot read {dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// A value that does not parse as its key's type.
    #[error("configuration key {key} (environment {env}): {source}")]
    Value {
        key: String,
        env: String,
        source: Box<ConfigError>,
    },
    /// Read, but a value is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidKey),
}

/// A binary's settings: its built-in defaults, the keys that take lists,
/// and the checks its values must pass. Loading is the same for all.
pub trait LoadSettings: DeserializeOwned {
    /// The built-in defaults (a `defaults.toml`, which documents every key).
    const DEFAULTS: &'static str;
    /// Keys whose environment variable holds a comma-separated list.
    const LISTS: &'static [&'static str] = &[];

    /// Checks what the types do not: ranges, and keys that depend on
    /// each other.
    fn validate(&self) -> Result<(), InvalidKey>;

    /// Reads the configuration of this process.
    fn load() -> Result<Self, SettingsError> {
        Self::load_from(Some(&config_dir()), std::env::vars())
    }

    /// Reads the defaults, then `dir/*.toml` if there is such a directory,
    /// then the given environment, and checks the result.
    fn load_from(
        dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let settings: Self = load(Self::DEFAULTS, dir, env, Self::LISTS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The built-in defaults alone.
    fn defaults() -> Self {
        Self::load_from(None, std::iter::empty()).expect("the built-in defaults are valid")
    }
}

/// For `#[serde(deserialize_with = …)]`: an empty string is `None`,
/// anything else must parse as `T`.
pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let text = String::deserialize(deserializer)?;
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// For `#[serde(deserialize_with = …)]`: a value that must parse as `T`
/// (for types that parse from text but do not implement `Deserialize`).
pub fn parsed<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    String::deserialize(deserializer)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// A value the configuration cannot hold: the key, the environment
/// variable that sets it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration key {key} (environment {env}): {reason}")]
pub struct InvalidKey {
    pub key: &'static str,
    pub env: String,
    pub reason: String,
}

/// Says what is wrong with the value of `key`.
pub fn invalid(key: &'static str, reason: impl Into<String>) -> InvalidKey {
    InvalidKey {
        key,
        env: env_name(key),
        reason: reason.into(),
    }
}

/// Kafka's rule for topic names: 1 to 249 letters, digits, `.`, `_`, `-`.
pub fn is_topic_name(name: &str) -> bool {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name.len() <= 249 && name.chars().all(legal)
}

/// The environment variable that sets a key: `http.listen` →
/// `SHORTENER__HTTP__LISTEN`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}__{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// The directory of overrides: `SHORTENER_CONFIG_DIR`, or `./config`.
pub fn config_dir() -> PathBuf {
    std::env::var_os(CONFIG_DIR_VAR).map_or_else(|| PathBuf::from("config"), PathBuf::from)
}

/// Reads `defaults`, then `dir/*.toml` if there is such a directory, then
/// the `SHORTENER__…` variables of `env`, into a binary's settings; the
/// keys in `lists` take comma-separated lists in the environment. The
/// caller checks the values.
pub fn load<T: serde::de::DeserializeOwned>(
    defaults: &str,
    dir: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    lists: &[&str],
) -> Result<T, SettingsError> {
    let mut builder = Config::builder().add_source(File::from_str(defaults, FileFormat::Toml));
    for file in dir.map(toml_files).transpose()?.unwrap_or_default() {
        builder = builder.add_source(File::from(file).format(FileFormat::Toml));
    }
    let env = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    let mut environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("__")
        .separator("__")
        .list_separator(",")
        .try_parsing(true)
        .source(Some(env));
    for key in lists {
        environment = environment.with_list_parse_key(key);
    }
    builder
        .add_source(environment)
        .build()?
        .try_deserialize()
        .map_err(name_the_key)
}

/// A value of the wrong type names its key and environment variable, as
/// the checks of values do.
fn name_the_key(error: ConfigError) -> SettingsError {
    let key = match &error {
        ConfigError::Type { key: Some(key), .. } | ConfigError::At { key: Some(key), .. } => {
            key.clone()
        }
        _ => return SettingsError::Config(error),
    };
    SettingsError::Value {
        env: env_name(&key),
        key,
        source: Box::new(error),
    }
}

/// Where click events are: the same two keys in both binaries.
pub fn check_kafka(brokers: &str, topic: &str) -> Result<(), InvalidKey> {
    if brokers.split(',').all(|b| b.trim().is_empty()) {
        return Err(invalid("events.kafka.brokers", "name at least one broker"));
    }
    if !is_topic_name(topic) {
        return Err(invalid(
            "events.kafka.topic",
            "1 to 249 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(())
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, SettingsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SettingsError::Dir {
                dir: dir.to_owned(),
                source,
            });
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `log.*`: the same keys in both binaries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

impl LogSettings {
    /// Checks the level filter.
    pub fn validate(&self) -> Result<(), InvalidKey> {
        EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| invalid("log.level", e.to_string()))
    }
}

/// Every key of a defaults file, as a dotted path (`http.listen`): what a
/// binary's reference documentation must cover.
pub fn keys_of(defaults: &str) -> Result<Vec<String>, SettingsError> {
    fn walk(prefix: &str, table: config::Map<String, config::Value>, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match value.kind {
                config::ValueKind::Table(inner) => walk(&key, inner, out),
                _ => out.push(key),
            }
        }
    }
    use config::Source;
    let table = Config::builder()
        .add_source(File::from_str(defaults, FileFormat::Toml))
        .build()?
        .collect()?;
    let mut keys = Vec::new();
    walk("", table, &mut keys);
    keys.sort();
    Ok(keys)
}
