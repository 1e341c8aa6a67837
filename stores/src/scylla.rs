//! The production store: ScyllaDB over CQL (Cassandra 5 speaks the same
//! subset, and stands in for it where ScyllaDB cannot run).
//!
//! Every statement is prepared once, at [`ScyllaStore::connect`], and binds
//! its partition key, so the driver sends it straight to a replica (token
//! aware) in the preferred datacenter. Reads and plain writes are marked
//! idempotent, so the driver may retry them and run speculative executions;
//! lightweight transactions and counter increments are not, and their
//! uncertain outcomes are resolved here:
//!
//! - **Generated codes** are plain `INSERT`s: unique by construction (see
//!   [`Uniqueness::Generated`] and [`LinkStore::reserve_id`]).
//! - **Aliases** are `INSERT … IF NOT EXISTS`. When the outcome is unknown
//!   (a timeout after the request left), a serial read tells: the row holds
//!   this link's token digest (ours) or another's (a conflict).
//! - **Id blocks** are leased by compare-and-set on a counter row. An
//!   unknown outcome is treated as lost: the block is skipped, never shared.
//! - **PATCH and DELETE** rewrite the whole row with an `INSERT` (so every
//!   cell and the row marker carry the new TTL) in a conditional batch
//!   guarded by `IF revision = ?`, retrying on a concurrent change.
//!
//! Links expire by TTL at the end of their retention, the whole row at
//! once, so a forgotten alias can be taken again.
//!
//! The schema is the numbered CQL files in `migrations/scylla`, applied by
//! [`migrate`] into a keyspace replicated per datacenter
//! (`NetworkTopologyStrategy`).

mod clicks;
mod ledger;
mod outcome;
mod regions;
mod rows;
mod schema;
mod settings;
mod statements;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use scylla::{
    client::{
        execution_profile::ExecutionProfile, session::Session, session_builder::SessionBuilder,
    },
    frame::types::SerialConsistency,
    policies::{
        load_balancing::DefaultPolicy, speculative_execution::SimpleSpeculativeExecutionPolicy,
    },
    response::query_result::QueryResult,
    statement::prepared::PreparedStatement,
    value::CqlValue,
};
use tokio::sync::Semaphore;

pub use scylla::frame::types::Consistency;

pub use self::ledger::{Progress, Tally, TallyKey};
use self::outcome::{
    Failure, backoff, certainly_not_applied, column, corrupt, from_execution, is_contention,
    lwt_applied, lwt_row, maybe_applied,
};
use self::regions::Topology;
use self::rows::{Stored, ttl_secs};
pub use self::schema::{LATEST_VERSION, check_keyspace_name, migrate};
pub use self::settings::{
    ClickCounts, ConsistencySetting, CreateConsistency, RegionSettings, Replication, ScyllaOptions,
    ScyllaSettings,
};
use self::statements::{Reach, Statements};
use links::{
    clicks::ClickBatch,
    code::Code,
    link::{Link, LinkChanges},
    region::RegionSlot,
    stats::{ClickStats, StatsQuery},
    storage::{IdBlock, LinkStore, StoreError, Uniqueness, UnwrittenClicks},
};

/// Reserved ids share a partition per 2²⁴ ids: a lease reads one, rarely two.
const RESERVED_BUCKET_BITS: u32 = 24;
/// Compare-and-set attempts (id leases, PATCH, DELETE) before giving up as
/// unavailable: each failed attempt means another writer made progress.
const CAS_ATTEMPTS: u32 = 32;
/// Attempts at an alias create whose outcome stayed undecided (contention
/// or a timeout with nothing applied): each can take a request timeout.
const ALIAS_ATTEMPTS: u32 = 6;

/// Days of top lists read at once for one stats request.
const TOP_DAYS_IN_FLIGHT: usize = 8;
/// Rows per page of the range reads (buckets, a day's tops).
const PAGE_ROWS: i32 = 1000;

/// A link row's columns and its TTL, as bound to the statements that write
/// it whole.
type RowValues<'a> = (
    &'a str,
    &'a str,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    i16,
    bool,
    Option<DateTime<Utc>>,
    &'a [u8],
    i32,
    i32,
);

/// The production [`LinkStore`].
pub struct ScyllaStore {
    session: Session,
    statements: Statements,
    in_flight: Semaphore,
    request_timeout: Duration,
    retention: chrono::Duration,
    click_counts: ClickCounts,
    keyspace: String,
    /// The regions, when the deployment has several.
    topology: Option<Topology>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

/// The profile requests run under: token-aware, to the replicas of
/// `datacenter` only (when one is named), at `consistency`.
fn profile(
    options: &ScyllaOptions,
    datacenter: &str,
    consistency: Consistency,
) -> ExecutionProfile {
    let mut policy = DefaultPolicy::builder()
        .token_aware(true)
        .permit_dc_failover(false);
    if !datacenter.is_empty() {
        policy = policy.prefer_datacenter(datacenter.to_owned());
    }
    let mut profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(options.request_timeout))
        .load_balancing_policy(policy.build());
    if let Some(after) = options.speculative_after {
        profile = profile.speculative_execution_policy(Some(Arc::new(
            SimpleSpeculativeExecutionPolicy {
                max_retry_count: 1,
                retry_interval: after,
            },
        )));
    }
    profile.build()
}

