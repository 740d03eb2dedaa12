//! The other processes of a cluster, as seen by one process's query
//! server: who owns a key ([`Peers::owner_of`]), HTTP calls to a peer with a
//! deadline (blocking, [`Peers::get`], for reads made from the blocking
//! pool; async, [`Peers::get_async`], for a single forwarded lookup on the
//! event loop), calls to several peers at once ([`parallel`]), and the
//! freshness of answers read on several processes ([`FreshSet`]).
//!
//! Invariants:
//! - **No loops.** Every call carries `X-Rdg-Local: 1`; a server that sees
//!   it answers from its own store only and never calls a peer. So a
//!   request crosses at most one process boundary.
//! - **No hangs.** Every call has a deadline (connect, then the whole
//!   exchange, or for a stream each read); a peer that is down, refuses, or
//!   does not answer in time is a [`PeerError`] naming the process and its
//!   address (502, or 504 for time), never a wait beyond the request's time.
//! - Blocking calls run on the caller's thread (the server's blocking pool),
//!   so they never hold up the event loop; answers to internal calls never
//!   wait for the blocking pool, so two processes calling each other cannot
//!   deadlock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::ClusterView;
use super::error::ApiError;
use super::fresh::{COMMIT, OFFSETS, WATERMARK};
use crate::model::shard;

/// Sent on every call to a peer: answer from your own store only.
pub const LOCAL: HeaderName = HeaderName::from_static("x-rdg-local");
/// On answers put together by a process of a cluster: `process=commit`
/// pairs of every process whose store the answer was read from.
pub const COMMITS: HeaderName = HeaderName::from_static("x-rdg-commits");

/// The longest a connection to a peer may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a streamed answer (an export) may stay silent.
pub const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Calls in flight at once from one request (a traversal hop, a fan-out).
pub const MAX_PARALLEL: usize = 16;
/// The largest answer body read from a peer.
const MAX_BODY: u64 = 256 << 20;

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
    pub content_type: Option<String>,
    pub body: Vec<u8>,
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

/// The freshness of what one process answered, read back from its
/// `X-Rdg-Commit`, `X-Rdg-Watermark` and `X-Rdg-Offsets` headers (items
/// kept in their header-safe form).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFresh {
    pub commit: u64,
    /// dataflow -> watermark (epoch ms).
    pub watermarks: BTreeMap<String, i64>,
    /// `dataflow/partition` -> next position.
    pub offsets: BTreeMap<String, u64>,
}

