//! The one place where errors become HTTP status codes. 500 bodies say nothing internal; the details go to the log.

use crate::access::Denied;
use crate::artifacts::ArtifactError;
use crate::forge::HookError;
use crate::secrets::VaultError;
use crate::store::StoreError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error a handler answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's token (or its absence) does not allow the call.
    #[error(transparent)]
    Denied(#[from] crate::access::Denied),
    /// The caller is who it says but may not do this (a worker claiming labels its pool lacks).
    #[error("{0}")]
    Forbidden(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The server is at a limit it sets itself (open log streams); the client may try again later.
    #[error("{0}")]
    Unavailable(String),
    /// The request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A webhook failed verification.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Storage failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An artifact could not be stored or found.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A repository cannot be added as asked.
    #[error(transparent)]
    Repo(#[from] crate::repos::RepoError),
    /// A secret or credential could not be set or read.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The mirror could not be served over git's smart HTTP.
    #[error(transparent)]
    Git(#[from] crate::mirror::smart_http::SmartHttpError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = self.status_and_message();
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// The status of a store error, wherever it surfaced.
fn store_status(error: &StoreError) -> StatusCode {
    match error {
        StoreError::Conflict(_) | StoreError::StaleLease(_) | StoreError::Busy(_) => {
            StatusCode::CONFLICT
        }
        StoreError::LogGap { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The status it answers with and what it says (the API as JSON, pages as HTML): a store error answers as
    /// itself wherever it surfaced, and a server error only points to the log, which gets it.
    pub(crate) fn status_and_message(&self) -> (StatusCode, String) {
        let (status, message) = match self {
            ApiError::Artifact(ArtifactError::Store(e)) | ApiError::Vault(VaultError::Store(e)) => {
                (store_status(e), e.to_string())
            }
            _ => (self.status(), self.to_string()),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "request failed");
            return (status, "internal error (see the server's log)".to_owned());
        }
        (status, message)
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) | ApiError::Denied(Denied::SignedOut { .. }) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Denied(Denied::Insufficient { .. }) | ApiError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) | ApiError::Repo(_) => StatusCode::BAD_REQUEST,
            ApiError::Hook(HookError::Malformed(..)) => StatusCode::BAD_REQUEST,
            ApiError::Hook(_) => StatusCode::UNAUTHORIZED,
            ApiError::Store(e) => store_status(e),
            ApiError::Git(crate::mirror::smart_http::SmartHttpError::Push) => StatusCode::FORBIDDEN,
            ApiError::Git(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Vault(e) => match e {
                VaultError::Invalid(_) | VaultError::BadToken(_) | VaultError::TooMany => {
                    StatusCode::BAD_REQUEST
                }
                VaultError::NoRepo(_) | VaultError::NoSecret(..) => StatusCode::NOT_FOUND,
                VaultError::Store(_) | VaultError::Seal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Artifact(e) => match e {
                ArtifactError::BadPath(_) | ArtifactError::Body(_) => StatusCode::BAD_REQUEST,
                ArtifactError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                ArtifactError::Checksum { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ArtifactError::NotFound { .. } => StatusCode::NOT_FOUND,
                ArtifactError::Objects(_) | ArtifactError::Store(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
