//! The worker's main loop: register, sweep what a previous run left, long-poll for leases while a slot is free,
//! run each job in its own task; on shutdown stop leasing and let running jobs finish.

pub mod client;
pub mod journal;

use crate::checkout::MirrorCache;
use crate::exec::JobRunner;
use crate::image::{ImageError, ImageOptions, ImageStore, RegistryConfig};
use crate::runtime::{ContainerRuntime, NamespacesRuntime, RuntimeError, RuntimeOptions};
use client::{Client, ClientError};
use gantry_model::FailureKind;
use gantry_model::wire::CompleteRequest;
use gantry_model::wire::{PROTOCOL_VERSION, RegisterRequest};
use journal::LeaseJournal;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a lease request waits on the server before asking again.
const LONG_POLL: Duration = Duration::from_secs(30);

/// A worker's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The server's base URL.
    pub server: String,
    /// The pool's registration token.
    pub pool_token: String,
    /// Stable, unique name; everything the worker makes on the host carries it.
    pub name: String,
    /// Labels jobs can ask for.
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// The worker's own state: mirrors, workspaces, container scratch.
    pub data_dir: PathBuf,
    /// More host paths to hide from jobs (e.g. the server's data dir when on the same host).
    pub masked_paths: Vec<PathBuf>,
    /// The `gantry` binary, re-executed as each container's init.
    pub init_exe: PathBuf,
    /// Credentials and transport per registry.
    pub registries: Vec<RegistryConfig>,
    /// Host dirs under which `dir:` and `oci:` images may be; none: such images are refused.
    pub image_dirs: Vec<PathBuf>,
    /// Run jobs in user namespaces where the host allows it.
    pub user_namespace: bool,
    /// How `network: egress` jobs reach the world.
    pub egress: crate::runtime::EgressOptions,
    /// Host paths shown read-only to jobs on the host image (see `RuntimeOptions::host_paths`).
    pub host_paths: Vec<PathBuf>,
    /// The most a job may ask for.
    pub limits: crate::exec::JobLimits,
    /// Bytes one image layer may unpack to.
    pub max_layer_bytes: u64,
    /// A fetch into a mirror that takes longer fails the job's checkout.
    pub git_fetch_timeout: std::time::Duration,
    /// Run one job, then deregister and exit.
    pub ephemeral: bool,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Containers cannot be made here.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The server refused the worker.
    #[error("registration failed: {0}")]
    Register(ClientError),
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(#[from] ImageError),
    /// The data dir could not be made.
    #[error("cannot create {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// The server stopped accepting the worker's token.
    #[error("{0} (was its pool's token rotated? start the worker again with the new one)")]
    Revoked(ClientError),
}

