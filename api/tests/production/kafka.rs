//! Click events to Kafka: the wire format, and Kafka stopped under load.

use std::{collections::HashMap, time::Duration};

use links::clicks::wire::{self, SCHEMA_HEADER, TRACEPARENT};
use rdkafka::{
    ClientConfig, Message,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};
use reqwest::StatusCode;
use shortener_testkit::stack::brokers;

use crate::{
    helpers::{TestApp, spawn_production_app},
    outage::{Kind, Load, Outage, eventually, one_at_a_time},
};

const PRODUCED: &str = "shortener_clicks_produced_total";
const DROPPED: &str = "shortener_clicks_dropped_total";
const BUFFERED: &str = "shortener_kafka_buffered_events";

/// A message as consumed: key, schema header, traceparent header, value.
type Consumed = (String, Option<Vec<u8>>, Option<String>, Vec<u8>);

/// Every message of `topic`, read from the start until `expected` arrived
/// and a further second brought nothing more.
fn consume_all(topic: &str, expected: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("test-{}", rand::random::<u64>()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = None;
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(message) => {
                let message = message.expect("consume");
                let header = |name: &str| {
                    message.headers().and_then(|headers| {
                        headers
                            .iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value.map(<[u8]>::to_vec))
                    })
                };
                messages.push((
                    String::from_utf8(message.key().expect("key").to_vec()).expect("UTF-8 key"),
                    header(SCHEMA_HEADER),
                    header(TRACEPARENT).map(|v| String::from_utf8(v).expect("UTF-8")),
                    message.payload().expect("value").to_vec(),
                ));
                quiet_since = None;
            }
            None if messages.len() >= expected => {
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
            }
            None => {}
        }
    }
    messages
}

fn kafka_app_settings(topic: String) -> impl FnOnce(&mut shortener_api::config::Settings) {
    move |s| {
        s.events.backend = shortener_api::config::EventBackend::Kafka;
        s.events.kafka.brokers = brokers();
        s.events.kafka.topic = topic;
        s.events.kafka.partitions = 3;
        // Small enough that an outage of seconds under load fills it.
        s.events.kafka.max_buffered = std::num::NonZeroU32::new(5_000).expect("not zero");
    }
}

