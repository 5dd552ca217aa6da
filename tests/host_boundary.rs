//! A pushed commit is hostile code running on the host: each test here performs one of the attacks of the
//! first security review (docs/security.md) from a job, and checks that it fails, with and without a user
//! namespace.

mod support;

use std::time::Duration;
use support::farm::Farm;
use support::run;
use support::terminal::{Terminal, TerminalFarm};

const PROBE: &str = env!("CARGO_BIN_EXE_gantry-probe");

/// A configuration file turning user namespaces on or off.
fn userns_config(userns: bool) -> String {
    let path = support::scratch_dir("config").join("gantry.toml");
    std::fs::write(&path, format!("[worker]\nuser_namespace = {userns}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Pushes `pipeline` (with the probe in the commit) to `farm` and returns the finished pipeline and the log of
/// its first job.
async fn push_and_finish(farm: &Farm, name: &str, pipeline: &str) -> (serde_json::Value, String) {
    let repo = farm.hooked_repo(name);
    std::fs::copy(PROBE, repo.work.join("gantry-probe")).unwrap();
    repo.push_pipeline(pipeline);
    let p = farm.finished_pipeline(name, 1).await;
    let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();
    let log = String::from_utf8(farm.get_bytes(&format!("/jobs/{job}/log")).await).unwrap();
    (p, log)
}

#[test]
fn a_job_cannot_type_into_the_terminal_that_started_gantry() {
    terminal_attack(true);
}

#[test]
fn a_job_cannot_type_into_the_terminal_that_started_gantry_without_a_user_namespace() {
    terminal_attack(false);
}

/// Finding 1: a step pushed Ctrl-C and a command into the root shell that ran `gantry up` (TIOCSTI on
/// `/dev/tty`), which stopped Gantry and ran the command as root.
fn terminal_attack(userns: bool) {
    let marker = support::scratch_dir("tty").join("typed-by-a-job");
    let terminal = TerminalFarm::up(&["--config", &userns_config(userns)]);
    run(Duration::from_secs(240), async {
        let (p, log) = push_and_finish(&terminal.farm, "tty", &inject_pipeline(&marker)).await;
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        assert_std_fds_refused(&log);
        assert!(
            log.contains("inject_dev_tty_open=refused") || log.contains("inject_dev_tty=refused"),
            "/dev/tty took the bytes:\n{log}"
        );
    });
    assert!(
        terminal.gantry_is_running(),
        "the job's Ctrl-C reached gantry up:\n{}",
        terminal.screen()
    );
    let screen = terminal.stop();
    assert_nothing_typed(&screen, &marker, "gantry up");
}

/// A pipeline whose job pushes Ctrl-C and `touch MARKER` into every terminal it can reach.
fn inject_pipeline(marker: &std::path::Path) -> String {
    format!(
        "jobs:\n  attack:\n    steps: [\"./gantry-probe inject {}\"]\n",
        marker.display()
    )
}

/// The probe's TIOCSTI on its stdin, stdout and stderr was refused.
fn assert_std_fds_refused(output: &str) {
    for line in ["inject_stdin", "inject_stdout", "inject_stderr"] {
        assert!(
            output.contains(&format!("{line}=refused")),
            "{line}:\n{output}"
        );
    }
}

/// Nothing the job typed was echoed on the terminal, nor run by the shell that started `what`.
fn assert_nothing_typed(screen: &str, marker: &std::path::Path, what: &str) {
    assert!(
        !screen.contains(&format!("touch {}", marker.display())),
        "the job's bytes reached the terminal:\n{screen}"
    );
    assert!(
        !marker.exists(),
        "the shell that started {what} ran the job's command"
    );
}

#[test]
fn a_job_of_gantry_run_cannot_type_into_its_terminal() {
    gantry_run_terminal_attack(true);
}

#[test]
fn a_job_of_gantry_run_cannot_type_into_its_terminal_without_a_user_namespace() {
    gantry_run_terminal_attack(false);
}

/// Finding 1 again, for `gantry run`, whose jobs' output goes to the very terminal it was typed into.
fn gantry_run_terminal_attack(userns: bool) {
    let marker = support::scratch_dir("tty-run").join("typed-by-a-job");
    let tree = support::local::Tree::new("tty-run", &inject_pipeline(&marker));
    std::fs::copy(PROBE, tree.dir.join("gantry-probe")).unwrap();
    let (mut terminal, mut child) = Terminal::open();
    terminal.type_keys(&format!(
        "{} run {} --data-dir {} --config {}; echo \"RUN-ENDED $?\"\n",
        support::farm::GANTRY,
        tree.dir.display(),
        tree.data_dir.display(),
        userns_config(userns)
    ));
    terminal.wait_for_line("RUN-ENDED", Duration::from_secs(120));
    terminal.type_keys("exit\n");
    support::eventually_blocking("the shell to exit", Duration::from_secs(20), || {
        child.try_wait().ok().flatten()
    });
    let screen = terminal.screen();
    assert!(screen.contains("RUN-ENDED 0"), "{screen}");
    assert_std_fds_refused(&screen);
    assert_nothing_typed(&screen, &marker, "gantry run");
}

#[test]
fn a_job_on_the_host_image_reads_no_file_only_root_may_read() {
    host_files_attack(true);
}

#[test]
fn a_job_on_the_host_image_reads_no_file_only_root_may_read_without_a_user_namespace() {
    host_files_attack(false);
}

/// A secret for the host-files attack: a file holding `token`, with `mode`.
fn plant(path: &std::path::Path, token: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Finding 2: with the host's `/` as its root, a job read what only host root may: shadow backups, `/root`,
/// `/home/*`, Gantry's configuration and the files it names, bare repositories' hooks (webhook secrets), and
/// any file of mode 0600.
fn host_files_attack(userns: bool) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let token = |what: &str| format!("SECRET-{what}-{id}");
    let scratch = support::scratch_dir("host-files");
    let home = std::path::PathBuf::from(format!("/home/gantry-victim-{id}"));
    plant(&home.join("notes.txt"), &token("home"), 0o644);
    let password_file = scratch.join("registry-password");
    plant(&password_file, &token("registry"), 0o644);
    let config = scratch.join("gantry.toml");
    let key_file = scratch.join("secret.key");
    plant(
        &config,
        &format!(
            "# {}\nsecret_key_file = \"{}\"\n[worker]\nuser_namespace = {userns}\n\
             [[worker.registries]]\nhost = \"registry.invalid\"\nusername = \"ci\"\npassword_file = \"{}\"\n",
            token("config"),
            key_file.display(),
            password_file.display()
        ),
        0o644,
    );
    let farm = Farm::up_with(&["--config", config.to_str().unwrap()]);
    // Made after the worker started: the worker follows the file system, not only what it saw at start.
    let late_file = std::path::PathBuf::from(format!("/var/tmp/gantry-private-{id}"));
    plant(&late_file, &token("late"), 0o600);
    let late_dir = std::path::PathBuf::from(format!("/var/tmp/gantry-private-dir-{id}"));
    plant(&late_dir.join("public-inside"), &token("late-dir"), 0o644);
    std::fs::set_permissions(
        &late_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let repo = farm.hooked_repo("hostfiles");
    let hook = repo.bare.join("hooks/post-receive");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    let shadow_backups = [
        "/etc/shadow-",
        "/etc/gshadow-",
        "/etc/shadow",
        "/etc/gshadow",
    ];
    let mut script = String::from("set +e\n");
    let files = [
        &home.join("notes.txt"),
        &password_file,
        &config,
        &key_file,
        &late_file,
        &late_dir.join("public-inside"),
        &hook,
    ];
    for path in files
        .iter()
        .map(|p| p.display().to_string())
        .chain(shadow_backups.map(String::from))
    {
        script.push_str(&format!(
            "echo \"== {path}\"; cat '{path}' 2>&1 | head -c 300; echo\n"
        ));
    }
    script.push_str("echo \"== ls /root\"; ls -A /root; echo \"== ls /home\"; ls -A /home\n");
    script.push_str("echo \"HOME=$HOME\"; touch \"$HOME/usable\" && echo home-writable=yes\n");
    std::fs::write(repo.work.join("attack.sh"), script).unwrap();
    run(Duration::from_secs(240), async {
        repo.push_pipeline("jobs:\n  attack:\n    steps: [sh ./attack.sh]\n");
        let p = farm.finished_pipeline("hostfiles", 1).await;
        let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();
        let log = String::from_utf8(farm.get_bytes(&format!("/jobs/{job}/log")).await).unwrap();
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        for what in ["home", "registry", "config", "late", "late-dir"] {
            assert!(
                !log.contains(&token(what)),
                "the job read the {what} secret:\n{log}"
            );
        }
        assert!(
            !log.contains(&key),
            "the job read the server's sealing key:\n{log}"
        );
        assert!(
            !log.contains("GANTRY_HOOK_SECRET="),
            "the job read the post-receive hook:\n{log}"
        );
        assert!(!log.contains("root:"), "the job read a shadow file:\n{log}");
        let listing = |dir: &str| {
            let start = log.find(&format!("== ls {dir}\n")).unwrap() + dir.len() + 7;
            log[start..]
                .lines()
                .take_while(|l| !l.starts_with("==") && !l.starts_with("HOME="))
                .collect::<Vec<_>>()
        };
        assert!(listing("/root").is_empty(), "/root is not empty:\n{log}");
        assert!(listing("/home").is_empty(), "/home is not empty:\n{log}");
        assert!(
            log.contains("home-writable=yes"),
            "HOME is not usable:\n{log}"
        );
    });
    drop(farm);
    let _ = std::fs::remove_dir_all(&home);
    let _ = std::fs::remove_file(&late_file);
    let _ = std::fs::remove_dir_all(&late_dir);
}

#[test]
fn host_paths_bring_a_toolchain_back_read_only() {
    toolchain_through_host_paths(true);
}

#[test]
fn host_paths_bring_a_toolchain_back_read_only_without_a_user_namespace() {
    toolchain_through_host_paths(false);
}

/// The masked homes must not cost a user their toolchains: rustup's, kept in root's home on these machines,
/// is shown through `host_paths`, read-only, with its `bin/` on `PATH`.
fn toolchain_through_host_paths(userns: bool) {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let var_or = |var: &str, default: &str| {
        std::env::var(var).unwrap_or_else(|_| format!("{home}/{default}"))
    };
    let (rustup, cargo) = (
        var_or("RUSTUP_HOME", ".rustup"),
        var_or("CARGO_HOME", ".cargo"),
    );
    assert!(
        std::path::Path::new(&cargo).join("bin/cargo").exists(),
        "this test needs Rust installed by rustup ({cargo}/bin/cargo), as on Gantry's CI machines"
    );
    let config = support::scratch_dir("host-paths").join("gantry.toml");
    std::fs::write(
        &config,
        format!("[worker]\nuser_namespace = {userns}\nhost_paths = [\"{rustup}\", \"{cargo}\"]\n"),
    )
    .unwrap();
    let farm = Farm::up_with(&["--config", config.to_str().unwrap()]);
    let steps = format!(
        "jobs:\n  rust:\n    env: {{ CARGO_HOME: /tmp/cargo }}\n    steps:\n      - cargo --version\n      - \
         touch {cargo}/bin/planted 2>/dev/null && echo host-path-writable || echo host-path-read-only\n      - \
         cargo new -q --vcs none /tmp/demo && cd /tmp/demo && cargo test -q --offline 2>&1 | tail -3\n"
    );
    run(Duration::from_secs(300), async {
        let (p, log) = push_and_finish(&farm, "toolchain", &steps).await;
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        assert!(log.contains("cargo 1."), "{log}");
        assert!(log.contains("host-path-read-only"), "{log}");
        assert!(log.contains("test result: ok"), "{log}");
    });
    assert!(!std::path::Path::new(&cargo).join("bin/planted").exists());
}

#[test]
fn set_id_files_a_job_plants_work_nowhere() {
    setid_plant(true);
}

#[test]
fn set_id_files_a_job_plants_work_nowhere_without_a_user_namespace() {
    setid_plant(false);
}

/// Finding 3: a job made `/workspace/x` a setuid-root copy of `id`, and while the job ran, user `nobody` ran it
/// on the host with euid 0.
fn setid_plant(userns: bool) {
    use std::os::unix::fs::PermissionsExt;
    let farm = Farm::up_userns(userns);
    let steps = "jobs:\n  plant:\n    steps:\n      - cp /usr/bin/id /workspace/planted && chmod 4755 /workspace/planted\n      \
        - grep ' /workspace ' /proc/self/mounts\n      - echo \"inside=$(su -s /bin/sh nobody -c '/workspace/planted -u')\"\n      \
        - i=0; while [ ! -e /workspace/done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n";
    let repo = farm.hooked_repo("plant");
    run(Duration::from_secs(240), async {
        repo.push_pipeline(steps);
        // Once the step's chmod is done too (`cp` makes it first, without the bit).
        let set_id = |p: &std::path::Path| {
            std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o7777 == 0o4755)
        };
        let planted = support::eventually("the planted file", Duration::from_secs(120), || {
            let found = farm.worker_dirs().into_iter().find_map(|worker| {
                std::fs::read_dir(worker.join("workspaces"))
                    .ok()?
                    .flatten()
                    .map(|d| d.path().join("planted"))
                    .find(|p| set_id(p))
            });
            async move { found }
        })
        .await;
        let workspaces = planted.parent().unwrap().parent().unwrap().to_path_buf();
        // The attack's premise holds: a setuid-root file is on the host's disk...
        let meta = std::fs::metadata(&planted).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 0);
        // ...but no other user can reach it.
        // runuser, not setpriv: setpriv resolves the program before it gives up root.
        let out = std::process::Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(&planted)
            .arg("-u")
            .output()
            .expect("runuser (apt-get install util-linux)");
        let euid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_ne!(euid, "0", "nobody ran the planted file as root");
        assert!(
            !out.status.success(),
            "nobody could run the planted file: {euid}"
        );
        for dir in [
            farm.data_dir.clone(),
            workspaces.clone(),
            workspaces.parent().unwrap().to_path_buf(),
            farm.data_dir.join("workers"),
        ] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        }
        for file in ["gantry.db", "gantry.db-wal", "secret.key"] {
            let mode = std::fs::metadata(farm.data_dir.join(file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600, "{file} is {mode:o}");
        }
        std::fs::write(planted.with_file_name("done"), "").unwrap();
        let p = farm.finished_pipeline("plant", 1).await;
        let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();
        let log = String::from_utf8(farm.get_bytes(&format!("/jobs/{job}/log")).await).unwrap();
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        let mounts = log
            .lines()
            .find(|l| l.contains(" /workspace "))
            .unwrap_or_default();
        assert!(
            mounts.contains("nosuid") && mounts.contains("nodev"),
            "{log}"
        );
        assert!(
            log.contains("inside=65534"),
            "in the job too, the bit must not work:\n{log}"
        );
    });
}

#[test]
fn user_namespaces_work_for_a_data_dir_under_a_private_home() {
    use std::os::unix::fs::PermissionsExt;
    let home = support::scratch_dir("private-home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let farm = Farm::up_in(home.join("gantry-data"), &[]);
    assert!(
        !farm.banner.contains("WITHOUT a user namespace"),
        "{}",
        farm.banner
    );
    run(Duration::from_secs(240), async {
        let (p, log) = push_and_finish(
            &farm,
            "userns",
            "jobs:\n  map:\n    steps: [cat /proc/self/uid_map]\n",
        )
        .await;
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        assert!(
            !log.contains("4294967295"),
            "the job ran without a user namespace:\n{log}"
        );
    });
    // `gantry run` with its data dir there too.
    let mut tree = support::local::Tree::new(
        "private-home-run",
        "jobs:\n  map:\n    steps: [cat /proc/self/uid_map]\n",
    );
    tree.data_dir = home.join("run-data");
    let (out, stdout, stderr) = tree.run(&[]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("4294967295"), "{stdout}");
    assert!(!stderr.contains("WITHOUT a user namespace"), "{stderr}");
}

#[test]
fn without_a_user_namespace_gantry_up_and_gantry_run_say_so() {
    let farm = Farm::up_userns(false);
    assert!(
        farm.banner.contains("jobs run WITHOUT a user namespace")
            && farm.banner.contains("turned off in the configuration"),
        "{}",
        farm.banner
    );
    let tree = support::local::Tree::new("no-userns-run", "jobs:\n  a:\n    steps: [true]\n");
    let config = support::scratch_dir("no-userns").join("gantry.toml");
    std::fs::write(&config, "[worker]\nuser_namespace = false\n").unwrap();
    let (out, stdout, stderr) = tree.run(&["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stderr.matches("WITHOUT a user namespace").count(),
        1,
        "{stderr}"
    );
}
