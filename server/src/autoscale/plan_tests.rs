use super::*;
use chrono::{TimeZone, Utc};
use gantry_model::wire::{PoolSpec, Provider};

fn pool(min: u32, max: u32, slots: u32) -> Pool {
    let mut pool = PoolSpec {
        name: "big".into(),
        provider: None,
        labels: vec!["linux".into(), "big".into()],
        min,
        max: Some(max),
        slots: Some(slots),
        warm: 0,
        idle_timeout: Some("5m".into()),
        boot_timeout: None,
        trusted: false,
        target_wait: Some("30s".into()),
        exec: None,
        kubernetes: None,
    }
    .check()
    .unwrap();
    pool.provider = Provider::Local;
    pool
}

const NOW: i64 = 1_000_000_000;

fn job(name: &str, waited_ms: i64) -> ReadyJob {
    ReadyJob {
        repo_id: 1,
        repo: "demo".into(),
        name: name.into(),
        runs_on: vec!["linux".into()],
        repo_pools: None,
        from_fork: false,
        queued_at: Utc.timestamp_millis_opt(NOW - waited_ms).unwrap(),
    }
}

fn worker(name: &str, running: u32, idle_for_ms: i64, state: &str) -> WorkerRecord {
    WorkerRecord {
        id: Uuid::now_v7(),
        name: name.into(),
        pool: "big".into(),
        labels: vec![],
        capacity: 1,
        state: state.into(),
        last_seen: Utc::now(),
        idle_since_ms: NOW - idle_for_ms,
        managed: true,
        running,
    }
}

fn look<'a>(
    pool: &'a Pool,
    ready: &'a [ReadyJob],
    workers: &'a [WorkerRecord],
    durations: &'a HashMap<(i64, String), i64>,
    booting: u32,
) -> Look<'a> {
    Look {
        pool,
        ready: ready.iter().collect(),
        durations,
        workers: workers.iter().collect(),
        booting,
        now_ms: NOW,
    }
}

#[test]
fn ready_jobs_start_workers_up_to_max_counting_those_booting_and_say_why() {
    let pool = pool(0, 4, 1);
    let ready: Vec<_> = (0..14).map(|i| job(&format!("t:{i}"), 600)).collect();
    let workers = [worker("big-1", 1, 0, "busy"), worker("big-2", 1, 0, "busy")];
    let none = HashMap::new();
    let plan = decide(&look(&pool, &ready, &workers, &none, 1));
    assert_eq!((plan.live, plan.start), (3, 1));
    assert_eq!(
        plan.reason,
        "14 jobs ready for [linux, big], oldest waiting 0.6 s, 2 of 2 slots busy, max 4 → +1 worker"
    );
    let plan = decide(&look(&pool, &ready[..1], &[], &none, 0));
    assert_eq!(plan.start, 1, "from zero");
    assert!(plan.drain.is_empty());
}

#[test]
fn known_durations_size_the_pool_by_work_not_by_count() {
    let pool = pool(0, 10, 1);
    let ready: Vec<_> = (0..8).map(|i| job(&format!("quick:{i}"), 100)).collect();
    let durations: HashMap<_, _> = (0..8).map(|i| ((1, format!("quick:{i}")), 5_000)).collect();
    let plan = decide(&look(&pool, &ready, &[], &durations, 0));
    // 8 × 5 s = 40 s of work within 30 s: 2 workers, not 8.
    assert_eq!(plan.start, 2, "{plan:?}");
    assert!(
        plan.reason
            .contains("8 of them expected to take 40.0 s in all"),
        "{}",
        plan.reason
    );
}

#[test]
fn scale_in_drains_only_workers_idle_past_the_timeout_never_a_busy_one() {
    let pool = pool(0, 4, 1);
    let workers = [
        worker("big-1", 1, 10 * 60_000, "busy"),
        worker("big-2", 0, 6 * 60_000, "idle"),
        worker("big-3", 0, 60_000, "idle"),
        worker("big-4", 0, 0, "draining"),
    ];
    let none = HashMap::new();
    let plan = decide(&look(&pool, &[], &workers, &none, 0));
    assert_eq!(plan.start, 0);
    assert_eq!(plan.live, 3, "a draining worker is not counted");
    assert_eq!(plan.drain.len(), 1, "{plan:?}");
    assert_eq!(plan.drain[0].0, workers[1].id);
    assert_eq!(plan.drain[0].1, "worker big-2 idle 6m → drain");
}

#[test]
fn min_and_warm_keep_workers_and_slots_divide_the_need() {
    let mut pool = pool(2, 4, 3);
    let none = HashMap::new();
    let old_idle = [
        worker("big-1", 0, 3_600_000, "idle"),
        worker("big-2", 0, 3_600_000, "idle"),
    ];
    assert_eq!(
        decide(&look(&pool, &[], &old_idle, &none, 0)),
        Plan {
            live: 2,
            ..Plan::default()
        }
    );
    let ready: Vec<_> = (0..7).map(|i| job(&format!("t:{i}"), 0)).collect();
    assert_eq!(
        decide(&look(&pool, &ready, &old_idle, &none, 0)).start,
        1,
        "7 jobs on 3 slots each: 3 workers"
    );
    pool.warm = 3;
    pool.min = 0;
    let plan = decide(&look(&pool, &[], &[], &none, 0));
    assert_eq!(plan.start, 1, "3 warm slots: one worker");
    assert!(plan.reason.contains("3 kept warm"), "{}", plan.reason);
}

#[test]
fn a_pool_runs_only_what_its_labels_repositories_and_trust_allow() {
    let mut pool = pool(0, 4, 1);
    let mut j = job("t", 0);
    assert!(may_run(&pool, &j));
    j.runs_on = vec!["gpu".into()];
    assert!(!may_run(&pool, &j), "a label the pool lacks");
    j.runs_on = vec![];
    j.repo_pools = Some(vec!["other".into()]);
    assert!(!may_run(&pool, &j), "a repository limited to other pools");
    j.repo_pools = Some(vec!["big".into()]);
    j.from_fork = true;
    assert!(may_run(&pool, &j));
    pool.trusted = true;
    assert!(
        !may_run(&pool, &j),
        "a fork's pull request on a trusted pool"
    );
}

#[test]
fn a_worker_started_by_hand_counts_but_is_never_drained() {
    let pool = pool(0, 4, 1);
    let none = HashMap::new();
    let mut by_hand = worker("remote", 0, 3_600_000, "idle");
    by_hand.managed = false;
    let workers = [by_hand, worker("big-1", 0, 3_600_000, "idle")];
    let plan = decide(&look(&pool, &[], &workers, &none, 0));
    assert_eq!(plan.live, 2);
    assert_eq!(plan.drain.len(), 1, "{plan:?}");
    assert!(plan.drain[0].1.starts_with("worker big-1 idle"), "{plan:?}");
    let ready = [job("t", 0)];
    assert_eq!(
        decide(&look(&pool, &ready, &workers[..1], &none, 0)).start,
        0,
        "its idle slot takes the ready job"
    );
}