/// Runs the worker until `shutdown` resolves; running jobs are then finished before it returns, unless `abort`
/// resolves too, which kills them and hands them back to the server.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
    abort: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let dirs = ["containers", "mirrors", "workspaces"].map(|d| config.data_dir.join(d));
    for dir in [&config.data_dir].into_iter().chain(&dirs) {
        let opened = crate::private_dir(dir).map_err(|e| AgentError::DataDir(dir.clone(), e))?;
        if opened {
            tracing::warn!(dir = %dir.display(), "made the dir private (0700): other users could enter it");
        }
    }
    let [containers, mirrors, workspaces] = dirs;
    let runtime = NamespacesRuntime::new(RuntimeOptions {
        worker_name: config.name.clone(),
        state_dir: containers,
        init_exe: config.init_exe.clone(),
        extra_masks: vec![config.data_dir.clone()],
        user_namespace: config.user_namespace,
        host_paths: config.host_paths.clone(),
        egress: config.egress.clone(),
    })?;
    match runtime.id_map() {
        Some(map) => tracing::info!(
            host_uid = map.host_base,
            "jobs run in user namespaces: root in a job is host uid {}",
            map.host_base
        ),
        None => tracing::warn!(
            reason = runtime.no_user_namespace_because().unwrap_or("?"),
            "jobs run without a user namespace: root in a job is root on the host, held in by capabilities, \
             seccomp and masks"
        ),
    }
    let runtime = Arc::new(runtime);
    // The first walk for the host's private files starts now and runs while the worker sweeps, registers and
    // takes its first jobs: only a container on the host image waits for it (in `exec`, on a blocking thread),
    // not the lease or the checkout, nor a job on an image.
    {
        let runtime = runtime.clone();
        tokio::task::spawn_blocking(move || runtime.wait_for_private_files());
    }
    let swept = runtime.sweep()?;
    if swept > 0 {
        tracing::warn!(
            swept,
            "removed containers a previous run of this worker left behind"
        );
    }
    sweep_workspaces(&workspaces);
    let images = ImageStore::open(ImageOptions {
        data_dir: config.data_dir.clone(),
        registries: config.registries.clone(),
        local_dirs: config.image_dirs.clone(),
        max_layer_bytes: Some(config.max_layer_bytes),
    })?;
    tokio::pin!(shutdown);
    let Some(client) = register(&config, &mut shutdown).await? else {
        return Ok(());
    };
    let journal_dir = config.data_dir.join("leases");
    let journal =
        LeaseJournal::open(journal_dir.clone()).map_err(|e| AgentError::DataDir(journal_dir, e))?;
    report_lost_jobs(&client, &journal).await;
    let runner = Arc::new(JobRunner {
        client: client.clone(),
        runtime,
        mirrors: MirrorCache::new(mirrors, config.git_fetch_timeout),
        images: Arc::new(images),
        workspaces,
        masked_paths: config.masked_paths.clone(),
        worker_name: config.name.clone(),
        journal,
        limits: config.limits.clone(),
        running: Default::default(),
    });
    let slots = Arc::new(Semaphore::new(config.capacity.max(1) as usize));
    let mut pause = Duration::from_millis(200);
    let mut revoked = None;
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let lease = tokio::select! {
            _ = &mut shutdown => break,
            lease = client.lease(LONG_POLL) => lease,
        };
        match lease {
            Ok(Some(lease)) => {
                pause = Duration::from_millis(200);
                let runner = runner.clone();
                tokio::spawn(async move {
                    runner.run(lease).await;
                    drop(permit);
                });
                if config.ephemeral {
                    tracing::info!("ephemeral: this worker runs no other job");
                    break;
                }
            }
            Ok(None) => {}
            Err(ClientError::Draining) => {
                tracing::info!("the server asked this worker to drain");
                break;
            }
            Err(e @ ClientError::Revoked(_)) => {
                revoked = Some(e);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "asking for a job failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    if let Some(e) = revoked {
        // Nothing it runs can report any more: stop it, and say why.
        tracing::error!(error = %e, "the server no longer accepts this worker; stopping its jobs");
        runner.abandon_all();
        let _all = slots.acquire_many(config.capacity.max(1)).await;
        return Err(AgentError::Revoked(e));
    }
    tracing::info!(
        "stopping: no new jobs; waiting for running ones to finish (signal again to stop them now)"
    );
    tokio::select! {
        _all = slots.acquire_many(config.capacity.max(1)) => {}
        _ = abort => {
            tracing::warn!("stopping now: killing running jobs and handing them back to the server");
            runner.abandon_all();
            let _all = slots.acquire_many(config.capacity.max(1)).await;
        }
    }
    // Gone for good: no registration is left behind to look idle (a restart registers again).
    match client.deregister().await {
        Ok(()) => tracing::info!("deregistered"),
        Err(error) => {
            tracing::warn!(%error, "cannot deregister; the server removes the worker later")
        }
    }
    Ok(())
}

/// Registers, retrying while the server is unreachable; none when shut down first.
async fn register(
    config: &WorkerConfig,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<Client>, AgentError> {
    let request = RegisterRequest {
        name: config.name.clone(),
        labels: config.labels.clone(),
        capacity: config.capacity,
        protocol_version: PROTOCOL_VERSION,
    };
    let mut pause = Duration::from_millis(100);
    loop {
        match Client::register(&config.server, &config.pool_token, &request).await {
            Ok((client, id)) => {
                tracing::info!(worker = %config.name, %id, server = %config.server, "registered");
                return Ok(Some(client));
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "cannot register yet; retrying");
                tokio::select! {
                    _ = &mut *shutdown => return Ok(None),
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(AgentError::Register(e)),
        }
    }
}

/// Jobs a killed run of this worker was running: their containers are gone (the sweep removed them), so they
/// are reported lost — the server decides whether to run them again.
async fn report_lost_jobs(client: &Client, journal: &LeaseJournal) {
    for lease in journal.take_leftovers() {
        let report = CompleteRequest {
            exit_code: None,
            failure_kind: Some(FailureKind::WorkerLost),
            message: Some("the worker stopped while running this job (killed or crashed); its container was removed when it restarted".into()),
            steps: Vec::new(),
            log_length: 0,
            cpu_seconds: None,
            peak_memory_bytes: None,
            tests: Vec::new(),
            no_retry: false,
        };
        match client.complete(&lease, &report).await {
            Ok(()) => {
                tracing::warn!(job = %lease.job_id, "reported a job lost by a previous run of this worker")
            }
            // A stale lease means the server has moved on already.
            Err(e) => {
                tracing::info!(job = %lease.job_id, error = %e, "a job lost by a previous run was already settled")
            }
        }
    }
}

/// Workspaces of jobs a killed worker did not finish are of no use to anyone.
fn sweep_workspaces(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "could not remove a stale workspace");
        }
    }
}
