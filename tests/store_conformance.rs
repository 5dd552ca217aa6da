//! The storage conformance suite: every case runs against a real SQLite file and a real PostgreSQL server (a
//! throwaway one the harness starts), through the same `Store` interface the server uses.

mod support;

use chrono::Utc;
use gantry_model::junit::{TestCase, TestStatus};
use gantry_model::wire::{CompleteRequest, PullRequest, StepReport};
use gantry_model::{FailureKind, JobStatus, Pipeline, PipelineStatus};
use gantry_server::store::{
    self, Claim, NewArtifact, NewDelivery, NewJob, NewPipeline, NewRepoRecord, NewWorker,
    RepoCredential, Store, StoreError, TokenRecord,
};
use std::sync::Arc;
use uuid::Uuid;

type Db = Arc<dyn Store>;

/// A store on `url`, or on a SQLite file of its own.
async fn open_store(url: Option<String>) -> Db {
    let url = url.unwrap_or_else(|| {
        let dir = support::scratch_dir("store");
        format!("sqlite://{}", dir.join("gantry.db").display())
    });
    store::connect(&url).await.unwrap()
}

on_both_databases!(
    with crate::open_store;
    first_start_tokens_are_made_once,
    api_tokens_have_a_unique_name_a_scope_and_are_revoked_at_once,
    repositories_have_unique_names,
    a_delivery_creates_one_numbered_pipeline_and_a_redelivery_nothing,
    preparing_stores_jobs_once_and_failing_records_the_reason,
    only_ready_jobs_are_claimed_and_a_failure_skips_what_needs_it,
    two_claimers_racing_for_one_job_a_thousand_times_win_it_once_each_time,
    two_jobs_ending_at_the_same_instant_settle_their_pipeline,
    an_expired_lease_requeues_the_job_as_a_new_attempt_until_the_retries_run_out,
    cancelling_ends_waiting_jobs_and_asks_running_ones_to_stop,
    cancelling_one_job_leaves_the_others_of_its_pipeline_alone,
    a_newer_push_supersedes_the_unfinished_pipelines_of_its_branch,
    jobs_go_only_to_workers_with_all_their_labels,
    the_claim_takes_priority_first_and_keeps_a_repository_under_its_limit,
    claims_racing_never_run_more_of_a_repository_than_its_limit,
    a_report_of_thousands_of_test_cases_is_stored_whole_and_once,
    a_failed_job_runs_again_as_often_as_its_retry_says,
    a_finished_pipeline_retried_runs_what_did_not_succeed_again,
    an_attempt_lost_to_gantry_itself_runs_again_up_to_the_automatic_retries,
    artifacts_are_indexed_per_attempt_under_the_lease,
    jobs_filtered_out_by_when_are_skipped_and_a_filtered_pipeline_is_dropped,
    test_cases_of_every_shard_add_up_in_the_pipeline,
    log_appends_are_idempotent_contiguous_and_capped,
    calls_with_a_stale_lease_change_nothing,
    workers_register_by_name_and_get_a_token,
    a_pull_request_pipeline_keeps_its_request_through_the_claim,
    repository_credentials_are_stored_sealed_and_removed,
    deliveries_are_kept_newest_first_with_their_outcome_and_pruned,
    commit_statuses_are_written_for_repositories_with_a_token_and_posted_in_order,
    a_pending_status_followed_by_another_is_superseded_but_never_the_one_before_the_end,
    a_claimed_status_waits_for_its_hold_or_its_retry_and_a_failed_one_lets_the_next_go,
    a_dropped_pipeline_takes_its_unsent_statuses_with_it,
    repository_secrets_are_set_listed_without_values_and_removed,
    the_claim_says_whether_the_repository_has_secrets_and_credentials,
    what_a_claim_and_a_completion_write_reads_back_the_same_everywhere,
);

#[path = "store_conformance/commit_statuses.rs"]
mod commit_statuses;
use commit_statuses::*;
#[path = "store_conformance/repo_limits.rs"]
mod repo_limits;
use repo_limits::*;
#[path = "store_conformance/test_reports.rs"]
mod test_reports;
use test_reports::*;

async fn repo(db: &Db, name: &str) -> i64 {
    let r = NewRepoRecord {
        name: name.into(),
        url: format!("/srv/{name}.git"),
        forge: "git".into(),
        forge_full_name: None,
        secret: "s3cretsecret".into(),
    };
    db.create_repo(&r).await.unwrap().id
}

fn delivery(repo_id: i64, id: &str) -> NewPipeline {
    NewPipeline {
        delivery: NewDelivery {
            repo_id,
            delivery_id: id.into(),
            forge: "git".into(),
            event: "push".into(),
            body: b"{}".to_vec(),
        },
        commit: "a".repeat(40),
        git_ref: "refs/heads/main".into(),
        event: "push".into(),
        author: Some("someone".into()),
        message: None,
        pull_request: None,
    }
}

/// A prepared pipeline from pipeline-file text; returns its id and its jobs' ids in file order.
async fn pipeline(db: &Db, repo_id: i64, delivery_id: &str, yaml: &str) -> (Uuid, Vec<Uuid>) {
    let created = db
        .create_pipeline(&delivery(repo_id, delivery_id))
        .await
        .unwrap();
    let jobs: Vec<NewJob> = Pipeline::parse(yaml)
        .unwrap()
        .jobs
        .into_iter()
        .map(|spec| NewJob {
            id: Uuid::now_v7(),
            spec,
            skipped: None,
        })
        .collect();
    let ids = jobs.iter().map(|j| j.id).collect();
    db.add_jobs(created.id, &jobs).await.unwrap();
    (created.id, ids)
}

fn quota(attempt: u32, used_bytes: u64) -> store::ArtifactQuota {
    store::ArtifactQuota {
        attempt,
        used_bytes,
    }
}

fn sealed(name: &str, value: &[u8]) -> store::SealedSecret {
    store::SealedSecret {
        name: name.into(),
        sealed: value.to_vec(),
    }
}

fn claim(worker: Uuid) -> Claim {
    Claim {
        worker_id: worker,
        worker_name: "w".into(),
        lease_id: Uuid::now_v7(),
        deadline_ms: Utc::now().timestamp_millis() + 10_000,
    }
}

async fn worker(db: &Db, name: &str) -> Uuid {
    if db.list_pools().await.unwrap().is_empty() {
        db.bootstrap("admin-hash", "pool-hash").await.unwrap();
    }
    let w = NewWorker {
        name: name.into(),
        pool: "default".into(),
        labels: vec!["linux".into()],
        capacity: 2,
        protocol_version: 1,
    };
    db.register_worker(&w, &format!("token-of-{name}"))
        .await
        .unwrap()
}

