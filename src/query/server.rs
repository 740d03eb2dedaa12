//! The server: the route table, the guard every request passes (URI length,
//! auth, request time, panics, freshness headers, metrics), the accept loop
//! and the [`Server`] handle. The state requests share is
//! [`App`](super::state::App), apart from the loop that serves it.
//!
//! Invariants: [`ROUTES`] is the one list of routes (the router is built
//! from it, `openapi.json` must match it, a test checks both ways); at most
//! `max_connections` connections are served (one more is answered 503 and
//! closed); headers must arrive within 10 s (else a 408, then closed); a
//! request that panics is a 500, not a dead server; a stopped server has
//! released its port.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures_util::FutureExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{Semaphore, watch};

use super::ServeConfig;
use super::error::{ApiError, QueryError};
use super::fresh::{COMMIT, COMMITS, FreshCache};
use super::live::LiveStatus;
use super::metrics::{CountsCache, Metrics};
use super::peers::Peers;
use super::reclaim::Reclaim;
use super::state::App;
use super::{export, routes};
use crate::store::Store;

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Page,
    Script,
    Style,
    Node,
    Edges,
    Identity,
    IdentityPath,
    Traverse,
    Neighbourhood,
    Search,
    Links,
    ClusterMembers,
    Export,
    Status,
    Metrics,
    Healthz,
    Readyz,
    OpenApi,
}

/// One route: method, path template (OpenAPI's `{name}` syntax), endpoint.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: &'static str, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Every route the server answers; `openapi.json` documents exactly these.
pub const ROUTES: &[Route] = &[
    route("GET", "/", Endpoint::Page),
    route("GET", "/assets/explorer.js", Endpoint::Script),
    route("GET", "/assets/explorer.css", Endpoint::Style),
    route("GET", "/v1/nodes/{type}/{id}", Endpoint::Node),
    route("GET", "/v1/edges/{edge_type}/{type}/{id}", Endpoint::Edges),
    route("GET", "/v1/identity/{type}/{id}", Endpoint::Identity),
    route(
        "GET",
        "/v1/identity/{type}/{id}/path/{type2}/{id2}",
        Endpoint::IdentityPath,
    ),
    route("POST", "/v1/traverse", Endpoint::Traverse),
    route(
        "GET",
        "/v1/neighbourhood/{type}/{id}",
        Endpoint::Neighbourhood,
    ),
    route("GET", "/v1/search", Endpoint::Search),
    route("GET", "/v1/links/{type}/{id}", Endpoint::Links),
    route("GET", "/v1/clusters/{type}/{id}", Endpoint::ClusterMembers),
    route("GET", "/v1/export", Endpoint::Export),
    route("GET", "/v1/status", Endpoint::Status),
    route("GET", "/metrics", Endpoint::Metrics),
    route("GET", "/healthz", Endpoint::Healthz),
    route("GET", "/readyz", Endpoint::Readyz),
    route("GET", "/openapi.json", Endpoint::OpenApi),
];

impl Endpoint {
    /// Open without a token: health probes and the explorer's static files
    /// (compiled in, no data; the page asks for the token for its API calls).
    fn public(self) -> bool {
        matches!(
            self,
            Endpoint::Healthz
                | Endpoint::Readyz
                | Endpoint::Page
                | Endpoint::Script
                | Endpoint::Style
        )
    }

    fn handler(self) -> MethodRouter<Arc<App>> {
        match self {
            Endpoint::Page => get(routes::page),
            Endpoint::Script => get(routes::script),
            Endpoint::Style => get(routes::style),
            Endpoint::Node => get(routes::node),
            Endpoint::Edges => get(routes::edges),
            Endpoint::Identity => get(routes::identity),
            Endpoint::IdentityPath => get(routes::identity_path),
            Endpoint::Traverse => post(routes::traverse),
            Endpoint::Neighbourhood => get(routes::neighbourhood),
            Endpoint::Search => get(routes::search),
            Endpoint::Links => get(routes::links),
            Endpoint::ClusterMembers => get(routes::cluster_members),
            Endpoint::Export => get(export::export),
            Endpoint::Status => get(routes::status),
            Endpoint::Metrics => get(routes::metrics),
            Endpoint::Healthz => get(routes::healthz),
            Endpoint::Readyz => get(routes::readyz),
            Endpoint::OpenApi => get(routes::openapi),
        }
    }
}

