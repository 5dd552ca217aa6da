//! The walk of a file system tree for what only root may read, on as many threads as there are cores (the
//! time goes to the kernel's directory reads and stats, which run side by side).

use super::{Mask, private};
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// Where a walk starts and what it skips.
#[derive(Debug)]
pub(super) struct Walk {
    /// Walked: `/`, the host paths, or a dir that just became public.
    pub roots: Vec<PathBuf>,
    /// Not walked.
    pub skip: HashSet<PathBuf>,
}

/// The dirs waiting to be read, and how many threads are reading one (the walk ends when both are none).
#[derive(Default)]
struct Queue {
    dirs: Vec<PathBuf>,
    reading: usize,
}

impl Walk {
    /// Every private entry under the roots, by path.
    pub fn run(&self) -> BTreeMap<PathBuf, Mask> {
        // The container's view of the host is one overlay of the root file system's own tree: what is mounted
        // on top of it (`/proc`, a separate `/boot`...) is not in it, so not walked either.
        let mounts = mount_points();
        let mut roots = self.roots.clone();
        roots.sort();
        roots.dedup();
        let queue = Mutex::new(Queue {
            dirs: roots,
            reading: 0,
        });
        let changed = Condvar::new();
        let found = Mutex::new(BTreeMap::new());
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    while let Some(dir) = next(&queue, &changed) {
                        let (subdirs, private) = self.read(&dir, &mounts);
                        found
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(private);
                        let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                        queue.dirs.extend(subdirs);
                        queue.reading -= 1;
                        changed.notify_all();
                    }
                });
            }
        });
        found.into_inner().unwrap_or_else(|p| p.into_inner())
    }

    /// One dir's entries: the dirs to descend into, and the private ones.
    fn read(
        &self,
        dir: &std::path::Path,
        mounts: &HashSet<PathBuf>,
    ) -> (Vec<PathBuf>, Vec<(PathBuf, Mask)>) {
        let (mut subdirs, mut found) = (Vec::new(), Vec::new());
        let Ok(entries) = fs::read_dir(dir) else {
            return (subdirs, found);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if self.skip.contains(&path) || mounts.contains(&path) {
                continue;
            }
            // From the dir's fd (fstatat, not following links): no walk of the whole path per entry.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            match verdict(&meta) {
                Verdict::Private => found.push((path.clone(), private(path, meta.is_dir()))),
                Verdict::Descend => subdirs.push(path),
                Verdict::Public => {}
            }
        }
        (subdirs, found)
    }
}

/// The next dir to read, waiting while others are read (they may add some); None when the walk is done.
fn next(queue: &Mutex<Queue>, changed: &Condvar) -> Option<PathBuf> {
    let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(dir) = queue.dirs.pop() {
            queue.reading += 1;
            return Some(dir);
        }
        if queue.reading == 0 {
            return None;
        }
        queue = changed.wait(queue).unwrap_or_else(|p| p.into_inner());
    }
}

#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Others may not read it: masked.
    Private,
    /// A directory others may list and enter: its entries decide.
    Descend,
    /// Others may read it, or it is a link (its target is judged where it is).
    Public,
}

pub(super) fn verdict(meta: &fs::Metadata) -> Verdict {
    let others = meta.mode() & 0o007;
    let kind = meta.file_type();
    if kind.is_symlink() || kind.is_block_device() || kind.is_char_device() {
        // Device nodes are dead on the container's root (mounted nodev).
        return Verdict::Public;
    }
    if kind.is_dir() {
        return if others & 0o5 == 0o5 {
            Verdict::Descend
        } else {
            Verdict::Private
        };
    }
    let needed = if kind.is_socket() { 0o2 } else { 0o4 };
    if others & needed == needed {
        Verdict::Public
    } else {
        Verdict::Private
    }
}

/// Every mount point of this mount namespace but `/` (octal escapes of `/proc/self/mountinfo` decoded).
fn mount_points() -> HashSet<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| *point != "/")
        .map(|point| PathBuf::from(unescape(point)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(value as u8);
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
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_entries_are_found_and_private_dirs_not_descended() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        for dir in [
            "open",
            "open/locked",
            "open/listed-only",
            "skipped",
            "skipped/bound",
        ] {
            fs::create_dir(base.join(dir)).unwrap();
        }
        for file in [
            "open/public",
            "open/secret",
            "open/locked/inside",
            "skipped/secret",
            "skipped/bound/key",
        ] {
            fs::write(base.join(file), "x").unwrap();
            chmod(&base.join(file), 0o600);
        }
        chmod(&base.join("open/public"), 0o644);
        chmod(&base.join("open/locked"), 0o700);
        chmod(&base.join("open/listed-only"), 0o711);
        let walk = Walk {
            roots: vec![base.clone(), base.join("skipped/bound")],
            skip: [base.join("skipped")].into_iter().collect(),
        };
        let found: Vec<PathBuf> = walk.run().into_keys().collect();
        let expected: Vec<PathBuf> = [
            "open/listed-only",
            "open/locked",
            "open/secret",
            "skipped/bound/key",
        ]
        .iter()
        .map(|p| base.join(p))
        .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape(r"/plain\x"), r"/plain\x");
    }
}
