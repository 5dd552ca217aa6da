//! Private repositories (issue 5): a repository served only to HTTP basic credentials (a real smart-HTTP git
//! server: `git http-backend` behind a check of the `Authorization` header) is fetched by the server's mirror
//! and the worker's checkout with the repository's clone token, which never shows in an answer or a log. A
//! push without a token, or with a wrong one, ends in `error` saying so. On SQLite and PostgreSQL.

mod support;

use std::sync::atomic::Ordering;
use support::farm::Farm;
use support::git::Repo;
use support::git_http::GitHttp;

on_both_databases!(a_private_repository_runs_with_its_clone_token_and_fails_clearly_without);

const PIPELINE: &str = "jobs:\n  build:\n    steps: [cat marker.txt, test -f .gantry.yml]\n";

/// Commits a change of `marker.txt` and pushes it (the hook starts a pipeline).
fn push(repo: &Repo, marker: &str) {
    std::fs::write(repo.work.join("marker.txt"), marker).unwrap();
    repo.push_pipeline(PIPELINE);
}

async fn a_private_repository_runs_with_its_clone_token_and_fails_clearly_without(
    database: Option<String>,
) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    let dir = support::scratch_dir("private");
    let repo = Repo::new(&dir);
    let token = format!("tok-{}", uuid::Uuid::now_v7().simple());
    let server = GitHttp::serve(&dir, "ci-bot", &token);
    let url = server.url("origin.git");
    farm.gantry(&["repo", "add", "private", "--url", &url]);
    let out = farm.gantry(&[
        "hook",
        "install",
        repo.bare.to_str().unwrap(),
        "--repo",
        "private",
    ]);
    assert!(out.contains("installed"), "{out}");

    push(&repo, "no token yet\n");
    let p = farm.finished_pipeline("private", 1).await;
    assert_eq!(p["status"], "error", "{p}");
    let message = p["message"].as_str().unwrap();
    assert!(message.contains("no clone token"), "{message}");
    assert!(
        server.refused.load(Ordering::SeqCst) > 0,
        "the server asked for credentials"
    );

    // The token from a file, as `user:token`, so it stays out of the shell's history.
    let file = dir.join("token");
    std::fs::write(&file, format!("ci-bot:{token}\n")).unwrap();
    let out = farm.gantry(&[
        "repo",
        "set",
        "private",
        "--clone-token-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.contains("clone token set"), "{out}");
    let repos = farm.get("/repos").await;
    assert_eq!(repos[0]["has_clone_token"], true, "{repos}");
    assert!(!repos.to_string().contains(&token));

    push(&repo, "fetched with the token\n");
    let jobs = farm.finished_jobs("private", 2).await;
    assert_eq!(
        jobs[0].json["status"], "success",
        "{}: {}",
        jobs[0].json, jobs[0].log
    );
    assert!(
        jobs[0].log.contains("fetched with the token"),
        "{}",
        jobs[0].log
    );

    farm.gantry(&[
        "repo",
        "set",
        "private",
        "--clone-token",
        "ci-bot:wrong-token",
    ]);
    push(&repo, "a wrong token\n");
    let p = farm.finished_pipeline("private", 3).await;
    assert_eq!(p["status"], "error", "{p}");
    let message = p["message"].as_str().unwrap();
    assert!(message.contains("clone token was refused"), "{message}");
    assert!(!message.contains("wrong-token"), "{message}");

    let out = farm.gantry(&["repo", "set", "private", "--clone-token", ""]);
    assert!(out.contains("clone token none"), "{out}");
    let log = std::fs::read_to_string(farm.data_dir.with_extension("log")).unwrap();
    assert!(
        !log.contains(&token),
        "the farm's log never shows the token"
    );
}
