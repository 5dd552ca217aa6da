//! Live news of the host's root file system: fanotify reports every file or directory made, renamed into
//! place or whose mode changed, anywhere on that file system, as the directory it is in and its name; this
//! turns them into paths. `private_files` keeps its list of what only root may read current with it.
#![allow(unsafe_code)] // fanotify_init, fanotify_mark and open_by_handle_at have no safe wrappers

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// What a read of the watch gives.
pub(crate) enum News {
    /// These paths (may) have changed: made, renamed into place, or their mode changed.
    Changed(Vec<PathBuf>),
    /// The kernel's queue overflowed and news was lost: look at everything again.
    Lost,
}

/// A fanotify group watching the root file system.
pub(crate) struct FsWatch {
    group: File,
    /// `/`, which the directory handles the kernel reports are opened relative to.
    root: OwnedFd,
    buf: Vec<u8>,
}

/// fanotify's event header: `struct fanotify_event_metadata`.
const METADATA_LEN: usize = 24;
/// Before the handle in a `struct fanotify_event_info_fid`: the info header (4 bytes) and the fsid (8).
const FID_HEADER_LEN: usize = 12;

impl FsWatch {
    /// Starts watching the file system `/` is on (needs CAP_SYS_ADMIN, kernel 5.9 or later).
    pub fn new() -> io::Result<FsWatch> {
        let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_REPORT_DFID_NAME;
        // SAFETY: plain system call; the fd is checked before it is owned.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fanotify_init returned a new fd nothing else owns.
        let group = unsafe { File::from_raw_fd(fd) };
        let events = libc::FAN_CREATE | libc::FAN_MOVED_TO | libc::FAN_ATTRIB | libc::FAN_ONDIR;
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
        })
    }

    /// Blocks until there is news.
    pub fn read(&mut self) -> io::Result<News> {
        let n = loop {
            match self.group.read(&mut self.buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        let mut changed = Vec::new();
        let mut at = 0;
        while at + METADATA_LEN <= n {
            let event = &self.buf[at..n];
            let len = u32::from_ne_bytes(event[0..4].try_into().unwrap()) as usize;
            let metadata_len = u16::from_ne_bytes(event[6..8].try_into().unwrap()) as usize;
            let mask = u64::from_ne_bytes(event[8..16].try_into().unwrap());
            if len < METADATA_LEN || len > event.len() {
                break;
            }
            if mask & libc::FAN_Q_OVERFLOW != 0 {
                return Ok(News::Lost);
            }
            if let Some(path) = event
                .get(metadata_len..len)
                .and_then(|info| self.path_of(info))
            {
                changed.push(path);
            }
            at += len;
        }
        Ok(News::Changed(changed))
    }

    /// The path of a DFID_NAME record: its directory's handle, opened and read back, and the name.
    fn path_of(&self, info: &[u8]) -> Option<PathBuf> {
        let info_type = *info.first()?;
        let record_len = u16::from_ne_bytes(info.get(2..4)?.try_into().ok()?) as usize;
        if info_type != libc::FAN_EVENT_INFO_TYPE_DFID_NAME || record_len > info.len() {
            return None;
        }
        let handle = info.get(FID_HEADER_LEN..record_len)?;
        let handle_bytes = u32::from_ne_bytes(handle.get(0..4)?.try_into().ok()?) as usize;
        let name_at = 8 + handle_bytes;
        let name = handle.get(name_at..)?;
        let name = &name[..name.iter().position(|&b| b == 0)?];
        // `struct file_handle` as the kernel wrote it, copied out to an aligned buffer.
        let mut raw = vec![0u64; name_at.div_ceil(8)];
        // SAFETY: `raw` has at least `name_at` bytes; the source range was checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(handle.as_ptr(), raw.as_mut_ptr().cast::<u8>(), name_at);
        }
        // SAFETY: a file handle as the kernel made it, in a buffer of its full length; O_PATH opens nothing
        // but a reference.
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
        let dir_path = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(name);
        Some(if name.is_empty() || name == "." {
            dir_path
        } else {
            dir_path.join(name)
        })
    }
}
