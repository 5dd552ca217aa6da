//! `gantry server`: the server alone.

use super::config::ServerArgs;
use anyhow::{Context, Result};
use gantry_server::autoscale::{LocalLauncher, LocalProvider};
use gantry_server::{FirstStart, Server};
use std::path::Path;
use tokio::net::TcpListener;

/// Binds, starts the server, prints where it is (and the first tokens), and serves until SIGINT/SIGTERM; the
/// workers of its `local` pools are drained first.
pub async fn run(args: ServerArgs) -> Result<()> {
    let (mut server, listener, url, data_dir) = start(&args, Vec::new()).await?;
    let provider = server.local_workers(local_launcher(
        &listener,
        &data_dir,
        args.config.as_deref(),
    )?);
    say!(
        "Gantry server listening: dashboard at {url}/ (database: {})",
        server.dialect()
    );
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = server_stopped.await;
    }));
    let mut signals = super::signal_count();
    let _ = signals.wait_for(|n| *n >= 1).await;
    stop_local_workers(&provider, signals).await;
    let _ = server_stop.send(());
    serving.await.context("the server task failed")??;
    Ok(())
}

/// The server's URL as workers on this host reach it: the bound address, not the public URL (which may be a
/// proxy).
pub fn local_url(listener: &TcpListener) -> Result<String> {
    let bound = listener.local_addr()?;
    let ip = if bound.ip().is_unspecified() {
        "127.0.0.1".parse()?
    } else {
        bound.ip()
    };
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(ip, bound.port())
    ))
}

/// How this server starts the workers of its `local` pools: `gantry worker` children under `DATA_DIR/workers`,
/// hiding the server's data dir from jobs.
pub fn local_launcher(
    listener: &TcpListener,
    data_dir: &Path,
    config: Option<&Path>,
) -> Result<LocalLauncher> {
    Ok(LocalLauncher {
        exe: std::env::current_exe().context("cannot find the gantry binary")?,
        server_url: local_url(listener)?,
        workers_dir: data_dir.join("workers"),
        config: config.map(Path::to_path_buf),
        masks: vec![data_dir.to_path_buf()],
    })
}

/// Asks the local pools' workers to finish their jobs and leave, and waits for them; a second signal stops the
/// jobs now.
pub async fn stop_local_workers(
    provider: &LocalProvider,
    mut signals: tokio::sync::watch::Receiver<u32>,
) {
    provider.drain_all().await;
    tokio::select! {
        _ = provider.wait_all() => {}
        _ = signals.wait_for(|n| *n >= 2) => {
            provider.abort_all();
            provider.wait_all().await;
        }
    }
    provider.forget_tokens().await;
}

/// Starts a server from the flags, with `builtin` pools besides the file's; returns it with its listener, its
/// public URL and its data dir.
pub async fn start(
    args: &ServerArgs,
    builtin: Vec<gantry_model::wire::Pool>,
) -> Result<(Server, TcpListener, String, std::path::PathBuf)> {
    let mut resolved = args.resolve()?;
    resolved.server.pools.extend(builtin);
    let listener = TcpListener::bind(&resolved.listen)
        .await
        .with_context(|| format!("cannot listen on {}", resolved.listen))?;
    let addr = listener.local_addr()?;
    if !resolved.public_url_given {
        resolved.server.public_url = format!("http://{addr}");
    }
    let url = resolved.server.public_url.trim_end_matches('/').to_owned();
    let data_dir = resolved.server.data_dir.clone();
    if resolved.server.private {
        say!(
            "Private farm: every read needs a token (gantry token create --name NAME --scope read); \
             /healthz and the webhook routes stay open."
        );
    }
    let server = Server::start(resolved.server)
        .await
        .context("the server could not start")?;
    if let Some(first) = &server.first_start {
        print_first_start(first, &url);
    }
    Ok((server, listener, url, data_dir))
}

fn print_first_start(first: &FirstStart, url: &str) {
    say!("First start: these tokens are shown once and stored only as hashes. Keep them.");
    if let Some(admin) = &first.admin_token {
        say!("  admin token:        {admin}");
        say!("    (for the CLI: export GANTRY_SERVER={url} GANTRY_TOKEN={admin})");
    }
    say!("  default pool token: {}", first.pool_token);
    say!("    (for remote workers: gantry worker --server {url} --pool-token <token>)");
}