/// A repository with a one-job pipeline whose job a worker has leased; returns the job and its lease.
async fn one_running_job(db: &Db, name: &str) -> (Uuid, Uuid) {
    let w = worker(db, &format!("{name}-worker")).await;
    let r = repo(db, name).await;
    let (_, ids) = pipeline(db, r, &format!("{name}-1"), "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db
        .claim_job(&claim(w))
        .await
        .unwrap()
        .expect("the job is ready");
    (ids[0], claimed.job.lease_id.unwrap())
}

fn report(exit_code: i32) -> CompleteRequest {
    CompleteRequest {
        exit_code: Some(exit_code),
        failure_kind: None,
        message: None,
        steps: vec![StepReport {
            index: 0,
            command: "true".into(),
            log_offset: 0,
            started_at: Utc::now(),
            finished_at: Some(Utc::now()),
            exit_code: Some(exit_code),
        }],
        log_length: 0,
        cpu_seconds: Some(0.5),
        peak_memory_bytes: Some(1 << 20),
        tests: Vec::new(),
        no_retry: false,
    }
}

async fn api_tokens_have_a_unique_name_a_scope_and_are_revoked_at_once(db: Db) {
    use gantry_model::wire::Scope;
    let made = db
        .create_api_token("deploy-bot", Scope::Write, "hash-of-deploy-bot")
        .await
        .unwrap();
    assert_eq!(
        (made.name.as_str(), made.scope),
        ("deploy-bot", Scope::Write)
    );
    db.create_api_token("auditor", Scope::Read, "hash-of-auditor")
        .await
        .unwrap();
    let taken = db
        .create_api_token("auditor", Scope::Admin, "another-hash")
        .await
        .unwrap_err();
    assert!(
        matches!(taken, StoreError::Conflict(_)),
        "a name is taken once: {taken}"
    );
    assert_eq!(
        db.find_token("hash-of-deploy-bot").await.unwrap(),
        Some(TokenRecord::Api {
            name: "deploy-bot".into(),
            scope: Scope::Write
        })
    );
    assert_eq!(db.find_token("another-hash").await.unwrap(), None);
    let listed: Vec<_> = db
        .list_api_tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.scope))
        .collect();
    assert_eq!(
        listed,
        [
            ("auditor".into(), Scope::Read),
            ("deploy-bot".into(), Scope::Write)
        ]
    );
    assert!(db.revoke_api_token("auditor").await.unwrap());
    assert!(!db.revoke_api_token("auditor").await.unwrap());
    assert_eq!(db.find_token("hash-of-auditor").await.unwrap(), None);
    // The admin token is not an API token: it is neither listed nor revoked by name.
    db.set_admin_token("the-admin").await.unwrap();
    assert_eq!(db.list_api_tokens().await.unwrap().len(), 1);
    assert!(!db.revoke_api_token("admin").await.unwrap());
}

async fn first_start_tokens_are_made_once(db: Db) {
    assert!(db.bootstrap("admin1", "pool1").await.unwrap());
    assert!(
        !db.bootstrap("admin2", "pool2").await.unwrap(),
        "a second start must not make new tokens"
    );
    assert_eq!(
        db.find_token("admin1").await.unwrap(),
        Some(TokenRecord::Admin)
    );
    assert_eq!(
        db.find_token("pool1").await.unwrap(),
        Some(TokenRecord::Pool("default".into()))
    );
    assert_eq!(db.find_token("admin2").await.unwrap(), None);
    db.set_admin_token("configured").await.unwrap();
    db.set_admin_token("configured").await.unwrap();
    assert_eq!(
        db.find_token("configured").await.unwrap(),
        Some(TokenRecord::Admin)
    );
    assert_eq!(
        db.find_token("admin1").await.unwrap(),
        None,
        "a configured admin token revokes the others"
    );
    db.add_pool_token("pool3", "default").await.unwrap();
    assert_eq!(
        db.find_token("pool3").await.unwrap(),
        Some(TokenRecord::Pool("default".into()))
    );
}

