//! Pools (docs/api.md, "Workers and pools"): how the configuration file's `[[pool]]` and `POST/PATCH
//! /api/v1/pools` describe one, the checked form the server keeps, and what the API shows of pools, workers and
//! the autoscaler's decisions.

use super::providers::{
    ExecCommands, ExecSpec, KubernetesSettings, KubernetesSpec, MAX_KUBERNETES_POOL_NAME, Provider,
    valid_dns_label,
};
use crate::pipeline::valid_label;
use crate::units::parse_duration_secs;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Workers a pool may have at most, whatever it asks: a typo of `max = 4000` must not start 4,000 processes.
pub const MAX_POOL_WORKERS: u32 = 1000;
/// Jobs one worker of a pool may run at once, at most.
pub const MAX_POOL_SLOTS: u32 = 256;

/// A pool as written in `[[pool]]` or `POST /api/v1/pools`; every key but `name` has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Its name; workers join it with its token.
    pub name: String,
    /// `local` (the default) or `manual`.
    #[serde(default)]
    pub provider: Option<String>,
    /// Labels every worker of the pool has (jobs' `runs-on` match them); set here, never by the worker
    /// [default: `["linux"]`].
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Never fewer workers (0: scale to zero).
    #[serde(default)]
    pub min: u32,
    /// Never more workers [default: 1].
    #[serde(default)]
    pub max: Option<u32>,
    /// Jobs per worker at once [default: 1].
    #[serde(default)]
    pub slots: Option<u32>,
    /// Idle slots kept ready.
    #[serde(default)]
    pub warm: u32,
    /// An idle worker is drained after this [default: `5m`].
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// An instance that has not registered by then is destroyed [default: `2m`].
    #[serde(default)]
    pub boot_timeout: Option<String>,
    /// Pull requests from forks never run here (pools that hold secrets).
    #[serde(default)]
    pub trusted: bool,
    /// With job durations known, size the pool to clear the ready work within this [default: `30s`].
    #[serde(default)]
    pub target_wait: Option<String>,
    /// The `exec` provider's commands (`[pool.exec]`); only for `provider = "exec"`.
    #[serde(default)]
    pub exec: Option<ExecSpec>,
    /// The `kubernetes` provider's settings (`[pool.kubernetes]`); only for `provider = "kubernetes"`.
    #[serde(default)]
    pub kubernetes: Option<KubernetesSpec>,
}

fn default_labels() -> Vec<String> {
    vec!["linux".into()]
}

/// A checked pool: what the server keeps and the autoscaler follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// How its workers come to be.
    pub provider: Provider,
    /// Its workers' labels.
    pub labels: Vec<String>,
    /// Fewest workers.
    pub min: u32,
    /// Most workers.
    pub max: u32,
    /// Jobs per worker at once.
    pub slots: u32,
    /// Idle slots kept ready.
    pub warm: u32,
    /// Idle time after which a worker is drained, in ms.
    pub idle_timeout_ms: i64,
    /// Time an instance has to register, in ms.
    pub boot_timeout_ms: i64,
    /// Time the ready work should take to clear, in ms.
    pub target_wait_ms: i64,
    /// Forks' pull requests never run here.
    pub trusted: bool,
    /// The `exec` provider's commands (set exactly when the provider is `exec`).
    pub exec: Option<ExecCommands>,
    /// The `kubernetes` provider's settings (set exactly when the provider is `kubernetes`).
    pub kubernetes: Option<KubernetesSettings>,
}

/// Whether `name` may name a pool or a worker: 1 to 100 letters, digits, `.`, `_` and `-`.
pub fn valid_worker_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn millis(text: Option<&str>, default: &str, key: &str) -> Result<i64, String> {
    let secs = parse_duration_secs(text.unwrap_or(default)).map_err(|e| format!("{key}: {e}"))?;
    i64::try_from(secs.saturating_mul(1000)).map_err(|_| format!("{key}: too long"))
}

