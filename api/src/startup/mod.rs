//! Building the application from its settings, running it, and stopping it
//! without losing a click.
//!
//! - `store`: opening the configured store, its schema (`migrate`), and
//!   what links may point at;
//! - `http`: the server's limits, the routes, the admin listener.

mod http;
mod store;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
};

use actix_web::{
    App,
    dev::{Server, ServerHandle},
    middleware::{Condition, from_fn},
    web,
};
use links::{
    LinkStore, StoreError, TokenDigest,
    clicks::UserAgentClassifier,
    codegen::{CodeAllocator, CodeGenerator, GeneratorError},
    region::LinkFinder,
};
use runtime::{tasks::Tasks, telemetry::Sampler};
use tokio_util::sync::CancellationToken;

pub use self::store::{migrate, open_store, scylla_options};
use self::{
    http::{admin_server, routes, server_options},
    store::url_policy,
};
use crate::{
    cache::{LinkCache, redis::RedisCache},
    changes::{self, ChangeFeed},
    clicks::{
        ClickPipeline, ClickSink, InProcessSink,
        kafka::{KafkaSink, ensure_topic},
    },
    config::{EventBackend, Settings, SettingsError, StorageBackend},
    metered_store::MeteredStore,
    metrics::Metrics,
    observe::{Observe, Observer},
    openapi,
    server::{
        self,
        body::{BodyLimits, ReadBody},
        panic::CatchPanic,
    },
    state::AppState,
};

