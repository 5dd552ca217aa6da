//! The namespaces container runtime, for real: these tests run as root on the CI machines and start real
//! containers through the `gantry` binary's hidden `container-zygote` subcommand.

use gantry_model::{FailureKind, Resources};
use gantry_worker::runtime::cgroup::{CgroupLayout, Controller};
use gantry_worker::runtime::{
    Container, ContainerConfig, ContainerEvent, ContainerRuntime, NamespacesRuntime, Outcome,
    RuntimeError, RuntimeOptions,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A runtime with a worker name and state dir of its own, so tests running in parallel never meet.
struct Farm {
    runtime: NamespacesRuntime,
    state: tempfile::TempDir,
    worker: String,
    workspace: tempfile::TempDir,
}

impl Farm {
    fn new() -> Farm {
        let worker = format!("ct{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
        // Under /var/tmp, not /tmp: the container's /tmp is a fresh tmpfs, which would hide these anyway and
        // make the masking tests prove nothing.
        let state = tempfile::tempdir_in("/var/tmp").unwrap();
        let workspace = tempfile::tempdir_in("/var/tmp").unwrap();
        let runtime = NamespacesRuntime::new(RuntimeOptions {
            worker_name: worker.clone(),
            state_dir: state.path().to_path_buf(),
            init_exe: PathBuf::from(env!("CARGO_BIN_EXE_gantry")),
            extra_masks: vec![],
            user_namespace: true,
            host_paths: vec![],
            egress: Default::default(),
        })
        .unwrap();
        Farm {
            runtime,
            state,
            worker,
            workspace,
        }
    }

    fn config(&self, steps: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: format!("{}-{}", self.worker, uuid::Uuid::now_v7().simple()),
            hostname: "gantry-job".into(),
            workspace: self.workspace.path().to_path_buf(),
            workspace_mount: Default::default(),
            steps: steps.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), PATH.into())],
            resources: Resources {
                memory_bytes: 512 << 20,
                pids: 256,
                cpus: None,
            },
            masked_paths: vec![],
            timeout: Duration::from_secs(60),
            image: Default::default(),
            services: Vec::new(),
            network: Default::default(),
        }
    }
}

/// What a run produced, with when each event arrived.
struct Run {
    outcome: Outcome,
    events: Vec<(Instant, ContainerEvent)>,
    /// From the container's start returning to its end (the start may wait for the runtime's first walk of the
    /// host's private files, which a loaded machine makes slow).
    elapsed: Duration,
}

impl Run {
    fn output(&self) -> String {
        let bytes: Vec<u8> = self
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                ContainerEvent::Output(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn step_events(&self) -> Vec<&ContainerEvent> {
        self.events
            .iter()
            .map(|(_, e)| e)
            .filter(|e| !matches!(e, ContainerEvent::Output(_)))
            .collect()
    }
}

/// Runs `test` on another thread and fails if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, test: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    let test = std::thread::spawn(move || done.send(test()).ok());
    match result.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(test.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test did not finish within {limit:?}"),
    }
}

/// Starts a container, optionally acts on it while it runs, waits, and checks that nothing is left behind.
fn run_with(farm: &Farm, config: ContainerConfig, during: impl FnOnce(Arc<dyn Container>)) -> Run {
    let mounts_before = host_mounts();
    let id = config.id.clone();
    let (events, mut receiver) =
        tokio::sync::mpsc::channel(gantry_worker::runtime::EVENTS_CAPACITY);
    let collector = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while let Some(event) = receiver.blocking_recv() {
            seen.push((Instant::now(), event));
        }
        seen
    });
    let container = farm
        .runtime
        .start(config, events)
        .expect("the container starts");
    let started = Instant::now();
    during(container.clone());
    let outcome = container
        .wait()
        .expect("the container's run ends without a runtime error");
    let elapsed = started.elapsed();
    drop(container);
    let events = collector.join().unwrap();
    assert_nothing_left(farm, &id, &mounts_before);
    Run {
        outcome,
        events,
        elapsed,
    }
}

