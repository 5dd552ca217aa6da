//! The container runtime (docs/container.md): per job, a fresh container made by the worker itself — namespaces, a
//! cgroup with limits, an overlay root filesystem — in which the job's steps run in order.
//!
//! The agent only sees [`ContainerRuntime`] and [`Container`]; the namespaces backend below is the first
//! implementation. Every container's init is forked by one `gantry container-zygote` per runtime (see
//! `zygote`), so that everything between fork and exec happens in a single-threaded process.

mod bpf;
pub mod cgroup;
mod container;
mod egress;
mod events;
mod fs_watch;
mod host_view;
mod identity;
mod init;
mod masks;
mod namespaces;
mod netlink;
mod network;
mod outcome;
mod pid1;
mod private_files;
mod protocol;
mod rootfs;
pub mod security;
mod service;
mod spawn;
mod standby;
mod sweep;
mod userns;
mod zygote;

pub use egress::EgressOptions;
pub use gantry_model::pipeline::Network;
pub use namespaces::{NamespacesRuntime, RuntimeOptions};
pub use userns::IdMap;
pub use zygote::server::zygote_main;

use gantry_model::pipeline::Readiness;
use gantry_model::{FailureKind, Resources};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What a container is made from and what it runs.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    /// Unique id; it names the cgroup, and starts with the worker's name so that a restarted
    /// worker can sweep what it left behind (and only that).
    pub id: String,
    /// The hostname inside the container.
    pub hostname: String,
    /// Host directory mounted at `/workspace` (the checkout), as `workspace_mount` says; also the steps' cwd.
    pub workspace: PathBuf,
    /// How `workspace` becomes `/workspace`.
    pub workspace_mount: WorkspaceMount,
    /// Shell command lines, each run as `/bin/sh -e -c STEP`, in order, stopping at the first failure.
    pub steps: Vec<String>,
    /// The steps' environment (nothing of the worker's own environment leaks in).
    pub env: Vec<(String, String)>,
    /// cgroup limits.
    pub resources: Resources,
    /// Host paths hidden from the job (data dirs, secrets), on top of the runtime's own default masks.
    pub masked_paths: Vec<PathBuf>,
    /// Kill everything when the job runs longer than this.
    pub timeout: Duration,
    /// The root file system and how the steps run in it; the default is the host's `/`, as root, in
    /// `/workspace`.
    pub image: ImageRoot,
    /// Containers started beside the steps, in the same network namespace and cgroup, and made ready first.
    pub services: Vec<ServiceConfig>,
    /// What the container's network namespace reaches (`network:`).
    pub network: Network,
}

/// A service container (docs/pipeline.md): its own root file system, mount, UTS and IPC namespaces, but the job's
/// network namespace (so the steps reach it on `localhost`), PID namespace and cgroup (so its processes count
/// against the job's limits and die with the job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Its name: the service's hostname, and a name for `127.0.0.1` in the job's `/etc/hosts`.
    pub name: String,
    /// Its root file system, user and working dir (none: `/`).
    pub image: ImageRoot,
    /// The program and its arguments (never empty).
    pub argv: Vec<String>,
    /// Its whole environment.
    pub env: Vec<(String, String)>,
    /// When it counts as ready.
    pub ready: Readiness,
    /// How long it may take to get ready.
    pub ready_timeout: std::time::Duration,
}

/// How a container's workspace directory becomes its `/workspace`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceMount {
    /// Bound read-write: the job's writes land in the directory (the worker's own throwaway checkout).
    #[default]
    Bind,
    /// The read-only lower layer of an overlay whose upper layer is in the container's scratch tmpfs: the job
    /// may write in `/workspace`, the directory never changes (`gantry run` on a user's working tree).
    ReadOnlyLower,
}

/// A container's root file system, from an image (see `crate::image`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRoot {
    /// Read-only overlay layers, lowest first. Empty: the host's `/`, with the host's secrets and the
    /// `masked_paths` hidden; otherwise only these layers, and no host path but the workspace is visible.
    pub layers: Vec<PathBuf>,
    /// The steps' working dir in the container (made if missing); none: `/workspace`.
    pub working_dir: Option<PathBuf>,
    /// Who the steps run as: `uid[:gid]` or `name[:group]` from the image's `/etc/passwd` and `/etc/group`;
    /// none: root.
    pub user: Option<String>,
}

