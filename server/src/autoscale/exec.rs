//! The `exec` provider: the operator's own commands make, remove and list instances (a cloud's CLI, `ssh` to a
//! host, a VM manager). Each runs with `sh -c` on the server's host within `[pool.exec] timeout`, its whole
//! process group stopped after it; `create` prints the new instance's id, `destroy` gets the id appended as its
//! last argument, `list` prints the ids that exist. The instances are kept in the database with their worker
//! names, so another server taking the pool over knows them; each gets a registration token of its own, valid
//! for its worker name only and removed with it.

use super::provider::{Instance, Provider, ProviderError};
use crate::auth::{generate_token, hash_token};
use crate::store::{PoolInstance, Store};
use async_trait::async_trait;
use gantry_model::wire::{ExecCommands, Pool};
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// `list` runs at most this often per pool; between, the instances recorded are the truth (every create and
/// destroy goes through here), so a cloud's API is not called every second.
const LIST_EVERY: Duration = Duration::from_secs(5);
/// An instance made this recently and not listed yet is not taken for gone.
const LIST_LAG: Duration = Duration::from_secs(60);
/// What is kept of a command's output, each stream.
const OUTPUT_KEPT: usize = 64 * 1024;
/// How much of a failing command's stderr the pool's error shows.
const ERROR_SHOWN: usize = 2000;
/// How long a command's output is still read once it exited: a background process it started may hold the
/// pipe open for ever.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// The `exec` provider.
pub struct ExecProvider {
    store: Arc<dyn Store>,
    /// The server's URL as the instances reach it (`GANTRY_SERVER`).
    server_url: String,
    /// When each pool's `list` last ran.
    listed: Mutex<HashMap<String, Instant>>,
    /// Ids `list` printed that no instance of the pool has, already warned about.
    strangers: Mutex<HashSet<(String, String)>>,
}

/// What a finished command left.
struct Ran {
    stdout: String,
}

impl ExecProvider {
    /// A provider whose instances reach the server at `server_url`.
    pub fn new(store: Arc<dyn Store>, server_url: String) -> Self {
        Self {
            store,
            server_url,
            listed: Default::default(),
            strangers: Default::default(),
        }
    }

    fn commands(pool: &Pool) -> Result<&ExecCommands, ProviderError> {
        pool.exec
            .as_ref()
            .ok_or_else(|| ProviderError("the pool has no [pool.exec] commands".into()))
    }

