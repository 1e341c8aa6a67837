//! Generated codes, unique by construction.
//!
//! Every instance leases blocks of numeric ids from the store (one write per
//! block, not per link) and turns each id into a code with a keyed bijection
//! over the code space: FF1 format-preserving encryption (NIST SP 800-38G,
//! a Feistel network over AES-256) in radix 62. A bijection cannot map two
//! ids to one code, so creating a link needs no read-before-write and no
//! transaction; the key makes neighbouring ids give unrelated codes, so
//! nobody can enumerate links by counting.
//!
//! Ids fill the codes of the configured length first (62⁷ ≈ 3.5 × 10¹² for
//! the default 7), then the next length, and so on: the space grows instead
//! of running out. Codes of different lengths never collide.

use std::{fmt, sync::Arc};

use aes::Aes256;
use compact_str::CompactString;
use fpe::ff1::{FF1, FlexibleNumeralString};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::{
    code::{Alias, Code},
    link::Link,
    storage::{IdBlock, LinkStore, StoreError, Uniqueness},
};

const RADIX: u64 = 62;
/// FF1 needs radix^length ≥ 10⁶; 62⁴ ≈ 1.5 × 10⁷ is the first length past it.
pub const MIN_CODE_LEN: usize = 4;
/// 62¹⁰ ≈ 8.4 × 10¹⁷ codes; longer first lengths buy nothing.
pub const MAX_CODE_LEN: usize = 10;
/// The longest code any id can produce: 62¹¹ > 2⁶³.
const LONGEST: usize = 11;
/// The last id: stores keep ids as signed 64-bit integers (CQL `bigint`,
/// SQLite `INTEGER`), so the id space ends at 2⁶³ − 1. The codes of the last
/// length cover only the ids up to here; an 11-character alias beyond them
/// names no id, and needs no reservation.
pub const MAX_ID: u64 = i64::MAX as u64;

/// The secret key of the code bijection. Never printed.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

#[derive(Debug, thiserror::Error)]
pub enum CodeKeyError {
    #[error("must be 64 hexadecimal characters (a 256-bit key)")]
    Malformed,
}

impl CodeKey {
    pub fn generate() -> Self {
        Self(rand::random())
    }

