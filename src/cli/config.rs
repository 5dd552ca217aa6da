//! Layered configuration: defaults, then the TOML file (`--config`), then `GANTRY_*` variables and flags
//! (clap merges those two, flags winning).

use anyhow::{Context, Result};
use clap::Args;
use gantry_server::config::ServerConfig;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The annotated example `gantry default-config` prints.
pub const EXAMPLE: &str = r#"# Gantry configuration (TOML). Every key is optional; flags and GANTRY_* variables override it.

# Address the HTTP server listens on (GANTRY_LISTEN).
listen = "127.0.0.1:8080"
# Address forges and browsers use to reach the server, for webhook URLs and links (GANTRY_PUBLIC_URL).
# public_url = "https://ci.example.com"
# Where the SQLite database, mirrors and worker state live (GANTRY_DATA_DIR).
data_dir = "./gantry-data"
# sqlite://PATH or postgres://USER@HOST/DB; default: the SQLite file in data_dir (GANTRY_DATABASE_URL).
# database_url = "postgres://gantry@127.0.0.1/gantry"
# Every read (API, log streams, artifacts, dashboard) needs a token with the `read` scope or more
# (`gantry token create`); /healthz and the webhook routes stay open (GANTRY_PRIVATE, --private). A single
# repository is made private with `gantry repo set REPO --private true`.
private = false
# A job attempt's log is cut, with a marker, at this many bytes.
log_cap_bytes = 67108864
# Webhook bodies larger than this are refused with 413.
max_webhook_bytes = 26214400
# Seconds a lease lasts without a heartbeat; then the job goes back in the queue as a new attempt.
lease_secs = 10
# Times a job whose worker was lost goes back in the queue before it ends in `error` (apart from `retry:`).
infra_retries = 2
# Bytes of artifacts one attempt of a job may upload (all its files together); more is refused.
artifact_limit_bytes = 1073741824
# Webhook deliveries kept per repository (the newest), with their outcome and redacted body.
deliveries_kept = 100
# The key sealing repository secrets and tokens at rest; made on first start. Servers sharing one database must
# share this file (mode 0600). Default: secret.key in data_dir.
# secret_key_file = "/etc/gantry/secret.key"
# A pipeline with more jobs than this (each instance of a parallel or matrix job counting) ends in `error`.
max_jobs_per_pipeline = 1000
# ... and so does one whose jobs' env and steps, counted once per job and instance, add up to more bytes.
max_expanded_bytes = 16777216
# Live log streams (SSE) open at once, all clients together; one more is answered 503 (try again later).
max_log_streams = 256
# A git fetch (the server's mirror, a worker's checkout) that takes longer fails, saying so: a remote that hangs
# holds its repository no longer.
git_fetch_timeout = "5m"
# The context (GitLab: name) of the commit statuses posted to forges; `gantry repo set --status-context` changes
# it for one repository (GANTRY_STATUS_CONTEXT).
status_context = "gantry"

[worker]
# Labels jobs can select with `runs-on`.
labels = ["linux"]
# Jobs per worker at once.
capacity = 1
# Host paths hidden from jobs, besides the built-in masks and Gantry's own data dirs.
mask = []
# Host dirs under which pipelines may use `image: dir:/path` and `image: oci:/layout[:tag]`; empty: refused.
image_dirs = []
# Run each job in a user namespace (root in a job is an unprivileged uid on the host) where the host allows
# it: user namespaces and id-mapped mounts on the data dir's file system and on `/`.
user_namespace = true
# Host paths jobs on `image: host` see read-only, at the same place, although homes (/root, /home) are empty
# there: toolchains kept in a home, such as rustup's. Each one's bin/ goes first on the steps' PATH.
# host_paths = ["/root/.rustup", "/root/.cargo"]
# The most a job may ask for; a job asking more ends in error (infra) saying which, and is not retried.
# Defaults: this machine's memory and cores, 32768 processes, six hours.
# max_memory = "8G"
# max_pids = 32768
# max_cpus = 4
# max_timeout = "6h"
# Bytes one image layer may unpack to, counted while unpacking (a gzip bomb stops there).
max_layer_bytes = "16G"

