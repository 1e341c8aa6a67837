//! The hardened HTTP server both binaries serve on: listeners with a real
//! backlog, connection limits within the file descriptors the process may
//! open, and a deadline on every phase of a request a client controls.
//!
//! Built from actix-server and actix-http directly, rather than with
//! actix-web's `HttpServer`, so that each accepted socket is wrapped in a
//! [`GuardedStream`]: every request head on a connection is timed, and so
//! are writes the client does not read ([`connection`]). actix-http times
//! the first head, idle keep-alive and disconnects itself; the caller's
//! application reads bodies under their own deadline.

pub mod connection;

use std::{
    fmt, io,
    net::{SocketAddr, TcpListener},
    time::Duration,
};

use actix_http::{HttpService, Protocol, Request, Response, body::MessageBody};
use actix_service::{
    IntoServiceFactory, ServiceFactory, ServiceFactoryExt, fn_service, map_config,
};
use actix_web::{
    dev::{AppConfig, Server},
    http::KeepAlive,
};
use tokio::net::TcpStream;

pub use connection::{ConnectionLimits, ConnectionMetrics, GuardedStream};

/// Pending connections the kernel queues per listener, beyond those being
/// served: a burst waits here rather than being refused.
const BACKLOG: i32 = 2048;

/// File descriptors kept for everything but client connections: the store's
/// files and connections, Redis and Kafka sockets, logs, the runtime's own.
const RESERVED_FDS: u64 = 512;

/// How a listener serves connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// HTTP worker threads; 0: one per CPU.
    pub workers: usize,
    /// Connections each worker serves at once.
    pub max_connections: usize,
    pub keep_alive: Duration,
    /// The first request head, as actix-http times it (answered 408).
    pub client_request_timeout: Duration,
    pub client_disconnect_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// What every connection keeps beyond actix-http's own timers.
    pub limits: ConnectionLimits,
}

/// Connections a listener for scrapers and probes serves at once.
pub const ADMIN_CONNECTIONS: usize = 64;

impl ServerOptions {
    /// The same deadlines on one worker with [`ADMIN_CONNECTIONS`]: for a
    /// listener only scrapers and probes use, whose own connections a flood
    /// on the public port cannot take.
    pub fn admin(&self) -> Self {
        Self {
            workers: 1,
            max_connections: ADMIN_CONNECTIONS,
            ..self.clone()
        }
    }

    /// An admin listener's options for a process with no public listener
    /// (the worker): deadlines of a few seconds, which a scrape or a probe
    /// meets with room to spare.
    pub fn scrapes() -> Self {
        Self {
            workers: 1,
            max_connections: ADMIN_CONNECTIONS,
            keep_alive: Duration::from_secs(5),
            client_request_timeout: Duration::from_secs(5),
            client_disconnect_timeout: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(5),
            limits: ConnectionLimits {
                request_head: Duration::from_secs(5),
                send: Duration::from_secs(10),
            },
        }
    }
}

/// Binds a listener with a real backlog (a `std` listener gets 128).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Raises this process's soft limit of open files to its hard limit, and
/// returns the limit then in force: every connection is a descriptor.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Connections per worker: as configured, but never more than the file
/// descriptors allow, so that a flood of connections can exhaust the
/// connection limit (and wait in the backlog) but never the descriptors
/// the process needs to work.
pub fn connections_per_worker(configured: usize, workers: usize, fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return configured;
    };
    let budget = limit.saturating_sub(RESERVED_FDS).max(workers as u64);
    let fit = usize::try_from(budget / workers.max(1) as u64).unwrap_or(usize::MAX);
    configured.min(fit).max(1)
}

/// The number of HTTP workers `workers` (0: one per CPU) gives.
pub fn worker_count(workers: usize) -> usize {
    if workers > 0 {
        workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Serves `factory`'s application on `listener`; `connections` counts
/// the connections open and those closed for being late.
pub fn serve<F, I, S, B>(
    name: &str,
    listener: TcpListener,
    options: &ServerOptions,
    connections: ConnectionMetrics,
    factory: F,
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let options = options.clone();
    let mut builder = actix_server::Server::build()
        .max_concurrent_connections(options.max_connections)
        .shutdown_timeout(options.shutdown_timeout.as_secs())
        // Signals are the application's to handle.
        .disable_signals()
        .workers(worker_count(options.workers));
    let shutdown = builder.graceful_shutdown_signal();
    builder = builder.listen(name, listener, move || {
        let shutdown = shutdown.clone();
        let app = factory()
            .into_factory()
            .map_err(|err| err.into().error_response());
        let http = HttpService::build()
            // Idle keep-alive connections close as soon as shutdown begins.
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive(KeepAlive::Timeout(options.keep_alive))
            .client_request_timeout(options.client_request_timeout)
            .client_disconnect_timeout(options.client_disconnect_timeout)
            .local_addr(addr)
            // The application reads nothing of its `AppConfig` (no URL
            // generation, no host fallback).
            .finish(map_config(app, |()| AppConfig::default()));
        let limits = options.limits;
        let connections = connections.clone();
        fn_service(move |io: TcpStream| {
            let stream = GuardedStream::new(io, limits, &connections);
            let peer = stream.peer_addr().ok();
            std::future::ready(Ok((stream, Protocol::Http1, peer)))
        })
        .and_then(http)
    })?;
    Ok(builder.run())
}
