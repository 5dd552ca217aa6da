//! The commit-status outbox (migration 0008). Rows are written by triggers; these read, claim and close them.
//! Claims are conditional UPDATEs, so two servers sharing a PostgreSQL database never both post a row, and a
//! server killed mid-post loses its claim when it runs out (the row is posted again: a repeated status is
//! harmless on every forge).

use super::Result;
use super::db::{Row, parse, query};
use super::dialect::Dialect;
use super::status_records::{CommitStatusRecord, StatusOutcome, StatusToSend};
use chrono::Utc;
use uuid::Uuid;

fn status_to_send(row: &impl Row) -> Result<StatusToSend> {
    Ok(StatusToSend {
        id: row.get("id")?,
        pipeline_id: row.get("pipeline_id")?,
        status: parse(row.get("status")?)?,
        attempts: row.get("attempts")?,
        repo_id: row.get("repo_id")?,
        repo: row.get("repo")?,
        number: row.get("number")?,
        commit: row.get("commit_sha")?,
        error: row.get("error")?,
        forge: row.get("forge")?,
        forge_full_name: row.get("forge_full_name")?,
        clone_url: row.get("url")?,
        forge_api_url: row.get("forge_api_url")?,
        status_context: row.get("status_context")?,
        status_token: row.get("status_token")?,
    })
}

pub(crate) async fn claim_commit_statuses(
    db: &impl Dialect,
    now_ms: i64,
    hold_until_ms: i64,
    limit: i64,
) -> Result<Vec<StatusToSend>> {
    // The head of each pipeline's queue: the oldest unsent row. `next_status` is the row after it.
    let rows = query(
        "SELECT c.id, c.pipeline_id, c.status, c.attempts, p.repo_id, r.name AS repo, p.number,
                p.commit_sha, p.error, r.forge, r.forge_full_name, r.url, r.forge_api_url,
                r.status_context, r.status_token,
                (SELECT n.status FROM commit_statuses n WHERE n.pipeline_id = c.pipeline_id AND n.id > c.id
                 ORDER BY n.id LIMIT 1) AS next_status
         FROM commit_statuses c JOIN pipelines p ON p.id = c.pipeline_id JOIN repos r ON r.id = p.repo_id
         WHERE c.outcome IS NULL AND p.prepared AND c.next_try_ms <= $1
           AND (c.claimed_until_ms IS NULL OR c.claimed_until_ms <= $1)
           AND NOT EXISTS (SELECT 1 FROM commit_statuses e
                           WHERE e.pipeline_id = c.pipeline_id AND e.outcome IS NULL AND e.id < c.id)
         ORDER BY c.id LIMIT $2",
    )
    .bind(now_ms)
    .bind(limit)
    .fetch_all(&mut db.reader().await?)
    .await?;
    let mut writer = db.writer().await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let status = status_to_send(row)?;
        let next: Option<String> = row.get("next_status")?;
        let pending = |s: &str| matches!(s, "queued" | "running");
        // Pending then pending again: only the later one is worth posting. Never a pending before a final
        // status: that one is what says "it ran" on a pipeline that finished in 100 ms.
        let superseded = pending(status.status.as_str()) && next.as_deref().is_some_and(pending);
        let taken = query(
            "UPDATE commit_statuses
             SET claimed_until_ms = CASE WHEN $4 THEN NULL ELSE $2 END,
                 outcome = CASE WHEN $4 THEN 'superseded' ELSE NULL END
             WHERE id = $1 AND outcome IS NULL AND (claimed_until_ms IS NULL OR claimed_until_ms <= $3)",
        )
        .bind(status.id)
        .bind(hold_until_ms)
        .bind(now_ms)
        .bind(superseded)
        .execute(&mut writer)
        .await?;
        if taken == 1 && !superseded {
            claimed.push(status);
        }
    }
    Ok(claimed)
}

pub(crate) async fn finish_commit_status(
    db: &impl Dialect,
    id: i64,
    outcome: &StatusOutcome,
) -> Result<()> {
    let (done, next_try_ms, error) = match outcome {
        StatusOutcome::Sent => (Some("sent"), 0, None),
        StatusOutcome::Retry { at_ms, error } => (None, *at_ms, Some(error.as_str())),
        StatusOutcome::Failed { error } => (Some("failed"), 0, Some(error.as_str())),
    };
    query(
        "UPDATE commit_statuses SET outcome = $2, attempts = attempts + 1, next_try_ms = $3,
           last_error = COALESCE($4, last_error), claimed_until_ms = NULL,
           finished_at = CASE WHEN $2 IS NULL THEN NULL ELSE $5 END
         WHERE id = $1",
    )
    .bind(id)
    .bind(done)
    .bind(next_try_ms)
    .bind(error)
    .bind(Utc::now())
    .execute(&mut db.writer().await?)
    .await?;
    Ok(())
}

pub(crate) async fn release_commit_status_claims(db: &impl Dialect) -> Result<u64> {
    query(
        "UPDATE commit_statuses SET claimed_until_ms = NULL WHERE outcome IS NULL AND claimed_until_ms IS NOT NULL",
    )
    .execute(&mut db.writer().await?)
    .await
}

pub(crate) async fn next_commit_status_ms(db: &impl Dialect) -> Result<Option<i64>> {
    let row = query(
        "SELECT MIN(CASE WHEN c.claimed_until_ms > c.next_try_ms THEN c.claimed_until_ms ELSE c.next_try_ms END)
           AS due FROM commit_statuses c JOIN pipelines p ON p.id = c.pipeline_id
         WHERE c.outcome IS NULL AND p.prepared",
    )
    .fetch_one(&mut db.reader().await?)
    .await?;
    row.get("due")
}

pub(crate) async fn commit_statuses(
    db: &impl Dialect,
    pipeline: Uuid,
) -> Result<Vec<CommitStatusRecord>> {
    let rows = query(
        "SELECT status, outcome, attempts, last_error FROM commit_statuses WHERE pipeline_id = $1 ORDER BY id",
    )
    .bind(pipeline)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CommitStatusRecord {
                status: parse(row.get("status")?)?,
                outcome: row.get("outcome")?,
                attempts: row.get("attempts")?,
                last_error: row.get("last_error")?,
            })
        })
        .collect()
}
