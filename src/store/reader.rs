//! The read path: point reads of nodes and identities, neighbour scans, and
//! the stream of every stored contribution for a restart.
//!
//! Invariant: reads never create namespaces (a missing one means "nothing
//! stored") and never panic on stored bytes: anything that does not decode is
//! `StoreError::Corrupt` naming the namespace and the key. Every read goes
//! through a [`Snap`] of a [`ReadView`](super::ReadView) (the `Store`'s own
//! methods open one per call), so it sees whole commits only.

use std::collections::VecDeque;

use compact_str::CompactString;

use super::engine::{Bound, Bytes, KvIter, Ns, Snap};
use super::merge::{
    Contribution, Merged, decode_edge_value, decode_exact, decode_record, merge, to_json_map,
};
use super::{
    Direction, EdgeCursor, EdgeOrder, EdgePage, EdgeQuery, EdgeView, Family, IdentityView,
    NodeView, Store, StoreError, TREE_CLUSTER, TREE_ID, TREE_LINK, codec,
};
use crate::model::{Change, ClusterOf, ident, split_ident};

/// The full name of a dynamic tree, for error messages.
pub(crate) fn tree_name(family: Family, name: &str) -> String {
    format!("{}{name}", family.prefix())
}

/// Decodes a key that must consist of exactly `N` string segments.
pub(crate) fn decode_strs<'k, const N: usize>(
    key: &'k [u8],
) -> Result<[std::borrow::Cow<'k, str>; N], codec::CodecError> {
    let mut d = codec::Decoder::new(key);
    let mut out: [std::borrow::Cow<'k, str>; N] = std::array::from_fn(|_| Default::default());
    for slot in &mut out {
        *slot = d.str()?;
    }
    d.end()?;
    Ok(out)
}

/// Decodes a `postcard(ClusterOf)` value with no trailing bytes.
pub(crate) fn decode_cluster_of(v: &[u8]) -> Result<ClusterOf, String> {
    decode_exact(v, "cluster entry")
}

impl Store {
    /// The node `type:id`, all dataflows' contributions merged.
    pub fn node(&self, id: &str) -> Result<Option<NodeView>, StoreError> {
        self.read().node(id)
    }

    /// The neighbours of `id` over `edge_type` edges, contributions merged.
    /// [`Direction::In`] only sees edges written with `reverse = true`.
    pub fn edges(
        &self,
        edge_type: &str,
        id: &str,
        q: &EdgeQuery,
    ) -> Result<Vec<EdgeView>, StoreError> {
        Ok(self.read().edges_page(edge_type, id, q, None)?.items)
    }

    /// One page of [`Store::edges`]: at most `q.limit` neighbours strictly
    /// after `after` in `q.order`, and the cursor of the next page when more
    /// may follow (see [`EdgeCursor`] for what paging guarantees while
    /// commits run). A cursor of the other order is [`StoreError::Cursor`].
    pub fn edges_page(
        &self,
        edge_type: &str,
        id: &str,
        q: &EdgeQuery,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        self.read().edges_page(edge_type, id, q, after)
    }

    /// The identifiers `id` shares a stored identity link with (from any
    /// dataflow, contributions merged), read from `identity/link`. Links are
    /// undirected: `q.direction` is ignored; limit, since and order apply.
    pub fn links(&self, id: &str, q: &EdgeQuery) -> Result<Vec<EdgeView>, StoreError> {
        self.read().links(id, q)
    }

    /// Where `id` belongs, with the members of its cluster.
    pub fn identity(&self, id: &str) -> Result<Option<IdentityView>, StoreError> {
        self.read().identity(id)
    }

    pub(crate) fn node_in(&self, snap: &Snap, id: &str) -> Result<Option<NodeView>, StoreError> {
        let (node_type, id_part) = split_ident(id);
        let Some(tree) = self.dyn_tree(Family::Node, node_type) else {
            return Ok(None);
        };
        let corrupt = |k: &[u8], d: &dyn std::fmt::Display| {
            StoreError::corrupt(&tree_name(Family::Node, node_type), k, d)
        };
        let prefix = codec::encode(&[id_part]);
        let mut contribs = Vec::new();
        for item in snap.prefix(&tree, &prefix) {
            let (k, v) = item.map_err(|e| self.engine_err(e))?;
            let [dataflow] = decode_strs::<1>(&k[prefix.len()..]).map_err(|e| corrupt(&k, &e))?;
            let record = decode_record(&v).map_err(|e| corrupt(&k, &e))?;
            contribs.push(Contribution {
                dataflow: CompactString::from(dataflow.as_ref()),
                record,
                key: k,
            });
        }
        if contribs.is_empty() {
            return Ok(None);
        }
        let m = merge(&mut contribs).map_err(|(k, d)| corrupt(&k, &d))?;
        Ok(Some(NodeView {
            id: id.to_string(),
            node_type: node_type.to_string(),
            first_seen: m.first_seen,
            last_seen: m.last_seen,
            props: to_json_map(m.props),
        }))
    }

    pub(crate) fn edges_page_in(
        &self,
        snap: &Snap,
        edge_type: &str,
        id: &str,
        q: &EdgeQuery,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        let family = match q.direction {
            Direction::Out => Family::Edge,
            Direction::In => Family::EdgeIn,
        };
        let Some(tree) = self.dyn_tree(family, edge_type) else {
            return Ok(EdgePage::default());
        };
        self.neighbours(snap, &tree, Some((family, edge_type)), id, q, true, after)
    }

    pub(crate) fn links_page_in(
        &self,
        snap: &Snap,
        id: &str,
        q: &EdgeQuery,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        self.neighbours(snap, &self.inner.link, None, id, q, false, after)
    }

    /// The stored members of `cluster` (`identity/cluster` entries), sorted.
    pub(crate) fn members_in(&self, snap: &Snap, cluster: &str) -> Result<Vec<String>, StoreError> {
        let prefix = codec::encode(&[cluster]);
        let mut members = Vec::new();
        for item in snap.prefix(&self.inner.cluster, &prefix) {
            let (k, _) = item.map_err(|e| self.engine_err(e))?;
            let [m] = decode_strs::<1>(&k[prefix.len()..])
                .map_err(|e| StoreError::corrupt(TREE_CLUSTER, &k, e))?;
            members.push(m.into_owned());
        }
        Ok(members)
    }

    /// Scans `tree` for keys `enc(id) ++ enc(neighbour) ++ enc(dataflow)` and
    /// merges each neighbour's contributions, keeping those strictly after
    /// `after`. `name` is the dynamic tree's (family, name), `None` for
    /// `identity/link`; `edge_values` says whether values carry the edge's
    /// reverse byte.
    #[allow(clippy::too_many_arguments)]
    fn neighbours(
        &self,
        snap: &Snap,
        tree: &Ns,
        name: Option<(Family, &str)>,
        id: &str,
        q: &EdgeQuery,
        edge_values: bool,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        if q.limit == Some(0) {
            return Ok(EdgePage::default());
        }
        if let Some(c) = after
            && c.order() != q.order
        {
            return Err(StoreError::Cursor {
                detail: "the cursor was made for another order".to_string(),
            });
        }
        let corrupt = |k: &[u8], d: &dyn std::fmt::Display| match name {
            Some((family, name)) => StoreError::corrupt(&tree_name(family, name), k, d),
            None => StoreError::corrupt(TREE_LINK, k, d),
        };
        // With id order and a limit, the scan can stop early: one item more
        // than the page tells whether another page follows.
        let stop_at = match q.order {
            EdgeOrder::Id => q.limit.map(|l| l.saturating_add(1)),
            EdgeOrder::Recent => None,
        };
        let prefix = codec::encode(&[id]);
        let start = scan_start(&prefix, after);
        let keep = Keep {
            since: q.since,
            recent_after: match after {
                Some(EdgeCursor::Recent { last_seen, after }) => Some((*last_seen, after.as_str())),
                _ => None,
            },
        };
        let mut out = Vec::new();
        let mut group: Vec<Contribution> = Vec::new();
        // The encoded neighbour of `group`.
        let mut neighbour: Vec<u8> = Vec::new();
        for item in snap.range(tree, Bound::Included(&start)) {
            let (k, v) = item.map_err(|e| self.engine_err(e))?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rest = &k[prefix.len()..];
            let n = codec::segment_len(rest).map_err(|e| corrupt(&k, &e))?;
            if rest[..n] != neighbour[..] {
                keep.push(&mut group, &neighbour, &corrupt, &mut out)?;
                if stop_at.is_some_and(|l| out.len() >= l) {
                    break;
                }
                neighbour.clear();
                neighbour.extend_from_slice(&rest[..n]);
            }
            let [dataflow] = decode_strs::<1>(&rest[n..]).map_err(|e| corrupt(&k, &e))?;
            let record = if edge_values {
                decode_edge_value(&v).map(|(r, _)| r)
            } else {
                let v = self.link_value(snap, &prefix, rest.split_at(n), v, &k)?;
                decode_record(&v)
            }
            .map_err(|e| corrupt(&k, &e))?;
            group.push(Contribution {
                dataflow: CompactString::from(dataflow.as_ref()),
                record,
                key: k.clone(),
            });
        }
        keep.push(&mut group, &neighbour, &corrupt, &mut out)?;
        Ok(cut_page(out, q))
    }

    /// The record bytes of the link entry `key` = `id` ++ `neighbour` ++
    /// `dataflow` (encoded segments) with value `v`: its own when `id` sorts
    /// first, else its `(a, b)` entry's (the `(b, a)` entry only says that
    /// the link exists; see the module doc). The codec preserves order, so
    /// the encoded segments compare as the identifiers do.
    fn link_value(
        &self,
        snap: &Snap,
        id: &[u8],
        (neighbour, dataflow): (&[u8], &[u8]),
        v: Bytes,
        key: &[u8],
    ) -> Result<Bytes, StoreError> {
        if id < neighbour {
            return Ok(v);
        }
        let ab = [neighbour, id, dataflow].concat();
        snap.get(&self.inner.link, &ab)
            .map_err(|e| self.engine_err(e))?
            .ok_or_else(|| {
                StoreError::corrupt(
                    TREE_LINK,
                    key,
                    "a link's (b, a) entry without its (a, b) entry",
                )
            })
    }

    pub(crate) fn identity_in(
        &self,
        snap: &Snap,
        id: &str,
    ) -> Result<Option<IdentityView>, StoreError> {
        let key = codec::encode(&[id]);
        let Some(v) = snap
            .get(&self.inner.id, &key)
            .map_err(|e| self.engine_err(e))?
        else {
            return Ok(None);
        };
        let of = decode_cluster_of(&v).map_err(|d| StoreError::corrupt(TREE_ID, &key, d))?;
        let members = self.members_in(snap, &of.cluster)?;
        Ok(Some(IdentityView {
            id: id.to_string(),
            cluster: of.cluster.to_string(),
            hub: of.hub,
            members,
        }))
    }

    /// Every stored contribution (nodes, forward edges with their `reverse`
    /// flag, links once with `a <= b`), as `Change`s with `Some(record)`, to
    /// rebuild in-memory state on restart. Streams tree by tree.
    ///
    /// On fjall it reads one snapshot, taken now. On sled it is the one read
    /// that does not hold the gate (see "Isolation" in the module docs): it
    /// is meant for a restart, before this process commits anything, and a
    /// stream that held the gate would block every commit until it was
    /// dropped.
    pub fn contributions(&self) -> Contributions {
        self.contributions_from(false)
    }

    /// [`Store::contributions`], then every identifier's stored assignment
    /// as a `Change::Cluster` (from `identity/id`): what the rebuild of a
    /// single process gives identity as the assignments already stored, so
    /// that only the ones that differ are written again.
    pub fn contributions_and_identity(&self) -> Contributions {
        self.contributions_from(true)
    }

    fn contributions_from(&self, identity: bool) -> Contributions {
        let mut sources = VecDeque::new();
        for (name, tree) in self.dyn_trees(Family::Node) {
            sources.push_back((Source::Node(name), tree));
        }
        for (name, tree) in self.dyn_trees(Family::Edge) {
            sources.push_back((Source::Edge(name), tree));
        }
        sources.push_back((Source::Link, self.inner.link.clone()));
        if identity {
            sources.push_back((Source::Identity, self.inner.id.clone()));
        }
        Contributions {
            store: self.clone(),
            snap: self.inner.db.snapshot(),
            sources,
            current: None,
        }
    }
}

/// Where a [`Contributions`] item comes from.
#[derive(Clone, Debug)]
enum Source {
    Node(CompactString),
    Edge(CompactString),
    Link,
    Identity,
}

/// The iterator of [`Store::contributions`].
pub struct Contributions {
    store: Store,
    snap: Snap,
    sources: VecDeque<(Source, Ns)>,
    current: Option<(Source, KvIter)>,
}

impl Contributions {
    /// Decodes one entry; `Ok(None)` for entries that are skipped (the second
    /// direction of a link).
    fn decode(source: &Source, k: &[u8], v: &[u8]) -> Result<Option<Change>, StoreError> {
        match source {
            Source::Node(node_type) => {
                let c = |d: &dyn std::fmt::Display| {
                    StoreError::corrupt(&tree_name(Family::Node, node_type), k, d)
                };
                let [id, dataflow] = decode_strs::<2>(k).map_err(|e| c(&e))?;
                let record = decode_record(v).map_err(|e| c(&e))?;
                Ok(Some(Change::Node {
                    id: ident(node_type, &id),
                    dataflow: dataflow.as_ref().into(),
                    record: Some(record),
                }))
            }
            Source::Edge(edge_type) => {
                let c = |d: &dyn std::fmt::Display| {
                    StoreError::corrupt(&tree_name(Family::Edge, edge_type), k, d)
                };
                let [from, to, dataflow] = decode_strs::<3>(k).map_err(|e| c(&e))?;
                let (record, reverse) = decode_edge_value(v).map_err(|e| c(&e))?;
                Ok(Some(Change::Edge {
                    edge_type: edge_type.clone(),
                    from: from.as_ref().into(),
                    to: to.as_ref().into(),
                    dataflow: dataflow.as_ref().into(),
                    reverse,
                    record: Some(record),
                }))
            }
            Source::Link => {
                let c = |d: &dyn std::fmt::Display| StoreError::corrupt(TREE_LINK, k, d);
                let [a, b, dataflow] = decode_strs::<3>(k).map_err(|e| c(&e))?;
                if a > b {
                    return Ok(None);
                }
                let record = decode_record(v).map_err(|e| c(&e))?;
                Ok(Some(Change::Link {
                    a: a.as_ref().into(),
                    b: b.as_ref().into(),
                    dataflow: dataflow.as_ref().into(),
                    mirrored: true,
                    record: Some(record),
                }))
            }
            Source::Identity => {
                let c = |d: &dyn std::fmt::Display| StoreError::corrupt(TREE_ID, k, d);
                let [id] = decode_strs::<1>(k).map_err(|e| c(&e))?;
                let cluster = decode_cluster_of(v).map_err(|e| c(&e))?;
                Ok(Some(Change::Cluster {
                    id: id.as_ref().into(),
                    cluster: Some(cluster),
                }))
            }
        }
    }
}

impl Iterator for Contributions {
    type Item = Result<Change, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let (source, tree) = self.sources.pop_front()?;
                self.current = Some((source, self.snap.iter(&tree)));
            }
            let (source, iter) = self.current.as_mut()?;
            match iter.next() {
                None => self.current = None,
                Some(Err(e)) => return Some(Err(self.store.engine_err(e))),
                Some(Ok((k, v))) => match Self::decode(source, &k, &v) {
                    Ok(None) => {}
                    Ok(Some(change)) => return Some(Ok(change)),
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}

/// Where a scan of `prefix` (an encoded identifier) starts for the page
/// after `after`. Id order resumes strictly after every key of the cursor's
/// neighbour: `prefix ++ enc(after)` with its terminator's last byte (0x01)
/// raised to 0x02 is the least key above them all. Recent order scans
/// everything (its cursor filters by `last_seen`).
/// Which merged neighbours a page keeps: those seen since `since`, and in
/// recent order those strictly after the cursor (last_seen descending,
/// then neighbour ascending).
struct Keep<'a> {
    since: Option<i64>,
    recent_after: Option<(i64, &'a str)>,
}

impl Keep<'_> {
    /// Merges one neighbour's contributions (`group`, emptied) and appends
    /// the result to `out` if the page keeps it.
    fn push(
        &self,
        group: &mut Vec<Contribution>,
        neighbour: &[u8],
        corrupt: &dyn Fn(&[u8], &dyn std::fmt::Display) -> StoreError,
        out: &mut Vec<EdgeView>,
    ) -> Result<(), StoreError> {
        if group.is_empty() {
            return Ok(());
        }
        let m: Merged = merge(group).map_err(|(k, d)| corrupt(&k, &d))?;
        let key = group[0].key.clone();
        group.clear();
        if self.since.is_some_and(|s| m.last_seen < s) {
            return Ok(());
        }
        let [node] = decode_strs::<1>(neighbour).map_err(|e| corrupt(&key, &e))?;
        if let Some((ls, n)) = self.recent_after
            && (m.last_seen > ls || (m.last_seen == ls && node.as_ref() <= n))
        {
            return Ok(());
        }
        out.push(EdgeView {
            node: node.into_owned(),
            count: m.count,
            first_seen: m.first_seen,
            last_seen: m.last_seen,
            props: to_json_map(m.props),
        });
        Ok(())
    }
}

fn scan_start(prefix: &[u8], after: Option<&EdgeCursor>) -> Vec<u8> {
    let mut k = prefix.to_vec();
    if let Some(EdgeCursor::Id { after }) = after {
        codec::push_str(&mut k, after);
        if let Some(last) = k.last_mut() {
            *last = 0x02;
        }
    }
    k
}

/// The page of `out` (the neighbours kept by the scan) for `q`: in its
/// order, cut at its limit, with the cursor of the next page when more
/// remain.
fn cut_page(mut out: Vec<EdgeView>, q: &EdgeQuery) -> EdgePage {
    if q.order == EdgeOrder::Recent {
        out.sort_unstable_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.node.cmp(&b.node))
        });
    }
    let mut next = None;
    if let Some(l) = q.limit
        && out.len() > l
    {
        out.truncate(l);
        next = out.last().map(|last| match q.order {
            EdgeOrder::Id => EdgeCursor::Id {
                after: last.node.clone(),
            },
            EdgeOrder::Recent => EdgeCursor::Recent {
                last_seen: last.last_seen,
                after: last.node.clone(),
            },
        });
    }
    EdgePage { items: out, next }
}
