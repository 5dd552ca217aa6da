//! The payload shapes GitHub and Gitea/Forgejo share (Gitea's webhooks copy GitHub's): `push` and
//! `pull_request`, read into a [`BuildEvent`]. Each forge's module adds its headers, signature and event names.

use super::{BuildEvent, HookError, HookEvent, is_commit_sha, is_zero_sha, push_event_of};
use gantry_model::wire::PullRequest;
use serde::Deserialize;

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    #[serde(default)]
    commits: Vec<Commit>,
    pusher: Option<Person>,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Commit {
    id: Option<String>,
    message: Option<String>,
    author: Option<Person>,
}

#[derive(Deserialize)]
struct Person {
    name: Option<String>,
    login: Option<String>,
    username: Option<String>,
    full_name: Option<String>,
}

impl Person {
    fn display(self) -> Option<String> {
        [self.full_name, self.name, self.login, self.username]
            .into_iter()
            .flatten()
            .find(|n| !n.is_empty())
    }
}

/// The parts of `repository` used to find the Gantry repo (and, in pull requests, to tell a fork).
#[derive(Deserialize)]
pub struct Repository {
    id: Option<i64>,
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

    fn same_as(&self, other: &Repository) -> bool {
        match (self.id, other.id) {
            (Some(a), Some(b)) => a == b,
            _ => self.full_name.is_some() && self.full_name == other.full_name,
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

/// A push of a branch or tag; a deletion is ignored.
pub fn parse_push(forge: &'static str, body: &[u8]) -> Result<HookEvent, HookError> {
    let push: Push =
        serde_json::from_slice(body).map_err(|e| HookError::Malformed(forge, e.to_string()))?;
    if push.deleted || is_zero_sha(&push.after) {
        return Ok(HookEvent::Ignored(format!("{} was deleted", push.git_ref)));
    }
    if !is_commit_sha(&push.after) {
        return Err(HookError::Malformed(
            forge,
            format!("`after` is not a commit sha: {:?}", push.after),
        ));
    }
    if !push.git_ref.starts_with("refs/") {
        return Err(HookError::Malformed(
            forge,
            format!("{:?} is not a full ref name", push.git_ref),
        ));
    }
    let (repo_full_name, repo_urls) = Repository::identity(push.repository);
    // Gitea sends no head_commit in older versions: the pushed commit is then the one in `commits` with its id.
    let after = push.after.clone();
    let head = push.head_commit.or_else(|| {
        push.commits
            .into_iter()
            .find(|c| c.id.as_deref() == Some(&after))
    });
    let (message, author) = match head {
        Some(c) => (c.message, c.author.and_then(Person::display)),
        None => (None, None),
    };
    Ok(HookEvent::Build(BuildEvent {
        event: push_event_of(&push.git_ref),
        git_ref: push.git_ref,
        commit: push.after,
        author: author.or_else(|| push.pusher.and_then(Person::display)),
        message,
        repo_full_name,
        repo_urls,
        pull_request: None,
    }))
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: i64,
    pull_request: PullRequestBody,
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct PullRequestBody {
    title: Option<String>,
    user: Option<Person>,
    head: Branch,
    base: Branch,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    branch: String,
    sha: String,
    repo: Option<Repository>,
}

/// A pull request opened or given new commits (`actions`); other actions are ignored. The pipeline builds the
/// head commit through the forge's `refs/pull/N/head`, which exists in the base repository even for forks.
pub fn parse_pull_request(
    forge: &'static str,
    actions: &[&str],
    body: &[u8],
) -> Result<HookEvent, HookError> {
    let event: PullRequestEvent =
        serde_json::from_slice(body).map_err(|e| HookError::Malformed(forge, e.to_string()))?;
    if !actions.contains(&event.action.as_str()) {
        return Ok(HookEvent::Ignored(format!(
            "pull request action {:?} does not change the code (built: {})",
            event.action,
            actions.join(", ")
        )));
    }
    let pr = event.pull_request;
    if !is_commit_sha(&pr.head.sha) {
        return Err(HookError::Malformed(
            forge,
            format!("the head sha is not a commit sha: {:?}", pr.head.sha),
        ));
    }
    // A head repository that is gone (a deleted fork) is no longer the base repository either.
    let from_fork = match (&pr.head.repo, &pr.base.repo) {
        (Some(head), Some(base)) => !head.same_as(base),
        _ => true,
    };
    let (repo_full_name, repo_urls) = Repository::identity(event.repository.or(pr.base.repo));
    Ok(HookEvent::Build(BuildEvent {
        git_ref: format!("refs/pull/{}/head", event.number),
        commit: pr.head.sha,
        author: pr.user.and_then(Person::display),
        message: pr.title,
        repo_full_name,
        repo_urls,
        pull_request: Some(PullRequest {
            number: event.number,
            source_branch: pr.head.branch,
            target_branch: pr.base.branch,
            from_fork,
        }),
        event: "pull_request",
    }))
}