fn run(farm: &Farm, config: ContainerConfig) -> Run {
    run_with(farm, config, |_| {})
}

fn host_mounts() -> BTreeSet<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|line| {
            line.split(' ')
                .skip(3)
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// This host's cgroup hierarchies, as the runtime reads them (v1, v2 or both: no path is assumed).
fn layout() -> CgroupLayout {
    CgroupLayout::detect().expect("cgroups: the memory and pids controllers must be mounted")
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    layout()
        .parents()
        .into_iter()
        .map(|parent| parent.join(id))
        .filter(|dir| dir.exists())
        .collect()
}

/// Processes whose environment holds `marker` (steps inherit their environment).
fn processes_with(marker: &str) -> Vec<String> {
    let entries = std::fs::read_dir("/proc").unwrap();
    let pids = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned());
    let pids = pids.filter(|name| name.chars().all(|c| c.is_ascii_digit()));
    pids.filter(|pid| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes())
    })
    .collect()
}

fn assert_nothing_left(farm: &Farm, id: &str, mounts_before: &BTreeSet<String>) {
    assert_eq!(
        cgroup_dirs(id),
        Vec::<PathBuf>::new(),
        "cgroup dirs of {id} remain"
    );
    assert!(
        !farm.state.path().join(id).exists(),
        "the scratch dir of {id} remains"
    );
    assert_eq!(
        &host_mounts(),
        mounts_before,
        "the host's mount table changed"
    );
}

fn lines_after<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} in {output:?}"))
}

#[test]
fn a_job_runs_in_its_own_namespaces_on_a_throwaway_copy_of_the_host_root() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let host_file = format!("/usr/gantry-test-{}", uuid::Uuid::now_v7().simple());
        let write = format!("echo hi > /tmp/x; cat /tmp/x; echo kept > {host_file}");
        let config = farm.config(&[
            "echo host=$(hostname); echo pid=$$; echo uid=$(id -u); echo procs=$(ls /proc | grep -c '^[0-9]')",
            &write,
            &format!("echo file=$(cat {host_file}); echo cwd=$(pwd)"),
        ]);
        let run = run(&farm, config);
        let output = run.output();
        assert_eq!(run.outcome.failure, None, "{output}");
        assert_eq!(run.outcome.exit_code, Some(0));
        assert_eq!(lines_after(&output, "host="), "gantry-job");
        assert_ne!(nix::unistd::gethostname().unwrap(), "gantry-job");
        let pid: u32 = lines_after(&output, "pid=").parse().unwrap();
        assert!(
            pid < 10,
            "the step's shell should have a low pid in a new PID namespace, got {pid}"
        );
        assert_eq!(lines_after(&output, "uid="), "0");
        let procs: u32 = lines_after(&output, "procs=").parse().unwrap();
        assert!(
            procs <= 5,
            "only a handful of processes should be visible, got {procs}"
        );
        assert!(output.contains("hi\n"), "{output}");
        assert_eq!(
            lines_after(&output, "file="),
            "kept",
            "files persist between steps"
        );
        assert_eq!(lines_after(&output, "cwd="), "/workspace");
        assert!(
            !Path::new(&host_file).exists(),
            "a write to the container's /usr reached the host"
        );
        assert!(run.outcome.cpu_seconds.is_some() && run.outcome.peak_memory_bytes.is_some());
    });
}

