//! Webhook routes: find the repository, verify over the raw bytes, parse into a typed event, hand to intake.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::forge::{self, HookError, HookEvent, gitea, github, gitlab, verify_sha256_signature};
use crate::store::{NewDelivery, RepoRecord};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use gantry_model::wire::{GANTRY_DELIVERY_HEADER, GANTRY_SIGNATURE_HEADER, HookOutcome};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `?repo=NAME` picks the repository explicitly; `?wait=SECONDS` (at most [`MAX_WAIT_SECS`]) waits that long
/// for the pipeline file to be read, to answer with its verdict.
#[derive(Deserialize)]
pub struct HookQuery {
    repo: Option<String>,
    wait: Option<f64>,
}

/// The longest a delivery may ask to wait for its verdict: forges give up on a hook after ~10 s.
pub const MAX_WAIT_SECS: f64 = 5.0;

impl HookQuery {
    fn wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            self.wait
                .filter(|w| w.is_finite())
                .unwrap_or(0.0)
                .clamp(0.0, MAX_WAIT_SECS),
        )
    }
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

/// A delivery as it arrived, before it was checked.
struct Arrival<'a> {
    forge: &'static str,
    event: &'a str,
    id: Option<&'a str>,
    body: &'a Bytes,
}

impl Arrival<'_> {
    /// The delivery to record. A refused one's body is kept redacted only when it is small: nobody vouched for
    /// those bytes, so a big one is neither parsed nor copied (up to 25 MB, from anyone), only described.
    fn delivery(&self, repo: &RepoRecord, refused: bool) -> NewDelivery {
        let delivery_id = self
            .id
            .map(str::to_owned)
            .unwrap_or_else(|| hex::encode(Sha256::digest(self.body)));
        let body = if refused && self.body.len() > crate::intake::REFUSED_BODY_KEPT {
            format!(
                "(a body of {} bytes, not kept: a refused delivery keeps its body up to {} bytes)",
                self.body.len(),
                crate::intake::REFUSED_BODY_KEPT
            )
            .into_bytes()
        } else {
            forge::redact::redact_delivery(self.body, &repo.secret)
        };
        NewDelivery {
            repo_id: repo.id,
            delivery_id,
            forge: self.forge.into(),
            event: self.event.into(),
            body,
        }
    }
}

/// Hands a checked delivery to intake, or records why it was refused (so the repository's delivery list says
/// why a hook did nothing) and refuses it.
async fn receive(
    state: &AppState,
    repo: &RepoRecord,
    arrival: Arrival<'_>,
    checked: Result<HookEvent, HookError>,
    wait: std::time::Duration,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let d = arrival.delivery(repo, checked.is_err());
    match checked {
        Ok(event) => Ok(answer(state.intake.accept(repo, d, event, wait).await?)),
        Err(e) => {
            state.intake.refused(repo, d, &e.to_string()).await?;
            Err(e.into())
        }
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
    let event = header(&headers, "x-github-event").unwrap_or("unknown");
    let checked =
        verify_sha256_signature(&repo.secret, &body, header(&headers, "x-hub-signature-256"))
            .and_then(|()| github::parse(event, &body));
    let arrival = Arrival {
        forge: "github",
        event,
        id: header(&headers, "x-github-delivery"),
        body: &body,
    };
    receive(&state, &repo, arrival, checked, q.wait()).await
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
    let event = header(&headers, "x-gitlab-event").unwrap_or("unknown");
    let checked = gitlab::verify_token(&repo.secret, header(&headers, "x-gitlab-token"))
        .and_then(|()| gitlab::parse(event, &body));
    let arrival = Arrival {
        forge: "gitlab",
        event,
        id: first_header(&headers, &["idempotency-key", "x-gitlab-event-uuid"]),
        body: &body,
    };
    receive(&state, &repo, arrival, checked, q.wait()).await
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
    let event = first_header(&headers, &["x-forgejo-event", "x-gitea-event"]).unwrap_or("unknown");
    let signature = first_header(&headers, &["x-forgejo-signature", "x-gitea-signature"]);
    let checked = gitea::verify_signature(&repo.secret, &body, signature)
        .and_then(|()| gitea::parse(event, &body));
    let arrival = Arrival {
        forge: "gitea",
        event,
        id: first_header(&headers, &["x-forgejo-delivery", "x-gitea-delivery"]),
        body: &body,
    };
    receive(&state, &repo, arrival, checked, q.wait()).await
}

/// `POST /hooks/git`: the post-receive hook of a plain git server.
pub async fn git(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let repo = named_repo(&state, q.repo.as_deref(), "the git hook").await?;
    let checked = verify_sha256_signature(
        &repo.secret,
        &body,
        header(&headers, GANTRY_SIGNATURE_HEADER),
    )
    .and_then(|()| forge::git::parse(&body));
    // The hook sends a delivery id per ref update, so pushing the same update twice makes two pipelines, while a
    // retry of one notification stays one.
    let arrival = Arrival {
        forge: "git",
        event: "push",
        id: header(&headers, GANTRY_DELIVERY_HEADER),
        body: &body,
    };
    receive(&state, &repo, arrival, checked, q.wait()).await
}

/// `POST /hooks/generic`: a ref update from any tool, which may name its event (`manual`, `api`, …).
pub async fn generic(
    State(state): State<AppState>,
    Query(q): Query<HookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<HookOutcome>)> {
    let repo = named_repo(&state, q.repo.as_deref(), "a generic trigger").await?;
    let checked = verify_sha256_signature(
        &repo.secret,
        &body,
        header(&headers, GANTRY_SIGNATURE_HEADER),
    )
    .and_then(|()| forge::git::parse_generic(&body));
    let event = match &checked {
        Ok(HookEvent::Build(b)) => b.event,
        _ => "generic",
    };
    let arrival = Arrival {
        forge: "generic",
        event,
        id: header(&headers, GANTRY_DELIVERY_HEADER),
        body: &body,
    };
    receive(&state, &repo, arrival, checked, q.wait()).await
}

/// The repository a route without payload matching names with `?repo=NAME`.
async fn named_repo(state: &AppState, name: Option<&str>, who: &str) -> ApiResult<RepoRecord> {
    let name = name.ok_or_else(|| {
        ApiError::BadRequest(format!("{who} must name the repository: ?repo=NAME"))
    })?;
    find_repo(state, Some(name), None, &[]).await
}
