//! `/api/v1/pools` and `/api/v1/workers` (docs/api.md, "Workers and pools"): pools made and changed by the admin
//! (those of the configuration file only there), their registration tokens answered once, the autoscaler's
//! decisions, and the workers with their state.

use super::AppState;
use super::auth::{Admin, require_farm_read};
use super::error::{ApiError, ApiResult};
use crate::access::Caller;
use crate::auth::{generate_token, hash_token};
use crate::store::PoolRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gantry_model::wire::{
    DecisionList, DecisionView, PoolList, PoolPatch, PoolSpec, PoolToken, PoolView, WorkerList,
};

async fn pool_named(state: &AppState, name: &str) -> ApiResult<PoolRecord> {
    state
        .store
        .find_pool(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pool {name:?}")))
}

/// `GET /api/v1/pools`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<PoolList>> {
    require_farm_read(&state, caller)?;
    let pools = state.store.list_pools().await?;
    Ok(Json(PoolList {
        pools: pools.iter().map(PoolRecord::view).collect(),
    }))
}

/// `POST /api/v1/pools` (admin): makes a pool and answers its registration token, the only time it is shown.
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json(spec): Json<PoolSpec>,
) -> ApiResult<impl IntoResponse> {
    if spec.exec.is_some() || spec.kubernetes.is_some() {
        // An exec pool's commands run on the server's host as the server's user, and a pod template says what
        // runs in the cluster with which privileges: the host's operator writes them, in the configuration
        // file; an API token must not be a shell on the server or a way into the cluster.
        return Err(ApiError::Forbidden(
            "exec and kubernetes pools run what their settings say on the server's host or in the cluster: \
             write them in the configuration file ([[pool]] with [pool.exec] or [pool.kubernetes])"
                .into(),
        ));
    }
    let pool = spec.check().map_err(ApiError::BadRequest)?;
    let token = generate_token("pool");
    state.store.create_pool(&pool, &hash_token(&token)).await?;
    tracing::info!(pool = %pool.name, provider = pool.provider.as_str(), "pool created");
    state.queue.pools_changed();
    Ok((
        StatusCode::CREATED,
        Json(PoolToken {
            pool: pool.name,
            token,
        }),
    ))
}

/// `PATCH /api/v1/pools/{name}` (admin): changes the keys given; 409 for a pool of the configuration file.
pub async fn update(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    Json(patch): Json<PoolPatch>,
) -> ApiResult<Json<PoolView>> {
    let record = pool_named(&state, &name).await?;
    let pool = record.pool.patched(&patch).map_err(ApiError::BadRequest)?;
    state.store.update_pool(&pool).await?;
    state.queue.pools_changed();
    Ok(Json(pool_named(&state, &name).await?.view()))
}

/// `POST /api/v1/pools/{name}/token` (admin): a new registration token; the old ones, and the registrations
/// made with them, stop working at once.
pub async fn rotate_token(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<Json<PoolToken>> {
    let token = generate_token("pool");
    state
        .store
        .rotate_pool_token(&name, &hash_token(&token))
        .await?;
    tracing::info!(pool = %name, "pool token rotated");
    // The workers that registered with the old token are waiting in long-polls: they hear it now.
    state.queue.drained();
    Ok(Json(PoolToken { pool: name, token }))
}

/// `GET /api/v1/pools/{name}/decisions`: the autoscaler's decisions, newest first.
pub async fn decisions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<DecisionList>> {
    require_farm_read(&state, caller)?;
    pool_named(&state, &name).await?;
    let decisions = state.store.pool_decisions(&name).await?;
    Ok(Json(DecisionList {
        decisions: decisions
            .into_iter()
            .map(|d| DecisionView {
                at: d.at,
                from: d.from,
                to: d.to,
                reason: d.reason,
            })
            .collect(),
    }))
}

/// `GET /api/v1/workers`.
pub async fn workers(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<WorkerList>> {
    require_farm_read(&state, caller)?;
    let workers = crate::autoscale::roster(state.store.as_ref(), None).await?;
    Ok(Json(WorkerList { workers }))
}

/// `GET /metrics`: Prometheus' text format; open like `/healthz` (it names pools and counts, nothing else).
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
