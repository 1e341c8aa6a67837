//! Target URLs: anything a client sends as `url`.

#![no_main]

#[path = "common.rs"]
mod common;

use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use links::TargetUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = common::policy();
    let Ok(url) = TargetUrl::parse(text, &policy) else {
        return;
    };
    let stored = url.as_str();
    assert!(stored.len() <= policy.max_len, "{stored}");
    assert!(
        stored.starts_with("http://") || stored.starts_with("https://"),
        "{stored}"
    );
    assert!(!stored.chars().any(char::is_control), "{stored:?}");
    // It goes into a Location header as it is.
    assert!(
        HeaderValue::from_str(stored).is_ok(),
        "not a header value: {stored:?}"
    );
    // What is stored is accepted again, unchanged (a PATCH may send it back).
    let again = TargetUrl::parse(stored, &policy).expect("a stored URL is accepted again");
    assert_eq!(again.as_str(), stored);
});
