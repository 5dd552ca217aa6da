//! Throughput (issue 4): WEBHOOKS signed webhooks sent at once, each a one-job pipeline (`echo hi` in a
//! container, image `host`); pipelines completed per second end to end, from the first send to the last
//! pipeline finished. For reference, Buildbot 4.3 does 3.1–3.5/s here (no containers). Target ≥ 30/s.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin throughput [WEBHOOKS] [SLOTS]`

use anyhow::{Context, Result};
use gantry_bench::{Farm, count_arg, count_arg_at};
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let webhooks = count_arg(200)?;
    let slots = u32::try_from(count_arg_at(2, 4)?).context("too many slots")?;
    let farm = Farm::up(slots)?;
    let (sha, secret) = farm
        .repo("burst", "jobs:\n  hi:\n    steps: [echo hi]\n")
        .await?;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let sends = (0..webhooks).map(|i| {
        let (farm, client, sha, secret) = (&farm, &client, &sha, &secret);
        // A branch each: the same delivery twice would be one pipeline.
        async move {
            farm.trigger(client, "burst", secret, sha, &format!("b-{i}"))
                .await
        }
    });
    let numbers = futures::future::try_join_all(sends).await?;
    let accepted = started.elapsed();
    anyhow::ensure!(
        numbers.len() == webhooks,
        "not every webhook made a pipeline"
    );
    let path = format!("{}/api/v1/repos/burst/pipelines?limit=500", farm.url);
    let (succeeded, failed) = loop {
        let page: serde_json::Value = client.get(&path).send().await?.json().await?;
        let statuses: Vec<&str> = page["pipelines"]
            .as_array()
            .context("no pipelines")?
            .iter()
            .filter_map(|p| p["status"].as_str())
            .collect();
        let finished = statuses
            .iter()
            .filter(|s| !matches!(**s, "queued" | "running"));
        if finished.clone().count() == webhooks {
            let ok = statuses.iter().filter(|s| **s == "success").count();
            break (ok, webhooks - ok);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "not finished after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let took = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "throughput",
            "what": "signed webhooks sent at once, one-job pipelines (echo hi in a container) -> all finished",
            "webhooks": webhooks,
            "worker_slots": slots,
            "all_accepted_ms": accepted.as_secs_f64() * 1000.0,
            "seconds": took,
            "pipelines_per_second": webhooks as f64 / took,
            "succeeded": succeeded,
            "failed": failed,
            "target_per_second": 30,
            "buildbot_per_second_for_reference": "3.1-3.5",
        })
    );
    Ok(())
}
