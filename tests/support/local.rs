//! `gantry run` on a working tree of the test's own, and what must be true of the host afterwards.

use super::farm::GANTRY;
use super::scratch_dir;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A working tree and a data dir of its own, so tests running in parallel never meet.
pub struct Tree {
    /// The tree, with its `.gantry.yml`.
    pub dir: PathBuf,
    /// The data dir its runs use.
    pub data_dir: PathBuf,
}

impl Tree {
    /// A tree holding `pipeline` as its `.gantry.yml`, an input file and a subdirectory.
    pub fn new(tag: &str, pipeline: &str) -> Tree {
        let root = scratch_dir(tag);
        let dir = root.join("tree");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join(".gantry.yml"), pipeline).unwrap();
        std::fs::write(dir.join("input.txt"), "hello from the tree\n").unwrap();
        std::fs::write(dir.join("sub/keep.txt"), "original\n").unwrap();
        Tree {
            dir,
            data_dir: root.join("data"),
        }
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(GANTRY);
        command
            .arg("run")
            .arg(&self.dir)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(extra)
            .env_remove("GANTRY_CONFIG")
            .stdin(Stdio::null());
        command
    }

    /// Runs `gantry run` to its end; returns its exit status, stdout and stderr.
    pub fn run(&self, extra: &[&str]) -> (Output, String, String) {
        let out = self
            .command(extra)
            .output()
            .expect("cannot start gantry run");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out, stdout, stderr)
    }

    /// Every entry of the tree with its type, mode, owner, size, mtime and content hash.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        fn walk(dir: &Path, root: &Path, into: &mut BTreeMap<PathBuf, String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let content = if meta.is_file() {
                    hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))
                } else {
                    String::new()
                };
                let line = format!(
                    "{:o} {}:{} {} {}.{} {content}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.size(),
                    meta.mtime(),
                    meta.mtime_nsec()
                );
                into.insert(path.strip_prefix(root).unwrap().to_owned(), line);
                if meta.is_dir() {
                    walk(&path, root, into);
                }
            }
        }
        let mut entries = BTreeMap::new();
        walk(&self.dir, &self.dir, &mut entries);
        entries
    }

    /// Checks that no container of this data dir is left: no scratch dir, no cgroup of its worker name.
    pub fn assert_nothing_left(&self) {
        let containers = self.data_dir.join("containers");
        let left: Vec<_> = std::fs::read_dir(&containers)
            .map(|dir| dir.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "scratch dirs left behind: {left:?}");
        let canonical = self.data_dir.canonicalize().unwrap();
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        let name = format!("local-{}-", &hex::encode(digest)[..8]);
        let layout = gantry_worker::runtime::cgroup::CgroupLayout::detect().unwrap();
        let cgroups: Vec<PathBuf> = layout
            .parents()
            .into_iter()
            .filter_map(|parent| std::fs::read_dir(parent).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&name))
            .collect();
        assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    }
}

impl Drop for Tree {
    /// A failed test may leave a container running: a run on the same data dir sweeps it.
    fn drop(&mut self) {
        if std::thread::panicking() && self.data_dir.exists() {
            let sweeper = self.dir.with_file_name("sweeper");
            let _ = std::fs::create_dir_all(&sweeper);
            let _ = std::fs::write(
                sweeper.join(".gantry.yml"),
                "jobs:\n  a: { steps: [true] }\n",
            );
            let _ = Command::new(GANTRY)
                .arg("run")
                .arg(&sweeper)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .output();
        }
    }
}

/// A `gantry run` child, interrupted (so that it removes its container) if the test ends before it does.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGINT);
            let _ = self.0.wait();
        }
    }
}

/// Processes on the host whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) && entry.file_name() != std::process::id().to_string().as_str()
        {
            found.push(cmdline);
        }
    }
    found
}
