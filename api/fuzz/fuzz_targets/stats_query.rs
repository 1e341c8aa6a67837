//! `GET /api/v1/links/{code}/stats` query strings, checked as the handler
//! checks them, and the series they ask for, assembled.

#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use links::{clicks::Counts, request::StatsParams, stats::ClickStats};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // As actix-web's `Query` reads it.
    let Ok(params) = serde_urlencoded::from_str::<StatsParams>(text) else {
        return;
    };
    let Ok(query) = params.query(common::now()) else {
        return;
    };
    assert!(query.from < query.to);
    assert!((1..=100).contains(&query.top));
    let buckets = query.buckets();
    assert!((1..=1000).contains(&buckets), "{buckets} buckets");
    let (first, _) = query.bucket_range();
    let stats = ClickStats::assemble(&query, Counts::default(), [(first, Counts::default())], []);
    assert_eq!(stats.series.len() as i64, buckets);
});
