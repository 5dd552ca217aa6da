//! The `local` provider: `gantry worker` processes that are the server's own children (an operator sees them
//! under it), each with its own name and data dir under `DATA_DIR/workers/`, registering with a token only this
//! server holds. A child's stdin is a pipe only the server holds: a line `drain` asks it to finish its jobs and
//! leave, and the pipe's end (the server gone, even by SIGKILL) stops it at once, containers and all.

use super::provider::{Instance, Provider, ProviderError};
use crate::auth::{generate_token, hash_token};
use crate::store::Store;
use async_trait::async_trait;
use gantry_model::wire::Pool;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// How the server starts its local workers.
#[derive(Clone, Debug)]
pub struct LocalLauncher {
    /// The `gantry` binary.
    pub exe: PathBuf,
    /// The server's URL as its own workers reach it.
    pub server_url: String,
    /// Where each worker's data dir goes (`DIR/NAME`).
    pub workers_dir: PathBuf,
    /// The configuration file, for the workers' `[worker]` table.
    pub config: Option<PathBuf>,
    /// Host paths the workers hide from jobs (the server's data dir).
    pub masks: Vec<PathBuf>,
}

struct LocalChild {
    pool: String,
    child: Child,
    lifeline: Option<ChildStdin>,
    started: Instant,
}

/// The `local` provider.
pub struct LocalProvider {
    launcher: LocalLauncher,
    store: Arc<dyn Store>,
    /// The registration token of each pool's workers, made at this server's first start of one.
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
    children: Mutex<HashMap<String, LocalChild>>,
    /// Set by `drain_all`: the server is stopping.
    stopping: std::sync::atomic::AtomicBool,
    /// This host's machine id (else its name), in the workers' names.
    host: String,
}

impl LocalProvider {
    /// A provider starting workers as `launcher` says.
    pub fn new(launcher: LocalLauncher, store: Arc<dyn Store>) -> Self {
        Self {
            launcher,
            store,
            tokens: Default::default(),
            children: Default::default(),
            stopping: Default::default(),
            host: std::fs::read_to_string("/etc/machine-id")
                .ok()
                .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }

    async fn token(&self, pool: &str) -> Result<String, ProviderError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(pool) {
            return Ok(token.clone());
        }
        let token = generate_token("pool");
        self.store
            .add_provider_token(&hash_token(&token), pool)
            .await
            .map_err(|e| ProviderError(format!("cannot store the workers' token: {e}")))?;
        tokens.insert(pool.to_owned(), token.clone());
        Ok(token)
    }

    /// Asks every worker to finish its jobs and leave (the server is stopping).
    pub async fn drain_all(&self) {
        // First, so the autoscaler does not start others in their place.
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let lifelines: Vec<_> = {
            let mut children = self.children.lock().expect("lock poisoned");
            children
                .iter_mut()
                .filter_map(|(name, c)| Some((name.clone(), c.lifeline.take()?)))
                .collect()
        };
        for (name, mut lifeline) in lifelines {
            let _ = lifeline.write_all(b"drain\n").await;
            // Kept open: its end would stop the worker at once.
            if let Some(c) = self.children.lock().expect("lock poisoned").get_mut(&name) {
                c.lifeline = Some(lifeline);
            }
        }
    }

    /// Stops every worker at once, its jobs with it (a second Ctrl-C): their lifelines end.
    pub fn abort_all(&self) {
        for c in self.children.lock().expect("lock poisoned").values_mut() {
            drop(c.lifeline.take());
        }
    }

    /// Waits for every worker to exit (`abort_all` meanwhile makes them exit sooner).
    pub async fn wait_all(&self) {
        loop {
            {
                let mut children = self.children.lock().expect("lock poisoned");
                children.retain(|name, c| match c.child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::info!(worker = %name, %status, "local worker exited");
                        false
                    }
                    Ok(None) => true,
                    Err(error) => {
                        tracing::warn!(worker = %name, %error, "cannot wait for a local worker");
                        false
                    }
                });
                if children.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Removes the server's tokens (it is stopping; its workers are gone).
    pub async fn forget_tokens(&self) {
        for token in self.tokens.lock().await.values() {
            if let Err(error) = self.store.remove_provider_token(&hash_token(token)).await {
                tracing::warn!(%error, "cannot remove a local workers' token");
            }
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    async fn create(&self, pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let token = self.token(&pool.name).await?;
        let l = &self.launcher;
        let mut command = Command::new(&l.exe);
        command
            .args(["worker", "--exit-with-stdin", "--server", &l.server_url])
            .args(["--name", name, "--capacity", &pool.slots.to_string()])
            .arg("--data-dir")
            .arg(l.workers_dir.join(name));
        if !pool.labels.is_empty() {
            command.args(["--labels", &pool.labels.join(",")]);
        }
        for mask in &l.masks {
            command.arg("--mask").arg(mask);
        }
        // The pool decides these, not what the server's environment happens to hold.
        for var in [
            "GANTRY_WORKER_NAME",
            "GANTRY_WORKER_LABELS",
            "GANTRY_WORKER_CAPACITY",
            "GANTRY_WORKER_DATA_DIR",
            "GANTRY_CONFIG",
        ] {
            command.env_remove(var);
        }
        if let Some(config) = &l.config {
            command.env("GANTRY_CONFIG", config);
        }
        let mut child = command
            .env("GANTRY_POOL_TOKEN", token)
            .stdin(Stdio::piped())
            // A process group of its own: a terminal's Ctrl-C reaches only the server, which drains it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProviderError(format!("cannot start {}: {e}", l.exe.display())))?;
        let lifeline = child.stdin.take();
        tracing::info!(pool = %pool.name, worker = %name, pid = child.id(), "started a local worker");
        self.children.lock().expect("lock poisoned").insert(
            name.to_owned(),
            LocalChild {
                pool: pool.name.clone(),
                child,
                lifeline,
                started: Instant::now(),
            },
        );
        Ok(())
    }

    async fn destroy(&self, _pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let child = self.children.lock().expect("lock poisoned").remove(name);
        if let Some(mut c) = child {
            // The lifeline's end stops it and its containers; the kill is for one that does not listen.
            drop(c.lifeline.take());
            let _ = c.child.start_kill();
            let _ = c.child.wait().await;
        }
        Ok(())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `POOL-HASH`, the hash of the host's machine id and the workers' dir: two farms never share a worker name,
    /// on one host or on two with the same paths, and a farm's workers keep their names (and caches) across its
    /// restarts.
    fn name_prefix(&self, pool: &str) -> String {
        let where_ = format!("{}:{}", self.host, self.launcher.workers_dir.display());
        let dir = hash_token(&where_);
        let pool: String = pool.chars().take(80).collect();
        format!("{pool}-{}", &dir[..6])
    }

    async fn list(&self, pool: &Pool) -> Result<Vec<Instance>, ProviderError> {
        let mut children = self.children.lock().expect("lock poisoned");
        children.retain(|name, c| match c.child.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(worker = %name, %status, "local worker exited");
                false
            }
            _ => true,
        });
        Ok(children
            .iter()
            .filter(|(_, c)| c.pool == pool.name)
            .map(|(name, c)| Instance {
                name: name.clone(),
                started: c.started,
                leaving: false,
            })
            .collect())
    }
}
