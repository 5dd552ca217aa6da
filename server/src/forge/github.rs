//! GitHub deliveries: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256` (`sha256=` + hex HMAC).

use super::{HookError, HookEvent, payload};

pub use payload::repository_of;

/// The pull request actions that bring new code to build.
const BUILT_ACTIONS: &[&str] = &["opened", "synchronize", "reopened"];

/// Parses a verified delivery of event `event`.
pub fn parse(event: &str, body: &[u8]) -> Result<HookEvent, HookError> {
    match event {
        "push" => payload::parse_push("GitHub push", body),
        "pull_request" => payload::parse_pull_request("GitHub pull_request", BUILT_ACTIONS, body),
        "ping" => Ok(HookEvent::Ignored("ping: the webhook is set up".into())),
        other => Ok(HookEvent::Ignored(format!(
            "GitHub event {other:?} is not handled"
        ))),
    }
}
