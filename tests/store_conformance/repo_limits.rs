//! A repository's `max_running_jobs` holds while claims race: on PostgreSQL every claim connection of every
//! server is a concurrent claimer (issue 14, finding 7).

use super::{Db, claim, pipeline, repo, report, worker};
use gantry_model::wire::RepoSettings;

/// Claimers at once per round: more than a server's claim connections (8), as two servers would be.
const CLAIMERS: usize = 12;
const LIMIT: usize = 2;

pub(super) async fn claims_racing_never_run_more_of_a_repository_than_its_limit(db: Db) {
    let limited = repo(&db, "narrow").await;
    let settings = RepoSettings {
        max_running_jobs: Some(LIMIT as u32),
        ..Default::default()
    };
    db.update_repo_settings("narrow", &settings).await.unwrap();
    let mut workers = Vec::new();
    for i in 0..CLAIMERS {
        workers.push(worker(&db, &format!("eager-{i}")).await);
    }
    for round in 0..40 {
        pipeline(
            &db,
            limited,
            &format!("narrow-{round}"),
            "jobs:\n  a:\n    steps: [x]\n  b:\n    steps: [x]\n  c:\n    steps: [x]\n",
        )
        .await;
        let claims: Vec<_> = workers.iter().map(|w| claim(*w)).collect();
        let won: Vec<_> = futures::future::join_all(claims.iter().map(|c| db.claim_job(c)))
            .await
            .into_iter()
            .filter_map(|claimed| claimed.expect("a claim that loses the race is not an error"))
            .collect();
        let running = db.running_jobs(limited).await.unwrap();
        assert_eq!(
            (won.len(), running),
            (LIMIT, LIMIT as u64),
            "round {round}: {CLAIMERS} claimers at once must start exactly the limit"
        );
        for claimed in won {
            db.complete_job(claimed.job.id, claimed.job.lease_id.unwrap(), &report(0))
                .await
                .unwrap();
        }
    }
}
