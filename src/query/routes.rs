//! The handlers, one per route of [`ROUTES`](super::ROUTES): check the
//! input ([`params`](super::params)), read through one view, answer JSON
//! with the freshness headers of what was read. Each returns
//! `Result<answer, ApiError>` and checks with `?`.
//!
//! Invariant: a handler reads the store only through a single
//! [`ReadView`](crate::store::ReadView) ([`App::read`]) and attaches that
//! view's freshness, to its errors too; multi-read endpoints (identity
//! path, traversal, neighbourhood) run on the blocking pool with a deadline
//! so they cannot hold up the event loop for longer than a request may take.
//!
//! In a cluster (and unless a peer asks, `X-Rdg-Local`), input is checked
//! here first, then the handler asks the processes that hold the answer
//! (module `cluster`), with a deadline, and attaches the freshness of every
//! process it read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, Method, StatusCode, Uri, header};
use serde::{Deserialize, Serialize};

use super::ServeConfig;
use super::cluster::{self, MembersOut, PeerReads, Spread};
use super::error::ApiError;
use super::fresh::{FreshSet, Freshness};
use super::graph::{self, Hop, IdentityPath, Traversal, ViewReads};
use super::metrics::NamespaceCounts;
use super::neighbourhood::{self, NeighbourhoodOut, NodeOut};
use super::params::{self, Params};
use super::peers::{Key, Peers};
use super::respond::{Answer, Reply};
use super::state::{App, Caller, blocking};
use crate::store::{Direction, EdgeCursor, EdgePage, EdgeQuery, EdgeView, IdentityView};

type Shared = State<Arc<App>>;
/// A path's `{type}/{id}`.
type IdentPath = Result<Path<(String, String)>, PathRejection>;
/// A handler's answer.
type Result<T, E = ApiError> = std::result::Result<T, E>;

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/explorer.js");
const PAGE_CSS: &str = include_str!("page/explorer.css");
const OPENAPI: &str = include_str!("openapi.json");

/// The longest cursor accepted (an encoded identifier of `max_id_bytes`).
fn max_cursor_len(app: &App) -> usize {
    (app.config.max_id_bytes + 9).div_ceil(3) * 4 + 4
}

fn path_error(r: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {}", r.body_text()))
}

/// Asks `owner` the same request (path and query) and hands its answer back
/// (on the event loop: one call, no blocking).
async fn forward<T>(app: &App, peers: &Peers, owner: usize, uri: &Uri) -> Result<Reply<T>> {
    let target = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let resp = cluster::relay(peers, owner, target, app.deadline()).await?;
    Ok(Reply::Relayed(resp))
}

/// Checks a route whose only input is a `{type}/{id}` path: no query
/// parameters, an identifier within bounds.
fn ident_only(config: &ServeConfig, p: IdentPath, raw: Option<&str>) -> Result<String> {
    Params::parse(raw, &[])?;
    let Path((t, id)) = p.map_err(path_error)?;
    params::ident(&t, &id, config.max_id_bytes)
}

pub async fn node(
    State(app): Shared,
    caller: Caller,
    uri: Uri,
    p: IdentPath,
    RawQuery(raw): RawQuery,
) -> Result<Reply<NodeOut>> {
    let ident = ident_only(&app.config, p, raw.as_deref())?;
    if let Some(peers) = app.coordinator(caller)
        && let Some(owner) = cluster::owner(&peers, Key::Node(&ident))
    {
        return forward(&app, &peers, owner, &uri).await;
    }
    let answer = app.read(|view| {
        let node = view.node(&ident)?;
        node.map(NodeOut::of)
            .ok_or_else(|| ApiError::not_found(format!("not found: {ident}")))
    })?;
    Ok(answer.into())
}

/// A page of a neighbour list.
#[derive(Serialize)]
pub struct EdgesOut {
    node: String,
    edge_type: String,
    direction: Direction,
    items: Vec<EdgeView>,
    next_cursor: Option<String>,
}

/// A page of a neighbour list or a link list, checked: query and cursor.
fn page_query(
    app: &App,
    q: &Params,
    direction: Direction,
) -> Result<(EdgeQuery, Option<EdgeCursor>)> {
    let order = params::choice("order", q.get("order"))?;
    let limit = q.int_in("limit", 1, app.config.max_limit, app.config.default_limit)?;
    let since = q.time("since")?;
    let cursor = match q.get("cursor") {
        None | Some("") => None,
        Some(c) if c.len() > max_cursor_len(app) => {
            return Err(ApiError::bad_request(format!(
                "`cursor` may be at most {} characters, got {}",
                max_cursor_len(app),
                c.len()
            )));
        }
        Some(c) => {
            let c = EdgeCursor::decode(c)?;
            if c.order() != order {
                return Err(ApiError::bad_request(format!(
                    "`cursor` was made for order={}, but this request asks for order={}",
                    c.order().as_str(),
                    order.as_str()
                ))
                .with_hint("keep the same query parameters while paging"));
            }
            Some(c)
        }
    };
    let query = EdgeQuery {
        direction,
        limit: Some(limit),
        since,
        order,
    };
    Ok((query, cursor))
}

