//! The `kubernetes` provider: one worker per Pod, made from the pool's pod template (`[pool.kubernetes]`) through
//! the Kubernetes API. A pod is named after its worker and labelled with its pool and worker; scale-in deletes
//! exactly the drained workers' pods, by name. A watcher (list, then watch) per pool keeps a cache of its pods,
//! so a look costs no API call; the pods made are also kept in the database with their own registration tokens,
//! like the `exec` provider's instances, so that the server taking a pool over knows them.

use super::provider::{Instance, Provider, ProviderError};
use crate::auth::{generate_token, hash_token};
use crate::store::{PoolInstance, Store};
use async_trait::async_trait;
use futures::StreamExt;
use gantry_model::wire::{KubernetesSettings, Pool};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The label naming a pod's pool.
pub const POOL_LABEL: &str = "gantry.dev/pool";
/// The label naming a pod's worker.
pub const WORKER_LABEL: &str = "gantry.dev/worker";
/// A pod made this recently may not be in the watcher's cache yet: it counts as existing meanwhile.
const WATCH_LAG: Duration = Duration::from_secs(30);
/// The longest a create or a delete may take.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// How long a look waits for a pool's first list of pods.
const FIRST_LIST: Duration = Duration::from_secs(5);

/// A pool's watcher and what it saw.
struct Watched {
    namespace: String,
    pods: reflector::Store<Pod>,
    /// The watcher's last error, until it lists or watches again.
    error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `kubernetes` provider.
pub struct KubernetesProvider {
    store: Arc<dyn Store>,
    /// The server's URL as the pods reach it (`GANTRY_SERVER`).
    server_url: String,
    /// Made at first use from the service account (in a cluster) or `KUBECONFIG`.
    client: tokio::sync::OnceCell<kube::Client>,
    watched: Mutex<HashMap<String, Watched>>,
}

impl KubernetesProvider {
    /// A provider whose pods reach the server at `server_url`.
    pub fn new(store: Arc<dyn Store>, server_url: String) -> Self {
        Self {
            store,
            server_url,
            client: Default::default(),
            watched: Default::default(),
        }
    }

    fn settings(pool: &Pool) -> Result<&KubernetesSettings, ProviderError> {
        pool.kubernetes
            .as_ref()
            .ok_or_else(|| ProviderError("the pool has no [pool.kubernetes] settings".into()))
    }

    async fn client(&self) -> Result<kube::Client, ProviderError> {
        let client = self
            .client
            .get_or_try_init(|| async {
                let config = kube::Config::infer().await.map_err(|e| {
                    ProviderError(format!(
                        "no Kubernetes configuration (a service account in a cluster, or KUBECONFIG): {e}"
                    ))
                })?;
                let client = kube::Client::try_from(config)
                    .map_err(|e| ProviderError(format!("cannot make a Kubernetes client: {e}")))?;
                // Discovery first: a wrong address or credential is said once, plainly, before any pod.
                let version = client
                    .apiserver_version()
                    .await
                    .map_err(|e| ProviderError(describe(&e, "any")))?;
                tracing::info!(version = %version.git_version, "connected to Kubernetes");
                Ok::<_, ProviderError>(client)
            })
            .await?;
        Ok(client.clone())
    }

    async fn pods(&self, pool: &Pool) -> Result<Api<Pod>, ProviderError> {
        let namespace = &Self::settings(pool)?.namespace;
        Ok(Api::namespaced(self.client().await?, namespace))
    }

