//! The peers Gantry's container start is compared with, measured by the bench itself: plain fork/exec,
//! `unshare`, `unshare -n`, `bwrap`, crun and runc, each running `/bin/true` (the last three in a busybox rootfs,
//! crun and runc from an OCI bundle made with `runc spec`). Each peer runs one start at a time, so that a bench
//! can interleave them with its own starts: the VMs swing by 1.5×, and only starts alternated in one run compare.
//! Every peer is started directly, with no shell wrapper to subtract, and timed from spawn to reaping as
//! hyperfine would; only crun on a hybrid cgroup host needs a workaround (a thread whose mount namespace hides
//! the cgroup2 mount), which costs its starts nothing.
//! A missing tool makes that peer an error line; nothing is installed. Root only.

use crate::quantile;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Instant;

/// Where the cgroup2 hierarchy is mounted on a hybrid (v1 + v2) host.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// One peer: how to start it, and what it measured or why it could not run.
pub struct Peer {
    /// Its name in the figures: `fork-exec`, `unshare`, `unshare-net`, `bwrap`, `crun`, `runc`.
    pub name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// crun and runc get a container id of their own for each run, as the last argument.
    unique_id: bool,
    /// crun on a hybrid host: started by the thread of [`hidden_cgroup2`].
    hidden: Option<mpsc::Sender<Run>>,
    started: usize,
    ms: Vec<f64>,
    error: Option<String>,
}

/// Whether this host is hybrid with a controller on its cgroup2 mount, which crun 1.8 refuses to run on.
pub fn hybrid_cgroups() -> bool {
    std::fs::read_to_string(Path::new(UNIFIED).join("cgroup.controllers"))
        .is_ok_and(|controllers| !controllers.trim().is_empty())
}

/// Every peer, ready to run in `dir` (a fresh scratch dir): a busybox rootfs and a bundle are made there; a peer
/// whose tool or rootfs is missing is returned with its error, and never runs.
pub fn prepare(dir: &Path) -> Vec<Peer> {
    let bundle = dir.join("bundle");
    let rootfs = busybox_rootfs(&bundle.join("rootfs")).map_err(|e| e.to_string());
    let config = rootfs
        .clone()
        .and_then(|_| oci_bundle(&bundle).map_err(|e| format!("the OCI bundle: {e:#}")));
    let rootfs = rootfs.map(|root| root.into_os_string());
    let unshare = ["-fpmiu", "--mount-proc", "/bin/true"];
    let unshare_net = ["-fpmiun", "--mount-proc", "/bin/true"];
    let bwrap = |root: &OsString| -> Vec<OsString> {
        let head = ["--ro-bind".into(), root.clone(), "/".into()];
        let tail = ["--proc", "/proc", "--dev", "/dev", "--unshare-all"];
        let tail = tail.into_iter().chain(["--die-with-parent", "/bin/true"]);
        head.into_iter().chain(tail.map(OsString::from)).collect()
    };
    let run = |_: &()| vec!["run".into(), "--bundle".into(), bundle.clone().into()];
    let mut crun = peer("crun", "crun", "crun", config.as_ref().map(run));
    crun.unique_id = true;
    if hybrid_cgroups() && crun.error.is_none() {
        match hidden_cgroup2() {
            Ok(thread) => crun.hidden = Some(thread),
            Err(e) => crun.error = Some(e),
        }
    }
    let mut runc = peer("runc", "runc", "runc", config.as_ref().map(run));
    runc.unique_id = true;
    let mut peers = vec![
        peer("fork-exec", "/bin/true", "coreutils", Ok(Vec::new())),
        peer("unshare", "unshare", "util-linux", Ok(os(&unshare))),
        peer("unshare-net", "unshare", "util-linux", Ok(os(&unshare_net))),
        peer("bwrap", "bwrap", "bubblewrap", rootfs.as_ref().map(bwrap)),
    ];
    peers.extend([crun, runc]);
    peers
}

/// A peer that runs `program` (found on `PATH` unless absolute; `package` provides it) with `args`, or that
/// only reports why it cannot run.
fn peer(
    name: &'static str,
    program: &str,
    package: &str,
    args: Result<Vec<OsString>, &String>,
) -> Peer {
    let found = find(program);
    let error = match (&found, args.as_ref()) {
        (None, _) => Some(format!("{program} not found: apt-get install {package}")),
        (Some(_), Err(why)) => Some(why.to_string()),
        (Some(_), Ok(_)) => None,
    };
    Peer {
        name,
        program: found.unwrap_or_default(),
        args: args.unwrap_or_default(),
        unique_id: false,
        hidden: None,
        started: 0,
        ms: Vec::new(),
        error,
    }
}

