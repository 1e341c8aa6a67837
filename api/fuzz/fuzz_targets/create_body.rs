//! `POST /api/v1/links` bodies: JSON as a client sends it, checked as the
//! handler checks it, and the link it makes taken through the times the
//! stores compute from it.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use links::{Code, Link, LinkState, ManageToken, request::CreateLink};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<CreateLink>(data) else {
        return;
    };
    let now = common::now();
    let Ok(new) = body.parse(&common::policy(), now) else {
        return;
    };
    let link = Link {
        code: new
            .alias
            .map(|alias| alias.into_code())
            .unwrap_or_else(|| Code::parse("aZ3kP9q").expect("a code")),
        url: new.url,
        created_at: now,
        expires_at: new.expires_at,
        redirect: new.redirect,
        forward_query: new.forward_query,
        deleted_at: None,
        token: ManageToken::generate().digest(),
        revision: 0,
    };
    if let Some(at) = link.expires_at {
        assert!(at > now && at <= now + links::link::MAX_LIFETIME, "{at}");
    }
    assert_ne!(link.state(now), LinkState::Deleted);
    let _ = link.purge_at(common::longest_retention());
    let _ = link.state(chrono::DateTime::<chrono::Utc>::MAX_UTC);
});
