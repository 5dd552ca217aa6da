//! Artifacts: the bytes live in an object store (docs/data-model.md: a directory under the data dir by default; the
//! `object_store` crate serves S3-compatible stores the same way), the index in the [`Store`]. An upload is
//! streamed to the object store, hashed and counted on the way, refused past the job's limit or when its
//! checksum is wrong, and indexed only while the uploader's lease is still the job's lease.

use crate::store::{ArtifactQuota, NewArtifact, Store, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt, stream::BoxStream};
use gantry_model::wire::ArtifactRef;
use object_store::local::LocalFileSystem;
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use uuid::Uuid;

/// Parts written to the object store at once while an upload streams in.
const UPLOAD_CONCURRENCY: usize = 4;

/// What can go wrong moving artifacts.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The path is not a plain relative path.
    #[error("{0}")]
    BadPath(String),
    /// The upload would take the attempt's artifacts past the limit.
    #[error(
        "the job's artifacts would exceed the limit of {limit} bytes (already uploaded: {used} bytes)"
    )]
    TooLarge {
        /// The limit per attempt.
        limit: u64,
        /// What the attempt had uploaded before this file.
        used: u64,
    },
    /// The bytes that arrived are not the bytes that were sent.
    #[error(
        "checksum mismatch for {path}: the upload said sha256 {expected}, the bytes received hash to {actual}"
    )]
    Checksum {
        /// The artifact's path.
        path: String,
        /// What the uploader said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The request body broke off.
    #[error("the upload broke off: {0}")]
    Body(String),
    /// No such artifact.
    #[error("job {job} has no artifact {path:?}")]
    NotFound {
        /// The job.
        job: Uuid,
        /// The path asked for.
        path: String,
    },
    /// The object store failed.
    #[error("artifact store: {0}")]
    Objects(#[from] object_store::Error),
    /// The index failed, or the lease is stale.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An upload's claims about itself, checked against what arrives.
#[derive(Clone, Debug)]
pub struct Upload {
    /// Relative path in the workspace.
    pub path: String,
    /// Permission bits (only `0o777` is kept).
    pub mode: u32,
    /// Hex SHA-256 the bytes must hash to.
    pub sha256: String,
}

/// The artifacts of every job: object store plus index.
#[derive(Clone)]
pub struct Artifacts {
    objects: Arc<dyn ObjectStore>,
    store: Arc<dyn Store>,
    limit_bytes: u64,
}

fn key(job: Uuid, attempt: u32, path: &str) -> ObjectPath {
    // Each component is escaped by the object store's own rules, so any valid artifact path is one key.
    let parts = [job.simple().to_string(), attempt.to_string()]
        .into_iter()
        .map(PathPart::from)
        .chain(path.split('/').map(|c| PathPart::from(c.to_owned())));
    ObjectPath::from_iter(parts)
}

impl Artifacts {
    /// Artifacts kept in `dir` (created if needed), at most `limit_bytes` per job attempt.
    pub fn local(
        dir: &std::path::Path,
        store: Arc<dyn Store>,
        limit_bytes: u64,
    ) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ArtifactError::Objects(object_store::Error::Generic {
                store: "local",
                source: Box::new(e),
            })
        })?;
        let objects = LocalFileSystem::new_with_prefix(dir)?;
        Ok(Self {
            objects: Arc::new(objects),
            store,
            limit_bytes,
        })
    }

    /// The most bytes of artifacts one attempt of a job may upload.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Streams an upload into the object store and indexes it under the job's current attempt.
    pub async fn upload<E: std::fmt::Display>(
        &self,
        job: Uuid,
        lease: Uuid,
        upload: Upload,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<ArtifactRef, ArtifactError> {
        gantry_model::artifact::check_path(&upload.path).map_err(ArtifactError::BadPath)?;
        let ArtifactQuota {
            attempt,
            used_bytes: used,
        } = self.store.artifact_quota(job, lease).await?;
        let location = key(job, attempt, &upload.path);
        let mut writer = WriteMultipart::new(self.objects.put_multipart(&location).await?);
        let (mut size, mut hasher) = (0u64, Sha256::new());
        tokio::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    writer.abort().await?;
                    return Err(ArtifactError::Body(e.to_string()));
                }
            };
            size += chunk.len() as u64;
            if used + size > self.limit_bytes {
                writer.abort().await?;
                return Err(ArtifactError::TooLarge {
                    limit: self.limit_bytes,
                    used,
                });
            }
            hasher.update(&chunk);
            writer.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
            writer.put(chunk);
        }
        let actual = hex::encode(hasher.finalize());
        if !actual.eq_ignore_ascii_case(upload.sha256.trim()) {
            writer.abort().await?;
            return Err(ArtifactError::Checksum {
                path: upload.path,
                expected: upload.sha256,
                actual,
            });
        }
        writer.finish().await?;
        let artifact = NewArtifact {
            path: upload.path,
            size,
            sha256: actual,
            mode: upload.mode & 0o777,
        };
        if let Err(e) = self.store.record_artifact(job, lease, &artifact).await {
            // The lease went stale while the bytes streamed in: the attempt is gone, and so are its files.
            if let Err(error) = self.objects.delete(&location).await {
                tracing::warn!(%error, %location, "cannot remove a stale attempt's artifact");
            }
            return Err(e.into());
        }
        Ok(ArtifactRef {
            job: String::new(),
            job_id: job,
            path: artifact.path,
            size,
            sha256: artifact.sha256,
            mode: artifact.mode,
        })
    }

    /// An artifact of a job's attempt: its index entry and its bytes as a stream.
    pub async fn download(
        &self,
        job: Uuid,
        attempt: u32,
        path: &str,
    ) -> Result<
        (
            ArtifactRef,
            BoxStream<'static, Result<Bytes, ArtifactError>>,
        ),
        ArtifactError,
    > {
        let not_found = || ArtifactError::NotFound {
            job,
            path: path.to_owned(),
        };
        gantry_model::artifact::check_path(path).map_err(|_| not_found())?;
        let artifact = self
            .store
            .job_artifacts(job, attempt)
            .await?
            .into_iter()
            .find(|a| a.path == path)
            .ok_or_else(not_found)?;
        let got = self.objects.get(&key(job, attempt, path)).await?;
        let stream = got
            .into_stream()
            .map(|chunk| chunk.map_err(ArtifactError::from));
        Ok((artifact, stream.boxed()))
    }
}
