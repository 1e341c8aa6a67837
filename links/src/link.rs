//! Links: a code, where it leads, and how.

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{code::Code, target::TargetUrl};

/// The status a link answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub enum RedirectStatus {
    /// 301: permanent, and clients may turn a POST into a GET.
    MovedPermanently,
    /// 302: the default; browsers re-ask every time, so every visit is counted.
    #[default]
    Found,
    /// 307: temporary, method and body kept.
    TemporaryRedirect,
    /// 308: permanent, method and body kept.
    PermanentRedirect,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the redirect status must be 301, 302, 307 or 308, not {0}")]
pub struct RedirectStatusError(pub u16);

impl RedirectStatus {
    pub fn as_u16(self) -> u16 {
        match self {
            Self::MovedPermanently => 301,
            Self::Found => 302,
            Self::TemporaryRedirect => 307,
            Self::PermanentRedirect => 308,
        }
    }
}

impl TryFrom<u16> for RedirectStatus {
    type Error = RedirectStatusError;
    fn try_from(status: u16) -> Result<Self, Self::Error> {
        match status {
            301 => Ok(Self::MovedPermanently),
            302 => Ok(Self::Found),
            307 => Ok(Self::TemporaryRedirect),
            308 => Ok(Self::PermanentRedirect),
            other => Err(RedirectStatusError(other)),
        }
    }
}

impl From<RedirectStatus> for u16 {
    fn from(status: RedirectStatus) -> Self {
        status.as_u16()
    }
}

/// A short link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub code: Code,
    pub url: TargetUrl,
    pub created_at: DateTime<Utc>,
    /// After this instant the link answers 410 Gone.
    pub expires_at: Option<DateTime<Utc>>,
    pub redirect: RedirectStatus,
    /// Whether the query string of a visit is appended to the target.
    pub forward_query: bool,
    /// Set when the link was deleted; it answers 410 Gone from then on, and
    /// its code is never handed out again.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Digest of the token that may change or delete this link.
    pub token: TokenDigest,
    /// How many times the link was changed (PATCH or DELETE): 0 when made.
    /// A cache that heard of a change drops copies older than it.
    pub revision: u32,
}

/// Where a link stands at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Active,
    Expired,
    Deleted,
}

impl LinkState {
    /// The state at `now` of a link with these times.
    pub fn of(
        expires_at: Option<DateTime<Utc>>,
        deleted_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Self {
        if deleted_at.is_some() {
            Self::Deleted
        } else if expires_at.is_some_and(|at| at <= now) {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

impl Link {
    pub fn state(&self, now: DateTime<Utc>) -> LinkState {
        LinkState::of(self.expires_at, self.deleted_at, now)
    }

    /// When the store may forget the link: `retention` after it expired or
    /// was deleted. Until then its code answers 410 rather than 404.
    pub fn purge_at(&self, retention: chrono::Duration) -> Option<DateTime<Utc>> {
        let ended = match (self.deleted_at, self.expires_at) {
            (Some(deleted), Some(expires)) => deleted.min(expires),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => return None,
        };
        Some(later_by(ended, retention))
    }
}

/// `at + by`, or the last representable instant if that is past it: times
/// here come from users, and an overflow must not take a thread down.
pub fn later_by(at: DateTime<Utc>, by: chrono::Duration) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How far ahead an expiry may be: a century. Further is no promise anyone
/// can keep, and bounding it keeps every time computed from an expiry (the
/// end of its retention, a TTL) far inside what the stores represent.
pub const MAX_LIFETIME: chrono::Duration = chrono::Duration::days(36_525);

/// Why an expiry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("expires_at must be in the future")]
    Past,
    #[error("expires_at must be at most 100 years ahead")]
    TooFar,
}

/// An expiry a user asked for at `now`: in the future, at most
/// [`MAX_LIFETIME`] ahead, in whole milliseconds (what the stores keep).
pub fn parse_expiry(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ExpiryError> {
    if at <= now {
        return Err(ExpiryError::Past);
    }
    if at > later_by(now, MAX_LIFETIME) {
        return Err(ExpiryError::TooFar);
    }
    Ok(DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at))
}

/// A change to a link (the body of a PATCH): `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChanges {
    pub url: Option<TargetUrl>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub redirect: Option<RedirectStatus>,
    pub forward_query: Option<bool>,
}

impl LinkChanges {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn apply_to(&self, link: &mut Link) {
        if let Some(url) = &self.url {
            link.url = url.clone();
        }
        if let Some(expires_at) = self.expires_at {
            link.expires_at = expires_at;
        }
        if let Some(redirect) = self.redirect {
            link.redirect = redirect;
        }
        if let Some(forward_query) = self.forward_query {
            link.forward_query = forward_query;
        }
    }
}

/// The secret that lets its holder change or delete one link. Shown once,
/// when the link is created; only its digest is stored.
pub struct ManageToken(String);

/// SHA-256 of a [`ManageToken`]. Tokens are 256 random bits, so a fast,
/// unsalted digest is enough: there is nothing to guess.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl ManageToken {
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

impl fmt::Debug for ManageToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ManageToken(<redacted>)")
    }
}

