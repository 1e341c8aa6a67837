//! One cluster, several regions: where each request of a multi-region
//! deployment goes.
//!
//! - **Id leases** stay in the region: each region leases from its own
//!   `id_blocks` row (`links/<slot>`), only ever written through its own
//!   datacenter, so LOCAL_SERIAL there is a consensus of all its writers.
//!   The row starts [`REGION_SEED_GAP`] ids past the single-region counter,
//!   so the codes a deployment made before it had regions stay its own.
//! - **Alias reservations** for an id in another region's slot run in that
//!   region's datacenter (LOCAL_SERIAL and LOCAL_QUORUM there), the same
//!   consensus its leases use, so a lease either sees the reservation or
//!   the alias is refused.
//! - **Reads of links this region does not have (yet)** ask the code's home
//!   datacenter (generated codes are written at LOCAL_QUORUM there) and a
//!   majority of all replicas (aliases are committed to one), at once.

use links::{
    code::Code,
    link::Link,
    region::{REGION_SLOTS, RegionSlot, Regions},
    storage::StoreError,
};
use scylla::{
    client::execution_profile::ExecutionProfileHandle, response::query_result::QueryResult,
    statement::prepared::PreparedStatement, value::CqlValue,
};

use super::{
    ScyllaStore,
    outcome::{Failure, column, corrupt, from_execution, is_contention, lwt_row, maybe_applied},
    rows::{LinkRow, Stored},
};

/// The single-region counter: every id of a deployment without regions.
pub(super) const LEGACY_ROW: &str = "links";

/// How far past the single-region counter a region's ids start: instances
/// still leasing from that counter during the change to regions (a rolling
/// deploy) would need 2³² creates to reach the regions' ids, and the gap
/// costs 0.1% of the seven-character codes.
pub(super) const REGION_SEED_GAP: i64 = 1 << 32;

/// The regions of the deployment, with an execution profile per remote
/// region that sends requests to its datacenter (LOCAL_* counted there).
pub(super) struct Topology {
    pub(super) regions: Regions,
    pub(super) remote: Vec<(RegionSlot, ExecutionProfileHandle)>,
}

impl Topology {
    fn profile(&self, slot: RegionSlot) -> Option<&ExecutionProfileHandle> {
        self.remote
            .iter()
            .find(|(s, _)| *s == slot)
            .map(|(_, handle)| handle)
    }
}

/// An `id_blocks` row, and the datacenter its writes go through.
pub(super) struct IdRow<'a> {
    pub(super) name: String,
    /// The region slot whose ids the row hands out; `None`: the
    /// single-region counter, every id.
    pub(super) slot: Option<RegionSlot>,
    /// `None`: this region's datacenter (the session's default).
    pub(super) profile: Option<&'a ExecutionProfileHandle>,
}

impl IdRow<'_> {
    /// The distance between two of the row's ids.
    pub(super) fn step(&self) -> u64 {
        if self.slot.is_some() { REGION_SLOTS } else { 1 }
    }

    pub(super) fn owns(&self, id: u64) -> bool {
        self.slot.is_none_or(|slot| RegionSlot::of_id(id) == slot)
    }
}

impl ScyllaStore {
    /// Runs `statement` in the datacenter of `profile` (`None`: this one).
    pub(super) async fn execute_at(
        &self,
        profile: Option<&ExecutionProfileHandle>,
        statement: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<QueryResult, Failure> {
        match profile {
            None => self.execute(statement, values).await,
            Some(profile) => {
                let mut statement = statement.clone();
                statement.set_execution_profile_handle(Some(profile.clone()));
                self.execute(&statement, values).await
            }
        }
    }

    /// The row this instance leases from.
    pub(super) fn own_id_row(&self) -> IdRow<'_> {
        match &self.topology {
            None => IdRow {
                name: LEGACY_ROW.to_owned(),
                slot: None,
                profile: None,
            },
            Some(topology) => region_row(topology, topology.regions.local().slot),
        }
    }

