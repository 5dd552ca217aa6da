//! `gantry run` (docs/container.md): a pipeline file from a local working tree, run with no server by the same model
//! and the same runtime as on the farm. The tree is every job's `/workspace` as the read-only lower layer of an
//! overlay, so jobs may write there and the user's files never change; images and the runtime's state live
//! under the data dir; the logs go to the terminal as they come.
//!
//! A run holds a lock on its data dir and names its containers `local-HASH-…` after that dir, so that it
//! sweeps what a killed run with the same data dir left behind, and nothing of any other run or worker.

mod job;
mod plan;
mod source;
mod summary;
mod terminal;

pub use summary::{JobReport, Summary};

use crate::image::{ImageError, ImageOptions, ImageStore, RegistryConfig};
use crate::runtime::{ContainerRuntime, NamespacesRuntime, RuntimeError, RuntimeOptions};
use gantry_model::pipeline::PIPELINE_FILE;
use gantry_model::{JobStatus, Pipeline, PipelineError};
use job::Jobs;
use plan::{Next, Plan};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::future::Future;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use terminal::Terminal;

/// How a local run is set up.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The working tree: its `.gantry.yml` runs, and it is every job's `/workspace`.
    pub dir: PathBuf,
    /// The layer store and the runtime's state (made if missing; must not be inside `dir`).
    pub data_dir: PathBuf,
    /// Run only these jobs (their needs on other jobs are dropped); empty: every job.
    pub jobs: Vec<String>,
    /// More host paths to hide from jobs.
    pub masked_paths: Vec<PathBuf>,
    /// Credentials and transport per registry.
    pub registries: Vec<RegistryConfig>,
    /// Host dirs under which `dir:` and `oci:` images may be.
    pub image_dirs: Vec<PathBuf>,
    /// The `gantry` binary, re-executed as each container's init.
    pub init_exe: PathBuf,
    /// Run jobs in user namespaces where the host allows it.
    pub user_namespace: bool,
    /// How `network: egress` jobs reach the world.
    pub egress: crate::runtime::EgressOptions,
    /// Host paths shown read-only to jobs on the host image (see `RuntimeOptions::host_paths`).
    pub host_paths: Vec<PathBuf>,
}

/// Why a local run could not run its jobs (a job's own failure is in the [`Summary`] instead).
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The working tree cannot be used.
    #[error("cannot use {}: {source}", path.display())]
    Dir {
        /// The directory as given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The working tree has no pipeline file.
    #[error("{} has no {}", dir.display(), PIPELINE_FILE)]
    NoPipeline {
        /// The working tree.
        dir: PathBuf,
    },
    /// The pipeline file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pipeline file is invalid; the error names the line and key.
    #[error("{}/{source}", dir.display())]
    Pipeline {
        /// The working tree.
        dir: PathBuf,
        /// What is wrong, and where.
        source: Box<PipelineError>,
    },
    /// `--job` names a job the pipeline does not have.
    #[error("the pipeline has no job named {name:?} (its jobs: {jobs})")]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// The pipeline's jobs, comma-separated.
        jobs: String,
    },
    /// The data dir would be part of the working tree.
    #[error(
        "the data dir {} is inside {}, whose files gantry run must not change: pass another --data-dir",
        data_dir.display(), dir.display()
    )]
    DataDirInTree {
        /// The data dir.
        data_dir: PathBuf,
        /// The working tree.
        dir: PathBuf,
    },
    /// The data dir cannot be made or locked.
    #[error("cannot use the data dir {}: {source}", path.display())]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another run holds the data dir.
    #[error(
        "another gantry run is using the data dir {}: wait for it to end, or pass another --data-dir",
        path.display()
    )]
    Busy {
        /// The data dir.
        path: PathBuf,
    },
    /// Containers cannot be made by this user.
    #[error("running jobs in containers needs root (or CAP_SYS_ADMIN): {0}")]
    NotPrivileged(String),
    /// The runtime cannot start or sweep.
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The image store cannot be opened.
    #[error("image store: {0}")]
    Images(#[from] ImageError),
}

impl From<RuntimeError> for LocalError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::NotPrivileged(why) => LocalError::NotPrivileged(why),
            error => LocalError::Runtime(error),
        }
    }
}

