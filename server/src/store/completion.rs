//! Ending a leased attempt and settling its pipeline: the other half of dispatch (the claim is the first), so
//! its round trips are counted (bench/dispatch). Shared by both dialects like `shared.rs`: `completion_sql!`
//! expands to free functions inside `impl_store!`; the decision itself (`settle`) is plain Rust. Each dialect
//! supplies `complete_attempt`: the attempt's end, its steps and test cases, and settling, in one transaction
//! and as few round trips as it can (PostgreSQL: `postgres.rs`; SQLite: `sqlite/dispatch.rs`, none).

/// Ends a leased attempt; the lease is checked in the same UPDATE ($9), so no row means it is not (or no
/// longer) this lease's job. Binds: $1 job, $2 status, $3 exit code, $4 failure kind, $5 message, $6 end,
/// $7 CPU seconds, $8 peak memory, $9 lease.
macro_rules! finish_attempt_sql {
    () => {
        "UPDATE jobs SET status = $2, exit_code = $3, failure_kind = $4, message = $5, finished_at = $6,
           cpu_seconds = $7, peak_memory_bytes = $8, lease_deadline_ms = NULL
         WHERE id = $1 AND lease_id = $9 AND status = 'running' RETURNING attempt, pipeline_id"
    };
}

/// A pipeline's jobs as settling reads them; the caller adds which pipeline and `ORDER BY j.position`.
macro_rules! pipeline_jobs_sql {
    () => {
        "SELECT j.id, j.name, j.needs, j.status, p.status AS pipeline_status
         FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id "
    };
}

/// Writes a settled pipeline's status ($2) and, when it is finished ($3), its end ($4).
macro_rules! set_pipeline_status_sql {
    () => {
        "UPDATE pipelines SET status = $2,
           finished_at = CASE WHEN $3 THEN COALESCE(finished_at, $4) ELSE NULL END
         WHERE id = $1"
    };
}

/// Records step $3 of attempt $2 of job $1, or its end when its start is there already.
macro_rules! upsert_step_sql {
    () => {
        "INSERT INTO steps (job_id, attempt, idx, command, log_offset, started_at, finished_at, exit_code)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (job_id, attempt, idx) DO UPDATE
         SET finished_at = excluded.finished_at, exit_code = excluded.exit_code"
    };
}

/// Stores test case $3 of attempt $2 of job $1 (a repeated completion brings the same cases again).
macro_rules! insert_test_case_sql {
    () => {
        "INSERT INTO test_cases (job_id, attempt, idx, suite, name, status, duration_ms, message)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (job_id, attempt, idx) DO NOTHING"
    };
}

/// Skips job $1, ended at $2: a job it needs did not succeed.
macro_rules! skip_job_sql {
    () => {
        "UPDATE jobs SET status = 'skipped', finished_at = $2,
           message = 'not run: a job it needs did not succeed' WHERE id = $1"
    };
}

/// Readies job $1: every job it needs succeeded.
macro_rules! ready_job_sql {
    () => {
        "UPDATE jobs SET ready = TRUE WHERE id = $1 AND NOT ready"
    };
}

use chrono::{DateTime, Utc};
use gantry_model::status::{NeedsVerdict, resolve_needs};
use gantry_model::wire::CompleteRequest;
use gantry_model::{FailureKind, JobStatus, PipelineStatus};
use uuid::Uuid;

/// What ending an attempt writes to its job.
pub(super) struct Ending<'a> {
    pub(super) status: JobStatus,
    pub(super) failure: Option<FailureKind>,
    pub(super) report: &'a CompleteRequest,
    pub(super) now: DateTime<Utc>,
}

/// One of a pipeline's jobs as settling sees it (a row of `pipeline_jobs_sql!`).
pub(super) struct SettlingJob {
    pub(super) id: Uuid,
    pub(super) name: String,
    pub(super) needs: Vec<String>,
    pub(super) status: JobStatus,
}

/// What settling a pipeline decided: the jobs to skip and to ready, its status, and whether that changed
/// (then it is to be written).
pub(super) struct Settled {
    pub(super) skip: Vec<Uuid>,
    pub(super) ready: Vec<Uuid>,
    pub(super) status: PipelineStatus,
    pub(super) changed: bool,
}

