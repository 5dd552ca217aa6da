//! The dashboard in a real browser (headless Chromium): the job page's log grows live over SSE without a
//! reload, with step boundaries and exit codes, and everything a job prints is shown as text, never as markup.

mod support;

use std::process::Command;
use std::time::Duration;
use support::farm::Farm;
use support::{eventually, run, scratch_dir};

/// Loads `url` in headless Chromium, lets its scripts run for up to `budget` (virtual time, which follows real
/// time while the page waits on the network), and returns the DOM as it then is.
fn browse(url: &str, budget: Duration) -> String {
    let profile = scratch_dir("chromium-profile");
    let out = Command::new("timeout")
        .arg("90")
        .arg("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .args([
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .args(["--dump-dom", url])
        .output()
        .expect("headless Chromium is needed for the dashboard tests: apt-get install chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_job_page_shows_the_log_growing_live_and_escapes_what_jobs_print() {
    run(Duration::from_secs(300), async {
        let farm = Farm::up();
        let repo = farm.hooked_repo("dash");
        repo.push_pipeline(
            "jobs:\n  live:\n    steps:\n      - sleep 2\n      - \"echo '<script>alert(1)</script>'; for i in $(seq 1 30); do echo tick-$i; sleep 0.1; done\"\n",
        );
        let job = eventually("the job to start", Duration::from_secs(60), || async {
            let p = farm.get("/repos/dash/pipelines/1").await;
            let job = &p["jobs"][0];
            (job["status"] == "running").then(|| job["id"].as_str().unwrap().to_owned())
        })
        .await;
        let url = format!("{}/jobs/{job}", farm.url);
        let dom = tokio::task::spawn_blocking(move || browse(&url, Duration::from_secs(30)))
            .await
            .unwrap();

        // The page was loaded while step 1 slept, so every tick came in through the live stream.
        let positions: Vec<usize> = (1..=30)
            .map(|i| {
                dom.find(&format!("tick-{i}\n"))
                    .unwrap_or_else(|| panic!("tick-{i} missing:\n{dom}"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "the lines must appear in order"
        );
        assert!(
            dom.contains(r#"id="job-status" class="status status-success">success"#),
            "the status must follow the job:\n{dom}"
        );
        assert_eq!(
            dom.matches(r#"class="exit">exit 0"#).count(),
            2,
            "both steps end with their exit code:\n{dom}"
        );
        let step2 = dom
            .find("<strong>Step 2</strong>")
            .expect("a section for step 2");
        assert!(
            step2 < positions[0],
            "step 2's output belongs under its heading"
        );
        assert!(
            dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "printed markup must be shown as text:\n{dom}"
        );
        assert!(
            !dom.contains("<script>alert(1)"),
            "printed markup must never become an element"
        );

        let pipeline = browse(
            &format!("{}/repos/dash/pipelines/1", farm.url),
            Duration::from_secs(2),
        );
        assert!(
            pipeline.contains("live") && pipeline.contains("status-success"),
            "{pipeline}"
        );
        let index = browse(&format!("{}/", farm.url), Duration::from_secs(2));
        assert!(index.contains("dash #1"), "{index}");
    });
}

#[test]
fn the_delivery_pages_show_what_arrived_as_text() {
    run(Duration::from_secs(300), async {
        let farm = Farm::up();
        farm.gantry(&[
            "repo",
            "add",
            "dlv",
            "--url",
            "/nowhere.git",
            "--secret",
            "dlv-secret",
        ]);
        let body = br#"{"ref":"refs/heads/main","after":"<img src=x onerror=alert(1)>"}"#.to_vec();
        let signature = support::signature("dlv-secret", &body);
        let refused = farm
            .post_raw(
                "/hooks/generic?repo=dlv",
                &[("x-gantry-signature", signature)],
                body,
            )
            .await;
        assert_eq!(refused.status(), 400);
        let id = farm.get("/repos/dlv/deliveries").await["deliveries"][0]["id"].clone();
        for path in [
            "/repos/dlv".to_owned(),
            format!("/repos/dlv/deliveries/{id}"),
        ] {
            let url = format!("{}{path}", farm.url);
            let dom = tokio::task::spawn_blocking(move || browse(&url, Duration::from_secs(2)))
                .await
                .unwrap();
            assert!(dom.contains("refused"), "{path}: {dom}");
            assert!(
                dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
                "{path}: shown as text: {dom}"
            );
            assert!(
                !dom.contains("<img"),
                "{path}: no element made of it: {dom}"
            );
        }
    });
}

#[test]
fn a_page_that_does_not_exist_answers_a_page_and_the_api_answers_json() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up();
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{}{path}", farm.url)).send();
        for path in [
            "/no/such/page",
            "/repos/nobody",
            "/repos/nobody/pipelines/1",
            "/jobs/not-a-job",
        ] {
            let answer = get(path).await.unwrap();
            assert_eq!(answer.status(), 404, "{path}");
            let kind = answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(kind.starts_with("text/html"), "{path}: {kind}");
            let body = answer.text().await.unwrap();
            assert!(body.contains("<a href=\"/\">"), "{path}: {body}");
        }
        // The reason repeats what the visitor asked for: it is escaped like everything a page shows.
        let answer = get("/repos/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
            .await
            .unwrap();
        assert_eq!(answer.status(), 404);
        let body = answer.text().await.unwrap();
        assert!(!body.contains("<script>"), "{body}");
        assert!(body.contains("&lt;script&gt;"), "{body}");
        for path in ["/api/v1/no/such/route", "/api/v1/repos/nobody/pipelines"] {
            let answer = get(path).await.unwrap();
            assert_eq!(answer.status(), 404, "{path}");
            let body: serde_json::Value = answer.json().await.unwrap();
            assert!(body["error"].is_string(), "{path}: {body}");
        }
    });
}
