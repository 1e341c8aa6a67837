//! A deployment under test: a fresh keyspace and topic on the dev stack,
//! workers as real processes, events with a ground truth computed here.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone, Utc};
use links::{
    Code, LinkStore,
    clicks::{ClickEvent, Counts, Dimension, Granularity, wire},
    stats::{ClickStats, StatsQuery},
};
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    util::Timeout,
};
use stores::{
    fixtures::{DropKeyspace, scylla_test_options},
    scylla::{ClickCounts, ScyllaOptions, ScyllaStore},
};
use tokio::process::{Child, Command};

use crate::stack::brokers;

pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
pub const GOOGLEBOT: &str =
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "JP"];

/// The first hour of the test events; they span [`SPAN_HOURS`] from it.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0)
        .single()
        .expect("valid")
}
pub const SPAN_HOURS: i64 = 72;

/// What the stats must say, counted here without the worker's code.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Truth {
    pub totals: HashMap<Code, Counts>,
    pub hours: HashMap<(Code, i64), Counts>,
    pub days: HashMap<(Code, i64), Counts>,
    /// People's clicks per country, over the whole span.
    pub countries: HashMap<(Code, String), u64>,
}

impl Truth {
    pub fn add(&mut self, event: &ClickEvent, bot: bool) {
        let one = Counts {
            clicks: u64::from(!bot),
            bot_clicks: u64::from(bot),
        };
        let code = event.code.clone();
        let secs = event.at.timestamp();
        self.totals.entry(code.clone()).or_default().add(one);
        self.hours
            .entry((code.clone(), secs - secs.rem_euclid(3_600)))
            .or_default()
            .add(one);
        self.days
            .entry((code.clone(), secs - secs.rem_euclid(86_400)))
            .or_default()
            .add(one);
        if !bot {
            let country = event
                .country
                .map_or("(unknown)".into(), |c| c.as_str().into());
            *self.countries.entry((code, country)).or_default() += 1;
        }
    }

    pub fn events(&self) -> u64 {
        self.totals.values().map(|c| c.clicks + c.bot_clicks).sum()
    }
}

/// `count` events over `codes` links and [`SPAN_HOURS`] hours, about one
/// in five by a bot, with the truth they make.
pub fn events(codes: usize, count: usize) -> (Vec<ClickEvent>, Truth) {
    let codes: Vec<Code> = (0..codes)
        .map(|i| Code::parse(&format!("w{i:06}")).expect("valid code"))
        .collect();
    let mut truth = Truth::default();
    let events = (0..count)
        .map(|i| {
            let code = codes[rand::random_range(0..codes.len())].clone();
            let at = epoch() + chrono::Duration::seconds(rand::random_range(0..SPAN_HOURS * 3_600));
            let (agent, bot) = match rand::random_range(0..10) {
                0 | 1 => (GOOGLEBOT, true),
                2..=5 => (IPHONE, false),
                _ => (CHROME, false),
            };
            let referer = (i % 3 == 0).then_some(b"https://news.example.com/a".as_slice());
            let country = (i % 7 != 0).then(|| COUNTRIES[i % COUNTRIES.len()].as_bytes());
            let event =
                ClickEvent::from_request(code, at, referer, Some(agent.as_bytes()), country);
            truth.add(&event, bot);
            event
        })
        .collect();
    (events, truth)
}

