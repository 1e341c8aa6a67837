//! The keyspace and its versioned schema.
//!
//! `migrate` creates the keyspace (replicated per datacenter), then applies
//! each numbered file of `migrations/scylla` not yet recorded in the
//! keyspace's `schema_migrations` table, statement by statement. Every
//! statement is idempotent, so a migration interrupted halfway is simply run
//! again. Run it once per deploy, before the new version starts (or let one
//! instance run it at start, `storage.scylla.migrate_on_start`): concurrent
//! schema changes from several clients are what ScyllaDB handles worst.

use chrono::Utc;
use scylla::client::session::Session;

use super::{ScyllaOptions, open_session};
use links::storage::StoreError;

/// The migrations, in order: version, name, CQL.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "links",
        include_str!("../../migrations/scylla/0001_links.cql"),
    ),
    (
        2,
        "click_ledger",
        include_str!("../../migrations/scylla/0002_click_ledger.cql"),
    ),
];

/// The schema version this build reads and writes.
pub const LATEST_VERSION: i32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Keyspace names are spliced into CQL, so only plain identifiers pass.
pub fn check_keyspace_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let valid = name.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Other(
            format!(
                "keyspace name {name:?} must be 1 to 48 lowercase letters, digits or _, \
                 starting with a letter"
            )
            .into(),
        ))
    }
}

fn ddl_error(cql: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("schema statement failed: {e}\n{cql}").into())
}

/// The statements of a migration file: `;`-separated, `--` comments.
fn statements(file: &str) -> impl Iterator<Item = String> + '_ {
    let text: String = file
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .into_iter()
}

async fn applied_versions(session: &Session, keyspace: &str) -> Result<Vec<i32>, StoreError> {
    let cql = format!("SELECT version FROM {keyspace}.schema_migrations");
    let result = session
        .query_unpaged(cql.as_str(), ())
        .await
        .map_err(|e| ddl_error(&cql, e))?;
    let rows = result.into_rows_result().map_err(|e| ddl_error(&cql, e))?;
    rows.rows::<(i32,)>()
        .map_err(|e| ddl_error(&cql, e))?
        .map(|row| row.map(|(v,)| v).map_err(|e| ddl_error(&cql, e)))
        .collect()
}

/// Creates the keyspace if needed and brings its schema to
/// [`LATEST_VERSION`]. Returns the versions it applied.
pub async fn migrate(options: &ScyllaOptions) -> Result<Vec<i32>, StoreError> {
    let keyspace = options.keyspace.as_str();
    check_keyspace_name(keyspace)?;
    if options.replication.is_empty() {
        return Err(StoreError::Other(
            "no replication given: name each datacenter and its replica count".into(),
        ));
    }
    let session = open_session(options, None).await?;
    let replication: Vec<String> = options
        .replication
        .iter()
        .map(|(dc, n)| format!("'{}': {n}", dc.replace('\'', "''")))
        .collect();
    let create_keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = \
         {{'class': 'NetworkTopologyStrategy', {}}} AND durable_writes = true",
        replication.join(", ")
    );
    let create_versions = format!(
        "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations \
         (version int PRIMARY KEY, name text, applied_at timestamp)"
    );
    for cql in [&create_keyspace, &create_versions] {
        session
            .query_unpaged(cql.as_str(), ())
            .await
            .map_err(|e| ddl_error(cql, e))?;
    }
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(|e| StoreError::Other(e.into()))?;

    let done = applied_versions(&session, keyspace).await?;
    let mut applied = Vec::new();
    for &(version, name, file) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        for cql in statements(file) {
            session
                .query_unpaged(cql.as_str(), ())
                .await
                .map_err(|e| ddl_error(&cql, e))?;
        }
        let record = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)";
        session
            .query_unpaged(record, (version, name, Utc::now()))
            .await
            .map_err(|e| ddl_error(record, e))?;
        tracing::info!(keyspace, version, name, "applied schema migration");
        applied.push(version);
    }
    Ok(applied)
}

/// Refuses to run against a keyspace whose schema is older than this build.
pub(super) async fn require_current(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    let current = applied_versions(session, keyspace)
        .await
        .map_err(|e| {
            StoreError::Other(
                format!(
                    "keyspace {keyspace} has no schema ({e}): run `shortener-api migrate` \
                     or set storage.scylla.migrate_on_start"
                )
                .into(),
            )
        })?
        .into_iter()
        .max()
        .unwrap_or(0);
    if current < LATEST_VERSION {
        return Err(StoreError::Other(
            format!(
                "keyspace {keyspace} has schema version {current}, this build needs \
                 {LATEST_VERSION}: run `shortener-api migrate`"
            )
            .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_split_into_statements_without_comments() {
        let all: Vec<String> = MIGRATIONS.iter().flat_map(|m| statements(m.2)).collect();
        assert!(all.len() >= 8, "{all:#?}");
        assert!(all.iter().all(|s| !s.contains("--") && !s.ends_with(';')));
        assert!(all[0].starts_with("CREATE TABLE IF NOT EXISTS links"));
    }

    #[test]
    fn keyspace_names_are_plain_identifiers() {
        assert!(check_keyspace_name("shortener").is_ok());
        assert!(check_keyspace_name("shortener_test_42").is_ok());
        for bad in ["", "1abc", "Shortener", "a;drop", "a b", &"a".repeat(49)] {
            assert!(check_keyspace_name(bad).is_err(), "{bad}");
        }
    }
}
