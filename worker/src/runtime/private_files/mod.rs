//! What of the host's root file system only root may read, so that a job on the host image (whose root is an
//! overlay of the host's `/`, and whose root is host root without a user namespace, or host root's files'
//! owner through the id map with one) may not read it either: a job sees what any user of the host may see.
//!
//! A walk of the whole root file system finds them when the runtime starts (~0.5 s for 130,000 files, on a
//! thread of its own): every directory others may not list or enter (masked whole, not descended), every file
//! or fifo others may not read and every socket others may not write to. From then on fanotify (`fs_watch`)
//! reports each file made, renamed or chmodded there, and the list follows within milliseconds; where
//! fanotify is missing, the walk is done again every [`REWALK`]. Each container is masked with the list as
//! it is when the container starts: a private file made later is hidden from the jobs that start after it.

mod walk;

use super::fs_watch::{FsWatch, News};
use super::protocol::Mask;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use walk::{Verdict, Walk, verdict};

/// How often the walk is done again where fanotify cannot follow the file system.
const REWALK: Duration = Duration::from_secs(60);

/// Not walked: what every container replaces with its own (`/proc`, `/tmp`…), masks whole (`/run`), or empties
/// (the homes).
const SKIPPED: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/home"];

/// The host's private files, kept current, shared by every container of a runtime.
#[derive(Debug)]
pub(crate) struct PrivateFiles {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// None until the first walk is done.
    found: Mutex<Option<BTreeMap<PathBuf, Mask>>>,
    walked: Condvar,
    /// Walked too, and followed, although under a home (they are shown to jobs: `host_paths`).
    host_paths: Vec<PathBuf>,
}

impl PrivateFiles {
    /// Starts the first walk, and following the file system after it; `host_paths` are walked too.
    pub fn start(host_paths: Vec<PathBuf>) -> PrivateFiles {
        let shared = Arc::new(Shared {
            found: Mutex::new(None),
            walked: Condvar::new(),
            host_paths,
        });
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("gantry-private-files".into())
            .spawn(move || follow(weak));
        if let Err(error) = spawned {
            // Without the thread, walk once here: a job must not run with less hidden.
            tracing::warn!(%error, "cannot start a thread to follow the host's private files; walking once");
            let found = walk_all(&shared.host_paths);
            shared.publish(found);
        }
        PrivateFiles { shared }
    }

    /// Blocks until the first walk is done.
    pub fn wait_walked(&self) {
        drop(self.current());
    }

