//! SQLite's dispatch path — the claim and the completion, most of what a busy farm writes — through rusqlite on a
//! connection of its own, run on the calling thread while the store's writer lock is held.
//!
//! Through sqlx every statement is a round trip to the connection's own thread: ~0.1 ms of wake-ups on the
//! 2-core VM, as long as the statement itself takes (bench/dispatch). Here a claim or a whole completion is no
//! round trip, and it holds the caller's thread for about as long as SQLite works (~0.1 ms). A dedicated writer
//! thread was measured too (issue 15): one hand-off per claim and per completion cost a quarter of the rate.
//! Both connections write only under the writer lock, so they never wait for each other inside SQLite; values
//! are encoded by `db/sqlite.rs` for both.

use crate::store::db::query;
use crate::store::jobs::{JOB_COLUMNS, claimed_from};
use crate::store::{Claim, ClaimedJob, Result};
use chrono::Utc;
use const_format::concatcp;
use rusqlite::Connection;
use std::time::Duration;

/// Steps and test cases a completion may carry and still run on the caller's thread; a bigger one runs on a
/// blocking thread (its inserts take milliseconds).
pub(super) const INLINE_REPORT_ITEMS: usize = 256;

/// SQLite serialises writers, so the ready job of highest priority, then oldest, whose `runs-on` labels the
/// worker all has, whose repository is under its `max_running_jobs` and allows the worker's pool, and that is
/// not a fork's pull request on a trusted pool, can simply be taken by a worker not draining (the count is exact:
/// no other claim runs meanwhile). The count walks the running jobs (`jobs_leases`), not the repository's
/// history of pipelines. `ready = TRUE` rather than bare `ready`: only an equality lets the planner walk
/// `jobs_claim` in order and stop at the first match; bare, it picked another index on `status` and sorted every
/// queued job per claim. The source comes back with the job (the subqueries see the claimed row), so a claim is
/// one statement.
const CLAIM_SQL: &str = concatcp!(
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
         AND NOT EXISTS (SELECT 1 FROM pipelines p JOIN repos r ON r.id = p.repo_id, workers w
                         WHERE p.id = j.pipeline_id AND w.id = $2
                           AND ((r.pools IS NOT NULL AND w.pool NOT IN (SELECT value FROM json_each(r.pools)))
                                OR (p.from_fork AND (SELECT t.trusted FROM pools t WHERE t.name = w.pool))))
       ORDER BY j.priority DESC, j.queued_at, j.position LIMIT 1)
       AND NOT EXISTS (SELECT 1 FROM workers d WHERE d.id = $2 AND d.draining)
     RETURNING ",
    JOB_COLUMNS,
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

/// The dispatch path's connection.
pub(super) struct Dispatch {
    conn: Connection,
}

impl Dispatch {
    /// Opens the (migrated) database file at `path` with the settings of the store's other connections.
    pub(super) fn open(path: &str) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Its commits run on a tokio thread: `checkpoint.rs` copies the WAL back instead.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self { conn })
    }

    /// The connection, for a completion's transaction.
    pub(super) fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Leases the next ready job the worker can run (`CLAIM_SQL`), in one statement.
    pub(super) async fn claim(&mut self, claim: &Claim) -> Result<Option<ClaimedJob>> {
        let row = query(CLAIM_SQL)
            .bind(claim.lease_id)
            .bind(claim.worker_id)
            .bind(&claim.worker_name)
            .bind(claim.deadline_ms)
            .bind(Utc::now())
            .fetch_optional(&mut self.conn)
            .await?;
        row.as_ref().map(claimed_from).transpose()
    }
}
