//! The embedded default's sink: the worker's aggregation, run in this
//! process, with the counts written to the store every
//! `events.inprocess.flush_interval`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use links::{
    LinkStore,
    clicks::{Aggregator, ClickBatch, ClickEvent, UserAgentClassifier},
};

use super::{ClickSink, Trace};
use crate::{config::InProcessSettings, metrics::Metrics};

/// Attempts at the final flush on shutdown before the counts are given up.
const FINAL_FLUSH_ATTEMPTS: u32 = 5;

/// A flush may take at most this share of the time: under heavy load,
/// flushes come less often than `flush_interval`, and each carries more
/// clicks per row written.
const FLUSH_DUTY_CYCLE: u32 = 5;

/// Aggregates in this process and writes counts to the store.
#[derive(Debug)]
pub struct InProcessSink {
    aggregator: Aggregator,
    /// Counts whose write failed, retried with the next flush.
    unwritten: ClickBatch,
    /// When the last flush started, and how long it took.
    last_flush: (Instant, Duration),
    store: Arc<dyn LinkStore>,
    settings: InProcessSettings,
    metrics: Arc<Metrics>,
}

impl InProcessSink {
    pub fn new(
        store: Arc<dyn LinkStore>,
        classifier: Arc<UserAgentClassifier>,
        settings: InProcessSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            aggregator: Aggregator::new(classifier),
            unwritten: ClickBatch::default(),
            last_flush: (Instant::now(), Duration::ZERO),
            store,
            settings,
            metrics,
        }
    }

    /// Writes everything counted so far in one store write; a batch whose
    /// write failed is kept, with what arrives meanwhile, for the next flush.
    /// One write per flush, not several smaller ones: a store page touched
    /// by many links' counts is then written once.
    async fn flush(&mut self) -> bool {
        let mut batch = std::mem::take(&mut self.unwritten);
        batch.merge(self.aggregator.take());
        if batch.is_empty() {
            return true;
        }
        let started = Instant::now();
        let written = self.store.record_clicks(&batch).await;
        self.last_flush = (started, started.elapsed());
        match written {
            Ok(()) => {
                self.metrics.clicks_recorded.inc_by(batch.events());
                true
            }
            Err(error) => {
                self.metrics.click_flush_failures.inc();
                tracing::warn!(%error, events = batch.events(), "writing click counts failed; will retry");
                self.unwritten = batch;
                false
            }
        }
    }
}

#[async_trait]
impl ClickSink for InProcessSink {
    async fn accept(&mut self, event: ClickEvent, _: Trace) {
        if self.unwritten.rows() >= self.settings.max_pending_rows.get() {
            // The store has failed long enough to fill the buffer: memory
            // stays bounded, and the loss is counted.
            self.metrics.clicks_dropped.inc();
            return;
        }
        self.aggregator.record(&event);
        if self.aggregator.pending_rows() + self.unwritten.rows()
            >= self.settings.max_pending_rows.get()
        {
            self.flush().await;
        }
    }

    async fn tick(&mut self) {
        let (started, took) = self.last_flush;
        if started.elapsed() >= took * FLUSH_DUTY_CYCLE {
            self.flush().await;
        }
    }

    fn tick_interval(&self) -> Duration {
        self.settings.flush_interval
    }

    async fn close(&mut self) {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..FINAL_FLUSH_ATTEMPTS {
            if self.flush().await {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        tracing::error!(
            events = self.unwritten.events(),
            "click counts could not be written before shutdown and are lost"
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use links::Code;

    use super::*;
    use crate::clicks::tests::click;

    /// A store that is down.
    #[derive(Debug)]
    struct Down;

    fn down() -> links::StoreError {
        links::StoreError::Unavailable("down".into())
    }

    #[async_trait]
    impl LinkStore for Down {
        async fn lease_ids(&self, _: u64) -> Result<links::storage::IdBlock, links::StoreError> {
            Err(down())
        }
        async fn reserve_id(&self, _: u64) -> Result<bool, links::StoreError> {
            Err(down())
        }
        async fn insert_link(
            &self,
            _: &links::Link,
            _: links::storage::Uniqueness,
        ) -> Result<(), links::StoreError> {
            Err(down())
        }
        async fn get_link(&self, _: &Code) -> Result<Option<links::Link>, links::StoreError> {
            Err(down())
        }
        async fn update_link(
            &self,
            _: &Code,
            _: &links::LinkChanges,
        ) -> Result<Option<links::Link>, links::StoreError> {
            Err(down())
        }
        async fn delete_link(&self, _: &Code, _: DateTime<Utc>) -> Result<bool, links::StoreError> {
            Err(down())
        }
        async fn record_clicks(&self, _: &ClickBatch) -> Result<(), links::StoreError> {
            Err(down())
        }
        async fn click_stats(
            &self,
            _: &Code,
            _: &links::stats::StatsQuery,
        ) -> Result<links::stats::ClickStats, links::StoreError> {
            Err(down())
        }
        async fn get_or_init_setting(&self, _: &str, _: &str) -> Result<String, links::StoreError> {
            Err(down())
        }
        async fn ping(&self) -> Result<(), links::StoreError> {
            Err(down())
        }
    }

    #[tokio::test]
    async fn a_failing_store_bounds_the_buffer_and_counts_the_loss() {
        let metrics = Arc::new(Metrics::new());
        let settings = InProcessSettings {
            flush_interval: Duration::from_secs(1),
            max_pending_rows: std::num::NonZeroUsize::new(100).expect("not zero"),
        };
        let mut sink = InProcessSink::new(
            Arc::new(Down),
            UserAgentClassifier::shared(),
            settings,
            metrics.clone(),
        );
        for i in 0..1_000 {
            let (event, trace) = click(&format!("code{i}")).into_event();
            sink.accept(event, trace).await;
        }
        assert!(sink.unwritten.rows() + sink.aggregator.pending_rows() <= 100 + 8);
        assert!(
            metrics.clicks_dropped.get() > 800,
            "{}",
            metrics.clicks_dropped.get()
        );
        assert!(metrics.click_flush_failures.get() >= 1);
        assert_eq!(metrics.clicks_recorded.get(), 0);
        let kept = sink.unwritten.events() + sink.aggregator.take().events();
        assert_eq!(kept + metrics.clicks_dropped.get(), 1_000);
    }
}
