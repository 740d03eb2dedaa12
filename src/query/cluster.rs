//! Answers of a process of a cluster: reads sent to the processes whose
//! stores hold the records, and merged so that every process answers as one
//! process holding the whole graph would.
//!
//! Where records live (worker = process × workers + i, `model::shard`):
//! - a node record, and the out-edges of a node for one edge type, on the
//!   owner process: lookups go to it ([`relay`]);
//! - in-edges of a node and identity links of an identifier on every
//!   process (each is written by the owner of its other end or its pair):
//!   every process is asked for its page after the same cursor, in the same
//!   order, and the pages are merged ([`spread_page`]);
//! - identity entries and cluster memberships by differential's own hash,
//!   which the query layer cannot compute: every process is asked
//!   ([`identity`], [`members`]); search too.
//!
//! Invariant: merged pages equal one process's pages. Each process returns
//! its first `limit` items after the cursor in the page's order; the first
//! `limit` of their union are the first `limit` of the whole list, and a
//! next page exists exactly when some process had more or the union is
//! longer than `limit`, so the cursor of the last item taken resumes
//! correctly on every process.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::client::seg;
use super::fresh::{FreshSet, ProcessFresh};
use super::graph::{GraphError, GraphReads, Hop};
use super::peers::{Key, PeerError, Peers};
use super::state::App;
use crate::model::split_ident;
use crate::store::{
    Direction, EdgeCursor, EdgeOrder, EdgePage, EdgeQuery, EdgeView, IdentityView, ReadView,
    StoreError,
};

/// Reads this process's store through one view; the answer with the
/// freshness of what it read.
pub fn local<T>(
    app: &App,
    f: impl FnOnce(&ReadView<'_>) -> Result<T, StoreError>,
) -> Result<(T, ProcessFresh), GraphError> {
    let view = app.store.read();
    let fresh = app.fresh.of(&view)?;
    let t = f(&view)?;
    Ok((t, fresh.process()))
}

/// Runs `call` for every process at once (this one included: it reads
/// locally); their answers in process order and the freshness of all of
/// them. The first error, in process order, wins, and names its process.
async fn across<T, F, Fut>(peers: &Peers, call: F) -> Result<(Vec<T>, FreshSet), GraphError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(T, ProcessFresh), GraphError>>,
{
    let mut fresh = FreshSet::default();
    let mut out = Vec::with_capacity(peers.processes());
    for (p, answer) in peers.fan_out(&peers.all(), call).await {
        let (t, f) = answer?;
        fresh.add(p, f);
        out.push(t);
    }
    Ok((out, fresh))
}

/// Asks `process` the same request (`uri`: path and query) and hands its
/// answer back as it is, with its freshness.
pub async fn relay(
    peers: &Peers,
    process: usize,
    uri: &str,
    deadline: Instant,
) -> Result<Response, PeerError> {
    let a = peers.get(process, uri, deadline).await?;
    let mut resp = Response::new(Body::from(a.body));
    *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        a.content_type
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    FreshSet::of(process, a.fresh).apply(headers);
    Ok(resp)
}

/// The process that holds what a request asks about, when one does.
pub fn owner(peers: &Peers, key: Key<'_>) -> Option<usize> {
    let p = peers.owner_of(key);
    (p != peers.me()).then_some(p)
}

/// `type/id` path segments of an identifier.
fn segs(ident: &str) -> String {
    let (t, id) = split_ident(ident);
    format!("{}/{}", seg(t), seg(id))
}

/// A list whose items are spread over every process.
#[derive(Clone, Copy, Debug)]
pub enum Spread<'a> {
    /// Edges of `edge_type` pointing at `id` (the reverse index).
    InEdges { edge_type: &'a str, id: &'a str },
    /// Identity links of `id`.
    Links { id: &'a str },
}

/// A page as processes send it.
#[derive(Deserialize)]
struct PageIn {
    items: Vec<EdgeView>,
    next_cursor: Option<String>,
}

/// Sorts `items` in `order` and keeps the first `limit`; the cursor of the
/// next page when `more` (some process had more) or items were dropped.
pub fn merge_page(
    mut items: Vec<EdgeView>,
    more: bool,
    order: EdgeOrder,
    limit: Option<usize>,
) -> EdgePage {
    match order {
        EdgeOrder::Id => items.sort_by(|a, b| a.node.cmp(&b.node)),
        EdgeOrder::Recent => items.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.node.cmp(&b.node))
        }),
    }
    let mut more = more;
    if let Some(l) = limit
        && items.len() > l
    {
        items.truncate(l);
        more = true;
    }
    let next = if more {
        items.last().map(|last| match order {
            EdgeOrder::Id => EdgeCursor::Id {
                after: last.node.clone(),
            },
            EdgeOrder::Recent => EdgeCursor::Recent {
                last_seen: last.last_seen,
                after: last.node.clone(),
            },
        })
    } else {
        None
    };
    EdgePage { items, next }
}

