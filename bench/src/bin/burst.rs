//! Burst (issue 16): JOBS jobs of 1 s (`parallel: JOBS`, one push) onto an empty `local` pool (min 0, max 4,
//! idle_timeout 3 s), against a fixed pool of 4 (min = max = 4, its workers registered before the push), and onto
//! the empty pool again with the jobs on a busybox `dir:` image, alternated for ROUNDS rounds. Per run: job ready →
//! the autoscaler asks the provider (the first decision to grow, against the jobs' `queued_at`: both the server's
//! clock), push → first job running (leased: worker process start included), push → first step started (a
//! container on the host image waits for its worker's first walk of the host's private files; one on an image
//! does not), makespan (push → last job finished), and, for the empty pool, last job finished → 0 workers.
//! Targets: ready → asked p50 ≤ 50 ms, first job ≤ 1 s, makespan ≤ 1.1× the fixed pool's. Peers for reference:
//! Buildkite's scaler polls every ≥ 10 s, Woodpecker's autoscaler reconciles every minute, Drone's every 5.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin burst [ROUNDS] [JOBS]`

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use gantry_bench::{Farm, count_arg, count_arg_at, quantile, scratch};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ELASTIC: &str =
    "[[pool]]\nname = \"default\"\nprovider = \"local\"\nmin = 0\nmax = 4\nidle_timeout = \"3s\"\n";
const FIXED: &str =
    "[[pool]]\nname = \"default\"\nprovider = \"local\"\nmin = 4\nmax = 4\nidle_timeout = \"3s\"\n";

struct Run {
    ready_to_asked_ms: Option<f64>,
    first_running_ms: f64,
    first_step_ms: f64,
    makespan_ms: f64,
    back_to_zero_ms: Option<f64>,
}

fn time(v: &Value) -> Result<DateTime<Utc>> {
    Ok(v.as_str().context("no timestamp")?.parse()?)
}

async fn get(client: &reqwest::Client, farm: &Farm, path: &str) -> Result<Value> {
    Ok(client
        .get(format!("{}/api/v1{path}", farm.url))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn pool_workers(client: &reqwest::Client, farm: &Farm) -> Result<Value> {
    let pools = get(client, farm, "/pools").await?;
    pools["pools"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "default"))
        .map(|p| p["workers"].clone())
        .context("no default pool")
}

/// One of the compared set-ups.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// The empty pool (0..4), jobs on the host image.
    Elastic,
    /// The pool of 4, registered before the push, jobs on the host image.
    Fixed,
    /// The empty pool, jobs on a busybox `dir:` image (no wait for the worker's walk of the host's files).
    ElasticImage,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Elastic => "elastic 0..4",
            Case::Fixed => "fixed 4",
            Case::ElasticImage => "elastic 0..4, dir: image",
        }
    }
}

