//! The namespaces backend: containers made of Linux namespaces, a cgroup and an overlay of the host's `/`.

use super::cgroup::CgroupLayout;
use super::egress::{Egress, EgressOptions};
use super::private_files::PrivateFiles;
use super::standby::Inits;
use super::userns::{self, IdMap};
use super::{
    Container, ContainerConfig, ContainerEvent, ContainerRuntime, RuntimeError, container, sweep,
};
use std::path::PathBuf;
use std::sync::Arc;

/// CAP_SYS_ADMIN's bit in the capability sets of `/proc/self/status`.
const CAP_SYS_ADMIN: u32 = 21;

/// Why there is no user namespace when the configuration says so.
const TURNED_OFF: &str = "turned off in the configuration ([worker] user_namespace = false)";

/// How the worker configures its runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// The worker's stable, unique name; every container id starts with it and a separator (`-`, `_`, `.`).
    pub worker_name: String,
    /// A worker-owned dir (made 0700), hidden from jobs, on the file system of the image layers and workspaces
    /// (user namespaces need id-mapped mounts there). Containers mount their scratch tmpfs elsewhere: on
    /// `/run/gantry/WORKER_NAME` (see `userns::SCRATCH_ROOT`), in their own mount namespaces.
    pub state_dir: PathBuf,
    /// The `gantry` binary, executed once as `gantry container-zygote`, which forks every container's init.
    pub init_exe: PathBuf,
    /// More host paths to hide from every job, e.g. the worker's data dir (`*` matches within a component).
    pub extra_masks: Vec<PathBuf>,
    /// Run containers in a user namespace where the host allows it (see [`NamespacesRuntime::id_map`]).
    pub user_namespace: bool,
    /// Host paths shown read-only, at the same place, to jobs on the host image, even under a masked home
    /// (toolchains such as `/root/.rustup` and `/root/.cargo`); their `bin/` dirs go first on the steps' `PATH`.
    pub host_paths: Vec<PathBuf>,
    /// How `network: egress` containers reach the world.
    pub egress: EgressOptions,
}

/// Makes containers from namespaces, a cgroup and an overlay root file system (docs/container.md).
#[derive(Debug)]
pub struct NamespacesRuntime {
    pub(super) options: RuntimeOptions,
    pub(super) layout: CgroupLayout,
    /// Compiled once here, installed by every container's init.
    pub(super) seccomp: super::security::SeccompProgram,
    /// The user namespace map of every container, or why there is none.
    pub(super) id_map: Result<IdMap, String>,
    /// Where each container's init mounts its scratch tmpfs, in the container's own mount namespace.
    pub(super) scratch: PathBuf,
    /// What of the host only root may read, masked on the host image.
    pub(super) private_files: PrivateFiles,
    /// The zygote that forks the containers' inits, and the spare init.
    pub(super) inits: Inits,
    /// The bridge and table of egress containers, made at the first.
    pub(super) egress: Arc<Egress>,
}

