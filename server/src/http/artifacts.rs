//! Artifact transfer (docs/api.md, "Worker protocol"): `PUT` by the job's worker under its lease, `GET` by dependents' workers and
//! users. Bodies stream in both directions; nothing holds a whole file in memory.

use super::AppState;
use super::auth::{ArtifactReader, job_for_artifacts};
use super::auth::{LeaseId, Worker};
use super::error::{ApiError, ApiResult};
use crate::artifacts::Upload;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_model::wire::{ArtifactRef, MODE_HEADER, SHA256_HEADER};
use serde::Deserialize;
use uuid::Uuid;

fn job_id(id: &str) -> ApiResult<Uuid> {
    id.parse()
        .map_err(|_| ApiError::NotFound(format!("no job {id:?}")))
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `PUT /api/v1/jobs/{id}/artifacts/{*path}` with `X-Gantry-Sha256` and `X-Gantry-Mode`: 201 with the entry.
pub async fn upload(
    State(state): State<AppState>,
    _: Worker,
    LeaseId(lease): LeaseId,
    Path((id, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<ArtifactRef>)> {
    let sha256 = header_text(&headers, SHA256_HEADER)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "an artifact upload needs `{SHA256_HEADER}: <hex SHA-256 of the body>`"
            ))
        })?;
    let mode = match header_text(&headers, MODE_HEADER) {
        None => 0o644,
        Some(text) => u32::from_str_radix(text, 8).map_err(|_| {
            ApiError::BadRequest(format!(
                "`{MODE_HEADER}` is octal permission bits, not {text:?}"
            ))
        })?,
    };
    let upload = Upload {
        path,
        mode,
        sha256: sha256.to_owned(),
    };
    let stored = state
        .artifacts
        .upload(job_id(&id)?, lease, upload, body.into_data_stream())
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Which attempt's artifacts.
#[derive(Deserialize)]
pub struct AttemptQuery {
    attempt: Option<u32>,
}

/// `GET /api/v1/jobs/{id}/artifacts`: the latest attempt's (or `?attempt=N`'s) artifacts.
pub async fn list(
    State(state): State<AppState>,
    reader: ArtifactReader,
    Path(id): Path<String>,
    Query(q): Query<AttemptQuery>,
) -> ApiResult<Json<Vec<ArtifactRef>>> {
    let job = job_for_artifacts(&state, reader, &id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    Ok(Json(state.store.job_artifacts(job.id, attempt).await?))
}

/// `GET /api/v1/jobs/{id}/artifacts/{*path}`: the bytes, with their checksum and mode in headers.
pub async fn download(
    State(state): State<AppState>,
    reader: ArtifactReader,
    Path((id, path)): Path<(String, String)>,
    Query(q): Query<AttemptQuery>,
) -> ApiResult<Response> {
    let job = job_for_artifacts(&state, reader, &id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let (artifact, bytes) = state.artifacts.download(job.id, attempt, &path).await?;
    // A header value must be visible ASCII: anything else in the name becomes `_`.
    let name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, artifact.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                header::HeaderName::from_static(SHA256_HEADER),
                artifact.sha256,
            ),
            (
                header::HeaderName::from_static(MODE_HEADER),
                format!("{:o}", artifact.mode),
            ),
        ],
        Body::from_stream(bytes),
    )
        .into_response())
}