fn router(app: Arc<App>) -> Router {
    let mut r: Router<Arc<App>> = Router::new();
    for route in ROUTES {
        r = r.route(route.path, route.endpoint.handler());
    }
    r.fallback(routes::no_route)
        .method_not_allowed_fallback(routes::wrong_method)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Constant-time comparison (the token's length is not secret).
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs around every request.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let index = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| ROUTES.iter().position(|r| r.path == m.as_str()));
    let route = index.map(|i| &ROUTES[i]);
    let endpoint_label = route.map_or("unmatched", |r| r.path);
    let mut resp = check_and_run(&app, route, req, next).await;
    if !resp.headers().contains_key(COMMIT) {
        app.fresh.latest().apply(resp.headers_mut());
    }
    // In a cluster every answer says which processes it was read from; one
    // read here alone is this process's.
    if let Some(peers) = &app.peers
        && !resp.headers().contains_key(COMMITS)
    {
        let commit = resp
            .headers()
            .get(COMMIT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        if let Ok(v) = HeaderValue::from_str(&format!("{}={commit}", peers.me())) {
            resp.headers_mut().insert(COMMITS, v);
        }
    }
    app.metrics.observe(
        index,
        endpoint_label,
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

async fn check_and_run(app: &App, route: Option<&Route>, req: Request, next: Next) -> Response {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > app.config.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes; at most {} are allowed",
                app.config.max_uri_bytes
            ),
        )
        .into_response();
    }
    if let Some(token) = &app.config.auth_token
        && !route.is_some_and(|r| r.endpoint.public())
    {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        if !given.is_some_and(|g| same_token(g, token.as_bytes())) {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                if given.is_some() {
                    "wrong bearer token"
                } else {
                    "this server needs a bearer token"
                },
            )
            .with_hint("send `Authorization: Bearer <token>` (the token of --auth-token-file)")
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    let run = AssertUnwindSafe(next.run(req)).catch_unwind();
    match tokio::time::timeout(app.config.request_timeout, run).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(_)) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while answering (a bug; the server goes on)",
        )
        .into_response(),
        Err(_) => ApiError::timeout(app.config.request_timeout).into_response(),
    }
}

/// The state every request of a server shares.
fn app(
    store: Store,
    config: ServeConfig,
    live: Arc<dyn LiveStatus>,
) -> Result<Arc<App>, QueryError> {
    let peers = config.cluster.clone().filter(|c| c.processes > 1).map(|c| {
        let token = config.auth_token.clone();
        Arc::new(Peers::new(c, token, config.worker_threads))
    });
    let fresh = FreshCache::new(&store.read())?;
    let counts = Arc::new(CountsCache::default());
    Ok(Arc::new(App {
        exports: Arc::new(Semaphore::new(config.max_exports)),
        peers,
        metrics: Metrics::new(store.clone(), live.clone(), counts.clone(), ROUTES.len()),
        slots: Arc::new(Semaphore::new(config.max_connections)),
        store,
        config,
        live,
        fresh,
        counts,
        started: Instant::now(),
    }))
}

/// The router of a server over `store`, guard included, without a socket:
/// requests go through it in process (`rdg::fuzzing`). Call it from inside
/// a tokio runtime (the router spawns blocking reads).
#[doc(hidden)]
pub fn in_process_router(store: Store, config: ServeConfig) -> Result<Router, QueryError> {
    config.validate()?;
    Ok(router(app(store, config, Arc::new(super::StaticStatus))?))
}

