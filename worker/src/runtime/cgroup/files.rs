//! Reading and writing cgroupfs files, and killing what a cgroup lists.

use crate::runtime::RuntimeError;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long killed processes get to disappear before the kill counts as failed.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

pub(super) fn write_file(path: &Path, value: &str) -> Result<(), RuntimeError> {
    std::fs::write(path, value).map_err(|e| RuntimeError::io("write", path, e))
}

pub(super) fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file such as `memory.events` (`key value` per line).
pub(super) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub(super) fn read_pids(procs: &Path) -> Vec<i32> {
    let text = std::fs::read_to_string(procs).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

pub(super) fn sigkill(pids: &[i32]) {
    for &pid in pids {
        // ESRCH only means it is already gone.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// SIGKILLs whatever `pids` lists until it lists nothing; the processes may need a moment to exit.
pub(super) fn kill_until_empty(
    pids: impl Fn() -> Vec<i32>,
    dir: &Path,
) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + KILL_DEADLINE;
    let mut pause = Duration::from_millis(1);
    loop {
        let left = pids();
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(RuntimeError::Cgroup(format!(
                "processes {left:?} in {} survived SIGKILL for {KILL_DEADLINE:?}",
                dir.display()
            )));
        }
        sigkill(&left);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// rmdir that tolerates a missing directory and retries while the kernel still counts exiting processes.
pub(super) fn remove_dir(dir: &Path) -> Result<(), RuntimeError> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(RuntimeError::io("remove cgroup", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_are_read_by_exact_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.oom_control");
        std::fs::write(&path, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(read_keyed(&path, "oom_kill"), Some(2));
        assert_eq!(read_keyed(&path, "oom"), None);
    }
}
