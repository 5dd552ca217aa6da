//! The dashboard: server-rendered pages (tera, autoescaped, no external assets); the job page follows its log
//! live through the SSE stream.

use crate::access::Caller;
use crate::http::AppState;
use crate::http::auth::{readable_job, readable_pipeline, readable_repo, unreadable_repos};
use crate::http::error::ApiError;
use crate::read_model;
use crate::store::{JobRecord, PipelineRecord};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Html;
use axum::routing::get;
use chrono::{DateTime, Utc};
use error::PageResult;
use serde_json::json;

/// The dashboard's templates, compiled into the binary.
pub fn templates() -> Result<tera::Tera, tera::Error> {
    let mut tera = tera::Tera::default();
    tera.add_raw_templates(vec![
        ("base.html", include_str!("../../../templates/base.html")),
        (
            "pipelines.html",
            include_str!("../../../templates/pipelines.html"),
        ),
        (
            "pipeline.html",
            include_str!("../../../templates/pipeline.html"),
        ),
        ("job.html", include_str!("../../../templates/job.html")),
        (
            "delivery.html",
            include_str!("../../../templates/delivery.html"),
        ),
        ("pools.html", include_str!("../../../templates/pools.html")),
    ])?;
    Ok(tera)
}

mod error;
mod pools;

pub use error::no_route;

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/repos/{repo}", get(repo))
        .route("/repos/{repo}/pipelines/{number}", get(pipeline))
        .route("/repos/{repo}/deliveries/{id}", get(delivery))
        .route("/jobs/{id}", get(job))
        .route("/pools", get(pools::list))
        .route("/pools/{name}", get(pools::show))
}

