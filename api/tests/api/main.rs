//! The API's tests: the real application, on port 0, with its own store.

mod cache;
#[expect(
    dead_code,
    reason = "shared with the production suite; each suite uses part"
)]
mod helpers;
mod hostile;
mod links;
mod service;
mod slow_clients;
mod stats;
