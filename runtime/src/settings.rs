//! Configuration plumbing shared by `shortener-api` and `shortener-worker`:
//! the layers a configuration is read from, the environment variable of
//! each key, and the logging both set up from it.
//!
//! Layers, each overriding the one before: the binary's built-in defaults
//! (its `defaults.toml`, which documents every key), then `config/*.toml`
//! in name order, then environment variables `SHORTENER__SECTION__KEY`.
//! Each binary deserializes the result into its own settings and checks
//! them at start.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;
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
    /// Read, but a value is not acceptable.
    #[error(transparent)]
    Invalid(#[from] InvalidKey),
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
    Ok(builder.add_source(environment).build()?.try_deserialize()?)
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
    /// Checks the level filter; the error says what is wrong with it.
    pub fn validate(&self) -> Result<(), String> {
        EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| e.to_string())
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
