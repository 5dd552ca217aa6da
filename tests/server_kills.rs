//! Durability (issue 4, acceptance 6; docs/data-model.md): the server is SIGKILLed again and again while 200 signed
//! webhooks are sent, each retried until it gets a 2xx, and a worker runs the pipelines they create. Every
//! acknowledged delivery has exactly one pipeline, and no job runs twice. Real `gantry server` and `gantry
//! worker` processes, on SQLite and PostgreSQL.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use support::farm::Farm;

const DELIVERIES: usize = 200;
const SENDERS: usize = 4;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends delivery `id` until the server answers 2xx; returns the pipeline number it answered with.
async fn deliver(http: &reqwest::Client, url: &str, secret: &str, id: &str, body: &str) -> i64 {
    let signature = support::signature(secret, body.as_bytes());
    loop {
        let sent = http
            .post(format!("{url}/hooks/git?repo=kills"))
            .header("x-gantry-delivery", id)
            .header("x-gantry-signature", &signature)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(answer) = sent
            && answer.status().is_success()
        {
            let outcome: serde_json::Value = answer.json().await.unwrap();
            return outcome["pipeline"]
                .as_i64()
                .expect("a 2xx names its pipeline");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_databases!(
    a_server_killed_again_and_again_loses_no_acknowledged_delivery_and_runs_no_job_twice
);

async fn a_server_killed_again_and_again_loses_no_acknowledged_delivery_and_runs_no_job_twice(
    database: Option<String>,
) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut flags = vec![
        "--listen",
        &listen,
        "--admin-token",
        "kills-admin-token",
        "--lease-secs",
        "3",
    ];
    if let Some(url) = &database {
        flags.extend(["--database", url]);
    }
    let mut farm = Farm::serve_with(&flags);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let worker = farm.worker_with(&format!("survivor-{tag}"), &["--capacity", "4"]);
    let repo = farm.hooked_repo("kills");
    let (_, commit) = repo.push_pipeline("jobs:\n  once:\n    steps: [echo ran-once]\n");
    let http = reqwest::Client::new();
    let shown: serde_json::Value = http
        .get(format!("{}/api/v1/repos/kills/secret", farm.url))
        .bearer_auth(&farm.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = shown["secret"]
        .as_str()
        .expect("the admin sees the secret")
        .to_owned();
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{}","after":"{commit}"}}"#,
        "0".repeat(40)
    );
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (http, url, secret, body) =
            (http.clone(), farm.url.clone(), secret.clone(), body.clone());
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in (sender..DELIVERIES).step_by(SENDERS) {
                let id = format!("kill-{i}");
                acked.push((id.clone(), deliver(&http, &url, &secret, &id, &body).await));
                // Spread the deliveries over many lives of the server.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        }));
    }
    // Kill the server at uneven moments until every delivery was acknowledged.
    let mut kills = 0;
    let mut pause = 97;
    while !senders.iter().all(|s| s.is_finished()) {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        farm.kill_and_restart();
        kills += 1;
        pause = 30 + (pause * 7 + 13) % 150;
    }
    let mut acked = BTreeMap::new();
    for sender in senders {
        for (id, number) in sender.await.unwrap() {
            acked.insert(id, number);
        }
    }
    eprintln!("{DELIVERIES} deliveries acknowledged across {kills} kills of the server");
    assert!(kills >= 5, "the server was killed only {kills} times");
    assert_eq!(acked.len(), DELIVERIES);
    let numbers: HashSet<i64> = acked.values().copied().collect();
    assert_eq!(
        numbers.len(),
        DELIVERIES,
        "every acknowledged delivery has its own pipeline"
    );

    // Every pipeline the server has: the push's, and one per delivery, no more.
    let mut all = Vec::new();
    let mut path = "/repos/kills/pipelines?limit=500".to_owned();
    loop {
        let page = farm.get(&path).await;
        all.extend(
            page["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["number"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_i64() {
            Some(cursor) => path = format!("/repos/kills/pipelines?limit=500&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(all.len(), DELIVERIES + 1, "pipelines: {all:?}");
    assert!(numbers.iter().all(|n| all.contains(n)));

    for number in all {
        let p = farm.finished_pipeline("kills", number).await;
        assert_eq!(
            p["status"],
            "success",
            "#{number}: {p:#}\n{}",
            worker.output()
        );
        let job = &p["jobs"][0];
        let id = job["id"].as_str().unwrap();
        let attempts = job["attempt"].as_u64().unwrap();
        let last = farm
            .get_bytes(&format!("/jobs/{id}/log?attempt={attempts}"))
            .await;
        assert!(String::from_utf8_lossy(&last).contains("ran-once"));
        for earlier in 1..attempts {
            let log = farm
                .get_bytes(&format!("/jobs/{id}/log?attempt={earlier}"))
                .await;
            assert!(
                !String::from_utf8_lossy(&log).contains("ran-once"),
                "#{number}'s job ran in attempt {earlier} and again in {attempts}"
            );
        }
    }
}
