//! `gantry server`: the server alone.

use super::config::ServerArgs;
use anyhow::{Context, Result};
use gantry_server::{FirstStart, Server};
use tokio::net::TcpListener;

/// Binds, starts the server, prints where it is (and the first tokens), and serves until SIGINT/SIGTERM.
pub async fn run(args: ServerArgs) -> Result<()> {
    let (server, listener, url, _) = start(&args).await?;
    say!(
        "Gantry server listening: dashboard at {url}/ (database: {})",
        server.dialect()
    );
    serve(server, listener).await
}

/// Starts a server from the flags; returns it with its listener, its public URL and its data dir.
pub async fn start(args: &ServerArgs) -> Result<(Server, TcpListener, String, std::path::PathBuf)> {
    let mut resolved = args.resolve()?;
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

/// Serves until SIGINT or SIGTERM.
pub async fn serve(server: Server, listener: TcpListener) -> Result<()> {
    server.serve(listener, super::shutdown_signal()).await?;
    Ok(())
}
