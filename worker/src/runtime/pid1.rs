//! Init's second half: PID 1 of the container's PID namespace. It builds the container from the inside, then
//! runs the steps one by one, reaps every orphan the job leaves (as any PID 1 must), and forwards SIGTERM and
//! SIGINT. When it exits, the kernel kills whatever else is left in the namespace.
#![allow(unsafe_code)] // ioctl(FIONREAD) has no safe wrapper

use super::identity::{self, StepIdentity, WORKSPACE};
use super::network;
use super::protocol::{InitConfig, InitMessage};
use super::rootfs::{self, Context, RootSpec};
use super::userns::Mounts;
use super::{security, service, spawn};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::fs::File;
use std::io::Write;

/// Init's exit status when the container could not be built (the control pipe says why).
pub(crate) const SETUP_FAILED: i32 = 125;
/// How long a step's end waits for the runtime to read the step's output.
const OUTPUT_READ_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// PID 1's exit status when a service failed (the control pipe says which and why).
const SERVICE_FAILED: i32 = 124;

/// Sends one message to the runtime; if the runtime is gone there is nobody left to tell.
pub(crate) fn report(control: &File, message: &InitMessage) {
    let mut writer = control;
    let _ = writer.write_all(&message.to_line());
}

/// Builds the container and runs the steps; returns this process's exit status. `signals` are blocked.
pub(crate) fn run(config: &InitConfig, mounts: &Mounts, control: &File, signals: &SigSet) -> i32 {
    let (identity, services) = match build(config, mounts) {
        Ok(built) => built,
        Err(message) => {
            report(control, &InitMessage::SetupFailed { message });
            return SETUP_FAILED;
        }
    };
    report(control, &InitMessage::Ready);
    // Waited for after "ready", so the wait counts against the job's timeout, not the runtime's setup deadline.
    if let Err(message) = service::wait_ready(services) {
        report(control, &InitMessage::ServiceFailed { message });
        return SERVICE_FAILED;
    }
    for (index, step) in (0u32..).zip(&config.steps) {
        report(control, &InitMessage::StepStarted { index });
        let exit_code = run_step(step, &config.env, &identity, signals);
        wait_until_output_read();
        report(control, &InitMessage::StepExited { index, exit_code });
        if exit_code != 0 {
            return exit_code;
        }
    }
    0
}

fn build(
    config: &InitConfig,
    mounts: &Mounts,
) -> Result<(StepIdentity, Vec<service::Started>), String> {
    rootfs::prepare(&config.scratch).map_err(|e| e.to_string())?;
    // Forked first, so the services boot while the steps' root is built.
    let services = service::start_all(config, mounts)?;
    let aliases: Vec<String> = config.services.iter().map(|s| s.name.clone()).collect();
    rootfs::enter(&RootSpec {
        base: config.scratch.join("job"),
        layers: &config.layers,
        hostname: &config.hostname,
        aliases: &aliases,
        masks: &config.masks,
        host_paths: &config.host_paths,
        workspace: Some((&config.workspace, config.workspace_mount)),
        resolv_conf: config.resolv_conf.as_deref(),
        mounts: config.id_map.map(|_| &mounts.job),
    })
    .map_err(|e| e.to_string())?;
    let cwd = config
        .working_dir
        .clone()
        .unwrap_or_else(|| WORKSPACE.into());
    let identity =
        identity::resolve(config.user.as_deref(), &cwd, true).map_err(|e| e.to_string())?;
    nix::unistd::chdir(&identity.cwd)
        .what(|| format!("chdir {}", identity.cwd.display()))
        .map_err(|e| e.to_string())?;
    // CVE-2024-21626: a cwd left on a host directory (through a leaked fd) reads as "(unreachable)/…" after
    // pivot_root; the steps must start inside the container's tree, so check rather than trust.
    match nix::unistd::getcwd() {
        Ok(cwd) if cwd.is_absolute() && !cwd.starts_with("(unreachable)") => {}
        other => {
            return Err(format!(
                "the working directory is outside the container after pivot_root: {other:?}"
            ));
        }
    }
    nix::unistd::sethostname(&config.hostname)
        .what(|| format!("set the hostname to {:?}", config.hostname))
        .map_err(|e| e.to_string())?;
    network::loopback_up()
        .what(|| "bring up lo".into())
        .map_err(|e| e.to_string())?;
    // Last: from here on, nothing this process or the steps do can undo it.
    security::drop_privileges(&config.seccomp).map_err(|e| e.to_string())?;
    Ok((identity, services))
}

/// Waits (briefly) until the runtime has read everything in the output pipe: the two pipes are read apart, and
/// a step's end must not overtake its last output, nor the next step's first output its end. Background
/// processes that keep writing only delay it by the bound.
fn wait_until_output_read() {
    let until = std::time::Instant::now() + OUTPUT_READ_WAIT;
    loop {
        let mut waiting: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int; fd 1 is the output pipe, which for a pipe answers on either end.
        let asked = unsafe { libc::ioctl(1, libc::FIONREAD, &mut waiting) };
        if asked != 0 || waiting == 0 || std::time::Instant::now() >= until {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Runs `/bin/sh -e -c STEP` and returns its status (128+N when killed by signal N).
fn run_step(
    step: &str,
    env: &[(String, String)],
    identity: &StepIdentity,
    signals: &SigSet,
) -> i32 {
    let shell = match spawn::step(step, env, identity) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("gantry: cannot start /bin/sh: {e}");
            return 127;
        }
    };
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(status) = reap_all(shell) {
                    return status;
                }
            }
            // From PID 1, pid -1 means every other process of the namespace.
            Ok(signal) => {
                let _ = kill(Pid::from_raw(-1), signal);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every exited child; returns the status of `shell` if it was among them.
fn reap_all(shell: Pid) -> Option<i32> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == shell => found = Some(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == shell => {
                found = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return found,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return found,
        }
    }
}
