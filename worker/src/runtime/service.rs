//! Services (docs/pipeline.md). PID 1 forks one supervisor per service before it builds the steps' root. The
//! supervisor unshares a mount, UTS and IPC namespace, builds the service's own root, drops privileges as the
//! steps do, starts the service and checks until it is ready; then it tells PID 1 over a pipe and stays, reaping
//! the service's orphans and draining its output, whose tail goes to the job's log if the service dies.
//!
//! A service shares the job's network namespace (the steps reach it on `localhost`), its PID namespace and its
//! cgroup (its processes count against the job's limits, and die with the job).
#![allow(unsafe_code)] // fork(): PID 1 is single-threaded; pre_exec: see `spawn::reset_signals`

use super::identity::{self, StepIdentity};
use super::protocol::InitConfig;
use super::rootfs::{self, Context, RootSpec};
use super::spawn::reset_signals;
use super::userns::{Mounts, RootMounts};
use super::{ServiceConfig, security};
use gantry_model::pipeline::Readiness;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How much of a service's output is kept to explain its failure.
const TAIL_BYTES: usize = 8 << 10;
/// Time between readiness checks.
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
/// A readiness command that hangs is killed after this and counts as "not ready yet".
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// PID 1 waits this much longer than a supervisor, which enforces the timeout itself.
const SUPERVISOR_SLACK: Duration = Duration::from_secs(5);

/// What a supervisor unshares: the job's network and PID namespaces and cgroup stay shared.
const SERVICE_NAMESPACES: CloneFlags = CloneFlags::CLONE_NEWNS
    .union(CloneFlags::CLONE_NEWUTS)
    .union(CloneFlags::CLONE_NEWIPC);

/// A service whose supervisor runs: PID 1's end of it.
pub(crate) struct Started {
    name: String,
    ready: Readiness,
    status: File,
    deadline: Instant,
}

/// Forks a supervisor for each service; call after `rootfs::prepare`, before building the steps' root.
pub(crate) fn start_all(config: &InitConfig, mounts: &Mounts) -> Result<Vec<Started>, String> {
    let mut started = Vec::with_capacity(config.services.len());
    for (index, service) in config.services.iter().enumerate() {
        let root_mounts = config.id_map.and(mounts.services.get(index));
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| format!("create a pipe for service {}: {e}", service.name))
        };
        let (status, status_writer) = pipe()?;
        let (unshared, unshared_writer) = pipe()?;
        // SAFETY: PID 1 is single-threaded, so the child may do anything a process can.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop((status, unshared));
                let code = match unshare(SERVICE_NAMESPACES) {
                    Ok(()) => {
                        drop(unshared_writer);
                        supervise(config, service, root_mounts, File::from(status_writer))
                    }
                    Err(e) => {
                        let mut status = File::from(status_writer);
                        let _ = writeln!(status, "failed: unshare its namespaces: {e}");
                        1
                    }
                };
                std::process::exit(code)
            }
            Ok(ForkResult::Parent { .. }) => {
                drop((status_writer, unshared_writer));
                // Until the child has a mount namespace of its own, a pivot_root by either of us would move
                // the other's root too (it moves every process of the namespace). EOF: unshared, or dead.
                let _ = File::from(unshared).read(&mut [0u8; 1]);
                started.push(Started {
                    name: service.name.clone(),
                    ready: service.ready.clone(),
                    status: File::from(status),
                    deadline: Instant::now() + service.ready_timeout + SUPERVISOR_SLACK,
                });
            }
            Err(e) => {
                return Err(format!(
                    "fork the supervisor of service {}: {e}",
                    service.name
                ));
            }
        }
    }
    Ok(started)
}

/// Waits until every service is ready, telling the job's log; the error names the first that failed.
pub(crate) fn wait_ready(started: Vec<Started>) -> Result<(), String> {
    if started.is_empty() {
        return Ok(());
    }
    let since = Instant::now();
    let names: Vec<&str> = started.iter().map(|s| s.name.as_str()).collect();
    eprintln!("gantry: waiting for services: {}", names.join(", "));
    for mut service in started {
        let answer = read_status(&mut service.status, service.deadline);
        match answer.strip_prefix("ready") {
            Some(_) => eprintln!(
                "gantry: service {} is ready ({}) after {:.2} s",
                service.name,
                service.ready,
                since.elapsed().as_secs_f64()
            ),
            None => {
                let why = answer.strip_prefix("failed: ").unwrap_or(&answer);
                return Err(format!("service {} {why}", service.name));
            }
        }
    }
    Ok(())
}

