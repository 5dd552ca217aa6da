//! Worker selection by labels (`runs-on` in docs/pipeline.md) and pending reasons: a job needing labels no worker has
//! stays queued and says so, in the API and on the dashboard, then runs when such a worker registers. Real
//! `gantry server` and `gantry worker` processes, on SQLite and on PostgreSQL.

mod support;

use std::time::Duration;
use support::eventually;
use support::farm::Farm;

on_both_databases!(
    a_job_waits_for_a_worker_with_its_labels_and_says_why,
    a_repository_at_its_limit_of_running_jobs_makes_the_next_wait_and_says_why,
);

async fn a_job_waits_for_a_worker_with_its_labels_and_says_why(database: Option<String>) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let _plain = farm.worker(&format!("plain-{tag}"));
    let repo = farm.hooked_repo("labels");
    repo.push_pipeline(
        "jobs:\n  anywhere:\n    steps: [echo anywhere]\n  big:\n    runs-on: [linux, big]\n    steps: [echo big]\n",
    );
    let waiting = eventually(
        "the plain job to finish",
        Duration::from_secs(60),
        || async {
            let p = farm.get("/repos/labels/pipelines/1").await;
            (p["jobs"][0]["status"] == "success").then_some(p)
        },
    )
    .await;
    let big = &waiting["jobs"][1];
    assert_eq!(big["status"], "queued", "{waiting:#}");
    assert_eq!(
        big["pending_reason"], "no worker has the labels linux, big",
        "{waiting:#}"
    );
    let page = farm.page("/repos/labels/pipelines/1").await;
    assert!(
        page.contains("no worker has the labels linux, big"),
        "the dashboard says why the job waits: {page}"
    );

    // Labels are the pool's: a pool that has them, and a worker in it.
    let (status, made) = farm
        .admin_call(
            reqwest::Method::POST,
            "/pools",
            Some(serde_json::json!({"name": "big", "provider": "manual", "labels": ["linux", "big"]})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let able = format!("big-{tag}");
    let worker = farm.worker_in_pool(&able, made["token"].as_str().unwrap(), &[]);
    let p = farm.finished_pipeline("labels", 1).await;
    assert_eq!(p["status"], "success", "{p:#}\n{}", worker.output());
    assert_eq!(p["jobs"][1]["worker"], able.as_str());
    assert!(p["jobs"][1].get("pending_reason").is_none(), "{p:#}");
}

async fn a_repository_at_its_limit_of_running_jobs_makes_the_next_wait_and_says_why(
    database: Option<String>,
) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let worker = farm.worker_with(&format!("roomy-{tag}"), &["--capacity", "2"]);
    let repo = farm.hooked_repo("limited");
    let out = farm.gantry(&["repo", "set", "limited", "--max-running-jobs", "1"]);
    assert!(out.contains("max_running_jobs 1"), "{out}");
    repo.push_pipeline("jobs:\n  one:\n    steps: [sleep 3]\n  two:\n    steps: [sleep 3]\n");
    let waiting = eventually(
        "one job to run and the other to wait",
        Duration::from_secs(60),
        || async {
            let p = farm.get("/repos/limited/pipelines/1").await;
            let jobs = p["jobs"].as_array()?;
            (jobs.iter().any(|j| j["status"] == "running")
                && jobs.iter().any(|j| j["status"] == "queued"))
            .then_some(p)
        },
    )
    .await;
    let queued = waiting["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["status"] == "queued")
        .unwrap();
    assert_eq!(
        queued["pending_reason"], "the repository's limit of 1 running jobs is reached",
        "{waiting:#}"
    );
    let p = farm.finished_pipeline("limited", 1).await;
    assert_eq!(p["status"], "success", "{p:#}\n{}", worker.output());
    let time = |j: &serde_json::Value, key: &str| {
        j[key]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let (one, two) = (&p["jobs"][0], &p["jobs"][1]);
    assert!(
        time(one, "finished_at") <= time(two, "started_at")
            || time(two, "finished_at") <= time(one, "started_at"),
        "the two jobs never ran at once: {p:#}"
    );
}
