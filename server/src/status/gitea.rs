//! Gitea's (and Forgejo's) commit status API: `repoCreateStatus` in the API reference
//! (<https://gitea.com/api/swagger#/repository/repoCreateStatus>; Forgejo's is the same,
//! <https://codeberg.org/api/swagger#/repository/repoCreateStatus>): `POST /repos/{owner}/{repo}/statuses/{sha}`
//! with a `CreateStatusOption` body `{"state", "target_url", "description", "context"}`, the token as
//! `Authorization: token TOKEN` (<https://docs.gitea.com/development/api-usage#authentication>).

use super::{Report, Target};
use gantry_model::PipelineStatus;

/// Gitea's state (`pending`, `success`, `error`, `failure`, `warning`) for a pipeline status. Like GitHub's,
/// it has no `running`: the description says it.
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
        .header("Authorization", format!("token {token}"))
        .header("Accept", "application/json")
        .json(&serde_json::json!({
            "state": state(report.status),
            "target_url": report.target_url,
            "description": report.description,
            "context": report.context,
        }))
}
