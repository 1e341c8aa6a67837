//! The HTTP server: listeners, connections and the deadline of every phase
//! of a request.
//!
//! Built from actix-server and actix-http directly, rather than with
//! actix-web's `HttpServer`, so that each accepted socket is wrapped in a
//! [`GuardedStream`] ([`runtime::http::connection`]). Every phase a client
//! controls is bounded:
//!
//! | phase | limit | beyond it |
//! | --- | --- | --- |
//! | connections open | `http.max_connections` per worker, within the file descriptor limit | new ones wait in the backlog |
//! | a request head (every one on a connection) | `http.client_request_timeout`: for the first, from the connection's start; for the others, from their first byte; `http.max_header_bytes` | `408` on the first request, the connection closed on later ones; `431` |
//! | a request body | `http.client_body_timeout` from the end of the head; `http.max_body_bytes` (read before anything else answers) | `408`, `413`, connection closed |
//! | idle between requests | `http.keep_alive` | connection closed |
//! | responses the client does not read | `http.send_timeout` of waiting, in all, over the connection's life | connection closed |
//! | shutdown | idle connections close at once, bodies get [`body::SHUTDOWN_GRACE`], handlers `http.shutdown_timeout` | `408`, closed |
//!
//! The server itself, shared with the worker's `/metrics` listener, is
//! [`runtime::http`]; the API adds:
//!
//! - [`body`]: the middleware that reads bodies under their deadline.
//! - [`panic`]: the middleware that turns a panic into a `500`.

pub mod body;
pub mod panic;

pub use runtime::http::{
    ConnectionLimits, ConnectionMetrics, GuardedStream, ServerOptions, bind,
    connections_per_worker, raise_fd_limit, serve, worker_count,
};
