//! The rows the store reads and writes, as Rust types.

use chrono::{DateTime, Utc};
use gantry_model::wire::PullRequest;
use gantry_model::{FailureKind, JobSpec, JobStatus, PipelineStatus};
use uuid::Uuid;

/// Who a bearer token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRecord {
    /// The admin.
    Admin,
    /// A named API token (`gantry token create`).
    Api {
        /// Its name.
        name: String,
        /// What it may do.
        scope: gantry_model::wire::Scope,
    },
    /// A pool's registration token.
    Pool(String),
    /// The registration token a server's provider gives the workers it starts for a pool (rotating the pool's
    /// token leaves it).
    Provider {
        /// The pool.
        pool: String,
        /// The only worker name it registers, when it was made for one instance (`exec`).
        worker: Option<String>,
    },
    /// A registered worker.
    Worker {
        /// Its id.
        id: Uuid,
        /// Its name.
        name: String,
    },
}

/// A named API token as listed (its value is never kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scope: gantry_model::wire::Scope,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A repository to add.
#[derive(Clone, Debug)]
pub struct NewRepoRecord {
    /// Gantry's name for it.
    pub name: String,
    /// Clone URL.
    pub url: String,
    /// Forge kind.
    pub forge: String,
    /// `owner/name` on the forge, for matching deliveries.
    pub forge_full_name: Option<String>,
    /// Webhook secret.
    pub secret: String,
}

/// A stored repository.
#[derive(Clone, Debug)]
pub struct RepoRecord {
    /// Row id.
    pub id: i64,
    /// Gantry's name for it.
    pub name: String,
    /// Clone URL.
    pub url: String,
    /// Forge kind.
    pub forge: String,
    /// `owner/name` on the forge.
    pub forge_full_name: Option<String>,
    /// Webhook secret.
    pub secret: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// A new push to a branch cancels that branch's unfinished pipelines.
    pub cancel_previous: bool,
    /// Pull requests from forks may run jobs on `image: host`.
    pub fork_host_image: bool,
    /// Readable only with a token.
    pub private: bool,
    /// At most this many of its jobs run at once.
    pub max_running_jobs: Option<u32>,
    /// The pools its jobs may run on; none: any.
    pub pools: Option<Vec<String>>,
    /// The forge's API base URL; none: derived from the clone URL.
    pub forge_api_url: Option<String>,
    /// The context of its commit statuses; none: the server's.
    pub status_context: Option<String>,
    /// It has a clone credential.
    pub has_clone_token: bool,
    /// It has a commit-status token.
    pub has_status_token: bool,
}

/// A repository's secret as listed: its name and when it was last set, never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    /// Its name (the environment variable's).
    pub name: String,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

/// A credential a repository keeps sealed (see `secrets`): each its own column of `repos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoCredential {
    /// The token the server's mirror and the workers clone with.
    Clone,
    /// The token commit statuses are posted with.
    Status,
}

impl RepoCredential {
    /// Its column in `repos`.
    pub fn column(self) -> &'static str {
        match self {
            Self::Clone => "clone_credential",
            Self::Status => "status_token",
        }
    }

    /// What it is sealed to (`SealingKey::seal`'s place), so it opens only as this repository's.
    pub fn place(self, repo_id: i64) -> String {
        format!("repo:{repo_id}:{}", self.column())
    }
}

/// A webhook delivery as received.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// The repository it is for.
    pub repo_id: i64,
    /// The forge's delivery id, or a hash of the body.
    pub delivery_id: String,
    /// The forge kind (the route it came in on).
    pub forge: String,
    /// The forge's event name.
    pub event: String,
    /// The raw body.
    pub body: Vec<u8>,
}

/// A delivery as kept for users to see why a hook did what it did.
#[derive(Clone, Debug)]
pub struct DeliveryRecord {
    /// Row id.
    pub id: i64,
    /// The forge's delivery id (or the body's hash).
    pub delivery_id: String,
    /// The route it came in on.
    pub forge: String,
    /// The forge's event name.
    pub event: String,
    /// `created`, `ignored` or `refused`.
    pub outcome: String,
    /// Why it was ignored or refused.
    pub reason: Option<String>,
    /// The number of the pipeline it made.
    pub pipeline: Option<i64>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The body with its secrets redacted (only when one delivery is asked for).
    pub body: Option<Vec<u8>>,
}