pub async fn edges(
    State(app): Shared,
    caller: Caller,
    uri: Uri,
    p: Result<Path<(String, String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Reply<EdgesOut>> {
    let Path((edge_type, t, id)) = p.map_err(path_error)?;
    params::name("an edge type", &edge_type, app.config.max_id_bytes)?;
    let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
    let allowed = ["direction", "limit", "since", "order", "cursor"];
    let q = Params::parse(raw.as_deref(), &allowed)?;
    let direction = params::choice("direction", q.get("direction"))?;
    let (eq, cursor) = page_query(&app, &q, direction)?;
    let out = |page: EdgePage, node: String, edge_type: String| EdgesOut {
        node,
        edge_type,
        direction,
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    };
    if let Some(peers) = app.coordinator(caller) {
        if direction == Direction::Out {
            let key = Key::OutEdges {
                edge_type: &edge_type,
                from: &ident,
            };
            if let Some(owner) = cluster::owner(&peers, key) {
                return forward(&app, &peers, owner, &uri).await;
            }
        } else {
            let what = Spread::InEdges {
                edge_type: &edge_type,
                id: &ident,
            };
            let (page, fresh) =
                cluster::spread_page(&app, &peers, what, &eq, cursor.as_ref(), app.deadline())
                    .await
                    .map_err(|e| app.graph_error(e))?;
            let body = out(page, ident, edge_type);
            return Ok(Answer::new(body, Freshness::Cluster(fresh)).into());
        }
    }
    let page = app.read(|view| Ok(view.edges_page(&edge_type, &ident, &eq, cursor.as_ref())?))?;
    Ok(page.map(|page| out(page, ident, edge_type)).into())
}

/// A page of a link list.
#[derive(Serialize)]
pub struct LinksOut {
    node: String,
    items: Vec<EdgeView>,
    next_cursor: Option<String>,
}

/// The identity links of an identifier, a page at a time.
pub async fn links(
    State(app): Shared,
    caller: Caller,
    p: IdentPath,
    RawQuery(raw): RawQuery,
) -> Result<Answer<LinksOut>> {
    let Path((t, id)) = p.map_err(path_error)?;
    let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
    let q = Params::parse(raw.as_deref(), &["limit", "since", "order", "cursor"])?;
    let (eq, cursor) = page_query(&app, &q, Direction::Out)?;
    let out = |page: EdgePage, node: String| LinksOut {
        node,
        items: page.items,
        next_cursor: page.next.map(|c| c.encode()),
    };
    if let Some(peers) = app.coordinator(caller) {
        let what = Spread::Links { id: &ident };
        let (page, fresh) =
            cluster::spread_page(&app, &peers, what, &eq, cursor.as_ref(), app.deadline())
                .await
                .map_err(|e| app.graph_error(e))?;
        return Ok(Answer::new(out(page, ident), Freshness::Cluster(fresh)));
    }
    let page = app.read(|view| Ok(view.links_page(&ident, &eq, cursor.as_ref())?))?;
    Ok(page.map(|page| out(page, ident)))
}

fn no_cluster(ident: &str) -> ApiError {
    ApiError::not_found(format!("no cluster {ident}"))
        .with_hint("a cluster's id is one of its members: GET /v1/identity/{type}/{id} names it")
}

/// The members of a cluster, by the cluster's id.
pub async fn cluster_members(
    State(app): Shared,
    caller: Caller,
    p: IdentPath,
    RawQuery(raw): RawQuery,
) -> Result<Answer<MembersOut>> {
    let ident = ident_only(&app.config, p, raw.as_deref())?;
    let found = |members: Vec<String>, cluster: String| {
        if members.is_empty() {
            Err(no_cluster(&cluster))
        } else {
            Ok(MembersOut { cluster, members })
        }
    };
    if let Some(peers) = app.coordinator(caller) {
        let mut fresh = FreshSet::default();
        let members = cluster::members(&app, &peers, &ident, app.deadline(), &mut fresh).await;
        let members = members.map_err(|e| app.graph_error(e));
        return Answer::of(
            members.and_then(|m| found(m, ident)),
            Freshness::Cluster(fresh),
        );
    }
    app.read(|view| found(view.cluster_members(&ident)?, ident.clone()))
}

fn no_identity(ident: &str) -> ApiError {
    ApiError::not_found(format!("no identity entry for {ident}"))
        .with_hint("an identifier has one once it shares a live identity link")
}

pub async fn identity(
    State(app): Shared,
    caller: Caller,
    p: IdentPath,
    RawQuery(raw): RawQuery,
) -> Result<Answer<IdentityView>> {
    let ident = ident_only(&app.config, p, raw.as_deref())?;
    if let Some(peers) = app.coordinator(caller) {
        let mut fresh = FreshSet::default();
        let entry = cluster::identity(&app, &peers, &ident, app.deadline(), &mut fresh).await;
        let entry = entry
            .map_err(|e| app.graph_error(e))
            .and_then(|v| v.ok_or_else(|| no_identity(&ident)));
        return Answer::of(entry, Freshness::Cluster(fresh));
    }
    app.read(|view| view.identity(&ident)?.ok_or_else(|| no_identity(&ident)))
}

pub async fn identity_path(
    State(app): Shared,
    caller: Caller,
    p: Result<Path<(String, String, String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Answer<IdentityPath>> {
    Params::parse(raw.as_deref(), &[])?;
    let Path((t, id, t2, id2)) = p.map_err(path_error)?;
    let from = params::ident(&t, &id, app.config.max_id_bytes)?;
    let to = params::ident(&t2, &id2, app.config.max_id_bytes)?;
    let peers = app.coordinator(caller);
    blocking(move || {
        let deadline = app.deadline();
        let max = app.config.max_path_visits;
        if let Some(peers) = peers {
            let mut reads = PeerReads::new(&app, &peers, deadline);
            let path = graph::identity_path(&mut reads, &from, &to, max);
            let path = path.map_err(|e| app.graph_error(e));
            return Answer::of(path, Freshness::Cluster(reads.fresh));
        }
        app.read(|view| {
            let mut reads = ViewReads { view, deadline };
            graph::identity_path(&mut reads, &from, &to, max).map_err(|e| app.graph_error(e))
        })
    })
    .await
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraverseRequest {
    start: String,
    hops: Vec<HopRequest>,
    limit: Option<u64>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HopRequest {
    edge_type: String,
    direction: Option<String>,
    since: Option<i64>,
    limit: Option<u64>,
}

/// A traversal, checked, with its defaults filled in.
struct TraversePlan {
    start: String,
    hops: Vec<Hop>,
    limit: usize,
}

/// Checks a traversal request and fills in the defaults; `default_since`
/// applies to hops without `since`.
fn traverse_plan(
    app: &App,
    req: TraverseRequest,
    default_since: Option<i64>,
) -> Result<TraversePlan> {
    let c = &app.config;
    let start = params::ident_str("`start`", &req.start, c.max_id_bytes)?;
    if req.hops.is_empty() || req.hops.len() > c.max_hops {
        return Err(ApiError::bad_request(format!(
            "`hops` must list 1 to {} hops, got {}",
            c.max_hops,
            req.hops.len()
        )));
    }
    let limit = match req.limit {
        None => c.default_traverse_limit,
        Some(n) => params::int_in("limit", &n.to_string(), 1, c.max_traverse_limit)?,
    };
    let mut hops = Vec::with_capacity(req.hops.len());
    for (i, h) in req.hops.into_iter().enumerate() {
        let at = |e: ApiError| ApiError {
            message: format!("hops[{i}]: {}", e.message),
            ..e
        };
        params::name("`edge_type`", &h.edge_type, c.max_id_bytes).map_err(at)?;
        let direction = params::choice("direction", h.direction.as_deref()).map_err(at)?;
        let limit = match h.limit {
            None => c.default_edges_per_hop,
            Some(n) => {
                params::int_in("limit", &n.to_string(), 1, c.max_edges_per_hop).map_err(at)?
            }
        };
        hops.push(Hop {
            edge_type: h.edge_type,
            direction,
            since: h.since.or(default_since),
            limit,
        });
    }
    Ok(TraversePlan { start, hops, limit })
}

/// The default `since` of hops: `default_lookback` before the largest
/// watermark.
fn lookback(app: &App, watermark: Option<i64>) -> Option<i64> {
    let back = app.config.default_lookback?;
    let back = i64::try_from(back.as_millis()).unwrap_or(i64::MAX);
    Some(watermark?.saturating_sub(back))
}

pub async fn traverse(State(app): Shared, caller: Caller, body: Body) -> Result<Answer<Traversal>> {
    let bytes: Bytes = axum::body::to_bytes(body, app.config.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (or was cut off)",
                    app.config.max_body_bytes
                ),
            )
        })?;
    let req: TraverseRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("bad traversal request: {e}")).with_hint(
            r#"send {"start":"type:id","hops":[{"edge_type":"...","direction":"out|in","since":MS,"limit":N}],"limit":N}"#,
        )
    })?;
    let peers = app.coordinator(caller);
    blocking(move || match peers {
        Some(peers) => traverse_cluster(&app, &peers, req),
        None => traverse_local(&app, req),
    })
    .await
}

