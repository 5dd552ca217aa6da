//! Running again: expired leases, a job's own `retry:`, attempts lost to Gantry, a pipeline retried by hand.

use super::*;

pub(super) async fn an_expired_lease_requeues_the_job_as_a_new_attempt_until_the_retries_run_out(
    db: Db,
) {
    let w = worker(&db, "mortal").await;
    let r = repo(&db, "expiry").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "expiry-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n",
    )
    .await;
    let (a, b) = (ids[0], ids[1]);
    let now = || Utc::now().timestamp_millis();
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lost_lease = first.job.lease_id.unwrap();
    db.append_log(a, lost_lease, 0, b"attempt one\n", 1000)
        .await
        .unwrap();
    assert_eq!(
        db.expire_leases(now(), 1).await.unwrap(),
        vec![],
        "a lease within its deadline stays"
    );
    let expired = db.expire_leases(now() + 20_000, 1).await.unwrap();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        (expired[0].job, expired[0].attempt, &expired[0].outcome),
        (a, 1, &store::ExpiredOutcome::Requeued)
    );
    let job = db.get_job(a).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert!(
        job.message
            .as_deref()
            .unwrap_or("")
            .contains("stopped answering"),
        "{job:?}"
    );
    // The lost worker's late calls change nothing.
    assert!(matches!(
        db.heartbeat(a, lost_lease, now() + 10_000).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.append_log(a, lost_lease, 12, b"late\n", 1000).await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.complete_job(a, lost_lease, &report(0)).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.get_job(a).await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!((second.job.id, second.job.attempt), (a, 2));
    let lease = second.job.lease_id.unwrap();
    db.append_log(a, lease, 0, b"attempt two\n", 1000)
        .await
        .unwrap();
    assert_eq!(
        db.read_log(a, 2, 0, usize::MAX).await.unwrap(),
        b"attempt two\n"
    );
    assert_eq!(
        db.read_log(a, 1, 0, usize::MAX).await.unwrap(),
        b"attempt one\n",
        "each attempt keeps its own log"
    );
    // The one automatic retry is used up: the next loss ends the job, and what needs it is skipped.
    let expired = db.expire_leases(now() + 20_000, 1).await.unwrap();
    let store::ExpiredOutcome::Ended(done) = &expired[0].outcome else {
        panic!("the job must end once its retries are used up: {expired:?}");
    };
    assert_eq!(done.status, JobStatus::Error);
    assert_eq!(done.pipeline_status, PipelineStatus::Error);
    assert_eq!(done.skipped, vec![b]);
    let job = db.get_job(a).await.unwrap().unwrap();
    assert_eq!(
        (job.status, job.failure_kind, job.attempt),
        (JobStatus::Error, Some(FailureKind::WorkerLost), 2)
    );
    assert!(job.finished_at.is_some());
    let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Error);
}

pub(super) async fn a_failed_job_runs_again_as_often_as_its_retry_says(db: Db) {
    let w = worker(&db, "retrier").await;
    let r = repo(&db, "retries").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "retry-1",
        "jobs:\n  flaky:\n    retry: 2\n    steps: [x]\n  after:\n    needs: [flaky]\n    steps: [y]\n",
    )
    .await;
    for attempt in 1..=2 {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        assert_eq!((claimed.job.id, claimed.job.attempt), (ids[0], attempt));
        let done = db
            .complete_job(ids[0], claimed.job.lease_id.unwrap(), &report(3))
            .await
            .unwrap();
        assert_eq!(
            (done.status, done.pipeline_status),
            (JobStatus::Queued, PipelineStatus::Running),
            "attempt {attempt} failed and is retried"
        );
        let job = db.get_job(ids[0]).await.unwrap().unwrap();
        assert!(
            job.message
                .unwrap_or_default()
                .contains(&format!("retry {attempt} of 2")),
            "the message says which retry"
        );
    }
    let last = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(last.job.attempt, 3);
    let done = db
        .complete_job(ids[0], last.job.lease_id.unwrap(), &report(3))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Failed, "retries are used up");
    assert_eq!(done.skipped, vec![ids[1]]);
    assert_eq!(
        db.get_pipeline_by_id(pipeline_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        PipelineStatus::Failed
    );
    assert_eq!(
        db.job_steps(ids[0], 1).await.unwrap().len(),
        1,
        "each attempt keeps its steps"
    );
}

