//! Images (docs/container.md), behind one interface: [`ImageStore::resolve`] turns a job's `image:` (grammar in
//! [`gantry_model::image`]) into the read-only layers of its root file system and the config its steps run
//! with. Kinds: `host` (no layers: the runtime overlays the host's `/`), a root file system directory, an OCI
//! image layout on disk, and a registry reference. Layouts and registries go through one content-addressed
//! store (see [`store`]) where each layer is unpacked once and then shared by every container using it.

mod config;
mod layout;
mod registry;
mod store;
pub mod unpack;

pub use config::ImageConfig;
pub use registry::RegistryConfig;

use gantry_model::{ImageRef, RegistryRef};
use oci_client::manifest::OciImageManifest;
use std::path::{Path, PathBuf};

/// Why an image could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry refused or could not be reached.
    #[error("cannot pull {image}: {message}")]
    Pull {
        /// The reference, normalized.
        image: String,
        /// The registry's answer, or the transport error.
        message: String,
        /// The registry could not be reached at all (a cached resolution may stand in).
        offline: bool,
    },
    /// The image, its layout or its content is unusable.
    #[error("{0}")]
    Invalid(String),
    /// A layer failed to unpack (or was refused as hostile).
    #[error(transparent)]
    Unpack(#[from] unpack::UnpackError),
    /// A file operation of the store failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// How the worker's images are set up.
#[derive(Clone, Debug, Default)]
pub struct ImageOptions {
    /// The worker's data dir; the store lives in its `layers/` and `images/`.
    pub data_dir: PathBuf,
    /// Credentials and transport per registry.
    pub registries: Vec<RegistryConfig>,
    /// Host directories under which `dir:` and `oci:` images may be; none means local images are refused (a
    /// pipeline must not be able to make `/` or `/etc` its image and read the host's secrets unmasked).
    pub local_dirs: Vec<PathBuf>,
    /// Bytes one layer may unpack to (its uncompressed tar), counted while it is unpacked: a gzip bomb stops
    /// there. None: [`DEFAULT_MAX_LAYER_BYTES`].
    pub max_layer_bytes: Option<u64>,
}

/// 16 GiB: more than the largest layers of common images (CUDA's are a few GiB), far less than a disk.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 16 << 30;

/// An image ready to be a container's root file system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Read-only layers, lowest first; empty for `host`.
    pub layers: Vec<PathBuf>,
    /// What the image's config asks for.
    pub config: ImageConfig,
    /// The manifest digest, for the log (none for `host` and directories).
    pub digest: Option<String>,
}

/// Resolves and pulls images; one per worker, shared by its jobs.
#[derive(Debug)]
pub struct ImageStore {
    store: store::Store,
    registries: registry::Registries,
    local_dirs: Vec<PathBuf>,
}

/// Media types a layer may have; anything else is an artifact, not a container image.
fn is_layer(media_type: &str) -> bool {
    media_type.contains(".layer.") || media_type.contains(".rootfs.")
}

