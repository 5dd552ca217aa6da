//! `gantry container-zygote`: the process that forks every container's init (see [`super`]). It runs no
//! thread but its main one, so that each fork may do anything afterwards; it blocks only in `poll`, waiting
//! for the runtime's requests, its children's notes and SIGCHLD.
#![allow(unsafe_code)] // fork(), signal() and close_range() have no safe wrappers; this process is single-threaded

use super::wire::{self, InitNote, MAX_MESSAGE, Report, Request};
use crate::runtime::init;
use crate::runtime::pid1::SETUP_FAILED;
use crate::runtime::userns::IdMap;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Entry point of the hidden `gantry container-zygote` subcommand, whose stdin is a `SOCK_SEQPACKET` socket to
/// the runtime; returns the exit status. Call it first thing in `main`, before any thread exists.
pub fn zygote_main() -> i32 {
    match Zygote::new() {
        Ok(mut zygote) => zygote.run(),
        Err(e) => {
            eprintln!("gantry container-zygote: {e} (it is started by the worker only)");
            SETUP_FAILED
        }
    }
}

/// One init this zygote forked.
struct Kid {
    pid: Pid,
    /// Our end of its socket, until it closes its end (once it has its pipes, or by dying).
    socket: Option<OwnedFd>,
    /// Its cgroup dirs' `procs` files, removed if it dies before it was started (the runtime never saw them).
    procs: Vec<PathBuf>,
    started: bool,
    /// Its container's mount namespace, held from its start to its reaping: the last reference to a container's mounts is
    /// dropped here, after its exit was reported, rather than by PID 1 on its way out, where unmounting them
    /// (~1 ms) would delay the report.
    mounts: Option<File>,
}

struct Zygote {
    upstream: OwnedFd,
    sigchld: SignalFd,
    kids: BTreeMap<u64, Kid>,
    buf: Vec<u8>,
}

impl Zygote {
    fn new() -> io::Result<Zygote> {
        check_single_threaded()?;
        // try_clone_to_owned is F_DUPFD_CLOEXEC: the copy is >= 3 and close-on-exec.
        let upstream = io::stdin().as_fd().try_clone_to_owned()?;
        nix::unistd::dup2_stdin(std::fs::File::open("/dev/null")?)?;
        // CVE-2024-21626: no fd the worker leaked to us may reach a job's steps.
        // SAFETY: only sets the close-on-exec flag of fds this process owns.
        if unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        reset_signal_dispositions();
        let mut chld = SigSet::empty();
        chld.add(Signal::SIGCHLD);
        chld.thread_block()?;
        let sigchld = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(Zygote {
            upstream,
            sigchld,
            kids: BTreeMap::new(),
            buf: vec![0; MAX_MESSAGE],
        })
    }

