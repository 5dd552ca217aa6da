//! Job services (docs/pipeline.md), through the real binary: a `postgres`-like busybox `nc` server from an image in a
//! real registry, waited for and reached on `localhost` and by name; readiness by command, checked inside the
//! service's own container; and services that die or never get ready fail the job clearly, without running a
//! step. Needs root (real containers) and the Debian packages docker-registry, skopeo, umoci, busybox-static.

mod support;

use std::time::{Duration, Instant};
use support::farm::{Farm, FinishedJob, job};
use support::registry::Registry;
use support::run;

fn field(log: &str, key: &str) -> String {
    log.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {log}"))
        .to_owned()
}

fn assert_status(jobs: &[FinishedJob], name: &str, status: &str, kind: Option<&str>) -> String {
    let job = job(jobs, name);
    assert_eq!(
        job.json["status"], status,
        "{name}: {:#}\n{}",
        job.json, job.log
    );
    if let Some(kind) = kind {
        assert_eq!(job.json["failure_kind"], kind, "{name}: {:#}", job.json);
    }
    job.log.clone()
}

/// The job failed as `service` with a message holding `expected`; returns its log.
fn assert_service_failed(jobs: &[FinishedJob], name: &str, expected: &str) -> String {
    let log = assert_status(jobs, name, "failed", Some("service"));
    let message = job(jobs, name).json["message"].as_str().unwrap_or_default();
    assert!(message.contains(expected), "{name}: {message:?}");
    log
}

#[test]
fn services_get_ready_before_the_steps_and_failures_say_which_and_why() {
    run(Duration::from_secs(300), async {
        let registry = Registry::with_busybox();
        let farm = Farm::up_with(&["--capacity", "4"]);
        let repo = farm.hooked_repo("services");
        let image = format!("{}/test/busybox:latest", registry.addr);
        let pipeline = format!(
            "image: {image}\njobs:\n  \
             it:\n    services:\n      db:\n        \
             command: [sh, -c, \"echo db booting; sleep 1; exec nc -ll -p 5432 -e echo hello-from-db\"]\n        \
             ready: {{ tcp: 5432 }}\n    steps:\n      \
             - echo local=$(nc localhost 5432 </dev/null)\n      \
             - echo byname=$(nc db 5432 </dev/null)\n      \
             - \"grep -q db /etc/hosts && echo hosts=yes\"\n  \
             by-command:\n    image: host\n    services:\n      marker:\n        \
             command: \"sleep 1; touch /tmp/ready; exec busybox nc -ll -p 7000 -e echo hi\"\n        \
             ready: {{ command: test -e /tmp/ready }}\n    steps:\n      \
             - echo got=$(busybox nc 127.0.0.1 7000 </dev/null)\n      \
             - \"test ! -e /tmp/ready && echo own-tmp=yes\"\n  \
             dies:\n    services:\n      bad:\n        \
             command: [sh, -c, \"echo boom-from-service; exit 3\"]\n        \
             ready: {{ tcp: 5432 }}\n    steps: [echo step-ran]\n  \
             never:\n    services:\n      slow:\n        command: [sleep, \"600\"]\n        \
             ready: {{ tcp: 6000 }}\n        ready_timeout: 2s\n    steps: [echo step-ran]\n"
        );
        let started = Instant::now();
        repo.push_pipeline(&pipeline);
        let jobs = farm.finished_jobs("services", 1).await;
        let elapsed = started.elapsed();

        let log = assert_status(&jobs, "it", "success", None);
        assert_eq!(field(&log, "local"), "hello-from-db", "{log}");
        assert_eq!(field(&log, "byname"), "hello-from-db", "{log}");
        assert_eq!(field(&log, "hosts"), "yes", "{log}");
        assert!(
            log.contains("service db is ready (tcp port 5432 open)"),
            "{log}"
        );
        assert!(
            !log.contains("db booting"),
            "a ready service's output stays out of the log: {log}"
        );

        let log = assert_status(&jobs, "by-command", "success", None);
        assert_eq!(field(&log, "got"), "hi", "{log}");
        assert_eq!(
            field(&log, "own-tmp"),
            "yes",
            "the check ran in the service's container: {log}"
        );

        let log = assert_service_failed(
            &jobs,
            "dies",
            "service bad exited with 3 before it was ready",
        );
        assert!(
            log.contains("boom-from-service"),
            "its output explains it: {log}"
        );
        assert!(
            !log.contains("step-ran"),
            "no step runs without its services: {log}"
        );

        let log = assert_service_failed(
            &jobs,
            "never",
            "service slow was not ready (tcp port 6000 open) within 2 s",
        );
        assert!(!log.contains("step-ran"), "{log}");
        assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    });
}
