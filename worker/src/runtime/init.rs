//! A container's init: forked by the zygote (see `zygote`) as PID 1 of a fresh PID namespace, it first makes
//! itself a container shell — its cgroup, then its own mount, UTS, IPC, cgroup and (usually) network
//! namespaces — and waits. Everything so far is the same for every container, so the runtime can have it done
//! ahead of time. Then the runtime hands it its config and pipes, and it builds the container and runs the
//! steps (see `pid1`).
#![allow(unsafe_code)] // close_range() has no safe wrapper

use super::pid1::{self, SETUP_FAILED};
use super::protocol::{InitConfig, InitMessage};
use super::zygote::wire::{self, InitNote, MAX_MESSAGE, Request};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{SigSet, Signal};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Runs in the zygote's child, whose only fd is `zygote`; returns its exit status.
pub(crate) fn standby(zygote: OwnedFd, procs: &[PathBuf], network: bool) -> i32 {
    // Blocked from the start and for good: PID 1 waits for them with sigwait, and none may slip by before.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    if signals.thread_block().is_err() {
        return SETUP_FAILED;
    }
    let note = match join(procs, network) {
        Ok(()) => InitNote::Joined,
        Err(message) => InitNote::Failed { message },
    };
    let joined = note == InitNote::Joined;
    // The zygote may have closed its end already, with our pipes waiting in the socket: read them anyway.
    let _ = wire::send(&zygote, &note, &[]);
    if !joined {
        return SETUP_FAILED;
    }
    let mut buf = vec![0; MAX_MESSAGE];
    let pipes = match wire::recv::<Request>(&zygote, &mut buf) {
        Ok(Some((Request::Start { .. }, pipes))) => pipes,
        // Discarded, or the zygote is gone: nobody will ever start us.
        _ => return SETUP_FAILED,
    };
    drop(zygote);
    let Ok::<[OwnedFd; 3], _>([config, control, output]) = pipes.try_into() else {
        return SETUP_FAILED;
    };
    let control = File::from(control);
    match start(config, output, &control, &signals) {
        Ok(status) => status,
        Err(message) => {
            pid1::report(&control, &InitMessage::SetupFailed { message });
            SETUP_FAILED
        }
    }
}

/// Joins the cgroup, then unshares the rest (the cgroup namespace after the join, so that it is rooted at our
/// cgroup), and brings up `lo` in a new network namespace.
fn join(procs: &[PathBuf], network: bool) -> Result<(), String> {
    for procs in procs {
        if let Some(dir) = procs.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("create the cgroup {}: {e}", dir.display()))?;
        }
        // "0" is the writer itself, whatever its pid looks like from the cgroup's side.
        std::fs::write(procs, "0")
            .map_err(|e| format!("join the cgroup {}: {e}", procs.display()))?;
    }
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if network {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    unshare(namespaces).map_err(|e| format!("unshare the namespaces: {e}"))?;
    if network {
        super::network::loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    }
    Ok(())
}

/// Takes the pipes as the runtime sent them: the config to read, the control pipe for messages, and the
/// output pipe that becomes stdout and stderr (the steps inherit those).
fn start(
    config: OwnedFd,
    output: OwnedFd,
    control: &File,
    signals: &SigSet,
) -> Result<i32, String> {
    nix::unistd::dup2_stdout(&output).map_err(|e| format!("replace stdout: {e}"))?;
    nix::unistd::dup2_stderr(&output).map_err(|e| format!("replace stderr: {e}"))?;
    drop(output);
    let null = File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(null).map_err(|e| format!("replace stdin: {e}"))?;
    let mut input = Vec::new();
    File::from(config)
        .read_to_end(&mut input)
        .map_err(|e| format!("read the config: {e}"))?;
    let config: InitConfig =
        serde_json::from_slice(&input).map_err(|e| format!("parse the config: {e}"))?;
    set_cloexec_from_3().map_err(|e| format!("mark the fds close-on-exec: {e}"))?;
    Ok(pid1::run(&config, control, signals))
}

/// CVE-2024-21626: an fd that survives into a step is a way out of the container. The zygote closed all of its
/// own and the pipes arrived close-on-exec; this makes sure rather than trusts.
fn set_cloexec_from_3() -> io::Result<()> {
    // SAFETY: only sets the close-on-exec flag of fds this process owns.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