async fn create_links(app: &TestApp, n: usize) -> Vec<String> {
    let mut codes = Vec::new();
    for i in 0..n {
        codes.push(app.shorten(&format!("https://example.com/k/{i}")).await.0);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_events_reach_kafka_with_their_schema_and_trace() {
    let _serial = one_at_a_time().await;
    let topic = format!("test-clicks-{:x}", rand::random::<u64>());
    let app = spawn_production_app(kafka_app_settings(topic.clone())).await;
    let codes = create_links(&app, 5).await;
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut sent: HashMap<String, usize> = HashMap::new();
    for (i, code) in codes.iter().cycle().take(50).enumerate() {
        let mut request = app.client.get(app.url(&format!("/{code}")));
        if i % 2 == 0 {
            request = request.header("traceparent", traced);
        }
        let response = request.send().await.expect("GET");
        assert_eq!(response.status(), StatusCode::FOUND);
        *sent.entry(code.clone()).or_default() += 1;
    }
    // HEAD is not a click.
    app.head(&format!("/{}", codes[0])).await;
    eventually(
        Duration::from_secs(10),
        "50 events acknowledged",
        || async { app.metric(PRODUCED).await == 50.0 },
    )
    .await;

    let messages = tokio::task::spawn_blocking(move || consume_all(&topic, 50))
        .await
        .expect("consumer task");
    assert_eq!(messages.len(), 50);
    let mut received: HashMap<String, usize> = HashMap::new();
    let mut with_client_trace = 0;
    for (key, schema, traceparent, value) in &messages {
        let event = wire::decode(schema.as_deref(), value).expect("a valid v1 event");
        assert_eq!(&event.code.to_string(), key, "the key is the code");
        let traceparent = traceparent
            .as_deref()
            .expect("every event has a traceparent");
        assert!(wire::TraceParent::parse(traceparent.as_bytes()).is_some());
        if traceparent == traced {
            with_client_trace += 1;
        }
        *received.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(received, sent);
    assert_eq!(
        with_client_trace, 25,
        "the client's trace context is carried on"
    );
    assert_eq!(app.metric(DROPPED).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_down_redirects_go_on_and_every_lost_event_is_counted() {
    let _serial = one_at_a_time().await;
    let topic = format!("test-clicks-{:x}", rand::random::<u64>());
    let app = spawn_production_app(kafka_app_settings(topic.clone())).await;
    let codes = create_links(&app, 20).await;

    let load = Load::start(&app, &codes, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = load.finish().await;

    // Shorter than the delivery timeout: what the producer buffered is
    // delivered when Kafka is back (retries deduplicated by the idempotent
    // producer); what did not fit in the buffer is dropped and counted.
    let outage = Outage::begin("kafka", Kind::Stopped).await;
    let load = Load::start(&app, &codes, 4);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = load.finish().await;
    outage.end().await;

    let produced_before = app.metric(PRODUCED).await;
    let load = Load::start(&app, &codes, 4);
    eventually(Duration::from_secs(30), "events flow again", || async {
        app.metric(PRODUCED).await > produced_before + 100.0
    })
    .await;
    let after = load.finish().await;
    let clicks = (up.len() + down.len() + after.len()) as f64;
    // Once the click queue and the producer's buffer have drained, every
    // click is accounted for: acknowledged, or counted as dropped.
    eventually(
        Duration::from_secs(30),
        "every click accounted for",
        || async { app.metric(PRODUCED).await + app.metric(DROPPED).await == clicks },
    )
    .await;
    eventually(Duration::from_secs(5), "the buffer gauge at 0", || async {
        app.metric(BUFFERED).await == 0.0
    })
    .await;

    for (phase, samples) in [("up", &up), ("down", &down), ("after", &after)] {
        let failed = samples.iter().filter(|s| !s.ok).count();
        assert_eq!(failed, 0, "{failed} redirects failed with Kafka {phase}");
    }
    let rate =
        |s: &[crate::outage::Sample]| s.len() as f64 / (s[s.len() - 1].at - s[0].at).as_secs_f64();
    eprintln!(
        "redirects/s with Kafka up {:.0}, down {:.0} (ratio {:.2})",
        rate(&up),
        rate(&down),
        rate(&down) / rate(&up)
    );

    let produced = app.metric(PRODUCED).await;
    let dropped = app.metric(DROPPED).await;
    assert!(dropped > 0.0, "an outage this long overflows the buffer");
    let messages = tokio::task::spawn_blocking(move || consume_all(&topic, produced as usize))
        .await
        .expect("consumer task");
    assert_eq!(
        messages.len() as f64,
        produced,
        "the topic holds exactly the events counted as produced"
    );
    eprintln!("{clicks} clicks: {produced} produced, {dropped} dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_delivers_every_buffered_event() {
    let _serial = one_at_a_time().await;
    let topic = format!("test-clicks-{:x}", rand::random::<u64>());
    let app = spawn_production_app(kafka_app_settings(topic.clone())).await;
    let codes = create_links(&app, 10).await;
    for code in &codes {
        app.get(&format!("/{code}")).await;
    }
    eventually(
        Duration::from_secs(10),
        "the producer is connected",
        || async { app.metric(PRODUCED).await == 10.0 },
    )
    .await;

    // A frozen broker: events pile up in the producer's buffer.
    let outage = Outage::begin("kafka", Kind::Frozen).await;
    for code in codes.iter().cycle().take(500) {
        let response = app.get(&format!("/{code}")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
    }
    eventually(Duration::from_secs(5), "500 events buffered", || async {
        app.metric(BUFFERED).await == 500.0
    })
    .await;
    // Stop while they are buffered; the broker thaws during the flush.
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!stopping.is_finished(), "the stop waits for the flush");
    outage.end().await;
    stopping.await.expect("stopped");

    let messages = tokio::task::spawn_blocking(move || consume_all(&topic, 510))
        .await
        .expect("consumer task");
    assert_eq!(messages.len(), 510);
}
