//! The SQLite store: one file in WAL mode, the default for `gantry up`.

mod dispatch;

use super::Result;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::PermissionsExt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    /// For reads, and the odd single-statement write.
    pub(super) pool: SqlitePool,
    /// Every transaction, claim and completion writes through these connections, taking turns here. SQLite has
    /// one writer at a time anyway, and a writer that finds the file locked sleeps a millisecond or more in
    /// SQLite's busy handler; connections of their own also skip the pool's ping of each one it takes back.
    writer: Arc<Mutex<Writer>>,
}

/// The writing connections: sqlx's for everything but dispatch, and rusqlite's for dispatch (`dispatch.rs`).
pub(super) struct Writer {
    sqlx: SqliteConnection,
    dispatch: dispatch::Dispatch,
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
        let path = options.get_filename().to_string_lossy().into_owned();
        if path.is_empty()
            || path.starts_with("file:sqlx-in-memory")
            || url.contains(":memory:")
            || url.contains("mode=memory")
        {
            // Each of the store's connections would have a database of its own.
            return Err(super::StoreError::Database(sqlx::Error::Configuration(
                format!("{url}: SQLite needs a file (sqlite://PATH), not an in-memory database")
                    .into(),
            )));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A ping is a round trip to the connection's thread, and a local file does not hang up.
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        // Logs, delivery bodies, sealed secrets: root's alone, wherever the file is (SQLite makes it 0644, and
        // its -wal and -shm beside it).
        for suffix in ["", "-wal", "-shm"] {
            let file = format!("{path}{suffix}");
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(file, error = %e, "cannot make the database file private (0600)");
                }
                _ => {}
            }
        }
        let writer = Writer {
            sqlx: options.connect().await?,
            dispatch: dispatch::Dispatch::open(&path)?,
        };
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    /// The writer connection, for a single statement (which is a transaction of its own).
    pub(super) async fn writer(&self) -> Result<OwnedMappedMutexGuard<Writer, SqliteConnection>> {
        let writer = self.writer.clone().lock_owned().await;
        Ok(OwnedMutexGuard::map(writer, |w| &mut w.sqlx))
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
    conn: Option<OwnedMappedMutexGuard<Writer, SqliteConnection>>,
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

impl SqliteStore {
    /// Leases the next ready job to the worker (`dispatch.rs`).
    async fn claim(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.dispatch.claim(claim, Utc::now())
    }

    /// Ends an attempt, stores its steps and test cases and settles its pipeline (`dispatch.rs`).
    async fn complete_attempt(
        &self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> Result<Option<Completed>> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.dispatch.complete(job, lease, ending)
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn an_in_memory_database_is_refused_with_a_reason() {
        let Err(error) = super::SqliteStore::connect("sqlite::memory:").await else {
            panic!("an in-memory database was accepted");
        };
        assert!(error.to_string().contains("needs a file"), "{error}");
    }
}
