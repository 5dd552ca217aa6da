//! Who is calling: the caller's scope (API tokens and the admin token), a pool's registration token, a
//! registered worker; and reads of what may be private, checked against the caller.

use super::AppState;
use super::error::{ApiError, ApiResult};
use crate::access::Caller;
use crate::auth::hash_token;
use crate::store::{JobRecord, PipelineRecord, RepoRecord, TokenRecord};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use gantry_model::wire::Scope;
use uuid::Uuid;

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

async fn token_of(parts: &Parts, state: &AppState) -> Result<TokenRecord, ApiError> {
    let token = bearer(parts).ok_or_else(|| {
        ApiError::Unauthorized("this call needs `Authorization: Bearer <token>`".into())
    })?;
    state
        .store
        .find_token(&hash_token(token))
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the token is not valid".into()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // A token that is given must be valid, even where none is needed: a revoked token should say so.
        if bearer(parts).is_none() {
            return Ok(Caller(None));
        }
        Ok(Caller(match token_of(parts, state).await? {
            TokenRecord::Admin => Some(Scope::Admin),
            TokenRecord::Api { scope, .. } => Some(scope),
            TokenRecord::Pool(_) | TokenRecord::Provider { .. } | TokenRecord::Worker { .. } => {
                None
            }
        }))
    }
}

/// Who reads a job's artifacts: any caller (as for every read), or a registered worker, which may also read
/// what a job it runs needs, whatever the farm or repository allows others.
pub enum ArtifactReader {
    /// A caller with the scope its token gives, or none.
    Caller(Caller),
    /// A registered worker, by name.
    Worker(String),
}

impl FromRequestParts<AppState> for ArtifactReader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if bearer(parts).is_some()
            && let TokenRecord::Worker { name, .. } = token_of(parts, state).await?
        {
            return Ok(ArtifactReader::Worker(name));
        }
        Ok(ArtifactReader::Caller(
            Caller::from_request_parts(parts, state).await?,
        ))
    }
}

/// The job whose artifacts `reader` asks for, if it may read them: a worker may when one of the jobs it runs
/// needs that job (its lease carried their paths); anyone else, or a worker asking for anything else, as any
/// read of the job.
pub async fn job_for_artifacts(
    state: &AppState,
    reader: ArtifactReader,
    id: &str,
) -> ApiResult<JobRecord> {
    let worker = match reader {
        ArtifactReader::Caller(caller) => return Ok(readable_job(state, caller, id).await?.0),
        ArtifactReader::Worker(name) => name,
    };
    let job = super::api::find_job(state, id).await?;
    let needed = state
        .store
        .pipeline_jobs(job.pipeline_id)
        .await?
        .iter()
        .any(|j| {
            j.status == gantry_model::JobStatus::Running
                && j.worker_name.as_deref() == Some(worker.as_str())
                && j.spec.needs.iter().any(|n| n.as_str() == job.name)
        });
    if needed {
        return Ok(job);
    }
    Ok(readable_job(state, Caller(None), id).await?.0)
}

/// The caller holds the `admin` scope (the admin token, or an API token of that scope).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Admin, "this call")?;
        Ok(Admin)
    }
}

/// The caller holds the `write` scope or more: it may cancel, retry and trigger.
pub struct Writer;

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Write, "this call")?;
        Ok(Writer)
    }
}

/// The caller holds a pool's registration token.
pub struct PoolMember {
    /// The pool.
    pub pool: String,
    /// The token is the one the server's own provider gives the workers it starts.
    pub managed: bool,
    /// The only name it may register (a token made for one instance).
    pub only_name: Option<String>,
}

impl FromRequestParts<AppState> for PoolMember {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_of(parts, state).await? {
            TokenRecord::Pool(pool) => Ok(PoolMember {
                pool,
                managed: false,
                only_name: None,
            }),
            TokenRecord::Provider { pool, worker } => Ok(PoolMember {
                pool,
                managed: true,
                only_name: worker,
            }),
            _ => Err(ApiError::Unauthorized(
                "registering needs a pool token".into(),
            )),
        }
    }
}

/// The caller is a registered worker.
pub struct Worker {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

impl FromRequestParts<AppState> for Worker {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match token_of(parts, state).await? {
            TokenRecord::Worker { id, name } => Ok(Worker { id, name }),
            _ => Err(ApiError::Unauthorized(
                "this call needs a worker token".into(),
            )),
        }
    }
}

/// The lease id a worker's job call carries in `X-Gantry-Lease`.
pub struct LeaseId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for LeaseId {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get(gantry_model::wire::LEASE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(LeaseId)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "job calls need the `{}` header",
                    gantry_model::wire::LEASE_HEADER
                ))
            })
    }
}

/// Refuses a signed-out caller on a private farm; reads that span repositories start here.
pub fn require_farm_read(state: &AppState, caller: Caller) -> ApiResult<()> {
    caller.require_read(state.config.private, "reading this private farm")?;
    Ok(())
}

/// Repository `name`, if it exists and the caller may read it.
pub async fn readable_repo(state: &AppState, caller: Caller, name: &str) -> ApiResult<RepoRecord> {
    // On a private farm, refuse before looking: a signed-out caller learns nothing, not even what exists.
    require_farm_read(state, caller)?;
    let repo = state
        .store
        .get_repo(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no repository named {name:?}")))?;
    caller.require_read(
        repo.private,
        &format!("reading the private repository {name:?}"),
    )?;
    Ok(repo)
}

/// Pipeline `repo`#`number`, if it exists and the caller may read it.
pub async fn readable_pipeline(
    state: &AppState,
    caller: Caller,
    repo: &str,
    number: i64,
) -> ApiResult<PipelineRecord> {
    readable_repo(state, caller, repo).await?;
    Ok(crate::read_model::pipeline_named(state.store.as_ref(), repo, number).await?)
}

/// Job `id` and its pipeline, if they exist and the caller may read them.
pub async fn readable_job(
    state: &AppState,
    caller: Caller,
    id: &str,
) -> ApiResult<(JobRecord, PipelineRecord)> {
    require_farm_read(state, caller)?;
    let job = super::api::find_job(state, id).await?;
    let pipeline = state
        .store
        .get_pipeline_by_id(job.pipeline_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline for job {id}")))?;
    readable_repo(state, caller, &pipeline.repo).await?;
    Ok((job, pipeline))
}

/// Names of the repositories the caller may not read (all of them are filtered from lists that span
/// repositories).
pub async fn unreadable_repos(
    state: &AppState,
    caller: Caller,
) -> ApiResult<std::collections::HashSet<String>> {
    require_farm_read(state, caller)?;
    if caller.0.is_some() {
        return Ok(Default::default());
    }
    Ok(state
        .store
        .list_repos()
        .await?
        .into_iter()
        .filter(|r| r.private)
        .map(|r| r.name)
        .collect())
}
