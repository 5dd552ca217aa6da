//! Why a queued job waits (docs/data-model.md, "Pending reasons"), in words for the API and the dashboard.

use crate::store::{JobRecord, PoolRecord, WorkerRecord};
use gantry_model::JobStatus;

/// How many jobs a repository may run at once, and how many it runs now.
#[derive(Clone, Copy, Debug)]
pub struct RepoLimit {
    /// Its `max_running_jobs`.
    pub max: u32,
    /// Its jobs running now.
    pub running: u64,
}

/// Why `job` is still queued, judged from its pipeline's jobs, the registered workers, the pools (the workers
/// they are starting) and its repository's limit; none for a job that is not queued.
pub fn pending_reason(
    job: &JobRecord,
    pipeline_jobs: &[JobRecord],
    workers: &[WorkerRecord],
    pools: &[PoolRecord],
    limit: Option<RepoLimit>,
) -> Option<String> {
    if job.status != JobStatus::Queued {
        return None;
    }
    let waiting_for: Vec<&str> = job
        .spec
        .needs
        .iter()
        .map(|need| need.as_str())
        .filter(|need| {
            pipeline_jobs
                .iter()
                .any(|j| j.name == *need && j.status != JobStatus::Success)
        })
        .collect();
    if !waiting_for.is_empty() {
        return Some(format!("waiting for {}", waiting_for.join(", ")));
    }
    if let Some(limit) = limit.filter(|l| l.running >= u64::from(l.max)) {
        return Some(format!(
            "the repository's limit of {} running jobs is reached",
            limit.max
        ));
    }
    let wanted = &job.spec.runs_on;
    // A draining worker takes no new job: it is as good as gone.
    let workers: Vec<_> = workers.iter().filter(|w| w.state != "draining").collect();
    let able = workers
        .iter()
        .filter(|w| wanted.iter().all(|label| w.labels.contains(label)))
        .count();
    let coming: Vec<String> = pools
        .iter()
        .filter(|p| p.workers.booting > 0 && wanted.iter().all(|l| p.pool.labels.contains(l)))
        .map(|p| {
            let n = p.workers.booting;
            format!(
                "pool {} is starting {n} worker{}",
                p.pool.name,
                if n == 1 { "" } else { "s" }
            )
        })
        .collect();
    let why = why_no_worker(workers.is_empty(), able, wanted);
    Some(if coming.is_empty() {
        why
    } else {
        format!("{why}; {}", coming.join("; "))
    })
}

fn why_no_worker(none: bool, able: usize, wanted: &[String]) -> String {
    match (none, able, wanted.is_empty()) {
        (true, _, _) => "no worker is registered".into(),
        (false, 0, _) => format!("no worker has the labels {}", wanted.join(", ")),
        (false, 1, true) => "the worker is busy".into(),
        (false, n, true) => format!("all {n} workers are busy"),
        (false, 1, false) => format!(
            "the one worker with the labels {} is busy",
            wanted.join(", ")
        ),
        (false, n, false) => format!(
            "all {n} workers with the labels {} are busy",
            wanted.join(", ")
        ),
    }
}
