//! GitLab's commit status API: "Set the pipeline status of a commit",
//! <https://docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit>:
//! `POST /projects/:id/statuses/:sha`, where `:id` may be the project's URL-encoded full path
//! (<https://docs.gitlab.com/api/rest/#namespaced-paths>), with `state`, `name` (the context), `target_url` and
//! `description` (sent as JSON, which GitLab's REST API takes for every parameter), the token in the
//! `PRIVATE-TOKEN` header (<https://docs.gitlab.com/api/rest/authentication/#personalprojectgroup-access-tokens>).

use super::{Report, Target};
use gantry_model::PipelineStatus;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What stays as it is in a project path segment: GitLab's own encoding leaves these alone, and `/` is encoded.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// GitLab's state (`pending`, `running`, `success`, `failed`, `canceled`) for a pipeline status; it has no
/// `error`, so a pipeline that could not run is `failed`, and its description says why.
pub fn state(status: PipelineStatus) -> &'static str {
    match status {
        PipelineStatus::Queued => "pending",
        PipelineStatus::Running => "running",
        PipelineStatus::Success => "success",
        PipelineStatus::Failed | PipelineStatus::Error => "failed",
        PipelineStatus::Cancelled => "canceled",
    }
}

/// Whether a refusal only says the commit's status is already `state` (GitLab answers 400 "Cannot transition
/// status via :run from :running" to a repeat, e.g. after a sender was killed mid-post): nothing to do then.
pub fn already_there(status: reqwest::StatusCode, body: &str) -> bool {
    status == reqwest::StatusCode::BAD_REQUEST && body.contains("Cannot transition status")
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
            "{}/projects/{}/statuses/{}",
            target.api,
            utf8_percent_encode(&target.full_name, PATH),
            report.sha
        ))
        .header("PRIVATE-TOKEN", token)
        .json(&serde_json::json!({
            "state": state(report.status),
            "name": report.context,
            "target_url": report.target_url,
            "description": report.description,
        }))
}
