//! Running one leased job: checkout, container, live log upload, step reports, heartbeats, final report.

use crate::agent::client::{Client, ClientError, with_retries};
use crate::checkout::MirrorCache;
use crate::runtime::{Container, ContainerConfig, ContainerEvent, ContainerRuntime, Outcome};
use chrono::Utc;
use gantry_model::FailureKind;
use gantry_model::wire::{CompleteRequest, Lease, StepReport};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

/// Output is sent at least this often while a job prints (DESIGN §4: ~100 ms).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// …or as soon as this much is waiting.
const FLUSH_BYTES: usize = 256 * 1024;
/// How long calls about a job keep retrying while the server is unreachable.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs leased jobs; shared by the agent's job tasks.
pub struct JobRunner {
    /// The server.
    pub client: Client,
    /// Makes containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// The worker's mirror cache.
    pub mirrors: MirrorCache,
    /// Where job workspaces are made (one fresh dir per job, removed afterwards).
    pub workspaces: PathBuf,
    /// Host paths hidden from jobs.
    pub masked_paths: Vec<PathBuf>,
    /// The worker's name (prefix of every container id).
    pub worker_name: String,
}

fn hostname_for(job: &str) -> String {
    let clean: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("gantry-{}", clean.trim_matches('-'))
        .chars()
        .take(63)
        .collect()
}

fn infra(message: String) -> Outcome {
    Outcome {
        failure: Some(FailureKind::Infra),
        message: Some(message),
        ..Outcome::default()
    }
}

impl JobRunner {
    /// Runs the job to its end and reports it; never panics on the job's account.
    pub async fn run(self: Arc<Self>, lease: Lease) {
        let span = tracing::info_span!("job", job = %lease.job_id, name = %lease.spec.name, attempt = lease.attempt);
        async move {
            let workspace = self.workspaces.join(lease.job_id.simple().to_string());
            let lost = Arc::new(AtomicBool::new(false));
            let (outcome, steps, log_length) = match self.checkout(&lease, &workspace).await {
                Err(message) => (infra(message), Vec::new(), 0),
                Ok(()) => self.run_container(&lease, workspace.clone(), &lost).await,
            };
            if let Err(e) = std::fs::remove_dir_all(&workspace)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %workspace.display(), error = %e, "could not remove the workspace");
            }
            if lost.load(Ordering::SeqCst) {
                tracing::warn!("the lease was lost; the server has given the job to another attempt");
                return;
            }
            let report = CompleteRequest {
                exit_code: outcome.exit_code,
                failure_kind: outcome.failure,
                message: outcome.message,
                steps,
                log_length,
                cpu_seconds: outcome.cpu_seconds,
                peak_memory_bytes: outcome.peak_memory_bytes,
            };
            match with_retries(PATIENCE, || self.client.complete(&lease, &report)).await {
                Ok(()) => tracing::info!(failure = ?report.failure_kind, exit_code = ?report.exit_code, "job done"),
                Err(e) => tracing::error!(error = %e, "could not report the job's end"),
            }
        }
        .instrument(span)
        .await
    }

    async fn checkout(&self, lease: &Lease, workspace: &std::path::Path) -> Result<(), String> {
        let (mirrors, source, dest) = (
            self.mirrors.clone(),
            lease.source.clone(),
            workspace.to_owned(),
        );
        tokio::task::spawn_blocking(move || {
            mirrors.checkout(&source.repo, &source.clone_url, &source.commit, &dest)
        })
        .await
        .map_err(|e| format!("checkout task failed: {e}"))?
        .map_err(|e| e.to_string())
    }

    async fn run_container(
        &self,
        lease: &Lease,
        workspace: PathBuf,
        lost: &Arc<AtomicBool>,
    ) -> (Outcome, Vec<StepReport>, u64) {
        let spec = &lease.spec;
        let mut env = lease.env.clone();
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let config = ContainerConfig {
            id: format!("{}-{}", self.worker_name, lease.job_id.simple()),
            hostname: hostname_for(spec.name.as_str()),
            workspace,
            steps: spec.steps.clone(),
            env,
            resources: spec.resources.clone(),
            masked_paths: self.masked_paths.clone(),
            timeout: Duration::from_secs(spec.timeout_secs),
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let container = match self.runtime.start(config, tx) {
            Ok(c) => c,
            Err(e) => return (infra(e.to_string()), Vec::new(), 0),
        };
        let heartbeat = tokio::spawn(heartbeats(
            self.client.clone(),
            lease.clone(),
            container.clone(),
            lost.clone(),
        ));
        let upload = tokio::spawn(upload(
            self.client.clone(),
            lease.clone(),
            rx,
            container.clone(),
            lost.clone(),
        ));
        let waited = tokio::task::spawn_blocking(move || container.wait()).await;
        let (steps, length) = upload.await.unwrap_or_default();
        heartbeat.abort();
        let outcome = match waited {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => infra(e.to_string()),
            Err(e) => infra(format!("the container task failed: {e}")),
        };
        (outcome, steps, length)
    }
}

