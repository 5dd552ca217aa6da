//! `/metrics` (docs/api.md, "Metrics"): Prometheus' text format. The pool gauges are read from the store at each
//! scrape, so every server sharing a database tells the same truth; counters count what this server did.

use crate::autoscale::may_run;
use crate::store::{Store, StoreError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolState {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    pool: String,
    direction: String,
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    pool_workers: Family<PoolState, Gauge>,
    pool_desired: Family<PoolLabel, Gauge>,
    queue_jobs: Family<PoolLabel, Gauge>,
    decisions: Family<Decision, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gantry");
        let pool_workers = Family::<PoolState, Gauge>::default();
        registry.register(
            "pool_workers",
            "Workers of each pool by state (booting, idle, busy, draining)",
            pool_workers.clone(),
        );
        let pool_desired = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "pool_desired",
            "Workers the autoscaler last wanted for each pool",
            pool_desired.clone(),
        );
        let queue_jobs = Family::<PoolLabel, Gauge>::default();
        registry.register(
            "queue_jobs",
            "Ready jobs each pool may run",
            queue_jobs.clone(),
        );
        let decisions = Family::<Decision, Counter>::default();
        registry.register(
            "autoscaler_decisions",
            "Decisions of this server's autoscaler (direction up, down or none)",
            decisions.clone(),
        );
        Self {
            registry,
            pool_workers,
            pool_desired,
            queue_jobs,
            decisions,
        }
    }
}

impl Metrics {
    /// Counts a decision of the autoscaler for `pool`, from `from` to `to` workers.
    pub fn decision(&self, pool: &str, from: u32, to: u32) {
        let direction = match to.cmp(&from) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "none",
        };
        self.decisions
            .get_or_create(&Decision {
                pool: pool.into(),
                direction: direction.into(),
            })
            .inc();
    }

    /// The text a scrape gets, with the pools read now.
    pub async fn render(&self, store: &dyn Store) -> Result<String, StoreError> {
        let pools = store.list_pools().await?;
        let ready = store.ready_jobs().await?;
        self.pool_workers.clear();
        self.pool_desired.clear();
        self.queue_jobs.clear();
        for record in &pools {
            let name = &record.pool.name;
            let w = record.workers;
            for (state, n) in [
                ("booting", w.booting),
                ("idle", w.idle),
                ("busy", w.busy),
                ("draining", w.draining),
            ] {
                self.pool_workers
                    .get_or_create(&PoolState {
                        pool: name.clone(),
                        state: state.into(),
                    })
                    .set(i64::from(n));
            }
            let label = PoolLabel { pool: name.clone() };
            self.pool_desired
                .get_or_create(&label)
                .set(i64::from(record.desired));
            let matching = ready.iter().filter(|j| may_run(&record.pool, j)).count();
            self.queue_jobs.get_or_create(&label).set(matching as i64);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        Ok(text)
    }
}
