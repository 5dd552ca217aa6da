//! Gitea and Forgejo deliveries: `X-Gitea-Event`/`X-Forgejo-Event`, `X-Gitea-Delivery`/`X-Forgejo-Delivery`,
//! `X-Gitea-Signature`/`X-Forgejo-Signature` (hex HMAC-SHA256 of the body, no prefix). Payloads copy GitHub's,
//! except that a pull request given new commits is `synchronized`.

use super::{HookError, HookEvent, payload};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
    let sig = hex::decode(hex_sig).map_err(|_| HookError::MissingSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| HookError::BadSignature)
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
