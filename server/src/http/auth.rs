//! Who is calling: extractors for the admin, a pool's registration token, and a registered worker.

use super::AppState;
use super::error::ApiError;
use crate::auth::hash_token;
use crate::store::TokenRecord;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

async fn token_of(parts: &Parts, state: &AppState) -> Result<TokenRecord, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("this call needs `Authorization: Bearer <token>`".into())
        })?;
    state
        .store
        .find_token(&hash_token(header.trim()))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))
}

/// The caller holds the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_of(parts, state).await? {
            TokenRecord::Admin => Ok(Admin),
            _ => Err(ApiError::Unauthorized(
                "this call needs the admin token".into(),
            )),
        }
    }
}

/// The caller holds a pool's registration token.
pub struct PoolMember(pub String);

impl FromRequestParts<AppState> for PoolMember {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_of(parts, state).await? {
            TokenRecord::Pool(pool) => Ok(PoolMember(pool)),
            _ => Err(ApiError::Unauthorized(
                "registering needs a pool token".into(),
            )),
        }
    }
}

/// The caller is a registered worker.
pub struct Worker {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

impl FromRequestParts<AppState> for Worker {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_of(parts, state).await? {
            TokenRecord::Worker { id, name } => Ok(Worker { id, name }),
            _ => Err(ApiError::Unauthorized(
                "this call needs a worker token".into(),
            )),
        }
    }
}

/// The lease id a worker's job call carries in `X-Gantry-Lease`.
pub struct LeaseId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for LeaseId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get(gantry_model::wire::LEASE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(LeaseId)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "job calls need the `{}` header",
                    gantry_model::wire::LEASE_HEADER
                ))
            })
    }
}
