//! The commit-status outbox (migration 0008): rows written with each change of a pipeline's status, for
//! repositories with a status token only; claimed in order per pipeline, once at a time; retried when due.

use super::{Db, claim, delivery, pipeline, report, worker};
use gantry_model::PipelineStatus::{self, *};
use gantry_server::store::{CommitStatusRecord, NewRepoRecord, RepoCredential, StatusOutcome};
use uuid::Uuid;

const ONE_JOB: &str = "jobs:\n  a:\n    steps: [x]\n";
/// An instant far enough from the clock that the claims' holds and retries are the test's alone.
const NOW: i64 = 4_000_000_000_000;

/// A repository on `forge`, with a status token when `token`.
async fn forge_repo(db: &Db, name: &str, forge: &str, token: bool) -> i64 {
    let r = NewRepoRecord {
        name: name.into(),
        url: format!("https://forge.example.com/owner/{name}.git"),
        forge: forge.into(),
        forge_full_name: Some(format!("owner/{name}")),
        secret: "s3cretsecret".into(),
    };
    let id = db.create_repo(&r).await.unwrap().id;
    if token {
        db.set_repo_credential(id, RepoCredential::Status, Some(b"sealed"))
            .await
            .unwrap();
    }
    id
}

fn outcomes(rows: &[CommitStatusRecord]) -> Vec<(PipelineStatus, Option<&str>)> {
    rows.iter()
        .map(|r| (r.status, r.outcome.as_deref()))
        .collect()
}

/// Claims at `at` what is due, holding it for a second; the rows' statuses.
async fn claim_at(db: &Db, at: i64) -> Vec<(i64, PipelineStatus)> {
    db.claim_commit_statuses(at, at + 1000, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.id, s.status))
        .collect()
}

/// Runs the pipeline's one job to `exit_code`.
async fn run_job(db: &Db, worker_id: Uuid, job: Uuid, exit_code: i32) {
    let claimed = db.claim_job(&claim(worker_id)).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, job);
    db.complete_job(job, claimed.job.lease_id.unwrap(), &report(exit_code))
        .await
        .unwrap();
}

pub async fn commit_statuses_are_written_for_repositories_with_a_token_and_posted_in_order(db: Db) {
    let w = worker(&db, "status-worker").await;
    let plain = forge_repo(&db, "plain", "git", true).await;
    let tokenless = forge_repo(&db, "tokenless", "github", false).await;
    let hub = forge_repo(&db, "hub", "github", true).await;
    for (r, name) in [(plain, "plain-1"), (tokenless, "tokenless-1")] {
        let (p, jobs) = pipeline(&db, r, name, ONE_JOB).await;
        run_job(&db, w, jobs[0], 0).await;
        assert_eq!(db.commit_statuses(p).await.unwrap(), vec![], "{name}");
    }

    // Not prepared yet: its `queued` waits (a pipeline its `when:` drops must post nothing).
    let created = db.create_pipeline(&delivery(hub, "hub-1")).await.unwrap();
    assert_eq!(
        outcomes(&db.commit_statuses(created.id).await.unwrap()),
        [(Queued, None)]
    );
    assert_eq!(claim_at(&db, NOW).await, []);
    let job = gantry_server::store::NewJob {
        id: Uuid::now_v7(),
        spec: gantry_model::Pipeline::parse(ONE_JOB)
            .unwrap()
            .jobs
            .remove(0),
        skipped: None,
    };
    db.add_jobs(created.id, std::slice::from_ref(&job))
        .await
        .unwrap();
    let first = db.claim_commit_statuses(NOW, NOW + 1000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    let s = &first[0];
    assert_eq!(
        (
            s.status,
            s.repo.as_str(),
            s.number,
            s.forge.as_str(),
            s.forge_full_name.as_deref()
        ),
        (Queued, "hub", created.number, "github", Some("owner/hub"))
    );
    assert_eq!(
        (s.commit.len(), s.status_token.as_deref()),
        (40, Some(&b"sealed"[..]))
    );
    db.finish_commit_status(s.id, &StatusOutcome::Sent)
        .await
        .unwrap();

    run_job(&db, w, job.id, 1).await;
    // Running, then failed: the running one goes first, and the failure only once it is done.
    let running = claim_at(&db, NOW).await;
    assert_eq!(running.iter().map(|r| r.1).collect::<Vec<_>>(), [Running]);
    assert_eq!(claim_at(&db, NOW).await, [], "the pipeline's head is held");
    db.finish_commit_status(running[0].0, &StatusOutcome::Sent)
        .await
        .unwrap();
    let failed = claim_at(&db, NOW).await;
    assert_eq!(failed.iter().map(|r| r.1).collect::<Vec<_>>(), [Failed]);
    db.finish_commit_status(failed[0].0, &StatusOutcome::Sent)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&db.commit_statuses(created.id).await.unwrap()),
        [
            (Queued, Some("sent")),
            (Running, Some("sent")),
            (Failed, Some("sent"))
        ]
    );
    assert_eq!(db.next_commit_status_ms().await.unwrap(), None);
}

