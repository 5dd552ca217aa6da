//! What a job on the host image sees of the host: the host's `/` (the overlay `rootfs` builds) with its secrets
//! masked (`masks`, `private_files`), its homes replaced by empty ones, and the `host_paths` the worker's
//! configuration brings back, read-only.

use super::protocol::Mask;
use super::rootfs::{Context, NO_SET_ID, NONE, SetupError};
use super::userns;
use nix::mount::{MsFlags, mount};
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One thing to lay over the root.
enum Cover<'a> {
    Mask(&'a Mask),
    /// A host path, and its id-mapped mount in a user namespace.
    HostPath(&'a Path, Option<&'a OwnedFd>),
}

impl Cover<'_> {
    fn path(&self) -> &Path {
        match self {
            Cover::Mask(mask) => &mask.path,
            Cover::HostPath(path, _) => path,
        }
    }
}

/// Applies `masks` and attaches `host_paths` (with their id-mapped mounts, in a user namespace) on `root`,
/// shallowest first and, at one depth, masks first: a host path under `/root` goes onto the empty `/root`, and a
/// private file inside that host path is masked on top of it.
pub(crate) fn cover(
    root: &Path,
    base: &Path,
    masks: &[Mask],
    host_paths: &[PathBuf],
    idmapped: Option<&[OwnedFd]>,
) -> Result<(), SetupError> {
    let mut covers: Vec<Cover<'_>> = masks.iter().map(Cover::Mask).collect();
    for (i, path) in host_paths.iter().enumerate() {
        covers.push(Cover::HostPath(path, idmapped.and_then(|m| m.get(i))));
    }
    covers.sort_by_key(|c| {
        let host_path = matches!(c, Cover::HostPath(..));
        (c.path().components().count(), host_path)
    });
    let empties = base.join("masked");
    fs::create_dir(&empties).what(|| format!("create {}", empties.display()))?;
    for (i, cover) in covers.into_iter().enumerate() {
        match cover {
            Cover::Mask(mask) => apply_mask(root, mask, &empties.join(i.to_string()))?,
            Cover::HostPath(path, mount) => attach_host_path(root, path, mount)?,
        }
    }
    Ok(())
}

/// `path` of the container, under `root`.
fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Hides `mask.path` (a path of the container's root) if it exists there: a file behind `/dev/null`, a
/// directory behind `empty`, a new dir on the container's scratch tmpfs (so writes to it are the job's own, in
/// memory) with the directory's mode, read-only unless the mask is writable. Binds, not a tmpfs each: a mount of
/// a new tmpfs costs ~50 µs, a bind ~10, and a host can need hundreds of masks.
pub(crate) fn apply_mask(root: &Path, mask: &Mask, empty: &Path) -> Result<(), SetupError> {
    let target = inside(root, &mask.path);
    let Ok(meta) = fs::symlink_metadata(&target) else {
        return Ok(());
    };
    let what = || format!("mask {}", mask.path.display());
    if !meta.is_dir() {
        return mount(Some("/dev/null"), &target, NONE, MsFlags::MS_BIND, NONE).what(what);
    }
    fs::create_dir(empty).what(what)?;
    fs::set_permissions(empty, fs::Permissions::from_mode(meta.mode() & 0o7777)).what(what)?;
    mount(Some(empty), &target, NONE, MsFlags::MS_BIND, NONE).what(what)?;
    if !mask.writable {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | NO_SET_ID;
        mount(NONE, &target, NONE, flags, NONE).what(what)?;
    }
    Ok(())
}

/// Shows the host's `path` read-only at the same place, making its mount point if a mask above it left none.
fn attach_host_path(
    root: &Path,
    path: &Path,
    idmapped: Option<&OwnedFd>,
) -> Result<(), SetupError> {
    let target = inside(root, path);
    let what = || format!("show the host path {} (host_paths)", path.display());
    let is_dir = match idmapped {
        Some(mount) => {
            nix::sys::stat::fstat(mount.as_fd()).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR)
        }
        None => nix::sys::stat::stat(path).map(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR),
    }
    .what(what)?;
    if fs::symlink_metadata(&target).is_err() {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).what(what)?;
        }
        if is_dir {
            fs::create_dir(&target).what(what)?;
        } else {
            fs::File::create(&target).what(what)?;
        }
    }
    match idmapped {
        // Made read-only, nosuid and nodev with its id map (see `userns::idmapped_clone`).
        Some(mount) => userns::attach(mount.as_fd(), &target).what(what),
        None => {
            mount(Some(path), &target, NONE, MsFlags::MS_BIND, NONE).what(what)?;
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | NO_SET_ID;
            mount(NONE, &target, NONE, flags, NONE).what(what)
        }
    }
}
