//! Leases: a worker's long-poll is answered the instant a job it can run is queued (in-process notify), and
//! every call about a job afterwards must carry that job's current lease.

mod pending;

pub use pending::{RepoLimit, pending_reason};

use crate::logs::{LogHub, LogUpdate};
use crate::store::{
    CancelledPipeline, Claim, Expired, ExpiredOutcome, News, RetriedPipeline, Standing, Store,
    StoreError,
};
use bytes::Bytes;
use gantry_model::secret::mask::Masker;
use gantry_model::wire::{CompleteRequest, Lease, Source, StepReport, builtin_env};
use gantry_model::{FailureKind, JobStatus, PipelineStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// What a worker's long-poll is answered.
#[derive(Debug)]
pub enum LeaseAnswer {
    /// A job to run.
    Job(Box<Lease>),
    /// Nothing came within the wait.
    Nothing,
    /// The worker is draining: it takes no new job, finishes what it runs, deregisters and exits.
    Drain,
    /// The worker's registration went while it waited (its pool's token was rotated).
    Gone,
}

/// Hands jobs to workers and takes their reports.
#[derive(Clone)]
pub struct Queue {
    store: Arc<dyn Store>,
    hub: LogHub,
    wakeup: Arc<Notify>,
    /// Woken when jobs are asked to stop, so heartbeats waiting for news answer at once.
    cancels: Arc<Notify>,
    /// Woken when a pipeline may have a commit status to post (see `status`).
    statuses: Arc<Notify>,
    /// Woken when the autoscaler may have something to do: jobs ready or ended, workers come or gone, pools
    /// changed.
    scaler: Arc<Notify>,
    /// Woken when workers are asked to drain, so their waiting long-polls answer at once.
    drains: Arc<Notify>,
    lease: Duration,
    heartbeat: Duration,
    log_cap: u64,
    infra_retries: u32,
    artifact_limit: u64,
    vault: crate::secrets::Vault,
    /// The secrets of the jobs with secrets leased by this server, to check their log appends again: the
    /// worker masks before upload, and a secret reaching the server anyway is overwritten (same length, so
    /// offsets hold) rather than stored.
    masks: Arc<Mutex<HashMap<Uuid, Arc<Masker>>>>,
    /// The leases whose logs went past the cap, and their length: a later append (an old worker's, which
    /// does not stop at the cap) is answered without the database's writer.
    capped: Arc<Mutex<HashMap<Uuid, (Uuid, u64)>>>,
}

fn deadline_ms(lease: Duration) -> i64 {
    chrono::Utc::now().timestamp_millis() + lease.as_millis() as i64
}

impl Queue {
    /// A queue over `store`, with the lease length, heartbeat interval, log cap and automatic retries of
    /// lost jobs from the config; leases carry the secrets and clone credential `vault` opens.
    pub fn new(
        store: Arc<dyn Store>,
        hub: LogHub,
        config: &crate::ServerConfig,
        vault: crate::secrets::Vault,
    ) -> Self {
        Self {
            store,
            hub,
            wakeup: Arc::new(Notify::new()),
            cancels: Arc::new(Notify::new()),
            statuses: Arc::new(Notify::new()),
            scaler: Arc::new(Notify::new()),
            drains: Arc::new(Notify::new()),
            lease: config.lease,
            heartbeat: config.heartbeat,
            log_cap: config.log_cap_bytes,
            infra_retries: config.infra_retries,
            artifact_limit: config.artifact_limit_bytes,
            vault,
            masks: Arc::default(),
            capped: Arc::default(),
        }
    }

    /// Wakes every waiting long-poll, here and on the other servers sharing the database: jobs became ready.
    pub fn jobs_ready(&self) {
        self.wakeup.notify_waiters();
        self.announce(News::JobsReady);
        // A pipeline just prepared has its `queued` status to post.
        self.statuses.notify_one();
        self.scaler.notify_one();
    }

    /// What wakes the autoscaler.
    pub fn scaler_wakeup(&self) -> Arc<Notify> {
        self.scaler.clone()
    }

    /// Pools or workers changed: the autoscaler looks again.
    pub fn pools_changed(&self) {
        self.scaler.notify_one();
    }

    /// Workers were asked to drain: their waiting long-polls answer at once.
    pub fn drained(&self) {
        self.drains.notify_waiters();
    }

    /// What wakes the commit-status sender: a pipeline was prepared, cancelled or ended.
    pub fn status_wakeup(&self) -> Arc<Notify> {
        self.statuses.clone()
    }

    /// Tells the other servers, without making the caller wait for it.
    fn announce(&self, news: News) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store.announce(news).await {
                tracing::warn!(%error, ?news, "cannot tell the other servers");
            }
        });
    }

    /// Passes what other servers announce to this server's waiting long-polls and heartbeats, for ever.
    pub async fn listen_to_other_servers(self) {
        let (wakeup, cancels) = (self.wakeup.clone(), self.cancels.clone());
        let heard = Box::new(move |news| match news {
            News::JobsReady => wakeup.notify_waiters(),
            News::CancelRequested => cancels.notify_waiters(),
        });
        if let Err(error) = self.store.listen(heard).await {
            tracing::error!(%error, "cannot listen to the other servers: their news reaches this server's workers only with their next poll");
        }
    }

    /// Leases the next ready job to the worker, waiting up to `wait` for one; a draining worker is told so.
    pub async fn lease(
        &self,
        worker_id: Uuid,
        worker_name: &str,
        wait: Duration,
    ) -> Result<LeaseAnswer, StoreError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            // Register for the wake-ups before looking, so a job queued (or a drain asked) in between is not
            // missed.
            let notified = self.wakeup.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let drain = self.drains.notified();
            tokio::pin!(drain);
            drain.as_mut().enable();
            let claim = Claim {
                worker_id,
                worker_name: worker_name.to_owned(),
                lease_id: Uuid::now_v7(),
                deadline_ms: deadline_ms(self.lease),
            };
            if let Some(claimed) = self.store.claim_job(&claim).await? {
                // Only a repository with secrets costs a second query (the claim says whether it has any).
                let secrets = self.vault.lease_secrets(&claimed).await?;
                let credential = self
                    .vault
                    .open_clone_credential(claimed.repo_id, claimed.clone_credential.as_deref());
                let job = claimed.job;
                let mut env = builtin_env(
                    &claimed.repo,
                    &claimed.commit,
                    &claimed.git_ref,
                    &claimed.event,
                    claimed.number,
                    &job.name,
                    claimed.pull_request.as_ref(),
                );
                env.push(("GANTRY_ATTEMPT".to_owned(), job.attempt.to_string()));
                // Only a job with needs has artifacts to receive: the common lease costs no extra query.
                let artifacts = if job.spec.needs.is_empty() {
                    Vec::new()
                } else {
                    let mut all = self.store.pipeline_artifacts(job.pipeline_id).await?;
                    all.retain(|a| job.spec.needs.iter().any(|need| need.as_str() == a.job));
                    all
                };
                if !secrets.is_empty() {
                    let masker = Arc::new(Masker::new(secrets.values()));
                    self.masks
                        .lock()
                        .expect("lock poisoned")
                        .insert(job.id, masker);
                }
                return Ok(LeaseAnswer::Job(Box::new(Lease {
                    job_id: job.id,
                    lease_id: claim.lease_id,
                    attempt: job.attempt,
                    heartbeat_secs: self.heartbeat.as_secs().max(1),
                    spec: job.spec,
                    source: Source {
                        repo: claimed.repo,
                        clone_url: claimed.clone_url,
                        commit: claimed.commit,
                        git_ref: claimed.git_ref,
                        credential,
                        mirror: Some(format!("/api/v1/jobs/{}/source.git", job.id)),
                    },
                    env,
                    artifacts,
                    artifact_limit_bytes: self.artifact_limit,
                    log_cap_bytes: self.log_cap,
                    secrets,
                })));
            }
            // Nothing to run: note the call (a claim notes it itself) and say whether the worker should leave. The
            // claim refuses a draining worker, so the common lease costs no extra write.
            match self.store.touch_worker(worker_id).await? {
                Standing::Serving => {}
                Standing::Draining => return Ok(LeaseAnswer::Drain),
                Standing::Gone => return Ok(LeaseAnswer::Gone),
            }
            let woken = tokio::time::timeout_at(until, async {
                tokio::select! {
                    _ = notified => {}
                    _ = drain => {}
                }
            });
            if woken.await.is_err() {
                return Ok(LeaseAnswer::Nothing);
            }
        }
    }

    /// Takes back the leases whose workers stopped heartbeating (docs/data-model.md): their jobs run again as new
    /// attempts, or end in `error` once their automatic retries are used up.
    pub async fn expire_leases(&self) -> Result<Vec<Expired>, StoreError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let expired = self.store.expire_leases(now_ms, self.infra_retries).await?;
        let mut requeued = false;
        for lost in &expired {
            self.masks.lock().expect("lock poisoned").remove(&lost.job);
            self.capped
                .lock()
                .expect("lock poisoned")
                .retain(|_, (job, _)| *job != lost.job);
            tracing::warn!(job = %lost.job, worker = ?lost.worker_name, attempt = lost.attempt, outcome = ?lost.outcome,
                "a lease ran out: its worker stopped heartbeating");
            match &lost.outcome {
                ExpiredOutcome::Requeued => requeued = true,
                ExpiredOutcome::Ended(done) => {
                    self.statuses.notify_one();
                    self.hub.publish(lost.job, LogUpdate::Finished(done.status));
                    for skipped in &done.skipped {
                        self.hub
                            .publish(*skipped, LogUpdate::Finished(JobStatus::Skipped));
                    }
                }
            }
        }
        if requeued {
            self.jobs_ready();
        }
        Ok(expired)
    }

    /// Gives every running job a full lease from now: while this server was down its workers could not
    /// heartbeat, and that is no sign they are lost (docs/data-model.md promises nothing acknowledged is lost to a kill).
    pub async fn grant_restart_grace(&self) -> Result<u64, StoreError> {
        self.store.extend_leases(deadline_ms(self.lease)).await
    }

    /// Runs [`Queue::expire_leases`] for ever, a few times per lease length, so a lost job is back in the queue
    /// within little more than a lease.
    pub async fn expire_leases_forever(self) {
        let every = (self.lease / 4).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = self.expire_leases().await {
                tracing::error!(%error, "cannot expire leases; trying again");
            }
        }
    }

    /// Renews a lease; true when the job was cancelled. With a `wait`, a heartbeat that has no news waits up to
    /// that long (at most the heartbeat interval) for the job to be cancelled, renewing the lease again before
    /// it answers: a worker that heartbeats again at once hears of a cancel the moment it is asked for.
    pub async fn heartbeat(
        &self,
        job: Uuid,
        lease: Uuid,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let until = tokio::time::Instant::now() + wait.min(self.heartbeat);
        loop {
            let cancelled = self.cancels.notified();
            tokio::pin!(cancelled);
            cancelled.as_mut().enable();
            let cancel = self
                .store
                .heartbeat(job, lease, deadline_ms(self.lease))
                .await?;
            if cancel || tokio::time::Instant::now() >= until {
                return Ok(cancel);
            }
            if tokio::time::timeout_at(until, cancelled).await.is_err() {
                // Renewed once more on the way out, so the lease runs a full length from the answer.
                return self
                    .store
                    .heartbeat(job, lease, deadline_ms(self.lease))
                    .await;
            }
        }
    }

    /// Cancels a pipeline: what has not started ends now, running jobs are told through their heartbeats.
    pub async fn cancel_pipeline(&self, pipeline: Uuid) -> Result<CancelledPipeline, StoreError> {
        let cancelled = self.store.cancel_pipeline(pipeline).await?;
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    /// Cancels one job: ended now if it has not started, told through its heartbeat if it runs.
    pub async fn cancel_job(
        &self,
        pipeline: Uuid,
        job: Uuid,
    ) -> Result<CancelledPipeline, StoreError> {
        let cancelled = self.store.cancel_job(pipeline, job).await?;
        self.cancelled(&cancelled);
        Ok(cancelled)
    }

    /// Tells watchers of the jobs a cancel ended, and the heartbeats of those it asks to stop.
    pub fn cancelled(&self, cancelled: &CancelledPipeline) {
        if cancelled.pipeline_status.is_some() {
            self.statuses.notify_one();
        }
        for (job, status) in &cancelled.ended {
            self.hub.publish(*job, LogUpdate::Finished(*status));
        }
        if !cancelled.stopping.is_empty() {
            self.cancels.notify_waiters();
            self.announce(News::CancelRequested);
        }
    }

    /// Runs a finished pipeline's unsuccessful jobs again; wakes the workers.
    pub async fn retry_pipeline(&self, pipeline: Uuid) -> Result<RetriedPipeline, StoreError> {
        let retried = self.store.retry_pipeline(pipeline).await?;
        if !retried.requeued.is_empty() {
            self.jobs_ready();
        }
        Ok(retried)
    }

    /// Stores log bytes at `offset` and tells watchers; returns the log's length.
    pub async fn append_log(
        &self,
        job: Uuid,
        lease: Uuid,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, StoreError> {
        if let Some(&(_, length)) = self.capped.lock().expect("lock poisoned").get(&lease) {
            return Ok(length);
        }
        let masker = self.masks.lock().expect("lock poisoned").get(&job).cloned();
        let mut checked = Vec::new();
        let data = match masker {
            Some(masker) => {
                checked.extend_from_slice(data);
                if masker.mask_in_place(&mut checked) {
                    tracing::warn!(%job, "a worker sent a secret unmasked; the server masked it");
                }
                &checked[..]
            }
            None => data,
        };
        let appended = self
            .store
            .append_log(job, lease, offset, data, self.log_cap)
            .await?;
        if appended.length > self.log_cap {
            self.capped
                .lock()
                .expect("lock poisoned")
                .insert(lease, (job, appended.length));
        }
        if !appended.data.is_empty() {
            let update = LogUpdate::Bytes {
                attempt: appended.attempt,
                offset: appended.offset,
                data: Bytes::from(appended.data),
            };
            self.hub.publish(job, update);
        }
        Ok(appended.length)
    }

    /// Records a step's start or end and tells watchers.
    pub async fn record_step(
        &self,
        job: Uuid,
        lease: Uuid,
        step: StepReport,
    ) -> Result<(), StoreError> {
        self.store.record_step(job, lease, &step).await?;
        self.hub.publish(job, LogUpdate::Step(step));
        Ok(())
    }

    /// Ends a job; wakes workers when its end made other jobs ready.
    pub async fn complete(
        &self,
        job: Uuid,
        lease: Uuid,
        report: &CompleteRequest,
    ) -> Result<PipelineStatus, StoreError> {
        // A worker that sent a secret in its message or test reports (an old or broken one) is not trusted on it.
        let masker = self.masks.lock().expect("lock poisoned").get(&job).cloned();
        let masked;
        let report = match masker {
            Some(masker) => {
                masked = CompleteRequest {
                    message: report.message.as_ref().map(|m| masker.mask_str(m)),
                    tests: report
                        .tests
                        .iter()
                        .cloned()
                        .map(|case| case.masked(&masker))
                        .collect(),
                    steps: report.steps.clone(),
                    ..*report
                };
                if masked.message != report.message || masked.tests != report.tests {
                    tracing::warn!(%job, "a worker sent a secret unmasked in its report; the server masked it");
                }
                &masked
            }
            None => report,
        };
        // Gantry's own failures (a worker lost, an image not pulled) run again, up to the automatic retries, unless
        // the worker says another attempt would end the same way.
        let infra = matches!(
            report.failure_kind,
            Some(FailureKind::WorkerLost | FailureKind::Infra)
        ) && !report.no_retry;
        let requeued = if infra {
            self.store
                .requeue_infra(job, lease, report, self.infra_retries)
                .await?
        } else {
            None
        };
        let done = match requeued {
            Some(requeued) => requeued,
            None => self.store.complete_job(job, lease, report).await?,
        };
        self.masks.lock().expect("lock poisoned").remove(&job);
        self.capped.lock().expect("lock poisoned").remove(&lease);
        for step in &report.steps {
            self.hub.publish(job, LogUpdate::Step(step.clone()));
        }
        if done.status == JobStatus::Queued {
            // Retried: the job is not finished, and its next attempt may start right away.
            self.jobs_ready();
            return Ok(done.pipeline_status);
        }
        self.hub.publish(job, LogUpdate::Finished(done.status));
        for skipped in done.skipped {
            self.hub
                .publish(skipped, LogUpdate::Finished(JobStatus::Skipped));
        }
        let pipeline_status = done.pipeline_status;
        // A slot came free: the autoscaler's count of busy slots changed.
        self.scaler.notify_one();
        if pipeline_status.is_finished() {
            self.statuses.notify_one();
        } else {
            self.jobs_ready();
        }
        Ok(pipeline_status)
    }
}
