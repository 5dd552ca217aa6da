//! The reader thread of a container: it turns the output pipe and init's control pipe into [`ContainerEvent`]s
//! and keeps the [`Progress`] that `start` and `wait` block on.
//!
//! Output is forwarded as soon as it is read, never held back for whole lines. Before "step exited" (or "setup
//! failed") is acted on, the output pipe is drained until it would block: init writes it only after reaping
//! the step's shell, so every byte the step wrote is already in the pipe and goes out before its event. "Ready"
//! and "step started" are not: init writes them just before it starts the step, so output waiting in the pipe
//! is the step's own, which must follow them. A step that starts and writes before the previous step's
//! "exited" is read can still have its first bytes counted to that step: the two pipes share no clock.

use super::ContainerEvent;
use super::protocol::InitMessage;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// How much output before "ready" is kept, to explain an init that died during setup.
const EARLY_OUTPUT_LIMIT: usize = 4096;

/// What is known about a container so far.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Init reported the container built.
    pub ready: bool,
    /// The control pipe closed: init and PID 1 have exited.
    pub init_exited: bool,
    /// The last step that exited, and its status.
    pub last_exit: Option<(u32, i32)>,
    /// Init's report of a failed setup.
    pub setup_failed: Option<String>,
    /// PID 1's report of a service that failed, so that no step ran.
    pub service_failed: Option<String>,
    /// The first bytes of output written before "ready".
    pub early_output: Vec<u8>,
    /// Somebody called `cancel`.
    pub cancelled: bool,
    /// The reader gives up on pipes that are still open after this (only after everything was killed).
    pub stop_reading_at: Option<Instant>,
}

/// [`Progress`] shared between the reader thread and the container's callers.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    /// The current progress (a panicked holder cannot leave it half-written, so poison is ignored).
    pub fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Changes the progress and wakes every waiter.
    pub fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Blocks until `done` returns Some, or until `deadline` (then None).
    pub fn wait_until<T>(
        &self,
        deadline: Instant,
        mut done: impl FnMut(&Progress) -> Option<T>,
    ) -> Option<T> {
        let mut progress = self.lock();
        loop {
            if let Some(value) = done(&progress) {
                return Some(value);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())?;
            progress = self
                .changed
                .wait_timeout(progress, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Starts the reader thread; it ends when both pipes are closed, or at `stop_reading_at`.
pub(crate) fn spawn(
    output: OwnedFd,
    control: OwnedFd,
    events: UnboundedSender<ContainerEvent>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    for fd in [&output, &control] {
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    }
    let reader = Reader {
        output: Some(output),
        control: Some(control),
        line: Vec::new(),
        buf: vec![0; 64 * 1024],
        ready: false,
        early_output: Vec::new(),
        events,
        shared,
    };
    std::thread::Builder::new()
        .name("gantry-container-events".into())
        .spawn(move || reader.run())
}

struct Reader {
    output: Option<OwnedFd>,
    control: Option<OwnedFd>,
    /// A control line read in part.
    line: Vec<u8>,
    buf: Vec<u8>,
    ready: bool,
    early_output: Vec<u8>,
    events: UnboundedSender<ContainerEvent>,
    shared: Arc<Shared>,
}

impl Reader {
    fn run(mut self) {
        while self.output.is_some() || self.control.is_some() {
            if self
                .shared
                .lock()
                .stop_reading_at
                .is_some_and(|at| Instant::now() >= at)
            {
                break;
            }
            // Control first: "step started" is written before the step exists, so when a step's first output and
            // its start are both waiting, the start goes out first (every other message drains output itself).
            let (output_ready, control_ready) = self.poll();
            if control_ready {
                self.read_control();
            }
            if output_ready {
                self.drain_output();
            }
        }
        let early_output = std::mem::take(&mut self.early_output);
        self.shared.update(|p| {
            p.init_exited = true;
            p.early_output = early_output;
        });
    }

    /// Which pipes have something to read (or are closed); a timeout lets `run` check `stop_reading_at`.
    fn poll(&self) -> (bool, bool) {
        let mut fds: Vec<PollFd<'_>> = [&self.output, &self.control]
            .into_iter()
            .flatten()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        if !poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0) {
            return (false, false);
        }
        let mut ready = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()));
        let output = self.output.is_some() && ready.next().unwrap_or(false);
        let control = self.control.is_some() && ready.next().unwrap_or(false);
        (output, control)
    }

    /// Forwards everything the output pipe holds right now.
    fn drain_output(&mut self) {
        let Some(fd) = self.output.as_ref() else {
            return;
        };
        let (ready, early, events) = (self.ready, &mut self.early_output, &self.events);
        let closed = read_available(fd, &mut self.buf, |chunk| {
            if !ready && early.len() < EARLY_OUTPUT_LIMIT {
                let room = EARLY_OUTPUT_LIMIT - early.len();
                early.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            // A receiver that went away does not stop the job: keep the pipe drained.
            let _ = events.send(ContainerEvent::Output(chunk.to_vec()));
        });
        if closed {
            self.output = None;
        }
    }

    fn read_control(&mut self) {
        let Some(fd) = self.control.as_ref() else {
            return;
        };
        let line = &mut self.line;
        let closed = read_available(fd, &mut self.buf, |chunk| line.extend_from_slice(chunk));
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            let message = InitMessage::parse(&line[..end]);
            if matches!(
                message,
                Some(InitMessage::StepExited { .. } | InitMessage::SetupFailed { .. })
            ) {
                self.drain_output();
            }
            match message {
                Some(message) => self.handle(message),
                None => {
                    tracing::warn!(line = %String::from_utf8_lossy(&line), "unreadable message from container init")
                }
            }
        }
        if closed {
            self.control = None;
            self.drain_output();
            let early_output = self.early_output.clone();
            self.shared.update(|p| {
                p.init_exited = true;
                p.early_output = early_output;
            });
        }
    }

    fn handle(&mut self, message: InitMessage) {
        match message {
            InitMessage::Ready => {
                self.ready = true;
                self.shared.update(|p| p.ready = true);
            }
            InitMessage::StepStarted { index } => {
                let _ = self.events.send(ContainerEvent::StepStarted { index });
            }
            InitMessage::StepExited { index, exit_code } => {
                self.shared
                    .update(|p| p.last_exit = Some((index, exit_code)));
                let _ = self
                    .events
                    .send(ContainerEvent::StepExited { index, exit_code });
            }
            InitMessage::ServiceFailed { message } => {
                self.shared.update(|p| p.service_failed = Some(message));
            }
            InitMessage::SetupFailed { message } => {
                let early_output = self.early_output.clone();
                self.shared.update(|p| {
                    p.setup_failed = Some(message);
                    p.early_output = early_output;
                });
            }
        }
    }
}

/// Reads a non-blocking pipe until it would block, handing each chunk to `take`; true once it is closed (EOF or
/// an error, which for a pipe means the same: nothing more will come).
fn read_available(fd: &std::os::fd::OwnedFd, buf: &mut [u8], mut take: impl FnMut(&[u8])) -> bool {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return true,
            Ok(n) => take(&buf[..n]),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
}