/// A pipeline to create from a delivery.
#[derive(Clone, Debug)]
pub struct NewPipeline {
    /// The delivery that asked for it.
    pub delivery: NewDelivery,
    /// Commit sha.
    pub commit: String,
    /// The pushed ref.
    pub git_ref: String,
    /// `push`, `tag`, …
    pub event: String,
    /// Who pushed.
    pub author: Option<String>,
    /// The head commit's message.
    pub message: Option<String>,
    /// The pull request it builds, for `pull_request` pipelines.
    pub pull_request: Option<PullRequest>,
}

/// What `create_pipeline` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedPipeline {
    /// The pipeline's id.
    pub id: Uuid,
    /// Its number in the repository.
    pub number: i64,
    /// True when the delivery id had been seen: nothing new was created.
    pub duplicate: bool,
}

/// A stored pipeline, with its repository's name.
#[derive(Clone, Debug)]
pub struct PipelineRecord {
    /// Id.
    pub id: Uuid,
    /// Repository name.
    pub repo: String,
    /// Repository row id.
    pub repo_id: i64,
    /// Number in the repository.
    pub number: i64,
    /// Commit sha.
    pub commit: String,
    /// The pushed ref.
    pub git_ref: String,
    /// `push`, `tag`, …
    pub event: String,
    /// Who pushed.
    pub author: Option<String>,
    /// The head commit's message.
    pub message: Option<String>,
    /// Status.
    pub status: PipelineStatus,
    /// Why it is in `error`.
    pub error: Option<String>,
    /// Whether its file was read and its jobs stored.
    pub prepared: bool,
    /// The pull request it builds, for `pull_request` pipelines.
    pub pull_request: Option<PullRequest>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its first job started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to store.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// Its expanded spec.
    pub spec: JobSpec,
    /// Why it is stored `skipped` instead of `queued` (its `when:` filtered it out).
    pub skipped: Option<String>,
}

/// A stored job.
#[derive(Clone, Debug)]
pub struct JobRecord {
    /// Id.
    pub id: Uuid,
    /// Its pipeline.
    pub pipeline_id: Uuid,
    /// Name.
    pub name: String,
    /// Expanded spec.
    pub spec: JobSpec,
    /// Status.
    pub status: JobStatus,
    /// Leases given so far.
    pub attempt: u32,
    /// The current lease.
    pub lease_id: Option<Uuid>,
    /// The worker holding or last holding it.
    pub worker_name: Option<String>,
    /// Exit status of its last step.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub failure_kind: Option<FailureKind>,
    /// Explanation of a failure.
    pub message: Option<String>,
    /// The current attempt's log length.
    pub log_length: u64,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// CPU seconds used.
    pub cpu_seconds: Option<f64>,
    /// Peak memory.
    pub peak_memory_bytes: Option<i64>,
}

/// A worker registering.
#[derive(Clone, Debug)]
pub struct NewWorker {
    /// Unique name.
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// Protocol version.
    pub protocol_version: u32,
    /// Registered with the token of the server's own provider, not the pool's.
    pub managed: bool,
}

/// A stored worker.
#[derive(Clone, Debug)]
pub struct WorkerRecord {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Pool.
    pub pool: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// `idle`, `busy`, …
    pub state: String,
    /// Last call.
    pub last_seen: DateTime<Utc>,
    /// When it last stopped running a job, or registered (Unix ms).
    pub idle_since_ms: i64,
    /// Started by the server's own provider (a rotated pool token does not stop it).
    pub managed: bool,
    /// Jobs it runs now.
    pub running: u32,
}

/// A worker asking for a job.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The worker.
    pub worker_id: Uuid,
    /// Its name (kept on the job for display).
    pub worker_name: String,
    /// The lease to give the job.
    pub lease_id: Uuid,
    /// When the lease expires, in Unix milliseconds.
    pub deadline_ms: i64,
}

