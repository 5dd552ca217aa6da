//! The rows of the commit-status outbox (migration 0008), as Rust types.

use gantry_model::PipelineStatus;
use uuid::Uuid;

/// A commit status a sender has claimed and is to post: the outbox row, its pipeline, and where it goes.
#[derive(Clone, Debug)]
pub struct StatusToSend {
    /// The outbox row.
    pub id: i64,
    /// The pipeline it reports on.
    pub pipeline_id: Uuid,
    /// The pipeline status it reports.
    pub status: PipelineStatus,
    /// Tries made before this one.
    pub attempts: u32,
    /// The repository's row id (its status token is sealed to it).
    pub repo_id: i64,
    /// Gantry's name for the repository.
    pub repo: String,
    /// The pipeline's number.
    pub number: i64,
    /// The commit the status is for (a pull request's head).
    pub commit: String,
    /// Why the pipeline is in `error`, when it is.
    pub error: Option<String>,
    /// `github`, `gitlab` or `gitea`.
    pub forge: String,
    /// `owner/name` on the forge, when known.
    pub forge_full_name: Option<String>,
    /// The clone URL (the forge's host and the full name are derived from it when not set).
    pub clone_url: String,
    /// The forge's API base URL, when set.
    pub forge_api_url: Option<String>,
    /// The repository's own status context, when set.
    pub status_context: Option<String>,
    /// The sealed status token, unless it was removed since the row was written.
    pub status_token: Option<Vec<u8>>,
}

/// How posting an outbox row ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The forge took it.
    Sent,
    /// It failed in a way worth trying again at `at_ms` (Unix ms).
    Retry {
        /// When to try again.
        at_ms: i64,
        /// What went wrong.
        error: String,
    },
    /// It failed for good (a refused token, too many tries); later rows of the pipeline go on.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One outbox row as the API and the tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatusRecord {
    /// The pipeline status it reports.
    pub status: PipelineStatus,
    /// None while it is to be sent; then `sent`, `superseded` or `failed`.
    pub outcome: Option<String>,
    /// Tries made.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
}
