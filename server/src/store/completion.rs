//! Ending a leased attempt and settling its pipeline: the other half of dispatch (the claim is the first), so
//! its round trips are counted (bench/dispatch). The decision (`settle`) is plain Rust; [`complete_attempt`] is
//! the one transaction that ends an attempt, which each dialect runs on its fastest connection (PostgreSQL: a
//! pooled one, five round trips; SQLite: rusqlite on the caller's thread, none).

use super::artifacts::insert_test_cases;
use super::db::{Exec, Row, Transaction, json, parse, query};
use super::dialect::Dialect;
use super::jobs::upsert_step;
use super::{Completed, Result, StoreError};
use chrono::{DateTime, Utc};
use const_format::concatcp;
use gantry_model::status::{NeedsVerdict, resolve_needs};
use gantry_model::wire::CompleteRequest;
use gantry_model::{FailureKind, JobStatus, PipelineStatus};
use uuid::Uuid;

/// What ending an attempt writes to its job.
pub(crate) struct Ending<'a> {
    pub(crate) status: JobStatus,
    pub(crate) failure: Option<FailureKind>,
    pub(crate) report: &'a CompleteRequest,
    pub(crate) now: DateTime<Utc>,
}

/// One of a pipeline's jobs as settling sees it (a row of [`SETTLING_JOBS_SQL`]).
pub(crate) struct SettlingJob {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) needs: Vec<String>,
    pub(crate) status: JobStatus,
}

/// What settling a pipeline decided: the jobs to skip and to ready, its status, and whether that changed
/// (then it is to be written).
pub(crate) struct Settled {
    pub(crate) skip: Vec<Uuid>,
    pub(crate) ready: Vec<Uuid>,
    pub(crate) status: PipelineStatus,
    pub(crate) changed: bool,
}

/// Settles a pipeline whose status was `was`, over its jobs read under its lock, in file order.
pub(crate) fn settle(jobs: Vec<SettlingJob>, was: Option<&str>) -> Settled {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let mut named: Vec<_> = jobs
        .into_iter()
        .map(|j| (j.name, j.needs, j.status))
        .collect();
    let (mut skip, mut ready) = (Vec::new(), Vec::new());
    for (i, verdict) in resolve_needs(&named).into_iter().enumerate() {
        match verdict {
            NeedsVerdict::Skip => {
                named[i].2 = JobStatus::Skipped;
                skip.push(ids[i]);
            }
            NeedsVerdict::Ready => ready.push(ids[i]),
            NeedsVerdict::Wait => {}
        }
    }
    let status = PipelineStatus::from_jobs(named.iter().map(|j| j.2));
    // Unchanged, so is its `finished_at`: every write of a status writes that too.
    let changed = was != Some(status.as_str());
    Settled {
        skip,
        ready,
        status,
        changed,
    }
}

/// Ends a leased attempt; the lease is checked in the same UPDATE ($9), so no row means it is not (or no longer)
/// this lease's job. Binds: $1 job, $2 status, $3 exit code, $4 failure kind, $5 message, $6 end, $7 CPU
/// seconds, $8 peak memory, $9 lease. Answers `attempt` and `pipeline_id`; a dialect may wrap it (PostgreSQL
/// locks the pipeline's row in the same round trip).
pub(crate) const FINISH_ATTEMPT_SQL: &str =
    "UPDATE jobs SET status = $2, exit_code = $3, failure_kind = $4, message = $5, finished_at = $6,
       cpu_seconds = $7, peak_memory_bytes = $8, lease_deadline_ms = NULL
     WHERE id = $1 AND lease_id = $9 AND status = 'running' RETURNING attempt, pipeline_id";

/// A pipeline's jobs as settling reads them (`$1`: the pipeline), in file order.
const SETTLING_JOBS_SQL: &str = "SELECT j.id, j.name, j.needs, j.status, p.status AS pipeline_status
     FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id WHERE j.pipeline_id = $1 ORDER BY j.position";

/// Writes a settled pipeline's status ($2) and, when it is finished ($3), its end ($4).
pub(crate) const SET_PIPELINE_STATUS_SQL: &str = "UPDATE pipelines SET status = $2,
       finished_at = CASE WHEN $3 THEN COALESCE(finished_at, $4) ELSE NULL END
     WHERE id = $1";

/// Skips job $1, ended at $2: a job it needs did not succeed.
const SKIP_JOB_SQL: &str = "UPDATE jobs SET status = 'skipped', finished_at = $2,
       message = 'not run: a job it needs did not succeed' WHERE id = $1";

/// Readies job $1: every job it needs succeeded.
const READY_JOB_SQL: &str = "UPDATE jobs SET ready = TRUE WHERE id = $1 AND NOT ready";

