//! The storage port.
//!
//! The port is shaped by what ScyllaDB does well, so every adapter can meet
//! it: every call reads or writes by partition key (the link's code, or a
//! setting's name), nothing joins, and expiry is a time after which the
//! store may forget a row (a TTL) rather than a scan.
//!
//! Its adapters live in the `stores` crate: SQLite, the embedded default,
//! and ScyllaDB (or Cassandra) over CQL, the production tier. The tests
//! every adapter passes are here, in `contract` (feature `contract-tests`).

use std::{fmt, ops::Range, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::{
    clicks::ClickBatch,
    code::Code,
    link::{Link, LinkChanges},
    region::RegionSlot,
    stats::{ClickStats, StatsQuery},
};

#[cfg(feature = "contract-tests")]
pub mod contract;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A block of ids leased to one caller: every `step`-th id of a range.
///
/// One region's store leases consecutive ids (`step` 1); a region of a
/// multi-region deployment leases only the ids of its slot (`step`
/// [`REGION_SLOTS`](crate::region::REGION_SLOTS)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdBlock {
    /// The ids are `ids.start`, `ids.start + step`, … below `ids.end`.
    pub ids: Range<u64>,
    pub step: u64,
    /// Ids of the block set aside for aliases, which the caller must skip.
    pub reserved: Vec<u64>,
}

impl IdBlock {
    /// Consecutive ids.
    pub fn consecutive(ids: Range<u64>, reserved: Vec<u64>) -> Self {
        Self {
            ids,
            step: 1,
            reserved,
        }
    }

    /// How many ids the block holds.
    pub fn len(&self) -> u64 {
        match self.ids.end.checked_sub(self.ids.start) {
            Some(span) if span > 0 => span.div_ceil(self.step.max(1)),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id) && (id - self.ids.start).is_multiple_of(self.step.max(1))
    }

    /// The ids of the block, reserved ones included.
    pub fn iter(&self) -> impl Iterator<Item = u64> + use<> {
        (self.ids.clone()).step_by(self.step.max(1) as usize)
    }

    /// Takes the block's first id.
    pub fn take_first(&mut self) -> Option<u64> {
        if self.ids.start >= self.ids.end {
            return None;
        }
        let id = self.ids.start;
        self.ids.start = id.saturating_add(self.step.max(1)).min(self.ids.end);
        Some(id)
    }
}

/// What a store must do about a code that may already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    /// A code a user chose (an alias): the insert must fail with
    /// [`StoreError::Conflict`] if the code is taken. A distributed store
    /// pays for this with a conditional write (`INSERT … IF NOT EXISTS`).
    Checked,
    /// A generated code, new by construction (see [`crate::codegen`]): a
    /// store may write it without a check. A store that checks anyway, as
    /// SQLite does for free, reports a conflict the same way, and the caller
    /// moves on to the next code.
    Generated,
}

/// What can go wrong in a store, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The code is already taken.
    #[error("the code is already taken")]
    Conflict,
    /// The store cannot be reached or is overloaded now; retrying later may
    /// work. The API answers 503.
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// Part of the store stopped for good in this process (the thread of
    /// an embedded connection is gone); only a restart brings it back. The
    /// API answers 503, readiness fails, and the process stops.
    #[error("the store is broken until the process restarts: {0}")]
    Broken(String),
    /// The store holds something this version cannot read.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Anything else; a bug or a misconfiguration.
    #[error("storage failed: {0}")]
    Other(#[source] BoxError),
}

/// What a failed [`LinkStore::record_clicks`] left unwritten.
///
/// Click counts are increments: writing one twice counts twice. A store
/// therefore hands back only the increments it knows were not applied,
/// to be written again with the next batch, and gives up those whose
/// write may or may not have landed (a timeout), leaving the counts short
/// rather than doubled.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({} rows to write again, {uncertain_rows} given up)", retry.rows())]
pub struct UnwrittenClicks {
    /// Increments certainly not applied: safe to write again.
    pub retry: ClickBatch,
    /// Rows whose increment may have been applied, given up.
    pub uncertain_rows: usize,
    #[source]
    pub error: StoreError,
}

impl UnwrittenClicks {
    /// Nothing of `batch` was applied.
    pub fn all(batch: &ClickBatch, error: StoreError) -> Self {
        Self {
            retry: batch.clone(),
            uncertain_rows: 0,
            error,
        }
    }
}

impl std::borrow::Borrow<StoreError> for UnwrittenClicks {
    fn borrow(&self) -> &StoreError {
        &self.error
    }
}

/// Where links, id blocks, settings and click counts live.
#[async_trait]
pub trait LinkStore: Send + Sync + fmt::Debug + 'static {
    /// Reserves a block of `count` ids no other caller will ever get
    /// (consecutive, or the next of this region's slot), with the ids among
    /// them that [`LinkStore::reserve_id`] set aside: their codes are
    /// aliases already, so the caller skips them.
    async fn lease_ids(&self, count: u64) -> Result<IdBlock, StoreError>;

    /// Sets `id` aside so that no lease hands it out, because an alias is
    /// about to take the code the generator makes of it. `false` if the id
    /// is leased already (its code may be issued any moment): the alias
    /// must then be refused as taken.
    ///
    /// This is what lets generated codes be written without a conditional
    /// write (see [`Uniqueness::Generated`]) in a store that does not check
    /// them: an alias can never take a code a lease may still produce.
    async fn reserve_id(&self, id: u64) -> Result<bool, StoreError>;

    /// Writes a new link. With [`Uniqueness::Checked`] it fails with
    /// [`StoreError::Conflict`] if the code exists, in any state, even when
    /// racing another insert of the same code.
    async fn insert_link(&self, link: &Link, uniqueness: Uniqueness) -> Result<(), StoreError>;

    /// The link with this code, whatever its state, until the store forgets
    /// it after its retention.
    async fn get_link(&self, code: &Code) -> Result<Option<Link>, StoreError>;

    /// A link that [`LinkStore::get_link`] did not find in this region,
    /// looked for in the others: in `home`, the region whose slot the code's
    /// id is in (where a generated code was written), and wherever aliases
    /// are committed. `None` from a store of one region, without a call.
    async fn get_link_elsewhere(
        &self,
        code: &Code,
        home: Option<RegionSlot>,
    ) -> Result<Option<Link>, StoreError> {
        let _ = (code, home);
        Ok(None)
    }

    /// Applies changes to a link that is not deleted; `None` if there is no
    /// such link.
    async fn update_link(
        &self,
        code: &Code,
        changes: &LinkChanges,
    ) -> Result<Option<Link>, StoreError>;

    /// Marks a link deleted, and returns it as deleted (its revision
    /// counted); `None` if there was no link or it was already deleted.
    async fn delete_link(&self, code: &Code, at: DateTime<Utc>)
    -> Result<Option<Link>, StoreError>;

    /// Adds a batch of click counts. The embedded store applies all of it
    /// or none; a distributed store applies it row by row, and a failure
    /// may leave part of it applied: the error then holds what is safe to
    /// write again, and counts are short, never doubled.
    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks>;

    /// Click statistics of a link (zeros for a link never clicked).
    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError>;

    /// The value of a setting, storing `value` first if it has none, so that
    /// racing instances all end up with the first value written.
    async fn get_or_init_setting(&self, name: &str, value: &str) -> Result<String, StoreError>;

    /// Whether the store answers; [`StoreError::Broken`] if it never will
    /// again in this process.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Work the store needs done in the background while it is open (the
    /// embedded store purges rows past their retention), for its owner to
    /// run among its own tasks until shutdown; `None` if there is none.
    fn maintenance(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        None
    }
}
