//! Multi-read queries: traversals (hop by hop along edge types) and
//! identity paths (why two identifiers share a cluster), written once over
//! [`GraphReads`] so that one process ([`ViewReads`], one
//! [`ReadView`]) and a cluster (`cluster::PeerReads`, reads sent to the
//! processes that own them) give the same answers.
//!
//! Invariants: with [`ViewReads`] both read through a single view, so they
//! see one state; both are bounded before they start (hops, per-hop and
//! total limits, visited identifiers) and check a deadline between reads,
//! so no request can make them run unbounded. The walk itself depends only
//! on what the reads return, never on how they are batched.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::peers::PeerError;
use crate::store::{Direction, EdgeOrder, EdgeQuery, EdgeView, IdentityView, ReadView, StoreError};

/// The reads the graph queries need. Implementations answer exactly what
/// one process holding every record would answer.
pub trait GraphReads {
    /// How many nodes of a hop to ask [`GraphReads::hop_pages`] for at once.
    fn batch(&self) -> usize;
    /// For each of `nodes`, in order: its `hop.limit` most recent edges of
    /// `hop.edge_type` in `hop.direction` with `last_seen >= hop.since`
    /// (recent order: last_seen descending, ties by neighbour ascending).
    fn hop_pages(&mut self, hop: &Hop, nodes: &[String]) -> Result<Vec<Vec<EdgeView>>, GraphError>;
    /// Where `id` belongs, with every member of its cluster.
    fn identity(&mut self, id: &str) -> Result<Option<IdentityView>, GraphError>;
    /// Every live identity link of `id`, in neighbour order.
    fn links(&mut self, id: &str) -> Result<Vec<EdgeView>, GraphError>;
    /// `Err(Deadline)` once the request is out of time.
    fn check_deadline(&self) -> Result<(), GraphError>;
}

/// [`GraphReads`] through one [`ReadView`]: one consistent state.
pub struct ViewReads<'v, 'a> {
    pub view: &'v ReadView<'a>,
    pub deadline: Instant,
}

/// The query of one hop's page.
pub fn hop_query(hop: &Hop) -> EdgeQuery {
    EdgeQuery {
        direction: hop.direction,
        limit: Some(hop.limit),
        since: hop.since,
        order: EdgeOrder::Recent,
    }
}

impl GraphReads for ViewReads<'_, '_> {
    fn batch(&self) -> usize {
        1
    }

    fn hop_pages(&mut self, hop: &Hop, nodes: &[String]) -> Result<Vec<Vec<EdgeView>>, GraphError> {
        let q = hop_query(hop);
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            self.check_deadline()?;
            out.push(self.view.edges_page(&hop.edge_type, node, &q, None)?.items);
        }
        Ok(out)
    }

    fn identity(&mut self, id: &str) -> Result<Option<IdentityView>, GraphError> {
        Ok(self.view.identity(id)?)
    }

    fn links(&mut self, id: &str) -> Result<Vec<EdgeView>, GraphError> {
        Ok(self.view.links(id, &EdgeQuery::default())?)
    }

    fn check_deadline(&self) -> Result<(), GraphError> {
        if Instant::now() >= self.deadline {
            Err(GraphError::Deadline)
        } else {
            Ok(())
        }
    }
}

/// Why a graph query stopped without an answer.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("out of time")]
    Deadline,
    #[error("{0}")]
    NotFound(String),
    #[error("gave up after visiting {0} identifiers")]
    TooLarge(usize),
    /// Another process of the cluster did not answer as it should.
    #[error(transparent)]
    Peer(#[from] PeerError),
}

/// One hop of a traversal, checked and with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub edge_type: String,
    pub direction: Direction,
    pub since: Option<i64>,
    /// Edges followed from each node of the hop, most recent first.
    pub limit: usize,
}

/// An edge record as stored: `from -[edge_type]-> to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeRecord {
    pub from: String,
    pub to: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub props: serde_json::Map<String, Value>,
}

/// A node reached by a hop, with the edges that led there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reached {
    pub node: String,
    pub edges: Vec<EdgeRecord>,
}

/// What one hop reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HopResult {
    #[serde(flatten)]
    pub hop: Hop,
    /// Sorted by node.
    pub nodes: Vec<Reached>,
}

/// A traversal's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Traversal {
    pub start: String,
    pub limit: usize,
    pub hops: Vec<HopResult>,
    /// True when `limit` edge records were reached and the walk stopped.
    pub truncated: bool,
}