/// A fresh keyspace (migrated) and clicks topic, and names for the group
/// and the dead-letter topic; dropped with the test.
pub struct Deployment {
    pub options: ScyllaOptions,
    pub store: Arc<ScyllaStore>,
    pub topic: String,
    pub group: String,
    pub dead_letter_topic: String,
    pub partitions: i32,
    pub logs: tempfile::TempDir,
    producer: FutureProducer,
    _keyspace: DropKeyspace,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("keyspace", &self.options.keyspace)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Deployment {
    pub async fn new(partitions: i32) -> Self {
        let mut options = scylla_test_options();
        options.click_counts = ClickCounts::Ledger;
        stores::scylla::migrate(&options).await.unwrap_or_else(|e| {
            panic!(
                "no Scylla-compatible cluster at {:?} ({e}); start one with `infra/dev-stack up`",
                options.nodes
            )
        });
        let keyspace = DropKeyspace(options.keyspace.clone());
        let store = ScyllaStore::connect(options.clone())
            .await
            .expect("connect to the migrated keyspace");
        let id = format!("{:012x}", rand::random::<u64>() >> 16);
        let topic = format!("test.clicks.{id}");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin client");
        let created = admin
            .create_topics(
                [&NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Kafka at {} ({e}); start it with `infra/dev-stack up`",
                    brokers()
                )
            });
        assert!(created.iter().all(Result::is_ok), "{created:?}");
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self {
            options,
            store,
            group: format!("test-worker-{id}"),
            dead_letter_topic: format!("{topic}.dead-letter"),
            topic,
            partitions,
            logs: tempfile::Builder::new()
                .prefix("worker-logs-")
                .disable_cleanup(std::env::var_os("SHORTENER_TEST_KEEP_LOGS").is_some())
                .tempdir()
                .expect("temporary directory"),
            producer,
            _keyspace: keyspace,
        }
    }

