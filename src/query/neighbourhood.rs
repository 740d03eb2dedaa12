//! `GET /v1/neighbourhood/{type}/{id}`: everything around one node, for the
//! explorer: its record, its identity cluster, and its most recent
//! neighbours over every edge type, both ways. One process reads it through
//! one view ([`local`]); a process of a cluster merges every process's
//! ([`cluster`]).
//!
//! Invariant: a merged neighbourhood equals the one-process answer: the
//! owner's record, the identity with every member, and each group merged
//! as a page in recent order (`cluster::merge_page`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::client::seg;
use super::cluster;
use super::error::ApiError;
use super::fresh::{FreshSet, Freshness, ProcessFresh};
use super::peers::Peers;
use super::respond::Answer;
use super::state::{App, blocking};
use crate::model::split_ident;
use crate::store::{Direction, EdgeOrder, EdgeQuery, EdgeView, IdentityView, NodeView, ReadView};

/// A node as in the export.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeOut {
    ns: String,
    #[serde(rename = "type")]
    node_type: String,
    id: String,
    first_seen: i64,
    last_seen: i64,
    props: serde_json::Map<String, serde_json::Value>,
}

impl NodeOut {
    pub fn of(n: NodeView) -> NodeOut {
        let id = split_ident(&n.id).1.to_string();
        NodeOut {
            ns: "node".to_string(),
            node_type: n.node_type,
            id,
            first_seen: n.first_seen,
            last_seen: n.last_seen,
            props: n.props,
        }
    }
}

/// The neighbours of one edge type in one direction.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Group {
    edge_type: String,
    direction: Direction,
    items: Vec<EdgeView>,
    next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NeighbourhoodOut {
    node: String,
    record: Option<NodeOut>,
    identity: Option<IdentityView>,
    groups: Vec<Group>,
}

/// This process's neighbourhood of `ident`, through one view.
pub fn local(app: &App, ident: &str, limit: usize) -> Result<Answer<NeighbourhoodOut>, ApiError> {
    let deadline = app.deadline();
    app.read(|view| read(view, app, ident, limit, deadline))
}

fn read(
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
                direction,
                items: page.items,
                next_cursor: page.next.map(|c| c.encode()),
            });
        }
    }
    Ok(NeighbourhoodOut {
        node: ident.to_string(),
        record: record.map(NodeOut::of),
        identity,
        groups,
    })
}

/// Every process's neighbourhood of `ident`, merged: the owner's record,
/// the identity with every member, each group's pages merged. This
/// process's part is read on the blocking pool, the peers' at once.
pub async fn cluster(
    app: &Arc<App>,
    peers: &Peers,
    ident: &str,
    limit: usize,
) -> Result<Answer<NeighbourhoodOut>, ApiError> {
    let deadline = app.deadline();
    let (t, id) = split_ident(ident);
    let path = format!("/v1/neighbourhood/{}/{}?limit={limit}", seg(t), seg(id));
    let path = path.as_str();
    let asked = peers
        .fan_out(&peers.all(), |p| async move {
            if p != peers.me() {
                let a = peers.get(p, path, deadline).await?;
                return Ok::<_, ApiError>((a.ok::<NeighbourhoodOut>(peers)?, a.fresh));
            }
            let (app, ident) = (app.clone(), ident.to_string());
            blocking(move || {
                let view = app.store.read();
                let f = app.fresh.of(&view)?;
                let n = read(&view, &app, &ident, limit, deadline)?;
                Ok((n, f.process()))
            })
            .await
        })
        .await;
    let mut fresh = FreshSet::default();
    let mut parts = Vec::with_capacity(asked.len());
    for (p, answer) in asked {
        let (n, f): (NeighbourhoodOut, ProcessFresh) =
            answer.map_err(|e| e.with_fresh(&Freshness::Cluster(fresh.clone())))?;
        fresh.add(p, f);
        parts.push(n);
    }
    let merged = merge(app, peers, ident, limit, parts, deadline, &mut fresh).await;
    Answer::of(merged, Freshness::Cluster(fresh))
}

/// Merges every process's part (see [`cluster`]).
async fn merge(
    app: &App,
    peers: &Peers,
    ident: &str,
    limit: usize,
    parts: Vec<NeighbourhoodOut>,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<NeighbourhoodOut, ApiError> {
    let record = parts.iter().find_map(|n| n.record.clone());
    let identity = match parts.iter().find_map(|n| n.identity.clone()) {
        Some(mut v) => {
            v.members = cluster::members(app, peers, &v.cluster, deadline, fresh)
                .await
                .map_err(|e| app.graph_error(e))?;
            Some(v)
        }
        None => None,
    };
    // (direction, edge_type) -> (items, more); out before in.
    let mut merged: BTreeMap<(bool, String), (Vec<EdgeView>, bool)> = BTreeMap::new();
    for g in parts.into_iter().flat_map(|n| n.groups) {
        let e = merged
            .entry((g.direction == Direction::In, g.edge_type))
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
                direction: if incoming {
                    Direction::In
                } else {
                    Direction::Out
                },
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
