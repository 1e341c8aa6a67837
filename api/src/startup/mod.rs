//! Building the application from its settings, running it, and stopping it
//! without losing a click.

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, atomic::AtomicBool},
};

use actix_web::{
    App,
    dev::{Server, ServerHandle},
    http::header::HeaderName,
    middleware::{Condition, from_fn},
    web,
};
use links::{
    LinkStore, StoreError, TokenDigest, UrlPolicy,
    clicks::UserAgentClassifier,
    codegen::{CodeAllocator, CodeGenerator, CodeKey, GeneratorError},
    storage::{
        scylla::{ClickCounts, ScyllaOptions, ScyllaStore},
        sqlite::{SqliteOptions, SqliteStore},
    },
    target::{HostIdentity, host_of},
};
use tokio_util::sync::CancellationToken;

use crate::{
    cache::{LinkCache, redis::RedisCache},
    clicks::{
        ClickPipeline, ClickSink, InProcessSink,
        kafka::{KafkaSink, ensure_topic},
    },
    config::{EventBackend, HttpSettings, Settings, SettingsError, StorageBackend},
    error::{self, json_error, query_error},
    metrics::Metrics,
    openapi,
    routes::{health, links as link_routes, metrics, redirect, stats},
    server::{
        self, ConnectionLimits, ServerOptions,
        body::{BodyLimits, ReadBody},
        panic::CatchPanic,
    },
    state::AppState,
    storage::MeteredStore,
    telemetry::{Observe, Observer},
};
use links::telemetry::Sampler;

