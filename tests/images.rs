//! Jobs in images, through the real binary: a busybox image built offline with umoci, pushed with skopeo to a
//! real `docker-registry` on loopback, pulled by the worker; OCI layouts written by the test for hostile and
//! whiteout layers. Needs root (real containers) and the Debian packages docker-registry, skopeo, umoci and
//! busybox-static.

mod support;

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::farm::{Farm, FinishedJob, job};
use support::git::Repo;
use support::oci::{Entry, Layout, busybox_layer, layer};
use support::registry::Registry;
use support::{run, scratch_dir};

/// A farm (one worker of capacity 8, local images allowed under `image_dirs`) with one repository and its hook.
fn farm_with_repo(name: &str, image_dirs: &[&Path]) -> (Farm, Repo) {
    let dir = scratch_dir(name);
    let config = dir.join("gantry.toml");
    let dirs: Vec<String> = image_dirs
        .iter()
        .map(|d| format!("{:?}", d.display().to_string()))
        .collect();
    std::fs::write(
        &config,
        format!(
            "[worker]\ncapacity = 8\nimage_dirs = [{}]\n",
            dirs.join(", ")
        ),
    )
    .unwrap();
    // One worker: the tests count what its image store pulls.
    let farm = Farm::up_with(&["--config", config.to_str().unwrap(), "--max-workers", "1"]);
    let repo = farm.hooked_repo_in(name, &dir);
    (farm, repo)
}

fn assert_success(jobs: &[FinishedJob], name: &str) -> String {
    let job = job(jobs, name);
    assert_eq!(
        job.json["status"], "success",
        "{name}: {:#}\n{}",
        job.json, job.log
    );
    job.log.clone()
}

fn assert_infra(jobs: &[FinishedJob], name: &str, needles: &[&str]) {
    let job = job(jobs, name);
    assert_eq!(
        job.json["failure_kind"], "infra",
        "{name}: {:#}\n{}",
        job.json, job.log
    );
    let message = job.json["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(
            message.contains(needle),
            "{name}: {needle:?} not in {message:?}"
        );
    }
}

fn field(log: &str, key: &str) -> String {
    log.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {log}"))
        .to_owned()
}

#[test]
fn a_pulled_image_runs_with_its_config_and_a_second_job_pulls_nothing() {
    run(Duration::from_secs(300), async {
        let registry = Registry::with_busybox();
        let (farm, repo) = farm_with_repo("pulled", &[]);
        let addr = &registry.addr;
        let pipeline = format!(
            "image: {addr}/test/busybox:latest\njobs:\n  probe:\n    env: {{ JOB_WINS: job }}\n    steps:\n      \
             - echo cwd=$(pwd) var=$IMAGE_VAR wins=$JOB_WINS path=$PATH\n      \
             - test -f /workspace/.gantry.yml && echo checkout=yes\n      \
             - test ! -e /usr/bin/apt-get && test ! -e /etc/debian_version && echo host=hidden\n      \
             - echo x > /bin/written-by-job && echo wrote=yes\n  \
             missing:\n    image: {addr}/test/nope:latest\n    steps: [true]\n"
        );
        let before = registry.log().len();
        let (pushed, _) = repo.push_pipeline(&pipeline);
        assert!(pushed.contains("pipeline #1"), "{pushed}");
        let first = farm.finished_jobs("pulled", 1).await;
        let log = assert_success(&first, "probe");
        assert_eq!(field(&log, "cwd"), "/srv/app", "WorkingDir: {log}");
        assert_eq!(field(&log, "var"), "from-image", "{log}");
        assert_eq!(field(&log, "wins"), "job", "the job's env must win: {log}");
        assert_eq!(field(&log, "path"), "/bin", "{log}");
        assert_eq!(field(&log, "checkout"), "yes", "{log}");
        assert_eq!(field(&log, "host"), "hidden", "{log}");
        assert_eq!(field(&log, "wrote"), "yes", "{log}");
        assert_infra(
            &first,
            "missing",
            &[&format!("{addr}/test/nope:latest"), "unknown"],
        );

        let downloads = Registry::blob_downloads(&registry.log()[before..]);
        assert_eq!(downloads.len(), 2, "a config and one layer: {downloads:?}");
        let worker = job(&first, "probe").json["worker"]
            .as_str()
            .unwrap()
            .to_owned();
        let layers = farm
            .data_dir
            .join("workers")
            .join(worker)
            .join("layers/sha256");
        for layer in std::fs::read_dir(&layers).unwrap() {
            let written = layer.unwrap().path().join("bin/written-by-job");
            assert!(!written.exists(), "a job wrote into a shared layer");
        }

        let before = registry.log().len();
        repo.push_pipeline(&pipeline);
        let second = farm.finished_jobs("pulled", 2).await;
        let log = assert_success(&second, "probe");
        assert_eq!(field(&log, "var"), "from-image", "{log}");
        let downloads = Registry::blob_downloads(&registry.log()[before..]);
        assert!(downloads.is_empty(), "the second job pulled {downloads:?}");
    });
}

