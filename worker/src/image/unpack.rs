//! Unpacks one layer (a tar, plain or gzip) into a fresh directory that becomes an overlayfs lower dir, so that
//! a hostile tar never touches anything outside that directory:
//! - `..` anywhere in a path or a hardlink target refuses the layer (no real image needs it); a leading `/` is
//!   dropped, as Docker does, so absolute paths land inside the layer;
//! - nothing is ever written through a symlink: every parent directory is checked with `lstat` (a symlink
//!   there refuses the layer), and an existing entry is unlinked before its replacement is created with
//!   `O_EXCL`, which does not follow a symlink left in its place;
//! - hardlinks may only point at files of this same layer, reached without symlinks;
//! - device nodes are skipped (a job has no business with the host's disks); FIFOs are kept;
//! - extended attributes in the tar are ignored, so a layer cannot plant `trusted.overlay.*` redirects.
//!
//! Whiteouts become what overlayfs understands in a lower dir: `.wh.NAME` a character device 0:0 named
//! NAME, `.wh..wh..opq` the `trusted.overlay.opaque=y` and `user.overlay.opaque=y` xattrs on its directory. Keeping layers separate (rather
//! than flattening each image into one tree) is what lets images that share base layers share their unpacked
//! copies, and overlayfs merges them at mount time at no cost.
//!
//! Both digests are computed on the way: the blob's (the layer's name in the manifest) and the uncompressed
//! tar's (the config's `diff_id`); the caller compares them before the directory is renamed into the store.

use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer holds an entry that would reach outside its directory.
    #[error("refused layer entry {entry:?}: {reason}")]
    Refused {
        /// The entry's path as the tar spells it.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The layer is not a tar we can read.
    #[error("unreadable layer: {0}")]
    Format(String),
    /// The layer unpacks to more than the worker allows (a gzip bomb, or an image too big for it).
    #[error(
        "the layer unpacks to more than {limit} bytes (the worker's max_layer_bytes); unpacking stopped there"
    )]
    TooLarge {
        /// The worker's `max_layer_bytes`.
        limit: u64,
    },
    /// Writing the unpacked tree failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The digests of what was unpacked, as `sha256:HEX`.
#[derive(Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// Of the blob as stored (compressed or not).
    pub blob_digest: String,
    /// Of the uncompressed tar.
    pub diff_id: String,
}

/// Unpacks `blob` into `dest` (an existing, empty directory of ours), refusing it once its uncompressed tar
/// passes `max_bytes`. Returns the digests it computed.
pub fn unpack(blob: impl Read, dest: &Path, max_bytes: u64) -> Result<Unpacked, UnpackError> {
    let mut input = BufReader::new(Hashing::new(blob));
    let head = input.fill_buf().map_err(format_error)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(UnpackError::Format(
            "zstd-compressed layers are not supported; push the image with gzip layers".into(),
        ));
    }
    let diff_id = {
        let decoded: Box<dyn Read + '_> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(&mut input))
        } else {
            Box::new(&mut input)
        };
        let mut tar_stream = Hashing::new(decoded);
        tar_stream.limit = max_bytes;
        let unpacked = (|| {
            let mut unpacker = Unpacker::new(dest);
            for entry in tar::Archive::new(&mut tar_stream)
                .entries()
                .map_err(format_error)?
            {
                unpacker.entry(&mut entry.map_err(format_error)?)?;
            }
            unpacker.finish()?;
            // The digest covers every byte, including the padding after the tar's end-of-archive blocks.
            io::copy(&mut tar_stream, &mut io::sink()).map_err(format_error)?;
            Ok(())
        })();
        // Past the limit, the read failed, and whatever error that caused is the limit's.
        if tar_stream.count > max_bytes {
            return Err(UnpackError::TooLarge { limit: max_bytes });
        }
        unpacked?;
        tar_stream.finish()
    };
    io::copy(&mut input, &mut io::sink()).map_err(format_error)?;
    Ok(Unpacked {
        blob_digest: input.into_inner().finish(),
        diff_id,
    })
}

fn format_error(e: io::Error) -> UnpackError {
    UnpackError::Format(e.to_string())
}

/// A reader that hashes and counts what passes through it, and fails once more than `limit` bytes did.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit: u64::MAX,
        }
    }

    fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other("over the size limit"));
        }
        Ok(n)
    }
}

