//! Commit statuses back to the forge: a real `gantry up` posts pending, then the outcome, to a local HTTP server
//! standing in for each forge's status API (no forge runs here), with the paths, headers and JSON bodies the
//! forges' API documentation specifies; a forge answering 500 gets the status again, with backoff. On SQLite and
//! on PostgreSQL.
//!
//! - GitHub, "Create a commit status": <https://docs.github.com/en/rest/commits/statuses#create-a-commit-status>
//!   (`POST /repos/{owner}/{repo}/statuses/{sha}`, `Authorization: Bearer`, `Accept: application/vnd.github+json`,
//!   `X-GitHub-Api-Version: 2022-11-28`, a `User-Agent`; states pending, success, failure, error).
//! - GitLab, "Set the pipeline status of a commit":
//!   <https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit> (`POST /projects/:id/statuses/:sha`,
//!   `:id` the URL-encoded project path, <https://docs.gitlab.com/api/rest/#namespaced-paths>; `PRIVATE-TOKEN`;
//!   `state` pending, running, success, failed, canceled; `name` is the context).
//! - Gitea/Forgejo, `repoCreateStatus`: <https://gitea.com/api/swagger#/repository/repoCreateStatus>
//!   (`POST /repos/{owner}/{repo}/statuses/{sha}`, `CreateStatusOption` body), with
//!   `Authorization: token TOKEN` (<https://docs.gitea.com/development/api-usage#authentication>).

mod support;

use axum::http::StatusCode;
use gantry_server::secrets::SealingKey;
use gantry_server::store::RepoCredential;
use std::time::Duration;
use support::eventually;
use support::farm::Farm;
use support::git::Repo;
use support::standin::{Received, StandIn};

on_both_databases!(
    each_forge_gets_pending_then_success_or_failure_at_its_documented_endpoint,
    a_forge_that_answers_500_twice_gets_the_status_on_the_third_try,
    statuses_a_killed_server_had_not_posted_are_posted_after_its_restart,
    a_refused_token_is_tried_three_times_and_the_pipeline_shows_why,
);

const PASSING: &str = "jobs:\n  ok:\n    steps: [\"true\"]\n";
const FAILING: &str = "jobs:\n  broken:\n    steps: [\"exit 3\"]\n";

/// A forge as a test sees it: its kind, the repository's full name, where its API is, and the status path.
struct Forge {
    kind: &'static str,
    full_name: &'static str,
    api: &'static str,
    path: &'static str,
}

const GITHUB: Forge = Forge {
    kind: "github",
    full_name: "octo/hub",
    api: "/api/v3",
    path: "/api/v3/repos/octo/hub/statuses/",
};
const GITLAB: Forge = Forge {
    kind: "gitlab",
    full_name: "group/sub/lab",
    api: "/api/v4",
    path: "/api/v4/projects/group%2Fsub%2Flab/statuses/",
};
const GITEA: Forge = Forge {
    kind: "gitea",
    full_name: "owner/tea",
    api: "/api/v1",
    path: "/api/v1/repos/owner/tea/statuses/",
};

/// A hooked repository on `forge` whose statuses go to the stand-in at `stand_in`, with `token` as its status
/// token (set through the store and the server's sealing key, as the API that sets it would).
async fn forge_repo(
    farm: &Farm,
    database: Option<&str>,
    forge: &Forge,
    stand_in: &str,
    token: &str,
) -> Repo {
    let name = forge.kind;
    let repo = Repo::new(&support::scratch_dir(name));
    let bare = repo.bare.to_str().unwrap();
    farm.gantry(&[
        "repo",
        "add",
        name,
        "--url",
        bare,
        "--forge",
        forge.kind,
        "--forge-full-name",
        forge.full_name,
    ]);
    farm.gantry(&["hook", "install", bare, "--repo", name]);
    let api = format!("{stand_in}{}", forge.api);
    farm.gantry(&["repo", "set", name, "--forge-api-url", &api]);
    let url = database
        .map(str::to_owned)
        .unwrap_or_else(|| format!("sqlite://{}", farm.data_dir.join("gantry.db").display()));
    let store = gantry_server::store::connect(&url).await.unwrap();
    let key = SealingKey::load_or_create(&farm.data_dir.join("secret.key")).unwrap();
    let id = store.get_repo(name).await.unwrap().unwrap().id;
    let sealed = key.seal(&RepoCredential::Status.place(id), token.as_bytes());
    store
        .set_repo_credential(id, RepoCredential::Status, Some(&sealed))
        .await
        .unwrap();
    repo
}

