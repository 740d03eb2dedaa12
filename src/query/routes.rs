//! The handlers, one per route of [`ROUTES`](super::ROUTES): check the
//! input ([`params`](super::params)), read through one view, answer JSON
//! with the freshness headers of what was read.
//!
//! Invariant: a handler reads the store only through a single
//! [`ReadView`](crate::store::ReadView) and attaches that view's freshness;
//! multi-read endpoints (identity path, traversal, neighbourhood) run on the
//! blocking pool with a deadline so they cannot hold up the event loop for
//! longer than a request may take.
//!
//! In a cluster (and unless the request says `X-Rdg-Local`), input is
//! checked here first, then the handler asks the processes that hold the
//! answer (module `cluster`) from the blocking pool, with a deadline, and
//! attaches the freshness of every process it read.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ServeConfig;
use super::cluster::{self, PeerReads, Spread};
use super::error::ApiError;
use super::fresh::Fresh;
use super::graph::{self, GraphError, Hop, ViewReads};
use super::params::{self, Params};
use super::peers::{FreshSet, Key, Peers};
use super::server::App;
use crate::store::{
    Direction, EdgeCursor, EdgeOrder, EdgeQuery, EdgeView, IdentityView, NodeView, ReadView,
};

type Shared = State<Arc<App>>;

const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/explorer.js");
const PAGE_CSS: &str = include_str!("page/explorer.css");
const OPENAPI: &str = include_str!("openapi.json");

/// The longest cursor accepted (an encoded identifier of `max_id_bytes`).
fn max_cursor_len(app: &App) -> usize {
    (app.config.max_id_bytes + 9).div_ceil(3) * 4 + 4
}

/// A JSON answer with the freshness headers of `fresh`.
fn json(fresh: &Fresh, status: StatusCode, body: &impl Serialize) -> Response {
    json_with(status, body, |h| fresh.apply(h))
}

/// A JSON answer whose headers `fresh` completes (one process's freshness,
/// or a cluster's).
pub(crate) fn json_with(
    status: StatusCode,
    body: &impl Serialize,
    fresh: impl FnOnce(&mut HeaderMap),
) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut resp = (status, bytes).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            fresh(resp.headers_mut());
            resp
        }
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not encode the answer: {e}"),
        )
        .into_response(),
    }
}

/// A read failed after the view was taken: the error, with the view's
/// freshness.
fn fail(fresh: &Fresh, e: ApiError) -> Response {
    let mut resp = e.into_response();
    fresh.apply(resp.headers_mut());
    resp
}

fn path_error(r: PathRejection) -> ApiError {
    ApiError::bad_request(format!("bad path: {}", r.body_text()))
}

/// Runs `f` on the blocking pool.
async fn blocking<F>(f: F) -> Response
where
    F: FnOnce() -> Response + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while answering (a bug; the server goes on)",
        )
        .into_response(),
    }
}

/// Leaves a little of the request time to encode and send the answer.
fn deadline(app: &App) -> Instant {
    Instant::now() + app.config.request_timeout.mul_f64(0.9)
}

/// A node as in the export.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeOut {
    ns: String,
    #[serde(rename = "type")]
    node_type: String,
    id: String,
    first_seen: i64,
    last_seen: i64,
    props: serde_json::Map<String, serde_json::Value>,
}

impl NodeOut {
    fn of(n: &NodeView) -> NodeOut {
        let (_, id) = crate::model::split_ident(&n.id);
        NodeOut {
            ns: "node".to_string(),
            node_type: n.node_type.clone(),
            id: id.to_string(),
            first_seen: n.first_seen,
            last_seen: n.last_seen,
            props: n.props.clone(),
        }
    }
}

/// The path and query of a request, to ask a peer the same.
fn target(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string())
}

/// Asks `owner` the same request and hands its answer back (on the event
/// loop: one call, no blocking).
async fn forward(app: Arc<App>, peers: Arc<Peers>, owner: usize, uri: &Uri) -> Response {
    cluster::relay(&peers, owner, &target(uri), deadline(&app)).await
}

