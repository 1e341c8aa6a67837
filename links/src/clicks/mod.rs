//! Click events and their aggregation, shared by the API's in-process
//! pipeline and the analytics worker.

mod aggregate;
mod classify;
mod event;
pub mod wire;

pub use aggregate::{
    Aggregator, Bucket, ClickBatch, ClickRow, Counts, DIRECT, Dimension, Granularity, LinkClicks,
    TopKey, UNKNOWN_COUNTRY,
};
pub use classify::{Agent, DeviceClass, UserAgentClassifier};
pub use event::{ClickEvent, Country, MAX_USER_AGENT, ReferrerHost};