async fn repositories_have_unique_names(db: Db) {
    repo(&db, "b-repo").await;
    repo(&db, "a-repo").await;
    let again = NewRepoRecord {
        name: "a-repo".into(),
        url: "/x".into(),
        forge: "git".into(),
        forge_full_name: None,
        secret: "s".repeat(10),
    };
    assert!(matches!(
        db.create_repo(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = db
        .list_repos()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a-repo", "b-repo"]);
    let a = db.get_repo("a-repo").await.unwrap().unwrap();
    assert_eq!(a.url, "/srv/a-repo.git");
    assert_eq!(a.secret, "s3cretsecret");
    assert!(db.get_repo("nope").await.unwrap().is_none());
}

async fn a_delivery_creates_one_numbered_pipeline_and_a_redelivery_nothing(db: Db) {
    let r = repo(&db, "numbered").await;
    let other = repo(&db, "other").await;
    let first = db.create_pipeline(&delivery(r, "d1")).await.unwrap();
    let second = db.create_pipeline(&delivery(r, "d2")).await.unwrap();
    let elsewhere = db.create_pipeline(&delivery(other, "d1")).await.unwrap();
    assert_eq!(
        (first.number, second.number, elsewhere.number),
        (1, 2, 1),
        "pipelines are numbered per repository"
    );
    let again = db.create_pipeline(&delivery(r, "d1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.id, again.number), (first.id, 1));
    let listed = db.list_pipelines("numbered", None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.number).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    assert_eq!(
        db.list_pipelines("numbered", Some(2), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let p = db.get_pipeline("numbered", 1).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.prepared, p.commit.len()),
        (PipelineStatus::Queued, false, 40)
    );
    assert_eq!(db.unprepared_pipelines().await.unwrap().len(), 3);
    db.record_ignored_delivery(&delivery(r, "ping-1").delivery, "ping")
        .await
        .unwrap();
    assert_eq!(
        db.list_pipelines("numbered", None, 10).await.unwrap().len(),
        2
    );
    assert!(db.recent_pipelines(10).await.unwrap().len() >= 3);
}

async fn preparing_stores_jobs_once_and_failing_records_the_reason(db: Db) {
    let r = repo(&db, "prep").await;
    let (id, jobs) = pipeline(
        &db,
        r,
        "p1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n",
    )
    .await;
    let again: Vec<NewJob> = Pipeline::parse("jobs:\n  z:\n    steps: [x]\n")
        .unwrap()
        .jobs
        .into_iter()
        .map(|spec| NewJob {
            id: Uuid::now_v7(),
            spec,
            skipped: None,
        })
        .collect();
    db.add_jobs(id, &again).await.unwrap();
    let stored = db.pipeline_jobs(id).await.unwrap();
    assert_eq!(
        stored.iter().map(|j| j.id).collect::<Vec<_>>(),
        jobs,
        "a second preparation must add nothing"
    );
    assert_eq!(stored[1].spec.needs[0].as_str(), "a");
    assert!(db.unprepared_pipelines().await.unwrap().is_empty());
    let bad = db.create_pipeline(&delivery(r, "p2")).await.unwrap();
    db.fail_pipeline(bad.id, ".gantry.yml line 3: bad")
        .await
        .unwrap();
    let p = db.get_pipeline_by_id(bad.id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Error);
    assert_eq!(p.error.as_deref(), Some(".gantry.yml line 3: bad"));
    assert!(p.finished_at.is_some());
}

async fn only_ready_jobs_are_claimed_and_a_failure_skips_what_needs_it(db: Db) {
    let w = worker(&db, "claimer").await;
    let r = repo(&db, "dag").await;
    let (pid, ids) = pipeline(&db, r, "dag1", "jobs:\n  build:\n    steps: [x]\n  test:\n    needs: [build]\n    steps: [y]\n  report:\n    needs: [test]\n    steps: [z]\n  lint:\n    steps: [l]\n").await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        [first.job.id, second.job.id],
        [ids[0], ids[3]],
        "only jobs without unmet needs, oldest first"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "test must wait for build"
    );
    assert_eq!(first.job.attempt, 1);
    assert_eq!(first.job.status, JobStatus::Running);
    assert_eq!(first.clone_url, "/srv/dag.git");
    assert_eq!(
        db.get_pipeline_by_id(pid).await.unwrap().unwrap().status,
        PipelineStatus::Running
    );

    let lease = first.job.lease_id.unwrap();
    let done = db.complete_job(ids[0], lease, &report(0)).await.unwrap();
    assert_eq!(
        (done.status, done.pipeline_status),
        (JobStatus::Success, PipelineStatus::Running)
    );
    let test = db
        .claim_job(&claim(w))
        .await
        .unwrap()
        .expect("test is ready once build succeeded");
    assert_eq!(test.job.id, ids[1]);
    let mut failed = report(3);
    failed.message = Some("step 1 exited with 3".into());
    let done = db
        .complete_job(ids[1], test.job.lease_id.unwrap(), &failed)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.skipped, [ids[2]], "the job that needed it is skipped");
    let report_job = db.get_job(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        report_job.status,
        JobStatus::Skipped,
        "a job whose need failed is skipped, not run"
    );
    let done = db
        .complete_job(ids[3], second.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Failed);
    let done = db.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (done.exit_code, done.failure_kind),
        (Some(3), Some(FailureKind::Exit))
    );
    assert_eq!(done.message.as_deref(), Some("step 1 exited with 3"));
    assert_eq!(done.peak_memory_bytes, Some(1 << 20));
    assert_eq!(db.job_steps(ids[1], 1).await.unwrap()[0].exit_code, Some(3));
    assert!(
        db.get_pipeline_by_id(pid)
            .await
            .unwrap()
            .unwrap()
            .finished_at
            .is_some()
    );
}

async fn two_claimers_racing_for_one_job_a_thousand_times_win_it_once_each_time(db: Db) {
    let w = worker(&db, "racer").await;
    let r = repo(&db, "race").await;
    for round in 0..1000 {
        pipeline(
            &db,
            r,
            &format!("race-{round}"),
            "jobs:\n  only:\n    steps: [x]\n",
        )
        .await;
        let (ca, cb) = (claim(w), claim(w));
        let (a, b) = tokio::join!(db.claim_job(&ca), db.claim_job(&cb));
        let winners = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
        assert_eq!(winners, 1, "round {round}: exactly one claimer must win");
    }
}

async fn an_expired_lease_requeues_the_job_as_a_new_attempt_until_the_retries_run_out(db: Db) {
    let w = worker(&db, "mortal").await;
    let r = repo(&db, "expiry").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "expiry-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n",
    )
    .await;
    let (a, b) = (ids[0], ids[1]);
    let now = || Utc::now().timestamp_millis();
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lost_lease = first.job.lease_id.unwrap();
    db.append_log(a, lost_lease, 0, b"attempt one\n", 1000)
        .await
        .unwrap();
    assert_eq!(
        db.expire_leases(now(), 1).await.unwrap(),
        vec![],
        "a lease within its deadline stays"
    );
    let expired = db.expire_leases(now() + 20_000, 1).await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        (expired[0].job, expired[0].attempt, &expired[0].outcome),
        (a, 1, &store::ExpiredOutcome::Requeued)
    );
    let job = db.get_job(a).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert!(
        job.message
            .as_deref()
            .unwrap_or("")
            .contains("stopped answering"),
        "{job:?}"
    );
    // The lost worker's late calls change nothing.
    assert!(matches!(
        db.heartbeat(a, lost_lease, now() + 10_000).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.append_log(a, lost_lease, 12, b"late\n", 1000).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.complete_job(a, lost_lease, &report(0)).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.get_job(a).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!((second.job.id, second.job.attempt), (a, 2));
    let lease = second.job.lease_id.unwrap();
    db.append_log(a, lease, 0, b"attempt two\n", 1000)
        .await
        .unwrap();
    assert_eq!(
        db.read_log(a, 2, 0, usize::MAX).await.unwrap(),
        b"attempt two\n"
    );
    assert_eq!(
        db.read_log(a, 1, 0, usize::MAX).await.unwrap(),
        b"attempt one\n",
        "each attempt keeps its own log"
    );
    // The one automatic retry is used up: the next loss ends the job, and what needs it is skipped.
    let expired = db.expire_leases(now() + 20_000, 1).await.unwrap();
    let store::ExpiredOutcome::Ended(done) = &expired[0].outcome else {
        panic!("the job must end once its retries are used up: {expired:?}");
    };
    assert_eq!(done.status, JobStatus::Error);
    assert_eq!(done.pipeline_status, PipelineStatus::Error);
    assert_eq!(done.skipped, vec![b]);
    let job = db.get_job(a).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.failure_kind, job.attempt),
        (JobStatus::Error, Some(FailureKind::WorkerLost), 2)
    );
    assert!(job.finished_at.is_some());
    let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Error);
}

async fn cancelling_ends_waiting_jobs_and_asks_running_ones_to_stop(db: Db) {
    let w = worker(&db, "canceller").await;
    let r = repo(&db, "cancels").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "cancel-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    steps: [y]\n  c:\n    needs: [a]\n    steps: [z]\n",
    )
    .await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, ids[0]);
    let lease = claimed.job.lease_id.unwrap();
    let deadline = Utc::now().timestamp_millis() + 10_000;
    assert!(!db.heartbeat(ids[0], lease, deadline).await.unwrap());

    let mut done = db.cancel_pipeline(pipeline_id).await.unwrap();
    done.ended.sort_by_key(|(id, _)| *id); // UPDATE … RETURNING has no order; ids are UUIDv7
    assert_eq!(
        done.ended,
        vec![(ids[1], JobStatus::Cancelled), (ids[2], JobStatus::Skipped)]
    );
    assert_eq!(done.stopping, vec![ids[0]]);
    assert_eq!(done.pipeline_status, Some(PipelineStatus::Running));
    assert!(
        db.heartbeat(ids[0], lease, deadline).await.unwrap(),
        "the running job's heartbeat says it is cancelled"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "nothing of a cancelled pipeline is leased"
    );
    let mut stopped = report(137);
    stopped.failure_kind = Some(FailureKind::Cancelled);
    let completed = db.complete_job(ids[0], lease, &stopped).await.unwrap();
    assert_eq!(
        (completed.status, completed.pipeline_status),
        (JobStatus::Cancelled, PipelineStatus::Cancelled)
    );
    let again = db.cancel_pipeline(pipeline_id).await.unwrap();
    assert_eq!(
        again,
        Default::default(),
        "a finished pipeline is left alone"
    );

    // Cancelled before its file was read: it ends at once, and preparing it later adds nothing.
    let early = db.create_pipeline(&delivery(r, "cancel-2")).await.unwrap();
    let done = db.cancel_pipeline(early.id).await.unwrap();
    assert_eq!(done.pipeline_status, Some(PipelineStatus::Cancelled));
    let late = NewJob {
        id: Uuid::now_v7(),
        skipped: None,
        spec: Pipeline::parse("jobs:\n  a:\n    steps: [x]\n")
            .unwrap()
            .jobs
            .remove(0),
    };
    db.add_jobs(early.id, &[late]).await.unwrap();
    assert!(db.pipeline_jobs(early.id).await.unwrap().is_empty());
    let p = db.get_pipeline_by_id(early.id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Cancelled);
}

