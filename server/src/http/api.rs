//! The JSON API's read routes and repository management (docs/api.md).

use super::AppState;
use super::auth::{
    Admin, Writer, readable_job, readable_pipeline, readable_repo, unreadable_repos,
};
use super::error::{ApiError, ApiResult};
use crate::access::Caller;
use crate::read_model;
use crate::store::{JobRecord, PipelineRecord, RepoRecord};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gantry_model::wire::{
    CommitStatusView, JobView, NewRepo, PipelinePage, PipelineView, RepoSettings, RepoView,
};
use serde::Deserialize;
use uuid::Uuid;

/// The API's view of a repository; the secret only when asked for by the admin.
pub fn repo_view(state: &AppState, r: RepoRecord, with_secret: bool) -> RepoView {
    let webhook_url = format!(
        "{}/hooks/{}?repo={}",
        state.config.public_url.trim_end_matches('/'),
        r.forge,
        r.name
    );
    RepoView {
        name: r.name,
        url: gantry_model::redact::redact_url(&r.url),
        forge: r.forge,
        created_at: r.created_at,
        secret: with_secret.then_some(r.secret),
        webhook_url: Some(webhook_url),
        cancel_previous: r.cancel_previous,
        fork_host_image: r.fork_host_image,
        private: r.private,
        max_running_jobs: r.max_running_jobs,
        pools: r.pools,
        has_clone_token: r.has_clone_token,
        has_status_token: r.has_status_token,
    }
}

/// The API's view of a pipeline (jobs added by the caller when wanted).
pub fn pipeline_view(p: PipelineRecord) -> PipelineView {
    PipelineView {
        repo: p.repo,
        number: p.number,
        status: p.status,
        commit: p.commit,
        git_ref: p.git_ref,
        event: p.event,
        message: p.error.or(p.message),
        created_at: p.created_at,
        finished_at: p.finished_at,
        pull_request: p.pull_request,
        jobs: Vec::new(),
        tests: None,
        commit_status: None,
    }
}

/// The API's view of a job.
pub fn job_view(j: JobRecord) -> JobView {
    JobView {
        id: j.id,
        name: j.name,
        status: j.status,
        exit_code: j.exit_code,
        failure_kind: j.failure_kind,
        message: j.message,
        attempt: j.attempt,
        worker: j.worker_name,
        queued_at: Some(j.queued_at),
        started_at: j.started_at,
        finished_at: j.finished_at,
        peak_memory_bytes: j.peak_memory_bytes,
        cpu_seconds: j.cpu_seconds,
        steps: Vec::new(),
        pending_reason: None,
        artifacts: Vec::new(),
    }
}

/// `GET /api/v1/repos`.
pub async fn list_repos(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<RepoView>>> {
    let hidden = unreadable_repos(&state, caller).await?;
    let repos = state.store.list_repos().await?;
    Ok(Json(
        repos
            .into_iter()
            .filter(|r| !hidden.contains(&r.name))
            .map(|r| repo_view(&state, r, false))
            .collect(),
    ))
}

/// `POST /api/v1/repos` (admin): answers with the secret, the one time it is shown unasked.
pub async fn create_repo(
    State(state): State<AppState>,
    _: Admin,
    Json(new): Json<NewRepo>,
) -> ApiResult<impl IntoResponse> {
    let record = crate::repos::new_repo_record(new)?;
    let repo = state.store.create_repo(&record).await?;
    Ok((StatusCode::CREATED, Json(repo_view(&state, repo, true))))
}

/// `GET /api/v1/repos/{repo}/secret` (admin): what `gantry hook install` signs with.
pub async fn repo_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(repo): Path<String>,
) -> ApiResult<Json<RepoView>> {
    let r = state
        .store
        .get_repo(&repo)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no repository named {repo:?}")))?;
    Ok(Json(repo_view(&state, r, true)))
}

/// Paging of pipeline lists.
#[derive(Deserialize)]
pub struct Page {
    before: Option<i64>,
    limit: Option<i64>,
}

/// `PATCH /api/v1/repos/{repo}` (admin): changes the settings given (tokens sealed), answers the repository.
pub async fn update_repo(
    State(state): State<AppState>,
    _: Admin,
    Path(repo): Path<String>,
    Json(settings): Json<RepoSettings>,
) -> ApiResult<Json<RepoView>> {
    if let Some(wanted) = &settings.pools {
        // A typo would leave the repository's jobs waiting for a pool that never comes.
        let known: Vec<String> = state
            .store
            .list_pools()
            .await?
            .into_iter()
            .map(|p| p.pool.name)
            .collect();
        if let Some(unknown) = wanted.iter().find(|p| !known.contains(p)) {
            return Err(ApiError::BadRequest(format!(
                "no pool named {unknown:?} (pools: {})",
                known.join(", ")
            )));
        }
    }
    let updated = state.vault.update_repo(&repo, &settings).await?;
    tracing::info!(%repo, ?settings, "repository settings changed");
    Ok(Json(repo_view(&state, updated, false)))
}