    /// The pool's watcher (started at its first look, and again when its namespace changes).
    async fn watch(
        &self,
        pool: &Pool,
    ) -> Result<(reflector::Store<Pod>, Arc<Mutex<Option<String>>>), ProviderError> {
        let namespace = Self::settings(pool)?.namespace.clone();
        if let Some(w) = self.watched.lock().expect("lock poisoned").get(&pool.name)
            && w.namespace == namespace
        {
            return Ok((w.pods.clone(), w.error.clone()));
        }
        let api = self.pods(pool).await?;
        let (pods, writer) = reflector::store();
        let error = Arc::new(Mutex::new(None));
        let config = watcher::Config::default().labels(&format!("{POOL_LABEL}={}", pool.name));
        let stream = reflector(writer, watcher(api, config)).default_backoff();
        let seen = error.clone();
        let name = pool.name.clone();
        let ns = namespace.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let mut seen = seen.lock().expect("lock poisoned");
                match event {
                    Ok(_) => *seen = None,
                    Err(e) => {
                        let why = describe_watch_error(&e, &ns);
                        if seen.as_deref() != Some(why.as_str()) {
                            tracing::warn!(pool = %name, "watching the pods: {why}");
                        }
                        *seen = Some(why);
                    }
                }
            }
        });
        let watched = Watched {
            namespace,
            pods: pods.clone(),
            error: error.clone(),
            task,
        };
        self.watched
            .lock()
            .expect("lock poisoned")
            .insert(pool.name.clone(), watched);
        Ok((pods, error))
    }

    /// The pod for worker `name` of `pool`, from its template.
    fn pod(&self, pool: &Pool, name: &str, token: &str) -> Result<Pod, ProviderError> {
        let settings = Self::settings(pool)?;
        let path = &settings.pod_template;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProviderError(format!("pod_template {path}: cannot read it: {e}")))?;
        let yaml: serde_json::Value = serde_saphyr::from_str(&text)
            .map_err(|e| ProviderError(format!("pod_template {path}: not YAML: {e}")))?;
        // The typed parse drops what it does not know: a misspelt `securityContext` would silently go.
        let mut unknown = Vec::new();
        let mut pod: Pod = serde_ignored::deserialize(yaml, |field| {
            unknown.push(field.to_string().replace(".?", ""))
        })
        .map_err(|e| ProviderError(format!("pod_template {path}: not a Pod: {e}")))?;
        if !unknown.is_empty() {
            return Err(ProviderError(format!(
                "pod_template {path}: fields a Pod does not have: {}",
                unknown.join(", ")
            )));
        }
        let meta = &mut pod.metadata;
        meta.name = Some(name.to_owned());
        meta.generate_name = None;
        meta.namespace = Some(settings.namespace.clone());
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POOL_LABEL.into(), pool.name.clone());
        labels.insert(WORKER_LABEL.into(), name.to_owned());
        let spec = pod
            .spec
            .as_mut()
            .ok_or_else(|| ProviderError(format!("pod_template {path}: the Pod has no spec")))?;
        // The container named `worker` runs it; else the first.
        let at = spec
            .containers
            .iter()
            .position(|c| c.name == "worker")
            .unwrap_or(0);
        let container = spec.containers.get_mut(at).ok_or_else(|| {
            ProviderError(format!("pod_template {path}: the Pod has no container"))
        })?;
        let mut vars = vec![
            ("GANTRY_SERVER", self.server_url.clone()),
            ("GANTRY_POOL", pool.name.clone()),
            ("GANTRY_POOL_TOKEN", token.to_owned()),
            ("GANTRY_WORKER_NAME", name.to_owned()),
            ("GANTRY_WORKER_CAPACITY", pool.slots.to_string()),
        ];
        if !pool.labels.is_empty() {
            vars.push(("GANTRY_WORKER_LABELS", pool.labels.join(",")));
        }
        let env = container.env.get_or_insert_with(Vec::new);
        env.retain(|v| !vars.iter().any(|(k, _)| *k == v.name));
        env.extend(vars.into_iter().map(|(k, v)| EnvVar {
            name: k.into(),
            value: Some(v),
            value_from: None,
        }));
        Ok(pod)
    }
}

/// A failed call in words: Kubernetes' own message, with what to do about a refusal.
fn describe(error: &kube::Error, namespace: &str) -> String {
    match error {
        kube::Error::Api(status) => {
            let hint = match status.code {
                403 => format!(
                    " (the server's service account needs create, delete, get, list and watch on pods in namespace \
                     {namespace}: see deploy/kubernetes/rbac.yaml)"
                ),
                _ => String::new(),
            };
            format!(
                "Kubernetes answered {} {}: {}{hint}",
                status.code, status.reason, status.message
            )
        }
        other => format!("cannot reach Kubernetes: {other}"),
    }
}

fn describe_watch_error(error: &watcher::Error, namespace: &str) -> String {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) => {
            describe(e, namespace)
        }
        other => other.to_string(),
    }
}

/// A recorded pod's namespace and name (`NAMESPACE/NAME`): a pod made before the pool's namespace changed is
/// still deleted where it is.
fn recorded_place<'a>(record: &'a PoolInstance, namespace: &'a str) -> (&'a str, &'a str) {
    record
        .instance
        .split_once('/')
        .unwrap_or((namespace, record.instance.as_str()))
}

