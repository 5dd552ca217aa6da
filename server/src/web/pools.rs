//! The pools' pages: every pool with its workers by state, and one pool's settings, workers, provider error and
//! the autoscaler's decisions (plain; readable by whoever may read the farm).

use super::error::PageResult;
use super::{render, time};
use crate::access::Caller;
use crate::http::AppState;
use crate::http::auth::require_farm_read;
use crate::http::error::ApiError;
use axum::extract::{Path, State};
use axum::response::Html;
use serde_json::json;

/// `GET /pools`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> PageResult<Html<String>> {
    require_farm_read(&state, caller)?;
    let pools: Vec<_> = state
        .store
        .list_pools()
        .await?
        .iter()
        .map(|p| p.view())
        .collect();
    render(
        &state,
        "pools.html",
        json!({ "pools": pools, "pool": null }),
    )
}

/// `GET /pools/{name}`.
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> PageResult<Html<String>> {
    require_farm_read(&state, caller)?;
    let pools = state.store.list_pools().await?;
    let pool = pools
        .iter()
        .find(|p| p.pool.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("no pool {name:?}")))?;
    let workers: Vec<_> = crate::autoscale::roster(state.store.as_ref(), Some(&name))
        .await?
        .into_iter()
        .map(|w| {
            json!({"name": w.name, "state": w.state, "running": w.running, "capacity": w.capacity,
                   "labels": w.labels, "last_seen": time(w.last_seen)})
        })
        .collect();
    let decisions: Vec<_> = state
        .store
        .pool_decisions(&name)
        .await?
        .into_iter()
        .map(|d| json!({"at": time(Some(d.at)), "from": d.from, "to": d.to, "reason": d.reason}))
        .collect();
    render(
        &state,
        "pools.html",
        json!({ "pools": null, "pool": pool.view(), "workers": workers, "decisions": decisions }),
    )
}