/// `GET /api/v1/repos/{repo}/pipelines`.
pub async fn list_pipelines(
    State(state): State<AppState>,
    caller: Caller,
    Path(repo): Path<String>,
    Query(page): Query<Page>,
) -> ApiResult<Json<PipelinePage>> {
    readable_repo(&state, caller, &repo).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let rows = state
        .store
        .list_pipelines(&repo, page.before, limit)
        .await?;
    let next_cursor = if rows.len() as i64 == limit {
        rows.last().map(|p| p.number)
    } else {
        None
    };
    Ok(Json(PipelinePage {
        pipelines: rows.into_iter().map(pipeline_view).collect(),
        next_cursor,
    }))
}

/// `GET /api/v1/repos/{repo}/pipelines/{number}`.
pub async fn get_pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path((repo, number)): Path<(String, i64)>,
) -> ApiResult<Json<PipelineView>> {
    let p = readable_pipeline(&state, caller, &repo, number).await?;
    let detail = read_model::pipeline_detail(state.store.as_ref(), p).await?;
    let mut view = pipeline_view(detail.pipeline);
    view.tests = detail.tests;
    view.commit_status = detail.last_status.map(|s| CommitStatusView {
        status: s.status,
        delivery: s.outcome.unwrap_or_else(|| "waiting".into()),
        attempts: s.attempts,
        error: s.last_error,
    });
    view.jobs = detail
        .jobs
        .into_iter()
        .map(|j| JobView {
            pending_reason: j.pending_reason,
            ..job_view(j.job)
        })
        .collect();
    Ok(Json(view))
}

/// `POST /api/v1/repos/{repo}/pipelines/{number}/cancel` (write): jobs not started end at once, running ones
/// are stopped through their workers' heartbeats; answers what it did. Cancelling a finished pipeline does
/// nothing.
pub async fn cancel_pipeline(
    State(state): State<AppState>,
    _: Writer,
    Path((repo, number)): Path<(String, i64)>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = read_model::pipeline_named(state.store.as_ref(), &repo, number).await?;
    let done = state.queue.cancel_pipeline(p.id).await?;
    let status = done.pipeline_status.unwrap_or(p.status);
    tracing::info!(%repo, number, ended = done.ended.len(), stopping = done.stopping.len(), "pipeline cancelled");
    Ok(Json(serde_json::json!({
        "status": status,
        "cancelled_jobs": done.ended.len(),
        "stopping_jobs": done.stopping.len(),
    })))
}

/// `POST /api/v1/jobs/{id}/cancel` (write): the job ends at once if it has not started, or is stopped through
/// its worker's heartbeat; what needs it is skipped. Cancelling a finished job does nothing.
pub async fn cancel_job(
    State(state): State<AppState>,
    _: Writer,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let job = find_job(&state, &id).await?;
    let done = state.queue.cancel_job(job.pipeline_id, job.id).await?;
    tracing::info!(job = %job.id, name = %job.name, "job cancelled");
    Ok(Json(serde_json::json!({
        "cancelled": !done.ended.is_empty(),
        "stopping": !done.stopping.is_empty(),
    })))
}

/// `POST /api/v1/repos/{repo}/pipelines/{number}/retry` (write): every job of a finished pipeline that did not
/// succeed runs again as its next attempt (a pipeline whose file could not be read is read again); 409 while it
/// runs.
pub async fn retry_pipeline(
    State(state): State<AppState>,
    _: Writer,
    Path((repo, number)): Path<(String, i64)>,
) -> ApiResult<Json<serde_json::Value>> {
    let p = read_model::pipeline_named(state.store.as_ref(), &repo, number).await?;
    let retried = state.queue.retry_pipeline(p.id).await?;
    if retried.reprepare {
        state.intake.prepare_again(&p).await?;
    }
    tracing::info!(%repo, number, jobs = retried.requeued.len(), "pipeline retried");
    let status = read_model::pipeline_named(state.store.as_ref(), &repo, number)
        .await?
        .status;
    Ok(Json(serde_json::json!({
        "status": status,
        "requeued_jobs": retried.requeued.len(),
    })))
}

/// Job `id`, or 404.
pub(crate) async fn find_job(state: &AppState, id: &str) -> ApiResult<JobRecord> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("no job {id:?}")))?;
    state
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job {id}")))
}

/// `GET /api/v1/jobs/{id}`, with the steps of its latest attempt.
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let (job, _) = readable_job(&state, caller, &id).await?;
    let steps = state.store.job_steps(job.id, job.attempt).await?;
    let artifacts = state.store.job_artifacts(job.id, job.attempt).await?;
    let mut view = job_view(job);
    view.steps = steps;
    view.artifacts = artifacts;
    Ok(Json(view))
}
