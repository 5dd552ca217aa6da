//! How PID 1 starts a step's shell, `/bin/sh -e -c STEP`, with nothing of PID 1's signal state: no blocked
//! signals (PID 1 blocks the ones it waits for) and no ignored ones. A step that runs as root (the default) is
//! started with posix_spawn, a vfork: PID 1's address space, a copy of the zygote's with the 33 MB binary's
//! relocated data, is neither copied for the child nor torn down again by its exec. A step that runs as the
//! image's user needs setgroups, setgid and setuid between fork and exec, which posix_spawn cannot do, so it is
//! forked and exec'd by std's `Command`.
#![allow(unsafe_code)] // pre_exec: std resets neither the signal mask nor ignored signals in the child

use super::identity::StepIdentity;
use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use std::ffi::CString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Starts the shell of `step` with exactly `env` (plus `HOME` from the identity when `env` has none), stdin
/// from `/dev/null`, stdout and stderr shared with PID 1, in the identity's working dir and as its user.
pub(crate) fn step(
    step: &str,
    env: &[(String, String)],
    identity: &StepIdentity,
) -> io::Result<Pid> {
    if identity.user.is_some() {
        return fork_exec(step, env, identity);
    }
    let mut files = PosixSpawnFileActions::init()?;
    files.add_open(0, "/dev/null", OFlag::O_RDONLY, Mode::empty())?;
    let mut attr = PosixSpawnAttr::init()?;
    let mut every = SigSet::all();
    every.remove(Signal::SIGKILL);
    every.remove(Signal::SIGSTOP);
    attr.set_sigdefault(&every)?;
    attr.set_sigmask(&SigSet::empty())?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK,
    )?;
    let nul = |e| io::Error::new(io::ErrorKind::InvalidInput, e);
    let args = ["/bin/sh", "-e", "-c", step].map(CString::new);
    let args = args
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(nul)?;
    let has_home = env.iter().any(|(name, _)| name == "HOME");
    let vars = env.iter().map(|(name, value)| format!("{name}={value}"));
    let home = (!has_home).then(|| "HOME=/root".to_owned());
    let envp = vars.chain(home).map(CString::new);
    let envp = envp.collect::<Result<Vec<_>, _>>().map_err(nul)?;
    // The child inherits the working dir, and PID 1 has no use for its own.
    nix::unistd::chdir(&identity.cwd)?;
    Ok(posix_spawn("/bin/sh", &files, &attr, &args, &envp)?)
}

fn fork_exec(step: &str, env: &[(String, String)], identity: &StepIdentity) -> io::Result<Pid> {
    let mut command = Command::new("/bin/sh");
    command
        .args(["-e", "-c", step])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null());
    identity.apply(&mut command, env);
    // SAFETY: the closure only makes async-signal-safe calls (sigprocmask, signal), and this process has a
    // single thread anyway.
    unsafe { command.pre_exec(reset_signals) };
    Ok(Pid::from_raw(command.spawn()?.id() as i32))
}

/// Runs in the step's child before exec: blocked signals and ignored ones survive exec, so without this a
/// step could not be stopped with SIGTERM, and it would inherit what the worker ignores.
pub(crate) fn reset_signals() -> io::Result<()> {
    for signal in 1..=64 {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: SIG_DFL is always a valid disposition; glibc's own signals are refused, harmlessly.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )?;
    Ok(())
}
