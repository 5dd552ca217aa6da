//! Webhook routes: find the repository, verify over the raw bytes, parse into a typed event, hand to intake.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::forge::{self, gitea, github, gitlab, verify_sha256_signature};
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

/// The first of `names` the delivery carries (Forgejo sends its own headers beside Gitea's).
fn first_header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| header(headers, n))
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
        body: forge::redact::redact_delivery(body, &repo.secret),
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

/// `POST /hooks/gitlab`.
pub async fn gitlab(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let (full_name, urls) = gitlab::repository_of(&body);
    let repo = find_repo(&state, q.repo.as_deref(), full_name.as_deref(), &urls).await?;
    gitlab::verify_token(&repo.secret, header(&headers, "x-gitlab-token"))?;
    let event = header(&headers, "x-gitlab-event").unwrap_or("unknown");
    let parsed = gitlab::parse(event, &body)?;
    let id = first_header(&headers, &["idempotency-key", "x-gitlab-event-uuid"]);
    let d = delivery(&repo, id, "gitlab", event, &body);
    Ok(answer(state.intake.accept(&repo, d, parsed).await?))
}

/// `POST /hooks/gitea` and `/hooks/forgejo`.
pub async fn gitea(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let (full_name, urls) = gitea::repository_of(&body);
    let repo = find_repo(&state, q.repo.as_deref(), full_name.as_deref(), &urls).await?;
    let signature = first_header(&headers, &["x-forgejo-signature", "x-gitea-signature"]);
    gitea::verify_signature(&repo.secret, &body, signature)?;
    let event = first_header(&headers, &["x-forgejo-event", "x-gitea-event"]).unwrap_or("unknown");
    let parsed = gitea::parse(event, &body)?;
    let id = first_header(&headers, &["x-forgejo-delivery", "x-gitea-delivery"]);
    let d = delivery(&repo, id, "gitea", event, &body);
    Ok(answer(state.intake.accept(&repo, d, parsed).await?))
}

/// `POST /hooks/generic`: a ref update from any tool, which may name its event (`manual`, `api`, …).
pub async fn generic(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let name = q.repo.as_deref().ok_or_else(|| {
        ApiError::BadRequest("a generic trigger must name the repository: ?repo=NAME".into())
    })?;
    let repo = find_repo(&state, Some(name), None, &[]).await?;
    verify_sha256_signature(
        &repo.secret,
        &body,
        header(&headers, GANTRY_SIGNATURE_HEADER),
    )?;
    let parsed = forge::git::parse_generic(&body)?;
    let event = match &parsed {
        forge::HookEvent::Build(b) => b.event,
        forge::HookEvent::Ignored(_) => "push",
    };
    let d = delivery(
        &repo,
        header(&headers, GANTRY_DELIVERY_HEADER),
        "generic",
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
