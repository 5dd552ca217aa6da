//! Each forge's deliveries against the real server (acceptance 3 of the forges issue): a push and a pull
//! (merge) request delivery — real payloads from `tests/fixtures/webhooks/`, pointed at commits of a real local
//! repository and signed each forge's way — make pipelines for the right commit and ref that run to the end
//! (the pull request's head exists only under the forge's `refs/pull/N/head`, so the mirror and the worker must
//! fetch that ref); a deletion, a ping and other events make none; a wrong signature gets 401. SQLite and
//! PostgreSQL.

mod support;

use serde_json::{Value, json};
use support::farm::Farm;
use support::git::{Repo, git};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/webhooks");
const SECRET: &str = "forge-hook-secret";
const FILE: &str = r#"
jobs:
  show:
    steps:
      - echo "event=$GANTRY_EVENT pr=${GANTRY_PR:-none} from=${GANTRY_PR_SOURCE_BRANCH:-} to=${GANTRY_PR_TARGET_BRANCH:-} fork=${GANTRY_PR_FROM_FORK:-}"
      - cat change.txt 2>/dev/null || echo "no change.txt"
  pr-only:
    when: { event: [pull_request] }
    steps: [echo only for pull requests]
  into-main:
    when: { branch: [main] }
    steps: [echo a push to main or a pull request into it]
"#;

#[derive(Clone, Copy)]
enum Forge {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
}

impl Forge {
    fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea | Forge::Forgejo => "gitea",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Forge::Forgejo => "/hooks/forgejo",
            other => match other.name() {
                "github" => "/hooks/github",
                "gitlab" => "/hooks/gitlab",
                _ => "/hooks/gitea",
            },
        }
    }

    fn pr_ref(self, number: i64) -> String {
        match self {
            Forge::GitLab => format!("refs/merge-requests/{number}/head"),
            _ => format!("refs/pull/{number}/head"),
        }
    }

    fn fixture(self, file: &str) -> Value {
        let path = format!("{FIXTURES}/{}/{file}", self.name());
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// The headers this forge sends with `body` for `event`, signed with `secret` its way.
    fn headers(self, event: &str, body: &[u8], secret: &str) -> Vec<(&'static str, String)> {
        let id = uuid::Uuid::now_v7().to_string();
        let hmac = || support::hmac_hex(secret, body);
        let mut h = vec![("content-type", "application/json".to_owned())];
        match self {
            Forge::GitHub => h.extend([
                ("x-github-event", event.to_owned()),
                ("x-github-delivery", id),
                ("x-hub-signature-256", format!("sha256={}", hmac())),
            ]),
            Forge::GitLab => h.extend([
                ("x-gitlab-event", event.to_owned()),
                ("x-gitlab-event-uuid", id),
                ("x-gitlab-token", secret.to_owned()),
            ]),
            Forge::Gitea => h.extend([
                ("x-gitea-event", event.to_owned()),
                ("x-gitea-delivery", id),
                ("x-gitea-signature", hmac()),
            ]),
            // Forgejo sends its own headers (and Gitea's); only its own here.
            Forge::Forgejo => h.extend([
                ("x-forgejo-event", event.to_owned()),
                ("x-forgejo-delivery", id),
                ("x-forgejo-signature", hmac()),
            ]),
        }
        h
    }

    fn push_event(self) -> &'static str {
        match self {
            Forge::GitLab => "Push Hook",
            _ => "push",
        }
    }

    fn pr_event(self) -> &'static str {
        match self {
            Forge::GitLab => "Merge Request Hook",
            _ => "pull_request",
        }
    }

    /// The forge's push payload, now a push of `sha` to `main`.
    fn push(self, sha: &str) -> Value {
        let mut p = match self {
            Forge::GitHub => self.fixture("push-branch-update.go-scm.json"),
            Forge::GitLab => self.fixture("push.doc.json"),
            _ => self.fixture("push.go-scm.json"),
        };
        p["ref"] = json!("refs/heads/main");
        p["after"] = json!(sha);
        if p.get("checkout_sha").is_some() {
            p["checkout_sha"] = json!(sha);
        }
        if p["head_commit"].is_object() {
            p["head_commit"]["id"] = json!(sha);
        }
        p
    }

    /// The forge's pull (merge) request payload, now request `number` from `feature/x` at `sha` into `main`.
    fn pull_request(self, number: i64, sha: &str) -> Value {
        match self {
            Forge::GitLab => {
                let mut p = self.fixture("merge_request.doc.json");
                let mr = &mut p["object_attributes"];
                mr["iid"] = json!(number);
                mr["last_commit"]["id"] = json!(sha);
                mr["source_branch"] = json!("feature/x");
                mr["target_branch"] = json!("main");
                p
            }
            _ => {
                let mut p = match self {
                    Forge::GitHub => self.fixture("pull_request-synchronize.json"),
                    _ => self.fixture("pull_request-synchronized.go-scm.json"),
                };
                p["number"] = json!(number);
                p["pull_request"]["number"] = json!(number);
                p["pull_request"]["head"]["sha"] = json!(sha);
                p["pull_request"]["head"]["ref"] = json!("feature/x");
                p["pull_request"]["base"]["ref"] = json!("main");
                p
            }
        }
    }

    /// Deliveries that must create nothing: a deletion, and a ping or an event Gantry does not build.
    fn nothing_to_build(self) -> Vec<(&'static str, Vec<u8>)> {
        let raw = |file: &str| std::fs::read(format!("{FIXTURES}/{}/{file}", self.name())).unwrap();
        match self {
            Forge::GitHub => vec![
                ("push", raw("push-branch-deleted.go-scm.json")),
                ("ping", raw("ping.json")),
                ("create", raw("create-tag.json")),
            ],
            Forge::GitLab => vec![
                ("Push Hook", raw("push-branch-deleted.go-scm.json")),
                ("Tag Push Hook", raw("tag_push-deleted.go-scm.json")),
            ],
            _ => vec![
                ("delete", raw("delete-branch.go-scm.json")),
                (
                    "pull_request",
                    raw("pull_request-edited.signed-vector.go-scm.json"),
                ),
            ],
        }
    }
}

