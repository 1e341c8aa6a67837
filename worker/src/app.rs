//! The worker's loop: consume, count, write, commit; and its shutdown.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use links::{
    StoreError,
    clicks::{UserAgentClassifier, wire},
    storage::scylla::{ClickCounts, ScyllaStore},
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Settings, SettingsError},
    kafka::{self, Assignment, DeadLetters, GroupConsumer},
    ledger::{Abandoned, Admit, Ledger, Source},
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
    ledger: Ledger,
    dead_letters: DeadLetters,
    classifier: Arc<UserAgentClassifier>,
    sources: HashMap<i32, Source>,
    /// Per owned partition, the offset its counts were last written to in
    /// this session: what may be committed to Kafka. (Never the offset a
    /// claim read: Kafka may already be past it, and a commit must not go
    /// back.)
    written_to: HashMap<i32, i64>,
    stop: CancellationToken,
    totals: Totals,
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
        let options = settings
            .storage
            .scylla
            .options(Duration::ZERO, ClickCounts::Ledger)
            .map_err(SettingsError::from)?;
        let store = ScyllaStore::connect(options).await?;
        // Compiling the user-agent rules takes a moment: not on the executor.
        let classifier = tokio::task::spawn_blocking(UserAgentClassifier::shared).await?;
        if let Err(error) = kafka::ensure_dead_letter_topic(&settings).await {
            // The producer's first delivery creates it if the broker allows.
            tracing::warn!(%error, "cannot create the dead-letter topic");
        }
        let w = &settings.worker;
        let ledger = Ledger::new(
            store,
            settings.events.kafka.topic.clone(),
            w.cached_rows,
            w.write_concurrency,
            w.max_backoff,
        );
        Ok(Self {
            consumer: Arc::new(kafka::consumer(&settings)?),
            dead_letters: DeadLetters::new(&settings)?,
            ledger,
            classifier,
            sources: HashMap::new(),
            written_to: HashMap::new(),
            stop: CancellationToken::new(),
            totals: Totals::default(),
            settings,
        })
    }

    /// Cancelling it stops the worker gracefully, as SIGTERM does.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Runs until SIGTERM, SIGINT or the stop token; then writes what it
    /// has counted, commits, and leaves the group.
    pub async fn run_until_stopped(mut self) -> Result<Totals, WorkerError> {
        let stop = self.stop.clone();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                links::signals::shutdown_requested(&stop).await;
                stop.cancel();
            }
        });
        // Fires `shutdown_timeout` after the stop: retries give up then.
        let abandon = CancellationToken::new();
        tokio::spawn({
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
                tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep_until(flush_at) => {
                        self.write(&abandon).await?;
                        flush_at = Instant::now() + interval;
                    }
                    message = messages.next() => {
                        self.follow_rebalances(&abandon).await?;
                        match message {
                            Some(Ok(message)) => self.take(&message, &abandon).await?,
                            Some(Err(error)) => {
                                tracing::warn!(%error, "consuming failed");
                            }
                            None => break,
                        }
                        if self.due() {
                            self.write(&abandon).await?;
                            flush_at = Instant::now() + interval;
                        }
                    }
                }
            }
            self.follow_rebalances(&abandon).await?;
            self.write(&abandon).await
        }
        .await;
        match outcome {
            Ok(()) => {
                // The last commit, synchronously, before leaving.
                if let Err(error) = self.commit(CommitMode::Sync) {
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
        rows >= self.settings.worker.max_pending_rows
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
                    return Ok(());
                }
                Admit::FlushFirst => self.write(abandon).await?,
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
                source.record(&event);
                self.totals.events += 1;
            }
            Err(reason) => {
                tracing::debug!(partition, offset, reason, "set aside as a dead letter");
                self.dead_letters.set_aside(message, &reason);
                self.totals.dead_letters += 1;
            }
        }
        source.taken(offset);
        Ok(())
    }

    /// Delivers the dead letters, writes every pending segment, then
    /// commits the offsets past them.
    async fn write(&mut self, abandon: &CancellationToken) -> Result<(), Abandoned> {
        let max_backoff = self.settings.worker.max_backoff;
        self.dead_letters.deliver(max_backoff, abandon).await?;
        if !self.sources.values().any(Source::writable) {
            return Ok(());
        }
        let started = Instant::now();
        let written = self.ledger.write(&mut self.sources, abandon).await?;
        self.totals.writes += 1;
        for partition in &written.fenced {
            self.written_to.remove(partition);
        }
        self.written_to.extend(written.committed.iter().copied());
        tracing::debug!(
            rows = written.rows_written,
            already = written.rows_skipped,
            committed = ?written.committed,
            took = ?started.elapsed(),
            "counts written"
        );
        if let Err(error) = self.commit(CommitMode::Async) {
            tracing::debug!(%error, "an offset commit failed");
        }
        Ok(())
    }

    /// Commits, for every owned partition, the offset its counts were
    /// written to.
    fn commit(&self, mode: CommitMode) -> Result<(), KafkaError> {
        let topic = &self.settings.events.kafka.topic;
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in &self.written_to {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer.commit(&list, mode)
    }
}