/// Runs the pipeline of `options.dir`, printing to `out` as it goes and a summary at the end; `interrupt`
/// resolving (Ctrl-C) cancels the running job and ends the run, its container torn down first.
pub async fn run(
    options: LocalOptions,
    out: impl io::Write,
    interrupt: impl Future<Output = ()>,
) -> Result<Summary, LocalError> {
    let dir = options
        .dir
        .canonicalize()
        .map_err(|source| LocalError::Dir {
            path: options.dir.clone(),
            source,
        })?;
    let pipeline = read_pipeline(&dir)?;
    let (mut plan, notes) = Plan::new(pipeline, &options.jobs)?;
    let mut term = Terminal::new(out);
    for note in notes {
        term.error(&format!("note: {note}"));
    }
    let data_dir = open_data_dir(&options.data_dir, &dir)?;
    let _lock = lock(&data_dir)?;
    let worker_name = local_name(&data_dir);
    let runtime = NamespacesRuntime::new(RuntimeOptions {
        worker_name: worker_name.clone(),
        state_dir: data_dir.join("containers"),
        init_exe: options.init_exe,
        extra_masks: vec![data_dir.clone()],
        user_namespace: options.user_namespace,
        host_paths: options.host_paths,
        egress: options.egress,
    })?;
    if let Some(reason) = runtime.no_user_namespace_because() {
        term.error(&format!(
            "warning: jobs run WITHOUT a user namespace, so root in a job is root on this host (held in by \
             capabilities, seccomp and masks only): {reason}"
        ));
    }
    let swept = runtime.sweep()?;
    if swept > 0 {
        term.error(&format!(
            "note: removed {swept} container(s) an interrupted gantry run left behind"
        ));
    }
    let images = ImageStore::open(ImageOptions {
        data_dir: data_dir.clone(),
        registries: options.registries,
        local_dirs: options.image_dirs,
        max_layer_bytes: None,
    })?;
    let jobs = Jobs {
        runtime: Arc::new(runtime),
        images,
        worker_name,
        source: source::TreeSource::read(&dir),
        dir,
        masked_paths: options.masked_paths,
    };
    let mut summary = Summary {
        jobs: plan
            .jobs()
            .iter()
            .map(|j| JobReport::pending(j.name.as_str()))
            .collect(),
        interrupted: false,
    };
    tokio::pin!(interrupt);
    loop {
        match plan.next() {
            Next::Done => break,
            Next::Skip { index, reason } => {
                term.job_skipped(&summary.jobs[index].name, &reason);
                summary.jobs[index].status = JobStatus::Skipped;
                summary.jobs[index].message = Some(reason);
            }
            Next::Run(index) => {
                let spec = plan.jobs()[index].clone();
                let ended = jobs.run(&spec, &mut term, interrupt.as_mut()).await;
                term.job_ended(&ended.report);
                plan.finish(index, ended.report.status);
                summary.jobs[index] = ended.report;
                if ended.interrupted {
                    summary.interrupted = true;
                    break;
                }
            }
        }
    }
    term.summary(&summary);
    Ok(summary)
}

/// Reads and parses `dir/.gantry.yml`.
fn read_pipeline(dir: &Path) -> Result<Pipeline, LocalError> {
    let path = dir.join(PIPELINE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LocalError::NoPipeline {
            dir: dir.to_owned(),
        },
        _ => LocalError::Read { path, source },
    })?;
    Pipeline::parse(&text).map_err(|source| LocalError::Pipeline {
        dir: dir.to_owned(),
        source: Box::new(source),
    })
}

/// Makes the data dir and returns it canonical; refused inside the working tree before anything is made there.
fn open_data_dir(data_dir: &Path, tree: &Path) -> Result<PathBuf, LocalError> {
    let inside = |path: &Path| {
        path.starts_with(tree).then(|| LocalError::DataDirInTree {
            data_dir: path.to_owned(),
            dir: tree.to_owned(),
        })
    };
    let error = |source| LocalError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    if let Some(refused) = inside(&resolve(data_dir).map_err(error)?) {
        return Err(refused);
    }
    crate::private_dir(data_dir).map_err(error)?;
    let canonical = data_dir.canonicalize().map_err(error)?;
    match inside(&canonical) {
        Some(refused) => Err(refused),
        None => Ok(canonical),
    }
}

/// `path` made absolute, `.` and `..` applied, and symlinks resolved as far as it exists.
fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut absolute = std::env::current_dir()?;
    for part in path.components() {
        match part {
            Component::ParentDir => {
                absolute.pop();
            }
            Component::CurDir => {}
            other => absolute.push(other),
        }
    }
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    while !existing.exists()
        && let (Some(parent), Some(name)) = (existing.parent(), existing.file_name())
    {
        missing.push(name.to_owned());
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

/// One run per data dir at a time: a second one would sweep the first one's containers.
fn lock(data_dir: &Path) -> Result<nix::fcntl::Flock<File>, LocalError> {
    let path = data_dir.join("run.lock");
    let file = File::create(&path).map_err(|source| LocalError::DataDir {
        path: path.clone(),
        source,
    })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => LocalError::Busy {
                path: data_dir.to_owned(),
            },
            errno => LocalError::DataDir {
                path,
                source: errno.into(),
            },
        },
    )
}

/// The runtime's worker name for runs on `data_dir`: stable across runs, different for another data dir.
fn local_name(data_dir: &Path) -> String {
    let digest = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    format!("local-{}", &hex::encode(digest)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_inside_the_tree_is_refused_before_it_is_made() {
        let tree = tempfile::tempdir().unwrap();
        let tree = tree.path().canonicalize().unwrap();
        let data_dir = tree.join("sub/../gantry-data");
        let err = open_data_dir(&data_dir, &tree).unwrap_err();
        assert!(matches!(err, LocalError::DataDirInTree { .. }), "{err}");
        assert!(!tree.join("gantry-data").exists());
        let outside = tempfile::tempdir().unwrap();
        let made = open_data_dir(&outside.path().join("a/b"), &tree).unwrap();
        assert!(made.is_dir() && made.ends_with("a/b"));
    }

    #[test]
    fn one_run_at_a_time_per_data_dir_and_names_differ_by_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(LocalError::Busy { .. })));
        drop(held);
        assert!(lock(dir.path()).is_ok());
        let name = local_name(Path::new("/a"));
        assert_eq!(name, local_name(Path::new("/a")));
        assert_ne!(name, local_name(Path::new("/b")));
        assert_eq!(name.len(), "local-".len() + 8);
    }
}
