//! The worker protocol (docs/api.md, "Worker protocol"): register, long-poll for a lease, heartbeat, log, steps, complete.

use super::AppState;
use super::auth::{LeaseId, PoolMember, Worker};
use super::error::{ApiError, ApiResult};
use crate::auth::{generate_token, hash_token};
use crate::queue::LeaseAnswer;
use crate::store::NewWorker;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gantry_model::wire::{
    CompleteRequest, HeartbeatResponse, LeaseRequest, PROTOCOL_VERSION, RegisterRequest,
    RegisterResponse, StepReport,
};
use serde::Deserialize;
use std::time::Duration;
use uuid::Uuid;

/// `POST /api/v1/workers/register` (pool token).
pub async fn register(
    State(state): State<AppState>,
    PoolMember {
        pool,
        managed,
        only_name,
    }: PoolMember,
    Json(req): Json<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    if req.protocol_version != PROTOCOL_VERSION {
        return Err(ApiError::BadRequest(format!(
            "this worker speaks protocol version {}, this server speaks version {PROTOCOL_VERSION}: run the same gantry release on both",
            req.protocol_version
        )));
    }
    if !gantry_model::wire::valid_worker_name(&req.name) {
        return Err(ApiError::BadRequest(format!(
            "invalid worker name {:?}: use letters, digits, '.', '_' and '-'",
            req.name
        )));
    }
    if let Some(bad) = req
        .labels
        .iter()
        .find(|label| !gantry_model::pipeline::valid_label(label))
    {
        return Err(ApiError::BadRequest(format!(
            "invalid worker label {bad:?}: use 1 to 63 letters, digits, '.', '_' and '-'"
        )));
    }
    // An instance's token is its own: one leaked from a VM cannot register a worker of another name.
    if let Some(only) = only_name.as_ref().filter(|only| **only != req.name) {
        return Err(ApiError::Forbidden(format!(
            "this token was made for worker {only:?}, not {:?}",
            req.name
        )));
    }
    // A pool's labels are the server's to set: a worker may repeat them, never add to them (a label is a promise
    // to the jobs that ask for it, and a trusted pool's labels must not be claimed by a machine outside it).
    let settings = state
        .store
        .find_pool(&pool)
        .await?
        .ok_or_else(|| ApiError::Unauthorized(format!("pool {pool:?} no longer exists")))?;
    if let Some(extra) = req
        .labels
        .iter()
        .find(|label| !settings.pool.labels.contains(label))
    {
        return Err(ApiError::Forbidden(format!(
            "pool {pool:?} does not have the label {extra:?} (its labels: {}); labels are set on the pool, in \
             `[[pool]]` or with `PATCH /api/v1/pools/{pool}`, not by the worker",
            if settings.pool.labels.is_empty() {
                "none".to_owned()
            } else {
                settings.pool.labels.join(", ")
            }
        )));
    }
    let token = generate_token("worker");
    let worker = NewWorker {
        name: req.name,
        pool,
        labels: settings.pool.labels.clone(),
        managed,
        capacity: req.capacity.max(1),
        protocol_version: req.protocol_version,
    };
    let worker_id = state
        .store
        .register_worker(&worker, &hash_token(&token))
        .await?;
    // And it registers once: whoever reads it later (a pod's spec is readable by whoever may get pods) can
    // no longer take the worker's place.
    if only_name.is_some() {
        state
            .store
            .remove_instance_token(&worker.pool, &worker.name)
            .await?;
    }
    tracing::info!(worker = %worker.name, %worker_id, "worker registered");
    state.queue.pools_changed();
    Ok(Json(RegisterResponse {
        worker_id,
        worker_token: token,
    }))
}

