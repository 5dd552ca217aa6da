//! The autoscaler's decision for one pool, as plain arithmetic over what the store says: how many workers the
//! ready work needs, and which idle workers may go. No I/O, so every rule is tested here.

use crate::store::{ReadyJob, WorkerRecord};
use gantry_model::wire::Pool;
use std::collections::HashMap;
use uuid::Uuid;

/// What the autoscaler knows of a pool at one look.
pub struct Look<'a> {
    /// The pool.
    pub pool: &'a Pool,
    /// The ready jobs this pool may run.
    pub ready: Vec<&'a ReadyJob>,
    /// Median recent durations (ms) by (repository id, job name).
    pub durations: &'a HashMap<(i64, String), i64>,
    /// The pool's registered workers.
    pub workers: Vec<&'a WorkerRecord>,
    /// Instances the provider is starting that have not registered yet.
    pub booting: u32,
    /// Now, in Unix ms.
    pub now_ms: i64,
}

/// What to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Workers counted now (registered and not draining, plus booting).
    pub live: u32,
    /// Workers to start.
    pub start: u32,
    /// Why, when starting.
    pub reason: String,
    /// Idle workers to drain, each with why.
    pub drain: Vec<(Uuid, String)>,
}

/// Whether `pool` may run `job`: its labels, its repository's pools, and a fork's pull request never on a
/// trusted pool (the claim applies the same rules).
pub fn may_run(pool: &Pool, job: &ReadyJob) -> bool {
    job.runs_on.iter().all(|label| pool.labels.contains(label))
        && job
            .repo_pools
            .as_ref()
            .is_none_or(|pools| pools.contains(&pool.name))
        && !(job.from_fork && pool.trusted)
}

fn seconds(ms: i64) -> String {
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        gantry_model::wire::duration_text(ms)
    }
}

/// Decides for one pool.
pub fn decide(look: &Look) -> Plan {
    let pool = look.pool;
    let serving: Vec<_> = look
        .workers
        .iter()
        .filter(|w| w.state != "draining")
        .collect();
    let live = serving.len() as u32 + look.booting;
    let busy_slots: u32 = serving.iter().map(|w| w.running).sum();
    let total_slots = serving.len() as u32 * pool.slots;
    // Jobs whose past durations are known are sized by work (all of it done within `target_wait`); the others
    // count one slot each.
    let mut known_ms = 0i64;
    let mut known = 0u32;
    for job in &look.ready {
        if let Some(ms) = look.durations.get(&(job.repo_id, job.name.clone())) {
            known_ms += ms;
            known += 1;
        }
    }
    let unknown = look.ready.len() as u32 - known;
    let by_work = if known == 0 {
        0
    } else {
        let target = pool.target_wait_ms.max(1);
        (((known_ms + target - 1) / target) as u32).clamp(1, known)
    };
    let needed_slots = busy_slots + unknown + by_work + pool.warm;
    let wanted = needed_slots
        .div_ceil(pool.slots.max(1))
        .clamp(pool.min, pool.max);
    let mut plan = Plan {
        live,
        ..Plan::default()
    };
    if wanted > live {
        plan.start = wanted - live;
        let mut why = Vec::new();
        if !look.ready.is_empty() {
            let oldest = look
                .ready
                .iter()
                .map(|j| j.queued_at.timestamp_millis())
                .min()
                .unwrap_or(look.now_ms);
            let labels = if pool.labels.is_empty() {
                String::new()
            } else {
                format!(" for [{}]", pool.labels.join(", "))
            };
            why.push(format!(
                "{} job{} ready{labels}, oldest waiting {}",
                look.ready.len(),
                if look.ready.len() == 1 { "" } else { "s" },
                seconds((look.now_ms - oldest).max(0))
            ));
        }
        if known > 0 {
            why.push(format!(
                "{known} of them expected to take {} in all (median of past runs) for a target wait of {} \
                 → {by_work} slot{}",
                seconds(known_ms),
                seconds(pool.target_wait_ms),
                if by_work == 1 { "" } else { "s" }
            ));
        }
        why.push(format!("{busy_slots} of {total_slots} slots busy"));
        if pool.warm > 0 {
            why.push(format!("{} kept warm", pool.warm));
        }
        if wanted == pool.min && needed_slots.div_ceil(pool.slots.max(1)) < pool.min {
            why.push(format!("min {}", pool.min));
        }
        if wanted == pool.max && needed_slots.div_ceil(pool.slots.max(1)) > pool.max {
            why.push(format!("max {}", pool.max));
        }
        plan.reason = format!(
            "{} → +{} worker{}",
            why.join(", "),
            plan.start,
            if plan.start == 1 { "" } else { "s" }
        );
    } else if wanted < live {
        // Only workers idle past the timeout go, the longest idle first; a busy one never. Nor one started by
        // hand (it joined with the pool's token): nobody would start it again, so it counts but stays.
        let mut idle: Vec<_> = serving
            .iter()
            .filter(|w| w.managed && w.running == 0)
            .filter(|w| look.now_ms - w.idle_since_ms >= pool.idle_timeout_ms)
            .collect();
        idle.sort_by_key(|w| w.idle_since_ms);
        for worker in idle.into_iter().take((live - wanted) as usize) {
            plan.drain.push((
                worker.id,
                format!(
                    "worker {} idle {} → drain",
                    worker.name,
                    seconds(look.now_ms - worker.idle_since_ms)
                ),
            ));
        }
    }
    plan
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
