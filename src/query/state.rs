//! The state every request may use ([`App`]): the store, the settings, the
//! live status, the freshness cache, metrics, connection and export slots,
//! and the cluster's peers. Also the few things every handler does with it:
//! read through one view ([`App::read`]), run on the blocking pool
//! ([`blocking`]), turn a graph query's error into an answer
//! ([`App::graph_error`]).
//!
//! Invariant: [`App::read`] takes one [`ReadView`] per call, and both its
//! answer and its error carry exactly that view's freshness.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use tokio::sync::Semaphore;

use super::ServeConfig;
use super::error::ApiError;
use super::fresh::{FreshCache, Freshness};
use super::graph::GraphError;
use super::live::LiveStatus;
use super::metrics::{CountsCache, Metrics};
use super::peers::{LOCAL, Peers};
use super::respond::Answer;
use crate::store::{ReadView, Store};

/// Everything a request may use.
pub(crate) struct App {
    pub store: Store,
    pub config: ServeConfig,
    pub live: Arc<dyn LiveStatus>,
    pub fresh: FreshCache,
    pub metrics: Metrics,
    pub counts: Arc<CountsCache>,
    pub started: Instant,
    /// One per open connection, over all threads.
    pub slots: Arc<Semaphore>,
    /// The other processes, when this one is part of a cluster of several.
    pub peers: Option<Arc<Peers>>,
    /// Export slots (`max_exports`).
    pub exports: Arc<Semaphore>,
}

impl App {
    /// The cluster to ask, unless this process answers alone: no cluster,
    /// or a peer asking for this process's share.
    pub fn coordinator(&self, caller: Caller) -> Option<Arc<Peers>> {
        match caller {
            Caller::Client => self.peers.clone(),
            Caller::Peer => None,
        }
    }

    /// Reads this process's store through one view: `f`'s answer, or its
    /// error, with the freshness of that view.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&ReadView<'_>) -> Result<T, ApiError>,
    ) -> Result<Answer<T>, ApiError> {
        let view = self.store.read();
        let fresh = Freshness::Local(self.fresh.of(&view)?);
        Answer::of(f(&view), fresh)
    }

    /// The deadline of a request's reads: a little of the request time is
    /// left to encode and send the answer.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout.mul_f64(0.9)
    }

    /// The answer to a graph query that stopped.
    pub fn graph_error(&self, e: GraphError) -> ApiError {
        match e {
            GraphError::Store(e) => e.into(),
            GraphError::Deadline => ApiError::timeout(self.config.request_timeout),
            GraphError::NotFound(m) => ApiError::not_found(m),
            GraphError::TooLarge(n) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("gave up after visiting {n} identifiers (the server's --max-path-visits)"),
            ),
            GraphError::Peer(e) => e.into(),
        }
    }
}

/// Who sent a request: a client, or another process of the cluster asking
/// for this process's share (`X-Rdg-Local: 1`). An extractor that reads
/// only that header (cheaper than extracting every header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Client,
    Peer,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Infallible> {
        Ok(if parts.headers.contains_key(LOCAL) {
            Caller::Peer
        } else {
            Caller::Client
        })
    }
}

/// Runs `f` on the blocking pool (multi-read queries: they may take up to
/// the request's deadline and must not hold up the event loop).
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(ApiError::internal(
            "internal error while answering (a bug; the server goes on)",
        ))
    })
}
