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

use super::fs_watch::{FsWatch, News};
use super::protocol::Mask;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

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

/// Where a walk starts and what it skips.
#[derive(Debug)]
struct Walk {
    /// Walked: `/`, the host paths, or a dir that just became public.
    roots: Vec<PathBuf>,
    /// Not walked.
    skip: HashSet<PathBuf>,
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

    /// The private files as they are now (waiting for the first walk).
    pub fn current(&self) -> Vec<Mask> {
        let mut found = self.shared.lock();
        loop {
            if let Some(found) = found.as_ref() {
                return found.values().cloned().collect();
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

impl Walk {
    fn run(&self) -> BTreeMap<PathBuf, Mask> {
        // The container's view of the host is one overlay of the root file system's own tree: what is mounted
        // on top of it (`/proc`, a separate `/boot`...) is not in it, so not walked either.
        let mounts = mount_points();
        let mut found = BTreeMap::new();
        let mut stack = self.roots.clone();
        let mut seen = HashSet::new();
        while let Some(dir) = stack.pop() {
            if !seen.insert(dir.clone()) {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if self.skip.contains(&path) || mounts.contains(&path) {
                    continue;
                }
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                match verdict(&meta) {
                    Verdict::Private => {
                        found.insert(path.clone(), private(path, meta.is_dir()));
                    }
                    Verdict::Descend => stack.push(path),
                    Verdict::Public => {}
                }
            }
        }
        found
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    /// Others may not read it: masked.
    Private,
    /// A directory others may list and enter: its entries decide.
    Descend,
    /// Others may read it, or it is a link (its target is judged where it is).
    Public,
}

fn verdict(meta: &fs::Metadata) -> Verdict {
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
