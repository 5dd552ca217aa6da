//! Running one leased job: checkout, container, live log upload, step reports, heartbeats, final report.

mod artifacts;
mod config;
mod control;
mod limits;
mod outputs;
mod services;
mod upload;

pub use config::{Placement, PreparedImages, container_config, prepare_images};
pub use limits::JobLimits;

use crate::agent::client::{Client, with_retries};
use crate::checkout::MirrorCache;
use crate::image::ImageStore;
use crate::runtime::{ContainerRuntime, Outcome, WorkspaceMount};
use control::{JobControl, heartbeats};
use gantry_model::FailureKind;
use gantry_model::junit::TestCase;
use gantry_model::wire::{CompleteRequest, Lease, StepReport};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument;
use upload::{PATIENCE, upload};

/// Runs leased jobs; shared by the agent's job tasks.
pub struct JobRunner {
    /// The server.
    pub client: Client,
    /// Makes containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The worker's mirror cache.
    pub mirrors: MirrorCache,
    /// Resolves and pulls the jobs' images.
    pub images: Arc<ImageStore>,
    /// Where job workspaces are made (one fresh dir per job, removed afterwards).
    pub workspaces: PathBuf,
    /// Host paths hidden from jobs.
    pub masked_paths: Vec<PathBuf>,
    /// The worker's name (prefix of every container id).
    pub worker_name: String,
    /// Leases of running jobs, on disk, for reporting them lost after a crash.
    pub journal: crate::agent::journal::LeaseJournal,
    /// The most a job may ask for.
    pub limits: JobLimits,
    /// The jobs running now, for abandoning them when the worker must stop at once.
    pub running: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, Arc<JobControl>>>,
}

fn infra(message: String) -> Outcome {
    Outcome {
        failure: Some(FailureKind::Infra),
        message: Some(message),
        ..Outcome::default()
    }
}

fn failed_with(failed: artifacts::TransferFailure) -> Outcome {
    Outcome {
        failure: Some(failed.kind),
        message: Some(failed.message),
        ..Outcome::default()
    }
}

/// A collection problem fails a job that had succeeded; a job that had failed keeps its failure, and the
/// problem is added to its message.
fn add_failure(outcome: &mut Outcome, failed: artifacts::TransferFailure) {
    match (&outcome.failure, &mut outcome.message) {
        (None, _) => {
            outcome.failure = Some(failed.kind);
            outcome.message = Some(failed.message);
        }
        (Some(_), Some(message)) => {
            message.push_str("; ");
            message.push_str(&failed.message);
        }
        (Some(_), None) => outcome.message = Some(failed.message),
    }
}

impl JobRunner {
    /// Kills every running job and hands each back to the server as lost by this worker.
    pub fn abandon_all(&self) {
        for control in self.running.lock().expect("lock poisoned").values() {
            control.abandon();
        }
    }

