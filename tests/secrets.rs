//! Repository secrets (issue 5): set through the CLI, given to a push's jobs as env (winning over the file's
//! `env:`), shown as `***` in the stored log, the API and the dashboard, never in the database file in plain
//! text, and never given to a pull request from a fork. Real `gantry server` and `gantry worker` processes, on
//! SQLite and PostgreSQL.

mod support;

use gantry_server::store;
use sha2::{Digest, Sha256};
use std::process::Command;
use support::farm::{Farm, GANTRY};

on_both_databases!(
    a_secret_reaches_push_jobs_masked_in_the_log_and_never_a_fork_s,
    secrets_are_refused_with_reasons_and_listed_without_values,
    a_worker_that_uploads_a_secret_unmasked_has_it_masked_by_the_server,
);

async fn a_secret_reaches_push_jobs_masked_in_the_log_and_never_a_fork_s(database: Option<String>) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let repo = farm.hooked_repo("vault");
    let secret = format!("s3cr3t-{}", uuid::Uuid::now_v7().simple());
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    let out = support::farm::gantry_with_stdin(
        &farm,
        &["secret", "set", "vault", "MY_SECRET"],
        &format!("{secret}\n"),
    );
    assert!(out.contains("set"), "{out}");
    let proves = format!("test \"$(printf %s \"$MY_SECRET\" | sha256sum | cut -c1-64)\" = {hash}");
    // The file's own value loses to the secret; the value is printed whole, and in two writes 300 ms apart
    // (two reads, two uploads unless the worker holds the first half back).
    // Its JUnit report names a test after the value and fails it with the value in the message.
    let junit = "printf '<testsuite name=\"s-%s\"><testcase name=\"t-%s\"><failure message=\"got %s\"/></testcase></testsuite>' \"$MY_SECRET\" \"$MY_SECRET\" \"$MY_SECRET\" > r.xml";
    let file = format!(
        "jobs:\n  show:\n    env: {{ MY_SECRET: from-the-file }}\n    reports: [r.xml]\n    steps:\n      - echo \"the secret is $MY_SECRET.\"\n      - printf %s \"$MY_SECRET\" | head -c 10; sleep 0.3; printf '%s|\\n' \"$MY_SECRET\" | tail -c +11\n      - '{proves}'\n      - {}\n",
        serde_json::to_string(junit).unwrap()
    );
    let (_, commit) = repo.push_pipeline(&file);
    let db_url = database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", farm.data_dir.join("gantry.db").display()));
    let id = store::connect(&db_url)
        .await
        .unwrap()
        .get_repo("vault")
        .await
        .unwrap()
        .unwrap()
        .id;
    let fork = "jobs:\n  fork:\n    steps: ['test -z \"$MY_SECRET\"', 'test \"$GANTRY_PR_FROM_FORK\" = true']\n";
    support::pulls::pull_request_pipeline(&db_url, id, &commit, true, fork).await;
    let same = format!("jobs:\n  same:\n    steps: ['{proves}']\n");
    support::pulls::pull_request_pipeline(&db_url, id, &commit, false, &same).await;
    let _worker = farm.worker("vault-worker");

    for number in 1..=3 {
        let p = farm.finished_pipeline("vault", number).await;
        assert_eq!(p["status"], "success", "pipeline {number}: {p}");
    }
    let first = farm.finished_pipeline("vault", 1).await;
    let failure = &first["tests"]["failures"][0];
    assert_eq!(
        (&failure["suite"], &failure["name"], &failure["message"]),
        (&"s-***".into(), &"t-***".into(), &"got ***".into()),
        "{first:#}"
    );
    assert!(!first.to_string().contains(&secret), "{first:#}");
    let jobs = farm.finished_jobs("vault", 1).await;
    let log = &jobs[0].log;
    assert!(log.contains("the secret is ***.\n"), "{log}");
    assert!(
        log.contains("***|\n"),
        "the value split between two writes is masked: {log}"
    );
    assert!(
        !log.contains(&secret) && !log.contains(&secret[..10]),
        "{log}"
    );
    let job_id = jobs[0].json["id"].as_str().unwrap();
    let page = farm.page(&format!("/jobs/{job_id}")).await;
    assert!(
        page.contains("the secret is ***."),
        "the dashboard shows the masked log"
    );
    assert!(!page.contains(&secret));
    // Step offsets count the bytes the log holds: the second step starts right after the first's line.
    let shown = farm.get(&format!("/jobs/{job_id}")).await;
    let offsets: Vec<u64> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["log_offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        offsets[..2],
        [0, "the secret is ***.\n".len() as u64],
        "{shown}"
    );

    if database.is_none() {
        // At rest: sealed in the database, masked in the log; neither the file nor its WAL has the plain value.
        for file in ["gantry.db", "gantry.db-wal"] {
            let path = farm.data_dir.join(file);
            let bytes = std::fs::read(&path).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret in plain text",
                path.display()
            );
        }
        assert!(
            std::fs::metadata(farm.data_dir.join("gantry.db"))
                .unwrap()
                .len()
                > 0
        );
    }
    let server_log = std::fs::read_to_string(farm.data_dir.with_extension("log")).unwrap();
    assert!(
        !server_log.contains(&secret),
        "the server's log never shows the value"
    );
}

