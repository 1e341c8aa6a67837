//! The worker benchmark's helpers:
//!
//! - `produce`: click events on a topic as the API writes them, a few
//!   links getting most clicks, as links do;
//! - `consume`: the baseline, a bare group consumer that decodes every event
//!   and commits, nothing else;
//! - `caught-up`: how fast a group's committed offsets reach the end of the
//!   topic (events/s between its first commit and zero lag);
//! - `visible`: redirects at a steady rate through an API, and how long
//!   each click takes to show in its stats API (p50/p99).

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use links::{
    Code,
    clicks::{ClickEvent, wire},
};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer},
    message::{Header, Headers, Message, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};

const USAGE: &str = "usage:
  click-stream produce   BROKERS TOPIC PARTITIONS EVENTS LINKS
  click-stream consume   BROKERS TOPIC GROUP EVENTS
  click-stream caught-up BROKERS TOPIC GROUP PARTITIONS
  click-stream visible   API_URL RATE SECONDS LINKS";

const AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: [Option<&str>; 4] = [
    None,
    Some("https://t.co/x"),
    Some("https://www.google.com/"),
    Some("https://news.ycombinator.com/item"),
];
const COUNTRIES: [&str; 5] = ["US", "DE", "FR", "JP", "BR"];

/// A link index skewed towards the first ones: the cube of a uniform draw.
fn skewed(links: usize) -> usize {
    let u: f64 = rand::random();
    ((u * u * u) * links as f64) as usize % links
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> anyhow::Result<T> {
    args.get(i)
        .with_context(|| USAGE.to_owned())?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad argument {}\n{USAGE}", i + 1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("produce") => {
            produce(
                &args[1],
                &args[2],
                arg(&args, 3)?,
                arg(&args, 4)?,
                arg(&args, 5)?,
            )
            .await
        }
        Some("consume") => consume(&args[1], &args[2], &args[3], arg(&args, 4)?).await,
        Some("caught-up") => caught_up(&args[1], &args[2], &args[3], arg(&args, 4)?).await,
        Some("visible") => visible(&args[1], arg(&args, 2)?, arg(&args, 3)?, arg(&args, 4)?).await,
        _ => bail!("{USAGE}"),
    }
}

async fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    events: usize,
    links: usize,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let codes: Vec<Code> = (0..links)
        .map(|i| Code::parse(&format!("b{i:06}")).expect("valid code"))
        .collect();
    let started = Instant::now();
    for chunk in 0..events.div_ceil(50_000) {
        let sends = (chunk * 50_000..((chunk + 1) * 50_000).min(events)).map(|i| {
            let event = ClickEvent::from_request(
                codes[skewed(links)].clone(),
                chrono::Utc::now(),
                REFERRERS[i % REFERRERS.len()].map(str::as_bytes),
                Some(AGENTS[i % AGENTS.len()].as_bytes()),
                Some(COUNTRIES[i % COUNTRIES.len()].as_bytes()),
            );
            let value = wire::encode(&event);
            let producer = &producer;
            async move {
                let record = FutureRecord::to(topic)
                    .key(event.code.as_str())
                    .payload(&value)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: wire::SCHEMA_HEADER,
                        value: Some(wire::SCHEMA_V1),
                    }));
                producer
                    .send(record, Timeout::Never)
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for result in futures_util::future::join_all(sends).await {
            result?;
        }
    }
    println!(
        "produced={events} seconds={:.1}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn consume(brokers: &str, topic: &str, group: &str, events: u64) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let (mut decoded, mut failed) = (0u64, 0u64);
    let mut last_commit = Instant::now();
    while decoded + failed < events {
        let message = consumer.recv().await?;
        let schema = message
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == wire::SCHEMA_HEADER))
            .and_then(|h| h.value);
        match wire::decode(schema, message.payload().unwrap_or_default()) {
            Ok(event) => {
                std::hint::black_box(event);
                decoded += 1;
            }
            Err(_) => failed += 1,
        }
        if last_commit.elapsed() > Duration::from_millis(250) {
            consumer.commit_consumer_state(CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    println!("decoded={decoded} failed={failed}");
    Ok(())
}

fn committed_and_end(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(i64, i64)> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10))?;
    let (mut done, mut end) = (0, 0);
    for p in 0..partitions {
        end += consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))?
            .1;
        if let Some(Offset::Offset(n)) = committed.find_partition(topic, p).map(|e| e.offset()) {
            done += n;
        }
    }
    Ok((done, end))
}

