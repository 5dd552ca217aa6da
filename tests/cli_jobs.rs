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
