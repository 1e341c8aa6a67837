//! The worker's writes: one at a time, in a task of its own, each
//! followed by an offset commit of what it wrote.

use std::sync::Arc;

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer},
    error::KafkaError,
};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::Worker;
use crate::{
    ledger::{Cut, Source, Written},
    retry::Abandoned,
};

/// The outcome of the write under way; pending forever if there is none.
pub(super) async fn wait(
    writing: &mut Option<JoinHandle<Result<Written, Abandoned>>>,
) -> Result<Written, Abandoned> {
    let Some(handle) = writing.as_mut() else {
        return std::future::pending().await;
    };
    let outcome = handle.await;
    *writing = None;
    match outcome {
        Ok(result) => result,
        Err(e) => {
            tracing::error!(error = %e, "the write task failed");
            Err(Abandoned)
        }
    }
}

impl Worker {
    /// Starts writing every segment that may be written, with the dead
    /// letters taken before them, in a task of its own. Only one write is
    /// under way at a time: each records progress the one before made.
    pub(super) fn start_write(&mut self, abandon: &CancellationToken) {
        debug_assert!(self.writing.is_none(), "one write at a time");
        let cuts: Vec<Cut> = self.sources.values_mut().filter_map(Source::cut).collect();
        let letters = self.dead_letters.take();
        if cuts.is_empty() && letters.is_empty() {
            return;
        }
        let (ledger, abandon) = (Arc::clone(&self.ledger), abandon.clone());
        let max_backoff = self.settings.worker.max_backoff;
        let metrics = Arc::clone(&self.metrics);
        self.writing = Some(self.tasks.spawn(async move {
            let started = Instant::now();
            letters.deliver(max_backoff, &abandon).await?;
            let written = ledger.write(cuts, &abandon).await?;
            metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.rows_written.inc_by(written.rows_written as u64);
            metrics.last_flush.set(unix_now());
            tracing::debug!(
                rows = written.rows_written,
                already = written.rows_skipped,
                committed = ?written.committed,
                took = ?started.elapsed(),
                "counts written"
            );
            Ok(written)
        }));
    }

    /// Waits for the write under way, if any.
    pub(super) async fn finish_write(&mut self) -> Result<(), Abandoned> {
        if self.writing.is_some() {
            let written = wait(&mut self.writing).await?;
            self.written(written);
        }
        Ok(())
    }

    /// A write is done: drop the partitions another worker claimed, and
    /// commit the offsets of the others.
    pub(super) fn written(&mut self, written: Written) {
        self.totals.writes += 1;
        for partition in &written.fenced {
            self.sources.remove(partition);
            self.written_to.remove(partition);
        }
        self.metrics.partitions.set(self.sources.len() as i64);
        for (partition, end) in written.committed {
            if self.sources.contains_key(&partition) {
                self.written_to.insert(partition, end);
            }
        }
        if let Err(error) = self.commit() {
            tracing::debug!(%error, "an offset commit failed");
        }
    }

    /// Commits, without waiting, for every owned partition, the offset its
    /// counts were written to.
    fn commit(&self) -> Result<(), KafkaError> {
        let list = self.commit_list()?;
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer.commit(&list, CommitMode::Async)
    }

    /// For every owned partition, the offset its counts were written to.
    pub(super) fn commit_list(&self) -> Result<TopicPartitionList, KafkaError> {
        let topic = &self.settings.events.kafka.topic;
        let mut list = TopicPartitionList::new();
        for (&partition, &offset) in &self.written_to {
            list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        Ok(list)
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
