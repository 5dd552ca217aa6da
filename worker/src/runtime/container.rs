//! One container's life on the runtime side: start (an init in the container's cgroup, its config and
//! pipes, the reader thread), wait with the timeout, cancel, and a teardown that runs exactly once —
//! from `wait`, from a failed `start`, or from `Drop` if neither happened.

use super::cgroup::{Cgroup, CgroupStats};
use super::egress::{Egress, EgressLink};
use super::events::{self, Shared};
use super::masks::{self, DEFAULT_MASKS, HOMES};
use super::namespaces::NamespacesRuntime;
use super::outcome::{self, Ending};
use super::protocol::{InitConfig, Mask};
use super::zygote::Init;
use super::{Container, ContainerConfig, ContainerEvent, Network, Outcome, RuntimeError, sweep};
use gantry_model::Resources;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

/// How long building a container may take before `start` gives up on it.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// How long teardown waits for a killed PID 1 to be reaped before it kills the cgroup and reports what survived.
const REAP_DEADLINE: Duration = Duration::from_secs(10);

/// How long the reader may keep reading once every process was killed (the pipes close at once in practice).
const READER_GRACE: Duration = Duration::from_secs(2);

/// A container of the namespaces runtime.
#[derive(Debug)]
pub(crate) struct NsContainer {
    id: String,
    steps: Vec<String>,
    resources: Resources,
    timeout: Duration,
    deadline: Instant,
    shared: Arc<Shared>,
    parts: Mutex<Parts>,
}

/// What must be undone; each is taken out as it is torn down.
#[derive(Debug, Default)]
struct Parts {
    init: Option<Init>,
    cgroup: Option<Cgroup>,
    reader: Option<JoinHandle<()>>,
    /// The container's address and veth, handed back once its processes are gone.
    egress: Option<(Arc<Egress>, EgressLink)>,
}

/// What teardown found and what went wrong in it.
struct Teardown {
    stats: CgroupStats,
    init_status: Option<ExitStatus>,
    /// Why the init failed before it was started, if it said.
    init_failure: Option<String>,
    /// Processes may have survived: the one teardown error `wait` reports rather than logs.
    kill_error: Option<RuntimeError>,
    errors: Vec<RuntimeError>,
}

/// How setup ended, as far as `start` is concerned.
#[derive(Debug, PartialEq)]
enum Built {
    Ready,
    Failed(String),
    /// Init exited without a word (the zygote is not the `gantry` binary, or something crashed).
    Died,
}