#[test]
fn eight_jobs_at_once_download_each_blob_once() {
    run(Duration::from_secs(300), async {
        let registry = Registry::with_busybox();
        let image = format!("{}/test/busybox:latest", registry.addr);

        // In one process, eight resolutions started together: the store's per-digest lock in action.
        let before = registry.log().len();
        let store = gantry_worker::image::ImageStore::open(gantry_worker::image::ImageOptions {
            data_dir: scratch_dir("store"),
            ..Default::default()
        })
        .unwrap();
        let resolved = futures::future::join_all((0..8).map(|_| store.resolve(&image))).await;
        let first = resolved[0].as_ref().unwrap();
        assert_eq!(first.layers.len(), 1);
        for other in &resolved {
            assert_eq!(other.as_ref().unwrap(), first);
        }
        let downloads = Registry::blob_downloads(&registry.log()[before..]);
        assert_eq!(downloads.len(), 2, "{downloads:?}");

        // Through a farm whose worker runs the eight jobs of one pipeline at once.
        let (farm, repo) = farm_with_repo("eight", &[]);
        let mut pipeline = format!("image: {image}\njobs:\n");
        for i in 1..=8 {
            pipeline.push_str(&format!(
                "  j{i}:\n    steps: [sleep 1, echo job=$GANTRY_JOB]\n"
            ));
        }
        let before = registry.log().len();
        repo.push_pipeline(&pipeline);
        let all = farm.finished_jobs("eight", 1).await;
        assert_eq!(all.len(), 8);
        for i in 1..=8 {
            assert_success(&all, &format!("j{i}"));
        }
        let downloads = Registry::blob_downloads(&registry.log()[before..]);
        let mut unique = downloads.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), downloads.len(), "a blob twice: {downloads:?}");
        assert_eq!(downloads.len(), 2, "a config and one layer: {downloads:?}");
    });
}

