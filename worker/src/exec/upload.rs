//! Streams a container's events to the server: output is sent at once when nothing was sent for 50 ms (a line
//! printed now and then reaches the dashboard in milliseconds), else 50 ms after the last send (a chatty job
//! costs at most twenty appends a second), and always before a step event, so step offsets are exact. Offsets follow the server's own log length, so a capped log
//! or a failed upload never leaves the worker and the server disagreeing about where bytes go.
//! The job's secret values are masked (`***`) before anything is sent, across reads (see `Masker`), and what
//! the masker holds back is given out before each step event: offsets count the bytes the log really holds.

use super::control::JobControl;
use crate::agent::client::{Client, with_retries};
use crate::runtime::ContainerEvent;
use chrono::Utc;
use gantry_model::secret::mask::Masker;
use gantry_model::wire::{Lease, StepReport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::Receiver;

/// Output is sent at once when the last send is this long ago, else when it will be (docs/api.md, "Worker protocol": at least every
/// ~100 ms).
const IDLE: Duration = Duration::from_millis(50);
/// …or as soon as this much is waiting.
const FLUSH_BYTES: usize = 256 * 1024;
/// Output kept while the server cannot take it; beyond this the oldest unsent bytes are dropped (and said so).
const MAX_PENDING: usize = 16 * 1024 * 1024;
/// How long one call keeps retrying while the server is unreachable.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Sends events until the container's channel closes; returns the steps and the log's length on the server.
pub async fn upload(
    client: Client,
    lease: Lease,
    mut events: Receiver<ContainerEvent>,
    control: Arc<JobControl>,
) -> (Vec<StepReport>, u64) {
    let mut log = LogUpload {
        client: &client,
        lease: &lease,
        control,
        pending: Vec::new(),
        masker: Masker::new(lease.secrets.values()),
        sent: 0,
        last_flush: tokio::time::Instant::now(),
    };
    let mut steps: Vec<StepReport> = Vec::new();
    // When the output waiting now must be sent at the latest; none: nothing waits.
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let deadline = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                // Past the cap the server keeps nothing: the output is read (the job never waits on it) and
                // dropped here, once what was sent took the log over the cap (the server's notice says so).
                Some(ContainerEvent::Output(_)) if log.capped() => {}
                Some(ContainerEvent::Output(bytes)) => {
                    let masked = log.masker.push(&bytes);
                    log.pending.extend_from_slice(&masked);
                    if log.pending.len() >= FLUSH_BYTES || log.last_flush.elapsed() >= IDLE {
                        log.flush().await;
                        due = None;
                    } else if due.is_none() {
                        due = Some(log.last_flush + IDLE);
                    }
                }
                Some(ContainerEvent::StepStarted { index }) => {
                    log.end_of_output();
                    log.flush().await;
                    due = None;
                    let command = lease.spec.steps.get(index as usize).cloned().unwrap_or_default();
                    let step = StepReport { index, command, log_offset: log.sent, started_at: Utc::now(), finished_at: None, exit_code: None };
                    log.report_step(&step).await;
                    steps.push(step);
                }
                Some(ContainerEvent::StepExited { index, exit_code }) => {
                    log.end_of_output();
                    log.flush().await;
                    due = None;
                    if let Some(step) = steps.iter_mut().find(|s| s.index == index) {
                        step.finished_at = Some(Utc::now());
                        step.exit_code = Some(exit_code);
                        let step = step.clone();
                        log.report_step(&step).await;
                    }
                }
                None => {
                    log.end_of_output();
                    log.flush().await;
                    return (steps, log.sent);
                }
            },
            () = deadline => {
                log.flush().await;
                // A failed send keeps its bytes: try again a pause later (never for a lost lease).
                let retry = !log.pending.is_empty() && !log.control.lost();
                due = retry.then(|| tokio::time::Instant::now() + IDLE);
            }
        }
    }
}

struct LogUpload<'a> {
    client: &'a Client,
    lease: &'a Lease,
    control: Arc<JobControl>,
    pending: Vec<u8>,
    /// Masks the job's secrets; holds back what may be the start of one.
    masker: Masker,
    sent: u64,
    last_flush: tokio::time::Instant,
}

impl LogUpload<'_> {
    /// Whether the log went past its cap: the server wrote its notice and keeps nothing more.
    fn capped(&self) -> bool {
        let cap = self.lease.log_cap_bytes;
        cap > 0 && self.sent > cap
    }

    /// What the masker held back belongs to the output before a step event: it goes out now.
    fn end_of_output(&mut self) {
        let rest = self.masker.finish();
        self.pending.extend_from_slice(&rest);
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() || self.control.lost() {
            return;
        }
        self.last_flush = tokio::time::Instant::now();
        let data = self.pending.clone();
        let result = with_retries(PATIENCE, || {
            self.client.append_log(self.lease, self.sent, data.clone())
        })
        .await;
        match self.control.check(result, "sending the log") {
            Some(length) => {
                self.pending.clear();
                self.sent = length;
            }
            None if self.pending.len() > MAX_PENDING => {
                // The server has been unreachable for long: keep the newest output, say what was dropped.
                let drop = self.pending.len() - MAX_PENDING / 2;
                self.pending.drain(..drop);
                let note = format!(
                    "\n[gantry: {drop} bytes of output were dropped while the server was unreachable]\n"
                );
                self.pending.splice(0..0, note.into_bytes());
            }
            None => {} // kept: the next flush tries again at the same offset
        }
    }

    async fn report_step(&mut self, step: &StepReport) {
        if !self.control.lost() {
            let result = with_retries(PATIENCE, || self.client.step(self.lease, step)).await;
            self.control.check(result, "reporting a step");
        }
    }
}
