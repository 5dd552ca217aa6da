//! Plain git servers: the post-receive hook of `deploy/git-hooks/post-receive` posts `{"ref","before","after"}`
//! signed in `X-Gantry-Signature`.

use super::{BuildEvent, HookError, HookEvent, is_commit_sha, is_zero_sha};
use serde::Deserialize;

#[derive(Deserialize)]
struct RefUpdate {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Parses a verified delivery of the post-receive hook.
pub fn parse(body: &[u8]) -> Result<HookEvent, HookError> {
    let update: RefUpdate = serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed("git ref update", e.to_string()))?;
    if is_zero_sha(&update.after) {
        return Ok(HookEvent::Ignored(format!(
            "{} was deleted",
            update.git_ref
        )));
    }
    if !is_commit_sha(&update.after) {
        return Err(HookError::Malformed(
            "git ref update",
            format!("`after` is not a commit sha: {:?}", update.after),
        ));
    }
    if !update.git_ref.starts_with("refs/") {
        return Err(HookError::Malformed(
            "git ref update",
            format!("{:?} is not a full ref name", update.git_ref),
        ));
    }
    Ok(HookEvent::Build(BuildEvent {
        git_ref: update.git_ref,
        commit: update.after,
        author: update.author,
        message: update.message,
        repo_full_name: None,
        repo_urls: Vec::new(),
        pull_request: None,
    }))
}
