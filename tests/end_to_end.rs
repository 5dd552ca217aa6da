//! The whole path through the real binary: git push → post-receive hook → webhook → queue → worker → container →
//! live log. Needs root (the worker makes real containers) and git.

mod support;

use base64::Engine;
use futures::StreamExt;
use serde_json::Value;
use std::time::{Duration, Instant};
use support::farm::Farm;
use support::git::Repo;
use support::run;

/// A farm with one repository whose bare repo has Gantry's hook installed.
fn farm_with_repo(name: &str) -> (Farm, Repo) {
    let farm = Farm::up();
    let repo = farm.hooked_repo(name);
    (farm, repo)
}

fn only_job(pipeline: &Value) -> &Value {
    let jobs = pipeline["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{pipeline:#}");
    &jobs[0]
}

#[test]
fn a_pushed_job_runs_isolated_in_its_own_container() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("isolation");
        let marker = format!("gantry-e2e-{}", uuid::Uuid::now_v7().simple());
        let data_dir = farm.data_dir.display().to_string();
        let pipeline = format!(
            "jobs:\n  probe:\n    steps:\n      - \"echo host=$(hostname); echo pid=$$; echo uid=$(id -u); echo procs=$(ls /proc | grep -c '^[0-9]')\"\n      - \"echo x > /tmp/{marker} && echo x > /usr/{marker} && echo wrote\"\n      - \"if ls {data_dir} >/dev/null 2>&1 && [ -n \\\"$(ls -A {data_dir})\\\" ]; then echo data=visible; else echo data=hidden; fi\"\n      - \"cat {data_dir}/gantry.db >/dev/null 2>&1 && echo db=readable || echo db=unreadable\"\n"
        );
        let (push_output, sha) = repo.push_pipeline(&pipeline);
        assert!(
            push_output.contains("pipeline #1"),
            "the hook did not report a pipeline: {push_output}"
        );

        let p = farm.finished_pipeline("isolation", 1).await;
        assert_eq!(p["commit"], sha.as_str());
        let job = only_job(&p);
        let log = String::from_utf8(
            farm.get_bytes(&format!("/jobs/{}/log", job["id"].as_str().unwrap()))
                .await,
        )
        .unwrap();
        assert_eq!(job["status"], "success", "{p:#}\n{log}");
        assert_eq!(p["status"], "success");

        let field = |key: &str| {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in {log}"))
                .to_owned()
        };
        let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_ne!(field("host"), host, "the job saw the host's hostname");
        let pid: u32 = field("pid").parse().unwrap();
        assert!(
            pid <= 5,
            "the step's shell should have a low PID in its own namespace, got {pid}"
        );
        assert_eq!(field("uid"), "0");
        let procs: u32 = field("procs").parse().unwrap();
        assert!(
            procs <= 6,
            "the job should see only its own processes, saw {procs}"
        );
        assert!(log.contains("wrote"), "{log}");
        assert_eq!(
            field("data"),
            "hidden",
            "the farm's data dir was visible to the job"
        );
        assert_eq!(
            field("db"),
            "unreadable",
            "the farm's database was readable from the job"
        );
        assert!(
            !std::path::Path::new(&format!("/tmp/{marker}")).exists(),
            "the job wrote into the host's /tmp"
        );
        assert!(
            !std::path::Path::new(&format!("/usr/{marker}")).exists(),
            "the job wrote into the host's /usr"
        );
    });
}

#[test]
fn a_failing_step_fails_the_job_with_its_exit_code_and_stops_the_job() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("failing");
        repo.push_pipeline("jobs:\n  broken:\n    steps:\n      - echo before\n      - exit 3\n      - echo never-printed\n");
        let p = farm.finished_pipeline("failing", 1).await;
        let job = only_job(&p);
        assert_eq!(p["status"], "failed");
        assert_eq!(job["status"], "failed");
        assert_eq!(job["exit_code"], 3);
        assert_eq!(job["failure_kind"], "exit");
        let detail = farm
            .get(&format!("/jobs/{}", job["id"].as_str().unwrap()))
            .await;
        let steps = detail["steps"].as_array().unwrap();
        assert_eq!(
            steps.len(),
            2,
            "the step after the failing one must not run: {detail:#}"
        );
        assert_eq!(steps[1]["exit_code"], 3);
        let log = farm
            .get_bytes(&format!("/jobs/{}/log", job["id"].as_str().unwrap()))
            .await;
        assert_eq!(String::from_utf8(log).unwrap(), "before\n");
    });
}

