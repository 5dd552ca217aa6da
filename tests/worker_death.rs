//! When a worker dies, its containers die with it (issue 20): SIGKILLed alone (not its process group), stopped
//! with SIGTERM and then SIGKILLed, or gone with the `gantry up` that started it, a worker leaves no process of a
//! job behind — not even of a job that ignores SIGTERM and SIGHUP, starts a new session and double-forks — so a
//! job whose worker died never runs beside its re-run. Each test prints how long the container outlived it.

mod support;

use nix::sys::signal::Signal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::farm::Farm;
use support::local::processes_with;
use support::{eventually, eventually_blocking, run};

/// A job that tries to outlive its container: every process of it ignores SIGTERM and SIGHUP, one is in a session
/// of its own, one is a double-forked daemon. Each carries `marker` on its command line.
fn stubborn_job(marker: &str) -> String {
    let stay = |tag: &str| format!("sh -c 'trap \\\"\\\" TERM HUP; sleep 1000; :' {marker}-{tag}");
    format!(
        "jobs:\n  stubborn:\n    steps:\n      - \"trap '' TERM HUP INT; setsid {} & ({} &); echo started; {}\"\n",
        stay("session"),
        stay("daemon"),
        stay("main")
    )
}

/// Waits until the job's three processes run.
fn all_three_running(marker: &str) {
    eventually_blocking("the job's processes", Duration::from_secs(60), || {
        (processes_with(marker).len() >= 3).then_some(())
    });
}

/// How long the job's processes outlive `since`; fails past `limit`. Also checks the cgroups of `worker`'s
/// containers hold no process any more.
fn gone_within(marker: &str, worker: &str, since: Instant, limit: Duration) -> Duration {
    eventually_blocking("every process of the job to die", limit, || {
        processes_with(marker).is_empty().then_some(())
    });
    // The kernel empties the cgroups as the last processes (some without the marker: the steps' `sleep`s) finish
    // exiting, a moment after: wait for that too, within the same limit.
    let occupied = || -> Vec<PathBuf> {
        cgroups_of(worker)
            .into_iter()
            .filter(|dir| {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                !procs.trim().is_empty()
            })
            .collect()
    };
    let left = limit
        .saturating_sub(since.elapsed())
        .max(Duration::from_secs(1));
    let deadline = Instant::now() + left;
    while !occupied().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = since.elapsed();
    let still = occupied();
    assert!(
        still.is_empty(),
        "cgroups still holding processes: {still:?}"
    );
    took
}

/// The cgroup dirs of `worker`'s containers, in every hierarchy.
fn cgroups_of(worker: &str) -> Vec<PathBuf> {
    let layout = gantry_worker::runtime::cgroup::CgroupLayout::detect().unwrap();
    layout
        .parents()
        .into_iter()
        .filter_map(|parent| std::fs::read_dir(parent).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|dir| {
            dir.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(worker)
        })
        .collect()
}

/// Waits for `worker`'s killed containers' cgroups to be gone (their zygote removes them as it ends).
fn cgroups_removed(worker: &str) {
    eventually_blocking(
        "the containers' cgroups to go",
        Duration::from_secs(20),
        || cgroups_of(worker).is_empty().then_some(()),
    );
}

fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    )
}

#[test]
fn a_worker_killed_alone_takes_its_containers_with_it() {
    run(Duration::from_secs(240), async {
        let farm = Farm::serve_on(None, &[]);
        let repo = farm.hooked_repo("doomed");
        for (case, sigterm_first) in [("sigkill", false), ("sigterm-then-sigkill", true)] {
            let (name, marker) = (unique("doomed"), unique("stubborn"));
            let mut worker = farm.worker(&name);
            repo.push_pipeline(&stubborn_job(&marker));
            all_three_running(&marker);
            let killed = Instant::now();
            if sigterm_first {
                worker.signal(Signal::SIGTERM);
                std::thread::sleep(Duration::from_secs(1));
            }
            worker.kill();
            let took = gone_within(&marker, &name, killed, Duration::from_secs(20));
            println!(
                "{case}: the container was gone {} ms after the kill",
                took.as_millis()
            );
            cgroups_removed(&name);
        }
    });
}

#[test]
fn a_local_worker_and_its_containers_die_with_gantry_up() {
    run(Duration::from_secs(240), async {
        let farm = Farm::up();
        let repo = farm.hooked_repo("up-dies");
        let marker = unique("stubborn");
        repo.push_pipeline(&stubborn_job(&marker));
        all_three_running(&marker);
        let worker = eventually("gantry up's worker", Duration::from_secs(10), || async {
            support::first_child(farm.pid())
        })
        .await;
        let workers = farm.get("/workers").await;
        let name = workers["workers"][0]["name"].as_str().unwrap().to_owned();
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(farm.pid() as i32),
            Signal::SIGKILL,
        )
        .unwrap();
        eventually_blocking("the local worker to exit", Duration::from_secs(20), || {
            (!PathBuf::from(format!("/proc/{worker}")).exists()).then_some(())
        });
        let took = gone_within(&marker, &name, killed, Duration::from_secs(20));
        println!(
            "gantry up SIGKILLed: its worker and the container were gone {} ms after",
            took.as_millis()
        );
        cgroups_removed(&name);
    });
}
