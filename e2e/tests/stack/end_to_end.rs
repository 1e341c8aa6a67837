//! Clicks through the API, counted by the worker, read by the stats API.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;
use shortener_api::Application;
use tokio::sync::Semaphore;

use shortener_testkit::{
    deployment::{CHROME, Deployment},
    one_at_a_time,
};

use crate::api_settings;

const RATE: u64 = 1_000;
const RUN: Duration = Duration::from_secs(12);
const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Clicks of a link (people and bots) as the stats API says.
async fn clicks(client: &Client, base: &str, code: &str) -> u64 {
    let body: Value = client
        .get(format!("{base}/api/v1/links/{code}/stats?granularity=hour"))
        .send()
        .await
        .expect("stats request")
        .json()
        .await
        .expect("stats body");
    body["total_clicks"].as_u64().expect("total_clicks")
        + body["bot_clicks"].as_u64().expect("bot_clicks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_in_the_stats_api_within_five_seconds_at_a_thousand_per_second() {
    let _serial = one_at_a_time().await;
    let deployment = Deployment::new(3).await;
    let app = Application::build(api_settings(&deployment))
        .await
        .expect("build the API");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop_api = app.stop_token();
    let api = tokio::spawn(app.run_until_stopped());
    let worker = deployment.spawn_worker(0);
    let client = Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client");

    let mut codes = Vec::new();
    for i in 0..3 {
        let created: Value = client
            .post(format!("{base}/api/v1/links"))
            .json(&serde_json::json!({ "url": format!("https://example.com/{i}") }))
            .send()
            .await
            .expect("create")
            .json()
            .await
            .expect("created body");
        codes.push(created["code"].as_str().expect("code").to_owned());
    }
    let unknown = client
        .get(format!("{base}/api/v1/links/zzzzzzz/stats"))
        .send()
        .await
        .expect("stats of an unknown code");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // When each redirect was answered, in order.
    let answered = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let load = {
        let (client, base, codes, answered) = (
            client.clone(),
            base.clone(),
            codes.clone(),
            answered.clone(),
        );
        tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(64));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
            let mut tasks = Vec::new();
            let started = Instant::now();
            let mut n = 0usize;
            while started.elapsed() < RUN {
                tick.tick().await;
                let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                let url = format!("{base}/{}", codes[n % codes.len()]);
                let (client, answered) = (client.clone(), answered.clone());
                tasks.push(tokio::spawn(async move {
                    let response = client
                        .get(url)
                        .header("user-agent", CHROME)
                        .send()
                        .await
                        .expect("redirect");
                    assert_eq!(response.status(), StatusCode::FOUND);
                    answered.lock().expect("lock").push(Instant::now());
                    drop(permit);
                }));
                n += 1;
            }
            for task in tasks {
                task.await.expect("redirect task");
            }
            n
        })
    };

    // Sample the stats API while the load runs, and after.
    let mut lags = Vec::new();
    let sampling_ends = Instant::now() + RUN + VISIBLE_WITHIN;
    while Instant::now() < sampling_ends {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let mut visible = 0;
        for code in &codes {
            visible += clicks(&client, &base, code).await;
        }
        let answered = answered.lock().expect("lock").clone();
        // The oldest redirect not visible yet, if any, and how long ago.
        if let Some(oldest) = answered.get(visible as usize) {
            lags.push(now.duration_since(*oldest));
        } else {
            lags.push(Duration::ZERO);
        }
    }
    let sent = load.await.expect("load task");
    let mut visible = 0;
    for code in &codes {
        visible += clicks(&client, &base, code).await;
    }
    stop_api.cancel();
    api.await.expect("api task").expect("api runs");
    worker.stop().await;

    lags.sort();
    let max = *lags.last().expect("samples");
    println!(
        "{sent} redirects at {RATE}/s; oldest click not yet visible: median {:?}, max {max:?} \
         over {} samples",
        lags[lags.len() / 2],
        lags.len()
    );
    assert!(
        sent as u64 >= RATE * RUN.as_secs() * 9 / 10,
        "only {sent} redirects"
    );
    assert_eq!(visible, sent as u64, "every redirect counted once");
    assert!(
        max < VISIBLE_WITHIN,
        "a click took {max:?} to be visible\n{}",
        deployment.worker_logs()
    );
}