    /// Runs the job to its end and reports it; never panics on the job's account.
    pub async fn run(self: Arc<Self>, mut lease: Lease) {
        self.limits.fit_defaults(&mut lease.spec);
        let span = tracing::info_span!("job", job = %lease.job_id, name = %lease.spec.name, attempt = lease.attempt);
        async move {
            let workspace = self.workspaces.join(lease.job_id.simple().to_string());
            self.journal.record(&lease.without_secrets());
            let control = Arc::new(JobControl::default());
            self.running.lock().expect("lock poisoned").insert(lease.job_id, control.clone());
            // Heartbeats run from the lease to the report: a long checkout must not let the lease expire.
            let heartbeat = tokio::spawn(heartbeats(self.client.clone(), lease.clone(), control.clone()));
            let refused = self.limits.refusal(&lease.spec);
            let (outcome, steps, log_length) = match refused {
                Some(message) => (Outcome { no_retry: true, ..infra(message) }, Vec::new(), 0),
                None => match self.checkout(&lease, &workspace).await {
                Err(message) => (infra(message), Vec::new(), 0),
                Ok(()) => match artifacts::fetch(&self.client, &lease, &workspace).await {
                    Err(failed) => (failed_with(failed), Vec::new(), 0),
                    Ok(()) => self.run_container(&lease, workspace.clone(), &control).await,
                },
                },
            };
            let (outcome, tests) = self.collect(&lease, &workspace, outcome, &control).await;
            if let Err(e) = std::fs::remove_dir_all(&workspace)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %workspace.display(), error = %e, "could not remove the workspace");
            }
            if !control.lost() {
                self.report(&lease, outcome, steps, log_length, tests, &control).await;
            } else {
                tracing::warn!("the lease was lost; the server has given the job to another attempt");
            }
            heartbeat.abort();
            self.running.lock().expect("lock poisoned").remove(&lease.job_id);
            self.journal.forget(lease.job_id);
        }
        .instrument(span)
        .await
    }

    async fn report(
        &self,
        lease: &Lease,
        outcome: Outcome,
        steps: Vec<StepReport>,
        log_length: u64,
        tests: Vec<TestCase>,
        control: &JobControl,
    ) {
        let outcome = if control.abandoned() {
            let message =
                "the worker was stopped while running this job; its container was removed"
                    .to_owned();
            Outcome {
                failure: Some(FailureKind::WorkerLost),
                message: Some(message),
                ..outcome
            }
        } else {
            outcome
        };
        // A message may quote the job's output (a service's last lines), and test reports are the job's
        // output: masked like the log.
        let masker = gantry_model::secret::mask::Masker::new(lease.secrets.values());
        let report = CompleteRequest {
            exit_code: outcome.exit_code,
            failure_kind: outcome.failure,
            message: outcome.message.map(|m| masker.mask_str(&m)),
            steps,
            log_length,
            cpu_seconds: outcome.cpu_seconds,
            peak_memory_bytes: outcome.peak_memory_bytes,
            tests: tests.into_iter().map(|case| case.masked(&masker)).collect(),
            no_retry: outcome.no_retry,
        };
        let result = with_retries(PATIENCE, || self.client.complete(lease, &report)).await;
        if control.check(result, "reporting the job's end").is_some() {
            tracing::info!(failure = ?report.failure_kind, exit_code = ?report.exit_code, "job done");
        }
    }

    /// After the container: the job's test reports are read whatever its outcome, its artifacts uploaded only
    /// when it succeeded. A job that succeeded fails when its outputs cannot be collected; one that failed
    /// keeps its own failure, with the collection's problem added to its message.
    async fn collect(
        &self,
        lease: &Lease,
        workspace: &std::path::Path,
        mut outcome: Outcome,
        control: &JobControl,
    ) -> (Outcome, Vec<TestCase>) {
        let ran = !matches!(
            outcome.failure,
            Some(FailureKind::Cancelled | FailureKind::Infra | FailureKind::WorkerLost)
        );
        if control.lost() || control.cancelled() || !ran {
            return (outcome, Vec::new());
        }
        let mut tests = Vec::new();
        if !lease.spec.reports.is_empty() {
            match artifacts::reports(lease, workspace.to_owned()).await {
                Ok((cases, note)) => {
                    tests = cases;
                    if outcome.failure.is_none() {
                        outcome.message = note;
                    }
                }
                Err(failed) => add_failure(&mut outcome, failed),
            }
        }
        if outcome.failure.is_none() && !lease.spec.artifacts.is_empty() {
            match artifacts::upload(&self.client, lease, workspace.to_owned()).await {
                Ok(count) => tracing::info!(count, "artifacts uploaded"),
                Err(failed) => add_failure(&mut outcome, failed),
            }
        }
        (outcome, tests)
    }

    async fn checkout(&self, lease: &Lease, workspace: &std::path::Path) -> Result<(), String> {
        let (mirrors, source, dest) = (
            self.mirrors.clone(),
            lease.source.clone(),
            workspace.to_owned(),
        );
        let (server, headers) = self.client.source_access(lease);
        let checkout = lease.spec.checkout;
        tokio::task::spawn_blocking(move || {
            let request = crate::checkout::CheckoutRequest {
                source: &source,
                server: &server,
                headers: &headers,
                checkout,
            };
            // The source comes from the server: one restarting (or a moment unreachable) is waited for, as
            // every other call to it is, for about half a minute, before the checkout counts as failed.
            let mut pause = std::time::Duration::from_millis(250);
            loop {
                match mirrors.checkout(&request, &dest) {
                    Err(error) if source.mirror.is_some() && pause.as_secs() < 16 => {
                        tracing::warn!(%error, "fetching the source from the server failed; trying again");
                        let _ = std::fs::remove_dir_all(&dest);
                        std::thread::sleep(pause);
                        pause *= 2;
                    }
                    done => return done,
                }
            }
        })
        .await
        .map_err(|e| format!("checkout task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    async fn run_container(
        &self,
        lease: &Lease,
        workspace: PathBuf,
        control: &Arc<JobControl>,
    ) -> (Outcome, Vec<StepReport>, u64) {
        if control.cancelled() {
            let outcome = Outcome {
                failure: Some(FailureKind::Cancelled),
                message: Some("cancelled before it started".into()),
                ..Outcome::default()
            };
            return (outcome, Vec::new(), 0);
        }
        let images = match prepare_images(&self.images, &lease.spec).await {
            Ok(images) => images,
            Err(message) => return (infra(message), Vec::new(), 0),
        };
        let placement = Placement {
            // With the attempt: the container of an attempt this worker lost may still be there.
            id: format!(
                "{}-{}-{}",
                self.worker_name,
                lease.job_id.simple(),
                lease.attempt
            ),
            workspace,
            workspace_mount: WorkspaceMount::Bind,
            masked_paths: self.masked_paths.clone(),
        };
        let mut config = container_config(&lease.spec, &lease.env, images, placement);
        // Secrets last: a secret wins over the file's `env:` of the same name (the farm's value is the real one).
        config::set_env(&mut config.env, lease.secrets.0.iter().cloned());
        let (tx, rx) = tokio::sync::mpsc::channel(crate::runtime::EVENTS_CAPACITY);
        // On a thread that may block: a container on the host image waits for the worker's first walk of the
        // host's private files (started with the worker, ~1 s), which the job's lease and checkout did not.
        let runtime = self.runtime.clone();
        let container = match tokio::task::spawn_blocking(move || runtime.start(config, tx)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return (infra(e.to_string()), Vec::new(), 0),
            Err(e) => {
                return (
                    infra(format!("the container's start failed: {e}")),
                    Vec::new(),
                    0,
                );
            }
        };
        control.attach(container.clone());
        let upload = tokio::spawn(upload(
            self.client.clone(),
            lease.clone(),
            rx,
            control.clone(),
        ));
        let waited = tokio::task::spawn_blocking(move || container.wait()).await;
        control.detach();
        let (steps, length) = upload.await.unwrap_or_default();
        let outcome = match waited {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => infra(e.to_string()),
            Err(e) => infra(format!("the container task failed: {e}")),
        };
        (outcome, steps, length)
    }
}
