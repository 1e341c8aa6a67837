//! The click pipeline: from a redirect to the counts in the store.
//!
//! A redirect puts a [`Click`] (the raw headers, copied) in a bounded queue
//! and moves on: it never waits. When the queue is full the click is dropped
//! and counted, and the redirect is served all the same. One task drains the
//! queue, turns each click into a [`ClickEvent`] and hands it to the
//! [`ClickSink`]: in the embedded default, the [`InProcessSink`], which runs
//! the same aggregation as the analytics worker and writes the counts to the
//! store every `events.inprocess.flush_interval`; in the production tier,
//! the [`kafka::KafkaSink`], which produces each event to Kafka for the
//! worker.
//!
//! The task runs on its own thread at background priority
//! (`events.priority`): under saturation, redirects keep the CPU and
//! the queue absorbs, then drops, clicks. On shutdown the task drains what
//! is queued and flushes, so a clean stop loses no counted click.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use links::{
    Code,
    clicks::{ClickEvent, MAX_USER_AGENT, wire::TraceParent},
};
use runtime::background::Priority;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

mod inprocess;
pub mod kafka;

pub use inprocess::InProcessSink;

/// Longest `Referer` copied; only its host is kept, and hosts are short.
const MAX_REFERER: usize = 1024;
/// Longest `tracestate` carried on (the W3C limit is 32 members of 256).
const MAX_TRACESTATE: usize = 512;
/// Clicks taken off the queue at once.
const RECEIVE_BATCH: usize = 1_024;

/// A followed redirect, as captured on the hot path: headers copied, not
/// parsed (parsing happens in the pipeline task).
#[derive(Debug)]
pub struct Click {
    pub code: Code,
    pub at: DateTime<Utc>,
    pub referer: Option<Box<[u8]>>,
    pub user_agent: Option<Box<[u8]>>,
    pub country: Option<[u8; 2]>,
    /// The W3C trace context the client sent, if any.
    pub trace: Option<RawTrace>,
}

/// `traceparent` and `tracestate` as sent, parsed off the hot path.
#[derive(Debug)]
pub struct RawTrace {
    parent: Box<[u8]>,
    state: Option<Box<[u8]>>,
}

/// The trace a click belongs to, carried on with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub parent: TraceParent,
    pub state: Option<String>,
}

impl Click {
    pub fn new(
        code: Code,
        at: DateTime<Utc>,
        referer: Option<&[u8]>,
        user_agent: Option<&[u8]>,
        country: Option<&[u8]>,
    ) -> Self {
        let copy = |bytes: &[u8], max: usize| Box::from(&bytes[..bytes.len().min(max)]);
        Self {
            code,
            at,
            referer: referer.map(|r| copy(r, MAX_REFERER)),
            user_agent: user_agent.map(|ua| copy(ua, MAX_USER_AGENT)),
            country: country.and_then(|c| <[u8; 2]>::try_from(c).ok()),
            trace: None,
        }
    }

    /// With the trace context the request carried.
    pub fn with_trace(mut self, parent: Option<&[u8]>, state: Option<&[u8]>) -> Self {
        // A valid traceparent is 55 bytes; anything longer is not one.
        if let Some(parent) = parent.filter(|p| p.len() <= 64) {
            self.trace = Some(RawTrace {
                parent: Box::from(parent),
                state: state.filter(|s| s.len() <= MAX_TRACESTATE).map(Box::from),
            });
        }
        self
    }

    fn into_event(self) -> (ClickEvent, Trace) {
        let trace = self
            .trace
            .and_then(|raw| {
                Some(Trace {
                    parent: TraceParent::parse(&raw.parent)?,
                    state: raw.state.and_then(|s| String::from_utf8(s.into_vec()).ok()),
                })
            })
            // A click without a trace still gets an id to be found by.
            .unwrap_or_else(|| Trace {
                parent: TraceParent::new_root(),
                state: None,
            });
        let event = ClickEvent::from_request(
            self.code,
            self.at,
            self.referer.as_deref(),
            self.user_agent.as_deref(),
            self.country.as_ref().map(|c| c.as_slice()),
        );
        (event, trace)
    }
}

/// The sending side of the click queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClickQueue {
    sender: mpsc::Sender<Click>,
    metrics: Arc<Metrics>,
}

impl ClickQueue {
    /// Clicks waiting in the queue.
    pub fn depth(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }

    /// Queues a click, or drops and counts it if the queue is full. The
    /// click is only built when there is room for it.
    pub fn offer(&self, click: impl FnOnce() -> Click) {
        if self.sender.capacity() == 0 {
            self.metrics.clicks_dropped.inc();
            return;
        }
        match self.sender.try_send(click()) {
            Ok(()) => {
                self.metrics.clicks_enqueued.inc();
            }
            Err(_) => {
                self.metrics.clicks_dropped.inc();
            }
        }
    }
}

/// Where click events go after the queue.
#[async_trait]
pub trait ClickSink: Send + std::fmt::Debug {
    /// Takes one event, with the trace it belongs to. May write (and so
    /// take time) when its buffer is full: that is the backpressure that
    /// fills the queue.
    async fn accept(&mut self, event: ClickEvent, trace: Trace);
    /// Called every [`ClickSink::tick_interval`].
    async fn tick(&mut self);
    fn tick_interval(&self) -> Duration;
    /// Called once, after the last event: write everything still held.
    async fn close(&mut self);
}

