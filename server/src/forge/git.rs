//! Plain git servers and other tools. The post-receive hook of `deploy/git-hooks/post-receive` posts
//! `{"ref","before","after"}` to `/hooks/git`; any tool may post the same plus `"event"` to `/hooks/generic`.
//! Both are signed in `X-Gantry-Signature` (`sha256=` + hex HMAC).

use super::{BuildEvent, HookError, HookEvent, is_commit_sha, is_zero_sha, push_event_of};
use serde::Deserialize;

/// The events a generic trigger may name; `push` (or `tag` for a tag ref) when it names none.
pub const GENERIC_EVENTS: &[&str] = &["push", "tag", "manual", "api"];

#[derive(Deserialize)]
struct RefUpdate {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    event: Option<String>,
}

/// Parses a verified delivery of the post-receive hook.
pub fn parse(body: &[u8]) -> Result<HookEvent, HookError> {
    parse_as("git ref update", body, false)
}

/// Parses a verified generic trigger: a ref update that may name its event.
pub fn parse_generic(body: &[u8]) -> Result<HookEvent, HookError> {
    parse_as("generic trigger", body, true)
}

fn parse_as(what: &'static str, body: &[u8], event_allowed: bool) -> Result<HookEvent, HookError> {
    let update: RefUpdate =
        serde_json::from_slice(body).map_err(|e| HookError::Malformed(what, e.to_string()))?;
    if is_zero_sha(&update.after) {
        return Ok(HookEvent::Ignored(format!(
            "{} was deleted",
            update.git_ref
        )));
    }
    if !is_commit_sha(&update.after) {
        return Err(HookError::Malformed(
            what,
            format!("`after` is not a commit sha: {:?}", update.after),
        ));
    }
    if !update.git_ref.starts_with("refs/") {
        return Err(HookError::Malformed(
            what,
            format!("{:?} is not a full ref name", update.git_ref),
        ));
    }
    let event = match update.event.as_deref() {
        None => push_event_of(&update.git_ref),
        Some(e) if event_allowed => GENERIC_EVENTS
            .iter()
            .copied()
            .find(|known| *known == e)
            .ok_or_else(|| {
                HookError::Malformed(
                    what,
                    format!("{e:?} is not an event: use {}", GENERIC_EVENTS.join(", ")),
                )
            })?,
        Some(_) => {
            return Err(HookError::Malformed(
                what,
                "`event` is for /hooks/generic; the git hook's event is its ref's".into(),
            ));
        }
    };
    if (event == "tag") != update.git_ref.starts_with("refs/tags/")
        && matches!(event, "push" | "tag")
    {
        return Err(HookError::Malformed(
            what,
            format!("event {event:?} does not fit ref {:?}", update.git_ref),
        ));
    }
    Ok(HookEvent::Build(BuildEvent {
        event,
        git_ref: update.git_ref,
        commit: update.after,
        author: update.author,
        message: update.message,
        repo_full_name: None,
        repo_urls: Vec::new(),
        pull_request: None,
    }))
}