    /// The next id of a row, at the row's serial consistency; a region's
    /// row is created at its first use.
    pub(super) async fn next_id(&self, row: &IdRow<'_>) -> Result<i64, StoreError> {
        if let Some(next) = self.read_next(row.profile, &row.name).await? {
            return Ok(next);
        }
        let Some(slot) = row.slot else {
            return Err(StoreError::Corrupt("the id block row is missing".into()));
        };
        let legacy = self.read_next(row.profile, LEGACY_ROW).await?.unwrap_or(0);
        let seed = legacy
            .checked_add(REGION_SEED_GAP)
            .and_then(|start| slot.first_at_or_after(start as u64))
            .and_then(|start| i64::try_from(start).ok())
            .ok_or_else(|| StoreError::Corrupt("the id space is used up".into()))?;
        match self
            .execute_at(
                row.profile,
                &self.statements.init_next_if_absent,
                (&row.name, seed),
            )
            .await
        {
            Ok(result) => match lwt_row(result)? {
                (true, _) => Ok(seed),
                (false, current) => match column(&current, "next") {
                    Some(CqlValue::BigInt(next)) => Ok(*next),
                    _ => Err(StoreError::Corrupt(format!("{} has no value", row.name))),
                },
            },
            Err(e) if maybe_applied(&e) || is_contention(&e) => self
                .read_next(row.profile, &row.name)
                .await?
                .ok_or_else(|| StoreError::Unavailable(Box::new(e))),
            Err(e) => Err(from_execution(e)),
        }
    }

    pub(super) async fn read_next(
        &self,
        profile: Option<&ExecutionProfileHandle>,
        name: &str,
    ) -> Result<Option<i64>, StoreError> {
        let result = self
            .execute_at(profile, &self.statements.select_next_serial, (name,))
            .await
            .map_err(from_execution)?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        match rows.maybe_first_row::<(Option<i64>,)>().map_err(corrupt)? {
            None => Ok(None),
            Some((Some(next),)) => Ok(Some(next)),
            Some((None,)) => Err(StoreError::Corrupt(format!("{name} has no value"))),
        }
    }

    /// Sets `id` aside in a multi-region deployment: in its home region's
    /// datacenter, against that region's counter and the single-region one.
    pub(super) async fn reserve_in_region(
        &self,
        topology: &Topology,
        id: i64,
    ) -> Result<bool, StoreError> {
        let slot = RegionSlot::of_id(id as u64);
        let home = topology
            .regions
            .by_slot(slot)
            .map(|_| region_row(topology, slot));
        let profile = home.as_ref().and_then(|row| row.profile);
        self.execute_at(
            profile,
            &self.statements.insert_reserved,
            (id >> super::RESERVED_BUCKET_BITS, id),
        )
        .await
        .map_err(from_execution)?;
        let legacy = self.read_next(profile, LEGACY_ROW).await?.unwrap_or(0);
        if id < legacy {
            return Ok(false);
        }
        match home {
            Some(row) => Ok(id >= self.next_id(&row).await?),
            // No region owns the slot yet; one added later starts past its
            // seed, and its leases read this reservation.
            None => Ok(true),
        }
    }

    /// A link this region's replicas do not have: asked of the code's home
    /// datacenter and of a majority of all replicas, at once.
    pub(super) async fn read_link_elsewhere(
        &self,
        topology: &Topology,
        code: &Code,
        home: Option<RegionSlot>,
    ) -> Result<Option<Link>, StoreError> {
        let home = home.and_then(|slot| topology.profile(slot));
        let at_home = async {
            match home {
                Some(profile) => {
                    self.read_link_at(Some(profile), &self.statements.select_link, code)
                        .await
                }
                None => Ok(None),
            }
        };
        let anywhere = self.read_link_at(None, &self.statements.select_link_quorum, code);
        let (at_home, anywhere) = tokio::join!(at_home, anywhere);
        let found = [&at_home, &anywhere]
            .into_iter()
            .filter_map(|r| r.as_ref().ok().and_then(Option::as_ref))
            .max_by_key(|stored| stored.revision);
        if let Some(stored) = found {
            return Ok(Some(stored.link.clone()));
        }
        // Nothing found: a 404 only if every read answered.
        at_home?;
        anywhere?;
        Ok(None)
    }

    pub(super) async fn read_link_at(
        &self,
        profile: Option<&ExecutionProfileHandle>,
        statement: &PreparedStatement,
        code: &Code,
    ) -> Result<Option<Stored>, StoreError> {
        let result = self
            .execute_at(profile, statement, (code.as_str(),))
            .await
            .map_err(from_execution)?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        let Some(row) = rows.maybe_first_row::<LinkRow>().map_err(corrupt)? else {
            return Ok(None);
        };
        row.into_stored()
    }
}

/// A region's row: through this datacenter for the local region, through
/// the region's own for another.
fn region_row(topology: &Topology, slot: RegionSlot) -> IdRow<'_> {
    IdRow {
        name: format!("{LEGACY_ROW}/{slot}"),
        slot: Some(slot),
        profile: topology.profile(slot),
    }
}
