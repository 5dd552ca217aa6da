//! The cgroup v2 part: one directory in the unified hierarchy, holding the controllers v1 does not mount.

use super::files::{
    kill_until_empty, read_keyed, read_pids, read_u64, remove_dir, sigkill, write_file,
};
use super::{CgroupManager, CgroupStats, Controller, PARENT};
use crate::runtime::RuntimeError;
use gantry_model::Resources;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CFS period a CPU quota is expressed in (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// How long to wait for `cgroup.events` to say `frozen 1` before killing anyway (kernels before 5.14).
const FREEZE_DEADLINE: Duration = Duration::from_secs(2);

/// A container's cgroup in the unified hierarchy.
#[derive(Debug)]
pub struct V2Cgroup {
    mount: PathBuf,
    dir: PathBuf,
    controllers: BTreeSet<Controller>,
}

impl V2Cgroup {
    /// A handle on `<mount>/gantry/<id>` for `controllers`; nothing is created yet.
    pub fn new(mount: PathBuf, id: &str, controllers: BTreeSet<Controller>) -> V2Cgroup {
        let dir = mount.join(PARENT).join(id);
        V2Cgroup {
            mount,
            dir,
            controllers,
        }
    }

    fn holds(&self, controller: Controller) -> bool {
        self.controllers.contains(&controller)
    }

    /// Controllers must be enabled in every ancestor's `cgroup.subtree_control` to appear in our cgroup.
    fn enable_controllers(&self, parent: &Path) -> Result<(), RuntimeError> {
        let wanted = [Controller::Memory, Controller::Pids, Controller::Cpu]
            .into_iter()
            .filter(|c| self.holds(*c));
        for controller in wanted {
            for dir in [self.mount.as_path(), parent] {
                let control = dir.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&control).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == controller.name()) {
                    write_file(&control, &format!("+{}", controller.name()))?;
                }
            }
        }
        Ok(())
    }

    fn freeze(&self) -> Result<(), RuntimeError> {
        write_file(&self.dir.join("cgroup.freeze"), "1")?;
        let events = self.dir.join("cgroup.events");
        let deadline = Instant::now() + FREEZE_DEADLINE;
        while read_keyed(&events, "frozen") != Some(1) {
            if Instant::now() >= deadline {
                tracing::warn!(cgroup = %self.dir.display(), "cgroup did not freeze in time; killing it unfrozen");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl CgroupManager for V2Cgroup {
    fn create(&self, resources: &Resources) -> Result<(), RuntimeError> {
        let parent = self.mount.join(PARENT);
        std::fs::create_dir_all(&parent)
            .map_err(|e| RuntimeError::io("create cgroup", &parent, e))?;
        self.enable_controllers(&parent)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| RuntimeError::io("create cgroup", &self.dir, e))?;
        if self.holds(Controller::Memory) {
            write_file(
                &self.dir.join("memory.max"),
                &resources.memory_bytes.to_string(),
            )?;
            // Without swap the memory limit could be dodged by swapping out; the file is absent without swap.
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                write_file(&swap, "0")?;
            }
        }
        if self.holds(Controller::Pids) {
            write_file(&self.dir.join("pids.max"), &resources.pids.to_string())?;
        }
        if let (Some(cpus), true) = (resources.cpus, self.holds(Controller::Cpu)) {
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            write_file(
                &self.dir.join("cpu.max"),
                &format!("{quota} {CPU_PERIOD_US}"),
            )?;
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn pids(&self) -> Vec<i32> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn stats(&self) -> CgroupStats {
        let keyed = |controller, file: &str, key| {
            self.holds(controller)
                .then(|| read_keyed(&self.dir.join(file), key))
                .flatten()
        };
        CgroupStats {
            cpu_seconds: keyed(Controller::Cpuacct, "cpu.stat", "usage_usec")
                .map(|us| us as f64 / 1e6),
            peak_memory_bytes: self
                .holds(Controller::Memory)
                .then(|| read_u64(&self.dir.join("memory.peak")))
                .flatten(),
            oom_killed: keyed(Controller::Memory, "memory.events", "oom_kill")
                .is_some_and(|n| n > 0),
            pids_limit_hit: keyed(Controller::Pids, "pids.events", "max").is_some_and(|n| n > 0),
        }
    }

    fn kill_all(&self) -> Result<(), RuntimeError> {
        if !self.dir.exists() || self.pids().is_empty() {
            return Ok(());
        }
        let kill = self.dir.join("cgroup.kill");
        if kill.exists() {
            write_file(&kill, "1")?;
        } else {
            let frozen = self.freeze();
            sigkill(&self.pids());
            let thawed = write_file(&self.dir.join("cgroup.freeze"), "0");
            frozen.and(thawed)?;
        }
        kill_until_empty(|| self.pids(), &self.dir)
    }

    fn remove(&self) -> Result<(), RuntimeError> {
        remove_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The unified mount of a hybrid host has no controllers we use, but `cgroup.kill` and `cgroup.freeze` are
    /// core files, so the kill path can be tested for real wherever a cgroup2 mount exists and we are root.
    fn unified_mount() -> Option<PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let line = info.lines().find(|l| l.contains(" - cgroup2 "))?;
        let mount = PathBuf::from(line.split(' ').nth(4)?);
        nix::unistd::geteuid().is_root().then_some(mount)
    }

    #[test]
    fn a_v2_cgroup_kills_its_processes_and_disappears() {
        let Some(mount) = unified_mount() else {
            eprintln!("skipped: no cgroup2 mount or not root");
            return;
        };
        let id = format!("v2test-{}", std::process::id());
        let cgroup = V2Cgroup::new(
            mount,
            &id,
            [Controller::Freezer, Controller::Cpuacct].into(),
        );
        cgroup.create(&Resources::default()).unwrap();
        let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
        write_file(&cgroup.procs_files()[0], &child.id().to_string()).unwrap();
        assert_eq!(cgroup.pids(), vec![child.id() as i32]);
        cgroup.kill_all().unwrap();
        assert!(!child.wait().unwrap().success());
        assert!(cgroup.pids().is_empty());
        assert!(cgroup.stats().cpu_seconds.is_some());
        cgroup.remove().unwrap();
        assert!(!cgroup.dir.exists());
    }

    /// Pure v2 hosts cannot be had here (this one mounts memory, pids and cpu under v1), so the limits and the
    /// accounting are checked against a fake cgroupfs tree laid out the way the kernel lays out a v2 cgroup.
    #[test]
    fn a_v2_cgroup_writes_its_limits_and_reads_usage_and_limit_hits_from_a_fake_cgroupfs() {
        let mount = tempfile::tempdir().unwrap();
        std::fs::write(mount.path().join("cgroup.subtree_control"), "").unwrap();
        std::fs::create_dir_all(mount.path().join(PARENT)).unwrap();
        std::fs::write(mount.path().join(PARENT).join("cgroup.subtree_control"), "").unwrap();
        let all = [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Cpuacct,
        ]
        .into();
        let cgroup = V2Cgroup::new(mount.path().to_owned(), "w1-job", all);
        let resources = Resources {
            memory_bytes: 64 << 20,
            pids: 100,
            cpus: Some(1.5),
        };
        cgroup.create(&resources).unwrap();
        let read = |file: &str| std::fs::read_to_string(cgroup.dir.join(file)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("pids.max"), "100");
        assert_eq!(read("cpu.max"), "150000 100000");
        let enabled =
            std::fs::read_to_string(mount.path().join(PARENT).join("cgroup.subtree_control"))
                .unwrap();
        assert!(
            enabled.starts_with('+'),
            "controllers are enabled for children: {enabled:?}"
        );

        assert_eq!(
            cgroup.stats(),
            CgroupStats::default(),
            "no usage files yet, no figures"
        );
        std::fs::write(cgroup.dir.join("memory.peak"), "5242880\n").unwrap();
        std::fs::write(
            cgroup.dir.join("cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        )
        .unwrap();
        std::fs::write(
            cgroup.dir.join("memory.events"),
            "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(cgroup.dir.join("pids.events"), "max 3\n").unwrap();
        let stats = cgroup.stats();
        assert_eq!(stats.peak_memory_bytes, Some(5 << 20));
        assert_eq!(stats.cpu_seconds, Some(2.5));
        assert!(stats.oom_killed && stats.pids_limit_hit, "{stats:?}");
    }
}
