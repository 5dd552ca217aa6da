//! `gantry up`: the server and a local worker (a child process speaking the same HTTP protocol as a remote
//! one), on an embedded SQLite file unless told otherwise. Ctrl-C stops both.

use super::config::ServerArgs;
use anyhow::{Context, Result};
use clap::Args;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// `gantry up`'s options.
#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Jobs the local worker runs at once [default: the config file's `[worker] capacity`, else 1]. The
    /// variable is the one `gantry worker` reads, which the local worker would otherwise inherit unannounced.
    #[arg(long, env = "GANTRY_WORKER_CAPACITY")]
    capacity: Option<u32>,
}

/// The local worker's pool token, kept in the data dir (0600) because the database keeps only its hash.
async fn local_pool_token(server: &gantry_server::Server, data_dir: &Path) -> Result<String> {
    let path = data_dir.join("local-pool-token");
    if let Some(first) = &server.first_start {
        write_secret(&path, &first.pool_token)?;
        return Ok(first.pool_token.clone());
    }
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = server.issue_pool_token("default").await?;
    write_secret(&path, &token)?;
    Ok(token)
}

fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}

fn spawn_worker(
    url: &str,
    token: &str,
    data_dir: &Path,
    capacity: Option<u32>,
    config: Option<&Path>,
) -> Result<(Child, std::io::PipeWriter)> {
    let exe = std::env::current_exe().context("cannot find the gantry binary")?;
    // The worker's stdin is a pipe only `gantry up` holds open: however `gantry up` ends, even by SIGKILL, the
    // worker reads EOF and stops at once, and its containers with it (a process group of its own, it would
    // otherwise live on, long-polling a server that is gone).
    let (alive, held) = std::io::pipe().context("cannot make the local worker's lifeline")?;
    let mut command = Command::new(exe);
    if let Some(config) = config {
        command.env("GANTRY_CONFIG", config);
    }
    command.args(["worker", "--exit-with-stdin"]);
    if let Some(capacity) = capacity {
        command.args(["--capacity", &capacity.to_string()]);
    }
    command
        .args(["--server", url])
        .arg("--data-dir")
        .arg(data_dir.join("worker"))
        .arg("--mask")
        .arg(data_dir)
        .env("GANTRY_POOL_TOKEN", token)
        .stdin(Stdio::from(alive))
        // Its own process group: a terminal's Ctrl-C reaches only `gantry up`, which relays it (see supervise).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map(|child| (child, held))
        .context("cannot start the local worker")
}

/// Runs the farm until Ctrl-C or SIGTERM: on either, the worker finishes its running jobs first, then the
/// server stops (so the worker's last reports still land).
pub async fn run(args: UpArgs) -> Result<()> {
    let (mut server, listener, url, data_dir) = super::serve::start(&args.server).await?;
    let token = local_pool_token(&server, &data_dir).await?;
    let local_url = super::serve::local_url(&listener)?;
    let provider = server.local_workers(super::serve::local_launcher(
        &listener,
        &data_dir,
        args.server.config.as_deref(),
    )?);
    let file = super::config::read_file(args.server.config.as_ref())?;
    // A `[[pool]]` named `default` replaces the built-in local worker with an autoscaled pool.
    let builtin = !file.pool.iter().any(|p| p.name == "default");
    let file_worker = file.worker;
    if builtin && let Some(labels) = file_worker.labels.clone() {
        server.set_pool_labels("default", labels).await?;
    }
    let userns = file_worker.user_namespace.unwrap_or(true);
    let capacity = args.capacity.or(file_worker.capacity).unwrap_or(1);
    let worker_dir = data_dir.join("worker");
    if let Some(reason) =
        gantry_worker::runtime::NamespacesRuntime::user_namespace_unavailable(&worker_dir, userns)
    {
        say!(
            "Warning: jobs run WITHOUT a user namespace, so root in a job is root on this host (held in by \
             capabilities, seccomp and masks only): {reason}"
        );
    }
    say!(
        "Gantry is up: dashboard at {url}/ (database: {}; Ctrl-C stops it)",
        server.dialect()
    );
    if builtin {
        // One job at a time is the default: say it, or `parallel: 4` looks stuck.
        say!(
            "Local worker: {capacity} job{} at a time (`gantry up --capacity N` or `[worker] capacity` to change)",
            if capacity == 1 { "" } else { "s" }
        );
    }
    for pool in &file.pool {
        say!(
            "Pool {}: {} workers, min {}, max {} (see {url}/api/v1/pools/{}/decisions)",
            pool.name,
            pool.provider.as_deref().unwrap_or("local"),
            pool.min,
            pool.max.unwrap_or(1),
            pool.name
        );
    }
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = server_stopped.await;
    }));
    let mut signals = super::signal_count();
    let worker = LocalWorker {
        url: local_url,
        token,
        data_dir,
        capacity: Some(capacity),
        config: args.server.config.clone(),
    };
    let supervisor = builtin.then(|| tokio::spawn(worker.supervise(signals.clone())));
    let _ = signals.wait_for(|n| *n >= 1).await;
    say!(
        "Stopping: the workers finish their running jobs, then the server stops (Ctrl-C again stops the jobs now)."
    );
    super::serve::stop_local_workers(&provider, signals.clone()).await;
    if let Some(supervisor) = supervisor {
        supervisor.await.context("the worker supervisor failed")??;
    }
    let _ = server_stop.send(());
    serving.await.context("the server task failed")??;
    Ok(())
}

struct LocalWorker {
    url: String,
    token: String,
    data_dir: std::path::PathBuf,
    capacity: Option<u32>,
    config: Option<std::path::PathBuf>,
}

impl LocalWorker {
    /// Keeps the local worker running (restarting it with a growing pause if it dies). On the first signal it
    /// asks the worker to finish its jobs (SIGTERM), on the second to stop them now (SIGTERM again), and waits.
    async fn supervise(self, mut signals: tokio::sync::watch::Receiver<u32>) -> Result<()> {
        let mut pause = Duration::from_secs(1);
        loop {
            if *signals.borrow() >= 1 {
                return Ok(());
            }
            let started = tokio::time::Instant::now();
            let (mut child, _lifeline) = match spawn_worker(
                &self.url,
                &self.token,
                &self.data_dir,
                self.capacity,
                self.config.as_deref(),
            ) {
                Ok(started) => started,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start the local worker; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let terminate = |child: &Child| {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            };
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    if *signals.borrow() >= 1 {
                        return Ok(());
                    }
                    if started.elapsed() > Duration::from_secs(60) {
                        pause = Duration::from_secs(1);
                    }
                    tracing::error!(%status, "the local worker exited; restarting it in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
                _ = async { signals.wait_for(|n| *n >= 1).await.is_ok() } => {
                    terminate(&child);
                    tokio::select! {
                        status = child.wait() => { status?; }
                        _ = async { signals.wait_for(|n| *n >= 2).await.is_ok() } => {
                            terminate(&child);
                            child.wait().await?;
                        }
                    }
                    return Ok(());
                }
            }
        }
    }
}