pub async fn node(
    State(app): Shared,
    headers: HeaderMap,
    uri: Uri,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let ident = match ident_only(&app.config, p, raw.as_deref()) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if let Some(peers) = app.coordinator(&headers)
        && let Some(owner) = cluster::owner(&peers, Key::Node(&ident))
    {
        return forward(app, peers, owner, &uri).await;
    }
    let result = (|| {
        let view = app.store.read();
        let fresh = app.fresh.of(&view).map_err(ApiError::from)?;
        Ok(match view.node(&ident) {
            Ok(Some(n)) => json(&fresh, StatusCode::OK, &NodeOut::of(&n)),
            Ok(None) => fail(&fresh, ApiError::not_found(format!("not found: {ident}"))),
            Err(e) => fail(&fresh, e.into()),
        })
    })();
    result.unwrap_or_else(|e: ApiError| e.into_response())
}

#[derive(Serialize)]
struct EdgesOut<'a> {
    node: &'a str,
    edge_type: &'a str,
    direction: &'static str,
    items: &'a [EdgeView],
    next_cursor: Option<String>,
}

/// A page of a neighbour list or a link list, checked: query and cursor.
fn page_query(
    app: &App,
    q: &Params,
    direction: Direction,
) -> Result<(EdgeQuery, Option<EdgeCursor>), ApiError> {
    let order = params::order(q.get("order"))?;
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
                    order_name(c.order()),
                    order_name(order)
                ))
                .with_hint("keep the same query parameters while paging"));
            }
            Some(c)
        }
    };
    Ok((
        EdgeQuery {
            direction,
            limit: Some(limit),
            since,
            order,
        },
        cursor,
    ))
}

pub async fn edges(
    State(app): Shared,
    headers: HeaderMap,
    uri: Uri,
    p: Result<Path<(String, String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let checked = (|| {
        let Path((edge_type, t, id)) = p.map_err(path_error)?;
        params::name("an edge type", &edge_type, app.config.max_id_bytes)?;
        let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
        let q = Params::parse(
            raw.as_deref(),
            &["direction", "limit", "since", "order", "cursor"],
        )?;
        let direction = params::direction(q.get("direction"))?;
        let (eq, cursor) = page_query(&app, &q, direction)?;
        Ok((edge_type, ident, eq, cursor))
    })();
    let (edge_type, ident, eq, cursor) = match checked {
        Ok(x) => x,
        Err(e) => return ApiError::into_response(e),
    };
    if let Some(peers) = app.coordinator(&headers) {
        match eq.direction {
            Direction::Out => {
                let key = Key::OutEdges {
                    edge_type: &edge_type,
                    from: &ident,
                };
                if let Some(owner) = cluster::owner(&peers, key) {
                    return forward(app, peers, owner, &uri).await;
                }
            }
            Direction::In => {
                return blocking(move || {
                    let what = Spread::InEdges {
                        edge_type: &edge_type,
                        id: &ident,
                    };
                    let deadline = deadline(&app);
                    match cluster::spread_page(&app, &peers, what, &eq, cursor.as_ref(), deadline) {
                        Ok((page, fresh)) => cluster::json(
                            &fresh,
                            StatusCode::OK,
                            &EdgesOut {
                                node: &ident,
                                edge_type: &edge_type,
                                direction: params::direction_name(eq.direction),
                                items: &page.items,
                                next_cursor: page.next.map(|c| c.encode()),
                            },
                        ),
                        Err(e) => graph_error(&app, e).into_response(),
                    }
                })
                .await;
            }
        }
    }
    let result = (|| {
        let view = app.store.read();
        let fresh = app.fresh.of(&view).map_err(ApiError::from)?;
        Ok(
            match view.edges_page(&edge_type, &ident, &eq, cursor.as_ref()) {
                Ok(page) => json(
                    &fresh,
                    StatusCode::OK,
                    &EdgesOut {
                        node: &ident,
                        edge_type: &edge_type,
                        direction: params::direction_name(eq.direction),
                        items: &page.items,
                        next_cursor: page.next.map(|c| c.encode()),
                    },
                ),
                Err(e) => fail(&fresh, e.into()),
            },
        )
    })();
    result.unwrap_or_else(|e: ApiError| e.into_response())
}

#[derive(Serialize)]
struct LinksOut<'a> {
    node: &'a str,
    items: &'a [EdgeView],
    next_cursor: Option<String>,
}

