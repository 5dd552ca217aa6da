//! The container's root file system, built by init (PID 1 of the new PID namespace, in its own mount
//! namespace) and entered with `pivot_root`. Every mount here lives and dies with that mount namespace: the
//! host's mount table never changes, and nothing needs unmounting at teardown.

use super::WorkspaceMount;
use super::host_view;
use super::protocol::Mask;
use super::userns::{self, RootMounts};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// A setup step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub(crate) struct SetupError {
    pub what: String,
    pub source: std::io::Error,
}

/// Names what was being done when an error happened.
pub(crate) trait Context<T> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, SetupError>;
}

impl<T, E: Into<std::io::Error>> Context<T> for Result<T, E> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, SetupError> {
        self.map_err(|e| SetupError {
            what: what(),
            source: e.into(),
        })
    }
}

pub(crate) const NONE: Option<&str> = None;

/// Every mount a job can write to or run from: a set-id file or a device node it makes there must not work,
/// in the container or (for the workspace, which is a host dir) anywhere else.
pub(crate) const NO_SET_ID: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);

/// Device nodes bound from the host's `/dev`; a job gets nothing else of it.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Kernel files that leak host information or allow host-wide changes (runc's default masked paths).
const KERNEL_MASKS: &[(&str, bool)] = &[
    ("/proc/kcore", false),
    ("/proc/keys", false),
    ("/proc/latency_stats", false),
    ("/proc/timer_list", false),
    ("/proc/sched_debug", false),
    ("/proc/acpi", true),
    ("/proc/scsi", true),
    ("/sys/firmware", true),
];

/// Kernel paths left visible but read-only (runc's default read-only paths).
const KERNEL_READ_ONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];

/// What one root file system is made of: the steps' or a service's.
pub(crate) struct RootSpec<'a> {
    /// A new dir on the scratch tmpfs (see [`prepare`]) for this root's overlay: upper, work and mount point.
    pub base: PathBuf,
    /// Read-only image layers, lowest first; empty: the host's `/`, with `masks` applied.
    pub layers: &'a [PathBuf],
    /// Made to resolve in `/etc/hosts`.
    pub hostname: &'a str,
    /// More names for `127.0.0.1` in `/etc/hosts` (the job's services, for its steps).
    pub aliases: &'a [String],
    /// Host paths to hide, when the root is the host's `/`.
    pub masks: &'a [Mask],
    /// Host paths shown read-only, when the root is the host's `/` (the steps' root only).
    pub host_paths: &'a [PathBuf],
    /// The host dir that becomes `/workspace`, and how; none: no workspace (a service's root).
    pub workspace: Option<(&'a Path, WorkspaceMount)>,
    /// What `/etc/resolv.conf` says (egress jobs); none: the image's (or the host's) own file.
    pub resolv_conf: Option<&'a str>,
    /// In a user namespace: id-mapped mounts of the layers (or the host's `/`) and of the workspace, used
    /// instead of the paths above.
    pub mounts: Option<&'a RootMounts>,
}

