//! The workers as the API and the pages show them: every registered one with its state, and those a pool's
//! provider is starting (`booting`, from the autoscaler's last look), so a worker's state is true from the moment
//! it is asked for.

use crate::store::{Store, StoreError};
use gantry_model::wire::{Provider, WorkerView};

/// Every worker (of `pool` only, when given), by name.
pub async fn roster(store: &dyn Store, pool: Option<&str>) -> Result<Vec<WorkerView>, StoreError> {
    let in_pool = |name: &str| pool.is_none_or(|p| p == name);
    let registered = store.list_workers().await?;
    let mut workers: Vec<WorkerView> = registered
        .iter()
        .filter(|w| in_pool(&w.pool))
        .map(|w| WorkerView {
            id: Some(w.id),
            name: w.name.clone(),
            pool: w.pool.clone(),
            labels: w.labels.clone(),
            capacity: w.capacity,
            running: w.running,
            state: w.state.clone(),
            last_seen: Some(w.last_seen),
        })
        .collect();
    for record in store.list_pools().await? {
        // A pool nobody scales any more starts nothing, whatever its row last said.
        if !in_pool(&record.pool.name) || record.pool.provider == Provider::Manual {
            continue;
        }
        // The autoscaler's list lags a registration by up to a second: a registered name is no longer booting.
        let booting = record.booting_workers.iter();
        for name in booting.filter(|n| !registered.iter().any(|w| &w.name == *n)) {
            workers.push(WorkerView {
                id: None,
                name: name.clone(),
                pool: record.pool.name.clone(),
                labels: record.pool.labels.clone(),
                capacity: record.pool.slots,
                running: 0,
                state: "booting".into(),
                last_seen: None,
            });
        }
    }
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(workers)
}
