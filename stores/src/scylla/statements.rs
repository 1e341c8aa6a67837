//! Every statement the store runs, prepared once per session.
//!
//! Reads and plain writes are idempotent: the driver may retry them and
//! send speculative executions. Conditional writes and counter increments
//! are not: a retry could apply twice, so the store resolves their
//! uncertain outcomes itself. Serial reads see the latest conditional
//! write of their scope ([`Reach`]).

use scylla::{
    client::session::Session,
    frame::types::{Consistency, SerialConsistency},
    statement::{
        batch::{Batch, BatchStatement, BatchType},
        prepared::PreparedStatement,
    },
};

use links::storage::StoreError;

pub(super) struct LedgerStatements {
    pub(super) select_totals: PreparedStatement,
    pub(super) select_buckets: PreparedStatement,
    pub(super) select_tops: PreparedStatement,
    pub(super) read_totals: PreparedStatement,
    pub(super) read_bucket: PreparedStatement,
    pub(super) read_top: PreparedStatement,
    pub(super) read_day_tops: PreparedStatement,
    pub(super) write_totals: PreparedStatement,
    pub(super) write_bucket: PreparedStatement,
    pub(super) write_top: PreparedStatement,
    pub(super) select_progress_serial: PreparedStatement,
    pub(super) insert_progress_if_absent: PreparedStatement,
    pub(super) claim_progress_if: PreparedStatement,
    pub(super) advance_progress_if: PreparedStatement,
}

pub(super) struct Statements {
    pub(super) insert_link: PreparedStatement,
    pub(super) insert_link_if_absent: PreparedStatement,
    pub(super) select_link: PreparedStatement,
    pub(super) select_link_serial: PreparedStatement,
    /// A read from a majority of all replicas, every region's: finds what
    /// a shared write committed anywhere.
    pub(super) select_link_quorum: PreparedStatement,
    /// An unconditional `INSERT` of the whole row (so the row marker takes
    /// the new TTL too) and `UPDATE … IF revision = ?`: a conditional batch
    /// in one partition, applied whole or not at all.
    pub(super) rewrite_link_if_revision: Batch,
    pub(super) select_next_serial: PreparedStatement,
    pub(super) advance_next_if: PreparedStatement,
    /// A region's id row, created at its first lease.
    pub(super) init_next_if_absent: PreparedStatement,
    pub(super) insert_reserved: PreparedStatement,
    pub(super) select_reserved: PreparedStatement,
    pub(super) insert_setting_if_absent: PreparedStatement,
    pub(super) select_setting_serial: PreparedStatement,
    pub(super) add_totals: PreparedStatement,
    pub(super) add_bucket: PreparedStatement,
    pub(super) add_top: PreparedStatement,
    pub(super) select_totals: PreparedStatement,
    pub(super) select_buckets: PreparedStatement,
    pub(super) select_tops: PreparedStatement,
    /// The worker's exact counts (`click_ledger_*`): sums for the stats
    /// API, and one source's row for the worker.
    pub(super) ledger: LedgerStatements,
    pub(super) ping: PreparedStatement,
}

/// How far the writes shared by every region reach: in one region, all
/// of them stay in the local datacenter; across regions, what must be
/// unique or agreed worldwide (aliases, changes to links, settings) is a
/// consensus of all datacenters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reach {
    /// Consistency of generated creates: the profile's (LOCAL_QUORUM by
    /// default) or EACH_QUORUM, which survives the loss of a region.
    pub(super) create: Option<Consistency>,
    /// Serial consistency of conditional writes to links and settings.
    pub(super) shared_serial: SerialConsistency,
    /// Commit consistency of those writes (`None`: the profile's).
    pub(super) shared_commit: Option<Consistency>,
}

impl Reach {
    /// One region: everything local.
    pub(super) fn local(create: Option<Consistency>) -> Self {
        Self {
            create,
            shared_serial: SerialConsistency::LocalSerial,
            shared_commit: None,
        }
    }

    /// Several regions: shared writes by consensus of all datacenters,
    /// committed to a majority of all replicas (or each datacenter's, when
    /// creates ask for EACH_QUORUM), so a QUORUM read anywhere sees them.
    pub(super) fn global(create: Option<Consistency>) -> Self {
        let commit = match create {
            Some(Consistency::EachQuorum) => Consistency::EachQuorum,
            _ => Consistency::Quorum,
        };
        Self {
            create,
            shared_serial: SerialConsistency::Serial,
            shared_commit: Some(commit),
        }
    }