/// The identity links of an identifier, a page at a time.
pub async fn links(
    State(app): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let checked = (|| {
        let Path((t, id)) = p.map_err(path_error)?;
        let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
        let q = Params::parse(raw.as_deref(), &["limit", "since", "order", "cursor"])?;
        let (eq, cursor) = page_query(&app, &q, Direction::Out)?;
        Ok((ident, eq, cursor))
    })();
    let (ident, eq, cursor) = match checked {
        Ok(x) => x,
        Err(e) => return ApiError::into_response(e),
    };
    if let Some(peers) = app.coordinator(&headers) {
        return blocking(move || {
            let what = Spread::Links { id: &ident };
            match cluster::spread_page(&app, &peers, what, &eq, cursor.as_ref(), deadline(&app)) {
                Ok((page, fresh)) => cluster::json(
                    &fresh,
                    StatusCode::OK,
                    &LinksOut {
                        node: &ident,
                        items: &page.items,
                        next_cursor: page.next.map(|c| c.encode()),
                    },
                ),
                Err(e) => graph_error(&app, e).into_response(),
            }
        })
        .await;
    }
    let view = app.store.read();
    let fresh = match app.fresh.of(&view) {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match view.links_page(&ident, &eq, cursor.as_ref()) {
        Ok(page) => json(
            &fresh,
            StatusCode::OK,
            &LinksOut {
                node: &ident,
                items: &page.items,
                next_cursor: page.next.map(|c| c.encode()),
            },
        ),
        Err(e) => fail(&fresh, e.into()),
    }
}

/// The members of a cluster, by the cluster's id.
pub async fn cluster_members(
    State(app): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let ident = match ident_only(&app.config, p, raw.as_deref()) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let not_found = |ident: &str| {
        ApiError::not_found(format!("no cluster {ident}")).with_hint(
            "a cluster's id is one of its members: GET /v1/identity/{type}/{id} names it",
        )
    };
    if let Some(peers) = app.coordinator(&headers) {
        return blocking(move || {
            let mut fresh = FreshSet::default();
            match cluster::members(&app, &peers, &ident, deadline(&app), &mut fresh) {
                Ok(m) if m.is_empty() => cluster::fail(&fresh, not_found(&ident)),
                Ok(members) => cluster::json(
                    &fresh,
                    StatusCode::OK,
                    &cluster::MembersOut {
                        cluster: ident,
                        members,
                    },
                ),
                Err(e) => cluster::fail(&fresh, graph_error(&app, e)),
            }
        })
        .await;
    }
    let view = app.store.read();
    let fresh = match app.fresh.of(&view) {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match view.cluster_members(&ident) {
        Ok(m) if m.is_empty() => fail(&fresh, not_found(&ident)),
        Ok(members) => json(
            &fresh,
            StatusCode::OK,
            &cluster::MembersOut {
                cluster: ident,
                members,
            },
        ),
        Err(e) => fail(&fresh, e.into()),
    }
}

fn order_name(o: EdgeOrder) -> &'static str {
    match o {
        EdgeOrder::Id => "id",
        EdgeOrder::Recent => "recent",
    }
}

/// Checks a route whose only input is a `{type}/{id}` path: no query
/// parameters, an identifier within bounds.
fn ident_only(
    config: &ServeConfig,
    p: Result<Path<(String, String)>, PathRejection>,
    raw: Option<&str>,
) -> Result<String, ApiError> {
    Params::parse(raw, &[])?;
    let Path((t, id)) = p.map_err(path_error)?;
    params::ident(&t, &id, config.max_id_bytes)
}

fn no_identity(ident: &str) -> ApiError {
    ApiError::not_found(format!("no identity entry for {ident}"))
        .with_hint("an identifier has one once it shares a live identity link")
}

pub async fn identity(
    State(app): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let ident = match ident_only(&app.config, p, raw.as_deref()) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    if let Some(peers) = app.coordinator(&headers) {
        return blocking(move || {
            let mut fresh = FreshSet::default();
            match cluster::identity(&app, &peers, &ident, deadline(&app), &mut fresh) {
                Ok(Some(v)) => cluster::json(&fresh, StatusCode::OK, &v),
                Ok(None) => cluster::fail(&fresh, no_identity(&ident)),
                Err(e) => cluster::fail(&fresh, graph_error(&app, e)),
            }
        })
        .await;
    }
    let result = (|| {
        let view = app.store.read();
        let fresh = app.fresh.of(&view).map_err(ApiError::from)?;
        Ok(match view.identity(&ident) {
            Ok(Some(v)) => json(&fresh, StatusCode::OK, &v),
            Ok(None) => fail(&fresh, no_identity(&ident)),
            Err(e) => fail(&fresh, e.into()),
        })
    })();
    result.unwrap_or_else(|e: ApiError| e.into_response())
}

fn graph_error(app: &App, e: GraphError) -> ApiError {
    match e {
        GraphError::Store(e) => e.into(),
        GraphError::Deadline => ApiError::timeout(app.config.request_timeout),
        GraphError::NotFound(m) => ApiError::not_found(m),
        GraphError::TooLarge(n) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("gave up after visiting {n} identifiers (the server's --max-path-visits)"),
        ),
        GraphError::Peer(e) => e.into(),
    }
}

