//! A container's cgroup. Fleets have cgroup v1 hosts, v2 hosts and hybrids like ours (v1 controllers plus a
//! mostly empty cgroup2 mount), so each controller is looked up on its own in `/proc/self/mountinfo` and the
//! container's cgroup is spread over a [`v1::V1Cgroup`] and a [`v2::V2Cgroup`] part as needed.
//!
//! The cgroupfs files are written directly rather than through cgroups-rs: what we need is a dozen files, and
//! that crate drags in zbus and a second, older nix.

mod files;
pub mod v1;
pub mod v2;

use super::RuntimeError;
use gantry_model::Resources;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parent directory of every container's cgroup in each hierarchy.
pub const PARENT: &str = "gantry";

/// A controller the runtime uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    /// Memory limit, peak usage, OOM kills.
    Memory,
    /// `pids.max` and its hits.
    Pids,
    /// CPU quota.
    Cpu,
    /// CPU usage (v1 only; v2 has `cpu.stat` in every cgroup).
    Cpuacct,
    /// Freezing before a kill (v1 only; v2 has `cgroup.freeze` and `cgroup.kill` in every cgroup).
    Freezer,
}

impl Controller {
    /// Every controller, in the order they are looked up.
    pub const ALL: [Controller; 5] = [
        Controller::Memory,
        Controller::Pids,
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Freezer,
    ];

    /// Its name in mount options and `cgroup.controllers`.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Freezer => "freezer",
        }
    }

    /// Whether cgroup v2 provides it in every cgroup, without a controller to enable.
    fn v2_core(self) -> bool {
        matches!(self, Controller::Cpuacct | Controller::Freezer)
    }
}

/// What a finished container used and which limits it hit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupStats {
    /// CPU time, when a CPU accounting controller is present.
    pub cpu_seconds: Option<f64>,
    /// Peak memory, when the kernel reports it.
    pub peak_memory_bytes: Option<u64>,
    /// The OOM killer killed something in the cgroup.
    pub oom_killed: bool,
    /// A fork failed because of `pids.max`.
    pub pids_limit_hit: bool,
}

impl CgroupStats {
    fn merge(self, other: CgroupStats) -> CgroupStats {
        CgroupStats {
            cpu_seconds: self.cpu_seconds.or(other.cpu_seconds),
            peak_memory_bytes: self.peak_memory_bytes.or(other.peak_memory_bytes),
            oom_killed: self.oom_killed || other.oom_killed,
            pids_limit_hit: self.pids_limit_hit || other.pids_limit_hit,
        }
    }
}

/// One hierarchy's share of a container's cgroup (in the manner of youki's `CgroupManager`).
pub trait CgroupManager: Send + Sync + std::fmt::Debug {
    /// Creates the cgroup directories and applies the limits of the controllers this part holds.
    fn create(&self, resources: &Resources) -> Result<(), RuntimeError>;
    /// The files a process writes its pid to, to join this part.
    fn procs_files(&self) -> Vec<PathBuf>;
    /// The processes in this part.
    fn pids(&self) -> Vec<i32>;
    /// Usage and limit hits, read from whatever files exist.
    fn stats(&self) -> CgroupStats;
    /// Kills every process in this part and waits until none is left.
    fn kill_all(&self) -> Result<(), RuntimeError>;
    /// Removes the directories; missing ones are fine.
    fn remove(&self) -> Result<(), RuntimeError>;
}

/// Where each controller is mounted on this host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupLayout {
    v1: BTreeMap<Controller, PathBuf>,
    v2: Option<(PathBuf, BTreeSet<Controller>)>,
}

