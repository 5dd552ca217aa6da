//! Running jobs again: a finished pipeline retried by hand (`POST …/retry`), and an attempt its worker reports
//! lost to Gantry's machinery (docs/data-model.md, "Automatic retries").

use super::completion::settle_pipeline;
use super::db::{Row, Transaction, parse, query};
use super::dialect::Dialect;
use super::jobs::upsert_step;
use super::{Completed, Result, RetriedPipeline, StoreError};
use chrono::Utc;
use gantry_model::wire::CompleteRequest;
use gantry_model::{JobStatus, PipelineStatus};
use uuid::Uuid;

/// Puts an attempt that ended in `worker_lost` or `infra` back in the queue while the job's automatic retries
/// allow; `None` leaves the report to end the job (also when the lease is not the job's).
pub(crate) async fn requeue_infra(
    db: &impl Dialect,
    job: Uuid,
    lease: Uuid,
    report: &CompleteRequest,
    cap: u32,
) -> Result<Option<Completed>> {
    let mut tx = db.begin().await?;
    let Some(row) = query(
        "SELECT attempt, infra_retries, cancel_requested FROM jobs WHERE id = $1 AND lease_id = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .fetch_optional(&mut tx)
    .await?
    else {
        return Ok(None);
    };
    let retried: u32 = row.get("infra_retries")?;
    if retried >= cap || row.get("cancel_requested")? {
        return Ok(None);
    }
    let attempt: u32 = row.get("attempt")?;
    for step in &report.steps {
        upsert_step(&mut tx, job, attempt, step).await?;
    }
    let what = report
        .message
        .as_deref()
        .unwrap_or("Gantry's machinery failed");
    let message = format!(
        "attempt {attempt}: {what}; running it again (automatic retry {} of {cap})",
        retried + 1
    );
    query(
        "UPDATE jobs SET status = 'queued', lease_id = NULL, lease_deadline_ms = NULL, message = $3,
           infra_retries = infra_retries + 1
         WHERE id = $1 AND lease_id = $2 AND status = 'running'",
    )
    .bind(job)
    .bind(lease)
    .bind(&message)
    .execute(&mut tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Completed {
        status: JobStatus::Queued,
        pipeline_status: PipelineStatus::Running,
        skipped: Vec::new(),
    }))
}

pub(crate) async fn retry_pipeline<D: Dialect>(db: &D, pipeline: Uuid) -> Result<RetriedPipeline> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let status: String = query("SELECT status FROM pipelines WHERE id = $1")
        .bind(pipeline)
        .fetch_optional(&mut tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline {pipeline}")))?
        .get("status")?;
    if !parse::<PipelineStatus>(status)?.is_finished() {
        return Err(StoreError::Busy(
            "the pipeline is still running; cancel it first or wait for its end".into(),
        ));
    }
    // Every job that did not succeed runs again as its next attempt; its own `retry:` and the automatic retries
    // of lost workers count afresh from here (`attempt_base`).
    let requeued = query(
        "UPDATE jobs SET status = 'queued', ready = FALSE, lease_id = NULL, lease_deadline_ms = NULL,
           cancel_requested = FALSE, exit_code = NULL, failure_kind = NULL, message = NULL,
           finished_at = NULL, infra_retries = 0, attempt_base = attempt, queued_at = $2
         WHERE pipeline_id = $1 AND status <> 'success' RETURNING id",
    )
    .bind(pipeline)
    .bind(now)
    .fetch_all(&mut tx)
    .await?;
    let mut requeued = requeued
        .iter()
        .map(|r| r.get::<Uuid>("id"))
        .collect::<Result<Vec<_>>>()?;
    // UUIDv7s of one pipeline's jobs sort in file order; RETURNING promises no order.
    requeued.sort();
    let any_jobs: bool = query("SELECT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = $1) AS any")
        .bind(pipeline)
        .fetch_one(&mut tx)
        .await?
        .get("any")?;
    let reprepare = !any_jobs;
    if reprepare {
        // Its file could not be fetched or read: prepare it again (the fetch may have failed for a while).
        query(
            "UPDATE pipelines SET status = 'queued', error = NULL, prepared = FALSE, finished_at = NULL
             WHERE id = $1",
        )
        .bind(pipeline)
        .execute(&mut tx)
        .await?;
    } else {
        settle_pipeline(&mut tx, D::LOCK_PIPELINE_SQL, pipeline, now).await?;
    }
    tx.commit().await?;
    Ok(RetriedPipeline {
        requeued,
        reprepare,
    })
}
