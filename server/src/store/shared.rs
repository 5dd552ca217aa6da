//! The SQL both dialects share. `impl_store!` instantiates the one implementation of [`super::Store`] for each
//! backend's driver types; each backend supplies `begin()` (how a write transaction starts, and its type `Tx`),
//! `writer()` (a connection for a single write), `LOCK_PIPELINE_SQL`, `claim` and `complete_attempt` (see
//! `completion.rs`).
//! Queries use `$N` placeholders, which SQLite accepts too.

macro_rules! job_columns {
    () => {
        "id, pipeline_id, name, spec, status, attempt, lease_id, worker_name, exit_code, failure_kind, message,
         log_length, queued_at, started_at, finished_at, cpu_seconds, peak_memory_bytes"
    };
}

macro_rules! pipeline_select {
    () => {
        "SELECT p.id, r.name AS repo, p.repo_id, p.number, p.commit_sha, p.git_ref, p.event, p.author, p.message,
                p.status, p.error, p.prepared, p.created_at, p.started_at, p.finished_at, p.pr_number,
                p.source_branch, p.target_branch, p.from_fork
         FROM pipelines p JOIN repos r ON r.id = p.repo_id "
    };
}

macro_rules! repo_select {
    () => {
        "SELECT id, name, url, forge, forge_full_name, secret, created_at, cancel_previous, fork_host_image, private, max_running_jobs,
                forge_api_url, status_context, clone_credential IS NOT NULL AS has_clone_token,
                status_token IS NOT NULL AS has_status_token
         FROM repos "
    };
}

