//! What the JSON API and the dashboard both show, composed from the store once: a pipeline with its jobs and
//! why each waits, its tests and its last commit status; a repository's deliveries. Handlers check who may read
//! (`http/auth.rs`), then render one of these as JSON or HTML; nothing here knows HTTP.

use crate::queue::{RepoLimit, pending_reason};
use crate::store::{
    CommitStatusRecord, DeliveryRecord, JobRecord, PipelineRecord, RepoRecord, Store, StoreError,
};
use gantry_model::JobStatus;
use gantry_model::wire::TestSummary;

/// A pipeline as its page and `GET …/pipelines/{number}` show it.
pub struct PipelineDetail {
    /// The pipeline.
    pub pipeline: PipelineRecord,
    /// Its jobs in file order, each with why it waits.
    pub jobs: Vec<JobDetail>,
    /// Its test reports, counted.
    pub tests: Option<TestSummary>,
    /// The newest commit status written for it.
    pub last_status: Option<CommitStatusRecord>,
}

/// A job, and why it is still queued when it is.
pub struct JobDetail {
    /// The job.
    pub job: JobRecord,
    /// Why it waits (no worker with its labels, its repository at its limit…), when queued.
    pub pending_reason: Option<String>,
}

/// Pipeline `number` of `repo`, or `NotFound`.
pub async fn pipeline_named(
    store: &dyn Store,
    repo: &str,
    number: i64,
) -> Result<PipelineRecord, StoreError> {
    store
        .get_pipeline(repo, number)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline {repo}#{number}")))
}

/// `pipeline` with its jobs, why they wait, its tests and its last commit status.
pub async fn pipeline_detail(
    store: &dyn Store,
    pipeline: PipelineRecord,
) -> Result<PipelineDetail, StoreError> {
    let jobs = store.pipeline_jobs(pipeline.id).await?;
    let reasons = pending_reasons(store, &pipeline, &jobs).await?;
    let tests = store.pipeline_tests(pipeline.id).await?;
    let last_status = store.commit_statuses(pipeline.id).await?.pop();
    Ok(PipelineDetail {
        jobs: jobs
            .into_iter()
            .zip(reasons)
            .map(|(job, pending_reason)| JobDetail {
                job,
                pending_reason,
            })
            .collect(),
        pipeline,
        tests,
        last_status,
    })
}

/// Why each of a pipeline's `jobs` waits, in order (see [`pending_reason`]); no query when none is queued.
async fn pending_reasons(
    store: &dyn Store,
    pipeline: &PipelineRecord,
    jobs: &[JobRecord],
) -> Result<Vec<Option<String>>, StoreError> {
    if !jobs.iter().any(|j| j.status == JobStatus::Queued) {
        return Ok(vec![None; jobs.len()]);
    }
    let workers = store.list_workers().await?;
    let pools = store.list_pools().await?;
    let repo = store.get_repo(&pipeline.repo).await?;
    let limit = match repo.and_then(|r| r.max_running_jobs.map(|max| (r.id, max))) {
        Some((id, max)) => Some(RepoLimit {
            max,
            running: store.running_jobs(id).await?,
        }),
        None => None,
    };
    Ok(jobs
        .iter()
        .map(|j| pending_reason(j, jobs, &workers, &pools, limit))
        .collect())
}

/// Delivery `id` of `repo`, with its (redacted) body, or `NotFound`.
pub async fn delivery(
    store: &dyn Store,
    repo: &RepoRecord,
    id: i64,
) -> Result<DeliveryRecord, StoreError> {
    store
        .get_delivery(repo.id, id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("delivery {id} of {:?}", repo.name)))
}
