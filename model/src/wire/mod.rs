//! The worker protocol (docs/api.md, "Worker protocol") and, in `api.rs`, the JSON API's bodies (docs/api.md): what crosses the wire, shared
//! by both ends.

mod api;
mod pools;
mod providers;
mod sse;
mod tokens;

pub use api::*;
pub use pools::*;
pub use providers::*;
pub use sse::{SseEvent, SseReader};
pub use tokens::*;

use crate::junit::TestCase;
use crate::pipeline::JobSpec;
use crate::secret::{CloneCredential, SecretEnv};
use crate::status::FailureKind;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The worker protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Header that carries the lease id on every job call.
pub const LEASE_HEADER: &str = "x-gantry-lease";
/// Header of an artifact upload and download: the hex SHA-256 of its bytes.
pub const SHA256_HEADER: &str = "x-gantry-sha256";
/// Header of an artifact upload and download: its permission bits, in octal (`755`).
pub const MODE_HEADER: &str = "x-gantry-mode";
/// Header of the plain-git and generic webhooks that carries the delivery's id.
pub const GANTRY_DELIVERY_HEADER: &str = "x-gantry-delivery";
/// Header of the plain-git and generic webhooks: `sha256=<hex HMAC of the body>`.
pub const GANTRY_SIGNATURE_HEADER: &str = "x-gantry-signature";

/// `POST /api/v1/workers/register` (with the pool token as bearer).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The worker's stable, unique name.
    pub name: String,
    /// Labels jobs can ask for with `runs-on`.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Jobs it runs at once.
    pub capacity: u32,
    /// [`PROTOCOL_VERSION`] of the worker.
    pub protocol_version: u32,
}

/// The answer to a registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The worker's id.
    pub worker_id: Uuid,
    /// Bearer token for all its further calls.
    pub worker_token: String,
}

/// `POST /api/v1/lease`: the worker has this many free slots.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// How long to wait for a job, in seconds (the server caps it).
    #[serde(default)]
    pub wait_secs: Option<u64>,
}

/// A job handed to a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job_id: Uuid,
    /// Carried on every call about this job; a stale one gets 409.
    pub lease_id: Uuid,
    /// 1 for the first run of the job.
    pub attempt: u32,
    /// Renew the lease at least this often.
    pub heartbeat_secs: u64,
    /// What to run.
    pub spec: JobSpec,
    /// Where the source is.
    pub source: Source,
    /// The variables every job gets (`CI`, `GANTRY_*`), before the spec's own env.
    pub env: Vec<(String, String)>,
    /// The artifacts of the jobs it needs, to place in its workspace before the steps.
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
    /// The most bytes of artifacts the job may upload (the server refuses more).
    #[serde(default)]
    pub artifact_limit_bytes: u64,
    /// The log's cap: past it the server keeps nothing, so the worker sends nothing (0: not said).
    #[serde(default)]
    pub log_cap_bytes: u64,
    /// The repository's secrets, set in the steps' environment after everything else (a secret wins over the
    /// file's `env:` of the same name) and masked in the log; none for a pull request from a fork.
    #[serde(default, skip_serializing_if = "SecretEnv::is_empty")]
    pub secrets: SecretEnv,
}

impl Lease {
    /// The lease without its secrets and clone credential, for keeping on disk.
    pub fn without_secrets(&self) -> Lease {
        let mut lease = self.clone();
        lease.secrets = SecretEnv::default();
        lease.source.credential = None;
        lease
    }
}

/// A file a job uploaded, as its dependents and the API see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// The job that uploaded it.
    pub job: String,
    /// That job's id (`GET /api/v1/jobs/{job_id}/artifacts/{path}`).
    pub job_id: Uuid,
    /// Relative path in the workspace, the same in every job.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
}

/// Where to fetch the job's source from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Source {
    /// The repository's name in Gantry (names the worker's mirror cache).
    pub repo: String,
    /// Clone URL (a path for local repositories).
    pub clone_url: String,
    /// The exact commit to check out.
    pub commit: String,
    /// The ref that was pushed.
    pub git_ref: String,
    /// What to authenticate with when the repository is private (its clone token): for submodules, and
    /// for a server that serves no mirror.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CloneCredential>,
    /// Where the worker fetches the commit from: the server's mirror of the repository over git's smart HTTP,
    /// as a path on the server (`/api/v1/jobs/{id}/source.git`), fetched with the worker's token and the
    /// lease; the commit is at [`mirror_ref`] there. None (an older server): from `clone_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

/// The ref of the server's mirror that holds a pipeline's commit.
pub fn mirror_ref(commit: &str) -> String {
    format!("refs/gantry/commits/{commit}")
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The job was cancelled: kill it and report `cancelled`.
    pub cancel: bool,
}

/// A step's progress, sent when it starts and when it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// 0-based index in the job's steps.
    pub index: u32,
    /// The command line.
    pub command: String,
    /// Where the step's output starts in the job's log.
    pub log_offset: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended; none while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its shell's exit status; none while it runs (or if it was killed).
    pub exit_code: Option<i32>,
}

/// `POST /api/v1/jobs/{id}/complete`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// Exit status of the last step that ran.
    pub exit_code: Option<i32>,
    /// Why it failed; none when it succeeded.
    pub failure_kind: Option<FailureKind>,
    /// A human explanation when it failed.
    pub message: Option<String>,
    /// Every step that started.
    pub steps: Vec<StepReport>,
    /// The log's total length, so the server can tell it holds all of it.
    pub log_length: u64,
    /// CPU time used by the container.
    pub cpu_seconds: Option<f64>,
    /// Peak memory of the container.
    pub peak_memory_bytes: Option<u64>,
    /// The test cases of its `reports:`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
    /// A failure of Gantry's side (`infra`) that another attempt would repeat (the job asks more than the
    /// worker allows): the server ends the job instead of retrying it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_retry: bool,
}

/// One SSE event of a log stream: bytes at an offset, base64 so that any bytes survive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEvent {
    /// Where `data` starts in the log.
    pub offset: u64,
    /// Base64 of the bytes.
    pub data: String,
}

/// The variables every job gets (docs/pipeline.md), before the file's own `env`.
pub fn builtin_env(
    repo: &str,
    commit: &str,
    git_ref: &str,
    event: &str,
    pipeline: i64,
    job: &str,
    pull_request: Option<&PullRequest>,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("CI".to_owned(), "true".to_owned()),
        ("GANTRY".to_owned(), "true".to_owned()),
        ("GANTRY_REPO".to_owned(), repo.to_owned()),
        ("GANTRY_COMMIT".to_owned(), commit.to_owned()),
        ("GANTRY_REF".to_owned(), git_ref.to_owned()),
        ("GANTRY_EVENT".to_owned(), event.to_owned()),
        ("GANTRY_PIPELINE".to_owned(), pipeline.to_string()),
        ("GANTRY_JOB".to_owned(), job.to_owned()),
    ];
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        env.push(("GANTRY_BRANCH".to_owned(), branch.to_owned()));
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        env.push(("GANTRY_TAG".to_owned(), tag.to_owned()));
    }
    if let Some(pr) = pull_request {
        env.extend([
            ("GANTRY_PR".to_owned(), pr.number.to_string()),
            (
                "GANTRY_PR_SOURCE_BRANCH".to_owned(),
                pr.source_branch.clone(),
            ),
            (
                "GANTRY_PR_TARGET_BRANCH".to_owned(),
                pr.target_branch.clone(),
            ),
            ("GANTRY_PR_FROM_FORK".to_owned(), pr.from_fork.to_string()),
        ]);
    }
    env
}
