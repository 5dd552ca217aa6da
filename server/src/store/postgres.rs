//! The PostgreSQL store, for clusters: several servers can share it.

use super::completion::{self, Ending, FINISH_ATTEMPT_LOCKING_SQL};
use super::db::query;
use super::dialect::Dialect;
use super::jobs::{JOB_COLUMNS, claimed_from};
use super::{Claim, ClaimedJob, Completed, News, Result, StoreError};
use chrono::Utc;
use const_format::concatcp;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use std::time::Duration;
use uuid::Uuid;

/// [`super::Store`] on a PostgreSQL database.
pub struct PgStore {
    pub(super) pool: PgPool,
    /// For claims: connections whose commits do not wait for the WAL to reach the disk (see `claimer`).
    claims: PgPool,
}

impl PgStore {
    /// Connects and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // The pool pings each connection given back to it already; a ping before handing one out as well
            // made every claim and completion a round trip longer. A connection that died idle fails one query.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        let claims = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(
                url.parse::<PgConnectOptions>()?
                    .options([("synchronous_commit", "off")]),
            )
            .await?;
        Ok(Self { pool, claims })
    }

    /// A connection for a claim, whose commit returns before the WAL is flushed: the job is leased at once
    /// instead of after a disk flush, and it is as durable as a job can be. Only PostgreSQL itself crashing
    /// within the WAL writer's delay (≤ 3 × 200 ms) can lose the claim, and then the job is simply queued again:
    /// the worker's next call with the lost lease gets 409 and it stops (the fencing of docs/data-model.md), as if it were
    /// lost. Whatever commits after it (the worker's first log bytes, its completion) flushes it, so nothing
    /// that depends on a claim outlives it. A SIGKILL of Gantry's server loses nothing: PostgreSQL has the commit.
    async fn claimer(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.claims.acquire().await?)
    }
}

impl Dialect for PgStore {
    const NAME: &'static str = "postgres";
    /// Settling a pipeline takes its row first: under READ COMMITTED, the next statement then sees what a
    /// transaction that settled it before committed.
    const LOCK_PIPELINE_SQL: Option<&'static str> =
        Some("SELECT id FROM pipelines WHERE id = $1 FOR UPDATE");

    type Reader = PoolConnection<Postgres>;
    type Writer = PoolConnection<Postgres>;
    type Tx = sqlx::Transaction<'static, Postgres>;

    async fn reader(&self) -> Result<Self::Reader> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Writer> {
        Ok(self.pool.acquire().await?)
    }

    async fn begin(&self) -> Result<Self::Tx> {
        Ok(self.pool.begin().await?)
    }

    async fn claim(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        self.claim_next(claim).await
    }

