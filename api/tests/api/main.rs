//! The API's tests: the real application, on port 0, with its own store.

mod cache;
mod helpers;
mod links;
mod service;
mod stats;
