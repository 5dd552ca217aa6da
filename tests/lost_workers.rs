//! Nothing lost when a worker dies (docs/data-model.md): a job whose worker stops heartbeating goes back in the queue as
//! a new attempt and runs on another worker, and the lost worker's late calls get 409 and change nothing. Real
//! `gantry server` and `gantry worker` processes, on SQLite and on PostgreSQL; leases shortened to 2 s.

mod support;

use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::Duration;
use support::eventually;
use support::farm::Farm;

/// A slow job and one that needs it.
const PIPELINE: &str = "jobs:\n  slow:\n    steps:\n      - echo started\n      - sleep 3\n      - echo finished\n  after:\n    needs: [slow]\n    steps: [echo after]\n";

on_both_databases!(
    a_killed_workers_job_runs_again_on_another_worker_as_attempt_two,
    a_worker_presumed_dead_gets_409_for_its_late_calls_and_changes_nothing,
);

/// A worker name of this test's own: a worker's crash sweep removes whatever carries its name on this host, and
/// the tests run side by side.
fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

fn serve(database: Option<&str>) -> Farm {
    let mut flags = vec!["--lease-secs", "2"];
    if let Some(url) = database {
        flags.extend(["--database", url]);
    }
    Farm::serve_with(&flags)
}

/// Waits until the pipeline's first job runs on `worker` and its log shows `started`; returns the job's id.
async fn running_on(farm: &Farm, repo: &str, worker: &str) -> String {
    eventually(
        &format!("the job to start on {worker}"),
        Duration::from_secs(60),
        || async {
            let p = farm.get(&format!("/repos/{repo}/pipelines/1")).await;
            let job = &p["jobs"][0];
            if job["status"] != "running" || job["worker"] != worker {
                return None;
            }
            let id = job["id"].as_str()?.to_owned();
            let log = farm.get_bytes(&format!("/jobs/{id}/log")).await;
            log.starts_with(b"started\n").then_some(id)
        },
    )
    .await
}

fn slow_job(pipeline: &Value) -> &Value {
    &pipeline["jobs"][0]
}

/// The pipeline ended well, with the slow job on its second attempt on `second`, whose log is all of the second
/// attempt's output and nothing else, while the first attempt's log kept what it had.
async fn assert_second_attempt_won(farm: &Farm, repo: &str, id: &str, second: &str) {
    let p = farm.finished_pipeline(repo, 1).await;
    assert_eq!(p["status"], "success", "{p:#}");
    let job = slow_job(&p);
    assert_eq!(
        (&job["status"], &job["attempt"], &job["worker"]),
        (
            &Value::from("success"),
            &Value::from(2),
            &Value::from(second)
        ),
        "{p:#}"
    );
    assert_eq!(p["jobs"][1]["status"], "success", "{p:#}");
    let log = farm.get_bytes(&format!("/jobs/{id}/log")).await;
    assert_eq!(String::from_utf8_lossy(&log), "started\nfinished\n");
    let first = farm.get_bytes(&format!("/jobs/{id}/log?attempt=1")).await;
    assert_eq!(String::from_utf8_lossy(&first), "started\n");
}

async fn a_killed_workers_job_runs_again_on_another_worker_as_attempt_two(
    database: Option<String>,
) {
    let farm = serve(database.as_deref());
    let repo = farm.hooked_repo("killed");
    let (first_name, second_name) = (unique("first"), unique("second"));
    let mut first = farm.worker(&first_name);
    repo.push_pipeline(PIPELINE);
    let id = running_on(&farm, "killed", &first_name).await;
    first.kill();
    let second = farm.worker(&second_name);
    assert_second_attempt_won(&farm, "killed", &id, &second_name).await;
    drop(second);
    // The killed worker's container died with it (tests/worker_death.rs); a restart of the worker sweeps what
    // it left on disk (and reports the lost job, which the server answers with 409).
    let restarted = farm.worker(&first_name);
    eventually(
        "the restarted worker to sweep and register",
        Duration::from_secs(60),
        || async { restarted.output().contains("registered").then_some(()) },
    )
    .await;
    let p = farm.finished_pipeline("killed", 1).await;
    assert_eq!(
        slow_job(&p)["attempt"],
        2,
        "the restart changed nothing: {p:#}"
    );
}

async fn a_worker_presumed_dead_gets_409_for_its_late_calls_and_changes_nothing(
    database: Option<String>,
) {
    let farm = serve(database.as_deref());
    let repo = farm.hooked_repo("stopped");
    let (first_name, second_name) = (unique("first"), unique("second"));
    let first = farm.worker(&first_name);
    repo.push_pipeline(PIPELINE);
    let id = running_on(&farm, "stopped", &first_name).await;
    // Stopped, not dead: its job's lease runs out, but it wakes up later and carries on where it was.
    first.signal(Signal::SIGSTOP);
    let second = farm.worker(&second_name);
    assert_second_attempt_won(&farm, "stopped", &id, &second_name).await;
    first.signal(Signal::SIGCONT);
    eventually(
        "the woken worker to hear that its lease is gone",
        Duration::from_secs(60),
        || async { first.output().contains("the lease was lost").then_some(()) },
    )
    .await;
    assert_second_attempt_won(&farm, "stopped", &id, &second_name).await;
    drop(second);
}