/// Creates the container and returns once init reports it built (or its setup failed).
pub(crate) fn start(
    runtime: &NamespacesRuntime,
    config: ContainerConfig,
    events: Sender<ContainerEvent>,
) -> Result<Arc<NsContainer>, RuntimeError> {
    let started = Instant::now();
    let options = &runtime.options;
    sweep::check_id(&options.worker_name, &config.id)?;
    // From here on, dropping `container` tears down whatever has been made so far.
    let container = NsContainer {
        id: config.id.clone(),
        steps: config.steps.clone(),
        resources: config.resources.clone(),
        timeout: config.timeout,
        deadline: started + config.timeout,
        shared: Arc::default(),
        parts: Mutex::default(),
    };
    let (init, cgroup) = runtime
        .inits
        .take(&runtime.layout, &config.id, &config.resources)?;
    {
        let mut parts = container.parts();
        parts.cgroup = Some(cgroup);
        parts.init = Some(init);
    }
    let (egress, resolv_conf) = match config.network {
        Network::None => (None, None),
        Network::Egress => {
            let (link, resolv_conf) = runtime.egress.attach(&config.id)?;
            container.parts().egress = Some((runtime.egress.clone(), link.clone()));
            (Some(link), Some(resolv_conf))
        }
    };

    // Host masks hide host paths, which only the host image shows; an image's own files are all fair game.
    let uses_host =
        config.image.layers.is_empty() || config.services.iter().any(|s| s.image.layers.is_empty());
    let masks = if uses_host {
        let mask_patterns = DEFAULT_MASKS
            .iter()
            .map(PathBuf::from)
            .chain([options.state_dir.clone(), runtime.scratch.clone()]);
        let mut masks = masks::resolve(
            mask_patterns
                .chain(options.extra_masks.iter().cloned())
                .chain(config.masked_paths),
        );
        let homes = masks::resolve(HOMES.iter().map(PathBuf::from));
        masks.extend(homes.into_iter().map(|home| Mask {
            writable: true,
            ..home
        }));
        masks.extend(runtime.private_files.current().iter().cloned());
        masks
    } else {
        Vec::new()
    };
    let on_host = config.image.layers.is_empty();
    let host_paths = if on_host {
        options.host_paths.clone()
    } else {
        Vec::new()
    };
    let mut env = config.env;
    if on_host {
        with_host_paths_first(&mut env, &host_paths);
    }
    let init_config = InitConfig {
        hostname: config.hostname,
        workspace: config.workspace,
        workspace_mount: config.workspace_mount,
        steps: config.steps,
        env,
        // Init mounts its tmpfs over the scratch dir in the container's own mount namespace: the host sees no
        // per-container dir, and makes and removes none (on a file system mounted with `discard`, removing
        // even an empty dir waits for the disk).
        scratch: runtime.scratch.clone(),
        masks,
        host_paths,
        layers: config.image.layers,
        working_dir: config.image.working_dir,
        user: config.image.user,
        seccomp: runtime.seccomp.clone(),
        services: config.services,
        id_map: runtime.id_map(),
        egress,
        resolv_conf,
    };
    let (output, control) = start_init(&container, &init_config)?;
    runtime.inits.replenish(&runtime.layout);
    let reader = events::spawn(output, control, events, container.shared.clone())
        .map_err(|e| RuntimeError::io("start the reader thread for", &options.init_exe, e))?;
    container.parts().reader = Some(reader);

    let built = container.shared.wait_until(started + SETUP_DEADLINE, |p| {
        if p.ready {
            Some(Built::Ready)
        } else if let Some(message) = &p.setup_failed {
            Some(Built::Failed(message.clone()))
        } else {
            p.init_exited.then_some(Built::Died)
        }
    });
    let built = built.unwrap_or_else(|| {
        Built::Failed(format!(
            "the container was not ready after {SETUP_DEADLINE:?}"
        ))
    });
    if built == Built::Ready {
        return Ok(Arc::new(container));
    }
    let teardown = container.teardown();
    let message = match (built, teardown.init_failure) {
        (Built::Failed(message), _) => message,
        (_, Some(failure)) => {
            format!("container init exited before the container was ready: {failure}")
        }
        _ => {
            let early = container.shared.lock().early_output.clone();
            let status = teardown
                .init_status
                .map_or("killed".into(), |s| s.to_string());
            format!(
                "container init exited before the container was ready ({status}); its output: {:?}",
                String::from_utf8_lossy(&early).trim()
            )
        }
    };
    let error = RuntimeError::Setup(message);
    match teardown
        .kill_error
        .into_iter()
        .chain(teardown.errors)
        .next()
    {
        Some(cleanup) => Err(RuntimeError::WithCleanup {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        }),
        None => Err(error),
    }
}

/// Hands the container's init its config and pipes; returns the read ends of the output and control pipes.
fn start_init(
    container: &NsContainer,
    config: &InitConfig,
) -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let io = |e: nix::Error| RuntimeError::io("create a pipe for", &container.id, e.into());
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io);
    let (config_reader, config_writer) = pipe()?;
    let (output, output_writer) = pipe()?;
    let (control, control_writer) = pipe()?;
    // As much of the config as the pipe holds goes in before init gets the pipe, so that init need not wait
    // for it; the rest (a config larger than the pipe) once init reads.
    let payload = serde_json::to_vec(config).unwrap_or_default();
    // Our end only: init reads its end blocking.
    fcntl(&config_writer, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io)?;
    let mut config_writer = std::fs::File::from(config_writer);
    let mut sent = 0;
    while let Ok(n @ 1..) = config_writer.write(&payload[sent..]) {
        sent += n;
    }
    let parts = container.parts();
    if let Some(init) = &parts.init {
        let procs = parts
            .cgroup
            .as_ref()
            .map(|cgroup| cgroup.procs_files())
            .unwrap_or_default();
        init.start([&config_reader, &control_writer, &output_writer], procs)?;
    }
    drop(parts);
    // Our copies of the write ends close here: from now on, EOF on a pipe means every process that could write
    // to it is gone.
    drop((config_reader, control_writer, output_writer));
    if sent < payload.len() {
        let _ = fcntl(&config_writer, FcntlArg::F_SETFL(OFlag::empty()));
        // If init died already, the control pipe tells why; the broken pipe here adds nothing.
        let _ = config_writer.write_all(&payload[sent..]);
    }
    Ok((output, control))
}

