//! GitHub deliveries against the real server: real payloads from `tests/fixtures/webhooks/github/` (see its
//! SOURCES.md), signed with the repository's secret.

mod support;

use std::time::Duration;
use support::farm::Farm;
use support::run;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/webhooks/github/push-branch-update.go-scm.json"
);

fn sign(secret: &str, body: &[u8]) -> String {
    support::signature(secret, body)
}

fn headers(event: &str, signature: Option<String>) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", uuid::Uuid::now_v7().to_string()),
        ("content-type", "application/json".to_owned()),
    ];
    if let Some(sig) = signature {
        h.push(("x-hub-signature-256", sig));
    }
    h
}

async fn pipeline_count(farm: &Farm) -> usize {
    farm.get("/repos/hello/pipelines").await["pipelines"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn signed_github_pushes_are_accepted_and_anything_else_is_refused_and_creates_nothing() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up();
        farm.gantry(&[
            "repo",
            "add",
            "hello",
            "--url",
            "https://github.com/Codertocat/Hello-World.git",
            "--forge",
            "github",
            "--secret",
            "topsecret",
        ]);
        let body = std::fs::read(FIXTURE).unwrap();
        let signature = sign("topsecret", &body);
        // The published vector for this exact file (drone/go-scm's TestWebhookValid, quoted in SOURCES.md).
        assert_eq!(
            signature,
            "sha256=e3bfe744d4e2e29ed990bde8acfb8255ca51ef65f99657767989fb6349f32957"
        );

        // The repository is found from the payload's clone URL; no ?repo= needed.
        let push_headers = headers("push", Some(signature.clone()));
        let accepted = farm
            .post_raw("/hooks/github", &push_headers, body.clone())
            .await;
        assert_eq!(accepted.status(), 201);
        let outcome: serde_json::Value = accepted.json().await.unwrap();
        assert_eq!(outcome["outcome"], "created");
        assert_eq!(outcome["pipeline"], 1);
        let p = farm.get("/repos/hello/pipelines/1").await;
        assert_eq!(p["commit"], "199eddf46df50de8d02e99bf1c5fdb4101338224");
        assert_eq!(p["ref"], "refs/heads/master");
        assert_eq!(p["event"], "push");

        // The same delivery again (GitHub redelivers with the same id) creates nothing new.
        let again = farm
            .post_raw("/hooks/github", &push_headers, body.clone())
            .await;
        assert_eq!(again.status(), 200);
        assert_eq!(
            again.json::<serde_json::Value>().await.unwrap()["outcome"],
            "duplicate"
        );

        let mut tampered = body.clone();
        let i = tampered.iter().position(|&b| b == b'H').unwrap();
        tampered[i] = b'J';
        let refused = farm
            .post_raw(
                "/hooks/github",
                &headers("push", Some(signature.clone())),
                tampered,
            )
            .await;
        assert_eq!(refused.status(), 401);
        let unsigned = farm
            .post_raw("/hooks/github", &headers("push", None), body.clone())
            .await;
        assert_eq!(unsigned.status(), 401);
        let wrong_secret = farm
            .post_raw(
                "/hooks/github",
                &headers("push", Some(sign("not-the-secret", &body))),
                body.clone(),
            )
            .await;
        assert_eq!(wrong_secret.status(), 401);

        let mut huge = body.clone();
        huge.resize(26 * 1024 * 1024, b' ');
        let too_big = farm
            .post_raw(
                "/hooks/github",
                &headers("push", Some(sign("topsecret", &huge))),
                huge,
            )
            .await;
        assert_eq!(too_big.status(), 413);
        let said: serde_json::Value = too_big.json().await.unwrap();
        assert!(
            said["error"].as_str().unwrap().contains("at most 26214400"),
            "{said}"
        );

        let ping = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhooks/github/ping.json"
        ))
        .unwrap();
        let ping_answer = farm
            .post_raw(
                "/hooks/github?repo=hello",
                &headers("ping", Some(sign("topsecret", &ping))),
                ping,
            )
            .await;
        assert_eq!(ping_answer.status(), 200);
        assert_eq!(
            ping_answer.json::<serde_json::Value>().await.unwrap()["outcome"],
            "ignored"
        );

        let deleted = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/webhooks/github/push-branch-deleted.go-scm.json"
        ))
        .unwrap();
        let deletion = farm
            .post_raw(
                "/hooks/github?repo=hello",
                &headers("push", Some(sign("topsecret", &deleted))),
                deleted,
            )
            .await;
        assert_eq!(deletion.status(), 200);
        assert_eq!(
            deletion.json::<serde_json::Value>().await.unwrap()["outcome"],
            "ignored"
        );

        assert_eq!(
            pipeline_count(&farm).await,
            1,
            "refused, duplicate and ignored deliveries must create nothing"
        );

        // This machine cannot reach github.com: the pipeline says why instead of silently doing nothing.
        let p = farm.finished_pipeline("hello", 1).await;
        assert_eq!(p["status"], "error");
        assert!(
            p["message"].as_str().unwrap().contains("could not fetch"),
            "{p:#}"
        );
    });
}