#[test]
fn masked_paths_and_host_secrets_are_unreadable_from_the_job() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let secrets = tempfile::tempdir_in("/var/tmp").unwrap();
        let hidden = secrets.path().join("hidden");
        let open = secrets.path().join("open");
        for dir in [&hidden, &open] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("file.txt"), "TOPSECRET-or-not\n").unwrap();
        }
        let hidden_file = secrets.path().join("key.pem");
        std::fs::write(&hidden_file, "PRIVATE-KEY\n").unwrap();
        let mut config = farm.config(&[&format!(
            "cat {h}/file.txt || echo no-hidden-dir; echo key=$(cat {f}); echo open=$(cat {o}/file.txt); \
             echo shadow=$(wc -c < /etc/shadow); echo state=$(ls -A {s} | wc -l); echo run=$(ls -A /run | wc -l)",
            h = hidden.display(),
            f = hidden_file.display(),
            o = open.display(),
            s = farm.state.path().display(),
        )]);
        config.masked_paths = vec![
            hidden.clone(),
            hidden_file.clone(),
            PathBuf::from("/nonexistent/mask"),
        ];
        let run = run(&farm, config);
        let output = run.output();
        assert_eq!(run.outcome.failure, None, "{output}");
        assert!(output.contains("no-hidden-dir"), "{output}");
        assert_eq!(lines_after(&output, "key="), "");
        assert_eq!(
            lines_after(&output, "open="),
            "TOPSECRET-or-not",
            "an unmasked sibling stays readable"
        );
        assert_eq!(lines_after(&output, "shadow="), "0");
        assert_eq!(
            lines_after(&output, "state="),
            "0",
            "the runtime's state dir is masked"
        );
        assert_eq!(lines_after(&output, "run="), "0");
        assert_eq!(output.matches("TOPSECRET").count(), 1, "{output}");
    });
}

#[test]
fn a_failing_step_stops_the_job_with_its_exit_code() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let run = run(
            &farm,
            farm.config(&["echo one", "echo two; exit 3", "echo never"]),
        );
        assert_eq!(run.outcome.exit_code, Some(3));
        assert_eq!(run.outcome.failure, Some(FailureKind::Exit));
        assert_eq!(
            run.outcome.message.as_deref(),
            Some("step 2 (`echo two; exit 3`) exited with 3")
        );
        assert_eq!(run.output(), "one\ntwo\n");
        assert_eq!(
            run.step_events(),
            vec![
                &ContainerEvent::StepStarted { index: 0 },
                &ContainerEvent::StepExited {
                    index: 0,
                    exit_code: 0
                },
                &ContainerEvent::StepStarted { index: 1 },
                &ContainerEvent::StepExited {
                    index: 1,
                    exit_code: 3
                },
            ]
        );
    });
}

#[test]
fn a_job_past_its_timeout_is_killed_promptly_with_its_background_processes() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let marker = format!("GANTRY_TEST_MARKER={}", uuid::Uuid::now_v7().simple());
        let mut config = farm.config(&["sleep 1000 & sleep 1000"]);
        config.env.push(
            marker
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
                .unwrap(),
        );
        config.timeout = Duration::from_secs(2);
        let run = run(&farm, config);
        assert_eq!(run.outcome.failure, Some(FailureKind::Timeout));
        assert!(
            run.outcome
                .message
                .as_deref()
                .unwrap()
                .contains("timeout of 2s"),
            "{:?}",
            run.outcome.message
        );
        assert!(
            run.elapsed < Duration::from_secs(6),
            "took {:?}",
            run.elapsed
        );
        assert_eq!(processes_with(&marker), Vec::<String>::new());
    });
}

#[test]
fn nothing_of_a_container_is_left_on_the_host_after_its_run() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let marker = format!("GANTRY_TEST_MARKER={}", uuid::Uuid::now_v7().simple());
        let mut config = farm.config(&["sleep 1000 & echo started", "mount | wc -l"]);
        config.env.push(
            marker
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
                .unwrap(),
        );
        let id = config.id.clone();
        // run() checks cgroups, the scratch dir and the host's mounts; here also the processes.
        let run = run(&farm, config);
        assert_eq!(run.outcome.failure, None, "{}", run.output());
        assert_eq!(processes_with(&marker), Vec::<String>::new());
        assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());
        assert_eq!(
            farm.runtime.sweep().unwrap(),
            0,
            "nothing for a sweep to find"
        );
    });
}

