//! The SQLite store: one file in WAL mode, the default for `gantry up`.

use super::Result;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Column, ConnectOptions};
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    /// For reads, and the odd single-statement write.
    pub(super) pool: SqlitePool,
    /// Every transaction and claim writes through this one connection, taking turns here. SQLite has one writer
    /// at a time anyway, and a writer that finds the file locked sleeps a millisecond or more in SQLite's busy
    /// handler; a connection of its own also skips the pool's ping of each connection it takes back.
    writer: Arc<Mutex<SqliteConnection>>,
}

/// What the shared code's transactions are here.
pub(super) type Tx = WriteTx;

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        // WAL with synchronous=NORMAL: a commit survives the process being killed the next instant, which is the
        // durability promise of DESIGN §3 (power loss is out of scope).
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A ping is a round trip to the connection's thread, and a local file does not hang up.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        let writer = Arc::new(Mutex::new(options.connect().await?));
        Ok(Self { pool, writer })
    }

    /// The writer connection, for a single statement (which is a transaction of its own).
    pub(super) async fn writer(&self) -> Result<OwnedMutexGuard<SqliteConnection>> {
        Ok(self.writer.clone().lock_owned().await)
    }

    /// The writer connection, for a claim.
    pub(super) async fn claimer(&self) -> Result<OwnedMutexGuard<SqliteConnection>> {
        self.writer().await
    }

    /// A transaction on the writer connection. `IMMEDIATE` takes the write lock up front, so that it never has to
    /// upgrade a read lock against a write through the pool (SQLite answers that with SQLITE_BUSY at once).
    pub(super) async fn begin(&self) -> Result<WriteTx> {
        let mut conn = self.writer().await?;
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        Ok(WriteTx { conn: Some(conn) })
    }
}

/// A transaction on the writer connection, rolled back when dropped before [`WriteTx::commit`].
pub(super) struct WriteTx {
    conn: Option<OwnedMutexGuard<SqliteConnection>>,
}

impl WriteTx {
    /// Commits, and lets the next writer have the connection.
    pub(super) async fn commit(mut self) -> Result<()> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        self.conn = None;
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a transaction has its connection until it ends")
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a transaction has its connection until it ends")
    }
}

impl Drop for WriteTx {
    /// The connection stays locked until the rollback is done, so the next writer never inherits the transaction.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            tokio::spawn(async move {
                if let Err(error) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    tracing::error!(%error, "cannot roll back a write transaction");
                }
            });
        }
    }
}

impl SqliteStore {
    /// One server has a SQLite file to itself: there is nobody to tell.
    pub(super) async fn announce_news(&self, _news: super::News) -> Result<()> {
        Ok(())
    }

    /// Nobody else writes to the file: there is nothing to hear.
    pub(super) async fn listen_for_news(
        &self,
        _heard: Box<dyn Fn(super::News) + Send + Sync>,
    ) -> Result<()> {
        Ok(())
    }
}