/// One page of a spread list, read on every process and merged.
pub async fn spread_page(
    app: &App,
    peers: &Peers,
    what: Spread<'_>,
    q: &EdgeQuery,
    cursor: Option<&EdgeCursor>,
    deadline: Instant,
) -> Result<(EdgePage, FreshSet), GraphError> {
    let mut query = format!("order={}", q.order.as_str());
    if let Some(l) = q.limit {
        query.push_str(&format!("&limit={l}"));
    }
    if let Some(s) = q.since {
        query.push_str(&format!("&since={s}"));
    }
    if let Some(c) = cursor {
        query.push_str(&format!("&cursor={}", c.encode()));
    }
    let path = match what {
        Spread::InEdges { edge_type, id } => {
            format!(
                "/v1/edges/{}/{}?direction=in&{query}",
                seg(edge_type),
                segs(id)
            )
        }
        Spread::Links { id } => format!("/v1/links/{}?{query}", segs(id)),
    };
    let path = path.as_str();
    let (pages, fresh) = across(peers, |p| async move {
        if p == peers.me() {
            local(app, |v| match what {
                Spread::InEdges { edge_type, id } => v.edges_page(edge_type, id, q, cursor),
                Spread::Links { id } => v.links_page(id, q, cursor),
            })
            .map(|(page, f)| ((page.items, page.next.is_some()), f))
        } else {
            let a = peers.get(p, path, deadline).await?;
            let page: PageIn = a.ok(peers)?;
            Ok(((page.items, page.next_cursor.is_some()), a.fresh))
        }
    })
    .await?;
    let more = pages.iter().any(|(_, more)| *more);
    let items = pages.into_iter().flat_map(|(items, _)| items).collect();
    Ok((merge_page(items, more, q.order, q.limit), fresh))
}

