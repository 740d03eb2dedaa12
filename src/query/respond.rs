//! Response helpers: a handler's JSON answer with the freshness of what it
//! read ([`Answer`]), or the answer of the process that owns the key, handed
//! back as it came ([`Reply::Relayed`]).
//!
//! Invariant: every JSON answer built here is `application/json` and carries
//! the freshness headers of exactly the reads it was made from; one that
//! cannot be encoded becomes a 500 (never a partial body).

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::fresh::Freshness;

/// Bytes reserved for an answer's JSON before encoding it (a neighbour page
/// of ten edges is about 1 KiB), so that most answers are encoded without
/// growing the buffer.
const BODY_CAPACITY: usize = 1024;

/// A 200 JSON answer and the freshness of the state(s) it was read from.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub fresh: Freshness,
}

impl<T> Answer<T> {
    pub fn new(body: T, fresh: Freshness) -> Answer<T> {
        Answer { body, fresh }
    }

    /// The answer of `result`, or its error, with `fresh` (an error met
    /// after reads describes them like an answer would).
    pub fn of(result: Result<T, ApiError>, fresh: Freshness) -> Result<Answer<T>, ApiError> {
        match result {
            Ok(body) => Ok(Answer::new(body, fresh)),
            Err(e) => Err(e.with_fresh(&fresh)),
        }
    }

    /// The same freshness over another body.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            body: f(self.body),
            fresh: self.fresh,
        }
    }
}

/// A response with a JSON body.
pub fn json_bytes(status: StatusCode, bytes: impl Into<Body>) -> Response {
    let mut resp = Response::new(bytes.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        let mut bytes = Vec::with_capacity(BODY_CAPACITY);
        match serde_json::to_writer(&mut bytes, &self.body) {
            Ok(()) => {
                let mut resp = json_bytes(StatusCode::OK, bytes);
                self.fresh.apply(resp.headers_mut());
                resp
            }
            Err(e) => ApiError::internal(format!("could not encode the answer: {e}"))
                .with_fresh(&self.fresh)
                .into_response(),
        }
    }
}

/// What a route that may forward answers: its own answer, or the owner's.
pub enum Reply<T> {
    Answer(Answer<T>),
    /// Another process's answer (status, body, content type and freshness
    /// as that process sent them).
    Relayed(Response),
}

impl<T> From<Answer<T>> for Reply<T> {
    fn from(a: Answer<T>) -> Reply<T> {
        Reply::Answer(a)
    }
}

impl<T: Serialize> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match self {
            Reply::Answer(a) => a.into_response(),
            Reply::Relayed(r) => r,
        }
    }
}
