//! The adapters of the storage port ([`links::LinkStore`]).
//!
//! - [`sqlite`]: the embedded default, files in a data directory.
//! - [`scylla`]: the production tier, ScyllaDB (or Cassandra) over CQL,
//!   with the tables of the worker's click ledger.
//! - [`fixtures`] (feature `test-fixtures`): a fresh store of each kind for
//!   the contract suite and the services' tests.
//!
//! Both pass the same contract (`links::storage::contract`): this crate's
//! `tests/` run it against each.

#[cfg(feature = "test-fixtures")]
pub mod fixtures;
pub mod scylla;
pub mod sqlite;
