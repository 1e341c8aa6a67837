//! Exact counts through crashes, a failover within the group, a Kafka
//! restart and a frozen ScyllaDB.

use std::time::Duration;

use links::clicks::ClickEvent;

use shortener_testkit::{
    deployment::{Deployment, events},
    one_at_a_time,
    stack::dev_stack,
};

/// Produces events in steady slices over about `over`, so that what a
/// test does meanwhile happens mid-stream.
async fn produce_paced(deployment: &Deployment, events: &[ClickEvent], over: Duration) {
    let slices = 20;
    let pause = over / slices;
    for slice in events.chunks(events.len().div_ceil(slices as usize)) {
        deployment.produce(slice).await;
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn a_worker_killed_five_times_mid_run_still_counts_exactly() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(6).await;
    let (events, truth) = events(300, 100_000);
    let producing = produce_paced(&deployment, &events, Duration::from_secs(8));
    let killing = async {
        for n in 0..5 {
            let worker = deployment.spawn_worker(n);
            // Long enough to have joined and written something, sometimes.
            let moment = Duration::from_millis(rand::random_range(1_500..5_000));
            tokio::time::sleep(moment).await;
            println!(
                "SIGKILL {n} after {moment:?}; lag {}",
                deployment.lag().await
            );
            worker.kill().await;
        }
    };
    tokio::join!(producing, killing);
    let worker = deployment.spawn_worker(5);
    deployment.wait_caught_up(Duration::from_secs(180)).await;
    worker.stop().await;
    // Claims that found a write that may have been cut short (pending
    // past committed): the case the ledger's progress row is there for.
    let replays = deployment.log_lines_with(&["claimed a partition", "replay=true"]);
    println!("claims that found a write maybe cut short: {replays}");
    assert_eq!(
        deployment.log_lines_with(&["ERROR"]),
        0,
        "{}",
        deployment.worker_logs()
    );
    deployment.assert_exact(&truth).await;
}

#[tokio::test]
async fn two_workers_share_the_partitions_and_one_dying_loses_and_doubles_nothing() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(6).await;
    let (events, truth) = events(300, 100_000);
    let first = deployment.spawn_worker(0);
    let second = deployment.spawn_worker(1);
    let producing = produce_paced(&deployment, &events, Duration::from_secs(8));
    let killing = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        println!("SIGKILL one of two; lag {}", deployment.lag().await);
        second.kill().await;
    };
    tokio::join!(producing, killing);
    deployment.wait_caught_up(Duration::from_secs(180)).await;
    first.stop().await;
    // The survivor took over partitions the other had.
    let survivor =
        std::fs::read_to_string(deployment.logs.path().join("worker-0.log")).unwrap_or_default();
    let claims = survivor.matches("claimed a partition").count();
    println!("the survivor claimed {claims} partitions");
    assert!(
        claims > 3,
        "the survivor never took the other's partitions:\n{survivor}"
    );
    deployment.assert_exact(&truth).await;
}

/// Brings a server back when dropped, also if the test fails while it is
/// down: `infra/dev-stack start kafka` or `resume cassandra`.
struct Back(&'static str, &'static str);

impl Drop for Back {
    fn drop(&mut self) {
        dev_stack(&[self.0, self.1]);
    }
}

#[tokio::test]
async fn after_a_kafka_restart_the_worker_catches_up_by_itself() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(3).await;
    let (events, truth) = events(100, 40_000);
    let (before, after) = events.split_at(20_000);
    let worker = deployment.spawn_worker(0);
    deployment.produce(before).await;
    deployment.wait_caught_up(Duration::from_secs(120)).await;

    let back = Back("start", "kafka");
    tokio::task::spawn_blocking(|| dev_stack(&["stop", "kafka"]))
        .await
        .expect("stop kafka");
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(back);

    deployment.produce(after).await;
    let took = deployment.wait_caught_up(Duration::from_secs(120)).await;
    println!("caught up {took:?} after Kafka came back");
    worker.stop().await;
    deployment.assert_exact(&truth).await;
}

#[tokio::test]
async fn with_scylla_frozen_the_worker_waits_in_bounded_memory_then_counts_exactly() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(3).await;
    let (events, truth) = events(100, 150_000);
    let (before, during) = events.split_at(10_000);
    let worker = deployment.spawn_worker_with(
        0,
        &[
            ("WORKER__PREFETCH_KBYTES", "2048"),
            ("STORAGE__SCYLLA__REQUEST_TIMEOUT", "2s"),
            ("WORKER__MAX_BACKOFF", "1s"),
        ],
    );
    deployment.produce(before).await;
    deployment.wait_caught_up(Duration::from_secs(120)).await;
    let rss_before = worker.rss();

    let back = Back("resume", "cassandra");
    tokio::task::spawn_blocking(|| dev_stack(&["pause", "cassandra"]))
        .await
        .expect("pause cassandra");
    let lag_frozen_from = deployment.lag().await;
    deployment.produce(during).await;
    let mut rss_max = rss_before;
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(worker.rss());
    }
    let lag_frozen = deployment.lag().await;
    drop(back);

    let took = deployment.wait_caught_up(Duration::from_secs(180)).await;
    worker.stop().await;
    let grew = rss_max.saturating_sub(rss_before);
    println!(
        "ScyllaDB frozen: lag {lag_frozen_from} -> {lag_frozen}, memory {} MiB -> at most {} \
         MiB (+{} MiB) with {} events waiting; caught up {took:?} after",
        rss_before >> 20,
        rss_max >> 20,
        grew >> 20,
        during.len()
    );
    // Nothing was committed while writes could not be made...
    assert!(lag_frozen >= during.len() as i64, "lag {lag_frozen}");
    // ...and the worker did not read the waiting events into memory (they
    // are some 30 MiB, more with the client's bookkeeping).
    assert!(grew < 24 << 20, "memory grew by {} MiB", grew >> 20);
    assert!(
        deployment.log_lines_with(&["call failed; retrying"]) > 0,
        "no write was retried:\n{}",
        deployment.worker_logs()
    );
    deployment.assert_exact(&truth).await;
}
