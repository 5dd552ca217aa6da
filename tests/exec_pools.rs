//! The `exec` provider (docs/api.md, "Workers and pools"): the operator's commands make, remove and list a pool's
//! instances. A failing `create` shows its stderr in the pool's `error` and is tried again after growing
//! pauses; an instance that never registers is destroyed after `boot_timeout`; `create` gets what a worker needs
//! in its environment and a token good for one worker name; a real `gantry worker` it starts runs the pool's
//! jobs. Two servers on one PostgreSQL: one acts for the pool, and the other takes it over within seconds of
//! the first's death. Real `gantry server` and `gantry worker` processes.

mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::eventually;
use support::exec_vms::Vms;
use support::farm::Farm;

on_both_databases!(
    a_failing_create_shows_its_stderr_and_backs_off_and_an_unregistered_instance_is_destroyed,
);

fn unique(name: &str) -> String {
    format!(
        "{name}-{}",
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

async fn pool(farm: &Farm, name: &str) -> Value {
    let pools = farm.get("/pools").await;
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no pool {name}: {pools:#}"))
}

fn env_value(env: &str, key: &str) -> Option<String> {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
}

async fn a_failing_create_shows_its_stderr_and_backs_off_and_an_unregistered_instance_is_destroyed(
    database: Option<String>,
) {
    let name = unique("vm");
    let vms = Vms::new("exec-vms", "fail");
    let config = vms.pool(&name, "min = 1\nmax = 2\nboot_timeout = \"3s\"\n");
    let mut flags = vec![];
    if let Some(url) = &database {
        flags.extend(["--database", url.as_str()]);
    }
    let dir = support::scratch_dir("exec-config");
    std::fs::write(dir.join("gantry.toml"), &config).unwrap();
    let config_path = dir.join("gantry.toml");
    flags.extend(["--config", config_path.to_str().unwrap()]);
    let farm = Farm::serve_with(&flags);

    // Commands run on the server's host: even the admin cannot set them through the API, by a new pool or by
    // turning one into an exec pool.
    let hostile = json!({"name": unique("api-exec"), "provider": "exec",
        "exec": {"create": "touch /tmp/owned", "destroy": "true", "list": "true"}});
    let (status, body) = farm
        .admin_call(reqwest::Method::POST, "/pools", Some(hostile))
        .await;
    assert_eq!(status, 403, "{body}");
    let hostile = json!({"name": unique("api-kube"), "provider": "kubernetes",
        "kubernetes": {"pod_template": "/etc/passwd"}});
    let (status, body) = farm
        .admin_call(reqwest::Method::POST, "/pools", Some(hostile))
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = farm
        .admin_call(
            reqwest::Method::PATCH,
            "/pools/default",
            Some(json!({"provider": "exec"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs its commands"),
        "{body}"
    );
    let (status, body) = farm
        .admin_call(
            reqwest::Method::PATCH,
            &format!("/pools/{name}"),
            Some(json!({"max": 9})),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // The pool says why it cannot start its worker, in the command's own words.
    let error = eventually(
        "the pool to show create's error",
        Duration::from_secs(30),
        || async {
            pool(&farm, &name).await["error"]
                .as_str()
                .map(str::to_owned)
        },
    )
    .await;
    assert!(error.contains("quota exceeded in zone test-1a"), "{error}");
    assert!(error.contains("`create` failed"), "{error}");
    // And it is asked again after growing pauses, not at every look (1 s).
    let attempts = eventually("four attempts", Duration::from_secs(30), || async {
        let creates = vms.creates();
        (creates.len() >= 4).then_some(creates)
    })
    .await;
    let gaps: Vec<f64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= 0.8, "the first retry came too soon: {gaps:?}");
    assert!(
        gaps[2] > gaps[0] + 1.5 && gaps[2] >= 3.0,
        "the pauses between attempts did not grow: {gaps:?}"
    );

    // What create was given: the server, the pool, the worker's name, labels and slots, a token; no secret of
    // the server's.
    let env = vms.env(&format!("{name}-1"));
    assert_eq!(
        env_value(&env, "GANTRY_SERVER").as_deref(),
        Some(farm.url.as_str()),
        "{env}"
    );
    assert_eq!(
        env_value(&env, "GANTRY_POOL").as_deref(),
        Some(name.as_str()),
        "{env}"
    );
    assert_eq!(
        env_value(&env, "GANTRY_WORKER_NAME"),
        Some(format!("{name}-1")),
        "{env}"
    );
    assert_eq!(
        env_value(&env, "GANTRY_WORKER_LABELS"),
        Some(format!("linux,{name}")),
        "{env}"
    );
    assert_eq!(
        env_value(&env, "GANTRY_WORKER_CAPACITY").as_deref(),
        Some("1"),
        "{env}"
    );
    let failed_token = env_value(&env, "GANTRY_POOL_TOKEN").expect("a pool token");
    assert!(failed_token.starts_with("gantry_pool_"), "{env}");
    assert!(
        !env.contains("GANTRY_ADMIN_TOKEN") && !env.contains("GANTRY_DATABASE_URL"),
        "{env}"
    );
    // The token of a create that failed registers nothing.
    let (status, _) = farm
        .register_with(&failed_token, &format!("{name}-1"))
        .await;
    assert_eq!(status, 401, "a failed create's token still works");

    // Instances that never register: each is destroyed after boot_timeout, by its id, and the pool says so.
    vms.set_mode("silent");
    let booting = eventually("an instance to boot", Duration::from_secs(60), || async {
        let workers = farm.get("/workers").await;
        workers["workers"]
            .as_array()?
            .iter()
            .find(|w| w["pool"] == name.as_str() && w["state"] == "booting")
            .cloned()
    })
    .await;
    let booting_name = booting["name"].as_str().unwrap().to_owned();
    // Its token is its own: it registers no other name.
    let token = env_value(&vms.env(&booting_name), "GANTRY_POOL_TOKEN").unwrap();
    let (status, body) = farm.register_with(&token, "someone-else").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&booting_name),
        "{body}"
    );
    let destroyed = eventually(
        "the silent instance to be destroyed",
        Duration::from_secs(30),
        || async {
            let destroyed = vms.destroyed();
            destroyed
                .iter()
                .find(|id| id.starts_with(&format!("silent-{booting_name}-")))
                .cloned()
        },
    )
    .await;
    assert!(destroyed.starts_with("silent-"), "{destroyed}");
    let decisions = farm.get(&format!("/pools/{name}/decisions")).await;
    let said = format!("worker {booting_name} did not register within 3s → destroyed");
    assert!(
        decisions["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == said.as_str()),
        "{decisions:#}"
    );
    let said_too = format!("worker {booting_name} did not register within 3s");
    eventually(
        "the pool's error to say so",
        Duration::from_secs(10),
        || async {
            let error = pool(&farm, &name).await["error"]
                .as_str()
                .map(str::to_owned)?;
            error.contains(&said_too).then_some(())
        },
    )
    .await;

    // A create that starts a real worker: it registers with its token and runs the pool's jobs.
    vms.set_mode("worker");
    let repo_name = unique("exec-repo");
    let repo = farm.hooked_repo(&repo_name);
    repo.push_pipeline(&format!(
        "jobs:\n  on-vm:\n    runs-on: [{name}]\n    steps: [echo ran on an exec instance]\n"
    ));
    let started = Instant::now();
    let pipeline = farm.finished_pipeline(&repo_name, 1).await;
    assert_eq!(pipeline["status"], "success", "{pipeline:#}");
    let worker = pipeline["jobs"][0]["worker"].as_str().unwrap().to_owned();
    assert!(worker.starts_with(&format!("{name}-")), "{pipeline:#}");
    eprintln!(
        "exec worker started and ran the job in {:?}",
        started.elapsed()
    );
    // Its token registered it once: read from the instance now, it registers nobody.
    let used = env_value(&vms.env(&worker), "GANTRY_POOL_TOKEN").unwrap();
    let (status, _) = farm.register_with(&used, &worker).await;
    assert_eq!(status, 401, "an instance's token registered twice");
    let pool_now = pool(&farm, &name).await;
    assert_eq!(pool_now["provider"], "exec", "{pool_now:#}");
    eventually(
        "the pool's error to clear",
        Duration::from_secs(30),
        || async { pool(&farm, &name).await["error"].is_null().then_some(()) },
    )
    .await;
}

/// Two servers on one PostgreSQL with the same exec pool: only the one holding the pool's turn creates; when
/// it dies, the other takes the pool over within seconds and its own workers run the waiting jobs.
#[test]
fn two_servers_scale_an_exec_pool_once_and_the_survivor_takes_it_over() {
    support::run(Duration::from_secs(240), async {
        let database = support::postgres::fresh_database().await;
        let admin = format!("gantry_admin_shared_{}", uuid::Uuid::now_v7().simple());
        let name = unique("vm");
        let vms = Vms::new("exec-two", "worker");
        let dir = support::scratch_dir("exec-two-config");
        let config_path = dir.join("gantry.toml");
        std::fs::write(
            &config_path,
            vms.pool(&name, "min = 1\nmax = 2\nidle_timeout = \"10m\"\n"),
        )
        .unwrap();
        let flags = [
            "--database",
            &database,
            "--admin-token",
            &admin,
            "--config",
            config_path.to_str().unwrap(),
            "--lease-secs",
            "5",
            // A worker calls at least every second, so one that stops is gone after 4 s.
            "--long-poll-secs",
            "1",
            "--worker-grace-secs",
            "4",
        ];
        let a = Farm::serve_with(&flags);
        let b = Farm::serve_with(&flags);
        eventually(
            "the pool's first worker",
            Duration::from_secs(60),
            || async {
                let workers = a.get("/workers").await;
                workers["workers"]
                    .as_array()?
                    .iter()
                    .any(|w| w["pool"] == name.as_str() && w["state"] == "idle")
                    .then_some(())
            },
        )
        .await;
        // Both servers look every second; a turn lasts 5 s: one of them made it, and nobody another.
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert_eq!(vms.creates().len(), 1, "both servers scaled the pool");
        let first = vms.env(&format!("{name}-1"));
        let acting = env_value(&first, "GANTRY_SERVER").unwrap();
        let (mut dying, survivor) = if acting == a.url { (a, b) } else { (b, a) };
        assert_eq!(acting, dying.url, "{first}");

        dying.kill_now();
        let killed = Instant::now();
        // Work waits; the first worker's server is gone, so the survivor must act: a create that points its
        // workers at the survivor.
        let repo_name = unique("exec-two-repo");
        let repo = survivor.hooked_repo(&repo_name);
        repo.push_pipeline(&format!(
            "jobs:\n  one:\n    runs-on: [{name}]\n    steps: [echo one]\n  two:\n    runs-on: [{name}]\n    steps: [echo two]\n"
        ));
        // (The script logs the call first, then what it was given: wait for the latter.)
        let took_over = eventually(
            "a create pointing its worker at the survivor",
            Duration::from_secs(60),
            || async {
                let pointed = (1..=3).any(|n| {
                    let env = vms.env(&format!("{name}-{n}"));
                    env_value(&env, "GANTRY_SERVER").as_deref() == Some(survivor.url.as_str())
                });
                pointed.then(|| killed.elapsed())
            },
        )
        .await;
        assert!(vms.creates().len() >= 2);
        eprintln!("the survivor took the pool over {took_over:?} after the other server's death");
        assert!(took_over < Duration::from_secs(30), "took {took_over:?}");
        let pipeline = survivor.finished_pipeline(&repo_name, 1).await;
        assert_eq!(pipeline["status"], "success", "{pipeline:#}");
        let decisions = survivor.get(&format!("/pools/{name}/decisions")).await;
        eprintln!("{decisions:#}");
    });
}