/// `POST /api/v1/lease`: 200 with a lease, or 204 when none came within the wait.
pub async fn lease(
    State(state): State<AppState>,
    worker: Worker,
    body: Option<Json<LeaseRequest>>,
) -> ApiResult<Response> {
    let asked = body
        .and_then(|Json(b)| b.wait_secs)
        .map(Duration::from_secs);
    let wait = asked
        .unwrap_or(state.config.long_poll)
        .min(state.config.long_poll);
    match state.queue.lease(worker.id, &worker.name, wait).await? {
        LeaseAnswer::Job(lease) => {
            tracing::info!(job = %lease.job_id, worker = %worker.name, attempt = lease.attempt, "job leased");
            Ok(Json(lease).into_response())
        }
        LeaseAnswer::Nothing => Ok(StatusCode::NO_CONTENT.into_response()),
        LeaseAnswer::Gone => Err(ApiError::Unauthorized(
            "this worker's registration was removed (its pool's token was rotated?)".into(),
        )),
        // 410: this worker is gone from the pool's point of view; it must not ask again.
        LeaseAnswer::Drain => Ok((
            StatusCode::GONE,
            Json(serde_json::json!({
                "error": "this worker is draining: finish the running jobs, deregister and exit",
                "drain": true,
            })),
        )
            .into_response()),
    }
}

/// `POST /api/v1/workers/deregister`: the worker leaves (its token stops working); what it still runs is the
/// lease expiry's.
pub async fn deregister(State(state): State<AppState>, worker: Worker) -> ApiResult<StatusCode> {
    state.store.deregister_worker(worker.id).await?;
    tracing::info!(worker = %worker.name, "worker deregistered");
    state.queue.pools_changed();
    Ok(StatusCode::NO_CONTENT)
}

fn job_id(id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("no job {id:?}")))
}

/// How long a heartbeat may wait for news.
#[derive(Deserialize)]
pub struct HeartbeatWait {
    /// Seconds; none: answer at once.
    #[serde(default)]
    wait: Option<u64>,
}

/// `POST /api/v1/jobs/{id}/heartbeat[?wait=SECS]`.
pub async fn heartbeat(
    State(state): State<AppState>,
    _: Worker,
    LeaseId(lease): LeaseId,
    Path(id): Path<String>,
    Query(q): Query<HeartbeatWait>,
) -> ApiResult<Json<HeartbeatResponse>> {
    let wait = Duration::from_secs(q.wait.unwrap_or(0));
    let cancel = state.queue.heartbeat(job_id(&id)?, lease, wait).await?;
    Ok(Json(HeartbeatResponse { cancel }))
}

/// Where an upload starts.
#[derive(Deserialize)]
pub struct Offset {
    offset: u64,
}

/// `POST /api/v1/jobs/{id}/log?offset=N`: idempotent append; answers the log's length.
pub async fn append_log(
    State(state): State<AppState>,
    _: Worker,
    LeaseId(lease): LeaseId,
    Path(id): Path<String>,
    Query(q): Query<Offset>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let length = state
        .queue
        .append_log(job_id(&id)?, lease, q.offset, &body)
        .await?;
    Ok(Json(serde_json::json!({ "length": length })))
}

/// `POST /api/v1/jobs/{id}/steps`: a step started or ended.
pub async fn record_step(
    State(state): State<AppState>,
    _: Worker,
    LeaseId(lease): LeaseId,
    Path(id): Path<String>,
    Json(step): Json<StepReport>,
) -> ApiResult<StatusCode> {
    state.queue.record_step(job_id(&id)?, lease, step).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/jobs/{id}/complete`.
pub async fn complete(
    State(state): State<AppState>,
    worker: Worker,
    LeaseId(lease): LeaseId,
    Path(id): Path<String>,
    Json(report): Json<CompleteRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    let job = job_id(&id)?;
    let pipeline = state.queue.complete(job, lease, &report).await?;
    tracing::info!(%job, worker = %worker.name, failure = ?report.failure_kind, exit_code = ?report.exit_code, "job completed");
    Ok(Json(serde_json::json!({ "pipeline_status": pipeline })))
}
