//! `gantry run`, through the real binary: a working tree's pipeline run here with no server, in real
//! containers (root needed), over the tree as a read-only lower layer that must come out unchanged.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::farm::GANTRY;
use support::git::git;
use support::local::{Running, Tree, processes_with};
use support::oci::{Layout, busybox_layer};
use support::{eventually_blocking, scratch_dir};

#[test]
fn a_pipeline_runs_over_the_working_tree_and_leaves_it_unchanged() {
    let tree = Tree::new(
        "run-ok",
        r#"
jobs:
  build:
    steps:
      - cat input.txt
      - echo built > out.txt && mkdir gen && echo deep > gen/file && rm input.txt && echo more >> sub/keep.txt
      - cat out.txt gen/file sub/keep.txt; test ! -e input.txt; echo "cwd=$(pwd)"
      - echo "commit=$GANTRY_COMMIT event=$GANTRY_EVENT job=$GANTRY_JOB branch=$GANTRY_BRANCH"
  test:
    steps:
      - test ! -e out.txt && cat input.txt sub/keep.txt && echo "second job on a fresh copy"
"#,
    );
    git(&tree.dir, &["init", "-q"]);
    git(&tree.dir, &["add", "."]);
    git(&tree.dir, &["commit", "-q", "-m", "tree"]);
    let head = git(&tree.dir, &["rev-parse", "HEAD"]).trim().to_owned();
    let before = tree.snapshot();

    let (out, stdout, stderr) = tree.run(&[]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "── job build ──\n$ cat input.txt\nhello from the tree\n",
        "\n$ echo built > out.txt",
        "── build: success in ",
        "── job test ──\n$ test ! -e out.txt",
        "── test: success in ",
        "── summary ──\n",
        "2 of 2 jobs succeeded\n",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    // Step headers after the first may land a little early or late in a step's output (events.rs says why),
    // so the steps' own output is checked without them.
    let output: String = stdout
        .lines()
        .filter(|l| !l.starts_with("$ "))
        .map(|l| format!("{l}\n"))
        .collect();
    for needle in [
        "built\ndeep\noriginal\nmore\ncwd=/workspace\n",
        &format!("commit={head} event=local job=build branch=main\n"),
        "hello from the tree\noriginal\nsecond job on a fresh copy\n",
    ] {
        assert!(output.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("JOB"))
        .collect();
    assert!(
        table[1].starts_with("build") && table[1].contains("success"),
        "{stdout}"
    );
    assert!(
        table[2].starts_with("test") && table[2].contains("success"),
        "{stdout}"
    );
    assert_eq!(tree.snapshot(), before, "the working tree changed");
    tree.assert_nothing_left();
}

#[test]
fn a_failed_job_fails_the_run_and_skips_what_needs_it() {
    let tree = Tree::new(
        "run-fail",
        r#"
jobs:
  deploy: { needs: [check], steps: [echo deploying] }
  check:
    steps: [echo checking, "exit 3", echo never]
  lint: { steps: [echo linting] }
"#,
    );
    let (out, stdout, stderr) = tree.run(&[]);
    assert!(!out.status.success(), "{stdout}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stdout.contains("deploying") && !stdout.contains("never"),
        "{stdout}"
    );
    for needle in [
        "── job check ──\n$ echo checking\nchecking\n$ exit 3\n── check: failed in ",
        ": step 2 (`exit 3`) exited with 3 ──\n",
        "── job deploy skipped: needs check, which failed ──\n",
        "linting\n",
        "1 of 3 jobs succeeded\n",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    let row = |job: &str| {
        stdout
            .lines()
            .skip_while(|l| !l.starts_with("JOB"))
            .find(|l| l.starts_with(&format!("{job} ")))
            .unwrap_or_else(|| panic!("no row for {job} in:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(row("check").starts_with("check failed ") && row("check").ends_with(" exit code 3"));
    assert_eq!(row("deploy"), "deploy skipped - needs check, which failed");
    assert!(row("lint").starts_with("lint success "));
    assert!(stderr.contains("2 of 3 jobs did not succeed"), "{stderr}");

    // Only the job asked for runs; its need on a job left out is dropped, and said so.
    let (out, stdout, stderr) = tree.run(&["--job", "deploy"]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("deploying") && !stdout.contains("checking"),
        "{stdout}"
    );
    assert!(
        stderr.contains("deploy needs check, which --job leaves out"),
        "{stderr}"
    );
    tree.assert_nothing_left();
}

#[test]
fn errors_before_any_job_are_one_line_on_stderr() {
    let tree = Tree::new(
        "run-errors",
        "jobs:\n  build:\n    steps: [make\n  test: {}\n",
    );
    let (out, stdout, stderr) = tree.run(&[]);
    assert!(!out.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let expected = format!(
        "gantry: {}/.gantry.yml line ",
        tree.dir.canonicalize().unwrap().display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");

    std::fs::write(
        tree.dir.join(".gantry.yml"),
        "jobs:\n  a:\n    steps: [x]\n    nope: 1\n",
    )
    .unwrap();
    let (out, _, stderr) = tree.run(&[]);
    assert!(!out.status.success());
    assert!(
        stderr.contains(".gantry.yml line 4") && stderr.contains("nope"),
        "{stderr}"
    );

    std::fs::write(tree.dir.join(".gantry.yml"), "jobs:\n  a: { steps: [x] }\n").unwrap();
    let (out, _, stderr) = tree.run(&["--job", "b"]);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no job named \"b\" (its jobs: a)"),
        "{stderr}"
    );

    std::fs::remove_file(tree.dir.join(".gantry.yml")).unwrap();
    let (out, _, stderr) = tree.run(&[]);
    assert!(!out.status.success());
    assert!(stderr.contains("has no .gantry.yml"), "{stderr}");

    std::fs::write(tree.dir.join(".gantry.yml"), "jobs:\n  a: { steps: [x] }\n").unwrap();
    let inside = tree.dir.join("gantry-data");
    let out = Command::new(GANTRY)
        .args(["run", "--data-dir", inside.to_str().unwrap()])
        .arg(&tree.dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass another --data-dir"));
    assert!(!inside.exists(), "the data dir was made inside the tree");
}

#[test]
fn ctrl_c_stops_the_job_and_a_killed_run_takes_its_container_with_it() {
    let marker = format!("marker{}", uuid::Uuid::now_v7().simple());
    let pipeline = format!(
        "jobs:\n  wait:\n    steps: [\"echo started; sleep 4321 && echo {marker}\"]\n  after: {{ needs: [wait], steps: [echo after] }}\n"
    );
    let tree = Tree::new("run-interrupt", &pipeline);

    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGKILL] {
        let mut child = Running(
            tree.command(&[])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        while !seen.ends_with("started\n") {
            assert!(
                stdout.read_line(&mut seen).unwrap() > 0,
                "gantry run ended early:\n{seen}"
            );
        }
        // One shell; its child may not have exec'd `sleep` yet, and still look like it for a moment.
        eventually_blocking("the step's shell alone", Duration::from_secs(10), || {
            (processes_with(&marker).len() == 1).then_some(())
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = child.wait().unwrap();
        std::io::Read::read_to_string(&mut stdout, &mut seen).unwrap();
        assert!(!status.success());
        if signal == nix::sys::signal::SIGINT {
            assert!(seen.contains("── wait: cancelled in "), "{seen}");
            let after = seen.lines().rev().find(|l| l.starts_with("after "));
            assert!(after.is_some_and(|row| row.contains("not run")), "{seen}");
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(stderr.contains("interrupted"), "{stderr}");
            assert!(processes_with(&marker).is_empty());
            tree.assert_nothing_left();
        }
    }
    // The container died with the SIGKILLed run: its zygote saw the run go.
    eventually_blocking(
        "the killed run's step to die with it",
        Duration::from_secs(10),
        || processes_with(&marker).is_empty().then_some(()),
    );
    std::fs::write(
        tree.dir.join(".gantry.yml"),
        "jobs:\n  a: { steps: [echo ok] }\n",
    )
    .unwrap();
    let (out, stdout, stderr) = tree.run(&[]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Its zygote removed the container's cgroup as it ended: the next run has nothing to sweep.
    assert!(!stderr.contains("removed"), "{stderr}");
    tree.assert_nothing_left();
}

#[test]
fn an_image_with_a_non_root_user_writes_over_the_tree_without_changing_it() {
    let images = scratch_dir("run-images");
    let mut layout = Layout::new(&images.join("layout"));
    layout.add(
        "v1",
        &[busybox_layer()],
        serde_json::json!({ "User": "builder" }),
    );
    let config = images.join("gantry.toml");
    std::fs::write(
        &config,
        format!(
            "[worker]\nimage_dirs = [{:?}]\n",
            images.display().to_string()
        ),
    )
    .unwrap();
    let pipeline = format!(
        "image: oci:{}:v1\njobs:\n  build:\n    steps:\n      - id -u; cat input.txt\n      - echo changed > input.txt; echo new > sub/new.txt; cat input.txt sub/new.txt; ls -ln input.txt\n",
        layout.dir.display()
    );
    let tree = Tree::new("run-image", &pipeline);
    let before = tree.snapshot();
    let (out, stdout, stderr) = tree.run(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("$ id -u; cat input.txt\n1000\nhello from the tree\n"),
        "{stdout}"
    );
    assert!(stdout.contains("changed\nnew\n"), "{stdout}");
    assert!(
        stdout.contains(" 1000 "),
        "the image's user owns /workspace: {stdout}"
    );
    assert_eq!(tree.snapshot(), before, "the working tree changed");
    tree.assert_nothing_left();
}