impl PoolSpec {
    /// Checks the spec and fills in the defaults; the error names the key.
    pub fn check(&self) -> Result<Pool, String> {
        if !valid_worker_name(&self.name) {
            return Err(format!(
                "invalid pool name {:?}: use 1 to 100 letters, digits, '.', '_' and '-'",
                self.name
            ));
        }
        let provider = Provider::parse(self.provider.as_deref().unwrap_or("local"))
            .map_err(|e| format!("provider: {e}"))?;
        if let Some(bad) = self.labels.iter().find(|l| !valid_label(l)) {
            return Err(format!(
                "labels: invalid label {bad:?}: use 1 to 63 letters, digits, '.', '_' and '-'"
            ));
        }
        let max = self.max.unwrap_or(1);
        if max > MAX_POOL_WORKERS {
            return Err(format!("max: at most {MAX_POOL_WORKERS} workers"));
        }
        if self.min > max {
            return Err(format!("min ({}) is more than max ({max})", self.min));
        }
        let slots = self.slots.unwrap_or(1);
        if !(1..=MAX_POOL_SLOTS).contains(&slots) {
            return Err(format!("slots: 1 to {MAX_POOL_SLOTS} jobs per worker"));
        }
        let idle_timeout_ms = millis(self.idle_timeout.as_deref(), "5m", "idle_timeout")?;
        let boot_timeout_ms = millis(self.boot_timeout.as_deref(), "2m", "boot_timeout")?;
        if boot_timeout_ms == 0 {
            return Err("boot_timeout: a worker needs some time to start".into());
        }
        let exec = match (provider, &self.exec) {
            (Provider::Exec, Some(exec)) => Some(exec.check().map_err(|e| format!("exec: {e}"))?),
            (Provider::Exec, None) => {
                return Err("provider \"exec\" needs its commands: a [pool.exec] table with create, destroy \
                            and list"
                    .into());
            }
            (_, Some(_)) => {
                return Err(format!(
                    "exec: only an \"exec\" pool has commands (this one's provider is \"{}\")",
                    provider.as_str()
                ));
            }
            (_, None) => None,
        };
        let kubernetes = match (provider, &self.kubernetes) {
            (Provider::Kubernetes, Some(k)) => {
                if !valid_dns_label(&self.name, MAX_KUBERNETES_POOL_NAME) {
                    return Err(format!(
                        "invalid pool name {:?} for the kubernetes provider: its pods are named after it, so use 1 \
                         to {MAX_KUBERNETES_POOL_NAME} lowercase letters, digits and '-'",
                        self.name
                    ));
                }
                Some(k.check().map_err(|e| format!("kubernetes: {e}"))?)
            }
            (Provider::Kubernetes, None) => {
                return Err(
                    "provider \"kubernetes\" needs a [pool.kubernetes] table with pod_template \
                            (and namespace)"
                        .into(),
                );
            }
            (_, Some(_)) => {
                return Err(format!(
                    "kubernetes: only a \"kubernetes\" pool has these settings (this one's provider is \"{}\")",
                    provider.as_str()
                ));
            }
            (_, None) => None,
        };
        Ok(Pool {
            name: self.name.clone(),
            provider,
            labels: self.labels.clone(),
            min: self.min,
            max,
            slots,
            warm: self.warm,
            idle_timeout_ms,
            boot_timeout_ms,
            target_wait_ms: millis(self.target_wait.as_deref(), "30s", "target_wait")?,
            trusted: self.trusted,
            exec,
            kubernetes,
        })
    }
}

/// `PATCH /api/v1/pools/{name}`: the keys to change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolPatch {
    /// See [`PoolSpec`].
    pub provider: Option<String>,
    /// See [`PoolSpec`].
    pub labels: Option<Vec<String>>,
    /// See [`PoolSpec`].
    pub min: Option<u32>,
    /// See [`PoolSpec`].
    pub max: Option<u32>,
    /// See [`PoolSpec`].
    pub slots: Option<u32>,
    /// See [`PoolSpec`].
    pub warm: Option<u32>,
    /// See [`PoolSpec`].
    pub idle_timeout: Option<String>,
    /// See [`PoolSpec`].
    pub boot_timeout: Option<String>,
    /// See [`PoolSpec`].
    pub trusted: Option<bool>,
    /// See [`PoolSpec`].
    pub target_wait: Option<String>,
}

