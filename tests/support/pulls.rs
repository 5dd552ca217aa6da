//! Pull-request pipelines made straight in the store, as intake makes them from a forge's delivery: a fork's
//! pull request needs a forge to send it, and these tests are about what happens after.

use gantry_model::Pipeline;
use gantry_model::wire::PullRequest;
use gantry_server::store::{self, NewDelivery, NewJob, NewPipeline};

/// A prepared pull-request pipeline of `commit`, made straight in the store as intake would make it.
pub async fn pull_request_pipeline(
    database: &str,
    repo_id: i64,
    commit: &str,
    from_fork: bool,
    yaml: &str,
) {
    let db = store::connect(database).await.unwrap();
    let number = if from_fork { 7 } else { 8 };
    let created = db
        .create_pipeline(&NewPipeline {
            delivery: NewDelivery {
                repo_id,
                delivery_id: format!("pr-{number}"),
                forge: "github".into(),
                event: "pull_request".into(),
                body: b"{}".to_vec(),
            },
            commit: commit.into(),
            git_ref: "refs/heads/main".into(),
            event: "pull_request".into(),
            author: None,
            message: None,
            pull_request: Some(PullRequest {
                number,
                source_branch: "feature".into(),
                target_branch: "main".into(),
                from_fork,
            }),
        })
        .await
        .unwrap();
    let jobs: Vec<NewJob> = Pipeline::parse(yaml)
        .unwrap()
        .jobs
        .into_iter()
        .map(|spec| NewJob {
            id: uuid::Uuid::now_v7(),
            spec,
            skipped: None,
        })
        .collect();
    db.add_jobs(created.id, &jobs).await.unwrap();
}
