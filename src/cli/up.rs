//! `gantry up`: the server and its `local` pool of workers (children speaking the same HTTP protocol as
//! remote ones), on an embedded SQLite file unless told otherwise. Ctrl-C stops both.

use super::config::{FileConfig, ServerArgs};
use anyhow::{Context, Result};
use clap::Args;
use gantry_model::wire::{Pool, PoolSpec};

/// `gantry up`'s options.
#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Jobs each local worker runs at once [default: the config file's `[worker] capacity`, else 1]. The
    /// variable is the one `gantry worker` reads, which the local workers would otherwise inherit unannounced.
    #[arg(long, env = "GANTRY_WORKER_CAPACITY")]
    capacity: Option<u32>,
    /// Local workers the built-in `default` pool grows to when jobs wait [default: this machine's cores].
    #[arg(long, env = "GANTRY_MAX_WORKERS")]
    max_workers: Option<u32>,
}

/// The pool `gantry up` scales when the configuration file has no `[[pool]]` named `default`: local workers,
/// one always ready, one more per core while jobs wait, each running `--capacity` jobs with `[worker]`'s labels.
fn builtin_pool(args: &UpArgs, file: &FileConfig) -> Result<Option<Pool>> {
    if file.pool.iter().any(|p| p.name == "default") {
        if args.capacity.is_some() || args.max_workers.is_some() {
            say!(
                "Note: --capacity and --max-workers size the built-in pool; the [[pool]] named default in the \
                 configuration file replaces it (set its slots and max there)."
            );
        }
        return Ok(None);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let spec = PoolSpec {
        name: "default".into(),
        provider: Some("local".into()),
        labels: file
            .worker
            .labels
            .clone()
            .unwrap_or_else(|| vec!["linux".into()]),
        min: 1,
        max: Some(args.max_workers.unwrap_or(cores)),
        slots: Some(args.capacity.or(file.worker.capacity).unwrap_or(1)),
        warm: 0,
        idle_timeout: None,
        boot_timeout: None,
        trusted: false,
        target_wait: None,
        exec: None,
        kubernetes: None,
    };
    let pool = spec.check().map_err(|e| {
        anyhow::anyhow!("the built-in default pool (--capacity, --max-workers, [worker]): {e}")
    })?;
    Ok(Some(pool))
}

/// Runs the farm until Ctrl-C or SIGTERM: on either, the workers finish their running jobs first, then the
/// server stops (so the workers' last reports still land).
pub async fn run(args: UpArgs) -> Result<()> {
    let file = super::config::read_file(args.server.config.as_ref())?;
    let builtin = builtin_pool(&args, &file)?;
    let (mut server, listener, url, data_dir) =
        super::serve::start(&args.server, builtin.iter().cloned().collect()).await?;
    // The single local worker of earlier versions kept its token here; the pool's workers get theirs from the
    // server, so a stale copy of a secret goes.
    let _ = std::fs::remove_file(data_dir.join("local-pool-token"));
    let provider = server.local_workers(super::serve::local_launcher(
        &listener,
        &data_dir,
        args.server.config.as_deref(),
    )?);
    let userns = file.worker.user_namespace.unwrap_or(true);
    if let Some(reason) = gantry_worker::runtime::NamespacesRuntime::user_namespace_unavailable(
        &data_dir.join("workers"),
        userns,
    ) {
        say!(
            "Warning: jobs run WITHOUT a user namespace, so root in a job is root on this host (held in by \
             capabilities, seccomp and masks only): {reason}"
        );
    }
    if let Some(pool) = &builtin {
        // One job at a time per worker is the default: say it, or `parallel: 4` looks slow.
        say!(
            "Pool default: local workers, 1 ready and up to {} while jobs wait, each running {} job{} at a time \
             (`gantry up --max-workers N --capacity N`, or a [[pool]] named default, to change)",
            pool.max,
            pool.slots,
            if pool.slots == 1 { "" } else { "s" }
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
    // Last: what reads the output (a test, a script) may stop reading at this line.
    say!(
        "Gantry is up: dashboard at {url}/ (database: {}; Ctrl-C stops it)",
        server.dialect()
    );
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = server_stopped.await;
    }));
    let mut signals = super::signal_count();
    let _ = signals.wait_for(|n| *n >= 1).await;
    say!(
        "Stopping: the workers finish their running jobs, then the server stops (Ctrl-C again stops the jobs now)."
    );
    super::serve::stop_local_workers(&provider, signals).await;
    let _ = server_stop.send(());
    serving.await.context("the server task failed")??;
    Ok(())
}