/// A session to the cluster, with the profile every request runs under.
async fn open_session(
    options: &ScyllaOptions,
    keyspace: Option<&str>,
) -> Result<Session, StoreError> {
    let profile = profile(options, &options.local_dc, options.consistency);
    let mut builder = SessionBuilder::new()
        .known_nodes(&options.nodes)
        .connection_timeout(options.connect_timeout)
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&options.username, &options.password) {
        builder = builder.user(user, password);
    }
    if let Some(keyspace) = keyspace {
        builder = builder.use_keyspace(keyspace, false);
    }
    builder.build().await.map_err(|e| {
        StoreError::Unavailable(
            format!("cannot connect to {}: {e}", options.nodes.join(",")).into(),
        )
    })
}

impl ScyllaStore {
    /// Connects to the keyspace, checks its schema is current and prepares
    /// every statement.
    pub async fn connect(options: ScyllaOptions) -> Result<Arc<Self>, StoreError> {
        schema::check_keyspace_name(&options.keyspace)?;
        let session = open_session(&options, None).await?;
        schema::require_current(&session, &options.keyspace).await?;
        session
            .use_keyspace(&options.keyspace, false)
            .await
            .map_err(|e| StoreError::Other(e.into()))?;
        let topology = options.regions.clone().map(|regions| {
            // Another region's datacenter counts LOCAL_QUORUM there.
            let remote = regions
                .remote()
                .map(|r| {
                    let profile = profile(&options, &r.datacenter, Consistency::LocalQuorum);
                    (r.slot, profile.into_handle())
                })
                .collect();
            Topology { regions, remote }
        });
        let reach = match topology {
            None => Reach::local(options.create_consistency),
            Some(_) => Reach::global(options.create_consistency),
        };
        let statements = Statements::prepare(&session, reach).await?;
        Ok(Arc::new(Self {
            session,
            statements,
            in_flight: Semaphore::new(options.max_in_flight.max(1)),
            request_timeout: options.request_timeout,
            retention: options.retention,
            click_counts: options.click_counts,
            keyspace: options.keyspace,
            topology,
        }))
    }