/// How long start waits for Kafka to create (or confirm) the clicks topic.
const TOPIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

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
    /// Every background task (the L2 subscription, probe and write-backs,
    /// the store's maintenance, the servers), stopped and waited for last.
    tasks: Tasks,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
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
        let requested = settings.http.listen;
        let listener = server::bind(requested).map_err(|source| StartupError::Bind {
            addr: requested,
            source,
        })?;
        let addr = listener.local_addr()?;
        let public_base = match &settings.http.public_base_url {
            Some(configured) => configured.as_str().to_owned(),
            None => format!("http://{addr}"),
        };
        let url_policy = url_policy(&settings, &public_base, addr);

        let metrics = Arc::new(Metrics::new());
        let system = match settings.storage.backend {
            StorageBackend::Sqlite => "sqlite",
            StorageBackend::Scylla => "scylladb",
        };
        let store: Arc<dyn LinkStore> = MeteredStore::wrap(store, system, &metrics);
        // Whatever fails below stops the tasks started before it.
        let tasks = Tasks::new();
        let stop_tasks_on_error = tasks.stop_token().clone().drop_guard();
        if let Some(maintenance) = Arc::clone(&store).maintenance() {
            tasks.spawn_until_stopped(maintenance);
        }
        let admin_addr = settings.metrics.listen.filter(|_| settings.metrics.enabled);
        let admin_listener = admin_addr
            .map(|addr| server::bind(addr).map_err(|source| StartupError::Bind { addr, source }))
            .transpose()?;
        let key = settings.links.code_key.as_ref();
        let generator =
            CodeGenerator::for_store(store.as_ref(), key, settings.links.code_length).await?;
        let codes =
            CodeAllocator::new(generator, store.clone(), settings.links.id_block_size.get());
        let links = match settings.region.regions() {
            Some(regions) => {
                LinkFinder::regional(store.clone(), codes.generator().clone(), regions.clone())
            }
            None => LinkFinder::local(store.clone()),
        };

        let sink = click_sink(&settings, &store, &metrics).await?;
        let pipeline = ClickPipeline::start(
            settings.events.queue_capacity.get(),
            sink,
            settings.events.priority,
            metrics.clone(),
        )?;

        let mut cache = link_cache(&settings, links.clone(), &metrics, &tasks)?;
        let changes = match settings.region.regions() {
            Some(regions) => {
                let region = regions.local().name.clone();
                let others: Vec<String> = regions
                    .all()
                    .iter()
                    .map(|r| r.name.clone())
                    .filter(|name| *name != region)
                    .collect();
                // Fences outlast every cached copy; a load takes at most
                // Redis's timeout and two store reads.
                let keep = settings.cache.l1.ttl.max(settings.cache.redis.ttl);
                let load_within = settings.cache.redis.timeout + settings.storage_timeout() * 2;
                cache = cache.with_fences(keep, load_within);
                let kafka = &settings.events.kafka;
                if kafka.create_topic
                    && let Err(error) =
                        ensure_topic(kafka, &kafka.changes_topic, Some(keep), TOPIC_TIMEOUT).await
                {
                    tracing::warn!(%error, "cannot check the link-changes topic; producing anyway");
                }
                let feed = ChangeFeed::new(kafka, &region, metrics.clone())?;
                tasks.spawn(changes::listen(
                    kafka.clone(),
                    region.clone(),
                    others,
                    cache.clone(),
                    metrics.clone(),
                    feed.catch_up_flag(),
                    tasks.stop_token().clone(),
                ));
                Some(feed)
            }
            None => None,
        };

        let state = web::Data::new(AppState {
            cache,
            changes,
            links,
            store,
            codes,
            clicks: pipeline.queue(),
            url_policy,
            public_base,
            country_header: settings.http.country_header.clone(),
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
                    .wrap(CatchPanic::OUTER)
                    .wrap(Condition::new(observed, observer.clone()))
                    .configure(|cfg| {
                        routes(cfg, app_state.clone(), http.max_body_bytes, metrics_here)
                    })
            },
        )?;
        tracing::info!(%addr, public_base = %state.public_base, "listening");
        let admin = admin_listener
            .map(|listener| admin_server(listener, state.clone(), &options, admin_bodies, &tasks))
            .transpose()?;
        stop_tasks_on_error.disarm();

        Ok(Self {
            addr,
            server,
            admin,
            pipeline,
            state,
            stop: CancellationToken::new(),
            draining,
            tasks,
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

    /// Cancelling this token stops the application gracefully.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops when `token` is cancelled: `main` hands the root token of the
    /// process's shutdown ([`runtime::signals::shutdown_token`]).
    pub fn with_stop_token(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Serves until the stop token is cancelled; then stops taking
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
            tasks,
            ..
        } = self;
        let handle = server.handle();
        let mut server = tasks.spawn(server);
        let mut broken = None;
        tokio::select! {
            result = &mut server => {
                result??;
            }
            reason = store_broken(&state) => {
                tracing::error!(%reason, "the store is broken; stopping so that the process is restarted");
                broken = Some(reason);
            }
            () = stop.cancelled() => {}
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
        if !tasks.shut_down(TASKS_GRACE).await {
            tracing::warn!(
                running = tasks.len(),
                "background tasks still running after {TASKS_GRACE:?}; stopping without them"
            );
        }
        tracing::info!("stopped");
        match broken {
            Some(reason) => Err(StartupError::StoreBroken(reason)),
            None => Ok(()),
        }
    }
}

/// Where clicks go: counted in process, or produced to Kafka for the worker.
async fn click_sink(
    settings: &Settings,
    store: &Arc<dyn LinkStore>,
    metrics: &Arc<Metrics>,
) -> Result<Box<dyn ClickSink>, StartupError> {
    Ok(match settings.events.backend {
        EventBackend::Inprocess => {
            // Compiling the user-agent rules takes a moment: not on the executor.
            let classifier = tokio::task::spawn_blocking(UserAgentClassifier::shared).await?;
            Box::new(InProcessSink::new(
                store.clone(),
                classifier,
                settings.events.inprocess.clone(),
                metrics.clone(),
            ))
        }
        EventBackend::Kafka => {
            let kafka = &settings.events.kafka;
            if kafka.create_topic
                && let Err(error) = ensure_topic(kafka, &kafka.topic, None, TOPIC_TIMEOUT).await
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
    })
}

/// L1, in front of L2 (Redis) when one is configured; L2's probe, its
/// invalidation subscription and its write-backs run among `tasks`.
fn link_cache(
    settings: &Settings,
    links: LinkFinder,
    metrics: &Arc<Metrics>,
    tasks: &Tasks,
) -> Result<LinkCache, StartupError> {
    let (mut l1, mut redis) = (settings.cache.l1.clone(), settings.cache.redis.clone());
    if links.is_regional() {
        // An unknown code may be a link made elsewhere, still on its way.
        let short = settings.cache.remote_miss_ttl;
        l1.negative_ttl = l1.negative_ttl.min(short);
        redis.negative_ttl = redis.negative_ttl.min(short);
    }
    let l2 = match redis.url() {
        Some(_) => Some(RedisCache::new(
            &redis,
            settings.storage_timeout(),
            metrics.clone(),
            tasks.clone(),
        )?),
        None => None,
    };
    let cache = LinkCache::new(&l1, l2.clone(), links, metrics.clone());
    if let Some(l2) = l2 {
        tracing::info!("L2 cache: Redis");
        let stop = tasks.stop_token();
        tasks.spawn(l2.clone().probe(stop.clone()));
        tasks.spawn(l2.subscribe(cache.clone(), stop.clone()));
    }
    Ok(cache)
}

/// How long shutdown waits for the background tasks once told to stop:
/// each ends at its next await, so this is only reached by a bug.
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

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
