//! The link store as the API uses it: every call timed, its failures
//! counted, and traced when its request is.

use std::{borrow::Borrow, fmt, future::Future, sync::Arc, time::Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use links::{
    Code, Link, LinkChanges, LinkStore, StoreError, UnwrittenClicks,
    clicks::ClickBatch,
    region::RegionSlot,
    stats::{ClickStats, StatsQuery},
    storage::{IdBlock, Uniqueness},
};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use tracing::Instrument;

use crate::metrics::Metrics;

/// One operation's metrics.
#[derive(Debug)]
struct Operation {
    seconds: Histogram,
    errors: Counter,
}

/// A [`LinkStore`] that measures the one it wraps.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn LinkStore>,
    system: &'static str,
    lease_ids: Operation,
    reserve_id: Operation,
    insert_link: Operation,
    get_link: Operation,
    get_link_elsewhere: Operation,
    update_link: Operation,
    delete_link: Operation,
    record_clicks: Operation,
    click_stats: Operation,
    get_or_init_setting: Operation,
    ping: Operation,
}

impl MeteredStore {
    /// `system` names the database in spans (`db.system.name`).
    pub fn wrap(inner: Arc<dyn LinkStore>, system: &'static str, metrics: &Metrics) -> Arc<Self> {
        let operation = |name| {
            let (seconds, errors) = metrics.store.operation(name);
            Operation { seconds, errors }
        };
        Arc::new(Self {
            inner,
            system,
            lease_ids: operation("lease_ids"),
            reserve_id: operation("reserve_id"),
            insert_link: operation("insert_link"),
            get_link: operation("get_link"),
            get_link_elsewhere: operation("get_link_elsewhere"),
            update_link: operation("update_link"),
            delete_link: operation("delete_link"),
            record_clicks: operation("record_clicks"),
            click_stats: operation("click_stats"),
            get_or_init_setting: operation("get_or_init_setting"),
            ping: operation("ping"),
        })
    }

    async fn call<T, E: Borrow<StoreError> + fmt::Display>(
        &self,
        name: &'static str,
        operation: &Operation,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let span = runtime::child_span!(
            "store",
            otel.name = name,
            otel.kind = "client",
            db.system.name = self.system,
            db.operation.name = name,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let start = Instant::now();
        let result = call.instrument(span.clone()).await;
        operation.seconds.observe(start.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {}
            Err(error) if matches!(error.borrow(), StoreError::Conflict) => {}
            Err(error) => {
                operation.errors.inc();
                span.record("otel.status_code", "ERROR");
                span.record("error.type", tracing::field::display(error));
            }
        }
        result
    }
}

#[async_trait]
impl LinkStore for MeteredStore {
    async fn lease_ids(&self, count: u64) -> Result<IdBlock, StoreError> {
        let call = self.inner.lease_ids(count);
        self.call("lease_ids", &self.lease_ids, call).await
    }

    async fn reserve_id(&self, id: u64) -> Result<bool, StoreError> {
        let call = self.inner.reserve_id(id);
        self.call("reserve_id", &self.reserve_id, call).await
    }

    async fn insert_link(&self, link: &Link, uniqueness: Uniqueness) -> Result<(), StoreError> {
        let call = self.inner.insert_link(link, uniqueness);
        self.call("insert_link", &self.insert_link, call).await
    }

    async fn get_link(&self, code: &Code) -> Result<Option<Link>, StoreError> {
        let call = self.inner.get_link(code);
        self.call("get_link", &self.get_link, call).await
    }

    async fn get_link_elsewhere(
        &self,
        code: &Code,
        home: Option<RegionSlot>,
    ) -> Result<Option<Link>, StoreError> {
        let call = self.inner.get_link_elsewhere(code, home);
        self.call("get_link_elsewhere", &self.get_link_elsewhere, call)
            .await
    }

    async fn update_link(
        &self,
        code: &Code,
        changes: &LinkChanges,
    ) -> Result<Option<Link>, StoreError> {
        let call = self.inner.update_link(code, changes);
        self.call("update_link", &self.update_link, call).await
    }

    async fn delete_link(
        &self,
        code: &Code,
        at: DateTime<Utc>,
    ) -> Result<Option<Link>, StoreError> {
        let call = self.inner.delete_link(code, at);
        self.call("delete_link", &self.delete_link, call).await
    }

    async fn record_clicks(&self, batch: &ClickBatch) -> Result<(), UnwrittenClicks> {
        let call = self.inner.record_clicks(batch);
        self.call("record_clicks", &self.record_clicks, call).await
    }

    async fn click_stats(&self, code: &Code, query: &StatsQuery) -> Result<ClickStats, StoreError> {
        let call = self.inner.click_stats(code, query);
        self.call("click_stats", &self.click_stats, call).await
    }

    async fn get_or_init_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        let call = self.inner.get_or_init_setting(name, value);
        self.call("get_or_init_setting", &self.get_or_init_setting, call)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let call = self.inner.ping();
        self.call("ping", &self.ping, call).await
    }

    fn maintenance(self: Arc<Self>) -> Option<BoxFuture<'static, ()>> {
        Arc::clone(&self.inner).maintenance()
    }
}