async fn deliver(
    farm: &Farm,
    forge: Forge,
    repo: &str,
    event: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let headers = forge.headers(event, &body, SECRET);
    let path = format!("{}?repo={repo}", forge.route());
    let response = farm.post_raw(&path, &headers, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

on_both_databases!(
    every_forge_builds_pushes_and_pull_requests_and_nothing_else,
    stored_deliveries_have_their_secrets_redacted,
    a_generic_trigger_runs_a_pipeline_for_the_event_it_names,
    pull_requests_from_forks_are_built_and_marked
);

async fn every_forge_builds_pushes_and_pull_requests_and_nothing_else(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    for forge in [Forge::GitHub, Forge::GitLab, Forge::Gitea, Forge::Forgejo] {
        let name = format!("on-{}", forge.route().trim_start_matches("/hooks/"));
        let repo = Repo::new(&support::scratch_dir(&name));
        let added = farm.gantry(&[
            "repo",
            "add",
            &name,
            "--url",
            repo.bare.to_str().unwrap(),
            "--forge",
            forge.name(),
            "--secret",
            SECRET,
        ]);
        // What to paste into the forge: the URL of its route for this repository, and the secret.
        let hook_url = format!("{}/hooks/{}?repo={name}", farm.url, forge.name());
        assert!(
            added.contains(&hook_url) && added.contains(SECRET),
            "{added}"
        );
        let (_, main_sha) = repo.push_pipeline(FILE);
        // The pull request's head: a commit on no branch of the repository, only under the forge's ref.
        std::fs::write(repo.work.join("change.txt"), "the pull request's change\n").unwrap();
        git(&repo.work, &["add", "change.txt"]);
        git(&repo.work, &["commit", "-q", "-m", "a change"]);
        let pr_sha = git(&repo.work, &["rev-parse", "HEAD"]).trim().to_owned();
        git(
            &repo.work,
            &["push", "-q", "origin", &format!("HEAD:{}", forge.pr_ref(7))],
        );

        let push = serde_json::to_vec(&forge.push(&main_sha)).unwrap();
        let (status, outcome) = deliver(&farm, forge, &name, forge.push_event(), push).await;
        assert_eq!(
            (status, &outcome["outcome"]),
            (201, &json!("created")),
            "{name}: {outcome}"
        );
        let p = farm.finished_pipeline(&name, 1).await;
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert_eq!(
            (p["commit"].as_str(), p["ref"].as_str()),
            (Some(&*main_sha), Some("refs/heads/main"))
        );
        assert_eq!(p["event"], "push");
        assert!(p.get("pull_request").is_none(), "{p:#}");
        let log = farm.finished_jobs(&name, 1).await.remove(0).log;
        assert!(
            log.contains("event=push pr=none from= to= fork=\n"),
            "{name}: {log}"
        );
        assert!(log.contains("no change.txt"), "{name}: {log}");

        let pr = serde_json::to_vec(&forge.pull_request(7, &pr_sha)).unwrap();
        let (status, outcome) = deliver(&farm, forge, &name, forge.pr_event(), pr).await;
        assert_eq!(
            (status, &outcome["outcome"]),
            (201, &json!("created")),
            "{name}: {outcome}"
        );
        let p = farm.finished_pipeline(&name, 2).await;
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert_eq!(p["commit"].as_str(), Some(&*pr_sha));
        assert_eq!(p["ref"].as_str(), Some(&*forge.pr_ref(7)));
        assert_eq!(p["event"], "pull_request");
        assert_eq!(
            p["pull_request"],
            json!({"number": 7, "source_branch": "feature/x", "target_branch": "main", "from_fork": false}),
            "{name}"
        );
        let jobs = farm.finished_jobs(&name, 2).await;
        let statuses: Vec<_> = jobs
            .iter()
            .map(|j| j.json["status"].as_str().unwrap())
            .collect();
        // `branch:` sees the branch a pull request targets.
        assert_eq!(
            statuses,
            ["success", "success", "success"],
            "{name}: when: on a pull request"
        );
        let log = &jobs[0].log;
        assert!(
            log.contains("event=pull_request pr=7 from=feature/x to=main fork=false\n"),
            "{name}: {log}"
        );
        assert!(log.contains("the pull request's change"), "{name}: {log}");

        for (event, body) in forge.nothing_to_build() {
            let (status, outcome) = deliver(&farm, forge, &name, event, body).await;
            assert_eq!(
                (status, &outcome["outcome"]),
                (200, &json!("ignored")),
                "{name} {event}: {outcome}"
            );
            assert!(
                outcome["reason"].as_str().is_some_and(|r| !r.is_empty()),
                "{outcome}"
            );
        }
        // The right payload with the wrong secret, or a byte changed after signing.
        let body = serde_json::to_vec(&forge.push(&main_sha)).unwrap();
        let mut headers = forge.headers(forge.push_event(), &body, "not-the-secret");
        let path = format!("{}?repo={name}", forge.route());
        let refused = farm.post_raw(&path, &headers, body.clone()).await;
        assert_eq!(refused.status(), 401, "{name}: wrong secret");
        headers = forge.headers(forge.push_event(), &body, SECRET);
        let changed = String::from_utf8(body)
            .unwrap()
            .replace("refs/heads/main", "refs/heads/evil")
            .into_bytes();
        let refused = farm.post_raw(&path, &headers, changed).await;
        let expected = if matches!(forge, Forge::GitLab) {
            201
        } else {
            401
        };
        // GitLab signs nothing: its token proves the sender, not the body, so a changed body is accepted.
        assert_eq!(refused.status(), expected, "{name}: changed body");
        let count = farm.get(&format!("/repos/{name}/pipelines")).await["pipelines"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            count,
            2 + usize::from(expected == 201),
            "{name}: nothing else made a pipeline"
        );

        // What each delivery became, newest first, for the user who wonders why a hook did nothing.
        let listed = farm.get(&format!("/repos/{name}/deliveries")).await;
        let outcomes: Vec<&str> = listed["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["outcome"].as_str().unwrap())
            .collect();
        let ignored = forge.nothing_to_build().len();
        let mut expected_outcomes = vec![
            if expected == 201 {
                "created"
            } else {
                "refused"
            },
            "refused",
        ];
        expected_outcomes.extend(std::iter::repeat_n("ignored", ignored));
        expected_outcomes.extend(["created", "created"]);
        assert_eq!(outcomes, expected_outcomes, "{name}: {listed:#}");
        let refused = &listed["deliveries"][1];
        assert!(
            refused["reason"].as_str().unwrap().contains("signature")
                || refused["reason"].as_str().unwrap().contains("token"),
            "{refused}"
        );
        assert_eq!(
            listed["deliveries"].as_array().unwrap().last().unwrap()["pipeline"],
            1
        );
        let page = farm.page(&format!("/repos/{name}")).await;
        assert!(
            page.contains("Recent deliveries") && page.contains("refused"),
            "{page}"
        );
        let pr_page = farm.page(&format!("/repos/{name}/pipelines/2")).await;
        assert!(pr_page.contains("Pull request #7"), "{pr_page}");
    }
}

/// Old Gitea bodies carry the hook's secret in a `secret` field (Gitea's own documentation example); neither it
/// nor the repository's webhook secret, wherever it appears, may be kept.
async fn stored_deliveries_have_their_secrets_redacted(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    let repo = Repo::new(&support::scratch_dir("redacted"));
    let name = "redacted";
    farm.gantry(&[
        "repo",
        "add",
        name,
        "--url",
        repo.bare.to_str().unwrap(),
        "--forge",
        "gitea",
        "--secret",
        SECRET,
    ]);
    let (_, sha) = repo.push_pipeline(FILE);
    let mut body = Forge::Gitea.fixture("push.doc.json");
    let doc_secret = body["secret"].as_str().unwrap().to_owned();
    assert!(doc_secret.len() > 8, "the fixture carries a secret");
    body["ref"] = json!("refs/heads/main");
    body["after"] = json!(sha);
    body["commits"][0]["message"] = json!(format!("oops, pasted {SECRET} in a message"));
    body["commits"][0]["author"]["name"] = json!("<script>alert(1)</script>");
    let (status, outcome) = deliver(
        &farm,
        Forge::Gitea,
        name,
        "push",
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{outcome}");
    assert_eq!(farm.finished_pipeline(name, 1).await["status"], "success");
    let id = farm.get(&format!("/repos/{name}/deliveries")).await["deliveries"][0]["id"].clone();
    let stored = farm.get(&format!("/repos/{name}/deliveries/{id}")).await;
    let kept = stored["body"].as_str().unwrap();
    assert!(
        !kept.contains(&doc_secret) && !kept.contains(SECRET),
        "{kept}"
    );
    let kept: Value = serde_json::from_str(kept).unwrap();
    assert_eq!(kept["secret"], "[redacted]");
    assert_eq!(
        kept["commits"][0]["message"],
        "oops, pasted [redacted] in a message"
    );
    assert_eq!(kept["after"], json!(sha), "the rest is kept as it came");
    let page = farm.page(&format!("/repos/{name}/deliveries/{id}")).await;
    assert!(
        page.contains("[redacted]") && !page.contains(&doc_secret),
        "{page}"
    );
}

/// `/hooks/generic`: any tool posts `{"ref","after","event"}` signed like the git hook's.
async fn a_generic_trigger_runs_a_pipeline_for_the_event_it_names(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    let repo = Repo::new(&support::scratch_dir("generic"));
    farm.gantry(&[
        "repo",
        "add",
        "generic",
        "--url",
        repo.bare.to_str().unwrap(),
        "--secret",
        SECRET,
    ]);
    let (_, sha) = repo.push_pipeline(FILE);
    let post = |body: Value| {
        let body = serde_json::to_vec(&body).unwrap();
        let signature = support::signature(SECRET, &body);
        let headers = vec![
            ("x-gantry-signature", signature),
            ("content-type", "application/json".to_owned()),
        ];
        let farm = &farm;
        async move {
            farm.post_raw("/hooks/generic?repo=generic", &headers, body)
                .await
        }
    };
    let made = post(json!({"ref": "refs/heads/main", "after": sha, "event": "manual"})).await;
    assert_eq!(made.status(), 201);
    let p = farm.finished_pipeline("generic", 1).await;
    assert_eq!(
        (p["status"].as_str(), p["event"].as_str()),
        (Some("success"), Some("manual")),
        "{p:#}"
    );
    let jobs = farm.finished_jobs("generic", 1).await;
    assert!(
        jobs[0].log.contains("event=manual pr=none"),
        "{}",
        jobs[0].log
    );
    let refused = post(json!({"ref": "refs/heads/main", "after": sha, "event": "deploy"})).await;
    assert_eq!(refused.status(), 400);
    let said: Value = refused.json().await.unwrap();
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("use push, tag, manual, api"),
        "{said}"
    );
    let unnamed = farm.post_raw("/hooks/generic", &[], b"{}".to_vec()).await;
    assert_eq!(unnamed.status(), 400);
}

/// A pull request whose head lives in another repository is built (through the base repository's
/// `refs/pull/N/head`) and marked as from a fork, which keeps the repository's secrets from its jobs.
async fn pull_requests_from_forks_are_built_and_marked(database: Option<String>) {
    let farm = Farm::up_on(database.as_deref(), &[]);
    for forge in [Forge::GitHub, Forge::GitLab, Forge::Gitea] {
        let name = format!("fork-{}", forge.name());
        let repo = Repo::new(&support::scratch_dir(&name));
        let bare = repo.bare.to_str().unwrap();
        farm.gantry(&[
            "repo",
            "add",
            &name,
            "--url",
            bare,
            "--forge",
            forge.name(),
            "--secret",
            SECRET,
        ]);
        let (_, sha) = repo.push_pipeline(FILE);
        git(
            &repo.work,
            &["push", "-q", "origin", &format!("HEAD:{}", forge.pr_ref(3))],
        );
        let mut pr = forge.pull_request(3, &sha);
        match forge {
            Forge::GitLab => pr["object_attributes"]["source_project_id"] = json!(999),
            _ => {
                pr["pull_request"]["head"]["repo"]["id"] = json!(999);
                pr["pull_request"]["head"]["repo"]["full_name"] = json!("someone-else/fork");
            }
        }
        let body = serde_json::to_vec(&pr).unwrap();
        // Whoever opened it wrote its steps: on `image: host` (the file's jobs have no image) it is refused
        // until the repository lets forks use the host.
        let (status, outcome) = deliver(&farm, forge, &name, forge.pr_event(), body.clone()).await;
        assert_eq!(status, 201, "{name}: {outcome}");
        let refused = farm.finished_pipeline(&name, 1).await;
        assert_eq!(refused["status"], "error", "{name}: {refused:#}");
        let why = refused["message"].as_str().unwrap_or_default();
        assert!(
            why.contains("forks may not run jobs on `image: host`") && why.contains("show"),
            "{name}: {why}"
        );
        let set = farm.gantry(&["repo", "set", &name, "--fork-host-image", "true"]);
        assert!(set.contains("fork_host_image true"), "{set}");
        // The same request again, as a new delivery (each delivery gets an id of its own).
        let (status, outcome) = deliver(&farm, forge, &name, forge.pr_event(), body).await;
        assert_eq!(status, 201, "{name}: {outcome}");
        let p = farm.finished_pipeline(&name, 2).await;
        assert_eq!(p["status"], "success", "{name}: {p:#}");
        assert_eq!(p["pull_request"]["from_fork"], true, "{name}: {p:#}");
        let jobs = farm.finished_jobs(&name, 2).await;
        assert!(
            jobs[0]
                .log
                .contains("pr=3 from=feature/x to=main fork=true"),
            "{name}: {}",
            jobs[0].log
        );
        let page = farm.page(&format!("/repos/{name}/pipelines/2")).await;
        assert!(page.contains("from a fork"), "{page}");
    }
}
