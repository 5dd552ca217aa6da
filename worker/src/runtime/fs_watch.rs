//! Live news of the host's root file system: fanotify reports every file or directory made, removed, renamed
//! or whose mode changed, anywhere on that file system, as the directory it is in and its name; this turns
//! them into paths. `private_files` keeps its list of what only root may read current with it.
#![allow(unsafe_code)] // fanotify_init, fanotify_mark and open_by_handle_at have no safe wrappers

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// What a read of the watch gives.
pub(crate) enum News {
    /// These entries changed (none when the wait timed out).
    Changed(Vec<Change>),
    /// The kernel's queue overflowed and news was lost: look at everything again.
    Lost,
}

/// One entry's change.
#[derive(Debug)]
pub(crate) struct Change {
    /// The entry, as a host path.
    pub path: PathBuf,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What happened to an entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Made, or renamed into place (a dir may bring a whole tree with it).
    Appeared,
    /// Its mode or owner (or another attribute) changed.
    Attributes,
    /// Removed, or renamed away.
    Gone,
}

/// A fanotify group watching the root file system.
pub(crate) struct FsWatch {
    group: File,
    /// `/`, which the directory handles the kernel reports are opened relative to.
    root: OwnedFd,
    buf: Vec<u8>,
    /// Directory handles already turned into paths: a build makes thousands of files in a few dirs, and each
    /// open_by_handle_at and readlink costs. Emptied whenever a directory is renamed or removed.
    dirs: HashMap<Vec<u8>, PathBuf>,
}

/// fanotify's event header: `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// Before the handle in a `struct fanotify_event_info_fid`: the info header (4 bytes) and the fsid (8).
const FID_HEADER_LEN: usize = 12;
/// Directory paths kept at most (then forgotten all at once).
const DIRS_KEPT: usize = 4096;

impl FsWatch {
    /// Starts watching the file system `/` is on (needs CAP_SYS_ADMIN, kernel 5.9 or later).
    pub fn new() -> io::Result<FsWatch> {
        // Unlimited: a job that makes files by the million must not make the worker lose news and walk the
        // whole file system again (an event waits in ~100 bytes of kernel memory).
        let flags = libc::FAN_CLASS_NOTIF
            | libc::FAN_CLOEXEC
            | libc::FAN_NONBLOCK
            | libc::FAN_UNLIMITED_QUEUE
            | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: plain system call; the fd is checked before it is owned.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a new fd nothing else owns.
        let group = unsafe { File::from_raw_fd(fd) };
        let events = libc::FAN_CREATE
            | libc::FAN_MOVED_TO
            | libc::FAN_ATTRIB
            | libc::FAN_DELETE
            | libc::FAN_MOVED_FROM
            | libc::FAN_ONDIR;
        // SAFETY: a valid group fd and a NUL-terminated path.
        let marked = unsafe {
            libc::fanotify_mark(
                group.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                events,
                libc::AT_FDCWD,
                c"/".as_ptr(),
            )
        };
        if marked != 0 {
            return Err(io::Error::last_os_error());
        }
        let root = File::open("/")?.into();
        Ok(FsWatch {
            group,
            root,
            buf: vec![0; 64 * 1024],
            dirs: HashMap::new(),
        })
    }

    /// Waits up to `timeout` for news.
    pub fn read(&mut self, timeout: Duration) -> io::Result<News> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.group.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(News::Changed(Vec::new())),
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        // Taken out while its events are parsed (path_of needs `self`), put back after: no copy per event.
        let mut buf = std::mem::take(&mut self.buf);
        let read = self.group.read(&mut buf);
        let news = match read {
            Ok(n) => Ok(self.parse(&buf[..n])),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(News::Changed(Vec::new()))
            }
            Err(e) => Err(e),
        };
        self.buf = buf;
        news
    }

    /// The events of one read.
    fn parse(&mut self, events: &[u8]) -> News {
        let n = events.len();
        let mut changed = Vec::new();
        let mut at = 0;
        while at + METADATA_LEN <= n {
            let event = &events[at..n];
            let len = u32::from_ne_bytes(event[0..4].try_into().unwrap()) as usize;
            let metadata_len = u16::from_ne_bytes(event[6..8].try_into().unwrap()) as usize;
            let mask = u64::from_ne_bytes(event[8..16].try_into().unwrap());
            if len < METADATA_LEN || len > event.len() {
                break;
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                return News::Lost;
            }
            if let Some(path) = event
                .get(metadata_len..len)
                .and_then(|info| self.path_of(info))
            {
                let kind = if mask & (libc::FAN_DELETE | libc::FAN_MOVED_FROM) != 0 {
                    ChangeKind::Gone
                } else if mask & (libc::FAN_CREATE | libc::FAN_MOVED_TO) != 0 {
                    ChangeKind::Appeared
                } else {
                    ChangeKind::Attributes
                };
                changed.push(Change { path, kind });
            }
            // A dir renamed or removed: the paths of its handle and of those under it are stale.
            let moved = libc::FAN_MOVED_FROM | libc::FAN_MOVED_TO | libc::FAN_DELETE;
            if mask & libc::FAN_ONDIR != 0 && mask & moved != 0 {
                self.dirs.clear();
            }
            at += len;
        }
        News::Changed(changed)
    }

    /// The path of a DFID_NAME record: its directory's handle, opened and read back, and the name.
    fn path_of(&mut self, info: &[u8]) -> Option<PathBuf> {
        let info_type = *info.first()?;
        let record_len = u16::from_ne_bytes(info.get(2..4)?.try_into().ok()?) as usize;
        if info_type != libc::FAN_EVENT_INFO_TYPE_DFID_NAME || record_len > info.len() {
            return None;
        }
        let record = info.get(FID_HEADER_LEN..record_len)?;
        let handle_bytes = u32::from_ne_bytes(record.get(0..4)?.try_into().ok()?) as usize;
        // `struct file_handle`: handle_bytes, handle_type, then the bytes; the name follows it.
        let handle = record.get(..8 + handle_bytes)?;
        let name = record.get(8 + handle_bytes..)?;
        let name = OsStr::from_bytes(&name[..name.iter().position(|&b| b == 0)?]);
        let dir = match self.dirs.get(handle) {
            Some(path) => path.clone(),
            None => {
                let path = self.open_dir(handle)?;
                if self.dirs.len() >= DIRS_KEPT {
                    self.dirs.clear();
                }
                self.dirs.insert(handle.to_vec(), path.clone());
                path
            }
        };
        Some(if name.is_empty() || name == "." {
            dir
        } else {
            dir.join(name)
        })
    }

    /// The path of the directory of `handle` (a `struct file_handle` as the kernel wrote it).
    fn open_dir(&self, handle: &[u8]) -> Option<PathBuf> {
        // Copied out to an aligned buffer of its full length.
        let mut raw = vec![0u64; handle.len().div_ceil(8)];
        // SAFETY: `raw` has at least `handle.len()` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                handle.as_ptr(),
                raw.as_mut_ptr().cast::<u8>(),
                handle.len(),
            );
        }
        // SAFETY: a file handle as the kernel made it; O_PATH opens nothing but a reference.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.root.as_raw_fd(),
                raw.as_mut_ptr().cast::<libc::file_handle>(),
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            // The directory is gone already (ESTALE): so is what was made in it.
            return None;
        }
        // SAFETY: open_by_handle_at returned a new fd nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        // A directory removed meanwhile reads back as "PATH (deleted)": nothing to look at.
        (!path.as_os_str().as_bytes().ends_with(b" (deleted)")).then_some(path)
    }
}