/// Skips jobs whose needs failed, readies jobs whose needs succeeded, and writes the pipeline's status;
/// `lock` is the dialect's [`Dialect::LOCK_PIPELINE_SQL`].
pub(crate) async fn settle_pipeline(
    tx: &mut impl Exec,
    lock: Option<&'static str>,
    pipeline: Uuid,
    now: DateTime<Utc>,
) -> Result<Settled> {
    // Two jobs of the pipeline ending at once must not each see the other still running and leave the pipeline
    // `running`: the second waits here for the first to commit, then reads its end.
    if let Some(lock) = lock {
        query(lock).bind(pipeline).execute(tx).await?;
    }
    let settled = settle_jobs(tx, pipeline, now).await?;
    if settled.changed {
        set_pipeline_status(tx, pipeline, settled.status, now).await?;
    }
    Ok(settled)
}

/// Reads the pipeline's jobs (under its lock), skips and readies them, and says its status, leaving that to
/// the caller to write.
async fn settle_jobs(tx: &mut impl Exec, pipeline: Uuid, now: DateTime<Utc>) -> Result<Settled> {
    let rows = query(SETTLING_JOBS_SQL)
        .bind(pipeline)
        .fetch_all(tx)
        .await?;
    let was = rows
        .first()
        .map(|row| row.get::<String>("pipeline_status"))
        .transpose()?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        jobs.push(SettlingJob {
            id: row.get("id")?,
            name: row.get("name")?,
            needs: json(&row.get::<String>("needs")?)?,
            status: parse(row.get("status")?)?,
        });
    }
    let settled = settle(jobs, was.as_deref());
    for id in &settled.skip {
        query(SKIP_JOB_SQL).bind(id).bind(now).execute(tx).await?;
    }
    for id in &settled.ready {
        query(READY_JOB_SQL).bind(id).execute(tx).await?;
    }
    Ok(settled)
}