/// A traversal through one view of this process's store.
fn traverse_local(app: &App, req: TraverseRequest) -> Result<Answer<Traversal>> {
    let deadline = app.deadline();
    let view = app.store.read();
    let fresh = app.fresh.of(&view)?;
    let plan = traverse_plan(app, req, lookback(app, fresh.max_watermark));
    let walk = plan.and_then(|plan| {
        let mut reads = ViewReads {
            view: &view,
            deadline,
        };
        graph::traverse(&mut reads, &plan.start, &plan.hops, plan.limit)
            .map_err(|e| app.graph_error(e))
    });
    Answer::of(walk, Freshness::Local(fresh))
}

/// A traversal over the whole cluster: bad input is a 400 before any peer
/// is asked; the default `since` comes from the largest watermark of any
/// process.
fn traverse_cluster(app: &App, peers: &Peers, req: TraverseRequest) -> Result<Answer<Traversal>> {
    traverse_plan(app, req.clone(), None)?;
    let mut reads = PeerReads::new(app, peers, app.deadline());
    let walk = walk_cluster(app, &mut reads, req);
    Answer::of(walk, Freshness::Cluster(reads.fresh))
}

fn walk_cluster(app: &App, reads: &mut PeerReads<'_>, req: TraverseRequest) -> Result<Traversal> {
    let (peers, deadline) = (reads.peers, reads.deadline);
    let watermark = reads
        .runtime
        .block_on(cluster::max_watermark(
            app,
            peers,
            deadline,
            &mut reads.fresh,
        ))
        .map_err(|e| app.graph_error(e))?;
    let plan = traverse_plan(app, req, lookback(app, watermark))?;
    graph::traverse(reads, &plan.start, &plan.hops, plan.limit).map_err(|e| app.graph_error(e))
}

