//! The JSON API's bodies (docs/api.md): repositories, pipelines, jobs, deliveries, and what the webhook routes
//! answer.

use super::{ArtifactRef, StepReport};
use crate::junit::TestStatus;
use crate::status::{FailureKind, JobStatus, PipelineStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// Pull requests from forks may run jobs on `image: host`; otherwise such a pipeline ends in `error`.
    #[serde(default)]
    pub fork_host_image: bool,
    /// At most this many of its jobs run at once; none: no limit.
    #[serde(default)]
    pub max_running_jobs: Option<u32>,
    /// The pools its jobs may run on; none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
    /// It has a clone token (the token itself is never shown).
    #[serde(default)]
    pub has_clone_token: bool,
    /// It has a commit-status token (never shown).
    #[serde(default)]
    pub has_status_token: bool,
    /// Only tokens with the `read` scope may read it, whether the farm is private or not.
    #[serde(default)]
    pub private: bool,
}

/// `PATCH /api/v1/repos/{repo}` (admin): the settings to change; absent ones stay. `Debug` hides the tokens.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct RepoSettings {
    /// A new push to a branch cancels that branch's unfinished pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_previous: Option<bool>,
    /// Pull requests from forks may run jobs on `image: host` (the worker's own file system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork_host_image: Option<bool>,
    /// At most this many of its jobs run at once; 0 lifts the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running_jobs: Option<u32>,
    /// Only tokens with the `read` scope may read it, whether the farm is private or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    /// The pools its jobs may run on; an empty list lifts the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pools: Option<Vec<String>>,
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
            .field("fork_host_image", &self.fork_host_image)
            .field("max_running_jobs", &self.max_running_jobs)
            .field("private", &self.private)
            .field("pools", &self.pools)
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
    /// When it was last queued (ready or not).
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
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

/// What the webhook routes answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HookOutcome {
    /// `created`, `duplicate` or `ignored`.
    pub outcome: String,
    /// The pipeline it created (or had created).
    pub pipeline: Option<i64>,
    /// Why nothing was created, when nothing was.
    pub reason: Option<String>,
    /// How the server read the pipeline file, when the delivery asked to wait for it (`?wait=SECONDS`) and
    /// that took less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<FileVerdict>,
}

/// How the server read a pushed pipeline file: the jobs it made, or why it made none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVerdict {
    /// The pipeline's status once its file was read: `queued`, or `error`.
    pub status: String,
    /// For `error`: what is wrong, with the line and a hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The jobs it made, in file order.
    #[serde(default)]
    pub jobs: Vec<String>,
    /// Those of them that this push skips (their `when:`).
    #[serde(default)]
    pub skipped: Vec<String>,
}
