//! `PATCH /api/v1/links/{code}` bodies: JSON as a client sends it, checked
//! as the handler checks it, applied to a link, and the times the stores
//! compute from the result.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use links::{Code, Link, ManageToken, RedirectStatus, TargetUrl, request::UpdateLink};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<UpdateLink>(data) else {
        return;
    };
    let now = common::now();
    let policy = common::policy();
    let Ok(changes) = body.parse(&policy, now) else {
        return;
    };
    let mut link = Link {
        code: Code::parse("aZ3kP9q").expect("a code"),
        url: TargetUrl::parse("https://example.com/", &policy).expect("a URL"),
        created_at: now,
        expires_at: None,
        redirect: RedirectStatus::default(),
        forward_query: false,
        deleted_at: None,
        token: ManageToken::generate().digest(),
        revision: 0,
    };
    changes.apply_to(&mut link);
    let _ = link.purge_at(common::longest_retention());
    // Deleted as it is changed: the store computes the purge from both.
    link.deleted_at = Some(now);
    let purge = link
        .purge_at(common::longest_retention())
        .expect("a deleted link is purged");
    assert!(purge >= now);
});
