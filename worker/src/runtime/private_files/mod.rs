//! What of the host's root file system only root may read, so that a job on the host image (whose root is an
//! overlay of the host's `/`, and whose root is host root without a user namespace, or host root's files'
//! owner through the id map with one) may not read it either: a job sees what any user of the host may see.
//!
//! A walk of the whole root file system finds them when first asked — the worker asks at its start, `gantry
//! run` at its first job on the host image — (~0.8 s for 420,000 entries on 2 cores, on threads of its own): every directory others may not list or enter (masked whole, not
//! descended), every file or fifo others may not read and every socket others may not write to. From then on
//! fanotify (`fs_watch`) reports each entry made, removed, renamed or chmodded there, and the list follows
//! within milliseconds; where fanotify is missing, the walk is done again every [`REWALK`]. Each container is
//! masked with the list as it is when the container starts: a private file made later is hidden from the
//! jobs that start after it.

mod collapse;
mod walk;

use super::fs_watch::{Change, ChangeKind, FsWatch, News};
use super::protocol::Mask;
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};
use walk::{Tree, Verdict, Walk, verdict};

/// How often the walk is done again where fanotify cannot follow the file system.
const REWALK: Duration = Duration::from_secs(60);
/// How long the thread waits for news before it checks that its runtime still exists.
const WAKE: Duration = Duration::from_secs(1);
/// The least time between two full walks asked for by news (lost news, a hard-linked file made private).
const REWALK_AT_MOST: Duration = Duration::from_secs(10);

/// Not walked: what every container replaces with its own (`/proc`, `/tmp`…), masks whole (`/run`), or empties
/// (the homes).
const SKIPPED: &[&str] = &["/proc", "/sys", "/dev", "/run", "/tmp", "/root", "/home"];

/// The host's private files, kept current, shared by every container of a runtime.
#[derive(Debug)]
pub(crate) struct PrivateFiles {
    shared: Arc<Shared>,
    /// The walk starts with the first container that needs it (or the worker's wait for it): a `gantry run`
    /// of image jobs only never walks.
    started: std::sync::Once,
}

#[derive(Debug)]
struct Shared {
    /// None until the first walk is done.
    found: Mutex<Option<BTreeMap<PathBuf, Mask>>>,
    /// The masks of `found` as the last container got them (collapsing costs ~1 ms with hundreds of entries,
    /// and they change far less often than containers start); None once `found` changed.
    masks: Mutex<Option<Arc<Vec<Mask>>>>,
    walked: Condvar,
    /// Walked too, and followed, although under a home (they are shown to jobs: `host_paths`).
    host_paths: Vec<PathBuf>,
}

impl PrivateFiles {
    /// What will walk and follow the host's files once first asked; `host_paths` are walked too.
    pub fn new(host_paths: Vec<PathBuf>) -> PrivateFiles {
        let shared = Arc::new(Shared {
            found: Mutex::new(None),
            masks: Mutex::new(None),
            walked: Condvar::new(),
            host_paths,
        });
        PrivateFiles {
            shared,
            started: std::sync::Once::new(),
        }
    }

