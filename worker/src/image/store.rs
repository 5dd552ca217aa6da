//! The content-addressed store under the worker's data dir:
//!
//! ```text
//! layers/sha256/HEX/        one unpacked layer, named by its blob digest; an overlayfs lower dir, never changed
//! layers/tmp/HEX-UUID[.blob] a layer being downloaded or unpacked (renamed into place once verified)
//! layers/locks/HEX          flock files: one writer per digest across the worker processes of a host
//! images/blobs/sha256/HEX   image configs, kept whole
//! images/refs/SHA256(REF)   the manifest (and its digest) a reference last resolved to: a pinned digest is
//!                           not asked again, and a tag still runs while its registry is down
//! ```
//!
//! A layer is unpacked once: a per-digest async lock makes concurrent jobs of one worker wait for the first
//! one's download, a file lock does the same across workers sharing the dir, and whoever gets the lock second
//! finds the finished directory and uses it.

use super::ImageError;
use super::unpack::{self, Unpacked};
use oci_client::manifest::OciImageManifest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The hex part of a `sha256:` digest, checked before it becomes a path (a registry's manifest could say
/// anything).
pub(crate) fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::Invalid(format!(
            "unsupported digest {digest:?} (only sha256 is)"
        ))),
    }
}

/// `sha256:HEX` of `data`.
pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The layer and blob store of one worker data dir.
#[derive(Debug)]
pub(crate) struct Store {
    root: PathBuf,
    /// Bytes one layer may unpack to.
    max_layer_bytes: u64,
    /// One async lock per digest being fetched; entries go when nobody waits on them any more.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io { what, path, source }
}

impl Store {
    /// Opens (creating) the store under `data_dir` and removes unpacks that a killed worker left half done.
    pub(crate) fn open(data_dir: &Path, max_layer_bytes: u64) -> Result<Store, ImageError> {
        let store = Store {
            root: data_dir.to_owned(),
            max_layer_bytes,
            inflight: Mutex::default(),
        };
        for dir in ["layers", "images"] {
            let path = store.root.join(dir);
            crate::private_dir(&path).map_err(io("create", &path))?;
        }
        for dir in [
            "layers/sha256",
            "layers/tmp",
            "layers/locks",
            "images/blobs/sha256",
            "images/refs",
        ] {
            let path = store.root.join(dir);
            std::fs::create_dir_all(&path).map_err(io("create", &path))?;
        }
        store.sweep_tmp();
        Ok(store)
    }

