//! Creates links through the API and writes `code url` lines, or requests
//! every code of such a file once (to fill the API's cache, or to measure
//! uncached redirects: it prints the latency percentiles).
//!
//! Usage:
//!   `seed-links create BASE_URL COUNT OUT_FILE [CONCURRENCY]`
//!   `seed-links visit BASE_URL CODES_FILE [CONCURRENCY]`

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::{Value, json};

const USAGE: &str = "usage: seed-links create BASE_URL COUNT OUT_FILE [CONCURRENCY] | seed-links visit BASE_URL CODES_FILE [CONCURRENCY]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let client = Client::builder().redirect(Policy::none()).build()?;
    match args.first().map(String::as_str) {
        Some("create") if args.len() >= 4 => {
            let count: usize = args[2].parse().context("COUNT")?;
            let concurrency = args
                .get(4)
                .map_or(Ok(64), |c| c.parse())
                .context("CONCURRENCY")?;
            create(&client, &args[1], count, &args[3], concurrency).await
        }
        Some("visit") if args.len() >= 3 => {
            let concurrency = args
                .get(3)
                .map_or(Ok(64), |c| c.parse())
                .context("CONCURRENCY")?;
            visit(&client, &args[1], &args[2], concurrency).await
        }
        _ => bail!(USAGE),
    }
}

async fn create(
    client: &Client,
    base: &str,
    count: usize,
    out: &str,
    concurrency: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let endpoint = format!("{base}/api/v1/links");
    let links: Vec<(String, String)> = stream::iter(0..count)
        .map(|i| {
            let endpoint = endpoint.clone();
            async move {
                let url = format!("https://example.com/articles/{i}?utm_source=bench");
                let response = client
                    .post(&endpoint)
                    .json(&json!({ "url": url }))
                    .send()
                    .await?;
                if response.status() != StatusCode::CREATED {
                    bail!("create answered {}", response.status());
                }
                let body: Value = response.json().await?;
                let code = body["code"]
                    .as_str()
                    .context("code in the answer")?
                    .to_owned();
                Ok::<_, anyhow::Error>((code, body["url"].as_str().unwrap_or_default().to_owned()))
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed().as_secs_f64();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (code, url) in &links {
        writeln!(file, "{code} {url}")?;
    }
    file.flush()?;
    println!(
        "created={} seconds={elapsed:.2} creates_per_second={:.0}",
        links.len(),
        links.len() as f64 / elapsed
    );
    Ok(())
}

async fn visit(client: &Client, base: &str, codes: &str, concurrency: usize) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(codes)?;
    let codes: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    let found = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut latencies = stream::iter(codes.iter())
        .map(|code| {
            let found = found.clone();
            async move {
                let sent = Instant::now();
                let response = client.get(format!("{base}/{code}")).send().await?;
                let latency = sent.elapsed();
                if response.status().is_redirection() {
                    found.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, anyhow::Error>(latency)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: usize| {
        latencies
            .get(latencies.len().saturating_sub(1) * p / 100)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let found = found.load(Ordering::Relaxed);
    println!(
        "visited={} redirected={found} seconds={seconds:.2} per_second={:.0} p50_ms={:.3} p99_ms={:.3}",
        codes.len(),
        codes.len() as f64 / seconds,
        percentile(50),
        percentile(99),
    );
    if found != codes.len() {
        bail!("{} codes did not redirect", codes.len() - found);
    }
    Ok(())
}
