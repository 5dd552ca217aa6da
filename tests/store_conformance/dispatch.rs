//! Dispatch: claims (ready jobs only, once each, by labels and priority, under a repository's limit) and completions that settle their pipeline.

use super::*;

pub(super) async fn only_ready_jobs_are_claimed_and_a_failure_skips_what_needs_it(db: Db) {
    let w = worker(&db, "claimer").await;
    let r = repo(&db, "dag").await;
    let (pid, ids) = pipeline(&db, r, "dag1", "jobs:\n  build:\n    steps: [x]\n  test:\n    needs: [build]\n    steps: [y]\n  report:\n    needs: [test]\n    steps: [z]\n  lint:\n    steps: [l]\n").await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        [first.job.id, second.job.id],
        [ids[0], ids[3]],
        "only jobs without unmet needs, oldest first"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "test must wait for build"
    );
    assert_eq!(first.job.attempt, 1);
    assert_eq!(first.job.status, JobStatus::Running);
    assert_eq!(first.clone_url, "/srv/dag.git");
    assert_eq!(
        db.get_pipeline_by_id(pid).await.unwrap().unwrap().status,
        PipelineStatus::Running
    );

    let lease = first.job.lease_id.unwrap();
    let done = db.complete_job(ids[0], lease, &report(0)).await.unwrap();
    assert_eq!(
        (done.status, done.pipeline_status),
        (JobStatus::Success, PipelineStatus::Running)
    );
    let test = db
        .claim_job(&claim(w))
        .await
        .unwrap()
        .expect("test is ready once build succeeded");
    assert_eq!(test.job.id, ids[1]);
    let mut failed = report(3);
    failed.message = Some("step 1 exited with 3".into());
    let done = db
        .complete_job(ids[1], test.job.lease_id.unwrap(), &failed)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.skipped, [ids[2]], "the job that needed it is skipped");
    let report_job = db.get_job(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        report_job.status,
        JobStatus::Skipped,
        "a job whose need failed is skipped, not run"
    );
    let done = db
        .complete_job(ids[3], second.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Failed);
    let done = db.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (done.exit_code, done.failure_kind),
        (Some(3), Some(FailureKind::Exit))
    );
    assert_eq!(done.message.as_deref(), Some("step 1 exited with 3"));
    assert_eq!(done.peak_memory_bytes, Some(1 << 20));
    assert_eq!(db.job_steps(ids[1], 1).await.unwrap()[0].exit_code, Some(3));
    assert!(
        db.get_pipeline_by_id(pid)
            .await
            .unwrap()
            .unwrap()
            .finished_at
            .is_some()
    );
}

pub(super) async fn two_claimers_racing_for_one_job_a_thousand_times_win_it_once_each_time(db: Db) {
    let w = worker(&db, "racer").await;
    let r = repo(&db, "race").await;
    for round in 0..1000 {
        pipeline(
            &db,
            r,
            &format!("race-{round}"),
            "jobs:\n  only:\n    steps: [x]\n",
        )
        .await;
        let (ca, cb) = (claim(w), claim(w));
        let (a, b) = tokio::join!(db.claim_job(&ca), db.claim_job(&cb));
        let winners = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
        assert_eq!(winners, 1, "round {round}: exactly one claimer must win");
    }
}

pub(super) async fn jobs_go_only_to_workers_with_all_their_labels(db: Db) {
    let plain = worker(&db, "plain").await;
    let r = repo(&db, "labels").await;
    let (_, ids) = pipeline(
        &db,
        r,
        "labels-1",
        "jobs:\n  big:\n    runs-on: [linux, big]\n    steps: [x]\n  any:\n    steps: [y]\n",
    )
    .await;
    let first = db.claim_job(&claim(plain)).await.unwrap().unwrap();
    assert_eq!(
        first.job.id, ids[1],
        "the older job needs a label the worker lacks"
    );
    assert!(db.claim_job(&claim(plain)).await.unwrap().is_none());
    let w = NewWorker {
        name: "big-one".into(),
        pool: "default".into(),
        labels: vec!["gpu".into(), "big".into(), "linux".into()],
        capacity: 1,
        protocol_version: 1,
        managed: false,
    };
    let big = db.register_worker(&w, "token-of-big-one").await.unwrap();
    let second = db.claim_job(&claim(big)).await.unwrap().unwrap();
    assert_eq!(second.job.id, ids[0]);
    assert_eq!(second.job.spec.runs_on, ["linux", "big"]);
}