impl TokenDigest {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token this digest was made from.
    pub fn matches(&self, presented: &str) -> bool {
        // Comparing digests leaks nothing useful through timing: an attacker
        // learns about the digest of their guess, not about the token.
        Self::of(presented) == *self
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest read back from a store, which only ever writes digests.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::UrlPolicy;

    fn link() -> Link {
        let policy = UrlPolicy::new(100, []);
        Link {
            code: Code::parse("abcdefg").expect("valid"),
            url: TargetUrl::parse("https://example.com/", &policy).expect("valid"),
            created_at: Utc::now(),
            expires_at: None,
            redirect: RedirectStatus::Found,
            forward_query: false,
            deleted_at: None,
            token: ManageToken::generate().digest(),
            revision: 0,
        }
    }

    #[test]
    fn redirect_statuses_are_the_four_redirects() {
        for status in [301, 302, 307, 308] {
            assert_eq!(RedirectStatus::try_from(status).map(u16::from), Ok(status));
        }
        for status in [200, 300, 303, 304, 404] {
            assert_eq!(
                RedirectStatus::try_from(status),
                Err(RedirectStatusError(status))
            );
        }
    }

    #[test]
    fn state_follows_expiry_and_deletion() {
        let now = Utc::now();
        let mut link = link();
        assert_eq!(link.state(now), LinkState::Active);
        link.expires_at = Some(now);
        assert_eq!(link.state(now), LinkState::Expired);
        link.expires_at = Some(now + chrono::Duration::seconds(1));
        assert_eq!(link.state(now), LinkState::Active);
        link.deleted_at = Some(now);
        assert_eq!(link.state(now), LinkState::Deleted);
    }

    #[test]
    fn expiries_are_future_and_within_a_century() {
        let now = Utc::now();
        assert_eq!(parse_expiry(now, now), Err(ExpiryError::Past));
        assert_eq!(
            parse_expiry(now + chrono::Duration::days(36_526), now),
            Err(ExpiryError::TooFar)
        );
        assert_eq!(
            parse_expiry(DateTime::<Utc>::MAX_UTC, now),
            Err(ExpiryError::TooFar)
        );
        assert_eq!(
            parse_expiry(DateTime::<Utc>::MIN_UTC, now),
            Err(ExpiryError::Past)
        );
        let at = parse_expiry(now + chrono::Duration::days(36_524), now).expect("valid");
        assert_eq!(at.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[test]
    fn retention_past_the_last_instant_saturates() {
        let mut link = link();
        link.expires_at = Some(DateTime::<Utc>::MAX_UTC);
        assert_eq!(
            link.purge_at(chrono::Duration::days(30)),
            Some(DateTime::<Utc>::MAX_UTC)
        );
        link.deleted_at = Some(link.created_at);
        assert_eq!(
            link.purge_at(chrono::Duration::MAX),
            Some(DateTime::<Utc>::MAX_UTC)
        );
    }

    #[test]
    fn tokens_match_only_themselves() {
        let token = ManageToken::generate();
        let digest = token.digest();
        assert!(digest.matches(token.as_str()));
        assert!(!digest.matches(ManageToken::generate().as_str()));
        assert!(!digest.matches(""));
        assert_eq!(token.as_str().len(), 43);
    }

    #[test]
    fn changes_apply_only_what_they_name() {
        let mut link = link();
        let before = link.clone();
        LinkChanges::default().apply_to(&mut link);
        assert_eq!(link, before);
        let at = Utc::now();
        LinkChanges {
            expires_at: Some(Some(at)),
            forward_query: Some(true),
            ..Default::default()
        }
        .apply_to(&mut link);
        assert_eq!(link.expires_at, Some(at));
        assert!(link.forward_query);
        assert_eq!(link.url, before.url);
    }
}
