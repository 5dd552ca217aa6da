//! Cancelling: a pipeline, one of its jobs, or the older pipelines of a branch a newer push supersedes.

use super::completion::settle_pipeline;
use super::db::{Exec, Row, Transaction, parse, query};
use super::dialect::Dialect;
use super::{CancelledPipeline, PipelineRecord, Result};
use chrono::{DateTime, Utc};
use gantry_model::{JobStatus, PipelineStatus};
use uuid::Uuid;

/// Cancels a pipeline in `tx`: what has not started ends now, running jobs are asked to stop. With `only`, just
/// that job of the pipeline (and, through settling, what needs it).
async fn cancel_in(
    tx: &mut impl Exec,
    lock: Option<&'static str>,
    pipeline: Uuid,
    only: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<CancelledPipeline> {
    // Waiting for a worker: cancelled; waiting for a job it needs: skipped, like any job whose needs did not
    // succeed.
    let ended = query(
        "UPDATE jobs SET status = CASE WHEN ready THEN 'cancelled' ELSE 'skipped' END,
           failure_kind = CASE WHEN ready THEN 'cancelled' ELSE NULL END, finished_at = $2,
           message = CASE WHEN ready THEN 'cancelled before it started'
                          ELSE 'not run: it was cancelled' END
         WHERE pipeline_id = $1 AND id = COALESCE($3, id) AND status = 'queued' RETURNING id, status",
    )
    .bind(pipeline)
    .bind(now)
    .bind(only)
    .fetch_all(tx)
    .await?;
    let stopping = query(
        "UPDATE jobs SET cancel_requested = TRUE
         WHERE pipeline_id = $1 AND id = COALESCE($2, id) AND status = 'running' RETURNING id",
    )
    .bind(pipeline)
    .bind(only)
    .fetch_all(tx)
    .await?;
    let ended = ended
        .iter()
        .map(|r| Ok((r.get::<Uuid>("id")?, parse::<JobStatus>(r.get("status")?)?)))
        .collect::<Result<Vec<_>>>()?;
    let stopping = stopping
        .iter()
        .map(|r| r.get::<Uuid>("id"))
        .collect::<Result<Vec<_>>>()?;
    // Not prepared yet: no jobs to cancel, and none may be added later.
    let unprepared = query(
        "UPDATE pipelines SET status = 'cancelled', prepared = TRUE, finished_at = $2
         WHERE id = $1 AND NOT prepared",
    )
    .bind(pipeline)
    .bind(now)
    .execute(tx)
    .await?;
    let pipeline_status = if unprepared == 1 {
        Some(PipelineStatus::Cancelled)
    } else if ended.is_empty() && stopping.is_empty() {
        None
    } else {
        Some(settle_pipeline(tx, lock, pipeline, now).await?.status)
    };
    Ok(CancelledPipeline {
        ended,
        stopping,
        pipeline_status,
    })
}

/// Cancels `pipeline`, or only its job `only`.
pub(crate) async fn cancel<D: Dialect>(
    db: &D,
    pipeline: Uuid,
    only: Option<Uuid>,
) -> Result<CancelledPipeline> {
    let mut tx = db.begin().await?;
    let cancelled = cancel_in(&mut tx, D::LOCK_PIPELINE_SQL, pipeline, only, Utc::now()).await?;
    tx.commit().await?;
    Ok(cancelled)
}

pub(crate) async fn supersede_pipelines<D: Dialect>(
    db: &D,
    newer: &PipelineRecord,
) -> Result<Vec<(Uuid, CancelledPipeline)>> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let reason = format!(
        "cancelled: superseded by #{}, a newer push to {}",
        newer.number, newer.git_ref
    );
    let older = query(
        "UPDATE pipelines SET error = $4 WHERE repo_id = $1 AND git_ref = $2 AND number < $3
           AND status IN ('queued', 'running') RETURNING id",
    )
    .bind(newer.repo_id)
    .bind(&newer.git_ref)
    .bind(newer.number)
    .bind(&reason)
    .fetch_all(&mut tx)
    .await?;
    let mut cancelled = Vec::with_capacity(older.len());
    for row in &older {
        let id: Uuid = row.get("id")?;
        let ended = cancel_in(&mut tx, D::LOCK_PIPELINE_SQL, id, None, now).await?;
        cancelled.push((id, ended));
    }
    tx.commit().await?;
    Ok(cancelled)
}
