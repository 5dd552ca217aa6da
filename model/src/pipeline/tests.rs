use super::*;

#[test]
fn a_small_file_expands_with_defaults_and_merged_env() {
    let p = Pipeline::parse(
        "env: { A: 1, B: x }\njobs:\n  build:\n    steps: [make]\n    env: { B: y }\n  test:\n    needs: [build]\n    timeout: 20m\n    resources: { memory: 512M, pids: 100 }\n    steps:\n      - make test\n",
    )
    .unwrap();
    assert_eq!(p.jobs.len(), 2);
    let build = &p.jobs[0];
    assert_eq!(build.name.as_str(), "build");
    assert_eq!(build.image, "host");
    assert_eq!(build.env.get("A").unwrap(), "1");
    assert_eq!(build.env.get("B").unwrap(), "y");
    assert_eq!(build.timeout_secs, 3600);
    let test = &p.jobs[1];
    assert_eq!(test.needs[0].as_str(), "build");
    assert_eq!(test.timeout_secs, 1200);
    assert_eq!(test.resources.memory_bytes, 512 << 20);
    assert_eq!(test.resources.pids, 100);
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    let err = Pipeline::parse("jobs:\n  build:\n    steps: [make\n  other: {\n").unwrap_err();
    assert!(err.line.is_some(), "{err}");
    assert!(err.to_string().contains("line "), "{err}");
}

#[test]
fn an_unknown_key_names_its_line() {
    let err = Pipeline::parse("jobs:\n  build:\n    stpes: [make]\n").unwrap_err();
    assert_eq!(err.line, Some(3), "{err}");
    assert!(err.message.contains("stpes"), "{err}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let err = Pipeline::parse("jobs:\n  build:\n    steps: []\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("jobs.build.steps"));
    assert_eq!(err.line, Some(3), "{err}");

    let err = Pipeline::parse("jobs:\n  build:\n    steps: [a]\n    timeout: soon\n").unwrap_err();
    assert_eq!(err.key.as_deref(), Some("jobs.build.timeout"));
    assert_eq!(err.line, Some(4), "{err}");

    let err = Pipeline::parse("image: Alpine\njobs:\n  b:\n    steps: [a]\n").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
    assert_eq!(err.key.as_deref(), Some("image"), "{err}");

    let err =
        Pipeline::parse("jobs:\n  b:\n    steps: [a]\n    image: dir:relative\n").unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert_eq!(err.key.as_deref(), Some("jobs.b.image"), "{err}");
}

#[test]
fn images_of_every_kind_are_accepted_and_kept_as_written() {
    let p = Pipeline::parse(
        "image: 127.0.0.1:5000/test/busybox:latest\njobs:\n  a:\n    steps: [x]\n  b:\n    image: oci:/srv/layout:v1\n    steps: [x]\n  c:\n    image: dir:/srv/root\n    steps: [x]\n",
    )
    .unwrap();
    let images: Vec<&str> = p.jobs.iter().map(|j| j.image.as_str()).collect();
    assert_eq!(
        images,
        [
            "127.0.0.1:5000/test/busybox:latest",
            "oci:/srv/layout:v1",
            "dir:/srv/root"
        ]
    );
}

#[test]
fn needs_must_exist_and_not_loop() {
    let err = Pipeline::parse("jobs:\n  a:\n    steps: [x]\n    needs: [nope]\n").unwrap_err();
    assert!(err.message.contains("nope"), "{err}");
    let err = Pipeline::parse(
        "jobs:\n  a:\n    steps: [x]\n    needs: [b]\n  b:\n    steps: [x]\n    needs: [a]\n",
    )
    .unwrap_err();
    assert!(err.message.contains("cycle"), "{err}");
}

#[test]
fn bad_job_names_and_empty_files_are_refused() {
    assert!(Pipeline::parse("jobs:\n  ../x:\n    steps: [a]\n").is_err());
    assert!(Pipeline::parse("jobs: {}\n").is_err());
    assert!(Pipeline::parse("").is_err());
}

