//! Elastic pools (docs/api.md, "Workers and pools"): pools made, changed and rotated by the admin; labels set by
//! the pool, not the worker; a `local` pool that grows with the queue, drains only idle workers and shrinks
//! back to zero; registrations that stopped calling removed. Real `gantry up`/`server`/`worker` processes, on
//! SQLite and on PostgreSQL.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use support::eventually;
use support::farm::Farm;

on_both_databases!(
    pools_are_made_changed_and_rotated_by_the_admin_and_set_their_workers_labels,
    a_local_pool_grows_with_the_queue_and_drains_back_to_zero_without_interrupting_a_job,
    scale_in_never_picks_a_busy_worker,
    a_worker_that_stopped_calling_leaves_the_list,
    a_fork_s_pull_request_never_runs_on_a_trusted_pool_and_a_repository_keeps_to_its_pools,
    gantry_up_without_pools_scales_a_built_in_default_pool_and_replaces_dead_workers,
);

/// Waits for worker `name` to be in `/api/v1/workers`; returns its entry.
async fn registered(farm: &Farm, name: &str) -> Value {
    eventually(
        &format!("{name} to register"),
        Duration::from_secs(60),
        || async {
            let workers = farm.get("/workers").await;
            workers["workers"]
                .as_array()?
                .iter()
                .find(|w| w["name"] == name)
                .cloned()
        },
    )
    .await
}

fn database_flags(database: &Option<String>) -> Vec<&str> {
    match database {
        Some(url) => vec!["--database", url],
        None => vec![],
    }
}

