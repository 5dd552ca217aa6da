//! The cgroup v1 part: one directory per hierarchy (co-mounted controllers such as `cpu,cpuacct` share one).

use super::files::{
    kill_until_empty, read_keyed, read_pids, read_u64, remove_dir, sigkill, write_file,
};
use super::{CgroupManager, CgroupStats, Controller, first_error};
use crate::runtime::RuntimeError;
use gantry_model::Resources;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CFS period a CPU quota is expressed in (the kernel's default).
const CFS_PERIOD_US: u64 = 100_000;

/// How long to wait for `freezer.state` to reach FROZEN before killing anyway.
const FREEZE_DEADLINE: Duration = Duration::from_secs(2);

/// A container's cgroup in the v1 hierarchies.
#[derive(Debug)]
pub struct V1Cgroup {
    dirs: BTreeMap<Controller, PathBuf>,
}

impl V1Cgroup {
    /// A handle on the directories `dirs` (one per controller); nothing is created yet.
    pub fn new(dirs: BTreeMap<Controller, PathBuf>) -> V1Cgroup {
        V1Cgroup { dirs }
    }

    fn distinct_dirs(&self) -> BTreeSet<&Path> {
        self.dirs.values().map(PathBuf::as_path).collect()
    }

    fn file(&self, controller: Controller, name: &str) -> Option<PathBuf> {
        self.dirs.get(&controller).map(|dir| dir.join(name))
    }

    fn freeze(&self, dir: &Path) -> Result<(), RuntimeError> {
        let state = dir.join("freezer.state");
        write_file(&state, "FROZEN")?;
        let deadline = Instant::now() + FREEZE_DEADLINE;
        // FREEZING lasts until every task has stopped; a task in uninterruptible sleep can hold it there.
        while std::fs::read_to_string(&state)
            .map_err(|e| RuntimeError::io("read", &state, e))?
            .trim()
            != "FROZEN"
        {
            if Instant::now() >= deadline {
                tracing::warn!(cgroup = %dir.display(), "cgroup did not freeze in time; killing it unfrozen");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl CgroupManager for V1Cgroup {
    fn create(&self, resources: &Resources) -> Result<(), RuntimeError> {
        for dir in self.distinct_dirs() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("create cgroup", dir, e))?;
        }
        if let Some(limit) = self.file(Controller::Memory, "memory.limit_in_bytes") {
            write_file(&limit, &resources.memory_bytes.to_string())?;
            // memsw exists only with swap accounting; without it the limit above already is the whole story.
            let memsw = limit.with_file_name("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write_file(&memsw, &resources.memory_bytes.to_string())?;
            }
        }
        if let Some(max) = self.file(Controller::Pids, "pids.max") {
            write_file(&max, &resources.pids.to_string())?;
        }
        if let (Some(cpus), Some(quota)) = (
            resources.cpus,
            self.file(Controller::Cpu, "cpu.cfs_quota_us"),
        ) {
            write_file(
                &quota.with_file_name("cpu.cfs_period_us"),
                &CFS_PERIOD_US.to_string(),
            )?;
            write_file(&quota, &quota_us(cpus).to_string())?;
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.distinct_dirs()
            .into_iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    fn pids(&self) -> Vec<i32> {
        let set: BTreeSet<i32> = self
            .procs_files()
            .iter()
            .flat_map(|procs| read_pids(procs))
            .collect();
        set.into_iter().collect()
    }

    fn stats(&self) -> CgroupStats {
        let file = |controller, name| self.file(controller, name);
        CgroupStats {
            cpu_seconds: file(Controller::Cpuacct, "cpuacct.usage")
                .and_then(|f| read_u64(&f))
                .map(|ns| ns as f64 / 1e9),
            peak_memory_bytes: file(Controller::Memory, "memory.max_usage_in_bytes")
                .and_then(|f| read_u64(&f)),
            oom_killed: file(Controller::Memory, "memory.oom_control")
                .and_then(|f| read_keyed(&f, "oom_kill"))
                .is_some_and(|n| n > 0),
            pids_limit_hit: file(Controller::Pids, "pids.events")
                .and_then(|f| read_keyed(&f, "max"))
                .is_some_and(|n| n > 0),
        }
    }

    fn kill_all(&self) -> Result<(), RuntimeError> {
        let Some(any_dir) = self.dirs.values().next() else {
            return Ok(());
        };
        // Nothing to freeze in the common case: the container's PID 1 exited and took every process with it.
        if !any_dir.exists() || self.pids().is_empty() {
            return Ok(());
        }
        // v1 has no cgroup.kill: freeze so nothing forks between reading the pids and killing them, send
        // SIGKILL (queued while frozen), then thaw so the signals are delivered.
        let freezer = self
            .dirs
            .get(&Controller::Freezer)
            .filter(|dir| dir.exists());
        if let Some(dir) = freezer {
            let frozen = self.freeze(dir);
            sigkill(&self.pids());
            let thawed = write_file(&dir.join("freezer.state"), "THAWED");
            frozen.and(thawed)?;
        }
        kill_until_empty(|| self.pids(), any_dir)
    }

    fn remove(&self) -> Result<(), RuntimeError> {
        first_error(self.distinct_dirs().into_iter().map(remove_dir))
    }
}

/// A quota of `cpus` cores per period, at least the kernel's minimum of 1 ms.
fn quota_us(cpus: f64) -> u64 {
    ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quotas_scale_the_period_and_respect_the_kernel_minimum() {
        assert_eq!(quota_us(1.5), 150_000);
        assert_eq!(quota_us(0.001), 1000);
    }
}
