//! `when:` (docs/pipeline.md): a pipeline whose file filters out the pushed branch makes no pipeline (its delivery says
//! why), and a job filtered out is `skipped` with what needs it, while the rest runs. Real `gantry up`, real
//! pushes to three branches, on SQLite and PostgreSQL.

mod support;

use std::time::Duration;
use support::eventually;
use support::farm::Farm;
use support::git::git;

const FILE: &str = r#"
when: { branch: [main, "release/*"], event: [push] }
jobs:
  test:
    steps: [echo testing]
  publish:
    when: { branch: ["release/*"] }
    steps: [echo publishing]
  announce:
    needs: [publish]
    steps: [echo announced]
"#;

on_both_databases!(pipelines_and_jobs_run_only_for_the_branches_their_when_names);

async fn pipelines_and_jobs_run_only_for_the_branches_their_when_names(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    let repo = farm.hooked_repo("filters");
    repo.push_pipeline(FILE);
    let main = farm.finished_pipeline("filters", 1).await;
    assert_eq!(main["status"], "success", "{main:#}");
    let statuses: Vec<_> = main["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["name"].as_str().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("test", "success"),
            ("publish", "skipped"),
            ("announce", "skipped")
        ]
    );
    let why = main["jobs"][1]["message"].as_str().unwrap();
    assert!(why.contains("the branch is main"), "{why}");

    git(&repo.work, &["push", "origin", "HEAD:refs/heads/feature"]);
    git(
        &repo.work,
        &["push", "origin", "HEAD:refs/heads/release/1.0"],
    );
    let release = farm.finished_pipeline("filters", 3).await;
    assert_eq!(release["status"], "success", "{release:#}");
    assert!(
        release["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "success"),
        "{release:#}"
    );
    let http = reqwest::Client::new();
    eventually(
        "the feature branch's pipeline to be dropped",
        Duration::from_secs(60),
        || async {
            let answer = http
                .get(format!("{}/api/v1/repos/filters/pipelines/2", farm.url))
                .send()
                .await
                .ok()?;
            (answer.status() == 404).then_some(())
        },
    )
    .await;
    let listed = farm.get("/repos/filters/pipelines").await;
    let numbers: Vec<_> = listed["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["number"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 1]);
}
