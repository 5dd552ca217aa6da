//! The worker's side of the protocol (docs/api.md, "Worker protocol"): all it knows of the server.

use gantry_model::wire::{
    ArtifactRef, CompleteRequest, HeartbeatResponse, LEASE_HEADER, Lease, LeaseRequest,
    MODE_HEADER, RegisterRequest, RegisterResponse, SHA256_HEADER, StepReport,
};
use reqwest::StatusCode;
use std::time::Duration;
use uuid::Uuid;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection broke; worth retrying.
    #[error("cannot reach the server: {0}")]
    Network(#[from] reqwest::Error),
    /// 409: the lease is no longer the job's; stop working on it.
    #[error("the server no longer recognises this lease")]
    StaleLease,
    /// The server refused the call.
    #[error("the server answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The server's `error` message.
        message: String,
    },
    /// 410 to a lease request: the server drains this worker (it finishes what it runs, deregisters, exits).
    #[error("the server asked this worker to drain")]
    Draining,
    /// 401 to a worker's call: its registration was removed (its pool's token rotated, or it was deregistered).
    #[error("the server no longer accepts this worker's token: {0}")]
    Revoked(String),
    /// Something on the worker's side of the call failed (a file to send could not be read).
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Network(_) => true,
            ClientError::Refused { status, .. } => status.is_server_error(),
            ClientError::StaleLease
            | ClientError::Local(_)
            | ClientError::Draining
            | ClientError::Revoked(_) => false,
        }
    }
}

/// A registered worker's connection to its server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// Where the server is and how to ask it for a job's source: the server's URL (its API's base without
    /// `/api/v1`) and the HTTP headers of a call under `lease` (the worker's token, the lease).
    pub fn source_access(&self, lease: &gantry_model::wire::Lease) -> (String, Vec<String>) {
        let server = self.base.trim_end_matches("/api/v1").to_owned();
        let headers = vec![
            format!("Authorization: Bearer {}", self.token),
            format!("{}: {}", gantry_model::wire::LEASE_HEADER, lease.lease_id),
        ];
        (server, headers)
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::CONFLICT {
        return Err(ClientError::StaleLease);
    }
    if status == StatusCode::GONE {
        return Err(ClientError::Draining);
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"].as_str().unwrap_or("no message").to_owned();
    Err(ClientError::Refused { status, message })
}

impl Client {
    /// Registers with a pool token; the client then uses the worker token it got.
    pub async fn register(
        server: &str,
        pool_token: &str,
        request: &RegisterRequest,
    ) -> Result<(Client, Uuid), ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The server closes a connection that sends no request for its header timeout (10 s): let idle
            // connections go well before that, so none is reused just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()?;
        let base = format!("{}/api/v1", server.trim_end_matches('/'));
        let response = http
            .post(format!("{base}/workers/register"))
            .bearer_auth(pool_token)
            .json(request)
            .send()
            .await?;
        let answer: RegisterResponse = check(response).await?.json().await?;
        Ok((
            Client {
                http,
                base,
                token: answer.worker_token,
            },
            answer.worker_id,
        ))
    }

    /// Long-polls for a job, waiting up to `wait` on the server.
    pub async fn lease(&self, wait: Duration) -> Result<Option<Lease>, ClientError> {
        let request = LeaseRequest {
            wait_secs: Some(wait.as_secs()),
        };
        let response = self
            .http
            .post(format!("{}/lease", self.base))
            .bearer_auth(&self.token)
            .timeout(wait + Duration::from_secs(15))
            .json(&request)
            .send()
            .await?;
        let response = match check(response).await {
            Err(ClientError::Refused { status, message }) if status == StatusCode::UNAUTHORIZED => {
                return Err(ClientError::Revoked(message));
            }
            other => other?,
        };
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(response.json().await?))
    }

    /// Leaves the server: the worker's token stops working.
    pub async fn deregister(&self) -> Result<(), ClientError> {
        let response = self
            .http
            .post(format!("{}/workers/deregister", self.base))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        check(response).await?;
        Ok(())
    }

    fn job_call(&self, lease: &Lease, what: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/jobs/{}/{what}", self.base, lease.job_id))
            .bearer_auth(&self.token)
            .header(LEASE_HEADER, lease.lease_id.to_string())
            .timeout(Duration::from_secs(30))
    }

    /// Renews the lease; true when the job was cancelled. The server may hold the call up to `wait` for a
    /// cancel, renewing the lease again before it answers.
    pub async fn heartbeat(&self, lease: &Lease, wait: Duration) -> Result<bool, ClientError> {
        let request = self
            .job_call(lease, &format!("heartbeat?wait={}", wait.as_secs()))
            .timeout(wait + Duration::from_secs(15));
        let response = check(request.send().await?).await?;
        Ok(response.json::<HeartbeatResponse>().await?.cancel)
    }

    /// Appends log bytes at `offset` (idempotent on the server, so retries are safe); returns the log's length
    /// on the server, which is shorter than `offset + data.len()` once the log reached its cap.
    pub async fn append_log(
        &self,
        lease: &Lease,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<u64, ClientError> {
        let request = self
            .job_call(lease, &format!("log?offset={offset}"))
            .body(data);
        let answer: serde_json::Value = check(request.send().await?).await?.json().await?;
        Ok(answer["length"].as_u64().unwrap_or(offset))
    }

    /// Reports a step's start or end.
    pub async fn step(&self, lease: &Lease, step: &StepReport) -> Result<(), ClientError> {
        check(self.job_call(lease, "steps").json(step).send().await?).await?;
        Ok(())
    }

    /// Streams a file to the job's artifacts at `path`; the server checks `sha256` against what arrives.
    pub async fn upload_artifact(
        &self,
        lease: &Lease,
        path: &str,
        file: tokio::fs::File,
        sha256: &str,
        mode: u32,
    ) -> Result<ArtifactRef, ClientError> {
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let request = self
            .http
            .put(format!(
                "{}/jobs/{}/artifacts/{}",
                self.base,
                lease.job_id,
                escape_path(path)
            ))
            .bearer_auth(&self.token)
            .header(LEASE_HEADER, lease.lease_id.to_string())
            .header(SHA256_HEADER, sha256)
            .header(MODE_HEADER, format!("{mode:o}"))
            .body(body);
        Ok(check(request.send().await?).await?.json().await?)
    }

    /// Starts the download of another job's artifact; the caller streams the body.
    pub async fn download_artifact(
        &self,
        artifact: &ArtifactRef,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!(
            "{}/jobs/{}/artifacts/{}",
            self.base,
            artifact.job_id,
            escape_path(&artifact.path)
        );
        check(self.http.get(url).bearer_auth(&self.token).send().await?).await
    }

    /// Reports the job's end.
    pub async fn complete(
        &self,
        lease: &Lease,
        report: &CompleteRequest,
    ) -> Result<(), ClientError> {
        check(self.job_call(lease, "complete").json(report).send().await?).await?;
        Ok(())
    }
}

/// Unreserved URL characters (RFC 3986) stay as they are; everything else in a path component is escaped.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes each component of an artifact path for a URL, keeping the `/` between them.
fn escape_path(path: &str) -> String {
    path.split('/')
        .map(|part| percent_encoding::utf8_percent_encode(part, COMPONENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Runs `call` until it succeeds or fails for a reason retrying cannot fix, backing off up to 5 s between tries
/// and giving up after `patience`.
pub async fn with_retries<T, F, Fut>(patience: Duration, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let start = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if e.is_transient() && start.elapsed() + pause < patience => {
                tracing::warn!(error = %e, "server call failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}