#[test]
fn a_pipeline_file_with_a_yaml_error_gives_an_error_pipeline_naming_the_line() {
    run(Duration::from_secs(120), async {
        let (farm, repo) = farm_with_repo("badyaml");
        repo.push_pipeline("jobs:\n  build:\n    steps: [make\n  test: {\n");
        let p = farm.finished_pipeline("badyaml", 1).await;
        assert_eq!(p["status"], "error");
        let message = p["message"].as_str().unwrap();
        assert!(
            message.contains(".gantry.yml line "),
            "the error should name the line: {message}"
        );
        assert!(
            p.get("jobs")
                .is_none_or(|j| j.as_array().unwrap().is_empty())
        );
    });
}

/// The server's resident memory, from `/proc`.
fn rss_bytes(pid: u32) -> u64 {
    support::memory_of(pid, "VmRSS")
}

#[test]
fn a_file_that_expands_to_thousands_of_jobs_is_refused_quickly_naming_the_cap() {
    run(Duration::from_secs(180), async {
        let (farm, repo) = farm_with_repo("huge");
        // The review's file: 3,000 jobs in a `needs` chain, each to get a copy of 40 KB of env (before: 51 s
        // to prepare, the server 38 → 236 MB, ~400 MB of database).
        let env: String = (0..400)
            .map(|i| format!("  V{i}: \"{}\"\n", "x".repeat(90)))
            .collect();
        let mut file = format!("env:\n{env}jobs:\n");
        for i in 0..3_000 {
            let needs = if i == 0 {
                String::new()
            } else {
                format!(", needs: [j{}]", i - 1)
            };
            file.push_str(&format!("  j{i}: {{ steps: [true]{needs} }}\n"));
        }
        let before = rss_bytes(farm.pid());
        let pushed = Instant::now();
        repo.push_pipeline(&file);
        let p = farm.finished_pipeline("huge", 1).await;
        let took = pushed.elapsed();
        let grew = rss_bytes(farm.pid()).saturating_sub(before);
        eprintln!(
            "refused in {took:?}, the server grew by {} KiB",
            grew / 1024
        );
        assert_eq!(p["status"], "error", "{p:#}");
        let message = p["message"].as_str().unwrap();
        assert!(message.contains("max_expanded_bytes"), "{message}");
        assert!(took < Duration::from_secs(30), "took {took:?}");
        assert!(grew < 150 << 20, "the server grew by {} MiB", grew >> 20);
    });
}

#[test]
fn a_pipeline_file_of_256_mib_is_refused_without_being_read() {
    run(Duration::from_secs(180), async {
        let (farm, repo) = farm_with_repo("bigfile");
        // Packs into ~256 KiB; reading the blob would inflate all of it in the server.
        let file = format!(
            "jobs:\n  a:\n    steps: [true]\n#{}\n",
            "#".repeat(256 << 20)
        );
        let before = rss_bytes(farm.pid());
        repo.push_pipeline(&file);
        drop(file);
        let p = farm.finished_pipeline("bigfile", 1).await;
        // The peak: a blob inflated and freed leaves the RSS where it was. The mirror's fetch (libgit2's pack
        // indexer) still holds the blob whole once (+262 MiB here); reading it must not hold it again (before:
        // +518 MiB).
        let grew = support::memory_of(farm.pid(), "VmHWM").saturating_sub(before);
        eprintln!("the server grew by {} MiB", grew >> 20);
        assert!(grew < 384 << 20, "the server grew by {} MiB", grew >> 20);
        assert_eq!(p["status"], "error", "{p:#}");
        let message = p["message"].as_str().unwrap();
        assert!(message.contains("more than the 1048576"), "{message}");
    });
}