    /// Removes temporary downloads and unpacks whose digest nobody holds the lock of (so never another live
    /// worker's).
    fn sweep_tmp(&self) {
        let tmp = self.root.join("layers/tmp");
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.split('-').next().unwrap_or_default();
            let lock = self.root.join("layers/locks").join(hex);
            let held = std::fs::File::open(&lock).ok().map(|file| {
                nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            });
            if matches!(held, Some(Err(_))) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a stale layer unpack");
            }
        }
    }

    /// Where the layer with blob `digest` lives once unpacked.
    pub(crate) fn layer_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self.root.join("layers/sha256").join(digest_hex(digest)?))
    }

    /// The unpacked layer `digest`, fetched and unpacked first if missing. `fetch` is given a path to
    /// download to and returns the path of the blob (that one, or a file that already exists, as in an OCI
    /// layout); a downloaded file is removed afterwards. The blob must hash to `digest` and, when given, its
    /// tar to `diff_id`.
    pub(crate) async fn layer<F, Fut>(
        &self,
        digest: &str,
        diff_id: Option<&str>,
        fetch: F,
    ) -> Result<PathBuf, ImageError>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<PathBuf, ImageError>>,
    {
        let dir = self.layer_dir(digest)?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let hex = digest_hex(digest)?.to_owned();
        let guard = self.exclusive(&hex).await?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let unique = uuid::Uuid::now_v7().simple();
        let download = RemovedOnDrop(self.root.join(format!("layers/tmp/{hex}-{unique}.blob")));
        let blob = fetch(download.0.clone()).await?;
        let unpack = Unpack {
            blob,
            tmp: self.root.join(format!("layers/tmp/{hex}-{unique}")),
            dir: dir.clone(),
            digest: digest.to_owned(),
            diff_id: diff_id.map(str::to_owned),
            max_bytes: self.max_layer_bytes,
        };
        // The unpack owns the locks and the download: if this future is dropped (a sibling layer failed, the
        // job was cancelled), the unpack still ends by moving its directory into place or removing it, and no
        // other unpack of the digest starts before it has.
        tokio::task::spawn_blocking(move || {
            let _held = (guard, download);
            unpack.run()
        })
        .await
        .map_err(|e| ImageError::Invalid(format!("the unpack task failed: {e}")))??;
        Ok(dir)
    }

    /// A small blob (an image config) from the store, or fetched (once, like layers), verified and stored.
    pub(crate) async fn blob<F, Fut>(&self, digest: &str, fetch: F) -> Result<Vec<u8>, ImageError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, ImageError>>,
    {
        if let Some(data) = self.cached_blob(digest)? {
            return Ok(data);
        }
        let _guard = self.exclusive(digest_hex(digest)?).await?;
        if let Some(data) = self.cached_blob(digest)? {
            return Ok(data);
        }
        let data = fetch().await?;
        self.put_blob(digest, &data)?;
        Ok(data)
    }

    /// A stored blob, if present and intact.
    pub(crate) fn cached_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let path = self
            .root
            .join("images/blobs/sha256")
            .join(digest_hex(digest)?);
        Ok(std::fs::read(&path)
            .ok()
            .filter(|data| sha256(data) == digest))
    }

    /// Stores `data` under `digest` after checking it (write to a temp name, then rename: never a torn blob).
    pub(crate) fn put_blob(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        let actual = sha256(data);
        if actual != digest {
            return Err(ImageError::Invalid(format!(
                "blob {digest} has digest {actual} (corrupt or tampered with)"
            )));
        }
        let path = self
            .root
            .join("images/blobs/sha256")
            .join(digest_hex(digest)?);
        let tmp = path.with_extension(uuid::Uuid::now_v7().simple().to_string());
        std::fs::write(&tmp, data).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("move into place", &path))
    }

    /// Remembers what `reference` resolved to (its manifest and that manifest's digest).
    pub(crate) fn put_ref(&self, reference: &str, resolved: &(&String, &OciImageManifest)) {
        let path = self.ref_path(reference);
        let tmp = path.with_extension(uuid::Uuid::now_v7().simple().to_string());
        let json = serde_json::to_vec(resolved).unwrap_or_default();
        let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot remember an image reference");
        }
    }

    /// What `reference` last resolved to: the manifest's digest and the manifest.
    pub(crate) fn get_ref(&self, reference: &str) -> Option<(String, OciImageManifest)> {
        let json = std::fs::read(self.ref_path(reference)).ok()?;
        serde_json::from_slice(&json).ok()
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let name = &sha256(reference.as_bytes())["sha256:".len()..];
        self.root.join("images/refs").join(name)
    }

    /// Holds the in-process lock and then the file lock of `hex` until dropped.
    async fn exclusive(&self, hex: &str) -> Result<Exclusive, ImageError> {
        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight.entry(hex.to_owned()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let path = self.root.join("layers/locks").join(hex);
        let file = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io("open the lock file", &path))?;
            nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| io("lock", &path)(e.into()))
        })
        .await
        .map_err(|e| ImageError::Invalid(format!("the lock task failed: {e}")))??;
        Ok(Exclusive {
            _file: file,
            _local: local,
        })
    }
}

/// A file removed when dropped: a download cut short leaves nothing in `layers/tmp`.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One layer blob to unpack, check and move into place, on a blocking thread.
struct Unpack {
    blob: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
    digest: String,
    diff_id: Option<String>,
    max_bytes: u64,
}

impl Unpack {
    /// Unpacks into `tmp`, checks the digests and renames `tmp` to `dir`; `tmp` is removed on any failure.
    fn run(self) -> Result<(), ImageError> {
        let placed = self.unpack_and_check().and_then(|()| {
            std::fs::rename(&self.tmp, &self.dir).map_err(io("move into place", &self.dir))
        });
        if placed.is_err() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        placed
    }