/// Checks one request against the forge's documented endpoint, headers and body; returns its state.
fn check(farm: &Farm, forge: &Forge, token: &str, sha: &str, number: i64, r: &Received) -> String {
    assert_eq!(r.path, format!("{}{sha}", forge.path), "{r:?}");
    let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/json"),
        "{r:?}"
    );
    assert!(
        header("user-agent").unwrap().starts_with("gantry/"),
        "{r:?}"
    );
    let target_url = format!("{}/repos/{}/pipelines/{number}", farm.url, forge.kind);
    let state = r.body["state"].as_str().unwrap().to_owned();
    let description = r.body["description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("pipeline #{number} ")),
        "{r:?}"
    );
    let mut keys: Vec<&str> = r
        .body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    match forge.kind {
        "github" | "gitea" => {
            if forge.kind == "github" {
                assert_eq!(header("authorization"), Some(format!("Bearer {token}")));
                assert_eq!(
                    header("accept").as_deref(),
                    Some("application/vnd.github+json")
                );
                assert_eq!(
                    header("x-github-api-version").as_deref(),
                    Some("2022-11-28")
                );
            } else {
                assert_eq!(header("authorization"), Some(format!("token {token}")));
            }
            assert_eq!(
                keys,
                ["context", "description", "state", "target_url"],
                "{r:?}"
            );
            assert_eq!(r.body["context"], "gantry");
        }
        _ => {
            assert_eq!(header("private-token").as_deref(), Some(token));
            assert_eq!(
                header("authorization"),
                None,
                "GitLab's token goes in PRIVATE-TOKEN only"
            );
            assert_eq!(
                keys,
                ["description", "name", "state", "target_url"],
                "{r:?}"
            );
            assert_eq!(r.body["name"], "gantry");
        }
    }
    assert_eq!(r.body["target_url"], target_url.as_str(), "{r:?}");
    state
}

async fn each_forge_gets_pending_then_success_or_failure_at_its_documented_endpoint(
    database: Option<String>,
) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    let (stand_in, url) = StandIn::start(0).await;
    for forge in [&GITHUB, &GITLAB, &GITEA] {
        let token = format!("{}-token-{}", forge.kind, uuid::Uuid::now_v7().simple());
        let repo = forge_repo(&farm, database.as_deref(), forge, &url, &token).await;
        for (number, file, outcome) in [(1, PASSING, "success"), (2, FAILING, "failure")] {
            let (_, sha) = repo.push_pipeline(file);
            let p = farm.finished_pipeline(forge.kind, number).await;
            let got = stand_in.until_final(forge.path, &sha).await;
            let states: Vec<String> = got
                .iter()
                .map(|r| check(&farm, forge, &token, &sha, number, r))
                .collect();
            let outcome = match (forge.kind, outcome) {
                ("gitlab", "failure") => "failed",
                (_, outcome) => outcome,
            };
            // Pending while queued and running (on GitLab: `running`), then the outcome, once.
            let (last, pending) = states.split_last().unwrap();
            assert_eq!(
                last, outcome,
                "{} #{number} ({}): {states:?}",
                forge.kind, p["status"]
            );
            assert!(
                !pending.is_empty(),
                "no pending before the outcome: {states:?}"
            );
            let running = if forge.kind == "gitlab" {
                "running"
            } else {
                "pending"
            };
            assert!(
                pending.iter().all(|s| s == "pending" || s == running),
                "{states:?}"
            );
            assert_eq!(pending.last().unwrap(), running, "{states:?}");
            let said = got[got.len() - 2].body["description"]
                .as_str()
                .unwrap()
                .to_owned();
            assert_eq!(said, format!("pipeline #{number} is running"));
        }
    }
}