async fn set_pipeline_status(
    tx: &mut impl Exec,
    pipeline: Uuid,
    status: PipelineStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    query(SET_PIPELINE_STATUS_SQL)
        .bind(pipeline)
        .bind(status.as_str())
        .bind(status.is_finished())
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Ends `job`'s attempt if `lease` is still its lease, stores its steps and test cases, and settles its
/// pipeline, in the transaction `tx` (committed here); `None` when the lease is not (or no longer) the running
/// job's. `finish_sql` is [`FINISH_ATTEMPT_SQL`] or the dialect's wrapping of it.
pub(crate) async fn complete_attempt(
    mut tx: impl Transaction,
    finish_sql: &'static str,
    job: Uuid,
    lease: Uuid,
    ending: &Ending<'_>,
) -> Result<Option<Completed>> {
    let report = ending.report;
    let Some(row) = query(finish_sql)
        .bind(job)
        .bind(ending.status.as_str())
        .bind(report.exit_code)
        .bind(ending.failure.map(FailureKind::as_str))
        .bind(report.message.as_deref())
        .bind(ending.now)
        .bind(report.cpu_seconds)
        .bind(report.peak_memory_bytes.map(super::db::int).transpose()?)
        .bind(lease)
        .fetch_optional(&mut tx)
        .await?
    else {
        return Ok(None);
    };
    let pipeline: Uuid = row.get("pipeline_id")?;
    let attempt: u32 = row.get("attempt")?;
    for step in &report.steps {
        upsert_step(&mut tx, job, attempt, step).await?;
    }
    insert_test_cases(&mut tx, job, attempt, &report.tests).await?;
    let settled = settle_jobs(&mut tx, pipeline, ending.now).await?;
    if settled.changed {
        set_pipeline_status(&mut tx, pipeline, settled.status, ending.now).await?;
    }
    tx.commit().await?;
    Ok(Some(Completed {
        status: ending.status,
        pipeline_status: settled.status,
        skipped: settled.skip,
    }))
}

/// Ends a leased job with the worker's report, skips what can no longer run, and settles the pipeline:
/// `Store::complete_job`.
pub(crate) async fn complete_leased<D: Dialect>(
    db: &D,
    job: Uuid,
    lease: Uuid,
    report: &CompleteRequest,
) -> Result<Completed> {
    let now = Utc::now();
    let failure = report.failure_kind.or(match report.exit_code {
        Some(0) | None => None,
        Some(_) => Some(FailureKind::Exit),
    });
    let status = failure
        .map(FailureKind::job_status)
        .unwrap_or(JobStatus::Success);
    if matches!(status, JobStatus::Failed | JobStatus::TimedOut) {
        // Its own transaction: the lease is checked again when the attempt ends below.
        let mut tx = db.begin().await?;
        let retried = retry_failed(&mut tx, job, lease, status, report).await?;
        tx.commit().await?;
        if let Some(retried) = retried {
            return Ok(retried);
        }
    }
    let ending = Ending {
        status,
        failure,
        report,
        now,
    };
    match db.complete_attempt(job, lease, &ending).await? {
        Some(completed) => Ok(completed),
        None => repeated_completion(&mut db.reader().await?, job, lease).await,
    }
}

/// Puts a failed or timed-out attempt back in the queue, with its steps, while the job's own `retry:` allows
/// it; `None` leaves the report to end the job (also when the lease is not the job's: the ending finds out).
async fn retry_failed(
    tx: &mut impl Exec,
    job: Uuid,
    lease: Uuid,
    status: JobStatus,
    report: &CompleteRequest,
) -> Result<Option<Completed>> {
    let Some(row) = query(
        "SELECT attempt, spec, infra_retries, attempt_base, cancel_requested FROM jobs
         WHERE id = $1 AND lease_id = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .fetch_optional(tx)
    .await?
    else {
        return Ok(None);
    };
    let attempt: u32 = row.get("attempt")?;
    let spec: gantry_model::JobSpec = json(&row.get::<String>("spec")?)?;
    // The job's own `retry:` counts the attempts it ran to an end since the pipeline was last retried by hand,
    // not those a lost worker took.
    let ran = attempt
        .saturating_sub(row.get("attempt_base")?)
        .saturating_sub(row.get("infra_retries")?);
    if ran > spec.retry || row.get("cancel_requested")? {
        return Ok(None);
    }
    for step in &report.steps {
        upsert_step(tx, job, attempt, step).await?;
    }
    insert_test_cases(tx, job, attempt, &report.tests).await?;
    let message = format!(
        "attempt {attempt} {}; running it again (retry {ran} of {})",
        status.as_str().replace('_', " "),
        spec.retry
    );
    let requeued = query(
        "UPDATE jobs SET status = 'queued', lease_id = NULL, lease_deadline_ms = NULL, message = $3
         WHERE id = $1 AND lease_id = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .bind(&message)
    .execute(tx)
    .await?;
    if requeued != 1 {
        return Err(StoreError::StaleLease(job));
    }
    Ok(Some(Completed {
        status: JobStatus::Queued,
        pipeline_status: PipelineStatus::Running,
        skipped: Vec::new(),
    }))
}

/// A report for a job this same lease already ended (its answer was lost): answered again, changing nothing.
async fn repeated_completion(on: &mut impl Exec, job: Uuid, lease: Uuid) -> Result<Completed> {
    let row = query(
        "SELECT j.status, p.status AS pipeline_status FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
         WHERE j.id = $1 AND j.lease_id = $2 AND j.status NOT IN ('queued', 'running')",
    )
    .bind(job)
    .bind(lease)
    .fetch_optional(on)
    .await?
    .ok_or(StoreError::StaleLease(job))?;
    Ok(Completed {
        status: parse(row.get("status")?)?,
        pipeline_status: parse(row.get("pipeline_status")?)?,
        skipped: Vec::new(),
    })
}

/// PostgreSQL's [`FINISH_ATTEMPT_SQL`]: the attempt ends and then its pipeline's row is locked (the order of the
/// claim's trigger and of a cancel: job, then pipeline), in one round trip. The pipeline's jobs are read by the
/// next statement, whose snapshot comes after the lock: one taken in the same statement would predate it.
pub(crate) const FINISH_ATTEMPT_LOCKING_SQL: &str = concatcp!(
    "WITH finished AS (",
    FINISH_ATTEMPT_SQL,
    ") SELECT f.attempt, f.pipeline_id FROM finished f JOIN pipelines p ON p.id = f.pipeline_id FOR UPDATE OF p"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, needs: &[&str], status: JobStatus) -> SettlingJob {
        SettlingJob {
            id: Uuid::now_v7(),
            name: name.into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            status,
        }
    }

    #[test]
    fn a_failure_skips_its_dependents_by_id_and_ends_the_pipeline() {
        let jobs = vec![
            job("build", &[], JobStatus::Failed),
            job("test", &["build"], JobStatus::Queued),
            job("deploy", &["test"], JobStatus::Queued),
        ];
        let (test, deploy) = (jobs[1].id, jobs[2].id);
        let settled = settle(jobs, Some("running"));
        assert_eq!(settled.skip, [test, deploy]);
        assert!(settled.ready.is_empty());
        assert_eq!(settled.status, PipelineStatus::Failed);
        assert!(settled.changed);
    }

    #[test]
    fn a_success_readies_what_needs_it_and_an_unchanged_status_is_not_written_again() {
        let jobs = vec![
            job("build", &[], JobStatus::Success),
            job("test", &["build"], JobStatus::Queued),
            job("lint", &[], JobStatus::Running),
        ];
        let test = jobs[1].id;
        let settled = settle(jobs, Some("running"));
        assert!(settled.skip.is_empty());
        assert_eq!(settled.ready, [test]);
        assert_eq!(settled.status, PipelineStatus::Running);
        assert!(!settled.changed);
    }
}
