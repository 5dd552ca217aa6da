//! Bodies above a route's limit. A handler that refuses a body without reading it makes the kernel reset the
//! connection while the client is still sending, and the client sees a broken connection instead of the 413:
//! a body announced as too large is read to its end (and dropped, up to twice the limit) before the answer.

use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// Answers 413 to a request whose `Content-Length` exceeds `limit`, after draining its body.
pub async fn refuse_oversized(limit: usize, request: Request, next: Next) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(length) = announced.filter(|&length| length > limit) else {
        return next.run(request).await;
    };
    let mut body = request.into_body().into_data_stream();
    let mut drained = 0usize;
    while drained <= limit.saturating_mul(2)
        && let Some(Ok(chunk)) = body.next().await
    {
        drained += chunk.len();
    }
    let message = format!("the body has {length} bytes; this route takes at most {limit}");
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        Json(serde_json::json!({ "error": message })),
    )
        .into_response()
}