# Registries (images like `registry.example.com/team/app:1.0`). Loopback registries (127.0.0.1, localhost)
# get plain HTTP, every other TLS unless `plain_http = true`. A registry without an entry is pulled from
# anonymously.
# [[worker.registries]]
# host = "registry.example.com"        # as image references spell it, with :PORT if any
# username = "ci"
# password_file = "/etc/gantry/registry-password"   # or password = "...", or token = "..." (bearer)
# plain_http = false
"#;

/// The TOML file's keys.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<String>,
    public_url: Option<String>,
    /// Where Gantry keeps its state (`gantry run`: its images and containers).
    pub data_dir: Option<PathBuf>,
    database_url: Option<String>,
    admin_token: Option<String>,
    private: Option<bool>,
    log_cap_bytes: Option<u64>,
    max_webhook_bytes: Option<usize>,
    lease_secs: Option<u64>,
    infra_retries: Option<u32>,
    artifact_limit_bytes: Option<u64>,
    secret_key_file: Option<PathBuf>,
    deliveries_kept: Option<u32>,
    status_context: Option<String>,
    max_jobs_per_pipeline: Option<usize>,
    max_expanded_bytes: Option<usize>,
    max_log_streams: Option<usize>,
    git_fetch_timeout: Option<Size>,
    /// The `[[pool]]` tables.
    #[serde(default)]
    pub pool: Vec<gantry_model::wire::PoolSpec>,
    /// The `[worker]` table.
    #[serde(default)]
    pub worker: WorkerFileConfig,
}

/// The `[worker]` table.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkerFileConfig {
    /// Labels.
    pub labels: Option<Vec<String>>,
    /// Jobs at once.
    pub capacity: Option<u32>,
    /// Extra masks.
    #[serde(default)]
    pub mask: Vec<PathBuf>,
    /// Where local (`dir:`, `oci:`) images may be.
    #[serde(default)]
    pub image_dirs: Vec<PathBuf>,
    /// Per-registry credentials and transport.
    #[serde(default)]
    pub registries: Vec<gantry_worker::image::RegistryConfig>,
    /// User namespaces where the host allows them (default on).
    pub user_namespace: Option<bool>,
    /// Host paths shown read-only to jobs on the host image.
    #[serde(default)]
    pub host_paths: Vec<PathBuf>,
    /// Where egress jobs' addresses come from.
    egress_range: Option<ipnet::Ipv4Net>,
    /// Destinations refused to egress jobs.
    #[serde(default)]
    egress_deny: Vec<ipnet::Ipv4Net>,
    /// The name servers egress jobs ask; empty: the host's.
    #[serde(default)]
    dns: Vec<std::net::IpAddr>,
    /// The most memory a job may ask for.
    max_memory: Option<Size>,
    /// The most processes a job may ask for.
    max_pids: Option<u64>,
    /// The most cores a job may ask for.
    max_cpus: Option<f64>,
    /// The longest timeout a job may ask for.
    max_timeout: Option<Size>,
    /// Bytes one image layer may unpack to.
    max_layer_bytes: Option<Size>,
}

/// A size or a duration as the file gives it: a number, or text with a unit (`"8G"`, `"6h"`).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
enum Size {
    Number(u64),
    Text(String),
}

impl Size {
    fn read(&self, key: &str, parse: fn(&str) -> Result<u64, String>) -> Result<u64> {
        match self {
            Size::Number(n) => Ok(*n),
            Size::Text(text) => parse(text).map_err(|e| anyhow::anyhow!("{key}: {e}")),
        }
    }
}

impl WorkerFileConfig {
    /// How egress jobs reach the world (`egress_range`, `egress_deny`, `dns`).
    pub fn egress(&self) -> gantry_worker::runtime::EgressOptions {
        let defaults = gantry_worker::runtime::EgressOptions::default();
        gantry_worker::runtime::EgressOptions {
            range: self.egress_range.unwrap_or(defaults.range),
            deny: self.egress_deny.clone(),
            dns: self.dns.clone(),
        }
    }