/// The running pipeline: the queue's sending side and the draining thread.
#[derive(Debug)]
pub struct ClickPipeline {
    queue: ClickQueue,
    stop: CancellationToken,
    done: oneshot::Receiver<()>,
}

impl ClickPipeline {
    /// Starts the draining task on a thread of its own, scheduled at `priority`.
    pub fn start(
        capacity: usize,
        sink: Box<dyn ClickSink>,
        priority: Priority,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel(capacity);
        let stop = CancellationToken::new();
        let (finished, done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let task = drain(receiver, sink, stop.clone());
        std::thread::Builder::new()
            .name("click-pipeline".into())
            .spawn(move || {
                if let Err(error) = runtime::background::set_current_thread(priority) {
                    tracing::warn!(%error, "cannot lower the click pipeline's priority");
                }
                runtime.block_on(task);
                let _ = finished.send(());
            })?;
        Ok(Self {
            queue: ClickQueue { sender, metrics },
            stop,
            done,
        })
    }

    pub fn queue(&self) -> ClickQueue {
        self.queue.clone()
    }

    /// Processes every click queued so far, flushes the sink, and ends the
    /// thread. Call after the HTTP server has stopped, so nothing more arrives.
    pub async fn shut_down(self) {
        self.stop.cancel();
        if self.done.await.is_err() {
            tracing::error!("the click pipeline ended without finishing its work");
        }
    }
}

async fn drain(
    mut receiver: mpsc::Receiver<Click>,
    mut sink: Box<dyn ClickSink>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(sink.tick_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut clicks = Vec::with_capacity(RECEIVE_BATCH);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Before the queue, which is never empty under load: flushes
            // stay on schedule however busy the service is.
            _ = ticks.tick() => sink.tick().await,
            received = receiver.recv_many(&mut clicks, RECEIVE_BATCH) => {
                if received == 0 {
                    break;
                }
                for click in clicks.drain(..) {
                    let (event, trace) = click.into_event();
                    sink.accept(event, trace).await;
                }
            }
        }
    }
    receiver.close();
    while receiver.recv_many(&mut clicks, RECEIVE_BATCH).await > 0 {
        for click in clicks.drain(..) {
            let (event, trace) = click.into_event();
            sink.accept(event, trace).await;
        }
    }
    sink.close().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A click as a redirect captures it (for this module's tests and its
    /// sinks').
    pub(super) fn click(code: &str) -> Click {
        let code = Code::parse(code).expect("valid code");
        Click::new(
            code,
            Utc::now(),
            Some(b"https://t.co/x"),
            Some(b"curl/8"),
            Some(b"de"),
        )
    }

    #[test]
    fn clicks_carry_the_clients_trace_or_a_new_one() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (_, trace) = click("abcdefg")
            .with_trace(Some(sent.as_bytes()), Some(b"vendor=1"))
            .into_event();
        assert_eq!(trace.parent.as_str(), sent);
        assert_eq!(trace.state.as_deref(), Some("vendor=1"));
        let (_, fresh) = click("abcdefg")
            .with_trace(Some(b"00-garbage"), Some(b"vendor=1"))
            .into_event();
        assert_ne!(fresh.parent.as_str(), sent);
        assert_eq!(fresh.state, None);
        let (_, other) = click("abcdefg").into_event();
        assert_ne!(other.parent, fresh.parent);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let (sender, _receiver) = mpsc::channel(2);
        let queue = ClickQueue {
            sender,
            metrics: metrics.clone(),
        };
        for _ in 0..5 {
            queue.offer(|| click("abcdefg"));
        }
        assert_eq!(metrics.clicks_enqueued.get(), 2);
        assert_eq!(metrics.clicks_dropped.get(), 3);
        assert_eq!(queue.depth(), 2);
    }

    /// Records what the pipeline hands it.
    #[derive(Debug, Default, Clone)]
    struct Recording {
        events: Arc<Mutex<Vec<ClickEvent>>>,
        closed: Arc<Mutex<bool>>,
    }

    #[async_trait]
    impl ClickSink for Recording {
        async fn accept(&mut self, event: ClickEvent, _: Trace) {
            self.events.lock().expect("lock").push(event);
        }
        async fn tick(&mut self) {}
        fn tick_interval(&self) -> Duration {
            Duration::from_secs(3600)
        }
        async fn close(&mut self) {
            *self.closed.lock().expect("lock") = true;
        }
    }

    #[tokio::test]
    async fn shutting_down_delivers_every_queued_click_then_closes() {
        let sink = Recording::default();
        let metrics = Arc::new(Metrics::new());
        let pipeline = ClickPipeline::start(
            10_000,
            Box::new(sink.clone()),
            Priority::Normal,
            metrics.clone(),
        )
        .expect("start");
        let queue = pipeline.queue();
        for i in 0..5_000 {
            queue.offer(|| click(&format!("code{i}")));
        }
        pipeline.shut_down().await;
        let events = sink.events.lock().expect("lock");
        assert_eq!(events.len(), 5_000);
        assert_eq!(events[4_999].code.as_str(), "code4999");
        assert_eq!(events[0].referrer.as_deref(), Some("t.co"));
        assert_eq!(
            events[0].country.map(|c| c.as_str().to_owned()),
            Some("DE".into())
        );
        assert!(*sink.closed.lock().expect("lock"));
        assert_eq!(queue.depth(), 0);
    }
}
