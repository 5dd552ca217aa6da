//! A job's control state, shared by its tasks: whether it was cancelled or its lease lost, and the container to
//! kill when either happens — which may come before the container exists (during checkout).

use crate::agent::client::{Client, ClientError};
use crate::runtime::Container;
use gantry_model::wire::Lease;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Cancellation and lease state of one job.
#[derive(Default)]
pub struct JobControl {
    cancelled: AtomicBool,
    lost: AtomicBool,
    abandoned: AtomicBool,
    container: Mutex<Option<Arc<dyn Container>>>,
}

impl JobControl {
    /// Remembers the running container; if the job was already stopped, kills it at once.
    pub fn attach(&self, container: Arc<dyn Container>) {
        if self.stopped() {
            container.cancel();
        }
        *self.container.lock().expect("lock poisoned") = Some(container);
    }

    /// Forgets the container (it has ended).
    pub fn detach(&self) {
        self.container.lock().expect("lock poisoned").take();
    }

    /// The server asked to cancel the job.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.kill();
    }

    /// The server no longer recognises the lease: stop working on the job and report nothing.
    pub fn lose(&self) {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "the server answered 409: the lease is no longer valid (the job went to another attempt); \
                 stopping it"
            );
        }
        self.kill();
    }

    /// The worker is stopping now and will not finish the job: kill it and hand it back to the server.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        self.kill();
    }

    /// Whether the worker gave the job up.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Whether the job was cancelled.
    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Whether the lease was lost.
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    fn stopped(&self) -> bool {
        self.cancelled() || self.lost() || self.abandoned()
    }

    fn kill(&self) {
        if let Some(container) = self.container.lock().expect("lock poisoned").as_ref() {
            container.cancel();
        }
    }

    /// Marks the lease lost when a call says so; other failures are only logged.
    pub fn check<T>(&self, result: Result<T, ClientError>, what: &str) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(ClientError::StaleLease) => {
                self.lose();
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "{what} failed");
                None
            }
        }
    }
}

/// Renews the lease from the moment it is given until the job's report is in (the caller aborts this task);
/// carries cancellation to the container. Each heartbeat waits on the server for a cancel for up to the
/// heartbeat interval, and the next follows at once, so a cancel reaches the container without waiting for a
/// tick.
pub async fn heartbeats(client: Client, lease: Lease, control: Arc<JobControl>) {
    let every = Duration::from_secs(lease.heartbeat_secs.max(1));
    loop {
        let sent = tokio::time::Instant::now();
        match client.heartbeat(&lease, every).await {
            Ok(true) if !control.cancelled() => {
                tracing::info!("the job was cancelled");
                control.cancel();
            }
            Ok(_) => {}
            Err(ClientError::StaleLease) => {
                control.lose();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
        // A server that answered early (an error, or news already given) is not asked again at once.
        if sent.elapsed() < every / 2 {
            tokio::time::sleep_until(sent + every / 2).await;
        }
    }
}
