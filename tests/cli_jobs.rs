//! A job can be named as a user sees it — repository, pipeline number, job name — by `gantry job log` and `gantry
//! job show`, as the README's "Try it" does; `pipeline show` prints the command to follow one.

mod support;

use std::time::Duration;
use support::farm::{Farm, gantry_fails};
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
