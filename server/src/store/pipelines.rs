//! Pipelines: made from a delivery, prepared with their jobs (or dropped, or failed), and listed.

use super::completion::settle_pipeline;
use super::db::{Row, Transaction, query};
use super::deliveries::insert_delivery;
use super::dialect::Dialect;
use super::{CreatedPipeline, NewJob, NewPipeline, PipelineRecord, Result, StoreError};
use chrono::Utc;
use const_format::concatcp;
use gantry_model::JobStatus;
use gantry_model::wire::PullRequest;
use uuid::Uuid;

/// A pipeline with its repository's name, as [`pipeline_from`] reads it; the caller adds the rest.
const SELECT_PIPELINES: &str = "SELECT p.id, r.name AS repo, p.repo_id, p.number, p.commit_sha, p.git_ref, p.event,
        p.author, p.message, p.status, p.error, p.prepared, p.created_at, p.started_at, p.finished_at,
        p.pr_number, p.source_branch, p.target_branch, p.from_fork
     FROM pipelines p JOIN repos r ON r.id = p.repo_id ";

fn pipeline_from(row: &impl Row) -> Result<PipelineRecord> {
    Ok(PipelineRecord {
        id: row.get("id")?,
        repo: row.get("repo")?,
        repo_id: row.get("repo_id")?,
        number: row.get("number")?,
        commit: row.get("commit_sha")?,
        git_ref: row.get("git_ref")?,
        event: row.get("event")?,
        author: row.get("author")?,
        message: row.get("message")?,
        status: super::db::parse(row.get("status")?)?,
        error: row.get("error")?,
        prepared: row.get("prepared")?,
        pull_request: pull_request_from(row)?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
    })
}

/// The pull request a pipeline row (or a claim's) carries, if it is one's.
pub(crate) fn pull_request_from(row: &impl Row) -> Result<Option<PullRequest>> {
    let Some(number) = row.get::<Option<i64>>("pr_number")? else {
        return Ok(None);
    };
    Ok(Some(PullRequest {
        number,
        source_branch: row
            .get::<Option<String>>("source_branch")?
            .unwrap_or_default(),
        target_branch: row
            .get::<Option<String>>("target_branch")?
            .unwrap_or_default(),
        from_fork: row.get("from_fork")?,
    }))
}

pub(crate) async fn create_pipeline(
    db: &impl Dialect,
    new: &NewPipeline,
) -> Result<CreatedPipeline> {
    let d = &new.delivery;
    let mut tx = db.begin().await?;
    // The pipeline, not the delivery row, makes a redelivery a duplicate: only the newest deliveries are kept,
    // pipelines stay.
    let seen = query("SELECT id, number FROM pipelines WHERE repo_id = $1 AND delivery_id = $2")
        .bind(d.repo_id)
        .bind(&d.delivery_id)
        .fetch_optional(&mut tx)
        .await?;
    if let Some(row) = seen {
        return Ok(CreatedPipeline {
            id: row.get("id")?,
            number: row.get("number")?,
            duplicate: true,
        });
    }
    let delivery_row = insert_delivery(&mut tx, d, "created", None)
        .await?
        .ok_or_else(|| StoreError::Conflict(format!("delivery {:?}", d.delivery_id)))?;
    let number: i64 =
        query("UPDATE repos SET next_number = next_number + 1 WHERE id = $1 RETURNING next_number")
            .bind(d.repo_id)
            .fetch_one(&mut tx)
            .await?
            .get("next_number")?;
    let id = Uuid::now_v7();
    let pr = new.pull_request.as_ref();
    query(
        "INSERT INTO pipelines (id, repo_id, number, delivery_id, commit_sha, git_ref, event, author, message,
                                status, prepared, created_at, pr_number, source_branch, target_branch,
                                from_fork)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', FALSE, $10, $11, $12, $13, $14)",
    )
    .bind(id)
    .bind(d.repo_id)
    .bind(number)
    .bind(&d.delivery_id)
    .bind(&new.commit)
    .bind(&new.git_ref)
    .bind(&new.event)
    .bind(new.author.as_deref())
    .bind(new.message.as_deref())
    .bind(Utc::now())
    .bind(pr.map(|pr| pr.number))
    .bind(pr.map(|pr| pr.source_branch.as_str()))
    .bind(pr.map(|pr| pr.target_branch.as_str()))
    .bind(pr.is_some_and(|pr| pr.from_fork))
    .execute(&mut tx)
    .await?;
    query("UPDATE webhook_deliveries SET pipeline_id = $1 WHERE id = $2")
        .bind(id)
        .bind(delivery_row)
        .execute(&mut tx)
        .await?;
    tx.commit().await?;
    Ok(CreatedPipeline {
        id,
        number,
        duplicate: false,
    })
}