    pub fn from_hex(hex_key: &str) -> Result<Self, CodeKeyError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| CodeKeyError::Malformed)?;
        Ok(Self(bytes.try_into().map_err(|_| CodeKeyError::Malformed)?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::str::FromStr for CodeKey {
    type Err = CodeKeyError;

    fn from_str(hex_key: &str) -> Result<Self, CodeKeyError> {
        Self::from_hex(hex_key)
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

/// One length of the code space: the ids it takes and how many it holds.
#[derive(Debug, Clone, Copy)]
struct Span {
    len: usize,
    first_id: u64,
    size: u64,
}

/// Maps ids to codes and back.
pub struct CodeGenerator {
    ff1: FF1<Aes256>,
    spans: Vec<Span>,
    fingerprint: String,
}

impl fmt::Debug for CodeGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeGenerator")
            .field("min_len", &self.spans[0].len)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("code length must be between {MIN_CODE_LEN} and {MAX_CODE_LEN}, not {0}")]
    Length(usize),
    #[error(
        "the configured code key or length differs from the one this store's codes were made \
         with; codes made now could collide with existing ones. Use the original key and length \
         (or unset the key to use the one kept in the store)"
    )]
    KeyMismatch,
    #[error("the code key is unreadable: {0}")]
    Key(#[source] CodeKeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Setting names under which the store keeps what the generator needs.
const KEY_SETTING: &str = "codes.key";
const FINGERPRINT_SETTING: &str = "codes.fingerprint";

impl CodeGenerator {
    pub fn new(key: &CodeKey, min_len: usize) -> Result<Self, GeneratorError> {
        if !(MIN_CODE_LEN..=MAX_CODE_LEN).contains(&min_len) {
            return Err(GeneratorError::Length(min_len));
        }
        let ff1 =
            FF1::<Aes256>::new(&key.0, RADIX as u32).map_err(|_| GeneratorError::Length(0))?;
        let mut spans = Vec::new();
        let mut first_id = 0u64;
        for len in min_len..=LONGEST {
            // The ids left up to MAX_ID, if fewer than the length holds.
            let left = MAX_ID - first_id + 1;
            let size = RADIX.checked_pow(len as u32).map_or(left, |n| n.min(left));
            spans.push(Span {
                len,
                first_id,
                size,
            });
            match first_id.checked_add(size) {
                Some(next) if next <= MAX_ID => first_id = next,
                _ => break,
            }
        }
        let mut digest = Sha256::new();
        digest.update(b"shortener codes v1\0");
        digest.update(key.0);
        digest.update((min_len as u64).to_be_bytes());
        let fingerprint = hex::encode(&digest.finalize()[..16]);
        Ok(Self {
            ff1,
            spans,
            fingerprint,
        })
    }

    /// Builds the generator for a store, so that the same store always gets
    /// the same bijection.
    ///
    /// With no configured key, the store keeps a generated one (the embedded
    /// default needs no configuration). Either way the store keeps a
    /// fingerprint of key and length, and a generator that differs from it is
    /// refused: a changed key could map a new id onto an existing code.
    pub async fn for_store(
        store: &dyn LinkStore,
        configured: Option<&CodeKey>,
        min_len: usize,
    ) -> Result<Self, GeneratorError> {
        let key = match configured {
            Some(key) => key.clone(),
            None => {
                let stored = store
                    .get_or_init_setting(KEY_SETTING, &CodeKey::generate().to_hex())
                    .await?;
                CodeKey::from_hex(&stored).map_err(GeneratorError::Key)?
            }
        };
        let generator = Self::new(&key, min_len)?;
        let stored = store
            .get_or_init_setting(FINGERPRINT_SETTING, &generator.fingerprint)
            .await?;
        if stored != generator.fingerprint {
            return Err(GeneratorError::KeyMismatch);
        }
        Ok(generator)
    }

    /// The code of an id, at most [`MAX_ID`] (a larger one is a bug of the
    /// caller: stores lease no such id).
    pub fn code(&self, id: u64) -> Code {
        debug_assert!(id <= MAX_ID, "id {id} is past the id space");
        let span = self.span_of(id);
        let index = id - span.first_id;
        let digits = to_digits(index, span.len);
        let encrypted: Vec<u16> = self
            .ff1
            .encrypt(&[span.len as u8], &FlexibleNumeralString::from(digits))
            .expect("digits are in radix 62 and the length is FF1-valid")
            .into();
        let mut code = CompactString::with_capacity(span.len);
        let value = from_digits(&encrypted);
        let text = base62::encode(value);
        for _ in text.len()..span.len {
            code.push('0');
        }
        code.push_str(&text);
        Code::from_generated(code)
    }

    /// The id a code was generated from, if it is in the generated space;
    /// always at most [`MAX_ID`].
    pub fn id(&self, code: &str) -> Option<u64> {
        let span = self.spans.iter().find(|s| s.len == code.len())?;
        let value = base62::decode(code).ok()?;
        let digits = to_digits_u128(value, span.len);
        let decrypted: Vec<u16> = self
            .ff1
            .decrypt(&[span.len as u8], &FlexibleNumeralString::from(digits))
            .ok()?
            .into();
        let index = u64::try_from(from_digits(&decrypted)).ok()?;
        (index < span.size).then(|| span.first_id + index)
    }

    /// The length of the shortest codes.
    pub fn min_len(&self) -> usize {
        self.spans[0].len
    }

    fn span_of(&self, id: u64) -> Span {
        *self
            .spans
            .iter()
            .rev()
            .find(|s| s.first_id <= id)
            .expect("spans start at id 0")
    }
}

fn to_digits(mut value: u64, len: usize) -> Vec<u16> {
    let mut digits = vec![0u16; len];
    for digit in digits.iter_mut().rev() {
        *digit = (value % RADIX) as u16;
        value /= RADIX;
    }
    digits
}

fn to_digits_u128(mut value: u128, len: usize) -> Vec<u16> {
    let mut digits = vec![0u16; len];
    for digit in digits.iter_mut().rev() {
        *digit = (value % u128::from(RADIX)) as u16;
        value /= u128::from(RADIX);
    }
    digits
}

fn from_digits(digits: &[u16]) -> u128 {
    digits
        .iter()
        .fold(0u128, |acc, &d| acc * u128::from(RADIX) + u128::from(d))
}

/// Hands out codes from id blocks leased from the store.
///
/// One lease (one conditional write) per `block_size` codes; ids left in a
/// block when the process stops are never used, which costs nothing in a
/// space of 3.5 × 10¹².
#[derive(Debug)]
pub struct CodeAllocator {
    generator: Arc<CodeGenerator>,
    store: Arc<dyn LinkStore>,
    block_size: u64,
    block: Mutex<IdBlock>,
}

impl CodeAllocator {
    pub fn new(
        generator: impl Into<Arc<CodeGenerator>>,
        store: Arc<dyn LinkStore>,
        block_size: u64,
    ) -> Self {
        Self {
            generator: generator.into(),
            store,
            block_size: block_size.max(1),
            block: Mutex::new(IdBlock::consecutive(0..0, Vec::new())),
        }
    }

    /// The next unused code.
    pub async fn next_code(&self) -> Result<Code, StoreError> {
        let id = {
            let mut block = self.block.lock().await;
            loop {
                match block.take_first() {
                    Some(id) if block.reserved.binary_search(&id).is_ok() => continue,
                    Some(id) => break id,
                    None => {
                        let mut leased = self.store.lease_ids(self.block_size).await?;
                        if leased.is_empty() {
                            return Err(StoreError::Corrupt(
                                "the store leased an empty id block".into(),
                            ));
                        }
                        if leased.ids.end > MAX_ID + 1 {
                            return Err(StoreError::Corrupt(format!(
                                "the store leased ids past the id space: {:?}",
                                leased.ids
                            )));
                        }
                        leased.reserved.sort_unstable();
                        *block = leased;
                    }
                }
            }
        };
        Ok(self.generator.code(id))
    }

    /// Makes sure no lease will produce `alias` as a generated code; `false`
    /// if one may have already, and the alias must be refused as taken.
    pub async fn reserve_alias(&self, alias: &Code) -> Result<bool, StoreError> {
        match self.generator.id(alias.as_str()) {
            Some(id) => self.store.reserve_id(id).await,
            None => Ok(true),
        }
    }

    pub fn generator(&self) -> &Arc<CodeGenerator> {
        &self.generator
    }

    /// Writes a new link under `alias`, or under the next generated code;
    /// `link` makes the link of a code. An alias is set aside from the
    /// leases first (refused if a lease may have produced it already) and
    /// written with a uniqueness check. A generated code is written
    /// without one; the rare conflict (a store that predates the setting
    /// aside of aliases) moves on to the next code, a few times at most.
    pub async fn insert(
        &self,
        alias: Option<Alias>,
        link: impl Fn(Code) -> Link,
    ) -> Result<Link, InsertError> {
        if let Some(alias) = alias {
            let link = link(alias.into_code());
            if !self.reserve_alias(&link.code).await? {
                return Err(InsertError::AliasTaken(link.code));
            }
            return match self.store.insert_link(&link, Uniqueness::Checked).await {
                Ok(()) => Ok(link),
                Err(StoreError::Conflict) => Err(InsertError::AliasTaken(link.code)),
                Err(error) => Err(error.into()),
            };
        }
        let mut attempts = 1;
        loop {
            let link = link(self.next_code().await?);
            match self.store.insert_link(&link, Uniqueness::Generated).await {
                Err(StoreError::Conflict) if attempts < GENERATED_CODE_ATTEMPTS => {
                    tracing::info!(code = %link.code, "generated code taken by an alias; using the next");
                    attempts += 1;
                }
                Err(error) => return Err(error.into()),
                Ok(()) => return Ok(link),
            }
        }
    }
}

/// Attempts at a generated code. Aliases set their ids aside before they
/// are written, so a generated code is taken only in a store that predates
/// that, and a second attempt is already rare.
const GENERATED_CODE_ATTEMPTS: usize = 8;

/// Why [`CodeAllocator::insert`] wrote no link.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The alias is taken, by a link or by a code a lease may produce.
    #[error("the alias {0} is taken")]
    AliasTaken(Code),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn generator(len: usize) -> CodeGenerator {
        CodeGenerator::new(&CodeKey([42; 32]), len).expect("valid length")
    }

    #[test]
    fn codes_have_the_configured_length_and_alphabet() {
        let g = generator(7);
        for id in [0, 1, 2, 61, 62, 1_000_000, 62u64.pow(7) - 1] {
            let code = g.code(id);
            assert_eq!(code.as_str().len(), 7, "{id} gave {code}");
            assert!(code.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn the_space_grows_by_one_character_when_a_length_is_full() {
        let g = generator(7);
        let first_of_8 = 62u64.pow(7);
        assert_eq!(g.code(first_of_8 - 1).as_str().len(), 7);
        assert_eq!(g.code(first_of_8).as_str().len(), 8);
        assert_eq!(g.id(g.code(first_of_8).as_str()), Some(first_of_8));
        assert_eq!(g.code(MAX_ID).as_str().len(), 11);
        assert_eq!(g.id(g.code(MAX_ID).as_str()), Some(MAX_ID));
    }

    /// Every length, from the shortest a generator may start at: the ids of
    /// its codes are within the id space, and the longest codes name the
    /// last ids.
    #[test]
    fn the_id_space_ends_at_the_largest_signed_id() {
        for len in MIN_CODE_LEN..=MAX_CODE_LEN {
            let g = generator(len);
            let last = g.spans.last().expect("spans");
            assert_eq!(last.first_id + (last.size - 1), MAX_ID, "length {len}");
            assert!(g.spans.iter().all(|s| s.size > 0));
        }
        // The 11-character codes beyond MAX_ID are not generated codes: of
        // 62¹¹ ≈ 5.2 × 10¹⁹ codes, only the ids up to 2⁶³ have one.
        let g = generator(7);
        let beyond = (0u32..2000)
            .map(|i| format!("zz{:09}", i))
            .filter(|c| g.id(c).is_none())
            .count();
        assert!(beyond > 0, "some 11-character codes name no id");
    }

    #[test]
    fn lengths_outside_the_ff1_domain_are_refused() {
        assert!(matches!(
            CodeGenerator::new(&CodeKey([0; 32]), 3),
            Err(GeneratorError::Length(3))
        ));
        assert!(CodeGenerator::new(&CodeKey([0; 32]), 11).is_err());
    }

    #[test]
    fn different_keys_give_different_codes() {
        let a = generator(7);
        let b = CodeGenerator::new(&CodeKey([43; 32]), 7).expect("valid");
        let same = (0..1000).filter(|&id| a.code(id) == b.code(id)).count();
        assert!(same < 3, "{same} of 1000 codes equal under different keys");
        assert_ne!(a.fingerprint, b.fingerprint);
    }

    #[test]
    fn keys_parse_from_hex_and_never_print() {
        let key = CodeKey::generate();
        let parsed = CodeKey::from_hex(&key.to_hex()).expect("round trip");
        assert_eq!(parsed.0, key.0);
        assert!(CodeKey::from_hex("abcd").is_err());
        assert!(CodeKey::from_hex(&"zz".repeat(32)).is_err());
        assert_eq!(format!("{key:?}"), "CodeKey(<redacted>)");
    }

    /// A million consecutive ids: all codes distinct and of the configured
    /// length, and neighbours share a first character no more often than
    /// chance (1/62) allows.
    #[test]
    fn a_million_consecutive_ids_give_distinct_unrelated_codes() {
        const N: u64 = 1_000_000;
        let g = generator(7);
        let start = 5_000_000_000u64;
        let mut seen = std::collections::HashSet::with_capacity(N as usize);
        let mut shared_first = 0u64;
        let mut shared_two = 0u64;
        let mut previous: Option<Code> = None;
        for id in start..start + N {
            let code = g.code(id);
            assert_eq!(code.as_str().len(), 7);
            if let Some(prev) = &previous {
                let (p, c) = (prev.as_str().as_bytes(), code.as_str().as_bytes());
                shared_first += u64::from(p[0] == c[0]);
                shared_two += u64::from(p[..2] == c[..2]);
            }
            assert!(
                seen.insert(code.clone()),
                "duplicate code {code} at id {id}"
            );
            previous = Some(code);
        }
        // Pairs sharing a first character ~ Binomial(N-1, 1/62): mean ≈ 16129,
        // standard deviation ≈ 126. Six deviations either side is far outside
        // noise and far inside any structure (sequential codes share ~98%).
        let pairs = (N - 1) as f64;
        let mean = pairs / 62.0;
        let sd = (pairs * (1.0 / 62.0) * (61.0 / 62.0)).sqrt();
        let deviation = (shared_first as f64 - mean).abs() / sd;
        assert!(
            deviation < 6.0,
            "{shared_first} neighbouring pairs share a first character; chance gives {mean:.0} ± {sd:.0}"
        );
        let mean_two = pairs / 3844.0;
        let sd_two = (pairs / 3844.0 * (3843.0 / 3844.0)).sqrt();
        assert!(
            ((shared_two as f64 - mean_two).abs() / sd_two) < 6.0,
            "{shared_two} neighbouring pairs share two characters; chance gives {mean_two:.0}"
        );
    }

    proptest! {
        /// No string a user may choose as an alias, of any length, names an
        /// id a store cannot keep.
        #[test]
        fn no_alias_names_an_id_past_the_space(
            alias in "[A-Za-z0-9_-]{3,64}",
            len in MIN_CODE_LEN..=MAX_CODE_LEN,
        ) {
            let g = generator(len);
            if let Some(id) = g.id(&alias) {
                prop_assert!(id <= MAX_ID, "{alias} names id {id}");
                let code = g.code(id);
                prop_assert_eq!(code.as_str(), alias.as_str());
            }
        }

        #[test]
        fn eleven_character_codes_stay_in_the_space(alias in "[A-Za-z0-9]{11}") {
            if let Some(id) = generator(7).id(&alias) {
                prop_assert!(id <= MAX_ID);
            }
        }

        #[test]
        fn every_id_round_trips(id in 0..=MAX_ID, len in MIN_CODE_LEN..=MAX_CODE_LEN) {
            let g = generator(len);
            let code = g.code(id);
            prop_assert!(code.as_str().len() >= len);
            prop_assert_eq!(g.id(code.as_str()), Some(id));
        }

        #[test]
        fn distinct_ids_give_distinct_codes(a in 0..=MAX_ID, b in 0..=MAX_ID) {
            prop_assume!(a != b);
            let g = generator(7);
            prop_assert_ne!(g.code(a), g.code(b));
        }
    }
}
