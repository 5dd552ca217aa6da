//! The autoscaler (docs/api.md, "Workers and pools"): a server task that keeps each scaled pool at the workers
//! its ready work needs. Woken when jobs become ready, when a job ends, when a worker comes or goes and when a
//! pool changes, and at least every second. For each pool whose turn this server holds (servers sharing a
//! database take turns through a lease in it), it reconciles the provider's instances with the registered
//! workers, decides (`plan.rs`), starts or drains, and records every decision in words.

mod exec;
mod kubernetes;
mod local;
mod plan;
mod provider;
mod roster;

pub use exec::ExecProvider;
pub use kubernetes::{KubernetesProvider, POOL_LABEL, WORKER_LABEL};
pub use local::{LocalLauncher, LocalProvider};
pub use plan::{Look, Plan, decide, may_run};
pub use provider::{Instance, Provider, ProviderError};
pub use roster::roster;

use crate::queue::Queue;
use crate::store::{PoolRecord, Store, StoreError, WorkerRecord};
use chrono::Utc;
use gantry_model::wire::{Pool, Provider as ProviderKind};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest the autoscaler sleeps without news.
const TICK: Duration = Duration::from_secs(1);
/// How long a server's turn on a pool lasts without renewal: another server takes over after this.
const TURN_MS: i64 = 5_000;
/// How often registrations that stopped calling are looked for.
const STALE_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often past durations are read again.
const DURATIONS_EVERY: Duration = Duration::from_secs(15);
/// How far back durations are read.
const DURATIONS_SINCE: chrono::TimeDelta = chrono::TimeDelta::days(14);

/// A provider that failed: not asked again before `until`, doubling from 1 s to 1 min.
struct Backoff {
    until: Instant,
    pause: Duration,
    /// The provider could not list its instances: the pool is left alone until `until`.
    listing: bool,
}

/// The autoscaler of one server.
pub struct Autoscaler {
    store: Arc<dyn Store>,
    queue: Queue,
    /// This server, in the pools' turn column.
    server: String,
    local: Option<Arc<LocalProvider>>,
    exec: Arc<ExecProvider>,
    kubernetes: Arc<KubernetesProvider>,
    /// A registered worker that stopped calling is removed after this.
    worker_grace: Duration,
    backoff: HashMap<String, Backoff>,
    /// When stale registrations were last looked for.
    swept: Instant,
    metrics: Arc<crate::metrics::Metrics>,
    durations: (Instant, HashMap<(i64, String), i64>),
    /// Instances (pool, name) seen registered, and since when they are not (they deregistered and are leaving).
    leaving: HashMap<(String, String), Option<Instant>>,
    /// Workers started again after their process died mid-job: when last, and the pause before the next time.
    restarts: HashMap<String, (Instant, Duration)>,
}