#[test]
fn output_streams_live_while_the_step_writes_it() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let run = run(
            &farm,
            farm.config(&["for i in 1 2 3; do echo $i; sleep 0.1; done; printf 'no newline'"]),
        );
        assert_eq!(run.outcome.failure, None);
        assert_eq!(run.output(), "1\n2\n3\nno newline");
        let times: Vec<Instant> = run
            .events
            .iter()
            .filter(|(_, e)| matches!(e, ContainerEvent::Output(_)))
            .map(|(at, _)| *at)
            .collect();
        assert!(
            times.len() >= 3,
            "expected separate output events, got {}",
            times.len()
        );
        let spread = *times.last().unwrap() - times[0];
        assert!(
            spread >= Duration::from_millis(150),
            "output arrived in one burst ({spread:?})"
        );
        let last = run.events.last().map(|(_, e)| e);
        assert_eq!(
            last,
            Some(&ContainerEvent::StepExited {
                index: 0,
                exit_code: 0
            }),
            "output precedes the exit"
        );
    });
}

#[test]
fn only_loopback_exists_and_services_on_localhost_work() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let serve = r#"perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:4567", ReuseAddr => 1) or die "listen: $!"; if (fork) { $c = $s->accept; print $c "pong\n"; wait } else { $k = IO::Socket::INET->new("127.0.0.1:4567") or die "connect: $!"; print "got ", scalar <$k> }'"#;
        let run = run(
            &farm,
            farm.config(&[
                "echo net=$(ls /sys/class/net)",
                "tail -n +3 /proc/net/dev | cut -d: -f1",
                serve,
            ]),
        );
        let output = run.output();
        assert_eq!(run.outcome.failure, None, "{output}");
        assert_eq!(lines_after(&output, "net="), "lo");
        assert!(output.contains("got pong"), "{output}");
        let devices: Vec<&str> = output
            .lines()
            .map(str::trim)
            .filter(|l| !l.contains('=') && !l.contains(' '))
            .collect();
        assert_eq!(devices, vec!["lo"], "{output}");
    });
}

#[test]
fn a_memory_hog_is_reported_as_out_of_memory() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let mut config = farm.config(&["head -c 600M /dev/zero | tail", "echo never"]);
        config.resources.memory_bytes = 64 << 20;
        let run = run(&farm, config);
        assert_eq!(
            run.outcome.failure,
            Some(FailureKind::Oom),
            "{:?} {}",
            run.outcome,
            run.output()
        );
        assert!(run.outcome.message.as_deref().unwrap().contains("64 MiB"));
        assert!(run.outcome.peak_memory_bytes.unwrap() <= 64 << 20);
        assert!(!run.output().contains("never"));
    });
}

#[test]
fn a_fork_bomb_is_reported_as_hitting_the_pids_limit() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let mut config = farm.config(&["while :; do sleep 1000 & done", "echo never"]);
        config.resources.pids = 64;
        let run = run(&farm, config);
        assert_eq!(
            run.outcome.failure,
            Some(FailureKind::PidsLimit),
            "{:?} {}",
            run.outcome,
            run.output()
        );
        assert!(run.outcome.message.as_deref().unwrap().contains("pids: 64"));
    });
}

#[test]
fn cancel_from_another_thread_kills_the_job_at_once() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let run = run_with(&farm, farm.config(&["sleep 1000"]), |container| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                container.cancel();
                container.cancel();
            });
        });
        assert_eq!(run.outcome.failure, Some(FailureKind::Cancelled));
        assert!(
            run.elapsed < Duration::from_secs(5),
            "took {:?}",
            run.elapsed
        );
    });
}

#[test]
fn steps_get_only_the_given_environment_no_inherited_fds_and_no_blocked_signals() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let mut config = farm.config(&[
            "env | sort; echo fds=$(ls /proc/self/fd | sort -n | tr '\\n' ' ')",
            "grep -E '^Sig(Blk|Ign)' /proc/self/status | tr '\\t' =",
        ]);
        config.env.push(("GREETING".into(), "hello world".into()));
        let run = run(&farm, config);
        let output = run.output();
        assert!(output.contains("GREETING=hello world\n"), "{output}");
        assert!(
            !output.contains("CARGO"),
            "the worker's environment leaked: {output}"
        );
        // 0-2 and the directory ls itself opens to list /proc/self/fd.
        assert_eq!(lines_after(&output, "fds="), "0 1 2 3");
        assert_eq!(lines_after(&output, "SigBlk:="), "0000000000000000");
        // Only glibc's two internal signals may be left as the worker had them; nothing else is ignored.
        let ignored = u64::from_str_radix(lines_after(&output, "SigIgn:="), 16).unwrap();
        assert_eq!(ignored & !(0b11 << 31), 0, "{output}");
    });
}