async fn secrets_are_refused_with_reasons_and_listed_without_values(database: Option<String>) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    farm.gantry(&["repo", "add", "named", "--url", "/nowhere.git"]);
    let http = reqwest::Client::new();
    let put = |name: &str, value: &str, token: Option<&str>| {
        let mut request = http
            .put(format!("{}/api/v1/repos/named/secrets/{name}", farm.url))
            .json(&serde_json::json!({ "value": value }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let admin = Some(farm.admin.as_str());
    for (name, value, status, says) in [
        ("GANTRY_TOKEN", "long enough", 400, "reserved"),
        ("CI", "long enough", 400, "reserved"),
        ("1BAD", "long enough", 400, "not a valid secret name"),
        ("SHORT", "abc", 400, "at least 4 bytes"),
    ] {
        let response = put(name, value, admin).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{name}: {body}"
        );
    }
    let response = put("OK_NAME", &"x".repeat(64 * 1024 + 1), admin)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400, "too long");
    let response = put("OK_NAME", "long enough", None).await.unwrap();
    assert_eq!(response.status().as_u16(), 401, "admin only");
    let response = http
        .put(format!("{}/api/v1/repos/missing/secrets/OK_NAME", farm.url))
        .bearer_auth(&farm.admin)
        .json(&serde_json::json!({ "value": "long enough" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    farm.gantry(&["secret", "set", "named", "B_TOKEN", "--value", "value-of-b"]);
    farm.gantry(&["secret", "set", "named", "A_TOKEN", "--value", "value-of-a"]);
    let listed = farm.gantry(&["secret", "list", "named"]);
    let names: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(names, ["A_TOKEN", "B_TOKEN"], "{listed}");
    assert!(!listed.contains("value-of"), "{listed}");
    let listed = http
        .get(format!("{}/api/v1/repos/named/secrets", farm.url))
        .bearer_auth(&farm.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains("updated_at") && !listed.contains("value-of"),
        "{listed}"
    );
    farm.gantry(&["secret", "rm", "named", "A_TOKEN"]);
    assert_eq!(farm.gantry(&["secret", "list", "named"]).lines().count(), 1);
    let gone = Command::new(GANTRY)
        .args(["secret", "rm", "named", "A_TOKEN"])
        .env("GANTRY_SERVER", &farm.url)
        .env("GANTRY_TOKEN", &farm.admin)
        .output()
        .unwrap();
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no secret named"));
}

/// Plays an old or broken worker over HTTP: the lease carries the secret, the worker uploads it as is, and the
/// server overwrites it (with as many `*`, so the offsets the worker counts still hold).
async fn a_worker_that_uploads_a_secret_unmasked_has_it_masked_by_the_server(
    database: Option<String>,
) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let api = format!("{}/api/v1", farm.url);
    let http = reqwest::Client::new();
    let token = farm.register_worker_by_hand("unmasking").await;
    let repo = farm.hooked_repo("leaky");
    farm.gantry(&[
        "secret",
        "set",
        "leaky",
        "TOKEN",
        "--value",
        "leaky-value-42",
    ]);
    repo.push_pipeline("jobs:\n  leak:\n    steps: [echo $TOKEN]\n");
    let lease = farm.lease_by_hand(&token).await;
    assert_eq!(
        lease["secrets"],
        serde_json::json!([["TOKEN", "leaky-value-42"]])
    );
    let (id, lease_id) = (
        lease["job_id"].as_str().unwrap(),
        lease["lease_id"].as_str().unwrap(),
    );
    let append = |offset: usize, body: &'static str| {
        http.post(format!("{api}/jobs/{id}/log?offset={offset}"))
            .bearer_auth(&token)
            .header("x-gantry-lease", lease_id)
            .body(body)
            .send()
    };
    let first = "token leaky-value-42\n";
    assert!(append(0, first).await.unwrap().status().is_success());
    assert!(
        append(first.len(), "done\n")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let log = farm.get_bytes(&format!("/jobs/{id}/log")).await;
    assert_eq!(
        String::from_utf8(log).unwrap(),
        "token **************\ndone\n"
    );
    // Its report too: the message and a test case named after the value, failing with it in its message.
    let report = serde_json::json!({
        "exit_code": 1,
        "failure_kind": "exit",
        "message": "step 1 printed leaky-value-42",
        "steps": [],
        "log_length": first.len() + 5,
        "tests": [{
            "suite": "suite leaky-value-42",
            "name": "test_leaky-value-42",
            "status": "failed",
            "message": "expected leaky-value-42"
        }]
    });
    let completed = http
        .post(format!("{api}/jobs/{id}/complete"))
        .bearer_auth(&token)
        .header("x-gantry-lease", lease_id)
        .json(&report)
        .send()
        .await
        .unwrap();
    assert!(completed.status().is_success(), "{}", completed.status());
    let p = farm.finished_pipeline("leaky", 1).await;
    let shown = p.to_string();
    assert!(!shown.contains("leaky-value-42"), "{p:#}");
    let failure = &p["tests"]["failures"][0];
    assert_eq!(failure["name"], "test_***", "{p:#}");
    assert_eq!(failure["message"], "expected ***", "{p:#}");
    let job = farm.get(&format!("/jobs/{id}")).await;
    assert!(!job.to_string().contains("leaky-value-42"), "{job:#}");
}