macro_rules! impl_store {
    ($store:ident, $db:ty, $dialect:literal) => {
        use $crate::store::{records::*, Store, StoreError};
        use chrono::{DateTime, Utc};
        use gantry_model::wire::PullRequest;
        use super::completion::{settle, Ending, Settled, SettlingJob};
        use gantry_model::wire::{CompleteRequest, RepoSettings, Scope, StepReport};
        use gantry_model::{FailureKind, JobStatus, PipelineStatus};
        use sqlx::Row;
        use uuid::Uuid;

        type DbRow = <$db as sqlx::Database>::Row;

        artifact_sql!($db);
        completion_sql!($store, $db);
        retry_sql!($db);
        delivery_sql!($db);
        status_sql!($db);
        secret_sql!($db);

        fn parse<T: std::str::FromStr<Err = String>>(text: String) -> Result<T> {
            text.parse().map_err(StoreError::Corrupt)
        }

        fn repo_from(row: &DbRow) -> Result<RepoRecord> {
            Ok(RepoRecord {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                url: row.try_get("url")?,
                forge: row.try_get("forge")?,
                forge_full_name: row.try_get("forge_full_name")?,
                secret: row.try_get("secret")?,
                created_at: row.try_get("created_at")?,
                cancel_previous: row.try_get("cancel_previous")?,
                fork_host_image: row.try_get("fork_host_image")?,
                private: row.try_get("private")?,
                max_running_jobs: row.try_get::<Option<i64>, _>("max_running_jobs")?.map(|n| n as u32),
                forge_api_url: row.try_get("forge_api_url")?,
                status_context: row.try_get("status_context")?,
                has_clone_token: row.try_get("has_clone_token")?,
                has_status_token: row.try_get("has_status_token")?,
            })
        }

        fn pipeline_from(row: &DbRow) -> Result<PipelineRecord> {
            Ok(PipelineRecord {
                id: row.try_get("id")?,
                repo: row.try_get("repo")?,
                repo_id: row.try_get("repo_id")?,
                number: row.try_get("number")?,
                commit: row.try_get("commit_sha")?,
                git_ref: row.try_get("git_ref")?,
                event: row.try_get("event")?,
                author: row.try_get("author")?,
                message: row.try_get("message")?,
                status: parse(row.try_get("status")?)?,
                error: row.try_get("error")?,
                prepared: row.try_get("prepared")?,
                pull_request: pull_request_from(row)?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
            })
        }

        fn pull_request_from(row: &DbRow) -> Result<Option<PullRequest>> {
            let Some(number) = row.try_get::<Option<i64>, _>("pr_number")? else {
                return Ok(None);
            };
            Ok(Some(PullRequest {
                number,
                source_branch: row.try_get::<Option<String>, _>("source_branch")?.unwrap_or_default(),
                target_branch: row.try_get::<Option<String>, _>("target_branch")?.unwrap_or_default(),
                from_fork: row.try_get("from_fork")?,
            }))
        }

        fn job_from(row: &DbRow) -> Result<JobRecord> {
            let spec: String = row.try_get("spec")?;
            let failure: Option<String> = row.try_get("failure_kind")?;
            Ok(JobRecord {
                id: row.try_get("id")?,
                pipeline_id: row.try_get("pipeline_id")?,
                name: row.try_get("name")?,
                spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                status: parse(row.try_get("status")?)?,
                attempt: row.try_get::<i64, _>("attempt")? as u32,
                lease_id: row.try_get("lease_id")?,
                worker_name: row.try_get("worker_name")?,
                exit_code: row.try_get::<Option<i64>, _>("exit_code")?.map(|c| c as i32),
                failure_kind: failure.map(parse).transpose()?,
                message: row.try_get("message")?,
                log_length: row.try_get::<i64, _>("log_length")? as u64,
                queued_at: row.try_get("queued_at")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                cpu_seconds: row.try_get("cpu_seconds")?,
                peak_memory_bytes: row.try_get("peak_memory_bytes")?,
            })
        }

        fn step_from(row: &DbRow) -> Result<StepReport> {
            Ok(StepReport {
                index: row.try_get::<i64, _>("idx")? as u32,
                command: row.try_get("command")?,
                log_offset: row.try_get::<i64, _>("log_offset")? as u64,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
                exit_code: row.try_get::<Option<i64>, _>("exit_code")?.map(|c| c as i32),
            })
        }

        /// Checks that `lease` is the running job's lease; returns (attempt, pipeline id, cancel requested).
        async fn leased(
            tx: &mut Tx,
            job: Uuid,
            lease: Uuid,
        ) -> Result<(u32, Uuid, bool, i64)> {
            let row = sqlx::query(
                "SELECT attempt, pipeline_id, cancel_requested, log_length FROM jobs
                 WHERE id = $1 AND lease_id = $2 AND status = 'running'",
            )
            .bind(job)
            .bind(lease)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(StoreError::StaleLease(job))?;
            Ok((
                row.try_get::<i64, _>("attempt")? as u32,
                row.try_get("pipeline_id")?,
                row.try_get("cancel_requested")?,
                row.try_get("log_length")?,
            ))
        }

        async fn upsert_step(
            tx: &mut Tx,
            job: Uuid,
            attempt: u32,
            step: &StepReport,
        ) -> Result<()> {
            sqlx::query(upsert_step_sql!())
            .bind(job)
            .bind(attempt as i64)
            .bind(step.index as i64)
            .bind(&step.command)
            .bind(step.log_offset as i64)
            .bind(step.started_at)
            .bind(step.finished_at)
            .bind(step.exit_code.map(i64::from))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        /// Cancels a pipeline in `tx`: what has not started ends now, running jobs are asked to stop.
        /// With `only`, just that job of the pipeline (and, through settling, what needs it).
        async fn cancel_in(
            tx: &mut Tx,
            pipeline: Uuid,
            only: Option<Uuid>,
            now: DateTime<Utc>,
        ) -> Result<CancelledPipeline> {
            // Waiting for a worker: cancelled; waiting for a job it needs: skipped, like any job whose needs
            // did not succeed.
            let ended = sqlx::query(
                "UPDATE jobs SET status = CASE WHEN ready THEN 'cancelled' ELSE 'skipped' END,
                   failure_kind = CASE WHEN ready THEN 'cancelled' ELSE NULL END, finished_at = $2,
                   message = CASE WHEN ready THEN 'cancelled before it started'
                                  ELSE 'not run: it was cancelled' END
                 WHERE pipeline_id = $1 AND id = COALESCE($3, id) AND status = 'queued' RETURNING id, status",
            )
            .bind(pipeline)
            .bind(now)
            .bind(only)
            .fetch_all(&mut **tx)
            .await?;
            let stopping = sqlx::query(
                "UPDATE jobs SET cancel_requested = TRUE
                 WHERE pipeline_id = $1 AND id = COALESCE($2, id) AND status = 'running' RETURNING id",
            )
            .bind(pipeline)
            .bind(only)
            .fetch_all(&mut **tx)
            .await?;
            let ended = ended
                .iter()
                .map(|r| Ok((r.try_get::<Uuid, _>("id")?, parse::<JobStatus>(r.try_get("status")?)?)))
                .collect::<Result<Vec<_>>>()?;
            let stopping = stopping.iter().map(|r| r.try_get::<Uuid, _>("id")).collect::<Result<Vec<_>, _>>()?;
            // Not prepared yet: no jobs to cancel, and none may be added later.
            let unprepared = sqlx::query(
                "UPDATE pipelines SET status = 'cancelled', prepared = TRUE, finished_at = $2
                 WHERE id = $1 AND NOT prepared",
            )
            .bind(pipeline)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            let pipeline_status = if unprepared.rows_affected() == 1 {
                Some(PipelineStatus::Cancelled)
            } else if ended.is_empty() && stopping.is_empty() {
                None
            } else {
                Some(settle_pipeline(tx, pipeline, now).await?.0)
            };
            Ok(CancelledPipeline { ended, stopping, pipeline_status })
        }

        async fn insert_delivery(
            tx: &mut Tx,
            d: &NewDelivery,
            outcome: &str,
            reason: Option<&str>,
        ) -> Result<Option<i64>> {
            let row = sqlx::query(
                "INSERT INTO webhook_deliveries (repo_id, delivery_id, forge, event, body, outcome, reason, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (repo_id, delivery_id) DO NOTHING RETURNING id",
            )
            .bind(d.repo_id)
            .bind(&d.delivery_id)
            .bind(&d.forge)
            .bind(&d.event)
            .bind(&d.body)
            .bind(outcome)
            .bind(reason)
            .bind(Utc::now())
            .fetch_optional(&mut **tx)
            .await?;
            Ok(row.map(|r| r.try_get("id")).transpose()?)
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn dialect(&self) -> &'static str {
                $dialect
            }

            async fn bootstrap(&self, admin_hash: &str, pool_hash: &str) -> Result<bool> {
                let mut tx = self.begin().await?;
                let admins: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE kind = 'admin'")
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("n")?;
                if admins > 0 {
                    return Ok(false);
                }
                let now = Utc::now();
                sqlx::query("INSERT INTO pools (name, created_at) VALUES ('default', $1) ON CONFLICT DO NOTHING")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO tokens (hash, kind, created_at) VALUES ($1, 'admin', $2)")
                    .bind(admin_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, 'pool', 'default', $2)")
                    .bind(pool_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
                let Some(row) = sqlx::query(
                    "SELECT t.kind, t.pool, t.worker_id, t.name, t.scope, w.name AS worker_name
                     FROM tokens t LEFT JOIN workers w ON w.id = t.worker_id WHERE t.hash = $1",
                )
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let kind: String = row.try_get("kind")?;
                Ok(match kind.as_str() {
                    "admin" => Some(TokenRecord::Admin),
                    "api" => Some(TokenRecord::Api {
                        name: row.try_get("name")?,
                        scope: parse(row.try_get("scope")?)?,
                    }),
                    "pool" => row.try_get::<Option<String>, _>("pool")?.map(TokenRecord::Pool),
                    "worker" => {
                        let id: Option<Uuid> = row.try_get("worker_id")?;
                        let name: Option<String> = row.try_get("worker_name")?;
                        id.zip(name).map(|(id, name)| TokenRecord::Worker { id, name })
                    }
                    _ => None,
                })
            }

            async fn add_pool_token(&self, hash: &str, pool: &str) -> Result<()> {
                sqlx::query("INSERT INTO tokens (hash, kind, pool, created_at) VALUES ($1, 'pool', $2, $3)")
                    .bind(hash)
                    .bind(pool)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_api_token(&self, name: &str, scope: Scope, hash: &str) -> Result<ApiTokenRecord> {
                let created_at = Utc::now();
                let taken = sqlx::query("SELECT 1 AS taken FROM tokens WHERE kind = 'api' AND name = $1")
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                let inserted = match taken {
                    Some(_) => Ok(None),
                    None => sqlx::query(
                        "INSERT INTO tokens (hash, kind, name, scope, created_at) VALUES ($1, 'api', $2, $3, $4)",
                    )
                    .bind(hash)
                    .bind(name)
                    .bind(scope.as_str())
                    .bind(created_at)
                    .execute(&self.pool)
                    .await
                    .map(Some),
                };
                match inserted {
                    Ok(Some(_)) => Ok(ApiTokenRecord { name: name.to_owned(), scope, created_at }),
                    // Two creations racing for one name: the unique index refuses the second.
                    Ok(None) | Err(sqlx::Error::Database(_)) => {
                        Err(StoreError::Conflict(format!("a token named {name:?}")))
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>> {
                let rows = sqlx::query("SELECT name, scope, created_at FROM tokens WHERE kind = 'api' ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(ApiTokenRecord {
                            name: row.try_get("name")?,
                            scope: parse(row.try_get("scope")?)?,
                            created_at: row.try_get("created_at")?,
                        })
                    })
                    .collect()
            }

            async fn revoke_api_token(&self, name: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM tokens WHERE kind = 'api' AND name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_admin_token(&self, hash: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                sqlx::query("DELETE FROM tokens WHERE kind = 'admin' AND hash <> $1").bind(hash).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO tokens (hash, kind, created_at) VALUES ($1, 'admin', $2) ON CONFLICT DO NOTHING")
                    .bind(hash)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_repo(&self, repo: &NewRepoRecord) -> Result<RepoRecord> {
                let row = sqlx::query(
                    "INSERT INTO repos (name, url, forge, forge_full_name, secret, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING
                     RETURNING id, name, url, forge, forge_full_name, secret, created_at, cancel_previous, fork_host_image, private, max_running_jobs,
                               forge_api_url, status_context, clone_credential IS NOT NULL AS has_clone_token,
                               status_token IS NOT NULL AS has_status_token",
                )
                .bind(&repo.name)
                .bind(&repo.url)
                .bind(&repo.forge)
                .bind(&repo.forge_full_name)
                .bind(&repo.secret)
                .bind(Utc::now())
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::Conflict(format!("repository {:?}", repo.name)))?;
                repo_from(&row)
            }

            async fn list_repos(&self) -> Result<Vec<RepoRecord>> {
                let rows = sqlx::query(concat!(repo_select!(), "ORDER BY name")).fetch_all(&self.pool).await?;
                rows.iter().map(repo_from).collect()
            }

            async fn get_repo(&self, name: &str) -> Result<Option<RepoRecord>> {
                let row = sqlx::query(concat!(repo_select!(), "WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(repo_from).transpose()
            }

            async fn create_pipeline(&self, new: &NewPipeline) -> Result<CreatedPipeline> {
                let d = &new.delivery;
                let mut tx = self.begin().await?;
                // The pipeline, not the delivery row, makes a redelivery a duplicate: only the newest deliveries
                // are kept, pipelines stay.
                let seen = sqlx::query("SELECT id, number FROM pipelines WHERE repo_id = $1 AND delivery_id = $2")
                    .bind(d.repo_id)
                    .bind(&d.delivery_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some(row) = seen {
                    return Ok(CreatedPipeline { id: row.try_get("id")?, number: row.try_get("number")?, duplicate: true });
                }
                let delivery_row = insert_delivery(&mut tx, d, "created", None)
                    .await?
                    .ok_or_else(|| StoreError::Conflict(format!("delivery {:?}", d.delivery_id)))?;
                let number: i64 = sqlx::query("UPDATE repos SET next_number = next_number + 1 WHERE id = $1 RETURNING next_number")
                    .bind(d.repo_id)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("next_number")?;
                let id = Uuid::now_v7();
                sqlx::query(
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
                .bind(&new.author)
                .bind(&new.message)
                .bind(Utc::now())
                .bind(new.pull_request.as_ref().map(|pr| pr.number))
                .bind(new.pull_request.as_ref().map(|pr| &pr.source_branch))
                .bind(new.pull_request.as_ref().map(|pr| &pr.target_branch))
                .bind(new.pull_request.as_ref().is_some_and(|pr| pr.from_fork))
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE webhook_deliveries SET pipeline_id = $1 WHERE id = $2")
                    .bind(id)
                    .bind(delivery_row)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(CreatedPipeline { id, number, duplicate: false })
            }

            async fn record_ignored_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                insert_delivery(&mut tx, delivery, "ignored", Some(reason)).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_refused_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                insert_refused_delivery(&mut tx, delivery, reason).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn prune_deliveries(&self, repo_id: i64, keep: u32) -> Result<u64> {
                let mut tx = self.begin().await?;
                let deleted = delete_old_deliveries(&mut tx, repo_id, keep).await?;
                tx.commit().await?;
                Ok(deleted)
            }

            async fn recent_deliveries(&self, repo_id: i64, limit: u32) -> Result<Vec<DeliveryRecord>> {
                select_recent_deliveries(&self.pool, repo_id, limit).await
            }

            async fn get_delivery(&self, repo_id: i64, id: i64) -> Result<Option<DeliveryRecord>> {
                select_delivery(&self.pool, repo_id, id).await
            }

            async fn unprepared_pipelines(&self) -> Result<Vec<PipelineRecord>> {
                let rows = sqlx::query(concat!(pipeline_select!(), "WHERE NOT p.prepared ORDER BY p.created_at"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(pipeline_from).collect()
            }

            async fn add_jobs(&self, pipeline: Uuid, jobs: &[NewJob]) -> Result<()> {
                let mut tx = self.begin().await?;
                let claimed = sqlx::query("UPDATE pipelines SET prepared = TRUE WHERE id = $1 AND NOT prepared")
                    .bind(pipeline)
                    .execute(&mut *tx)
                    .await?;
                if claimed.rows_affected() == 0 {
                    return Ok(()); // prepared already, by an earlier run of the same task
                }
                let now = Utc::now();
                for (position, job) in jobs.iter().enumerate() {
                    let needs: Vec<&str> = job.spec.needs.iter().map(|n| n.as_str()).collect();
                    let status = if job.skipped.is_some() { JobStatus::Skipped } else { JobStatus::Queued };
                    sqlx::query(
                        "INSERT INTO jobs (id, pipeline_id, position, name, needs, spec, status, ready, queued_at, runs_on,
                                           message, finished_at, priority)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(job.id)
                    .bind(pipeline)
                    .bind(position as i64)
                    .bind(job.spec.name.as_str())
                    .bind(serde_json::to_string(&needs).expect("names serialise"))
                    .bind(serde_json::to_string(&job.spec).expect("specs serialise"))
                    .bind(status.as_str())
                    .bind(needs.is_empty())
                    .bind(now)
                    .bind(serde_json::to_string(&job.spec.runs_on).expect("labels serialise"))
                    .bind(&job.skipped)
                    .bind(job.skipped.as_ref().map(|_| now))
                    .bind(i64::from(job.spec.priority))
                    .execute(&mut *tx)
                    .await?;
                }
                if jobs.iter().any(|j| j.skipped.is_some()) {
                    // What needs a filtered-out job is skipped too, and a pipeline of skipped jobs is over.
                    settle_pipeline(&mut tx, pipeline, now).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn drop_pipeline(&self, pipeline: Uuid, reason: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                // Cancelled (so prepared) in the meantime: it stays, with its delivery.
                let unprepared = sqlx::query("SELECT id FROM pipelines WHERE id = $1 AND NOT prepared")
                    .bind(pipeline)
                    .fetch_optional(&mut *tx)
                    .await?;
                if unprepared.is_none() {
                    return Ok(());
                }
                sqlx::query("UPDATE webhook_deliveries SET outcome = 'ignored', reason = $2, pipeline_id = NULL WHERE pipeline_id = $1")
                    .bind(pipeline)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM pipelines WHERE id = $1 AND NOT prepared")
                    .bind(pipeline)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn fail_pipeline(&self, pipeline: Uuid, message: &str) -> Result<()> {
                sqlx::query(
                    "UPDATE pipelines SET status = 'error', error = $2, prepared = TRUE, finished_at = $3
                     WHERE id = $1 AND NOT prepared",
                )
                .bind(pipeline)
                .bind(message)
                .bind(Utc::now())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_pipelines(&self, repo: &str, before: Option<i64>, limit: i64) -> Result<Vec<PipelineRecord>> {
                let rows = sqlx::query(concat!(
                    pipeline_select!(),
                    "WHERE r.name = $1 AND p.number < $2 ORDER BY p.number DESC LIMIT $3"
                ))
                .bind(repo)
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(pipeline_from).collect()
            }

            async fn recent_pipelines(&self, limit: i64) -> Result<Vec<PipelineRecord>> {
                let rows = sqlx::query(concat!(pipeline_select!(), "ORDER BY p.created_at DESC, p.number DESC LIMIT $1"))
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(pipeline_from).collect()
            }

            async fn get_pipeline(&self, repo: &str, number: i64) -> Result<Option<PipelineRecord>> {
                let row = sqlx::query(concat!(pipeline_select!(), "WHERE r.name = $1 AND p.number = $2"))
                    .bind(repo)
                    .bind(number)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(pipeline_from).transpose()
            }

            async fn get_pipeline_by_id(&self, id: Uuid) -> Result<Option<PipelineRecord>> {
                let row = sqlx::query(concat!(pipeline_select!(), "WHERE p.id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(pipeline_from).transpose()
            }

            async fn pipeline_jobs(&self, pipeline: Uuid) -> Result<Vec<JobRecord>> {
                let rows = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE pipeline_id = $1 ORDER BY position"))
                    .bind(pipeline)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(job_from).collect()
            }

            async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>> {
                let row = sqlx::query(concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(job_from).transpose()
            }

            async fn job_steps(&self, job: Uuid, attempt: u32) -> Result<Vec<StepReport>> {
                let rows = sqlx::query(
                    "SELECT idx, command, log_offset, started_at, finished_at, exit_code FROM steps
                     WHERE job_id = $1 AND attempt = $2 ORDER BY idx",
                )
                .bind(job)
                .bind(attempt as i64)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(step_from).collect()
            }

            async fn register_worker(&self, w: &NewWorker, token_hash: &str) -> Result<Uuid> {
                let now = Utc::now();
                let mut tx = self.begin().await?;
                let id: Uuid = sqlx::query(
                    "INSERT INTO workers (id, name, pool, labels, capacity, protocol_version, state, registered_at, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, 'idle', $7, $7)
                     ON CONFLICT (name) DO UPDATE SET labels = excluded.labels,
                       capacity = excluded.capacity, protocol_version = excluded.protocol_version,
                       state = 'idle', registered_at = excluded.registered_at, last_seen = excluded.last_seen
                     WHERE workers.pool = excluded.pool
                     RETURNING id",
                )
                .bind(Uuid::now_v7())
                .bind(&w.name)
                .bind(&w.pool)
                .bind(serde_json::to_string(&w.labels).expect("labels serialise"))
                .bind(w.capacity as i64)
                .bind(w.protocol_version as i64)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Conflict(format!("a worker named {:?} in another pool", w.name)))?
                .try_get("id")?;
                sqlx::query("DELETE FROM tokens WHERE worker_id = $1").bind(id).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO tokens (hash, kind, worker_id, created_at) VALUES ($1, 'worker', $2, $3)")
                    .bind(token_hash)
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn list_workers(&self) -> Result<Vec<WorkerRecord>> {
                let rows = sqlx::query("SELECT id, name, pool, labels, capacity, state, last_seen FROM workers ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let labels: String = row.try_get("labels")?;
                        Ok(WorkerRecord {
                            id: row.try_get("id")?,
                            name: row.try_get("name")?,
                            pool: row.try_get("pool")?,
                            labels: serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                            capacity: row.try_get::<i64, _>("capacity")? as u32,
                            state: row.try_get("state")?,
                            last_seen: row.try_get("last_seen")?,
                        })
                    })
                    .collect()
            }

            async fn list_pools(&self) -> Result<Vec<String>> {
                let rows = sqlx::query("SELECT name FROM pools ORDER BY name").fetch_all(&self.pool).await?;
                rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
            }

            async fn cancel_pipeline(&self, pipeline: Uuid) -> Result<CancelledPipeline> {
                let mut tx = self.begin().await?;
                let cancelled = cancel_in(&mut tx, pipeline, None, Utc::now()).await?;
                tx.commit().await?;
                Ok(cancelled)
            }

            async fn running_jobs(&self, repo_id: i64) -> Result<u64> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS n FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
                     WHERE p.repo_id = $1 AND j.status = 'running'",
                )
                .bind(repo_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get::<i64, _>("n")? as u64)
            }

            async fn update_repo_settings(&self, name: &str, settings: &RepoSettings) -> Result<RepoRecord> {
                let mut tx = self.begin().await?;
                if let Some(cancel) = settings.cancel_previous {
                    sqlx::query("UPDATE repos SET cancel_previous = $2 WHERE name = $1")
                        .bind(name)
                        .bind(cancel)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(allowed) = settings.fork_host_image {
                    sqlx::query("UPDATE repos SET fork_host_image = $2 WHERE name = $1")
                        .bind(name)
                        .bind(allowed)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(private) = settings.private {
                    sqlx::query("UPDATE repos SET private = $2 WHERE name = $1")
                        .bind(name)
                        .bind(private)
                        .execute(&mut *tx)
                        .await?;
                }
                // An empty text clears the setting (back to the derived API URL, the server's context).
                for (column, value) in [
                    ("forge_api_url", &settings.forge_api_url),
                    ("status_context", &settings.status_context),
                ] {
                    let Some(value) = value else { continue };
                    let sql = match column {
                        "forge_api_url" => "UPDATE repos SET forge_api_url = $2 WHERE name = $1",
                        _ => "UPDATE repos SET status_context = $2 WHERE name = $1",
                    };
                    sqlx::query(sql)
                        .bind(name)
                        .bind((!value.is_empty()).then_some(value.as_str()))
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(max) = settings.max_running_jobs {
                    sqlx::query("UPDATE repos SET max_running_jobs = $2 WHERE name = $1")
                        .bind(name)
                        .bind((max > 0).then_some(i64::from(max)))
                        .execute(&mut *tx)
                        .await?;
                }
                let row = sqlx::query(concat!(repo_select!(), "WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("repository {name:?}")))?;
                tx.commit().await?;
                repo_from(&row)
            }

            async fn set_repo_credential(&self, repo_id: i64, which: RepoCredential, sealed: Option<&[u8]>) -> Result<()> {
                let sql = match which {
                    RepoCredential::Clone => "UPDATE repos SET clone_credential = $2 WHERE id = $1",
                    RepoCredential::Status => "UPDATE repos SET status_token = $2 WHERE id = $1",
                };
                let mut writer = self.writer().await?;
                let done = sqlx::query(sql).bind(repo_id).bind(sealed).execute(&mut *writer).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::NotFound(format!("repository {repo_id}")));
                }
                Ok(())
            }

            async fn repo_credential(&self, repo_id: i64, which: RepoCredential) -> Result<Option<Vec<u8>>> {
                let sql = match which {
                    RepoCredential::Clone => "SELECT clone_credential AS sealed FROM repos WHERE id = $1",
                    RepoCredential::Status => "SELECT status_token AS sealed FROM repos WHERE id = $1",
                };
                let row = sqlx::query(sql).bind(repo_id).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => Ok(row.try_get("sealed")?),
                    None => Err(StoreError::NotFound(format!("repository {repo_id}"))),
                }
            }

            async fn set_repo_secret(&self, repo_id: i64, name: &str, sealed: &[u8]) -> Result<()> {
                set_repo_secret(&self.pool, repo_id, name, sealed).await
            }

            async fn delete_repo_secret(&self, repo_id: i64, name: &str) -> Result<bool> {
                delete_repo_secret(&self.pool, repo_id, name).await
            }

            async fn list_repo_secrets(&self, repo_id: i64) -> Result<Vec<SecretRecord>> {
                list_repo_secrets(&self.pool, repo_id).await
            }

            async fn sealed_repo_secrets(&self, repo_id: i64) -> Result<Vec<(String, Vec<u8>)>> {
                sealed_repo_secrets(&self.pool, repo_id).await
            }

            async fn cancel_job(&self, pipeline: Uuid, job: Uuid) -> Result<CancelledPipeline> {
                let mut tx = self.begin().await?;
                let cancelled = cancel_in(&mut tx, pipeline, Some(job), Utc::now()).await?;
                tx.commit().await?;
                Ok(cancelled)
            }

            async fn supersede_pipelines(&self, newer: &PipelineRecord) -> Result<Vec<(Uuid, CancelledPipeline)>> {
                let now = Utc::now();
                let mut tx = self.begin().await?;
                let reason = format!("cancelled: superseded by #{}, a newer push to {}", newer.number, newer.git_ref);
                let older = sqlx::query(
                    "UPDATE pipelines SET error = $4 WHERE repo_id = $1 AND git_ref = $2 AND number < $3
                       AND status IN ('queued', 'running') RETURNING id",
                )
                .bind(newer.repo_id)
                .bind(&newer.git_ref)
                .bind(newer.number)
                .bind(&reason)
                .fetch_all(&mut *tx)
                .await?;
                let mut cancelled = Vec::with_capacity(older.len());
                for row in &older {
                    let id: Uuid = row.try_get("id")?;
                    cancelled.push((id, cancel_in(&mut tx, id, None, now).await?));
                }
                tx.commit().await?;
                Ok(cancelled)
            }

            async fn requeue_infra(&self, job: Uuid, lease: Uuid, report: &CompleteRequest, cap: u32) -> Result<Option<Completed>> {
                let mut tx = self.begin().await?;
                let requeued = requeue_infra(&mut tx, job, lease, report, cap).await?;
                tx.commit().await?;
                Ok(requeued)
            }

            async fn retry_pipeline(&self, pipeline: Uuid) -> Result<RetriedPipeline> {
                let mut tx = self.begin().await?;
                let retried = retry_pipeline(&mut tx, pipeline).await?;
                tx.commit().await?;
                Ok(retried)
            }

            async fn announce(&self, news: News) -> Result<()> {
                self.announce_news(news).await
            }

            async fn listen(&self, heard: Box<dyn Fn(News) + Send + Sync>) -> Result<()> {
                self.listen_for_news(heard).await
            }

            async fn claim_job(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
                self.claim(claim).await
            }

            async fn heartbeat(&self, job: Uuid, lease: Uuid, deadline_ms: i64) -> Result<bool> {
                // Through the writer like every other write: on SQLite a write beside it would find the file
                // locked and wait in SQLite's busy handler (1 ms and more), and a claim waits on its caller's thread.
                let mut writer = self.writer().await?;
                let row = sqlx::query(
                    "UPDATE jobs SET lease_deadline_ms = $3 WHERE id = $1 AND lease_id = $2 AND status = 'running'
                     RETURNING cancel_requested",
                )
                .bind(job)
                .bind(lease)
                .bind(deadline_ms)
                .fetch_optional(&mut *writer)
                .await?
                .ok_or(StoreError::StaleLease(job))?;
                Ok(row.try_get("cancel_requested")?)
            }

            async fn extend_leases(&self, deadline_ms: i64) -> Result<u64> {
                let moved = sqlx::query(
                    "UPDATE jobs SET lease_deadline_ms = $1 WHERE status = 'running' AND lease_deadline_ms < $1",
                )
                .bind(deadline_ms)
                .execute(&self.pool)
                .await?;
                Ok(moved.rows_affected())
            }

            async fn expire_leases(&self, now_ms: i64, infra_retries: u32) -> Result<Vec<Expired>> {
                let now = Utc::now();
                let mut tx = self.begin().await?;
                let rows = sqlx::query(
                    "SELECT id, pipeline_id, attempt, lease_id, worker_name, infra_retries, cancel_requested FROM jobs
                     WHERE status = 'running' AND lease_deadline_ms < $1 ORDER BY lease_deadline_ms",
                )
                .bind(now_ms)
                .fetch_all(&mut *tx)
                .await?;
                let mut expired = Vec::with_capacity(rows.len());
                for row in &rows {
                    let job: Uuid = row.try_get("id")?;
                    let lease: Uuid = row.try_get("lease_id")?;
                    let attempt = row.try_get::<i64, _>("attempt")? as u32;
                    let worker_name: Option<String> = row.try_get("worker_name")?;
                    let retried = row.try_get::<i64, _>("infra_retries")? as u32;
                    let worker = worker_name.as_deref().unwrap_or("?");
                    let (status, kind, message) = if row.try_get("cancel_requested")? {
                        (JobStatus::Cancelled, Some(FailureKind::Cancelled),
                         format!("cancelled; worker {worker} stopped answering during attempt {attempt}"))
                    } else if retried < infra_retries {
                        (JobStatus::Queued, None,
                         format!("worker {worker} stopped answering during attempt {attempt}; re-queued"))
                    } else {
                        (JobStatus::Error, Some(FailureKind::WorkerLost),
                         format!("worker {worker} stopped answering during attempt {attempt}, and the job was \
                                  re-queued {retried} time(s) already"))
                    };
                    let requeued = status == JobStatus::Queued;
                    // The lease is checked again here, so a heartbeat or completion that won the race keeps its job
                    // (and a second server expiring the same lease changes nothing).
                    let updated = sqlx::query(
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
                    .execute(&mut *tx)
                    .await?;
                    if updated.rows_affected() != 1 {
                        continue;
                    }
                    let outcome = if requeued {
                        ExpiredOutcome::Requeued
                    } else {
                        let pipeline: Uuid = row.try_get("pipeline_id")?;
                        let (pipeline_status, skipped) = settle_pipeline(&mut tx, pipeline, now).await?;
                        ExpiredOutcome::Ended(Completed { status, pipeline_status, skipped })
                    };
                    expired.push(Expired { job, worker_name, attempt, outcome });
                }
                tx.commit().await?;
                Ok(expired)
            }

            async fn append_log(&self, job: Uuid, lease: Uuid, offset: u64, data: &[u8], cap: u64) -> Result<Appended> {
                let mut tx = self.begin().await?;
                let (attempt, _, _, length) = leased(&mut tx, job, lease).await?;
                let length = length as u64;
                let unchanged = Appended { attempt, offset: length, data: Vec::new(), length };
                // The marker always takes the log past the cap, so a log longer than the cap is marked already.
                if length > cap || (length == cap && offset + data.len() as u64 <= length) {
                    return Ok(unchanged);
                }
                if offset > length {
                    return Err(StoreError::LogGap { offset, length });
                }
                let already = (length - offset) as usize;
                if already >= data.len() {
                    return Ok(unchanged);
                }
                let mut new = data[already..].to_vec();
                if length + new.len() as u64 > cap {
                    new.truncate((cap - length) as usize);
                    new.extend_from_slice(format!("\n[gantry: the log reached its cap of {cap} bytes; the rest of the output was dropped]\n").as_bytes());
                }
                let end = length + new.len() as u64;
                sqlx::query(
                    "INSERT INTO log_chunks (job_id, attempt, start_offset, end_offset, data, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(job)
                .bind(attempt as i64)
                .bind(length as i64)
                .bind(end as i64)
                .bind(&new)
                .bind(Utc::now())
                .execute(&mut *tx)
                .await?;
                // Re-checked in the UPDATE itself: without a row lock on the SELECT (PostgreSQL), a lease could
                // have changed hands in between.
                let updated = sqlx::query("UPDATE jobs SET log_length = $2 WHERE id = $1 AND lease_id = $3 AND log_length = $4")
                    .bind(job)
                    .bind(end as i64)
                    .bind(lease)
                    .bind(length as i64)
                    .execute(&mut *tx)
                    .await?;
                if updated.rows_affected() != 1 {
                    return Err(StoreError::StaleLease(job));
                }
                tx.commit().await?;
                Ok(Appended { attempt, offset: length, data: new, length: end })
            }

            async fn read_log(&self, job: Uuid, attempt: u32, from: u64, max: usize) -> Result<Vec<u8>> {
                // Only the chunks that overlap [from, from + max): a reader of a big log holds one window.
                let until = from.saturating_add(max as u64).min(i64::MAX as u64);
                let rows = sqlx::query(
                    "SELECT start_offset, data FROM log_chunks
                     WHERE job_id = $1 AND attempt = $2 AND end_offset > $3 AND start_offset < $4
                     ORDER BY start_offset",
                )
                .bind(job)
                .bind(attempt as i64)
                .bind(from as i64)
                .bind(until as i64)
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::new();
                for row in rows {
                    let start = row.try_get::<i64, _>("start_offset")? as u64;
                    let data: Vec<u8> = row.try_get("data")?;
                    let skip = from.saturating_sub(start) as usize;
                    let room = max - out.len();
                    let piece = &data[skip.min(data.len())..];
                    out.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                Ok(out)
            }

            async fn log_length(&self, job: Uuid, attempt: u32) -> Result<u64> {
                // The last chunk by the primary key's order ends the log: one index lookup, whatever its size.
                let row = sqlx::query(
                    "SELECT end_offset FROM log_chunks WHERE job_id = $1 AND attempt = $2
                     ORDER BY start_offset DESC LIMIT 1",
                )
                .bind(job)
                .bind(attempt as i64)
                .fetch_optional(&self.pool)
                .await?;
                row.map_or(Ok(0), |row| Ok(row.try_get::<i64, _>("end_offset")? as u64))
            }

            async fn record_step(&self, job: Uuid, lease: Uuid, step: &StepReport) -> Result<()> {
                let mut tx = self.begin().await?;
                let (attempt, ..) = leased(&mut tx, job, lease).await?;
                upsert_step(&mut tx, job, attempt, step).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn artifact_quota(&self, job: Uuid, lease: Uuid) -> Result<(u32, u64)> {
                artifact_quota(&self.pool, job, lease).await
            }

            async fn record_artifact(&self, job: Uuid, lease: Uuid, artifact: &NewArtifact) -> Result<()> {
                record_artifact(&self.pool, job, lease, artifact).await
            }

            async fn job_artifacts(&self, job: Uuid, attempt: u32) -> Result<Vec<gantry_model::wire::ArtifactRef>> {
                job_artifacts(&self.pool, job, attempt).await
            }

            async fn pipeline_artifacts(&self, pipeline: Uuid) -> Result<Vec<gantry_model::wire::ArtifactRef>> {
                pipeline_artifacts(&self.pool, pipeline).await
            }

            async fn pipeline_tests(&self, pipeline: Uuid) -> Result<Option<gantry_model::wire::TestSummary>> {
                pipeline_tests(&self.pool, pipeline).await
            }

            async fn claim_commit_statuses(&self, now_ms: i64, hold_until_ms: i64, limit: i64) -> Result<Vec<StatusToSend>> {
                let mut writer = self.writer().await?;
                claim_commit_statuses(&self.pool, &mut writer, now_ms, hold_until_ms, limit).await
            }

            async fn finish_commit_status(&self, id: i64, outcome: &StatusOutcome) -> Result<()> {
                let mut writer = self.writer().await?;
                finish_commit_status(&mut writer, id, outcome).await
            }

            async fn next_commit_status_ms(&self) -> Result<Option<i64>> {
                next_commit_status_ms(&self.pool).await
            }

            async fn release_commit_status_claims(&self) -> Result<u64> {
                let mut writer = self.writer().await?;
                release_commit_status_claims(&mut writer).await
            }

            async fn commit_statuses(&self, pipeline: Uuid) -> Result<Vec<CommitStatusRecord>> {
                commit_statuses(&self.pool, pipeline).await
            }

            async fn complete_job(&self, job: Uuid, lease: Uuid, report: &CompleteRequest) -> Result<Completed> {
                complete_leased(self, job, lease, report).await
            }
        }
    };
}
