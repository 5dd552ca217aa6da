//! What the autoscaler reads of the queue: the ready jobs with what decides where they may run, and how long
//! jobs of the same name took lately.

use super::db::{Row, json, query};
use super::dialect::Dialect;
use super::{ReadyJob, Result};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Ready jobs read at most per look: a queue longer than this already asks for every worker a pool may have.
const READY_READ: i64 = 5000;
/// Successful jobs read for durations, newest first.
const DURATIONS_READ: i64 = 2000;
/// Durations kept per repository and job name (their median is used).
const DURATIONS_KEPT: usize = 5;

pub(crate) async fn ready_jobs(db: &impl Dialect) -> Result<Vec<ReadyJob>> {
    let rows = query(
        "SELECT j.name, j.runs_on, j.queued_at, p.repo_id, p.from_fork, r.name AS repo, r.pools
         FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id JOIN repos r ON r.id = p.repo_id
         WHERE j.status = 'queued' AND j.ready = TRUE
         ORDER BY j.priority DESC, j.queued_at, j.position LIMIT $1",
    )
    .bind(READY_READ)
    .fetch_all(&mut db.reader().await?)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ReadyJob {
                repo_id: row.get("repo_id")?,
                repo: row.get("repo")?,
                name: row.get("name")?,
                runs_on: json(&row.get::<String>("runs_on")?)?,
                repo_pools: row
                    .get::<Option<String>>("pools")?
                    .map(|p| json(&p))
                    .transpose()?,
                from_fork: row.get("from_fork")?,
                queued_at: row.get("queued_at")?,
            })
        })
        .collect()
}

pub(crate) async fn recent_durations(
    db: &impl Dialect,
    since: DateTime<Utc>,
) -> Result<HashMap<(i64, String), i64>> {
    let rows = query(
        "SELECT p.repo_id, j.name, j.started_at, j.finished_at
         FROM jobs j JOIN pipelines p ON p.id = j.pipeline_id
         WHERE j.status = 'success' AND j.finished_at > $1 AND j.started_at IS NOT NULL
         ORDER BY j.finished_at DESC LIMIT $2",
    )
    .bind(since)
    .bind(DURATIONS_READ)
    .fetch_all(&mut db.reader().await?)
    .await?;
    let mut seen: HashMap<(i64, String), Vec<i64>> = HashMap::new();
    for row in &rows {
        let started: DateTime<Utc> = row.get("started_at")?;
        let finished: DateTime<Utc> = row.get("finished_at")?;
        let took = seen
            .entry((row.get("repo_id")?, row.get("name")?))
            .or_default();
        if took.len() < DURATIONS_KEPT {
            took.push((finished - started).num_milliseconds().max(0));
        }
    }
    Ok(seen
        .into_iter()
        .map(|(key, mut took)| {
            took.sort_unstable();
            (key, took[took.len() / 2])
        })
        .collect())
}
