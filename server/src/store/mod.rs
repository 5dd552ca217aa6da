//! Storage behind one interface ([`Store`]), with a SQLite and a PostgreSQL implementation chosen once at start.
//!
//! The SQL is written once, by area (`tokens`, `repos`, `pipelines`, `jobs`, `logs`, `cancel`, `completion`,
//! `retry`, `deliveries`, `artifacts`, `secrets`, `statuses`, `workers`), over the small driver interface of
//! `db/`; `backend.rs` is the one [`Store`] implementation, for any [`dialect::Dialect`]; each dialect
//! (`postgres.rs`, `sqlite/`) supplies its connections, how a write transaction starts, and its claim.

mod artifacts;
mod backend;
mod cancel;
mod completion;
mod db;
mod deliveries;
mod demand;
mod dialect;
mod instances;
mod jobs;
mod logs;
mod pipelines;
mod pool_records;
mod pools;
mod postgres;
mod records;
mod repos;
mod retry;
mod secrets;
mod sqlite;
mod status_records;
mod statuses;
mod tokens;
mod workers;

pub use artifacts::ArtifactQuota;
pub use pool_records::*;
pub use pools::DECISIONS_KEPT;
pub use records::*;
pub use secrets::SealedSecret;
pub use status_records::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gantry_model::wire::{
    ArtifactRef, CompleteRequest, Pool, RepoSettings, StepReport, TestSummary,
};
use std::sync::Arc;
use uuid::Uuid;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite's dispatch path (rusqlite, `sqlite/dispatch.rs`) failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique name is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The thing asked for does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing cannot change in its present state (a pipeline still running cannot be retried).
    #[error("{0}")]
    Busy(String),
    /// The caller's lease on the job is no longer the job's lease (docs/data-model.md): it must stop.
    #[error("the lease on job {0} is no longer valid")]
    StaleLease(Uuid),
    /// A log upload would leave a gap.
    #[error("log upload at offset {offset} but the log has only {length} bytes")]
    LogGap {
        /// The offset the upload started at.
        offset: u64,
        /// The log's length.
        length: u64,
    },
    /// A stored value could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A thread of the store could not start or panicked.
    #[error("a store thread failed: {0}")]
    Thread(String),
}

