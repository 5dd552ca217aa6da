//! `gantry container-init`: the first process of a container, started by the runtime with the config as JSON
//! on stdin, its control pipe as stdout and the job's output pipe as stderr.
//!
//! Being freshly exec'd and single-threaded, it can safely join the cgroup, unshare the namespaces and fork:
//! the child becomes PID 1 of the new PID namespace (see `pid1`), while this process stays outside it,
//! forwarding SIGTERM and SIGINT and exiting with PID 1's status.
#![allow(unsafe_code)] // fork() and close_range() have no safe wrappers; this process is single-threaded

use super::pid1::{self, SETUP_FAILED};
use super::protocol::{InitConfig, InitMessage};
use super::userns;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

/// Entry point of the hidden `gantry container-init` subcommand; returns the process's exit status. Call it
/// first thing in `main`, before any thread (a tokio runtime, say) exists.
pub fn init_main() -> i32 {
    let control = match take_control_pipe() {
        Ok(control) => control,
        Err(e) => {
            eprintln!(
                "gantry container-init: cannot set up its pipes ({e}); it is started by the worker only"
            );
            return SETUP_FAILED;
        }
    };
    match start(&control) {
        Ok(status) => status,
        Err(message) => {
            pid1::report(&control, &InitMessage::SetupFailed { message });
            SETUP_FAILED
        }
    }
}

/// Moves the control pipe off stdout, so that stdout and stderr both become the job's output pipe.
fn take_control_pipe() -> io::Result<File> {
    // CVE-2024-21626: a host fd leaked into a job is a way out of the container, so no fd the worker leaked
    // to us survives into the steps.
    // SAFETY: only sets the close-on-exec flag of fds this process owns.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // try_clone_to_owned is F_DUPFD_CLOEXEC: the copy is >= 3 and close-on-exec.
    let control = io::stdout().as_fd().try_clone_to_owned()?;
    nix::unistd::dup2_stdout(io::stderr())?;
    Ok(File::from(control))
}

fn start(control: &File) -> Result<i32, String> {
    check_single_threaded()?;
    let mut input = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut input)
        .map_err(|e| format!("read the config from stdin: {e}"))?;
    let config: InitConfig =
        serde_json::from_slice(&input).map_err(|e| format!("parse the config: {e}"))?;
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(null).map_err(|e| format!("replace stdin: {e}"))?;

    // Joined before unsharing, so that the new cgroup namespace is rooted at the container's own cgroup.
    let pid = std::process::id().to_string();
    for procs in &config.cgroup_procs {
        std::fs::write(procs, &pid)
            .map_err(|e| format!("join the cgroup {}: {e}", procs.display()))?;
    }
    // Blocked here and inherited by PID 1, so no SIGCHLD or forwarded signal can slip by before sigwait.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .map_err(|e| format!("block signals: {e}"))?;
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    // First, so that every namespace unshared next belongs to it.
    let mounts = match &config.id_map {
        Some(map) => userns::enter(&config, map)?,
        None => userns::Mounts::default(),
    };
    unshare(namespaces).map_err(|e| format!("unshare the namespaces: {e}"))?;
    // SAFETY: this process has a single thread (checked above), so the child may do anything a process can.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => std::process::exit(pid1::run(&config, &mounts, control, &signals)),
        Ok(ForkResult::Parent { child }) => Ok(supervise(child, &signals)),
        Err(e) => Err(format!("fork the container's PID 1: {e}")),
    }
}

/// Waits for PID 1, passing on SIGTERM and SIGINT (which PID 1 receives only because it waits for them).
fn supervise(pid1: Pid, signals: &SigSet) -> i32 {
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => match waitpid(pid1, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("gantry container-init: waiting for PID 1: {e}");
                    return SETUP_FAILED;
                }
            },
            Ok(signal) => {
                let _ = kill(pid1, signal);
            }
            Err(_) => {}
        }
    }
}

/// fork() in a multi-threaded process leaves the child with locks held by threads that no longer exist.
fn check_single_threaded() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("read /proc/self/status: {e}"))?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .map(str::trim);
    match threads {
        Some("1") => Ok(()),
        other => Err(format!(
            "container-init must run before any thread is started, but it has {} threads (call init_main first \
             thing in main)",
            other.unwrap_or("?")
        )),
    }
}
