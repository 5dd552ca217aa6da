//! Cancelling: a pipeline, one job, and the older pipelines a newer push supersedes.

use super::*;

pub(super) async fn cancelling_ends_waiting_jobs_and_asks_running_ones_to_stop(db: Db) {
    let w = worker(&db, "canceller").await;
    let r = repo(&db, "cancels").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "cancel-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    steps: [y]\n  c:\n    needs: [a]\n    steps: [z]\n",
    )
    .await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, ids[0]);
    let lease = claimed.job.lease_id.unwrap();
    let deadline = Utc::now().timestamp_millis() + 10_000;
    assert!(!db.heartbeat(ids[0], lease, deadline).await.unwrap());

    let mut done = db.cancel_pipeline(pipeline_id).await.unwrap();
    done.ended.sort_by_key(|(id, _)| *id); // UPDATE … RETURNING has no order; ids are UUIDv7
    assert_eq!(
        done.ended,
        vec![(ids[1], JobStatus::Cancelled), (ids[2], JobStatus::Skipped)]
    );
    assert_eq!(done.stopping, vec![ids[0]]);
    assert_eq!(done.pipeline_status, Some(PipelineStatus::Running));
    assert!(
        db.heartbeat(ids[0], lease, deadline).await.unwrap(),
        "the running job's heartbeat says it is cancelled"
    );
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "nothing of a cancelled pipeline is leased"
    );
    let mut stopped = report(137);
    stopped.failure_kind = Some(FailureKind::Cancelled);
    let completed = db.complete_job(ids[0], lease, &stopped).await.unwrap();
    assert_eq!(
        (completed.status, completed.pipeline_status),
        (JobStatus::Cancelled, PipelineStatus::Cancelled)
    );
    let again = db.cancel_pipeline(pipeline_id).await.unwrap();
    assert_eq!(
        again,
        Default::default(),
        "a finished pipeline is left alone"
    );

    // Cancelled before its file was read: it ends at once, and preparing it later adds nothing.
    let early = db.create_pipeline(&delivery(r, "cancel-2")).await.unwrap();
    let done = db.cancel_pipeline(early.id).await.unwrap();
    assert_eq!(done.pipeline_status, Some(PipelineStatus::Cancelled));
    let late = NewJob {
        id: Uuid::now_v7(),
        skipped: None,
        spec: Pipeline::parse("jobs:\n  a:\n    steps: [x]\n")
            .unwrap()
            .jobs
            .remove(0),
    };
    db.add_jobs(early.id, &[late]).await.unwrap();
    assert!(db.pipeline_jobs(early.id).await.unwrap().is_empty());
    let p = db.get_pipeline_by_id(early.id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Cancelled);
}

pub(super) async fn cancelling_one_job_leaves_the_others_of_its_pipeline_alone(db: Db) {
    let w = worker(&db, "one-job-cancel").await;
    let r = repo(&db, "one-job").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "one-1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n  c:\n    steps: [z]\n",
    )
    .await;
    let running = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(running.job.id, ids[0]);
    let waiting = db.cancel_job(pipeline_id, ids[1]).await.unwrap();
    assert_eq!(waiting.ended, vec![(ids[1], JobStatus::Skipped)]);
    assert!(waiting.stopping.is_empty());
    let stopping = db.cancel_job(pipeline_id, ids[0]).await.unwrap();
    assert_eq!(
        (stopping.ended.len(), stopping.stopping.as_slice()),
        (0, &[ids[0]][..])
    );
    assert!(
        db.heartbeat(ids[0], running.job.lease_id.unwrap(), 0)
            .await
            .unwrap(),
        "told to stop"
    );
    let other = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(other.job.id, ids[2], "the independent job still runs");
    let mut cancelled = report(137);
    cancelled.failure_kind = Some(FailureKind::Cancelled);
    db.complete_job(ids[0], running.job.lease_id.unwrap(), &cancelled)
        .await
        .unwrap();
    let done = db
        .complete_job(ids[2], other.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Cancelled);
}

pub(super) async fn a_newer_push_supersedes_the_unfinished_pipelines_of_its_branch(db: Db) {
    let r = repo(&db, "superseded").await;
    assert!(
        !r_fork_host_image(&db, "superseded").await,
        "forks use the host only when asked"
    );
    let stored = db.get_repo("superseded").await.unwrap().unwrap();
    assert!(
        !stored.private,
        "repositories are public unless made private"
    );
    let settings = gantry_model::wire::RepoSettings {
        cancel_previous: Some(true),
        fork_host_image: Some(true),
        max_running_jobs: Some(3),
        private: Some(true),
        ..Default::default()
    };
    let updated = db
        .update_repo_settings("superseded", &settings)
        .await
        .unwrap();
    assert_eq!(
        (
            updated.cancel_previous,
            updated.fork_host_image,
            updated.max_running_jobs,
            updated.private,
        ),
        (true, true, Some(3), true)
    );
    let lifted = gantry_model::wire::RepoSettings {
        cancel_previous: None,
        max_running_jobs: Some(0),
        ..Default::default()
    };
    let updated = db
        .update_repo_settings("superseded", &lifted)
        .await
        .unwrap();
    assert_eq!(
        (updated.cancel_previous, updated.max_running_jobs),
        (true, None)
    );
    assert!(matches!(
        db.update_repo_settings("nope", &lifted).await,
        Err(StoreError::NotFound(_))
    ));

    let yaml = "jobs:\n  a:\n    steps: [x]\n";
    let (first, _) = pipeline(&db, r, "sup-1", yaml).await;
    let mut other_branch = delivery(r, "sup-2");
    other_branch.git_ref = "refs/heads/feature".into();
    let other = db.create_pipeline(&other_branch).await.unwrap();
    let (newest, _) = pipeline(&db, r, "sup-3", yaml).await;
    let newer = db.get_pipeline_by_id(newest).await.unwrap().unwrap();
    let cancelled = db.supersede_pipelines(&newer).await.unwrap();
    assert_eq!(cancelled.iter().map(|c| c.0).collect::<Vec<_>>(), [first]);
    let old = db.get_pipeline_by_id(first).await.unwrap().unwrap();
    assert_eq!(old.status, PipelineStatus::Cancelled);
    assert!(old.error.unwrap().contains("superseded by #3"));
    let untouched = db.get_pipeline_by_id(other.id).await.unwrap().unwrap();
    assert_eq!(
        untouched.status,
        PipelineStatus::Queued,
        "another branch's pipeline stays"
    );
    assert_eq!(
        db.get_pipeline_by_id(newest).await.unwrap().unwrap().status,
        PipelineStatus::Queued
    );
}
