//! A link's row: read back into a [`Link`] (with its compare-and-set
//! revision), and the TTL it is written with.

use chrono::{DateTime, Utc};

use links::storage::StoreError;
use links::{
    code::Code,
    link::{Link, RedirectStatus, TokenDigest},
    target::TargetUrl,
};

/// The longest TTL ScyllaDB and Cassandra accept (20 years); a link kept
/// longer is stored without one.
const MAX_TTL_SECS: i64 = 630_720_000;

/// A link as read, with its compare-and-set revision.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) link: Link,
    pub(super) revision: i32,
}

#[derive(scylla::DeserializeRow)]
pub(super) struct LinkRow {
    code: String,
    url: Option<String>,
    created_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    redirect: Option<i16>,
    forward_query: Option<bool>,
    deleted_at: Option<DateTime<Utc>>,
    token_digest: Option<Vec<u8>>,
    revision: Option<i32>,
}

impl LinkRow {
    pub(super) fn into_stored(self) -> Result<Option<Stored>, StoreError> {
        // Cells that outlived by TTL… or a row marker that did: not a link.
        let Some(url) = self.url else {
            return Ok(None);
        };
        let missing =
            |column: &str| StoreError::Corrupt(format!("link {} has no {column}", self.code));
        let redirect = self.redirect.ok_or_else(|| missing("redirect"))?;
        let digest = self.token_digest.ok_or_else(|| missing("token_digest"))?;
        let link = Link {
            code: Code::parse(&self.code)
                .map_err(|e| StoreError::Corrupt(format!("code {:?}: {e}", self.code)))?,
            url: TargetUrl::from_stored(url),
            created_at: self.created_at.ok_or_else(|| missing("created_at"))?,
            expires_at: self.expires_at,
            redirect: u16::try_from(redirect)
                .ok()
                .and_then(|r| RedirectStatus::try_from(r).ok())
                .ok_or_else(|| missing("valid redirect"))?,
            forward_query: self.forward_query.unwrap_or(false),
            deleted_at: self.deleted_at,
            token: TokenDigest::from_bytes(
                digest
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("token digest is not 32 bytes".into()))?,
            ),
            // Revisions count up from 0 and wrap where CQL's int does.
            revision: self.revision.unwrap_or(0) as u32,
        };
        Ok(Some(Stored {
            link,
            revision: self.revision.unwrap_or(0),
        }))
    }
}

/// The TTL of a row that may be forgotten at `purge_at`: 0 (none) when it
/// is kept for ever or beyond what a TTL can express.
pub(super) fn ttl_secs(purge_at: Option<DateTime<Utc>>) -> i32 {
    let Some(purge_at) = purge_at else { return 0 };
    let secs = (purge_at - Utc::now()).num_seconds();
    match secs {
        s if s > MAX_TTL_SECS => 0,
        s => s.max(1) as i32,
    }
}
