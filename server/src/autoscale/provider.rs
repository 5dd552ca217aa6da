//! What makes and removes a pool's instances (docs/api.md, "Workers and pools"): one trait, so the autoscaler
//! treats every provider alike (`local`, `exec`, `kubernetes`).

use async_trait::async_trait;
use gantry_model::wire::Pool;
use std::time::{Duration, Instant};

/// An instance a provider made (its worker registers under the same name).
#[derive(Clone, Debug)]
pub struct Instance {
    /// Its name, which its worker registers with.
    pub name: String,
    /// When the provider started it.
    pub started: Instant,
    /// On its way out (a pod being deleted): not the pool's any more, but its name is not free yet.
    pub leaving: bool,
}

impl Instance {
    /// How long ago an instance made at `created_ms` (Unix ms) was made, and that moment on this clock.
    pub fn age(created_ms: i64) -> (Duration, Instant) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let age = Duration::from_millis(now_ms.saturating_sub(created_ms).max(0) as u64);
        (
            age,
            Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
        )
    }
}

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// Makes, removes and lists a pool's instances.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Starts an instance named `name` for `pool`.
    async fn create(&self, pool: &Pool, name: &str) -> Result<(), ProviderError>;
    /// Removes the instance `name` of `pool`, whatever it runs.
    async fn destroy(&self, pool: &Pool, name: &str) -> Result<(), ProviderError>;
    /// The instances of `pool` that exist now.
    async fn list(&self, pool: &Pool) -> Result<Vec<Instance>, ProviderError>;
    /// What the names of `pool`'s instances start with (`PREFIX-1`, `PREFIX-2`, …): unique to this provider
    /// wherever its workers run, since a worker's name marks everything it makes on its host.
    fn name_prefix(&self, pool: &str) -> String;
    /// The longest one call for `pool` may take (the server holds the pool's turn that much longer).
    fn call_limit(&self, _pool: &Pool) -> Duration {
        Duration::from_secs(10)
    }
    /// Whether an instance goes away by itself once its worker deregistered (a process exits), rather than
    /// staying until destroyed (a VM).
    fn leaves_on_its_own(&self) -> bool {
        true
    }
    /// Whether its server is stopping: its pools are then left alone (a drained worker is not replaced).
    fn stopping(&self) -> bool {
        false
    }
}
