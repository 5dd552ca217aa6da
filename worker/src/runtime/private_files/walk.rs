//! The walk of file system trees for what only root may read, on as many threads as there are cores (the time
//! goes to the kernel's directory reads and stats, which run side by side).
//!
//! A tree is walked as a container sees it: the container's view of the host is an overlay of the root file
//! system's own tree (and binds of the host paths' own), without what is mounted on top, so each is walked
//! through a detached clone of its mount alone (`open_tree`), reached as `/proc/self/fd/N`. That includes
//! what lies under a mount point (an old `/var/log` under a newer mount), which a container shows and a walk
//! of the live tree would miss.

use super::{Mask, private};
use crate::runtime::userns;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

/// The mount at `path` alone, as a container sees it.
#[derive(Debug)]
pub(super) struct Tree {
    path: PathBuf,
    _clone: OwnedFd,
    /// `/proc/self/fd/N` of the clone.
    base: PathBuf,
}

impl Tree {
    /// A detached clone of the mount at `path`.
    pub fn open(path: &Path) -> std::io::Result<Tree> {
        let clone = userns::clone_tree(path)?;
        Ok(Tree {
            path: path.to_owned(),
            base: PathBuf::from(format!("/proc/self/fd/{}", clone.as_raw_fd())),
            _clone: clone,
        })
    }

    /// Where `host` (a path at or under this tree's) is in the clone.
    fn inside(&self, host: &Path) -> Option<PathBuf> {
        let relative = host.strip_prefix(&self.path).ok()?;
        Some(if relative.as_os_str().is_empty() {
            self.base.clone()
        } else {
            self.base.join(relative)
        })
    }
}

/// `host`'s metadata as a container sees it: in the deepest of `trees` it is in, without following a link.
pub(super) fn lstat(trees: &[Tree], host: &Path) -> std::io::Result<fs::Metadata> {
    let inside = deepest(trees, host)
        .and_then(|tree| tree.inside(host))
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
    fs::symlink_metadata(inside)
}

fn deepest<'a>(trees: &'a [Tree], host: &Path) -> Option<&'a Tree> {
    trees
        .iter()
        .filter(|tree| host.starts_with(&tree.path))
        .max_by_key(|tree| tree.path.components().count())
}

/// What to walk.
#[derive(Debug)]
pub(super) struct Walk<'a> {
    /// The trees the paths are in (the root file system's, and each host path's).
    pub trees: &'a [Tree],
    /// Where to start: host paths.
    pub roots: Vec<PathBuf>,
    /// Not walked (host paths).
    pub skip: &'a HashSet<PathBuf>,
    /// How many threads read at once.
    pub threads: usize,
}

/// The dirs waiting to be read, and how many threads are reading one (the walk ends when both are none).
#[derive(Default)]
struct Queue {
    dirs: Vec<PathBuf>,
    reading: usize,
}

impl Walk<'_> {
    /// Every private entry under the roots, by host path.
    pub fn run(&self) -> BTreeMap<PathBuf, Mask> {
        let mut roots = self.roots.clone();
        roots.sort();
        roots.dedup();
        let queue = Mutex::new(Queue {
            dirs: roots,
            reading: 0,
        });
        let changed = Condvar::new();
        let found = Mutex::new(BTreeMap::new());
        std::thread::scope(|scope| {
            for _ in 0..self.threads.max(1) {
                scope.spawn(|| {
                    while let Some(dir) = next(&queue, &changed) {
                        let (subdirs, private) = self.read(&dir);
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
    fn read(&self, dir: &Path) -> (Vec<PathBuf>, Vec<(PathBuf, Mask)>) {
        let (mut subdirs, mut found) = (Vec::new(), Vec::new());
        let inside = deepest(self.trees, dir).and_then(|tree| tree.inside(dir));
        let Some(Ok(entries)) = inside.map(fs::read_dir) else {
            return (subdirs, found);
        };
        for entry in entries.flatten() {
            let path = dir.join(entry.file_name());
            if self.skip.contains(&path) {
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

/// What a walk makes of one entry.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Others may not read it: masked.
    Private,
    /// A directory others may list and enter: its entries decide.
    Descend,
    /// Others may read it, or it is a link (its target is judged where it is).
    Public,
}

/// Judges an entry by its type and what its mode lets others do.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
        // Under a mount point of its own: the walk sees what lies under it, as a container's overlay does.
        fs::create_dir(base.join("covered")).unwrap();
        fs::write(base.join("covered/under"), "x").unwrap();
        chmod(&base.join("covered/under"), 0o600);
        // The test runs as root, in a mount namespace of its own so the host never sees the mount.
        let covered = base.join("covered");
        let found = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                    nix::mount::mount(
                        None::<&str>,
                        "/",
                        None::<&str>,
                        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                        None::<&str>,
                    )
                    .unwrap();
                    nix::mount::mount(
                        Some("tmpfs"),
                        &covered,
                        Some("tmpfs"),
                        nix::mount::MsFlags::empty(),
                        None::<&str>,
                    )
                    .unwrap();
                    let trees = [
                        Tree::open(&base).unwrap(),
                        Tree::open(&base.join("skipped/bound")).unwrap(),
                    ];
                    let skip: HashSet<PathBuf> = [base.join("skipped")].into_iter().collect();
                    let walk = Walk {
                        trees: &trees,
                        roots: vec![base.clone(), base.join("skipped/bound")],
                        skip: &skip,
                        threads: 2,
                    };
                    walk.run().into_keys().collect::<Vec<PathBuf>>()
                })
                .join()
                .unwrap()
        });
        let expected: Vec<PathBuf> = [
            "covered/under",
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
}
