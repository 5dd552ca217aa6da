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
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;
use tokio::sync::mpsc::error::TrySendError;

/// The most one read round takes from a pipe.
const ROUND_LIMIT: usize = 1 << 20;

/// How much output before "ready" is kept, to explain an init that died during setup.
const EARLY_OUTPUT_LIMIT: usize = 4096;

/// What is known about a container so far.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Init reported the container built.
    pub ready: bool,
    /// The control pipe closed: init and PID 1 have exited.
    pub init_exited: bool,
    /// The last step that started.
    pub last_started: Option<u32>,
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
    events: Sender<ContainerEvent>,
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
        exited_reported: false,
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
    /// `init_exited` was set.
    exited_reported: bool,
    early_output: Vec<u8>,
    events: Sender<ContainerEvent>,
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
            let (output_ready, control_ready) = self.poll();
            if control_ready {
                let messages = self.read_control();
                self.handle_all(messages);
            }
            if output_ready {
                self.forward_output();
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

    /// Forwards what the output pipe holds, in its place among the control messages. PID 1 reports a step's
    /// start before the step runs, and its end only once the output pipe is empty (see `pid1`), so messages
    /// read after these bytes that are not an end were written before them: they go out first.
    fn forward_output(&mut self) {
        let mut bytes = Vec::new();
        let Some(fd) = self.output.as_ref() else {
            return;
        };
        let closed = read_available(fd, &mut self.buf, |chunk| bytes.extend_from_slice(chunk));
        let mut messages = if bytes.is_empty() {
            Vec::new()
        } else {
            self.read_control()
        };
        let ends = messages
            .iter()
            .position(|m| {
                matches!(
                    m,
                    Some(InitMessage::StepExited { .. } | InitMessage::SetupFailed { .. })
                )
            })
            .unwrap_or(messages.len());
        let after = messages.split_off(ends);
        self.handle_all(messages);
        self.send_output(&bytes);
        if closed {
            self.output = None;
        }
        self.handle_all(after);
    }

    fn send_output(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.ready && self.early_output.len() < EARLY_OUTPUT_LIMIT {
            let room = EARLY_OUTPUT_LIMIT - self.early_output.len();
            self.early_output
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.deliver(ContainerEvent::Output(bytes.to_vec()));
    }

    /// Hands `event` on, waiting while the channel is full: a job that writes faster than its output is taken
    /// then waits on its pipe, instead of the worker holding what it wrote. A receiver that went away does not
    /// stop the job (the pipe is kept drained), nor does the teardown's deadline wait for a slow one.
    fn deliver(&mut self, event: ContainerEvent) {
        let mut event = event;
        loop {
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(back)) => {
                    let stop = self.shared.lock().stop_reading_at;
                    if stop.is_some_and(|at| Instant::now() >= at) {
                        return;
                    }
                    event = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    /// Forwards everything the output pipe holds right now.
    fn drain_output(&mut self) {
        let Some(fd) = self.output.as_ref() else {
            return;
        };
        let mut bytes = Vec::new();
        let closed = read_available(fd, &mut self.buf, |chunk| bytes.extend_from_slice(chunk));
        self.send_output(&bytes);
        if closed {
            self.output = None;
        }
    }

    /// Reads the complete control lines waiting now (None for a line that is no message).
    fn read_control(&mut self) -> Vec<Option<InitMessage>> {
        let Some(fd) = self.control.as_ref() else {
            return Vec::new();
        };
        let line = &mut self.line;
        let closed = read_available(fd, &mut self.buf, |chunk| line.extend_from_slice(chunk));
        let mut messages = Vec::new();
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            let message = InitMessage::parse(&line[..end]);
            if message.is_none() {
                tracing::warn!(line = %String::from_utf8_lossy(&line), "unreadable message from container init");
            }
            messages.push(message);
        }
        if closed {
            self.control = None;
        }
        messages
    }

    /// Handles messages in order; once the control pipe is closed, forwards the rest of the output and says so.
    fn handle_all(&mut self, messages: Vec<Option<InitMessage>>) {
        for message in messages.into_iter().flatten() {
            if matches!(message, InitMessage::SetupFailed { .. }) {
                // Output written during setup explains the failure: keep it in `early_output` first.
                self.drain_output();
            }
            self.handle(message);
        }
        if self.control.is_none() && !self.exited_reported {
            self.exited_reported = true;
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
                self.shared.update(|p| p.last_started = Some(index));
                self.deliver(ContainerEvent::StepStarted { index });
            }
            InitMessage::StepExited { index, exit_code } => {
                self.shared
                    .update(|p| p.last_exit = Some((index, exit_code)));
                self.deliver(ContainerEvent::StepExited { index, exit_code });
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

/// Reads a non-blocking pipe until it would block (or [`ROUND_LIMIT`] bytes were read, so a flood cannot grow
/// a round without bound), handing each chunk to `take`; true once it is closed (EOF or an error, which for a
/// pipe means the same: nothing more will come).
fn read_available(fd: &std::os::fd::OwnedFd, buf: &mut [u8], mut take: impl FnMut(&[u8])) -> bool {
    let mut total = 0;
    while total < ROUND_LIMIT {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return true,
            Ok(n) => {
                total += n;
                take(&buf[..n]);
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return false,
            Err(_) => return true,
        }
    }
    false
}