#[test]
fn a_setup_failure_says_what_failed_and_leaves_nothing_behind() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let mut config = farm.config(&["true"]);
        config.workspace = PathBuf::from("/nonexistent/gantry-workspace");
        let id = config.id.clone();
        let (events, _receiver) =
            tokio::sync::mpsc::channel(gantry_worker::runtime::EVENTS_CAPACITY);
        let error = farm
            .runtime
            .start(config, events)
            .err()
            .expect("setup fails");
        let message = error.to_string();
        assert!(matches!(error, RuntimeError::Setup(_)), "{message}");
        assert!(
            message.contains("workspace /nonexistent/gantry-workspace"),
            "{message}"
        );
        assert_eq!(cgroup_dirs(&id), Vec::<PathBuf>::new());
        assert!(!farm.state.path().join(&id).exists());
    });
}

#[test]
fn sweep_removes_what_this_worker_left_behind_and_nothing_of_other_workers() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let job = uuid::Uuid::now_v7().simple();
        let ours = format!("{}-{job}-1", farm.worker);
        // A worker whose name starts with this one's (`first-2` and `first`): its containers are not ours.
        let theirs = format!("{}-2-{job}-1", farm.worker);
        let mut sleeper = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        for (id, pid) in [(&ours, Some(sleeper.id())), (&theirs, None)] {
            for controller in [Controller::Memory, Controller::Pids] {
                let dir = layout().dir_of(controller, id).unwrap();
                std::fs::create_dir_all(&dir).unwrap();
                if let Some(pid) = pid {
                    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
                }
            }
            std::fs::create_dir_all(farm.state.path().join(id)).unwrap();
        }
        assert_eq!(farm.runtime.sweep().unwrap(), 1);
        assert!(
            !sleeper.wait().unwrap().success(),
            "the left-behind process was killed"
        );
        assert_eq!(cgroup_dirs(&ours), Vec::<PathBuf>::new());
        assert!(!farm.state.path().join(&ours).exists());
        assert_eq!(
            cgroup_dirs(&theirs).len(),
            2,
            "another worker's cgroups are untouched"
        );
        assert!(farm.state.path().join(&theirs).exists());
        for dir in cgroup_dirs(&theirs) {
            std::fs::remove_dir(dir).unwrap();
        }
    });
}

/// The container's init (its PID 1): the process in the container's cgroup whose parent, the runtime's zygote,
/// is not.
fn init_pid(id: &str) -> Option<i32> {
    let in_container = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|cgroup| cgroup.contains(&format!("/gantry/{id}\n")))
    };
    let entries = std::fs::read_dir("/proc").unwrap();
    entries.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: i32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (in_container(pid) && !in_container(ppid)).then_some(pid)
    })
}

#[test]
fn sigterm_to_the_container_init_reaches_the_steps() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let config =
            farm.config(&["trap 'echo got TERM; exit 7' TERM; echo ready; sleep 1000 & wait"]);
        let id = config.id.clone();
        let run = run_with(&farm, config, |_| {
            std::thread::sleep(Duration::from_millis(500));
            let pid = init_pid(&id).expect("the container's init is running");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
        });
        assert_eq!(run.output(), "ready\ngot TERM\n");
        assert_eq!(run.outcome.exit_code, Some(7));
        assert_eq!(run.outcome.failure, Some(FailureKind::Exit));
    });
}

