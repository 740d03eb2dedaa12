//! The other processes of a cluster, as seen by one process's query
//! server: who owns a key ([`Peers::owner_of`]), HTTP calls to a peer with a
//! deadline ([`Peers::get`], [`Peers::stream`]), and calls to several
//! peers at once ([`Peers::fan_out`]).
//!
//! Every call goes through one pooled async client (hyper-util's
//! `client::legacy::Client`: keep-alive connections per peer, a stale one
//! replaced transparently); a fan-out runs its calls as a `futures` buffered
//! stream, at most [`MAX_PARALLEL`] at once, on the task that awaits it.
//!
//! Invariants:
//! - **No loops.** Every call carries `X-Rdg-Local: 1`; a server that sees
//!   it answers from its own store only and never calls a peer. So a
//!   request crosses at most one process boundary.
//! - **No hangs.** Every call has a deadline (connect, then the whole
//!   exchange, or for a stream each read); a peer that is down, refuses, or
//!   does not answer in time is a [`PeerError`] naming the process and its
//!   address (502, or 504 for time), never a wait beyond the request's time.
//! - **No misattribution.** A fan-out returns one `(process, result)` per
//!   call, in the order asked, whatever happens to the others: a call that
//!   fails or panics is that process's error ([`PeerError::Panicked`] for a
//!   panic), never a shorter list.
//! - Answers to internal calls never wait for the blocking pool, so two
//!   processes calling each other cannot deadlock.

use std::future::Future;
use std::io::Read;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use futures_util::{FutureExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::error::ApiError;
use super::fresh::ProcessFresh;
use crate::model::{ClusterShape, shard};

/// Sent on every call to a peer: answer from your own store only.
pub const LOCAL: HeaderName = HeaderName::from_static("x-rdg-local");

/// The longest a connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a streamed answer (an export) may stay silent.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Calls in flight at once from one fan-out (a traversal hop, a list read
/// on every process).
pub const MAX_PARALLEL: usize = 16;
/// The largest answer body read from a peer.
const MAX_BODY: usize = 256 << 20;
/// The largest error body read from a peer that refused a stream.
const MAX_ERROR_BODY: usize = 1 << 16;
/// Idle keep-alive connections kept per peer.
const MAX_IDLE: usize = 64;

/// A peer that did not answer as it should.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("process {process} of the cluster ({url}) did not answer: {detail}")]
    Unreachable {
        process: usize,
        url: String,
        detail: String,
    },
    #[error("process {process} of the cluster ({url}) did not answer within {ms} ms")]
    Timeout {
        process: usize,
        url: String,
        ms: u128,
    },
    #[error("process {process} of the cluster ({url}) answered {status}: {message}")]
    Failed {
        process: usize,
        url: String,
        status: u16,
        message: String,
    },
    #[error(
        "process {process} of the cluster ({url}) sent an answer rdg does not understand: {detail}"
    )]
    BadAnswer {
        process: usize,
        url: String,
        detail: String,
    },
    /// Asking the process, or reading its answer, hit a bug on this side.
    #[error(
        "the call to process {process} of the cluster ({url}) failed: an internal error (a bug; the server goes on)"
    )]
    Panicked { process: usize, url: String },
}

impl PeerError {
    /// The process the error is about.
    pub fn process(&self) -> usize {
        match self {
            PeerError::Unreachable { process, .. }
            | PeerError::Timeout { process, .. }
            | PeerError::Failed { process, .. }
            | PeerError::BadAnswer { process, .. }
            | PeerError::Panicked { process, .. } => *process,
        }
    }
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> ApiError {
        let status = match e {
            PeerError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string()).with_hint(
            "every process of the cluster must run with --listen at the address its --http-hosts line gives; \
             ask again once it is back, or ask the owner directly",
        )
    }
}

/// What a peer answered: its status, freshness and body.
#[derive(Clone, Debug)]
pub struct PeerAnswer {
    pub process: usize,
    pub status: u16,
    pub fresh: ProcessFresh,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

impl PeerAnswer {
    /// The body as JSON of type `T` (for a 200).
    pub fn json<T: serde::de::DeserializeOwned>(&self, peers: &Peers) -> Result<T, PeerError> {
        serde_json::from_slice(&self.body).map_err(|e| PeerError::BadAnswer {
            process: self.process,
            url: peers.url(self.process).to_string(),
            detail: e.to_string(),
        })
    }

