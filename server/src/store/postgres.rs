//! The PostgreSQL store, for clusters: several servers can share it.

use super::Result;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::time::Duration;

/// [`super::Store`] on a PostgreSQL database.
pub struct PgStore {
    pub(super) pool: PgPool,
}

impl PgStore {
    /// Connects and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    pub(super) async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

/// `SKIP LOCKED`: concurrent claimers (also on other servers) each take a different job without waiting.
pub(super) const CLAIM_SQL: &str = concat!(
    "UPDATE jobs SET status = 'running', attempt = attempt + 1, lease_id = $1, worker_id = $2, worker_name = $3,
       lease_deadline_ms = $4, started_at = $5, finished_at = NULL, log_length = 0, exit_code = NULL,
       failure_kind = NULL, message = NULL
     WHERE status = 'queued' AND id = (SELECT id FROM jobs WHERE status = 'queued' AND ready
                                       ORDER BY queued_at, position LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING ",
    job_columns!()
);

impl_store!(PgStore, sqlx::Postgres, "postgres");