#[test]
fn hostile_layers_are_refused_or_neutralised_and_the_host_is_unchanged() {
    run(Duration::from_secs(300), async {
        let dir = scratch_dir("hostile");
        let marker = format!("gantry-hostile-{}", uuid::Uuid::now_v7().simple());
        let secret = dir.join("host-secret");
        std::fs::write(&secret, "secret").unwrap();
        let secret = secret.to_str().unwrap().to_owned();
        let dotdot = format!("../../../../../../../../../../etc/{marker}");
        let through = format!("escape/{marker}");
        let abs = format!("/{marker}");
        let tmp_target = format!("/var/tmp/{marker}");
        let mut layout = Layout::new(&dir.join("layout"));
        let base = busybox_layer();
        let images: Vec<(&str, Vec<Entry>, &str)> = vec![
            ("dotdot", vec![Entry::File(&dotdot, b"pwned")], "refuse"),
            (
                "symlink",
                vec![
                    Entry::Symlink("escape", "/etc"),
                    Entry::File(&through, b"pwned"),
                ],
                "refuse",
            ),
            (
                "hardlink",
                vec![Entry::Hardlink("hl", "/etc/passwd")],
                "refuse",
            ),
            (
                "hardlink-up",
                vec![Entry::Hardlink("hl", "../../../../etc/passwd")],
                "refuse",
            ),
            (
                "neutral",
                vec![
                    Entry::File(&abs, b"inside"),
                    Entry::Block("disk"),
                    Entry::Char("mem"),
                    Entry::Symlink("etc/hosts", &secret),
                    Entry::Symlink("tmp", &tmp_target),
                ],
                "run",
            ),
        ];
        for (tag, entries, _) in &images {
            layout.add(tag, &[base.clone(), layer(entries)], json!({}));
        }
        // A symlink in one layer, a write "through" it in the next: each layer unpacks on its own, so the
        // second one gets a real directory, which hides the symlink in the container.
        let split = [
            layer(&[Entry::Symlink("escape", "/etc")]),
            layer(&[Entry::File(&through, b"x")]),
        ];
        layout.add(
            "split",
            &[base.clone(), split[0].clone(), split[1].clone()],
            json!({}),
        );
        // No layers at all: the runtime's root of no layers is the host's own `/`, which an image must not get.
        layout.add("empty", &[], json!({}));

        let (farm, repo) = farm_with_repo("hostile", &[&dir]);
        let oci = |tag: &str| format!("oci:{}:{tag}", layout.dir.display());
        let mut pipeline = String::from("jobs:\n");
        for (tag, _, _) in &images {
            pipeline.push_str(&format!(
                "  {tag}:\n    image: {}\n    steps: [\"cat /{marker}; ls /\"]\n",
                oci(tag)
            ));
        }
        pipeline.push_str(&format!(
            "  split:\n    image: {}\n    steps: [\"test -d /escape && cat /escape/{marker} && echo split=ok\"]\n",
            oci("split")
        ));
        pipeline.push_str(&format!(
            "  neutral-check:\n    image: {}\n    steps:\n      - \"echo abs=$(cat /{marker})\"\n      \
             - \"test ! -e /disk && test ! -e /mem && echo devices=absent\"\n      \
             - \"grep -q secret /etc/hosts && echo hosts=leaked || echo hosts=clean\"\n      \
             - \"echo x > /tmp/t && test -d /tmp && echo tmp=ok\"\n  \
             host-root:\n    image: dir:/\n    steps: [\"cat /etc/shadow\"]\n  \
             empty:\n    image: {}\n    steps: [\"ls /root /etc\"]\n",
            oci("neutral"),
            oci("empty")
        ));
        repo.push_pipeline(&pipeline);
        let all = farm.finished_jobs("hostile", 1).await;
        for (tag, _, expect) in &images {
            if *expect == "refuse" {
                assert_infra(&all, tag, &["refused"]);
            } else {
                assert_success(&all, tag);
            }
        }
        assert_success(&all, "split");
        let log = assert_success(&all, "neutral-check");
        assert_eq!(field(&log, "abs"), "inside", "{log}");
        assert_eq!(field(&log, "devices"), "absent", "{log}");
        assert_eq!(field(&log, "hosts"), "clean", "{log}");
        assert_eq!(field(&log, "tmp"), "ok", "{log}");
        assert_infra(&all, "host-root", &["image_dirs"]);
        assert_infra(&all, "empty", &["has no layers"]);

        for path in [format!("/etc/{marker}"), abs.clone(), tmp_target.clone()] {
            assert!(!Path::new(&path).exists(), "{path} appeared on the host");
        }
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    });
}

