//! Codes and aliases: parsing any text, and the ids of the code space.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use links::{
    Alias, Code,
    codegen::{CodeGenerator, CodeKey, MAX_CODE_LEN, MAX_ID, MIN_CODE_LEN},
};

/// One generator per first code length, made once (AES key setup).
fn generators() -> &'static [CodeGenerator] {
    static GENERATORS: OnceLock<Vec<CodeGenerator>> = OnceLock::new();
    GENERATORS.get_or_init(|| {
        (MIN_CODE_LEN..=MAX_CODE_LEN)
            .map(|len| {
                CodeGenerator::new(&CodeKey::from_hex(&"7a".repeat(32)).expect("key"), len)
                    .expect("length")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(code) = Code::parse(text) {
        assert_eq!(code.as_str(), text);
        assert!((Code::MIN_LEN..=Code::MAX_LEN).contains(&text.len()));
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        );
    }
    if let Ok(alias) = Alias::parse(text) {
        assert_eq!(alias.as_code().as_str(), text);
        assert!(
            !links::code::RESERVED
                .iter()
                .any(|w| w.eq_ignore_ascii_case(text))
        );
    }
    // Whatever a user types as an alias, the id it names (if any) is one
    // the stores can keep, and maps back to the same code.
    for generator in generators() {
        if let Some(id) = generator.id(text) {
            assert!(id <= MAX_ID, "{text} names {id}");
            assert_eq!(generator.code(id).as_str(), text);
        }
    }
});