/// The supervisor's one line: `ready`, or why not.
fn read_status(status: &mut File, deadline: Instant) -> String {
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(status.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout(left)) {
            Ok(0) => return "did not answer in time (its supervisor is stuck)".into(),
            Err(Errno::EINTR) => continue,
            Err(e) => return format!("could not be waited for: {e}"),
            Ok(_) => {}
        }
        match status.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => line.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return format!("could not be waited for: {e}"),
        }
        if line.ends_with(b"\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&line).trim().to_owned();
    if text.is_empty() {
        "died without a word (its supervisor was killed)".into()
    } else {
        text
    }
}

fn timeout(left: Duration) -> PollTimeout {
    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

/// The supervisor: returns its exit status. `status` gets exactly one line.
fn supervise(
    config: &InitConfig,
    service: &ServiceConfig,
    mounts: Option<&RootMounts>,
    mut status: File,
) -> i32 {
    let deadline = Instant::now() + service.ready_timeout;
    let mut tell = |line: String| {
        let _ = status.write_all(format!("{line}\n").as_bytes());
    };
    let identity = match build_root(config, service, mounts) {
        Ok(identity) => identity,
        Err(message) => {
            tell(format!(
                "failed: its container could not be built: {message}"
            ));
            return 1;
        }
    };
    let mut running = match Running::spawn(service, &identity) {
        Ok(running) => running,
        Err(message) => {
            tell(format!("failed: {message}"));
            return 1;
        }
    };
    if let Err(message) = running.wait_ready(service, &identity, deadline) {
        running.print_tail(&format!("service {} {message}", service.name));
        tell(format!(
            "failed: {message} (its output is in the log above)"
        ));
        return 1;
    }
    tell("ready".into());
    drop(status);
    let ended = running.watch();
    running.print_tail(&format!(
        "service {} {ended} while the job ran",
        service.name
    ));
    0
}

/// The service's own root, hostname and identity; ends with privileges dropped.
fn build_root(
    config: &InitConfig,
    service: &ServiceConfig,
    mounts: Option<&RootMounts>,
) -> Result<StepIdentity, String> {
    rootfs::enter(&RootSpec {
        base: config.scratch.join("services").join(&service.name),
        layers: &service.image.layers,
        hostname: &service.name,
        aliases: &[],
        masks: &config.masks,
        host_paths: &[],
        workspace: None,
        resolv_conf: config.resolv_conf.as_deref(),
        mounts,
    })
    .map_err(|e| e.to_string())?;
    nix::unistd::sethostname(&service.name)
        .what(|| format!("set the hostname to {:?}", service.name))
        .map_err(|e| e.to_string())?;
    let cwd = service
        .image
        .working_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/"));
    let identity =
        identity::resolve(service.image.user.as_deref(), &cwd, false).map_err(|e| e.to_string())?;
    nix::unistd::chdir(&identity.cwd).map_err(|e| format!("chdir {}: {e}", cwd.display()))?;
    security::drop_privileges(&config.seccomp).map_err(|e| e.to_string())?;
    // The service's orphans are ours to reap, not the steps' PID 1's.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become a subreaper: {e}"))?;
    Ok(identity)
}

/// How a process ended.
fn describe(status: WaitStatus) -> Option<(Pid, String, bool)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, format!("exited with {code}"), code == 0)),
        WaitStatus::Signaled(pid, signal, _) => {
            Some((pid, format!("was killed by {signal}"), false))
        }
        _ => None,
    }
}

/// A running service and the pipe its output comes through.
struct Running {
    pid: Pid,
    output: OwnedFd,
    /// Kept for readiness commands, whose output joins the service's.
    writer: OwnedFd,
    tail: Vec<u8>,
}

impl Running {
    fn spawn(service: &ServiceConfig, identity: &StepIdentity) -> Result<Running, String> {
        let (output, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| format!("create its output pipe: {e}"))?;
        let program = &service.argv[0];
        let mut command = command(program, &service.argv[1..], &service.env, identity);
        command.stdout(dup(&writer)?).stderr(dup(&writer)?);
        let child = command
            .spawn()
            .map_err(|e| format!("could not start {program:?}: {e}"))?;
        Ok(Running {
            pid: Pid::from_raw(child.id() as i32),
            output,
            writer,
            tail: Vec::new(),
        })
    }

