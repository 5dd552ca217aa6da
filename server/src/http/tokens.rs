//! `/api/v1/tokens` (admin): named API tokens with a scope, each answered once when made.

use super::AppState;
use super::auth::Admin;
use super::error::{ApiError, ApiResult};
use crate::store::ApiTokenRecord;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use gantry_model::wire::{NewToken, TokenList, TokenView};

fn token_view(t: ApiTokenRecord, token: Option<String>) -> TokenView {
    TokenView {
        name: t.name,
        scope: t.scope,
        created_at: t.created_at,
        token,
    }
}

/// A token's name is shown in lists and typed to revoke it: short, plain, and never a place for markup.
fn check_name(name: &str) -> ApiResult<()> {
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 64 || !plain {
        return Err(ApiError::BadRequest(format!(
            "invalid token name {name:?}: 1 to 64 letters, digits, `.`, `_` or `-`"
        )));
    }
    Ok(())
}

/// `POST /api/v1/tokens`: makes a token and answers it, the only time it is shown.
pub async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json(new): Json<NewToken>,
) -> ApiResult<impl IntoResponse> {
    check_name(&new.name)?;
    let token = crate::auth::generate_token(new.scope.as_str());
    let record = state
        .store
        .create_api_token(&new.name, new.scope, &crate::auth::hash_token(&token))
        .await?;
    tracing::info!(name = %record.name, scope = %record.scope, "API token created");
    Ok((StatusCode::CREATED, Json(token_view(record, Some(token)))))
}

/// `GET /api/v1/tokens`: every token's name, scope and age, never a value.
pub async fn list(State(state): State<AppState>, _: Admin) -> ApiResult<Json<TokenList>> {
    let tokens = state.store.list_api_tokens().await?;
    Ok(Json(TokenList {
        tokens: tokens.into_iter().map(|t| token_view(t, None)).collect(),
    }))
}

/// `DELETE /api/v1/tokens/{name}`: the token stops working at once.
pub async fn revoke(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.store.revoke_api_token(&name).await? {
        return Err(ApiError::NotFound(format!("no token named {name:?}")));
    }
    tracing::info!(%name, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