/// A running server. Dropping it stops it like [`Server::stop`].
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<watch::Sender<bool>>,
    threads: Vec<std::thread::JoinHandle<Result<(), QueryError>>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// How long in-flight requests may take to finish when stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Server {
    /// Validates `config`, binds `config.listen` (port 0: any free port; see
    /// [`Server::addr`]) and serves `store` from `config.worker_threads`
    /// threads of its own (each a single-threaded tokio runtime accepting on
    /// the same socket), until stopped.
    /// Returns once the socket is bound, so a bind error is returned here.
    pub fn start(
        store: Store,
        config: ServeConfig,
        live: Arc<dyn LiveStatus>,
    ) -> Result<Server, QueryError> {
        config.validate()?;
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| QueryError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| QueryError::Bind {
            addr: config.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| QueryError::Bind { addr, source })?;
        let app = app(store, config, live)?;
        // Blocking threads run the multi-read queries (CPU) and, in a
        // cluster, wait on peers (I/O): a cluster gets more of them.
        let blocking_threads = 2 + if app.peers.is_some() { 32 } else { 0 };
        let threads = app.config.worker_threads;
        let (tx, rx) = watch::channel(false);
        let mut server = Server {
            addr,
            shutdown: Some(tx),
            threads: Vec::with_capacity(threads),
        };
        // One single-threaded runtime per thread, all accepting on the same
        // socket: a request never hops between threads, so no cross-thread
        // wake-ups on the hot path (calls to peers included: each thread, and
        // its blocking pool, calls them through a client of its own).
        for i in 0..threads {
            let listener = listener
                .try_clone()
                .map_err(|source| QueryError::Bind { addr, source })?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(blocking_threads)
                .thread_name("rdg-query-blocking")
                .on_thread_start(move || Peers::enter_thread(i))
                .enable_all()
                .build()
                .map_err(QueryError::Runtime)?;
            let (app, rx) = (app.clone(), rx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("rdg-query-{i}"))
                .spawn(move || {
                    Peers::enter_thread(i);
                    let result = runtime.block_on(serve(listener, app, rx, i == 0));
                    runtime.shutdown_timeout(Duration::from_secs(1));
                    result
                })
                .map_err(QueryError::Runtime)?;
            server.threads.push(thread);
        }
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (at most a few
    /// seconds), and waits for the server thread.
    pub fn stop(mut self) -> Result<(), QueryError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), QueryError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t.join().map_err(|_| QueryError::Panicked).and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            tracing::warn!("stopping the query server: {e}");
        }
    }
}

/// The accept loop, until `shutdown` turns true.
async fn serve(
    listener: std::net::TcpListener,
    app: Arc<App>,
    mut shutdown: watch::Receiver<bool>,
    count: bool,
) -> Result<(), QueryError> {
    let addr = listener.local_addr().map_err(|source| QueryError::Bind {
        addr: app.config.listen,
        source,
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| QueryError::Bind { addr, source })?;
    let counting = count.then(|| tokio::spawn(count_periodically(app.clone())));
    let service = router(app.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = app.slots.clone();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors and the like: back off a little.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Over max_connections: a 503, then closed.
                    tokio::spawn(refuse_busy(stream, app.config.max_connections));
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (stream, returned) = Reclaim::new(stream);
                let conn = http.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await
                        && e.is_timeout()
                        && let Some(stream) = returned.take()
                    {
                        // hyper gave up waiting for a request's headers.
                        refuse(stream, REQUEST_TIMEOUT, &request_timeout_body()).await;
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    if let Some(c) = counting {
        c.abort();
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(STOP_GRACE) => {}
    }
    Ok(())
}

/// How long a refused connection is kept to deliver its answer.
const REFUSE_LINGER: Duration = Duration::from_secs(1);

/// How long a request's headers may take to arrive (then: a 408).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

const BUSY: &str = "503 Service Unavailable\r\nretry-after: 1";
const REQUEST_TIMEOUT: &str = "408 Request Timeout";

fn request_timeout_body() -> String {
    format!(
        "{{\"error\":\"the request's headers did not arrive within {} s\"}}",
        HEADER_TIMEOUT.as_secs()
    )
}

/// Answers a connection over `max_connections` with a 503 and closes it.
async fn refuse_busy(stream: tokio::net::TcpStream, max: usize) {
    let body = format!(
        "{{\"error\":\"the server has {max} connections open, its limit; try again later\"}}"
    );
    refuse(stream, BUSY, &body).await;
}

/// Answers `status` (the status line's code and reason, and any extra
/// header lines) with a JSON `body` and closes the connection. What the
/// client sent is read (at most [`REFUSE_LINGER`]) before the close, so
/// that the kernel does not reset the connection and lose the answer.
async fn refuse(mut stream: tokio::net::TcpStream, status: &str, body: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSE_LINGER, answer).await;
}

/// Recounts the per-namespace sizes when status or metrics asked for them,
/// at most once per `counts_interval`.
async fn count_periodically(app: Arc<App>) {
    loop {
        app.counts.wanted().await;
        let a = app.clone();
        let _ = tokio::task::spawn_blocking(move || a.counts.refresh(&a.store)).await;
        tokio::time::sleep(app.config.counts_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"ab"));
    }

    /// `openapi.json` documents every route of [`ROUTES`], and nothing else.
    #[test]
    fn openapi_matches_the_routes() {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("openapi.json")).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        let mut documented = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                assert!(op["responses"].is_object(), "{method} {path} has responses");
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let routed: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        assert_eq!(documented, routed);
    }

    #[test]
    fn routes_are_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path),
                    "{} {} twice",
                    a.method,
                    a.path
                );
            }
        }
    }
}