    /// `Ok(Some(_))` on 200, `Ok(None)` on 404, an error for anything else.
    pub fn found<T: serde::de::DeserializeOwned>(
        &self,
        peers: &Peers,
    ) -> Result<Option<T>, PeerError> {
        match self.status {
            200 => self.json(peers).map(Some),
            404 => Ok(None),
            _ => Err(self.failed(peers)),
        }
    }

    /// `Ok` on 200, an error for anything else.
    pub fn ok<T: serde::de::DeserializeOwned>(&self, peers: &Peers) -> Result<T, PeerError> {
        match self.status {
            200 => self.json(peers),
            _ => Err(self.failed(peers)),
        }
    }

    fn failed(&self, peers: &Peers) -> PeerError {
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect()
            });
        PeerError::Failed {
            process: self.process,
            url: peers.url(self.process).to_string(),
            status: self.status,
            message,
        }
    }
}

/// This process's view of its cluster, and the client it calls its peers
/// with: one pooled client per server thread (its runtime drives the
/// connections that client opens, so a forwarded lookup never hands its
/// connection to another thread), and one more for calls from elsewhere.
pub struct Peers {
    shape: ClusterShape,
    /// `Bearer <token>`, the token every process of the cluster shares.
    authorization: Option<HeaderValue>,
    clients: Vec<Client<HttpConnector, Body>>,
}