async fn pools_are_made_changed_and_rotated_by_the_admin_and_set_their_workers_labels(
    database: Option<String>,
) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let pools = farm.get("/pools").await;
    assert_eq!(pools["pools"][0]["name"], "default", "{pools:#}");
    assert_eq!(pools["pools"][0]["provider"], "manual", "{pools:#}");

    let big = json!({"name": "big", "provider": "manual", "labels": ["linux", "big"]});
    let anonymous = reqwest::Client::new()
        .post(format!("{}/api/v1/pools", farm.url))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "making a pool needs the admin");
    let (status, made) = farm
        .admin_call(Method::POST, "/pools", Some(big.clone()))
        .await;
    assert_eq!(status, 201, "{made}");
    let first_token = made["token"].as_str().unwrap().to_owned();
    let (status, again) = farm.admin_call(Method::POST, "/pools", Some(big)).await;
    assert_eq!(status, 409, "{again}");
    let (status, bad) = farm
        .admin_call(
            Method::POST,
            "/pools",
            Some(json!({"name": "x", "min": 3, "max": 2})),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("min (3) is more than max (2)"),
        "{bad}"
    );

    // A worker may not give itself labels its pool lacks; one that claims none gets the pool's.
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let mut liar = farm.worker_in_pool(
        &format!("liar-{tag}"),
        &first_token,
        &["--labels", "linux,gpu"],
    );
    let status = liar
        .wait_exit(Duration::from_secs(60))
        .expect("the refused worker exits");
    assert!(!status.success());
    assert!(
        liar.output()
            .contains("pool \"big\" does not have the label \"gpu\""),
        "{}",
        liar.output()
    );
    let name = format!("big-{tag}");
    let mut worker = farm.worker_in_pool(&name, &first_token, &[]);
    let listed = registered(&farm, &name).await;
    assert_eq!(listed["labels"], json!(["linux", "big"]), "{listed}");
    assert_eq!(listed["pool"], "big");
    assert_eq!(listed["state"], "idle");

    let (status, patched) = farm
        .admin_call(Method::PATCH, "/pools/big", Some(json!({"max": 3})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (patched["max"].as_u64(), patched["labels"].clone()),
        (Some(3), json!(["linux", "big"]))
    );
    let (status, _) = farm
        .admin_call(Method::PATCH, "/pools/nope", Some(json!({"max": 3})))
        .await;
    assert_eq!(status, 404);

    // Rotating the token stops the old one at once, and the worker that registered with it.
    let (status, rotated) = farm
        .admin_call(Method::POST, "/pools/big/token", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["token"].as_str().unwrap(), first_token);
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v1/workers/register", farm.url))
        .bearer_auth(&first_token)
        .json(&json!({"name": "late", "capacity": 1, "protocol_version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let status = worker
        .wait_exit(Duration::from_secs(20))
        .expect("the worker of the old token stops within seconds");
    assert!(!status.success(), "it exits non-zero");
    assert!(
        worker
            .output()
            .contains("no longer accepts this worker's token"),
        "it says why: {}",
        worker.output()
    );
    let new_one = farm.worker_in_pool(
        &format!("new-{tag}"),
        rotated["token"].as_str().unwrap(),
        &[],
    );
    registered(&farm, &new_one.name).await;
}

const POOL_OF_FOUR: &str = r#"
[[pool]]
name = "default"
provider = "local"
min = 0
max = 4
idle_timeout = "3s"
"#;

async fn decisions(farm: &Farm, pool: &str) -> Vec<Value> {
    farm.get(&format!("/pools/{pool}/decisions")).await["decisions"]
        .as_array()
        .unwrap()
        .clone()
}

async fn a_local_pool_grows_with_the_queue_and_drains_back_to_zero_without_interrupting_a_job(
    database: Option<String>,
) {
    let farm = Farm::up_with_config(POOL_OF_FOUR, &database_flags(&database));
    let repo = farm.hooked_repo("burst");
    repo.push_pipeline("jobs:\n  test:\n    parallel: 8\n    steps: [sleep 3]\n");
    let most_busy = std::sync::atomic::AtomicUsize::new(0);
    // Each worker's states in the order the API showed them.
    let states = std::sync::Mutex::new(std::collections::BTreeMap::<String, Vec<String>>::new());
    let finished = eventually("the 8 jobs to finish", Duration::from_secs(180), || async {
        let workers = farm.get("/workers").await;
        let workers = workers["workers"].as_array().unwrap();
        for w in workers {
            let state = w["state"].as_str().unwrap().to_owned();
            // A booting worker has not registered: no id, no call yet.
            assert_eq!(state == "booting", w["id"].is_null(), "{w}");
            assert_eq!(state == "booting", w["last_seen"].is_null(), "{w}");
            let mut states = states.lock().unwrap();
            let seen = states
                .entry(w["name"].as_str().unwrap().to_owned())
                .or_default();
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
        let busy = workers.iter().filter(|w| w["state"] == "busy").count();
        most_busy.fetch_max(busy, std::sync::atomic::Ordering::Relaxed);
        let p = farm.get("/repos/burst/pipelines/1").await;
        (p["status"] == "success" || p["status"] == "failure" || p["status"] == "error")
            .then_some(p)
    })
    .await;
    assert_eq!(finished["status"], "success", "{finished:#}");
    for job in finished["jobs"].as_array().unwrap() {
        assert_eq!(job["attempt"], 1, "no job was interrupted: {job}");
    }
    let states = states.into_inner().unwrap();
    assert!(
        states
            .values()
            .any(|seen| seen.first().map(String::as_str) == Some("booting")
                && seen.iter().any(|s| s == "busy")),
        "a worker is shown booting from the moment the pool asks for it, then busy: {states:#?}"
    );
    for seen in states.values() {
        let booting_again = seen
            .iter()
            .skip_while(|s| *s == "booting")
            .any(|s| s == "booting");
        assert!(
            !booting_again,
            "a registered worker never shows as booting again: {states:#?}"
        );
    }
    let most_busy = most_busy.into_inner();
    assert!(
        most_busy >= 3,
        "at least 3 workers busy at once, saw {most_busy}"
    );
    let grown = decisions(&farm, "default").await;
    assert!(
        grown
            .iter()
            .any(|d| d["reason"].as_str().unwrap().contains("jobs ready")
                && d["to"].as_u64() > d["from"].as_u64()),
        "a decision to grow, saying why: {grown:#?}"
    );
    eventually(
        "the pool to be back to zero workers",
        Duration::from_secs(90),
        || async {
            let pools = farm.get("/pools").await;
            let default = pools["pools"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == "default")?
                .clone();
            let w = &default["workers"];
            (w["idle"] == 0 && w["busy"] == 0 && w["draining"] == 0 && w["booting"] == 0)
                .then_some(())
        },
    )
    .await;
    let all = decisions(&farm, "default").await;
    assert!(
        all.iter()
            .any(|d| d["reason"].as_str().unwrap().ends_with("→ drain")),
        "the drains are decisions too: {all:#?}"
    );
    let workers = farm.get("/workers").await;
    assert_eq!(workers["workers"], json!([]), "no ghost registrations");
    let metrics = reqwest::get(format!("{}/metrics", farm.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "gantry_autoscaler_decisions_total{pool=\"default\",direction=\"up\"}",
        "gantry_autoscaler_decisions_total{pool=\"default\",direction=\"down\"}",
        "gantry_pool_workers{pool=\"default\",state=\"busy\"} 0",
        "gantry_pool_desired{pool=\"default\"}",
        "gantry_queue_jobs{pool=\"default\"} 0",
    ] {
        assert!(metrics.contains(line), "/metrics has {line}: {metrics}");
    }
    let page = farm.page("/pools/default").await;
    assert!(
        page.contains("→ drain") && page.contains("jobs ready"),
        "the pool page shows the decisions: {page}"
    );
    assert!(
        farm.page("/pools")
            .await
            .contains("href=\"/pools/default\"")
    );
    let (status, refused) = farm
        .admin_call(Method::PATCH, "/pools/default", Some(json!({"max": 8})))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("edit it there"),
        "{refused}"
    );
}

async fn scale_in_never_picks_a_busy_worker(database: Option<String>) {
    let config = POOL_OF_FOUR
        .replace("max = 4", "max = 2")
        .replace("\"3s\"", "\"1s\"");
    let farm = Farm::up_with_config(&config, &database_flags(&database));
    let repo = farm.hooked_repo("long");
    repo.push_pipeline("jobs:\n  long:\n    steps: [sleep 12]\n  short:\n    steps: [sleep 1]\n");
    let p = farm.finished_pipeline("long", 1).await;
    assert_eq!(p["status"], "success", "{p:#}");
    let long = p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "long")
        .unwrap();
    assert_eq!(
        long["attempt"], 1,
        "the long job was never interrupted: {long}"
    );
    let ended: chrono::DateTime<chrono::Utc> =
        long["finished_at"].as_str().unwrap().parse().unwrap();
    let busy_worker = long["worker"].as_str().unwrap();
    let all = decisions(&farm, "default").await;
    let drains: Vec<_> = all
        .iter()
        .filter(|d| d["reason"].as_str().unwrap().ends_with("→ drain"))
        .collect();
    assert!(
        drains.iter().any(|d| {
            let at: chrono::DateTime<chrono::Utc> = d["at"].as_str().unwrap().parse().unwrap();
            at < ended
        }),
        "the other worker drained while the long job ran: {all:#?}"
    );
    for d in &drains {
        let at: chrono::DateTime<chrono::Utc> = d["at"].as_str().unwrap().parse().unwrap();
        let reason = d["reason"].as_str().unwrap();
        assert!(
            !(reason.starts_with(&format!("worker {busy_worker} ")) && at < ended),
            "the busy worker was drained while it ran: {d}"
        );
    }
}

async fn a_worker_that_stopped_calling_leaves_the_list(database: Option<String>) {
    let mut flags = database_flags(&database);
    // Idle workers call at least every long-poll: the grace must be longer.
    flags.extend(["--long-poll-secs", "1", "--worker-grace-secs", "4"]);
    let farm = Farm::serve_on(None, &flags);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let mut worker = farm.worker(&format!("doomed-{tag}"));
    eventually(
        "the worker to register",
        Duration::from_secs(60),
        || async {
            let workers = farm.get("/workers").await;
            (workers["workers"].as_array()?.len() == 1).then_some(())
        },
    )
    .await;
    worker.kill();
    eventually(
        "the killed worker to leave the list",
        Duration::from_secs(90),
        || async {
            let workers = farm.get("/workers").await;
            workers["workers"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
}

async fn a_fork_s_pull_request_never_runs_on_a_trusted_pool_and_a_repository_keeps_to_its_pools(
    database: Option<String>,
) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let trusted = json!({"name": "vault", "provider": "manual", "trusted": true});
    let (status, made) = farm.admin_call(Method::POST, "/pools", Some(trusted)).await;
    assert_eq!(status, 201, "{made}");
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let vault_worker = format!("vault-{tag}");
    let _vault = farm.worker_in_pool(&vault_worker, made["token"].as_str().unwrap(), &[]);
    let repo = farm.hooked_repo("trust");
    let (_, commit) = repo.push_pipeline("jobs:\n  build:\n    steps: [true]\n");
    let db_url = database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", farm.data_dir.join("gantry.db").display()));
    let id = gantry_server::store::connect(&db_url)
        .await
        .unwrap()
        .get_repo("trust")
        .await
        .unwrap()
        .unwrap()
        .id;
    let pr = "jobs:\n  pr:\n    steps: [true]\n";
    support::pulls::pull_request_pipeline(&db_url, id, &commit, true, pr).await;
    support::pulls::pull_request_pipeline(&db_url, id, &commit, false, pr).await;
    for number in [1, 3] {
        let p = farm.finished_pipeline("trust", number).await;
        assert_eq!(p["status"], "success", "{p:#}");
        assert_eq!(p["jobs"][0]["worker"], vault_worker.as_str(), "{p:#}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fork = farm.get("/repos/trust/pipelines/2").await;
    assert_eq!(
        fork["jobs"][0]["status"], "queued",
        "a fork's job waits: {fork:#}"
    );

    // A repository kept to pools: refused for an unknown one, its jobs only on the ones named.
    let out = support::farm::gantry_fails(
        &farm,
        Some(&farm.admin),
        &["repo", "set", "trust", "--pools", "nope"],
    );
    assert!(out.contains("no pool named \"nope\""), "{out}");
    let out = farm.gantry(&["repo", "set", "trust", "--pools", "default"]);
    assert!(out.contains("pools default"), "{out}");
    repo.push_pipeline("jobs:\n  kept:\n    steps: [true]\n");
    let default_worker = format!("plain-{tag}");
    let _plain = farm.worker(&default_worker);
    for number in [2, 4] {
        let p = farm.finished_pipeline("trust", number).await;
        assert_eq!(p["status"], "success", "{p:#}");
        assert_eq!(p["jobs"][0]["worker"], default_worker.as_str(), "{p:#}");
    }
}

#[test]
fn the_first_ctrl_c_drains_the_pools_and_starts_no_worker_in_their_place() {
    support::run(Duration::from_secs(180), async {
        let config = POOL_OF_FOUR.replace("min = 0", "min = 2");
        let mut farm = Farm::up_with_config(&config, &[]);
        eventually("the pool's 2 workers", Duration::from_secs(90), || async {
            let pools = farm.get("/pools").await;
            (pools["pools"][0]["workers"]["idle"] == 2).then_some(())
        })
        .await;
        let pid = nix::unistd::Pid::from_raw(farm.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let status = farm.wait_exit(Duration::from_secs(60)).expect(
            "one Ctrl-C stops the farm: its workers drain and none is started in their place",
        );
        assert!(status.success(), "{status}");
        let workers_dir = farm.data_dir.join("workers");
        let left = std::process::Command::new("pgrep")
            .args(["-f", workers_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            left.stdout.is_empty(),
            "no worker of the pool outlives the farm: {}",
            String::from_utf8_lossy(&left.stdout)
        );
    });
}

async fn gantry_up_without_pools_scales_a_built_in_default_pool_and_replaces_dead_workers(
    database: Option<String>,
) {
    let mut flags = database_flags(&database);
    flags.extend(["--max-workers", "2", "--capacity", "1"]);
    let farm = Farm::up_with(&flags);
    assert!(
        farm.banner.contains(
            "Pool default: local workers, 1 ready and up to 2 while jobs wait, each running 1 job"
        ),
        "{}",
        farm.banner
    );
    let pools = farm.get("/pools").await;
    let default = &pools["pools"][0];
    assert_eq!(
        (
            &default["name"],
            &default["provider"],
            &default["min"],
            &default["max"]
        ),
        (&json!("default"), &json!("local"), &json!(1), &json!(2)),
        "{pools:#}"
    );
    assert_eq!(default["from_config"], true, "{pools:#}");
    let (status, refused) = farm
        .admin_call(Method::PATCH, "/pools/default", Some(json!({"max": 8})))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("built-in"),
        "{refused}"
    );
    // One worker is kept ready; two jobs at once get a second.
    let ready = eventually(
        "the pool's ready worker",
        Duration::from_secs(60),
        || async {
            let workers = farm.get("/workers").await;
            let first = workers["workers"].as_array()?.first()?.clone();
            (first["state"] == "idle").then_some(first)
        },
    )
    .await;
    let repo = farm.hooked_repo("builtin");
    repo.push_pipeline("jobs:\n  test:\n    parallel: 2\n    steps: [sleep 4]\n");
    let p = farm.finished_pipeline("builtin", 1).await;
    assert_eq!(p["status"], "success", "{p:#}");
    let ran_on: std::collections::BTreeSet<String> = p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["worker"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ran_on.len(),
        2,
        "the two jobs ran on two workers at once: {p:#}"
    );
    assert!(ran_on.contains(ready["name"].as_str().unwrap()), "{p:#}");
    // Every worker SIGKILLed while idle: the pool removes them at once (no ghost waits for the grace period)
    // and starts its one ready worker again, under the first one's name (so in its data dir, with its caches).
    let children = std::process::Command::new("pgrep")
        .args(["-P", &farm.pid().to_string()])
        .output()
        .unwrap();
    let children = String::from_utf8(children.stdout).unwrap();
    assert_eq!(
        children.lines().count(),
        2,
        "two worker processes: {children}"
    );
    for pid in children.lines() {
        let pid = nix::unistd::Pid::from_raw(pid.trim().parse().unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    eventually(
        "the ready worker to be back",
        Duration::from_secs(30),
        || async {
            let workers = farm.get("/workers").await;
            let workers = workers["workers"].as_array()?;
            (workers.len() == 1
                && workers[0]["name"] == ready["name"]
                && workers[0]["id"] != ready["id"]
                && workers[0]["state"] == "idle")
                .then_some(())
        },
    )
    .await;
}
