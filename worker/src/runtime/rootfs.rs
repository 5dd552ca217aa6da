//! The container's root file system, built by init (PID 1 of the new PID namespace, in its own mount
//! namespace) and entered with `pivot_root`. Every mount here lives and dies with that mount namespace: the
//! host's mount table never changes, and nothing needs unmounting at teardown.

use super::WorkspaceMount;
use super::identity::{self, StepIdentity};
use super::protocol::{InitConfig, Mask};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
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

const NONE: Option<&str> = None;

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

/// Builds the root file system under `config.scratch` and makes it `/`; the cwd ends up in the steps' working
/// dir, which it returns with their user.
pub(crate) fn enter(config: &InitConfig) -> Result<StepIdentity, SetupError> {
    // Before any mount: with shared propagation, our mounts would appear in the host's mount table.
    mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
        .what(|| "make / rprivate".into())?;
    let root = overlay_root(&config.scratch, &config.layers)?;

    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // A fresh procfs: we are PID 1 of the new PID namespace, so it shows only the container's processes.
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

    let workspace = mount_point(&root, "workspace")?;
    match config.workspace_mount {
        WorkspaceMount::Bind => mount(
            Some(&config.workspace),
            &workspace,
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            NONE,
        )
        .what(|| {
            format!(
                "bind-mount the workspace {} on /workspace",
                config.workspace.display()
            )
        })?,
        WorkspaceMount::ReadOnlyLower => {
            overlay_workspace(&config.scratch, &config.workspace, &workspace)?
        }
    }

    add_hostname_to_hosts(&mount_point(&root, "etc")?, &config.hostname)?;
    let kernel_masks = KERNEL_MASKS.iter().map(|(path, dir)| Mask {
        path: PathBuf::from(path),
        dir: *dir,
    });
    for mask in config.masks.iter().cloned().chain(kernel_masks) {
        apply_mask(&root, &mask)?;
    }
    for path in KERNEL_READ_ONLY {
        bind_read_only(&root.join(path.trim_start_matches('/')))?;
    }
    pivot(&root)?;
    if !config.layers.is_empty() && fs::metadata("/bin/sh").is_err() {
        return Err(SetupError {
            what: "the image has no /bin/sh, which runs every step".into(),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    let identity = identity::resolve(config)?;
    nix::unistd::chdir(&identity.cwd).what(|| format!("chdir {}", identity.cwd.display()))?;
    Ok(identity)
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

/// Mounts a tmpfs on `scratch` and on `scratch/root` the overlay of the image's layers (the host's `/` when
/// there are none).
///
/// The upper and work dirs must not be on the lower layer's file system: on 6.18 the mount succeeds, but the
/// upper dir then shows up inside the lower layer and every lookup there fails with ELOOP (overlayfs's trap on
/// its own layers). On a tmpfs the layers are disjoint, the job's writes are charged to its memory cgroup, and
/// they vanish with the mount namespace.
fn overlay_root(scratch: &Path, layers: &[PathBuf]) -> Result<PathBuf, SetupError> {
    mount_fs(
        "tmpfs",
        scratch,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )?;
    let [upper, work, root] = ["upper", "work", "root"].map(|name| scratch.join(name));
    for dir in [&upper, &work, &root] {
        fs::create_dir(dir).what(|| format!("create {}", dir.display()))?;
    }
    // The overlay's root directory takes its mode from the upper dir's; make it the usual one of `/`.
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .what(|| format!("chmod {}", upper.display()))?;
    let lower = if layers.is_empty() {
        "/".to_owned()
    } else {
        // Mount options fit in one page: full store paths (~110 bytes each) would stop at a few dozen layers,
        // and could hold a `:` or `,`. Short relative links, resolved from the cwd at mount time, are what
        // Docker's overlay2 driver does too.
        let links = scratch.join("l");
        fs::create_dir(&links).what(|| format!("create {}", links.display()))?;
        for (i, layer) in layers.iter().enumerate() {
            symlink(layer, links.join(i.to_string()))
                .what(|| format!("link layer {}", layer.display()))?;
        }
        nix::unistd::chdir(scratch).what(|| format!("chdir {}", scratch.display()))?;
        // overlayfs lists the top layer first.
        let names: Vec<String> = (0..layers.len()).rev().map(|i| format!("l/{i}")).collect();
        names.join(":")
    };
    let options = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .what(|| format!("mount the overlay root ({options}) on {}", root.display()))?;
    Ok(root)
}

/// Mounts on `target` an overlay whose one lower layer is `source` and whose upper and work dirs are in the
/// scratch tmpfs (next to the root's): the job may change anything in `/workspace`, `source` never changes,
/// and what the job wrote vanishes with the mount namespace (charged, like every write, to its memory cgroup).
///
/// The lower dir is reached through a link in the scratch dir, resolved from the cwd at mount time, so that a
/// `,` or `:` in the user's path cannot break the mount options. `metacopy=on` makes a `chown` copy up only the
/// inode, not the data: `identity` gives the whole of `/workspace` to an image's non-root user, which would
/// otherwise copy every file of the working tree into memory. (The kernel warns against metacopy on untrusted
/// layers; here the upper dir is fresh, and the `trusted.overlay.*` xattrs a hostile lower dir would need can
/// only be set by root.)
fn overlay_workspace(scratch: &Path, source: &Path, target: &Path) -> Result<(), SetupError> {
    let [lower, upper, work] = ["ws-lower", "ws-upper", "ws-work"].map(|name| scratch.join(name));
    symlink(source, &lower).what(|| format!("link the workspace {}", source.display()))?;
    for dir in [&upper, &work] {
        fs::create_dir(dir).what(|| format!("create {}", dir.display()))?;
    }
    // The overlay's root takes its owner and mode from the upper dir: make `/workspace` look like `source`.
    let meta = fs::metadata(source).what(|| format!("stat the workspace {}", source.display()))?;
    std::os::unix::fs::lchown(&upper, Some(meta.uid()), Some(meta.gid()))
        .and_then(|()| fs::set_permissions(&upper, meta.permissions()))
        .what(|| format!("give {} the workspace's owner and mode", upper.display()))?;
    nix::unistd::chdir(scratch).what(|| format!("chdir {}", scratch.display()))?;
    let options = "lowerdir=ws-lower,upperdir=ws-upper,workdir=ws-work,metacopy=on";
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
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

/// Makes the container's hostname resolve, as tools that look up their own host name expect. A symlink at
/// `/etc/hosts` is replaced, not read or written through: it could point at a host file.
fn add_hostname_to_hosts(etc: &Path, hostname: &str) -> Result<(), SetupError> {
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
    if !text.split_whitespace().any(|word| word == hostname) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("127.0.1.1\t{hostname}\n"));
        fs::write(&hosts, text).what(|| "write /etc/hosts".into())?;
    }
    Ok(())
}

/// Hides `mask.path` (a path of the container's root) if it exists there.
fn apply_mask(root: &Path, mask: &Mask) -> Result<(), SetupError> {
    let target = root.join(mask.path.strip_prefix("/").unwrap_or(&mask.path));
    let Ok(meta) = fs::symlink_metadata(&target) else {
        return Ok(());
    };
    let what = || format!("mask {}", mask.path.display());
    if meta.is_dir() {
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            flags,
            Some("size=4k,nr_inodes=1,mode=0755"),
        )
        .what(what)
    } else {
        mount(Some("/dev/null"), &target, NONE, MsFlags::MS_BIND, NONE).what(what)
    }
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