#[test]
fn an_init_that_dies_before_the_container_is_ready_is_a_setup_error() {
    within(Duration::from_secs(120), || {
        let state = tempfile::tempdir_in("/var/tmp").unwrap();
        let runtime = NamespacesRuntime::new(RuntimeOptions {
            worker_name: "ct-not-init".into(),
            state_dir: state.path().to_path_buf(),
            init_exe: PathBuf::from("/bin/true"),
            extra_masks: vec![],
            user_namespace: true,
            host_paths: vec![],
            egress: Default::default(),
        })
        .unwrap();
        let farm = Farm::new();
        let mut config = farm.config(&["true"]);
        config.id = "ct-not-init-1".into();
        let (events, _receiver) =
            tokio::sync::mpsc::channel(gantry_worker::runtime::EVENTS_CAPACITY);
        let error = runtime.start(config, events).err().expect("setup fails");
        let message = error.to_string();
        assert!(
            message.contains("exited before the container was ready"),
            "{message}"
        );
        assert_eq!(cgroup_dirs("ct-not-init-1"), Vec::<PathBuf>::new());
        assert!(!state.path().join("ct-not-init-1").exists());
    });
}

#[test]
fn a_cpu_quota_is_applied_to_the_job_cgroup() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        let mut config = farm.config(&["sleep 0.5"]);
        config.resources.cpus = Some(0.5);
        let layout = layout();
        let dir = layout
            .dir_of(Controller::Cpu, &config.id)
            .expect("this host has no cpu controller for a quota");
        // v1: a quota of 50,000 µs per (default) 100,000 µs period; v2: both in one file.
        let (quota, expected) = match layout.on_v1(Controller::Cpu) {
            true => (dir.join("cpu.cfs_quota_us"), "50000"),
            false => (dir.join("cpu.max"), "50000 100000"),
        };
        let (seen_tx, seen_rx) = mpsc::channel();
        let run = run_with(&farm, config, move |_| {
            seen_tx.send(std::fs::read_to_string(&quota).ok()).unwrap();
        });
        assert_eq!(run.outcome.failure, None);
        let seen = seen_rx.recv().unwrap();
        assert_eq!(seen.as_deref().map(str::trim), Some(expected));
    });
}