/// Walks `hops` from `start`. At each hop, every node reached by the
/// previous hop (in id order) follows its `limit` most recent edges of the
/// hop's type and direction with `last_seen >= since`. A node appears once,
/// at the first hop that reaches it (the start node is never reached again);
/// it lists every edge of that hop that led to it. At most `limit` edge
/// records are returned in all; reaching it stops the walk (`truncated`).
pub fn traverse(
    reads: &mut dyn GraphReads,
    start: &str,
    hops: &[Hop],
    limit: usize,
) -> Result<Traversal, GraphError> {
    let mut seen: BTreeSet<String> = BTreeSet::from([start.to_string()]);
    let mut frontier: Vec<String> = vec![start.to_string()];
    let mut out = Vec::with_capacity(hops.len());
    let mut records = 0usize;
    let mut truncated = false;
    let batch = reads.batch().max(1);
    for hop in hops {
        let mut reached: BTreeMap<String, Vec<EdgeRecord>> = BTreeMap::new();
        'frontier: for chunk in frontier.chunks(batch) {
            if truncated {
                break;
            }
            reads.check_deadline()?;
            let pages = reads.hop_pages(hop, chunk)?;
            for (node, page) in chunk.iter().zip(pages) {
                for e in page {
                    if seen.contains(&e.node) && !reached.contains_key(&e.node) {
                        continue;
                    }
                    if records >= limit {
                        truncated = true;
                        break 'frontier;
                    }
                    records += 1;
                    let (from, to) = match hop.direction {
                        Direction::Out => (node.clone(), e.node.clone()),
                        Direction::In => (e.node.clone(), node.clone()),
                    };
                    reached.entry(e.node).or_default().push(EdgeRecord {
                        from,
                        to,
                        count: e.count,
                        first_seen: e.first_seen,
                        last_seen: e.last_seen,
                        props: e.props,
                    });
                }
            }
        }
        seen.extend(reached.keys().cloned());
        frontier = reached.keys().cloned().collect();
        out.push(HopResult {
            hop: hop.clone(),
            nodes: reached
                .into_iter()
                .map(|(node, edges)| Reached { node, edges })
                .collect(),
        });
    }
    Ok(Traversal {
        start: start.to_string(),
        limit,
        hops: out,
        truncated,
    })
}

/// A live identity link on a path.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkRecord {
    pub a: String,
    pub b: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// Why two identifiers are in one cluster: a shortest chain of live links
/// between members of that cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IdentityPath {
    pub from: String,
    pub to: String,
    pub cluster: String,
    /// `from`, ..., `to`.
    pub path: Vec<String>,
    /// `links[i]` joins `path[i]` and `path[i + 1]`.
    pub links: Vec<LinkRecord>,
}

/// A shortest chain of stored (live) links from `from` to `to` through
/// non-hub members of their common cluster, found breadth-first with
/// neighbours in id order (so the answer is deterministic). `NotFound` when
/// either has no identity entry, either is a hub, or they are in different
/// clusters. Visits at most `max_visits` identifiers.
pub fn identity_path(
    reads: &mut dyn GraphReads,
    from: &str,
    to: &str,
    max_visits: usize,
) -> Result<IdentityPath, GraphError> {
    let a = reads
        .identity(from)?
        .ok_or_else(|| GraphError::NotFound(format!("{from} has no identity entry")))?;
    let b = reads
        .identity(to)?
        .ok_or_else(|| GraphError::NotFound(format!("{to} has no identity entry")))?;
    if from == to {
        return Ok(IdentityPath {
            from: from.to_string(),
            to: to.to_string(),
            cluster: a.cluster,
            path: vec![from.to_string()],
            links: Vec::new(),
        });
    }
    for v in [&a, &b] {
        if v.hub {
            return Err(GraphError::NotFound(format!(
                "{} is a hub (too many links): hubs are kept out of clusters",
                v.id
            )));
        }
    }
    if a.cluster != b.cluster {
        return Err(GraphError::NotFound(format!(
            "{from} (cluster {}) and {to} (cluster {}) are in different clusters",
            a.cluster, b.cluster
        )));
    }
    let members: BTreeSet<&str> = a.members.iter().map(String::as_str).collect();
    // node -> (previous node, the link between them)
    let mut parent: BTreeMap<String, Option<(String, LinkRecord)>> = BTreeMap::new();
    parent.insert(from.to_string(), None);
    let mut queue = VecDeque::from([from.to_string()]);
    while let Some(x) = queue.pop_front() {
        if parent.len() > max_visits {
            return Err(GraphError::TooLarge(max_visits));
        }
        reads.check_deadline()?;
        for l in reads.links(&x)? {
            if !members.contains(l.node.as_str()) || parent.contains_key(&l.node) {
                continue;
            }
            let (lo, hi) = if x <= l.node {
                (x.clone(), l.node.clone())
            } else {
                (l.node.clone(), x.clone())
            };
            let link = LinkRecord {
                a: lo,
                b: hi,
                count: l.count,
                first_seen: l.first_seen,
                last_seen: l.last_seen,
            };
            parent.insert(l.node.clone(), Some((x.clone(), link)));
            if l.node == to {
                let mut path = vec![to.to_string()];
                let mut links = Vec::new();
                let mut at = to.to_string();
                while let Some(Some((prev, link))) = parent.remove(&at) {
                    path.push(prev.clone());
                    links.push(link);
                    at = prev;
                }
                path.reverse();
                links.reverse();
                return Ok(IdentityPath {
                    from: from.to_string(),
                    to: to.to_string(),
                    cluster: a.cluster,
                    path,
                    links,
                });
            }
            queue.push_back(l.node);
        }
    }
    // Only when the stored clusters disagree with the stored links.
    Err(GraphError::NotFound(format!(
        "no chain of live links joins {from} and {to} inside cluster {}",
        a.cluster
    )))
}