#[test]
fn services_expand_with_the_jobs_image_and_readiness() {
    let p = Pipeline::parse(
        "image: 127.0.0.1:5000/busybox\njobs:\n  it:\n    steps: [x]\n    services:\n      db:\n        command: [nc, -ll, -p, \"5432\"]\n        env: { POSTGRES_PASSWORD: test, N: 1 }\n        ready: { tcp: 5432 }\n        ready_timeout: 2m\n      cache:\n        image: host\n        command: redis-server --save ''\n        ready: { command: redis-cli ping }\n      side:\n        image: host\n",
    )
    .unwrap();
    let services = &p.jobs[0].services;
    assert_eq!(services.len(), 3);
    let db = &services[0];
    assert_eq!(
        (db.name.as_str(), db.image.as_str()),
        ("db", "127.0.0.1:5000/busybox")
    );
    assert_eq!(db.command, ["nc", "-ll", "-p", "5432"]);
    assert_eq!(db.env.get("N").unwrap(), "1");
    assert_eq!(db.ready, Readiness::Tcp { port: 5432 });
    assert_eq!(db.ready_timeout_secs, 120);
    let cache = &services[1];
    assert_eq!(cache.command, ["/bin/sh", "-c", "redis-server --save ''"]);
    assert_eq!(
        cache.ready,
        Readiness::Command {
            command: "redis-cli ping".into()
        }
    );
    assert_eq!(services[2].ready, Readiness::Started);
    assert!(services[2].command.is_empty());
    assert_eq!(services[2].ready_timeout_secs, 60);
}

#[test]
fn bad_services_name_line_and_key() {
    let case = |services: &str| {
        Pipeline::parse(&format!(
            "jobs:\n  it:\n    steps: [x]\n    services:\n{services}"
        ))
        .unwrap_err()
    };
    let err = case("      Db_1: {}\n");
    assert_eq!(err.key.as_deref(), Some("jobs.it.services.Db_1"), "{err}");
    assert_eq!(err.line, Some(5), "{err}");
    let err = case("      db: { ready: { tcp: 1, command: x } }\n");
    assert_eq!(
        err.key.as_deref(),
        Some("jobs.it.services.db.ready"),
        "{err}"
    );
    let err = case("      db: { ready: { tcp: 70000 } }\n");
    assert_eq!(err.line, Some(5), "{err}");
    let err = case("      db: { command: [] }\n");
    assert_eq!(
        err.key.as_deref(),
        Some("jobs.it.services.db.command"),
        "{err}"
    );
    let err = case("      db: { ready_timeout: 0s }\n");
    assert_eq!(
        err.key.as_deref(),
        Some("jobs.it.services.db.ready_timeout"),
        "{err}"
    );
    let err = case("      db: { image: Bad }\n");
    assert_eq!(
        err.key.as_deref(),
        Some("jobs.it.services.db.image"),
        "{err}"
    );
    let many: String = (0..=MAX_SERVICES)
        .map(|i| format!("      s{i}: {{}}\n"))
        .collect();
    assert!(case(&many).message.contains("at most"));
}

#[test]
fn a_yaml_error_names_its_place_once() {
    for text in [
        "jobs:\n  build:\n    stpes: [make]\n",
        "jobs:\n  build:\n    steps: [make\n  other: {\n",
    ] {
        let err = Pipeline::parse(text).unwrap_err().to_string();
        assert_eq!(err.matches("column").count(), 1, "{err}");
        assert!(!err.contains("error:"), "{err}");
    }
}

#[test]
fn runs_on_lists_worker_labels_and_a_bad_one_names_its_line() {
    let p =
        Pipeline::parse("jobs:\n  big:\n    runs-on: [linux, big-2]\n    steps: [make]\n").unwrap();
    assert_eq!(p.jobs[0].runs_on, ["linux", "big-2"]);
    let err =
        Pipeline::parse("jobs:\n  big:\n    steps: [make]\n    runs-on: [linux, \"has space\"]\n")
            .unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.to_string().contains("runs-on"), "{err}");
    assert!(err.to_string().contains("has space"), "{err}");
}

