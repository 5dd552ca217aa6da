//! Ending a leased attempt and settling its pipeline: the other half of dispatch (the claim is the first), so
//! its round trips are counted (bench/dispatch). Shared by both dialects like `shared.rs`: `completion_sql!`
//! expands to free functions inside `impl_store!`. Each dialect supplies `FINISH_SQL` and `finish_attempt`
//! (the transaction's start, the attempt's end and the read of its pipeline, in as few round trips as it can)
//! and `commit_settled` (the pipeline's new status and the commit).

/// Ends a leased attempt; the lease is checked in the same UPDATE ($9), so no row means it is not (or no
/// longer) this lease's job. Binds: see `bind_ending`.
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

macro_rules! completion_sql {
    ($store:ident, $db:ty) => {
        /// What ending an attempt writes to its job.
        struct Ending<'a> {
            status: JobStatus,
            failure: Option<FailureKind>,
            report: &'a CompleteRequest,
            now: DateTime<Utc>,
        }

        /// `sql` (which starts with `finish_attempt_sql!`'s parameters) bound for ending `job`'s attempt under `lease`.
        fn bind_ending(
            sql: &'static str,
            job: Uuid,
            lease: Uuid,
            ending: &Ending<'_>,
        ) -> sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments> {
            sqlx::query(sql)
                .bind(job)
                .bind(ending.status.as_str())
                .bind(ending.report.exit_code.map(i64::from))
                .bind(ending.failure.map(FailureKind::as_str))
                .bind(ending.report.message.clone())
                .bind(ending.now)
                .bind(ending.report.cpu_seconds)
                .bind(ending.report.peak_memory_bytes.map(|b| b as i64))
                .bind(lease)
        }

        /// An attempt ended by `finish_attempt`: its number and its pipeline's jobs (`pipeline_jobs_sql!`), read
        /// after the end and, on PostgreSQL, after the pipeline's row was locked.
        struct Finished {
            attempt: u32,
            pipeline: Uuid,
            jobs: Vec<DbRow>,
        }

        /// What settling a pipeline decided; `changed` says its status is to be written.
        struct Settled {
            status: PipelineStatus,
            skipped: Vec<Uuid>,
            changed: bool,
        }

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
            Ok((settled.status, settled.skipped))
        }

        /// Settles the pipeline whose jobs are `rows` (`pipeline_jobs_sql!`, read under the pipeline's lock): skips
        /// and readies its jobs, and says its status, leaving that to the caller to write.
        async fn settle_jobs(tx: &mut Tx, rows: &[DbRow], now: DateTime<Utc>) -> Result<Settled> {
            let mut skipped = Vec::new();
            let was = rows.first().map(|row| row.try_get::<String, _>("pipeline_status")).transpose()?;
            let mut jobs = Vec::with_capacity(rows.len());
            let mut ids = Vec::with_capacity(rows.len());
            for row in rows {
                let needs: String = row.try_get("needs")?;
                let needs: Vec<String> = serde_json::from_str(&needs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                ids.push(row.try_get::<Uuid, _>("id")?);
                jobs.push((row.try_get::<String, _>("name")?, needs, parse::<JobStatus>(row.try_get("status")?)?));
            }
            for (i, verdict) in resolve_needs(&jobs).into_iter().enumerate() {
                match verdict {
                    NeedsVerdict::Skip => {
                        sqlx::query(
                            "UPDATE jobs SET status = 'skipped', finished_at = $2,
                             message = 'not run: a job it needs did not succeed' WHERE id = $1",
                        )
                        .bind(ids[i])
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                        jobs[i].2 = JobStatus::Skipped;
                        skipped.push(ids[i]);
                    }
                    NeedsVerdict::Ready => {
                        sqlx::query("UPDATE jobs SET ready = TRUE WHERE id = $1 AND NOT ready")
                            .bind(ids[i])
                            .execute(&mut **tx)
                            .await?;
                    }
                    NeedsVerdict::Wait => {}
                }
            }
            let status = PipelineStatus::from_jobs(jobs.iter().map(|j| j.2));
            // Unchanged, so is its `finished_at`: every write of a status writes that too.
            let changed = was.as_deref() != Some(status.as_str());
            Ok(Settled { status, skipped, changed })
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
            let (mut tx, finished) = store.finish_attempt(job, lease, &ending).await?;
            let Some(finished) = finished else {
                return repeated_completion(&mut tx, job, lease).await;
            };
            for step in &report.steps {
                upsert_step(&mut tx, job, finished.attempt, step).await?;
            }
            insert_test_cases(&mut tx, job, finished.attempt, &report.tests).await?;
            let settled = settle_jobs(&mut tx, &finished.jobs, now).await?;
            let changed = settled.changed.then_some(settled.status);
            commit_settled(tx, finished.pipeline, changed, now).await?;
            Ok(Completed { status, pipeline_status: settled.status, skipped: settled.skipped })
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
