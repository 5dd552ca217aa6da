//! Webhook payloads from forges, verified and parsed into one typed event. Nothing here knows HTTP: the routes
//! hand in the raw body and the headers they need.

pub mod git;
pub mod gitea;
pub mod github;
pub mod gitlab;
mod payload;
pub mod redact;

use gantry_model::wire::PullRequest;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// What a delivery asks Gantry to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookEvent {
    /// Build a pushed commit.
    Build(BuildEvent),
    /// Nothing to build; acknowledged and recorded with the reason (pings, deletions, events not handled).
    Ignored(String),
}

/// A commit to build: a push of a branch or tag, or a pull request's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildEvent {
    /// `refs/heads/main`, `refs/tags/v1`; for a pull request the forge's ref of its head (`refs/pull/7/head`).
    pub git_ref: String,
    /// The commit to build.
    pub commit: String,
    /// Who pushed, when the forge says.
    pub author: Option<String>,
    /// The head commit's message, when the forge says.
    pub message: Option<String>,
    /// The repository's `owner/name` on the forge, for finding the Gantry repo.
    pub repo_full_name: Option<String>,
    /// URLs the forge gives for the repository, for finding the Gantry repo.
    pub repo_urls: Vec<String>,
    /// The pull request, when this builds one.
    pub pull_request: Option<PullRequest>,
    /// `push`, `tag`, `pull_request`, `manual` or `api`, as pipelines record it.
    pub event: &'static str,
}

/// `tag` for a tag ref, else `push`: the event of a pushed ref.
pub fn push_event_of(git_ref: &str) -> &'static str {
    if git_ref.starts_with("refs/tags/") {
        "tag"
    } else {
        "push"
    }
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    /// No signature, or not in the expected form.
    #[error("the delivery carries no valid signature header")]
    MissingSignature,
    /// The signature does not match the body and the repository's secret.
    #[error("the delivery's signature does not match")]
    BadSignature,
    /// The body is not the JSON the event should be.
    #[error("the delivery's body is not a valid {0} payload: {1}")]
    Malformed(&'static str, String),
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body` under `secret`, in constant time.
pub fn verify_sha256_signature(
    secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), HookError> {
    let hex_sig = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .ok_or(HookError::MissingSignature)?;
    verify_hex_hmac(secret, body, hex_sig)
}

/// Checks a hex HMAC-SHA256 of `body` under `secret`, in constant time (the MAC's own comparison).
pub fn verify_hex_hmac(secret: &str, body: &[u8], hex_sig: &str) -> Result<(), HookError> {
    let sig = hex::decode(hex_sig).map_err(|_| HookError::MissingSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| HookError::BadSignature)
}

/// `sha256=<hex>` for `body` under `secret`: what senders put in the signature header.
pub fn sign_sha256(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// True for the all-zero sha that forges send as `after` when a ref is deleted.
pub fn is_zero_sha(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// True for a full hex commit sha (SHA-1 or SHA-256).
pub fn is_commit_sha(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_any_change_fails() {
        let sig = sign_sha256("s3cret", b"body");
        assert_eq!(
            verify_sha256_signature("s3cret", b"body", Some(&sig)),
            Ok(())
        );
        assert_eq!(
            verify_sha256_signature("s3cret", b"bodY", Some(&sig)),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify_sha256_signature("other", b"body", Some(&sig)),
            Err(HookError::BadSignature)
        );
        assert_eq!(
            verify_sha256_signature("s3cret", b"body", None),
            Err(HookError::MissingSignature)
        );
        assert_eq!(
            verify_sha256_signature("s3cret", b"body", Some("sha1=00")),
            Err(HookError::MissingSignature)
        );
    }

    #[test]
    fn github_published_test_vector_verifies() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            verify_sha256_signature("It's a Secret to Everybody", b"Hello, World!", Some(sig)),
            Ok(())
        );
    }
}
