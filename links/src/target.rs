//! Target URLs: where a link leads, checked once, when it is written.

use std::fmt;

use url::Url;

/// The rules a target URL must follow, from configuration.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    /// Longest accepted URL, in bytes, before and after normalisation.
    pub max_len: usize,
    /// Hosts links may not point to, in lower case: the service's own public
    /// host (a link to another short link of ours can loop) and any others.
    pub blocked_hosts: Vec<String>,
}

/// An absolute `http`/`https` URL that is safe to put in a `Location` header.
///
/// Normalised by the WHATWG parser: international domain names are stored as
/// punycode, the scheme and host are lower case, spaces are percent-encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetUrl(String);

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is longer than {0} characters")]
    TooLong(usize),
    #[error("the URL contains control characters (such as CR or LF)")]
    ControlCharacters,
    #[error("not an absolute URL: {0}")]
    Malformed(String),
    #[error("only http and https URLs can be shortened, not '{0}:'")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("URLs with a user name or password cannot be shortened")]
    Userinfo,
    #[error("links to {0} are not allowed")]
    BlockedHost(String),
}

impl TargetUrl {
    pub fn parse(input: &str, policy: &UrlPolicy) -> Result<Self, UrlError> {
        // Surrounding spaces come from copy and paste; they are not part of
        // the URL. Everything else is checked on the raw input first, because
        // the WHATWG parser silently drops tabs and newlines.
        let input = input.trim_matches(' ');
        if input.len() > policy.max_len {
            return Err(UrlError::TooLong(policy.max_len));
        }
        if input.chars().any(char::is_control) {
            return Err(UrlError::ControlCharacters);
        }
        let url = Url::parse(input).map_err(|e| UrlError::Malformed(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_owned()));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            _ => return Err(UrlError::NoHost),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Userinfo);
        }
        if policy.blocked_hosts.iter().any(|blocked| blocked == host) {
            return Err(UrlError::BlockedHost(host.to_owned()));
        }
        let normalised: String = url.into();
        if normalised.len() > policy.max_len {
            return Err(UrlError::TooLong(policy.max_len));
        }
        if has_encoded_control(&normalised) {
            return Err(UrlError::ControlCharacters);
        }
        Ok(Self(normalised))
    }

    /// A URL read back from the store, where only checked URLs are written.
    pub(crate) fn from_stored(url: String) -> Self {
        Self(url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `%00`–`%1F` and `%7F`: harmless in the header itself, but decoded by the
/// next hop into the very characters refused above.
fn has_encoded_control(url: &str) -> bool {
    url.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && match (hex_value(w[1]), hex_value(w[2])) {
                (Some(hi), Some(lo)) => {
                    let byte = hi << 4 | lo;
                    byte < 0x20 || byte == 0x7f
                }
                _ => false,
            }
    })
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetUrl({})", self.0)
    }
}

/// The lower-case host of a URL, as a policy compares it.
pub fn host_of(url: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .host_str()
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy {
            max_len: 2048,
            blocked_hosts: vec!["sho.rt".into()],
        }
    }

    fn parse(input: &str) -> Result<TargetUrl, UrlError> {
        TargetUrl::parse(input, &policy())
    }

    #[test]
    fn accepts_and_normalises_http_urls() {
        let url = parse("  HTTPS://Example.COM/a b?q=1#frag ").expect("valid");
        assert_eq!(url.as_str(), "https://example.com/a%20b?q=1#frag");
        assert_eq!(
            parse("http://example.com").expect("valid").as_str(),
            "http://example.com/"
        );
    }

    #[test]
    fn stores_international_hosts_as_punycode() {
        let url = parse("https://bücher.example/straße").expect("valid");
        assert_eq!(url.as_str(), "https://xn--bcher-kva.example/stra%C3%9Fe");
    }

    #[test]
    fn refuses_other_schemes() {
        for (input, scheme) in [
            ("javascript:alert(1)", "javascript"),
            ("data:text/html,<script>", "data"),
            ("file:///etc/passwd", "file"),
            ("ftp://example.com/", "ftp"),
            ("JavaScript:alert(1)", "javascript"),
        ] {
            assert_eq!(
                parse(input),
                Err(UrlError::Scheme(scheme.into())),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_relative_and_hostless_urls() {
        for input in [
            "/relative/path",
            "example.com/x",
            "//example.com/x",
            "http://",
            "",
        ] {
            assert!(
                matches!(parse(input), Err(UrlError::Malformed(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_userinfo() {
        assert_eq!(
            parse("https://user:pw@example.com/"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(parse("https://user@example.com/"), Err(UrlError::Userinfo));
        assert_eq!(
            parse("https://google.com@evil.example/"),
            Err(UrlError::Userinfo)
        );
    }

    #[test]
    fn refuses_control_characters_raw_or_encoded() {
        for input in [
            "https://example.com/\r\nSet-Cookie:x=1",
            "https://example.com/a\nb",
            "https://example.com/a\tb",
            "https://example.com/\u{0}",
            "https://example.com/\u{85}",
            "https://example.com/%0d%0aSet-Cookie:x=1",
            "https://example.com/?q=%0A",
            "https://example.com/#%7f",
            "https://example.com/%00",
        ] {
            assert_eq!(parse(input), Err(UrlError::ControlCharacters), "{input:?}");
        }
        assert!(parse("https://example.com/%20%7E%E2%82%AC").is_ok());
    }

    #[test]
    fn refuses_overlong_urls_before_and_after_normalising() {
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_eq!(parse(&long), Err(UrlError::TooLong(2048)));
        // 600 spaces become 1800 bytes of %20.
        let expands = format!("https://example.com/{}", " x".repeat(600));
        assert!(expands.len() < 2048);
        assert_eq!(parse(&expands), Err(UrlError::TooLong(2048)));
    }

    #[test]
    fn refuses_links_to_the_service_itself() {
        assert_eq!(
            parse("https://SHO.RT/abc"),
            Err(UrlError::BlockedHost("sho.rt".into()))
        );
        assert_eq!(
            parse("http://sho.rt:8080/"),
            Err(UrlError::BlockedHost("sho.rt".into()))
        );
        assert!(parse("https://sub.sho.rt/abc").is_ok());
    }
}