    /// The most a job may ask of this worker (defaults: what the machine has, 32,768 processes, six hours),
    /// and the bytes one image layer may unpack to.
    pub fn job_limits(&self) -> Result<(gantry_worker::exec::JobLimits, u64)> {
        use gantry_model::units::{parse_duration_secs, parse_size_bytes};
        let mut limits = gantry_worker::exec::JobLimits::default();
        if let Some(memory) = &self.max_memory {
            limits.max_memory = memory.read("[worker] max_memory", parse_size_bytes)?;
        }
        if let Some(pids) = self.max_pids {
            limits.max_pids = pids;
        }
        if let Some(cpus) = self.max_cpus {
            anyhow::ensure!(cpus > 0.0, "[worker] max_cpus must be positive");
            limits.max_cpus = cpus;
        }
        if let Some(timeout) = &self.max_timeout {
            limits.max_timeout =
                Duration::from_secs(timeout.read("[worker] max_timeout", parse_duration_secs)?);
        }
        let layer = match &self.max_layer_bytes {
            Some(bytes) => bytes.read("[worker] max_layer_bytes", parse_size_bytes)?,
            None => gantry_worker::image::DEFAULT_MAX_LAYER_BYTES,
        };
        Ok((limits, layer))
    }
}

/// The `[[pool]]` tables checked, each error naming its pool; two pools of one name are refused.
pub fn check_pools(
    specs: &[gantry_model::wire::PoolSpec],
) -> Result<Vec<gantry_model::wire::Pool>> {
    let mut pools: Vec<gantry_model::wire::Pool> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let pool = spec
            .check()
            .map_err(|e| anyhow::anyhow!("[[pool]] number {} ({:?}): {e}", i + 1, spec.name))?;
        anyhow::ensure!(
            !pools.iter().any(|p| p.name == pool.name),
            "[[pool]] {:?} is written twice",
            pool.name
        );
        pools.push(pool);
    }
    Ok(pools)
}

impl FileConfig {
    /// How long a git fetch may take (`git_fetch_timeout`, seconds or text like `"5m"`).
    pub fn git_fetch_timeout(&self) -> Result<Duration> {
        match &self.git_fetch_timeout {
            Some(timeout) => {
                let secs = timeout.read(
                    "git_fetch_timeout",
                    gantry_model::units::parse_duration_secs,
                )?;
                anyhow::ensure!(secs > 0, "git_fetch_timeout must be at least a second");
                Ok(Duration::from_secs(secs))
            }
            None => Ok(gantry_git::DEFAULT_FETCH_TIMEOUT),
        }
    }

    /// The configuration file at `path` and every file it names that holds a secret: jobs must see none of
    /// them (a worker masks them), wherever they are.
    pub fn secret_files(&self, path: Option<&PathBuf>) -> Vec<PathBuf> {
        let registries = self.worker.registries.iter();
        path.cloned()
            .into_iter()
            .chain(self.secret_key_file.clone())
            .chain(registries.filter_map(|r| r.password_file.clone()))
            .map(|file| file.canonicalize().unwrap_or(file))
            .collect()
    }
}

/// Reads the TOML file, if one was given.
pub fn read_file(path: Option<&PathBuf>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// The server's options (docs/configuration.md), also read from the environment.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "GANTRY_LISTEN")]
    pub listen: Option<String>,
    /// Address forges and browsers use to reach the server [default: http://LISTEN].
    #[arg(long, env = "GANTRY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Where the database file, mirrors and worker state live [default: ./gantry-data].
    #[arg(long, env = "GANTRY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://PATH or postgres://… [default: the SQLite file in the data dir].
    #[arg(long, env = "GANTRY_DATABASE_URL")]
    pub database: Option<String>,
    /// Use this admin token instead of generating one on first start.
    #[arg(long, env = "GANTRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Every read (API, streams, artifacts, dashboard) needs a token; health checks and webhooks stay open.
    #[arg(long, env = "GANTRY_PRIVATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub private: bool,
    /// A TOML configuration file (see `gantry default-config`).
    #[arg(long, env = "GANTRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Seconds a lease lasts without a heartbeat (tests shorten it).
    #[arg(long, env = "GANTRY_LEASE_SECS", hide = true)]
    pub lease_secs: Option<u64>,
    /// The context (GitLab: name) of the commit statuses posted to forges [default: gantry].
    #[arg(long, env = "GANTRY_STATUS_CONTEXT")]
    pub status_context: Option<String>,
    /// Milliseconds a client has to send a request's headers [default: 10 s] (tests shorten it).
    #[arg(long, env = "GANTRY_HEADER_TIMEOUT_MS", hide = true)]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a request body may send nothing before it is cut off [default: 30 s] (tests shorten it).
    #[arg(long, env = "GANTRY_BODY_TIMEOUT_MS", hide = true)]
    pub body_timeout_ms: Option<u64>,
    /// Seconds after which a worker that stopped calling is removed [default: two long-polls and 15 s] (tests
    /// shorten it).
    #[arg(long, env = "GANTRY_WORKER_GRACE_SECS", hide = true)]
    pub worker_grace_secs: Option<u64>,
    /// Seconds a worker's lease request may wait for a job [default: 30] (tests shorten it).
    #[arg(long, env = "GANTRY_LONG_POLL_SECS", hide = true)]
    pub long_poll_secs: Option<u64>,
    /// Milliseconds before the first retry of a commit status a forge did not take (tests shorten it).
    #[arg(long, env = "GANTRY_STATUS_RETRY_MS", hide = true)]
    pub status_retry_ms: Option<u64>,
}

