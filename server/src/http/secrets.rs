//! A repository's secrets (admin): set, remove, list names. Values go in and never come out.

use super::AppState;
use super::auth::Admin;
use super::error::ApiResult;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `PUT /api/v1/repos/{repo}/secrets/{name}`'s body.
#[derive(Deserialize)]
pub struct SecretValue {
    value: String,
}

/// A secret as listed.
#[derive(Serialize)]
pub struct SecretView {
    name: String,
    updated_at: DateTime<Utc>,
}

/// `PUT /api/v1/repos/{repo}/secrets/{name}` (admin): sets or replaces it; 204.
pub async fn set(
    State(state): State<AppState>,
    _: Admin,
    Path((repo, name)): Path<(String, String)>,
    Json(body): Json<SecretValue>,
) -> ApiResult<StatusCode> {
    state.vault.set(&repo, &name, &body.value).await?;
    tracing::info!(%repo, secret = %name, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/repos/{repo}/secrets/{name}` (admin): 204, or 404 when there is no such secret.
pub async fn remove(
    State(state): State<AppState>,
    _: Admin,
    Path((repo, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    state.vault.remove(&repo, &name).await?;
    tracing::info!(%repo, secret = %name, "secret removed");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/repos/{repo}/secrets` (admin): `{"secrets": [{"name", "updated_at"}]}`, by name.
pub async fn list(
    State(state): State<AppState>,
    _: Admin,
    Path(repo): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let secrets: Vec<SecretView> = state
        .vault
        .list(&repo)
        .await?
        .into_iter()
        .map(|s| SecretView {
            name: s.name,
            updated_at: s.updated_at,
        })
        .collect();
    Ok(Json(serde_json::json!({ "secrets": secrets })))
}