/// Before any other mount: makes `/` rprivate (with shared propagation our mounts would appear in the host's
/// mount table), then mounts the tmpfs that holds every overlay's upper layer on `scratch`.
pub(crate) fn prepare(scratch: &Path) -> Result<(), SetupError> {
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .what(|| "make / rprivate".into())?;
    mount_fs(
        "tmpfs",
        scratch,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
}

/// Builds the root file system described by `spec` and makes it `/` (the cwd ends up there too). Call it in
/// a mount namespace of its own, after [`prepare`].
pub(crate) fn enter(spec: &RootSpec<'_>) -> Result<(), SetupError> {
    let lower = match spec.mounts {
        Some(mounts) => Lower::Mounts(&mounts.lower),
        None => Lower::Paths(spec.layers),
    };
    let root = overlay_root(&spec.base, lower)?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // A fresh procfs: the PID namespace's own, so it shows only the container's processes.
    mount_fs(
        "proc",
        &mount_point(&root, "proc")?,
        nosuid_nodev_noexec,
        None,
    )?;
    // A fresh sysfs rather than a bind: in the new network namespace it lists only `lo`.
    mount_fs(
        "sysfs",
        &mount_point(&root, "sys")?,
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        None,
    )?;
    populate_dev(&mount_point(&root, "dev")?)?;
    mount_fs(
        "tmpfs",
        &mount_point(&root, "tmp")?,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    if let Some((source, how)) = spec.workspace {
        let target = mount_point(&root, "workspace")?;
        let idmapped = spec.mounts.and_then(|m| m.workspace.as_ref());
        match (how, idmapped) {
            (WorkspaceMount::Bind, Some(mount)) => userns::attach(mount.as_fd(), &target)
                .what(|| "attach the id-mapped workspace on /workspace".into())?,
            (WorkspaceMount::Bind, None) => {
                let what = || {
                    format!(
                        "bind-mount the workspace {} on /workspace",
                        source.display()
                    )
                };
                let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some(source), &target, NONE, bind, NONE).what(what)?;
                // A bind takes its flags from a remount.
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | NO_SET_ID;
                mount(NONE, &target, NONE, flags, NONE).what(what)?
            }
            (WorkspaceMount::ReadOnlyLower, idmapped) => {
                overlay_workspace(&spec.base, source, idmapped.map(|m| m.as_fd()), &target)?
            }
        }
    }

    let etc = mount_point(&root, "etc")?;
    write_hosts(&etc, spec.hostname, spec.aliases)?;
    if let Some(text) = spec.resolv_conf {
        write_resolv_conf(&etc, text)?;
    }
    if spec.layers.is_empty() {
        let idmapped = spec.mounts.map(|m| &m.host_paths[..]);
        host_view::cover(&root, &spec.base, spec.masks, spec.host_paths, idmapped)?;
    }
    for (i, (path, dir)) in KERNEL_MASKS.iter().enumerate() {
        let mask = Mask {
            path: PathBuf::from(path),
            dir: *dir,
            writable: false,
        };
        host_view::apply_mask(&root, &mask, &spec.base.join(format!("kernel-masked-{i}")))?;
    }
    for path in KERNEL_READ_ONLY {
        bind_read_only(&root.join(path.trim_start_matches('/')))?;
    }
    pivot(&root)?;
    if !spec.layers.is_empty() && fs::metadata("/bin/sh").is_err() {
        return Err(SetupError {
            what: "the image has no /bin/sh, which runs every step".into(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    Ok(())
}

/// `root/name` as a real directory to mount on. An image may have put a symlink there (to `/etc`, say): a
/// mount on it would follow it to a host path, and so would `create_dir_all`. Replacing it changes only the
/// container's upper layer.
fn mount_point(root: &Path, name: &str) -> Result<PathBuf, SetupError> {
    let path = root.join(name);
    let what = || format!("make /{name} a directory");
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => return Ok(path),
        Ok(_) => fs::remove_file(&path).what(what)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).what(what),
    }
    fs::create_dir(&path).what(what)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).what(what)?;
    Ok(path)
}

/// An overlay's read-only layers: paths on the host, or id-mapped mounts (of the layers, or of the host's `/`).
#[derive(Clone, Copy)]
enum Lower<'a> {
    /// Lowest first; none: the host's `/`.
    Paths(&'a [PathBuf]),
    /// Lowest first; never empty.
    Mounts(&'a [OwnedFd]),
}

/// Mounts on `base/root` the overlay of the image's layers (the host's `/` when there are none), with its
/// upper and work dirs in `base`, which must be on the scratch tmpfs.
///
/// The upper and work dirs must not be on the lower layer's file system: on 6.18 the mount succeeds, but the
/// upper dir then shows up inside the lower layer and every lookup there fails with ELOOP (overlayfs's trap on
/// its own layers). On a tmpfs the layers are disjoint, the job's writes are charged to its memory cgroup, and
/// they vanish with the mount namespace.
fn overlay_root(base: &Path, lower: Lower<'_>) -> Result<PathBuf, SetupError> {
    fs::create_dir_all(base).what(|| format!("create {}", base.display()))?;
    let [upper, work, root] = ["upper", "work", "root"].map(|name| base.join(name));
    for dir in [&upper, &work, &root] {
        fs::create_dir(dir).what(|| format!("create {}", dir.display()))?;
    }
    // The overlay's root directory takes its mode from the upper dir's; make it the usual one of `/`.
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .what(|| format!("chmod {}", upper.display()))?;
    let idmapped = matches!(lower, Lower::Mounts(_));
    let count = match lower {
        Lower::Paths([]) => 0,
        Lower::Paths(layers) => layers.len(),
        Lower::Mounts(mounts) => mounts.len(),
    };
    let lower = if count == 0 {
        "/".to_owned()
    } else {
        // Mount options fit in one page: full store paths (~110 bytes each) would stop at a few dozen layers,
        // and could hold a `:` or `,`. Short relative names, resolved from the cwd at mount time, are what
        // Docker's overlay2 driver does too: links to the layers, or the id-mapped layers themselves.
        let links = base.join("l");
        fs::create_dir(&links).what(|| format!("create {}", links.display()))?;
        for i in 0..count {
            let link = links.join(i.to_string());
            match lower {
                Lower::Paths(layers) => symlink(&layers[i], &link)
                    .what(|| format!("link layer {}", layers[i].display()))?,
                Lower::Mounts(mounts) => {
                    fs::create_dir(&link).what(|| format!("create {}", link.display()))?;
                    userns::attach(mounts[i].as_fd(), &link)
                        .what(|| format!("attach id-mapped layer {i}"))?;
                }
            }
        }
        nix::unistd::chdir(base).what(|| format!("chdir {}", base.display()))?;
        // overlayfs lists the top layer first.
        let names: Vec<String> = (0..count).rev().map(|i| format!("l/{i}")).collect();
        names.join(":")
    };
    // Inside a user namespace overlayfs cannot use trusted.* xattrs: `userxattr` makes it read opaque dirs
    // from user.* (which the layer store writes too) and keep its own bookkeeping there.
    let userxattr = if idmapped { ",userxattr" } else { "" };
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}{userxattr}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        NO_SET_ID,
        Some(options.as_str()),
    )
    .what(|| format!("mount the overlay root ({options}) on {}", root.display()))?;
    Ok(root)
}

/// Mounts on `target` an overlay whose one lower layer is `source` and whose upper and work dirs are in the
/// scratch tmpfs (next to the root's): the job may change anything in `/workspace`, `source` never changes,
/// and what the job wrote vanishes with the mount namespace (charged, like every write, to its memory cgroup).
///
/// The lower dir is reached through a link in the scratch dir (in a user namespace: the id-mapped mount of
/// `source`, attached there), resolved from the cwd at mount time, so that a `,` or `:` in the user's path
/// cannot break the mount options. `metacopy=on` makes a `chown` copy up only the inode, not the data:
/// `identity` gives the whole of `/workspace` to an image's non-root user, which would otherwise copy every
/// file of the working tree into memory. (The kernel warns against metacopy on untrusted layers; here the upper
/// dir is fresh, and the `trusted.overlay.*` xattrs a hostile lower dir would need can only be set by root.)
/// In a user namespace overlayfs allows no metacopy (it needs trusted.* xattrs), so such a chown copies data.
fn overlay_workspace(
    base: &Path,
    source: &Path,
    idmapped: Option<BorrowedFd<'_>>,
    target: &Path,
) -> Result<(), SetupError> {
    let [lower, upper, work] = ["ws-lower", "ws-upper", "ws-work"].map(|name| base.join(name));
    match idmapped {
        Some(mount) => {
            fs::create_dir(&lower).what(|| format!("create {}", lower.display()))?;
            userns::attach(mount, &lower).what(|| "attach the id-mapped workspace".into())?;
        }
        None => {
            symlink(source, &lower).what(|| format!("link the workspace {}", source.display()))?
        }
    }
    for dir in [&upper, &work] {
        fs::create_dir(dir).what(|| format!("create {}", dir.display()))?;
    }
    // The overlay's root takes its owner and mode from the upper dir: make `/workspace` look like `source`
    // (as seen through `lower`, which in a user namespace shows the owner the job sees).
    let meta = fs::metadata(&lower).what(|| format!("stat the workspace {}", source.display()))?;
    std::os::unix::fs::lchown(&upper, Some(meta.uid()), Some(meta.gid()))
        .and_then(|()| fs::set_permissions(&upper, meta.permissions()))
        .what(|| format!("give {} the workspace's owner and mode", upper.display()))?;
    nix::unistd::chdir(base).what(|| format!("chdir {}", base.display()))?;
    let options = match idmapped {
        Some(_) => "lowerdir=ws-lower,upperdir=ws-upper,workdir=ws-work,userxattr",
        None => "lowerdir=ws-lower,upperdir=ws-upper,workdir=ws-work,metacopy=on",
    };
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        NO_SET_ID,
        Some(options),
    )
    .what(|| {
        format!(
            "mount an overlay of the workspace {} on /workspace ({options})",
            source.display()
        )
    })
}

