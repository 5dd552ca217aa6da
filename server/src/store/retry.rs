//! The SQL of running jobs again: a finished pipeline retried by hand (`POST …/retry`), and an attempt its
//! worker reports lost to Gantry's machinery (DESIGN §3's automatic retries). Shared by both dialects like
//! `shared.rs`: `retry_sql!` expands to free functions inside `impl_store!`, whose `Store` methods call them.

macro_rules! retry_sql {
    ($db:ty) => {
        /// Puts an attempt that ended in `worker_lost` or `infra` back in the queue while the job's automatic
        /// retries allow; `None` leaves the report to end the job (also when the lease is not the job's).
        async fn requeue_infra(tx: &mut Tx, job: Uuid, lease: Uuid, report: &CompleteRequest, cap: u32) -> Result<Option<Completed>> {
            let Some(row) = sqlx::query(
                "SELECT attempt, infra_retries, cancel_requested FROM jobs WHERE id = $1 AND lease_id = $2 AND status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .fetch_optional(&mut **tx)
            .await?
            else {
                return Ok(None);
            };
            let retried = row.try_get::<i64, _>("infra_retries")? as u32;
            if retried >= cap || row.try_get::<bool, _>("cancel_requested")? {
                return Ok(None);
            }
            let attempt = row.try_get::<i64, _>("attempt")? as u32;
            for step in &report.steps {
                upsert_step(tx, job, attempt, step).await?;
            }
            let what = report.message.as_deref().unwrap_or("Gantry's machinery failed");
            let message = format!(
                "attempt {attempt}: {what}; running it again (automatic retry {} of {cap})",
                retried + 1
            );
            sqlx::query(
                "UPDATE jobs SET status = 'queued', lease_id = NULL, lease_deadline_ms = NULL, message = $3,
                   infra_retries = infra_retries + 1
                 WHERE id = $1 AND lease_id = $2 AND status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .bind(&message)
            .execute(&mut **tx)
            .await?;
            Ok(Some(Completed { status: JobStatus::Queued, pipeline_status: PipelineStatus::Running, skipped: Vec::new() }))
        }

        async fn retry_pipeline(
            tx: &mut Tx,
            pipeline: Uuid,
        ) -> Result<RetriedPipeline> {
            let now = Utc::now();
            let status: String = sqlx::query("SELECT status FROM pipelines WHERE id = $1")
                .bind(pipeline)
                .fetch_optional(&mut **tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("pipeline {pipeline}")))?
                .try_get("status")?;
            if !parse::<PipelineStatus>(status)?.is_finished() {
                return Err(StoreError::Busy("the pipeline is still running; cancel it first or wait for its end".into()));
            }
            // Every job that did not succeed runs again as its next attempt; its own `retry:` and the automatic
            // retries of lost workers count afresh from here (`attempt_base`).
            let requeued = sqlx::query(
                "UPDATE jobs SET status = 'queued', ready = FALSE, lease_id = NULL, lease_deadline_ms = NULL,
                   cancel_requested = FALSE, exit_code = NULL, failure_kind = NULL, message = NULL,
                   finished_at = NULL, infra_retries = 0, attempt_base = attempt, queued_at = $2
                 WHERE pipeline_id = $1 AND status <> 'success' RETURNING id",
            )
            .bind(pipeline)
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
            let mut requeued = requeued.iter().map(|r| r.try_get::<Uuid, _>("id")).collect::<Result<Vec<_>, _>>()?;
            // UUIDv7s of one pipeline's jobs sort in file order; RETURNING promises no order.
            requeued.sort();
            let any_jobs: bool = sqlx::query("SELECT EXISTS (SELECT 1 FROM jobs WHERE pipeline_id = $1) AS any")
                .bind(pipeline)
                .fetch_one(&mut **tx)
                .await?
                .try_get("any")?;
            if !any_jobs {
                // Its file could not be fetched or read: prepare it again (the fetch may have failed for a while).
                sqlx::query(
                    "UPDATE pipelines SET status = 'queued', error = NULL, prepared = FALSE, finished_at = NULL
                     WHERE id = $1",
                )
                .bind(pipeline)
                .execute(&mut **tx)
                .await?;
                return Ok(RetriedPipeline { requeued, reprepare: true });
            }
            settle_pipeline(tx, pipeline, now).await?;
            Ok(RetriedPipeline { requeued, reprepare: false })
        }
    };
}
