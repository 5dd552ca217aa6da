//! The SQLite store: one file in WAL mode, the default for `gantry up`.

mod checkpoint;
mod dispatch;

use super::completion::{self, Ending, FINISH_ATTEMPT_SQL};
use super::db::sqlite::RusqliteTx;
use super::db::{Exec, Query, Transaction};
use super::dialect::Dialect;
use super::{Claim, ClaimedJob, Completed, News, Result};
use sqlx::ConnectOptions;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use std::os::unix::fs::PermissionsExt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};
use uuid::Uuid;

/// [`super::Store`] on a SQLite file.
pub struct SqliteStore {
    /// For reads, and the odd single-statement write.
    pub(super) pool: SqlitePool,
    /// Every transaction, claim and completion writes through these connections, taking turns here. SQLite has
    /// one writer at a time anyway, and a writer that finds the file locked sleeps a millisecond or more in
    /// SQLite's busy handler; connections of their own also skip the pool's ping of each one it takes back.
    writer: Arc<Mutex<Writer>>,
    /// Copies the WAL back into the file, off the async threads.
    _checkpointer: checkpoint::Checkpointer,
}

/// The writing connections: sqlx's for everything but dispatch, and rusqlite's for dispatch (`dispatch.rs`).
pub(super) struct Writer {
    sqlx: SqliteConnection,
    dispatch: dispatch::Dispatch,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        // WAL with synchronous=NORMAL: a commit survives the process being killed the next instant, which is the
        // durability promise of docs/data-model.md (power loss is out of scope).
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
            _checkpointer: checkpoint::Checkpointer::start(&path)?,
        })
    }

    /// The writer connection, for a single statement (which is a transaction of its own).
    async fn sqlx_writer(&self) -> WriterConn {
        let writer = self.writer.clone().lock_owned().await;
        WriterConn(OwnedMutexGuard::map(writer, |w| &mut w.sqlx))
    }
}

/// The sqlx writer connection, held until dropped.
pub(crate) struct WriterConn(OwnedMappedMutexGuard<Writer, SqliteConnection>);

impl Exec for WriterConn {
    type Row = SqliteRow;

    async fn execute(&mut self, query: Query<'_>) -> Result<u64> {
        (*self.0).execute(query).await
    }

    async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<SqliteRow>> {
        (*self.0).fetch_all(query).await
    }
}

/// A transaction on the writer connection, rolled back when dropped before [`Transaction::commit`].
pub(crate) struct WriteTx {
    conn: Option<OwnedMappedMutexGuard<Writer, SqliteConnection>>,
}

impl WriteTx {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a transaction has its connection until it ends")
    }
}

impl Exec for WriteTx {
    type Row = SqliteRow;

    async fn execute(&mut self, query: Query<'_>) -> Result<u64> {
        self.conn().execute(query).await
    }

    async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<SqliteRow>> {
        self.conn().fetch_all(query).await
    }
}

impl Transaction for WriteTx {
    /// Commits, and lets the next writer have the connection.
    async fn commit(mut self) -> Result<()> {
        sqlx::query("COMMIT").execute(self.conn()).await?;
        self.conn = None;
        Ok(())
    }
}

impl Drop for WriteTx {
    /// The connection stays locked until the rollback is done, so the next writer never inherits the transaction.
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            tokio::spawn(async move {
                match sqlx::query("ROLLBACK").execute(&mut *conn).await {
                    // The `BEGIN` (or the `COMMIT`) it was dropped in never ran, or the commit did: nothing to undo.
                    Err(error) if error.to_string().contains("no transaction is active") => {}
                    Err(error) => tracing::error!(%error, "cannot roll back a write transaction"),
                    Ok(_) => {}
                }
            });
        }
    }
}

impl Dialect for SqliteStore {
    const NAME: &'static str = "sqlite";
    /// Writers take turns on one connection, so settling needs no lock of its own.
    const LOCK_PIPELINE_SQL: Option<&'static str> = None;

    type Reader = PoolConnection<Sqlite>;
    type Writer = WriterConn;
    type Tx = WriteTx;

    async fn reader(&self) -> Result<Self::Reader> {
        Ok(self.pool.acquire().await?)
    }

    async fn writer(&self) -> Result<Self::Writer> {
        Ok(self.sqlx_writer().await)
    }

    /// A transaction on the writer connection. `IMMEDIATE` takes the write lock up front, so that it never has to
    /// upgrade a read lock against a write through the pool (SQLite answers that with SQLITE_BUSY at once).
    ///
    /// The transaction exists before `BEGIN` is sent: a caller dropped while it runs (an HTTP request whose
    /// client went away) leaves a `WriteTx` whose drop rolls back, never a connection left inside a
    /// transaction for the next writer ("cannot start a transaction within a transaction" on every write after).
    async fn begin(&self) -> Result<WriteTx> {
        let WriterConn(conn) = self.sqlx_writer().await;
        let mut tx = WriteTx { conn: Some(conn) };
        sqlx::query("BEGIN IMMEDIATE").execute(tx.conn()).await?;
        Ok(tx)
    }

    /// On the dispatch connection, on the caller's thread (`dispatch.rs`).
    async fn claim(&self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        let mut writer = self.writer.clone().lock_owned().await;
        writer.dispatch.claim(claim).await
    }

    /// On the dispatch connection: on the caller's thread, or on a blocking thread for a report big enough to
    /// hold a tokio thread noticeably (thousands of test cases).
    async fn complete_attempt(
        &self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> Result<Option<Completed>> {
        let mut writer = self.writer.clone().lock_owned().await;
        let items = ending.report.steps.len() + ending.report.tests.len();
        if items < dispatch::INLINE_REPORT_ITEMS {
            let tx = RusqliteTx::begin(writer.dispatch.connection())?;
            return completion::complete_attempt(tx, FINISH_ATTEMPT_SQL, job, lease, ending).await;
        }
        let (status, failure, now) = (ending.status, ending.failure, ending.now);
        let report = ending.report.clone();
        tokio::task::spawn_blocking(move || {
            let ending = Ending {
                status,
                failure,
                report: &report,
                now,
            };
            let tx = RusqliteTx::begin(writer.dispatch.connection())?;
            futures::executor::block_on(completion::complete_attempt(
                tx,
                FINISH_ATTEMPT_SQL,
                job,
                lease,
                &ending,
            ))
        })
        .await
        .map_err(|e| super::StoreError::Thread(format!("a completion: {e}")))?
    }

    /// One server has a SQLite file to itself: there is nobody to tell.
    async fn announce_news(&self, _news: News) -> Result<()> {
        Ok(())
    }

    /// Nobody else writes to the file: there is nothing to hear.
    async fn listen_for_news(&self, _heard: Box<dyn Fn(News) + Send + Sync>) -> Result<()> {
        Ok(())
    }
}

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
