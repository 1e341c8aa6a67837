//! Click events: one per followed redirect, as they travel to aggregation.

use std::fmt;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use uuid::Uuid;

use crate::code::Code;

/// Longest user agent kept; real ones are under 300 bytes, and a longer one
/// is either truncated to this or an attempt to bloat the pipeline.
pub const MAX_USER_AGENT: usize = 512;
/// Longest DNS name.
const MAX_HOST: usize = 253;

/// One followed redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickEvent {
    /// Unique per click and ordered by time (UUIDv7), so a consumer can tell
    /// a redelivered event from a new one.
    pub id: Uuid,
    pub code: Code,
    pub at: DateTime<Utc>,
    /// Host of the `Referer`; `None` for direct visits.
    pub referrer: Option<ReferrerHost>,
    /// At most [`MAX_USER_AGENT`] bytes.
    pub user_agent: Option<String>,
    pub country: Option<Country>,
}

impl ClickEvent {
    /// Builds the event from what a redirect request carried. Header values
    /// are untrusted: anything unusable is dropped, never an error, because a
    /// click is counted whatever its headers say.
    pub fn from_request(
        code: Code,
        at: DateTime<Utc>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
        country: Option<&[u8]>,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            code,
            at,
            referrer: referer.and_then(ReferrerHost::of_referer),
            user_agent: user_agent.and_then(truncated_user_agent),
            country: country.and_then(Country::parse),
        }
    }
}

/// The host a click came from: lower case, ASCII (punycode), without a
/// trailing dot, at most 253 bytes. Checked once, where it enters: from a
/// `Referer` header, or from a click event on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferrerHost(CompactString);

impl ReferrerHost {
    /// The host of a `Referer` header's URL; `None` unless it is an http or
    /// https URL with a host.
    pub fn of_referer(referer: &[u8]) -> Option<Self> {
        let url = url::Url::parse(std::str::from_utf8(referer).ok()?).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        Self::checked(url.host_str()?)
    }

    /// A host as a click event carries it; `None` if it is not one
    /// [`ReferrerHost::of_referer`] could have made: an IPv6 address in
    /// brackets, or lower-case ASCII without the code points URLs forbid in
    /// hosts. A scan of its bytes, no parsing: the worker reads one per
    /// event.
    pub fn parse(host: &str) -> Option<Self> {
        let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(ip) => {
                ip.parse::<std::net::Ipv6Addr>().is_ok()
                    && !ip.bytes().any(|b| b.is_ascii_uppercase())
            }
            // What a URL's host may hold once lower-cased and punycoded:
            // ASCII letters, digits and the punctuation URLs allow there.
            None => host.bytes().all(|b| {
                matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'!' | b'"'
                    | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b'`'
                    | b'{' | b'}')
            }),
        };
        Self::checked(host).filter(|checked| valid && checked.as_str() == host)
    }

    fn checked(host: &str) -> Option<Self> {
        let host = host.trim_end_matches('.');
        (!host.is_empty() && host.len() <= MAX_HOST).then(|| Self(CompactString::from(host)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ReferrerHost {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

fn truncated_user_agent(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut end = text.len().min(MAX_USER_AGENT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(text[..end].to_owned())
}

/// An ISO 3166-1 alpha-2 country code, upper case, as CDNs send it
/// (`CloudFront-Viewer-Country`, `CF-IPCountry`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub fn parse(raw: &[u8]) -> Option<Self> {
        match raw {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("two ASCII letters")
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(referer: &str, ua: &str, country: &str) -> ClickEvent {
        ClickEvent::from_request(
            Code::parse("abcdefg").expect("valid"),
            Utc::now(),
            Some(referer.as_bytes()),
            Some(ua.as_bytes()),
            Some(country.as_bytes()),
        )
    }

    #[test]
    fn keeps_only_the_referrer_host() {
        let e = event("https://News.Example.COM./item?id=1", "ua", "de");
        assert_eq!(e.referrer.as_deref(), Some("news.example.com"));
        for bad in ["", "not a url", "android-app://com.example/", "/relative"] {
            assert_eq!(event(bad, "ua", "de").referrer, None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_host_a_referer_gives_reads_back_from_the_wire(
            host in "([ -~]{1,30}|\\PC{1,12})"
        ) {
            let referer = format!("http://{host}/");
            if let Some(made) = ReferrerHost::of_referer(referer.as_bytes()) {
                proptest::prop_assert_eq!(ReferrerHost::parse(made.as_str()), Some(made));
            }
        }
    }

    #[test]
    fn a_referrer_host_reads_back_from_the_wire_as_it_was_made() {
        for referer in [
            "https://news.example.com/a",
            "http://[2001:DB8::1]:8080/",
            "https://bücher.example/",
            "http://192.168.0.1/",
        ] {
            let host = ReferrerHost::of_referer(referer.as_bytes()).expect(referer);
            assert_eq!(ReferrerHost::parse(host.as_str()), Some(host), "{referer}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "News.Example",
            "x.example.",
            "[::1",
            "%41",
        ] {
            assert_eq!(ReferrerHost::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn country_is_two_letters_upper_cased() {
        assert_eq!(
            event("", "", "de").country.map(|c| c.as_str().to_owned()),
            Some("DE".into())
        );
        for bad in ["", "D", "DEU", "1A", "é"] {
            assert_eq!(event("", "", bad).country, None, "{bad:?}");
        }
    }

    #[test]
    fn user_agents_are_bounded() {
        assert_eq!(event("", "  ", "").user_agent, None);
        let long = "é".repeat(400);
        let ua = event("", &long, "").user_agent.expect("kept");
        assert!(ua.len() <= MAX_USER_AGENT && ua.len() >= MAX_USER_AGENT - 1);
        assert!(long.starts_with(&ua));
    }

    #[test]
    fn event_ids_are_unique_and_time_ordered() {
        let a = event("", "", "");
        let b = event("", "", "");
        assert!(a.id < b.id);
    }
}