pub async fn a_pending_status_followed_by_another_is_superseded_but_never_the_one_before_the_end(
    db: Db,
) {
    let w = worker(&db, "quick-worker").await;
    let r = forge_repo(&db, "quick", "gitlab", true).await;
    // A pipeline over before anything was posted: queued, running, success all wait.
    let (p, jobs) = pipeline(&db, r, "quick-1", ONE_JOB).await;
    run_job(&db, w, jobs[0], 0).await;
    assert_eq!(
        claim_at(&db, NOW).await,
        [],
        "the queued one is superseded by the running one"
    );
    let running = claim_at(&db, NOW).await;
    assert_eq!(running.iter().map(|r| r.1).collect::<Vec<_>>(), [Running]);
    db.finish_commit_status(running[0].0, &StatusOutcome::Sent)
        .await
        .unwrap();
    let success = claim_at(&db, NOW).await;
    assert_eq!(success.iter().map(|r| r.1).collect::<Vec<_>>(), [Success]);
    db.finish_commit_status(success[0].0, &StatusOutcome::Sent)
        .await
        .unwrap();
    assert_eq!(
        outcomes(&db.commit_statuses(p).await.unwrap()),
        [
            (Queued, Some("superseded")),
            (Running, Some("sent")),
            (Success, Some("sent"))
        ]
    );
}

pub async fn a_claimed_status_waits_for_its_hold_or_its_retry_and_a_failed_one_lets_the_next_go(
    db: Db,
) {
    let w = worker(&db, "retry-worker").await;
    let r = forge_repo(&db, "flaky", "gitea", true).await;
    let (p, jobs) = pipeline(&db, r, "flaky-1", ONE_JOB).await;
    let queued = claim_at(&db, NOW).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(claim_at(&db, NOW + 999).await, [], "held by its sender");
    let again = claim_at(&db, NOW + 1000).await;
    assert_eq!(
        again, queued,
        "a sender that died lets it go when its hold runs out"
    );
    assert_eq!(claim_at(&db, NOW + 1000).await, []);
    assert_eq!(db.release_commit_status_claims().await.unwrap(), 1);
    assert_eq!(
        claim_at(&db, NOW + 1000).await,
        queued,
        "released at a restart"
    );
    let retry = StatusOutcome::Retry {
        at_ms: NOW + 5000,
        error: "the forge answered 500".into(),
    };
    db.finish_commit_status(queued[0].0, &retry).await.unwrap();
    assert_eq!(claim_at(&db, NOW + 4999).await, []);
    assert_eq!(db.next_commit_status_ms().await.unwrap(), Some(NOW + 5000));
    let due = db
        .claim_commit_statuses(NOW + 5000, NOW + 6000, 10)
        .await
        .unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));
    let failed = StatusOutcome::Failed {
        error: "the forge answered 401".into(),
    };
    db.finish_commit_status(due[0].id, &failed).await.unwrap();
    run_job(&db, w, jobs[0], 0).await;
    let running = claim_at(&db, NOW + 5000).await;
    assert_eq!(
        running.iter().map(|r| r.1).collect::<Vec<_>>(),
        [Running],
        "queued gave up; the next goes"
    );
    db.finish_commit_status(running[0].0, &StatusOutcome::Sent)
        .await
        .unwrap();
    let success = claim_at(&db, NOW + 5000).await;
    assert_eq!(success.iter().map(|r| r.1).collect::<Vec<_>>(), [Success]);
    let rows = db.commit_statuses(p).await.unwrap();
    assert_eq!(
        (
            rows[0].outcome.as_deref(),
            rows[0].attempts,
            rows[0].last_error.as_deref()
        ),
        (Some("failed"), 2, Some("the forge answered 401"))
    );
}

pub async fn a_dropped_pipeline_takes_its_unsent_statuses_with_it(db: Db) {
    let r = forge_repo(&db, "dropped", "github", true).await;
    let created = db.create_pipeline(&delivery(r, "dropped-1")).await.unwrap();
    assert_eq!(db.commit_statuses(created.id).await.unwrap().len(), 1);
    assert_eq!(
        db.next_commit_status_ms().await.unwrap(),
        None,
        "not due before it is prepared"
    );
    db.drop_pipeline(created.id, "filtered out by when:")
        .await
        .unwrap();
    assert_eq!(db.commit_statuses(created.id).await.unwrap(), vec![]);
    assert_eq!(db.next_commit_status_ms().await.unwrap(), None);
}
