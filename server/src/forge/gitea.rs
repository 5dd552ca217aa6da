//! Gitea and Forgejo deliveries: `X-Gitea-Event`/`X-Forgejo-Event`, `X-Gitea-Delivery`/`X-Forgejo-Delivery`,
//! `X-Gitea-Signature`/`X-Forgejo-Signature` (hex HMAC-SHA256 of the body, no prefix). Payloads copy GitHub's,
//! except that a pull request given new commits is `synchronized`.

use super::{HookError, HookEvent, payload};

pub use payload::repository_of;

/// The pull request actions that bring new code to build.
const BUILT_ACTIONS: &[&str] = &["opened", "synchronized", "reopened"];

/// Checks a bare hex HMAC-SHA256 of `body` under `secret`, in constant time. Gitea sends the header empty when
/// the hook has no secret: that is a missing signature.
pub fn verify_signature(secret: &str, body: &[u8], header: Option<&str>) -> Result<(), HookError> {
    let hex_sig = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(HookError::MissingSignature)?;
    super::verify_hex_hmac(secret, body, hex_sig)
}

/// Parses a verified delivery of event `event`.
pub fn parse(event: &str, body: &[u8]) -> Result<HookEvent, HookError> {
    match event {
        "push" => payload::parse_push("Gitea push", body),
        "pull_request" => payload::parse_pull_request("Gitea pull_request", BUILT_ACTIONS, body),
        other => Ok(HookEvent::Ignored(format!(
            "Gitea event {other:?} is not handled"
        ))),
    }
}
