//! Checkouts from the server's mirror (docs/api.md, "Worker protocol"; docs/pipeline.md, "Checkout"): the
//! forge — a private repository served over smart HTTP by `git http-backend` behind basic credentials, its
//! fetches counted — is fetched once for a pipeline of four jobs on two workers, which fetch from the server;
//! a job asking for history and submodules gets a `.git` as deep as it asked and the submodule's files, the
//! submodule fetched with the same credentials; the mirror endpoint refuses a caller without the job's lease,
//! and pushes. Real `gantry server` and `gantry worker` processes.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;
use support::farm::{Farm, FinishedJob, job};
use support::git::{Repo, git};
use support::git_http::GitHttp;
use support::run;

/// A farm with the private repository `name` served by `server` and its post-receive hook installed.
fn private_repo(farm: &Farm, name: &str, server: &GitHttp, repo: &Repo, token: &str) {
    farm.gantry(&["repo", "add", name, "--url", &server.url("origin.git")]);
    farm.gantry(&[
        "repo",
        "set",
        name,
        "--clone-token",
        &format!("ci-bot:{token}"),
    ]);
    farm.gantry(&[
        "hook",
        "install",
        repo.bare.to_str().unwrap(),
        "--repo",
        name,
    ]);
}

#[test]
fn four_jobs_on_two_workers_cost_the_forge_one_fetch() {
    run(Duration::from_secs(240), async {
        let farm = Farm::serve_with(&[]);
        let dir = support::scratch_dir("one-fetch");
        let repo = Repo::new(&dir);
        let token = format!("tok-{}", uuid::Uuid::now_v7().simple());
        let forge = GitHttp::serve(&dir, "ci-bot", &token);
        private_repo(&farm, "fanned", &forge, &repo, &token);
        let tag = &uuid::Uuid::now_v7().simple().to_string()[24..];
        let _a = farm.worker_with(&format!("fan-a-{tag}"), &["--capacity", "2"]);
        let _b = farm.worker_with(&format!("fan-b-{tag}"), &["--capacity", "2"]);
        std::fs::write(repo.work.join("data.txt"), "the pushed file\n").unwrap();
        // Each shard holds its slot a while, so that both workers take some.
        let (_, sha) = repo.push_pipeline(
            "jobs:\n  shard:\n    parallel: 4\n    steps:\n      - cat data.txt\n      \
             - test ! -e .git && echo no-git=yes\n      - sleep 2\n",
        );
        let jobs = farm.finished_jobs("fanned", 1).await;
        assert_eq!(jobs.len(), 4);
        for j in &jobs {
            assert_eq!(j.json["status"], "success", "{}: {}", j.json, j.log);
            assert!(j.log.contains("the pushed file"), "{}", j.log);
            assert!(j.log.contains("no-git=yes"), "{}", j.log);
        }
        let workers: std::collections::BTreeSet<&str> = jobs
            .iter()
            .map(|j| j.json["worker"].as_str().unwrap())
            .collect();
        assert_eq!(workers.len(), 2, "both workers ran shards: {workers:?}");
        assert_eq!(
            forge.fetches.load(Ordering::SeqCst),
            1,
            "the forge was fetched once, by the server"
        );

        // The mirror endpoint: only the worker holding a job's lease, and only to fetch.
        let id = jobs[0].json["id"].as_str().unwrap();
        let url = format!(
            "{}/api/v1/jobs/{id}/source.git/info/refs?service=git-upload-pack",
            farm.url
        );
        let http = reqwest::Client::new();
        let anonymous = http.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
        let admin = http
            .get(&url)
            .bearer_auth(&farm.admin)
            .header("x-gantry-lease", uuid::Uuid::now_v7().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(admin.status(), 401, "the admin token is not a worker's");
        let token = farm.register_worker_by_hand(&format!("snoop-{tag}")).await;
        let snoop = http
            .get(&url)
            .bearer_auth(&token)
            .header("x-gantry-lease", uuid::Uuid::now_v7().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(snoop.status(), 403, "a worker without the lease");
        let push = http
            .post(format!(
                "{}/api/v1/jobs/{id}/source.git/git-receive-pack",
                farm.url
            ))
            .bearer_auth(&token)
            .header("x-gantry-lease", uuid::Uuid::now_v7().to_string())
            .send()
            .await
            .unwrap();
        assert!(push.status().is_client_error(), "{}", push.status());
        assert!(!sha.is_empty());
    });
}

#[test]
fn history_and_submodules_come_from_a_private_forge_with_its_credentials() {
    run(Duration::from_secs(240), async {
        let farm = Farm::up_with(&[]);
        let dir = support::scratch_dir("submodules");
        let repo = Repo::new(&dir);
        // The submodule: a repository beside it on the same private server (`../lib.git` from the app's URL).
        let lib = dir.join("lib.git");
        std::fs::create_dir_all(&lib).unwrap();
        git(&lib, &["init", "--bare", "-q"]);
        let lib_work = dir.join("lib-work");
        git(
            &dir,
            &[
                "clone",
                "-q",
                lib.to_str().unwrap(),
                lib_work.to_str().unwrap(),
            ],
        );
        std::fs::write(lib_work.join("lib.txt"), "from the submodule\n").unwrap();
        git(&lib_work, &["add", "-A"]);
        git(&lib_work, &["commit", "-q", "-m", "lib"]);
        git(&lib_work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
        let token = format!("tok-{}", uuid::Uuid::now_v7().simple());
        let forge = GitHttp::serve(&dir, "ci-bot", &token);
        // Three commits before the pipeline's, so a depth of 2 is visibly shallower than the history.
        for i in 0..3 {
            std::fs::write(repo.work.join("n.txt"), format!("{i}\n")).unwrap();
            git(&repo.work, &["add", "-A"]);
            git(&repo.work, &["commit", "-q", "-m", &format!("commit {i}")]);
        }
        git(
            &repo.work,
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                lib.to_str().unwrap(),
                "vendor/lib",
            ],
        );
        std::fs::write(
            repo.work.join(".gitmodules"),
            "[submodule \"vendor/lib\"]\n\tpath = vendor/lib\n\turl = ../lib.git\n",
        )
        .unwrap();
        private_repo(&farm, "app", &forge, &repo, &token);
        let (_, sha) = repo.push_pipeline(
            "jobs:\n  deep:\n    checkout: { depth: 2, submodules: true }\n    steps:\n      \
             - cat vendor/lib/lib.txt\n      \
             - echo commits=$(git -c safe.directory='*' rev-list --count HEAD)\n      \
             - echo head=$(git -c safe.directory='*' rev-parse HEAD)\n      \
             - echo shallow=$(git -c safe.directory='*' rev-parse --is-shallow-repository)\n  \
             plain:\n    steps:\n      - test ! -e .git && test ! -e vendor/lib/lib.txt && echo plain=yes\n",
        );
        let jobs = farm.finished_jobs("app", 1).await;
        let (deep, plain) = (job(&jobs, "deep"), job(&jobs, "plain"));
        let expected: [(&FinishedJob, &[String]); 2] = [
            (
                deep,
                &[
                    "from the submodule".into(),
                    "commits=2".into(),
                    format!("head={sha}"),
                    "shallow=true".into(),
                ],
            ),
            (plain, &["plain=yes".into()]),
        ];
        for (j, lines) in expected {
            assert_eq!(j.json["status"], "success", "{}: {}", j.json, j.log);
            for line in lines {
                assert!(j.log.contains(line.as_str()), "{line}: {}", j.log);
            }
            assert!(!j.log.contains(&token));
        }
    });
}
