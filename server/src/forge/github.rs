//! GitHub deliveries: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256`.

use super::{BuildEvent, HookError, HookEvent, is_commit_sha, is_zero_sha};
use serde::Deserialize;

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    pusher: Option<Person>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Commit {
    message: Option<String>,
    author: Option<Person>,
}

#[derive(Deserialize)]
struct Person {
    name: Option<String>,
}

/// The parts of `repository` used to find the Gantry repo.
#[derive(Deserialize)]
pub struct Repository {
    full_name: Option<String>,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct AnyEvent {
    repository: Option<Repository>,
}

impl Repository {
    /// The full name and every URL the forge gives, for finding the Gantry repo.
    fn identity(repository: Option<Repository>) -> (Option<String>, Vec<String>) {
        match repository {
            Some(r) => (
                r.full_name,
                [r.clone_url, r.ssh_url, r.html_url]
                    .into_iter()
                    .flatten()
                    .collect(),
            ),
            None => (None, Vec::new()),
        }
    }
}

/// The repository a delivery names (full name and URLs), read before the signature can be checked.
pub fn repository_of(body: &[u8]) -> (Option<String>, Vec<String>) {
    Repository::identity(
        serde_json::from_slice::<AnyEvent>(body)
            .ok()
            .and_then(|e| e.repository),
    )
}

/// Parses a verified delivery of event `event`.
pub fn parse(event: &str, body: &[u8]) -> Result<HookEvent, HookError> {
    match event {
        "push" => parse_push(body),
        "ping" => Ok(HookEvent::Ignored("ping: the webhook is set up".into())),
        other => Ok(HookEvent::Ignored(format!(
            "GitHub event {other:?} is not handled"
        ))),
    }
}

fn parse_push(body: &[u8]) -> Result<HookEvent, HookError> {
    let push: Push = serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed("GitHub push", e.to_string()))?;
    if push.deleted || is_zero_sha(&push.after) {
        return Ok(HookEvent::Ignored(format!("{} was deleted", push.git_ref)));
    }
    if !is_commit_sha(&push.after) {
        return Err(HookError::Malformed(
            "GitHub push",
            format!("`after` is not a commit sha: {:?}", push.after),
        ));
    }
    let (repo_full_name, repo_urls) = Repository::identity(push.repository);
    let author = push
        .head_commit
        .as_ref()
        .and_then(|c| c.author.as_ref())
        .and_then(|a| a.name.clone())
        .or_else(|| push.pusher.and_then(|p| p.name));
    Ok(HookEvent::Build(BuildEvent {
        git_ref: push.git_ref,
        commit: push.after,
        author,
        message: push.head_commit.and_then(|c| c.message),
        repo_full_name,
        repo_urls,
        pull_request: None,
    }))
}
