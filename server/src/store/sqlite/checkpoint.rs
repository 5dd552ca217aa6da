//! WAL checkpoints off the async threads. A commit that finds the WAL past `wal_autocheckpoint` pages copies it
//! into the database file itself, for milliseconds; on the dispatch connection (`dispatch.rs`) that commit runs
//! on a tokio thread. So that connection never checkpoints, and this thread does, every second, on a connection
//! of its own (PASSIVE: it never waits for readers or writers).

use crate::store::{Result, StoreError};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::time::Duration;

/// How often the WAL is copied back: under load, about 1 s of writes stays in it.
const EVERY: Duration = Duration::from_secs(1);

/// The checkpointing thread; it ends when this is dropped (with its store).
pub(super) struct Checkpointer {
    _stop: Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database file at `path`.
    pub(super) fn start(path: &str) -> Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("gantry-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(%error, "cannot checkpoint the SQLite WAL; trying again in 1 s");
                    }
                }
            })
            .map_err(|e| StoreError::Thread(format!("cannot start the WAL checkpointer: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
