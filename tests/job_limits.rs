//! Limits and crashes, through a whole farm: a fork bomb, a memory hog and a step past its timeout each end
//! with their own failure kind while other jobs carry on; a worker killed mid-job leaves nothing behind once it
//! restarts, and the job is reported lost.

mod support;

use serde_json::Value;
use std::time::Duration;
use support::farm::Farm;
use support::git::Repo;
use support::{eventually, run};

fn farm_with_repo(name: &str, extra: &[&str]) -> (Farm, Repo) {
    let farm = Farm::up_with(extra);
    let repo = farm.hooked_repo(name);
    (farm, repo)
}

fn job<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name}: {p:#}"))
}

fn seconds(job: &Value) -> f64 {
    let t = |k: &str| chrono::DateTime::parse_from_rfc3339(job[k].as_str().unwrap()).unwrap();
    (t("finished_at") - t("started_at")).num_milliseconds() as f64 / 1000.0
}

#[test]
fn fork_bombs_memory_hogs_and_overruns_fail_with_their_own_kind_while_other_jobs_carry_on() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("limits", &["--capacity", "4"]);
        repo.push_pipeline(concat!(
            "jobs:\n",
            "  bomb:\n    resources: { pids: 64 }\n    steps: [\"while :; do sleep 1000 & done\", echo never]\n",
            "  hog:\n    resources: { memory: 64M }\n    steps: [\"head -c 600M /dev/zero | tail\", echo never]\n",
            "  overrun:\n    timeout: 2s\n    steps: [\"sleep 1000 & sleep 1000\"]\n",
            "  bystander:\n    steps: [\"sleep 1; echo still fine\"]\n",
        ));
        let p = farm.finished_pipeline("limits", 1).await;
        let kinds = |name: &str| {
            (
                job(&p, name)["status"].clone(),
                job(&p, name)["failure_kind"].clone(),
            )
        };
        assert_eq!(
            kinds("bomb"),
            ("failed".into(), "pids_limit".into()),
            "{p:#}"
        );
        assert_eq!(kinds("hog"), ("failed".into(), "oom".into()), "{p:#}");
        assert_eq!(
            kinds("overrun"),
            ("timed_out".into(), "timeout".into()),
            "{p:#}"
        );
        assert_eq!(job(&p, "bystander")["status"], "success", "{p:#}");
        // Killed mid-step: no exit code, and the message names the step.
        assert!(job(&p, "overrun")["exit_code"].is_null(), "{p:#}");
        let message = job(&p, "overrun")["message"].as_str().unwrap();
        assert!(message.contains("killed during step 1"), "{message}");
        let overrun = seconds(job(&p, "overrun"));
        assert!(
            overrun < 8.0,
            "a 2 s timeout should end the job promptly, it took {overrun} s"
        );
        assert!(
            job(&p, "hog")["peak_memory_bytes"].as_i64().unwrap() <= 64 << 20,
            "{p:#}"
        );
    });
}