pub(super) async fn an_attempt_lost_to_gantry_itself_runs_again_up_to_the_automatic_retries(
    db: Db,
) {
    let (job, lease) = one_running_job(&db, "infra-lost").await;
    let mut lost = report(0);
    lost.exit_code = None;
    lost.failure_kind = Some(FailureKind::WorkerLost);
    lost.message = Some("the worker stopped while running this job".into());
    let again = db
        .requeue_infra(job, lease, &lost, 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status, JobStatus::Queued);
    let queued = db.get_job(job).await.unwrap().unwrap();
    assert_eq!(queued.status, JobStatus::Queued);
    let message = queued.message.unwrap();
    assert!(
        message.contains("automatic retry 1 of 1") && message.contains("stopped"),
        "{message}"
    );
    assert!(
        db.requeue_infra(job, lease, &lost, 1)
            .await
            .unwrap()
            .is_none(),
        "the old lease requeues nothing"
    );
    let w = worker(&db, "infra-lost-2").await;
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(second.job.attempt, 2);
    let lease2 = second.job.lease_id.unwrap();
    assert!(
        db.requeue_infra(job, lease2, &lost, 1)
            .await
            .unwrap()
            .is_none(),
        "the automatic retries are used up"
    );
    let done = db.complete_job(job, lease2, &lost).await.unwrap();
    assert_eq!(done.status, JobStatus::Error);
}

pub(super) async fn a_finished_pipeline_retried_runs_what_did_not_succeed_again(db: Db) {
    let w = worker(&db, "retried-by-hand").await;
    let r = repo(&db, "manual-retry").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "manual-1",
        "jobs:\n  lint:\n    steps: [x]\n  test:\n    retry: 1\n    steps: [y]\n  ship:\n    needs: [test]\n    steps: [z]\n",
    )
    .await;
    let finish = async |expect: Uuid, code: i32| {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        assert_eq!(claimed.job.id, expect);
        db.complete_job(expect, claimed.job.lease_id.unwrap(), &report(code))
            .await
            .unwrap()
    };
    finish(ids[0], 0).await;
    assert_eq!(
        finish(ids[1], 1).await.status,
        JobStatus::Queued,
        "its own retry"
    );
    let done = finish(ids[1], 1).await;
    assert_eq!(
        (done.status, done.pipeline_status),
        (JobStatus::Failed, PipelineStatus::Failed)
    );
    assert_eq!(done.skipped, vec![ids[2]]);

    let retried = db.retry_pipeline(pipeline_id).await.unwrap();
    assert_eq!(
        retried.requeued,
        vec![ids[1], ids[2]],
        "what succeeded stays"
    );
    assert!(!retried.reprepare);
    let p = db.get_pipeline_by_id(pipeline_id).await.unwrap().unwrap();
    assert_eq!((p.status, p.finished_at), (PipelineStatus::Queued, None));
    assert!(
        matches!(
            db.retry_pipeline(pipeline_id).await,
            Err(StoreError::Busy(_))
        ),
        "an unfinished pipeline cannot be retried"
    );
    // Attempt 3 fails and its own `retry: 1` counts afresh: attempt 4 runs, then the dependent.
    assert_eq!(finish(ids[1], 1).await.status, JobStatus::Queued);
    let job = db.get_job(ids[1]).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3);
    assert_eq!(finish(ids[1], 0).await.status, JobStatus::Success);
    let done = finish(ids[2], 0).await;
    assert_eq!(done.pipeline_status, PipelineStatus::Success);
    assert_eq!(db.get_job(ids[2]).await.unwrap().unwrap().attempt, 1);

    // A pipeline whose file could not be read has no jobs: it is to be prepared again.
    let broken = db.create_pipeline(&delivery(r, "manual-2")).await.unwrap();
    db.fail_pipeline(broken.id, "cannot fetch").await.unwrap();
    let retried = db.retry_pipeline(broken.id).await.unwrap();
    assert!(retried.reprepare && retried.requeued.is_empty());
    let p = db.get_pipeline_by_id(broken.id).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.error, p.prepared),
        (PipelineStatus::Queued, None, false)
    );
}