    /// Checks until the service is ready, it exits, or `deadline` passes.
    fn wait_ready(
        &mut self,
        service: &ServiceConfig,
        identity: &StepIdentity,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            let ready = match &service.ready {
                Readiness::Started => true,
                Readiness::Tcp { port } => {
                    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
                    TcpStream::connect_timeout(&address, CHECK_INTERVAL).is_ok()
                }
                Readiness::Command { command } => {
                    self.check_command(command, &service.env, identity, deadline)?
                }
            };
            if let Some(ended) = self.reap(None).service {
                return Err(format!("{ended} before it was ready"));
            }
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "was not ready ({}) within {} s",
                    service.ready,
                    service.ready_timeout.as_secs()
                ));
            }
            self.pump(CHECK_INTERVAL.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// Runs the readiness command once; true if it exited 0.
    fn check_command(
        &mut self,
        line: &str,
        env: &[(String, String)],
        identity: &StepIdentity,
        deadline: Instant,
    ) -> Result<bool, String> {
        let args = ["-c".to_owned(), line.to_owned()];
        let mut check = command("/bin/sh", &args, env, identity);
        check.stdout(dup(&self.writer)?).stderr(dup(&self.writer)?);
        let child = check
            .spawn()
            .map_err(|e| format!("could not run its readiness check: {e}"))?;
        let pid = Pid::from_raw(child.id() as i32);
        let give_up = deadline.min(Instant::now() + CHECK_TIMEOUT);
        loop {
            self.pump(Duration::from_millis(20));
            let reaped = self.reap(Some(pid));
            if let Some(ended) = reaped.service {
                return Err(format!("{ended} before it was ready"));
            }
            if let Some(success) = reaped.check {
                return Ok(success);
            }
            if Instant::now() >= give_up {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// After "ready": drains output and reaps orphans until the service exits; says how it ended.
    fn watch(&mut self) -> String {
        loop {
            self.pump(Duration::from_secs(1));
            if let Some(ended) = self.reap(None).service {
                return ended;
            }
        }
    }

    /// Reaps every exited child (the service's orphans too, as a subreaper).
    fn reap(&self, check: Option<Pid>) -> Reaped {
        let mut reaped = Reaped::default();
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return reaped,
                Ok(status) => match describe(status) {
                    Some((pid, ended, _)) if pid == self.pid => reaped.service = Some(ended),
                    Some((pid, _, success)) if Some(pid) == check => reaped.check = Some(success),
                    _ => {}
                },
                Err(Errno::EINTR) => {}
                Err(_) => return reaped,
            }
        }
    }

    /// Waits up to `wait` for output, then keeps what is there in the tail.
    fn pump(&mut self, wait: Duration) {
        let mut fds = [PollFd::new(self.output.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, timeout(wait)), Ok(n) if n > 0) {
            return;
        }
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = nix::unistd::read(&self.output, &mut buf) {
            self.tail.extend_from_slice(&buf[..n]);
            if self.tail.len() > 2 * TAIL_BYTES {
                self.tail.drain(..self.tail.len() - TAIL_BYTES);
            }
        }
    }

    /// Writes what happened and the last of the service's output to the job's log.
    fn print_tail(&mut self, what: &str) {
        self.pump(Duration::ZERO);
        let start = self.tail.len().saturating_sub(TAIL_BYTES);
        let tail = String::from_utf8_lossy(&self.tail[start..]);
        let mut log = std::io::stderr().lock();
        let _ = writeln!(log, "gantry: {what}; its last output:");
        let _ = log.write_all(tail.as_bytes());
        if !tail.ends_with('\n') {
            let _ = writeln!(log);
        }
    }
}

/// What one round of reaping found.
#[derive(Default)]
struct Reaped {
    /// How the service ended, if it did.
    service: Option<String>,
    /// Whether the readiness check succeeded, if it ended.
    check: Option<bool>,
}

/// A command as the service's user, in its working dir, with only its environment and default signals.
fn command(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    identity: &StepIdentity,
) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    identity.apply(&mut command, env);
    // SAFETY: the closure only makes async-signal-safe calls, and this process has a single thread.
    unsafe { command.pre_exec(reset_signals) };
    command
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, String> {
    fd.try_clone()
        .map_err(|e| format!("duplicate the output pipe: {e}"))
}
