//! A remote that hangs (accepts the connection, then says nothing) fails the server's fetch after
//! `git_fetch_timeout`, saying so, and holds its repository no longer: the next push is answered as quickly.

mod support;

use std::time::{Duration, Instant};
use support::farm::Farm;
use support::git::Repo;

#[test]
fn a_remote_that_hangs_fails_the_pipeline_after_the_fetch_timeout_and_frees_the_repository() {
    support::run(Duration::from_secs(120), async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/stuck.git", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().collect();
            drop(held);
        });
        let farm = Farm::up_with_config("git_fetch_timeout = \"1s\"\n", &[]);
        let repo = Repo::new(&support::scratch_dir("stuck"));
        farm.gantry(&["repo", "add", "stuck", "--url", &url]);
        let out = farm.gantry(&[
            "hook",
            "install",
            repo.bare.to_str().unwrap(),
            "--repo",
            "stuck",
        ]);
        assert!(out.contains("installed"), "{out}");
        for number in 1..=2 {
            let pushed = Instant::now();
            repo.push_pipeline("jobs:\n  a:\n    steps: [\"true\"]\n");
            let p = farm.finished_pipeline("stuck", number).await;
            assert_eq!(p["status"], "error", "{p}");
            let message = p["message"].as_str().unwrap();
            assert!(message.contains("git_fetch_timeout"), "{message}");
            assert!(message.contains("1 s"), "{message}");
            // A second or so, whatever the push before it left behind.
            assert!(
                pushed.elapsed() < Duration::from_secs(20),
                "{:?}",
                pushed.elapsed()
            );
        }
    });
}
