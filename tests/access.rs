//! Who may read and change what (issue 14, finding 1): every route of the server, signed out and with a token of
//! each scope, on a farm with a private repository and then on a private farm (`--private`). Real `gantry up`
//! processes, a real push through the git hook, on SQLite and PostgreSQL.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use support::farm::Farm;

on_both_databases!(
    every_route_refuses_what_the_caller_s_scope_does_not_allow,
    a_revoked_token_stops_working_at_once_and_tokens_are_never_listed_with_values,
);

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Need {
    /// Nothing: open to everyone, on any farm.
    Open,
    /// Reading: open on a public farm (unless the repository is private), else the `read` scope.
    Read,
    /// The `write` scope.
    Write,
    /// The `admin` scope.
    Admin,
    /// A worker's (or a pool's) token: no user token may pose as a worker, not even the admin's.
    Worker,
}

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Who {
    SignedOut,
    Scoped(Need),
}

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    need: Need,
}

fn route(method: Method, path: impl Into<String>, need: Need) -> Route {
    Route {
        method,
        path: path.into(),
        body: None,
        need,
    }
}

fn with_body(mut r: Route, body: Value) -> Route {
    r.body = Some(body);
    r
}

/// Every route of the server (keep in step with `server/src/http/mod.rs` and `server/src/web/mod.rs`), about
/// the repository `repo` whose pipeline 1 has the job `job`, delivery `delivery` and artifact `out.txt`.
fn every_route(repo: &str, job: &str, delivery: i64) -> Vec<Route> {
    use Need::*;
    let p = format!("/api/v1/repos/{repo}/pipelines/1");
    let j = format!("/api/v1/jobs/{job}");
    vec![
        route(Method::GET, "/healthz", Open),
        route(Method::GET, "/", Read),
        route(Method::GET, format!("/repos/{repo}"), Read),
        route(Method::GET, format!("/repos/{repo}/pipelines/1"), Read),
        route(
            Method::GET,
            format!("/repos/{repo}/deliveries/{delivery}"),
            Read,
        ),
        route(Method::GET, format!("/jobs/{job}"), Read),
        route(Method::GET, "/api/v1/repos", Read),
        route(Method::GET, format!("/api/v1/repos/{repo}/pipelines"), Read),
        route(Method::GET, p.clone(), Read),
        route(
            Method::GET,
            format!("/api/v1/repos/{repo}/deliveries"),
            Read,
        ),
        route(
            Method::GET,
            format!("/api/v1/repos/{repo}/deliveries/{delivery}"),
            Read,
        ),
        route(Method::GET, j.clone(), Read),
        route(Method::GET, format!("{j}/log"), Read),
        route(Method::GET, format!("{j}/log/stream"), Read),
        route(Method::GET, format!("{j}/artifacts"), Read),
        route(Method::GET, format!("{j}/artifacts/out.txt"), Read),
        route(Method::GET, "/api/v1/workers", Read),
        route(Method::GET, "/api/v1/pools", Read),
        route(Method::GET, "/api/v1/pools/default/decisions", Read),
        route(Method::GET, "/pools", Read),
        route(Method::GET, "/pools/default", Read),
        route(Method::GET, "/metrics", Open),
        with_body(
            route(Method::POST, "/api/v1/pools", Admin),
            json!({"name": "made-by-the-test", "provider": "manual"}),
        ),
        with_body(
            route(Method::PATCH, "/api/v1/pools/made-by-the-test", Admin),
            json!({"max": 2}),
        ),
        route(Method::POST, "/api/v1/pools/made-by-the-test/token", Admin),
        route(Method::POST, format!("{p}/cancel"), Write),
        route(Method::POST, format!("{p}/retry"), Write),
        route(Method::POST, format!("{j}/cancel"), Write),
        with_body(
            route(Method::POST, "/api/v1/repos", Admin),
            json!({"name": "made-by-the-test", "url": "/nowhere.git"}),
        ),
        with_body(
            route(Method::PATCH, format!("/api/v1/repos/{repo}"), Admin),
            json!({"cancel_previous": false}),
        ),
        route(Method::GET, format!("/api/v1/repos/{repo}/secret"), Admin),
        route(Method::GET, format!("/api/v1/repos/{repo}/secrets"), Admin),
        with_body(
            route(
                Method::PUT,
                format!("/api/v1/repos/{repo}/secrets/DEPLOY_KEY"),
                Admin,
            ),
            json!({"value": "a value of the test"}),
        ),
        route(
            Method::DELETE,
            format!("/api/v1/repos/{repo}/secrets/DEPLOY_KEY"),
            Admin,
        ),
        route(Method::GET, "/api/v1/tokens", Admin),
        with_body(
            route(Method::POST, "/api/v1/tokens", Admin),
            json!({"name": "made-by-the-test", "scope": "read"}),
        ),
        route(Method::DELETE, "/api/v1/tokens/made-by-the-test", Admin),
        with_body(
            route(Method::POST, "/api/v1/workers/register", Worker),
            json!({"name": "intruder", "capacity": 1, "protocol_version": 1}),
        ),
        with_body(
            route(Method::POST, "/api/v1/lease", Worker),
            json!({"wait_secs": 0}),
        ),
        route(Method::POST, "/api/v1/workers/deregister", Worker),
        route(Method::POST, format!("{j}/heartbeat"), Worker),
        route(Method::POST, format!("{j}/steps"), Worker),
        route(Method::POST, format!("{j}/complete"), Worker),
        route(Method::POST, format!("{j}/log"), Worker),
        route(Method::PUT, format!("{j}/artifacts/planted.txt"), Worker),
    ]
}