async fn jobs_go_only_to_workers_with_all_their_labels(db: Db) {
    let plain = worker(&db, "plain").await;
    let r = repo(&db, "labels").await;
    let (_, ids) = pipeline(
        &db,
        r,
        "labels-1",
        "jobs:\n  big:\n    runs-on: [linux, big]\n    steps: [x]\n  any:\n    steps: [y]\n",
    )
    .await;
    let first = db.claim_job(&claim(plain)).await.unwrap().unwrap();
    assert_eq!(
        first.job.id, ids[1],
        "the older job needs a label the worker lacks"
    );
    assert!(db.claim_job(&claim(plain)).await.unwrap().is_none());
    let w = NewWorker {
        name: "big-one".into(),
        pool: "default".into(),
        labels: vec!["gpu".into(), "big".into(), "linux".into()],
        capacity: 1,
        protocol_version: 1,
    };
    let big = db.register_worker(&w, "token-of-big-one").await.unwrap();
    let second = db.claim_job(&claim(big)).await.unwrap().unwrap();
    assert_eq!(second.job.id, ids[0]);
    assert_eq!(second.job.spec.runs_on, ["linux", "big"]);
}

async fn a_failed_job_runs_again_as_often_as_its_retry_says(db: Db) {
    let w = worker(&db, "retrier").await;
    let r = repo(&db, "retries").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "retry-1",
        "jobs:\n  flaky:\n    retry: 2\n    steps: [x]\n  after:\n    needs: [flaky]\n    steps: [y]\n",
    )
    .await;
    for attempt in 1..=2 {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        assert_eq!((claimed.job.id, claimed.job.attempt), (ids[0], attempt));
        let done = db
            .complete_job(ids[0], claimed.job.lease_id.unwrap(), &report(3))
            .await
            .unwrap();
        assert_eq!(
            (done.status, done.pipeline_status),
            (JobStatus::Queued, PipelineStatus::Running),
            "attempt {attempt} failed and is retried"
        );
        let job = db.get_job(ids[0]).await.unwrap().unwrap();
        assert!(
            job.message
                .unwrap_or_default()
                .contains(&format!("retry {attempt} of 2")),
            "the message says which retry"
        );
    }
    let last = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(last.job.attempt, 3);
    let done = db
        .complete_job(ids[0], last.job.lease_id.unwrap(), &report(3))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Failed, "retries are used up");
    assert_eq!(done.skipped, vec![ids[1]]);
    assert_eq!(
        db.get_pipeline_by_id(pipeline_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        PipelineStatus::Failed
    );
    assert_eq!(
        db.job_steps(ids[0], 1).await.unwrap().len(),
        1,
        "each attempt keeps its steps"
    );
}

async fn jobs_filtered_out_by_when_are_skipped_and_a_filtered_pipeline_is_dropped(db: Db) {
    let r = repo(&db, "filters").await;
    let created = db.create_pipeline(&delivery(r, "when-1")).await.unwrap();
    let specs = Pipeline::parse(
        "jobs:\n  build:\n    steps: [x]\n  deploy:\n    steps: [y]\n  notify:\n    needs: [deploy]\n    steps: [z]\n",
    )
    .unwrap()
    .jobs;
    let jobs: Vec<NewJob> = specs
        .into_iter()
        .map(|spec| NewJob {
            id: Uuid::now_v7(),
            skipped: (spec.name.as_str() == "deploy")
                .then(|| "not run: its when filters it out".to_owned()),
            spec,
        })
        .collect();
    db.add_jobs(created.id, &jobs).await.unwrap();
    let stored = db.pipeline_jobs(created.id).await.unwrap();
    let statuses: Vec<_> = stored.iter().map(|j| (j.name.as_str(), j.status)).collect();
    assert_eq!(
        statuses,
        [
            ("build", JobStatus::Queued),
            ("deploy", JobStatus::Skipped),
            ("notify", JobStatus::Skipped)
        ]
    );
    assert_eq!(
        stored[1].message.as_deref(),
        Some("not run: its when filters it out")
    );
    let w = worker(&db, "filtered").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(claimed.job.name, "build");
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "skipped jobs are never leased"
    );
    let done = db
        .complete_job(claimed.job.id, claimed.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Success);

    // A pipeline whose file filters it out is removed; its delivery stays, so a redelivery creates nothing.
    let dropped = db.create_pipeline(&delivery(r, "when-2")).await.unwrap();
    db.drop_pipeline(dropped.id, "the branch is feature")
        .await
        .unwrap();
    assert!(db.get_pipeline_by_id(dropped.id).await.unwrap().is_none());
    assert!(matches!(
        db.create_pipeline(&delivery(r, "when-2")).await,
        Err(StoreError::Conflict(_))
    ));
    // Cancelled before its file was read: neither dropping nor failing it undoes the cancel.
    let cancelled = db.create_pipeline(&delivery(r, "when-3")).await.unwrap();
    db.cancel_pipeline(cancelled.id).await.unwrap();
    db.drop_pipeline(cancelled.id, "the branch is feature")
        .await
        .unwrap();
    db.fail_pipeline(cancelled.id, "cannot fetch")
        .await
        .unwrap();
    let kept = db.get_pipeline_by_id(cancelled.id).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.error), (PipelineStatus::Cancelled, None));
}

async fn r_fork_host_image(db: &Db, name: &str) -> bool {
    db.get_repo(name).await.unwrap().unwrap().fork_host_image
}

