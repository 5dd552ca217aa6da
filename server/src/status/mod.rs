//! Commit statuses back to the forge (GitHub, GitLab, Gitea/Forgejo): pending while a pipeline is queued and
//! runs, then its outcome, with a link to its page.
//!
//! The store writes an outbox row for each change of a pipeline's status, in the transaction that changes it
//! (triggers, migration 0008), for repositories with a status token only. [`Notifier::deliver_forever`] posts
//! them, in order per pipeline, each claimed first so that servers sharing a database never post one twice at
//! once; a forge that is down is tried again with exponential backoff, and nothing here ever holds up the queue.

mod gitea;
mod github;
mod gitlab;
mod target;

pub use target::{Forge, Target, target};

use crate::config::ServerConfig;
use crate::secrets::SealingKey;
use crate::store::{RepoCredential, StatusOutcome, StatusToSend, Store, StoreError};
use gantry_model::PipelineStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Why a commit status could not be posted.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The forge's API or the repository's path there is unknown.
    #[error("cannot tell where to post: {0}")]
    NoTarget(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Tries of a status the forge refuses as a client error (a bad token, an unknown repository) before giving up.
const CLIENT_ERROR_TRIES: u32 = 3;
/// Tries of a status before giving up even while the forge seems down (about three hours at the default).
const MAX_TRIES: u32 = 25;
/// How long a claim holds a row: well past the request timeout, so only a sender that died lets it go.
const CLAIM: Duration = Duration::from_secs(30);
/// A request's whole time limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle sender looks anyway (rows another server wrote, a pipeline that failed to prepare).
const POLL: Duration = Duration::from_secs(1);
/// The least time between two passes, so a busy queue's wake-ups cost at most a few queries a second.
const MIN_GAP: Duration = Duration::from_millis(50);
/// Rows claimed per pass (one per pipeline).
const BATCH: i64 = 32;

/// What one status says, whatever the forge.
#[derive(Clone, Debug)]
pub struct Report {
    /// The commit.
    pub sha: String,
    /// The pipeline's status.
    pub status: PipelineStatus,
    /// At most 140 characters (GitHub's limit).
    pub description: String,
    /// The pipeline's page.
    pub target_url: String,
    /// The status's context (GitLab: name).
    pub context: String,
}

/// Posts the outbox's commit statuses.
#[derive(Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
    sealing: SealingKey,
    client: reqwest::Client,
    wake: Arc<Notify>,
    public_url: String,
    context: String,
    retry: Duration,
}