    fn run(&mut self) -> i32 {
        loop {
            let waiting: Vec<u64> = self
                .kids
                .iter()
                .filter(|(_, kid)| kid.socket.is_some())
                .map(|(&child, _)| child)
                .collect();
            let (upstream, sigchld, notes) = match self.poll(&waiting) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("gantry container-zygote: poll: {e}");
                    return self.shutdown();
                }
            };
            // Reaping first: a Kill that arrives with the SIGCHLD must not reach a pid that was reaped (and could
            // be reused).
            if sigchld {
                self.reap();
            }
            for child in notes {
                self.note(child);
            }
            if upstream {
                match wire::recv::<Request>(&self.upstream, &mut self.buf) {
                    Ok(Some((request, fds))) => self.handle(request, fds),
                    Ok(None) => return self.shutdown(),
                    Err(e) => {
                        eprintln!("gantry container-zygote: reading a request: {e}");
                        return self.shutdown();
                    }
                }
            }
        }
    }

    /// Which of upstream, SIGCHLD and the `waiting` kids' sockets have something to read.
    fn poll(&self, waiting: &[u64]) -> Result<(bool, bool, Vec<u64>), Errno> {
        let mut fds = vec![
            PollFd::new(self.upstream.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN),
        ];
        for child in waiting {
            if let Some(socket) = self.kids.get(child).and_then(|k| k.socket.as_ref()) {
                fds.push(PollFd::new(socket.as_fd(), PollFlags::POLLIN));
            }
        }
        poll(&mut fds, PollTimeout::NONE)?;
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let notes = waiting
            .iter()
            .zip(&ready[2..])
            .filter(|(_, ready)| **ready)
            .map(|(child, _)| *child)
            .collect();
        Ok((ready[0], ready[1], notes))
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) {
        match request {
            Request::Prepare {
                child,
                procs,
                network,
                new_session,
                id_map,
            } => {
                if let Err(e) = self.prepare(child, procs, (network, new_session), id_map) {
                    let message = format!("fork the container's init: {e}");
                    self.report(&Report::Failed { child, message });
                }
            }
            Request::Start { child, procs } => {
                // An init that is dead already gets nothing: our copies of the pipes close, which tells the runtime.
                let Some(kid) = self.kids.get_mut(&child).filter(|kid| !kid.started) else {
                    return;
                };
                if let Some(socket) = &kid.socket {
                    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
                    let start = Request::Start {
                        child,
                        procs: Vec::new(),
                    };
                    kid.started = wire::send(socket, &start, &raw).is_ok();
                }
                if !procs.is_empty() {
                    kid.procs = procs;
                }
            }
            Request::Kill { child } => {
                // Only kids not yet reaped are in the map, so the pid is still theirs.
                if let Some(kid) = self.kids.get(&child) {
                    let _ = kill(kid.pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn prepare(
        &mut self,
        child: u64,
        procs: Vec<PathBuf>,
        (network, new_session): (bool, bool),
        id_map: Option<IdMap>,
    ) -> io::Result<()> {
        let (ours, theirs) = wire::seqpacket_pair()?;
        let zygote = nix::unistd::getpid();
        // SAFETY: this process has a single thread (checked at start), so the child may do anything.
        match unsafe { fork() }? {
            ForkResult::Child => {
                // The init dies with the zygote, whatever kills it, and with the init its container (PID 1
                // dies with its init, and the kernel kills what is left of its PID namespace). Should the
                // zygote be gone already, the parent is someone else: stop here.
                let orphan = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
                    || nix::unistd::getppid() != zygote;
                if orphan {
                    std::process::exit(SETUP_FAILED);
                }
                close_fds_but(theirs.as_raw_fd());
                std::process::exit(init::standby(
                    theirs,
                    &procs,
                    (network, new_session),
                    id_map,
                ));
            }
            ForkResult::Parent { child: pid } => {
                let kid = Kid {
                    pid,
                    socket: Some(ours),
                    procs,
                    started: false,
                    mounts: None,
                };
                self.kids.insert(child, kid);
                Ok(())
            }
        }
    }

    /// Passes an init's note on; EOF means it died, which SIGCHLD reports.
    fn note(&mut self, child: u64) {
        let Some(socket) = self.kids.get(&child).and_then(|k| k.socket.as_ref()) else {
            return;
        };
        let report = match wire::recv::<InitNote>(socket, &mut self.buf) {
            Ok(Some((InitNote::Joined, _))) => Report::Joined { child },
            Ok(Some((InitNote::Unshared, _))) => {
                if let Some(kid) = self.kids.get_mut(&child) {
                    kid.mounts = File::open(format!("/proc/{}/ns/mnt", kid.pid)).ok();
                }
                return;
            }
            Ok(Some((InitNote::Failed { message }, _))) => Report::Failed { child, message },
            Ok(None) | Err(_) => {
                if let Some(kid) = self.kids.get_mut(&child) {
                    kid.socket = None;
                }
                return;
            }
        };
        self.report(&report);
    }

    fn reap(&mut self) {
        while let Ok(Some(_)) = self.sigchld.read_signal() {}
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, (code & 0xff) << 8),
                Ok(WaitStatus::Signaled(pid, signal, core)) => {
                    (pid, signal as i32 | if core { 0x80 } else { 0 })
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("gantry container-zygote: waitpid: {e}");
                    return;
                }
            };
            let Some((&child, _)) = self.kids.iter().find(|(_, kid)| kid.pid == pid) else {
                continue;
            };
            self.report(&Report::Exited { child, status });
            if let Some(kid) = self.kids.remove(&child)
                && !kid.started
            {
                remove_cgroup(&kid.procs);
            }
        }
    }

    fn report(&self, report: &Report) {
        // A runtime that is gone shows up as EOF on the next read.
        let _ = wire::send(&self.upstream, report, &[]);
    }

    /// The runtime is gone (its worker stopped, or was killed): every container dies with it, so that a job
    /// whose worker died never runs beside its re-run. Killing an init kills its PID 1, and with PID 1 the whole
    /// PID namespace: daemons and `setsid` children too. Their cgroups go with them (emptied first, should
    /// anything be left in them); a started container's scratch dir is the worker's next sweep's.
    fn shutdown(&mut self) -> i32 {
        for kid in self.kids.values() {
            let _ = kill(kid.pid, Signal::SIGKILL);
        }
        for kid in std::mem::take(&mut self.kids).into_values() {
            let _ = waitpid(kid.pid, None);
            remove_cgroup(&kid.procs);
        }
        0
    }
}

/// Removes the cgroup dirs an init made for itself, killing what its helpers may have left in them (a user
/// namespace helper outlives a killed init by a moment); the dirs of a renamed cgroup are gone already.
fn remove_cgroup(procs: &[PathBuf]) {
    for procs in procs {
        let Some(dir) = procs.parent() else { continue };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let pids = std::fs::read_to_string(procs).unwrap_or_default();
            for pid in pids.lines().filter_map(|pid| pid.trim().parse().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            match std::fs::remove_dir(dir) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    eprintln!("gantry container-zygote: removing {}: {e}", dir.display());
                    break;
                }
                _ => break,
            }
        }
    }
}

/// A forked init holds copies of every fd of the zygote; it keeps only its own socket.
fn close_fds_but(keep: RawFd) {
    let keep = keep as u32;
    // SAFETY: the fds closed belong to this process; none is used again (the zygote's handles on them are
    // never touched in the child, which only returns through exit).
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, u32::MAX, 0);
    }
}

/// Ignored signals stay ignored across fork and exec: one the worker ignores must not be ignored by a
/// container's PID 1, which waits for SIGTERM and SIGINT, nor by its steps. SIGPIPE stays ignored here, as Rust
/// sets it, so that a closed pipe is an error, not a death; the steps get it back by std's spawn.
fn reset_signal_dispositions() {
    for signal in 1..=64 {
        if ![libc::SIGKILL, libc::SIGSTOP, libc::SIGPIPE].contains(&signal) {
            // SAFETY: SIG_DFL is always a valid disposition; glibc's own signals are refused, harmlessly.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
}

/// fork() in a multi-threaded process leaves the child with locks held by threads that no longer exist.
fn check_single_threaded() -> io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .map(str::trim);
    match threads {
        Some("1") => Ok(()),
        other => Err(io::Error::other(format!(
            "it must run before any thread is started, but it has {} threads (call zygote_main first thing \
             in main)",
            other.unwrap_or("?")
        ))),
    }
}
