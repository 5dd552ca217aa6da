//! Jobs and their steps: reading them, a worker's step reports and heartbeats, and leases that run out.

use super::completion::settle_pipeline;
use super::db::{Exec, Row, Transaction, int, json, parse, query};
use super::dialect::Dialect;
use super::{Completed, Expired, ExpiredOutcome, JobRecord, Result, StoreError};
use chrono::Utc;
use const_format::concatcp;
use gantry_model::wire::StepReport;
use gantry_model::{FailureKind, JobStatus};
use uuid::Uuid;

/// The columns [`job_from`] reads.
pub(crate) const JOB_COLUMNS: &str = "id, pipeline_id, name, spec, status, attempt, lease_id, worker_name, \
     exit_code, failure_kind, message, log_length, queued_at, started_at, finished_at, cpu_seconds, \
     peak_memory_bytes";

const GET_JOB_SQL: &str = concatcp!("SELECT ", JOB_COLUMNS, " FROM jobs WHERE id = $1");
const PIPELINE_JOBS_SQL: &str = concatcp!(
    "SELECT ",
    JOB_COLUMNS,
    " FROM jobs WHERE pipeline_id = $1 ORDER BY position"
);

/// A job row ([`JOB_COLUMNS`]), from any connection.
pub(crate) fn job_from(row: &impl Row) -> Result<JobRecord> {
    let failure: Option<String> = row.get("failure_kind")?;
    Ok(JobRecord {
        id: row.get("id")?,
        pipeline_id: row.get("pipeline_id")?,
        name: row.get("name")?,
        spec: json(&row.get::<String>("spec")?)?,
        status: parse(row.get("status")?)?,
        attempt: row.get("attempt")?,
        lease_id: row.get("lease_id")?,
        worker_name: row.get("worker_name")?,
        exit_code: row.get("exit_code")?,
        failure_kind: failure.map(parse).transpose()?,
        message: row.get("message")?,
        log_length: row.get("log_length")?,
        queued_at: row.get("queued_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        cpu_seconds: row.get("cpu_seconds")?,
        peak_memory_bytes: row.get("peak_memory_bytes")?,
    })
}

fn step_from(row: &impl Row) -> Result<StepReport> {
    Ok(StepReport {
        index: row.get("idx")?,
        command: row.get("command")?,
        log_offset: row.get("log_offset")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        exit_code: row.get("exit_code")?,
    })
}

/// The running attempt a lease holds.
pub(crate) struct Lease {
    /// Its attempt number.
    pub(crate) attempt: u32,
    /// The log's length so far.
    pub(crate) log_length: u64,
}

/// The attempt `lease` holds on `job`, if it is the running job's lease.
pub(crate) async fn leased(on: &mut impl Exec, job: Uuid, lease: Uuid) -> Result<Lease> {
    let row = query(
        "SELECT attempt, log_length FROM jobs WHERE id = $1 AND lease_id = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .fetch_optional(on)
    .await?
    .ok_or(StoreError::StaleLease(job))?;
    Ok(Lease {
        attempt: row.get("attempt")?,
        log_length: row.get("log_length")?,
    })
}

/// Records step `step.index` of `attempt`, or its end when its start is there already.
pub(crate) async fn upsert_step(
    on: &mut impl Exec,
    job: Uuid,
    attempt: u32,
    step: &StepReport,
) -> Result<()> {
    query(
        "INSERT INTO steps (job_id, attempt, idx, command, log_offset, started_at, finished_at, exit_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (job_id, attempt, idx) DO UPDATE
         SET finished_at = excluded.finished_at, exit_code = excluded.exit_code",
    )
    .bind(job)
    .bind(attempt)
    .bind(step.index)
    .bind(&step.command)
    .bind(int(step.log_offset)?)
    .bind(step.started_at)
    .bind(step.finished_at)
    .bind(step.exit_code)
    .execute(on)
    .await?;
    Ok(())
}

pub(crate) async fn get_job(db: &impl Dialect, id: Uuid) -> Result<Option<JobRecord>> {
    let row = query(GET_JOB_SQL)
        .bind(id)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    row.as_ref().map(job_from).transpose()
}

pub(crate) async fn pipeline_jobs(db: &impl Dialect, pipeline: Uuid) -> Result<Vec<JobRecord>> {
    let rows = query(PIPELINE_JOBS_SQL)
        .bind(pipeline)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter().map(job_from).collect()
}

pub(crate) async fn job_steps(
    db: &impl Dialect,
    job: Uuid,
    attempt: u32,
) -> Result<Vec<StepReport>> {
    let rows = query(
        "SELECT idx, command, log_offset, started_at, finished_at, exit_code FROM steps
         WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
    )
    .bind(job)
    .bind(attempt)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter().map(step_from).collect()
}

pub(crate) async fn record_step(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
    step: &StepReport,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let Lease { attempt, .. } = leased(&mut tx, job, lease).await?;
    upsert_step(&mut tx, job, attempt, step).await?;
    tx.commit().await
}

pub(crate) async fn heartbeat(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
    deadline_ms: i64,
) -> Result<bool> {
    // Through the writer like every other write: on SQLite a write beside it would find the file locked and
    // wait in SQLite's busy handler (1 ms and more), and a claim waits on its caller's thread.
    let row = query(
        "UPDATE jobs SET lease_deadline_ms = $3 WHERE id = $1 AND lease_id = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(job)
    .bind(lease)
    .bind(deadline_ms)
    .fetch_optional(&mut db.writer().await?)
    .await?
    .ok_or(StoreError::StaleLease(job))?;
    row.get("cancel_requested")
}

pub(crate) async fn extend_leases(db: &impl Dialect, deadline_ms: i64) -> Result<u64> {
    query("UPDATE jobs SET lease_deadline_ms = $1 WHERE status = 'running' AND lease_deadline_ms < $1")
        .bind(deadline_ms)
        .execute(&mut db.writer().await?)
        .await
}

pub(crate) async fn expire_leases<D: Dialect>(
    db: &D,
    now_ms: i64,
    infra_retries: u32,
) -> Result<Vec<Expired>> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let rows = query(
        "SELECT id, pipeline_id, attempt, lease_id, worker_name, infra_retries, cancel_requested FROM jobs
         WHERE status = 'running' AND lease_deadline_ms < $1 ORDER BY lease_deadline_ms",
    )
    .bind(now_ms)
    .fetch_all(&mut tx)
    .await?;
    let mut expired = Vec::with_capacity(rows.len());
    for row in &rows {
        let job: Uuid = row.get("id")?;
        let lease: Uuid = row.get("lease_id")?;
        let attempt: u32 = row.get("attempt")?;
        let worker_name: Option<String> = row.get("worker_name")?;
        let retried: u32 = row.get("infra_retries")?;
        let worker = worker_name.as_deref().unwrap_or("?");
        let (status, kind, message) = if row.get("cancel_requested")? {
            (
                JobStatus::Cancelled,
                Some(FailureKind::Cancelled),
                format!("cancelled; worker {worker} stopped answering during attempt {attempt}"),
            )
        } else if retried < infra_retries {
            (
                JobStatus::Queued,
                None,
                format!("worker {worker} stopped answering during attempt {attempt}; re-queued"),
            )
        } else {
            (
                JobStatus::Error,
                Some(FailureKind::WorkerLost),
                format!(
                    "worker {worker} stopped answering during attempt {attempt}, and the job was \
                     re-queued {retried} time(s) already"
                ),
            )
        };
        let requeued = status == JobStatus::Queued;
        // The lease is checked again here, so a heartbeat or completion that won the race keeps its job (and a
        // second server expiring the same lease changes nothing).
        let updated = query(
            "UPDATE jobs SET status = $3, failure_kind = $4, message = $5,
               infra_retries = infra_retries + $6, lease_deadline_ms = NULL,
               lease_id = CASE WHEN $7 THEN NULL ELSE lease_id END,
               finished_at = CASE WHEN $7 THEN NULL ELSE $8 END
             WHERE id = $1 AND lease_id = $2 AND status = 'running' AND lease_deadline_ms < $9",
        )
        .bind(job)
        .bind(lease)
        .bind(status.as_str())
        .bind(kind.map(FailureKind::as_str))
        .bind(&message)
        .bind(i64::from(requeued))
        .bind(requeued)
        .bind(now)
        .bind(now_ms)
        .execute(&mut tx)
        .await?;
        if updated != 1 {
            continue;
        }
        let outcome = if requeued {
            ExpiredOutcome::Requeued
        } else {
            let pipeline = row.get("pipeline_id")?;
            let settled = settle_pipeline(&mut tx, D::LOCK_PIPELINE_SQL, pipeline, now).await?;
            ExpiredOutcome::Ended(Completed {
                status,
                pipeline_status: settled.status,
                skipped: settled.skip,
            })
        };
        expired.push(Expired {
            job,
            worker_name,
            attempt,
            outcome,
        });
    }
    tx.commit().await?;
    Ok(expired)
}

/// A claim's answer (the dialect's claim statement: [`JOB_COLUMNS`] and where the source comes from).
pub(crate) fn claimed_from(row: &impl Row) -> Result<super::ClaimedJob> {
    Ok(super::ClaimedJob {
        job: job_from(row)?,
        repo: row.get("repo")?,
        clone_url: row.get("clone_url")?,
        number: row.get("number")?,
        commit: row.get("commit_sha")?,
        git_ref: row.get("git_ref")?,
        event: row.get("event")?,
        pull_request: super::pipelines::pull_request_from(row)?,
        clone_credential: row.get("clone_credential")?,
        repo_id: row.get("repo_id")?,
        has_secrets: row.get("has_secrets")?,
    })
}
