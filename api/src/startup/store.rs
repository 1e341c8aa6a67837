//! The store the settings name: opening it, its schema, and the policy
//! for what links may point at.

use std::{net::SocketAddr, sync::Arc};

use links::{
    LinkStore, UrlPolicy,
    target::{HostIdentity, host_of},
};
use stores::{
    scylla::{ClickCounts, ScyllaOptions, ScyllaStore},
    sqlite::{SqliteOptions, SqliteStore},
};

use super::StartupError;
use crate::config::{EventBackend, Settings, StorageBackend};

/// Opens the store the settings name.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn LinkStore>, StartupError> {
    let retention =
        chrono::Duration::from_std(settings.links.retention).unwrap_or(chrono::Duration::MAX);
    match settings.storage.backend {
        StorageBackend::Sqlite => {
            let sqlite = &settings.storage.sqlite;
            let store = SqliteStore::open(SqliteOptions {
                dir: sqlite.dir.clone(),
                readers: sqlite.readers.get(),
                max_in_flight: sqlite.max_in_flight.get(),
                busy_timeout: sqlite.busy_timeout,
                retention,
                background: settings.events.priority,
            })
            .await?;
            tracing::info!(dir = %sqlite.dir.display(), "opened the embedded SQLite store");
            Ok(store)
        }
        StorageBackend::Scylla => {
            let options = scylla_options(settings);
            if settings.storage.scylla.migrate_on_start {
                stores::scylla::migrate(&options).await?;
            }
            let store = ScyllaStore::connect(options).await?;
            tracing::info!(
                nodes = ?settings.storage.scylla.nodes,
                keyspace = store.keyspace(),
                local_dc = %settings.storage.scylla.local_dc,
                "connected to ScyllaDB"
            );
            Ok(store)
        }
    }
}

/// What target URLs may be: links may not lead to the service itself, by
/// its public host or the address it listens on (with every loopback name
/// and address when that is loopback), nor to `links.blocked_hosts`.
pub(super) fn url_policy(
    settings: &Settings,
    public_base: &str,
    listening: SocketAddr,
) -> UrlPolicy {
    let configured = settings.links.blocked_hosts.iter().cloned();
    let own = host_of(public_base)
        .into_iter()
        .chain([HostIdentity::of_ip(listening.ip())]);
    UrlPolicy::new(settings.links.max_url_length, configured.chain(own))
}

/// The Scylla adapter's options from the settings.
pub fn scylla_options(settings: &Settings) -> ScyllaOptions {
    // With Kafka, the worker counts clicks; in process, the API does.
    let click_counts = match settings.events.backend {
        EventBackend::Kafka => ClickCounts::Ledger,
        EventBackend::Inprocess => ClickCounts::Counters,
    };
    settings
        .storage
        .scylla
        .options(settings.links.retention, click_counts, &settings.region)
}

/// `shortener-api migrate`: brings the configured store's schema up to
/// date. The embedded store migrates itself whenever it opens.
pub async fn migrate(settings: &Settings) -> Result<(), StartupError> {
    match settings.storage.backend {
        StorageBackend::Sqlite => {
            open_store(settings).await?;
            tracing::info!("the SQLite store is migrated");
        }
        StorageBackend::Scylla => {
            let options = scylla_options(settings);
            let applied = stores::scylla::migrate(&options).await?;
            tracing::info!(
                keyspace = %options.keyspace,
                ?applied,
                version = stores::scylla::LATEST_VERSION,
                "the Scylla schema is up to date"
            );
        }
    }
    Ok(())
}