pub async fn identity_path(
    State(app): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String, String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(e) = Params::parse(raw.as_deref(), &[]) {
        return e.into_response();
    }
    let (from, to) = match p.map_err(path_error).and_then(|Path((t, id, t2, id2))| {
        Ok((
            params::ident(&t, &id, app.config.max_id_bytes)?,
            params::ident(&t2, &id2, app.config.max_id_bytes)?,
        ))
    }) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let peers = app.coordinator(&headers);
    blocking(move || {
        let deadline = deadline(&app);
        let max = app.config.max_path_visits;
        if let Some(peers) = peers {
            let mut reads = PeerReads {
                app: &app,
                peers: &peers,
                deadline,
                fresh: FreshSet::default(),
            };
            let result = graph::identity_path(&mut reads, &from, &to, max);
            return match result {
                Ok(path) => cluster::json(&reads.fresh, StatusCode::OK, &path),
                Err(e) => cluster::fail(&reads.fresh, graph_error(&app, e)),
            };
        }
        let view = app.store.read();
        let fresh = match app.fresh.of(&view) {
            Ok(f) => f,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let mut reads = ViewReads {
            view: &view,
            deadline,
        };
        match graph::identity_path(&mut reads, &from, &to, max) {
            Ok(path) => json(&fresh, StatusCode::OK, &path),
            Err(e) => fail(&fresh, graph_error(&app, e)),
        }
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

/// Checks a traversal request and fills in the defaults; `default_since`
/// applies to hops without `since`.
fn traverse_plan(
    app: &App,
    req: TraverseRequest,
    default_since: Option<i64>,
) -> Result<(String, Vec<Hop>, usize), ApiError> {
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
        let direction = params::direction(h.direction.as_deref()).map_err(at)?;
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
    Ok((start, hops, limit))
}

pub async fn traverse(State(app): Shared, headers: HeaderMap, body: Body) -> Response {
    let bytes: Bytes = match axum::body::to_bytes(body, app.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (or was cut off)",
                    app.config.max_body_bytes
                ),
            )
            .into_response();
        }
    };
    let req: TraverseRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request(format!("bad traversal request: {e}"))
                .with_hint(
                    r#"send {"start":"type:id","hops":[{"edge_type":"...","direction":"out|in","since":MS,"limit":N}],"limit":N}"#,
                )
                .into_response();
        }
    };
    let peers = app.coordinator(&headers);
    blocking(move || {
        let deadline = deadline(&app);
        let lookback = |w: Option<i64>| match (app.config.default_lookback, w) {
            (Some(back), Some(w)) => {
                Some(w.saturating_sub(i64::try_from(back.as_millis()).unwrap_or(i64::MAX)))
            }
            _ => None,
        };
        if let Some(peers) = peers {
            // Bad input is a 400 before any peer is asked.
            if let Err(e) = traverse_plan(&app, req.clone(), None) {
                return e.into_response();
            }
            let mut reads = PeerReads {
                app: &app,
                peers: &peers,
                deadline,
                fresh: FreshSet::default(),
            };
            let watermark = match cluster::max_watermark(&app, &peers, deadline, &mut reads.fresh) {
                Ok(w) => w,
                Err(e) => return cluster::fail(&reads.fresh, graph_error(&app, e)),
            };
            let (start, hops, limit) = match traverse_plan(&app, req, lookback(watermark)) {
                Ok(x) => x,
                Err(e) => return cluster::fail(&reads.fresh, e),
            };
            return match graph::traverse(&mut reads, &start, &hops, limit) {
                Ok(t) => cluster::json(&reads.fresh, StatusCode::OK, &t),
                Err(e) => cluster::fail(&reads.fresh, graph_error(&app, e)),
            };
        }
        let view = app.store.read();
        let fresh = match app.fresh.of(&view) {
            Ok(f) => f,
            Err(e) => return ApiError::from(e).into_response(),
        };
        let (start, hops, limit) = match traverse_plan(&app, req, lookback(fresh.max_watermark)) {
            Ok(x) => x,
            Err(e) => return fail(&fresh, e),
        };
        let mut reads = ViewReads {
            view: &view,
            deadline,
        };
        match graph::traverse(&mut reads, &start, &hops, limit) {
            Ok(t) => json(&fresh, StatusCode::OK, &t),
            Err(e) => fail(&fresh, graph_error(&app, e)),
        }
    })
    .await
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Group {
    edge_type: String,
    direction: String,
    items: Vec<EdgeView>,
    next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct NeighbourhoodOut {
    node: String,
    record: Option<NodeOut>,
    identity: Option<IdentityView>,
    groups: Vec<Group>,
}

/// Everything around one node, for the explorer: its record, its identity
/// cluster, and its most recent neighbours over every edge type, both ways.
fn neighbourhood_of(
    view: &ReadView<'_>,
    app: &App,
    ident: &str,
    limit: usize,
    deadline: Instant,
) -> Result<NeighbourhoodOut, ApiError> {
    let schema = app.store.schema();
    let record = view.node(ident)?;
    let identity = view.identity(ident)?;
    let mut groups = Vec::new();
    let q = |direction| EdgeQuery {
        direction,
        limit: Some(limit),
        since: None,
        order: EdgeOrder::Recent,
    };
    let wanted = schema
        .edge_types
        .iter()
        .map(|t| (t, Direction::Out))
        .chain(schema.reverse_edge_types.iter().map(|t| (t, Direction::In)));
    for (edge_type, direction) in wanted {
        if Instant::now() >= deadline {
            return Err(ApiError::timeout(app.config.request_timeout));
        }
        let page = view.edges_page(edge_type, ident, &q(direction), None)?;
        if !page.items.is_empty() {
            groups.push(Group {
                edge_type: edge_type.clone(),
                direction: params::direction_name(direction).to_string(),
                items: page.items,
                next_cursor: page.next.map(|c| c.encode()),
            });
        }
    }
    Ok(NeighbourhoodOut {
        node: ident.to_string(),
        record: record.as_ref().map(NodeOut::of),
        identity,
        groups,
    })
}

/// Every process's neighbourhood of `ident`, merged: the owner's record,
/// the identity with every member, each group's pages merged.
fn cluster_neighbourhood(
    app: &App,
    peers: &Peers,
    ident: &str,
    limit: usize,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<NeighbourhoodOut, ApiError> {
    let path = format!(
        "/v1/neighbourhood/{}/{}?limit={limit}",
        super::client::seg(crate::model::split_ident(ident).0),
        super::client::seg(crate::model::split_ident(ident).1)
    );
    let mut parts = Vec::new();
    for (p, r) in peers.all().iter().zip(super::peers::parallel(
        &peers.all(),
        super::peers::MAX_PARALLEL,
        |&p| -> Result<(NeighbourhoodOut, super::peers::ProcessFresh), ApiError> {
            if p == peers.me() {
                let view = app.store.read();
                let f = app.fresh.of(&view)?;
                let n = neighbourhood_of(&view, app, ident, limit, deadline)?;
                Ok((n, cluster::local_fresh(&f)))
            } else {
                let a = peers.get(p, &path, deadline)?;
                Ok((a.ok(peers)?, a.fresh))
            }
        },
    )) {
        let (n, f) = r?;
        fresh.add(*p, f);
        parts.push(n);
    }
    let record = parts.iter().find_map(|n| n.record.clone());
    let identity = match parts.iter().find_map(|n| n.identity.clone()) {
        Some(mut v) => {
            v.members = cluster::members(app, peers, &v.cluster, deadline, fresh)
                .map_err(|e| graph_error(app, e))?;
            Some(v)
        }
        None => None,
    };
    // (in?, edge_type) -> (items, more)
    let mut merged: std::collections::BTreeMap<(bool, String), (Vec<EdgeView>, bool)> =
        std::collections::BTreeMap::new();
    for g in parts.into_iter().flat_map(|n| n.groups) {
        let e = merged
            .entry((g.direction == "in", g.edge_type))
            .or_default();
        e.0.extend(g.items);
        e.1 |= g.next_cursor.is_some();
    }
    let groups = merged
        .into_iter()
        .map(|((incoming, edge_type), (items, more))| {
            let page = cluster::merge_page(items, more, EdgeOrder::Recent, Some(limit));
            Group {
                edge_type,
                direction: if incoming { "in" } else { "out" }.to_string(),
                items: page.items,
                next_cursor: page.next.map(|c| c.encode()),
            }
        })
        .collect();
    Ok(NeighbourhoodOut {
        node: ident.to_string(),
        record,
        identity,
        groups,
    })
}

pub async fn neighbourhood(
    State(app): Shared,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Response {
    let checked = (|| {
        let Path((t, id)) = p.map_err(path_error)?;
        let ident = params::ident(&t, &id, app.config.max_id_bytes)?;
        let q = Params::parse(raw.as_deref(), &["limit"])?;
        let limit = q.int_in(
            "limit",
            1,
            app.config.max_limit,
            20.min(app.config.max_limit),
        )?;
        Ok((ident, limit))
    })();
    let (ident, limit) = match checked {
        Ok(x) => x,
        Err(e) => return ApiError::into_response(e),
    };
    let peers = app.coordinator(&headers);
    // A peer's request is answered inline, never queued behind this
    // process's own cluster requests on the blocking pool (they may be
    // waiting for that peer).
    let inline = app.peers.is_some() && peers.is_none();
    let work = move || {
        let deadline = deadline(&app);
        if let Some(peers) = peers {
            let mut fresh = FreshSet::default();
            return match cluster_neighbourhood(&app, &peers, &ident, limit, deadline, &mut fresh) {
                Ok(n) => cluster::json(&fresh, StatusCode::OK, &n),
                Err(e) => cluster::fail(&fresh, e),
            };
        }
        let view = app.store.read();
        let fresh = match app.fresh.of(&view) {
            Ok(f) => f,
            Err(e) => return ApiError::from(e).into_response(),
        };
        match neighbourhood_of(&view, &app, &ident, limit, deadline) {
            Ok(n) => json(&fresh, StatusCode::OK, &n),
            Err(e) => fail(&fresh, e),
        }
    };
    if inline { work() } else { blocking(work).await }
}

#[derive(Serialize)]
struct SearchOut<'a> {
    q: &'a str,
    items: Vec<String>,
}

pub async fn search(State(app): Shared, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let checked = (|| {
        let q = Params::parse(raw.as_deref(), &["q", "limit"])?;
        let text = q.get("q").unwrap_or("").to_string();
        if text.is_empty() || text.len() > app.config.max_id_bytes {
            return Err(ApiError::bad_request(format!(
                "`q` must be 1 to {} bytes: an identifier prefix, `type:id-prefix` or `id-prefix`",
                app.config.max_id_bytes
            )));
        }
        let limit = q.int_in(
            "limit",
            1,
            app.config.max_limit,
            20.min(app.config.max_limit),
        )?;
        Ok((text, limit))
    })();
    let (text, limit) = match checked {
        Ok(x) => x,
        Err(e) => return ApiError::into_response(e),
    };
    if let Some(peers) = app.coordinator(&headers) {
        return blocking(move || {
            match cluster::search(&app, &peers, &text, limit, deadline(&app)) {
                Ok((items, fresh)) => {
                    cluster::json(&fresh, StatusCode::OK, &SearchOut { q: &text, items })
                }
                Err(e) => graph_error(&app, e).into_response(),
            }
        })
        .await;
    }
    let view = app.store.read();
    let fresh = match app.fresh.of(&view) {
        Ok(f) => f,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match view.search(&text, limit) {
        Ok(items) => json(&fresh, StatusCode::OK, &SearchOut { q: &text, items }),
        Err(e) => fail(&fresh, e.into()),
    }
}

#[derive(Serialize)]
struct DataflowStatus {
    events: u64,
    late: u64,
    dead_letters: u64,
    watermark: Option<i64>,
    /// partition -> next position (line or offset) stored.
    offsets: std::collections::BTreeMap<String, u64>,
    lag: Option<i64>,
    ingest_rate: f64,
}

#[derive(Serialize)]
struct StatusOut<'a> {
    version: &'static str,
    mode: &'a str,
    ready: bool,
    uptime_s: u64,
    commit: u64,
    dataflows: std::collections::BTreeMap<String, DataflowStatus>,
    counts: Option<&'a super::metrics::NamespaceCounts>,
    disk_bytes: Option<u64>,
    /// This process's place in its cluster (the status itself is this
    /// process's only); absent for a single process.
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<ClusterOut<'a>>,
}

#[derive(Serialize)]
struct ClusterOut<'a> {
    process: usize,
    processes: usize,
    workers: usize,
    peers: &'a [String],
}

pub async fn status(State(app): Shared, RawQuery(raw): RawQuery) -> Response {
    if let Err(e) = Params::parse(raw.as_deref(), &[]) {
        return e.into_response();
    }
    let view = app.store.read();
    let (fresh, meta) = match (app.fresh.of(&view), view.meta()) {
        (Ok(f), Ok(m)) => (f, m),
        (Err(e), _) | (_, Err(e)) => return ApiError::from(e).into_response(),
    };
    let commit = view.commit_count();
    drop(view);
    let lag = app.live.lag();
    let rates = app.live.ingest_rates();
    let mut dataflows = std::collections::BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = meta
        .dataflows
        .keys()
        .chain(lag.keys())
        .chain(rates.keys())
        .collect();
    for name in names {
        let m = meta.dataflows.get(name).cloned().unwrap_or_default();
        dataflows.insert(
            name.clone(),
            DataflowStatus {
                events: m.events,
                late: m.late,
                dead_letters: m.dead_letters,
                watermark: m.watermark,
                offsets: meta
                    .positions
                    .iter()
                    .filter(|((d, _), _)| d == name)
                    .map(|((_, p), n)| (p.clone(), *n))
                    .collect(),
                lag: lag.get(name).copied().flatten(),
                ingest_rate: rates.get(name).copied().unwrap_or(0.0),
            },
        );
    }
    app.counts.want();
    let counts = app.counts.get();
    json(
        &fresh,
        StatusCode::OK,
        &StatusOut {
            version: env!("CARGO_PKG_VERSION"),
            mode: app.live.mode(),
            ready: app.live.ready(),
            uptime_s: app.started.elapsed().as_secs(),
            commit,
            dataflows,
            counts: counts.as_deref(),
            disk_bytes: app.store.size_on_disk().ok(),
            cluster: app.config.cluster.as_ref().map(|c| ClusterOut {
                process: c.process,
                processes: c.peers.len(),
                workers: c.workers,
                peers: &c.peers,
            }),
        },
    )
}

pub async fn metrics(State(app): Shared, RawQuery(raw): RawQuery) -> Response {
    if let Err(e) = Params::parse(raw.as_deref(), &[]) {
        return e.into_response();
    }
    match app.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode metrics",
        )
        .into_response(),
    }
}

pub async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

pub async fn readyz(State(app): Shared) -> Response {
    if app.live.ready() {
        (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ready":true}"#,
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"ready":false,"error":"not ready: the state is loading or sources are not assigned yet"}"#,
        )
            .into_response()
    }
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Static files: no caching surprises, and a policy that keeps the page to
/// this server (no CDN, no other origin).
fn asset(content_type: &'static str, body: &'static str) -> Response {
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
        .into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE_HTML)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}

pub async fn no_route(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no such route: {}", params::shorten(uri.path())))
        .with_hint("GET /openapi.json lists every route")
        .into_response()
}

pub async fn wrong_method(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", params::shorten(uri.path())),
    )
    .with_hint("GET /openapi.json lists every route with its method")
    .into_response()
}