/// What happens in a container, in the order it happened.
#[derive(Debug, PartialEq)]
pub enum ContainerEvent {
    /// Bytes the steps wrote to stdout or stderr (one stream, in write order).
    Output(Vec<u8>),
    /// Step `index` started.
    StepStarted {
        /// 0-based step index.
        index: u32,
    },
    /// Step `index` ended; all the output it wrote before exiting was sent before this event.
    StepExited {
        /// 0-based step index.
        index: u32,
        /// Its shell's exit status (128+N when killed by signal N).
        exit_code: i32,
    },
}

/// How a container's run ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Exit status of the last step that ran.
    pub exit_code: Option<i32>,
    /// None when every step exited 0.
    pub failure: Option<FailureKind>,
    /// A human explanation of a failure.
    pub message: Option<String>,
    /// CPU time the cgroup used.
    pub cpu_seconds: Option<f64>,
    /// Peak memory of the cgroup.
    pub peak_memory_bytes: Option<u64>,
    /// Running it again would end the same way (it asks more than the worker allows): not to be retried.
    pub no_retry: bool,
}

/// Errors of the runtime itself (not of the job).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The worker lacks the privileges to make containers.
    #[error("the worker cannot create containers: {0} (run it as root, or with CAP_SYS_ADMIN)")]
    NotPrivileged(String),
    /// A file operation on `path` failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The container's init process reported a setup failure.
    #[error("container setup failed: {0}")]
    Setup(String),
    /// The host's cgroups cannot hold a container (a controller is missing, or processes would not die).
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// A container id or worker name that cannot name a cgroup and a directory, or is not this worker's.
    #[error("invalid container id {id:?}: {reason}")]
    InvalidId {
        /// The id as given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option of the runtime is unusable.
    #[error("runtime option {option}: {reason}")]
    Options {
        /// Which option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The worker cannot give a container the network (`network: egress`).
    #[error("network: egress: {0}")]
    Egress(String),
    /// Something failed, and cleaning up after it failed too; both are kept.
    #[error("{error}; cleaning up afterwards also failed: {cleanup}")]
    WithCleanup {
        /// The first failure.
        error: Box<RuntimeError>,
        /// The failure of the cleanup that followed.
        cleanup: Box<RuntimeError>,
    },
}

impl RuntimeError {
    /// Wraps an I/O error with what was done and to which path.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// A good capacity for the channel a container's events go to: up to this many reads of its output (64 KiB
/// each) wait for the consumer.
pub const EVENTS_CAPACITY: usize = 64;

/// Makes containers. The namespaces backend is the first; a microVM or pod backend can plug in later.
pub trait ContainerRuntime: Send + Sync {
    /// Creates a container and starts its steps; events arrive on `events` as they happen. The channel is
    /// bounded on purpose: a job that writes faster than its output is taken waits (backpressure) instead of
    /// the worker holding it all; see [`EVENTS_CAPACITY`].
    fn start(
        &self,
        config: ContainerConfig,
        events: tokio::sync::mpsc::Sender<ContainerEvent>,
    ) -> Result<std::sync::Arc<dyn Container>, RuntimeError>;

    /// Removes whatever containers of this worker a previous run left behind (cgroups, dirs, processes).
    fn sweep(&self) -> Result<usize, RuntimeError>;
}

/// A running container.
pub trait Container: Send + Sync {
    /// Kills every process in it now; the outcome becomes `cancelled`. Safe to call from another thread while
    /// [`Container::wait`] blocks, and more than once.
    fn cancel(&self);

    /// Blocks until the steps are done, the timeout hit, or it was cancelled; then tears everything down
    /// (processes, cgroup) and says how it ended. Call it once.
    fn wait(&self) -> Result<Outcome, RuntimeError>;
}