fn pids_of(pattern: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_worker_killed_mid_job_leaves_nothing_once_restarted_and_reports_the_job_lost() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("crash", &[]);
        repo.push_pipeline("jobs:\n  long:\n    steps: [\"sleep 300\"]\n");
        let job_id = eventually("the job to run", Duration::from_secs(60), || async {
            let p = farm.get("/repos/crash/pipelines/1").await;
            (p["jobs"][0]["status"] == "running")
                .then(|| p["jobs"][0]["id"].as_str().unwrap().to_owned())
        })
        .await;
        let worker_name = farm.get("/workers").await["workers"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        // The first attempt's container.
        let container = format!("{worker_name}-{}-1", job_id.replace('-', ""));
        let worker_pid = eventually("the worker's pid", Duration::from_secs(10), || async {
            support::first_child(farm.pid()).map(|pid| pid.to_string())
        })
        .await;
        let cgroups = || {
            let out = std::process::Command::new("find")
                .args(["/sys/fs/cgroup", "-maxdepth", "3", "-name", &container])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        // `running` means leased: the checkout may still be under way, so wait for the container itself.
        support::eventually_blocking("the job's cgroup", Duration::from_secs(60), || {
            (!cgroups().is_empty()).then_some(())
        });
        assert!(!pids_of("gantry container-zygote").is_empty());

        let killed = std::process::Command::new("kill")
            .args(["-KILL", &worker_pid])
            .status()
            .unwrap();
        assert!(killed.success());
        // gantry up's pool starts the worker again under its name; the new process sweeps what the old one left
        // and reports the job lost, which puts it back in the queue: it runs again as attempt 2, long before the
        // lease would have ended.
        eventually("attempt 2 to run", Duration::from_secs(60), || async {
            let j = farm.get(&format!("/jobs/{job_id}")).await;
            (j["attempt"] == 2 && j["status"] == "running").then_some(())
        })
        .await;
        assert!(cgroups().is_empty(), "cgroups left behind:\n{}", cgroups());
        let cancel = farm
            .post_raw(
                "/api/v1/repos/crash/pipelines/1/cancel",
                &[("Authorization", format!("Bearer {}", farm.admin))],
                Vec::new(),
            )
            .await;
        assert_eq!(cancel.status(), 200);
        let p = farm.finished_pipeline("crash", 1).await;
        assert_eq!(p["jobs"][0]["status"], "cancelled", "{p:#}");
        // The pool started it again under its name, in its data dir.
        let data = farm.data_dir.join("workers").join(&worker_name);
        for dir in ["containers", "workspaces", "leases"] {
            let left: Vec<_> = std::fs::read_dir(data.join(dir))
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{dir} still holds {left:?}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&container),
            "a mount of the container is left on the host"
        );
        let sleepers = pids_of("sleep 300");
        assert!(
            sleepers.is_empty(),
            "the job's processes survived: {sleepers:?}"
        );
    });
}

fn rss(pid: u32) -> u64 {
    support::memory_of(pid, "VmRSS")
}

#[test]
fn a_job_writing_a_gibibyte_grows_neither_the_worker_nor_the_server() {
    run(Duration::from_secs(300), async {
        // A small cap, so the test is about holding output, not storing it.
        let config = support::scratch_dir("flood").join("gantry.toml");
        std::fs::write(&config, "log_cap_bytes = 1048576\n").unwrap();
        let (farm, repo) = farm_with_repo("flood", &["--config", config.to_str().unwrap()]);
        let worker = eventually("the local worker", Duration::from_secs(30), || async {
            support::first_child(farm.pid())
        })
        .await;
        let (server_before, worker_before) = (rss(farm.pid()), rss(worker));
        repo.push_pipeline(
            "jobs:\n  flood:\n    steps: [\"yes 0123456789abcdef0123456789abcdef | head -c 1073741824; echo done\"]\n",
        );
        // Sampled while the job runs: the peaks, not what is left after.
        let (mut server_peak, mut worker_peak) = (server_before, worker_before);
        let p = loop {
            server_peak = server_peak.max(rss(farm.pid()));
            worker_peak = worker_peak.max(rss(worker));
            let p = farm.get("/repos/flood/pipelines/1").await;
            if p["finished_at"].is_string() {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mib = |b: u64| b >> 20;
        eprintln!(
            "server {} → {} MiB, worker {} → {} MiB",
            mib(server_before),
            mib(server_peak),
            mib(worker_before),
            mib(worker_peak)
        );
        assert_eq!(p["status"], "success", "{p:#}");
        assert!(
            worker_peak - worker_before < 100 << 20,
            "the worker grew by {} MiB",
            mib(worker_peak - worker_before)
        );
        assert!(
            server_peak - server_before < 100 << 20,
            "the server grew by {} MiB",
            mib(server_peak - server_before)
        );
        let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();
        let log = farm.get_bytes(&format!("/jobs/{job}/log")).await;
        assert!(log.len() < 2 << 20, "the log holds {} bytes", log.len());
        let text = String::from_utf8_lossy(&log);
        assert!(
            text.contains("the log reached its cap of 1048576 bytes"),
            "{}",
            &text[text.len().saturating_sub(300)..]
        );
    });
}
