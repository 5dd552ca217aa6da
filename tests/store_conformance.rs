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
    writes_abandoned_at_any_point_leave_the_store_writable,
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
    pools_are_written_rotated_and_keep_their_newest_decisions,
    an_exec_pool_keeps_its_commands_and_its_instances_with_their_own_tokens,
    a_draining_worker_gets_no_job_and_stale_ones_are_removed,
);

#[path = "store_conformance/pools.rs"]
mod pools;
use pools::*;
#[path = "store_conformance/tokens.rs"]
mod tokens;
use tokens::*;
#[path = "store_conformance/repos.rs"]
mod repos;
use repos::*;
#[path = "store_conformance/pipelines.rs"]
mod pipelines;
use pipelines::*;
#[path = "store_conformance/dispatch.rs"]
mod dispatch;
use dispatch::*;
#[path = "store_conformance/retries.rs"]
mod retries;
use retries::*;
#[path = "store_conformance/cancel.rs"]
mod cancel;
use cancel::*;
#[path = "store_conformance/outputs.rs"]
mod outputs;
use outputs::*;
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
/// The jobs of pipeline file `yaml`, as intake stores them.
fn new_jobs(yaml: &str) -> Vec<NewJob> {
    Pipeline::parse(yaml)
        .unwrap()
        .jobs
        .into_iter()
        .map(|spec| NewJob {
            id: Uuid::now_v7(),
            spec,
            skipped: None,
        })
        .collect()
}

async fn pipeline(db: &Db, repo_id: i64, delivery_id: &str, yaml: &str) -> (Uuid, Vec<Uuid>) {
    let created = db
        .create_pipeline(&delivery(repo_id, delivery_id))
        .await
        .unwrap();
    let jobs = new_jobs(yaml);
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
        managed: false,
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

async fn r_fork_host_image(db: &Db, name: &str) -> bool {
    db.get_repo(name).await.unwrap().unwrap().fork_host_image
}

fn artifact(path: &str, size: u64) -> NewArtifact {
    NewArtifact {
        path: path.into(),
        size,
        sha256: "ab".repeat(32),
        mode: 0o755,
    }
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