async fn a_forge_that_answers_500_twice_gets_the_status_on_the_third_try(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &["--status-retry-ms", "200"]);
    let (stand_in, url) = StandIn::start(2).await;
    let token = "ghp_retry";
    let repo = forge_repo(&farm, database.as_deref(), &GITHUB, &url, token).await;
    let (_, sha) = repo.push_pipeline(PASSING);
    farm.finished_pipeline("github", 1).await;
    let got = stand_in.until_final(GITHUB.path, &sha).await;
    let answers: Vec<u16> = got.iter().map(|r| r.answered).collect();
    assert_eq!(&answers[..3], [500, 500, 201], "{got:#?}");
    let states: Vec<String> = got
        .iter()
        .map(|r| check(&farm, &GITHUB, token, &sha, 1, r))
        .collect();
    // The pipeline's page says so too (the sender records the 201 just after it came).
    eventually(
        "the API to show the status sent",
        Duration::from_secs(10),
        || async {
            let p = farm.get("/repos/github/pipelines/1").await;
            let shown = &p["commit_status"];
            (shown["status"] == "success" && shown["delivery"] == "sent").then_some(())
        },
    )
    .await;
    assert_eq!(
        &states[..3],
        ["pending", "pending", "pending"],
        "{states:?}"
    );
    assert_eq!(states.last().unwrap(), "success", "{states:?}");
    assert_eq!(
        answers.iter().filter(|a| **a == 500).count(),
        2,
        "{answers:?}"
    );
    // Backed off: each try after a 500 waited at least the base (200 ms here; the queue ran on meanwhile).
    for pair in got[..3].windows(2) {
        let waited = pair[1].at - pair[0].at;
        assert!(
            waited >= Duration::from_millis(180),
            "tried again after {waited:?}"
        );
    }
}

async fn statuses_a_killed_server_had_not_posted_are_posted_after_its_restart(
    database: Option<String>,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut flags = vec!["--listen", &listen, "--admin-token", "status-kill-admin"];
    flags.extend(["--status-retry-ms", "200"]);
    if let Some(url) = &database {
        flags.extend(["--database", url]);
    }
    let mut farm = Farm::serve_with(&flags);
    let _worker = farm.worker("status-kill-worker");
    // The forge is down for the whole life of the first server process.
    let (stand_in, url) = StandIn::start(u32::MAX).await;
    let token = "glpat-kill";
    let repo = forge_repo(&farm, database.as_deref(), &GITLAB, &url, token).await;
    let (_, sha) = repo.push_pipeline(PASSING);
    farm.finished_pipeline("gitlab", 1).await;
    eventually("a first try", Duration::from_secs(30), || async {
        (!stand_in.for_commit(GITLAB.path, &sha).is_empty()).then_some(())
    })
    .await;
    farm.kill_and_restart();
    *stand_in.failures.lock().unwrap() = 0;
    let got = stand_in.until_final(GITLAB.path, &sha).await;
    let taken: Vec<String> = got
        .iter()
        .filter(|r| r.answered == 201)
        .map(|r| check(&farm, &GITLAB, token, &sha, 1, r))
        .collect();
    assert_eq!(taken, ["running", "success"], "{got:#?}");
}

async fn a_refused_token_is_tried_three_times_and_the_pipeline_shows_why(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &["--status-retry-ms", "100"]);
    let (stand_in, url) = StandIn::start(u32::MAX).await;
    *stand_in.fail_with.lock().unwrap() = Some(StatusCode::UNAUTHORIZED);
    let repo = forge_repo(&farm, database.as_deref(), &GITEA, &url, "revoked").await;
    let (_, sha) = repo.push_pipeline(PASSING);
    farm.finished_pipeline("gitea", 1).await;
    let shown = eventually(
        "the status to be given up",
        Duration::from_secs(60),
        || async {
            let p = farm.get("/repos/gitea/pipelines/1").await;
            (p["commit_status"]["status"] == "success"
                && p["commit_status"]["delivery"] == "failed")
                .then_some(p["commit_status"].clone())
        },
    )
    .await;
    assert_eq!(shown["attempts"], 3, "{shown}");
    let error = shown["error"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("gave up after 3 tries"),
        "{error}"
    );
    let tries = stand_in.for_commit(GITEA.path, &sha);
    let final_tries = tries
        .iter()
        .filter(|r| r.body["state"] == "success")
        .count();
    assert_eq!(final_tries, 3, "{tries:#?}");
}