/// A duration in ms as the configuration writes it: `90s`, `5m`, `1h30m`.
pub fn duration_text(ms: i64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut text = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            text.push_str(&format!("{n}{unit}"));
        }
    }
    if text.is_empty() { "0s".into() } else { text }
}

impl Pool {
    /// The spec that checks into this pool (what `PATCH` starts from).
    pub fn spec(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.clone(),
            provider: Some(self.provider.as_str().into()),
            labels: self.labels.clone(),
            min: self.min,
            max: Some(self.max),
            slots: Some(self.slots),
            warm: self.warm,
            idle_timeout: Some(duration_text(self.idle_timeout_ms)),
            boot_timeout: Some(duration_text(self.boot_timeout_ms)),
            trusted: self.trusted,
            target_wait: Some(duration_text(self.target_wait_ms)),
            exec: self.exec.as_ref().map(ExecCommands::spec),
            kubernetes: self.kubernetes.as_ref().map(KubernetesSettings::spec),
        }
    }

    /// This pool with `patch` applied, checked.
    pub fn patched(&self, patch: &PoolPatch) -> Result<Pool, String> {
        let mut spec = self.spec();
        let p = patch.clone();
        spec.provider = p.provider.or(spec.provider);
        spec.labels = p.labels.unwrap_or(spec.labels);
        spec.min = p.min.unwrap_or(spec.min);
        spec.max = p.max.or(spec.max);
        spec.slots = p.slots.or(spec.slots);
        spec.warm = p.warm.unwrap_or(spec.warm);
        spec.idle_timeout = p.idle_timeout.or(spec.idle_timeout);
        spec.boot_timeout = p.boot_timeout.or(spec.boot_timeout);
        spec.trusted = p.trusted.unwrap_or(spec.trusted);
        spec.target_wait = p.target_wait.or(spec.target_wait);
        spec.check()
    }
}

/// Workers of a pool by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Started by the provider, not registered yet.
    pub booting: u32,
    /// Registered, running nothing.
    pub idle: u32,
    /// Running at least one job.
    pub busy: u32,
    /// Finishing what it runs, then leaving.
    pub draining: u32,
}

/// A pool in `GET /api/v1/pools`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolView {
    /// Its name.
    pub name: String,
    /// `local` or `manual`.
    pub provider: String,
    /// Its workers' labels.
    pub labels: Vec<String>,
    /// Fewest workers.
    pub min: u32,
    /// Most workers.
    pub max: u32,
    /// Jobs per worker.
    pub slots: u32,
    /// Idle slots kept ready.
    pub warm: u32,
    /// See [`PoolSpec`].
    pub idle_timeout: String,
    /// See [`PoolSpec`].
    pub boot_timeout: String,
    /// See [`PoolSpec`].
    pub target_wait: String,
    /// Forks' pull requests never run here.
    pub trusted: bool,
    /// Written in the configuration file (changed there, not through the API).
    pub from_config: bool,
    /// Workers the autoscaler wants.
    pub desired: u32,
    /// Its workers by state.
    pub workers: WorkerCounts,
    /// Why its provider last failed, while it does.
    pub error: Option<String>,
}

/// `GET /api/v1/pools`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolList {
    /// By name.
    pub pools: Vec<PoolView>,
}

/// `POST /api/v1/pools` and `POST /api/v1/pools/{name}/token`: the pool's registration token, shown once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoolToken {
    /// The pool.
    pub pool: String,
    /// `gantry_pool_…`; only its hash is kept.
    pub token: String,
}

/// One decision of the autoscaler.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionView {
    /// When.
    pub at: DateTime<Utc>,
    /// Workers before.
    pub from: u32,
    /// Workers wanted after.
    pub to: u32,
    /// Why, in words.
    pub reason: String,
}

/// `GET /api/v1/pools/{name}/decisions`: newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecisionList {
    /// Newest first, at most 200.
    pub decisions: Vec<DecisionView>,
}

