//! What a page answers when it cannot be shown: an HTML page with the status, the reason and a link home — the
//! API answers the same errors as JSON (`http/error.rs`), a browser gets something it can read.

use crate::http::error::ApiError;
use crate::store::StoreError;
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};

/// An error of a page handler.
pub struct PageError(ApiError);

/// What page handlers return.
pub type PageResult<T> = Result<T, PageError>;

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> Self {
        PageError(error)
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        PageError(ApiError::Store(error))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, message) = self.0.status_and_message();
        page(status, &message)
    }
}

/// The page for `status`, saying `message`.
fn page(status: StatusCode, message: &str) -> Response {
    let title = status.to_string();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} — Gantry</title></head>\n\
         <body><h1>{title}</h1><p>{}</p><p><a href=\"/\">Gantry's front page</a></p></body></html>\n",
        tera::escape_html(message)
    );
    (status, Html(body)).into_response()
}

/// A path no route takes: JSON under `/api/`, a page everywhere else.
pub async fn no_route(uri: Uri) -> Response {
    let message = format!("nothing at {}", uri.path());
    if uri.path().starts_with("/api/") {
        return ApiError::NotFound(message).into_response();
    }
    page(StatusCode::NOT_FOUND, &message)
}
