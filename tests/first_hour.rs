//! A newcomer's first hour: a job named as a user sees it (repository, pipeline number, job name) by `gantry job
//! log` and `gantry job show`, as the README's "Try it" does; the git hook found through PATH; `gantry lint`
//! pointing at the mistake with a hint; a push that shows the verdict of its pipeline file; a commit without one
//! that makes no pipeline and says why.

mod support;

use std::path::Path;
use std::time::Duration;
use support::farm::{Farm, GANTRY, gantry_fails};
use support::run;

#[test]
fn jobs_are_named_by_repository_number_and_name() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up();
        let repo = farm.hooked_repo("demo");
        repo.push_pipeline("jobs:\n  hello:\n    steps: [\"echo hello from the job\"]\n");
        // Straight after the push, as in "Try it": the command waits for the pipeline's jobs.
        let followed = farm.gantry(&["job", "log", "demo", "1", "hello", "--follow"]);
        assert!(followed.contains("hello from the job"), "{followed}");
        let log = farm.gantry(&["job", "log", "demo", "1", "hello"]);
        assert_eq!(log, followed);
        let shown = farm.gantry(&["job", "show", "demo", "1", "hello"]);
        assert!(shown.starts_with("hello\tsuccess"), "{shown}");
        let pipeline = farm.gantry(&["pipeline", "show", "demo", "1"]);
        assert!(
            pipeline.contains("gantry job log demo 1 hello --follow"),
            "{pipeline}"
        );
        let wrong = gantry_fails(
            &farm,
            Some(&farm.admin),
            &["job", "log", "demo", "1", "nope"],
        );
        assert!(
            wrong.contains("has no job \"nope\"; its jobs: hello"),
            "{wrong}"
        );
        let half = gantry_fails(&farm, Some(&farm.admin), &["job", "log", "demo", "1"]);
        assert!(half.contains("REPO NUMBER JOB"), "{half}");
    });
}

#[test]
fn the_git_hook_finds_gantry_on_path_when_the_binary_it_was_installed_with_is_gone() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up();
        let repo = farm.hooked_repo("moved");
        // As after `cargo clean`, or a binary run from a build tree that is gone: the hook's path leads nowhere.
        let hook = repo.bare.join("hooks/post-receive");
        let text = std::fs::read_to_string(&hook).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("GANTRY_BIN="))
            .unwrap()
            .to_owned();
        std::fs::write(&hook, text.replace(&line, "GANTRY_BIN='/nowhere/gantry'")).unwrap();
        // `gantry` only on PATH.
        let bin = support::scratch_dir("path-bin");
        std::os::unix::fs::symlink(support::farm::GANTRY, bin.join("gantry")).unwrap();
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        std::fs::write(
            repo.work.join(".gantry.yml"),
            "jobs:\n  a: { steps: [\"true\"] }\n",
        )
        .unwrap();
        support::git::git(&repo.work, &["add", "-A"]);
        support::git::git(&repo.work, &["commit", "-qm", "on PATH"]);
        let pushed = std::process::Command::new("git")
            .current_dir(&repo.work)
            .args(["push", "origin", "HEAD:refs/heads/main"])
            .env("PATH", &path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&pushed.stderr).into_owned();
        assert!(pushed.status.success(), "{said}");
        // `gantry notify` answered (the fallback without gantry would say "sent to").
        assert!(said.contains("refs/heads/main: pipeline #1"), "{said}");
        let p = farm.finished_pipeline("moved", 1).await;
        assert_eq!(p["status"], "success", "{p:#}\n{said}");
    });
}