async fn a_newer_push_supersedes_the_unfinished_pipelines_of_its_branch(db: Db) {
    let r = repo(&db, "superseded").await;
    assert!(
        !r_fork_host_image(&db, "superseded").await,
        "forks use the host only when asked"
    );
    let stored = db.get_repo("superseded").await.unwrap().unwrap();
    assert!(
        !stored.private,
        "repositories are public unless made private"
    );
    let settings = gantry_model::wire::RepoSettings {
        cancel_previous: Some(true),
        fork_host_image: Some(true),
        max_running_jobs: Some(3),
        private: Some(true),
        ..Default::default()
    };
    let updated = db
        .update_repo_settings("superseded", &settings)
        .await
        .unwrap();
    assert_eq!(
        (
            updated.cancel_previous,
            updated.fork_host_image,
            updated.max_running_jobs,
            updated.private,
        ),
        (true, true, Some(3), true)
    );
    let lifted = gantry_model::wire::RepoSettings {
        cancel_previous: None,
        max_running_jobs: Some(0),
        ..Default::default()
    };
    let updated = db
        .update_repo_settings("superseded", &lifted)
        .await
        .unwrap();
    assert_eq!(
        (updated.cancel_previous, updated.max_running_jobs),
        (true, None)
    );
    assert!(matches!(
        db.update_repo_settings("nope", &lifted).await,
        Err(StoreError::NotFound(_))
    ));

    let yaml = "jobs:\n  a:\n    steps: [x]\n";
    let (first, _) = pipeline(&db, r, "sup-1", yaml).await;
    let mut other_branch = delivery(r, "sup-2");
    other_branch.git_ref = "refs/heads/feature".into();
    let other = db.create_pipeline(&other_branch).await.unwrap();
    let (newest, _) = pipeline(&db, r, "sup-3", yaml).await;
    let newer = db.get_pipeline_by_id(newest).await.unwrap().unwrap();
    let cancelled = db.supersede_pipelines(&newer).await.unwrap();
    assert_eq!(cancelled.iter().map(|c| c.0).collect::<Vec<_>>(), [first]);
    let old = db.get_pipeline_by_id(first).await.unwrap().unwrap();
    assert_eq!(old.status, PipelineStatus::Cancelled);
    assert!(old.error.unwrap().contains("superseded by #3"));
    let untouched = db.get_pipeline_by_id(other.id).await.unwrap().unwrap();
    assert_eq!(
        untouched.status,
        PipelineStatus::Queued,
        "another branch's pipeline stays"
    );
    assert_eq!(
        db.get_pipeline_by_id(newest).await.unwrap().unwrap().status,
        PipelineStatus::Queued
    );
}

async fn the_claim_takes_priority_first_and_keeps_a_repository_under_its_limit(db: Db) {
    let w = worker(&db, "prioritised").await;
    let limited = repo(&db, "limited").await;
    let free = repo(&db, "free").await;
    let limit = gantry_model::wire::RepoSettings {
        cancel_previous: None,
        max_running_jobs: Some(1),
        ..Default::default()
    };
    db.update_repo_settings("limited", &limit).await.unwrap();
    let (_, ids) = pipeline(
        &db,
        limited,
        "prio-1",
        "jobs:\n  low:\n    steps: [x]\n  high:\n    priority: 10\n    steps: [y]\n",
    )
    .await;
    let (_, other) = pipeline(&db, free, "prio-2", "jobs:\n  any:\n    steps: [z]\n").await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(first.job.id, ids[1], "the higher priority goes first");
    assert_eq!(db.running_jobs(limited).await.unwrap(), 1);
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        second.job.id, other[0],
        "the limited repository waits; another goes ahead"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "the limit holds"
    );
    db.complete_job(ids[1], first.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    let third = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        third.job.id, ids[0],
        "a slot of the repository is free again"
    );
}

async fn an_attempt_lost_to_gantry_itself_runs_again_up_to_the_automatic_retries(db: Db) {
    let (job, lease) = one_running_job(&db, "infra-lost").await;
    let mut lost = report(0);
    lost.exit_code = None;
    lost.failure_kind = Some(FailureKind::WorkerLost);
    lost.message = Some("the worker stopped while running this job".into());
    let again = db
        .requeue_infra(job, lease, &lost, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status, JobStatus::Queued);
    let queued = db.get_job(job).await.unwrap().unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    let message = queued.message.unwrap();
    assert!(
        message.contains("automatic retry 1 of 1") && message.contains("stopped"),
        "{message}"
    );
    assert!(
        db.requeue_infra(job, lease, &lost, 1)
            .await
            .unwrap()
            .is_none(),
        "the old lease requeues nothing"
    );
    let w = worker(&db, "infra-lost-2").await;
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(second.job.attempt, 2);
    let lease2 = second.job.lease_id.unwrap();
    assert!(
        db.requeue_infra(job, lease2, &lost, 1)
            .await
            .unwrap()
            .is_none(),
        "the automatic retries are used up"
    );
    let done = db.complete_job(job, lease2, &lost).await.unwrap();
    assert_eq!(done.status, JobStatus::Error);
}

async fn cancelling_one_job_leaves_the_others_of_its_pipeline_alone(db: Db) {
    let w = worker(&db, "one-job-cancel").await;
    let r = repo(&db, "one-job").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "one-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n  c:\n    steps: [z]\n",
    )
    .await;
    let running = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(running.job.id, ids[0]);
    let waiting = db.cancel_job(pipeline_id, ids[1]).await.unwrap();
    assert_eq!(waiting.ended, vec![(ids[1], JobStatus::Skipped)]);
    assert!(waiting.stopping.is_empty());
    let stopping = db.cancel_job(pipeline_id, ids[0]).await.unwrap();
    assert_eq!(
        (stopping.ended.len(), stopping.stopping.as_slice()),
        (0, &[ids[0]][..])
    );
    assert!(
        db.heartbeat(ids[0], running.job.lease_id.unwrap(), 0)
            .await
            .unwrap(),
        "told to stop"
    );
    let other = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(other.job.id, ids[2], "the independent job still runs");
    let mut cancelled = report(137);
    cancelled.failure_kind = Some(FailureKind::Cancelled);
    db.complete_job(ids[0], running.job.lease_id.unwrap(), &cancelled)
        .await
        .unwrap();
    let done = db
        .complete_job(ids[2], other.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Cancelled);
}

async fn two_jobs_ending_at_the_same_instant_settle_their_pipeline(db: Db) {
    let w = worker(&db, "settler").await;
    let r = repo(&db, "settle").await;
    for round in 0..50 {
        let (pipeline_id, _) = pipeline(
            &db,
            r,
            &format!("settle-{round}"),
            "jobs:\n  a:\n    steps: [x]\n  b:\n    steps: [y]\n",
        )
        .await;
        let first = db.claim_job(&claim(w)).await.unwrap().unwrap().job;
        let second = db.claim_job(&claim(w)).await.unwrap().unwrap().job;
        let done = report(0);
        let (one, two) = tokio::join!(
            db.complete_job(first.id, first.lease_id.unwrap(), &done),
            db.complete_job(second.id, second.lease_id.unwrap(), &done),
        );
        let statuses = [one.unwrap().pipeline_status, two.unwrap().pipeline_status];
        assert!(
            statuses.contains(&PipelineStatus::Success),
            "round {round}: {statuses:?}"
        );
        let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
        assert_eq!(p.status, PipelineStatus::Success, "round {round}");
    }
}

fn artifact(path: &str, size: u64) -> NewArtifact {
    NewArtifact {
        path: path.into(),
        size,
        sha256: "ab".repeat(32),
        mode: 0o755,
    }
}