fn mount_fs(
    fstype: &str,
    target: &Path,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SetupError> {
    fs::create_dir_all(target).what(|| format!("create {}", target.display()))?;
    mount(Some(fstype), target, Some(fstype), flags, data)
        .what(|| format!("mount {fstype} on {}", target.display()))
}

/// A minimal `/dev`: a few harmless devices, a private devpts, a tmpfs `/dev/shm` and the usual symlinks.
fn populate_dev(dev: &Path) -> Result<(), SetupError> {
    mount_fs(
        "tmpfs",
        dev,
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        fs::File::create(&target).what(|| format!("create {}", target.display()))?;
        let source = Path::new("/dev").join(name);
        mount(Some(&source), &target, NONE, MsFlags::MS_BIND, NONE)
            .what(|| format!("bind-mount {} on {}", source.display(), target.display()))?;
    }
    let pts_flags = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount_fs(
        "devpts",
        &dev.join("pts"),
        pts_flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;
    let shm_flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs(
        "tmpfs",
        &dev.join("shm"),
        shm_flags,
        Some("mode=1777,size=65536k"),
    )?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, target) in links {
        symlink(target, dev.join(name)).what(|| format!("symlink /dev/{name}"))?;
    }
    Ok(())
}

/// Makes the container's hostname resolve, as tools that look up their own host name expect, and the
/// services' names too. A symlink at `/etc/hosts` is replaced, not read or written through: it could point at
/// a host file.
fn write_hosts(etc: &Path, hostname: &str, aliases: &[String]) -> Result<(), SetupError> {
    let hosts = etc.join("hosts");
    let mut text = match fs::symlink_metadata(&hosts) {
        Ok(meta) if meta.is_file() => fs::read_to_string(&hosts).unwrap_or_default(),
        Ok(meta) => {
            let what = || "replace /etc/hosts".to_owned();
            if meta.is_dir() {
                fs::remove_dir_all(&hosts).what(what)?;
            } else {
                fs::remove_file(&hosts).what(what)?;
            }
            "127.0.0.1\tlocalhost\n".to_owned()
        }
        Err(_) => "127.0.0.1\tlocalhost\n".to_owned(),
    };
    let known = |text: &str, name: &str| text.split_whitespace().any(|word| word == name);
    let missing: Vec<&String> = aliases.iter().filter(|name| !known(&text, name)).collect();
    if known(&text, hostname) && missing.is_empty() {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !known(&text, hostname) {
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for name in missing {
        text.push_str(&format!("127.0.0.1\t{name}\n"));
    }
    fs::write(&hosts, text).what(|| "write /etc/hosts".into())
}

/// Gives an egress job the name servers it can reach. Like `/etc/hosts`, a symlink there (systemd-resolved's
/// `../run/systemd/resolve/stub-resolv.conf` on many hosts) is replaced, never written through.
fn write_resolv_conf(etc: &Path, text: &str) -> Result<(), SetupError> {
    let path = etc.join("resolv.conf");
    let what = || "replace /etc/resolv.conf".to_owned();
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path).what(what)?,
        Ok(_) => fs::remove_file(&path).what(what)?,
        Err(_) => {}
    }
    fs::write(&path, text).what(|| "write /etc/resolv.conf".into())
}

fn bind_read_only(target: &Path) -> Result<(), SetupError> {
    if fs::symlink_metadata(target).is_err() {
        return Ok(());
    }
    let what = || format!("make {} read-only", target.display());
    mount(
        Some(target),
        target,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .what(what)?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(NONE, target, NONE, flags, NONE).what(what)
}

/// runc's trick: `pivot_root(".", ".")` stacks the old root on the new one, and a lazy unmount drops it, with
/// no directory for the old root needed inside the new one.
fn pivot(root: &Path) -> Result<(), SetupError> {
    nix::unistd::chdir(root).what(|| format!("chdir {}", root.display()))?;
    nix::unistd::pivot_root(".", ".").what(|| format!("pivot_root to {}", root.display()))?;
    umount2(".", MntFlags::MNT_DETACH).what(|| "unmount the old root".into())?;
    nix::unistd::chdir("/").what(|| "chdir /".into())
}
