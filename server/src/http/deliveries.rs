//! `GET /api/v1/repos/{repo}/deliveries[/{id}]`: the deliveries a repository received and what became of each,
//! so a user can see why a hook did nothing.

use super::AppState;
use super::auth::readable_repo;
use super::error::ApiResult;
use crate::access::Caller;
use crate::store::DeliveryRecord;
use axum::Json;
use axum::extract::{Path, State};
use gantry_model::wire::{DeliveryList, DeliveryView};

/// The API's view of a delivery.
pub fn delivery_view(d: DeliveryRecord) -> DeliveryView {
    DeliveryView {
        id: d.id,
        delivery_id: d.delivery_id,
        forge: d.forge,
        event: d.event,
        outcome: d.outcome,
        reason: d.reason,
        pipeline: d.pipeline,
        received_at: d.received_at,
        body: d.body.map(|b| String::from_utf8_lossy(&b).into_owned()),
    }
}

/// `GET /api/v1/repos/{repo}/deliveries`: the newest first, without bodies.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(repo): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    let repo = readable_repo(&state, caller, &repo).await?;
    let rows = state
        .store
        .recent_deliveries(repo.id, state.config.deliveries_kept)
        .await?;
    Ok(Json(DeliveryList {
        deliveries: rows.into_iter().map(delivery_view).collect(),
    }))
}

/// `GET /api/v1/repos/{repo}/deliveries/{id}`: one, with its redacted body.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((repo, id)): Path<(String, i64)>,
) -> ApiResult<Json<DeliveryView>> {
    let repo = readable_repo(&state, caller, &repo).await?;
    let d = crate::read_model::delivery(state.store.as_ref(), &repo, id).await?;
    Ok(Json(delivery_view(d)))
}
