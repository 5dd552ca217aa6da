//! `gantry run [DIR]`: runs a working tree's pipeline on this machine with no server (docs/container.md); the driver is
//! `gantry_worker::local`.

use anyhow::{Context, Result, bail};
use clap::Args;
use gantry_model::JobStatus;
use gantry_worker::local::{self, LocalOptions};
use std::path::PathBuf;

/// `gantry run`'s options.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The working tree whose `.gantry.yml` runs; every job sees it at /workspace and may write there, but
    /// its files on the host never change.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where pulled images and container state live, never inside DIR
    /// [default: $XDG_DATA_HOME/gantry, else ~/.local/share/gantry].
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run only this job (repeatable); its needs on jobs left out are dropped.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
    /// Another host path to hide from jobs (repeatable).
    #[arg(long = "mask")]
    pub masks: Vec<PathBuf>,
    /// A TOML configuration file: its `data_dir`, and its `[worker]` table's `registries`, `image_dirs`,
    /// `mask`, `host_paths` and `user_namespace`, as `gantry worker` reads them.
    #[arg(long, env = "GANTRY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Not `./gantry-data` as for the farm: `gantry run` is typically started in the tree it runs, and a data dir
/// there would change the user's files (and be seen by the jobs).
fn default_data_dir() -> Result<PathBuf> {
    let absolute = |var| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(data_home) = absolute("XDG_DATA_HOME") {
        return Ok(data_home.join("gantry"));
    }
    match absolute("HOME") {
        Some(home) => Ok(home.join(".local/share/gantry")),
        None => bail!("no HOME to keep images in: pass --data-dir or set GANTRY_DATA_DIR"),
    }
}

/// Runs the pipeline; an error unless every job succeeded.
pub async fn run(args: RunArgs) -> Result<()> {
    let file = super::config::read_file(args.config.as_ref())?;
    let secret_files = file.secret_files(args.config.as_ref());
    let data_dir = match args.data_dir.or(file.data_dir) {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let worker = file.worker;
    let egress = worker.egress();
    let mut masked_paths = worker.mask;
    masked_paths.extend(args.masks);
    masked_paths.extend(secret_files);
    let options = LocalOptions {
        dir: args.dir,
        data_dir,
        jobs: args.jobs,
        masked_paths,
        egress,
        registries: worker.registries,
        image_dirs: worker.image_dirs,
        user_namespace: worker.user_namespace.unwrap_or(true),
        host_paths: worker.host_paths,
        init_exe: std::env::current_exe()
            .context("cannot find the gantry binary to run containers with")?,
    };
    // Counted from now, so that a Ctrl-C during set-up still cancels the first job rather than killing us.
    let mut signals = super::signal_count();
    let interrupt = async move {
        let _ = signals.wait_for(|n| *n >= 1).await;
    };
    // Flattened to one line: the driver's messages already say their causes, which `{:#}` would repeat.
    let summary = local::run(options, std::io::stdout(), interrupt)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if summary.interrupted {
        bail!("interrupted: the running job was stopped and its container removed");
    }
    let failed = summary
        .jobs
        .iter()
        .filter(|j| j.status != JobStatus::Success)
        .count();
    if failed > 0 {
        bail!("{failed} of {} jobs did not succeed", summary.jobs.len());
    }
    Ok(())
}
