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

    /// Writes everything counted so far in one store write; what a failed
    /// write hands back as certainly not applied is kept, with what
    /// arrives meanwhile, for the next flush. One write per flush, not
    /// several smaller ones: a store page touched by many links' counts is
    /// then written once.
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
            Err(unwritten) => {
                // An event is recorded once its link's totals are.
                let recorded = batch.events().saturating_sub(unwritten.retry.events());
                self.metrics.clicks_recorded.inc_by(recorded);
                self.metrics.click_flush_failures.inc();
                self.metrics
                    .click_rows_uncertain
                    .inc_by(unwritten.uncertain_rows as u64);
                tracing::warn!(error = %unwritten, "writing click counts failed; will retry what was not written");
                self.unwritten = unwritten.retry;
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
    use links::{Code, clicks::ClickRow};

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
        async fn delete_link(
            &self,
            _: &Code,
            _: DateTime<Utc>,
        ) -> Result<Option<links::Link>, links::StoreError> {
            Err(down())
        }
        async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), links::UnwrittenClicks> {
            Err(links::UnwrittenClicks::all(batch, down()))
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

    /// A store whose first click write applies the totals and buckets,
    /// certainly fails the top lists but one, and times out on that one.
    #[derive(Debug, Default)]
    struct PartlyFailing {
        writes: std::sync::Mutex<Vec<ClickBatch>>,
    }

    #[async_trait]
    impl LinkStore for PartlyFailing {
        async fn lease_ids(&self, n: u64) -> Result<links::storage::IdBlock, links::StoreError> {
            Down.lease_ids(n).await
        }
        async fn reserve_id(&self, id: u64) -> Result<bool, links::StoreError> {
            Down.reserve_id(id).await
        }
        async fn insert_link(
            &self,
            link: &links::Link,
            uniqueness: links::storage::Uniqueness,
        ) -> Result<(), links::StoreError> {
            Down.insert_link(link, uniqueness).await
        }
        async fn get_link(&self, code: &Code) -> Result<Option<links::Link>, links::StoreError> {
            Down.get_link(code).await
        }
        async fn update_link(
            &self,
            code: &Code,
            changes: &links::LinkChanges,
        ) -> Result<Option<links::Link>, links::StoreError> {
            Down.update_link(code, changes).await
        }
        async fn delete_link(
            &self,
            code: &Code,
            at: DateTime<Utc>,
        ) -> Result<Option<links::Link>, links::StoreError> {
            Down.delete_link(code, at).await
        }
        async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), links::UnwrittenClicks> {
            let mut writes = self.writes.lock().expect("not poisoned");
            writes.push(batch.clone());
            if writes.len() > 1 {
                return Ok(());
            }
            let mut retry = ClickBatch::default();
            let mut uncertain_rows = 0;
            for (code, row) in batch.row_increments() {
                if let ClickRow::Top(..) = row {
                    if uncertain_rows == 0 {
                        uncertain_rows = 1;
                    } else {
                        retry.add_row(code.clone(), row);
                    }
                }
            }
            Err(links::UnwrittenClicks {
                retry,
                uncertain_rows,
                error: down(),
            })
        }
        async fn click_stats(
            &self,
            code: &Code,
            query: &links::stats::StatsQuery,
        ) -> Result<links::stats::ClickStats, links::StoreError> {
            Down.click_stats(code, query).await
        }
        async fn get_or_init_setting(&self, n: &str, v: &str) -> Result<String, links::StoreError> {
            Down.get_or_init_setting(n, v).await
        }
        async fn ping(&self) -> Result<(), links::StoreError> {
            Down.ping().await
        }
    }

    #[tokio::test]
    async fn a_partly_failed_write_is_retried_with_only_what_was_not_written() {
        let metrics = Arc::new(Metrics::new());
        let store = Arc::new(PartlyFailing::default());
        let settings = InProcessSettings {
            flush_interval: Duration::from_secs(1),
            max_pending_rows: std::num::NonZeroUsize::new(10_000).expect("not zero"),
        };
        let mut sink = InProcessSink::new(
            store.clone(),
            UserAgentClassifier::shared(),
            settings,
            metrics.clone(),
        );
        for _ in 0..3 {
            let person = crate::clicks::Click::new(
                Code::parse("abcdefg").expect("code"),
                Utc::now(),
                Some(b"https://t.co/x"),
                Some(b"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0"),
                Some(b"de"),
            );
            let (event, trace) = person.into_event();
            sink.accept(event, trace).await;
        }
        assert!(!sink.flush().await);
        // The totals were written: the events are recorded.
        assert_eq!(metrics.clicks_recorded.get(), 3);
        assert_eq!(metrics.click_rows_uncertain.get(), 1);
        assert_eq!(metrics.click_flush_failures.get(), 1);

        let (event, trace) = click("bcdefgh").into_event();
        sink.accept(event, trace).await;
        assert!(sink.flush().await);
        let writes = store.writes.lock().expect("not poisoned");
        let (first, second) = (&writes[0], &writes[1]);
        let tops_of = |batch: &ClickBatch, code: &str| {
            batch
                .row_increments()
                .filter(|(c, row)| c.as_str() == code && matches!(row, ClickRow::Top(..)))
                .count()
        };
        // Nothing of abcdefg is written twice but the failed top lists,
        // less the one given up.
        assert!(tops_of(first, "abcdefg") > 2);
        assert_eq!(tops_of(second, "abcdefg"), tops_of(first, "abcdefg") - 1);
        let again = second
            .row_increments()
            .filter(|(c, row)| c.as_str() == "abcdefg" && !matches!(row, ClickRow::Top(..)))
            .collect::<Vec<_>>();
        assert_eq!(
            again,
            [(
                &Code::parse("abcdefg").expect("code"),
                ClickRow::Totals(Default::default())
            )]
        );
        assert_eq!(
            second.links[&Code::parse("bcdefgh").expect("code")].events(),
            1
        );
        assert_eq!(metrics.clicks_recorded.get(), 4);
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