pub(super) async fn the_claim_takes_priority_first_and_keeps_a_repository_under_its_limit(db: Db) {
    let w = worker(&db, "prioritised").await;
    let limited = repo(&db, "limited").await;
    let free = repo(&db, "free").await;
    let limit = gantry_model::wire::RepoSettings {
        cancel_previous: None,
        max_running_jobs: Some(1),
        ..Default::default()
    };
    db.update_repo_settings("limited", &limit).await.unwrap();
    let (_, ids) = pipeline(
        &db,
        limited,
        "prio-1",
        "jobs:\n  low:\n    steps: [x]\n  high:\n    priority: 10\n    steps: [y]\n",
    )
    .await;
    let (_, other) = pipeline(&db, free, "prio-2", "jobs:\n  any:\n    steps: [z]\n").await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(first.job.id, ids[1], "the higher priority goes first");
    assert_eq!(db.running_jobs(limited).await.unwrap(), 1);
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        second.job.id, other[0],
        "the limited repository waits; another goes ahead"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "the limit holds"
    );
    db.complete_job(ids[1], first.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    let third = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(
        third.job.id, ids[0],
        "a slot of the repository is free again"
    );
}

pub(super) async fn the_claim_says_whether_the_repository_has_secrets_and_credentials(db: Db) {
    let w = worker(&db, "has-secrets-worker").await;
    let plain = repo(&db, "no-secrets").await;
    let with = repo(&db, "with-secrets").await;
    db.set_repo_secret(with, "TOKEN", b"sealed").await.unwrap();
    db.set_repo_credential(with, RepoCredential::Clone, Some(b"sealed-clone"))
        .await
        .unwrap();
    let shown = db.get_repo("with-secrets").await.unwrap().unwrap();
    assert!(shown.has_clone_token && !shown.has_status_token);
    let shown = db.get_repo("no-secrets").await.unwrap().unwrap();
    assert!(!shown.has_clone_token && !shown.has_status_token);
    let listed = db.list_repos().await.unwrap();
    assert!(listed.iter().any(|r| r.id == with && r.has_clone_token));
    pipeline(&db, plain, "plain-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!((claimed.repo_id, claimed.has_secrets), (plain, false));
    pipeline(&db, with, "with-1", "jobs:\n  a:\n    steps: [x]\n").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!((claimed.repo_id, claimed.has_secrets), (with, true));
}

/// On SQLite the claim and the completion write through a connection of their own (`sqlite/dispatch.rs`): what
/// they write must read back the same through the store's other reads.
pub(super) async fn what_a_claim_and_a_completion_write_reads_back_the_same_everywhere(db: Db) {
    let w = worker(&db, "round-trip-worker").await;
    let r = repo(&db, "round-trip").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "round-trip-1",
        "jobs:\n  build:\n    steps: [x]\n  test:\n    needs: [build]\n    steps: [y]\n",
    )
    .await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    let stored = db.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(claimed.job.status, JobStatus::Running);
    assert_eq!(claimed.job.started_at, stored.started_at);
    assert_eq!(claimed.job.queued_at, stored.queued_at);
    assert_eq!(
        (
            claimed.job.lease_id,
            claimed.job.attempt,
            &claimed.job.worker_name
        ),
        (stored.lease_id, stored.attempt, &stored.worker_name)
    );
    let shown = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!(shown.status, PipelineStatus::Running);
    assert_eq!(
        shown.started_at, stored.started_at,
        "the pipeline started with its job"
    );
    let mut done = report(0);
    done.message = Some("built".into());
    done.tests = vec![TestCase {
        suite: "s".into(),
        name: "t".into(),
        status: TestStatus::Passed,
        duration_ms: Some(7),
        message: None,
    }];
    let completed = db
        .complete_job(ids[0], claimed.job.lease_id.unwrap(), &done)
        .await
        .unwrap();
    assert_eq!(completed.status, JobStatus::Success);
    let stored = db.get_job(ids[0]).await.unwrap().unwrap();
    assert_eq!(stored.status, JobStatus::Success);
    assert_eq!(stored.message.as_deref(), Some("built"));
    assert_eq!(
        (stored.cpu_seconds, stored.peak_memory_bytes),
        (Some(0.5), Some(1 << 20))
    );
    assert!(stored.finished_at >= stored.started_at);
    // PostgreSQL keeps microseconds.
    let micros = |steps: &[StepReport]| -> Vec<_> {
        steps
            .iter()
            .map(|s| {
                (
                    s.index,
                    s.command.clone(),
                    s.started_at.timestamp_micros(),
                    s.finished_at.map(|t| t.timestamp_micros()),
                    s.exit_code,
                )
            })
            .collect()
    };
    assert_eq!(
        micros(&db.job_steps(ids[0], 1).await.unwrap()),
        micros(&done.steps)
    );
    let tests = db
        .pipeline_tests(pipeline_id)
        .await
        .unwrap()
        .expect("a report");
    assert_eq!((tests.total, tests.passed), (1, 1));
    let next = db
        .claim_job(&claim(w))
        .await
        .unwrap()
        .expect("test is ready now");
    assert_eq!(next.job.id, ids[1]);
}