#[test]
fn root_in_a_job_is_an_unprivileged_uid_on_the_host_yet_owns_its_files() {
    within(Duration::from_secs(60), || {
        let farm = Farm::new();
        let map = farm.runtime.id_map().expect(
            "this host allows user namespaces and id-mapped mounts (Linux >= 5.19, data dir on ext4, xfs, btrfs \
             or tmpfs), so the runtime must use them",
        );
        std::fs::write(farm.workspace.path().join("from-host"), "x").unwrap();
        let marker = format!("USERNS_MARK={}", uuid::Uuid::now_v7().simple());
        let mut config = farm.config(&[
            "echo uid=$(id -u) map=$(awk '{print $1\":\"$2\":\"$3}' /proc/self/uid_map)",
            "echo su=$(stat -c %u /usr/bin/su) ws=$(stat -c %u /workspace/from-host)",
            "touch /workspace/by-job /etc/by-job && echo wrote=yes",
            "sleep 3",
        ]);
        let (key, value) = marker.split_once('=').unwrap();
        config.env.push((key.into(), value.into()));
        let host_uids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = host_uids.clone();
        let run = run_with(&farm, config, move |_| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
                for pid in processes_with(&marker) {
                    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                    let uid = status.unwrap_or_default().lines().find_map(|l| {
                        l.strip_prefix("Uid:")
                            .and_then(|ids| ids.split_whitespace().next()?.parse::<u32>().ok())
                    });
                    seen.lock().unwrap().extend(uid);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let output = run.output();
        assert_eq!(run.outcome.failure, None, "{output}");
        assert!(output.contains("uid=0 "), "{output}");
        let expected = format!("map=0:{}:65536", map.host_base);
        assert!(output.contains(&expected), "{expected} not in {output}");
        assert!(
            output.contains("su=0 ws=0"),
            "owners keep their ids: {output}"
        );
        assert!(output.contains("wrote=yes"), "{output}");
        let uids = host_uids.lock().unwrap().clone();
        assert!(!uids.is_empty(), "no step process was seen on the host");
        assert!(
            uids.iter().all(|&uid| uid == map.host_base),
            "step processes on the host run as {uids:?}, not {}",
            map.host_base
        );
        use std::os::unix::fs::MetadataExt;
        let written = std::fs::metadata(farm.workspace.path().join("by-job")).unwrap();
        assert_eq!(
            written.uid(),
            0,
            "a file root wrote to /workspace belongs to host root"
        );
    });
}

#[test]
fn each_steps_output_arrives_between_its_start_and_its_end() {
    within(Duration::from_secs(60), || {
        let farm = Farm::new();
        let steps: Vec<String> = (0..30).map(|i| format!("echo out-{i}")).collect();
        let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
        let run = run(&farm, farm.config(&steps));
        assert_eq!(run.outcome.failure, None, "{}", run.output());
        let mut current: Option<u32> = None;
        let mut seen = String::new();
        for (_, event) in &run.events {
            match event {
                ContainerEvent::StepStarted { index } => {
                    assert_eq!(current, None, "step {index} started inside another");
                    current = Some(*index);
                }
                ContainerEvent::StepExited { index, .. } => {
                    assert_eq!(current, Some(*index));
                    assert!(
                        seen.contains(&format!("out-{index}\n")),
                        "step {index}: {seen:?}"
                    );
                    current = None;
                    seen.clear();
                }
                ContainerEvent::Output(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    let index = current.unwrap_or_else(|| panic!("{text:?} outside any step"));
                    assert_eq!(text.trim(), format!("out-{index}"), "in step {index}");
                    seen.push_str(&text);
                }
            }
        }
    });
}

/// After the first start, a container's init is the spare one, which waited in a cgroup of another name: it
/// must end up in the container's own cgroup, with the container's limits, and no spare may outlive the runtime.
#[test]
fn back_to_back_containers_get_their_own_cgroups_and_limits_and_spares_are_not_swept_nor_left() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        for pids in [101, 102, 103] {
            let mut config = farm.config(&["sleep 0.3"]);
            config.resources.pids = pids;
            let id = config.id.clone();
            let (seen_tx, seen_rx) = mpsc::channel();
            let run = run_with(&farm, config, move |_| {
                let max = layout()
                    .dir_of(Controller::Pids, &id)
                    .unwrap()
                    .join("pids.max");
                let limit = std::fs::read_to_string(max).ok();
                seen_tx.send((limit, init_pid(&id).is_some())).unwrap();
            });
            assert_eq!(run.outcome.failure, None, "{:?}", run.outcome);
            let (limit, init_inside) = seen_rx.recv().unwrap();
            assert_eq!(limit.as_deref().map(str::trim), Some(&*pids.to_string()));
            assert!(init_inside, "the init runs in the container's own cgroup");
        }
        assert_eq!(
            farm.runtime.sweep().unwrap(),
            0,
            "the live spare is not swept"
        );
        assert_eq!(run(&farm, farm.config(&["true"])).outcome.failure, None);
        let worker = farm.worker.clone();
        drop(farm);
        let left: Vec<PathBuf> = layout()
            .parents()
            .into_iter()
            .filter_map(|parent| std::fs::read_dir(parent).ok())
            .flat_map(|dirs| dirs.flatten().map(|d| d.path()))
            .filter(|dir| {
                dir.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&worker)
            })
            .collect();
        assert_eq!(
            left,
            Vec::<PathBuf>::new(),
            "cgroups of the runtime survive it"
        );
    });
}

/// The config travels on a pipe, written partly before init has it and partly while it reads.
#[test]
fn a_config_larger_than_a_pipe_arrives_whole() {
    within(Duration::from_secs(120), || {
        let farm = Farm::new();
        // Three variables, since one string passed to exec is limited to 128 KiB.
        let mut config = farm.config(&["test ${#A}${#B}${#C} = 100000100000100000"]);
        for name in ["A", "B", "C"] {
            config.env.push((name.into(), "x".repeat(100_000)));
        }
        let run = run(&farm, config);
        assert_eq!(run.outcome.failure, None, "{:?}", run.outcome);
    });
}
