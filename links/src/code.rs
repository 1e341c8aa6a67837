//! Short codes and custom aliases: the path segment that names a link.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// The path segment of a short link, generated or chosen by a user.
///
/// Only `[A-Za-z0-9_-]`, between [`Code::MIN_LEN`] and [`Code::MAX_LEN`]
/// characters. Generated codes (7 characters by default) are stored inline,
/// so cloning one on the redirect path does not allocate.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "CompactString", into = "CompactString")]
pub struct Code(CompactString);

/// Why a string is not a valid code or alias.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("must be {min} to {max} characters long", min = Code::MIN_LEN, max = Code::MAX_LEN)]
    Length,
    #[error("may contain only the characters A-Z, a-z, 0-9, '_' and '-'")]
    Characters,
    #[error("'{0}' is reserved for the service's own paths")]
    Reserved(String),
}

impl Code {
    /// Shortest code or alias: a two-character alias space is too small to
    /// hand out fairly, and a one-character one collides with everything.
    pub const MIN_LEN: usize = 3;
    /// Longest alias; long enough for a readable slug, short enough to keep
    /// index keys and cache entries small.
    pub const MAX_LEN: usize = 64;

    /// Parses a path segment into a code.
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&input.len()) {
            return Err(CodeError::Length);
        }
        if !input.bytes().all(is_code_byte) {
            return Err(CodeError::Characters);
        }
        Ok(Self(CompactString::new(input)))
    }

    /// Builds a code from characters the generator produced.
    pub(crate) fn from_generated(code: CompactString) -> Self {
        debug_assert!(
            Self::parse(&code).is_ok(),
            "generated an invalid code {code}"
        );
        Self(code)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl TryFrom<CompactString> for Code {
    type Error = CodeError;
    fn try_from(value: CompactString) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Code> for CompactString {
    fn from(code: Code) -> Self {
        code.0
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({})", self.0)
    }
}

/// A code chosen by a user instead of a generated one.
///
/// A valid [`Code`] that is not one of the [`RESERVED`] words (compared
/// without regard to case), so an alias can never shadow a path of the
/// service itself, today or when a route is added later.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Alias(Code);

/// Words an alias may not be, in lower case: the service's own top-level paths
/// and the ones it is likely to grow, plus names that invite phishing.
pub const RESERVED: &[&str] = &[
    "about",
    "account",
    "admin",
    "api",
    "app",
    "assets",
    "auth",
    "blog",
    "dashboard",
    "docs",
    "favicon",
    "health",
    "healthz",
    "help",
    "home",
    "index",
    "internal",
    "livez",
    "login",
    "logout",
    "metrics",
    "oauth",
    "openapi",
    "privacy",
    "readyz",
    "register",
    "robots",
    "security",
    "settings",
    "signin",
    "signup",
    "sitemap",
    "static",
    "stats",
    "status",
    "support",
    "swagger",
    "terms",
    "ui",
    "well-known",
    "www",
];

impl Alias {
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        let code = Code::parse(input)?;
        if RESERVED.iter().any(|word| word.eq_ignore_ascii_case(input)) {
            return Err(CodeError::Reserved(input.to_owned()));
        }
        Ok(Self(code))
    }

    pub fn into_code(self) -> Code {
        self.0
    }

    pub fn as_code(&self) -> &Code {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_accept_only_the_url_safe_alphabet() {
        assert!(Code::parse("aZ09_-x").is_ok());
        assert_eq!(Code::parse("ab"), Err(CodeError::Length));
        assert_eq!(Code::parse(&"a".repeat(65)), Err(CodeError::Length));
        for bad in [
            "abc.d", "ab cd", "ab/cd", "abc%20", "äbcd", "abc\n", "abc?x",
        ] {
            assert_eq!(Code::parse(bad), Err(CodeError::Characters), "{bad:?}");
        }
    }

    #[test]
    fn aliases_refuse_reserved_words_in_any_case() {
        for word in [
            "api", "API", "Healthz", "readyz", "metrics", "static", "admin",
        ] {
            assert!(
                matches!(Alias::parse(word), Err(CodeError::Reserved(_))),
                "{word}"
            );
        }
        assert!(Alias::parse("my-launch_2026").is_ok());
        assert!(Alias::parse("apis").is_ok());
    }
}
