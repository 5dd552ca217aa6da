//! Two servers on one PostgreSQL share the queue (docs/api.md, "Worker protocol"): a worker long-polling server A gets a job whose
//! webhook went to server B at once, because B's `NOTIFY` wakes A's waiting long-poll; a cancel asked of B
//! reaches the heartbeat the worker holds open on A the same way.

mod support;

use std::time::{Duration, Instant};
use support::farm::Farm;
use support::local::processes_with;
use support::{eventually, run};

#[test]
fn a_webhook_to_one_server_starts_a_job_on_a_worker_waiting_on_the_other_at_once() {
    run(Duration::from_secs(240), async {
        let database = support::postgres::fresh_database().await;
        let admin = format!("gantry_admin_shared_{}", uuid::Uuid::now_v7().simple());
        // Leases of 30 s: heartbeats are held open 10 s, so only B's news can make the cancel below prompt.
        let flags = [
            "--database",
            &database,
            "--admin-token",
            &admin,
            "--lease-secs",
            "30",
        ];
        let a = Farm::serve_with(&flags);
        let b = Farm::serve_with(&flags);
        let worker = a.worker(&format!(
            "on-a-{}",
            &uuid::Uuid::now_v7().simple().to_string()[24..]
        ));
        eventually(
            "the worker to register with A",
            Duration::from_secs(60),
            || async { worker.output().contains("registered").then_some(()) },
        )
        .await;
        // Its first long-poll is waiting on A now; it would wait 30 s for a job A itself does not know of.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let repo = b.hooked_repo("shared");
        let marker = format!("two-servers-{}", uuid::Uuid::now_v7().simple());
        let pushed = Instant::now();
        repo.push_pipeline(&format!(
            "jobs:\n  long:\n    steps: [\"sleep 120 # {marker}\"]\n"
        ));
        eventually(
            "the job to start on the worker",
            Duration::from_secs(20),
            || async { (!processes_with(&marker).is_empty()).then_some(()) },
        )
        .await;
        let picked_up = pushed.elapsed();
        // The long-poll lasts 30 s: well under that, only B's news can have woken it (the target is 200 ms;
        // bench/pickup gives the figure).
        assert!(
            picked_up < Duration::from_secs(10),
            "the job started after {picked_up:?}"
        );

        let asked = Instant::now();
        let answer = b
            .post_raw(
                "/api/v1/repos/shared/pipelines/1/cancel",
                &[("Authorization", format!("Bearer {admin}"))],
                Vec::new(),
            )
            .await;
        assert_eq!(answer.status(), 200);
        eventually(
            "the cancelled step to go",
            Duration::from_secs(20),
            || async { processes_with(&marker).is_empty().then_some(()) },
        )
        .await;
        // A heartbeat is held open up to 1 s here (leases of 3 s): only B's news makes this prompt.
        let stopped = asked.elapsed();
        assert!(
            stopped < Duration::from_secs(10),
            "the cancel took {stopped:?}"
        );
        let p = a.finished_pipeline("shared", 1).await;
        assert_eq!(p["status"], "cancelled", "{p:#}");
    });
}
