//! Build once, test everywhere (issue 4, acceptance 1): a job compiles a binary, four shards on two workers with
//! two slots each receive it and run at the same time, their JUnit reports add up on the pipeline, and a last
//! job receives every shard's files. Also what goes wrong: patterns matching nothing, two shards uploading one
//! path, uploads past the limit, wrong checksums and stale leases; on a private farm, a worker downloads what its
//! running job needs and nothing else. Real `gantry server` and `gantry worker`
//! processes, on SQLite and PostgreSQL.

mod support;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use support::farm::{Farm, job};

const BUILD_TEST_REPORT: &str = r#"
jobs:
  build:
    steps:
      - |
        mkdir -p bin
        cat > app.c <<'EOF'
        #include <stdio.h>
        int main(int argc, char **argv) { printf("the built binary runs in %s\n", argv[1]); return 0; }
        EOF
        cc -o bin/app app.c
    artifacts: [bin/app]
  test:
    needs: [build]
    parallel: 4
    steps:
      - ./bin/app shard-$GANTRY_SHARD_INDEX
      - sleep 3
      - |
        mkdir -p junit
        if [ "$GANTRY_SHARD_INDEX" = 2 ]; then verdict='<failure message="off by one">expected 2</failure>'; fi
        echo "<testsuite name=\"shard-$GANTRY_SHARD_INDEX\"><testcase name=\"starts\" time=\"0.5\"/><testcase name=\"counts\">$verdict</testcase></testsuite>" > junit/shard-$GANTRY_SHARD_INDEX.xml
    reports: [junit/*.xml]
    artifacts: [junit]
  report:
    needs: [test]
    steps:
      - test "$(ls junit | wc -l)" = 4
      - test ! -e bin/app
"#;

on_both_databases!(
    a_built_binary_reaches_four_shards_running_at_once_and_their_reports_add_up,
    outputs_that_cannot_be_collected_or_handed_on_fail_with_a_reason,
    uploads_need_the_lease_and_the_right_checksum,
    on_a_private_farm_a_job_gets_what_it_needs_and_a_worker_nothing_else,
);

async fn a_built_binary_reaches_four_shards_running_at_once_and_their_reports_add_up(
    database: Option<String>,
) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let workers = [
        farm.worker_with(&format!("shards-a-{tag}"), &["--capacity", "2"]),
        farm.worker_with(&format!("shards-b-{tag}"), &["--capacity", "2"]),
    ];
    let repo = farm.hooked_repo("btr");
    repo.push_pipeline(BUILD_TEST_REPORT);
    let jobs = farm.finished_jobs("btr", 1).await;
    let p = farm.get("/repos/btr/pipelines/1").await;
    let logs: Vec<String> = workers.iter().map(|w| w.output()).collect();
    assert_eq!(p["status"], "success", "{p:#}\n{}", logs.join("\n"));

    let build = job(&jobs, "build");
    let built = &build.json["id"].as_str().unwrap();
    let listed = farm.get(&format!("/jobs/{built}/artifacts")).await;
    assert_eq!(listed[0]["path"], "bin/app", "{listed:#}");
    assert_eq!(listed[0]["mode"], 0o755, "the binary stays executable");
    let bytes = farm
        .get_bytes(&format!("/jobs/{built}/artifacts/bin/app"))
        .await;
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!(listed[0]["size"], bytes.len());
    assert_eq!(listed[0]["sha256"], hex::encode(Sha256::digest(&bytes)));

    let mut spans = Vec::new();
    for shard in 1..=4 {
        let test = job(&jobs, &format!("test:{shard}"));
        assert!(
            test.log
                .contains(&format!("the built binary runs in shard-{shard}")),
            "{}",
            test.log
        );
        let time = |key: &str| {
            test.json[key]
                .as_str()
                .unwrap()
                .parse::<DateTime<Utc>>()
                .unwrap()
        };
        spans.push((time("started_at"), time("finished_at")));
    }
    let last_start = spans.iter().map(|s| s.0).max().unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(
        last_start < first_end,
        "the four shards ran at the same time on 2 workers × 2 slots: {spans:?}"
    );
    let hosts: std::collections::HashSet<_> = (1..=4)
        .map(|s| job(&jobs, &format!("test:{s}")).json["worker"].clone())
        .collect();
    assert_eq!(hosts.len(), 2, "both workers ran shards");

    let tests = &p["tests"];
    assert_eq!(
        (&tests["total"], &tests["passed"], &tests["failed"]),
        (&8.into(), &7.into(), &1.into()),
        "{p:#}"
    );
    assert_eq!(tests["failures"][0]["job"], "test:2");
    assert_eq!(tests["failures"][0]["suite"], "shard-2");
    assert_eq!(tests["failures"][0]["message"], "off by one");
    let page = farm.page("/repos/btr/pipelines/1").await;
    assert!(
        page.contains("8 tests") && page.contains("off by one"),
        "the dashboard shows the totals and the failure: {page}"
    );
}

async fn outputs_that_cannot_be_collected_or_handed_on_fail_with_a_reason(
    database: Option<String>,
) {
    let limit = support::scratch_dir("artifact-limit").with_extension("toml");
    std::fs::write(&limit, "artifact_limit_bytes = 100000\n").unwrap();
    let config = limit.to_str().unwrap();
    let farm = Farm::serve_on(database.as_deref(), &["--config", config]);
    let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let _worker = farm.worker_with(&format!("outputs-{tag}"), &["--capacity", "2"]);
    let repo = farm.hooked_repo("outputs");
    repo.push_pipeline(
        r#"
jobs:
  missing:
    steps: [echo nothing]
    artifacts: [dist/app.tar]
  big:
    steps: [head -c 200000 /dev/zero > big.bin]
    artifacts: [big.bin]
  shard:
    parallel: 2
    steps: [echo $GANTRY_SHARD_INDEX > out.txt]
    artifacts: [out.txt]
  gather:
    needs: [shard]
    steps: [cat out.txt]
  broken:
    steps: ["echo '<testsuite><testcase' > r.xml; exit 3"]
    reports: [r.xml]
"#,
    );
    let jobs = farm.finished_jobs("outputs", 1).await;
    let check = |name: &str, status: &str, kind: &str, words: &[&str]| {
        let j = &job(&jobs, name).json;
        assert_eq!(
            (j["status"].as_str(), j["failure_kind"].as_str()),
            (Some(status), Some(kind)),
            "{name}: {j:#}"
        );
        let message = j["message"].as_str().unwrap_or_default();
        for word in words {
            assert!(message.contains(word), "{name}: {message:?} lacks {word:?}");
        }
    };
    check(
        "missing",
        "failed",
        "artifacts",
        &["dist/app.tar", "matched no file"],
    );
    check("big", "failed", "artifacts", &["200000 bytes", "100000"]);
    check(
        "gather",
        "failed",
        "artifacts",
        &["out.txt", "shard:1", "shard:2"],
    );
    // A job that failed keeps its own failure; the unreadable report is added to what it says.
    check("broken", "failed", "exit", &["r.xml", "not JUnit XML"]);
}

/// Plays the worker's part over HTTP, so each refusal can be provoked on purpose.
async fn uploads_need_the_lease_and_the_right_checksum(database: Option<String>) {
    let farm = Farm::serve_on(database.as_deref(), &[]);
    let api = format!("{}/api/v1", farm.url);
    let http = reqwest::Client::new();
    let token = farm.register_worker_by_hand("by-hand").await;
    let repo = farm.hooked_repo("uploads");
    repo.push_pipeline("jobs:\n  hold:\n    steps: [x]\n    artifacts: [a]\n");
    let lease = farm.lease_by_hand(&token).await;
    let (id, lease_id) = (
        lease["job_id"].as_str().unwrap(),
        lease["lease_id"].as_str().unwrap(),
    );
    let put = |path: &str, lease: &str, sha: String, body: &'static str| {
        http.put(format!("{api}/jobs/{id}/artifacts/{path}"))
            .bearer_auth(&token)
            .header("x-gantry-lease", lease.to_owned())
            .header("x-gantry-sha256", sha)
            .header("x-gantry-mode", "755")
            .body(body)
            .send()
    };
    let sha = |body: &str| hex::encode(Sha256::digest(body.as_bytes()));
    let wrong = put("a", lease_id, sha("other"), "bytes").await.unwrap();
    assert_eq!(wrong.status(), 422, "a wrong checksum is refused");
    let other_lease = uuid::Uuid::now_v7().to_string();
    let stale = put("a", &other_lease, sha("bytes"), "bytes").await.unwrap();
    assert_eq!(stale.status(), 409, "another lease is refused");
    let escape = put("..%2Fescape", lease_id, sha("bytes"), "bytes")
        .await
        .unwrap();
    assert_eq!(
        escape.status(),
        400,
        "a path leaving the workspace is refused"
    );
    let stored = put("dir/a", lease_id, sha("bytes"), "bytes").await.unwrap();
    assert_eq!(stored.status(), 201);
    let listed: serde_json::Value = http
        .get(format!("{api}/jobs/{id}/artifacts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the good upload is there: {listed:#}"
    );
    assert_eq!(listed[0]["mode"], 0o755);
    let got = http
        .get(format!("{api}/jobs/{id}/artifacts/dir/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["x-gantry-sha256"], sha("bytes").as_str());
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"bytes");
    let missing = http
        .get(format!("{api}/jobs/{id}/artifacts/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// On a private farm every read needs a token; the worker's own token reads what its running job needs (before,
/// it counted as no token: the job that needed another failed with 401), and nothing more.
async fn on_a_private_farm_a_job_gets_what_it_needs_and_a_worker_nothing_else(
    database: Option<String>,
) {
    let farm = Farm::up_on(database.as_deref(), &["--private"]);
    let repo = farm.hooked_repo("closed");
    repo.push_pipeline(
        "jobs:\n  build:\n    steps: [echo built here > out.txt]\n    artifacts: [out.txt]\n  use:\n    needs: [build]\n    steps: [cat out.txt]\n",
    );
    let p = farm.finished_pipeline("closed", 1).await;
    assert_eq!(p["status"], "success", "{p:#}");
    let jobs = farm.finished_jobs("closed", 1).await;
    assert!(job(&jobs, "use").log.contains("built here"), "{p:#}");
    // A worker whose jobs need nothing of it: refused, as anyone without a read token.
    let stranger = farm.register_worker_by_hand("stranger").await;
    let build = p["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "build")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["", "/out.txt"] {
        let status = reqwest::Client::new()
            .get(format!("{}/api/v1/jobs/{build}/artifacts{path}", farm.url))
            .bearer_auth(&stranger)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "a stranger worker read artifacts{path}");
    }
}