    /// Starts the first walk, and following the file system after it, unless that was done already.
    fn start(&self) {
        self.started.call_once(|| {
            let weak = Arc::downgrade(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("gantry-private-files".into())
                .spawn(move || follow(weak));
            if let Err(error) = spawned {
                // Without the thread, walk once here: a job must not run with less hidden.
                tracing::warn!(%error, "cannot start a thread to follow the host's private files; walking once");
                let view = HostView::open(&self.shared.host_paths);
                self.shared.publish(view.walk_all());
            }
        });
    }

    /// Starts the walk if needed and blocks until it is done.
    pub fn wait_walked(&self) {
        drop(self.current());
    }

    /// The masks for the private files as they are now (starting the walk, and waiting for it, the first
    /// time).
    pub fn current(&self) -> Arc<Vec<Mask>> {
        self.start();
        let mut found = self.shared.read();
        loop {
            if let Some(found) = found.as_ref() {
                let mut masks = self.shared.masks.lock().unwrap_or_else(|p| p.into_inner());
                let masks = masks.get_or_insert_with(|| {
                    Arc::new(collapse::collapse(found, &self.shared.host_paths))
                });
                return masks.clone();
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
    fn read(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<PathBuf, Mask>>> {
        self.found.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to what was found (once the first walk is done); when it says it changed something,
    /// the masks made of it are made again for the next container.
    fn edit(&self, change: impl FnOnce(&mut BTreeMap<PathBuf, Mask>) -> bool) -> bool {
        let mut found = self.read();
        let changed = found.as_mut().is_some_and(change);
        if changed {
            *self.masks.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        changed
    }

    fn publish(&self, found: BTreeMap<PathBuf, Mask>) {
        *self.read() = Some(found);
        *self.masks.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.walked.notify_all();
    }

    /// Whether `path` is hidden whole already: under a private dir (the data dirs, where jobs write).
    fn under_private_dir(&self, path: &Path) -> bool {
        let found = self.read();
        let Some(found) = found.as_ref() else {
            return false;
        };
        path.ancestors()
            .skip(1)
            .any(|dir| found.get(dir).is_some_and(|mask| mask.dir))
    }
}

/// The trees a container shows of the host (the root file system's, each host path's), and what a walk of
/// them skips.
struct HostView {
    trees: Vec<Tree>,
    host_paths: Vec<PathBuf>,
    skip: HashSet<PathBuf>,
}

impl HostView {
    fn open(host_paths: &[PathBuf]) -> HostView {
        let trees = std::iter::once(Path::new("/"))
            .chain(host_paths.iter().map(PathBuf::as_path))
            .filter_map(|path| match Tree::open(path) {
                Ok(tree) => Some(tree),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "cannot clone the mount to walk it");
                    None
                }
            })
            .collect();
        // The host paths are walked in their own trees, not in the root file system's, where they may be
        // what a mount covers.
        let skip = SKIPPED
            .iter()
            .map(PathBuf::from)
            .chain(host_paths.iter().cloned())
            .collect();
        HostView {
            trees,
            host_paths: host_paths.to_vec(),
            skip,
        }
    }

    fn walk(&self, roots: Vec<PathBuf>, threads: usize) -> BTreeMap<PathBuf, Mask> {
        Walk {
            trees: &self.trees,
            roots,
            skip: &self.skip,
            threads,
        }
        .run()
    }

    /// The whole root file system (but [`SKIPPED`]) and the host paths, on every core.
    fn walk_all(&self) -> BTreeMap<PathBuf, Mask> {
        let roots = std::iter::once(PathBuf::from("/"))
            .chain(self.host_paths.iter().cloned())
            .collect();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        self.walk(roots, threads)
    }

    /// Looks at `change.path` again. Returns whether a full walk is due: a file with other names (hard links)
    /// became private under this one, and the others must be found.
    fn update(&self, shared: &Shared, change: &Change) -> bool {
        let path = &change.path;
        let shown = self.host_paths.iter().any(|p| path.starts_with(p));
        if !shown && SKIPPED.iter().any(|s| path.starts_with(s)) || shared.under_private_dir(path) {
            return false;
        }
        if change.kind == ChangeKind::Gone {
            shared.edit(|found| remove_tree(found, path));
            return false;
        }
        let stat = walk::lstat(&self.trees, path);
        let judged = stat
            .as_ref()
            .map(|meta| (verdict(meta), meta.is_dir(), meta.nlink()));
        match judged {
            Ok((Verdict::Private, dir, links)) => {
                let mut new = false;
                shared.edit(|found| {
                    remove_tree(found, path);
                    new = found
                        .insert(path.clone(), private(path.clone(), dir))
                        .is_none();
                    true
                });
                !dir && links > 1 && new
            }
            Ok((Verdict::Descend, _, _)) => {
                let was_private = shared.edit(|found| found.remove(path).is_some());
                // A dir hidden whole that became public, or a tree renamed into place: what it holds now was
                // never looked at under this name. (A new dir is empty: its walk costs one read.)
                if was_private || change.kind == ChangeKind::Appeared {
                    let mut below = self.walk(vec![path.clone()], 1);
                    if !below.is_empty() {
                        shared.edit(|found| {
                            found.append(&mut below);
                            true
                        });
                    }
                }
                false
            }
            Ok((Verdict::Public, _, _)) | Err(_) => {
                shared.edit(|found| found.remove(path).is_some());
                false
            }
        }
    }
}

/// Forgets `path` and everything under it; whether there was any.
fn remove_tree(found: &mut BTreeMap<PathBuf, Mask>, path: &Path) -> bool {
    let under: Vec<PathBuf> = found
        .range(path.to_path_buf()..)
        .map(|(p, _)| p)
        .take_while(|p| p.starts_with(path))
        .cloned()
        .collect();
    for p in &under {
        found.remove(p);
    }
    !under.is_empty()
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
    let Some(host_paths) = shared.upgrade().map(|s| s.host_paths.clone()) else {
        return;
    };
    let view = HostView::open(&host_paths);
    let mut last_walk: Option<Instant> = None;
    loop {
        if let Some(at) = last_walk {
            std::thread::sleep(REWALK_AT_MOST.saturating_sub(at.elapsed()));
        }
        last_walk = Some(Instant::now());
        let found = view.walk_all();
        tracing::debug!(
            found = found.len(),
            ms = last_walk.map_or(0, |at| at.elapsed().as_millis() as u64),
            "walked the host's root file system for files only root may read"
        );
        match shared.upgrade() {
            Some(shared) => shared.publish(found),
            None => return,
        }
        let Some(watch) = watch.as_mut() else {
            let since = Instant::now();
            while since.elapsed() < REWALK {
                std::thread::sleep(WAKE);
                if shared.strong_count() == 0 {
                    return;
                }
            }
            continue;
        };
        'news: loop {
            let news = watch.read(WAKE);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            match news {
                Ok(News::Changed(changes)) => {
                    for change in &changes {
                        if view.update(&shared, change) {
                            break 'news;
                        }
                    }
                }
                Ok(News::Lost) => break,
                Err(error) => {
                    tracing::warn!(%error, "reading fanotify failed; walking again");
                    break;
                }
            }
        }
    }
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