/// Settles a pipeline whose status was `was`, over its jobs read under its lock, in file order.
pub(super) fn settle(jobs: Vec<SettlingJob>, was: Option<&str>) -> Settled {
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

macro_rules! completion_sql {
    ($store:ident, $db:ty) => {
        /// Skips jobs whose needs failed, readies jobs whose needs succeeded, and sets the pipeline's status.
        async fn settle_pipeline(
            tx: &mut Tx,
            pipeline: Uuid,
            now: DateTime<Utc>,
        ) -> Result<(PipelineStatus, Vec<Uuid>)> {
            // Two jobs of the pipeline ending at once must not each see the other still running and leave the
            // pipeline `running`: the second waits here for the first to commit, then reads its end.
            if let Some(lock) = LOCK_PIPELINE_SQL {
                sqlx::query(lock).bind(pipeline).execute(&mut **tx).await?;
            }
            let rows = sqlx::query(concat!(pipeline_jobs_sql!(), "WHERE j.pipeline_id = $1 ORDER BY j.position"))
                .bind(pipeline)
                .fetch_all(&mut **tx)
                .await?;
            let settled = settle_jobs(tx, &rows, now).await?;
            if settled.changed {
                set_pipeline_status(&mut **tx, pipeline, settled.status, now).await?;
            }
            Ok((settled.status, settled.skip))
        }

        /// Settles the pipeline whose jobs are `rows` (`pipeline_jobs_sql!`, read under the pipeline's lock): skips
        /// and readies its jobs, and says its status, leaving that to the caller to write.
        async fn settle_jobs(tx: &mut Tx, rows: &[DbRow], now: DateTime<Utc>) -> Result<Settled> {
            let was = rows.first().map(|row| row.try_get::<String, _>("pipeline_status")).transpose()?;
            let mut jobs = Vec::with_capacity(rows.len());
            for row in rows {
                let needs: String = row.try_get("needs")?;
                jobs.push(SettlingJob {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    needs: serde_json::from_str(&needs).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    status: parse(row.try_get("status")?)?,
                });
            }
            let settled = settle(jobs, was.as_deref());
            for id in &settled.skip {
                sqlx::query(skip_job_sql!()).bind(id).bind(now).execute(&mut **tx).await?;
            }
            for id in &settled.ready {
                sqlx::query(ready_job_sql!()).bind(id).execute(&mut **tx).await?;
            }
            Ok(settled)
        }

        /// `sql` (which starts with `set_pipeline_status_sql!`'s parameters) bound for `pipeline`'s new status.
        fn bind_pipeline_status(
            sql: &'static str,
            pipeline: Uuid,
            status: PipelineStatus,
            now: DateTime<Utc>,
        ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
            sqlx::query(sql)
                .bind(pipeline)
                .bind(status.as_str())
                .bind(status.is_finished())
                .bind(now)
        }

        async fn set_pipeline_status(
            conn: &mut <$db as sqlx::Database>::Connection,
            pipeline: Uuid,
            status: PipelineStatus,
            now: DateTime<Utc>,
        ) -> Result<()> {
            bind_pipeline_status(set_pipeline_status_sql!(), pipeline, status, now)
                .execute(conn)
                .await?;
            Ok(())
        }

        /// Ends a leased job with the worker's report, skips what can no longer run, and settles the pipeline:
        /// `Store::complete_job`.
        async fn complete_leased(store: &$store, job: Uuid, lease: Uuid, report: &CompleteRequest) -> Result<Completed> {
            let now = Utc::now();
            let failure = report.failure_kind.or(match report.exit_code {
                Some(0) | None => None,
                Some(_) => Some(FailureKind::Exit),
            });
            let status = failure.map(FailureKind::job_status).unwrap_or(JobStatus::Success);
            if matches!(status, JobStatus::Failed | JobStatus::TimedOut) {
                // Its own transaction: the lease is checked again when the attempt ends below.
                let mut tx = store.begin().await?;
                let retried = retry(&mut tx, job, lease, status, report).await?;
                tx.commit().await?;
                if let Some(retried) = retried {
                    return Ok(retried);
                }
            }
            let ending = Ending { status, failure, report, now };
            match store.complete_attempt(job, lease, &ending).await? {
                Some(completed) => Ok(completed),
                None => {
                    let mut tx = store.begin().await?;
                    repeated_completion(&mut tx, job, lease).await
                }
            }
        }

        /// Puts a failed or timed-out attempt back in the queue, with its steps, while the job's own `retry:` allows
        /// it; `None` leaves the report to end the job (also when the lease is not the job's: the ending finds out).
        async fn retry(tx: &mut Tx, job: Uuid, lease: Uuid, status: JobStatus, report: &CompleteRequest) -> Result<Option<Completed>> {
            let Some(row) = sqlx::query(
                "SELECT attempt, spec, infra_retries, attempt_base, cancel_requested FROM jobs
                 WHERE id = $1 AND lease_id = $2 AND status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .fetch_optional(&mut **tx)
            .await?
            else {
                return Ok(None);
            };
            let attempt = row.try_get::<i64, _>("attempt")? as u32;
            let spec: String = row.try_get("spec")?;
            let spec: gantry_model::JobSpec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // The job's own `retry:` counts the attempts it ran to an end since the pipeline was last retried by
            // hand, not those a lost worker took.
            let ran = attempt
                .saturating_sub(row.try_get::<i64, _>("attempt_base")? as u32)
                .saturating_sub(row.try_get::<i64, _>("infra_retries")? as u32);
            if ran > spec.retry || row.try_get::<bool, _>("cancel_requested")? {
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
            let requeued = sqlx::query(
                "UPDATE jobs SET status = 'queued', lease_id = NULL, lease_deadline_ms = NULL, message = $3
                 WHERE id = $1 AND lease_id = $2 AND status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .bind(&message)
            .execute(&mut **tx)
            .await?;
            if requeued.rows_affected() != 1 {
                return Err(StoreError::StaleLease(job));
            }
            Ok(Some(Completed { status: JobStatus::Queued, pipeline_status: PipelineStatus::Running, skipped: Vec::new() }))
        }

        /// A report for a job this same lease already ended (its answer was lost): answered again, changing nothing.
        async fn repeated_completion(tx: &mut Tx, job: Uuid, lease: Uuid) -> Result<Completed> {
            let row = sqlx::query(
                "SELECT j.status, p.status AS pipeline_status FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
                 WHERE j.id = $1 AND j.lease_id = $2 AND j.status NOT IN ('queued', 'running')",
            )
            .bind(job)
            .bind(lease)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::StaleLease(job))?;
            Ok(Completed {
                status: parse(row.try_get("status")?)?,
                pipeline_status: parse(row.try_get("pipeline_status")?)?,
                skipped: Vec::new(),
            })
        }
    };
}

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