async fn artifacts_are_indexed_per_attempt_under_the_lease(db: Db) {
    let w = worker(&db, "builder").await;
    let r = repo(&db, "artifacts").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "art-1",
        "jobs:\n  build:\n    steps: [x]\n    artifacts: [bin/app]\n  test:\n    needs: [build]\n    steps: [y]\n",
    )
    .await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lease = first.job.lease_id.unwrap();
    assert_eq!(db.artifact_quota(ids[0], lease).await.unwrap(), quota(1, 0));
    db.record_artifact(ids[0], lease, &artifact("bin/app", 100))
        .await
        .unwrap();
    db.record_artifact(ids[0], lease, &artifact("bin/app", 120))
        .await
        .expect("uploading a path again replaces it");
    db.record_artifact(ids[0], lease, &artifact("bin/lib.so", 30))
        .await
        .unwrap();
    assert_eq!(
        db.artifact_quota(ids[0], lease).await.unwrap(),
        quota(1, 150)
    );
    assert!(
        db.pipeline_artifacts(pipeline_id).await.unwrap().is_empty(),
        "a running job hands nothing on yet"
    );
    // The worker is lost: the next attempt starts with nothing, and the lost attempt's lease writes nothing.
    db.expire_leases(Utc::now().timestamp_millis() + 60_000, 2)
        .await
        .unwrap();
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lease2 = second.job.lease_id.unwrap();
    assert!(matches!(
        db.record_artifact(ids[0], lease, &artifact("late", 1))
            .await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.artifact_quota(ids[0], lease).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.artifact_quota(ids[0], lease2).await.unwrap(),
        quota(2, 0)
    );
    db.record_artifact(ids[0], lease2, &artifact("bin/app", 7))
        .await
        .unwrap();
    db.complete_job(ids[0], lease2, &report(0)).await.unwrap();
    let handed = db.pipeline_artifacts(pipeline_id).await.unwrap();
    let summary: Vec<_> = handed
        .iter()
        .map(|a| (a.job.as_str(), a.job_id, a.path.as_str(), a.size, a.mode))
        .collect();
    assert_eq!(summary, [("build", ids[0], "bin/app", 7, 0o755)]);
    assert_eq!(db.job_artifacts(ids[0], 1).await.unwrap().len(), 2);
    assert_eq!(db.job_artifacts(ids[0], 2).await.unwrap(), handed);
}

fn case(suite: &str, name: &str, status: TestStatus) -> TestCase {
    TestCase {
        suite: suite.into(),
        name: name.into(),
        status,
        duration_ms: Some(5),
        message: (status == TestStatus::Failed).then(|| format!("{name} broke")),
    }
}

async fn test_cases_of_every_shard_add_up_in_the_pipeline(db: Db) {
    let w = worker(&db, "tester").await;
    let r = repo(&db, "reports").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "rep-1",
        "jobs:\n  test:\n    parallel: 3\n    steps: [x]\n    reports: [junit.xml]\n",
    )
    .await;
    assert_eq!(db.pipeline_tests(pipeline_id).await.unwrap(), None);
    for shard in 0..3 {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        let mut done = report(0);
        done.tests = vec![
            case("unit", &format!("a{shard}"), TestStatus::Passed),
            case("unit", &format!("b{shard}"), TestStatus::Skipped),
        ];
        if shard == 1 {
            done.tests.push(case("it", "db", TestStatus::Failed));
            done.tests.push(case("it", "net", TestStatus::Errored));
        }
        let lease = claimed.job.lease_id.unwrap();
        db.complete_job(claimed.job.id, lease, &done).await.unwrap();
        // A completion retried after a lost answer changes nothing.
        db.complete_job(claimed.job.id, lease, &done).await.unwrap();
    }
    let tests = db.pipeline_tests(pipeline_id).await.unwrap().unwrap();
    assert_eq!(
        (
            tests.total,
            tests.passed,
            tests.failed,
            tests.errored,
            tests.skipped
        ),
        (8, 3, 1, 1, 3)
    );
    let failures: Vec<_> = tests
        .failures
        .iter()
        .map(|f| {
            (
                f.job.as_str(),
                f.suite.as_str(),
                f.name.as_str(),
                f.status,
                f.message.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("test:2", "it", "db", TestStatus::Failed, Some("db broke")),
            ("test:2", "it", "net", TestStatus::Errored, None),
        ]
    );
    assert_eq!(ids.len(), 3);
}

async fn a_finished_pipeline_retried_runs_what_did_not_succeed_again(db: Db) {
    let w = worker(&db, "retried-by-hand").await;
    let r = repo(&db, "manual-retry").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "manual-1",
        "jobs:\n  lint:\n    steps: [x]\n  test:\n    retry: 1\n    steps: [y]\n  ship:\n    needs: [test]\n    steps: [z]\n",
    )
    .await;
    let finish = async |expect: Uuid, code: i32| {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        assert_eq!(claimed.job.id, expect);
        db.complete_job(expect, claimed.job.lease_id.unwrap(), &report(code))
            .await
            .unwrap()
    };
    finish(ids[0], 0).await;
    assert_eq!(
        finish(ids[1], 1).await.status,
        JobStatus::Queued,
        "its own retry"
    );
    let done = finish(ids[1], 1).await;
    assert_eq!(
        (done.status, done.pipeline_status),
        (JobStatus::Failed, PipelineStatus::Failed)
    );
    assert_eq!(done.skipped, vec![ids[2]]);

    let retried = db.retry_pipeline(pipeline_id).await.unwrap();
    assert_eq!(
        retried.requeued,
        vec![ids[1], ids[2]],
        "what succeeded stays"
    );
    assert!(!retried.reprepare);
    let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!((p.status, p.finished_at), (PipelineStatus::Queued, None));
    assert!(
        matches!(
            db.retry_pipeline(pipeline_id).await,
            Err(StoreError::Busy(_))
        ),
        "an unfinished pipeline cannot be retried"
    );
    // Attempt 3 fails and its own `retry: 1` counts afresh: attempt 4 runs, then the dependent.
    assert_eq!(finish(ids[1], 1).await.status, JobStatus::Queued);
    let job = db.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3);
    assert_eq!(finish(ids[1], 0).await.status, JobStatus::Success);
    let done = finish(ids[2], 0).await;
    assert_eq!(done.pipeline_status, PipelineStatus::Success);
    assert_eq!(db.get_job(ids[2]).await.unwrap().unwrap().attempt, 1);

    // A pipeline whose file could not be read has no jobs: it is to be prepared again.
    let broken = db.create_pipeline(&delivery(r, "manual-2")).await.unwrap();
    db.fail_pipeline(broken.id, "cannot fetch").await.unwrap();
    let retried = db.retry_pipeline(broken.id).await.unwrap();
    assert!(retried.reprepare && retried.requeued.is_empty());
    let p = db.get_pipeline_by_id(broken.id).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.error, p.prepared),
        (PipelineStatus::Queued, None, false)
    );
}

