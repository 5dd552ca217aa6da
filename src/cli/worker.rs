//! `gantry worker`: leases jobs from a server and runs them in containers.

use anyhow::{Context, Result};
use clap::Args;
use gantry_worker::agent::{self, WorkerConfig};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A worker's options (docs/configuration.md).
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The server's URL.
    #[arg(long, env = "GANTRY_SERVER")]
    pub server: String,
    /// The pool's registration token.
    #[arg(long, env = "GANTRY_POOL_TOKEN", hide_env_values = true)]
    pub pool_token: String,
    /// Stable, unique name [default: HOSTNAME-HASH, from the host name and the data dir].
    #[arg(long, env = "GANTRY_WORKER_NAME")]
    pub name: Option<String>,
    /// Labels jobs can select with `runs-on`, comma-separated.
    #[arg(long, env = "GANTRY_WORKER_LABELS", value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Jobs at once.
    #[arg(long, env = "GANTRY_WORKER_CAPACITY")]
    pub capacity: Option<u32>,
    /// The worker's state: mirrors, workspaces, container scratch [default: ./gantry-worker].
    #[arg(long, env = "GANTRY_WORKER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Another host path to hide from jobs (repeatable).
    #[arg(long = "mask")]
    pub masks: Vec<PathBuf>,
    /// A TOML configuration file (its `[worker]` table).
    #[arg(long, env = "GANTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Stop at once, containers and all, when stdin closes (`gantry up` holds it: its worker dies with it); a
    /// line `drain` on stdin stops it as SIGTERM does.
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
    /// Run one job, then deregister and exit (a fresh worker per job).
    #[arg(long, env = "GANTRY_WORKER_EPHEMERAL")]
    pub ephemeral: bool,
}

/// A name that stays the same across restarts of the same worker and differs between workers on one host.
fn default_name(data_dir: &Path) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("{host}-{}", &hex::encode(digest)[..8])
}

/// Exits the process when stdin reaches its end: the process that started this worker is gone. The exit closes
/// the socket to the container zygote, which then kills every container. A line `drain` is answered as SIGTERM.
fn exit_with_stdin(drain: tokio::sync::watch::Sender<bool>) -> Result<()> {
    std::thread::Builder::new()
        .name("gantry-lifeline".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() == "drain" => {
                        let _ = drain.send(true);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            eprintln!("gantry worker: the process that started it is gone; stopping now, and its jobs with it");
            std::process::exit(1);
        })
        .context("cannot watch stdin")?;
    Ok(())
}

/// Runs the worker until SIGINT/SIGTERM.
pub async fn run(args: WorkerArgs) -> Result<()> {
    let (drain, mut drained) = tokio::sync::watch::channel(false);
    if args.exit_with_stdin {
        exit_with_stdin(drain)?;
    }
    let whole = super::config::read_file(args.config.as_ref())?;
    let secret_files = whole.secret_files(args.config.as_ref());
    let git_fetch_timeout = whole.git_fetch_timeout()?;
    let file = whole.worker;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("./gantry-worker"));
    gantry_worker::private_dir(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let (limits, max_layer_bytes) = file.job_limits()?;
    let egress = file.egress();
    let mut masked_paths = file.mask;
    masked_paths.extend(args.masks);
    masked_paths.extend(secret_files);
    let config = WorkerConfig {
        server: args.server,
        pool_token: args.pool_token,
        name: args.name.unwrap_or_else(|| default_name(&data_dir)),
        // None given: the pool's, which the server sets.
        labels: args.labels.or(file.labels).unwrap_or_default(),
        capacity: args.capacity.or(file.capacity).unwrap_or(1),
        data_dir,
        masked_paths,
        init_exe: std::env::current_exe()
            .context("cannot find the gantry binary to run containers with")?,
        egress,
        registries: file.registries,
        image_dirs: file.image_dirs,
        user_namespace: file.user_namespace.unwrap_or(true),
        host_paths: file.host_paths,
        limits,
        max_layer_bytes,
        git_fetch_timeout,
        ephemeral: args.ephemeral,
    };
    // The first SIGINT/SIGTERM stops leasing and lets running jobs finish; a second one stops them now.
    let signals = super::signal_count();
    let (mut first, mut second) = (signals.clone(), signals);
    let shutdown = async move {
        tokio::select! {
            _ = first.wait_for(|n| *n >= 1) => {}
            _ = drained.wait_for(|d| *d) => {}
        }
    };
    let abort = async move {
        let _ = second.wait_for(|n| *n >= 2).await;
    };
    agent::run(config, shutdown, abort).await?;
    Ok(())
}