pub(super) async fn two_jobs_ending_at_the_same_instant_settle_their_pipeline(db: Db) {
    let w = worker(&db, "settler").await;
    let r = repo(&db, "settle").await;
    for round in 0..50 {
        let (pipeline_id, _) = pipeline(
            &db,
            r,
            &format!("settle-{round}"),
            "jobs:\n  a:\n    steps: [x]\n  b:\n    steps: [y]\n",
        )
        .await;
        let first = db.claim_job(&claim(w)).await.unwrap().unwrap().job;
        let second = db.claim_job(&claim(w)).await.unwrap().unwrap().job;
        let done = report(0);
        let (one, two) = tokio::join!(
            db.complete_job(first.id, first.lease_id.unwrap(), &done),
            db.complete_job(second.id, second.lease_id.unwrap(), &done),
        );
        let statuses = [one.unwrap().pipeline_status, two.unwrap().pipeline_status];
        assert!(
            statuses.contains(&PipelineStatus::Success),
            "round {round}: {statuses:?}"
        );
        let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
        assert_eq!(p.status, PipelineStatus::Success, "round {round}");
    }
}

pub(super) async fn calls_with_a_stale_lease_change_nothing(db: Db) {
    let (job, lease) = one_running_job(&db, "stale").await;
    let ids = [job];
    let wrong = Uuid::now_v7();
    assert!(matches!(
        db.heartbeat(ids[0], wrong, 0).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.append_log(ids[0], wrong, 0, b"x", 100).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.complete_job(ids[0], wrong, &report(0)).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(
        !db.heartbeat(ids[0], lease, Utc::now().timestamp_millis() + 5000)
            .await
            .unwrap()
    );
    db.complete_job(ids[0], lease, &report(0)).await.unwrap();
    let repeat = db.complete_job(ids[0], lease, &report(1)).await.unwrap();
    assert_eq!(
        repeat.status,
        JobStatus::Success,
        "a repeated report (its answer was lost) is answered again and changes nothing"
    );
    assert!(matches!(
        db.record_step(ids[0], lease, &report(0).steps[0]).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.get_job(ids[0]).await.unwrap().unwrap().status,
        JobStatus::Success
    );
}