impl Notifier {
    /// A notifier over `store`, woken through `wake` (the queue's, see [`crate::queue::Queue::status_wakeup`]).
    pub fn new(
        store: Arc<dyn Store>,
        sealing: SealingKey,
        wake: Arc<Notify>,
        config: &ServerConfig,
    ) -> Result<Self, StatusError> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("gantry/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            sealing,
            client,
            wake,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
            context: config.status_context.clone(),
            retry: config.status_retry,
        })
    }

    /// Posts what is due, for ever: at once when woken, else when the next retry is due or every second.
    pub async fn deliver_forever(self) {
        // A SQLite file has one server: a claim left in it is this server's own, from before a kill.
        if self.store.dialect() == "sqlite" {
            match self.store.release_commit_status_claims().await {
                Ok(0) => {}
                Ok(released) => tracing::info!(
                    released,
                    "posting again the commit statuses a killed server was posting"
                ),
                Err(error) => {
                    tracing::warn!(%error, "cannot release the claims on commit statuses")
                }
            }
        }
        let now = tokio::time::Instant::now();
        let mut last = now.checked_sub(MIN_GAP).unwrap_or(now);
        loop {
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            tokio::time::sleep_until(last + MIN_GAP).await;
            last = tokio::time::Instant::now();
            match self.deliver_due().await {
                Ok(0) => {}
                Ok(_) => continue, // each pipeline's next row may be due now
                Err(error) => tracing::error!(%error, "cannot read the commit statuses to post"),
            }
            let wait = match self.store.next_commit_status_ms().await {
                Ok(Some(due)) => {
                    let ms = (due - chrono::Utc::now().timestamp_millis()).max(0) as u64;
                    Duration::from_millis(ms).min(POLL)
                }
                Ok(None) | Err(_) => POLL,
            };
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: claims what is due, posts it (pipelines side by side), records each outcome; says how many.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let hold = now + CLAIM.as_millis() as i64;
        let claimed = self.store.claim_commit_statuses(now, hold, BATCH).await?;
        let outcomes =
            futures::future::join_all(claimed.iter().map(|status| self.post(status))).await;
        for (status, outcome) in claimed.iter().zip(&outcomes) {
            self.store.finish_commit_status(status.id, outcome).await?;
        }
        Ok(claimed.len())
    }

    /// Posts one status and says how it went; failures are logged (never with the token).
    async fn post(&self, s: &StatusToSend) -> StatusOutcome {
        let outcome = match self.send(s).await {
            Ok(()) => StatusOutcome::Sent,
            Err(Failure { error, retry }) => {
                let tries = s.attempts + 1;
                let limit = if retry { MAX_TRIES } else { CLIENT_ERROR_TRIES };
                if tries >= limit {
                    let error = format!("{error} (gave up after {tries} tries)");
                    StatusOutcome::Failed { error }
                } else {
                    let at_ms = chrono::Utc::now().timestamp_millis() + self.backoff(tries);
                    StatusOutcome::Retry { at_ms, error }
                }
            }
        };
        match &outcome {
            StatusOutcome::Sent => {
                tracing::debug!(repo = %s.repo, pipeline = s.number, status = %s.status, "commit status posted")
            }
            StatusOutcome::Retry { error, .. } => {
                tracing::warn!(repo = %s.repo, pipeline = s.number, status = %s.status, %error, "commit status not posted; trying again")
            }
            StatusOutcome::Failed { error } => {
                tracing::error!(repo = %s.repo, pipeline = s.number, status = %s.status, %error, "commit status not posted")
            }
        }
        outcome
    }

    /// Milliseconds before try number `tries + 1`: the base, doubled for each try after the first, capped.
    fn backoff(&self, tries: u32) -> i64 {
        let wait = self.retry.saturating_mul(1 << (tries - 1).min(20));
        wait.min(MAX_BACKOFF).as_millis() as i64
    }

    async fn send(&self, s: &StatusToSend) -> Result<(), Failure> {
        let forge = Forge::parse(&s.forge)
            .ok_or_else(|| Failure::fatal(format!("forge {:?} has no status API", s.forge)))?;
        let target = target(
            forge,
            &s.clone_url,
            s.forge_full_name.as_deref(),
            s.forge_api_url.as_deref(),
        )
        .map_err(|e| Failure::fatal(e.to_string()))?;
        let token = self.token(s)?;
        let report = self.report(s);
        let request = match forge {
            Forge::GitHub => github::request(&self.client, &target, &token, &report),
            Forge::GitLab => gitlab::request(&self.client, &target, &token, &report),
            Forge::Gitea => gitea::request(&self.client, &target, &token, &report),
        };
        let response = request.send().await.map_err(|e| Failure {
            // reqwest's errors name the URL, which holds no secret (the token travels in a header).
            error: format!("cannot reach the forge: {e}"),
            retry: true,
        })?;
        let code = response.status();
        if code.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        if forge == Forge::GitLab && gitlab::already_there(code, &body) {
            return Ok(());
        }
        let said: String = body.chars().take(200).collect();
        Err(Failure {
            error: format!("the forge answered {code}: {said}"),
            retry: code.is_server_error() || code == reqwest::StatusCode::TOO_MANY_REQUESTS,
        })
    }

    /// The repository's status token, opened.
    fn token(&self, s: &StatusToSend) -> Result<String, Failure> {
        let sealed = s.status_token.as_deref().ok_or_else(|| {
            Failure::fatal("the repository has no status token (any more)".into())
        })?;
        let plain = self
            .sealing
            .open(&RepoCredential::Status.place(s.repo_id), sealed)
            .map_err(|e| Failure::fatal(format!("cannot open the status token: {e}")))?;
        String::from_utf8(plain)
            .map(|t| t.trim().to_owned())
            .map_err(|_| Failure::fatal("the status token is not text".into()))
    }

    fn report(&self, s: &StatusToSend) -> Report {
        Report {
            sha: s.commit.clone(),
            status: s.status,
            description: description(s.status, s.number, s.error.as_deref()),
            target_url: format!(
                "{}/repos/{}/pipelines/{}",
                self.public_url, s.repo, s.number
            ),
            context: s
                .status_context
                .clone()
                .unwrap_or_else(|| self.context.clone()),
        }
    }
}

/// What went wrong with one post, and whether trying again later may help.
struct Failure {
    error: String,
    retry: bool,
}

impl Failure {
    /// Not worth more than the few tries a client error gets.
    fn fatal(error: String) -> Self {
        Self {
            error,
            retry: false,
        }
    }
}

/// The status's description: what the forge shows next to the state (GitHub's and Gitea's `pending` say
/// whether the pipeline runs only here), cut to GitHub's 140 characters.
pub fn description(status: PipelineStatus, number: i64, error: Option<&str>) -> String {
    let text = match status {
        PipelineStatus::Queued => format!("pipeline #{number} is queued"),
        PipelineStatus::Running => format!("pipeline #{number} is running"),
        PipelineStatus::Success => format!("pipeline #{number} passed"),
        PipelineStatus::Failed => format!("pipeline #{number} failed"),
        PipelineStatus::Cancelled => format!("pipeline #{number} was cancelled"),
        PipelineStatus::Error => match error {
            Some(why) => format!("pipeline #{number} could not run: {why}"),
            None => format!("pipeline #{number} could not run"),
        },
    };
    if text.chars().count() <= 140 {
        return text;
    }
    let mut cut: String = text.chars().take(139).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_error_is_cut_to_githubs_limit() {
        let long = "x".repeat(500);
        let text = description(PipelineStatus::Error, 7, Some(&long));
        assert_eq!(text.chars().count(), 140);
        assert!(text.starts_with("pipeline #7 could not run: xxx") && text.ends_with('…'));
        assert_eq!(
            description(PipelineStatus::Running, 3, None),
            "pipeline #3 is running"
        );
    }

    #[test]
    fn each_forge_has_its_own_words_for_the_states() {
        use PipelineStatus::*;
        let all = [Queued, Running, Success, Failed, Cancelled, Error];
        let on = |f: fn(PipelineStatus) -> &'static str| all.map(f);
        assert_eq!(
            on(github::state),
            ["pending", "pending", "success", "failure", "error", "error"]
        );
        // Gitea posts GitHub's body, states and all (`tests/commit_statuses.rs` checks what its stand-in receives).
        assert_eq!(
            on(gitlab::state),
            [
                "pending", "running", "success", "failed", "canceled", "failed"
            ]
        );
    }
}