    /// Runs `what` (`create`, `destroy`, `list`) of `pool` with `args` appended and `env` added.
    async fn run(
        &self,
        pool: &Pool,
        what: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Ran, ProviderError> {
        let commands = Self::commands(pool)?;
        let line = match what {
            "create" => &commands.create,
            "destroy" => &commands.destroy,
            _ => &commands.list,
        };
        let mut command = Command::new("sh");
        // The arguments go through "$@": an id is never parsed by the shell.
        command
            .arg("-c")
            .arg(format!("{line} \"$@\""))
            .arg("sh")
            .args(args)
            .env("GANTRY_SERVER", &self.server_url)
            .env("GANTRY_POOL", &pool.name)
            .env("GANTRY_POOL_LABELS", pool.labels.join(","))
            .env("GANTRY_WORKER_CAPACITY", pool.slots.to_string())
            // The server's own secrets stay out of the operator's scripts.
            .env_remove("GANTRY_ADMIN_TOKEN")
            .env_remove("GANTRY_DATABASE_URL")
            .env_remove("GANTRY_TOKEN")
            .env_remove("GANTRY_POOL_TOKEN")
            .env_remove("GANTRY_WORKER_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own, stopped whole at the timeout.
            .process_group(0)
            .kill_on_drop(true);
        // What `gantry worker` reads, so that `create` can start one with no flags; unset when the pool has no
        // labels (an empty list would be one empty label).
        if pool.labels.is_empty() {
            command.env_remove("GANTRY_WORKER_LABELS");
        } else {
            command.env("GANTRY_WORKER_LABELS", pool.labels.join(","));
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .map_err(|e| ProviderError(format!("cannot run `{what}` with sh: {e}")))?;
        let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
        let stdout = Output::read(child.stdout.take());
        let stderr = Output::read(child.stderr.take());
        let limit = Duration::from_millis(commands.timeout_ms as u64);
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.map_err(|e| ProviderError(format!("`{what}`: {e}")))?,
            Err(_) => {
                // A descendant in a session of its own may hold the pipes for ever: stop reading them.
                stdout.0.abort();
                stderr.0.abort();
                if let Some(group) = group {
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                }
                let _ = child.wait().await;
                return Err(ProviderError(format!(
                    "`{what}` did not finish within {} and was stopped",
                    gantry_model::wire::duration_text(commands.timeout_ms)
                )));
            }
        };
        let stdout = stdout.collect().await;
        let stderr = stderr.collect().await;
        if !status.success() {
            let stderr = stderr.trim();
            let tail = match stderr.char_indices().rev().nth(ERROR_SHOWN) {
                Some((at, _)) => format!("…{}", &stderr[at..]),
                None => stderr.to_owned(),
            };
            return Err(ProviderError(format!(
                "`{what}` failed ({status}){}",
                if tail.is_empty() {
                    " and wrote nothing on stderr".to_owned()
                } else {
                    format!(": {tail}")
                }
            )));
        }
        Ok(Ran { stdout })
    }

    /// The instances recorded for `pool`.
    async fn recorded(&self, pool: &str) -> Result<Vec<PoolInstance>, ProviderError> {
        self.store
            .pool_instances(pool)
            .await
            .map_err(|e| ProviderError(format!("cannot read the pool's instances: {e}")))
    }

    /// Forgets the recorded instances `list` no longer prints; warns once of ids it prints that Gantry did not
    /// make (another farm's, or a `create` that timed out after making one: yours to remove).
    async fn reconcile(
        &self,
        pool: &Pool,
        recorded: &mut Vec<PoolInstance>,
    ) -> Result<(), ProviderError> {
        let ran = self.run(pool, "list", &[], &[]).await?;
        let listed: HashSet<&str> = ran
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut gone = Vec::new();
        let now_ms = chrono::Utc::now().timestamp_millis();
        recorded.retain(|i| {
            // A cloud's list may not show what it made a moment ago.
            let young = now_ms - i.created_ms < LIST_LAG.as_millis() as i64;
            let exists = listed.contains(i.instance.as_str()) || young;
            if !exists {
                gone.push(i.name.clone());
            }
            exists
        });
        for name in gone {
            tracing::info!(pool = %pool.name, worker = %name, "its instance is no longer listed: forgotten");
            self.store
                .forget_instance(&pool.name, &name)
                .await
                .map_err(|e| ProviderError(format!("cannot forget an instance: {e}")))?;
        }
        let known: HashSet<&str> = recorded.iter().map(|i| i.instance.as_str()).collect();
        let mut strangers = self.strangers.lock().expect("lock poisoned");
        for id in listed.iter().filter(|id| !known.contains(*id)) {
            if strangers.insert((pool.name.clone(), id.to_string())) {
                tracing::warn!(
                    pool = %pool.name, instance = %id,
                    "`list` prints an instance this farm did not make (left alone)"
                );
            }
        }
        Ok(())
    }
}

/// Reads up to `OUTPUT_KEPT` bytes of a stream into `kept`, then drains the rest.
async fn read_some(stream: Option<impl AsyncRead + Unpin>, kept: Arc<Mutex<Vec<u8>>>) {
    let Some(mut stream) = stream else {
        return;
    };
    let mut chunk = [0u8; 8192];
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        let mut kept = kept.lock().expect("lock poisoned");
        let room = OUTPUT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
}

/// A stream's reader, and what it read so far.
struct Output(tokio::task::JoinHandle<()>, Arc<Mutex<Vec<u8>>>);

impl Output {
    fn read(stream: Option<impl AsyncRead + Unpin + Send + 'static>) -> Output {
        let kept = Arc::new(Mutex::new(Vec::new()));
        Output(tokio::spawn(read_some(stream, kept.clone())), kept)
    }

    /// What was read by the time the command exited and a moment after: a background process it started may
    /// hold the pipe open for ever, so the end is not waited for.
    async fn collect(self) -> String {
        let Output(reader, kept) = self;
        let abort = reader.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, reader).await.is_err() {
            abort.abort();
        }
        let kept = kept.lock().expect("lock poisoned");
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// Whether `id` can be an instance id: one word of printable text, not an option (it is given to `destroy`).
fn valid_instance_id(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && !id.starts_with('-')
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

#[async_trait]
impl Provider for ExecProvider {
    async fn create(&self, pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let token = generate_token("pool");
        self.store
            .add_instance_token(&pool.name, name, &hash_token(&token))
            .await
            .map_err(|e| ProviderError(format!("cannot store the instance's token: {e}")))?;
        let ran = self
            .run(
                pool,
                "create",
                &[],
                &[("GANTRY_POOL_TOKEN", &token), ("GANTRY_WORKER_NAME", name)],
            )
            .await;
        let id = ran.and_then(|ran| {
            let id = ran.stdout.lines().map(str::trim).find(|l| !l.is_empty());
            match id {
                Some(id) if valid_instance_id(id) => Ok(id.to_owned()),
                Some(line) => Err(ProviderError(format!(
                    "`create` printed {:?} where its instance id should be (the first line of its output: one \
                     word of at most 256 characters, not starting with '-'); if it made an instance, remove it \
                     yourself",
                    line.chars().take(100).collect::<String>()
                ))),
                None => Err(ProviderError(
                    "`create` exited 0 but printed no instance id on its first line (if it starts a process in \
                     the background, send that process's output elsewhere)"
                        .into(),
                )),
            }
        });
        // Its boot time starts now: a slow create does not eat into it.
        let created_ms = chrono::Utc::now().timestamp_millis();
        let stored = match id {
            Ok(instance) => {
                tracing::info!(pool = %pool.name, worker = %name, %instance, "created an instance");
                let record = PoolInstance {
                    name: name.to_owned(),
                    instance,
                    created_ms,
                };
                self.store.record_instance(&pool.name, &record).await
            }
            Err(e) => {
                // Its token goes: nothing may register under the name until a create succeeds.
                let _ = self.store.forget_instance(&pool.name, name).await;
                return Err(e);
            }
        };
        if let Err(e) = stored {
            let _ = self.store.forget_instance(&pool.name, name).await;
            return Err(ProviderError(format!(
                "cannot record the instance it made (remove it yourself): {e}"
            )));
        }
        Ok(())
    }

    async fn destroy(&self, pool: &Pool, name: &str) -> Result<(), ProviderError> {
        let recorded = self.recorded(&pool.name).await?;
        let Some(instance) = recorded.iter().find(|i| i.name == name) else {
            return Ok(());
        };
        self.run(
            pool,
            "destroy",
            &[&instance.instance],
            &[("GANTRY_WORKER_NAME", name)],
        )
        .await?;
        tracing::info!(pool = %pool.name, worker = %name, instance = %instance.instance, "destroyed an instance");
        self.store
            .forget_instance(&pool.name, name)
            .await
            .map_err(|e| ProviderError(format!("cannot forget the instance: {e}")))
    }

    async fn list(&self, pool: &Pool) -> Result<Vec<Instance>, ProviderError> {
        let mut recorded = self.recorded(&pool.name).await?;
        let due = self
            .listed
            .lock()
            .expect("lock poisoned")
            .get(&pool.name)
            .is_none_or(|at| at.elapsed() >= LIST_EVERY);
        if due {
            self.reconcile(pool, &mut recorded).await?;
            self.listed
                .lock()
                .expect("lock poisoned")
                .insert(pool.name.clone(), Instant::now());
        }
        Ok(recorded
            .into_iter()
            .map(|i| Instance {
                started: Instance::age(i.created_ms).1,
                name: i.name,
                leaving: false,
            })
            .collect())
    }

    /// The pool's name: its instances are the farm's, whichever server made them, and another server taking
    /// the pool over must know them as its own.
    fn name_prefix(&self, pool: &str) -> String {
        pool.chars().take(80).collect()
    }

    fn leaves_on_its_own(&self) -> bool {
        false
    }

    fn call_limit(&self, pool: &Pool) -> Duration {
        let limit_ms = pool.exec.as_ref().map_or(0, |e| e.timeout_ms);
        // Its run, and a moment to read what it printed.
        Duration::from_millis(limit_ms as u64) + OUTPUT_GRACE * 2
    }
}
