//! `GET /api/v1/jobs/{id}/log`: an attempt's log as raw bytes, streamed from the store a piece at a time (a
//! slow reader of a 64 MiB log holds one piece, not the log), with `Range` (one range) and `?offset=N`.

use super::AppState;
use super::auth::readable_job;
use super::error::ApiResult;
use crate::access::Caller;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::ops::Range;
use std::sync::Arc;
use uuid::Uuid;

/// Bytes read from the store for each piece of an answer.
const PIECE: usize = 1 << 20;

/// Which part of which attempt's log.
#[derive(Deserialize)]
pub struct LogQuery {
    offset: Option<u64>,
    attempt: Option<u32>,
}

/// What a `Range` header asks of a log of `length` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// The bytes from the query's offset (no `Range`, or one this route does not serve, such as several).
    All,
    /// One satisfiable range.
    Part(Range<u64>),
    /// A range wholly past the end.
    Unsatisfiable,
}

/// Reads `bytes=A-B`, `bytes=A-` and `bytes=-N` (RFC 9110 §14.1.2); anything else is ignored, as the RFC allows.
fn wanted(range: Option<&HeaderValue>, length: u64) -> Wanted {
    let Some(spec) = range
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Wanted::All;
    };
    let (first, last) = (first.trim(), last.trim());
    let parsed = |n: &str| n.parse::<u64>().ok();
    let range = match (first.is_empty(), last.is_empty()) {
        // The last N bytes.
        (true, false) => match parsed(last) {
            Some(0) => return Wanted::Unsatisfiable,
            Some(n) => length.saturating_sub(n)..length,
            None => return Wanted::All,
        },
        (false, _) => {
            let Some(start) = parsed(first) else {
                return Wanted::All;
            };
            let end = if last.is_empty() {
                Some(length)
            } else {
                parsed(last).map(|l| l.saturating_add(1).min(length))
            };
            match end {
                Some(end) if start <= end => start..end,
                _ => return Wanted::All,
            }
        }
        (true, true) => return Wanted::All,
    };
    if range.start >= length {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(range)
    }
}

/// `GET /api/v1/jobs/{id}/log`.
pub async fn get_log(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (job, _) = readable_job(&state, caller, &id).await?;
    let attempt = q.attempt.unwrap_or(job.attempt);
    let length = state.store.log_length(job.id, attempt).await?;
    let (status, bytes) = match wanted(headers.get(header::RANGE), length) {
        Wanted::All => (StatusCode::OK, q.offset.unwrap_or(0).min(length)..length),
        Wanted::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        Wanted::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{length}"))],
            )
                .into_response());
        }
    };
    let mut answer = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_LENGTH, bytes.end - bytes.start);
    if status == StatusCode::PARTIAL_CONTENT {
        answer = answer.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{length}", bytes.start, bytes.end - 1),
        );
    }
    let body = Body::from_stream(pieces(state.store.clone(), job.id, attempt, bytes));
    Ok(answer.body(body).expect("a valid response"))
}

/// The bytes of `range`, read a piece at a time as the client takes them.
fn pieces(
    store: Arc<dyn crate::store::Store>,
    job: Uuid,
    attempt: u32,
    range: Range<u64>,
) -> impl futures::Stream<Item = Result<Vec<u8>, crate::store::StoreError>> {
    futures::stream::try_unfold(range, move |range| {
        let store = store.clone();
        async move {
            if range.is_empty() {
                return Ok(None);
            }
            let want = (range.end - range.start).min(PIECE as u64) as usize;
            let piece = store.read_log(job, attempt, range.start, want).await?;
            if piece.is_empty() {
                // Shorter than its length said: end here rather than loop (the length is a promise to the client,
                // which then sees a short body, as it would if the connection dropped).
                return Ok(None);
            }
            let next = range.start + piece.len() as u64..range.end;
            Ok(Some((piece, next)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, length: u64) -> Wanted {
        wanted(Some(&HeaderValue::from_str(range).unwrap()), length)
    }

    #[test]
    fn ranges_are_read_as_the_rfc_says() {
        assert_eq!(wanted(None, 100), Wanted::All);
        assert_eq!(ask("bytes=0-9", 100), Wanted::Part(0..10));
        assert_eq!(ask("bytes=90-", 100), Wanted::Part(90..100));
        assert_eq!(ask("bytes=90-1000", 100), Wanted::Part(90..100));
        assert_eq!(ask("bytes=-10", 100), Wanted::Part(90..100));
        assert_eq!(ask("bytes=-1000", 100), Wanted::Part(0..100));
        assert_eq!(ask("bytes=100-", 100), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=-0", 100), Wanted::Unsatisfiable);
        assert_eq!(ask("bytes=0-0", 0), Wanted::Unsatisfiable);
        // Not served (ignored, so the whole log is the answer): several ranges, other units, nonsense.
        assert_eq!(ask("bytes=0-1,5-6", 100), Wanted::All);
        assert_eq!(ask("lines=0-9", 100), Wanted::All);
        assert_eq!(ask("bytes=9-0", 100), Wanted::All);
        assert_eq!(ask("bytes=x-", 100), Wanted::All);
    }
}
