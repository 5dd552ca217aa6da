//! Why a queued job waits (DESIGN §3's pending reasons), in words for the API and the dashboard.

use crate::store::{JobRecord, WorkerRecord};
use gantry_model::JobStatus;

/// Why `job` is still queued, judged from its pipeline's jobs and the registered workers; none for a job that
/// is not queued.
pub fn pending_reason(
    job: &JobRecord,
    pipeline_jobs: &[JobRecord],
    workers: &[WorkerRecord],
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
    let wanted = &job.spec.runs_on;
    let able = workers
        .iter()
        .filter(|w| wanted.iter().all(|label| w.labels.contains(label)))
        .count();
    Some(match (workers.is_empty(), able, wanted.is_empty()) {
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
    })
}
