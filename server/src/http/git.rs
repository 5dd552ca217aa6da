//! `GET`/`POST /api/v1/jobs/{id}/source.git/…` (docs/api.md, "Worker protocol"): the repository of a job, from
//! the server's mirror over git's smart HTTP, fetch only, for the worker holding the job's lease — so that
//! workers never fetch from the forge, and a new worker needs no forge credential.

use super::AppState;
use super::auth::{LeaseId, Worker};
use super::error::{ApiError, ApiResult};
use crate::mirror::smart_http::{self, GitRequest};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gantry_model::JobStatus;

/// The most a fetch's request body (its wants and haves) may hold.
const MAX_REQUEST: usize = 16 << 20;

/// Serves the job's repository to the worker that holds its lease.
pub async fn serve(
    State(state): State<AppState>,
    worker: Worker,
    LeaseId(lease): LeaseId,
    Path((id, rest)): Path<(String, String)>,
    (method, RawQuery(query), headers): (Method, RawQuery, HeaderMap),
    body: Bytes,
) -> ApiResult<Response> {
    let job = super::api::find_job(&state, &id).await?;
    let holds_it = job.status == JobStatus::Running
        && job.lease_id == Some(lease)
        && job.worker_name.as_deref() == Some(worker.name.as_str());
    if !holds_it {
        return Err(ApiError::Forbidden(format!(
            "job {id}'s source is for the worker holding its lease"
        )));
    }
    if body.len() > MAX_REQUEST {
        return Err(ApiError::BadRequest(
            "the fetch request is too large".into(),
        ));
    }
    let pipeline = state
        .store
        .get_pipeline_by_id(job.pipeline_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline for job {id}")))?;
    // A fetch starts with `info/refs`: the commit is made sure of then, in this server's own mirror (another
    // server of the farm may have read the pipeline).
    if rest == "info/refs" {
        let record = state
            .store
            .get_repo(&pipeline.repo)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no repository {}", pipeline.repo)))?;
        state
            .intake
            .mirrors()
            .read_file_at(
                &pipeline.repo,
                &record.url,
                &pipeline.commit,
                &pipeline.git_ref,
                gantry_model::pipeline::PIPELINE_FILE,
            )
            .await
            .map_err(|e| ApiError::Git(smart_http::SmartHttpError::Backend(e.to_string())))?;
    }
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let request = GitRequest {
        method: method.as_str(),
        path_info: format!("/{}.git/{rest}", pipeline.repo),
        query: query.as_deref().unwrap_or(""),
        content_type: text(header::CONTENT_TYPE),
        content_encoding: text(header::CONTENT_ENCODING),
        git_protocol: text(header::HeaderName::from_static("git-protocol")),
    };
    let smart_http::GitResponse {
        status,
        headers,
        body,
        child,
    } = smart_http::serve(state.intake.mirrors().root(), request, body.to_vec()).await?;
    let mut response =
        Response::builder().status(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in &headers {
        response = response.header(name, value);
    }
    // The program lives as long as its output is read: a client gone away drops the stream, and kills it.
    let body = Body::from_stream(futures::StreamExt::map(
        tokio_util::io::ReaderStream::new(body),
        move |chunk| {
            let _ = &child;
            chunk
        },
    ));
    response
        .body(body)
        .map_err(|e| ApiError::BadRequest(e.to_string()))
        .map(IntoResponse::into_response)
}