async fn caught_up(brokers: &str, topic: &str, group: &str, partitions: i32) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let (done, end) = committed_and_end(&consumer, topic, partitions)?;
        let now = Instant::now();
        match first {
            None if done > 0 => first = Some((now, done)),
            Some((at, from)) if done >= end => {
                let seconds = now.duration_since(at).as_secs_f64();
                println!(
                    "events={} seconds={seconds:.2} events_per_second={:.0}",
                    done - from,
                    (done - from) as f64 / seconds
                );
                return Ok(());
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks of a link, people and bots, as the stats API says.
async fn clicks(client: &reqwest::Client, api: &str, code: &str) -> anyhow::Result<u64> {
    let body: serde_json::Value = client
        .get(format!("{api}/api/v1/links/{code}/stats?granularity=hour"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(body["total_clicks"].as_u64().unwrap_or(0) + body["bot_clicks"].as_u64().unwrap_or(0))
}

async fn visible(api: &str, rate: u64, seconds: u64, links: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()?;
    let mut codes = Vec::new();
    for i in 0..links {
        let created: serde_json::Value = client
            .post(format!("{api}/api/v1/links"))
            .json(&serde_json::json!({ "url": format!("https://example.com/{i}") }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        codes.push(created["code"].as_str().context("code")?.to_owned());
    }
    // Per link, when each of its redirects was answered, oldest first.
    let answered: Arc<Vec<Mutex<VecDeque<Instant>>>> =
        Arc::new((0..links).map(|_| Mutex::new(VecDeque::new())).collect());
    let run = Duration::from_secs(seconds);
    let load = {
        let (client, api, codes, answered) = (
            client.clone(),
            api.to_owned(),
            codes.clone(),
            answered.clone(),
        );
        tokio::spawn(async move {
            let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
            let started = Instant::now();
            let (mut sent, mut late) = (0u64, 0u64);
            while started.elapsed() < run {
                tick.tick().await;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    late += 1;
                    continue;
                };
                let link = sent as usize % codes.len();
                let url = format!("{api}/{}", codes[link]);
                let (client, answered) = (client.clone(), answered.clone());
                tokio::spawn(async move {
                    if let Ok(r) = client.get(url).header("user-agent", AGENTS[0]).send().await
                        && r.status() == reqwest::StatusCode::FOUND
                    {
                        answered[link]
                            .lock()
                            .expect("lock")
                            .push_back(Instant::now());
                    }
                    drop(permit);
                });
                sent += 1;
            }
            (sent, late)
        })
    };
    // Every 50 ms, what each link's stats show; newly visible clicks are
    // the oldest answered ones not yet seen.
    let mut seen = vec![0u64; links];
    let mut lags: Vec<f64> = Vec::new();
    let ends = Instant::now() + run + Duration::from_secs(10);
    while Instant::now() < ends {
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (link, code) in codes.iter().enumerate() {
            let now_visible = clicks(&client, api, code).await?;
            let now = Instant::now();
            let mut queue = answered[link].lock().expect("lock");
            while seen[link] < now_visible {
                let Some(at) = queue.pop_front() else { break };
                lags.push(now.duration_since(at).as_secs_f64() * 1000.0);
                seen[link] += 1;
            }
        }
    }
    let (sent, late) = load.await?;
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)];
    let unseen: usize = answered.iter().map(|q| q.lock().expect("lock").len()).sum();
    println!(
        "sent={sent} late={late} seen={} unseen={unseen} lag_p50_ms={:.0} lag_p99_ms={:.0} lag_max_ms={:.0}",
        lags.len(),
        pct(0.5),
        pct(0.99),
        lags.last().copied().unwrap_or(0.0)
    );
    Ok(())
}