async fn run(case: Case, jobs: usize, rootfs: &std::path::Path) -> Result<Run> {
    let path = scratch("burst-config").with_extension(format!("{}.toml", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(path.parent().context("a parent")?)?;
    let (config, image) = match case {
        Case::Elastic => (ELASTIC.to_owned(), String::new()),
        Case::Fixed => (FIXED.to_owned(), String::new()),
        Case::ElasticImage => (
            format!(
                "{ELASTIC}[worker]\nimage_dirs = [{:?}]\n",
                rootfs.display().to_string()
            ),
            format!("image: dir:{}\n", rootfs.display()),
        ),
    };
    std::fs::write(&path, config)?;
    let farm = Farm::start("up", &["--config", path.to_str().context("path")?])?;
    let measured = measure(&farm, jobs, case != Case::Fixed, &image).await;
    drop(farm);
    let _ = std::fs::remove_file(&path);
    measured
}

async fn measure(farm: &Farm, jobs: usize, elastic: bool, image: &str) -> Result<Run> {
    let client = reqwest::Client::new();
    if !elastic {
        let until = Instant::now() + Duration::from_secs(120);
        while pool_workers(&client, farm).await?["idle"] != 4 {
            anyhow::ensure!(
                Instant::now() < until,
                "the fixed pool's 4 workers did not register"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let pipeline = format!("{image}jobs:\n  test:\n    parallel: {jobs}\n    steps: [sleep 1]\n");
    let (sha, secret) = farm.repo("burst", &pipeline).await?;
    let pushed = Utc::now();
    farm.trigger(&client, "burst", &secret, &sha, "main")
        .await?;
    let until = Instant::now() + Duration::from_secs(600);
    let p = loop {
        let p = get(&client, farm, "/repos/burst/pipelines/1").await?;
        if !matches!(p["status"].as_str(), Some("queued" | "running")) {
            break p;
        }
        anyhow::ensure!(
            Instant::now() < until,
            "the burst did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    anyhow::ensure!(p["status"] == "success", "the burst failed: {p}");
    let all = p["jobs"].as_array().context("no jobs")?;
    let mut queued = Vec::new();
    let (mut started, mut finished, mut first_steps) = (Vec::new(), Vec::new(), Vec::new());
    for job in all {
        queued.push(time(&job["queued_at"])?);
        started.push(time(&job["started_at"])?);
        finished.push(time(&job["finished_at"])?);
        let id = job["id"].as_str().context("no job id")?;
        let detail = get(&client, farm, &format!("/jobs/{id}")).await?;
        first_steps.push(time(&detail["steps"][0]["started_at"])?);
    }
    let ready = *queued.iter().min().context("no job")?;
    let last = *finished.iter().max().context("no job")?;
    let ms = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
    let decisions = get(&client, farm, "/pools/default/decisions").await?;
    let asked = decisions["decisions"]
        .as_array()
        .context("no decisions")?
        .iter()
        .filter(|d| d["to"].as_u64() > d["from"].as_u64())
        .filter_map(|d| time(&d["at"]).ok())
        .filter(|at| *at >= ready)
        .min();
    let mut back_to_zero_ms = None;
    if elastic {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let w = pool_workers(&client, farm).await?;
            if w["idle"] == 0 && w["busy"] == 0 && w["draining"] == 0 && w["booting"] == 0 {
                back_to_zero_ms = Some(ms(Utc::now() - last));
                break;
            }
            anyhow::ensure!(Instant::now() < until, "the pool did not shrink to zero");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Run {
        ready_to_asked_ms: asked.map(|at| ms(at - ready)),
        first_running_ms: ms(*started.iter().min().context("no job")? - pushed),
        first_step_ms: ms(*first_steps.iter().min().context("no job")? - pushed),
        makespan_ms: ms(last - pushed),
        back_to_zero_ms,
    })
}

fn p50(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    quantile(&mut v, 0.5)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds = count_arg(3)?;
    let jobs = count_arg_at(2, 50)?;
    // Canonical: a pipeline's `dir:` path may not hold `..`.
    let rootfs = gantry_bench::peers::busybox_rootfs(&scratch("burst-busybox"))?.canonicalize()?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sleep"))?;
    let cases = [Case::Elastic, Case::Fixed, Case::ElasticImage];
    let mut runs: Vec<(Case, Run)> = Vec::new();
    for round in 0..rounds {
        // Alternated, each case first in turn: the VM's speed drifts over minutes.
        for i in 0..cases.len() {
            let case = cases[(round + i) % cases.len()];
            let r = run(case, jobs, &rootfs).await?;
            println!(
                "{}",
                json!({"bench": "burst", "pool": case.name(), "round": round, "jobs": jobs,
                       "ready_to_provider_ms": r.ready_to_asked_ms, "first_job_running_ms": r.first_running_ms,
                       "first_step_started_ms": r.first_step_ms,
                       "makespan_ms": r.makespan_ms, "last_job_to_zero_workers_ms": r.back_to_zero_ms})
            );
            runs.push((case, r));
        }
    }
    let of = |case: Case| runs.iter().filter(move |(c, _)| *c == case).map(|(_, r)| r);
    let elastic_makespan = p50(of(Case::Elastic).map(|r| r.makespan_ms));
    let fixed_makespan = p50(of(Case::Fixed).map(|r| r.makespan_ms));
    let by_case = |value: fn(&Run) -> f64| {
        json!({"elastic": p50(of(Case::Elastic).map(value)), "fixed": p50(of(Case::Fixed).map(value)),
               "elastic_image": p50(of(Case::ElasticImage).map(value))})
    };
    println!(
        "{}",
        json!({"bench": "burst", "summary": true, "rounds": rounds, "jobs": jobs,
               "ready_to_provider_ms_p50": p50(of(Case::Elastic).filter_map(|r| r.ready_to_asked_ms)),
               "first_job_running_ms_p50": by_case(|r| r.first_running_ms),
               "first_step_started_ms_p50": by_case(|r| r.first_step_ms),
               "makespan_ms_p50": by_case(|r| r.makespan_ms),
               "makespan_ratio": elastic_makespan / fixed_makespan,
               "last_job_to_zero_workers_ms_p50": p50(of(Case::Elastic).filter_map(|r| r.back_to_zero_ms)),
               "idle_timeout_ms": 3000,
               "peers": {"buildkite_scaler_poll_s": 10, "woodpecker_reconcile_s": 60, "drone_reconcile_s": 300}})
    );
    Ok(())
}
