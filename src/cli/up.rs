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
    /// Jobs the local worker runs at once.
    #[arg(long, default_value_t = 1)]
    capacity: u32,
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
    capacity: u32,
    config: Option<&Path>,
) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the gantry binary")?;
    let mut command = Command::new(exe);
    if let Some(config) = config {
        command.env("GANTRY_CONFIG", config);
    }
    command
        .arg("worker")
        .args(["--server", url])
        .arg("--data-dir")
        .arg(data_dir.join("worker"))
        .arg("--mask")
        .arg(data_dir)
        .args(["--capacity", &capacity.to_string()])
        .env("GANTRY_POOL_TOKEN", token)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the local worker")
}

/// Runs the farm until Ctrl-C or SIGTERM.
pub async fn run(args: UpArgs) -> Result<()> {
    let (server, listener, url, data_dir) = super::serve::start(&args.server).await?;
    let token = local_pool_token(&server, &data_dir).await?;
    say!(
        "Gantry is up: dashboard at {url}/ (database: {}; Ctrl-C stops it)",
        server.dialect()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(server.serve(listener, {
        let mut rx = stop_rx.clone();
        async move {
            let _stopped = rx.wait_for(|stop| *stop).await.is_ok();
        }
    }));
    let worker = LocalWorker {
        url,
        token,
        data_dir,
        capacity: args.capacity,
        config: args.server.config.clone(),
    };
    let supervisor = tokio::spawn(worker.supervise(stop_rx));
    super::shutdown_signal().await;
    say!("Stopping: the worker finishes its running jobs, then the server stops.");
    let _ = stop_tx.send(true);
    supervisor.await.context("the worker supervisor failed")??;
    serving.await.context("the server task failed")??;
    Ok(())
}

struct LocalWorker {
    url: String,
    token: String,
    data_dir: std::path::PathBuf,
    capacity: u32,
    config: Option<std::path::PathBuf>,
}

impl LocalWorker {
    /// Keeps the local worker running; on stop, asks it to finish (SIGTERM) and waits for it.
    async fn supervise(self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        loop {
            let mut child = spawn_worker(
                &self.url,
                &self.token,
                &self.data_dir,
                self.capacity,
                self.config.as_deref(),
            )?;
            tokio::select! {
                status = child.wait() => {
                    let status = status?;
                    tracing::error!(%status, "the local worker exited; restarting it");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                    if let Some(pid) = child.id() {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                    }
                    child.wait().await?;
                    return Ok(());
                }
            }
        }
    }
}
