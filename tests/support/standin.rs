//! A local HTTP server standing in for the forges' commit status APIs (no forge runs here): it records each
//! request and answers as told.

use super::eventually;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the stand-in received, and what it answered.
#[derive(Clone, Debug)]
pub struct Received {
    /// The raw path (GitLab's project path must arrive percent-encoded).
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its JSON body (null when it was not JSON).
    pub body: Value,
    /// The status code the stand-in answered.
    pub answered: u16,
    /// When it came.
    pub at: std::time::Instant,
}

/// A local HTTP server standing in for the forges' status APIs: records every request; answers `fail_with`
/// (500 unless set) to the first `failures` of them, then 201 as the forges do.
#[derive(Clone, Default)]
pub struct StandIn {
    received: Arc<Mutex<Vec<Received>>>,
    /// Requests still to fail.
    pub failures: Arc<Mutex<u32>>,
    /// How they fail.
    pub fail_with: Arc<Mutex<Option<StatusCode>>>,
}

impl StandIn {
    /// Serves on a port of its own; returns its base URL.
    pub async fn start(failures: u32) -> (StandIn, String) {
        let stand_in = StandIn::default();
        *stand_in.failures.lock().unwrap() = failures;
        let app = axum::Router::new()
            .fallback(axum::routing::post(record))
            .with_state(stand_in.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (stand_in, url)
    }

    /// The requests to `statuses` (a forge's status path up to the sha) for `sha`, in the order they came
    /// (repositories on different forges may make commits of the same sha: same file, author and second).
    pub fn for_commit(&self, statuses: &str, sha: &str) -> Vec<Received> {
        let path = format!("{statuses}{sha}");
        let all = self.received.lock().unwrap();
        all.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Waits until the stand-in took a final (not pending) status for `sha` at `statuses`; returns the requests.
    pub async fn until_final(&self, statuses: &str, sha: &str) -> Vec<Received> {
        eventually(
            &format!("a final status for {statuses}{sha}"),
            Duration::from_secs(60),
            || async {
                let got = self.for_commit(statuses, sha);
                let last = got.last().filter(|r| r.answered == 201)?;
                let state = last.body["state"].as_str()?;
                (!matches!(state, "pending" | "running")).then_some(got)
            },
        )
        .await
    }
}

async fn record(
    State(stand_in): State<StandIn>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    let answered = {
        let mut failures = stand_in.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            stand_in
                .fail_with
                .lock()
                .unwrap()
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        } else {
            StatusCode::CREATED
        }
    };
    stand_in.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: answered.as_u16(),
        at: std::time::Instant::now(),
    });
    (answered, axum::Json(json!({"id": 1})))
}