/// A job just leased, with what the worker needs to run it: the job and where its source comes from.
#[derive(Clone, Debug)]
pub struct ClaimedJob {
    /// The job, now `running` with the new lease and attempt.
    pub job: JobRecord,
    /// Its repository's name.
    pub repo: String,
    /// Its repository's clone URL.
    pub clone_url: String,
    /// Its pipeline's number in the repository.
    pub number: i64,
    /// The commit its pipeline runs.
    pub commit: String,
    /// The ref that commit was pushed to.
    pub git_ref: String,
    /// The forge event that started the pipeline.
    pub event: String,
    /// The pull request its pipeline builds.
    pub pull_request: Option<PullRequest>,
    /// The repository's clone credential, sealed (see `secrets`).
    pub clone_credential: Option<Vec<u8>>,
    /// The repository's row id.
    pub repo_id: i64,
    /// The repository has secrets (read only then: most claims need no second query).
    pub has_secrets: bool,
}

/// What a log append stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The attempt the bytes belong to.
    pub attempt: u32,
    /// Where the newly stored bytes start.
    pub offset: u64,
    /// The newly stored bytes (empty for a repeat of bytes already stored).
    pub data: Vec<u8>,
    /// The log's length afterwards.
    pub length: u64,
}

/// What completing a job did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    /// The job's final status; `queued` when it runs again (its own `retry:`).
    pub status: JobStatus,
    /// The pipeline's status afterwards.
    pub pipeline_status: PipelineStatus,
    /// Jobs skipped because this one did not succeed.
    pub skipped: Vec<Uuid>,
}

/// A job whose lease ran out: its worker stopped heartbeating (docs/data-model.md).
#[derive(Clone, Debug, PartialEq)]
pub struct Expired {
    /// The job.
    pub job: Uuid,
    /// The worker that held the lease.
    pub worker_name: Option<String>,
    /// The attempt that was lost.
    pub attempt: u32,
    /// What became of the job.
    pub outcome: ExpiredOutcome,
}

/// What an expired lease does to its job.
#[derive(Clone, Debug, PartialEq)]
pub enum ExpiredOutcome {
    /// Back in the queue, to run again as the next attempt.
    Requeued,
    /// Ended: `error` (`worker_lost`) once the automatic retries are used up, or `cancelled` if it was being
    /// cancelled; with the pipeline's status afterwards and the jobs skipped because of it.
    Ended(Completed),
}

/// What cancelling a pipeline did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CancelledPipeline {
    /// Jobs that had not started, with their status now: `cancelled` if they waited for a worker, `skipped` if
    /// for a job they need.
    pub ended: Vec<(Uuid, JobStatus)>,
    /// Running jobs: their workers hear of it with their next heartbeat and report them `cancelled`.
    pub stopping: Vec<Uuid>,
    /// The pipeline's status afterwards (`running` while jobs are stopping).
    pub pipeline_status: Option<PipelineStatus>,
}

/// What one server tells the others sharing its database (PostgreSQL's `NOTIFY`), so that their waiting
/// workers hear of it at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum News {
    /// Jobs became ready: long-polls for leases should look again.
    JobsReady,
    /// Jobs were asked to stop: heartbeats held open should look again.
    CancelRequested,
}

impl News {
    /// The `NOTIFY` channel.
    pub fn channel(self) -> &'static str {
        match self {
            News::JobsReady => "gantry_jobs_ready",
            News::CancelRequested => "gantry_cancel_requested",
        }
    }

    /// The news a channel carries.
    pub fn from_channel(channel: &str) -> Option<News> {
        [News::JobsReady, News::CancelRequested]
            .into_iter()
            .find(|news| news.channel() == channel)
    }
}

/// An artifact whose bytes the artifact store holds, to index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArtifact {
    /// Relative path (checked by `gantry_model::artifact::check_path`).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
}

/// What retrying a pipeline did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetriedPipeline {
    /// The jobs queued again.
    pub requeued: Vec<Uuid>,
    /// The pipeline has no jobs: its file must be read again.
    pub reprepare: bool,
}
