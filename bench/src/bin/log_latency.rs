//! Live log latency: a step prints its own clock (ns) every 100 ms; an SSE client on the job's log stream
//! compares each line with its clock on arrival. Same host, same clock. Prints one JSON line.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin log_latency [LINES]`

use anyhow::{Context, Result};
use base64::Engine;
use futures::StreamExt;
use gantry_bench::{Farm, count_arg, quantile};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[tokio::main]
async fn main() -> Result<()> {
    let lines = count_arg(100)?;
    let farm = Farm::up(1)?;
    let pipeline = format!(
        "jobs:\n  clock:\n    steps: [\"for i in $(seq 1 {lines}); do date +%s%N; sleep 0.1; done\"]\n"
    );
    let (sha, secret) = farm.repo("latency", &pipeline).await?;
    let client = reqwest::Client::new();
    let number = farm
        .trigger(&client, "latency", &secret, &sha, "main")
        .await?;
    let job = loop {
        let p: serde_json::Value = client
            .get(format!(
                "{}/api/v1/repos/latency/pipelines/{number}",
                farm.url
            ))
            .send()
            .await?
            .json()
            .await?;
        if let Some(id) = p["jobs"][0]["id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let response = client
        .get(format!("{}/api/v1/jobs/{job}/log/stream", farm.url))
        .send()
        .await?;
    let mut stream = response.bytes_stream();
    let (mut buffer, mut text) = (Vec::new(), String::new());
    let mut latencies_ms = Vec::new();
    'read: while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as f64;
            let event = String::from_utf8(buffer.drain(..end + 2).collect())?;
            if event.contains("event: end") {
                break 'read;
            }
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let Ok(e) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            let Some(b64) = e["data"].as_str() else {
                continue;
            };
            text.push_str(&String::from_utf8(
                base64::engine::general_purpose::STANDARD.decode(b64)?,
            )?);
            while let Some(nl) = text.find('\n') {
                let line: String = text.drain(..=nl).collect();
                let printed: f64 = line.trim().parse().context("a line that is not a clock")?;
                latencies_ms.push((now - printed) / 1e6);
            }
        }
    }
    let n = latencies_ms.len();
    let (p50, p90, p99, max) = (
        quantile(&mut latencies_ms, 0.5),
        quantile(&mut latencies_ms, 0.9),
        quantile(&mut latencies_ms, 0.99),
        quantile(&mut latencies_ms, 1.0),
    );
    println!(
        "{}",
        serde_json::json!({ "bench": "log_latency", "what": "step prints a line -> SSE client receives it", "lines": n,
                            "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max,
                            "worker_flush": "at once when the last send is 50 ms ago, else when it will be" })
    );
    Ok(())
}