    /// The private files as they are now (waiting for the first walk).
    pub fn current(&self) -> Vec<Mask> {
        let mut found = self.shared.lock();
        loop {
            if let Some(found) = found.as_ref() {
                return collapse(found);
            }
            found = self
                .shared
                .walked
                .wait(found)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<PathBuf, Mask>>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, found: BTreeMap<PathBuf, Mask>) {
        *self.lock() = Some(found);
        self.walked.notify_all();
    }

    /// Looks at `path` again after the file system said it changed.
    fn update(&self, path: &Path) {
        let shown = self.host_paths.iter().any(|p| path.starts_with(p));
        if !shown && SKIPPED.iter().any(|s| path.starts_with(s)) {
            return;
        }
        let verdict = fs::symlink_metadata(path).map(|meta| (verdict(&meta), meta.is_dir()));
        let mut found = self.lock();
        let Some(found) = found.as_mut() else { return };
        match verdict {
            Ok((Verdict::Private, dir)) => {
                found.insert(path.to_owned(), private(path.to_owned(), dir));
            }
            Ok((Verdict::Descend, _)) => {
                // A dir masked whole that became public, or a tree renamed into place: what it holds now was
                // never looked at under this name. (A new dir is empty: its walk costs one read.)
                found.remove(path);
                let walk = Walk {
                    roots: vec![path.to_owned()],
                    skip: HashSet::new(),
                };
                found.extend(walk.run());
            }
            Ok((Verdict::Public, _)) | Err(_) => {
                found.remove(path);
            }
        }
    }
}

/// The thread: the first walk, then the file system's news (or a walk every [`REWALK`]), until the runtime
/// is gone.
fn follow(shared: Weak<Shared>) {
    let mut watch = match FsWatch::new() {
        Ok(watch) => Some(watch),
        Err(error) => {
            tracing::warn!(%error, every_secs = REWALK.as_secs(),
                "cannot follow the host's file system with fanotify; walking it for private files periodically");
            None
        }
    };
    loop {
        let Some(host_paths) = shared.upgrade().map(|s| s.host_paths.clone()) else {
            return;
        };
        let started = Instant::now();
        let found = walk_all(&host_paths);
        tracing::debug!(
            found = found.len(),
            ms = started.elapsed().as_millis() as u64,
            "walked the host's root file system for files only root may read"
        );
        match shared.upgrade() {
            Some(shared) => shared.publish(found),
            None => return,
        }
        match watch.as_mut() {
            Some(watch) => loop {
                let news = watch.read();
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                match news {
                    Ok(News::Changed(paths)) => paths.iter().for_each(|p| shared.update(p)),
                    Ok(News::Lost) => break,
                    Err(error) => {
                        tracing::warn!(%error, "reading fanotify failed; walking again");
                        std::thread::sleep(REWALK);
                        break;
                    }
                }
            },
            None => std::thread::sleep(REWALK),
        }
    }
}

/// More private entries than this under one directory (counted after collapsing below it) and the directory is
/// hidden whole: each mask is a mount at every container start (~10 µs), and a build tree or a farm of data
/// dirs holds hundreds of root-only lock files and dirs.
const MAX_PER_DIR: usize = 16;

/// Directories this shallow are never hidden whole (`/etc`, `/var/lib`: a job needs what else they hold).
const MIN_COLLAPSE_DEPTH: usize = 3;

/// The masks for `found`: one per entry, but where a directory (of [`MIN_COLLAPSE_DEPTH`] components or more)
/// holds more than [`MAX_PER_DIR`], deepest first, one for the directory.
fn collapse(found: &BTreeMap<PathBuf, Mask>) -> Vec<Mask> {
    let depth = |p: &Path| p.components().count() - 1;
    let mut dirs: Vec<&Path> = found
        .keys()
        .flat_map(|path| path.ancestors().skip(1))
        .filter(|dir| depth(dir) >= MIN_COLLAPSE_DEPTH)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if found.len() <= MAX_PER_DIR || dirs.is_empty() {
        return found.values().cloned().collect();
    }
    dirs.sort_by_key(|dir| std::cmp::Reverse(depth(dir)));
    let mut masks = found.clone();
    for dir in dirs {
        let under: Vec<PathBuf> = masks
            .range(dir.to_path_buf()..)
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(dir))
            .filter(|path| *path != dir)
            .cloned()
            .collect();
        if under.len() > MAX_PER_DIR {
            for path in under {
                masks.remove(&path);
            }
            masks.insert(dir.to_path_buf(), private(dir.to_path_buf(), true));
        }
    }
    masks.into_values().collect()
}

/// A mask for a private `path`.
fn private(path: PathBuf, dir: bool) -> Mask {
    Mask {
        path,
        dir,
        // Empty but usable: tools write to root-only dirs (apt's `partial/`, ldconfig's cache).
        writable: true,
    }
}

/// The whole root file system (but [`SKIPPED`]), and `host_paths`.
fn walk_all(host_paths: &[PathBuf]) -> BTreeMap<PathBuf, Mask> {
    let mut found = Walk {
        roots: vec![PathBuf::from("/")],
        skip: SKIPPED.iter().map(PathBuf::from).collect(),
    }
    .run();
    let shown = Walk {
        roots: host_paths.to_vec(),
        skip: HashSet::new(),
    };
    found.extend(shown.run());
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_with_many_private_entries_is_hidden_whole_unless_shallow() {
        let mut found = BTreeMap::new();
        let mut add = |path: String| {
            found.insert(PathBuf::from(&path), private(PathBuf::from(path), false));
        };
        for i in 0..20 {
            add(format!("/work/app/target/incremental/crate-{i}/s.lock"));
            add(format!("/etc/private-{i}"));
        }
        add("/work/app/target/keep".into());
        add("/var/lib/one".into());
        let paths: Vec<PathBuf> = collapse(&found).into_iter().map(|m| m.path).collect();
        assert!(paths.contains(&PathBuf::from("/work/app/target/incremental")));
        assert!(paths.contains(&PathBuf::from("/work/app/target/keep")));
        assert!(paths.contains(&PathBuf::from("/var/lib/one")));
        assert!(
            paths.contains(&PathBuf::from("/etc/private-19")),
            "/etc is never hidden whole"
        );
        assert_eq!(paths.len(), 1 + 1 + 1 + 20);
    }
}
