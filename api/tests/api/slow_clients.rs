//! Clients that are slow on purpose: every phase of a request has a
//! deadline, and a graceful stop does not wait for a stalled upload. (The
//! same by the thousand, against the real binary: `tests/siege`.)

use std::{
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{read_until_closed, spawn_app_with};

const SHORT: Duration = Duration::from_millis(600);

#[tokio::test]
async fn slow_bodies_are_answered_408_and_closed() {
    let app = spawn_app_with(|s| s.http.client_body_timeout = SHORT).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    for head in [
        // A JSON body that stops halfway.
        "POST /api/v1/links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"url\":",
        // A chunked body on a request that takes none, never finished.
        "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        "DELETE /api/v1/links/abcdefg HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
    ] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let started = Instant::now();
        stream.write_all(head.as_bytes()).await.expect("write");
        let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{head:?}: {answer}");
        assert!(answer.contains("request-timeout"), "{answer}");
        assert!(
            started.elapsed() >= SHORT,
            "answered before the deadline: {:?}",
            started.elapsed()
        );
    }
    // A body declared too large is refused at once, and closed too.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"POST /api/v1/links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{")
        .await
        .expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(
        app.metric(r#"shortener_http_timeouts_total{phase="body"}"#)
            .await,
        3.0
    );
}

#[tokio::test]
async fn every_request_head_on_a_connection_is_timed() {
    let app = spawn_app_with(|s| {
        s.http.client_request_timeout = SHORT;
        s.http.keep_alive = Duration::from_secs(60);
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // A first request, whole, and its answer: the connection stays open.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Then a second head, one header line at a time, each well within the
    // deadline, never finished.
    let started = Instant::now();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("write");
    let trickle = async {
        for _ in 0..40 {
            tokio::time::sleep(SHORT / 4).await;
            if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
        }
    };
    trickle.await;
    let closed_after = started.elapsed();
    assert!(
        closed_after < SHORT * 6,
        "a trickled head kept the connection {closed_after:?}"
    );
    read_until_closed(&mut stream, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_disconnected() {
    let app = spawn_app_with(|s| s.http.send_timeout = SHORT).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let document = app
        .get("/api/v1/openapi.json")
        .await
        .bytes()
        .await
        .expect("document");
    let requests: usize = 3000;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // Pipelined requests for a large answer, and none of it read: far more
    // than the socket buffers hold.
    let request = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let writing = async {
        for _ in 0..requests {
            if stream.write_all(request).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), writing).await;
    tokio::time::sleep(SHORT * 4).await;
    let started = Instant::now();
    let answer = read_until_closed(&mut stream, Duration::from_secs(30)).await;
    assert!(
        answer.len() < requests * document.len(),
        "all {requests} answers arrived: the server waited for the reader"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn connections_are_counted_against_their_limit() {
    let app =
        spawn_app_with(|s| s.http.max_connections = NonZeroUsize::new(300).expect("not zero"))
            .await;
    assert_eq!(app.metric("shortener_http_connections_limit").await, 600.0);
    let addr = app.address.trim_start_matches("http://").to_owned();
    let before = app.metric("shortener_http_connections").await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = app.metric("shortener_http_connections").await;
    assert!(open >= before + 20.0, "{before} then {open}");
    drop(idle);
    let mut now = open;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = app.metric("shortener_http_connections").await;
        if now <= before {
            break;
        }
    }
    assert!(now <= before, "{now} still open, {before} before");
}

#[tokio::test]
async fn a_graceful_stop_gives_arriving_bodies_a_short_grace() {
    let app = spawn_app_with(|s| {
        s.http.client_body_timeout = Duration::from_secs(120);
        s.http.shutdown_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"POST /api/v1/links HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"url\":")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("before the service stopped"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stops")
        .expect("task");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the stop waited {took:?} for a stalled upload"
    );
}

#[tokio::test]
async fn a_refused_head_does_not_leave_its_body_draining() {
    let app = spawn_app_with(|s| s.http.client_body_timeout = SHORT).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // Headers over http.max_header_bytes, and a chunked body that stops.
    let head = format!(
        "POST /api/v1/links HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        "a".repeat(20 * 1024)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
}

#[tokio::test]
async fn an_interim_continue_does_not_stop_the_clock_of_the_next_head() {
    let app = spawn_app_with(|s| {
        s.http.client_request_timeout = SHORT;
        s.http.keep_alive = Duration::from_secs(60);
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("200 OK") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    // One byte of a next head, then nothing.
    let started = Instant::now();
    stream.write_all(b"G").await.expect("write");
    read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(started.elapsed() < SHORT * 6, "{:?}", started.elapsed());
    assert!(
        app.metric(r#"shortener_http_timeouts_total{phase="head"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn pipelined_requests_split_anywhere_are_not_cut() {
    let app = spawn_app_with(|s| {
        s.http.client_request_timeout = SHORT;
        s.http.keep_alive = Duration::from_secs(60);
    })
    .await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // A whole request and all but the last line end of the next.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    stream.write_all(b"\r\n").await.expect("write");
    let n = stream.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Idle longer than a head may take, well within keep-alive: still open.
    tokio::time::sleep(SHORT * 3).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let n = stream.read(&mut buf).await.expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "the idle connection was cut: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn a_client_that_reads_a_trickle_runs_out_of_time() {
    let app = spawn_app_with(|s| s.http.send_timeout = Duration::from_secs(2)).await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let idle = app.metric("shortener_http_connections").await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    let writing = async {
        for _ in 0..3000 {
            if stream.write_all(request).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), writing).await;
    // Read a little, often enough that no single wait is long, never
    // enough to keep up.
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    // The server gives up on it: the connection is closed on its side (what
    // the kernel had buffered may still trickle out to the client).
    let started = Instant::now();
    while app
        .metric(r#"shortener_http_timeouts_total{phase="write"}"#)
        .await
        < 1.0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a trickling reader held the connection for 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(app.metric("shortener_http_connections").await <= idle + 1.0);
    reader.abort();
}

/// When idle clients hold every connection of the public port, probes on
/// the admin listener are still answered.
#[tokio::test]
async fn probes_on_the_admin_listener_are_not_kept_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tier = crate::helpers::Tier::new(dir.path());
    let mut settings = tier.settings();
    settings.http.max_connections = NonZeroUsize::new(2).expect("not zero");
    settings.metrics.listen = Some(([127, 0, 0, 1], 0).into());
    let store = shortener_api::startup::open_store(&settings)
        .await
        .expect("store");
    let app = shortener_api::Application::build_with_store(settings, store)
        .await
        .expect("app");
    let public = app.local_addr();
    let admin = app.metrics_addr();
    assert_ne!(public, admin);
    let stop = app.stop_token();
    let server = tokio::spawn(app.run_until_stopped());
    // Two workers, two connections each: four idle clients take them all.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(public).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let kept_out = client.get(format!("http://{public}/healthz")).send().await;
    assert!(
        kept_out.is_err(),
        "a fifth connection was served: {kept_out:?}"
    );
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let response = client
            .get(format!("http://{admin}{probe}"))
            .send()
            .await
            .expect("the admin listener answers");
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
    drop(idle);
    stop.cancel();
    server.await.expect("task").expect("stops");
}