/// A worker in `GET /api/v1/workers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerView {
    /// Its id; none while it boots (it has not registered).
    pub id: Option<Uuid>,
    /// Its name.
    pub name: String,
    /// Its pool.
    pub pool: String,
    /// Its labels (its pool's).
    pub labels: Vec<String>,
    /// Jobs at once.
    pub capacity: u32,
    /// Jobs it runs now.
    pub running: u32,
    /// `booting` (its pool's provider started it; it has not registered yet), `idle`, `busy` or `draining`.
    pub state: String,
    /// Its last call; none while it boots.
    pub last_seen: Option<DateTime<Utc>>,
}

/// `GET /api/v1/workers`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerList {
    /// By name.
    pub workers: Vec<WorkerView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_like: serde_json::Value) -> Result<Pool, String> {
        serde_json::from_value::<PoolSpec>(toml_like)
            .map_err(|e| e.to_string())?
            .check()
    }

    #[test]
    fn a_pool_gets_its_defaults_and_refuses_what_cannot_work() {
        let pool =
            spec(serde_json::json!({"name": "big", "max": 4, "idle_timeout": "3s"})).unwrap();
        assert_eq!(pool.provider, Provider::Local);
        assert_eq!((pool.min, pool.max, pool.slots), (0, 4, 1));
        assert_eq!(
            (pool.idle_timeout_ms, pool.boot_timeout_ms),
            (3000, 120_000)
        );
        assert_eq!(
            pool.spec().check().unwrap(),
            pool,
            "spec and check round-trip"
        );
        for (bad, says) in [
            (serde_json::json!({"name": "a b"}), "invalid pool name"),
            (
                serde_json::json!({"name": "a", "min": 3, "max": 2}),
                "min (3) is more than max (2)",
            ),
            (
                serde_json::json!({"name": "a", "max": 5000}),
                "max: at most 1000",
            ),
            (
                serde_json::json!({"name": "a", "slots": 0}),
                "slots: 1 to 256",
            ),
            (
                serde_json::json!({"name": "a", "provider": "kubernetes"}),
                "needs a [pool.kubernetes] table",
            ),
            (
                serde_json::json!({"name": "Big_Pool", "provider": "kubernetes",
                    "kubernetes": {"pod_template": "/etc/gantry/worker-pod.yaml"}}),
                "for the kubernetes provider",
            ),
            (
                serde_json::json!({"name": "k", "provider": "kubernetes",
                    "kubernetes": {"pod_template": "worker-pod.yaml"}}),
                "absolute path",
            ),
            (
                serde_json::json!({"name": "a", "provider": "exec"}),
                "needs its commands",
            ),
            (
                serde_json::json!({"name": "a", "exec": {"create": "c", "destroy": "d", "list": "l"}}),
                "only an \"exec\" pool",
            ),
            (
                serde_json::json!({"name": "a", "provider": "exec", "exec": {"create": "c", "destroy": "d"}}),
                "missing field `list`",
            ),
            (
                serde_json::json!({"name": "a", "provider": "exec",
                    "exec": {"create": " ", "destroy": "d", "list": "l"}}),
                "exec: create is empty",
            ),
            (
                serde_json::json!({"name": "a", "idle_timeout": "soon"}),
                "idle_timeout:",
            ),
            (
                serde_json::json!({"name": "a", "labels": ["a b"]}),
                "labels: invalid label",
            ),
            (
                serde_json::json!({"name": "a", "size": 3}),
                "unknown field `size`",
            ),
        ] {
            let e = spec(bad.clone()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_patch_changes_only_its_keys_and_is_checked() {
        let pool = spec(serde_json::json!({"name": "p", "max": 4, "labels": ["linux"]})).unwrap();
        let patch = PoolPatch {
            max: Some(8),
            ..Default::default()
        };
        let patched = pool.patched(&patch).unwrap();
        assert_eq!(
            (patched.max, patched.labels.clone()),
            (8, vec!["linux".to_owned()])
        );
        let patch = PoolPatch {
            min: Some(9),
            ..Default::default()
        };
        assert!(pool.patched(&patch).unwrap_err().contains("more than max"));
        assert_eq!(duration_text(5_400_000), "1h30m");
        assert_eq!(duration_text(3000), "3s");
    }
}