#[test]
fn whiteouts_and_opaque_dirs_across_layers_give_the_right_view() {
    run(Duration::from_secs(300), async {
        let dir = scratch_dir("whiteouts");
        let mut layout = Layout::new(&dir.join("layout"));
        let lower = layer(&[
            Entry::Dir("data/"),
            Entry::Dir("data/old/"),
            Entry::File("data/old/a", b"a"),
            Entry::File("data/old/b", b"b"),
            Entry::File("etc/removed", b"x"),
            Entry::Dir("keep/"),
            Entry::File("keep/x", b"x"),
            Entry::Dir("gone-dir/"),
            Entry::File("gone-dir/f", b"f"),
        ]);
        let upper = layer(&[
            Entry::File("etc/.wh.removed", b""),
            Entry::File("data/old/.wh..wh..opq", b""),
            Entry::File("data/old/new", b"n"),
            Entry::File("keep/y", b"y"),
            Entry::File(".wh.gone-dir", b""),
        ]);
        let run_config = json!({ "Env": ["PATH=/bin"], "WorkingDir": "/" });
        layout.add("layers", &[busybox_layer(), lower, upper], run_config);
        let (farm, repo) = farm_with_repo("whiteouts", &[&dir]);
        repo.push_pipeline(&format!(
            "jobs:\n  view:\n    image: oci:{}:layers\n    steps:\n      \
             - \"test ! -e /etc/removed && echo removed=yes\"\n      \
             - \"echo old=$(ls /data/old | tr '\\\\n' ,)\"\n      \
             - \"echo keep=$(ls /keep | tr '\\\\n' ,)\"\n      \
             - \"test ! -e /gone-dir && echo gone=yes\"\n      \
             - \"echo cwd=$(pwd)\"\n",
            layout.dir.display()
        ));
        let all = farm.finished_jobs("whiteouts", 1).await;
        let log = assert_success(&all, "view");
        assert_eq!(field(&log, "removed"), "yes", "{log}");
        assert_eq!(field(&log, "old"), "new,", "{log}");
        assert_eq!(field(&log, "keep"), "x,y,", "{log}");
        assert_eq!(field(&log, "gone"), "yes", "{log}");
        assert_eq!(field(&log, "cwd"), "/", "{log}");
    });
}

#[test]
fn the_image_user_runs_the_steps_and_owns_the_workspace() {
    run(Duration::from_secs(300), async {
        let dir = scratch_dir("user");
        let mut layout = Layout::new(&dir.join("layout"));
        let base = busybox_layer();
        layout.add(
            "named",
            std::slice::from_ref(&base),
            json!({ "User": "builder" }),
        );
        layout.add(
            "numeric",
            &[base],
            json!({ "User": "4242:4343", "WorkingDir": "/made/here" }),
        );
        let (farm, repo) = farm_with_repo("user", &[&dir]);
        let steps = "    steps:\n      - \"echo uid=$(id -u) gid=$(id -g) home=$HOME cwd=$(pwd)\"\n      \
                     - \"touch /workspace/mine && echo workspace=writable\"\n";
        repo.push_pipeline(&format!(
            "jobs:\n  named:\n    image: oci:{0}:named\n{steps}  numeric:\n    image: oci:{0}:numeric\n{steps}",
            layout.dir.display()
        ));
        let all = farm.finished_jobs("user", 1).await;
        let log = assert_success(&all, "named");
        assert_eq!(field(&log, "uid"), "1000", "{log}");
        assert_eq!(field(&log, "gid"), "1000", "{log}");
        assert_eq!(field(&log, "home"), "/home/builder", "{log}");
        assert_eq!(field(&log, "workspace"), "writable", "{log}");
        let log = assert_success(&all, "numeric");
        assert_eq!(field(&log, "uid"), "4242", "{log}");
        assert_eq!(field(&log, "gid"), "4343", "{log}");
        assert_eq!(field(&log, "cwd"), "/made/here", "{log}");
        assert_eq!(field(&log, "workspace"), "writable", "{log}");
    });
}
