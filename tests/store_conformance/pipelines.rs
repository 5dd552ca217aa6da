//! Pipelines from deliveries: numbered once, prepared once, filtered by `when:`, pull requests kept; the deliveries kept.

use super::*;

pub(super) async fn a_delivery_creates_one_numbered_pipeline_and_a_redelivery_nothing(db: Db) {
    let r = repo(&db, "numbered").await;
    let other = repo(&db, "other").await;
    let first = db.create_pipeline(&delivery(r, "d1")).await.unwrap();
    let second = db.create_pipeline(&delivery(r, "d2")).await.unwrap();
    let elsewhere = db.create_pipeline(&delivery(other, "d1")).await.unwrap();
    assert_eq!(
        (first.number, second.number, elsewhere.number),
        (1, 2, 1),
        "pipelines are numbered per repository"
    );
    let again = db.create_pipeline(&delivery(r, "d1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!((again.id, again.number), (first.id, 1));
    let listed = db.list_pipelines("numbered", None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.number).collect::<Vec<_>>(),
        [2, 1],
        "newest first"
    );
    assert_eq!(
        db.list_pipelines("numbered", Some(2), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let p = db.get_pipeline("numbered", 1).await.unwrap().unwrap();
    assert_eq!(
        (p.status, p.prepared, p.commit.len()),
        (PipelineStatus::Queued, false, 40)
    );
    assert_eq!(db.unprepared_pipelines().await.unwrap().len(), 3);
    db.record_ignored_delivery(&delivery(r, "ping-1").delivery, "ping")
        .await
        .unwrap();
    assert_eq!(
        db.list_pipelines("numbered", None, 10).await.unwrap().len(),
        2
    );
    assert!(db.recent_pipelines(10).await.unwrap().len() >= 3);
}

pub(super) async fn preparing_stores_jobs_once_and_failing_records_the_reason(db: Db) {
    let r = repo(&db, "prep").await;
    let (id, jobs) = pipeline(
        &db,
        r,
        "p1",
        "jobs:\n  a:\n    steps: [x]\n  b:\n    needs: [a]\n    steps: [y]\n",
    )
    .await;
    let again = new_jobs("jobs:\n  z:\n    steps: [x]\n");
    db.add_jobs(id, &again).await.unwrap();
    let stored = db.pipeline_jobs(id).await.unwrap();
    assert_eq!(
        stored.iter().map(|j| j.id).collect::<Vec<_>>(),
        jobs,
        "a second preparation must add nothing"
    );
    assert_eq!(stored[1].spec.needs[0].as_str(), "a");
    assert!(db.unprepared_pipelines().await.unwrap().is_empty());
    let bad = db.create_pipeline(&delivery(r, "p2")).await.unwrap();
    db.fail_pipeline(bad.id, ".gantry.yml line 3: bad")
        .await
        .unwrap();
    let p = db.get_pipeline_by_id(bad.id).await.unwrap().unwrap();
    assert_eq!(p.status, PipelineStatus::Error);
    assert_eq!(p.error.as_deref(), Some(".gantry.yml line 3: bad"));
    assert!(p.finished_at.is_some());
}

pub(super) async fn jobs_filtered_out_by_when_are_skipped_and_a_filtered_pipeline_is_dropped(
    db: Db,
) {
    let r = repo(&db, "filters").await;
    let created = db.create_pipeline(&delivery(r, "when-1")).await.unwrap();
    let specs = Pipeline::parse(
        "jobs:\n  build:\n    steps: [x]\n  deploy:\n    steps: [y]\n  notify:\n    needs: [deploy]\n    steps: [z]\n",
    )
    .unwrap()
    .jobs;
    let jobs: Vec<NewJob> = specs
        .into_iter()
        .map(|spec| NewJob {
            id: Uuid::now_v7(),
            skipped: (spec.name.as_str() == "deploy")
                .then(|| "not run: its when filters it out".to_owned()),
            spec,
        })
        .collect();
    db.add_jobs(created.id, &jobs).await.unwrap();
    let stored = db.pipeline_jobs(created.id).await.unwrap();
    let statuses: Vec<_> = stored.iter().map(|j| (j.name.as_str(), j.status)).collect();
    assert_eq!(
        statuses,
        [
            ("build", JobStatus::Queued),
            ("deploy", JobStatus::Skipped),
            ("notify", JobStatus::Skipped)
        ]
    );
    assert_eq!(
        stored[1].message.as_deref(),
        Some("not run: its when filters it out")
    );
    let w = worker(&db, "filtered").await;
    let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
    assert_eq!(claimed.job.name, "build");
    assert!(
        db.claim_job(&claim(w)).await.unwrap().is_none(),
        "skipped jobs are never leased"
    );
    let done = db
        .complete_job(claimed.job.id, claimed.job.lease_id.unwrap(), &report(0))
        .await
        .unwrap();
    assert_eq!(done.pipeline_status, PipelineStatus::Success);

    // A pipeline whose file filters it out is removed; its delivery stays, so a redelivery creates nothing.
    let dropped = db.create_pipeline(&delivery(r, "when-2")).await.unwrap();
    db.drop_pipeline(dropped.id, "the branch is feature")
        .await
        .unwrap();
    assert!(db.get_pipeline_by_id(dropped.id).await.unwrap().is_none());
    assert!(matches!(
        db.create_pipeline(&delivery(r, "when-2")).await,
        Err(StoreError::Conflict(_))
    ));
    // Cancelled before its file was read: neither dropping nor failing it undoes the cancel.
    let cancelled = db.create_pipeline(&delivery(r, "when-3")).await.unwrap();
    db.cancel_pipeline(cancelled.id).await.unwrap();
    db.drop_pipeline(cancelled.id, "the branch is feature")
        .await
        .unwrap();
    db.fail_pipeline(cancelled.id, "cannot fetch")
        .await
        .unwrap();
    let kept = db.get_pipeline_by_id(cancelled.id).await.unwrap().unwrap();
    assert_eq!((kept.status, kept.error), (PipelineStatus::Cancelled, None));
}

pub(super) async fn a_pull_request_pipeline_keeps_its_request_through_the_claim(db: Db) {
    let w = worker(&db, "pr-worker").await;
    let r = repo(&db, "pr").await;
    let pr = PullRequest {
        number: 42,
        source_branch: "feature/x".into(),
        target_branch: "main".into(),
        from_fork: true,
    };
    let mut new = delivery(r, "pr-1");
    new.git_ref = "refs/pull/42/head".into();
    new.event = "pull_request".into();
    new.pull_request = Some(pr.clone());
    let created = db.create_pipeline(&new).await.unwrap();
    let jobs = vec![NewJob {
        id: Uuid::now_v7(),
        spec: Pipeline::parse("jobs:\n  a:\n    steps: [x]\n")
            .unwrap()
            .jobs
            .remove(0),
        skipped: None,
    }];
    db.add_jobs(created.id, &jobs).await.unwrap();
    let stored = db
        .get_pipeline("pr", created.number)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.pull_request.as_ref(), Some(&pr));
    assert_eq!(stored.git_ref, "refs/pull/42/head");
    let claimed = db.claim_job(&claim(w)).await.unwrap().expect("ready");
    assert_eq!(claimed.pull_request, Some(pr));
    assert_eq!(claimed.clone_credential, None);
    // A push pipeline has none.
    let (push, _) = pipeline(&db, r, "pr-2", "jobs:\n  a:\n    steps: [x]\n").await;
    let push = db.get_pipeline_by_id(push).await.unwrap().unwrap();
    assert_eq!(push.pull_request, None);
}

pub(super) async fn deliveries_are_kept_newest_first_with_their_outcome_and_pruned(db: Db) {
    let r = repo(&db, "hooks").await;
    let created = db.create_pipeline(&delivery(r, "d-1")).await.unwrap();
    let mut refused = delivery(r, "d-2").delivery;
    refused.body = b"{\"tampered\": true}".to_vec();
    db.record_refused_delivery(&refused, "the delivery's signature does not match")
        .await
        .unwrap();
    // The forge redelivers d-2 once the secret is fixed: a refusal must not make it a duplicate.
    let again = db.create_pipeline(&delivery(r, "d-2")).await.unwrap();
    assert!(!again.duplicate);
    db.record_ignored_delivery(&delivery(r, "d-3").delivery, "ping: the webhook is set up")
        .await
        .unwrap();
    let listed = db.recent_deliveries(r, 10).await.unwrap();
    let seen: Vec<_> = listed
        .iter()
        .map(|d| (d.outcome.as_str(), d.pipeline, d.reason.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            ("ignored", None, true),
            ("created", Some(again.number), false),
            ("refused", None, true),
            ("created", Some(created.number), false),
        ]
    );
    assert!(
        listed.iter().all(|d| d.body.is_none()),
        "lists carry no bodies"
    );
    assert!(
        listed[2].delivery_id.ends_with("/d-2"),
        "{}",
        listed[2].delivery_id
    );
    let one = db.get_delivery(r, listed[2].id).await.unwrap().unwrap();
    assert_eq!(one.body.as_deref(), Some(&b"{\"tampered\": true}"[..]));
    let other = repo(&db, "other-hooks").await;
    assert!(
        db.get_delivery(other, listed[2].id)
            .await
            .unwrap()
            .is_none(),
        "per repository"
    );

    // Refused deliveries are kept apart, each kind its newest `keep`: unsigned requests, which anyone can
    // send, must not push the real deliveries out.
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 1);
    let kept: Vec<_> = db
        .recent_deliveries(r, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(kept, [listed[0].id, listed[1].id, listed[2].id]);
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 0);
    for i in 0..5 {
        db.record_refused_delivery(&delivery(r, &format!("flood-{i}")).delivery, "unsigned")
            .await
            .unwrap();
    }
    assert_eq!(db.prune_deliveries(r, 2).await.unwrap(), 4);
    let after: Vec<_> = db.recent_deliveries(r, 10).await.unwrap();
    let outcomes: Vec<&str> = after.iter().map(|d| d.outcome.as_str()).collect();
    assert_eq!(outcomes, ["refused", "refused", "ignored", "created"]);
    assert!(
        after[0].delivery_id.ends_with("/flood-4"),
        "{}",
        after[0].delivery_id
    );
    // A pruned delivery's pipeline still refuses a redelivery of its id.
    let redelivered = db.create_pipeline(&delivery(r, "d-1")).await;
    assert!(
        matches!(redelivered, Err(StoreError::Conflict(_)))
            || redelivered.is_ok_and(|c| c.duplicate),
        "a redelivery of a pruned delivery must not make a second pipeline"
    );
}
