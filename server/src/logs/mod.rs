//! Live fan-out of job logs and progress: one broadcast channel per job that someone is watching. The bytes
//! themselves are stored first (the store is the truth); the channel only tells watchers what is new.

use bytes::Bytes;
use gantry_model::JobStatus;
use gantry_model::wire::StepReport;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Updates a job's channel keeps for its slowest watcher. A watcher that falls further behind reads the store
/// instead, so this bounds what a busy job's channel holds (its last uploads), not what a watcher can see.
const UPDATES_KEPT: usize = 64;

/// Something new about a job.
#[derive(Clone, Debug)]
pub enum LogUpdate {
    /// Bytes stored at `offset` of attempt `attempt`'s log.
    Bytes {
        /// The attempt.
        attempt: u32,
        /// Where they start.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// A step started or ended.
    Step(StepReport),
    /// The job reached a final state.
    Finished(JobStatus),
}

/// The channels of the jobs being watched.
#[derive(Clone, Default)]
pub struct LogHub {
    channels: Arc<Mutex<HashMap<Uuid, broadcast::Sender<LogUpdate>>>>,
}

impl LogHub {
    /// Starts watching a job; subscribe before reading the stored log so nothing falls in between.
    pub fn subscribe(&self, job: Uuid) -> broadcast::Receiver<LogUpdate> {
        let mut channels = self.channels.lock().expect("lock poisoned");
        channels.retain(|_, tx| tx.receiver_count() > 0);
        channels
            .entry(job)
            .or_insert_with(|| broadcast::channel(UPDATES_KEPT).0)
            .subscribe()
    }

    /// Tells the job's watchers, if any.
    pub fn publish(&self, job: Uuid, update: LogUpdate) {
        let channels = self.channels.lock().expect("lock poisoned");
        if let Some(tx) = channels.get(&job) {
            // No receivers left is fine: the next subscriber reads the store.
            let _ = tx.send(update);
        }
    }
}