impl NamespacesRuntime {
    /// Checks privileges, cgroups and options, so that a misconfigured worker fails at start, not at its first job.
    pub fn new(mut options: RuntimeOptions) -> Result<Self, RuntimeError> {
        check_privileges()?;
        sweep::check_worker_name(&options.worker_name)?;
        let state_dir = &options.state_dir;
        crate::private_dir(state_dir)
            .map_err(|e| RuntimeError::io("create the state dir", state_dir, e))?;
        options.state_dir = state_dir
            .canonicalize()
            .map_err(|e| RuntimeError::io("resolve", state_dir, e))?;
        // It ends up in overlayfs's comma- and colon-separated mount options, which have no escaping we rely on.
        if options
            .state_dir
            .to_string_lossy()
            .contains([',', ':', '\\'])
        {
            return Err(RuntimeError::Options {
                option: "state_dir",
                reason: format!(
                    "{} must not contain ',', ':' or '\\'",
                    options.state_dir.display()
                ),
            });
        }
        let is_file = std::fs::metadata(&options.init_exe).is_ok_and(|m| m.is_file());
        if !is_file {
            return Err(RuntimeError::Options {
                option: "init_exe",
                reason: format!(
                    "{} is not a file (it should be the gantry binary)",
                    options.init_exe.display()
                ),
            });
        }
        let hidden: Vec<PathBuf> = [options.state_dir.clone(), userns::SCRATCH_ROOT.into()]
            .into_iter()
            .chain(options.extra_masks.iter().cloned())
            .collect();
        options.host_paths = options
            .host_paths
            .iter()
            .map(|path| check_host_path(path, &hidden))
            .collect::<Result<_, _>>()?;
        options
            .egress
            .check()
            .map_err(|reason| RuntimeError::Options {
                option: "egress_range",
                reason,
            })?;
        let layout = CgroupLayout::detect()?;
        let seccomp = super::security::SeccompProgram::compile()
            .map_err(|e| RuntimeError::Setup(format!("cannot compile the seccomp filter: {e}")))?;
        let scratch = userns::scratch_dir(&options.worker_name)
            .map_err(|e| RuntimeError::io("create the scratch dir", userns::SCRATCH_ROOT, e))?;
        let id_map = if options.user_namespace {
            userns::check(&scratch, &options.state_dir, &options.host_paths)
                .map(|()| IdMap::for_worker(&options.worker_name))
        } else {
            Err(TURNED_OFF.into())
        };
        let inits = Inits::new(
            &options.init_exe,
            &options.worker_name,
            id_map.as_ref().ok().copied(),
        );
        Ok(NamespacesRuntime {
            egress: Arc::new(Egress::new(&options.worker_name, options.egress.clone())),
            private_files: PrivateFiles::new(options.host_paths.clone()),
            options,
            layout,
            seccomp,
            id_map,
            scratch,
            inits,
        })
    }

    /// Why containers on this host, with their layers and workspaces in `data_dir`, would run without a user
    /// namespace, if they would: for the binary's one line at start, before any worker runs. `enabled` is the
    /// configuration's `[worker] user_namespace`.
    pub fn user_namespace_unavailable(data_dir: &std::path::Path, enabled: bool) -> Option<String> {
        if !enabled {
            return Some(TURNED_OFF.into());
        }
        let root = std::path::Path::new(userns::SCRATCH_ROOT);
        let made = crate::private_dir(data_dir)
            .and_then(|_| userns::scratch_dir(&format!(".check-{}", std::process::id())));
        let checked = made
            .map_err(|e| {
                format!(
                    "cannot create {} or {}: {e}",
                    root.display(),
                    data_dir.display()
                )
            })
            .and_then(|scratch| {
                let result = userns::check(&scratch, data_dir, &[]);
                let _ = std::fs::remove_dir(scratch);
                result
            });
        checked.err()
    }

    /// Blocks until the runtime knows what of the host to hide from jobs on the host image (a walk of the root
    /// file system, ~0.8 s here, started by this call or by the first container on the host image, which
    /// otherwise waits for it).
    pub fn wait_for_private_files(&self) {
        self.private_files.wait_walked();
    }

    /// Where container ids map to on the host: root in a job is `host_base` here. None when the host does
    /// not allow user namespaces with id-mapped mounts (or they were turned off): root in a job is then root
    /// on the host, held in by the capabilities, seccomp filter and masks.
    pub fn id_map(&self) -> Option<IdMap> {
        self.id_map.as_ref().ok().copied()
    }

    /// Why containers run without a user namespace, if they do.
    pub fn no_user_namespace_because(&self) -> Option<&str> {
        self.id_map.as_ref().err().map(String::as_str)
    }

    /// Containers of this runtime share the worker's network namespace instead of getting one of their own
    /// (with only `lo`). This exists for measuring what a network namespace costs (`gantry-bench`'s
    /// `container_start`); the worker never calls it, and nothing a job says can reach it.
    pub fn share_host_network_for_measuring(mut self) -> Self {
        self.inits.network = false;
        self
    }