impl CgroupLayout {
    /// Reads the layout from `/proc/self/mountinfo`; memory and pids controllers are required.
    pub fn detect() -> Result<CgroupLayout, RuntimeError> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(|e| RuntimeError::io("read", path, e))?;
        let layout = CgroupLayout::parse(&text, |mount| {
            std::fs::read_to_string(mount.join("cgroup.controllers")).unwrap_or_default()
        });
        for needed in [Controller::Memory, Controller::Pids] {
            if !layout.has(needed) {
                return Err(RuntimeError::Cgroup(format!(
                    "no {} controller is mounted (neither cgroup v1 nor v2 in /proc/self/mountinfo)",
                    needed.name()
                )));
            }
        }
        Ok(layout)
    }

    /// Parses mountinfo text; `v2_controllers` reads `cgroup.controllers` of a cgroup2 mount.
    pub fn parse(mountinfo: &str, v2_controllers: impl Fn(&Path) -> String) -> CgroupLayout {
        let mut v1 = BTreeMap::new();
        let mut v2_mount = None;
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4).map(unescape) else {
                continue;
            };
            let mut right = right.split(' ');
            match (right.next(), right.nth(1)) {
                (Some("cgroup"), Some(options)) => {
                    for controller in Controller::ALL {
                        if options.split(',').any(|o| o == controller.name()) {
                            v1.entry(controller)
                                .or_insert_with(|| PathBuf::from(&mount_point));
                        }
                    }
                }
                (Some("cgroup2"), _) if v2_mount.is_none() => {
                    v2_mount = Some(PathBuf::from(mount_point))
                }
                _ => {}
            }
        }
        let v2 = v2_mount.and_then(|mount| {
            let available = v2_controllers(&mount);
            let chosen: BTreeSet<Controller> = Controller::ALL
                .into_iter()
                .filter(|c| !v1.contains_key(c))
                .filter(|c| c.v2_core() || available.split_whitespace().any(|a| a == c.name()))
                .collect();
            (!chosen.is_empty()).then_some((mount, chosen))
        });
        CgroupLayout { v1, v2 }
    }

    /// Whether some hierarchy holds `controller`.
    pub fn has(&self, controller: Controller) -> bool {
        self.v1.contains_key(&controller)
            || self
                .v2
                .as_ref()
                .is_some_and(|(_, set)| set.contains(&controller))
    }

    /// Whether `controller` is on a cgroup v1 hierarchy (its files then have v1 names: `cpu.cfs_quota_us`, not
    /// `cpu.max`).
    pub fn on_v1(&self, controller: Controller) -> bool {
        self.v1.contains_key(&controller)
    }

    /// The directory of container `id`'s cgroup that holds `controller`, if a hierarchy holds it.
    pub fn dir_of(&self, controller: Controller, id: &str) -> Option<PathBuf> {
        if let Some(mount) = self.v1.get(&controller) {
            return Some(mount.join(PARENT).join(id));
        }
        let (mount, set) = self.v2.as_ref()?;
        set.contains(&controller)
            .then(|| mount.join(PARENT).join(id))
    }

    /// The `gantry` parent directory in each hierarchy in use.
    pub fn parents(&self) -> Vec<PathBuf> {
        let v1 = self.v1.values().map(|mount| mount.join(PARENT));
        let v2 = self.v2.iter().map(|(mount, _)| mount.join(PARENT));
        let set: BTreeSet<PathBuf> = v1.chain(v2).collect();
        set.into_iter().collect()
    }

    /// Whether a container's cgroup can be renamed: cgroup v1 can, cgroup2 cannot.
    pub fn renames(&self) -> bool {
        self.v2.is_none()
    }

    /// Renames cgroup `from` to `to` in every hierarchy, processes and all (cgroup v1 only); on failure, what
    /// was renamed is renamed back.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), RuntimeError> {
        if !self.renames() {
            return Err(RuntimeError::Cgroup(
                "cgroup2 cannot rename a cgroup".into(),
            ));
        }
        let parents = self.parents();
        for (done, parent) in parents.iter().enumerate() {
            let (old, new) = (parent.join(from), parent.join(to));
            if let Err(e) = std::fs::rename(&old, &new) {
                for parent in &parents[..done] {
                    let _ = std::fs::rename(parent.join(to), parent.join(from));
                }
                return Err(RuntimeError::io("rename the cgroup", old, e));
            }
        }
        Ok(())
    }

    /// A handle on the cgroup of container `id`; nothing is created until [`Cgroup::create`].
    pub fn cgroup(&self, id: &str) -> Cgroup {
        let mut parts: Vec<Box<dyn CgroupManager>> = Vec::new();
        if !self.v1.is_empty() {
            let dirs = self
                .v1
                .iter()
                .map(|(c, mount)| (*c, mount.join(PARENT).join(id)))
                .collect();
            parts.push(Box::new(v1::V1Cgroup::new(dirs)));
        }
        if let Some((mount, controllers)) = &self.v2 {
            parts.push(Box::new(v2::V2Cgroup::new(
                mount.clone(),
                id,
                controllers.clone(),
            )));
        }
        Cgroup {
            parts,
            cpu: self.has(Controller::Cpu),
        }
    }
}

/// A container's cgroup across every hierarchy that holds one of its controllers.
#[derive(Debug)]
pub struct Cgroup {
    parts: Vec<Box<dyn CgroupManager>>,
    cpu: bool,
}

