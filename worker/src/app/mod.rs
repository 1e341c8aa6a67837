//! The worker's loop: consume, count, write, commit; and its shutdown.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use actix_web::dev::ServerHandle;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use futures_util::StreamExt;
use links::{
    StoreError,
    clicks::{UserAgentClassifier, wire},
};
use rdkafka::{
    Message,
    consumer::{CommitMode, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
};
use runtime::tasks::Tasks;
use stores::scylla::{ClickCounts, ScyllaStore};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

mod writes;

use self::writes::wait;
use crate::{
    config::{Settings, SettingsError},
    kafka::{self, Assignment, DeadLetters, GroupConsumer},
    ledger::{Admit, Ledger, Source, Written},
    metrics::{self, WorkerMetrics},
    retry::Abandoned,
};

/// Dead letters held before an early write: they are copies of messages,
/// so a flood of garbage must not pile up in memory.
const MAX_WAITING_LETTERS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("a startup task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the worker has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub events: u64,
    pub dead_letters: u64,
    pub skipped: u64,
    pub writes: u64,
}

/// The running worker.
pub struct Worker {
    settings: Settings,
    consumer: Arc<GroupConsumer>,
    ledger: Arc<Ledger>,
    dead_letters: DeadLetters,
    /// The write under way, if any.
    writing: Option<JoinHandle<Result<Written, Abandoned>>>,
    classifier: Arc<UserAgentClassifier>,
    sources: HashMap<i32, Source>,
    /// Per owned partition, the offset its counts were last written to in
    /// this session: what may be committed to Kafka. (Never the offset a
    /// claim read: Kafka may already be past it, and a commit must not go
    /// back.)
    written_to: HashMap<i32, i64>,
    stop: CancellationToken,
    totals: Totals,
    metrics: Arc<WorkerMetrics>,
    /// Where `/metrics` is served, and the server's handle.
    metrics_server: (SocketAddr, ServerHandle),
    /// Whether events of sampled traces get a span (`traces.endpoint` set).
    tracing: bool,
    /// Every task the worker starts: the `/metrics` server, the writes,
    /// the signal watcher and the shutdown deadline.
    tasks: Tasks,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("sources", &self.sources.keys().collect::<Vec<_>>())
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Connects to ScyllaDB (whose schema must be current) and Kafka, and
    /// joins the group.
    pub async fn build(settings: Settings) -> Result<Self, WorkerError> {
        let options =
            settings
                .storage
                .scylla
                .options(Duration::ZERO, ClickCounts::Ledger, &settings.region);
        let store = ScyllaStore::connect(options).await?;
        // Compiling the user-agent rules takes a moment: not on the executor.
        let classifier = tokio::task::spawn_blocking(UserAgentClassifier::shared).await?;
        if let Err(error) = kafka::ensure_dead_letter_topic(&settings).await {
            // The producer's first delivery creates it if the broker allows.
            tracing::warn!(%error, "cannot create the dead-letter topic");
        }
        let w = &settings.worker;
        let metrics = Arc::new(WorkerMetrics::new());
        let addr = w.metrics_listen;
        let tasks = Tasks::new();
        let metrics_server = runtime::http::bind(addr)
            .and_then(|listener| {
                let options = runtime::http::ServerOptions::scrapes();
                metrics::serve(listener, Arc::clone(&metrics), &options, &tasks)
            })
            .map_err(|source| WorkerError::Metrics { addr, source })?;
        tracing::info!(addr = %metrics_server.0, "serving /metrics");
        let ledger = Ledger::new(
            store,
            settings.events.kafka.topic.clone(),
            w.cached_rows,
            w.write_concurrency.get(),
            w.max_backoff,
            metrics.scylla_failures.clone(),
        );
        Ok(Self {
            consumer: Arc::new(kafka::consumer(&settings, Arc::clone(&metrics))?),
            dead_letters: DeadLetters::new(&settings, metrics.kafka_failures.clone())?,
            tracing: settings.traces.enabled(),
            metrics,
            metrics_server,
            ledger: Arc::new(ledger),
            writing: None,
            classifier,
            sources: HashMap::new(),
            written_to: HashMap::new(),
            stop: CancellationToken::new(),
            totals: Totals::default(),
            settings,
            tasks,
        })
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_server.0
    }

    /// Cancelling it stops the worker gracefully.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops when `token` is cancelled: `main` hands the root token of the
    /// process's shutdown ([`runtime::signals::shutdown_token`]).
    pub fn with_stop_token(mut self, token: CancellationToken) -> Self {
        self.stop = token;
        self
    }

    /// Runs until the stop token is cancelled; then writes what it has
    /// counted, commits, and leaves the group.
    pub async fn run_until_stopped(mut self) -> Result<Totals, WorkerError> {
        let stop = self.stop.clone();
        // Fires `shutdown_timeout` after the stop: retries give up then.
        let abandon = CancellationToken::new();
        self.tasks.spawn_until_stopped({
            let (stop, abandon, grace) = (
                stop.clone(),
                abandon.clone(),
                self.settings.worker.shutdown_timeout,
            );
            async move {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
                abandon.cancel();
            }
        });

        let consumer = Arc::clone(&self.consumer);
        let mut messages = consumer.stream();
        let interval = self.settings.worker.flush_interval;
        let mut flush_at = Instant::now() + interval;
        let outcome: Result<(), Abandoned> = async {
            loop {
                // While a write is under way, events keep being counted into
                // the next segments; past the memory limit, consuming waits.
                let full = self.due();
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    written = wait(&mut self.writing), if self.writing.is_some() => {
                        self.written(written?);
                        if full {
                            self.start_write(&abandon);
                            flush_at = Instant::now() + interval;
                        }
                    }
                    () = tokio::time::sleep_until(flush_at), if self.writing.is_none() => {
                        self.start_write(&abandon);
                        flush_at = Instant::now() + interval;
                    }
                    message = messages.next(), if !full => {
                        if self.consumer.context().has_changes() {
                            // Claims wait for the write: it may be the last
                            // of a partition that comes back.
                            self.finish_write().await?;
                            self.follow_rebalances(&abandon).await?;
                        }
                        match message {
                            Some(Ok(message)) => self.take(&message, &abandon).await?,
                            Some(Err(error)) => {
                                tracing::warn!(%error, "consuming failed");
                            }
                            None => break,
                        }
                        if self.due() && self.writing.is_none() {
                            self.start_write(&abandon);
                            flush_at = Instant::now() + interval;
                        }
                    }
                }
            }
            self.finish_write().await?;
            self.follow_rebalances(&abandon).await?;
            self.start_write(&abandon);
            self.finish_write().await
        }
        .await;
        match outcome {
            Ok(()) => {
                // The last commit, synchronously, before leaving: it
                // blocks, so on a thread of its own.
                let committed = match self.commit_list() {
                    Ok(list) if list.count() == 0 => Ok(()),
                    Ok(list) => {
                        let consumer = Arc::clone(&self.consumer);
                        let commit = move || consumer.commit(&list, CommitMode::Sync);
                        match tokio::task::spawn_blocking(commit).await {
                            Ok(result) => result.map_err(|e| e.to_string()),
                            Err(join) => Err(join.to_string()),
                        }
                    }
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = committed {
                    tracing::warn!(%error, "the last offset commit failed");
                }
            }
            Err(Abandoned) => tracing::warn!(
                "stopped before the last counts were written; the next owner of these \
                 partitions counts them"
            ),
        }
        drop(messages);
        self.consumer.unsubscribe();
        self.metrics_server.1.stop(true).await;
        if !self.tasks.shut_down(TASKS_GRACE).await {
            tracing::warn!(
                running = self.tasks.len(),
                "tasks still running; stopping without them"
            );
        }
        tracing::info!(totals = ?self.totals, "the worker stopped");
        Ok(self.totals)
    }

    fn due(&self) -> bool {
        let rows: usize = self
            .sources
            .values()
            .filter(|s| s.writable())
            .map(Source::pending_rows)
            .sum();
        rows >= self.settings.worker.max_pending_rows.get()
            || self.dead_letters.waiting() >= MAX_WAITING_LETTERS
    }

    /// Claims newly assigned partitions and drops revoked ones. Events a
    /// revoked partition had pending are counted by its next owner.
    async fn follow_rebalances(&mut self, abandon: &CancellationToken) -> Result<(), Abandoned> {
        for change in self.consumer.context().take_changes() {
            match change {
                Assignment::Assigned(partitions) => {
                    let claims = partitions.iter().map(|&partition| {
                        self.ledger
                            .claim(partition, Arc::clone(&self.classifier), abandon)
                    });
                    for source in futures_util::future::join_all(claims).await {
                        let source = source?;
                        self.sources.insert(source.partition, source);
                    }
                }
                Assignment::Revoked(partitions) => {
                    for partition in partitions {
                        self.sources.remove(&partition);
                        self.written_to.remove(&partition);
                        self.ledger.forget(partition);
                    }
                }
            }
        }
        self.metrics.partitions.set(self.sources.len() as i64);
        Ok(())
    }

    /// Counts one message, or sets it aside as a dead letter.
    async fn take(
        &mut self,
        message: &BorrowedMessage<'_>,
        abandon: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let (partition, offset) = (message.partition(), message.offset());
        loop {
            let Some(source) = self.sources.get_mut(&partition) else {
                // Not ours (any more): fenced off, or revoked meanwhile.
                return Ok(());
            };
            match source.admit(offset) {
                Admit::Skip => {
                    self.totals.skipped += 1;
                    self.metrics.events_skipped.inc();
                    return Ok(());
                }
                Admit::FlushFirst => {
                    self.finish_write().await?;
                    self.start_write(abandon);
                }
                Admit::Take => break,
            }
        }
        let schema = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == wire::SCHEMA_HEADER))
            .and_then(|h| h.value);
        let decoded = match message.payload() {
            Some(value) => wire::decode(schema, value).map_err(|e| e.to_string()),
            None => Err("no value".to_owned()),
        };
        let source = self
            .sources
            .get_mut(&partition)
            .expect("admitted by its source");
        match decoded {
            Ok(event) => {
                let span = if self.tracing {
                    event_span(message, &event)
                } else {
                    tracing::Span::none()
                };
                span.in_scope(|| source.record(&event));
                self.totals.events += 1;
                self.metrics.events_consumed.inc();
            }
            Err(reason) => {
                tracing::debug!(partition, offset, reason, "set aside as a dead letter");
                self.dead_letters.set_aside(message, &reason);
                self.totals.dead_letters += 1;
                self.metrics.dead_letters.inc();
            }
        }
        source.taken(offset);
        Ok(())
    }
}

/// How long the end of a run waits for the worker's tasks once told to
/// stop: each ends at its next await, so this is only reached by a bug.
const TASKS_GRACE: Duration = Duration::from_secs(5);

/// The span of one event whose trace the API sampled: a consumer span in
/// that trace, child of the redirect's span and linked to it (the
/// messaging conventions' "creation context"). Any other event gets none.
fn event_span(message: &BorrowedMessage<'_>, event: &links::clicks::ClickEvent) -> tracing::Span {
    let header = |name: &str| {
        message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == name))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    let Some(creation) = header(wire::TRACEPARENT)
        .and_then(|parent| runtime::telemetry::sampled_remote(parent, header(wire::TRACESTATE)))
    else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(
        "click",
        otel.name = format!("{} process", message.topic()),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = message.topic(),
        messaging.destination.partition.id = message.partition(),
        messaging.kafka.offset = message.offset(),
        link.code = %event.code,
        trace_id = %creation.trace_id(),
    );
    let _ =
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(creation.clone()));
    span.add_link(creation);
    span
}