    /// The worker's configuration, as its environment.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        let o = &self.options;
        let (dc, replicas) = &o.replication[0];
        [
            ("STORAGE__SCYLLA__NODES", o.nodes.join(",")),
            ("STORAGE__SCYLLA__LOCAL_DC", o.local_dc.clone()),
            ("STORAGE__SCYLLA__KEYSPACE", o.keyspace.clone()),
            ("STORAGE__SCYLLA__REPLICATION", format!("{dc}:{replicas}")),
            ("STORAGE__SCYLLA__REQUEST_TIMEOUT", "10s".into()),
            ("EVENTS__KAFKA__BROKERS", brokers()),
            ("EVENTS__KAFKA__TOPIC", self.topic.clone()),
            ("WORKER__GROUP", self.group.clone()),
            ("WORKER__DEAD_LETTER_TOPIC", self.dead_letter_topic.clone()),
            ("WORKER__FLUSH_INTERVAL", "250ms".into()),
            ("WORKER__SESSION_TIMEOUT", "3s".into()),
            ("WORKER__MAX_POLL_INTERVAL", "60s".into()),
            // Several workers run at once: each serves /metrics on a port
            // of its own.
            ("WORKER__METRICS_LISTEN", "127.0.0.1:0".into()),
            ("LOG__LEVEL", "info,shortener_worker=debug".into()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SHORTENER__{k}"), v))
        .collect()
    }

    /// Starts a worker process; its log goes to `logs/worker-N.log`.
    pub fn spawn_worker(&self, n: usize) -> WorkerProcess {
        self.spawn_worker_with(n, &[])
    }

    /// A worker with some settings changed (`("WORKER__X", "v")`).
    pub fn spawn_worker_with(&self, n: usize, changes: &[(&str, &str)]) -> WorkerProcess {
        let log = self.logs.path().join(format!("worker-{n}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let changes = changes
            .iter()
            .map(|(k, v)| (format!("SHORTENER__{k}"), v.to_string()));
        let child = Command::new(crate::binary("shortener-worker"))
            .envs(self.worker_env())
            .envs(changes)
            .env("SHORTENER_CONFIG_DIR", self.logs.path().join("no-config"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("start shortener-worker");
        WorkerProcess { child, log }
    }

    /// Produces events as the API does: protobuf value, schema header, the
    /// code as key.
    pub async fn produce(&self, events: &[ClickEvent]) {
        for chunk in events.chunks(5_000) {
            let sends = chunk.iter().map(|event| {
                let value = wire::encode(event);
                let code = event.code.as_str().to_owned();
                async move {
                    self.produce_raw(Some(&code), Some(&value), Some(wire::SCHEMA_V1))
                        .await
                }
            });
            futures_util::future::join_all(sends).await;
        }
    }

    /// Produces one message of any shape.
    pub async fn produce_raw(&self, key: Option<&str>, value: Option<&[u8]>, schema: Option<&str>) {
        let mut headers = OwnedHeaders::new();
        if let Some(schema) = schema {
            headers = headers.insert(Header {
                key: wire::SCHEMA_HEADER,
                value: Some(schema),
            });
        }
        let mut record: FutureRecord<'_, str, [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| e)
            .expect("produce to the test topic");
    }

    /// Events not yet committed by the group, over all partitions.
    pub async fn lag(&self) -> i64 {
        let (topic, group, partitions) = (self.topic.clone(), self.group.clone(), self.partitions);
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", brokers())
                .set("group.id", &group)
                .create()
                .expect("consumer");
            let mut list = TopicPartitionList::new();
            for p in 0..partitions {
                list.add_partition(&topic, p);
            }
            let committed = consumer
                .committed_offsets(list, Duration::from_secs(10))
                .expect("committed offsets");
            (0..partitions)
                .map(|p| {
                    let (_, high) = consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .expect("watermarks");
                    let done = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(n)) => n,
                        _ => 0,
                    };
                    high - done
                })
                .sum()
        })
        .await
        .expect("lag task")
    }

    /// Waits until the group has committed every event; panics after
    /// `limit`, with the workers' logs.
    pub async fn wait_caught_up(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let lag = self.lag().await;
            if lag == 0 {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "the group still lags {lag} events after {limit:?}\n{}",
                self.worker_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lines of all workers' logs that contain every one of `words`.
    pub fn log_lines_with(&self, words: &[&str]) -> usize {
        std::fs::read_dir(self.logs.path())
            .expect("logs")
            .flatten()
            .map(|entry| {
                std::fs::read_to_string(entry.path())
                    .unwrap_or_default()
                    .lines()
                    .filter(|line| words.iter().all(|w| line.contains(w)))
                    .count()
            })
            .sum()
    }

    pub fn worker_logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.logs.path()).expect("logs").flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("--- {}\n", entry.path().display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The stats of a link over the test span, as the stats API reads them.
    pub async fn stats(&self, code: &Code, granularity: Granularity) -> ClickStats {
        let query = StatsQuery {
            from: epoch(),
            to: epoch() + chrono::Duration::hours(SPAN_HOURS),
            granularity,
            top: 100,
        };
        self.store
            .click_stats(code, &query)
            .await
            .expect("read stats")
    }

    /// Asserts that the stored counts are exactly the truth: totals, every
    /// hour, every day, and the country tops.
    pub async fn assert_exact(&self, truth: &Truth) {
        let mut checked = 0;
        for (code, totals) in &truth.totals {
            let hourly = self.stats(code, Granularity::Hour).await;
            assert_eq!(hourly.totals, *totals, "totals of {code}");
            for point in &hourly.series {
                let want = truth
                    .hours
                    .get(&(code.clone(), point.start.timestamp()))
                    .copied()
                    .unwrap_or_default();
                assert_eq!(point.counts, want, "hour {} of {code}", point.start);
            }
            let daily = self.stats(code, Granularity::Day).await;
            for point in &daily.series {
                let want = truth
                    .days
                    .get(&(code.clone(), point.start.timestamp()))
                    .copied()
                    .unwrap_or_default();
                assert_eq!(point.counts, want, "day {} of {code}", point.start);
            }
            for entry in &daily.tops[&Dimension::Country] {
                let want = truth
                    .countries
                    .get(&(code.clone(), entry.value.clone()))
                    .copied()
                    .unwrap_or_default();
                assert_eq!(entry.clicks, want, "country {} of {code}", entry.value);
            }
            let countries: u64 = daily.tops[&Dimension::Country]
                .iter()
                .map(|e| e.clicks)
                .sum();
            assert_eq!(countries, totals.clicks, "country tops of {code}");
            checked += 1;
        }
        assert_eq!(checked, truth.totals.len());
    }
}

/// A worker process, killed if the test drops it running.
#[derive(Debug)]
pub struct WorkerProcess {
    child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// SIGKILL: no flush, no commit, no goodbye to the group.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill the worker");
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running") as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the worker");
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the worker stops within a minute")
            .expect("wait for the worker");
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "worker exited with {status}\n{log}");
    }
}