    /// The consistency of a serial read of what shared writes wrote.
    fn shared_read(self) -> Consistency {
        match self.shared_serial {
            SerialConsistency::Serial => Consistency::Serial,
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
        }
    }
}

impl Statements {
    pub(super) async fn prepare(session: &Session, reach: Reach) -> Result<Self, StoreError> {
        const LINK_COLUMNS: &str = "code, url, created_at, expires_at, redirect, forward_query, \
                                    deleted_at, token_digest, revision";
        let prepare = |cql: String, idempotent: bool, consistency: Option<Consistency>| async move {
            let mut statement = session
                .prepare(cql.as_str())
                .await
                .map_err(|e| StoreError::Other(format!("cannot prepare `{cql}`: {e}").into()))?;
            statement.set_is_idempotent(idempotent);
            if let Some(consistency) = consistency {
                statement.set_consistency(consistency);
            }
            Ok::<_, StoreError>(statement)
        };
        let serial = Some(Consistency::LocalSerial);
        let shared = |mut statement: PreparedStatement| {
            statement.set_serial_consistency(Some(reach.shared_serial));
            if let Some(commit) = reach.shared_commit {
                statement.set_consistency(commit);
            }
            statement
        };
        Ok(Self {
            insert_link: prepare(
                format!("INSERT INTO links ({LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"),
                true,
                reach.create,
            )
            .await?,
            insert_link_if_absent: shared(prepare(
                format!("INSERT INTO links ({LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?"),
                false,
                None,
            )
            .await?),
            select_link: prepare(
                format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?"),
                true,
                None,
            )
            .await?,
            select_link_serial: prepare(
                format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?"),
                true,
                Some(reach.shared_read()),
            )
            .await?,
            select_link_quorum: prepare(
                format!("SELECT {LINK_COLUMNS} FROM links WHERE code = ?"),
                true,
                Some(Consistency::Quorum),
            )
            .await?,
            rewrite_link_if_revision: {
                let insert = prepare(
                    format!(
                        "INSERT INTO links ({LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                         USING TTL ?"
                    ),
                    false,
                    None,
                )
                .await?;
                let guard = prepare(
                    "UPDATE links SET revision = ? WHERE code = ? IF revision = ?".into(),
                    false,
                    None,
                )
                .await?;
                let mut batch = Batch::new_with_statements(
                    BatchType::Logged,
                    vec![
                        BatchStatement::PreparedStatement(insert),
                        BatchStatement::PreparedStatement(guard),
                    ],
                );
                batch.set_is_idempotent(false);
                batch.set_serial_consistency(Some(reach.shared_serial));
                if let Some(commit) = reach.shared_commit {
                    batch.set_consistency(commit);
                }
                batch
            },
            select_next_serial: prepare(
                "SELECT next FROM id_blocks WHERE name = ?".into(),
                true,
                serial,
            )
            .await?,
            init_next_if_absent: prepare(
                "INSERT INTO id_blocks (name, next) VALUES (?, ?) IF NOT EXISTS".into(),
                false,
                None,
            )
            .await?,
            advance_next_if: prepare(
                "UPDATE id_blocks SET next = ? WHERE name = ? IF next = ?".into(),
                false,
                None,
            )
            .await?,
            insert_reserved: prepare(
                "INSERT INTO reserved_ids (bucket, id) VALUES (?, ?)".into(),
                true,
                None,
            )
            .await?,
            select_reserved: prepare(
                "SELECT id FROM reserved_ids WHERE bucket = ? AND id >= ? AND id < ?".into(),
                true,
                None,
            )
            .await?,
            insert_setting_if_absent: shared(
                prepare(
                    "INSERT INTO settings (name, value) VALUES (?, ?) IF NOT EXISTS".into(),
                    false,
                    None,
                )
                .await?,
            ),
            select_setting_serial: prepare(
                "SELECT value FROM settings WHERE name = ?".into(),
                true,
                Some(reach.shared_read()),
            )
            .await?,
            add_totals: prepare(
                "UPDATE click_totals SET clicks = clicks + ?, bot_clicks = bot_clicks + ? \
                 WHERE code = ?"
                    .into(),
                false,
                None,
            )
            .await?,
            add_bucket: prepare(
                "UPDATE click_buckets SET clicks = clicks + ?, bot_clicks = bot_clicks + ? \
                 WHERE code = ? AND granularity = ? AND start = ?"
                    .into(),
                false,
                None,
            )
            .await?,
            add_top: prepare(
                "UPDATE click_tops SET clicks = clicks + ? \
                 WHERE code = ? AND day = ? AND dimension = ? AND value = ?"
                    .into(),
                false,
                None,
            )
            .await?,
            select_totals: prepare(
                "SELECT clicks, bot_clicks FROM click_totals WHERE code = ?".into(),
                true,
                None,
            )
            .await?,
            select_buckets: prepare(
                "SELECT start, clicks, bot_clicks FROM click_buckets \
                 WHERE code = ? AND granularity = ? AND start >= ? AND start < ?"
                    .into(),
                true,
                None,
            )
            .await?,
            select_tops: prepare(
                "SELECT dimension, value, clicks FROM click_tops WHERE code = ? AND day = ?".into(),
                true,
                None,
            )
            .await?,
            ledger: LedgerStatements {
                select_totals: prepare(
                    "SELECT source, clicks, bot_clicks FROM click_ledger_totals WHERE code = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                select_buckets: prepare(
                    "SELECT start, clicks, bot_clicks FROM click_ledger_buckets \
                     WHERE code = ? AND granularity = ? AND start >= ? AND start < ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                select_tops: prepare(
                    "SELECT dimension, value, clicks FROM click_ledger_tops \
                     WHERE code = ? AND day = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                read_totals: prepare(
                    "SELECT clicks, bot_clicks, through FROM click_ledger_totals \
                     WHERE code = ? AND source = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                read_bucket: prepare(
                    "SELECT clicks, bot_clicks, through FROM click_ledger_buckets \
                     WHERE code = ? AND granularity = ? AND start = ? AND source = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                read_top: prepare(
                    "SELECT clicks, through FROM click_ledger_tops \
                     WHERE code = ? AND day = ? AND dimension = ? AND value = ? AND source = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                read_day_tops: prepare(
                    "SELECT dimension, value, source, clicks, through FROM click_ledger_tops \
                     WHERE code = ? AND day = ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                // Replacing a row with the same values is harmless, so the
                // writes are idempotent and the driver may retry them.
                write_totals: prepare(
                    "INSERT INTO click_ledger_totals \
                     (code, source, clicks, bot_clicks, through) VALUES (?, ?, ?, ?, ?) \
                     USING TIMESTAMP ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                write_bucket: prepare(
                    "INSERT INTO click_ledger_buckets \
                     (code, granularity, start, source, clicks, bot_clicks, through) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                write_top: prepare(
                    "INSERT INTO click_ledger_tops \
                     (code, day, dimension, value, source, clicks, through) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
                        .into(),
                    true,
                    None,
                )
                .await?,
                select_progress_serial: prepare(
                    "SELECT owner, committed, pending FROM click_ledger_progress \
                     WHERE topic = ? AND source = ?"
                        .into(),
                    true,
                    serial,
                )
                .await?,
                insert_progress_if_absent: prepare(
                    "INSERT INTO click_ledger_progress (topic, source, owner, committed, pending) \
                     VALUES (?, ?, ?, 0, 0) IF NOT EXISTS"
                        .into(),
                    false,
                    None,
                )
                .await?,
                claim_progress_if: prepare(
                    "UPDATE click_ledger_progress SET owner = ? WHERE topic = ? AND source = ? \
                     IF owner = ? AND committed = ? AND pending = ?"
                        .into(),
                    false,
                    None,
                )
                .await?,
                advance_progress_if: prepare(
                    "UPDATE click_ledger_progress SET committed = ?, pending = ? \
                     WHERE topic = ? AND source = ? IF owner = ?"
                        .into(),
                    false,
                    None,
                )
                .await?,
            },
            ping: prepare(
                "SELECT release_version FROM system.local".into(),
                true,
                None,
            )
            .await?,
        })
    }
}
