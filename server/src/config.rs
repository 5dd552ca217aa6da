//! The server's settings, after defaults, the TOML file, the environment and the flags were layered (the binary
//! does the layering; the library takes the result).

use std::path::PathBuf;
use std::time::Duration;

/// Everything the server needs to know to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where the SQLite file (by default), mirrors and other state live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// The address forges and browsers use to reach the server (webhook URLs, links).
    pub public_url: String,
    /// Use this admin token instead of generating one on first start.
    pub admin_token: Option<String>,
    /// Every read (API, streams, artifacts, dashboard) needs a token; health checks and webhooks stay open.
    pub private: bool,
    /// Webhook bodies above this size are refused with 413 (GitHub's own cap is 25 MB).
    pub max_webhook_bytes: usize,
    /// A job attempt's log is cut (with a marker) at this size.
    pub log_cap_bytes: u64,
    /// How long a lease lasts without a heartbeat.
    pub lease: Duration,
    /// How often workers should heartbeat.
    pub heartbeat: Duration,
    /// The longest a lease request waits for a job.
    pub long_poll: Duration,
    /// How often a job whose worker was lost goes back in the queue before it ends in `error` (apart from the
    /// job's own `retry:`).
    pub infra_retries: u32,
    /// Bytes of artifacts one attempt of a job may upload, all files together.
    pub artifact_limit_bytes: u64,
    /// Deliveries kept per repository (the newest), for users to see what each hook did.
    pub deliveries_kept: u32,
    /// The file holding the key that seals secrets at rest (`DATA_DIR/secret.key` when unset; servers sharing a
    /// database must share it).
    pub secret_key_file: Option<PathBuf>,
    /// The context (GitLab: name) of the commit statuses Gantry posts, unless a repository says otherwise.
    pub status_context: String,
    /// How long the first retry of a commit status the forge did not take waits; each next one waits twice as
    /// long, up to ten minutes (tests shorten it).
    pub status_retry: Duration,
    /// A client must send a request's headers within this long (hyper's timer), or the connection closes.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is cut off (uploads that keep sending are not).
    pub body_timeout: Duration,
    /// Live log streams (SSE) open at once, all clients together; one more is answered 503.
    pub max_log_streams: usize,
    /// How big one pipeline may get once expanded (`max_jobs_per_pipeline`, `max_expanded_bytes`).
    pub pipeline_limits: gantry_model::pipeline::Limits,
    /// A fetch into a mirror that takes longer fails (a remote that hangs holds its repository no longer).
    pub git_fetch_timeout: Duration,
    /// The configuration file's pools (`[[pool]]`), applied at every start.
    pub pools: Vec<gantry_model::wire::Pool>,
    /// A registered worker that runs nothing and has not called for this long is removed (no ghosts).
    pub worker_grace: Duration,
}

impl ServerConfig {
    /// Defaults for a data dir, with the SQLite file inside it.
    pub fn new(data_dir: PathBuf, public_url: String) -> Self {
        let database_url = format!("sqlite://{}", data_dir.join("gantry.db").display());
        Self {
            data_dir,
            database_url,
            public_url,
            admin_token: None,
            private: false,
            max_webhook_bytes: 25 * 1024 * 1024,
            log_cap_bytes: 64 * 1024 * 1024,
            lease: Duration::from_secs(10),
            heartbeat: Duration::from_secs(3),
            long_poll: Duration::from_secs(30),
            // Two long-polls missed, and some: an idle worker calls at least every `long_poll`.
            worker_grace: Duration::from_secs(75),
            pools: Vec::new(),
            infra_retries: 2,
            artifact_limit_bytes: 1 << 30,
            secret_key_file: None,
            deliveries_kept: 100,
            status_context: "gantry".into(),
            status_retry: Duration::from_secs(2),
            pipeline_limits: Default::default(),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_log_streams: 256,
            git_fetch_timeout: gantry_git::DEFAULT_FETCH_TIMEOUT,
        }
    }

    /// Where the sealing key lives.
    pub fn secret_key_file(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }
}