impl ImageStore {
    /// Opens the store under the data dir (sweeping half-done unpacks) and checks the local image dirs.
    pub fn open(options: ImageOptions) -> Result<ImageStore, ImageError> {
        let max_layer_bytes = options.max_layer_bytes.unwrap_or(DEFAULT_MAX_LAYER_BYTES);
        let store = store::Store::open(&options.data_dir, max_layer_bytes)?;
        let local_dirs = options
            .local_dirs
            .iter()
            .filter_map(|dir| match dir.canonicalize() {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "ignoring a local image dir");
                    None
                }
            })
            .collect();
        Ok(ImageStore {
            store,
            registries: registry::Registries::new(options.registries),
            local_dirs,
        })
    }

    /// Makes `image` ready: parses it, pulls what is missing (once, whoever else asks meanwhile), and says
    /// which layers to mount and how to run in them.
    pub async fn resolve(&self, image: &str) -> Result<ResolvedImage, ImageError> {
        match ImageRef::parse(image).map_err(ImageError::Invalid)? {
            ImageRef::Host => Ok(ResolvedImage::default()),
            ImageRef::Dir(path) => Ok(ResolvedImage {
                layers: vec![self.local(&path)?],
                ..ResolvedImage::default()
            }),
            ImageRef::OciLayout { path, reference } => {
                let dir = self.local(&path)?;
                let (manifest, digest) = {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || layout::manifest(&dir, &reference))
                        .await
                        .map_err(|e| {
                            ImageError::Invalid(format!("the layout task failed: {e}"))
                        })??
                };
                let config = layout::read_blob(&dir, &manifest.config.digest)?;
                self.assemble(&manifest, digest, &config, |descriptor, _| {
                    let blob = layout::blob_path(&dir, &descriptor.digest);
                    async move { blob }
                })
                .await
            }
            ImageRef::Registry(reference) => self.pull(&reference).await,
        }
    }

    async fn pull(&self, image: &RegistryRef) -> Result<ResolvedImage, ImageError> {
        let key = image.to_string();
        // A pinned digest never changes: once pulled, the registry need not be asked again.
        let cached = image
            .digest
            .as_ref()
            .and_then(|_| self.cached_manifest(&key));
        let (manifest, digest) = match cached {
            Some(found) => found,
            None => match self.registries.manifest(image).await {
                Ok((manifest, digest)) => {
                    self.store.put_ref(&key, &(&digest, &manifest));
                    (manifest, digest)
                }
                // A registry that is down should not stop jobs on images this worker already has.
                Err(e @ ImageError::Pull { offline: true, .. }) => {
                    let (manifest, digest) = self.cached_manifest(&key).ok_or(e)?;
                    tracing::warn!(%image, %digest, "registry unreachable; using the image as last pulled");
                    (manifest, digest)
                }
                Err(e) => return Err(e),
            },
        };
        let config = self
            .store
            .blob(&manifest.config.digest, || {
                self.registries.blob(image, &manifest.config)
            })
            .await?;
        self.assemble(&manifest, digest, &config, |descriptor, path| async move {
            self.registries.download(image, descriptor, &path).await?;
            Ok(path)
        })
        .await
    }

    fn cached_manifest(&self, key: &str) -> Option<(OciImageManifest, String)> {
        let (digest, manifest) = self.store.get_ref(key)?;
        Some((manifest, digest))
    }

    /// Gets every layer of `manifest` into the store (concurrently) and builds the result.
    async fn assemble<'a, F, Fut>(
        &'a self,
        manifest: &'a OciImageManifest,
        digest: String,
        config: &[u8],
        fetch: F,
    ) -> Result<ResolvedImage, ImageError>
    where
        F: Fn(&'a oci_client::manifest::OciDescriptor, PathBuf) -> Fut + Copy,
        Fut: std::future::Future<Output = Result<PathBuf, ImageError>>,
    {
        let parsed = config::parse_config(config)?;
        // The runtime takes a root of no layers for the host's own `/`: an image must not get that by being
        // empty (a fork's pull request, refused `image: host`, could name one).
        if manifest.layers.is_empty() {
            return Err(ImageError::Invalid(format!(
                "{digest} has no layers: an image needs at least one (its files are the job's root)"
            )));
        }
        if let Some(bad) = manifest.layers.iter().find(|l| !is_layer(&l.media_type)) {
            return Err(ImageError::Invalid(format!(
                "{digest} is not a container image: it has a {} layer",
                bad.media_type
            )));
        }
        if !parsed.diff_ids.is_empty() && parsed.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Invalid(format!(
                "{digest} lists {} layers but its config {}",
                manifest.layers.len(),
                parsed.diff_ids.len()
            )));
        }
        let layers = manifest.layers.iter().enumerate().map(|(i, descriptor)| {
            let diff_id = parsed.diff_ids.get(i).map(String::as_str);
            self.store.layer(&descriptor.digest, diff_id, move |path| {
                fetch(descriptor, path)
            })
        });
        let layers = futures::future::try_join_all(layers).await?;
        Ok(ResolvedImage {
            layers,
            config: parsed.config,
            digest: Some(digest),
        })
    }

    /// The canonical path of a local image, if it is under one of the allowed dirs.
    fn local(&self, path: &Path) -> Result<PathBuf, ImageError> {
        let real = path.canonicalize().map_err(|source| ImageError::Io {
            what: "find the image",
            path: path.to_owned(),
            source,
        })?;
        if self.local_dirs.iter().any(|dir| real.starts_with(dir)) {
            return Ok(real);
        }
        Err(ImageError::Invalid(format!(
            "{} is not under a local image dir of this worker (config: [worker] image_dirs = [...]; now: {:?})",
            path.display(),
            self.local_dirs
        )))
    }
}