async fn log_appends_are_idempotent_contiguous_and_capped(db: Db) {
    let (job, lease) = one_running_job(&db, "logs").await;
    let bytes: Vec<u8> = (0..=255u8).collect();
    let first = db
        .append_log(job, lease, 0, &bytes[..100], 1000)
        .await
        .unwrap();
    assert_eq!(
        (first.offset, first.length, first.data.len()),
        (0, 100, 100)
    );
    let repeat = db
        .append_log(job, lease, 0, &bytes[..100], 1000)
        .await
        .unwrap();
    assert!(
        repeat.data.is_empty(),
        "a retried upload must not duplicate bytes"
    );
    let overlap = db
        .append_log(job, lease, 50, &bytes[50..200], 1000)
        .await
        .unwrap();
    assert_eq!(
        (overlap.offset, overlap.data.len(), overlap.length),
        (100, 100, 200)
    );
    assert!(matches!(
        db.append_log(job, lease, 300, b"gap", 1000).await,
        Err(StoreError::LogGap {
            offset: 300,
            length: 200
        })
    ));
    db.append_log(job, lease, 200, &bytes[200..], 1000)
        .await
        .unwrap();
    assert_eq!(
        db.read_log(job, 1, 0, usize::MAX).await.unwrap(),
        bytes,
        "the log is the bytes, in order, nothing inserted"
    );
    assert_eq!(
        db.read_log(job, 1, 150, usize::MAX).await.unwrap(),
        &bytes[150..]
    );
    // A window of a log: only the bytes asked for, across the uploads' chunks.
    assert_eq!(db.read_log(job, 1, 90, 20).await.unwrap(), &bytes[90..110]);
    assert_eq!(db.read_log(job, 1, 250, 100).await.unwrap(), &bytes[250..]);
    assert!(db.read_log(job, 1, 256, 10).await.unwrap().is_empty());
    assert_eq!(db.log_length(job, 1).await.unwrap(), 256);
    assert_eq!(db.log_length(job, 2).await.unwrap(), 0);
    let exact = db
        .append_log(job, lease, 256, &[b'y'; 744], 1000)
        .await
        .unwrap();
    assert_eq!(exact.length, 1000, "a log may fill its cap exactly");
    let capped = db
        .append_log(job, lease, 256, &[b'x'; 1000], 1000)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&capped.data).into_owned();
    assert!(
        text.contains("reached its cap of 1000 bytes"),
        "the cap is marked in the log: {text}"
    );
    let after = db
        .append_log(job, lease, 1256, b"more", 1000)
        .await
        .unwrap();
    assert!(after.data.is_empty(), "bytes past the cap are dropped");
    assert_eq!(
        db.get_job(job).await.unwrap().unwrap().log_length,
        capped.length
    );
}

async fn calls_with_a_stale_lease_change_nothing(db: Db) {
    let (job, lease) = one_running_job(&db, "stale").await;
    let ids = [job];
    let wrong = Uuid::now_v7();
    assert!(matches!(
        db.heartbeat(ids[0], wrong, 0).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.append_log(ids[0], wrong, 0, b"x", 100).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.complete_job(ids[0], wrong, &report(0)).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(
        !db.heartbeat(ids[0], lease, Utc::now().timestamp_millis() + 5000)
            .await
            .unwrap()
    );
    db.complete_job(ids[0], lease, &report(0)).await.unwrap();
    let repeat = db.complete_job(ids[0], lease, &report(1)).await.unwrap();
    assert_eq!(
        repeat.status,
        JobStatus::Success,
        "a repeated report (its answer was lost) is answered again and changes nothing"
    );
    assert!(matches!(
        db.record_step(ids[0], lease, &report(0).steps[0]).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.get_job(ids[0]).await.unwrap().unwrap().status,
        JobStatus::Success
    );
}

async fn workers_register_by_name_and_get_a_token(db: Db) {
    let first = worker(&db, "host-a").await;
    let again = worker(&db, "host-a").await;
    assert_eq!(first, again, "re-registering keeps the worker's id");
    worker(&db, "host-b").await;
    let workers = db.list_workers().await.unwrap();
    assert_eq!(
        workers.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(),
        ["host-a", "host-b"]
    );
    assert_eq!(workers[0].labels, ["linux"]);
    assert_eq!(
        db.find_token("token-of-host-a").await.unwrap(),
        Some(TokenRecord::Worker {
            id: first,
            name: "host-a".into()
        })
    );
}

async fn a_pull_request_pipeline_keeps_its_request_through_the_claim(db: Db) {
    let w = worker(&db, "pr-worker").await;
    let r = repo(&db, "pr").await;
    let pr = PullRequest {
        number: 42,
        source_branch: "feature/x".into(),
        target_branch: "main".into(),
        from_fork: true,
    };
    let mut new = delivery(r, "pr-1");
    new.git_ref = "refs/pull/42/head".into();
    new.event = "pull_request".into();
    new.pull_request = Some(pr.clone());
    let created = db.create_pipeline(&new).await.unwrap();
    let jobs = vec![NewJob {
        id: Uuid::now_v7(),
        spec: Pipeline::parse("jobs:\n  a:\n    steps: [x]\n")
            .unwrap()
            .jobs
            .remove(0),
        skipped: None,
    }];
    db.add_jobs(created.id, &jobs).await.unwrap();
    let stored = db
        .get_pipeline("pr", created.number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.pull_request.as_ref(), Some(&pr));
    assert_eq!(stored.git_ref, "refs/pull/42/head");
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!(claimed.pull_request, Some(pr));
    assert_eq!(claimed.clone_credential, None);
    // A push pipeline has none.
    let (push, _) = pipeline(&db, r, "pr-2", "jobs:\n  a:\n    steps: [x]\n").await;
    let push = db.get_pipeline_by_id(push).await.unwrap().unwrap();
    assert_eq!(push.pull_request, None);
}

async fn repository_credentials_are_stored_sealed_and_removed(db: Db) {
    let w = worker(&db, "cred-worker").await;
    let r = repo(&db, "cred").await;
    for which in [RepoCredential::Clone, RepoCredential::Status] {
        assert_eq!(db.repo_credential(r, which).await.unwrap(), None);
    }
    db.set_repo_credential(r, RepoCredential::Clone, Some(b"sealed-clone"))
        .await
        .unwrap();
    db.set_repo_credential(r, RepoCredential::Status, Some(b"sealed-status"))
        .await
        .unwrap();
    assert_eq!(
        db.repo_credential(r, RepoCredential::Clone)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"sealed-clone"[..])
    );
    assert_eq!(
        db.repo_credential(r, RepoCredential::Status)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"sealed-status"[..])
    );
    // A lease carries the clone credential (still sealed) to the worker.
    pipeline(&db, r, "cred-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!(
        claimed.clone_credential.as_deref(),
        Some(&b"sealed-clone"[..])
    );
    db.set_repo_credential(r, RepoCredential::Clone, None)
        .await
        .unwrap();
    assert_eq!(
        db.repo_credential(r, RepoCredential::Clone).await.unwrap(),
        None
    );
    assert!(matches!(
        db.set_repo_credential(r + 1000, RepoCredential::Status, None)
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn deliveries_are_kept_newest_first_with_their_outcome_and_pruned(db: Db) {
    let r = repo(&db, "hooks").await;
    let created = db.create_pipeline(&delivery(r, "d-1")).await.unwrap();
    let mut refused = delivery(r, "d-2").delivery;
    refused.body = b"{\"tampered\": true}".to_vec();
    db.record_refused_delivery(&refused, "the delivery's signature does not match")
        .await
        .unwrap();
    // The forge redelivers d-2 once the secret is fixed: a refusal must not make it a duplicate.
    let again = db.create_pipeline(&delivery(r, "d-2")).await.unwrap();
    assert!(!again.duplicate);
    db.record_ignored_delivery(&delivery(r, "d-3").delivery, "ping: the webhook is set up")
        .await
        .unwrap();
    let listed = db.recent_deliveries(r, 10).await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|d| (d.outcome.as_str(), d.pipeline, d.reason.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ignored", None, true),
            ("created", Some(again.number), false),
            ("refused", None, true),
            ("created", Some(created.number), false),
        ]
    );
    assert!(
        listed.iter().all(|d| d.body.is_none()),
        "lists carry no bodies"
    );
    assert!(
        listed[2].delivery_id.ends_with("/d-2"),
        "{}",
        listed[2].delivery_id
    );
    let one = db.get_delivery(r, listed[2].id).await.unwrap().unwrap();
    assert_eq!(one.body.as_deref(), Some(&b"{\"tampered\": true}"[..]));
    let other = repo(&db, "other-hooks").await;
    assert!(
        db.get_delivery(other, listed[2].id)
            .await
            .unwrap()
            .is_none(),
        "per repository"
    );

    // Refused deliveries are kept apart, each kind its newest `keep`: unsigned requests, which anyone can
    // send, must not push the real deliveries out.
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 1);
    let kept: Vec<_> = db
        .recent_deliveries(r, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(kept, [listed[0].id, listed[1].id, listed[2].id]);
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 0);
    for i in 0..5 {
        db.record_refused_delivery(&delivery(r, &format!("flood-{i}")).delivery, "unsigned")
            .await
            .unwrap();
    }
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 4);
    let after: Vec<_> = db.recent_deliveries(r, 10).await.unwrap();
    let outcomes: Vec<&str> = after.iter().map(|d| d.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "refused", "ignored", "created"]);
    assert!(
        after[0].delivery_id.ends_with("/flood-4"),
        "{}",
        after[0].delivery_id
    );
    // A pruned delivery's pipeline still refuses a redelivery of its id.
    let redelivered = db.create_pipeline(&delivery(r, "d-1")).await;
    assert!(
        matches!(redelivered, Err(StoreError::Conflict(_)))
            || redelivered.is_ok_and(|c| c.duplicate),
        "a redelivery of a pruned delivery must not make a second pipeline"
    );
}
async fn repository_secrets_are_set_listed_without_values_and_removed(db: Db) {
    let r = repo(&db, "secrets").await;
    let other = repo(&db, "secrets-other").await;
    assert!(db.list_repo_secrets(r).await.unwrap().is_empty());
    db.set_repo_secret(r, "TOKEN", b"sealed-1").await.unwrap();
    db.set_repo_secret(r, "API_KEY", b"sealed-2").await.unwrap();
    db.set_repo_secret(other, "TOKEN", b"other-sealed")
        .await
        .unwrap();
    let listed = db.list_repo_secrets(r).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["API_KEY", "TOKEN"],
        "by name, this repository's only"
    );
    let first_set = listed[1].updated_at;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    db.set_repo_secret(r, "TOKEN", b"sealed-3").await.unwrap();
    let listed = db.list_repo_secrets(r).await.unwrap();
    assert_eq!(listed.len(), 2, "setting again replaces");
    assert!(listed[1].updated_at > first_set, "and says when");
    assert_eq!(
        db.sealed_repo_secrets(r).await.unwrap(),
        [sealed("API_KEY", b"sealed-2"), sealed("TOKEN", b"sealed-3")]
    );
    assert!(db.delete_repo_secret(r, "TOKEN").await.unwrap());
    assert!(!db.delete_repo_secret(r, "TOKEN").await.unwrap(), "gone");
    assert_eq!(db.list_repo_secrets(r).await.unwrap().len(), 1);
    assert_eq!(
        db.sealed_repo_secrets(other).await.unwrap(),
        [sealed("TOKEN", b"other-sealed")],
        "another repository's secret of the same name is untouched"
    );
}