fn pairs<V: std::str::FromStr>(text: &str) -> BTreeMap<String, V> {
    text.split(',')
        .filter_map(|item| {
            let (k, v) = item.rsplit_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

impl ProcessFresh {
    /// From an answer's headers (missing or odd items are left out).
    pub fn from_headers(h: &HeaderMap) -> ProcessFresh {
        let text = |name: &HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        ProcessFresh {
            commit: text(&COMMIT).parse().unwrap_or(0),
            watermarks: pairs(&text(&WATERMARK)),
            offsets: pairs(&text(&OFFSETS)),
        }
    }

    /// The largest watermark of any dataflow.
    pub fn max_watermark(&self) -> Option<i64> {
        self.watermarks.values().copied().max()
    }
}

/// The freshness of an answer read on several processes: per process, the
/// newest state any of its reads saw.
#[derive(Clone, Debug, Default)]
pub struct FreshSet {
    by_process: BTreeMap<usize, ProcessFresh>,
}

impl FreshSet {
    pub fn add(&mut self, process: usize, f: ProcessFresh) {
        match self.by_process.get(&process) {
            Some(old) if old.commit >= f.commit => {}
            _ => {
                self.by_process.insert(process, f);
            }
        }
    }

    pub fn merge(&mut self, other: FreshSet) {
        for (p, f) in other.by_process {
            self.add(p, f);
        }
    }

    /// The largest watermark of any dataflow on any process.
    pub fn max_watermark(&self) -> Option<i64> {
        self.by_process
            .values()
            .filter_map(ProcessFresh::max_watermark)
            .max()
    }

    /// Sets the freshness headers of a cluster answer:
    /// - `X-Rdg-Commits`: `process=commit` of each process read;
    /// - `X-Rdg-Commit`: the sum of those commit counts (it grows with every
    ///   commit of any of them; equal per-process counts mean equal data);
    /// - `X-Rdg-Watermark`: per dataflow, the smallest watermark among the
    ///   processes that have one (every process has read at least that far);
    /// - `X-Rdg-Offsets`: every process's stored offsets (each partition is
    ///   read by one worker, so they do not overlap).
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut commits = Vec::new();
        let mut sum = 0u64;
        let mut watermarks: BTreeMap<&str, i64> = BTreeMap::new();
        let mut offsets: BTreeMap<&str, u64> = BTreeMap::new();
        for (p, f) in &self.by_process {
            commits.push(format!("{p}={}", f.commit));
            sum = sum.saturating_add(f.commit);
            for (d, w) in &f.watermarks {
                let e = watermarks.entry(d).or_insert(*w);
                *e = (*e).min(*w);
            }
            for (k, n) in &f.offsets {
                let e = offsets.entry(k).or_insert(*n);
                *e = (*e).min(*n);
            }
        }
        let join = |items: Vec<String>| {
            HeaderValue::from_str(&items.join(",")).unwrap_or(HeaderValue::from_static(""))
        };
        h.insert(COMMIT, HeaderValue::from(sum));
        h.insert(COMMITS, join(commits));
        h.insert(
            WATERMARK,
            join(watermarks.iter().map(|(d, w)| format!("{d}={w}")).collect()),
        );
        h.insert(
            OFFSETS,
            join(offsets.iter().map(|(k, n)| format!("{k}={n}")).collect()),
        );
    }
}

/// Idle keep-alive connections kept per peer for [`Peers::get_async`].
const MAX_IDLE_ASYNC: usize = 64;

type Sender = hyper::client::conn::http1::SendRequest<axum::body::Body>;

/// This process's view of its cluster, and the clients it calls peers with:
/// blocking (`ureq`, for reads made from the blocking pool: fan-outs,
/// traversals, exports) and async (hyper, on the event loop, for the
/// single forwarded lookup, the most frequent call).
pub struct Peers {
    view: ClusterView,
    token: Option<String>,
    agent: ureq::Agent,
    stream_agent: ureq::Agent,
    /// Per process, idle async connections.
    idle: Vec<std::sync::Mutex<Vec<Sender>>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("view", &self.view)
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

impl Peers {
    /// `token`: the bearer token every process of the cluster shares.
    pub fn new(view: ClusterView, token: Option<String>) -> Peers {
        let agent = |per_read: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_per_read(per_read)
                .max_idle_connections(256)
                .max_idle_connections_per_host(64)
                .user_agent("rdg-peer")
                .build()
                .into()
        };
        Peers {
            idle: view
                .peers
                .iter()
                .map(|_| std::sync::Mutex::new(Vec::new()))
                .collect(),
            view,
            token,
            agent: agent(None),
            stream_agent: agent(Some(STREAM_READ_TIMEOUT)),
        }
    }

    fn unreachable(&self, process: usize, detail: impl std::fmt::Display) -> PeerError {
        PeerError::Unreachable {
            process,
            url: self.url(process).to_string(),
            detail: detail.to_string(),
        }
    }

    /// A new async connection to `process`.
    async fn connect(&self, process: usize) -> Result<Sender, PeerError> {
        let authority = self.url(process).trim_start_matches("http://").to_string();
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&authority))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(self.unreachable(process, e)),
                Err(_) => {
                    return Err(PeerError::Timeout {
                        process,
                        url: self.url(process).to_string(),
                        ms: CONNECT_TIMEOUT.as_millis(),
                    });
                }
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| self.unreachable(process, e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn take_idle(&self, process: usize) -> Option<Sender> {
        let mut idle = self
            .idle
            .get(process)?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, process: usize, sender: Sender) {
        if let Some(idle) = self.idle.get(process) {
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE_ASYNC {
                idle.push(sender);
            }
        }
    }

    /// One exchange on `sender`; the sender back when it can be reused.
    async fn exchange(
        &self,
        process: usize,
        mut sender: Sender,
        path_and_query: &str,
    ) -> Result<(PeerAnswer, Sender), String> {
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut req = axum::http::Request::get(path_and_query)
            .header(
                axum::http::header::HOST,
                self.url(process).trim_start_matches("http://"),
            )
            .header(LOCAL, "1");
        if let Some(t) = &self.token {
            req = req.header(axum::http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| axum::http::Request::new(axum::body::Body::empty()));
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(axum::body::Body::new(body), MAX_BODY as usize)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_vec();
        Ok((
            PeerAnswer {
                process,
                status: parts.status.as_u16(),
                fresh: ProcessFresh::from_headers(&parts.headers),
                content_type: parts
                    .headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body,
            },
            sender,
        ))
    }

    /// [`Peers::get`] on the event loop, over kept-alive connections: a
    /// connection the peer closed meanwhile is replaced once.
    pub async fn get_async(
        &self,
        process: usize,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<PeerAnswer, PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let work = async {
            if let Some(sender) = self.take_idle(process)
                && let Ok((answer, sender)) = self.exchange(process, sender, path_and_query).await
            {
                self.put_idle(process, sender);
                return Ok(answer);
            }
            let sender = self.connect(process).await?;
            let (answer, sender) = self
                .exchange(process, sender, path_and_query)
                .await
                .map_err(|e| self.unreachable(process, e))?;
            self.put_idle(process, sender);
            Ok(answer)
        };
        match tokio::time::timeout(left, work).await {
            Ok(r) => r,
            Err(_) => Err(PeerError::Timeout {
                process,
                url: self.url(process).to_string(),
                ms: left.as_millis(),
            }),
        }
    }

    /// This process's index.
    pub fn me(&self) -> usize {
        self.view.process
    }

    /// The number of processes.
    pub fn processes(&self) -> usize {
        self.view.peers.len()
    }

    /// Every process, in order.
    pub fn all(&self) -> Vec<usize> {
        (0..self.processes()).collect()
    }

    /// The base URL of `process`.
    pub fn url(&self, process: usize) -> &str {
        self.view.peers.get(process).map_or("?", String::as_str)
    }

    /// The process whose workers own `key` (see `model::shard`).
    pub fn owner_of(&self, key: Key<'_>) -> usize {
        let hash = match key {
            Key::Node(id) => shard::node(id),
            Key::OutEdges { edge_type, from } => shard::edge(edge_type, from),
        };
        let workers = self.view.workers.max(1);
        shard::worker(hash, self.processes() * workers) / workers
    }

    fn request(
        &self,
        agent: &ureq::Agent,
        process: usize,
        path_and_query: &str,
        timeout: Option<Duration>,
    ) -> Result<ureq::http::Response<ureq::Body>, PeerError> {
        let url = format!("{}{path_and_query}", self.url(process));
        let mut req = agent
            .get(&url)
            .config()
            .timeout_per_call(timeout)
            .build()
            .header(LOCAL.as_str(), "1");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        req.call().map_err(|e| self.call_error(process, e, timeout))
    }

    fn call_error(&self, process: usize, e: ureq::Error, timeout: Option<Duration>) -> PeerError {
        let url = self.url(process).to_string();
        match e {
            ureq::Error::Timeout(_) => PeerError::Timeout {
                process,
                url,
                ms: timeout.unwrap_or(STREAM_READ_TIMEOUT).as_millis(),
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                PeerError::Timeout {
                    process,
                    url,
                    ms: timeout.unwrap_or(STREAM_READ_TIMEOUT).as_millis(),
                }
            }
            other => PeerError::Unreachable {
                process,
                url,
                detail: other.to_string(),
            },
        }
    }

    /// GET `path_and_query` from `process` (never this one), answered from
    /// its own store, by `deadline`.
    pub fn get(
        &self,
        process: usize,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<PeerAnswer, PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PeerError::Timeout {
                process,
                url: self.url(process).to_string(),
                ms: 0,
            });
        }
        let mut resp = self.request(&self.agent, process, path_and_query, Some(left))?;
        let status = resp.status().as_u16();
        let fresh = ProcessFresh::from_headers(resp.headers());
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.call_error(process, e, Some(left)))?;
        Ok(PeerAnswer {
            process,
            status,
            fresh,
            content_type,
            body,
        })
    }

    /// Starts a streamed GET (an export): returns once the headers are in
    /// (by `deadline`); then each read of the body may take at most
    /// [`STREAM_READ_TIMEOUT`]. A status other than 200 is an error.
    pub fn stream(
        &self,
        process: usize,
        path_and_query: &str,
        deadline: Instant,
    ) -> Result<(ProcessFresh, ureq::BodyReader<'static>), PeerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let url = format!("{}{path_and_query}", self.url(process));
        let mut req = self
            .stream_agent
            .get(&url)
            .config()
            .timeout_recv_response(Some(left))
            .build()
            .header(LOCAL.as_str(), "1");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .call()
            .map_err(|e| self.call_error(process, e, Some(left)))?;
        let status = resp.status().as_u16();
        let fresh = ProcessFresh::from_headers(resp.headers());
        if status != 200 {
            let content_type = None;
            let body = resp
                .into_body()
                .with_config()
                .limit(1 << 16)
                .read_to_vec()
                .unwrap_or_default();
            let answer = PeerAnswer {
                process,
                status,
                fresh: fresh.clone(),
                content_type,
                body,
            };
            return Err(answer.failed(self));
        }
        Ok((fresh, resp.into_body().into_reader()))
    }
}