    /// Five round trips on a pooled connection: the attempt's end with its pipeline's lock, its steps, its test
    /// cases, the pipeline's jobs and what settling them changed; then the commit.
    async fn complete_attempt(
        &self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> Result<Option<Completed>> {
        let tx = self.pool.begin().await?;
        completion::complete_attempt(tx, FINISH_ATTEMPT_LOCKING_SQL, job, lease, ending).await
    }

    /// `NOTIFY`, through `pg_notify` so the channel can be a parameter.
    async fn announce_news(&self, news: News) -> Result<()> {
        query("SELECT pg_notify($1, '')")
            .bind(news.channel())
            .execute(&mut self.pool.acquire().await?)
            .await?;
        Ok(())
    }

    /// `LISTEN` on a connection of its own. The listener reconnects by itself when the connection drops;
    /// what was announced meanwhile is lost, so both kinds of news are passed on then, to make everyone look.
    async fn listen_for_news(&self, heard: Box<dyn Fn(News) + Send + Sync>) -> Result<()> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        let news = [News::JobsReady, News::CancelRequested];
        listener.listen_all(news.map(News::channel)).await?;
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(news) = News::from_channel(notification.channel()) {
                        heard(news);
                    }
                }
                // Reconnected (the listener re-listens itself): whatever was announced meanwhile was missed.
                Ok(None) => news.into_iter().for_each(&heard),
                Err(error) => {
                    tracing::warn!(%error, "listening for other servers' news failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// The SQLSTATE of a claim `claim_within_repo_limit` refused because its repository is full (migration 0011).
const OVER_LIMIT: &str = "GA001";

/// Claims refused for a full repository in a row before giving up until the next wake-up: each refusal means
/// another claim of that repository committed, and the next snapshot skips the repository.
const OVER_LIMIT_RETRIES: usize = 16;

/// `SKIP LOCKED`: concurrent claimers (also on other servers) each take a different job without waiting. A job
/// is the worker's to take when its `runs-on` labels are all among the worker's (JSON containment), its
/// repository allows the worker's pool (`pools`), a fork's pull request is not on a trusted pool, the worker is
/// not draining, and its repository runs fewer jobs than its `max_running_jobs`. That count is in the statement's snapshot, so claims
/// racing could each count the others' jobs as queued: for a limited repository the claim then counts again,
/// under a per-repository lock and in a fresh snapshot (`claim_within_repo_limit`, migration 0011), and fails
/// with [`OVER_LIMIT`] if it would pass the limit. The source comes back with the job, so a claim is one
/// statement.
const CLAIM_SQL: &str = concatcp!(
    "WITH claimed AS (
       UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_id = $1, worker_id = $2, worker_name = $3,
         lease_deadline_ms = $4, started_at = $5, finished_at = NULL, log_length = 0, exit_code = NULL,
         failure_kind = NULL, message = NULL
       WHERE status = 'queued' AND id = (
         SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.ready
           AND j.runs_on::jsonb <@ (SELECT w.labels::jsonb FROM workers w WHERE w.id = $2)
           AND NOT COALESCE((SELECT r.max_running_jobs <= (SELECT COUNT(*) FROM jobs k WHERE k.status = 'running'
                                   AND (SELECT q.repo_id FROM pipelines q WHERE q.id = k.pipeline_id) = r.id)
                             FROM pipelines p JOIN repos r ON r.id = p.repo_id
                             WHERE p.id = j.pipeline_id AND r.max_running_jobs IS NOT NULL), FALSE)
           AND NOT EXISTS (SELECT 1 FROM pipelines p JOIN repos r ON r.id = p.repo_id, workers w
                           WHERE p.id = j.pipeline_id AND w.id = $2
                             AND ((r.pools IS NOT NULL AND NOT (r.pools::jsonb ? w.pool))
                                  OR (p.from_fork AND COALESCE((SELECT t.trusted FROM pools t
                                                                WHERE t.name = w.pool), FALSE))))
         ORDER BY j.priority DESC, j.queued_at, j.position LIMIT 1 FOR UPDATE SKIP LOCKED)
         AND NOT EXISTS (SELECT 1 FROM workers d WHERE d.id = $2 AND d.draining)
       RETURNING ",
    JOB_COLUMNS,
    ")
     SELECT claimed.*, r.name AS repo, r.url AS clone_url, p.number, p.commit_sha, p.git_ref, p.event, p.pr_number,
            p.source_branch, p.target_branch, p.from_fork, r.clone_credential, p.repo_id,
            EXISTS (SELECT 1 FROM repo_secrets s WHERE s.repo_id = p.repo_id) AS has_secrets
     FROM claimed JOIN pipelines p ON p.id = claimed.pipeline_id JOIN repos r ON r.id = p.repo_id
     WHERE CASE WHEN r.max_running_jobs IS NULL THEN TRUE
                ELSE claim_within_repo_limit(claimed.id, r.id, r.max_running_jobs) END"
);

impl PgStore {
    /// Leases the next ready job to the worker: one statement, no transaction (the `jobs_claimed` trigger,
    /// migration 0005, starts the pipeline and marks the worker busy within it), on `claimer`'s connections.
    async fn claim_next(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        let mut conn = self.claimer().await?;
        let mut refused = 0;
        let row = loop {
            let claimed = query(CLAIM_SQL)
                .bind(claim.lease_id)
                .bind(claim.worker_id)
                .bind(&claim.worker_name)
                .bind(claim.deadline_ms)
                .bind(Utc::now())
                .fetch_optional(&mut conn)
                .await;
            match claimed {
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some(OVER_LIMIT) && refused < OVER_LIMIT_RETRIES =>
                {
                    refused += 1;
                }
                Err(StoreError::Database(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some(OVER_LIMIT) =>
                {
                    return Ok(None);
                }
                other => break other?,
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        claimed_from(&row).map(Some)
    }
}