impl Autoscaler {
    /// An autoscaler over `store`; `local` starts the workers of `local` pools (none: such pools say why they
    /// cannot grow); `exec` pools' instances reach the server at `public_url`.
    pub fn new(
        store: Arc<dyn Store>,
        queue: Queue,
        local: Option<Arc<LocalProvider>>,
        public_url: String,
        worker_grace: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let server = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::now_v7().simple().to_string()[20..]
        );
        Self {
            exec: Arc::new(ExecProvider::new(store.clone(), public_url.clone())),
            kubernetes: Arc::new(KubernetesProvider::new(store.clone(), public_url)),
            store,
            queue,
            server,
            local,
            worker_grace,
            backoff: HashMap::new(),
            swept: Instant::now() - STALE_SWEEP_EVERY,
            metrics,
            durations: (Instant::now() - DURATIONS_EVERY * 2, HashMap::new()),
            leaving: HashMap::new(),
            restarts: HashMap::new(),
        }
    }

    /// Runs for ever (the server aborts it when it stops).
    pub async fn run(mut self) {
        let wakeup = self.queue.scaler_wakeup();
        loop {
            if let Err(error) = self.look().await {
                tracing::error!(%error, "the autoscaler could not look at the pools; trying again");
            }
            let _ = tokio::time::timeout(TICK, wakeup.notified()).await;
        }
    }

    /// One look at every pool.
    pub async fn look(&mut self) -> Result<(), StoreError> {
        // The sweep is a write transaction: once per few seconds is enough against a grace of a minute or more.
        if self.swept.elapsed() >= STALE_SWEEP_EVERY {
            self.swept = Instant::now();
            let stale_before = Utc::now() - self.worker_grace;
            for gone in self.store.remove_stale_workers(stale_before).await? {
                tracing::warn!(worker = %gone, "removed a worker that stopped calling");
            }
        }
        let pools = self.store.list_pools().await?;
        let scaled: Vec<_> = pools
            .iter()
            .filter(|p| p.pool.provider != ProviderKind::Manual)
            .collect();
        if scaled.is_empty() {
            return Ok(());
        }
        let workers = self.store.list_workers().await?;
        let ready = self.store.ready_jobs().await?;
        if !ready.is_empty() && self.durations.0.elapsed() > DURATIONS_EVERY {
            let since = Utc::now() - DURATIONS_SINCE;
            self.durations = (Instant::now(), self.store.recent_durations(since).await?);
        }
        for record in scaled {
            let now_ms = Utc::now().timestamp_millis();
            let name = &record.pool.name;
            if !self
                .store
                .take_pool_turn(name, &self.server, now_ms, now_ms + TURN_MS)
                .await?
            {
                continue;
            }
            let pool_workers: Vec<_> = workers.iter().filter(|w| &w.pool == name).collect();
            if let Err(error) = self.reconcile(record, &pool_workers, &ready).await {
                tracing::error!(pool = %name, %error, "cannot scale the pool");
            }
        }
        Ok(())
    }

    fn provider(&self, kind: ProviderKind) -> Result<Arc<dyn Provider>, ProviderError> {
        match kind {
            ProviderKind::Local => self.local.clone().map(|p| p as Arc<dyn Provider>).ok_or_else(|| {
                ProviderError(
                    "this server cannot start local workers (run `gantry up`, or `gantry serve`, which can)"
                        .into(),
                )
            }),
            ProviderKind::Exec => Ok(self.exec.clone()),
            ProviderKind::Kubernetes => Ok(self.kubernetes.clone()),
            ProviderKind::Manual => Err(ProviderError("a manual pool is not scaled".into())),
        }
    }

    async fn reconcile(
        &mut self,
        record: &PoolRecord,
        workers: &[&WorkerRecord],
        ready: &[crate::store::ReadyJob],
    ) -> Result<(), StoreError> {
        let pool = &record.pool;
        let provider = match self.provider(pool.provider) {
            Ok(provider) => provider,
            Err(e) => return self.failed(record, &e.to_string()).await,
        };
        if provider.stopping() {
            return Ok(());
        }
        // A provider that cannot even list is not asked again before its pause ends.
        if self
            .backoff
            .get(&pool.name)
            .is_some_and(|b| b.listing && b.until > Instant::now())
        {
            return Ok(());
        }
        let mut instances = match provider.list(pool).await {
            Ok(list) => list,
            Err(e) => {
                let why = self.back_off(&pool.name, &format!("listing instances: {e}"));
                if let Some(b) = self.backoff.get_mut(&pool.name) {
                    b.listing = true;
                }
                return self.failed(record, &why).await;
            }
        };
        if let Some(b) = self.backoff.get_mut(&pool.name) {
            b.listing = false;
        }
        // Instances on their way out count for nothing but their names, which are not free yet.
        let going: Vec<String> = instances
            .iter()
            .filter(|i| i.leaving)
            .map(|i| i.name.clone())
            .collect();
        instances.retain(|i| !i.leaving);
        let mut registered: HashSet<&str> = workers.iter().map(|w| w.name.as_str()).collect();
        let existing: HashSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
        let mut error = None;
        // An instance that registered and no longer is has deregistered and is on its way out: neither booting
        // nor a failure, though one that lingers is destroyed.
        self.leaving
            .retain(|(p, name), _| p != &pool.name || existing.contains(name.as_str()));
        let mut departed = Vec::new();
        for instance in &instances {
            let key = (pool.name.clone(), instance.name.clone());
            if registered.contains(instance.name.as_str()) {
                self.leaving.insert(key, None);
            } else if let Some(since) = self.leaving.get_mut(&key) {
                let since = since.get_or_insert_with(Instant::now);
                // A VM stays until destroyed; a process that lingers is destroyed after the boot timeout.
                if !provider.leaves_on_its_own()
                    || since.elapsed().as_millis() as i64 > pool.boot_timeout_ms
                {
                    departed.push(instance.name.clone());
                }
            }
        }
        // Destroying is retried at the next look, unless it keeps failing: then after a pause of its own, so
        // that an instance that cannot be destroyed (its host is down) does not stop the pool from growing.
        let destroys = format!("{}\u{0}destroy", pool.name);
        let destroying = !self.backed_off(&destroys);
        for name in departed.iter().filter(|_| destroying) {
            if !self.hold_turn(pool, provider.as_ref()).await? {
                return Ok(());
            }
            tracing::info!(pool = %pool.name, worker = %name, "its worker left: destroying its instance");
            if let Err(e) = provider.destroy(pool, name).await {
                error = Some(self.back_off(&destroys, &format!("destroying {name}: {e}")));
                break;
            }
        }
        // Instances that never registered are destroyed; the pool says so until it starts one that does.
        let mut booting: Vec<String> = Vec::new();
        let mut late = Vec::new();
        for instance in instances.iter().filter(|i| {
            !registered.contains(i.name.as_str())
                && !self
                    .leaving
                    .contains_key(&(pool.name.clone(), i.name.clone()))
        }) {
            if instance.started.elapsed().as_millis() as i64 > pool.boot_timeout_ms {
                late.push(instance.name.clone());
            } else {
                booting.push(instance.name.clone());
            }
        }
        for name in late.iter().filter(|_| destroying) {
            let why = format!(
                "worker {name} did not register within {} → destroyed",
                gantry_model::wire::duration_text(pool.boot_timeout_ms)
            );
            tracing::warn!(pool = %pool.name, "{why}");
            let live = record.workers.idle + record.workers.busy;
            self.decide(&pool.name, live, live, &why).await?;
            if !self.hold_turn(pool, provider.as_ref()).await? {
                return Ok(());
            }
            if let Err(e) = provider.destroy(pool, name).await {
                error = Some(
                    self.back_off(&destroys, &format!("{why}, but destroying it failed: {e}")),
                );
                break;
            }
            error = Some(why);
        }
        // A managed worker of this provider whose instance is gone (its process died) and that runs nothing is a
        // ghost: removed now. (Another server's workers have another prefix: theirs to handle, or the grace's.)
        let prefix = format!("{}-", provider.name_prefix(&pool.name));
        let mine = |w: &&&WorkerRecord| {
            w.managed && w.name.starts_with(&prefix) && !existing.contains(w.name.as_str())
        };
        for ghost in workers.iter().filter(mine).filter(|w| w.running == 0) {
            tracing::warn!(pool = %pool.name, worker = %ghost.name, "its instance is gone: removing the worker");
            self.store.deregister_worker(ghost.id).await?;
            // Its name (and so its data dir, with its caches) is the next one started.
            registered.remove(ghost.name.as_str());
        }
        // One whose process died mid-job starts again under its name and data dir: it sweeps what the dead one
        // left and reports its jobs lost, so they run again now rather than when their leases end. One that
        // keeps dying is started again after a pause doubling from 1 s to 30 s (its jobs' leases end meanwhile).
        let orphans: Vec<_> = workers
            .iter()
            .filter(mine)
            .filter(|w| w.running > 0)
            .collect();
        let live = record.workers.idle + record.workers.busy;
        for orphan in orphans {
            let last = self.restarts.get(&orphan.name).copied();
            if self.backed_off(&pool.name) || last.is_some_and(|(at, pause)| at.elapsed() < pause) {
                continue;
            }
            let pause = match last {
                Some((at, pause)) if at.elapsed() < Duration::from_secs(60) => {
                    (pause * 2).min(Duration::from_secs(30))
                }
                _ => Duration::from_secs(1),
            };
            self.restarts
                .insert(orphan.name.clone(), (Instant::now(), pause));
            if !self.hold_turn(pool, provider.as_ref()).await? {
                return Ok(());
            }
            match provider.create(pool, &orphan.name).await {
                Ok(()) => {
                    self.backoff.remove(&pool.name);
                    let (jobs, them) = match orphan.running {
                        1 => ("1 job".to_owned(), "it"),
                        n => (format!("{n} jobs"), "them"),
                    };
                    let why = format!(
                        "worker {}'s process is gone while it ran {jobs} → started again to recover {them}",
                        orphan.name
                    );
                    tracing::warn!(pool = %pool.name, "{why}");
                    self.decide(&pool.name, live, live, &why).await?;
                }
                Err(e) => {
                    error =
                        Some(self.back_off(&pool.name, &format!("starting {}: {e}", orphan.name)));
                    break;
                }
            }
        }
        let live_workers: Vec<_> = workers
            .iter()
            .copied()
            .filter(|w| !w.managed || existing.contains(w.name.as_str()) || w.running > 0)
            .collect();
        let ready: Vec<_> = ready.iter().filter(|j| may_run(pool, j)).collect();
        let now_ms = Utc::now().timestamp_millis();
        let plan = decide(&Look {
            pool,
            ready,
            durations: &self.durations.1,
            workers: live_workers,
            booting: booting.len() as u32,
            now_ms,
        });
        let mut created = false;
        if plan.start > 0 && !self.backed_off(&pool.name) {
            self.decide(&pool.name, plan.live, plan.live + plan.start, &plan.reason)
                .await?;
            let mut taken: HashSet<&str> = registered.union(&existing).copied().collect();
            taken.extend(going.iter().map(String::as_str));
            let prefix = provider.name_prefix(&pool.name);
            let mut names = (1..).map(|i| format!("{prefix}-{i}"));
            for _ in 0..plan.start {
                let name = names
                    .by_ref()
                    .find(|n| !taken.contains(n.as_str()))
                    .expect("an endless supply of names");
                if !self.hold_turn(pool, provider.as_ref()).await? {
                    return Ok(());
                }
                match provider.create(pool, &name).await {
                    Ok(()) => {
                        booting.push(name);
                        self.backoff.remove(&pool.name);
                        created = true;
                    }
                    Err(e) => {
                        error = Some(self.back_off(&pool.name, &format!("starting {name}: {e}")));
                        break;
                    }
                }
            }
        }
        let mut drained = false;
        let mut live = plan.live;
        for (worker, why) in &plan.drain {
            if self.store.drain_worker(*worker).await? {
                tracing::info!(pool = %pool.name, "{why}");
                self.decide(&pool.name, live, live - 1, why).await?;
                live -= 1;
                drained = true;
            }
        }
        if drained {
            self.queue.drained();
        }
        // A failure stays shown until the pool is where it should be with every instance registered.
        let settled = plan.start == 0 && booting.is_empty();
        booting.sort();
        // (A create that worked ends a failure to create.)
        let error = error.or_else(|| record.error.clone().filter(|_| !settled && !created));
        if booting != record.booting_workers || error != record.error {
            self.store
                .set_pool_progress(&pool.name, &booting, error.as_deref())
                .await?;
        }
        Ok(())
    }

    /// Keeps this server's turn on `pool` for as long as a call of its provider may take, so that no other
    /// server acts for the pool meanwhile (a slow `create` must not be made twice); false if the turn is lost.
    async fn hold_turn(&self, pool: &Pool, provider: &dyn Provider) -> Result<bool, StoreError> {
        let now_ms = Utc::now().timestamp_millis();
        let limit_ms = provider.call_limit(pool).as_millis() as i64;
        let held = self
            .store
            .take_pool_turn(
                &pool.name,
                &self.server,
                now_ms,
                now_ms + TURN_MS + limit_ms,
            )
            .await?;
        if !held {
            tracing::warn!(pool = %pool.name, "another server took the pool's turn: leaving it to that one");
        }
        Ok(held)
    }

    fn backed_off(&self, pool: &str) -> bool {
        self.backoff
            .get(pool)
            .is_some_and(|b| b.until > Instant::now())
    }

    /// Notes that `pool`'s provider failed (`why`): it is not asked again for a while, doubling each time.
    fn back_off(&mut self, pool: &str, why: &str) -> String {
        let b = self.backoff.entry(pool.to_owned()).or_insert(Backoff {
            until: Instant::now(),
            pause: Duration::from_millis(500),
            listing: false,
        });
        b.pause = (b.pause * 2).min(Duration::from_secs(60));
        b.until = Instant::now() + b.pause;
        tracing::warn!(pool = %pool, "{why}; trying again in {:?}", b.pause);
        why.to_owned()
    }

    async fn decide(&self, pool: &str, from: u32, to: u32, why: &str) -> Result<(), StoreError> {
        self.metrics.decision(pool, from, to);
        self.store.record_pool_decision(pool, from, to, why).await
    }

    async fn failed(&mut self, record: &PoolRecord, why: &str) -> Result<(), StoreError> {
        if record.error.as_deref() != Some(why) {
            tracing::warn!(pool = %record.pool.name, "{why}");
            self.store
                .set_pool_progress(&record.pool.name, &[], Some(why))
                .await?;
        }
        Ok(())
    }
}