async fn heartbeats(
    client: Client,
    lease: Lease,
    container: Arc<dyn Container>,
    lost: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(lease.heartbeat_secs.max(1)));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match client.heartbeat(&lease).await {
            Ok(true) => {
                tracing::info!("the job was cancelled");
                container.cancel();
            }
            Ok(false) => {}
            Err(ClientError::StaleLease) => {
                lost.store(true, Ordering::SeqCst);
                container.cancel();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Streams the container's events to the server; returns the steps and the log's length.
async fn upload(
    client: Client,
    lease: Lease,
    mut events: UnboundedReceiver<ContainerEvent>,
    container: Arc<dyn Container>,
    lost: Arc<AtomicBool>,
) -> (Vec<StepReport>, u64) {
    let mut log = LogUpload {
        client: &client,
        lease: &lease,
        container,
        lost,
        pending: Vec::new(),
        sent: 0,
    };
    let mut steps: Vec<StepReport> = Vec::new();
    let mut ticker = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(ContainerEvent::Output(bytes)) => {
                    log.pending.extend_from_slice(&bytes);
                    if log.pending.len() >= FLUSH_BYTES {
                        log.flush().await;
                    }
                }
                Some(ContainerEvent::StepStarted { index }) => {
                    log.flush().await;
                    let command = lease.spec.steps.get(index as usize).cloned().unwrap_or_default();
                    let step = StepReport { index, command, log_offset: log.sent, started_at: Utc::now(), finished_at: None, exit_code: None };
                    log.report_step(&step).await;
                    steps.push(step);
                }
                Some(ContainerEvent::StepExited { index, exit_code }) => {
                    log.flush().await;
                    if let Some(step) = steps.iter_mut().find(|s| s.index == index) {
                        step.finished_at = Some(Utc::now());
                        step.exit_code = Some(exit_code);
                        let step = step.clone();
                        log.report_step(&step).await;
                    }
                }
                None => {
                    log.flush().await;
                    return (steps, log.sent);
                }
            },
            _ = ticker.tick() => log.flush().await,
        }
    }
}

struct LogUpload<'a> {
    client: &'a Client,
    lease: &'a Lease,
    container: Arc<dyn Container>,
    lost: Arc<AtomicBool>,
    pending: Vec<u8>,
    sent: u64,
}

impl LogUpload<'_> {
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let data = std::mem::take(&mut self.pending);
        let len = data.len() as u64;
        if !self.lost.load(Ordering::SeqCst) {
            let result = with_retries(PATIENCE, || {
                self.client.append_log(self.lease, self.sent, data.clone())
            })
            .await;
            self.check(result);
        }
        self.sent += len;
    }

    async fn report_step(&mut self, step: &StepReport) {
        if !self.lost.load(Ordering::SeqCst) {
            let result = with_retries(PATIENCE, || self.client.step(self.lease, step)).await;
            self.check(result);
        }
    }

    fn check(&self, result: Result<(), ClientError>) {
        match result {
            Ok(()) => {}
            Err(ClientError::StaleLease) => {
                self.lost.store(true, Ordering::SeqCst);
                self.container.cancel();
            }
            Err(e) => {
                tracing::error!(error = %e, "could not send the job's progress; the log may have a gap")
            }
        }
    }
}
