//! Exact counts from a clean run, and dead letters.

use std::time::Duration;

use links::clicks::{ClickEvent, wire};
use rdkafka::{
    ClientConfig,
    consumer::{Consumer, StreamConsumer},
    message::{Headers, Message},
};
use shortener_worker::kafka::{ERROR_HEADER, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER};

use shortener_testkit::{
    deployment::{Deployment, events},
    one_at_a_time,
    stack::brokers,
};

#[tokio::test]
async fn one_hundred_thousand_events_make_exact_totals_and_buckets() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(6).await;
    let (events, truth) = events(300, 100_000);
    deployment.produce(&events).await;
    let worker = deployment.spawn_worker(0);
    let took = deployment.wait_caught_up(Duration::from_secs(180)).await;
    worker.stop().await;
    println!(
        "{} events counted in {took:?} ({:.0}/s, debug build)",
        events.len(),
        events.len() as f64 / took.as_secs_f64()
    );
    assert_eq!(truth.events(), 100_000);
    deployment.assert_exact(&truth).await;
}

/// A message a worker cannot use, and what makes it so.
fn malformed(valid: &ClickEvent, i: usize) -> (Option<Vec<u8>>, Option<&'static str>) {
    let mut wrong_code = wire::v1::Click {
        id: valid.id.as_bytes().to_vec(),
        code: "not a code!".into(),
        at_unix_ms: valid.at.timestamp_millis(),
        ..Default::default()
    };
    match i % 5 {
        0 => (Some(b"\xff\x00garbage".to_vec()), Some(wire::SCHEMA_V1)),
        1 => (Some(wire::encode(valid)), Some("shortener.clicks.v9.Click")),
        2 => (Some(wire::encode(valid)), None),
        3 => {
            use prost::Message as _;
            wrong_code.id.clear();
            (Some(wrong_code.encode_to_vec()), Some(wire::SCHEMA_V1))
        }
        _ => (None, Some(wire::SCHEMA_V1)),
    }
}

#[tokio::test]
async fn malformed_events_go_to_the_dead_letter_topic_and_valid_counts_stay_exact() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(3).await;
    let (events, truth) = events(50, 20_000);
    let mut bad = 0;
    for (i, chunk) in events.chunks(100).enumerate() {
        deployment.produce(chunk).await;
        let (value, schema) = malformed(&chunk[0], i);
        deployment
            .produce_raw(Some(chunk[0].code.as_str()), value.as_deref(), schema)
            .await;
        bad += 1;
    }
    let worker = deployment.spawn_worker(0);
    deployment.wait_caught_up(Duration::from_secs(120)).await;
    worker.stop().await;
    deployment.assert_exact(&truth).await;

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}-reader", deployment.group))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer
        .subscribe(&[&deployment.dead_letter_topic])
        .expect("subscribe");
    const KINDS: [&str; 5] = [
        "not a protobuf",
        "unknown schema",
        "no schema header",
        "invalid field",
        "no value",
    ];
    let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
    let mut offsets = std::collections::HashSet::new();
    while offsets.len() < bad {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {bad} dead letters arrived", offsets.len()))
            .expect("dead letter");
        let headers = message.headers().expect("dead letters have headers");
        let header = |name: &str| {
            headers
                .iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let reason = header(ERROR_HEADER).expect("a reason");
        let kind = KINDS
            .iter()
            .find(|k| reason.starts_with(*k))
            .unwrap_or_else(|| panic!("unexpected reason {reason:?}"));
        *reasons.entry(kind).or_default() += 1;
        assert!(
            offsets.insert((
                header(SOURCE_PARTITION_HEADER).expect("an origin"),
                header(SOURCE_OFFSET_HEADER).expect("an origin")
            )),
            "a dead letter came twice"
        );
    }
    println!("dead letters by reason: {reasons:?}");
    assert_eq!(offsets.len(), bad);
    // Every kind of damage is named, each as often as it was sent.
    for kind in KINDS {
        assert_eq!(reasons.get(kind), Some(&(bad / KINDS.len())), "{reasons:?}");
    }
}
