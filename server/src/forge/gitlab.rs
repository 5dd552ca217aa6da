//! GitLab deliveries: `X-Gitlab-Event` (`Push Hook`, `Tag Push Hook`, `Merge Request Hook`), the secret token
//! sent verbatim in `X-Gitlab-Token`, delivery ids in `Idempotency-Key` (17.4+, stable across retries) or
//! `X-Gitlab-Event-UUID`.

use super::{BuildEvent, HookError, HookEvent, is_commit_sha, is_zero_sha, push_event_of};
use gantry_model::wire::PullRequest;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Compares the `X-Gitlab-Token` header with the repository's secret in constant time (no HMAC: GitLab sends
/// the token itself).
pub fn verify_token(secret: &str, header: Option<&str>) -> Result<(), HookError> {
    let token = header
        .filter(|t| !t.is_empty())
        .ok_or(HookError::MissingSignature)?;
    // Digests first, so the comparison takes the same time whatever the lengths.
    if bool::from(Sha256::digest(token).ct_eq(&Sha256::digest(secret))) {
        Ok(())
    } else {
        Err(HookError::BadSignature)
    }
}

#[derive(Deserialize)]
struct Project {
    path_with_namespace: Option<String>,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct AnyEvent {
    project: Option<Project>,
}

fn identity(project: Option<Project>) -> (Option<String>, Vec<String>) {
    match project {
        Some(p) => (
            p.path_with_namespace,
            [p.git_http_url, p.git_ssh_url, p.web_url]
                .into_iter()
                .flatten()
                .collect(),
        ),
        None => (None, Vec::new()),
    }
}

/// The project a delivery names (path with namespace and URLs), read before the token can be checked.
pub fn repository_of(body: &[u8]) -> (Option<String>, Vec<String>) {
    identity(
        serde_json::from_slice::<AnyEvent>(body)
            .ok()
            .and_then(|e| e.project),
    )
}

/// Parses a verified delivery of `X-Gitlab-Event` `event`.
pub fn parse(event: &str, body: &[u8]) -> Result<HookEvent, HookError> {
    match event {
        "Push Hook" | "Tag Push Hook" => parse_push(body),
        "Merge Request Hook" => parse_merge_request(body),
        other => Ok(HookEvent::Ignored(format!(
            "GitLab event {other:?} is not handled"
        ))),
    }
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    checkout_sha: Option<String>,
    user_name: Option<String>,
    #[serde(default)]
    commits: Vec<Commit>,
    project: Option<Project>,
}

#[derive(Deserialize)]
struct Commit {
    id: Option<String>,
    message: Option<String>,
    author: Option<Author>,
}

#[derive(Deserialize)]
struct Author {
    name: Option<String>,
}

fn parse_push(body: &[u8]) -> Result<HookEvent, HookError> {
    let push: Push = serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed("GitLab push", e.to_string()))?;
    if is_zero_sha(&push.after) || push.checkout_sha.is_none() && push.commits.is_empty() {
        return Ok(HookEvent::Ignored(format!("{} was deleted", push.git_ref)));
    }
    // `checkout_sha` is the commit the ref now points at (for an annotated tag, the tagged commit; `after` is
    // then the tag object).
    let commit = push
        .checkout_sha
        .clone()
        .unwrap_or_else(|| push.after.clone());
    if !is_commit_sha(&commit) || !push.git_ref.starts_with("refs/") {
        return Err(HookError::Malformed(
            "GitLab push",
            format!("{:?} at {commit:?} is not a ref and commit", push.git_ref),
        ));
    }
    let head = push
        .commits
        .into_iter()
        .find(|c| c.id.as_deref() == Some(&commit));
    let (message, author) = match head {
        Some(c) => (c.message, c.author.and_then(|a| a.name)),
        None => (None, None),
    };
    let (repo_full_name, repo_urls) = identity(push.project);
    Ok(HookEvent::Build(BuildEvent {
        event: push_event_of(&push.git_ref),
        git_ref: push.git_ref,
        commit,
        author: author.or(push.user_name),
        message,
        repo_full_name,
        repo_urls,
        pull_request: None,
    }))
}

#[derive(Deserialize)]
struct MergeRequestEvent {
    user: Option<User>,
    project: Option<Project>,
    object_attributes: MergeRequest,
}

#[derive(Deserialize)]
struct User {
    name: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequest {
    action: Option<String>,
    iid: i64,
    title: Option<String>,
    source_branch: String,
    target_branch: String,
    source_project_id: Option<i64>,
    target_project_id: Option<i64>,
    /// Present on an `update` only when it brought new commits.
    oldrev: Option<String>,
    last_commit: LastCommit,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

fn parse_merge_request(body: &[u8]) -> Result<HookEvent, HookError> {
    let event: MergeRequestEvent = serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed("GitLab merge request", e.to_string()))?;
    let mr = event.object_attributes;
    let action = mr.action.as_deref().unwrap_or("");
    let builds = match action {
        "open" | "reopen" => true,
        "update" => mr.oldrev.is_some(),
        _ => false,
    };
    if !builds {
        let what = if action == "update" {
            "an update without new commits".to_owned()
        } else {
            format!("action {action:?}")
        };
        return Ok(HookEvent::Ignored(format!(
            "merge request {what} does not change the code (built: open, reopen, update with new commits)"
        )));
    }
    if !is_commit_sha(&mr.last_commit.id) {
        return Err(HookError::Malformed(
            "GitLab merge request",
            format!(
                "the last commit is not a commit sha: {:?}",
                mr.last_commit.id
            ),
        ));
    }
    let from_fork = match (mr.source_project_id, mr.target_project_id) {
        (Some(source), Some(target)) => source != target,
        _ => true,
    };
    let (repo_full_name, repo_urls) = identity(event.project);
    Ok(HookEvent::Build(BuildEvent {
        // GitLab keeps every merge request's head here in the target project, forks included.
        git_ref: format!("refs/merge-requests/{}/head", mr.iid),
        commit: mr.last_commit.id,
        author: event.user.and_then(|u| u.name),
        message: mr.title,
        repo_full_name,
        repo_urls,
        pull_request: Some(PullRequest {
            number: mr.iid,
            source_branch: mr.source_branch,
            target_branch: mr.target_branch,
            from_fork,
        }),
        event: "pull_request",
    }))
}
