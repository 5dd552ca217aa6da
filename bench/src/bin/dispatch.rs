//! Dispatch throughput (issue 4): WORKERS in-process workers that do no work lease and complete JOBS one-job
//! pipelines through the server's own `Queue` and `Store` (no HTTP, no containers): jobs leased and completed
//! per second, on a SQLite file (WAL, synchronous=NORMAL) and, when `GANTRY_BENCH_POSTGRES` names a database
//! (with fsync on, as PostgreSQL's default), on PostgreSQL. Targets: ≥ 2,000/s on SQLite, ≥ 1,000/s on
//! PostgreSQL. Prints one JSON line per database. `GANTRY_BENCH_REPO_LIMIT=N` gives the repository a
//! `max_running_jobs` of N (above WORKERS, it is never reached but every claim checks it: on PostgreSQL that
//! is the per-repository lock of migration 0011).
//!
//! Run: `cargo run --release -p gantry-bench --bin dispatch [JOBS] [WORKERS]`

use anyhow::Result;
use gantry_bench::{count_arg, count_arg_at, quantile, scratch};
use gantry_model::Pipeline;
use gantry_model::wire::CompleteRequest;
use gantry_server::config::ServerConfig;
use gantry_server::logs::LogHub;
use gantry_server::queue::Queue;
use gantry_server::store::{self, NewDelivery, NewJob, NewPipeline, NewRepoRecord, NewWorker};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<()> {
    let jobs = count_arg(5000)?;
    let workers = count_arg_at(2, 8)?;
    let dir = scratch("dispatch");
    std::fs::create_dir_all(&dir)?;
    let sqlite = format!("sqlite://{}", dir.join("gantry.db").display());
    run("sqlite", &sqlite, jobs, workers).await?;
    match std::env::var("GANTRY_BENCH_POSTGRES") {
        Ok(url) => run("postgres", &url, jobs, workers).await?,
        Err(_) => println!(
            "{}",
            serde_json::json!({"bench": "dispatch", "database": "postgres", "skipped": "set GANTRY_BENCH_POSTGRES=postgres://… (an empty database) to measure it"})
        ),
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run(dialect: &str, url: &str, jobs: usize, workers: usize) -> Result<()> {
    let db = store::connect(url).await?;
    db.bootstrap("bench-admin", "bench-pool").await?;
    let repo = db
        .create_repo(&NewRepoRecord {
            name: format!("dispatch-{}", Uuid::now_v7().simple()),
            url: "/nowhere.git".into(),
            forge: "git".into(),
            forge_full_name: None,
            secret: "bench-secret".into(),
        })
        .await?;
    let repo_limit = match std::env::var("GANTRY_BENCH_REPO_LIMIT") {
        Ok(n) => Some(n.parse::<u32>()?),
        Err(_) => None,
    };
    if let Some(max) = repo_limit {
        let settings = gantry_model::wire::RepoSettings {
            max_running_jobs: Some(max),
            ..Default::default()
        };
        db.update_repo_settings(&repo.name, &settings).await?;
    }
    let spec = Pipeline::parse("jobs:\n  nothing:\n    steps: [true]\n")?
        .jobs
        .remove(0);
    for i in 0..jobs {
        let pipeline = db
            .create_pipeline(&NewPipeline {
                delivery: NewDelivery {
                    repo_id: repo.id,
                    delivery_id: format!("d-{i}"),
                    forge: "git".into(),
                    event: "push".into(),
                    body: Vec::new(),
                },
                commit: "0".repeat(40),
                git_ref: "refs/heads/main".into(),
                event: "push".into(),
                author: None,
                message: None,
                pull_request: None,
            })
            .await?;
        let job = NewJob {
            id: Uuid::now_v7(),
            spec: spec.clone(),
            skipped: None,
        };
        db.add_jobs(pipeline.id, &[job]).await?;
    }
    let config = ServerConfig::new(std::env::temp_dir(), "http://127.0.0.1".into());
    let key = gantry_server::secrets::SealingKey::from_bytes(&[7; 32]).expect("32 bytes");
    let vault = gantry_server::secrets::Vault::new(db.clone(), key);
    let queue = Queue::new(db.clone(), LogHub::default(), &config, vault);
    let mut ids = Vec::new();
    for w in 0..workers {
        let worker = NewWorker {
            name: format!("bench-{w}-{}", Uuid::now_v7().simple()),
            pool: "default".into(),
            labels: vec!["linux".into()],
            capacity: 1,
            protocol_version: gantry_model::wire::PROTOCOL_VERSION,
            managed: false,
        };
        ids.push((
            db.register_worker(&worker, &format!("t-{}", worker.name))
                .await?,
            worker.name,
        ));
    }
    let report = CompleteRequest {
        exit_code: Some(0),
        failure_kind: None,
        message: None,
        steps: Vec::new(),
        log_length: 0,
        cpu_seconds: None,
        peak_memory_bytes: None,
        tests: Vec::new(),
        no_retry: false,
    };
    let started = Instant::now();
    let tasks = ids.into_iter().map(|(id, name)| {
        let (queue, report) = (queue.clone(), report.clone());
        tokio::spawn(async move {
            // How long each call took, in ms: where a job's time goes.
            let (mut leases, mut completions) = (Vec::new(), Vec::new());
            loop {
                let asked = Instant::now();
                let gantry_server::queue::LeaseAnswer::Job(lease) =
                    queue.lease(id, &name, Duration::ZERO).await?
                else {
                    break;
                };
                let leased = Instant::now();
                queue
                    .complete(lease.job_id, lease.lease_id, &report)
                    .await?;
                leases.push((leased - asked).as_secs_f64() * 1e3);
                completions.push(leased.elapsed().as_secs_f64() * 1e3);
            }
            anyhow::Ok((leases, completions))
        })
    });
    let (mut leases, mut completions) = (Vec::new(), Vec::new());
    for task in futures::future::join_all(tasks).await {
        let (l, c) = task??;
        leases.extend(l);
        completions.extend(c);
    }
    let seconds = started.elapsed().as_secs_f64();
    let completed = leases.len();
    anyhow::ensure!(completed == jobs, "{completed} of {jobs} jobs completed");
    println!(
        "{}",
        serde_json::json!({
            "bench": "dispatch",
            "database": dialect,
            "what": "jobs leased and completed through Queue + Store by in-process workers doing no work",
            "jobs": jobs,
            "workers": workers,
            "repo_max_running_jobs": repo_limit,
            "seconds": seconds,
            "jobs_per_second": jobs as f64 / seconds,
            "lease_ms": {"p50": quantile(&mut leases, 0.5), "p99": quantile(&mut leases, 0.99)},
            "complete_ms": {"p50": quantile(&mut completions, 0.5), "p99": quantile(&mut completions, 0.99)},
            "target_per_second": if dialect == "sqlite" { 2000 } else { 1000 },
        })
    );
    Ok(())
}
