//! `GET /api/v1/jobs/{id}/log/stream`: the log as server-sent events, live. Each log event's id is the byte
//! offset after it and its data `{"offset", "data": base64}`; `Last-Event-ID` resumes. Named events `step`
//! (a step started or ended), `attempt` (a new attempt started: its log starts again at 0) and `end`.

use super::AppState;
use super::auth::readable_job;
use super::error::{ApiError, ApiResult};
use crate::access::Caller;
use crate::logs::LogUpdate;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use base64::Engine;
use futures::Stream;
use gantry_model::wire::LogEvent;
use serde::Deserialize;
use std::convert::Infallible;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use uuid::Uuid;

/// Bytes per SSE event when replaying a stored log.
const EVENT_BYTES: usize = 64 * 1024;

/// Bytes read from the store at a time when replaying a stored log.
const CATCH_UP_BYTES: usize = 16 * EVENT_BYTES;

/// Events queued for one client: what a slow reader makes the server hold is this many, not its log.
const QUEUED_EVENTS: usize = 4;

/// `?offset=N` starts later in the log (`Last-Event-ID` wins when both are given).
#[derive(Deserialize)]
pub struct StreamQuery {
    offset: Option<u64>,
}

/// Streams a job's log.
pub async fn log_stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id: Uuid = readable_job(&state, caller, &id).await?.0.id;
    let permit = state.log_streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(format!(
            "too many live log streams are open ({}, the server's max_log_streams); try again shortly",
            state.config.max_log_streams
        ))
    })?;
    // Subscribe before the feed reads the store, so bytes stored in between arrive through the channel.
    let updates = state.hub.subscribe(id);
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let start = last_id.or(q.offset).unwrap_or(0);
    let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
    tokio::spawn(async move {
        let mut feed = Feed {
            state,
            job: id,
            sent: start,
            attempt: 0,
            tx,
        };
        if let Err(e) = feed.run(updates).await {
            tracing::debug!(job = %id, reason = %e, "log stream ended");
        }
        drop(permit);
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

struct Feed {
    state: AppState,
    job: Uuid,
    sent: u64,
    attempt: u32,
    tx: mpsc::Sender<Result<Event, Infallible>>,
}

#[derive(Debug, thiserror::Error)]
enum FeedEnd {
    #[error("the client went away")]
    Gone,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl Feed {
    async fn run(&mut self, mut updates: broadcast::Receiver<LogUpdate>) -> Result<(), FeedEnd> {
        let job = self
            .state
            .store
            .get_job(self.job)
            .await?
            .ok_or(FeedEnd::Gone)?;
        self.attempt = job.attempt;
        self.send_stored_steps().await?;
        self.catch_up().await?;
        if job.status.is_finished() {
            return self.end(job.status.as_str()).await;
        }
        loop {
            // A client that went away frees its stream's permit now, not at the job's next output.
            let update = tokio::select! {
                update = updates.recv() => update,
                () = self.tx.closed() => return Err(FeedEnd::Gone),
            };
            match update {
                Ok(LogUpdate::Bytes {
                    attempt,
                    offset,
                    data,
                }) => {
                    if attempt > self.attempt {
                        self.new_attempt(attempt).await?;
                    }
                    if attempt != self.attempt || offset + data.len() as u64 <= self.sent {
                        continue;
                    }
                    if offset > self.sent {
                        self.catch_up().await?; // missed some: the store has them
                    } else {
                        let skip = (self.sent - offset) as usize;
                        self.send_bytes(&data[skip..]).await?;
                    }
                }
                Ok(LogUpdate::Step(step)) => self.send_step(&step).await?,
                Ok(LogUpdate::Finished(status)) => {
                    self.catch_up().await?;
                    return self.end(status.as_str()).await;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed updates: steps are re-sent whole (clients key them by index), bytes from the store.
                    self.send_stored_steps().await?;
                    self.catch_up().await?
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    async fn send_step(&self, step: &gantry_model::wire::StepReport) -> Result<(), FeedEnd> {
        self.send(
            Event::default()
                .event("step")
                .json_data(step)
                .expect("steps serialise"),
        )
        .await
    }

    async fn send_stored_steps(&self) -> Result<(), FeedEnd> {
        for step in self.state.store.job_steps(self.job, self.attempt).await? {
            self.send_step(&step).await?;
        }
        Ok(())
    }

    async fn new_attempt(&mut self, attempt: u32) -> Result<(), FeedEnd> {
        self.attempt = attempt;
        self.sent = 0;
        let data = serde_json::json!({ "attempt": attempt });
        self.send(
            Event::default()
                .event("attempt")
                .json_data(data)
                .expect("json"),
        )
        .await
    }

    /// Sends what the store holds beyond `sent`, a window at a time (a reader far behind holds one window, not
    /// the log), in events that never span a step boundary (a client files each event's bytes under one step).
    async fn catch_up(&mut self) -> Result<(), FeedEnd> {
        loop {
            let stored = self
                .state
                .store
                .read_log(self.job, self.attempt, self.sent, CATCH_UP_BYTES)
                .await?;
            if stored.is_empty() {
                return Ok(());
            }
            let steps = self.state.store.job_steps(self.job, self.attempt).await?;
            let start = self.sent;
            let mut cuts: Vec<usize> = steps
                .iter()
                .map(|s| s.log_offset.saturating_sub(start) as usize)
                .filter(|&cut| cut > 0 && cut < stored.len())
                .collect();
            cuts.push(stored.len());
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts {
                self.send_bytes(&stored[from..cut]).await?;
                from = cut;
            }
            if stored.len() < CATCH_UP_BYTES {
                return Ok(());
            }
        }
    }

    /// Sends `data` (which follows what was sent) in events of at most EVENT_BYTES.
    async fn send_bytes(&mut self, data: &[u8]) -> Result<(), FeedEnd> {
        for piece in data.chunks(EVENT_BYTES) {
            let event = LogEvent {
                offset: self.sent,
                data: base64::engine::general_purpose::STANDARD.encode(piece),
            };
            self.sent += piece.len() as u64;
            let event = Event::default()
                .id(self.sent.to_string())
                .json_data(event)
                .expect("log events serialise");
            self.send(event).await?;
        }
        Ok(())
    }

    async fn end(&mut self, status: &str) -> Result<(), FeedEnd> {
        let data = serde_json::json!({ "status": status, "length": self.sent });
        self.send(Event::default().event("end").json_data(data).expect("json"))
            .await
    }

    async fn send(&self, event: Event) -> Result<(), FeedEnd> {
        self.tx.send(Ok(event)).await.map_err(|_| FeedEnd::Gone)
    }
}