    /// The keyspace this store works in.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<QueryResult, Failure> {
        let _permit = self.permit().await.map_err(Failure::NotSent)?;
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| Failure::Cql(Box::new(e)))
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        tokio::time::timeout(self.request_timeout, self.in_flight.acquire())
            .await
            .map_err(|_| StoreError::Unavailable("too many storage calls in flight".into()))?
            .map_err(|e| StoreError::Other(e.into()))
    }

    async fn read_link(&self, code: &Code, serial: bool) -> Result<Option<Stored>, StoreError> {
        let statement = if serial {
            &self.statements.select_link_serial
        } else {
            &self.statements.select_link
        };
        self.read_link_at(None, statement, code).await
    }

    /// The bind values of a whole link row, in `LINK_COLUMNS` order, then
    /// the TTL its state implies.
    fn row_values<'a>(&self, link: &'a Link, revision: i32) -> RowValues<'a> {
        (
            link.code.as_str(),
            link.url.as_str(),
            link.created_at,
            link.expires_at,
            link.redirect.as_u16() as i16,
            link.forward_query,
            link.deleted_at,
            link.token.as_bytes().as_slice(),
            revision,
            ttl_secs(link.purge_at(self.retention)),
        )
    }

    /// Rewrites a link whole, with the TTL its state implies, if nobody
    /// changed it since `expected` was read. `Ok(None)`: somebody did.
    async fn rewrite_if_unchanged(
        &self,
        link: &Link,
        expected: i32,
    ) -> Result<Option<()>, StoreError> {
        let revision = expected.wrapping_add(1);
        let row = self.row_values(link, revision);
        let guard = (revision, link.code.as_str(), expected);
        let outcome = match self.permit().await {
            Ok(_permit) => self
                .session
                .batch(&self.statements.rewrite_link_if_revision, (row, guard))
                .await
                .map_err(|e| Failure::Cql(Box::new(e))),
            Err(e) => Err(Failure::NotSent(e)),
        };
        match outcome {
            Ok(result) => Ok(lwt_applied(result)?.then_some(())),
            Err(e) if maybe_applied(&e) => {
                // Ours applied if the row holds our revision with our values:
                // only one writer can move it from `expected` to `revision`.
                match self.read_link(&link.code, true).await? {
                    Some(now) if now.revision == revision && now.link == *link => Ok(Some(())),
                    Some(now) if now.revision == expected => Ok(None),
                    _ => Err(StoreError::Unavailable(
                        format!("outcome of a change to {} is unknown: {e}", link.code).into(),
                    )),
                }
            }
            Err(e) => Err(from_execution(e)),
        }
    }

    /// Writes an alias's link unless its code exists. Racing creates of
    /// one alias (across regions, a consensus of all datacenters) can time
    /// out in contention with nothing applied: a serial read then tells
    /// whether ours won, another did, or nobody yet, and only then is the
    /// write tried again (the same row: applying twice cannot happen).
    async fn insert_if_absent(&self, link: &Link, values: RowValues<'_>) -> Result<(), StoreError> {
        let mut last = None;
        // Another attempt helps where writers contend; where the other
        // datacenters do not answer (a partition not yet noticed), it only
        // makes the client wait: none begins once the request timeout has
        // passed.
        let started = std::time::Instant::now();
        for attempt in 0..ALIAS_ATTEMPTS {
            if attempt > 0 && started.elapsed() >= self.request_timeout {
                break;
            }
            match self
                .execute(&self.statements.insert_link_if_absent, values)
                .await
            {
                Ok(result) => {
                    let (applied, current) = lwt_row(result)?;
                    // Not applied: taken, unless by an earlier attempt of
                    // this call whose answer was lost (the token digest is
                    // new with every link).
                    let ours = last.is_some()
                        && matches!(
                            column(&current, "token_digest"),
                            Some(CqlValue::Blob(digest)) if digest.as_slice() == link.token.as_bytes()
                        );
                    return match applied || ours {
                        true => Ok(()),
                        false => Err(StoreError::Conflict),
                    };
                }
                Err(e) if maybe_applied(&e) || is_contention(&e) => {
                    // The token digest is new with every link: if the row
                    // holds it, the row is ours.
                    match self.read_link(&link.code, true).await {
                        Ok(Some(now)) if now.link.token == link.token => return Ok(()),
                        Ok(Some(_)) => return Err(StoreError::Conflict),
                        Ok(None) | Err(_) => {
                            tracing::debug!(attempt, error = %e, code = %link.code, "alias create undecided; trying again");
                            last = Some(e);
                            backoff(attempt).await;
                        }
                    }
                }
                Err(e) => return Err(from_execution(e)),
            }
        }
        Err(StoreError::Unavailable(
            format!(
                "could not create {}: {}",
                link.code,
                last.map_or_else(|| "contention".to_owned(), |e| e.to_string())
            )
            .into(),
        ))
    }

    async fn reserved_between(&self, start: i64, end: i64) -> Result<Vec<u64>, StoreError> {
        let mut reserved = Vec::new();
        for bucket in (start >> RESERVED_BUCKET_BITS)..=((end - 1) >> RESERVED_BUCKET_BITS) {
            let result = self
                .execute(&self.statements.select_reserved, (bucket, start, end))
                .await
                .map_err(from_execution)?;
            let rows = result.into_rows_result().map_err(corrupt)?;
            for row in rows.rows::<(i64,)>().map_err(corrupt)? {
                reserved.push(row.map_err(corrupt)?.0 as u64);
            }
        }
        Ok(reserved)
    }
}

#[async_trait]
impl LinkStore for ScyllaStore {
    async fn lease_ids(&self, count: u64) -> Result<IdBlock, StoreError> {
        let row = self.own_id_row();
        let span = count
            .checked_mul(row.step())
            .and_then(|span| i64::try_from(span).ok())
            .ok_or_else(|| StoreError::Other(format!("cannot lease {count} ids at once").into()))?;
        let mut next = self.next_id(&row).await?;
        for attempt in 0..CAS_ATTEMPTS {
            let end = next
                .checked_add(span)
                .ok_or_else(|| StoreError::Corrupt("the id space is used up".into()))?;
            match self
                .execute_at(
                    row.profile,
                    &self.statements.advance_next_if,
                    (end, &row.name, next),
                )
                .await
            {
                Ok(result) => {
                    let (applied, current) = lwt_row(result)?;
                    if applied {
                        let mut reserved = self.reserved_between(next, end).await?;
                        reserved.retain(|&id| row.owns(id));
                        return Ok(IdBlock {
                            ids: next as u64..end as u64,
                            step: row.step(),
                            reserved,
                        });
                    }
                    next = match column(&current, "next") {
                        Some(CqlValue::BigInt(n)) => *n,
                        _ => self.next_id(&row).await?,
                    };
                }
                // Applied or not, the block is given up: skipping ids is
                // harmless, sharing them is not.
                Err(e) if maybe_applied(&e) || is_contention(&e) => {
                    tracing::debug!(attempt, error = %e, "id lease outcome unknown; leasing anew");
                    backoff(attempt).await;
                    next = self.next_id(&row).await?;
                }
                Err(e) => return Err(from_execution(e)),
            }
        }
        Err(StoreError::Unavailable(
            "could not lease ids: too much contention".into(),
        ))
    }

