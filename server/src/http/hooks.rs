//! Webhook routes: find the repository, verify over the raw bytes, parse into a typed event, hand to intake.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::forge::{self, github, verify_sha256_signature};
use crate::store::{NewDelivery, RepoRecord};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use gantry_model::wire::{GANTRY_DELIVERY_HEADER, GANTRY_SIGNATURE_HEADER, HookOutcome};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `?repo=NAME` picks the repository explicitly.
#[derive(Deserialize)]
pub struct HookQuery {
    repo: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn answer(outcome: HookOutcome) -> (StatusCode, Json<HookOutcome>) {
    let status = if outcome.outcome == "created" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(outcome))
}

async fn find_repo(
    state: &AppState,
    explicit: Option<&str>,
    full_name: Option<&str>,
    urls: &[String],
) -> ApiResult<RepoRecord> {
    if let Some(name) = explicit {
        return state
            .store
            .get_repo(name)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no repository named {name:?}")));
    }
    let repos = state.store.list_repos().await?;
    repos
        .into_iter()
        .find(|r| {
            full_name.is_some_and(|f| r.forge_full_name.as_deref() == Some(f))
                || urls.iter().any(|u| u == &r.url)
        })
        .ok_or_else(|| {
            ApiError::NotFound(
                "no repository matches this delivery (add `?repo=NAME` to the webhook URL)".into(),
            )
        })
}

fn delivery(
    repo: &RepoRecord,
    id: Option<&str>,
    forge: &str,
    event: &str,
    body: &Bytes,
) -> NewDelivery {
    let delivery_id = id
        .map(str::to_owned)
        .unwrap_or_else(|| hex::encode(Sha256::digest(body)));
    NewDelivery {
        repo_id: repo.id,
        delivery_id,
        forge: forge.into(),
        event: event.into(),
        body: body.to_vec(),
    }
}

/// `POST /hooks/github`.
pub async fn github(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let (full_name, urls) = github::repository_of(&body);
    let repo = find_repo(&state, q.repo.as_deref(), full_name.as_deref(), &urls).await?;
    verify_sha256_signature(&repo.secret, &body, header(&headers, "x-hub-signature-256"))?;
    let event = header(&headers, "x-github-event").unwrap_or("unknown");
    let parsed = github::parse(event, &body)?;
    let d = delivery(
        &repo,
        header(&headers, "x-github-delivery"),
        "github",
        event,
        &body,
    );
    Ok(answer(state.intake.accept(&repo, d, parsed).await?))
}

/// `POST /hooks/git`: the post-receive hook of a plain git server.
pub async fn git(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let name = q.repo.as_deref().ok_or_else(|| {
        ApiError::BadRequest("the git hook must name the repository: ?repo=NAME".into())
    })?;
    let repo = find_repo(&state, Some(name), None, &[]).await?;
    verify_sha256_signature(
        &repo.secret,
        &body,
        header(&headers, GANTRY_SIGNATURE_HEADER),
    )?;
    let parsed = forge::git::parse(&body)?;
    // The hook sends a delivery id per ref update, so pushing the same update twice makes two pipelines, while a
    // retry of one notification stays one.
    let d = delivery(
        &repo,
        header(&headers, GANTRY_DELIVERY_HEADER),
        "git",
        "push",
        &body,
    );
    Ok(answer(state.intake.accept(&repo, d, parsed).await?))
}
