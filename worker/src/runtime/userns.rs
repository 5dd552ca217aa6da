//! User namespaces (docs/container.md): root in a container is an unprivileged range of host uids, so a process that
//! escaped every other wall would still own nothing on the host.
//!
//! Files keep their owners through id-mapped mounts: the image's layers (or the host's `/`) and the workspace
//! are cloned as detached mounts whose owners are shifted into the namespace, so a file of host root still
//! belongs to root in the container, and what a job writes to `/workspace` belongs to host root again. Making
//! such a mount needs CAP_SYS_ADMIN in the host's namespace, so init makes them before it enters the new one,
//! and PID 1 attaches them where they belong.
#![allow(unsafe_code)] // fork() and the mount API calls (open_tree, mount_setattr, move_mount) libc has no wrappers for

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{ForkResult, Pid, fork};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x0000_0004;

/// Container ids `0..size` are host ids `host_base..host_base + size`, for users and groups alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMap {
    /// The host id container id 0 maps to.
    pub host_base: u32,
    /// How many ids are mapped.
    pub size: u32,
}

impl IdMap {
    /// The usual range for one container: 65,536 ids, as `/etc/subuid` hands them out.
    pub const SIZE: u32 = 65_536;

    /// A range of its own for each worker name (1,024 of them, from 1,000,000,000 up): far above the ranges
    /// `/etc/subuid` hands to people, and stable across the worker's restarts.
    pub fn for_worker(worker_name: &str) -> IdMap {
        // FNV-1a: tiny, and unlike std's hasher it stays the same across Rust releases.
        let hash = worker_name.bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        IdMap {
            host_base: 1_000_000_000 + (hash % 1024) * Self::SIZE,
            size: Self::SIZE,
        }
    }

    fn line(&self) -> String {
        format!("0 {} {}\n", self.host_base, self.size)
    }
}

/// A user namespace and, if asked for, a network namespace it owns.
pub(crate) struct Made {
    /// The user namespace.
    pub userns: OwnedFd,
    /// A network namespace owned by it, with `lo` up.
    pub network: Option<OwnedFd>,
}

