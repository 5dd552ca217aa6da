//! HTTP: the routes and thin handlers. Handlers extract, call the domain (intake, queue, store), and answer.

pub(crate) mod api;
mod artifacts;
pub(crate) mod auth;
pub mod deliveries;
pub mod error;
mod git;
mod hooks;
mod limits;
mod log;
mod pools;
mod secrets;
pub mod serve;
mod stream;
mod tokens;
mod workers;

use crate::config::ServerConfig;
use crate::intake::Intake;
use crate::logs::LogHub;
use crate::queue::Queue;
use crate::store::Store;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Leases and reports.
    pub queue: Queue,
    /// Deliveries to pipelines.
    pub intake: Intake,
    /// Live log fan-out.
    pub hub: LogHub,
    /// Artifact bytes and their index.
    pub artifacts: crate::artifacts::Artifacts,
    /// Seals and opens what the database holds for repositories (secrets, credentials, tokens).
    pub sealing: crate::secrets::SealingKey,
    /// Repositories' secrets and credentials.
    pub vault: crate::secrets::Vault,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Dashboard templates.
    pub templates: Arc<tera::Tera>,
    /// One permit per live log stream open (`max_log_streams`).
    pub log_streams: Arc<tokio::sync::Semaphore>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    let max_hook = state.config.max_webhook_bytes;
    let hooks = Router::new()
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/hooks/gitea", post(hooks::gitea))
        .route("/hooks/forgejo", post(hooks::gitea))
        .route("/hooks/git", post(hooks::git))
        .route("/hooks/generic", post(hooks::generic))
        .layer(DefaultBodyLimit::max(max_hook))
        .layer(axum::middleware::from_fn(move |request, next| {
            limits::refuse_oversized(max_hook, request, next)
        }));
    let api = Router::new()
        .route("/repos", get(api::list_repos).post(api::create_repo))
        .route("/repos/{repo}", axum::routing::patch(api::update_repo))
        .route("/repos/{repo}/secret", get(api::repo_secret))
        .route("/repos/{repo}/deliveries", get(deliveries::list))
        .route("/repos/{repo}/deliveries/{id}", get(deliveries::get))
        .route("/repos/{repo}/secrets", get(secrets::list))
        .route(
            "/repos/{repo}/secrets/{name}",
            axum::routing::put(secrets::set).delete(secrets::remove),
        )
        .route("/repos/{repo}/pipelines", get(api::list_pipelines))
        .route("/repos/{repo}/pipelines/{number}", get(api::get_pipeline))
        .route(
            "/repos/{repo}/pipelines/{number}/cancel",
            post(api::cancel_pipeline),
        )
        .route(
            "/repos/{repo}/pipelines/{number}/retry",
            post(api::retry_pipeline),
        )
        .route("/jobs/{id}", get(api::get_job))
        .route("/jobs/{id}/cancel", post(api::cancel_job))
        .route(
            "/jobs/{id}/log",
            get(log::get_log).post(workers::append_log),
        )
        .route("/jobs/{id}/log/stream", get(stream::log_stream))
        .route("/jobs/{id}/heartbeat", post(workers::heartbeat))
        .route("/jobs/{id}/steps", post(workers::record_step))
        .route("/jobs/{id}/complete", post(workers::complete))
        .route("/workers", get(pools::workers))
        .route("/workers/register", post(workers::register))
        .route("/workers/deregister", post(workers::deregister))
        .route("/lease", post(workers::lease))
        .route("/pools", get(pools::list).post(pools::create))
        .route("/pools/{name}", axum::routing::patch(pools::update))
        .route("/pools/{name}/token", post(pools::rotate_token))
        .route("/pools/{name}/decisions", get(pools::decisions))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{name}", axum::routing::delete(tokens::revoke))
        // The job's source for its worker (git's smart HTTP); a fetch request is wants and haves, well under
        // the limit below.
        .route(
            "/jobs/{id}/source.git/{*rest}",
            get(git::serve).post(git::serve),
        )
        // Log uploads are flushed every ~100 ms; this bounds one request, not the log.
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024));
    // Artifacts stream with their own limit (per job attempt, in `Artifacts`), not the API's body limit.
    let artifacts = Router::new()
        .route("/jobs/{id}/artifacts", get(artifacts::list))
        .route(
            "/jobs/{id}/artifacts/{*path}",
            get(artifacts::download).put(artifacts::upload),
        )
        .layer(DefaultBodyLimit::disable());
    let body_timeout = state.config.body_timeout;
    Router::new()
        .merge(hooks)
        .nest("/api/v1", api.merge(artifacts))
        .merge(crate::web::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(pools::metrics))
        .fallback(crate::web::no_route)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            body_timeout,
        ))
        .with_state(state)
}