/// `args` as the `OsString`s `Command` takes.
fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `program` if it is a path, else the first match on `PATH` or in the sbin dirs (where runc lives, and which a
/// `sudo` or `cargo run` may leave off `PATH`).
fn find(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| program.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl Peer {
    /// Starts the peer once, unless it has failed before; keeps its wall time in ms unless `warmup`. A failure
    /// becomes the peer's error, and it runs no more.
    pub fn run_once(&mut self, warmup: bool) {
        if self.error.is_some() {
            return;
        }
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        if self.unique_id {
            let pid = std::process::id();
            command.arg(format!("gantry-bench-{pid}-{}-{}", self.name, self.started));
        }
        // stderr for the error line; the peers print nothing else.
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        self.started += 1;
        let out = match &self.hidden {
            Some(thread) => {
                let (answer, answered) = mpsc::channel();
                let _ = thread.send((command, answer));
                answered
                    .recv()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the crun thread died")))
            }
            None => {
                let started = Instant::now();
                let out = command.output();
                out.map(|out| (started.elapsed().as_secs_f64() * 1000.0, out))
            }
        };
        match out {
            Ok((took, out)) if out.status.success() => {
                if !warmup {
                    self.ms.push(took);
                }
            }
            Ok((_, out)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail = stderr.trim().chars().rev().take(300).collect::<Vec<_>>();
                let tail: String = tail.into_iter().rev().collect();
                self.error = Some(format!("{}: {tail}", out.status));
            }
            Err(e) => self.error = Some(format!("{}: {e}", self.program.display())),
        }
    }

    /// Its p50 in ms, if it ran without failing.
    pub fn p50(&self) -> Option<f64> {
        let mut ms = self.ms.clone();
        (self.error.is_none() && !ms.is_empty()).then(|| quantile(&mut ms, 0.5))
    }

    /// Its JSON line: `{"peer", "runs", "p10_ms", "p50_ms", "p90_ms"}`, or `{"peer", "error"}`.
    pub fn summary(&self) -> serde_json::Value {
        if let Some(error) = &self.error {
            return serde_json::json!({"peer": self.name, "error": error});
        }
        let mut ms = self.ms.clone();
        let [p10, p50, p90] = [0.1, 0.5, 0.9].map(|q| quantile(&mut ms, q));
        let mut line = serde_json::json!({
            "peer": self.name, "runs": ms.len(), "p10_ms": p10, "p50_ms": p50, "p90_ms": p90
        });
        if self.hidden.is_some() {
            line["note"] = format!(
                "started by a thread in a mount namespace of its own with a tmpfs over {UNIFIED}"
            )
            .into();
        }
        line
    }
}

/// A run for the thread of [`hidden_cgroup2`]: the command, and where to send its wall time and output.
type Run = (Command, mpsc::Sender<std::io::Result<(f64, Output)>>);

/// crun 1.8 refuses a hybrid host whose cgroup2 mount lists a controller (here: hugetlb). A thread of the bench
/// unshares its mount namespace (a thread may: namespaces belong to tasks, and `CLONE_NEWNS` only takes the
/// thread's file-system attributes with it) and lays an empty tmpfs over the cgroup2 mount; what it spawns
/// inherits that namespace, so crun sees plain cgroup v1 while the host and the bench's other threads see no
/// change. Each start costs what any other peer's does: no shell wrapper, no per-run setup to subtract.
fn hidden_cgroup2() -> Result<mpsc::Sender<Run>, String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    use nix::sched::{CloneFlags, unshare};
    let (ready_tx, ready_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel::<Run>();
    std::thread::spawn(move || {
        let hide = || -> nix::Result<()> {
            let none = None::<&str>;
            unshare(CloneFlags::CLONE_NEWNS)?;
            // Private first, so that neither the unmount nor the tmpfs propagates back to the host.
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
            umount2(UNIFIED, MntFlags::MNT_DETACH)?;
            mount(
                Some("tmpfs"),
                UNIFIED,
                Some("tmpfs"),
                MsFlags::empty(),
                none,
            )
        };
        let hidden = hide().map_err(|e| format!("hiding {UNIFIED} from crun: {e}"));
        let failed = hidden.is_err();
        let _ = ready_tx.send(hidden);
        if failed {
            return;
        }
        for (mut command, answer) in rx {
            let started = Instant::now();
            let out = command.output();
            let took = started.elapsed().as_secs_f64() * 1000.0;
            let _ = answer.send(out.map(|out| (took, out)));
        }
    });
    ready_rx
        .recv()
        .map_err(|_| "the thread hiding the cgroup2 mount died".to_owned())??;
    Ok(tx)
}

/// A busybox rootfs at `root`: a static busybox as `/bin/busybox`, `sh` and `true` links to it, and the mount
/// points a container needs.
pub fn busybox_rootfs(root: &Path) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        bail!("/bin/busybox not found: apt-get install busybox-static");
    }
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for link in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(link))?;
    }
    Ok(root.to_path_buf())
}

/// Makes `bundle/config.json` with `runc spec` (or `crun spec` without runc): its default namespaces (pid,
/// network, ipc, uts, mount), `/bin/true` as the process, no terminal, a writable root.
fn oci_bundle(bundle: &Path) -> Result<()> {
    let tool = find("runc")
        .or_else(|| find("crun"))
        .context("neither runc nor crun found: apt-get install runc crun")?;
    let out = Command::new(&tool)
        .arg("spec")
        .current_dir(bundle)
        .output()
        .with_context(|| format!("running {} spec", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} spec: {}",
            tool.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let path = bundle.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/true"]);
    config["root"]["readonly"] = false.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}