impl Cgroup {
    /// Creates it with `resources` applied; on failure nothing is left behind.
    pub fn create(&self, resources: &Resources) -> Result<(), RuntimeError> {
        match self.limit(resources) {
            Ok(()) => Ok(()),
            Err(error) => match self.remove() {
                Ok(()) => Err(error),
                Err(cleanup) => Err(RuntimeError::WithCleanup {
                    error: Box::new(error),
                    cleanup: Box::new(cleanup),
                }),
            },
        }
    }

    /// Creates whatever directories are missing and applies `resources`; on failure, what exists stays.
    pub fn limit(&self, resources: &Resources) -> Result<(), RuntimeError> {
        if resources.cpus.is_some() && !self.cpu {
            return Err(RuntimeError::Cgroup(
                "a CPU quota was asked for, but no cpu controller is mounted".into(),
            ));
        }
        self.parts
            .iter()
            .try_for_each(|part| part.create(resources))
    }

    /// The files a process writes its pid to, to join every part.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.parts
            .iter()
            .flat_map(|part| part.procs_files())
            .collect()
    }

    /// The processes in it.
    pub fn pids(&self) -> Vec<i32> {
        let set: BTreeSet<i32> = self.parts.iter().flat_map(|part| part.pids()).collect();
        set.into_iter().collect()
    }

    /// Usage and limit hits.
    pub fn stats(&self) -> CgroupStats {
        self.parts
            .iter()
            .map(|part| part.stats())
            .fold(CgroupStats::default(), CgroupStats::merge)
    }

    /// Kills every process in it and waits until they are gone.
    pub fn kill_all(&self) -> Result<(), RuntimeError> {
        first_error(self.parts.iter().map(|part| part.kill_all()))
    }

    /// Removes its directories (the processes must be gone).
    pub fn remove(&self) -> Result<(), RuntimeError> {
        first_error(self.parts.iter().map(|part| part.remove()))
    }
}

/// Runs every operation (a failed part must not keep the others from being cleaned up); returns the first error.
fn first_error(
    results: impl Iterator<Item = Result<(), RuntimeError>>,
) -> Result<(), RuntimeError> {
    let mut first = Ok(());
    for result in results {
        if first.is_ok() {
            first = result;
        }
    }
    first
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw";

    #[test]
    fn a_hybrid_host_uses_v1_for_every_controller_it_mounts() {
        let layout = CgroupLayout::parse(HYBRID, |_| "hugetlb\n".into());
        assert_eq!(layout.v1.len(), 5);
        assert_eq!(
            layout.v1[&Controller::Memory],
            Path::new("/sys/fs/cgroup/memory")
        );
        assert_eq!(layout.v2, None);
        assert_eq!(layout.parents().len(), 5);
        assert!(layout.on_v1(Controller::Cpu));
        assert_eq!(
            layout.dir_of(Controller::Pids, "w-1").unwrap(),
            Path::new("/sys/fs/cgroup/pids/gantry/w-1")
        );
    }

    #[test]
    fn a_pure_v2_host_uses_the_unified_mount_for_everything() {
        let info = "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        let layout = CgroupLayout::parse(info, |_| "cpuset cpu io memory pids\n".into());
        assert!(layout.v1.is_empty());
        let (mount, set) = layout.v2.clone().unwrap();
        assert_eq!(mount, Path::new("/sys/fs/cgroup"));
        assert_eq!(set.len(), 5);
        assert_eq!(layout.cgroup("w-1").parts.len(), 1);
        assert!(!layout.on_v1(Controller::Pids));
        assert_eq!(
            layout.dir_of(Controller::Pids, "w-1").unwrap(),
            Path::new("/sys/fs/cgroup/gantry/w-1")
        );
        assert_eq!(layout.parents(), [Path::new("/sys/fs/cgroup/gantry")]);
    }

    #[test]
    fn controllers_missing_from_v1_fall_back_to_v2_one_by_one() {
        let info = "35 31 0:32 / /cg/mem\\040x rw - cgroup cgroup rw,memory\n41 31 0:38 / /cg/v2 rw - cgroup2 cgroup2 rw";
        let layout = CgroupLayout::parse(info, |_| "pids\n".into());
        assert_eq!(layout.v1[&Controller::Memory], Path::new("/cg/mem x"));
        let (_, set) = layout.v2.clone().unwrap();
        assert!(set.contains(&Controller::Pids) && set.contains(&Controller::Freezer));
        assert!(!set.contains(&Controller::Memory) && !set.contains(&Controller::Cpu));
        assert!(!layout.has(Controller::Cpu));
    }
}
