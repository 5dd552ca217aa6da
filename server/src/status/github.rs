//! GitHub's commit status API: "Create a commit status",
//! <https://docs.github.com/en/rest/commits/statuses#create-a-commit-status>:
//! `POST /repos/{owner}/{repo}/statuses/{sha}` with `{"state", "target_url", "description", "context"}`, the
//! token as `Authorization: Bearer`, `Accept: application/vnd.github+json` and the API version header
//! (<https://docs.github.com/en/rest/about-the-rest-api/api-versions>); GitHub refuses requests without a
//! `User-Agent`, which the client sets for every forge.

use super::{Report, Target};
use gantry_model::PipelineStatus;

/// GitHub's state for a pipeline status. GitHub has no `running` (nor `cancelled`): a running pipeline is
/// `pending` and says so in its description, a cancelled one is an `error`.
pub fn state(status: PipelineStatus) -> &'static str {
    match status {
        PipelineStatus::Queued | PipelineStatus::Running => "pending",
        PipelineStatus::Success => "success",
        PipelineStatus::Failed => "failure",
        PipelineStatus::Cancelled | PipelineStatus::Error => "error",
    }
}

/// The request that posts `report`.
pub fn request(
    client: &reqwest::Client,
    target: &Target,
    token: &str,
    report: &Report,
) -> reqwest::RequestBuilder {
    client
        .post(format!(
            "{}/repos/{}/statuses/{}",
            target.api, target.full_name, report.sha
        ))
        .bearer_auth(token)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .json(&body(report))
}

/// `{"state", "target_url", "description", "context"}`: GitHub's body, which Gitea's API copies.
pub fn body(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "state": state(report.status),
        "target_url": report.target_url,
        "description": report.description,
        "context": report.context,
    })
}