/// Makes a user namespace with `map` (and, with `network`, a network namespace it owns, with `lo` up) and
/// returns handles on them. A process cannot write a full map for its own namespace, so a child makes them and
/// we write the maps; the namespaces outlive the child through the handles. Only async-signal-safe calls
/// happen in the child, so a multi-threaded caller is fine.
pub(crate) fn create(map: &IdMap, network: bool) -> io::Result<Made> {
    let (answers, answer_writer) = nix::unistd::pipe()?;
    let (orders, order_writer) = nix::unistd::pipe()?;
    // SAFETY: the child only calls unshare, socket, ioctl, write, read and _exit.
    let child = match unsafe { fork() }? {
        ForkResult::Child => {
            // Our copies of the parent's ends: without them, a parent killed half-way means EOF, not a child
            // waiting for orders forever.
            drop((answers, order_writer));
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&answer_writer, if ok { b"y" } else { b"n" });
            let mut order = [0u8; 1];
            // 'n': the maps are written, make the network namespace; anything else: done.
            if matches!(nix::unistd::read(&orders, &mut order), Ok(1)) && order[0] == b'n' {
                let ok = unshare(CloneFlags::CLONE_NEWNET).is_ok()
                    && super::network::loopback_up().is_ok();
                let _ = nix::unistd::write(&answer_writer, if ok { b"y" } else { b"n" });
                let _ = nix::unistd::read(&orders, &mut order);
            }
            // SAFETY: _exit skips the parent's atexit handlers and buffered streams, which are not ours.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((answer_writer, orders));
    let answer = |what: &str| -> io::Result<()> {
        let mut answer = [0u8; 1];
        if nix::unistd::read(&answers, &mut answer)? == 0 {
            return Err(io::Error::other("the helper process died"));
        }
        if answer[0] != b'y' {
            return Err(io::Error::other(what.to_owned()));
        }
        Ok(())
    };
    let result = (|| {
        answer("unshare(CLONE_NEWUSER) failed (user namespaces disabled?)")?;
        write_maps(child, map)?;
        let userns = File::open(format!("/proc/{child}/ns/user"))?.into();
        let network = if network {
            nix::unistd::write(&order_writer, b"n")?;
            answer("making its network namespace with lo up failed")?;
            Some(File::open(format!("/proc/{child}/ns/net"))?.into())
        } else {
            None
        };
        Ok(Made { userns, network })
    })();
    // A byte, not EOF: a thread of a multi-threaded caller may fork meanwhile, and its child would hold a copy
    // of the write end.
    let _ = nix::unistd::write(&order_writer, b"x");
    drop(order_writer);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

fn write_maps(child: Pid, map: &IdMap) -> io::Result<()> {
    // Written by a process with CAP_SETGID in the parent namespace, a gid map needs no "deny" in `setgroups`:
    // the job may keep using setgroups() (su, login shells) on ids of its own range.
    std::fs::write(format!("/proc/{child}/uid_map"), map.line())?;
    std::fs::write(format!("/proc/{child}/gid_map"), map.line())
}

/// A detached clone of the mount at `path` (without its submounts) whose owners appear shifted into `userns`,
/// nosuid and nodev, and read-only unless `writable`.
pub(crate) fn idmapped_clone(
    path: &Path,
    userns: BorrowedFd<'_>,
    writable: bool,
) -> io::Result<OwnedFd> {
    let tree = clone_tree(path)?;
    let attr = MountAttr {
        // nosuid, nodev: the workspace is a host dir the job writes to as host root (through the map), and no
        // set-id file or device node it leaves there may work (see rootfs's NO_SET_ID).
        attr_set: MOUNT_ATTR_IDMAP
            | MOUNT_ATTR_NOSUID
            | MOUNT_ATTR_NODEV
            | if writable { 0 } else { MOUNT_ATTR_RDONLY },
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed; the empty path refers to `tree` itself.
    let done = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// A detached clone of the mount at `path`, without what is mounted below it: what an overlay of `path`, or a
/// non-recursive bind of it, shows.
pub(crate) fn clone_tree(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let flags = (libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC) as libc::c_uint;
    // SAFETY: a valid NUL-terminated path; the returned fd is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c_path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a detached mount (from [`idmapped_clone`]) at `target`.
pub(crate) fn attach(mount: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let c_target = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: valid fds and NUL-terminated paths.
    let done = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Where every runtime keeps the dirs its containers mount their scratch tmpfs on (one per worker name, each
/// container covering it in its own mount namespace). The container's root, an unprivileged uid on the host,
/// must walk the path to it, and a data dir under a home dir (`/root` is 0700) has parents it may not walk; so
/// it lives here, in dirs of mode 0711 (walked, not listed) on a path that is 0755 everywhere.
pub const SCRATCH_ROOT: &str = "/run/gantry";

/// The scratch mount point of `worker_name`'s containers, made (0711, like [`SCRATCH_ROOT`]) if missing.
pub(crate) fn scratch_dir(worker_name: &str) -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let root = Path::new(SCRATCH_ROOT);
    let dir = root.join(worker_name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&dir)?;
    for path in [root, &dir] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(dir)
}

/// Checks once, at worker start, that this host allows what containers in user namespaces need: a path to
/// `scratch` that the container's root, an unprivileged uid on the host, may walk (to mount its scratch
/// tmpfs), a user namespace, and id-mapped mounts of the file system of `data_dir` (image layers and
/// workspaces), of the host's `/` (the host image) and of each of `host_paths`. Err says why not.
pub fn check(
    scratch: &Path,
    data_dir: &Path,
    host_paths: &[std::path::PathBuf],
) -> Result<(), String> {
    for dir in scratch.ancestors() {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by other users (mode {:o}); chmod o+x it to allow user namespaces",
                dir.display(),
                mode & 0o777
            ));
        }
    }
    let made = create(&IdMap::for_worker("probe"), false)
        .map_err(|e| format!("cannot create a user namespace: {e}"))?;
    let host_paths = host_paths.iter().map(std::path::PathBuf::as_path);
    for dir in [data_dir, Path::new("/")].into_iter().chain(host_paths) {
        idmapped_clone(dir, made.userns.as_fd(), false)
            .map(drop)
            .map_err(|e| {
                format!(
                    "the file system of {} has no id-mapped mounts: {e}",
                    dir.display()
                )
            })?;
    }
    Ok(())
}

/// The id-mapped mounts one root file system is built from.
#[derive(Debug, Default)]
pub(crate) struct RootMounts {
    /// One per image layer, lowest first; for the host image, one of the host's `/`.
    pub lower: Vec<OwnedFd>,
    /// The checkout, for the steps' root; none for a service's.
    pub workspace: Option<OwnedFd>,
    /// The `host_paths` (read-only), for the steps' root on the host image.
    pub host_paths: Vec<OwnedFd>,
}

/// Every id-mapped mount a container needs: a detached mount can be attached once, so each root gets its own.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    /// The steps' root.
    pub job: RootMounts,
    /// Each service's root, in the order of `InitConfig::services`.
    pub services: Vec<RootMounts>,
}

/// Makes the container's id-mapped mounts, then joins its user namespace as its root (uid and gid 0, no
/// supplementary groups). Namespaces unshared afterwards belong to it. Call in init, single-threaded.
pub(crate) fn enter(
    userns: BorrowedFd<'_>,
    config: &super::protocol::InitConfig,
) -> Result<Mounts, String> {
    let lower = |layers: &[std::path::PathBuf]| -> Result<Vec<OwnedFd>, String> {
        let host_root = [std::path::PathBuf::from("/")];
        let dirs = if layers.is_empty() {
            &host_root[..]
        } else {
            layers
        };
        dirs.iter()
            .map(|dir| {
                idmapped_clone(dir, userns, false)
                    .map_err(|e| format!("make an id-mapped mount of {}: {e}", dir.display()))
            })
            .collect()
    };
    let workspace = idmapped_clone(&config.workspace, userns, true).map_err(|e| {
        format!(
            "make an id-mapped mount of the workspace {}: {e}",
            config.workspace.display()
        )
    })?;
    let host_paths = config
        .host_paths
        .iter()
        .map(|path| {
            idmapped_clone(path, userns, false).map_err(|e| {
                format!(
                    "make an id-mapped mount of the host path {}: {e}",
                    path.display()
                )
            })
        })
        .collect::<Result<_, String>>()?;
    let mounts = Mounts {
        job: RootMounts {
            lower: lower(&config.layers)?,
            workspace: Some(workspace),
            host_paths,
        },
        services: config
            .services
            .iter()
            .map(|service| {
                Ok(RootMounts {
                    lower: lower(&service.image.layers)?,
                    workspace: None,
                    host_paths: Vec::new(),
                })
            })
            .collect::<Result<_, String>>()?,
    };
    nix::sched::setns(userns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("join the user namespace: {e}"))?;
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setgroups(&[]).map_err(|e| format!("drop supplementary groups: {e}"))?;
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(|e| format!("become gid 0 of the user namespace: {e}"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(|e| format!("become uid 0 of the user namespace: {e}"))?;
    Ok(mounts)
}
