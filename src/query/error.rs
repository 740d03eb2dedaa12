//! Errors of the query service: [`QueryError`] for starting and running the
//! server (typed, for the caller), [`ApiError`] for one request (an HTTP
//! status with a JSON body `{"error": message, "hint": ...}`).
//!
//! Invariant: every 4xx says what was wrong and, where it helps, what is
//! allowed; a 5xx never leaks more than the store's own message. An error
//! met after a read carries that read's freshness headers
//! ([`ApiError::with_fresh`]), like an answer would.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::fresh::Freshness;
use crate::store::StoreError;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid server settings:\n{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server thread panicked")]
    Panicked,
}

/// A failed request: status, message, optional hint, and the freshness of
/// what was read before it failed (none: the latest headers are sent).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub hint: Option<String>,
    pub fresh: Option<Box<Freshness>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            hint: None,
            fresh: None,
        }
    }

    /// A bug on this side (the server goes on).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }

    /// Sends the freshness of what was read before the error (unless it
    /// already has one: the first read it met is the one it describes).
    pub fn with_fresh(mut self, fresh: &Freshness) -> ApiError {
        if self.fresh.is_none() {
            self.fresh = Some(Box::new(fresh.clone()));
        }
        self
    }

    /// A request that ran out of time.
    pub fn timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request took longer than the server allows ({} ms)",
                limit.as_millis()
            ),
        )
        .with_hint("ask for less (a smaller limit, fewer hops), or raise --request-timeout")
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Cursor { .. } => ApiError::bad_request(e.to_string())
                .with_hint("pass back the next_cursor of a previous page of the same query"),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("store error: {other}"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.message.into());
        if let Some(h) = self.hint {
            body.insert("hint".into(), h.into());
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = Response::new(Body::from(bytes));
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(f) = self.fresh {
            f.apply(headers);
        }
        resp
    }
}