/// The tokens of each scope, made through the CLI as a user would.
struct Tokens {
    read: String,
    write: String,
    admin: String,
}

fn token_from(created: &str) -> String {
    created
        .lines()
        .last()
        .expect("gantry token create printed the token")
        .trim()
        .to_owned()
}

fn make_tokens(farm: &Farm) -> Tokens {
    let mut made = ["read", "write", "admin"].map(|scope| {
        token_from(&farm.gantry(&[
            "token",
            "create",
            "--name",
            &format!("ci-{scope}"),
            "--scope",
            scope,
        ]))
    });
    Tokens {
        read: std::mem::take(&mut made[0]),
        write: std::mem::take(&mut made[1]),
        admin: std::mem::take(&mut made[2]),
    }
}

impl Tokens {
    fn of(&self, who: Who) -> Option<&str> {
        match who {
            Who::SignedOut => None,
            Who::Scoped(Need::Read) => Some(&self.read),
            Who::Scoped(Need::Write) => Some(&self.write),
            Who::Scoped(_) => Some(&self.admin),
        }
    }
}

async fn call(farm: &Farm, r: &Route, token: Option<&str>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .request(r.method.clone(), format!("{}{}", farm.url, r.path))
        .timeout(Duration::from_secs(20));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = &r.body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    // A live stream's body never ends: its status is the answer.
    let body = if r.path.ends_with("/stream") {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, body)
}

