//! The worker protocol (DESIGN §4) and the JSON API's bodies (§4b): what crosses the wire, shared by both ends.

use crate::junit::{TestCase, TestStatus};
use crate::pipeline::JobSpec;
use crate::secret::{CloneCredential, SecretEnv};
use crate::status::{FailureKind, JobStatus, PipelineStatus};
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
    /// What to authenticate with when the repository is private (its clone token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CloneCredential>,
}

/// What a mirror fetches to find a pipeline's commit: every branch and tag (so later pushes need small fetches),
/// and the pipeline's own ref when it is neither — a pull request's head (`refs/pull/7/head`), which may live
/// only there when it comes from a fork.
pub fn fetch_refspecs(git_ref: &str) -> Vec<String> {
    let mut specs = vec![
        "+refs/heads/*:refs/heads/*".to_owned(),
        "+refs/tags/*:refs/tags/*".to_owned(),
    ];
    if git_ref.starts_with("refs/")
        && !git_ref.starts_with("refs/heads/")
        && !git_ref.starts_with("refs/tags/")
    {
        specs.push(format!("+{git_ref}:{git_ref}"));
    }
    specs
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
}

/// `POST /api/v1/repos`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewRepo {
    /// Gantry's name for it.
    pub name: String,
    /// Where to clone it from.
    pub url: String,
    /// `github`, `gitlab`, `gitea` or `git` (default).
    #[serde(default)]
    pub forge: Option<String>,
    /// The forge's name for it (`owner/name`; GitLab `group/…/name`), which deliveries are matched by and
    /// commit statuses are posted to; read from the clone URL when absent.
    #[serde(default)]
    pub forge_full_name: Option<String>,
    /// Webhook secret; generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A repository as the API shows it (secrets only to the admin, on creation and on request).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoView {
    /// Gantry's name for it.
    pub name: String,
    /// Clone URL.
    pub url: String,
    /// Forge kind.
    pub forge: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// The webhook secret, only in answers to the admin that ask for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The webhook URL to paste into the forge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// A new push to a branch cancels that branch's unfinished pipelines.
    #[serde(default)]
    pub cancel_previous: bool,
    /// At most this many of its jobs run at once; none: no limit.
    #[serde(default)]
    pub max_running_jobs: Option<u32>,
    /// It has a clone token (the token itself is never shown).
    #[serde(default)]
    pub has_clone_token: bool,
    /// It has a commit-status token (never shown).
    #[serde(default)]
    pub has_status_token: bool,
}

/// `PATCH /api/v1/repos/{repo}` (admin): the settings to change; absent ones stay. `Debug` hides the tokens.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RepoSettings {
    /// A new push to a branch cancels that branch's unfinished pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_previous: Option<bool>,
    /// At most this many of its jobs run at once; 0 lifts the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_jobs: Option<u32>,
    /// The forge's API base URL for commit statuses (e.g. `https://ghe.example.com/api/v3`); empty: derived
    /// from the clone URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge_api_url: Option<String>,
    /// The context (GitLab: name) of its commit statuses; empty: the server's `status_context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_context: Option<String>,
    /// The token to clone a private repository with (`user:token`, or a token alone: see
    /// `CloneCredential::from_token`); write-only, an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_token: Option<String>,
    /// The token commit statuses are posted with; write-only, an empty string removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_token: Option<String>,
}

impl std::fmt::Debug for RepoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |token: &Option<String>| {
            token
                .as_ref()
                .map(|t| if t.is_empty() { "" } else { "***" })
        };
        f.debug_struct("RepoSettings")
            .field("cancel_previous", &self.cancel_previous)
            .field("max_running_jobs", &self.max_running_jobs)
            .field("clone_token", &hidden(&self.clone_token))
            .field("status_token", &hidden(&self.status_token))
            .field("forge_api_url", &self.forge_api_url)
            .field("status_context", &self.status_context)
            .finish()
    }
}

/// A pipeline as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelineView {
    /// Repository name.
    pub repo: String,
    /// Number within the repository.
    pub number: i64,
    /// Status.
    pub status: PipelineStatus,
    /// Commit sha.
    pub commit: String,
    /// The pushed ref.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// `push`, `tag`, `pull_request`, `manual`, `api`.
    pub event: String,
    /// Why it is in `error`, or the commit's message.
    pub message: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The pull request it builds, for `pull_request` pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequest>,
    /// Its jobs (only in the single-pipeline answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobView>,
    /// Its jobs' test reports, all shards together (only in the single-pipeline answer, when there are any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
    /// Its latest commit status to the forge (only in the single-pipeline answer, when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_status: Option<CommitStatusView>,
}

