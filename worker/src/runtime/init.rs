//! A container's init: forked by the zygote (see `zygote`), it first does the part of making a container that
//! is the same for every container and slow — joining a cgroup (an RCU grace period on cgroup v1), making the
//! user namespace with the worker's id map, and a network namespace owned by it with `lo` up — and waits, so
//! the runtime can have that done ahead of time. Then the runtime hands it its config and pipes: it makes the
//! id-mapped mounts, enters the user namespace, unshares the other namespaces, and forks PID 1 of the new PID
//! namespace (see `pid1`), while it stays outside, forwarding SIGTERM and SIGINT and exiting with PID 1's
//! status.
#![allow(unsafe_code)] // fork() and close_range() have no safe wrappers; this process is single-threaded

use super::pid1::{self, SETUP_FAILED};
use super::protocol::{InitConfig, InitMessage};
use super::userns::{self, IdMap};
use super::zygote::wire::{self, InitNote, MAX_MESSAGE, Request};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

/// What an init makes before it is started.
pub(crate) struct Shell {
    /// The user namespace, when containers get one.
    userns: Option<(IdMap, OwnedFd)>,
    /// A network namespace of its own (owned by the user namespace, if any), with `lo` up; none: the host's.
    network: Option<OwnedFd>,
}

/// Runs in the zygote's child, whose only fd is `zygote`; returns its exit status.
pub(crate) fn standby(
    zygote: OwnedFd,
    procs: &[PathBuf],
    (network, new_session): (bool, bool),
    id_map: Option<IdMap>,
) -> i32 {
    // Blocked from the start and for good (PID 1 inherits the mask): it waits for them with sigwait, and none
    // may slip by before.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    if signals.thread_block().is_err() {
        return SETUP_FAILED;
    }
    let joined = isolate(new_session).and_then(|()| join(procs, network, id_map));
    let (note, shell) = match joined {
        Ok(shell) => (InitNote::Joined, Some(shell)),
        Err(message) => (InitNote::Failed { message }, None),
    };
    // The zygote may have closed its end already, with our pipes waiting in the socket: read them anyway.
    let _ = wire::send(&zygote, &note, &[]);
    let Some(shell) = shell else {
        return SETUP_FAILED;
    };
    let mut buf = vec![0; MAX_MESSAGE];
    let pipes = match wire::recv::<Request>(&zygote, &mut buf) {
        Ok(Some((Request::Start { .. }, pipes))) => pipes,
        // Discarded, or the zygote is gone: nobody will ever start us.
        _ => return SETUP_FAILED,
    };
    let Ok::<[OwnedFd; 3], _>([config, control, output]) = pipes.try_into() else {
        return SETUP_FAILED;
    };
    let control = File::from(control);
    match start(shell, zygote, config, output, &control, &signals) {
        Ok(status) => status,
        Err(message) => {
            pid1::report(&control, &InitMessage::SetupFailed { message });
            SETUP_FAILED
        }
    }
}

/// A session per container, without a controlling terminal (the zygote has none either), so that no
/// container's processes share one with another's; and nobody in the container may read this process's memory
/// or take its fds (`/proc/1/fd`, pidfd_getfd), which a user namespace ensures by itself but the fallback
/// without one does not (PID 1 inherits it; a step's exec makes the step dumpable again).
fn isolate(new_session: bool) -> Result<(), String> {
    if new_session {
        nix::unistd::setsid().map_err(|e| format!("start a session of its own (setsid): {e}"))?;
    }
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("make the init not dumpable: {e}"))
}

/// Joins the cgroup and makes the user and network namespaces.
fn join(procs: &[PathBuf], network: bool, id_map: Option<IdMap>) -> Result<Shell, String> {
    for procs in procs {
        if let Some(dir) = procs.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("create the cgroup {}: {e}", dir.display()))?;
        }
        // "0" is the writer itself, whatever its pid looks like from the cgroup's side.
        std::fs::write(procs, "0")
            .map_err(|e| format!("join the cgroup {}: {e}", procs.display()))?;
    }
    match id_map {
        Some(map) => {
            let made = userns::create(&map, network)
                .map_err(|e| format!("create a user namespace: {e}"))?;
            Ok(Shell {
                userns: Some((map, made.userns)),
                network: made.network,
            })
        }
        None if network => {
            // Made and left again, as with a user namespace: an egress container's veth is made from the
            // worker's namespace, into this one.
            let home = File::open("/proc/self/ns/net")
                .map_err(|e| format!("open this network namespace: {e}"))?;
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare the network namespace: {e}"))?;
            super::network::loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
            let made = File::open("/proc/self/ns/net")
                .map_err(|e| format!("open the new network namespace: {e}"))?;
            setns(home.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("go back to the worker's network namespace: {e}"))?;
            Ok(Shell {
                userns: None,
                network: Some(made.into()),
            })
        }
        None => Ok(Shell {
            userns: None,
            network: None,
        }),
    }
}

/// Takes the pipes as the runtime sent them (the config to read, the control pipe for messages, and the output
/// pipe that becomes stdout and stderr, which the steps inherit), then makes the container's namespaces and
/// forks its PID 1.
fn start(
    shell: Shell,
    zygote: OwnedFd,
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

    match (&shell.network, &config.egress) {
        (Some(network), egress) => {
            if let Some(link) = egress {
                super::network::plug_in(link, network.as_fd())?;
            }
            setns(network.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("join the container's network namespace: {e}"))?;
            if let Some(link) = egress {
                super::network::configure(link)?;
            }
        }
        (None, Some(_)) => {
            return Err("network: egress needs a network namespace of its own".into());
        }
        (None, None) => {}
    }
    // First, so that every namespace unshared next belongs to it.
    let mounts = match (&shell.userns, &config.id_map) {
        (Some((map, userns)), Some(wanted)) if map == wanted => {
            userns::enter(userns.as_fd(), &config)?
        }
        (None, None) => userns::Mounts::default(),
        (made, wanted) => {
            return Err(format!(
                "the init was made for id map {:?} but the container wants {wanted:?}",
                made.as_ref().map(|(map, _)| map)
            ));
        }
    };
    drop(shell);
    // Unshared after the cgroup join, so that the cgroup namespace is rooted at the container's cgroup.
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(namespaces).map_err(|e| format!("unshare the namespaces: {e}"))?;
    // The zygote holds the mount namespace from here, so the container's mounts go after its exit is reported.
    let _ = wire::send(&zygote, &InitNote::Unshared, &[]);
    drop(zygote);
    // SAFETY: this process has a single thread (the zygote's fork of its single thread), so the child may do
    // anything a process can.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // Killing this process (the runtime's cancel and teardown) kills PID 1 and so the whole container.
            // (Should it die before this line, the teardown's cgroup kill still gets everything.)
            if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
                std::process::exit(SETUP_FAILED);
            }
            std::process::exit(pid1::run(&config, &mounts, control, signals))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(mounts);
            Ok(supervise(child, signals))
        }
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
                    eprintln!("gantry: container init waiting for PID 1: {e}");
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

/// CVE-2024-21626: an fd that survives into a step is a way out of the container. The zygote closed all of its
/// own and the pipes arrived close-on-exec; this makes sure rather than trusts.
fn set_cloexec_from_3() -> io::Result<()> {
    // SAFETY: only sets the close-on-exec flag of fds this process owns.
    if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