fn render(state: &AppState, name: &str, context: serde_json::Value) -> PageResult<Html<String>> {
    let context = tera::Context::from_serialize(context).expect("page contexts are JSON objects");
    state
        .templates
        .render(name, &context)
        .map(Html)
        .map_err(|e| {
            tracing::error!(template = name, error = ?e, "rendering failed");
            ApiError::Store(crate::store::StoreError::Corrupt(format!(
                "template {name}"
            )))
            .into()
        })
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// `12.3 s`, `4 min 5 s`; running things count up to now.
fn duration(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> String {
    let Some(start) = start else {
        return String::new();
    };
    let ms = (end.unwrap_or_else(Utc::now) - start)
        .num_milliseconds()
        .max(0);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn pipeline_json(p: &PipelineRecord) -> serde_json::Value {
    json!({
        "repo": p.repo, "number": p.number, "status": p.status, "git_ref": p.git_ref, "commit": p.commit,
        "event": p.event, "author": p.author, "message": p.message, "error": p.error,
        "created_at": time(Some(p.created_at)), "duration": duration(p.started_at, p.finished_at),
        "pull_request": p.pull_request,
    })
}

fn job_json(j: &JobRecord) -> serde_json::Value {
    json!({
        "id": j.id, "name": j.name, "status": j.status, "exit_code": j.exit_code, "failure_kind": j.failure_kind,
        "message": j.message, "attempt": j.attempt, "worker": j.worker_name, "started_at": time(j.started_at),
        "duration": duration(j.started_at, j.finished_at),
    })
}

async fn index(State(state): State<AppState>, caller: Caller) -> PageResult<Html<String>> {
    let hidden = unreadable_repos(&state, caller).await?;
    let pipelines = state.store.recent_pipelines(100).await?;
    let list: Vec<_> = pipelines
        .iter()
        .filter(|p| !hidden.contains(&p.repo))
        .map(pipeline_json)
        .collect();
    render(
        &state,
        "pipelines.html",
        json!({ "repo": null, "pipelines": list }),
    )
}

/// The most of a job's log its page shows (its end).
const PAGE_LOG_BYTES: usize = 1 << 20;

/// Deliveries listed on a repository's page.
const DELIVERIES_SHOWN: u32 = 20;

fn delivery_json(d: &crate::store::DeliveryRecord) -> serde_json::Value {
    json!({
        "id": d.id, "delivery_id": d.delivery_id, "forge": d.forge, "event": d.event, "outcome": d.outcome,
        "reason": d.reason, "pipeline": d.pipeline, "received_at": time(Some(d.received_at)),
    })
}

async fn repo(
    State(state): State<AppState>,
    caller: Caller,
    Path(repo): Path<String>,
) -> PageResult<Html<String>> {
    let record = readable_repo(&state, caller, &repo).await?;
    let pipelines = state.store.list_pipelines(&repo, None, 100).await?;
    let list: Vec<_> = pipelines.iter().map(pipeline_json).collect();
    let deliveries = state
        .store
        .recent_deliveries(record.id, DELIVERIES_SHOWN)
        .await?;
    let deliveries: Vec<_> = deliveries.iter().map(delivery_json).collect();
    render(
        &state,
        "pipelines.html",
        json!({ "repo": repo, "pipelines": list, "deliveries": deliveries }),
    )
}

async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    Path((repo, id)): Path<(String, i64)>,
) -> PageResult<Html<String>> {
    let record = readable_repo(&state, caller, &repo).await?;
    let d = read_model::delivery(state.store.as_ref(), &record, id).await?;
    let body = d
        .body
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    // A JSON body reads better indented; anything else is shown as it came.
    let body = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| body.into_owned());
    render(
        &state,
        "delivery.html",
        json!({ "repo": repo, "d": delivery_json(&d), "body": body }),
    )
}

async fn pipeline(
    State(state): State<AppState>,
    caller: Caller,
    Path((repo, number)): Path<(String, i64)>,
) -> PageResult<Html<String>> {
    let p = readable_pipeline(&state, caller, &repo, number).await?;
    let detail = read_model::pipeline_detail(state.store.as_ref(), p).await?;
    let jobs: Vec<_> = detail
        .jobs
        .iter()
        .map(|j| {
            let mut view = job_json(&j.job);
            view["pending_reason"] = json!(j.pending_reason);
            view
        })
        .collect();
    render(
        &state,
        "pipeline.html",
        json!({ "p": pipeline_json(&detail.pipeline), "jobs": jobs, "tests": detail.tests }),
    )
}

async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> PageResult<Html<String>> {
    let (j, p) = readable_job(&state, caller, &id).await?;
    let steps = state.store.job_steps(j.id, j.attempt).await?;
    let artifacts = state.store.job_artifacts(j.id, j.attempt).await?;
    // A page shows at most the log's last PAGE_LOG_BYTES (the live stream goes on from its end); the whole log
    // is a link away. Rendering 64 MiB into one page would cost the server and the browser that much each.
    let length = state.store.log_length(j.id, j.attempt).await?;
    let shown_from = length.saturating_sub(PAGE_LOG_BYTES as u64);
    let log = state
        .store
        .read_log(j.id, j.attempt, shown_from, PAGE_LOG_BYTES)
        .await?;
    // Each step shows the bytes from its offset to the next step's; bytes before the first step are a preamble.
    // Offsets come from the worker: clamp them into the shown part and keep them in order, whatever it sent.
    let mut floor = 0;
    let bounds: Vec<usize> = steps
        .iter()
        .map(|s| {
            floor = (s.log_offset.saturating_sub(shown_from) as usize).clamp(floor, log.len());
            floor
        })
        .collect();
    let preamble =
        String::from_utf8_lossy(&log[..bounds.first().copied().unwrap_or(log.len())]).into_owned();
    let steps_json: Vec<_> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let end = bounds.get(i + 1).copied().unwrap_or(log.len());
            json!({
                "index": s.index, "number": s.index + 1, "command": s.command, "log_offset": s.log_offset,
                "started_at": time(Some(s.started_at)), "duration": duration(Some(s.started_at), s.finished_at),
                "exit_code": s.exit_code, "output": String::from_utf8_lossy(&log[bounds[i]..end]),
            })
        })
        .collect();
    let context = json!({
        "p": pipeline_json(&p), "job": job_json(&j), "steps": steps_json, "preamble": preamble,
        "log_length": length, "log_skipped": shown_from, "live": !j.status.is_finished(),
        "artifacts": artifacts,
    });
    render(&state, "job.html", context)
}
