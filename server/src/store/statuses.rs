//! The SQL of the commit-status outbox (migration 0008), shared by both dialects like `shared.rs`:
//! `status_sql!` expands to free functions inside `impl_store!`, whose `Store` methods call them. Rows are
//! written by triggers; these read, claim and close them. Claims are conditional UPDATEs, so two servers
//! sharing a PostgreSQL database never both post a row, and a server killed mid-post loses its claim when it
//! runs out (the row is posted again: a repeated status is harmless on every forge).

macro_rules! status_sql {
    ($db:ty) => {
        use $crate::store::status_records::*;

        type Conn = <$db as sqlx::Database>::Connection;

        fn status_to_send(row: &DbRow) -> Result<StatusToSend> {
            Ok(StatusToSend {
                id: row.try_get("id")?,
                pipeline_id: row.try_get("pipeline_id")?,
                status: parse(row.try_get("status")?)?,
                attempts: row.try_get::<i64, _>("attempts")? as u32,
                repo_id: row.try_get("repo_id")?,
                repo: row.try_get("repo")?,
                number: row.try_get("number")?,
                commit: row.try_get("commit_sha")?,
                error: row.try_get("error")?,
                forge: row.try_get("forge")?,
                forge_full_name: row.try_get("forge_full_name")?,
                clone_url: row.try_get("url")?,
                forge_api_url: row.try_get("forge_api_url")?,
                status_context: row.try_get("status_context")?,
                status_token: row.try_get("status_token")?,
            })
        }

        async fn claim_commit_statuses(
            pool: &sqlx::Pool<$db>,
            conn: &mut Conn,
            now_ms: i64,
            hold_until_ms: i64,
            limit: i64,
        ) -> Result<Vec<StatusToSend>> {
            // The head of each pipeline's queue: the oldest unsent row. `next_status` is the row after it.
            let rows = sqlx::query(
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
            .fetch_all(pool)
            .await?;
            let mut claimed = Vec::with_capacity(rows.len());
            for row in &rows {
                let status = status_to_send(row)?;
                let next: Option<String> = row.try_get("next_status")?;
                let pending = |s: &str| matches!(s, "queued" | "running");
                // Pending then pending again: only the later one is worth posting. Never a pending before a
                // final status: that one is what says "it ran" on a pipeline that finished in 100 ms.
                let superseded = pending(status.status.as_str()) && next.as_deref().is_some_and(pending);
                let taken = sqlx::query(
                    "UPDATE commit_statuses
                     SET claimed_until_ms = CASE WHEN $4 THEN NULL ELSE $2 END,
                         outcome = CASE WHEN $4 THEN 'superseded' ELSE NULL END
                     WHERE id = $1 AND outcome IS NULL AND (claimed_until_ms IS NULL OR claimed_until_ms <= $3)",
                )
                .bind(status.id)
                .bind(hold_until_ms)
                .bind(now_ms)
                .bind(superseded)
                .execute(&mut *conn)
                .await?;
                if taken.rows_affected() == 1 && !superseded {
                    claimed.push(status);
                }
            }
            Ok(claimed)
        }

        async fn finish_commit_status(conn: &mut Conn, id: i64, outcome: &StatusOutcome) -> Result<()> {
            let (done, next_try_ms, error) = match outcome {
                StatusOutcome::Sent => (Some("sent"), 0, None),
                StatusOutcome::Retry { at_ms, error } => (None, *at_ms, Some(error.as_str())),
                StatusOutcome::Failed { error } => (Some("failed"), 0, Some(error.as_str())),
            };
            sqlx::query(
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
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn release_commit_status_claims(conn: &mut Conn) -> Result<u64> {
            let released = sqlx::query(
                "UPDATE commit_statuses SET claimed_until_ms = NULL WHERE outcome IS NULL AND claimed_until_ms IS NOT NULL",
            )
            .execute(&mut *conn)
            .await?;
            Ok(released.rows_affected())
        }

        async fn next_commit_status_ms(pool: &sqlx::Pool<$db>) -> Result<Option<i64>> {
            let row = sqlx::query(
                "SELECT MIN(CASE WHEN c.claimed_until_ms > c.next_try_ms THEN c.claimed_until_ms ELSE c.next_try_ms END)
                   AS due FROM commit_statuses c JOIN pipelines p ON p.id = c.pipeline_id
                 WHERE c.outcome IS NULL AND p.prepared",
            )
            .fetch_one(pool)
            .await?;
            Ok(row.try_get("due")?)
        }

        async fn commit_statuses(pool: &sqlx::Pool<$db>, pipeline: Uuid) -> Result<Vec<CommitStatusRecord>> {
            let rows = sqlx::query(
                "SELECT status, outcome, attempts, last_error FROM commit_statuses WHERE pipeline_id = $1 ORDER BY id",
            )
            .bind(pipeline)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(CommitStatusRecord {
                        status: parse(row.try_get("status")?)?,
                        outcome: row.try_get("outcome")?,
                        attempts: row.try_get::<i64, _>("attempts")? as u32,
                        last_error: row.try_get("last_error")?,
                    })
                })
                .collect()
        }
    };
}