/// How long start waits for Kafka to create (or confirm) the clicks topic.
const TOPIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections the admin listener serves at once: scrapers, not clients.
const ADMIN_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot set up code generation: {0}")]
    Codes(#[from] GeneratorError),
    #[error("the HTTP server failed: {0}")]
    Server(#[from] std::io::Error),
    #[error("cannot set up the Redis cache: {0}")]
    Redis(#[from] crate::cache::redis::RedisError),
    #[error("cannot set up the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("a startup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the store broke: {0}")]
    StoreBroken(String),
    #[error("cannot write the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

/// The running service: an HTTP server and its click pipeline.
pub struct Application {
    addr: SocketAddr,
    server: Server,
    /// The admin listener serving `/metrics`, if `metrics.listen` is set.
    admin: Option<(SocketAddr, ServerHandle)>,
    pipeline: ClickPipeline,
    state: web::Data<AppState>,
    stop: CancellationToken,
    /// Cancelled when shutdown begins: request bodies still arriving get a
    /// short grace.
    draining: CancellationToken,
    /// Cancels the background tasks (L2 subscription and probe) last.
    background: CancellationToken,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Opens the store the settings name.
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn LinkStore>, StartupError> {
    let retention =
        chrono::Duration::from_std(settings.links.retention).unwrap_or(chrono::Duration::MAX);
    match settings.storage.backend {
        StorageBackend::Sqlite => {
            let sqlite = &settings.storage.sqlite;
            let store = SqliteStore::open(SqliteOptions {
                dir: sqlite.dir.clone(),
                readers: sqlite.readers,
                max_in_flight: sqlite.max_in_flight,
                busy_timeout: sqlite.busy_timeout,
                retention,
                background: settings.events.priority,
            })
            .await?;
            tracing::info!(dir = %sqlite.dir.display(), "opened the embedded SQLite store");
            Ok(store)
        }
        StorageBackend::Scylla => {
            let options = scylla_options(settings)?;
            if settings.storage.scylla.migrate_on_start {
                links::storage::scylla::migrate(&options).await?;
            }
            let store = ScyllaStore::connect(options).await?;
            tracing::info!(
                nodes = ?settings.storage.scylla.nodes,
                keyspace = store.keyspace(),
                local_dc = %settings.storage.scylla.local_dc,
                "connected to ScyllaDB"
            );
            Ok(store)
        }
    }
}

/// What target URLs may be: links may not lead to the service itself, by
/// its public host or the address it listens on (with every loopback name
/// and address when that is loopback), nor to `links.blocked_hosts`.
fn url_policy(settings: &Settings, public_base: &str, listening: SocketAddr) -> UrlPolicy {
    let configured = settings
        .links
        .blocked_hosts
        .iter()
        .filter_map(|host| HostIdentity::parse(host).ok());
    let own = host_of(public_base)
        .into_iter()
        .chain([HostIdentity::of_ip(listening.ip())]);
    UrlPolicy::new(settings.links.max_url_length, configured.chain(own))
}

/// The Scylla adapter's options from the settings.
pub fn scylla_options(settings: &Settings) -> Result<ScyllaOptions, StartupError> {
    // With Kafka, the worker counts clicks; in process, the API does.
    let click_counts = match settings.events.backend {
        EventBackend::Kafka => ClickCounts::Ledger,
        EventBackend::Inprocess => ClickCounts::Counters,
    };
    Ok(settings
        .storage
        .scylla
        .options(settings.links.retention, click_counts)
        .map_err(SettingsError::from)?)
}

/// `shortener-api migrate`: brings the configured store's schema up to
/// date. The embedded store migrates itself whenever it opens.
pub async fn migrate(settings: &Settings) -> Result<(), StartupError> {
    match settings.storage.backend {
        StorageBackend::Sqlite => {
            open_store(settings).await?;
            tracing::info!("the SQLite store is migrated");
        }
        StorageBackend::Scylla => {
            let options = scylla_options(settings)?;
            let applied = links::storage::scylla::migrate(&options).await?;
            tracing::info!(
                keyspace = %options.keyspace,
                ?applied,
                version = links::storage::scylla::LATEST_VERSION,
                "the Scylla schema is up to date"
            );
        }
    }
    Ok(())
}

impl Application {
    /// Opens the configured store, binds the listener and starts serving.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = open_store(&settings).await?;
        Self::build_with_store(settings, store).await
    }

    /// Like [`Application::build`], with a store opened by the caller.
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn LinkStore>,
    ) -> Result<Self, StartupError> {
        let requested = settings.listen_addr()?;
        let listener = server::bind(requested).map_err(|source| StartupError::Bind {
            addr: requested,
            source,
        })?;
        let addr = listener.local_addr()?;
        let public_base = match settings.http.public_base_url.trim_end_matches('/') {
            "" => format!("http://{addr}"),
            configured => configured.to_owned(),
        };
        let url_policy = url_policy(&settings, &public_base, addr);

        let metrics = Arc::new(Metrics::new());
        let system = match settings.storage.backend {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Scylla => "scylladb",
        };
        let store: Arc<dyn LinkStore> = MeteredStore::wrap(store, system, &metrics);
        let admin_addr = settings
            .metrics
            .listen_addr()?
            .filter(|_| settings.metrics.enabled);
        let admin_listener = admin_addr
            .map(|addr| server::bind(addr).map_err(|source| StartupError::Bind { addr, source }))
            .transpose()?;
        let key = settings
            .code_key()
            .map(CodeKey::from_hex)
            .transpose()
            .map_err(GeneratorError::Key)?;
        let generator =
            CodeGenerator::for_store(store.as_ref(), key.as_ref(), settings.links.code_length)
                .await?;
        let codes = CodeAllocator::new(generator, store.clone(), settings.links.id_block_size);

        // Compiling the user-agent rules takes a moment: not on the executor.
        let classifier = tokio::task::spawn_blocking(UserAgentClassifier::shared).await?;
        let sink: Box<dyn ClickSink> = match settings.events.backend {
            EventBackend::Inprocess => Box::new(InProcessSink::new(
                store.clone(),
                classifier,
                settings.events.inprocess.clone(),
                metrics.clone(),
            )),
            EventBackend::Kafka => {
                let kafka = &settings.events.kafka;
                if kafka.create_topic
                    && let Err(error) = ensure_topic(kafka, TOPIC_TIMEOUT).await
                {
                    tracing::warn!(%error, "cannot check the clicks topic; producing anyway");
                }
                tracing::info!(brokers = %kafka.brokers, topic = %kafka.topic, "click events go to Kafka");
                Box::new(KafkaSink::new(
                    kafka,
                    settings.events.priority,
                    metrics.clone(),
                )?)
            }
        };
        let pipeline = ClickPipeline::start(
            settings.events.queue_capacity,
            sink,
            settings.events.priority,
            metrics.clone(),
        )?;

        let background = CancellationToken::new();
        let l2 = match settings.cache.redis.url() {
            Some(_) => Some(RedisCache::new(
                &settings.cache.redis,
                settings.storage_timeout(),
                metrics.clone(),
            )?),
            None => None,
        };
        let cache = LinkCache::new(
            &settings.cache.l1,
            l2.clone(),
            store.clone(),
            metrics.clone(),
        );
        if let Some(l2) = l2 {
            tracing::info!("L2 cache: Redis");
            tokio::spawn(l2.clone().probe(background.clone()));
            tokio::spawn(l2.subscribe(cache.clone(), background.clone()));
        }

        let state = web::Data::new(AppState {
            cache,
            store,
            codes,
            clicks: pipeline.queue(),
            url_policy,
            public_base,
            country_header: Some(settings.http.country_header.as_str())
                .filter(|h| !h.is_empty())
                .and_then(|h| HeaderName::try_from(h).ok()),
            admin_token: settings.admin_token().map(TokenDigest::of),
            metrics: metrics.clone(),
            tracing: settings.traces.enabled(),
            accepting: AtomicBool::new(true),
            openapi: openapi::document_json(settings.links.max_url_length)?,
        });
        let sampler = Sampler::for_settings(&settings.traces);
        let access_log_ratio = settings.http.access_log_ratio;
        let metrics_here = settings.metrics.enabled && admin_listener.is_none();
        let observed = settings.metrics.enabled;

        let http = settings.http.clone();
        let app_state = state.clone();
        let observer = Observe(Arc::new(Observer {
            metrics: metrics.clone(),
            sampler,
            access_log_ratio,
        }));
        let draining = CancellationToken::new();
        let bodies = ReadBody(Arc::new(BodyLimits {
            max_bytes: http.max_body_bytes,
            timeout: http.client_body_timeout,
            shutdown: draining.clone(),
            timeouts: metrics.body_timeouts.clone(),
        }));
        let options = server_options(&settings.http, &metrics);
        let admin_bodies = bodies.clone();
        let server = server::serve(
            "shortener-api",
            listener,
            &options,
            metrics.connections.clone(),
            move || {
                let max_header_bytes = http.max_header_bytes;
                // Outermost last: metrics see every answer, panics' too.
                // Bodies are read first, whole or refused: nothing answers
                // a request whose body is still arriving (actix-http would
                // drain the rest at the client's pace).
                App::new()
                    .wrap(from_fn(move |req, next| {
                        crate::routes::limit_headers(max_header_bytes, req, next)
                    }))
                    .wrap(bodies.clone())
                    .wrap(CatchPanic)
                    .wrap(Condition::new(observed, observer.clone()))
                    .configure(|cfg| {
                        routes(cfg, app_state.clone(), http.max_body_bytes, metrics_here)
                    })
            },
        )?;
        tracing::info!(%addr, public_base = %state.public_base, "listening");
        let admin = admin_listener
            .map(|listener| admin_server(listener, state.clone(), &options, admin_bodies))
            .transpose()?;

        Ok(Self {
            addr,
            server,
            admin,
            pipeline,
            state,
            stop: CancellationToken::new(),
            draining,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served: the admin listener, or the main one.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.admin.as_ref().map_or(self.addr, |(addr, _)| *addr)
    }

    /// Cancelling this token stops the application gracefully, as SIGTERM does.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Serves until SIGTERM, SIGINT or the stop token; then stops taking
    /// requests, lets in-flight ones finish, and writes every queued click.
    /// Stops the same way, with an error, if the store breaks for good.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        let Self {
            server,
            admin,
            pipeline,
            state,
            stop,
            draining,
            background,
            ..
        } = self;
        let handle = server.handle();
        let mut server = tokio::spawn(server);
        let mut broken = None;
        tokio::select! {
            result = &mut server => {
                result??;
            }
            reason = store_broken(&state) => {
                tracing::error!(%reason, "the store is broken; stopping so that the process is restarted");
                broken = Some(reason);
            }
            () = links::signals::shutdown_requested(&stop) => {}
        }
        if !server.is_finished() {
            tracing::info!("shutting down: draining requests");
            state
                .accepting
                .store(false, std::sync::atomic::Ordering::Relaxed);
            draining.cancel();
            handle.stop(true).await;
            server.await??;
        }
        tracing::info!("shutting down: writing queued clicks");
        pipeline.shut_down().await;
        // Scrapes see the pipeline drain; the admin listener stops last.
        if let Some((_, admin)) = admin {
            admin.stop(true).await;
        }
        background.cancel();
        tracing::info!("stopped");
        match broken {
            Some(reason) => Err(StartupError::StoreBroken(reason)),
            None => Ok(()),
        }
    }
}

/// How often the store is asked whether it broke for good.
const STORE_WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Returns once the store says it is broken until a restart (an embedded
/// connection's thread is gone): readiness already answers 503 then, and a
/// process that cannot write again is better restarted than kept.
async fn store_broken(state: &AppState) -> String {
    let mut every = tokio::time::interval(STORE_WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(StoreError::Broken(reason)) = state.store.ping().await {
            return reason;
        }
    }
}

/// The server's limits from `http.*`, within the file descriptors the
/// process may open.
fn server_options(http: &HttpSettings, metrics: &Metrics) -> ServerOptions {
    let workers = server::worker_count(http.workers);
    let fd_limit = server::raise_fd_limit();
    let per_worker = server::connections_per_worker(http.max_connections, workers, fd_limit);
    if per_worker < http.max_connections {
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
fn admin_server(
    listener: TcpListener,
    state: web::Data<AppState>,
    options: &ServerOptions,
    bodies: ReadBody,
) -> Result<(SocketAddr, ServerHandle), StartupError> {
    let addr = listener.local_addr()?;
    let options = ServerOptions {
        workers: 1,
        max_connections: ADMIN_CONNECTIONS,
        ..options.clone()
    };
    let server = server::serve(
        "shortener-api-admin",
        listener,
        &options,
        server::ConnectionMetrics::default(),
        move || {
            App::new()
                .wrap(bodies.clone())
                .wrap(CatchPanic)
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
    tokio::spawn(server);
    Ok((addr, handle))
}

fn routes(
    cfg: &mut web::ServiceConfig,
    state: web::Data<AppState>,
    max_body: usize,
    metrics_here: bool,
) {
    let not_allowed = |allow| web::to(error::method_not_allowed(allow));
    cfg.app_data(state)
        .app_data(
            web::JsonConfig::default()
                .limit(max_body)
                .error_handler(json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(
            web::resource("/healthz")
                .route(web::get().to(health::healthz))
                .default_service(not_allowed("GET")),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(health::readyz))
                .default_service(not_allowed("GET")),
        )
        .configure(|cfg| {
            if metrics_here {
                cfg.service(
                    web::resource("/metrics")
                        .route(web::get().to(metrics::metrics))
                        .default_service(not_allowed("GET")),
                );
            }
        })
        .service(
            web::scope("/api/v1")
                .service(
                    web::resource("/openapi.json")
                        .route(web::get().to(openapi::document))
                        .default_service(not_allowed("GET")),
                )
                .service(
                    web::resource("/links")
                        .route(web::post().to(link_routes::create))
                        .default_service(not_allowed("POST")),
                )
                .service(
                    web::resource("/links/{code}")
                        .route(web::get().to(link_routes::get))
                        .route(web::patch().to(link_routes::update))
                        .route(web::delete().to(link_routes::delete))
                        .default_service(not_allowed("GET, PATCH, DELETE")),
                )
                .service(
                    web::resource("/links/{code}/stats")
                        .route(web::get().to(stats::get))
                        .default_service(not_allowed("GET")),
                )
                .default_service(web::to(error::no_route)),
        )
        // Every other path is a short link: matching it last, as the
        // fallback, spares the hot path the router's pattern matching.
        .default_service(web::to(redirect::dispatch));
}
