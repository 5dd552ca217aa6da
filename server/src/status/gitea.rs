//! Gitea's (and Forgejo's) commit status API: `repoCreateStatus` in the API reference
//! (<https://gitea.com/api/swagger#/repository/repoCreateStatus>; Forgejo's is the same,
//! <https://codeberg.org/api/swagger#/repository/repoCreateStatus>): `POST /repos/{owner}/{repo}/statuses/{sha}`
//! with a `CreateStatusOption` body `{"state", "target_url", "description", "context"}`, the token as
//! `Authorization: token TOKEN` (<https://docs.gitea.com/development/api-usage#authentication>).

use super::{Report, Target};

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
        // The body is GitHub's, state names and all: Gitea's states (`pending`, `success`, `error`, `failure`,
        // `warning`) have no `running` either.
        .json(&super::github::body(report))
}