#[test]
fn webhooks_for_unknown_repositories_or_malformed_bodies_get_clear_errors() {
    run(Duration::from_secs(60), async {
        let farm = Farm::up();
        farm.gantry(&[
            "repo",
            "add",
            "hello",
            "--url",
            "/nowhere",
            "--forge",
            "github",
            "--secret",
            "topsecret",
        ]);
        let body = std::fs::read(FIXTURE).unwrap();
        let unknown = farm
            .post_raw(
                "/hooks/github",
                &headers("push", Some(sign("topsecret", &body))),
                body,
            )
            .await;
        assert_eq!(unknown.status(), 404);
        let garbage = b"{not json".to_vec();
        let malformed = farm
            .post_raw(
                "/hooks/github?repo=hello",
                &headers("push", Some(sign("topsecret", &garbage))),
                garbage,
            )
            .await;
        assert_eq!(malformed.status(), 400);
        let msg: serde_json::Value = malformed.json().await.unwrap();
        assert!(
            msg["error"]
                .as_str()
                .unwrap()
                .contains("not a valid GitHub push payload"),
            "{msg}"
        );
        let git_body = br#"{"ref":"refs/heads/main","before":"0","after":"abc"}"#.to_vec();
        let no_repo = farm
            .post_raw(
                "/hooks/git",
                &[("x-gantry-signature", sign("topsecret", &git_body))],
                git_body,
            )
            .await;
        assert_eq!(no_repo.status(), 400);
        assert_eq!(pipeline_count(&farm).await, 0);
    });
}

fn peak_memory(pid: u32) -> u64 {
    support::memory_of(pid, "VmHWM")
}

#[test]
fn a_big_unsigned_post_is_neither_parsed_whole_nor_kept() {
    run(Duration::from_secs(120), async {
        let farm = Farm::serve_with(&[]);
        farm.gantry(&[
            "repo",
            "add",
            "hello",
            "--url",
            "https://github.com/Codertocat/Hello-World.git",
            "--forge",
            "github",
            "--secret",
            "the-webhook-secret",
        ]);
        // 24 MB of small JSON objects (a parsed tree of them is several times that), with a field redaction
        // would look for; nobody signed it.
        let mut body = String::from("{\"token\": \"planted\", \"items\": [");
        while body.len() < 24 << 20 {
            body.push_str("{\"a\": 1, \"b\": [true, null]},");
        }
        body.push_str("{}]}");
        let before = peak_memory(farm.pid());
        for _ in 0..3 {
            let refused = farm
                .post_raw(
                    "/hooks/github?repo=hello",
                    &headers("push", None),
                    body.clone().into_bytes(),
                )
                .await;
            assert_eq!(refused.status(), 401);
        }
        let grown = peak_memory(farm.pid()) - before;
        eprintln!(
            "3 unsigned 24 MB posts: the server's peak grew by {} MiB",
            grown >> 20
        );
        let deliveries = farm.get("/repos/hello/deliveries").await;
        let id = deliveries["deliveries"][0]["id"].as_i64().unwrap();
        let kept = farm.get(&format!("/repos/hello/deliveries/{id}")).await;
        let kept = kept["body"].as_str().unwrap();
        assert!(
            kept.starts_with("(a body of ") && kept.contains("not kept"),
            "{:.300}",
            kept
        );
        assert!(
            grown < 100 << 20,
            "unsigned posts grew the server by {} MiB",
            grown >> 20
        );
    });
}