pub(crate) async fn add_jobs<D: Dialect>(db: &D, pipeline: Uuid, jobs: &[NewJob]) -> Result<()> {
    let mut tx = db.begin().await?;
    let claimed = query("UPDATE pipelines SET prepared = TRUE WHERE id = $1 AND NOT prepared")
        .bind(pipeline)
        .execute(&mut tx)
        .await?;
    if claimed == 0 {
        return Ok(()); // prepared already, by an earlier run of the same task
    }
    let now = Utc::now();
    for (position, job) in jobs.iter().enumerate() {
        let needs: Vec<&str> = job.spec.needs.iter().map(|n| n.as_str()).collect();
        let status = if job.skipped.is_some() {
            JobStatus::Skipped
        } else {
            JobStatus::Queued
        };
        query(
            "INSERT INTO jobs (id, pipeline_id, position, name, needs, spec, status, ready, queued_at, runs_on,
                               message, finished_at, priority)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(job.id)
        .bind(pipeline)
        .bind(super::db::int(position as u64)?)
        .bind(job.spec.name.as_str())
        .bind(serde_json::to_string(&needs).expect("names serialise"))
        .bind(serde_json::to_string(&job.spec).expect("specs serialise"))
        .bind(status.as_str())
        .bind(needs.is_empty())
        .bind(now)
        .bind(serde_json::to_string(&job.spec.runs_on).expect("labels serialise"))
        .bind(job.skipped.as_deref())
        .bind(job.skipped.as_ref().map(|_| now))
        .bind(i64::from(job.spec.priority))
        .execute(&mut tx)
        .await?;
    }
    if jobs.iter().any(|j| j.skipped.is_some()) {
        // What needs a filtered-out job is skipped too, and a pipeline of skipped jobs is over.
        settle_pipeline(&mut tx, D::LOCK_PIPELINE_SQL, pipeline, now).await?;
    }
    tx.commit().await
}

pub(crate) async fn drop_pipeline(db: &impl Dialect, pipeline: Uuid, reason: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    // Cancelled (so prepared) in the meantime: it stays, with its delivery.
    let unprepared = query("SELECT id FROM pipelines WHERE id = $1 AND NOT prepared")
        .bind(pipeline)
        .fetch_optional(&mut tx)
        .await?;
    if unprepared.is_none() {
        return Ok(());
    }
    query(
        "UPDATE webhook_deliveries SET outcome = 'ignored', reason = $2, pipeline_id = NULL WHERE pipeline_id = $1",
    )
    .bind(pipeline)
    .bind(reason)
    .execute(&mut tx)
    .await?;
    query("DELETE FROM pipelines WHERE id = $1 AND NOT prepared")
        .bind(pipeline)
        .execute(&mut tx)
        .await?;
    tx.commit().await
}

pub(crate) async fn fail_pipeline(db: &impl Dialect, pipeline: Uuid, message: &str) -> Result<()> {
    query(
        "UPDATE pipelines SET status = 'error', error = $2, prepared = TRUE, finished_at = $3
         WHERE id = $1 AND NOT prepared",
    )
    .bind(pipeline)
    .bind(message)
    .bind(Utc::now())
    .execute(&mut db.writer().await?)
    .await?;
    Ok(())
}

pub(crate) async fn unprepared_pipelines(db: &impl Dialect) -> Result<Vec<PipelineRecord>> {
    const SQL: &str = concatcp!(
        SELECT_PIPELINES,
        "WHERE NOT p.prepared ORDER BY p.created_at"
    );
    let rows = query(SQL).fetch_all(&mut db.reader().await?).await?;
    rows.iter().map(pipeline_from).collect()
}

pub(crate) async fn list_pipelines(
    db: &impl Dialect,
    repo: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<PipelineRecord>> {
    const SQL: &str = concatcp!(
        SELECT_PIPELINES,
        "WHERE r.name = $1 AND p.number < $2 ORDER BY p.number DESC LIMIT $3"
    );
    let rows = query(SQL)
        .bind(repo)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter().map(pipeline_from).collect()
}

pub(crate) async fn recent_pipelines(db: &impl Dialect, limit: i64) -> Result<Vec<PipelineRecord>> {
    const SQL: &str = concatcp!(
        SELECT_PIPELINES,
        "ORDER BY p.created_at DESC, p.number DESC LIMIT $1"
    );
    let rows = query(SQL)
        .bind(limit)
        .fetch_all(&mut db.reader().await?)
        .await?;
    rows.iter().map(pipeline_from).collect()
}

pub(crate) async fn get_pipeline(
    db: &impl Dialect,
    repo: &str,
    number: i64,
) -> Result<Option<PipelineRecord>> {
    const SQL: &str = concatcp!(SELECT_PIPELINES, "WHERE r.name = $1 AND p.number = $2");
    let row = query(SQL)
        .bind(repo)
        .bind(number)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    row.as_ref().map(pipeline_from).transpose()
}

pub(crate) async fn get_pipeline_by_id(
    db: &impl Dialect,
    id: Uuid,
) -> Result<Option<PipelineRecord>> {
    const SQL: &str = concatcp!(SELECT_PIPELINES, "WHERE p.id = $1");
    let row = query(SQL)
        .bind(id)
        .fetch_optional(&mut db.reader().await?)
        .await?;
    row.as_ref().map(pipeline_from).transpose()
}
