//! SQLite's dispatch path — the claim and the completion, most of what a busy farm writes — through rusqlite on a
//! connection of its own, run on the calling thread while the store's writer lock is held.
//!
//! Through sqlx every statement is a round trip to the connection's own thread: ~0.1 ms of wake-ups on the
//! 2-core VM, as long as the statement itself takes (bench/dispatch). Here a claim or a whole completion is no
//! round trip, and it holds the caller's thread for about as long as SQLite works (~0.1 ms). Both connections
//! write only under the writer lock, so they never wait for each other inside SQLite. Values are stored as sqlx
//! stores them (UUIDs as 16-byte blobs, times as RFC 3339 text), so either connection reads what the other wrote.

use super::{CLAIM_SQL, parse};
use crate::store::completion::{Ending, SettlingJob, settle};
use crate::store::{Claim, ClaimedJob, Completed, JobRecord, Result, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use gantry_model::wire::{PullRequest, StepReport};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, named_params};
use std::time::Duration;
use uuid::Uuid;

/// The dispatch path's connection.
pub(super) struct Dispatch {
    conn: Connection,
}

/// A time as sqlx writes it to SQLite.
fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// A time as sqlx reads it from SQLite: RFC 3339, or SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC.
fn parse_time(text: String) -> Result<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(&text) {
        return Ok(time.with_timezone(&Utc));
    }
    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
        .map(|t| t.and_utc())
        .map_err(|e| StoreError::Corrupt(format!("time {text:?}: {e}")))
}

impl Dispatch {
    /// Opens the (migrated) database file at `path` with the settings of the store's other connections.
    pub(super) fn open(path: &str) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        Ok(Self { conn })
    }

    /// Leases the next ready job the worker can run (`CLAIM_SQL`), in one statement.
    pub(super) fn claim(
        &mut self,
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedJob>> {
        let mut statement = self.conn.prepare_cached(CLAIM_SQL)?;
        let mut rows = statement.query(named_params! {
            "$1": claim.lease_id,
            "$2": claim.worker_id,
            "$3": claim.worker_name,
            "$4": claim.deadline_ms,
            "$5": timestamp(now),
        })?;
        // The statement's first step makes the change; its transaction commits when the statement is done, so
        // it is stepped to the end here, where a failing commit is an error rather than lost in a reset.
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let pull_request = match row.get::<_, Option<i64>>("pr_number")? {
            None => None,
            Some(number) => Some(PullRequest {
                number,
                source_branch: row
                    .get::<_, Option<String>>("source_branch")?
                    .unwrap_or_default(),
                target_branch: row
                    .get::<_, Option<String>>("target_branch")?
                    .unwrap_or_default(),
                from_fork: row.get("from_fork")?,
            }),
        };
        let claimed = ClaimedJob {
            job: job_from(row)?,
            repo: row.get("repo")?,
            clone_url: row.get("clone_url")?,
            number: row.get("number")?,
            commit: row.get("commit_sha")?,
            git_ref: row.get("git_ref")?,
            event: row.get("event")?,
            pull_request,
            clone_credential: row.get("clone_credential")?,
            repo_id: row.get("repo_id")?,
            has_secrets: row.get("has_secrets")?,
        };
        if rows.next()?.is_some() {
            return Err(StoreError::Corrupt("a claim leased two jobs".into()));
        }
        Ok(Some(claimed))
    }

    /// Ends `job`'s attempt if `lease` is still its lease, stores its steps and test cases, and settles its
    /// pipeline, in one transaction; `None` when the lease is not (or no longer) the running job's.
    pub(super) fn complete(
        &mut self,
        job: Uuid,
        lease: Uuid,
        ending: &Ending<'_>,
    ) -> Result<Option<Completed>> {
        let now = timestamp(ending.now);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let report = ending.report;
        let finished = tx
            .prepare_cached(finish_attempt_sql!())?
            .query_row(
                named_params! {
                    "$1": job,
                    "$2": ending.status.as_str(),
                    "$3": report.exit_code,
                    "$4": ending.failure.map(|f| f.as_str()),
                    "$5": report.message,
                    "$6": now,
                    "$7": report.cpu_seconds,
                    "$8": report.peak_memory_bytes.map(|b| b as i64),
                    "$9": lease,
                },
                |row| {
                    Ok((
                        row.get::<_, i64>("attempt")?,
                        row.get::<_, Uuid>("pipeline_id")?,
                    ))
                },
            )
            .optional()?;
        // Rolled back as `tx` drops: there was nothing to change.
        let Some((attempt, pipeline)) = finished else {
            return Ok(None);
        };
        for step in &report.steps {
            upsert_step(&tx, job, attempt, step)?;
        }
        let mut insert = tx.prepare_cached(insert_test_case_sql!())?;
        for (idx, case) in report.tests.iter().enumerate() {
            insert.execute(named_params! {
                "$1": job,
                "$2": attempt,
                "$3": idx as i64,
                "$4": case.suite,
                "$5": case.name,
                "$6": case.status.as_str(),
                "$7": case.duration_ms.map(|ms| ms as i64),
                "$8": case.message,
            })?;
        }
        drop(insert);
        let mut was = None;
        let mut jobs = Vec::new();
        {
            let mut read = tx.prepare_cached(concat!(
                pipeline_jobs_sql!(),
                "WHERE j.pipeline_id = $1 ORDER BY j.position"
            ))?;
            let mut rows = read.query(named_params! {"$1": pipeline})?;
            while let Some(row) = rows.next()? {
                was = Some(row.get::<_, String>("pipeline_status")?);
                let needs: String = row.get("needs")?;
                jobs.push(SettlingJob {
                    id: row.get("id")?,
                    name: row.get("name")?,
                    needs: serde_json::from_str(&needs)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    status: parse(row.get("status")?)?,
                });
            }
        }
        let settled = settle(jobs, was.as_deref());
        for id in &settled.skip {
            tx.prepare_cached(skip_job_sql!())?
                .execute(named_params! {"$1": id, "$2": now})?;
        }
        for id in &settled.ready {
            tx.prepare_cached(ready_job_sql!())?
                .execute(named_params! {"$1": id})?;
        }
        if settled.changed {
            tx.prepare_cached(set_pipeline_status_sql!())?
                .execute(named_params! {
                    "$1": pipeline,
                    "$2": settled.status.as_str(),
                    "$3": settled.status.is_finished(),
                    "$4": now,
                })?;
        }
        tx.commit()?;
        Ok(Some(Completed {
            status: ending.status,
            pipeline_status: settled.status,
            skipped: settled.skip,
        }))
    }
}