thread_local! {
    /// The server thread whose runtime this thread belongs to (its event
    /// loop or its blocking pool), set by [`Peers::enter_thread`].
    static SERVER_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Which kind of record a key is, to find its owner.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// A node record `type:id`.
    Node(&'a str),
    /// The out-edges of `from` over `edge_type`.
    OutEdges { edge_type: &'a str, from: &'a str },
}

/// The text of an error and of every error under it.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// True when some error under `e` is an I/O timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

impl Peers {
    /// `shape`: this process's cluster, with every process's query URL;
    /// `token`: the bearer token every process of the cluster shares;
    /// `threads`: the server threads that will call [`Peers::enter_thread`].
    /// Needs no runtime; calls run on the runtime of the task that awaits
    /// them.
    pub fn new(shape: ClusterShape, token: Option<String>, threads: usize) -> Peers {
        let client = || {
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
            connector.set_nodelay(true);
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(MAX_IDLE)
                .pool_timer(TokioTimer::new())
                .build(connector)
        };
        Peers {
            clients: (0..=threads).map(|_| client()).collect(),
            authorization: token
                .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                }),
            shape,
        }
    }

    /// Marks the calling thread as belonging to server thread `i` (its event
    /// loop, or a thread of its blocking pool): its calls use that thread's
    /// client.
    pub fn enter_thread(i: usize) {
        SERVER_THREAD.with(|t| t.set(Some(i)));
    }

    /// The client of the calling thread's server thread, or the spare one.
    fn client(&self) -> &Client<HttpConnector, Body> {
        let i = SERVER_THREAD.with(|t| t.get());
        let spare = self.clients.len() - 1;
        &self.clients[i.map_or(spare, |i| i.min(spare))]
    }

    /// This process's index.
    pub fn me(&self) -> usize {
        self.shape.process
    }

    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.shape.processes
    }

    /// Every process, in order.
    pub fn all(&self) -> Vec<usize> {
        (0..self.processes()).collect()
    }

    /// Every process but this one, in order.
    pub fn others(&self) -> Vec<usize> {
        (0..self.processes()).filter(|p| *p != self.me()).collect()
    }

    /// The base URL of `process`.
    pub fn url(&self, process: usize) -> &str {
        self.shape
            .query_urls
            .get(process)
            .map_or("?", String::as_str)
    }

    /// The process whose workers own `key` (see `model::shard`).
    pub fn owner_of(&self, key: Key<'_>) -> usize {
        self.shape.owner(match key {
            Key::Node(id) => shard::node(id),
            Key::OutEdges { edge_type, from } => shard::edge(edge_type, from),
        })
    }

    fn unreachable(&self, process: usize, detail: impl std::fmt::Display) -> PeerError {
        PeerError::Unreachable {
            process,
            url: self.url(process).to_string(),
            detail: detail.to_string(),
        }
    }

    fn timeout(&self, process: usize, limit: Duration) -> PeerError {
        PeerError::Timeout {
            process,
            url: self.url(process).to_string(),
            ms: limit.as_millis(),
        }
    }

    fn panicked(&self, process: usize) -> PeerError {
        PeerError::Panicked {
            process,
            url: self.url(process).to_string(),
        }
    }

    /// A GET of `path_and_query` on `process`, answered from its store only.
    fn request(&self, process: usize, path_and_query: &str) -> Result<Request<Body>, PeerError> {
        let uri: Uri = format!("{}{path_and_query}", self.url(process))
            .parse()
            .map_err(|e| self.unreachable(process, format!("bad address: {e}")))?;
        let mut req = Request::get(uri)
            .header(LOCAL, HeaderValue::from_static("1"))
            .body(Body::empty())
            .map_err(|e| self.unreachable(process, e))?;
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        Ok(req)
    }

    /// Sends the request; the answer's head, once it is in.
    async fn send(
        &self,
        process: usize,
        path_and_query: &str,
    ) -> Result<axum::http::Response<Incoming>, PeerError> {
        let req = self.request(process, path_and_query)?;
        self.client().request(req).await.map_err(|e| {
            if timed_out(&e) {
                self.timeout(process, CONNECT_TIMEOUT)
            } else {
                self.unreachable(process, chain(&e))
            }
        })
    }

    /// GET `path_and_query` from `process` (never this one), answered from
    /// its own store, by `deadline`.
    pub async fn get(
        &self,
        process: usize,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<PeerAnswer, PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout(process, left));
        }
        let call = async {
            let (parts, body) = self.send(process, path_and_query).await?.into_parts();
            let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
                .await
                .map_err(|e| self.unreachable(process, format!("reading the answer: {e}")))?;
            Ok(PeerAnswer {
                process,
                status: parts.status.as_u16(),
                fresh: ProcessFresh::from_headers(&parts.headers),
                content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
                body,
            })
        };
        tokio::time::timeout(left, call)
            .await
            .unwrap_or_else(|_| Err(self.timeout(process, left)))
    }

    /// Starts a streamed GET (an export): returns once the headers are in
    /// (by `deadline`), with a blocking reader of the body for a thread of
    /// its own (each read may wait at most [`STREAM_READ_TIMEOUT`]). A
    /// status other than 200 is an error. Call it from the runtime.
    pub async fn stream(
        &self,
        process: usize,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<(ProcessFresh, PeerReader), PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let head = async {
            let (parts, body) = self.send(process, path_and_query).await?.into_parts();
            let fresh = ProcessFresh::from_headers(&parts.headers);
            if parts.status != StatusCode::OK {
                let body = axum::body::to_bytes(Body::new(body), MAX_ERROR_BODY)
                    .await
                    .unwrap_or_default();
                let answer = PeerAnswer {
                    process,
                    status: parts.status.as_u16(),
                    fresh,
                    content_type: None,
                    body,
                };
                return Err(answer.failed(self));
            }
            Ok((fresh, body))
        };
        let (fresh, body) = tokio::time::timeout(left, head)
            .await
            .unwrap_or_else(|_| Err(self.timeout(process, left)))?;
        let reader = PeerReader {
            runtime: tokio::runtime::Handle::current(),
            body: Body::new(body).into_data_stream(),
            chunk: Bytes::new(),
        };
        Ok((fresh, reader))
    }

    /// Runs `call(p)` for every process of `procs`, at most
    /// [`MAX_PARALLEL`] at once: one `(process, result)` per process, in the
    /// order of `procs`. A call that panics is that process's
    /// [`PeerError::Panicked`].
    pub async fn fan_out<T, E, F, Fut>(
        &self,
        procs: &[usize],
        call: F,
    ) -> Vec<(usize, Result<T, E>)>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<PeerError>,
    {
        self.fan_out_each(procs, |p| p, call).await
    }

    /// [`Peers::fan_out`] over calls that are not one per process (a hop's
    /// reads: one per node and process): `process_of(item)` is the process
    /// `call(item)` asks, and names its result.
    pub async fn fan_out_each<I, T, E, F, Fut>(
        &self,
        items: &[I],
        process_of: impl Fn(I) -> usize,
        call: F,
    ) -> Vec<(usize, Result<T, E>)>
    where
        I: Copy,
        F: Fn(I) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: From<PeerError>,
    {
        let call = &call;
        futures_util::stream::iter(items.iter().copied())
            .map(|item| {
                let p = process_of(item);
                async move {
                    // `call(item)` runs inside the guard too: a panic while
                    // making the future is the same as one while running it.
                    let guarded = AssertUnwindSafe(async move { call(item).await }).catch_unwind();
                    let result = guarded
                        .await
                        .unwrap_or_else(|_| Err(E::from(self.panicked(p))));
                    (p, result)
                }
            })
            .buffered(MAX_PARALLEL)
            .collect()
            .await
    }
}