/// Reads a job's SSE stream to its `end` event; returns the bytes and when the first and last bytes came.
async fn read_stream(farm: &Farm, job: &str) -> (Vec<u8>, Instant, Instant) {
    let response = reqwest::get(format!("{}/api/v1/jobs/{job}/log/stream", farm.url))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.bytes_stream();
    let (mut reader, mut log) = (gantry_model::wire::SseReader::default(), Vec::new());
    let mut first = None;
    let mut expected_offset = 0u64;
    while let Some(chunk) = stream.next().await {
        for event in reader.push(&chunk.unwrap()) {
            match event.kind.as_str() {
                "message" if !event.data.is_empty() => {
                    let e: Value = serde_json::from_str(&event.data).unwrap();
                    assert_eq!(
                        e["offset"].as_u64().unwrap(),
                        expected_offset,
                        "events must be contiguous"
                    );
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(e["data"].as_str().unwrap())
                        .unwrap();
                    expected_offset += bytes.len() as u64;
                    let id: u64 = event.id.expect("an id").parse().unwrap();
                    assert_eq!(id, expected_offset, "an event's id is the offset after it");
                    log.extend_from_slice(&bytes);
                    first.get_or_insert_with(Instant::now);
                }
                "end" => {
                    return (
                        log,
                        first.expect("no log bytes before the end"),
                        Instant::now(),
                    );
                }
                _ => {}
            }
        }
    }
    panic!("the stream closed without an end event");
}

#[test]
fn the_log_streams_live_while_the_job_runs_and_matches_the_output_byte_for_byte() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("streaming");
        repo.push_pipeline("jobs:\n  chatty:\n    steps:\n      - \"for i in $(seq 1 30); do echo line $i; sleep 0.1; done\"\n      - printf 'no newline \\342\\234\\223 at the end'\n");
        let job = support::eventually("the job to be created", Duration::from_secs(60), || async {
            let p = farm.get("/repos/streaming/pipelines/1").await;
            p["jobs"][0]["id"].as_str().map(str::to_owned)
        })
        .await;
        let (log, first, end) = read_stream(&farm, &job).await;
        let ahead = end - first;
        // The job prints for 3 s; the first line must arrive long before the end (wide margin for noisy CI).
        assert!(
            ahead >= Duration::from_millis(1500),
            "the first bytes arrived only {ahead:?} before the end"
        );
        let mut expected: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        expected.push_str("no newline ✓ at the end");
        assert_eq!(String::from_utf8(log.clone()).unwrap(), expected);
        assert_eq!(
            farm.get_bytes(&format!("/jobs/{job}/log")).await,
            log,
            "the stored log differs from the stream"
        );
        // A stream opened after the end replays the same bytes.
        let (replayed, ..) = read_stream(&farm, &job).await;
        assert_eq!(replayed, log);
        // The dashboard's job page shows the steps with the output, escaped.
        let page = reqwest::get(format!("{}/jobs/{job}", farm.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("line 30"), "{page}");
        assert!(
            page.contains("printf &#x27;no newline"),
            "commands must be escaped: {page}"
        );
    });
}

