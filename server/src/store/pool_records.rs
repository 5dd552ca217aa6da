//! The pool rows the store reads: a pool with what the autoscaler made of it, and its decisions.

use chrono::{DateTime, Utc};
use gantry_model::wire::{Pool, PoolView, WorkerCounts, duration_text};

/// A stored pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRecord {
    /// Its settings.
    pub pool: Pool,
    /// Written in the configuration file (changed there, not through the API).
    pub from_config: bool,
    /// Workers the autoscaler last wanted.
    pub desired: u32,
    /// Why its provider last failed, while it does.
    pub error: Option<String>,
    /// The workers its provider is starting, not registered yet, by name.
    pub booting_workers: Vec<String>,
    /// Its workers by state (`booting` is what the provider says it is starting).
    pub workers: WorkerCounts,
}

impl PoolRecord {
    /// What the API shows of it.
    pub fn view(&self) -> PoolView {
        let p = &self.pool;
        PoolView {
            name: p.name.clone(),
            provider: p.provider.as_str().into(),
            labels: p.labels.clone(),
            min: p.min,
            max: p.max,
            slots: p.slots,
            warm: p.warm,
            idle_timeout: duration_text(p.idle_timeout_ms),
            boot_timeout: duration_text(p.boot_timeout_ms),
            target_wait: duration_text(p.target_wait_ms),
            trusted: p.trusted,
            from_config: self.from_config,
            desired: self.desired,
            workers: self.workers,
            error: self.error.clone(),
        }
    }
}

/// One decision of the autoscaler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolDecision {
    /// When.
    pub at: DateTime<Utc>,
    /// Workers before.
    pub from: u32,
    /// Workers wanted after.
    pub to: u32,
    /// Why, in words.
    pub reason: String,
}

/// A job ready to run, as the autoscaler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyJob {
    /// Its repository's row id.
    pub repo_id: i64,
    /// Its repository's name.
    pub repo: String,
    /// Its name (`test:2`).
    pub name: String,
    /// The labels it asks for.
    pub runs_on: Vec<String>,
    /// The pools its repository allows (none: any).
    pub repo_pools: Option<Vec<String>>,
    /// A pull request from a fork (never on a trusted pool).
    pub from_fork: bool,
    /// Since when it waits.
    pub queued_at: DateTime<Utc>,
}

/// Where a worker stands when it calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It may take jobs.
    Serving,
    /// It takes no new job: it finishes what it runs and leaves.
    Draining,
    /// Its registration or token is gone (deregistered, removed, or its pool's token rotated).
    Gone,
}

/// An instance a provider made outside this server (`exec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInstance {
    /// The worker name it was given.
    pub name: String,
    /// The id its provider knows it by (what `create` printed).
    pub instance: String,
    /// When it was made (Unix ms).
    pub created_ms: i64,
}