/// Result of storage calls.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything the server keeps. Handlers and domain code see only this.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn dialect(&self) -> &'static str;

    /// Creates the admin token and the `default` pool with its token if there is no admin token yet; says whether
    /// it did (the caller prints the tokens only then).
    async fn bootstrap(&self, admin_hash: &str, pool_hash: &str) -> Result<bool>;
    /// Finds a token by its hash.
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Adds another registration token for `pool`.
    async fn add_pool_token(&self, hash: &str, pool: &str) -> Result<()>;
    /// Stores the registration token a server's provider gives the workers it starts for `pool`.
    async fn add_provider_token(&self, hash: &str, pool: &str) -> Result<()>;
    /// Removes a provider's token (its server stops).
    async fn remove_provider_token(&self, hash: &str) -> Result<()>;
    /// Stores the registration token of `pool`'s instance `name`, which registers that name only (one made
    /// for an earlier instance of the name goes).
    async fn add_instance_token(&self, pool: &str, name: &str, hash: &str) -> Result<()>;
    /// Records an instance its provider made (its token was stored first).
    async fn record_instance(&self, pool: &str, instance: &PoolInstance) -> Result<()>;
    /// The instances recorded for `pool`, by name.
    async fn pool_instances(&self, pool: &str) -> Result<Vec<PoolInstance>>;
    /// Removes the registration token of `pool`'s instance `name` (its worker registered with it: it is used).
    async fn remove_instance_token(&self, pool: &str, name: &str) -> Result<()>;
    /// Forgets instance `name` of `pool` and its token (it is destroyed, or was never made).
    async fn forget_instance(&self, pool: &str, name: &str) -> Result<()>;
    /// Stores a named API token's hash; a name already taken is a conflict.
    async fn create_api_token(
        &self,
        name: &str,
        scope: gantry_model::wire::Scope,
        hash: &str,
    ) -> Result<ApiTokenRecord>;
    /// Every named API token, by name.
    async fn list_api_tokens(&self) -> Result<Vec<ApiTokenRecord>>;
    /// Deletes a named API token (it stops working at once); says whether there was one.
    async fn revoke_api_token(&self, name: &str) -> Result<bool>;
    /// Makes `hash` the only admin token (a configured admin token replaces earlier ones); idempotent.
    async fn set_admin_token(&self, hash: &str) -> Result<()>;

    /// Adds a repository.
    async fn create_repo(&self, repo: &NewRepoRecord) -> Result<RepoRecord>;
    /// Every repository, by name.
    async fn list_repos(&self) -> Result<Vec<RepoRecord>>;
    /// One repository.
    async fn get_repo(&self, name: &str) -> Result<Option<RepoRecord>>;

    /// Records a delivery and, unless the delivery id was seen before, a queued pipeline — in one transaction.
    async fn create_pipeline(&self, new: &NewPipeline) -> Result<CreatedPipeline>;
    /// Records a delivery that created nothing, with the reason.
    async fn record_ignored_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()>;
    /// Records a delivery refused before it was parsed (a wrong signature, a malformed body), for users to see.
    async fn record_refused_delivery(&self, delivery: &NewDelivery, reason: &str) -> Result<()>;
    /// Deletes all but a repository's newest `keep` deliveries; returns how many went.
    async fn prune_deliveries(&self, repo_id: i64, keep: u32) -> Result<u64>;
    /// A repository's newest deliveries, newest first, without their bodies.
    async fn recent_deliveries(&self, repo_id: i64, limit: u32) -> Result<Vec<DeliveryRecord>>;
    /// One of a repository's deliveries, with its (redacted) body.
    async fn get_delivery(&self, repo_id: i64, id: i64) -> Result<Option<DeliveryRecord>>;
    /// Pipelines accepted but whose file has not been read yet (to resume after a restart).
    async fn unprepared_pipelines(&self) -> Result<Vec<PipelineRecord>>;
    /// Stores a pipeline's jobs and marks it prepared.
    async fn add_jobs(&self, pipeline: Uuid, jobs: &[NewJob]) -> Result<()>;
    /// Puts a pipeline in `error` with the reason (file missing, invalid, fetch failed).
    async fn fail_pipeline(&self, pipeline: Uuid, message: &str) -> Result<()>;
    /// Removes a pipeline not yet prepared that its file's `when:` filters out; its delivery keeps the reason
    /// (outcome `ignored`), so a redelivery stays a duplicate.
    async fn drop_pipeline(&self, pipeline: Uuid, reason: &str) -> Result<()>;

    /// A repository's pipelines, newest first, numbered below `before` when given.
    async fn list_pipelines(
        &self,
        repo: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<PipelineRecord>>;
    /// The newest pipelines of every repository.
    async fn recent_pipelines(&self, limit: i64) -> Result<Vec<PipelineRecord>>;
    /// One pipeline by repository and number.
    async fn get_pipeline(&self, repo: &str, number: i64) -> Result<Option<PipelineRecord>>;
    /// One pipeline by id.
    async fn get_pipeline_by_id(&self, id: Uuid) -> Result<Option<PipelineRecord>>;
    /// A pipeline's jobs, in file order.
    async fn pipeline_jobs(&self, pipeline: Uuid) -> Result<Vec<JobRecord>>;
    /// One job.
    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>>;
    /// The steps of one attempt of a job.
    async fn job_steps(&self, job: Uuid, attempt: u32) -> Result<Vec<StepReport>>;

    /// Registers (or re-registers, by name, within the same pool) a worker and stores its token's hash.
    async fn register_worker(&self, worker: &NewWorker, token_hash: &str) -> Result<Uuid>;
    /// Every worker, with its state read from what it runs.
    async fn list_workers(&self) -> Result<Vec<WorkerRecord>>;
    /// Every pool, with its workers counted by state.
    async fn list_pools(&self) -> Result<Vec<PoolRecord>>;
    /// One pool (its worker counts are not read).
    async fn find_pool(&self, name: &str) -> Result<Option<PoolRecord>>;
    /// Writes the configuration file's pools (creating or rewriting each); pools it no longer has stay, unscaled.
    async fn apply_config_pools(&self, pools: &[Pool]) -> Result<()>;
    /// Creates a pool with its first registration token (`Conflict` when the name is taken).
    async fn create_pool(&self, pool: &Pool, token_hash: &str) -> Result<()>;
    /// Rewrites a pool made through the API (`Conflict` for a pool of the configuration file).
    async fn update_pool(&self, pool: &Pool) -> Result<()>;
    /// Replaces every registration token of a pool with this one: the old ones stop working at once.
    async fn rotate_pool_token(&self, pool: &str, token_hash: &str) -> Result<()>;
    /// Records a decision of the autoscaler (the pool's `desired` becomes `to`), keeping the newest 200.
    async fn record_pool_decision(
        &self,
        pool: &str,
        from: u32,
        to: u32,
        reason: &str,
    ) -> Result<()>;
    /// A pool's decisions, newest first.
    async fn pool_decisions(&self, pool: &str) -> Result<Vec<PoolDecision>>;
    /// What the autoscaler's provider is doing for a pool: the instances booting (by name), and its last error
    /// if it fails.
    async fn set_pool_progress(
        &self,
        pool: &str,
        booting: &[String],
        error: Option<&str>,
    ) -> Result<()>;
    /// Takes (or keeps) the pool's autoscaling turn for `server` until `until_ms`, unless another server holds
    /// it past `now_ms`; whether this server acts.
    async fn take_pool_turn(
        &self,
        pool: &str,
        server: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool>;
    /// Marks a worker draining: it takes no new job. Whether it was not draining already.
    async fn drain_worker(&self, worker: Uuid) -> Result<bool>;
    /// Notes a call of the worker; where it stands.
    async fn touch_worker(&self, worker: Uuid) -> Result<Standing>;
    /// Removes a worker and its token.
    async fn deregister_worker(&self, worker: Uuid) -> Result<()>;
    /// The jobs ready to run, highest priority and oldest first (at most 5,000).
    async fn ready_jobs(&self) -> Result<Vec<ReadyJob>>;
    /// The median of the last 5 successful durations (ms) of each (repository id, job name) that ran since
    /// `since`.
    async fn recent_durations(
        &self,
        since: DateTime<Utc>,
    ) -> Result<std::collections::HashMap<(i64, String), i64>>;
    /// Removes the workers that run nothing and have not called since `seen_before`; their names.
    async fn remove_stale_workers(&self, seen_before: DateTime<Utc>) -> Result<Vec<String>>;

    /// Cancels a pipeline: jobs not started yet end `cancelled` at once, running ones are asked to stop (their
    /// heartbeats say so). A pipeline whose file was not read yet ends `cancelled` and is never prepared.
    async fn cancel_pipeline(&self, pipeline: Uuid) -> Result<CancelledPipeline>;
    /// Cancels one job of a pipeline (what needs it is skipped once it ends), as [`Store::cancel_pipeline`] does.
    async fn cancel_job(&self, pipeline: Uuid, job: Uuid) -> Result<CancelledPipeline>;
    /// Cancels the repository's unfinished pipelines of `newer`'s ref that came before it, saying so in each.
    async fn supersede_pipelines(
        &self,
        newer: &PipelineRecord,
    ) -> Result<Vec<(Uuid, CancelledPipeline)>>;
    /// How many of a repository's jobs are running.
    async fn running_jobs(&self, repo_id: i64) -> Result<u64>;
    /// Changes a repository's settings; returns it as it is now.
    async fn update_repo_settings(&self, name: &str, settings: &RepoSettings)
    -> Result<RepoRecord>;
    /// Stores (or, with `None`, removes) one of a repository's sealed credentials.
    async fn set_repo_credential(
        &self,
        repo_id: i64,
        which: RepoCredential,
        sealed: Option<&[u8]>,
    ) -> Result<()>;
    /// One of a repository's sealed credentials, when it has one.
    async fn repo_credential(&self, repo_id: i64, which: RepoCredential)
    -> Result<Option<Vec<u8>>>;
    /// Stores a repository's secret (sealed), replacing one of the same name.
    async fn set_repo_secret(&self, repo_id: i64, name: &str, sealed: &[u8]) -> Result<()>;
    /// Removes a repository's secret; says whether there was one.
    async fn delete_repo_secret(&self, repo_id: i64, name: &str) -> Result<bool>;
    /// A repository's secrets by name, without their values.
    async fn list_repo_secrets(&self, repo_id: i64) -> Result<Vec<SecretRecord>>;
    /// A repository's secrets by name, sealed, for a lease.
    async fn sealed_repo_secrets(&self, repo_id: i64) -> Result<Vec<SealedSecret>>;
    /// Ends an attempt that failed on Gantry's side (`worker_lost`, `infra`) by queueing the job again while it
    /// has had fewer than `cap` automatic retries; `None` when it may not run again (then complete it).
    async fn requeue_infra(
        &self,
        job: Uuid,
        lease: Uuid,
        report: &CompleteRequest,
        cap: u32,
    ) -> Result<Option<Completed>>;
    /// Runs again every job of a finished pipeline that did not succeed, each as its next attempt; a pipeline
    /// that never got jobs (its file could not be read) is to be prepared again.
    async fn retry_pipeline(&self, pipeline: Uuid) -> Result<RetriedPipeline>;
    /// Tells the other servers sharing the database (PostgreSQL's `NOTIFY`); nothing to do on SQLite, which
    /// one server has to itself.
    async fn announce(&self, news: News) -> Result<()>;
    /// Hands every announcement of another server to `heard`, for as long as the future runs (also after the
    /// connection was lost and made again; `heard` gets both kinds of news then, since some may have been
    /// missed). Returns at once on SQLite.
    async fn listen(&self, heard: Box<dyn Fn(News) + Send + Sync>) -> Result<()>;
    /// Atomically leases the oldest ready job to a worker, or returns none.
    async fn claim_job(&self, claim: &Claim) -> Result<Option<ClaimedJob>>;
    /// Renews a lease; says whether the job was cancelled.
    async fn heartbeat(&self, job: Uuid, lease: Uuid, deadline_ms: i64) -> Result<bool>;
    /// Takes back every lease that ran out before `now_ms`: the job goes back in the queue as a new attempt
    /// while it has been re-queued fewer than `infra_retries` times, and otherwise ends in `error`
    /// (`worker_lost`); a job being cancelled ends `cancelled`. The lost lease's calls get `StaleLease` from now.
    async fn expire_leases(&self, now_ms: i64, infra_retries: u32) -> Result<Vec<Expired>>;
    /// Moves every running job's lease deadline to at least `deadline_ms`; says how many it moved.
    async fn extend_leases(&self, deadline_ms: i64) -> Result<u64>;
    /// Appends bytes at `offset` of the leased attempt's log (idempotent); returns the new bytes actually stored
    /// (none for a pure repeat) and where they start.
    async fn append_log(
        &self,
        job: Uuid,
        lease: Uuid,
        offset: u64,
        data: &[u8],
        cap: u64,
    ) -> Result<Appended>;
    /// At most `max` bytes of an attempt's log from `from` on (fewer at its end).
    async fn read_log(&self, job: Uuid, attempt: u32, from: u64, max: usize) -> Result<Vec<u8>>;
    /// How many bytes an attempt's log holds.
    async fn log_length(&self, job: Uuid, attempt: u32) -> Result<u64>;
    /// Records a step's start or end.
    async fn record_step(&self, job: Uuid, lease: Uuid, step: &StepReport) -> Result<()>;
    /// Ends a leased job with the worker's report, skips what can no longer run, and settles the pipeline. A
    /// repeat of the same lease's report (its answer was lost) is answered again and changes nothing.
    async fn complete_job(
        &self,
        job: Uuid,
        lease: Uuid,
        report: &CompleteRequest,
    ) -> Result<Completed>;

    /// Checks that `lease` is the running job's lease; says its attempt and the bytes of artifacts it uploaded.
    async fn artifact_quota(&self, job: Uuid, lease: Uuid) -> Result<ArtifactQuota>;
    /// Records an artifact whose bytes are stored, while `lease` is still the job's lease.
    async fn record_artifact(&self, job: Uuid, lease: Uuid, artifact: &NewArtifact) -> Result<()>;
    /// The artifacts an attempt of a job uploaded, by path.
    async fn job_artifacts(&self, job: Uuid, attempt: u32) -> Result<Vec<ArtifactRef>>;
    /// The artifacts of the latest attempts of a pipeline's succeeded jobs, in job order.
    async fn pipeline_artifacts(&self, pipeline: Uuid) -> Result<Vec<ArtifactRef>>;
    /// A pipeline's test cases (latest attempts) counted, with the failed ones; none without reports.
    async fn pipeline_tests(&self, pipeline: Uuid) -> Result<Option<TestSummary>>;

    /// Claims, until `hold_until_ms`, up to `limit` commit statuses due at `now_ms`: the oldest unsent one of each
    /// prepared pipeline (so a pipeline's statuses go out in order), none another sender holds. A pending one
    /// followed by another pending one is marked `superseded` instead (the forge only shows the latest), so
    /// a pending always precedes a final status.
    async fn claim_commit_statuses(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<StatusToSend>>;
    /// Records how posting a claimed commit status ended.
    async fn finish_commit_status(&self, id: i64, outcome: &StatusOutcome) -> Result<()>;
    /// When the next unsent commit status of a prepared pipeline is due (Unix ms), if there is one.
    async fn next_commit_status_ms(&self) -> Result<Option<i64>>;
    /// Lets go of every claim on a commit status: for a server that knows it is the database's only one (SQLite)
    /// and starts, so that what it was posting when it was killed goes out now rather than when the claim ends.
    async fn release_commit_status_claims(&self) -> Result<u64>;
    /// A pipeline's commit statuses, oldest first.
    async fn commit_statuses(&self, pipeline: Uuid) -> Result<Vec<CommitStatusRecord>>;
}

/// Connects to `url` (`sqlite://…` or `postgres://…`) and migrates the schema.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::Database(sqlx::Error::Configuration(
            format!("unsupported database URL {url:?}: use sqlite://PATH or postgres://…").into(),
        )))
    }
}
