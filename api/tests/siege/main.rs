//! Slow clients by the thousand, against the real binary. A test target of
//! its own, so that nothing else runs on the machine meanwhile: it opens
//! 10,000 connections, and its timings are about the service, not its
//! neighbours.

#[path = "../api/helpers.rs"]
#[expect(dead_code, reason = "shared with the API suite; each suite uses part")]
mod helpers;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::{io::AsyncWriteExt, net::TcpStream, task::JoinSet};

use crate::helpers::{ApiProcess, Tier, read_until_closed};

/// Raises this test process's open-file limit, for thousands of sockets.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

/// Opens `count` connections that each send a head and part of a body, and
/// then nothing. Returns the tasks, each ending with what the server sent
/// before closing.
async fn slow_bodies(addr: &str, count: usize, give_up: Duration) -> JoinSet<String> {
    let mut tasks = JoinSet::new();
    let mut opened = 0;
    while opened < count {
        let batch = (count - opened).min(250);
        let mut connecting = JoinSet::new();
        for _ in 0..batch {
            let addr = addr.to_owned();
            connecting.spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.expect("connect");
                stream
                    .write_all(b"POST /api/v1/links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"url\":\"https://exa")
                    .await
                    .expect("write");
                stream
            });
        }
        while let Some(stream) = connecting.join_next().await {
            let mut stream = stream.expect("connecting");
            tasks.spawn(async move { read_until_closed(&mut stream, give_up).await });
        }
        opened += batch;
    }
    tasks
}

/// The acceptance test of slow clients, against the real binary: 5,000
/// connections that send part of a body and then nothing. Other clients
/// are served meanwhile; each slow one is answered 408 and closed at the
/// body deadline; and with 5,000 more open, SIGTERM stops the process
/// within the shutdown grace of bodies (1 s, and the time to answer them),
/// far from the shutdown timeout (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slow_bodies_neither_stop_service_nor_shutdown() {
    const SLOW: usize = 5000;
    const BODY_DEADLINE: Duration = Duration::from_secs(4);
    let limit = raise_fd_limit();
    assert!(
        limit >= 3 * SLOW as u64,
        "the open-file limit {limit} is too low for this test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = Tier::new(dir.path());
    let api = ApiProcess::start(
        dir.path(),
        &tier,
        &[
            ("SHORTENER__HTTP__CLIENT_BODY_TIMEOUT", "4s"),
            ("SHORTENER__HTTP__SHUTDOWN_TIMEOUT", "60s"),
        ],
    )
    .await;
    let addr = api.socket_addr();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let created: serde_json::Value = client
        .post(format!("{}/api/v1/links", api.address))
        .json(&json!({ "url": "https://example.com/under-siege" }))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let code = created["code"].as_str().expect("code").to_owned();

    let started = Instant::now();
    let mut slow = slow_bodies(&addr, SLOW, BODY_DEADLINE + Duration::from_secs(60)).await;
    let opened_in = started.elapsed();

    // Other clients, while all of them are open.
    let mut latencies = Vec::new();
    for i in 0..400 {
        let path = if i % 2 == 0 {
            "/healthz".to_owned()
        } else {
            format!("/{code}")
        };
        let sent = Instant::now();
        let response = client
            .get(format!("{}{path}", api.address))
            .send()
            .await
            .expect("served while under siege");
        assert!(
            matches!(response.status(), StatusCode::OK | StatusCode::FOUND),
            "{path}: {}",
            response.status()
        );
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "{SLOW} slow bodies opened in {opened_in:?}; other clients meanwhile: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies.last().expect("latencies")
    );
    assert!(
        p99 < BODY_DEADLINE,
        "other clients waited for the slow ones: p99 {p99:?}"
    );

    // Each slow one is answered 408 and closed at the deadline.
    let mut answered = 0;
    while let Some(answer) = slow.join_next().await {
        let answer = answer.expect("a slow client");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        answered += 1;
    }
    let all_closed_in = started.elapsed();
    println!("all {answered} closed {all_closed_in:?} after the first opened");
    assert_eq!(answered, SLOW);
    assert!(all_closed_in >= BODY_DEADLINE);

    // Malformed requests are the clients' faults: nothing at ERROR.
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        read_until_closed(&mut stream, Duration::from_secs(10)).await;
    }

    let errors = api.logged_at("ERROR");
    assert!(errors.is_empty(), "logged at ERROR: {errors:?}");

    // 5,000 more, then SIGTERM: the stop does not wait for them.
    let mut slow = slow_bodies(&addr, SLOW, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = api.terminate(Duration::from_secs(60)).await;
    println!("stopped {took:?} after SIGTERM with {SLOW} slow bodies open");
    // Half the shutdown timeout: a stop that waited for the uploads would
    // take all of it. (Idle, it takes about 2.5 s in a debug build.)
    assert!(
        took < Duration::from_secs(30),
        "the stop waited {took:?} for stalled uploads"
    );
    let mut cut = 0;
    while let Some(answer) = slow.join_next().await {
        let answer = answer.expect("a slow client");
        // Answered 408, or closed unanswered if the stop came before the
        // server took the connection.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        cut += usize::from(!answer.is_empty());
    }
    println!("{cut} of {SLOW} answered 408 as the service stopped");
}