/// Calls every route as `who` and checks each answer against what the route needs; `read_needs_token` says
/// whether reads of this repository need a token (a private farm or a private repository).
async fn check_every_route(farm: &Farm, routes: &[Route], tokens: &Tokens, read_needs_token: bool) {
    let callers = [
        Who::SignedOut,
        Who::Scoped(Need::Read),
        Who::Scoped(Need::Write),
        Who::Scoped(Need::Admin),
    ];
    let mut wrong = Vec::new();
    for who in callers {
        for r in routes {
            let (status, body) = call(farm, r, tokens.of(who)).await;
            let allowed = match (who, r.need) {
                (_, Need::Open) => true,
                (Who::SignedOut, Need::Read) => !read_needs_token,
                (Who::SignedOut, _) => false,
                (_, Need::Worker) => false,
                (Who::Scoped(held), need) => held >= need,
            };
            let refused = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
            let right = if allowed {
                !refused && !status.is_server_error()
            } else if matches!(who, Who::SignedOut) || r.need == Need::Worker {
                status == StatusCode::UNAUTHORIZED
            } else {
                status == StatusCode::FORBIDDEN && body.contains("scope")
            };
            if !right {
                wrong.push(format!(
                    "{who:?} {} {} (needs {:?}) → {status} {body:.200}",
                    r.method, r.path, r.need
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "answers that do not match the route's need:\n{}",
        wrong.join("\n")
    );
}

const PIPELINE: &str = "jobs:\n  hello:\n    image: host\n    steps: [echo hello from a private job > out.txt, cat out.txt]\n    artifacts: [out.txt]\n";

/// Waits for `repo` #1 to finish (reading with `token`) and returns its only job's id and its delivery's.
async fn finished(farm: &Farm, repo: &str, token: &str) -> (String, i64) {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http
            .get(format!("{}/api/v1{path}", farm.url))
            .bearer_auth(token);
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    let p = eventually(
        &format!("{repo} #1 to finish"),
        Duration::from_secs(120),
        || async {
            let p = get(format!("/repos/{repo}/pipelines/1")).await?;
            (!matches!(p["status"].as_str(), Some("queued" | "running") | None)).then_some(p)
        },
    )
    .await;
    assert_eq!(p["status"], "success", "{p}");
    let deliveries = get(format!("/repos/{repo}/deliveries")).await.unwrap();
    (
        p["jobs"][0]["id"].as_str().unwrap().to_owned(),
        deliveries["deliveries"][0]["id"].as_i64().unwrap(),
    )
}

async fn every_route_refuses_what_the_caller_s_scope_does_not_allow(database: Option<String>) {
    let admin = "gantry_admin_given-by-the-access-test";
    let data_dir = support::scratch_dir("access");
    let mut flags = vec!["--admin-token", admin];
    if let Some(url) = &database {
        flags.extend(["--database", url]);
    }
    // A public farm: a private repository is closed to a signed-out caller, a public one open.
    let farm = Farm::up_in(data_dir.clone(), &flags);
    let tokens = make_tokens(&farm);
    let closed = farm.hooked_repo("closed");
    let open = farm.hooked_repo("open");
    let set = farm.gantry(&["repo", "set", "closed", "--private", "true"]);
    assert!(set.contains("private true"), "{set}");
    closed.push_pipeline(PIPELINE);
    open.push_pipeline(PIPELINE);
    let (closed_job, closed_delivery) = finished(&farm, "closed", &tokens.read).await;
    let (open_job, open_delivery) = finished(&farm, "open", &tokens.read).await;
    let closed_routes: Vec<Route> = every_route("closed", &closed_job, closed_delivery)
        .into_iter()
        // Lists span repositories: they stay open, without the private one (checked below); pools belong to
        // the farm, not to a repository.
        .filter(|r| {
            !matches!(
                r.path.as_str(),
                "/" | "/api/v1/repos"
                    | "/api/v1/workers"
                    | "/api/v1/pools"
                    | "/api/v1/pools/default/decisions"
                    | "/pools"
                    | "/pools/default"
            )
        })
        .collect();
    check_every_route(&farm, &closed_routes, &tokens, true).await;
    check_every_route(
        &farm,
        &every_route("open", &open_job, open_delivery),
        &tokens,
        false,
    )
    .await;
    let listed = reqwest::get(format!("{}/api/v1/repos", farm.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains("\"open\"") && !listed.contains("closed"),
        "{listed}"
    );
    let index = reqwest::get(&farm.url).await.unwrap().text().await.unwrap();
    assert!(
        index.contains("open") && !index.contains("closed"),
        "{index}"
    );
    let with_token = reqwest::Client::new()
        .get(format!("{}/api/v1/repos", farm.url))
        .bearer_auth(&tokens.read)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(with_token.contains("closed"), "{with_token}");
    farm.interrupt();

    // The same data on a private farm: every read needs a token, the hooks and /healthz stay open.
    flags.push("--private");
    let farm = Farm::up_in(data_dir, &flags);
    assert!(farm.banner.contains("Private farm"), "{}", farm.banner);
    check_every_route(
        &farm,
        &every_route("open", &open_job, open_delivery),
        &tokens,
        true,
    )
    .await;
    // A push through the hook (which carries no token) still makes a pipeline, and the CLI reads with a token.
    // (The hook is installed again: the farm listens on a new port.)
    farm.gantry(&[
        "hook",
        "install",
        open.bare.to_str().unwrap(),
        "--repo",
        "open",
    ]);
    open.push_pipeline(&PIPELINE.replace("hello from", "hello again from"));
    let listed = support::farm::gantry_as(&farm, &tokens.read, &["pipeline", "list", "open"]);
    assert!(listed.contains("open #2"), "{listed}");
    let refused = support::farm::gantry_fails(&farm, None, &["pipeline", "list", "open"]);
    assert!(
        refused.contains("401") && refused.contains("read"),
        "{refused}"
    );
}

async fn a_revoked_token_stops_working_at_once_and_tokens_are_never_listed_with_values(
    database: Option<String>,
) {
    let database: Vec<&str> = database
        .iter()
        .flat_map(|url| ["--database", url.as_str()])
        .collect();
    let mut flags = vec!["--private"];
    flags.extend(database);
    let farm = Farm::serve_with(&flags);
    let tokens = make_tokens(&farm);
    let listed = farm.gantry(&["token", "list"]);
    for (name, scope, value) in [
        ("ci-read", "read", &tokens.read),
        ("ci-write", "write", &tokens.write),
        ("ci-admin", "admin", &tokens.admin),
    ] {
        assert!(listed.contains(&format!("{name}\t{scope}")), "{listed}");
        assert!(
            !listed.contains(value.as_str()),
            "a token's value was listed: {listed}"
        );
    }
    let api = farm.gantry(&["token", "list"]);
    assert!(!api.contains("gantry_"), "{api}");
    // Names are unique, and plain.
    let taken = support::farm::gantry_fails(
        &farm,
        Some(&farm.admin),
        &["token", "create", "--name", "ci-read", "--scope", "admin"],
    );
    assert!(
        taken.contains("409") && taken.contains("ci-read"),
        "{taken}"
    );
    let markup = support::farm::gantry_fails(
        &farm,
        Some(&farm.admin),
        &["token", "create", "--name", "<b>", "--scope", "read"],
    );
    assert!(
        markup.contains("400") && markup.contains("invalid token name"),
        "{markup}"
    );
    // An admin-scope token is the admin: it may make tokens; a write token may not.
    let made = support::farm::gantry_as(
        &farm,
        &tokens.admin,
        &[
            "token",
            "create",
            "--name",
            "second-admin",
            "--scope",
            "read",
        ],
    );
    assert!(made.contains("gantry_read_"), "{made}");
    let refused = support::farm::gantry_fails(
        &farm,
        Some(&tokens.write),
        &["token", "create", "--name", "escalated", "--scope", "admin"],
    );
    assert!(
        refused.contains("403") && refused.contains("`admin` scope"),
        "{refused}"
    );

    let repos = support::farm::gantry_as(&farm, &tokens.read, &["repo", "list"]);
    assert!(
        repos.is_empty(),
        "a read token reads the private farm: {repos}"
    );
    let revoked = farm.gantry(&["token", "revoke", "ci-read"]);
    assert!(revoked.contains("revoked"), "{revoked}");
    let after = support::farm::gantry_fails(&farm, Some(&tokens.read), &["repo", "list"]);
    assert!(
        after.contains("401") && after.contains("not valid"),
        "{after}"
    );
    let again =
        support::farm::gantry_fails(&farm, Some(&farm.admin), &["token", "revoke", "ci-read"]);
    assert!(again.contains("404"), "{again}");
    assert!(!farm.gantry(&["token", "list"]).contains("ci-read"));
}