/// A directory's metadata, applied once every entry is written (a read-only directory must still be filled).
struct DirMeta {
    path: Vec<OsString>,
    mode: u32,
    owner: Option<(u32, u32)>,
}

struct Unpacker<'a> {
    root: &'a Path,
    /// Only root can give files away; unit tests run unprivileged and skip ownership.
    chown: bool,
    dirs: Vec<DirMeta>,
}

fn refused(entry: &str, reason: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError {
    let path = path.to_owned();
    move |source| UnpackError::Io { what, path, source }
}

/// A tar path as components below the layer's root; `..` refuses the entry, a leading `/` or `.` is dropped.
fn components(raw: &Path, shown: &str) -> Result<Vec<OsString>, UnpackError> {
    let mut parts = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_owned()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => return Err(refused(shown, "the path contains `..`")),
            Component::Prefix(_) => return Err(refused(shown, "not a Unix path")),
        }
    }
    Ok(parts)
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Self {
        Self {
            root,
            chown: nix::unistd::geteuid().is_root(),
            dirs: Vec::new(),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path().map_err(format_error)?.into_owned();
        let shown = raw.to_string_lossy().into_owned();
        let mut parts = components(&raw, &shown)?;
        let header = entry.header();
        let kind = header.entry_type();
        // No set-id file leaves a layer: the layer store is on the host's disk, where a setuid-root file is a
        // way to root for any host user who reaches it, and in a job `no_new_privs` ignores the bits anyway. A
        // directory's setgid bit only passes its group on, and the sticky bit (`/tmp`) stays.
        let keep = if kind.is_dir() { 0o7777 } else { 0o1777 };
        let mode = header.mode().map_err(format_error)? & keep;
        let owner = match (header.uid(), header.gid()) {
            (Ok(uid), Ok(gid)) => u32::try_from(uid).ok().zip(u32::try_from(gid).ok()),
            _ => None,
        };
        let Some(name) = parts.pop() else {
            // The layer's root itself (`./`): only its metadata matters.
            if kind.is_dir() {
                self.dirs.push(DirMeta {
                    path: Vec::new(),
                    mode,
                    owner,
                });
            }
            return Ok(());
        };
        let parent = self.walk(&parts, &shown, true)?;
        let name_text = name.to_string_lossy();
        if let Some(hidden) = name_text.strip_prefix(".wh.") {
            return self.whiteout(&parent, hidden, &shown);
        }
        let path = parent.join(&name);
        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !self.clear(&path, true)? {
                    fs::create_dir(&path).map_err(io_error("create directory", &path))?;
                }
                parts.push(name);
                self.dirs.push(DirMeta {
                    path: parts,
                    mode,
                    owner,
                });
            }
            T::Regular | T::Continuous => {
                self.clear(&path, false)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_error("create", &path))?;
                io::copy(entry, &mut file).map_err(io_error("write", &path))?;
                self.finish_file(&file, &path, mode, owner)?;
                if let Ok(mtime) = entry.header().mtime() {
                    let _ = file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime));
                }
            }
            T::Symlink => {
                // The target is only ever followed inside the container, where `/` is the image's root.
                let target = entry
                    .link_name()
                    .map_err(format_error)?
                    .ok_or_else(|| refused(&shown, "a symlink without a target"))?;
                self.clear(&path, false)?;
                std::os::unix::fs::symlink(&target, &path).map_err(io_error("symlink", &path))?;
                if let Some((uid, gid)) = owner.filter(|_| self.chown) {
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                        .map_err(io_error("chown", &path))?;
                }
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(format_error)?
                    .ok_or_else(|| refused(&shown, "a hardlink without a target"))?;
                let mut target_parts = components(&target, &shown)?;
                let target_name = target_parts
                    .pop()
                    .ok_or_else(|| refused(&shown, "a hardlink to the layer's root"))?;
                let target_path = self.walk(&target_parts, &shown, false)?.join(target_name);
                match fs::symlink_metadata(&target_path) {
                    Ok(meta) if !meta.is_dir() => {}
                    _ => {
                        return Err(refused(
                            &shown,
                            format!(
                                "hardlink to {}, which is not a file of this layer",
                                target.display()
                            ),
                        ));
                    }
                }
                if target_path != path {
                    self.clear(&path, false)?;
                    fs::hard_link(&target_path, &path).map_err(io_error("hardlink", &path))?;
                }
            }
            T::Fifo => {
                self.clear(&path, false)?;
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(mode))
                    .map_err(|e| io_error("mkfifo", &path)(e.into()))?;
                if let Some((uid, gid)) = owner.filter(|_| self.chown) {
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                        .map_err(io_error("chown", &path))?;
                }
            }
            T::Char | T::Block => {
                tracing::warn!(entry = %shown, "skipping a device node in an image layer");
            }
            // PAX global headers and the like carry nothing to write.
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping a tar entry of no use in a layer");
            }
        }
        Ok(())
    }

    /// Gives a new file its owner, then its mode (chown clears set-id bits, so the order matters).
    fn finish_file(
        &self,
        file: &File,
        path: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), UnpackError> {
        if let Some((uid, gid)) = owner.filter(|_| self.chown) {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))
                .map_err(io_error("chown", path))?;
        }
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error("chmod", path))
    }

    /// The directory `parts` below the root, checked component by component with `lstat`: a symlink or a
    /// non-directory on the way refuses the entry; missing directories are made when `create`.
    fn walk(&self, parts: &[OsString], shown: &str, create: bool) -> Result<PathBuf, UnpackError> {
        let mut path = self.root.to_owned();
        for part in parts {
            path.push(part);
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(refused(
                        shown,
                        format!("it goes through the symlink {:?}", part),
                    ));
                }
                Ok(_) => return Err(refused(shown, format!("{part:?} is not a directory"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::create_dir(&path).map_err(io_error("create directory", &path))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(refused(shown, format!("{part:?} is not in this layer")));
                }
                Err(e) => return Err(io_error("look up", &path)(e)),
            }
        }
        Ok(path)
    }

    /// Removes what is at `path` so that a new entry can take its place; keeps (and returns true for) an
    /// existing directory when the new entry is one too, as tar does.
    fn clear(&self, path: &Path, keep_dir: bool) -> Result<bool, UnpackError> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() && keep_dir => Ok(true),
            // remove_dir_all never follows symlinks, not even one that replaced a directory meanwhile.
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(path)
                .map(|_| false)
                .map_err(io_error("remove", path)),
            Ok(_) => fs::remove_file(path)
                .map(|_| false)
                .map_err(io_error("remove", path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("look up", path)(e)),
        }
    }

    /// `.wh.NAME` in `parent`: NAME is deleted from the layers below (or, for `.wh..opq`, all of `parent`'s
    /// contents from below are).
    fn whiteout(&self, parent: &Path, hidden: &str, shown: &str) -> Result<(), UnpackError> {
        if hidden == ".wh..opq" {
            // trusted.* for overlays mounted in the host's user namespace, user.* for those mounted with
            // `userxattr` inside a container's own (which cannot read trusted.*).
            for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
                xattr::set(parent, name, b"y").map_err(io_error("mark opaque", parent))?;
            }
            return Ok(());
        }
        if hidden.starts_with(".wh.") {
            // AUFS's own bookkeeping (`.wh..wh.plnk` and the like): nothing for overlayfs.
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(refused(shown, "a whiteout of no name"));
        }
        let path = parent.join(hidden);
        self.clear(&path, false)?;
        nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(|e| io_error("create the whiteout", &path)(e.into()))
    }

    /// Applies directory modes and owners, deepest first, opening each without following symlinks.
    fn finish(mut self) -> Result<(), UnpackError> {
        self.dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
        for dir in &self.dirs {
            let shown = PathBuf::from_iter(&dir.path).to_string_lossy().into_owned();
            let Some((name, parents)) = dir.path.split_last() else {
                self.apply_dir(self.root, dir)?;
                continue;
            };
            // A later entry may have replaced the directory (or a parent) with something else.
            let Ok(parent) = self.walk(parents, &shown, false) else {
                continue;
            };
            let path = parent.join(name);
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                self.apply_dir(&path, dir)?;
            }
        }
        Ok(())
    }

    fn apply_dir(&self, path: &Path, dir: &DirMeta) -> Result<(), UnpackError> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_error("open directory", path))?;
        self.finish_file(&file, path, dir.mode, dir.owner)
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