/// A peer's streamed body, read from a plain thread: each read waits on the
/// runtime the stream was opened on, at most [`STREAM_READ_TIMEOUT`].
pub struct PeerReader {
    runtime: tokio::runtime::Handle,
    body: axum::body::BodyDataStream,
    chunk: Bytes,
}

impl Read for PeerReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            // The timer is made inside `block_on`, in the runtime's context.
            let body = &mut self.body;
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(STREAM_READ_TIMEOUT, body.next()).await });
            match next {
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "silent for {} s in the middle of its answer",
                            STREAM_READ_TIMEOUT.as_secs()
                        ),
                    ));
                }
                Ok(None) => return Ok(0),
                Ok(Some(Err(e))) => return Err(std::io::Error::other(e)),
                Ok(Some(Ok(data))) => self.chunk = data,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(workers: usize, query_urls: Vec<String>) -> ClusterShape {
        ClusterShape {
            processes: query_urls.len(),
            process: 0,
            workers,
            addresses: Vec::new(),
            query_urls,
        }
    }

    fn peers(n: usize) -> Peers {
        let urls = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1 + i))
            .collect();
        Peers::new(shape(2, urls), None, 1)
    }

    #[test]
    fn owners_follow_the_worker_shards() {
        let peers = peers(2);
        for i in 0..200 {
            let id = format!("profile:p{i}");
            let w = shard::worker(shard::node(&id), 4);
            assert_eq!(peers.owner_of(Key::Node(&id)), w / 2);
        }
    }

    /// One call that panics and one that fails are those processes' errors;
    /// every other answer stays with its process, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_or_panicking_call_is_its_own_process_error() {
        let five = peers(5);
        let peers = &five;
        let procs: Vec<usize> = (0..5).rev().collect();
        let answers = peers
            .fan_out(&procs, |p| async move {
                tokio::task::yield_now().await;
                match p {
                    1 => panic!("a bug while asking process 1"),
                    3 => Err(peers.unreachable(3, "connection refused")),
                    _ => Ok::<_, PeerError>(p * 10),
                }
            })
            .await;
        let got: Vec<(usize, Result<usize, usize>)> = answers
            .iter()
            .map(|(p, r)| (*p, r.as_ref().map(|v| *v).map_err(PeerError::process)))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, Ok(40)),
                (3, Err(3)),
                (2, Ok(20)),
                (1, Err(1)),
                (0, Ok(0))
            ]
        );
        let Err(e) = &answers[3].1 else {
            panic!("process 1 failed")
        };
        assert!(matches!(e, PeerError::Panicked { process: 1, .. }), "{e}");
        let api = ApiError::from(e.clone());
        assert_eq!(api.status, StatusCode::BAD_GATEWAY);
        assert!(
            api.message.contains("process 1 ") && api.message.contains("http://127.0.0.1:2"),
            "{}",
            api.message
        );
    }

    /// More calls than may run at once all complete, in order.
    #[tokio::test(flavor = "current_thread")]
    async fn fan_out_keeps_order_beyond_its_parallelism() {
        let peers = peers(2);
        let procs: Vec<usize> = (0..MAX_PARALLEL * 3).collect();
        let answers = peers
            .fan_out(&procs, |p| async move {
                tokio::time::sleep(Duration::from_millis((p % 3) as u64)).await;
                Ok::<_, PeerError>(p)
            })
            .await;
        assert!(
            answers
                .iter()
                .enumerate()
                .all(|(i, (p, r))| i == *p && r == &Ok(i))
        );
        assert!(
            peers
                .fan_out(&[], |p| async move { Ok::<_, PeerError>(p) })
                .await
                .is_empty()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_peer_that_is_not_there_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let urls = vec![
            "http://127.0.0.1:1".into(),
            format!("http://127.0.0.1:{port}"),
        ];
        let peers = Peers::new(shape(1, urls), None, 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        let e = peers
            .get(1, "/v1/status", deadline)
            .await
            .expect_err("refused");
        assert!(
            matches!(e, PeerError::Unreachable { process: 1, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
        let e = peers
            .get(1, "/v1/status", Instant::now())
            .await
            .expect_err("late");
        assert!(matches!(e, PeerError::Timeout { process: 1, .. }), "{e}");
    }
}