pub async fn neighbourhood(
    State(app): Shared,
    caller: Caller,
    p: IdentPath,
    RawQuery(raw): RawQuery,
) -> Result<Answer<NeighbourhoodOut>> {
    let Path((t, id)) = p.map_err(path_error)?;
    let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
    let q = Params::parse(raw.as_deref(), &["limit"])?;
    let default = 20.min(app.config.max_limit);
    let limit = q.int_in("limit", 1, app.config.max_limit, default)?;
    match app.coordinator(caller) {
        Some(peers) => neighbourhood::cluster(&app, &peers, &ident, limit).await,
        // A peer's request is answered inline, never queued behind this
        // process's own requests on the blocking pool (they may be waiting
        // for that peer).
        None if app.peers.is_some() => neighbourhood::local(&app, &ident, limit),
        None => blocking(move || neighbourhood::local(&app, &ident, limit)).await,
    }
}

#[derive(Serialize)]
pub struct SearchOut {
    q: String,
    items: Vec<String>,
}

pub async fn search(
    State(app): Shared,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Answer<SearchOut>> {
    let q = Params::parse(raw.as_deref(), &["q", "limit"])?;
    let text = q.get("q").unwrap_or("").to_string();
    if text.is_empty() || text.len() > app.config.max_id_bytes {
        return Err(ApiError::bad_request(format!(
            "`q` must be 1 to {} bytes: an identifier prefix, `type:id-prefix` or `id-prefix`",
            app.config.max_id_bytes
        )));
    }
    let default = 20.min(app.config.max_limit);
    let limit = q.int_in("limit", 1, app.config.max_limit, default)?;
    if let Some(peers) = app.coordinator(caller) {
        let (items, fresh) = cluster::search(&app, &peers, &text, limit, app.deadline())
            .await
            .map_err(|e| app.graph_error(e))?;
        return Ok(Answer::new(
            SearchOut { q: text, items },
            Freshness::Cluster(fresh),
        ));
    }
    let items = app.read(|view| Ok(view.search(&text, limit)?))?;
    Ok(items.map(|items| SearchOut { q: text, items }))
}

#[derive(Serialize)]
pub struct DataflowStatus {
    events: u64,
    late: u64,
    dead_letters: u64,
    watermark: Option<i64>,
    /// partition -> next position (line or offset) stored.
    offsets: BTreeMap<String, u64>,
    lag: Option<i64>,
    /// Kafka offsets this run's sources went past without a record.
    skipped_offsets: u64,
    ingest_rate: f64,
}

#[derive(Serialize)]
pub struct StatusOut {
    version: &'static str,
    mode: String,
    ready: bool,
    uptime_s: u64,
    commit: u64,
    dataflows: BTreeMap<String, DataflowStatus>,
    counts: Option<NamespaceCounts>,
    disk_bytes: Option<u64>,
    /// This process's place in its cluster (the status itself is this
    /// process's only); absent for a single process.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterOut>,
}

#[derive(Serialize)]
pub struct ClusterOut {
    process: usize,
    processes: usize,
    workers: usize,
    peers: Vec<String>,
}

pub async fn status(State(app): Shared, RawQuery(raw): RawQuery) -> Result<Answer<StatusOut>> {
    Params::parse(raw.as_deref(), &[])?;
    let view = app.store.read();
    let fresh = app.fresh.of(&view)?;
    let meta = view.meta()?;
    let commit = view.commit_count();
    drop(view);
    let lag = app.live.lag();
    let skipped = app.live.skipped_offsets();
    let rates = app.live.ingest_rates();
    let names: BTreeSet<&String> = meta
        .dataflows
        .keys()
        .chain(lag.keys())
        .chain(rates.keys())
        .collect();
    let mut dataflows = BTreeMap::new();
    for name in names {
        let m = meta.dataflows.get(name).cloned().unwrap_or_default();
        let offsets = meta
            .positions
            .iter()
            .filter(|((d, _), _)| d == name)
            .map(|((_, p), n)| (p.clone(), *n))
            .collect();
        dataflows.insert(
            name.clone(),
            DataflowStatus {
                events: m.events,
                late: m.late,
                dead_letters: m.dead_letters,
                watermark: m.watermark,
                offsets,
                lag: lag.get(name).copied().flatten(),
                skipped_offsets: skipped.get(name).copied().unwrap_or(0),
                ingest_rate: rates.get(name).copied().unwrap_or(0.0),
            },
        );
    }
    app.counts.want();
    let status = StatusOut {
        version: env!("CARGO_PKG_VERSION"),
        mode: app.live.mode().to_string(),
        ready: app.live.ready(),
        uptime_s: app.started.elapsed().as_secs(),
        commit,
        dataflows,
        counts: app.counts.get().as_deref().cloned(),
        disk_bytes: app.store.size_on_disk().ok(),
        cluster: app.config.cluster.as_ref().map(|c| ClusterOut {
            process: c.process,
            processes: c.processes,
            workers: c.workers,
            peers: c.query_urls.clone(),
        }),
    };
    Ok(Answer::new(status, Freshness::Local(fresh)))
}

/// A fixed body with its content type.
type Fixed = ([(HeaderName, &'static str); 1], &'static str);

pub async fn metrics(
    State(app): Shared,
    RawQuery(raw): RawQuery,
) -> Result<([(HeaderName, &'static str); 1], String)> {
    Params::parse(raw.as_deref(), &[])?;
    let text = app
        .metrics
        .encode()
        .map_err(|_| ApiError::internal("could not encode metrics"))?;
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text))
}

pub async fn healthz() -> Fixed {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

pub async fn readyz(State(app): Shared) -> (StatusCode, ([(HeaderName, &'static str); 1], String)) {
    let json = [(header::CONTENT_TYPE, "application/json")];
    if app.live.ready() {
        (StatusCode::OK, (json, r#"{"ready":true}"#.to_string()))
    } else {
        let why = app
            .live
            .not_ready_because()
            .unwrap_or_else(|| "the state is loading or sources are not assigned yet".to_string());
        let body = serde_json::json!({"ready": false, "error": format!("not ready: {why}")});
        (StatusCode::SERVICE_UNAVAILABLE, (json, body.to_string()))
    }
}

pub async fn openapi() -> Fixed {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A static file: no caching surprises, and a policy that keeps the page
/// to this server (no CDN, no other origin).
type Asset = ([(HeaderName, &'static str); 4], &'static str);

fn asset(content_type: &'static str, body: &'static str) -> Asset {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

pub async fn page() -> Asset {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

pub async fn script() -> Asset {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

pub async fn style() -> Asset {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

pub async fn no_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such route: {}", params::shorten(uri.path())))
        .with_hint("GET /openapi.json lists every route")
}

pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", params::shorten(uri.path())),
    )
    .with_hint("GET /openapi.json lists every route with its method")
}
