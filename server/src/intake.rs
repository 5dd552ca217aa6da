//! Intake (docs/api.md): a verified delivery becomes a committed, queued pipeline before it is acknowledged; then,
//! in a task that resumes after a restart, the commit is fetched into the mirror, `.gantry.yml` is read and
//! validated, and the jobs are stored — or the pipeline goes to `error` with the reason. A commit without the
//! file makes no pipeline: it is deleted again and its delivery says why. A delivery may wait for that verdict.

use crate::forge::{BuildEvent, HookEvent};
use crate::mirror::Mirrors;
use crate::queue::Queue;
use crate::store::{
    NewDelivery, NewJob, NewPipeline, PipelineRecord, RepoRecord, Store, StoreError,
};
use gantry_model::Pipeline;
use gantry_model::image::ImageRef;
use gantry_model::pipeline::Limits;
use gantry_model::pipeline::PIPELINE_FILE;
use gantry_model::wire::{FileVerdict, HookOutcome, PullRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A pipeline to prepare: where its file is, and what it was created for (its `when:` filters on that).
struct Preparation {
    pipeline: Uuid,
    repo: String,
    url: String,
    commit: String,
    git_ref: String,
    /// The ref `when:` branch and tag filters see: a pull request's target branch, else `git_ref`.
    when_ref: String,
    event: String,
    /// A pull request from a fork, of a repository that does not let forks use `image: host`.
    host_refused: bool,
}

/// The ref `when:` filters look at: a pull request is filtered by the branch it targets.
fn when_ref(git_ref: &str, pull_request: Option<&PullRequest>) -> String {
    match pull_request {
        Some(pr) => format!("refs/heads/{}", pr.target_branch),
        None => git_ref.to_owned(),
    }
}

impl Preparation {
    /// The preparation of a stored pipeline of `repo`.
    fn of(p: &PipelineRecord, repo: RepoRecord) -> Self {
        Self {
            pipeline: p.id,
            repo: repo.name,
            url: repo.url,
            commit: p.commit.clone(),
            git_ref: p.git_ref.clone(),
            when_ref: when_ref(&p.git_ref, p.pull_request.as_ref()),
            event: p.event.clone(),
            host_refused: p.pull_request.as_ref().is_some_and(|pr| pr.from_fork)
                && !repo.fork_host_image,
        }
    }
}

/// Why a fork's pull request may not run: the jobs (and services) it would run on the worker's own file
/// system. Whoever opened it wrote its steps; on an image they see only the image.
fn refused_on_host(jobs: &[NewJob]) -> Option<String> {
    let on_host = |image: &str| matches!(ImageRef::parse(image), Ok(ImageRef::Host));
    // Skipped jobs too: a retry of the pipeline runs them.
    let names: Vec<&str> = jobs
        .iter()
        .filter(|job| {
            on_host(&job.spec.image) || job.spec.services.iter().any(|s| on_host(&s.image))
        })
        .map(|job| job.spec.name.as_str())
        .collect();
    (!names.is_empty()).then(|| {
        format!(
            "this pull request comes from a fork, and forks may not run jobs on `image: host` (the worker's own \
             file system): {} would; give them an `image:`, or let forks use the host with `gantry repo set REPO \
             --fork-host-image true`",
            names.join(", ")
        )
    })
}

/// How preparing a pipeline ended.
enum Prepared {
    /// The file was read: jobs, or the error the pipeline ended in.
    Read(FileVerdict),
    /// No pipeline after all (no file at this commit, or its `when:` filters the push out); the delivery
    /// says why.
    Dropped(String),
}

impl Prepared {
    fn error(message: String) -> Self {
        Prepared::Read(FileVerdict {
            status: "error".into(),
            error: Some(message),
            jobs: Vec::new(),
            skipped: Vec::new(),
        })
    }
}

/// Why a commit without a pipeline file makes no pipeline; its delivery shows it.
pub const NO_PIPELINE_FILE: &str = "no .gantry.yml at this commit";

/// The longest a pipeline file may take to read and expand.
const PARSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// Bytes kept of a refused delivery's body.
pub const REFUSED_BODY_KEPT: usize = 64 * 1024;

/// Turns deliveries into pipelines.
#[derive(Clone)]
pub struct Intake {
    store: Arc<dyn Store>,
    mirrors: Mirrors,
    queue: Queue,
    deliveries_kept: u32,
    limits: Limits,
}

impl Intake {
    /// The mirrors pipelines are read from, which workers fetch from too.
    pub fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Intake over the store, mirrors and queue, keeping each repository's newest `deliveries_kept` deliveries
    /// and refusing pipelines past `limits`.
    pub fn new(
        store: Arc<dyn Store>,
        mirrors: Mirrors,
        queue: Queue,
        deliveries_kept: u32,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            mirrors,
            queue,
            deliveries_kept,
            limits,
        }
    }

    /// Records a verified delivery; for a commit to build, commits a queued pipeline and starts preparing it.
    /// Then waits up to `wait` for the pipeline file to be read, to answer with its verdict (a git hook shows it
    /// to whoever pushed); the delivery is committed whatever happens after.
    pub async fn accept(
        &self,
        repo: &RepoRecord,
        delivery: NewDelivery,
        event: HookEvent,
        wait: Duration,
    ) -> Result<HookOutcome, StoreError> {
        let (mut outcome, preparing) = self.accept_recorded(repo, delivery, event).await?;
        self.prune(repo).await;
        let Some(preparing) = preparing.filter(|_| !wait.is_zero()) else {
            return Ok(outcome);
        };
        // Dropping the handle on time-out leaves the preparation running.
        match tokio::time::timeout(wait, preparing).await {
            Ok(Ok(Prepared::Read(verdict))) => outcome.verdict = Some(verdict),
            Ok(Ok(Prepared::Dropped(reason))) => {
                outcome.outcome = "ignored".into();
                outcome.pipeline = None;
                outcome.reason = Some(reason);
            }
            Ok(Err(_)) | Err(_) => {}
        }
        Ok(outcome)
    }

    /// Records a delivery refused before it was parsed, so the user sees why a hook did nothing.
    pub async fn refused(
        &self,
        repo: &RepoRecord,
        mut delivery: NewDelivery,
        reason: &str,
    ) -> Result<(), StoreError> {
        // Nobody vouched for these bytes: keep enough to recognise them, not 25 MB of them.
        delivery.body.truncate(REFUSED_BODY_KEPT);
        self.store
            .record_refused_delivery(&delivery, reason)
            .await?;
        self.prune(repo).await;
        Ok(())
    }

    async fn prune(&self, repo: &RepoRecord) {
        // Only housekeeping: the delivery is committed whatever happens here.
        if let Err(e) = self
            .store
            .prune_deliveries(repo.id, self.deliveries_kept)
            .await
        {
            tracing::warn!(repo = %repo.name, error = %e, "could not delete old deliveries");
        }
    }

    async fn accept_recorded(
        &self,
        repo: &RepoRecord,
        delivery: NewDelivery,
        event: HookEvent,
    ) -> Result<(HookOutcome, Option<JoinHandle<Prepared>>), StoreError> {
        let push: BuildEvent = match event {
            HookEvent::Build(push) => push,
            HookEvent::Ignored(reason) => {
                self.store
                    .record_ignored_delivery(&delivery, &reason)
                    .await?;
                return Ok((
                    HookOutcome {
                        outcome: "ignored".into(),
                        pipeline: None,
                        reason: Some(reason),
                        verdict: None,
                    },
                    None,
                ));
            }
        };
        let new = NewPipeline {
            delivery,
            commit: push.commit.clone(),
            git_ref: push.git_ref.clone(),
            event: push.event.into(),
            author: push.author,
            message: push.message,
            pull_request: push.pull_request,
        };
        let created = match self.store.create_pipeline(&new).await {
            Err(StoreError::Conflict(_)) => {
                let reason = "this delivery was received before and created nothing".to_owned();
                return Ok((
                    HookOutcome {
                        outcome: "duplicate".into(),
                        pipeline: None,
                        reason: Some(reason),
                        verdict: None,
                    },
                    None,
                ));
            }
            other => other?,
        };
        if created.duplicate {
            return Ok((
                HookOutcome {
                    outcome: "duplicate".into(),
                    pipeline: Some(created.number),
                    reason: None,
                    verdict: None,
                },
                None,
            ));
        }
        tracing::info!(repo = %repo.name, number = created.number, commit = %push.commit, "pipeline queued");
        // A branch's newer push, or a pull request's newer head, makes the older pipelines of the same ref moot.
        if repo.cancel_previous
            && (new.git_ref.starts_with("refs/heads/") || new.pull_request.is_some())
        {
            self.supersede(created.id).await?;
        }
        let preparing = self.spawn_prepare(Preparation {
            pipeline: created.id,
            repo: repo.name.clone(),
            url: repo.url.clone(),
            commit: new.commit,
            when_ref: when_ref(&new.git_ref, new.pull_request.as_ref()),
            host_refused: new.pull_request.as_ref().is_some_and(|pr| pr.from_fork)
                && !repo.fork_host_image,
            git_ref: new.git_ref,
            event: new.event,
        });
        Ok((
            HookOutcome {
                outcome: "created".into(),
                pipeline: Some(created.number),
                reason: None,
                verdict: None,
            },
            Some(preparing),
        ))
    }

    /// Cancels what a newer push to the same branch makes moot (the repository's `cancel_previous`).
    async fn supersede(&self, newer: Uuid) -> Result<(), StoreError> {
        let Some(newer) = self.store.get_pipeline_by_id(newer).await? else {
            return Ok(());
        };
        for (older, cancelled) in self.store.supersede_pipelines(&newer).await? {
            tracing::info!(%older, newer = newer.number, "pipeline superseded by a newer push");
            self.queue.cancelled(&cancelled);
        }
        Ok(())
    }

    /// Prepares a pipeline again (retried after its file could not be read).
    pub async fn prepare_again(&self, p: &PipelineRecord) -> Result<(), StoreError> {
        let repo = self
            .store
            .get_repo(&p.repo)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("repository {}", p.repo)))?;
        drop(self.spawn_prepare(Preparation::of(p, repo)));
        Ok(())
    }

    /// Restarts the preparation of pipelines a previous run accepted but did not finish preparing.
    pub async fn resume(&self) -> Result<usize, StoreError> {
        let pending: Vec<PipelineRecord> = self.store.unprepared_pipelines().await?;
        for p in &pending {
            if let Some(repo) = self.store.get_repo(&p.repo).await? {
                drop(self.spawn_prepare(Preparation::of(p, repo)));
            }
        }
        Ok(pending.len())
    }

    fn spawn_prepare(&self, job: Preparation) -> JoinHandle<Prepared> {
        let this = self.clone();
        tokio::spawn(async move {
            let pipeline = job.pipeline;
            let e = match this.prepare(job).await {
                Ok(prepared) => return prepared,
                Err(e) => e,
            };
            // Ended with the reason, not prepared again at every start: what failed once (storing 1,000 jobs,
            // say) would fail again. Only when even this write fails does the next start try once more.
            let reason = format!("preparing the pipeline failed: {e}");
            match this.store.fail_pipeline(pipeline, &reason).await {
                Ok(()) => {
                    tracing::error!(%pipeline, error = %e, "preparing a pipeline failed; it ends in error")
                }
                Err(again) => tracing::error!(%pipeline, error = %e, %again,
                    "preparing a pipeline failed, and so did ending it; it resumes at the next start"),
            }
            Prepared::error(reason)
        })
    }

    async fn prepare(&self, job: Preparation) -> Result<Prepared, StoreError> {
        let Preparation {
            pipeline,
            repo,
            url,
            commit,
            git_ref,
            when_ref,
            event,
            host_refused,
        } = job;
        let (repo, url, commit) = (repo.as_str(), url.as_str(), commit.as_str());
        let text = match self
            .mirrors
            .read_file_at(repo, url, commit, &git_ref, PIPELINE_FILE)
            .await
        {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                tracing::info!(%pipeline, %commit, "no pipeline file at this commit; pipeline dropped");
                return self.drop(pipeline, NO_PIPELINE_FILE.into()).await;
            }
            Err(e) => return self.fail(pipeline, e.to_string()).await,
        };
        let limits = self.limits;
        // Off the async threads, and within a budget: a hostile file must cost the server neither its
        // requests nor more than a few seconds.
        let parsing = tokio::task::spawn_blocking(move || {
            String::from_utf8(text)
                .map_err(|_| format!("{PIPELINE_FILE} is not UTF-8 text"))
                .and_then(|t| Pipeline::parse_with(&t, &limits).map_err(|e| e.to_string()))
        });
        let parsed = match tokio::time::timeout(PARSE_BUDGET, parsing).await {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(e)) => Err(format!("reading {PIPELINE_FILE} failed: {e}")),
            Err(_) => Err(format!(
                "reading {PIPELINE_FILE} took longer than {} s; the pipeline is refused",
                PARSE_BUDGET.as_secs()
            )),
        };
        match parsed {
            Ok(p) => {
                if let Some(reason) = p.when.as_ref().and_then(|w| w.excludes(&when_ref, &event)) {
                    let reason = format!("the pipeline's when filters it out: {reason}");
                    tracing::info!(%pipeline, %reason, "pipeline dropped");
                    return self.drop(pipeline, reason).await;
                }
                let jobs: Vec<NewJob> = p
                    .jobs
                    .into_iter()
                    .map(|spec| NewJob {
                        id: Uuid::now_v7(),
                        skipped: spec
                            .when
                            .as_ref()
                            .and_then(|w| w.excludes(&when_ref, &event))
                            .map(|reason| format!("not run: its when filters it out ({reason})")),
                        spec,
                    })
                    .collect();
                if let Some(reason) = refused_on_host(&jobs).filter(|_| host_refused) {
                    return self.fail(pipeline, reason).await;
                }
                self.store.add_jobs(pipeline, &jobs).await?;
                self.queue.jobs_ready();
                let name = |j: &NewJob| j.spec.name.to_string();
                Ok(Prepared::Read(FileVerdict {
                    status: "queued".into(),
                    error: None,
                    jobs: jobs.iter().map(name).collect(),
                    skipped: jobs
                        .iter()
                        .filter(|j| j.skipped.is_some())
                        .map(name)
                        .collect(),
                }))
            }
            Err(msg) => self.fail(pipeline, msg).await,
        }
    }

    async fn fail(&self, pipeline: Uuid, message: String) -> Result<Prepared, StoreError> {
        self.store.fail_pipeline(pipeline, &message).await?;
        Ok(Prepared::error(message))
    }

    async fn drop(&self, pipeline: Uuid, reason: String) -> Result<Prepared, StoreError> {
        self.store.drop_pipeline(pipeline, &reason).await?;
        Ok(Prepared::Dropped(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(yaml: &str) -> Vec<NewJob> {
        Pipeline::parse(yaml)
            .unwrap()
            .jobs
            .into_iter()
            .map(|spec| NewJob {
                id: Uuid::now_v7(),
                skipped: (spec.name.as_str() == "later").then(|| "when".to_owned()),
                spec,
            })
            .collect()
    }

    #[test]
    fn a_fork_may_not_name_the_host_in_a_job_a_service_or_a_job_skipped_for_now() {
        let on_images = "jobs:\n  a:\n    image: busybox\n    steps: [x]\n";
        assert_eq!(refused_on_host(&jobs(on_images)), None);
        let mixed = "jobs:\n  a:\n    image: busybox\n    steps: [x]\n  b:\n    steps: [x]\n  \
                     later:\n    image: busybox\n    services:\n      db:\n        image: host\n        \
                     command: [x]\n    steps: [x]\n";
        let why = refused_on_host(&jobs(mixed)).unwrap();
        assert!(why.contains("b, later"), "{why}");
        assert!(why.contains("--fork-host-image true"), "{why}");
    }
}
