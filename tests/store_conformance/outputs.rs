//! What a job leaves: its log, its artifacts and its test cases.

use super::*;

pub(super) async fn log_appends_are_idempotent_contiguous_and_capped(db: Db) {
    let (job, lease) = one_running_job(&db, "logs").await;
    let bytes: Vec<u8> = (0..=255u8).collect();
    let first = db
        .append_log(job, lease, 0, &bytes[..100], 1000)
        .await
        .unwrap();
    assert_eq!(
        (first.offset, first.length, first.data.len()),
        (0, 100, 100)
    );
    let repeat = db
        .append_log(job, lease, 0, &bytes[..100], 1000)
        .await
        .unwrap();
    assert!(
        repeat.data.is_empty(),
        "a retried upload must not duplicate bytes"
    );
    let overlap = db
        .append_log(job, lease, 50, &bytes[50..200], 1000)
        .await
        .unwrap();
    assert_eq!(
        (overlap.offset, overlap.data.len(), overlap.length),
        (100, 100, 200)
    );
    assert!(matches!(
        db.append_log(job, lease, 300, b"gap", 1000).await,
        Err(StoreError::LogGap {
            offset: 300,
            length: 200
        })
    ));
    db.append_log(job, lease, 200, &bytes[200..], 1000)
        .await
        .unwrap();
    assert_eq!(
        db.read_log(job, 1, 0, usize::MAX).await.unwrap(),
        bytes,
        "the log is the bytes, in order, nothing inserted"
    );
    assert_eq!(
        db.read_log(job, 1, 150, usize::MAX).await.unwrap(),
        &bytes[150..]
    );
    // A window of a log: only the bytes asked for, across the uploads' chunks.
    assert_eq!(db.read_log(job, 1, 90, 20).await.unwrap(), &bytes[90..110]);
    assert_eq!(db.read_log(job, 1, 250, 100).await.unwrap(), &bytes[250..]);
    assert!(db.read_log(job, 1, 256, 10).await.unwrap().is_empty());
    assert_eq!(db.log_length(job, 1).await.unwrap(), 256);
    assert_eq!(db.log_length(job, 2).await.unwrap(), 0);
    let exact = db
        .append_log(job, lease, 256, &[b'y'; 744], 1000)
        .await
        .unwrap();
    assert_eq!(exact.length, 1000, "a log may fill its cap exactly");
    let capped = db
        .append_log(job, lease, 256, &[b'x'; 1000], 1000)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&capped.data).into_owned();
    assert!(
        text.contains("reached its cap of 1000 bytes"),
        "the cap is marked in the log: {text}"
    );
    let after = db
        .append_log(job, lease, 1256, b"more", 1000)
        .await
        .unwrap();
    assert!(after.data.is_empty(), "bytes past the cap are dropped");
    assert_eq!(
        db.get_job(job).await.unwrap().unwrap().log_length,
        capped.length
    );
}

pub(super) async fn artifacts_are_indexed_per_attempt_under_the_lease(db: Db) {
    let w = worker(&db, "builder").await;
    let r = repo(&db, "artifacts").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "art-1",
        "jobs:\n  build:\n    steps: [x]\n    artifacts: [bin/app]\n  test:\n    needs: [build]\n    steps: [y]\n",
    )
    .await;
    let first = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lease = first.job.lease_id.unwrap();
    assert_eq!(db.artifact_quota(ids[0], lease).await.unwrap(), quota(1, 0));
    db.record_artifact(ids[0], lease, &artifact("bin/app", 100))
        .await
        .unwrap();
    db.record_artifact(ids[0], lease, &artifact("bin/app", 120))
        .await
        .expect("uploading a path again replaces it");
    db.record_artifact(ids[0], lease, &artifact("bin/lib.so", 30))
        .await
        .unwrap();
    assert_eq!(
        db.artifact_quota(ids[0], lease).await.unwrap(),
        quota(1, 150)
    );
    assert!(
        db.pipeline_artifacts(pipeline_id).await.unwrap().is_empty(),
        "a running job hands nothing on yet"
    );
    // The worker is lost: the next attempt starts with nothing, and the lost attempt's lease writes nothing.
    db.expire_leases(Utc::now().timestamp_millis() + 60_000, 2)
        .await
        .unwrap();
    let second = db.claim_job(&claim(w)).await.unwrap().unwrap();
    let lease2 = second.job.lease_id.unwrap();
    assert!(matches!(
        db.record_artifact(ids[0], lease, &artifact("late", 1))
            .await,
        Err(StoreError::StaleLease(_))
    ));
    assert!(matches!(
        db.artifact_quota(ids[0], lease).await,
        Err(StoreError::StaleLease(_))
    ));
    assert_eq!(
        db.artifact_quota(ids[0], lease2).await.unwrap(),
        quota(2, 0)
    );
    db.record_artifact(ids[0], lease2, &artifact("bin/app", 7))
        .await
        .unwrap();
    db.complete_job(ids[0], lease2, &report(0)).await.unwrap();
    let handed = db.pipeline_artifacts(pipeline_id).await.unwrap();
    let summary: Vec<_> = handed
        .iter()
        .map(|a| (a.job.as_str(), a.job_id, a.path.as_str(), a.size, a.mode))
        .collect();
    assert_eq!(summary, [("build", ids[0], "bin/app", 7, 0o755)]);
    assert_eq!(db.job_artifacts(ids[0], 1).await.unwrap().len(), 2);
    assert_eq!(db.job_artifacts(ids[0], 2).await.unwrap(), handed);
}

pub(super) async fn test_cases_of_every_shard_add_up_in_the_pipeline(db: Db) {
    let w = worker(&db, "tester").await;
    let r = repo(&db, "reports").await;
    let (pipeline_id, ids) = pipeline(
        &db,
        r,
        "rep-1",
        "jobs:\n  test:\n    parallel: 3\n    steps: [x]\n    reports: [junit.xml]\n",
    )
    .await;
    assert_eq!(db.pipeline_tests(pipeline_id).await.unwrap(), None);
    for shard in 0..3 {
        let claimed = db.claim_job(&claim(w)).await.unwrap().unwrap();
        let mut done = report(0);
        done.tests = vec![
            case("unit", &format!("a{shard}"), TestStatus::Passed),
            case("unit", &format!("b{shard}"), TestStatus::Skipped),
        ];
        if shard == 1 {
            done.tests.push(case("it", "db", TestStatus::Failed));
            done.tests.push(case("it", "net", TestStatus::Errored));
        }
        let lease = claimed.job.lease_id.unwrap();
        db.complete_job(claimed.job.id, lease, &done).await.unwrap();
        // A completion retried after a lost answer changes nothing.
        db.complete_job(claimed.job.id, lease, &done).await.unwrap();
    }
    let tests = db.pipeline_tests(pipeline_id).await.unwrap().unwrap();
    assert_eq!(
        (
            tests.total,
            tests.passed,
            tests.failed,
            tests.errored,
            tests.skipped
        ),
        (8, 3, 1, 1, 3)
    );
    let failures: Vec<_> = tests
        .failures
        .iter()
        .map(|f| {
            (
                f.job.as_str(),
                f.suite.as_str(),
                f.name.as_str(),
                f.status,
                f.message.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            ("test:2", "it", "db", TestStatus::Failed, Some("db broke")),
            ("test:2", "it", "net", TestStatus::Errored, None),
        ]
    );
    assert_eq!(ids.len(), 3);
}