/// `gantry lint` on `text` in a fresh directory: exit status, stdout, stderr.
fn lint(text: &str) -> (bool, String, String) {
    let dir = support::scratch_dir("lint");
    std::fs::write(dir.join(".gantry.yml"), text).unwrap();
    let out = std::process::Command::new(GANTRY)
        .arg("lint")
        .arg(&dir)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn lint_points_at_the_mistake_with_a_caret_and_a_hint() {
    // The `[` opened on line 3 and never closed: reported there, not on line 4 where the parser gave up.
    let (ok, _, said) = lint("jobs:\n  test:\n    steps: [echo hi\n    image: host\n");
    assert!(!ok, "{said}");
    assert!(
        said.contains(".gantry.yml:3:12: error: this `[` is never closed"),
        "{said}"
    );
    assert!(
        said.contains("3 |     steps: [echo hi\n  |            ^\n"),
        "{said}"
    );
    assert!(said.contains("hint: close it with `]` on line 3"), "{said}");
    let (ok, _, said) = lint("jobs:\n  test:\n    steps:\n      - echo a: b\n");
    assert!(!ok);
    assert!(said.contains(":4:9: error:"), "{said}");
    assert!(
        said.contains("quote the whole text: `- 'echo a: b'`"),
        "{said}"
    );
    let (ok, said, _) = lint(
        "jobs:\n  build:\n    steps: [make]\n  test:\n    needs: [build]\n    steps: [make test, make check]\n",
    );
    assert!(ok, "{said}");
    assert!(said.contains(".gantry.yml: ok, 2 jobs"), "{said}");
    assert!(
        said.contains("  test: image host; 2 steps; needs build"),
        "{said}"
    );
}

/// Commits `.gantry.yml` with `text` (none for `None`) and pushes; what the hook printed.
fn push(work: &Path, text: Option<&str>) -> String {
    match text {
        Some(text) => std::fs::write(work.join(".gantry.yml"), text).unwrap(),
        None => {
            let _ = std::fs::remove_file(work.join(".gantry.yml"));
        }
    }
    support::git::git(work, &["add", "-A"]);
    support::git::git(work, &["commit", "-qm", "a push", "--allow-empty"]);
    let pushed = std::process::Command::new("git")
        .current_dir(work)
        .args(["push", "origin", "HEAD:refs/heads/main"])
        // The hook waits 2 s by default; this shared machine may take longer to fetch and read the file.
        .env("GANTRY_VERDICT_WAIT", "5")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&pushed.stderr).into_owned();
    assert!(pushed.status.success(), "{said}");
    said
}

#[test]
fn a_push_shows_the_verdict_of_its_pipeline_file_and_a_commit_without_one_makes_no_pipeline() {
    run(Duration::from_secs(120), async {
        let farm = Farm::up();
        let repo = farm.hooked_repo("verdict");
        let said = push(
            &repo.work,
            Some("jobs:\n  test:\n    steps:\n      - echo a: b\n"),
        );
        assert!(
            said.contains(
                "gantry: refs/heads/main: pipeline #1 (created): error: .gantry.yml line 4, column 9: expected \
                 string scalar (hint: YAML reads `: ` as a key and its value; quote the whole text: `- 'echo a: b'`)"
            ),
            "{said}"
        );
        let said = push(
            &repo.work,
            Some(
                "jobs:\n  build:\n    steps: [\"true\"]\n  test:\n    needs: [build]\n    steps: [\"true\"]\n",
            ),
        );
        assert!(
            said.contains("gantry: refs/heads/main: pipeline #2 (created): 2 jobs: build, test"),
            "{said}"
        );
        assert!(
            said.contains("gantry: follow it: gantry pipeline show verdict 2"),
            "{said}"
        );
        let said = push(&repo.work, None);
        assert!(
            said.contains("gantry: refs/heads/main: no pipeline: no .gantry.yml at this commit"),
            "{said}"
        );
        let pipelines = farm.get("/repos/verdict/pipelines").await;
        let numbers: Vec<i64> = pipelines["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["number"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, [2, 1], "no pipeline for the commit without a file");
        let deliveries = farm.get("/repos/verdict/deliveries").await;
        let newest = &deliveries["deliveries"][0];
        assert_eq!(newest["outcome"], "ignored", "{deliveries:#}");
        assert_eq!(
            newest["reason"], "no .gantry.yml at this commit",
            "{deliveries:#}"
        );
        assert_eq!(
            farm.finished_pipeline("verdict", 2).await["status"],
            "success"
        );
    });
}