    /// Containers of this runtime stay in the zygote's session and their seccomp filter has no argument rules
    /// (TIOCSTI, TIOCLINUX, vsock and AF_ALG sockets pass): what both cost is what `gantry-bench`'s
    /// `container_start` measures against this. The worker never calls it, and nothing a job says can reach it.
    pub fn without_session_and_argument_rules_for_measuring(
        mut self,
    ) -> Result<Self, RuntimeError> {
        self.inits.new_session = false;
        self.seccomp = super::security::SeccompProgram::compile_with(false)
            .map_err(|e| RuntimeError::Setup(format!("cannot compile the seccomp filter: {e}")))?;
        Ok(self)
    }

    /// The options in effect (with `state_dir` made canonical).
    pub fn options(&self) -> &RuntimeOptions {
        &self.options
    }
}

impl ContainerRuntime for NamespacesRuntime {
    fn start(
        &self,
        config: ContainerConfig,
        events: tokio::sync::mpsc::Sender<ContainerEvent>,
    ) -> Result<Arc<dyn Container>, RuntimeError> {
        let container = container::start(self, config, events)?;
        Ok(container)
    }

    fn sweep(&self) -> Result<usize, RuntimeError> {
        let swept = sweep::sweep(
            &self.layout,
            &self.options.state_dir,
            &self.options.worker_name,
            |name| self.inits.is_spare(name),
        )?;
        // After the containers: their veths are the bridge's ports.
        self.egress.sweep()?;
        Ok(swept)
    }
}

/// A host path to show: absolute, existing (symlinks resolved: a mount would follow them), not `/`, and not
/// at or under what containers replace or hide whole (`hidden`: Gantry's own dirs): bound after the masks above
/// it, it would show them again.
fn check_host_path(path: &std::path::Path, hidden: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
    let refuse = |reason: String| RuntimeError::Options {
        option: "host_paths",
        reason: format!("{}: {reason}", path.display()),
    };
    if !path.is_absolute() {
        return Err(refuse("not an absolute path".into()));
    }
    let real = path
        .canonicalize()
        .map_err(|e| refuse(format!("cannot be shown to jobs: {e}")))?;
    if real == std::path::Path::new("/") {
        return Err(refuse("the whole host cannot be a host path".into()));
    }
    let replaced = ["/proc", "/sys", "/dev", "/run", "/tmp"].map(PathBuf::from);
    let hidden = hidden.iter().filter_map(|h| h.canonicalize().ok());
    if let Some(under) = replaced
        .into_iter()
        .chain(hidden)
        .find(|h| real.starts_with(h))
    {
        return Err(refuse(format!(
            "it is in {}, which jobs never see (a container's own, or Gantry's)",
            under.display()
        )));
    }
    Ok(real)
}

/// Root is not enough (a container may run root without CAP_SYS_ADMIN), and CAP_SYS_ADMIN alone is.
fn check_privileges() -> Result<(), RuntimeError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| RuntimeError::io("read", "/proc/self/status", e))?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if effective & (1 << CAP_SYS_ADMIN) != 0 {
        return Ok(());
    }
    let uid = nix::unistd::geteuid();
    Err(RuntimeError::NotPrivileged(format!(
        "uid {uid} does not have CAP_SYS_ADMIN in its effective set"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_must_exist_and_stay_out_of_what_jobs_never_see() {
        let data = tempfile::tempdir().unwrap();
        let data = data.path().canonicalize().unwrap();
        std::fs::create_dir(data.join("inside")).unwrap();
        let hidden = [data.clone()];
        let refused = |path: &str| {
            check_host_path(std::path::Path::new(path), &hidden)
                .unwrap_err()
                .to_string()
        };
        assert!(refused("relative/path").contains("not an absolute path"));
        assert!(refused("/no/such/dir").contains("cannot be shown"));
        assert!(refused("/").contains("the whole host"));
        assert!(refused("/proc/self").contains("in /proc"));
        let inside = data.join("inside");
        assert!(refused(inside.to_str().unwrap()).contains("which jobs never see"));
        assert_eq!(
            check_host_path(std::path::Path::new("/usr/bin"), &hidden).unwrap(),
            PathBuf::from("/usr/bin")
        );
    }
}