/// Every link of `id`, in neighbour order, page by page.
pub async fn all_links(
    app: &App,
    peers: &Peers,
    id: &str,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<Vec<EdgeView>, GraphError> {
    let q = EdgeQuery {
        limit: Some(app.config.max_limit),
        ..EdgeQuery::default()
    };
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let what = Spread::Links { id };
        let (page, f) = spread_page(app, peers, what, &q, cursor.as_ref(), deadline).await?;
        fresh.merge(f);
        out.extend(page.items);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The members of cluster `cluster` as processes send them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembersOut {
    pub cluster: String,
    /// Sorted bytewise.
    pub members: Vec<String>,
}

/// Every stored member of `cluster`, on every process, sorted.
pub async fn members(
    app: &App,
    peers: &Peers,
    cluster: &str,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<Vec<String>, GraphError> {
    let path = format!("/v1/clusters/{}", segs(cluster));
    let path = path.as_str();
    let (lists, f) = across(peers, |p| async move {
        if p == peers.me() {
            local(app, |v| v.cluster_members(cluster))
        } else {
            let a = peers.get(p, path, deadline).await?;
            let m: Option<MembersOut> = a.found(peers)?;
            Ok((m.map(|m| m.members).unwrap_or_default(), a.fresh))
        }
    })
    .await?;
    fresh.merge(f);
    let all: BTreeSet<String> = lists.into_iter().flatten().collect();
    Ok(all.into_iter().collect())
}

/// Where `id` belongs (the process holding its entry), with the members of
/// its cluster from every process.
pub async fn identity(
    app: &App,
    peers: &Peers,
    id: &str,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<Option<IdentityView>, GraphError> {
    let path = format!("/v1/identity/{}", segs(id));
    let path = path.as_str();
    let (entries, f) = across(peers, |p| async move {
        if p == peers.me() {
            local(app, |v| v.identity(id))
        } else {
            let a = peers.get(p, path, deadline).await?;
            Ok((a.found::<IdentityView>(peers)?, a.fresh))
        }
    })
    .await?;
    fresh.merge(f);
    let Some(mut entry) = entries.into_iter().flatten().next() else {
        return Ok(None);
    };
    entry.members = members(app, peers, &entry.cluster, deadline, fresh).await?;
    Ok(Some(entry))
}

/// The largest watermark of any dataflow on any process (for traversal
/// defaults), from each process's freshness headers.
pub async fn max_watermark(
    app: &App,
    peers: &Peers,
    deadline: Instant,
    fresh: &mut FreshSet,
) -> Result<Option<i64>, GraphError> {
    let (_, f) = across(peers, |p| async move {
        if p == peers.me() {
            local(app, |_| Ok(()))
        } else {
            let a = peers.get(p, "/v1/status", deadline).await?;
            a.ok::<serde_json::Value>(peers)?;
            Ok(((), a.fresh))
        }
    })
    .await?;
    fresh.merge(f);
    Ok(fresh.max_watermark())
}

/// Identifiers starting with `prefix` on any process: the first `limit`.
pub async fn search(
    app: &App,
    peers: &Peers,
    prefix: &str,
    limit: usize,
    deadline: Instant,
) -> Result<(Vec<String>, FreshSet), GraphError> {
    #[derive(Deserialize)]
    struct SearchIn {
        items: Vec<String>,
    }
    let path = format!("/v1/search?q={}&limit={limit}", seg(prefix));
    let path = path.as_str();
    let (lists, fresh) = across(peers, |p| async move {
        if p == peers.me() {
            local(app, |v| v.search(prefix, limit))
        } else {
            let a = peers.get(p, path, deadline).await?;
            Ok((a.ok::<SearchIn>(peers)?.items, a.fresh))
        }
    })
    .await?;
    let all: BTreeSet<String> = lists.into_iter().flatten().collect();
    Ok((all.into_iter().take(limit).collect(), fresh))
}

/// [`GraphReads`] over the whole cluster: each read goes where its records
/// live; a hop's nodes are read at once. The graph walk is synchronous
/// (it runs on the blocking pool), so each batch of calls is driven to its
/// end on `runtime`, the server thread's runtime.
pub struct PeerReads<'a> {
    pub app: &'a App,
    pub peers: &'a Peers,
    pub deadline: Instant,
    pub fresh: FreshSet,
    pub runtime: tokio::runtime::Handle,
}

/// Nodes of a hop asked for at once.
const HOP_BATCH: usize = 64;

impl<'a> PeerReads<'a> {
    /// Reads for a graph query on the blocking pool of the current runtime
    /// (the server thread's).
    pub fn new(app: &'a App, peers: &'a Peers, deadline: Instant) -> PeerReads<'a> {
        PeerReads {
            app,
            peers,
            deadline,
            fresh: FreshSet::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// One hop's page of `node` from `process`.
    async fn hop_page(
        &self,
        hop: &Hop,
        q: &EdgeQuery,
        node: &str,
        process: usize,
    ) -> Result<(Vec<EdgeView>, ProcessFresh), GraphError> {
        let peers = self.peers;
        if process == peers.me() {
            return local(self.app, |v| v.edges_page(&hop.edge_type, node, q, None))
                .map(|(page, f)| (page.items, f));
        }
        let mut path = format!(
            "/v1/edges/{}/{}?direction={}&order=recent&limit={}",
            seg(&hop.edge_type),
            segs(node),
            hop.direction.as_str(),
            hop.limit
        );
        if let Some(s) = hop.since {
            path.push_str(&format!("&since={s}"));
        }
        let a = peers.get(process, &path, self.deadline).await?;
        let page: PageIn = a.ok(peers)?;
        Ok((page.items, a.fresh))
    }
}

impl GraphReads for PeerReads<'_> {
    fn batch(&self) -> usize {
        HOP_BATCH
    }

    fn hop_pages(&mut self, hop: &Hop, nodes: &[String]) -> Result<Vec<Vec<EdgeView>>, GraphError> {
        let q = super::graph::hop_query(hop);
        // Each call: (node index, process); a node's out-edges live on its
        // owner, its in-edges on every process.
        let mut reads: Vec<(usize, usize)> = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            match hop.direction {
                Direction::Out => reads.push((
                    i,
                    self.peers.owner_of(Key::OutEdges {
                        edge_type: &hop.edge_type,
                        from: node,
                    }),
                )),
                Direction::In => reads.extend(self.peers.all().into_iter().map(|p| (i, p))),
            }
        }
        let me = &*self;
        let q = &q;
        let answers = self.runtime.block_on(self.peers.fan_out_each(
            &reads,
            |(_, p)| p,
            |(i, p)| async move {
                me.hop_page(hop, q, &nodes[i], p)
                    .await
                    .map(|(items, f)| (i, items, f))
            },
        ));
        let mut pages: Vec<Vec<EdgeView>> = vec![Vec::new(); nodes.len()];
        for (p, answer) in answers {
            let (i, items, f) = answer?;
            self.fresh.add(p, f);
            pages[i].extend(items);
        }
        Ok(pages
            .into_iter()
            .map(|items| merge_page(items, false, EdgeOrder::Recent, Some(hop.limit)).items)
            .collect())
    }

    fn identity(&mut self, id: &str) -> Result<Option<IdentityView>, GraphError> {
        let (app, peers, deadline) = (self.app, self.peers, self.deadline);
        self.runtime
            .block_on(identity(app, peers, id, deadline, &mut self.fresh))
    }

    fn links(&mut self, id: &str) -> Result<Vec<EdgeView>, GraphError> {
        let (app, peers, deadline) = (self.app, self.peers, self.deadline);
        self.runtime
            .block_on(all_links(app, peers, id, deadline, &mut self.fresh))
    }

    fn check_deadline(&self) -> Result<(), GraphError> {
        if Instant::now() >= self.deadline {
            Err(GraphError::Deadline)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(node: &str, last_seen: i64) -> EdgeView {
        EdgeView {
            node: node.into(),
            count: 1,
            first_seen: 0,
            last_seen,
            props: serde_json::Map::new(),
        }
    }

    #[test]
    fn merged_pages_resume_after_their_last_item() {
        let items = vec![item("b", 5), item("a", 5), item("c", 9)];
        let p = merge_page(items.clone(), false, EdgeOrder::Recent, Some(2));
        let nodes: Vec<&str> = p.items.iter().map(|e| e.node.as_str()).collect();
        assert_eq!(nodes, ["c", "a"]);
        assert_eq!(
            p.next,
            Some(EdgeCursor::Recent {
                last_seen: 5,
                after: "a".into()
            })
        );
        let p = merge_page(items.clone(), false, EdgeOrder::Id, Some(3));
        assert_eq!(p.next, None);
        let p = merge_page(items, true, EdgeOrder::Id, Some(3));
        assert_eq!(p.next, Some(EdgeCursor::Id { after: "c".into() }));
    }
}
