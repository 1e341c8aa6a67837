//! Background tasks as one tree: every task a service starts is spawned on
//! its [`Tasks`], one token tells them all to stop, and shutdown waits for
//! them, so nothing outlives the service that started it.

use std::{future::Future, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The background tasks of one service (a process runs one; a test may run
/// several side by side): spawned on one tracker, stopped by one token.
#[derive(Debug, Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when the tasks must stop; long-running tasks watch it.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Spawns a task that ends by itself (or watches [`Tasks::stop_token`]);
    /// [`Tasks::shut_down`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Spawns a task that runs until it ends or the tasks are stopped,
    /// whichever comes first: for work that may be cut short.
    pub fn spawn_until_stopped<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        });
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Tells every task to stop, and waits for all of them, at most
    /// `grace`. `false` if some were still running then; they are left to
    /// the runtime, which drops them when the process ends.
    pub async fn shut_down(&self, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn shutdown_stops_long_tasks_and_waits_for_the_rest() {
        let tasks = Tasks::new();
        tasks.spawn_until_stopped(std::future::pending());
        let finished = Arc::new(AtomicBool::new(false));
        tasks.spawn({
            let (finished, stop) = (finished.clone(), tasks.stop_token().clone());
            async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.store(true, Ordering::SeqCst);
            }
        });
        assert_eq!(tasks.len(), 2);
        assert!(tasks.shut_down(Duration::from_secs(5)).await);
        assert!(finished.load(Ordering::SeqCst), "shutdown waited for it");
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn a_task_that_ignores_the_stop_is_reported() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending::<()>());
        assert!(!tasks.shut_down(Duration::from_millis(50)).await);
        assert_eq!(tasks.len(), 1);
    }
}