/// Runs `f` on every item with up to `threads` threads at once (the caller's
/// among them); results in the order of `items`.
pub fn parallel<T, R, F>(items: &[T], threads: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(&f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return done;
            };
            done.push((i, f(item)));
        }
    };
    let mut all: Vec<(usize, R)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A helper that panicked lost its items; the caller sees fewer
            // results and reports it below.
            if let Ok(mut d) = h.join() {
                all.append(&mut d);
            }
        }
        all
    });
    all.sort_unstable_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_the_worker_shards() {
        let peers = Peers::new(
            ClusterView {
                process: 0,
                workers: 2,
                peers: vec!["http://a".into(), "http://b".into()],
            },
            None,
        );
        for i in 0..200 {
            let id = format!("profile:p{i}");
            let w = shard::worker(shard::node(&id), 4);
            assert_eq!(peers.owner_of(Key::Node(&id)), w / 2);
        }
    }

    #[test]
    fn parallel_keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        assert_eq!(
            parallel(&items, 7, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert!(parallel(&[] as &[u32], 4, |x| *x).is_empty());
    }

    #[test]
    fn fresh_set_merges_processes() {
        let mut h = HeaderMap::new();
        h.insert(COMMIT, HeaderValue::from_static("5"));
        h.insert(WATERMARK, HeaderValue::from_static("login=7,playback=10"));
        h.insert(OFFSETS, HeaderValue::from_static("playback/0=3"));
        let a = ProcessFresh::from_headers(&h);
        assert_eq!(a.commit, 5);
        assert_eq!(a.max_watermark(), Some(10));
        let mut h2 = HeaderMap::new();
        h2.insert(COMMIT, HeaderValue::from_static("2"));
        h2.insert(WATERMARK, HeaderValue::from_static("playback=8"));
        h2.insert(OFFSETS, HeaderValue::from_static("playback/1=4"));
        let mut set = FreshSet::default();
        set.add(0, a);
        set.add(1, ProcessFresh::from_headers(&h2));
        let mut out = HeaderMap::new();
        set.apply(&mut out);
        assert_eq!(out[&COMMIT], "7");
        assert_eq!(out[&COMMITS], "0=5,1=2");
        assert_eq!(out[&WATERMARK], "login=7,playback=8");
        assert_eq!(out[&OFFSETS], "playback/0=3,playback/1=4");
        assert_eq!(set.max_watermark(), Some(10));
    }
}
