//! Gantry's server: webhooks in, pipelines and jobs in the queue, leases to workers, logs and results in,
//! dashboard and JSON API out. The binary layers the configuration and calls [`Server::start`] then
//! [`Server::serve`]; tests do the same on port 0.

pub mod access;
pub mod artifacts;
pub mod auth;
pub mod autoscale;
pub mod config;
pub mod forge;
pub mod http;
pub mod intake;
pub mod logs;
pub mod metrics;
pub mod mirror;
pub mod queue;
pub mod read_model;
pub mod repos;
pub mod secrets;
pub mod status;
pub mod store;
pub mod web;

use config::ServerConfig;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir could not be made.
    #[error("cannot create the data dir {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The artifact store could not be opened.
    #[error(transparent)]
    Artifacts(#[from] artifacts::ArtifactError),
    /// The sealing key could not be read or made.
    #[error(transparent)]
    SealingKey(#[from] secrets::SealError),
    /// The commit-status sender could not be made.
    #[error(transparent)]
    Status(#[from] status::StatusError),
    /// A dashboard template does not compile.
    #[error("dashboard templates: {0}")]
    Templates(#[from] tera::Error),
}

/// Tokens made on the first start; shown once, never again.
#[derive(Clone, Debug)]
pub struct FirstStart {
    /// The admin token, unless one was configured.
    pub admin_token: Option<String>,
    /// The `default` pool's registration token.
    pub pool_token: String,
}

/// A server ready to serve.
pub struct Server {
    state: http::AppState,
    statuses: status::Notifier,
    /// The provider of `local` pools, once the binary said how to start workers.
    local: Option<Arc<autoscale::LocalProvider>>,
    /// Set on the first start against an empty database.
    pub first_start: Option<FirstStart>,
}

impl Server {
    /// Opens storage (migrating it), creates the first tokens if needed, and resumes unfinished intake.
    pub async fn start(config: ServerConfig) -> Result<Self, StartError> {
        // The database, the sealing key and the mirrors: root's alone (the binary also tightens an old one).
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&config.data_dir)
            .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
        let store = store::connect(&config.database_url).await?;
        let admin = config
            .admin_token
            .clone()
            .unwrap_or_else(|| auth::generate_token("admin"));
        let pool = auth::generate_token("pool");
        let first_start = store
            .bootstrap(&auth::hash_token(&admin), &auth::hash_token(&pool))
            .await?
            .then(|| FirstStart {
                admin_token: config.admin_token.is_none().then_some(admin),
                pool_token: pool,
            });
        if let Some(token) = &config.admin_token {
            store.set_admin_token(&auth::hash_token(token)).await?;
        }
        let sealing = secrets::SealingKey::load_or_create(&config.secret_key_file())?;
        let hub = logs::LogHub::default();
        let artifacts = artifacts::Artifacts::local(
            &config.data_dir.join("artifacts"),
            store.clone(),
            config.artifact_limit_bytes,
        )?;
        let vault = secrets::Vault::new(store.clone(), sealing.clone());
        let queue = queue::Queue::new(store.clone(), hub.clone(), &config, vault.clone());
        let mirrors =
            mirror::Mirrors::new(config.data_dir.join("mirrors"), config.git_fetch_timeout)
                .with_credentials(vault.clone());
        let intake = intake::Intake::new(
            store.clone(),
            mirrors,
            queue.clone(),
            config.deliveries_kept,
            config.pipeline_limits,
        );
        let extended = queue.grant_restart_grace().await?;
        if extended > 0 {
            tracing::info!(
                extended,
                "running jobs get a full lease to reach this server again"
            );
        }
        let resumed = intake.resume().await?;
        if resumed > 0 {
            tracing::info!(
                resumed,
                "resumed preparing pipelines accepted before a restart"
            );
        }
        store.apply_config_pools(&config.pools).await?;
        let statuses = status::Notifier::new(
            store.clone(),
            sealing.clone(),
            queue.status_wakeup(),
            &config,
        )?;
        let state = http::AppState {
            store,
            queue,
            intake,
            hub,
            artifacts,
            sealing,
            vault,
            templates: Arc::new(web::templates()?),
            log_streams: Arc::new(tokio::sync::Semaphore::new(config.max_log_streams)),
            metrics: Arc::new(metrics::Metrics::default()),
            config: Arc::new(config),
        };
        Ok(Self {
            state,
            statuses,
            local: None,
            first_start,
        })
    }

    /// Lets the autoscaler start `local` pools' workers as `launcher` says; the provider is returned so the
    /// caller can drain its workers when it stops.
    pub fn local_workers(
        &mut self,
        launcher: autoscale::LocalLauncher,
    ) -> Arc<autoscale::LocalProvider> {
        let provider = Arc::new(autoscale::LocalProvider::new(
            launcher,
            self.state.store.clone(),
        ));
        self.local = Some(provider.clone());
        provider
    }

    /// The database in use: `sqlite` or `postgres`.
    pub fn dialect(&self) -> &'static str {
        self.state.store.dialect()
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then drains open requests for up to 10 s (live log
    /// streams of running jobs never end by themselves).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        // Aborted when dropped, i.e. when serving ends.
        let _expiry = AbortOnDrop(tokio::spawn(
            self.state.queue.clone().expire_leases_forever(),
        ));
        let _listener = AbortOnDrop(tokio::spawn(
            self.state.queue.clone().listen_to_other_servers(),
        ));
        let _statuses = AbortOnDrop(tokio::spawn(self.statuses.deliver_forever()));
        let scaler = autoscale::Autoscaler::new(
            self.state.store.clone(),
            self.state.queue.clone(),
            self.local.clone(),
            self.state.config.public_url.clone(),
            self.state.config.worker_grace,
            self.state.metrics.clone(),
        );
        let _scaler = AbortOnDrop(tokio::spawn(scaler.run()));
        let header_timeout = self.state.config.header_timeout;
        let app = http::router(self.state).layer(tower_http::trace::TraceLayer::new_for_http());
        http::serve::serve(listener, app, header_timeout, shutdown).await;
        Ok(())
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
