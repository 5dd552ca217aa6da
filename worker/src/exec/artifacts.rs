//! Moving artifacts between a job's workspace and the server: the needed jobs' files placed before the
//! container starts, the job's own uploaded after it ends, and its test reports read. Every file is streamed
//! and checked against its SHA-256 at both ends.

use super::outputs::{self, Found};
use crate::agent::client::{Client, ClientError, with_retries};
use futures::StreamExt;
use gantry_model::FailureKind;
use gantry_model::junit::{MAX_CASES_PER_JOB, TestCase};
use gantry_model::wire::{ArtifactRef, Lease};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one file's transfer is retried while the server is unreachable.
const PATIENCE: Duration = Duration::from_secs(60);

/// Why moving a job's files failed, and how the job ends for it.
#[derive(Debug)]
pub struct TransferFailure {
    /// `artifacts` when the job's own files or patterns are at fault, `infra` when Gantry's machinery is.
    pub kind: FailureKind,
    /// What the user reads.
    pub message: String,
}

fn infra(message: String) -> TransferFailure {
    TransferFailure {
        kind: FailureKind::Infra,
        message,
    }
}

fn job_fault(message: String) -> TransferFailure {
    TransferFailure {
        kind: FailureKind::Artifacts,
        message,
    }
}

/// Places the artifacts of the jobs this one needs in its workspace, at their paths.
pub async fn fetch(
    client: &Client,
    lease: &Lease,
    workspace: &Path,
) -> Result<(), TransferFailure> {
    gantry_model::artifact::merge(&lease.artifacts).map_err(job_fault)?;
    for artifact in &lease.artifacts {
        with_retries(PATIENCE, || fetch_one(client, artifact, workspace))
            .await
            .map_err(|e| {
                infra(format!(
                    "cannot fetch artifact {} of {}: {e}",
                    artifact.path, artifact.job
                ))
            })?
            .map_err(|message| {
                job_fault(format!(
                    "cannot place artifact {} of {}: {message}",
                    artifact.path, artifact.job
                ))
            })?;
    }
    Ok(())
}

/// One artifact, written as it arrives; the outer error is the transfer's (retried), the inner the workspace's.
async fn fetch_one(
    client: &Client,
    artifact: &ArtifactRef,
    workspace: &Path,
) -> Result<Result<(), String>, ClientError> {
    let mut file = match outputs::create_beneath(workspace, &artifact.path, artifact.mode) {
        Ok(file) => file,
        Err(message) => return Ok(Err(message)),
    };
    let response = client.download_artifact(artifact).await?;
    let (mut hasher, mut size) = (Sha256::new(), 0u64);
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hasher.update(&chunk);
        size += chunk.len() as u64;
        // Local disk writes of chunks this size do not stall the runtime noticeably.
        if let Err(e) = file.write_all(&chunk) {
            return Ok(Err(format!("cannot write it: {e}")));
        }
    }
    let actual = hex::encode(hasher.finalize());
    if size != artifact.size || actual != artifact.sha256 {
        return Err(ClientError::Refused {
            status: reqwest::StatusCode::BAD_GATEWAY,
            message: format!(
                "received {size} bytes with sha256 {actual}; expected {} bytes with sha256 {}",
                artifact.size, artifact.sha256
            ),
        });
    }
    Ok(Ok(()))
}

/// Uploads the files the job's `artifacts:` match; returns how many.
pub async fn upload(
    client: &Client,
    lease: &Lease,
    workspace: PathBuf,
) -> Result<usize, TransferFailure> {
    let patterns = lease.spec.artifacts.clone();
    let found =
        tokio::task::spawn_blocking(move || outputs::find(&workspace, &patterns, "artifacts"))
            .await
            .map_err(|e| infra(format!("the artifact search failed: {e}")))?
            .map_err(job_fault)?;
    let total: u64 = found.iter().map(|f| f.size).sum();
    if lease.artifact_limit_bytes > 0 && total > lease.artifact_limit_bytes {
        return Err(job_fault(format!(
            "artifacts: the {} files matched have {total} bytes, more than the server's limit of {} bytes per job",
            found.len(),
            lease.artifact_limit_bytes
        )));
    }
    for file in &found {
        let sha256 = hash_file(file).await.map_err(job_fault)?;
        with_retries(PATIENCE, || async {
            let opened = tokio::fs::File::open(&file.host_path)
                .await
                .map_err(|e| ClientError::Local(format!("cannot open {}: {e}", file.path)))?;
            client
                .upload_artifact(lease, &file.path, opened, &sha256, file.mode)
                .await
        })
        .await
        .map_err(|e| match e {
            ClientError::Refused { status, message }
                if status == reqwest::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                job_fault(format!("artifacts: {message}"))
            }
            e => infra(format!("cannot upload artifact {}: {e}", file.path)),
        })?;
    }
    Ok(found.len())
}

async fn hash_file(file: &Found) -> Result<String, String> {
    let path = file.host_path.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let (mut hasher, mut buffer) = (Sha256::new(), vec![0u8; 256 * 1024]);
        let mut source = std::fs::File::open(&path)?;
        loop {
            match source.read(&mut buffer)? {
                0 => return Ok::<_, std::io::Error>(hex::encode(hasher.finalize())),
                n => hasher.update(&buffer[..n]),
            }
        }
    })
    .await
    .map_err(|e| format!("hashing {} failed: {e}", file.path))?
    .map_err(|e| format!("cannot read {}: {e}", file.path))
}

/// The test cases of the job's `reports:`, at most [`MAX_CASES_PER_JOB`]; a note when some were left out.
pub async fn reports(
    lease: &Lease,
    workspace: PathBuf,
) -> Result<(Vec<TestCase>, Option<String>), TransferFailure> {
    let patterns = lease.spec.reports.clone();
    let mut cases =
        tokio::task::spawn_blocking(move || outputs::read_reports(&workspace, &patterns))
            .await
            .map_err(|e| infra(format!("reading the reports failed: {e}")))?
            .map_err(job_fault)?;
    let note = (cases.len() > MAX_CASES_PER_JOB).then(|| {
        format!(
            "the reports have {} test cases; the first {MAX_CASES_PER_JOB} were kept",
            cases.len()
        )
    });
    cases.truncate(MAX_CASES_PER_JOB);
    Ok((cases, note))
}