/// Where a pipeline's latest commit status to the forge is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitStatusView {
    /// The pipeline status it reports.
    pub status: PipelineStatus,
    /// `waiting` (to be posted or tried again), `sent`, `superseded` or `failed`.
    pub delivery: String,
    /// Tries made.
    pub attempts: u32,
    /// What went wrong last, if anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The pull (merge) request a pipeline builds: its head commit, pushed to `source_branch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Its number on the forge.
    pub number: i64,
    /// The branch it comes from (in `from_fork`'s repository when that is true).
    pub source_branch: String,
    /// The branch it asks to merge into.
    pub target_branch: String,
    /// Its head lives in another repository: its jobs never get the repository's secrets.
    pub from_fork: bool,
}

/// The test cases of a pipeline's jobs, counted, with the ones that did not pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TestSummary {
    /// Every case.
    pub total: u64,
    /// Cases that passed.
    pub passed: u64,
    /// Cases with a `<failure>`.
    pub failed: u64,
    /// Cases with an `<error>`.
    pub errored: u64,
    /// Cases skipped.
    pub skipped: u64,
    /// The failed and errored cases (the first [`MAX_LISTED_FAILURES`]).
    pub failures: Vec<TestFailure>,
}

/// How many failed cases a [`TestSummary`] lists.
pub const MAX_LISTED_FAILURES: usize = 200;

/// A case that failed or errored, and where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestFailure {
    /// The job whose report it is in.
    pub job: String,
    /// Its suite.
    pub suite: String,
    /// Its name.
    pub name: String,
    /// `failed` or `errored`.
    pub status: TestStatus,
    /// What the report said.
    pub message: Option<String>,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// The job's id.
    pub id: Uuid,
    /// The job's name.
    pub name: String,
    /// Status.
    pub status: JobStatus,
    /// Exit status of the last step that ran.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub failure_kind: Option<FailureKind>,
    /// Explanation of a failure.
    pub message: Option<String>,
    /// 1 for the first run.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Peak memory of its container.
    pub peak_memory_bytes: Option<i64>,
    /// CPU seconds of its container.
    pub cpu_seconds: Option<f64>,
    /// Its steps (only in the single-job answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepReport>,
    /// Why a queued job waits (no worker with its labels, all busy, waiting for a job it needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    /// The files its latest attempt uploaded (only in the single-job answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactRef>,
}

/// A webhook delivery as the API shows it: what arrived and what Gantry did with it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryView {
    /// Its id in Gantry (`GET /api/v1/repos/{repo}/deliveries/{id}`).
    pub id: i64,
    /// The forge's delivery id (or the hash of the body).
    pub delivery_id: String,
    /// The route it came in on: `github`, `gitlab`, `gitea`, `git`, `generic`.
    pub forge: String,
    /// The forge's event name.
    pub event: String,
    /// `created`, `ignored` or `refused`.
    pub outcome: String,
    /// Why it was ignored or refused.
    pub reason: Option<String>,
    /// The number of the pipeline it created.
    pub pipeline: Option<i64>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The body as received, secrets redacted (only when one delivery is asked for; invalid UTF-8 replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// A repository's newest deliveries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
}

/// One page of pipelines.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PipelinePage {
    /// Newest first.
    pub pipelines: Vec<PipelineView>,
    /// Pass as `?before=` for the next page.
    pub next_cursor: Option<i64>,
}

/// One SSE event of a log stream: bytes at an offset, base64 so that any bytes survive.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogEvent {
    /// Where `data` starts in the log.
    pub offset: u64,
    /// Base64 of the bytes.
    pub data: String,
}

/// What the webhook routes answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookOutcome {
    /// `created`, `duplicate` or `ignored`.
    pub outcome: String,
    /// The pipeline it created (or had created).
    pub pipeline: Option<i64>,
    /// Why nothing was created, when nothing was.
    pub reason: Option<String>,
}

/// The variables every job gets (DESIGN §5), before the file's own `env`.
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
