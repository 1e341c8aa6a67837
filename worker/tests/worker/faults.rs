//! Exact counts through crashes, a failover within the group, and a Kafka
//! restart.

use std::{path::PathBuf, process::Command, time::Duration};

use links::clicks::ClickEvent;

use crate::helpers::{Deployment, events, one_at_a_time};

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

fn dev_stack(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/dev-stack");
    let status = Command::new(&script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "infra/dev-stack {args:?} failed: {status}"
    );
}

/// Starts Kafka again if the test fails while it is down.
struct KafkaBack;

impl Drop for KafkaBack {
    fn drop(&mut self) {
        dev_stack(&["start", "kafka"]);
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

    let back = KafkaBack;
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