    fn unpack_and_check(&self) -> Result<(), ImageError> {
        std::fs::create_dir(&self.tmp).map_err(io("create", &self.tmp))?;
        let file = std::fs::File::open(&self.blob).map_err(io("open", &self.blob))?;
        let unpacked: Unpacked = unpack::unpack(file, &self.tmp, self.max_bytes)?;
        let digest = &self.digest;
        if unpacked.blob_digest != *digest {
            return Err(ImageError::Invalid(format!(
                "layer {digest} has digest {} (corrupt or tampered with)",
                unpacked.blob_digest
            )));
        }
        match &self.diff_id {
            Some(expected) if *expected != unpacked.diff_id => Err(ImageError::Invalid(format!(
                "layer {digest} unpacks to {} but the image config says {expected}",
                unpacked.diff_id
            ))),
            _ => Ok(()),
        }
    }
}

/// Both locks of one digest, released when dropped. The in-process lock stays in the map afterwards: one
/// small entry per layer this worker ever fetched, which costs less than the bookkeeping to remove it safely.
struct Exclusive {
    _file: nix::fcntl::Flock<std::fs::File>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).unwrap();
        builder.into_inner().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_for_a_layer_fetch_it_once() {
        let data_dir = tempfile::tempdir().unwrap();
        let store = Store::open(data_dir.path(), u64::MAX).unwrap();
        let blob = tar_with("hello", b"world");
        let digest = sha256(&blob);
        let fetches = AtomicUsize::new(0);
        let fetch = |path: PathBuf| {
            let (blob, fetches) = (&blob, &fetches);
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                std::fs::write(&path, blob).unwrap();
                Ok(path)
            }
        };
        let all =
            futures::future::join_all((0..8).map(|_| store.layer(&digest, None, fetch))).await;
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let dir = store.layer_dir(&digest).unwrap();
        for result in all {
            assert_eq!(result.unwrap(), dir);
        }
        assert_eq!(std::fs::read(dir.join("hello")).unwrap(), b"world");
        let tmp = std::fs::read_dir(data_dir.path().join("layers/tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "temporary files left behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_layer_dropped_while_it_downloads_or_unpacks_leaves_nothing_half_done() {
        let data_dir = tempfile::tempdir().unwrap();
        let store = Store::open(data_dir.path(), u64::MAX).unwrap();
        let tmp_entries = || {
            std::fs::read_dir(data_dir.path().join("layers/tmp"))
                .unwrap()
                .count()
        };
        let blob = tar_with("big", &vec![7u8; 32 << 20]);
        let digest = sha256(&blob);

        // Dropped mid-download: the partial file goes at once.
        let stalled = store.layer(&digest, None, |path| async move {
            std::fs::write(&path, b"half a blob").unwrap();
            std::future::pending::<()>().await;
            Ok(path)
        });
        let cut = tokio::time::timeout(std::time::Duration::from_millis(50), stalled).await;
        assert!(cut.is_err());
        assert_eq!(tmp_entries(), 0, "a cut download was left behind");

        // Dropped as soon as the download is done, so while it unpacks: the unpack still finishes and
        // moves into place, and meanwhile nobody else starts one.
        let (downloaded, mut told) = tokio::sync::mpsc::unbounded_channel();
        let (blob_ref, downloaded) = (&blob, &downloaded);
        tokio::select! {
            _ = store.layer(&digest, None, |path| async move {
                std::fs::write(&path, blob_ref).unwrap();
                downloaded.send(()).unwrap();
                Ok(path)
            }) => panic!("the unpack was expected to outlast the download"),
            _ = told.recv() => {}
        }
        let again = store
            .layer(&digest, None, |_| async { panic!("fetched twice") })
            .await
            .unwrap();
        assert_eq!(std::fs::read(again.join("big")).unwrap().len(), 32 << 20);
        assert_eq!(tmp_entries(), 0, "an unpack was left behind");
    }

    #[tokio::test]
    async fn a_blob_that_does_not_match_its_digest_is_refused_and_leaves_nothing() {
        let data_dir = tempfile::tempdir().unwrap();
        let store = Store::open(data_dir.path(), u64::MAX).unwrap();
        let digest = sha256(b"something else");
        let blob = tar_with("x", b"y");
        let err = store
            .layer(&digest, None, |path| async {
                std::fs::write(&path, &blob).unwrap();
                Ok(path)
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("tampered"), "{err}");
        assert!(!store.layer_dir(&digest).unwrap().exists());
        let tmp = std::fs::read_dir(data_dir.path().join("layers/tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "temporary files left behind");
        let err = store
            .layer("sha256:../../etc", None, |p| async { Ok(p) })
            .await;
        assert!(err.is_err(), "a digest that is a path must be refused");
    }
}