impl NsContainer {
    fn parts(&self) -> MutexGuard<'_, Parts> {
        self.parts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Kills everything, then removes the cgroup; what was torn down already is skipped.
    fn teardown(&self) -> Teardown {
        let mut parts = self.parts();
        let init = parts.init.take();
        // The init first: its death takes PID 1 along (its parent-death signal), and PID 1's every other
        // process of the PID namespace (killing it is a no-op if it exited already). Only once it is reaped can the cgroup be empty; a cgroup kill before that would
        // freeze a PID 1 busy exiting, which slows its exit down and still finds it there.
        if let Some(init) = &init {
            init.kill();
        }
        let init_status = init
            .as_ref()
            .and_then(|init| init.wait(Instant::now() + REAP_DEADLINE));
        // Reaped first, so that whatever the zygote said of the init before has arrived.
        let init_failure = init.as_ref().and_then(Init::failure);
        // Normally nothing is left; something is if PID 1 could not be reaped in time.
        let kill_error = parts.cgroup.as_ref().map_or(Ok(()), Cgroup::kill_all).err();
        let mut errors = Vec::new();
        let stats = parts.cgroup.as_ref().map(Cgroup::stats).unwrap_or_default();
        if let Some(cgroup) = parts.cgroup.take() {
            errors.extend(cgroup.remove().err());
        }
        if let Some((egress, link)) = parts.egress.take() {
            egress.detach(&link);
        }
        self.shared
            .update(|p| p.stop_reading_at = Some(Instant::now() + READER_GRACE));
        if let Some(reader) = parts.reader.take() {
            let _ = reader.join();
        }
        for error in &errors {
            tracing::error!(container = %self.id, %error, "container teardown incomplete; the next sweep retries");
        }
        Teardown {
            stats,
            init_status,
            init_failure,
            kill_error,
            errors,
        }
    }
}

impl Parts {
    /// SIGKILLs the init, which takes PID 1 and its whole PID namespace along; the cgroup is killed only where there is no
    /// init (teardown kills it again once PID 1 is reaped).
    fn kill(&mut self) -> Result<(), RuntimeError> {
        match &self.init {
            Some(init) => {
                init.kill();
                Ok(())
            }
            None => self.cgroup.as_ref().map_or(Ok(()), Cgroup::kill_all),
        }
    }
}

impl Container for NsContainer {
    fn cancel(&self) {
        self.shared.update(|p| p.cancelled = true);
        if let Err(error) = self.parts().kill() {
            tracing::error!(container = %self.id, %error, "cancelling the container");
        }
    }

    fn wait(&self) -> Result<Outcome, RuntimeError> {
        let ended = self.shared.wait_until(self.deadline, |p| {
            (p.cancelled || p.init_exited).then_some(())
        });
        let teardown = self.teardown();
        if let Some(error) = teardown.kill_error {
            return Err(error);
        }
        let progress = self.shared.lock();
        let ending = Ending {
            steps: &self.steps,
            resources: &self.resources,
            timeout: self.timeout,
            timed_out: ended.is_none() && !progress.cancelled,
            progress: &progress,
            stats: &teardown.stats,
            init_status: teardown.init_status,
        };
        Ok(outcome::decide(&ending))
    }
}

impl Drop for NsContainer {
    fn drop(&mut self) {
        let parts = self.parts();
        let pending = parts.init.is_some() || parts.cgroup.is_some();
        drop(parts);
        if pending && let Some(error) = self.teardown().kill_error {
            tracing::error!(container = %self.id, %error, "killing a dropped container");
        }
    }
}

/// Puts the `bin/` dir of each host path that has one first on `PATH` (added if missing), in their order.
fn with_host_paths_first(env: &mut Vec<(String, String)>, host_paths: &[PathBuf]) {
    let bins: Vec<String> = host_paths
        .iter()
        .map(|path| path.join("bin"))
        .filter(|bin| bin.is_dir())
        .map(|bin| bin.to_string_lossy().into_owned())
        .collect();
    if bins.is_empty() {
        return;
    }
    let bins = bins.join(":");
    match env.iter_mut().find(|(name, _)| name == "PATH") {
        Some((_, path)) => *path = format!("{bins}:{path}"),
        None => env.push(("PATH".into(), bins)),
    }
}