    async fn reserve_id(&self, id: u64) -> Result<bool, StoreError> {
        let id = i64::try_from(id).map_err(|e| StoreError::Other(e.into()))?;
        if let Some(topology) = &self.topology {
            return self.reserve_in_region(topology, id).await;
        }
        // Written before the lease mark is read: a lease that covers the id
        // and is taken after this read reads the reservation afterwards.
        self.execute(
            &self.statements.insert_reserved,
            (id >> RESERVED_BUCKET_BITS, id),
        )
        .await
        .map_err(from_execution)?;
        Ok(id >= self.next_id(&self.own_id_row()).await?)
    }

    async fn insert_link(&self, link: &Link, uniqueness: Uniqueness) -> Result<(), StoreError> {
        let values = self.row_values(link, link.revision as i32);
        match uniqueness {
            Uniqueness::Generated => self
                .execute(&self.statements.insert_link, values)
                .await
                .map(drop)
                .map_err(from_execution),
            Uniqueness::Checked => self.insert_if_absent(link, values).await,
        }
    }

    async fn get_link(&self, code: &Code) -> Result<Option<Link>, StoreError> {
        Ok(self.read_link(code, false).await?.map(|s| s.link))
    }

    async fn get_link_elsewhere(
        &self,
        code: &Code,
        home: Option<RegionSlot>,
    ) -> Result<Option<Link>, StoreError> {
        match &self.topology {
            Some(topology) => self.read_link_elsewhere(topology, code, home).await,
            None => Ok(None),
        }
    }

    async fn update_link(
        &self,
        code: &Code,
        changes: &LinkChanges,
    ) -> Result<Option<Link>, StoreError> {
        for attempt in 0..CAS_ATTEMPTS {
            let Some(Stored { mut link, revision }) = self
                .read_link(code, attempt > 0 || self.topology.is_some())
                .await?
            else {
                return Ok(None);
            };
            if link.deleted_at.is_some() {
                return Ok(None);
            }
            changes.apply_to(&mut link);
            link.revision = revision.wrapping_add(1) as u32;
            if self.rewrite_if_unchanged(&link, revision).await?.is_some() {
                return Ok(Some(link));
            }
        }
        Err(StoreError::Unavailable(
            format!("could not change {code}: too much contention").into(),
        ))
    }

    async fn delete_link(
        &self,
        code: &Code,
        at: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError> {
        // What the store keeps: whole milliseconds.
        let at = DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
        for attempt in 0..CAS_ATTEMPTS {
            let Some(Stored { mut link, revision }) = self
                .read_link(code, attempt > 0 || self.topology.is_some())
                .await?
            else {
                return Ok(None);
            };
            if link.deleted_at.is_some() {
                return Ok(None);
            }
            link.deleted_at = Some(at);
            link.revision = revision.wrapping_add(1) as u32;
            if self.rewrite_if_unchanged(&link, revision).await?.is_some() {
                return Ok(Some(link));
            }
        }
        Err(StoreError::Unavailable(
            format!("could not delete {code}: too much contention").into(),
        ))
    }

    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks> {
        self.add_clicks(batch).await
    }

    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError> {
        self.read_click_stats(code, query).await
    }

    async fn get_or_init_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        match self
            .execute(&self.statements.insert_setting_if_absent, (name, value))
            .await
        {
            Ok(result) => match lwt_row(result)? {
                (true, _) => Ok(value.to_owned()),
                (false, current) => match column(&current, "value") {
                    Some(CqlValue::Text(existing)) => Ok(existing.clone()),
                    _ => Err(StoreError::Corrupt(format!("setting {name} has no value"))),
                },
            },
            Err(e) if maybe_applied(&e) || is_contention(&e) => {
                let result = self
                    .execute(&self.statements.select_setting_serial, (name,))
                    .await
                    .map_err(from_execution)?;
                result
                    .into_rows_result()
                    .map_err(corrupt)?
                    .maybe_first_row::<(String,)>()
                    .map_err(corrupt)?
                    .map(|(v,)| v)
                    .ok_or_else(|| StoreError::Unavailable(Box::new(e)))
            }
            Err(e) => Err(from_execution(e)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.execute(&self.statements.ping, ())
            .await
            .map(drop)
            .map_err(from_execution)
    }
}
