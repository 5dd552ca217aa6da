//! The SQLite store: one file in WAL mode, the default for `gantry up`.

use super::Result;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

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
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Write transactions take the write lock up front, so that two of them never deadlock upgrading a read lock
    /// (SQLite answers that with SQLITE_BUSY at once, without waiting).
    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
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

/// SQLite serialises writers, so the oldest ready job whose `runs-on` labels the worker all has can simply be
/// taken. `ready = TRUE` rather than bare `ready`: only an equality lets the planner walk `jobs_claim` in order
/// and stop at the first match; bare, it picked another index on `status` and sorted every queued job per claim.
pub(super) const CLAIM_SQL: &str = concat!(
    "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_id = $1, worker_id = $2, worker_name = $3,
       lease_deadline_ms = $4, started_at = $5, finished_at = NULL, log_length = 0, exit_code = NULL,
       failure_kind = NULL, message = NULL
     WHERE status = 'queued' AND id = (
       SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.ready = TRUE
         AND NOT EXISTS (SELECT 1 FROM json_each(j.runs_on) AS wanted
                         WHERE wanted.value NOT IN (SELECT label.value FROM workers w, json_each(w.labels) AS label
                                                    WHERE w.id = $2))
       ORDER BY j.queued_at, j.position LIMIT 1)
     RETURNING ",
    job_columns!()
);

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
