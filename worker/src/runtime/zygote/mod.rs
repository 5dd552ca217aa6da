//! The zygote: one `gantry container-zygote` process per runtime, exec'd once, that forks every container's
//! init. Exec'ing the 33 MB `gantry` binary costs ~8 ms; forking a small process that is already running costs
//! a fraction of one. And since the zygote is single-threaded, its children may do anything after the fork,
//! which children of the multi-threaded worker may not.
//!
//! This is the runtime's side: [`Zygote`] starts the process (again, if it died) and [`Init`] is one init
//! it forked. A reader thread per zygote collects what the zygote reports.

pub mod server;
pub(crate) mod wire;

use super::RuntimeError;
use super::userns::IdMap;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;
use wire::{MAX_MESSAGE, Report, Request};

/// The runtime's handle on its zygote process.
#[derive(Debug)]
pub(crate) struct Zygote {
    exe: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Zygote {
    /// Starts `exe container-zygote` now, so that the first container does not wait for it; a failure shows
    /// at the first [`Zygote::prepare`].
    pub fn spawn(exe: &Path) -> Zygote {
        Zygote {
            exe: exe.to_path_buf(),
            conn: Mutex::new(Conn::spawn(exe).ok().map(Arc::new)),
        }
    }

    /// Forks an init, which starts a session of its own (if `new_session`), creates and joins the cgroup dirs
    /// of `procs`, makes a user namespace with `id_map` (if any) and a network namespace (if `network`), and
    /// then waits for [`Init::start`].
    pub fn prepare(
        &self,
        procs: Vec<PathBuf>,
        (network, new_session): (bool, bool),
        id_map: Option<IdMap>,
    ) -> Result<Init, RuntimeError> {
        let conn = self.conn()?;
        let child = conn.next.fetch_add(1, Ordering::Relaxed);
        conn.send(
            &Request::Prepare {
                child,
                procs,
                network,
                new_session,
                id_map,
            },
            &[],
        )?;
        Ok(Init { conn, child })
    }

    /// The live connection, after starting a new zygote if the last one died.
    fn conn(&self) -> Result<Arc<Conn>, RuntimeError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = slot.as_ref().filter(|c| !c.table.lock().gone) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(Conn::spawn(&self.exe)?);
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

/// One init the zygote forked; it belongs to one container.
#[derive(Debug)]
pub(crate) struct Init {
    conn: Arc<Conn>,
    child: u64,
}

impl Init {
    /// Blocks until the init is in its cgroup and namespaces; Err if it failed, died, or `deadline` passed.
    pub fn wait_joined(&self, deadline: Instant) -> Result<(), String> {
        let child = self.child;
        self.conn.table.wait_until(deadline, |state| {
            if state.joined.contains(&child) {
                Some(Ok(()))
            } else if let Some(message) = state.failed.get(&child) {
                Some(Err(message.clone()))
            } else if state.exited.contains_key(&child) || state.gone {
                Some(Err("it died".into()))
            } else {
                None
            }
        })?
    }

    /// Why the init failed before it was started, if it said.
    pub fn failure(&self) -> Option<String> {
        self.conn.table.lock().failed.get(&self.child).cloned()
    }

    /// Hands the init its config, control and output pipes; it builds the container now. `procs`: its cgroup's
    /// files, as named now.
    pub fn start(&self, pipes: [&OwnedFd; 3], procs: Vec<PathBuf>) -> Result<(), RuntimeError> {
        let child = self.child;
        let start = Request::Start { child, procs };
        self.conn.send(&start, &pipes.map(AsRawFd::as_raw_fd))
    }

    /// SIGKILLs the init if it is still running (a zygote that is gone has nothing to kill).
    pub fn kill(&self) {
        let _ = self.conn.send(&Request::Kill { child: self.child }, &[]);
    }

    /// Blocks until the zygote reaped the init; None if the zygote went away first, or at `deadline`.
    pub fn wait(&self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.child;
        let status = self
            .conn
            .table
            .wait_until(deadline, |state| {
                let status = state.exited.get(&child).copied();
                (status.is_some() || state.gone).then_some(status)
            })
            .ok()
            .flatten()?;
        Some(ExitStatus::from_raw(status))
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let mut state = self.conn.table.lock();
        state.joined.remove(&self.child);
        state.failed.remove(&self.child);
        state.exited.remove(&self.child);
    }
}

/// A running zygote process and the socket to it.
#[derive(Debug)]
struct Conn {
    exe: PathBuf,
    socket: OwnedFd,
    process: Mutex<Option<Child>>,
    table: Arc<Table>,
    reader: Mutex<Option<JoinHandle<()>>>,
    next: AtomicU64,
}

impl Conn {
    fn spawn(exe: &Path) -> Result<Conn, RuntimeError> {
        let io = |what| move |e| RuntimeError::io(what, exe, e);
        let (ours, theirs) = wire::seqpacket_pair().map_err(io("create a socket for"))?;
        let mut command = Command::new(exe);
        command
            .arg("container-zygote")
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // A session of its own, so no terminal is the controlling terminal of any container (a step that opens
        // `/dev/tty` gets ENXIO): with the worker's, a job could type into the shell that started Gantry
        // (TIOCSTI), or get its Ctrl-C. Each init starts yet another session, one per container.
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent's.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| nix::unistd::setsid().map(drop).map_err(Into::into));
        }
        let process = command.spawn().map_err(io("start the container zygote"))?;
        // The Command is gone, and with it our copy of the zygote's end: EOF now means the zygote is gone.
        let table = Arc::new(Table::default());
        let socket = ours.try_clone().map_err(io("duplicate the socket to"))?;
        let reader = {
            let table = table.clone();
            std::thread::Builder::new()
                .name("gantry-zygote".into())
                .spawn(move || read_reports(&socket, &table))
                .map_err(io("start the reader thread for"))?
        };
        Ok(Conn {
            exe: exe.to_path_buf(),
            socket: ours,
            process: Mutex::new(Some(process)),
            table,
            reader: Mutex::new(Some(reader)),
            next: AtomicU64::new(0),
        })
    }

    fn send(&self, request: &Request, fds: &[i32]) -> Result<(), RuntimeError> {
        wire::send(&self.socket, request, fds).map_err(|e| {
            RuntimeError::Setup(format!(
                "container init exited before the container was ready: the container zygote ({} \
                 container-zygote) is gone ({e})",
                self.exe.display()
            ))
        })
    }
}

impl Drop for Conn {
    /// Closing our side tells the zygote to kill the inits that never started and to exit; its side closes as
    /// it does, which ends the reader.
    fn drop(&mut self) {
        let _ =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        if let Some(reader) = self.reader.get_mut().ok().and_then(Option::take) {
            let _ = reader.join();
        }
        if let Some(mut process) = self.process.get_mut().ok().and_then(Option::take) {
            let _ = process.wait();
        }
    }
}

fn read_reports(socket: &OwnedFd, table: &Table) {
    let mut buf = vec![0; MAX_MESSAGE];
    loop {
        let report = match wire::recv::<Report>(socket, &mut buf) {
            Ok(Some((report, _))) => report,
            Ok(None) => break,
            Err(error) => {
                tracing::error!(%error, "reading from the container zygote");
                break;
            }
        };
        table.update(|state| match report {
            Report::Joined { child } => {
                state.joined.insert(child);
            }
            Report::Failed { child, message } => {
                state.failed.insert(child, message);
            }
            Report::Exited { child, status } => {
                state.exited.insert(child, status);
            }
        });
    }
    table.update(|state| state.gone = true);
}

/// What the zygote reported, by init.
#[derive(Debug, Default)]
struct Table {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The zygote exited (or its socket broke): nothing more will be reported.
    gone: bool,
    joined: HashSet<u64>,
    failed: HashMap<u64, String>,
    /// Raw wait statuses.
    exited: HashMap<u64, i32>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Blocks until `done` returns Some, or until `deadline` (then an error).
    fn wait_until<T>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&State) -> Option<T>,
    ) -> Result<T, String> {
        let mut state = self.lock();
        loop {
            if let Some(value) = done(&state) {
                return Ok(value);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or("timed out")?;
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