/// The server's settings after layering, and the address to listen on.
pub struct Resolved {
    /// For the server library.
    pub server: ServerConfig,
    /// Where to listen.
    pub listen: String,
    /// Whether the public URL was given (otherwise it follows the bound address).
    pub public_url_given: bool,
}

impl ServerArgs {
    /// Layers defaults, the file, the environment and the flags.
    pub fn resolve(&self) -> Result<Resolved> {
        let file = read_file(self.config.as_ref())?;
        let git_fetch_timeout = file.git_fetch_timeout()?;
        let pools = check_pools(&file.pool)?;
        let listen = self
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./gantry-data"));
        if gantry_worker::private_dir(&data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?
        {
            tracing::warn!(dir = %data_dir.display(), "made the data dir private (0700): other users could enter it");
        }
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let public_url = self.public_url.clone().or(file.public_url);
        let public_url_given = public_url.is_some();
        let mut server = ServerConfig::new(
            data_dir,
            public_url.unwrap_or_else(|| format!("http://{listen}")),
        );
        if let Some(url) = self.database.clone().or(file.database_url) {
            server.database_url = url;
        }
        server.admin_token = self.admin_token.clone().or(file.admin_token);
        server.git_fetch_timeout = git_fetch_timeout;
        server.private = self.private || file.private.unwrap_or(false);
        if let Some(cap) = file.log_cap_bytes {
            server.log_cap_bytes = cap;
        }
        if let Some(max) = file.max_webhook_bytes {
            server.max_webhook_bytes = max;
        }
        if let Some(retries) = file.infra_retries {
            server.infra_retries = retries;
        }
        if let Some(limit) = file.artifact_limit_bytes {
            server.artifact_limit_bytes = limit;
        }
        server.secret_key_file = file.secret_key_file;
        if let Some(jobs) = file.max_jobs_per_pipeline {
            server.pipeline_limits.max_jobs = jobs.max(1);
        }
        if let Some(bytes) = file.max_expanded_bytes {
            server.pipeline_limits.max_expanded_bytes = bytes;
        }
        if let Some(streams) = file.max_log_streams {
            server.max_log_streams = streams.max(1);
        }
        if let Some(ms) = self.header_timeout_ms {
            server.header_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = self.body_timeout_ms {
            server.body_timeout = Duration::from_millis(ms.max(1));
        }
        if let Some(kept) = file.deliveries_kept {
            server.deliveries_kept = kept.max(1);
        }
        if let Some(context) = self.status_context.clone().or(file.status_context) {
            server.status_context = context;
        }
        if let Some(ms) = self.status_retry_ms {
            server.status_retry = Duration::from_millis(ms.max(1));
        }
        if let Some(secs) = self.lease_secs.or(file.lease_secs) {
            server.lease = Duration::from_secs(secs.max(1));
            server.heartbeat = Duration::from_secs((secs / 3).max(1));
        }
        if let Some(secs) = self.long_poll_secs {
            server.long_poll = Duration::from_secs(secs.max(1));
        }
        server.worker_grace = match self.worker_grace_secs {
            Some(secs) => Duration::from_secs(secs.max(1)),
            None => server.long_poll * 2 + Duration::from_secs(15),
        };
        server.pools = pools;
        Ok(Resolved {
            server,
            listen,
            public_url_given,
        })
    }
}
