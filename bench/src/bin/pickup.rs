//! Pickup latency (issue 4): a signed webhook is sent for a one-job pipeline (`image: host`, step `echo hi`)
//! while the worker waits idle; measures the time until the first byte of the job's log arrives at an SSE client
//! on the job's log stream. The client subscribes as soon as the job exists (the stream replays from offset
//! 0, so nothing is missed). p50 and p99 over RUNS pipelines, one after the other. Target p50 ≤ 50 ms; for
//! reference, Buildbot 4.3 takes 255 ms here from webhook to its first step running (p50), without a container.
//!
//! With `GANTRY_BENCH_POSTGRES=postgres://…` (an empty database) it also measures two servers sharing it: the
//! webhook goes to server B, the worker long-polls server A (`gantry up`), and the log is read from A, so the
//! figure includes B's `NOTIFY` waking A's long-poll. Target 200 ms.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin pickup [RUNS]`

use anyhow::Result;
use futures::StreamExt;
use gantry_bench::{Farm, count_arg, quantile};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let runs = count_arg(200)?;
    let farm = Farm::up(1)?;
    let mut ms = measure(&farm, &farm, runs).await?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "pickup",
            "what": "signed webhook sent -> first byte of the job's log at an SSE client (image host, echo hi, idle worker)",
            "runs": runs,
            "p50_ms": quantile(&mut ms, 0.5),
            "p99_ms": quantile(&mut ms, 0.99),
            "target_p50_ms": 50,
            "buildbot_p50_ms_for_reference": 255,
        })
    );
    drop(farm);
    let Ok(database) = std::env::var("GANTRY_BENCH_POSTGRES") else {
        println!(
            "{}",
            serde_json::json!({"bench": "pickup_two_servers", "skipped": "set GANTRY_BENCH_POSTGRES=postgres://… (an empty database) to measure it"})
        );
        return Ok(());
    };
    let admin = format!("gantry_bench_admin_{}", std::process::id());
    let shared = [
        "--database",
        database.as_str(),
        "--admin-token",
        admin.as_str(),
    ];
    // B first: each server applies its own pools at start, and A's built-in one (a single local worker) must be
    // the one that stays.
    let b = Farm::start("server", &shared)?;
    let a = Farm::start(
        "up",
        &[&["--capacity", "1", "--max-workers", "1"][..], &shared[..]].concat(),
    )?;
    let mut ms = measure(&b, &a, runs).await?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "pickup_two_servers",
            "what": "signed webhook sent to server B -> first byte of the job's log at an SSE client on server A, whose worker long-polls A; one PostgreSQL",
            "runs": runs,
            "p50_ms": quantile(&mut ms, 0.5),
            "p99_ms": quantile(&mut ms, 0.99),
            "target_ms": 200,
        })
    );
    Ok(())
}

/// Sends RUNS webhooks to `hooked`, one after the other with the worker idle, and times each until the first
/// log byte arrives at an SSE client on `streaming` (the server the worker reports to); milliseconds.
async fn measure(hooked: &Farm, streaming: &Farm, runs: usize) -> Result<Vec<f64>> {
    let (sha, secret) = hooked
        .repo("pickup", "jobs:\n  hi:\n    steps: [echo hi]\n")
        .await?;
    let client = reqwest::Client::new();
    let mut ms = Vec::with_capacity(runs);
    for run in 0..runs {
        // Idle: the previous job is done and the worker is back in its long-poll.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = Instant::now();
        // A branch per run: the same delivery twice would be a redelivery, which creates nothing.
        let number = hooked
            .trigger(&client, "pickup", &secret, &sha, &format!("run-{run}"))
            .await?;
        let job = job_id(&client, hooked, number).await?;
        let t_job = sent.elapsed();
        let stream = client
            .get(format!("{}/api/v1/jobs/{job}/log/stream", streaming.url))
            .send()
            .await?
            .error_for_status()?;
        let t_headers = sent.elapsed();
        let mut body = stream.bytes_stream();
        let mut buffer = Vec::new();
        'read: while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk?);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event = String::from_utf8_lossy(&buffer[..end]).into_owned();
                buffer.drain(..end + 2);
                if event
                    .lines()
                    .any(|l| l.starts_with("data: ") && l.contains("\"data\""))
                {
                    ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if std::env::var_os("PICKUP_DEBUG").is_some() {
                        eprintln!(
                            "sent at {:?}: job {t_job:?} headers {t_headers:?} data {:?}",
                            std::time::SystemTime::now() - sent.elapsed(),
                            sent.elapsed()
                        );
                    }
                    break 'read;
                }
                anyhow::ensure!(
                    !event.contains("event: end"),
                    "job {job} ended without output"
                );
            }
        }
        anyhow::ensure!(
            ms.len() == run + 1,
            "the log stream of job {job} ended early"
        );
    }
    Ok(ms)
}

/// Polls the pipeline until its job exists (the server prepares it after answering the webhook).
async fn job_id(client: &reqwest::Client, farm: &Farm, number: i64) -> Result<String> {
    let path = format!("{}/api/v1/repos/pickup/pipelines/{number}", farm.url);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let p: serde_json::Value = client.get(&path).send().await?.json().await?;
        if let Some(id) = p["jobs"][0]["id"].as_str() {
            return Ok(id.to_owned());
        }
        anyhow::ensure!(p["status"] != "error", "pipeline {number} failed: {p}");
        anyhow::ensure!(
            Instant::now() < until,
            "pipeline {number} has no job after 30 s: {p}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