fn upsert_step(
    tx: &rusqlite::Transaction<'_>,
    job: Uuid,
    attempt: i64,
    step: &StepReport,
) -> Result<()> {
    tx.prepare_cached(upsert_step_sql!())?
        .execute(named_params! {
            "$1": job,
            "$2": attempt,
            "$3": step.index,
            "$4": step.command,
            "$5": step.log_offset as i64,
            "$6": timestamp(step.started_at),
            "$7": step.finished_at.map(timestamp),
            "$8": step.exit_code,
        })?;
    Ok(())
}

/// A job row (`job_columns!`), as `shared.rs` reads one through sqlx.
fn job_from(row: &Row<'_>) -> Result<JobRecord> {
    let spec: String = row.get("spec")?;
    let failure: Option<String> = row.get("failure_kind")?;
    let time = |column: &str| -> Result<Option<DateTime<Utc>>> {
        row.get::<_, Option<String>>(column)?
            .map(parse_time)
            .transpose()
    };
    Ok(JobRecord {
        id: row.get("id")?,
        pipeline_id: row.get("pipeline_id")?,
        name: row.get("name")?,
        spec: serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        status: parse(row.get("status")?)?,
        attempt: row.get::<_, i64>("attempt")? as u32,
        lease_id: row.get("lease_id")?,
        worker_name: row.get("worker_name")?,
        exit_code: row.get::<_, Option<i64>>("exit_code")?.map(|c| c as i32),
        failure_kind: failure.map(parse).transpose()?,
        message: row.get("message")?,
        log_length: row.get::<_, i64>("log_length")? as u64,
        queued_at: parse_time(row.get("queued_at")?)?,
        started_at: time("started_at")?,
        finished_at: time("finished_at")?,
        cpu_seconds: row.get("cpu_seconds")?,
        peak_memory_bytes: row.get("peak_memory_bytes")?,
    })
}