/// A call to the API within the time the autoscaler holds the pool's turn for it.
async fn within<T>(
    call: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, ProviderError> {
    tokio::time::timeout(CALL_LIMIT, call).await.map_err(|_| {
        ProviderError(format!(
            "Kubernetes did not answer within {} s",
            CALL_LIMIT.as_secs()
        ))
    })
}

#[async_trait]
impl Provider for KubernetesProvider {
    async fn create(&self, pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let token = generate_token("pool");
        let pod = self.pod(pool, name, &token)?;
        let api = self.pods(pool).await?;
        let namespace = Self::settings(pool)?.namespace.clone();
        self.store
            .add_instance_token(&pool.name, name, &hash_token(&token))
            .await
            .map_err(|e| ProviderError(format!("cannot store the pod's token: {e}")))?;
        if let Err(e) = within(api.create(&PostParams::default(), &pod))
            .await
            .and_then(|r| r.map_err(|e| ProviderError(match &e {
                kube::Error::Api(status) if status.code == 409 => format!(
                    "a pod named {name} exists already in namespace {namespace} (one being deleted?): {}",
                    status.message
                ),
                _ => describe(&e, &namespace),
            })))
        {
            let _ = self.store.forget_instance(&pool.name, name).await;
            return Err(e);
        }
        tracing::info!(pool = %pool.name, worker = %name, "created a pod");
        let record = PoolInstance {
            name: name.to_owned(),
            instance: format!("{namespace}/{name}"),
            created_ms: chrono::Utc::now().timestamp_millis(),
        };
        // Unrecorded, the pod is still found by its labels (list adopts it); its token stays valid meanwhile.
        self.store
            .record_instance(&pool.name, &record)
            .await
            .map_err(|e| ProviderError(format!("cannot record the pod: {e}")))
    }

    async fn destroy(&self, pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let current = Self::settings(pool)?.namespace.clone();
        let recorded = self
            .store
            .pool_instances(&pool.name)
            .await
            .map_err(|e| ProviderError(format!("cannot read the pool's pods: {e}")))?;
        let namespace = recorded
            .iter()
            .find(|r| r.name == name)
            .map_or(current.as_str(), |r| recorded_place(r, &current).0)
            .to_owned();
        let api: Api<Pod> = Api::namespaced(self.client().await?, &namespace);
        match within(api.delete(name, &DeleteParams::default())).await? {
            Ok(_) => {
                tracing::info!(pool = %pool.name, worker = %name, %namespace, "deleted its pod")
            }
            // Gone already: what destroying wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(ProviderError(describe(&e, &namespace))),
        }
        self.store
            .forget_instance(&pool.name, name)
            .await
            .map_err(|e| ProviderError(format!("cannot forget the pod: {e}")))
    }

    async fn list(&self, pool: &Pool) -> Result<Vec<Instance>, ProviderError> {
        let namespace = Self::settings(pool)?.namespace.clone();
        let (pods, error) = self.watch(pool).await?;
        // A watcher failing (or that never listed) says why, at once: its cache is not to be trusted then.
        let failing = async {
            loop {
                if let Some(why) = error.lock().expect("lock poisoned").clone() {
                    return why;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::select! {
            biased;
            why = failing => return Err(ProviderError(why)),
            ready = pods.wait_until_ready() => {
                ready.map_err(|_| ProviderError("the pool's pod watcher stopped".into()))?;
            }
            _ = tokio::time::sleep(FIRST_LIST) => {
                return Err(ProviderError("the first list of the pool's pods has not come yet".into()));
            }
        }
        // The pool's pods as the watch shows them: being deleted or not.
        let mut seen: HashMap<String, bool> = HashMap::new();
        for pod in pods.state() {
            if let Some(name) = pod.metadata.name.clone() {
                seen.insert(name, pod.metadata.deletion_timestamp.is_some());
            }
        }
        let recorded = self
            .store
            .pool_instances(&pool.name)
            .await
            .map_err(|e| ProviderError(format!("cannot read the pool's pods: {e}")))?;
        let mut instances = Vec::new();
        for record in &recorded {
            let (age, started) = Instance::age(record.created_ms);
            let (ns, name) = recorded_place(record, &namespace);
            let exists = match seen.get(name) {
                _ if ns != namespace => true, // not watched: it stays until destroyed
                Some(_) => true,
                // Made a moment ago: the watch has not shown it yet.
                None => age < WATCH_LAG,
            };
            if !exists {
                tracing::info!(pool = %pool.name, worker = %record.name, "its pod is gone: forgotten");
                let _ = self.store.forget_instance(&pool.name, &record.name).await;
                continue;
            }
            instances.push(Instance {
                name: record.name.clone(),
                started,
                leaving: ns == namespace && seen.get(name) == Some(&true),
            });
        }
        // A pod of the pool nobody recorded (its server died between making and recording it) is the pool's all
        // the same: it boots, registers or is destroyed like the others.
        for pod in pods.state() {
            let Some(name) = pod.metadata.name.clone() else {
                continue;
            };
            if recorded.iter().any(|r| r.name == name) {
                continue;
            }
            let created_ms = pod.metadata.creation_timestamp.as_ref().map_or_else(
                || chrono::Utc::now().timestamp_millis(),
                |t| t.0.as_millisecond(),
            );
            instances.push(Instance {
                leaving: pod.metadata.deletion_timestamp.is_some(),
                started: Instance::age(created_ms).1,
                name,
            });
        }
        Ok(instances)
    }

    /// The pool's name: pods are named `POOL-N` whichever server made them.
    fn name_prefix(&self, pool: &str) -> String {
        pool.to_owned()
    }

    fn leaves_on_its_own(&self) -> bool {
        // A pod whose worker exited stays (Succeeded) until deleted.
        false
    }

    fn call_limit(&self, _pool: &Pool) -> Duration {
        CALL_LIMIT
    }
}