#[test]
fn the_farm_runs_the_same_way_on_postgresql() {
    run(Duration::from_secs(300), async {
        let database = support::postgres::fresh_database().await;
        let farm = Farm::up_with(&["--database", &database]);
        let repo = farm.hooked_repo("onpg");
        repo.push_pipeline("jobs:\n  a:\n    steps: [echo from-postgres]\n  b:\n    needs: [a]\n    steps: [exit 4]\n  c:\n    needs: [b]\n    steps: [echo never]\n");
        let p = farm.finished_pipeline("onpg", 1).await;
        assert_eq!(p["status"], "failed", "{p:#}");
        let status: Vec<&str> = p["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap())
            .collect();
        assert_eq!(status, ["success", "failed", "skipped"]);
        let log = farm
            .get_bytes(&format!(
                "/jobs/{}/log",
                p["jobs"][0]["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(log, b"from-postgres\n");
    });
}

#[test]
fn ctrl_c_stops_the_server_and_its_local_worker() {
    let farm = Farm::up_with(&["--capacity", "2"]);
    let pid = farm.pid();
    let worker =
        support::eventually_blocking("the local worker to start", Duration::from_secs(30), || {
            support::first_child(pid).map(|child| child as i32)
        });
    let workers =
        support::eventually_blocking("the worker to register", Duration::from_secs(30), || {
            let out = std::process::Command::new("curl")
                .args(["-sf", &format!("{}/api/v1/workers", farm.url)])
                .output()
                .unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            (!v["workers"].as_array()?.is_empty()).then_some(v)
        });
    assert_eq!(
        workers["workers"][0]["capacity"], 2,
        "--capacity reaches the local worker"
    );
    let status = farm.interrupt();
    assert!(
        status.success(),
        "gantry up should exit cleanly on Ctrl-C, got {status}"
    );
    let worker_alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker), None).is_ok();
    assert!(!worker_alive, "the local worker outlived gantry up");
}

#[test]
fn the_hook_also_works_with_openssl_and_curl_and_every_push_of_an_update_gets_a_pipeline() {
    run(Duration::from_secs(300), async {
        let (farm, repo) = farm_with_repo("fallback");
        // Without the gantry binary the hook signs with openssl and sends with curl.
        let hook = repo.bare.join("hooks/post-receive");
        let script = std::fs::read_to_string(&hook).unwrap();
        let script: String = script
            .lines()
            .map(|l| {
                if l.starts_with("GANTRY_BIN=") {
                    "GANTRY_BIN='/nonexistent/gantry'".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&hook, script).unwrap();
        let (out, first) = repo.push_pipeline("jobs:\n  a:\n    steps: [echo one]\n");
        assert!(out.contains("sent to"), "the fallback did not send: {out}");
        let (_, second) = repo.push_pipeline("jobs:\n  a:\n    steps: [echo two]\n");
        // Back to the first commit and forward again: the same ref update as before, pushed anew.
        support::git::git(
            &repo.work,
            &["push", "-f", "origin", &format!("{first}:refs/heads/main")],
        );
        support::git::git(
            &repo.work,
            &["push", "-f", "origin", &format!("{second}:refs/heads/main")],
        );
        let p4 = farm.finished_pipeline("fallback", 4).await;
        assert_eq!(p4["commit"], second.as_str());
        assert_eq!(p4["status"], "success", "{p4:#}");
        assert_eq!(
            farm.finished_pipeline("fallback", 3).await["commit"],
            first.as_str()
        );
    });
}

#[test]
fn parallel_shards_run_after_their_need_and_before_what_needs_them() {
    run(Duration::from_secs(300), async {
        let farm = Farm::up_with(&["--capacity", "2"]);
        let repo = farm.hooked_repo("shards");
        repo.push_pipeline(
            "jobs:\n  build:\n    steps: [echo built]\n  test:\n    needs: [build]\n    parallel: 2\n    steps: [\"echo shard $GANTRY_SHARD_INDEX of $GANTRY_SHARD_TOTAL\"]\n  report:\n    needs: [test]\n    steps: [echo reported]\n",
        );
        let jobs = farm.finished_jobs("shards", 1).await;
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["build", "test:1", "test:2", "report"]);
        for job in &jobs {
            assert_eq!(job.json["status"], "success", "{}: {}", job.name, job.log);
        }
        assert_eq!(support::farm::job(&jobs, "test:1").log, "shard 1 of 2\n");
        assert_eq!(support::farm::job(&jobs, "test:2").log, "shard 2 of 2\n");
        let time = |name: &str, field: &str| {
            let text = support::farm::job(&jobs, name).json[field]
                .as_str()
                .unwrap()
                .to_owned();
            chrono::DateTime::parse_from_rfc3339(&text).unwrap()
        };
        for shard in ["test:1", "test:2"] {
            assert!(time(shard, "started_at") >= time("build", "finished_at"));
            assert!(time("report", "started_at") >= time(shard, "finished_at"));
        }
    });
}
