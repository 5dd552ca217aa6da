//! How a pool's workers come to be (docs/api.md, "Workers and pools"): the providers' names, and the settings of
//! those that need some (`[pool.exec]`, `[pool.kubernetes]`).

use crate::units::parse_duration_secs;
use serde::{Deserialize, Serialize};

/// How a pool's workers come to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// `gantry worker` processes the server starts as its own children.
    Local,
    /// Nobody starts them: workers started by hand join with the pool's token, and the pool is not scaled.
    Manual,
    /// The operator's own commands make, remove and list instances (clouds, VMs, other hosts).
    Exec,
    /// One worker per Pod, made from a pod template through the Kubernetes API.
    Kubernetes,
}

impl Provider {
    /// Its name in the configuration and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Manual => "manual",
            Provider::Exec => "exec",
            Provider::Kubernetes => "kubernetes",
        }
    }

    /// The provider named `name`, or why there is none.
    pub fn parse(name: &str) -> Result<Provider, String> {
        match name {
            "local" => Ok(Provider::Local),
            "manual" => Ok(Provider::Manual),
            "exec" => Ok(Provider::Exec),
            "kubernetes" => Ok(Provider::Kubernetes),
            other => Err(format!(
                "unknown provider {other:?}: use \"local\", \"exec\", \"kubernetes\" or \"manual\""
            )),
        }
    }
}

/// The longest an `exec` command may be given: a typo of `timeout = "2000m"` must not hang the autoscaler a day.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 3600;

/// `[pool.exec]` as written: command lines run with `sh -c` on the server's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Starts an instance and prints its id on the first line of its output.
    pub create: String,
    /// Removes an instance: its id is appended as the last argument.
    pub destroy: String,
    /// Prints the ids of the instances that exist, one per line.
    pub list: String,
    /// Each call is stopped (its whole process group) after this [default: `2m`].
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The checked `[pool.exec]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCommands {
    /// See [`ExecSpec`].
    pub create: String,
    /// See [`ExecSpec`].
    pub destroy: String,
    /// See [`ExecSpec`].
    pub list: String,
    /// Each call's limit, in ms.
    pub timeout_ms: i64,
}

impl ExecSpec {
    /// Checks the commands and fills in the timeout; the error names the key.
    pub fn check(&self) -> Result<ExecCommands, String> {
        for (key, command) in [
            ("create", &self.create),
            ("destroy", &self.destroy),
            ("list", &self.list),
        ] {
            if command.trim().is_empty() {
                return Err(format!("{key} is empty"));
            }
        }
        let secs = parse_duration_secs(self.timeout.as_deref().unwrap_or("2m"))
            .map_err(|e| format!("timeout: {e}"))?;
        if !(1..=MAX_EXEC_TIMEOUT_SECS).contains(&secs) {
            return Err(format!(
                "timeout: 1 s to {} min",
                MAX_EXEC_TIMEOUT_SECS / 60
            ));
        }
        Ok(ExecCommands {
            create: self.create.clone(),
            destroy: self.destroy.clone(),
            list: self.list.clone(),
            timeout_ms: secs as i64 * 1000,
        })
    }
}

impl ExecCommands {
    /// The spec that checks into these commands.
    pub fn spec(&self) -> ExecSpec {
        ExecSpec {
            create: self.create.clone(),
            destroy: self.destroy.clone(),
            list: self.list.clone(),
            timeout: Some(super::duration_text(self.timeout_ms)),
        }
    }
}

/// `[pool.kubernetes]` as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The namespace the worker pods go in [default: `gantry`].
    #[serde(default)]
    pub namespace: Option<String>,
    /// The pod template file (YAML) each worker pod is made from, on the server's host.
    pub pod_template: String,
}

/// The checked `[pool.kubernetes]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesSettings {
    /// See [`KubernetesSpec`].
    pub namespace: String,
    /// See [`KubernetesSpec`].
    pub pod_template: String,
}

/// Whether `name` is a Kubernetes DNS label of at most `max` characters: lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub fn valid_dns_label(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The longest name of a `kubernetes` pool: its pods are named `POOL-N` and labelled with it (63 at most).
pub const MAX_KUBERNETES_POOL_NAME: usize = 50;

impl KubernetesSpec {
    /// Checks the settings and fills in the namespace; the error names the key.
    pub fn check(&self) -> Result<KubernetesSettings, String> {
        let namespace = self.namespace.clone().unwrap_or_else(|| "gantry".into());
        if !valid_dns_label(&namespace, 63) {
            return Err(format!(
                "namespace {namespace:?}: use 1 to 63 lowercase letters, digits and '-'"
            ));
        }
        if !self.pod_template.starts_with('/') {
            return Err(format!(
                "pod_template {:?}: give the template file's absolute path",
                self.pod_template
            ));
        }
        Ok(KubernetesSettings {
            namespace,
            pod_template: self.pod_template.clone(),
        })
    }
}

impl KubernetesSettings {
    /// The spec that checks into these settings.
    pub fn spec(&self) -> KubernetesSpec {
        KubernetesSpec {
            namespace: Some(self.namespace.clone()),
            pod_template: self.pod_template.clone(),
        }
    }
}
