//! Target URLs: where a link leads, checked once, when it is written.
//!
//! Besides the shape of a URL, two things are checked about its host:
//!
//! - it can exist in DNS (labels of 1 to 63 letters, digits, `-` or `_`,
//!   not starting or ending with `-`, at most 253 characters in all), or is
//!   an IP address;
//! - it is not the service itself, nor another host the operator blocked.
//!   Hosts are compared by what they are, not by how they are written
//!   ([`HostIdentity`]): case, a trailing dot, international spellings,
//!   the many ways to write an IPv4 address and IPv4-mapped IPv6 addresses
//!   all name the same host. Every loopback name and address (`localhost`,
//!   `*.localhost`, `127.0.0.0/8`, `::1`, and `0.0.0.0` or `::`, which reach
//!   the local host too) is one host, [`HostIdentity::Loopback`].

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use url::{Host, Url};

/// The rules a target URL must follow, from configuration.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    /// Longest accepted URL, in bytes, before and after normalisation.
    pub max_len: usize,
    /// Hosts links may not point to: the service's own (a link to another
    /// short link of ours can loop) and any others.
    blocked: Vec<HostIdentity>,
}

impl UrlPolicy {
    /// A policy refusing links to `blocked` hosts, however they are spelt.
    pub fn new(max_len: usize, blocked: impl IntoIterator<Item = HostIdentity>) -> Self {
        let mut list: Vec<HostIdentity> = Vec::new();
        for host in blocked {
            if !list.contains(&host) {
                list.push(host);
            }
        }
        Self {
            max_len,
            blocked: list,
        }
    }

    /// The hosts refused, each once.
    pub fn blocked(&self) -> &[HostIdentity] {
        &self.blocked
    }
}

/// What a host is, whatever its spelling: the unit the self-link rule
/// compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostIdentity {
    /// This machine: every loopback name and address, and the unspecified
    /// addresses.
    Loopback,
    /// A domain name: lower case, ASCII (punycode), without a trailing dot.
    Name(String),
    /// Any other IP address; IPv4-mapped IPv6 addresses as IPv4.
    Ip(IpAddr),
}

/// Why a configured host cannot be blocked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a host name or IP address")]
pub struct HostError(pub String);

impl HostIdentity {
    /// The identity of a host as configured: a name (international or
    /// not), an IPv4 address, or an IPv6 address in brackets.
    pub fn parse(host: &str) -> Result<Self, HostError> {
        let error = || HostError(host.to_owned());
        let bracketed = host.starts_with('[');
        if host.is_empty() || (!bracketed && host.contains(['/', ':', ' ', '@', '?', '#'])) {
            return Err(error());
        }
        let identity = match Host::parse(host).map_err(|_| error())? {
            Host::Domain(name) => Self::of_name(&name),
            Host::Ipv4(ip) => Self::of_ip(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Self::of_ip(IpAddr::V6(ip)),
        };
        match &identity {
            Self::Name(name) if dns_name_problem(name).is_some() => Err(error()),
            _ => Ok(identity),
        }
    }

    /// The identity of a URL's host.
    pub fn of(host: &Host<&str>) -> Self {
        match host {
            Host::Domain(name) => Self::of_name(name),
            Host::Ipv4(ip) => Self::of_ip(IpAddr::V4(*ip)),
            Host::Ipv6(ip) => Self::of_ip(IpAddr::V6(*ip)),
        }
    }

    /// The identity of a listening address: a host links may not name
    /// either, since a link to it reaches the service.
    pub fn of_ip(ip: IpAddr) -> Self {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let local = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4 == Ipv4Addr::UNSPECIFIED,
            IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST || v6 == Ipv6Addr::UNSPECIFIED,
        };
        if local { Self::Loopback } else { Self::Ip(ip) }
    }

    fn of_name(name: &str) -> Self {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        // RFC 6761: localhost and its subdomains are always this machine;
        // the others are the loopback names of common /etc/hosts files.
        let loopback = name == "localhost"
            || name.ends_with(".localhost")
            || matches!(
                name.as_str(),
                "localhost.localdomain" | "ip6-localhost" | "ip6-loopback"
            );
        if loopback {
            Self::Loopback
        } else {
            Self::Name(name)
        }
    }
}

/// The IPv4 address an IPv6 address stands for, in the forms that carry
/// one: IPv4-mapped (`::ffff:0:0/96`), IPv4-translated (`::ffff:0:0:0/96`),
/// IPv4-compatible (`::/96`, but `::` and `::1`), NAT64's well-known prefix
/// (`64:ff9b::/96`) and 6to4 (`2002::/16`). Each reaches that IPv4 host
/// through a translator or a tunnel, so the rule must see it as that host.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let octets = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match v6.segments() {
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(octets(hi, lo)),
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => {
            Some(octets(hi, lo))
        }
        [0x2002, hi, lo, ..] => Some(octets(hi, lo)),
        _ => None,
    }
}

impl fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loopback => f.write_str("the local host (loopback)"),
            Self::Name(name) => f.write_str(name),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// Longest DNS name, in characters without the trailing dot (RFC 1035).
const MAX_DNS_NAME: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_DNS_LABEL: usize = 63;

/// Why `name` (lower case, ASCII, no trailing dot) cannot be a DNS host
/// name, if it cannot.
fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_DNS_NAME {
        return Some("it is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("it has an empty label");
        }
        if label.len() > MAX_DNS_LABEL {
            return Some("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some("a label has characters other than letters, digits, '-' and '_'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label starts or ends with '-'");
        }
    }
    None
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
    #[error("the host cannot exist in DNS: {0}")]
    InvalidHost(&'static str),
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
        let identity = match url.host() {
            Some(host) => HostIdentity::of(&host),
            None => return Err(UrlError::NoHost),
        };
        if let HostIdentity::Name(name) = &identity
            && let Some(problem) = dns_name_problem(name)
        {
            return Err(UrlError::InvalidHost(problem));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Userinfo);
        }
        if policy.blocked.contains(&identity) {
            return Err(UrlError::BlockedHost(identity.to_string()));
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

    /// A URL read back from a store, where only checked URLs are written:
    /// for the storage adapters alone, which is why it skips the checks.
    pub fn from_stored(url: String) -> Self {
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

/// The identity of the host of an absolute URL, as a policy compares it.
pub fn host_of(url: &str) -> Option<HostIdentity> {
    Url::parse(url)
        .ok()?
        .host()
        .map(|host| HostIdentity::of(&host))
}

#[cfg(test)]
mod tests;
