//! Cancel latency: a pipeline whose step sleeps is cancelled through the API once the step runs; measures the
//! time from the cancel request to the step's process being gone from the host (and to the job showing
//! `cancelled` in the API). Target (issue 4): the container is gone within 2 s. Prints one JSON line.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin cancel [RUNS]`

use anyhow::{Context, Result};
use gantry_bench::{Farm, count_arg, quantile};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let runs = count_arg(20)?;
    let farm = Farm::up(1)?;
    let marker = format!("gantry-cancel-bench-{}", std::process::id());
    let pipeline = format!("jobs:\n  long:\n    steps: [\"sleep 600 # {marker}\"]\n");
    let (sha, secret) = farm.repo("cancel", &pipeline).await?;
    let client = reqwest::Client::new();
    let (mut gone_ms, mut reported_ms) = (Vec::new(), Vec::new());
    for run in 0..runs {
        // A branch per run: the same delivery twice would be a redelivery, which creates nothing.
        let branch = format!("run-{run}");
        let number = farm
            .trigger(&client, "cancel", &secret, &sha, &branch)
            .await?;
        let path = format!("{}/api/v1/repos/cancel/pipelines/{number}", farm.url);
        if wait_for(Duration::from_secs(60), || step_running(&marker))
            .await
            .is_none()
        {
            let p: serde_json::Value = client.get(&path).send().await?.json().await?;
            anyhow::bail!("the step never started: {p:#}");
        }
        let asked = Instant::now();
        client
            .post(format!(
                "{}/api/v1/repos/cancel/pipelines/{number}/cancel",
                farm.url
            ))
            .bearer_auth(&farm.admin)
            .send()
            .await?
            .error_for_status()?;
        wait_for(Duration::from_secs(30), || !step_running(&marker))
            .await
            .context("the step outlived its cancel by 30 s")?;
        gone_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
        loop {
            let p: serde_json::Value = client.get(&path).send().await?.json().await?;
            if p["status"] == "cancelled" {
                break;
            }
            anyhow::ensure!(
                asked.elapsed() < Duration::from_secs(30),
                "pipeline {number} is {} 30 s after its cancel",
                p["status"]
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        reported_ms.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "cancel",
            "what": "cancel request -> the step's process gone from the host; and -> the pipeline shows cancelled",
            "runs": runs,
            "gone_p50_ms": quantile(&mut gone_ms, 0.5),
            "gone_p99_ms": quantile(&mut gone_ms, 0.99),
            "cancelled_p50_ms": quantile(&mut reported_ms, 0.5),
            "cancelled_p99_ms": quantile(&mut reported_ms, 0.99),
            "target_ms": 2000,
        })
    );
    Ok(())
}

/// Polls `check` every 2 ms until it holds; false at `limit`.
async fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<()> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if check() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

/// Whether a process whose command line holds `marker` runs on the host.
fn step_running(marker: &str) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name() != me.as_str())
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
}