/// SQLite serialises writers, so the ready job of highest priority, then oldest, whose `runs-on` labels the
/// worker all has and whose repository is under its `max_running_jobs`, can simply be taken (the count is exact:
/// no other claim runs meanwhile). The count walks the running jobs (`jobs_leases`), not the repository's
/// history of pipelines. `ready = TRUE` rather than bare `ready`: only an equality lets the planner walk `jobs_claim` in order
/// and stop at the first match; bare, it picked another index on `status` and sorted every queued job per claim.
/// The source comes back with the job (the subqueries see the claimed row), so a claim is one statement.
pub(super) const CLAIM_SQL: &str = concat!(
    "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_id = $1, worker_id = $2, worker_name = $3,
       lease_deadline_ms = $4, started_at = $5, finished_at = NULL, log_length = 0, exit_code = NULL,
       failure_kind = NULL, message = NULL
     WHERE status = 'queued' AND id = (
       SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.ready = TRUE
         AND NOT EXISTS (SELECT 1 FROM json_each(j.runs_on) AS wanted
                         WHERE wanted.value NOT IN (SELECT label.value FROM workers w, json_each(w.labels) AS label
                                                    WHERE w.id = $2))
         AND NOT EXISTS (SELECT 1 FROM pipelines p JOIN repos r ON r.id = p.repo_id
                         WHERE p.id = j.pipeline_id AND r.max_running_jobs IS NOT NULL
                           AND r.max_running_jobs <= (SELECT COUNT(*) FROM jobs k WHERE k.status = 'running'
                                                      AND (SELECT q.repo_id FROM pipelines q WHERE q.id = k.pipeline_id) = r.id))
       ORDER BY j.priority DESC, j.queued_at, j.position LIMIT 1)
     RETURNING ",
    job_columns!(),
    ",
       (SELECT r.name FROM pipelines p JOIN repos r ON r.id = p.repo_id WHERE p.id = jobs.pipeline_id) AS repo,
       (SELECT r.url FROM pipelines p JOIN repos r ON r.id = p.repo_id WHERE p.id = jobs.pipeline_id) AS clone_url,
       (SELECT p.number FROM pipelines p WHERE p.id = jobs.pipeline_id) AS number,
       (SELECT p.commit_sha FROM pipelines p WHERE p.id = jobs.pipeline_id) AS commit_sha,
       (SELECT p.git_ref FROM pipelines p WHERE p.id = jobs.pipeline_id) AS git_ref,
       (SELECT p.event FROM pipelines p WHERE p.id = jobs.pipeline_id) AS event,
       (SELECT p.pr_number FROM pipelines p WHERE p.id = jobs.pipeline_id) AS pr_number,
       (SELECT p.source_branch FROM pipelines p WHERE p.id = jobs.pipeline_id) AS source_branch,
       (SELECT p.target_branch FROM pipelines p WHERE p.id = jobs.pipeline_id) AS target_branch,
       (SELECT p.from_fork FROM pipelines p WHERE p.id = jobs.pipeline_id) AS from_fork,
       (SELECT r.clone_credential FROM pipelines p JOIN repos r ON r.id = p.repo_id WHERE p.id = jobs.pipeline_id)
         AS clone_credential,
       (SELECT p.repo_id FROM pipelines p WHERE p.id = jobs.pipeline_id) AS repo_id,
       EXISTS (SELECT 1 FROM pipelines p JOIN repo_secrets s ON s.repo_id = p.repo_id WHERE p.id = jobs.pipeline_id)
         AS has_secrets"
);

/// Writers take turns on one connection, so settling needs no lock of its own.
pub(super) const LOCK_PIPELINE_SQL: Option<&str> = None;

/// A completion's first round trip: the transaction starts, the attempt ends, and its pipeline's jobs are read
/// (after the end, so with it). Each round trip to the connection's thread costs ~0.1 ms of wake-ups on the
/// 2-core VM, several times what these statements take, and SQLite runs every statement of a query string in
/// one; `$N` parameters are shared between them. (sqlx marks several statements in one query deprecated,
/// launchbadge/sqlx#3108: should a release drop it, this and `SETTLE_AND_COMMIT_SQL` are split again.)
const FINISH_SQL: &str = concat!(
    "BEGIN IMMEDIATE; ",
    finish_attempt_sql!(),
    "; ",
    pipeline_jobs_sql!(),
    "WHERE j.pipeline_id = (SELECT pipeline_id FROM jobs WHERE id = $1) ORDER BY j.position"
);

/// A completion's last round trip, when the pipeline's status changed.
const SETTLE_AND_COMMIT_SQL: &str = concat!(set_pipeline_status_sql!(), "; COMMIT");

impl SqliteStore {
    /// Starts a completion's transaction, ends the attempt if `lease` is the job's, and reads its pipeline's jobs.
    async fn finish_attempt(
        &self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> Result<(WriteTx, Option<Finished>)> {
        // Rolled back when dropped from here on: BEGIN is the query's first statement.
        let mut tx = WriteTx {
            conn: Some(self.writer().await?),
        };
        let mut rows = bind_ending(FINISH_SQL, job, lease, ending)
            .fetch_all(&mut *tx)
            .await?;
        // The UPDATE's row comes first, when there is one; the rest are the pipeline's jobs.
        let ended = rows.first().is_some_and(|row| {
            row.columns()
                .first()
                .is_some_and(|column| column.name() == "attempt")
        });
        if !ended {
            return Ok((tx, None));
        }
        let row = rows.remove(0);
        let finished = Finished {
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            pipeline: row.try_get("pipeline_id")?,
            jobs: rows,
        };
        Ok((tx, Some(finished)))
    }
}

/// Writes the pipeline's new status, if it changed, and commits, in one round trip.
async fn commit_settled(
    mut tx: WriteTx,
    pipeline: Uuid,
    changed: Option<PipelineStatus>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(status) = changed else {
        return tx.commit().await;
    };
    bind_pipeline_status(SETTLE_AND_COMMIT_SQL, pipeline, status, now)
        .execute(&mut *tx)
        .await?;
    // Committed by the query's last statement.
    tx.conn = None;
    Ok(())
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