async fn the_claim_says_whether_the_repository_has_secrets_and_credentials(db: Db) {
    let w = worker(&db, "has-secrets-worker").await;
    let plain = repo(&db, "no-secrets").await;
    let with = repo(&db, "with-secrets").await;
    db.set_repo_secret(with, "TOKEN", b"sealed").await.unwrap();
    db.set_repo_credential(with, RepoCredential::Clone, Some(b"sealed-clone"))
        .await
        .unwrap();
    let shown = db.get_repo("with-secrets").await.unwrap().unwrap();
    assert!(shown.has_clone_token && !shown.has_status_token);
    let shown = db.get_repo("no-secrets").await.unwrap().unwrap();
    assert!(!shown.has_clone_token && !shown.has_status_token);
    let listed = db.list_repos().await.unwrap();
    assert!(listed.iter().any(|r| r.id == with && r.has_clone_token));
    pipeline(&db, plain, "plain-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!((claimed.repo_id, claimed.has_secrets), (plain, false));
    pipeline(&db, with, "with-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!((claimed.repo_id, claimed.has_secrets), (with, true));
}

/// On SQLite the claim and the completion write through a connection of their own (`sqlite/dispatch.rs`): what
/// they write must read back the same through the store's other reads.
async fn what_a_claim_and_a_completion_write_reads_back_the_same_everywhere(db: Db) {
    let w = worker(&db, "round-trip-worker").await;
    let r = repo(&db, "round-trip").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "round-trip-1",
        "jobs:\n  build:\n    steps: [x]\n  test:\n    needs: [build]\n    steps: [y]\n",
    )
    .await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    let stored = db.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(claimed.job.status, JobStatus::Running);
    assert_eq!(claimed.job.started_at, stored.started_at);
    assert_eq!(claimed.job.queued_at, stored.queued_at);
    assert_eq!(
        (
            claimed.job.lease_id,
            claimed.job.attempt,
            &claimed.job.worker_name
        ),
        (stored.lease_id, stored.attempt, &stored.worker_name)
    );
    let shown = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!(shown.status, PipelineStatus::Running);
    assert_eq!(
        shown.started_at, stored.started_at,
        "the pipeline started with its job"
    );
    let mut done = report(0);
    done.message = Some("built".into());
    done.tests = vec![TestCase {
        suite: "s".into(),
        name: "t".into(),
        status: TestStatus::Passed,
        duration_ms: Some(7),
        message: None,
    }];
    let completed = db
        .complete_job(ids[0], claimed.job.lease_id.unwrap(), &done)
        .await
        .unwrap();
    assert_eq!(completed.status, JobStatus::Success);
    let stored = db.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.message.as_deref(), Some("built"));
    assert_eq!(
        (stored.cpu_seconds, stored.peak_memory_bytes),
        (Some(0.5), Some(1 << 20))
    );
    assert!(stored.finished_at >= stored.started_at);
    // PostgreSQL keeps microseconds.
    let micros = |steps: &[StepReport]| -> Vec<_> {
        steps
            .iter()
            .map(|s| {
                (
                    s.index,
                    s.command.clone(),
                    s.started_at.timestamp_micros(),
                    s.finished_at.map(|t| t.timestamp_micros()),
                    s.exit_code,
                )
            })
            .collect()
    };
    assert_eq!(
        micros(&db.job_steps(ids[0], 1).await.unwrap()),
        micros(&done.steps)
    );
    let tests = db
        .pipeline_tests(pipeline_id)
        .await
        .unwrap()
        .expect("a report");
    assert_eq!((tests.total, tests.passed), (1, 1));
    let next = db
        .claim_job(&claim(w))
        .await
        .unwrap()
        .expect("test is ready now");
    assert_eq!(next.job.id, ids[1]);
}
