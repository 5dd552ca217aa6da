//! One job of a local run: its image, its container (built as the worker builds it, but over the working tree
//! as a read-only lower layer), its output to the terminal as it comes, and how it ended.

use super::source::TreeSource;
use super::summary::JobReport;
use super::terminal::Terminal;
use crate::exec::{Placement, container_config, prepare_images};
use crate::image::ImageStore;
use crate::runtime::{ContainerEvent, ContainerRuntime, Outcome, WorkspaceMount};
use gantry_model::{FailureKind, JobSpec, JobStatus};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// What every job of a run shares.
pub(crate) struct Jobs {
    /// Makes the containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Resolves and pulls the jobs' images.
    pub images: ImageStore,
    /// The runtime's worker name, which every container id starts with.
    pub worker_name: String,
    /// The working tree, canonical: every job's `/workspace`.
    pub dir: PathBuf,
    /// What Gantry's variables say about the tree.
    pub source: TreeSource,
    /// Host paths hidden from the jobs, besides the runtime's own masks.
    pub masked_paths: Vec<PathBuf>,
}

/// How a job ended, and whether the run was interrupted while it ran.
pub(crate) struct Ended {
    /// How the job ended.
    pub report: JobReport,
    /// The run was interrupted while the job ran: it is the last one.
    pub interrupted: bool,
}

impl Jobs {
    /// Runs `spec` to its end, printing as it goes; `interrupt` resolving cancels it (and is not polled again).
    pub async fn run<W: Write>(
        &self,
        spec: &JobSpec,
        term: &mut Terminal<W>,
        mut interrupt: Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let started = Instant::now();
        term.job_started(spec.name.as_str());
        let prepared = tokio::select! {
            prepared = prepare_images(&self.images, spec) => prepared,
            () = interrupt.as_mut() => return ended(spec, started, cancelled(), true),
        };
        let images = match prepared {
            Ok(images) => images,
            Err(message) => {
                term.error(&format!("job {}: {message}", spec.name));
                return ended(spec, started, infra(message), false);
            }
        };
        let placement = Placement {
            id: format!("{}-{}", self.worker_name, uuid::Uuid::now_v7().simple()),
            workspace: self.dir.clone(),
            workspace_mount: WorkspaceMount::ReadOnlyLower,
            masked_paths: self.masked_paths.clone(),
        };
        let env = self.source.env(spec.name.as_str());
        let config = container_config(spec, &env, images, placement);
        let (events, mut received) = tokio::sync::mpsc::channel(crate::runtime::EVENTS_CAPACITY);
        let container = match self.runtime.start(config, events) {
            Ok(container) => container,
            Err(e) => {
                let message = format!("cannot make the job's container: {e}");
                term.error(&format!("job {}: {message}", spec.name));
                return ended(spec, started, infra(message), false);
            }
        };
        let waiting = container.clone();
        let waited = tokio::task::spawn_blocking(move || waiting.wait());
        let mut interrupted = false;
        // The channel closes once the container is torn down: everything it printed has been shown by then.
        loop {
            tokio::select! {
                event = received.recv() => match event {
                    Some(ContainerEvent::Output(bytes)) => term.output(&bytes),
                    Some(ContainerEvent::StepStarted { index }) => {
                        term.step_started(spec.steps.get(index as usize).map_or("?", String::as_str));
                    }
                    Some(ContainerEvent::StepExited { .. }) => {}
                    None => break,
                },
                () = interrupt.as_mut(), if !interrupted => {
                    interrupted = true;
                    container.cancel();
                }
            }
        }
        let outcome = match waited.await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => infra(format!("the container's teardown failed: {e}")),
            Err(e) => infra(format!("the container task failed: {e}")),
        };
        ended(spec, started, outcome, interrupted)
    }
}

/// The report of a job that ran (or tried to) from `started` and ended with `outcome`.
fn ended(spec: &JobSpec, started: Instant, outcome: Outcome, interrupted: bool) -> Ended {
    let report = JobReport {
        name: spec.name.to_string(),
        status: outcome
            .failure
            .map_or(JobStatus::Success, FailureKind::job_status),
        duration: Some(started.elapsed()),
        exit_code: outcome.exit_code,
        failure: outcome.failure,
        message: outcome.message,
    };
    Ended {
        report,
        interrupted,
    }
}

fn infra(message: String) -> Outcome {
    Outcome {
        failure: Some(FailureKind::Infra),
        message: Some(message),
        ..Outcome::default()
    }
}

fn cancelled() -> Outcome {
    Outcome {
        failure: Some(FailureKind::Cancelled),
        message: Some("interrupted before it started".into()),
        ..Outcome::default()
    }
}