#[test]
fn parallel_and_matrix_jobs_expand_into_instances_and_needs_wait_for_all_of_them() {
    let p = Pipeline::parse(
        "jobs:\n  build:\n    steps: [make]\n  test:\n    needs: [build]\n    parallel: 3\n    steps: [make test]\n  lint:\n    matrix: { TOOLCHAIN: [stable, beta], ARCH: [x86, arm] }\n    steps: [lint]\n  report:\n    needs: [test, lint]\n    steps: [report]\n",
    )
    .unwrap();
    let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "build",
            "test:1",
            "test:2",
            "test:3",
            "lint:stable,x86",
            "lint:stable,arm",
            "lint:beta,x86",
            "lint:beta,arm",
            "report"
        ]
    );
    let shard = &p.jobs[2];
    assert_eq!(shard.env.get("GANTRY_SHARD_INDEX").unwrap(), "2");
    assert_eq!(shard.env.get("GANTRY_SHARD_TOTAL").unwrap(), "3");
    assert_eq!(shard.needs, [JobName::new("build").unwrap()]);
    let lint = &p.jobs[6];
    assert_eq!(lint.env.get("TOOLCHAIN").unwrap(), "beta");
    assert_eq!(lint.env.get("ARCH").unwrap(), "x86");
    let report: Vec<&str> = p.jobs[8].needs.iter().map(|n| n.as_str()).collect();
    assert_eq!(
        report,
        &names[1..8],
        "a need on an expanded job is a need on each instance"
    );
}

#[test]
fn bad_parallel_and_matrix_name_their_line() {
    for (yaml, line, words) in [
        (
            "jobs:\n  t:\n    steps: [x]\n    parallel: 0\n",
            4,
            "between 1 and 100",
        ),
        (
            "jobs:\n  t:\n    steps: [x]\n    matrix: { V: [\"a b\"] }\n",
            4,
            "cannot be part of a job name",
        ),
        (
            "jobs:\n  t:\n    steps: [x]\n    parallel: 2\n    matrix: { V: [a] }\n",
            5,
            "either parallel or matrix",
        ),
        (
            "jobs:\n  t:\n    steps: [x]\n    matrix: { V: [] }\n",
            4,
            "has no values",
        ),
        ("jobs:\n  \"a,b\":\n    steps: [x]\n", 2, "may not contain"),
    ] {
        let err = Pipeline::parse(yaml).unwrap_err();
        assert_eq!(err.line, Some(line), "{yaml}: {err}");
        assert!(err.to_string().contains(words), "{yaml}: {err}");
    }
}

#[test]
fn retry_is_read_and_bounded() {
    let p = Pipeline::parse("jobs:\n  t:\n    retry: 2\n    steps: [x]\n").unwrap();
    assert_eq!(p.jobs[0].retry, 2);
    let err = Pipeline::parse("jobs:\n  t:\n    steps: [x]\n    retry: 9\n").unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.to_string().contains("at most 5"), "{err}");
}

#[test]
fn artifacts_and_reports_are_normalized_and_checked() {
    let p = Pipeline::parse(
        "jobs:\n  b:\n    steps: [x]\n    artifacts: [./bin/app, dist/]\n    reports: [\"junit/*.xml\"]\n",
    )
    .unwrap();
    assert_eq!(p.jobs[0].artifacts, ["bin/app", "dist"]);
    assert_eq!(p.jobs[0].reports, ["junit/*.xml"]);
    for (yaml, words) in [
        (
            "jobs:\n  b:\n    steps: [x]\n    artifacts: [/etc/passwd]\n",
            "absolute",
        ),
        (
            "jobs:\n  b:\n    steps: [x]\n    reports: [../x.xml]\n",
            "\"..\"",
        ),
    ] {
        let err = Pipeline::parse(yaml).unwrap_err();
        assert_eq!(err.line, Some(4), "{yaml}: {err}");
        assert!(err.to_string().contains(words), "{yaml}: {err}");
    }
}

#[test]
fn when_is_read_for_the_file_and_for_jobs() {
    let p = Pipeline::parse(
        "when: { branch: [main, \"release/*\"] }\njobs:\n  deploy:\n    when: { event: [push], tag: [\"v*\"] }\n    steps: [x]\n",
    )
    .unwrap();
    assert_eq!(p.when.unwrap().branch, ["main", "release/*"]);
    let job = p.jobs[0].when.as_ref().unwrap();
    assert_eq!(
        (job.event.as_slice(), job.tag.as_slice()),
        (&["push".to_owned()][..], &["v*".to_owned()][..])
    );
    let err = Pipeline::parse("jobs:\n  a:\n    steps: [x]\n    when: { event: [pushed] }\n")
        .unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(
        err.to_string().contains("\"pushed\" is not an event"),
        "{err}"
    );
    let err =
        Pipeline::parse("when: { branch: [\"a[\"] }\njobs:\n  a:\n    steps: [x]\n").unwrap_err();
    assert!(err.to_string().contains("when.branch"), "{err}");
}

