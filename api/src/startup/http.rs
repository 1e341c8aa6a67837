//! The HTTP side of the application: the server's limits, the routes, and
//! the admin listener.

use std::net::{SocketAddr, TcpListener};

use actix_service::apply;
use actix_web::{App, dev::ServerHandle, web};
use runtime::tasks::Tasks;

use super::StartupError;
use crate::{
    config::HttpSettings,
    error::{self, json_error, query_error},
    metrics::{Metrics, resource},
    openapi,
    routes::{health, links as link_routes, metrics, redirect, stats},
    server::{self, ConnectionLimits, ServerOptions, body::ReadBody, panic::CatchPanic},
    state::AppState,
};

/// The server's limits from `http.*`, within the file descriptors the
/// process may open.
pub(super) fn server_options(http: &HttpSettings, metrics: &Metrics) -> ServerOptions {
    let workers = server::worker_count(http.workers);
    let fd_limit = server::raise_fd_limit();
    let per_worker = server::connections_per_worker(http.max_connections.get(), workers, fd_limit);
    if per_worker < http.max_connections.get() {
        tracing::warn!(
            configured = http.max_connections,
            per_worker,
            workers,
            fd_limit,
            "http.max_connections lowered to what the open-file limit allows"
        );
    }
    metrics
        .http_connections_limit
        .set(i64::try_from(per_worker * workers).unwrap_or(i64::MAX));
    ServerOptions {
        workers,
        max_connections: per_worker,
        keep_alive: http.keep_alive,
        client_request_timeout: http.client_request_timeout,
        client_disconnect_timeout: http.client_disconnect_timeout,
        shutdown_timeout: http.shutdown_timeout,
        limits: ConnectionLimits {
            request_head: http.client_request_timeout,
            send: http.send_timeout,
        },
    }
}

/// The admin listener: `/metrics` and the probes, on one thread, with the
/// same deadlines as the main one and connections of its own, so that a
/// flood of clients on the public port cannot keep scrapes and probes out.
pub(super) fn admin_server(
    listener: TcpListener,
    state: web::Data<AppState>,
    options: &ServerOptions,
    bodies: ReadBody,
    tasks: &Tasks,
) -> Result<(SocketAddr, ServerHandle), StartupError> {
    let addr = listener.local_addr()?;
    let server = server::serve(
        "shortener-api-admin",
        listener,
        &options.admin(),
        server::ConnectionMetrics::default(),
        move || {
            App::new()
                .wrap(bodies.clone())
                .wrap(CatchPanic::OUTER)
                .app_data(state.clone())
                .service(
                    web::resource("/metrics")
                        .route(web::get().to(metrics::metrics))
                        .default_service(web::to(error::method_not_allowed("GET"))),
                )
                .service(
                    web::resource("/healthz")
                        .route(web::get().to(health::healthz))
                        .default_service(web::to(error::method_not_allowed("GET"))),
                )
                .service(
                    web::resource("/readyz")
                        .route(web::get().to(health::readyz))
                        .default_service(web::to(error::method_not_allowed("GET"))),
                )
        },
    )?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let handle = server.handle();
    tasks.spawn(server);
    Ok((addr, handle))
}

/// The public routes. Every resource has the name its request metrics are
/// labelled by ([`resource`]), and catches its own panics
/// ([`CatchPanic::ROUTED`]) so that a panic's `500` keeps its route.
pub(super) fn routes(
    cfg: &mut web::ServiceConfig,
    state: web::Data<AppState>,
    max_body: usize,
    metrics_here: bool,
) {
    let not_allowed = |allow| web::to(error::method_not_allowed(allow));
    let named = |name: &str, path: &str| web::resource(path).name(name);
    cfg.app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(max_body)
                .error_handler(json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(
            named(resource::HEALTHZ, "/healthz")
                .route(web::get().to(health::healthz))
                .default_service(not_allowed("GET"))
                .wrap(CatchPanic::ROUTED),
        )
        .service(
            named(resource::READYZ, "/readyz")
                .route(web::get().to(health::readyz))
                .default_service(not_allowed("GET"))
                .wrap(CatchPanic::ROUTED),
        )
        .configure(|cfg| {
            if metrics_here {
                cfg.service(
                    named(resource::METRICS, "/metrics")
                        .route(web::get().to(metrics::metrics))
                        .default_service(not_allowed("GET"))
                        .wrap(CatchPanic::ROUTED),
                );
            }
        })
        .service(
            web::scope("/api/v1")
                .service(
                    named(resource::OPENAPI, "/openapi.json")
                        .route(web::get().to(openapi::document))
                        .default_service(not_allowed("GET"))
                        .wrap(CatchPanic::ROUTED),
                )
                .service(
                    named(resource::CREATE, "/links")
                        .route(web::post().to(link_routes::create))
                        .default_service(not_allowed("POST"))
                        .wrap(CatchPanic::ROUTED),
                )
                .service(
                    named(resource::LINK, "/links/{code}")
                        .route(web::get().to(link_routes::get))
                        .route(web::patch().to(link_routes::update))
                        .route(web::delete().to(link_routes::delete))
                        .default_service(not_allowed("GET, PATCH, DELETE"))
                        .wrap(CatchPanic::ROUTED),
                )
                .service(
                    named(resource::STATS, "/links/{code}/stats")
                        .route(web::get().to(stats::get))
                        .default_service(not_allowed("GET"))
                        .wrap(CatchPanic::ROUTED),
                )
                // Any other path under the API: a resource, so that its
                // `404` is the API's in the metrics.
                .service(
                    named(resource::API_UNKNOWN, "/{path:.*}")
                        .to(error::no_route)
                        .wrap(CatchPanic::ROUTED),
                )
                .default_service(apply(CatchPanic::ROUTED, web::to(error::no_route))),
        )
        // Every other path is a short link: matching it last, as the
        // fallback, spares the hot path the router's pattern matching.
        .default_service(apply(CatchPanic::ROUTED, web::to(redirect::dispatch)));
}