#[test]
fn priority_is_read_and_bounded() {
    let p =
        Pipeline::parse("jobs:\n  t:\n    priority: -5\n    steps: [x]\n  u:\n    steps: [y]\n")
            .unwrap();
    assert_eq!((p.jobs[0].priority, p.jobs[1].priority), (-5, 0));
    let err = Pipeline::parse("jobs:\n  t:\n    steps: [x]\n    priority: 500\n").unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
    assert!(err.to_string().contains("between -100 and 100"), "{err}");
}

#[test]
fn a_file_that_expands_past_the_caps_is_refused_naming_them_and_fast() {
    // 3,000 jobs in a chain, each with a copy of 40 KB of env: the review's file.
    let env: String = (0..400)
        .map(|i| format!("  V{i}: \"{}\"\n", "x".repeat(90)))
        .collect();
    let mut file = format!("env:\n{env}jobs:\n");
    for i in 0..3_000 {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [j{}]", i - 1)
        };
        file.push_str(&format!("  j{i}: {{ steps: [true]{needs} }}\n"));
    }
    let started = std::time::Instant::now();
    let e = Pipeline::parse(&file).unwrap_err();
    assert!(e.message.contains("max_expanded_bytes"), "{e}");
    let jobs_only = file.replace(&format!("env:\n{env}"), "");
    let e = Pipeline::parse(&jobs_only).unwrap_err();
    assert!(e.message.contains("more than 1000 jobs"), "{e}");
    assert!(e.message.contains("max_jobs_per_pipeline"), "{e}");
    // Under caps of its own size the same chain parses, and its needs check is linear.
    let roomy = Limits {
        max_jobs: 3_000,
        max_expanded_bytes: 1 << 30,
    };
    let p = Pipeline::parse_with(&jobs_only, &roomy).unwrap();
    assert_eq!(p.jobs.len(), 3_000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // Instances count too: 20 jobs of parallel 100 is 2,000 jobs.
    let wide: String = (0..20)
        .map(|i| format!("  w{i}: {{ steps: [true], parallel: 100 }}\n"))
        .collect();
    let e = Pipeline::parse(&format!("jobs:\n{wide}")).unwrap_err();
    assert!(e.message.contains("more than 1000 jobs"), "{e}");
}

#[test]
fn network_and_checkout_come_from_the_job_or_the_file() {
    let p = Pipeline::parse(
        "network: egress\ncheckout: { depth: 5 }\njobs:\n  a: { steps: [x] }\n  \
         b: { steps: [x], network: none, checkout: { depth: 0, submodules: true } }\n",
    )
    .unwrap();
    assert_eq!(p.jobs[0].network, Network::Egress);
    assert_eq!(p.jobs[0].checkout.depth, Some(5));
    assert!(!p.jobs[0].checkout.submodules);
    assert_eq!(p.jobs[1].network, Network::None);
    assert_eq!(
        p.jobs[1].checkout,
        Checkout {
            depth: Some(0),
            submodules: true
        }
    );
    let plain = Pipeline::parse("jobs:\n  a: { steps: [x] }\n").unwrap();
    assert_eq!(plain.jobs[0].network, Network::None);
    assert!(plain.jobs[0].checkout.is_default());
    // Defaults stay off the wire, so older workers read newer specs.
    let json = serde_json::to_string(&plain.jobs[0]).unwrap();
    assert!(
        !json.contains("network") && !json.contains("checkout"),
        "{json}"
    );
    let e = Pipeline::parse("jobs:\n  a: { steps: [x], network: internet }\n").unwrap_err();
    assert!(e.message.contains("internet"), "{e}");
    let e =
        Pipeline::parse("jobs:\n  a: { steps: [x], checkout: { depth: 2000000 } }\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("jobs.a.checkout"), "{e}");
    let e = Pipeline::parse("jobs:\n  a: { steps: [x], checkout: { deep: 1 } }\n").unwrap_err();
    assert!(e.message.contains("deep"), "{e}");
}
