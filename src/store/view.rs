//! Reads for a query service: a [`ReadView`] that reads one state across
//! several reads, paging cursors for neighbour lists, identifier search, the
//! list of stored types, and per-namespace sizes.
//!
//! Invariants: everything read through one `ReadView` sees the same commits
//! (it holds the fjall snapshot published with the last commit's count and
//! meta, or for sled the store's gate shared until it is dropped;
//! [`ReadView::commit_count`] names that state); a cursor is the sort key of
//! the last item of a page, so resuming never returns an item twice and
//! never skips an item that existed, unchanged, during the whole walk.

use std::collections::BTreeMap;
use std::sync::RwLockReadGuard;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::engine::{Bound, Ns, Snap};
use super::reader::{decode_strs, tree_name};
use super::{
    EdgeOrder, EdgeQuery, EdgeView, Family, IdentityView, Meta, NodeView, Store, StoreError,
    TREE_CLUSTER, TREE_ID, TREE_LINK, codec,
};

/// Where a page of neighbours ended: the sort key of its last item.
/// Encoded as an opaque URL-safe string by [`EdgeCursor::encode`].
///
/// What paging guarantees while commits run (each page is read through its
/// own view, so each page is consistent; the walk as a whole is not a
/// snapshot):
/// - `Id` order resumes strictly after the last neighbour id with a range
///   scan. A neighbour present during the whole walk is returned exactly
///   once; none is returned twice; neighbours added behind the cursor are
///   not seen by this walk, those added ahead of it are.
/// - `Recent` order (last_seen descending, ties by neighbour ascending)
///   resumes strictly after (last_seen, neighbour) of the last item. No
///   neighbour is returned twice: an update only raises last_seen, which
///   moves a neighbour toward the front, behind the cursor. A neighbour
///   updated during the walk before the walk reached it is therefore not
///   returned by later pages (start a new walk to see the newest); one whose
///   last_seen did not change during the walk is returned exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EdgeCursor {
    /// Resume after this neighbour (`type:id`), in id order.
    Id { after: String },
    /// Resume after (last_seen, neighbour), in recent order.
    Recent { last_seen: i64, after: String },
}

const CURSOR_ID: u8 = b'i';
const CURSOR_RECENT: u8 = b'r';

impl EdgeCursor {
    /// The order this cursor pages through.
    pub fn order(&self) -> EdgeOrder {
        match self {
            EdgeCursor::Id { .. } => EdgeOrder::Id,
            EdgeCursor::Recent { .. } => EdgeOrder::Recent,
        }
    }

    /// The opaque form: base64url (no padding) of a tag byte, for `Recent`
    /// the 8 big-endian bytes of last_seen, then the neighbour's bytes.
    pub fn encode(&self) -> String {
        let mut raw = Vec::new();
        match self {
            EdgeCursor::Id { after } => {
                raw.push(CURSOR_ID);
                raw.extend_from_slice(after.as_bytes());
            }
            EdgeCursor::Recent { last_seen, after } => {
                raw.push(CURSOR_RECENT);
                raw.extend_from_slice(&last_seen.to_be_bytes());
                raw.extend_from_slice(after.as_bytes());
            }
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Reads back what [`EdgeCursor::encode`] wrote; anything else is
    /// [`StoreError::Cursor`].
    pub fn decode(text: &str) -> Result<EdgeCursor, StoreError> {
        let bad = |detail: &str| StoreError::Cursor {
            detail: detail.to_string(),
        };
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad("not a cursor returned by this server (bad base64)"))?;
        let utf8 = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .map_err(|_| bad("not a cursor returned by this server (bad id)"))
        };
        match raw.split_first() {
            Some((&CURSOR_ID, rest)) => Ok(EdgeCursor::Id { after: utf8(rest)? }),
            Some((&CURSOR_RECENT, rest)) => {
                let Some((ls, id)) = rest.split_first_chunk::<8>() else {
                    return Err(bad("not a cursor returned by this server (too short)"));
                };
                Ok(EdgeCursor::Recent {
                    last_seen: i64::from_be_bytes(*ls),
                    after: utf8(id)?,
                })
            }
            _ => Err(bad("not a cursor returned by this server (unknown kind)")),
        }
    }
}

/// One page of neighbours.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgePage {
    pub items: Vec<EdgeView>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<EdgeCursor>,
}

/// The node and edge types that have a tree (something was stored once).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Schema {
    /// Sorted.
    pub node_types: Vec<String>,
    /// Sorted.
    pub edge_types: Vec<String>,
    /// Edge types with a reverse index (`Direction::In` answers), sorted.
    pub reverse_edge_types: Vec<String>,
}

/// Several reads that see the same commits: on fjall a snapshot (commits go
/// on; the snapshot keeps what it sees from being compacted away), on sled
/// the store's gate held shared until dropped, so commits wait. Keep it
/// short-lived, and do not call the [`Store`]'s own read methods while
/// holding one (see "Isolation").
pub struct ReadView<'a> {
    store: &'a Store,
    pub(crate) snap: Snap,
    commits: u64,
    meta: std::sync::Arc<Meta>,
    _shared: Option<RwLockReadGuard<'a, ()>>,
}

impl Store {
    /// A view for several consistent reads (see [`ReadView`]).
    pub fn read(&self) -> ReadView<'_> {
        // sled: the gate, shared, keeps commits out for the view's life (a
        // commit publishes holding it exclusively, so what is published
        // under it is what the trees hold). fjall: the snapshot published
        // with the last commit, or taken again since when it aged while no
        // commit ran (see "Isolation").
        let (shared, published) = match self.engine() {
            super::Engine::Sled => (Some(self.gate_shared()), self.published()),
            super::Engine::Fjall => (None, self.published_fresh()),
        };
        ReadView {
            store: self,
            snap: published.snap.clone(),
            commits: published.commits,
            meta: published.meta.clone(),
            _shared: shared,
        }
    }

    /// The stored node and edge types.
    pub fn schema(&self) -> Schema {
        let names = |f: Family| -> Vec<String> {
            self.dyn_trees(f)
                .into_iter()
                .map(|(n, _)| n.to_string())
                .collect()
        };
        Schema {
            node_types: names(Family::Node),
            edge_types: names(Family::Edge),
            reverse_edge_types: names(Family::EdgeIn),
        }
    }

    /// Distinct records per tree, by tree name: `node/<type>` (nodes),
    /// `edge/<type>` and `edge_in/<type>` (edges), `identity/link` (links,
    /// both directions counted once), `identity/id` (identifiers),
    /// `identity/cluster` (clusters), `dead_letter/<dataflow>`.
    ///
    /// Scans everything, in chunks of `chunk` keys each read through its own
    /// view (so sled's commits are not stalled by a large store): each chunk
    /// is consistent, the totals are not one snapshot when commits run during
    /// the scan. For statistics, not for answers.
    pub fn namespace_counts(&self, chunk: usize) -> Result<BTreeMap<String, u64>, StoreError> {
        let chunk = chunk.max(1);
        let mut out = BTreeMap::new();
        let mut trees: Vec<(String, Ns, usize)> = Vec::new();
        for (f, segments) in [
            (Family::Node, 1),
            (Family::Edge, 2),
            (Family::EdgeIn, 2),
            (Family::Dead, 0),
        ] {
            for (name, tree) in self.dyn_trees(f) {
                trees.push((tree_name(f, &name), tree, segments));
            }
        }
        trees.push((TREE_LINK.to_string(), self.inner.link.clone(), 2));
        trees.push((TREE_ID.to_string(), self.inner.id.clone(), 0));
        trees.push((TREE_CLUSTER.to_string(), self.inner.cluster.clone(), 1));
        for (name, tree, segments) in trees {
            let n = self.count_chunked(&name, &tree, segments, chunk)?;
            // Each link is stored in both directions.
            let n = if name == TREE_LINK { n / 2 } else { n };
            out.insert(name, n);
        }
        Ok(out)
    }

    /// Distinct values of the first `segments` segments of the keys of
    /// `tree` (every key when 0), reading `chunk` keys per gate hold.
    fn count_chunked(
        &self,
        name: &str,
        tree: &Ns,
        segments: usize,
        chunk: usize,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut last: Vec<u8> = Vec::new();
        let mut from: Option<Vec<u8>> = None;
        loop {
            let view = self.read();
            let iter = match &from {
                None => view.snap.iter(tree),
                Some(k) => view.snap.range(tree, Bound::Excluded(k)),
            };
            let mut read = 0;
            for item in iter {
                let (k, _) = item.map_err(|e| self.engine_err(e))?;
                read += 1;
                if segments == 0 {
                    n += 1;
                } else {
                    let mut len = 0;
                    for _ in 0..segments {
                        len += codec::segment_len(&k[len..])
                            .map_err(|e| StoreError::corrupt(name, &k, e))?;
                    }
                    if last[..] != k[..len] {
                        n += 1;
                        last.clear();
                        last.extend_from_slice(&k[..len]);
                    }
                }
                if read >= chunk {
                    from = Some(k.to_vec());
                    break;
                }
            }
            if read < chunk {
                return Ok(n);
            }
        }
    }
}

impl ReadView<'_> {
    /// The number of non-empty commits this view sees.
    pub fn commit_count(&self) -> u64 {
        self.commits
    }

    /// See [`Store::node`].
    pub fn node(&self, id: &str) -> Result<Option<NodeView>, StoreError> {
        self.store.node_in(&self.snap, id)
    }

    /// See [`Store::edges_page`].
    pub fn edges_page(
        &self,
        edge_type: &str,
        id: &str,
        q: &EdgeQuery,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        self.store
            .edges_page_in(&self.snap, edge_type, id, q, after)
    }

    /// See [`Store::links`].
    pub fn links(&self, id: &str, q: &EdgeQuery) -> Result<Vec<EdgeView>, StoreError> {
        Ok(self.store.links_page_in(&self.snap, id, q, None)?.items)
    }

    /// See [`Store::identity`].
    pub fn identity(&self, id: &str) -> Result<Option<IdentityView>, StoreError> {
        self.store.identity_in(&self.snap, id)
    }

    /// One page of [`Store::links`]: at most `q.limit` link neighbours
    /// strictly after `after` in `q.order` (cursors as in
    /// [`ReadView::edges_page`]; `q.direction` is ignored).
    pub fn links_page(
        &self,
        id: &str,
        q: &EdgeQuery,
        after: Option<&EdgeCursor>,
    ) -> Result<EdgePage, StoreError> {
        self.store.links_page_in(&self.snap, id, q, after)
    }

    /// The stored members of the cluster `cluster` (its `identity/cluster`
    /// entries), sorted bytewise; empty when there are none.
    pub fn cluster_members(&self, cluster: &str) -> Result<Vec<String>, StoreError> {
        self.store.members_in(&self.snap, cluster)
    }

    /// [`Store::export`] of the state this view sees (on sled the view holds
    /// the gate, so commits wait until the export ends: write to a fast sink
    /// such as a temporary file, not to a slow client).
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<super::ExportCounts, StoreError> {
        self.store
            .export_in(&self.snap, out, super::export::DEFAULT_BUDGET)
    }

    /// See [`Store::meta`]: kept in memory with each commit (checked
    /// against `meta` when the state is opened), so it costs no read.
    pub fn meta(&self) -> Result<Meta, StoreError> {
        Ok(Meta::clone(&self.meta))
    }

    /// Identifiers (`type:id`) that start with `prefix`, sorted, at most
    /// `limit`: nodes, and identifiers with an identity entry (devices, for
    /// example, are only identifiers). With a colon, `prefix` is
    /// `type:id-prefix` and only that type's nodes are searched; without one
    /// it is an id prefix searched in every node type (and a prefix of
    /// `type:id` in the identity entries).
    pub fn search(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut found = std::collections::BTreeSet::new();
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The escaped bytes of a segment without its terminator: a raw
        // prefix of every encoded segment that starts with `p`.
        let raw_prefix = |p: &str| {
            let mut k = codec::encode(&[p]);
            k.truncate(k.len() - 2);
            k
        };
        let node_types: Vec<(compact_str::CompactString, Ns, String)> = match prefix.split_once(':')
        {
            Some((t, id)) => self
                .store
                .dyn_tree(Family::Node, t)
                .map(|tree| (t.into(), tree, id.to_string()))
                .into_iter()
                .collect(),
            None => self
                .store
                .dyn_trees(Family::Node)
                .into_iter()
                .map(|(t, tree)| (t, tree, prefix.to_string()))
                .collect(),
        };
        for (node_type, tree, id_prefix) in node_types {
            let name = tree_name(Family::Node, &node_type);
            let mut taken = 0;
            let mut last: Vec<u8> = Vec::new();
            for item in self.snap.prefix(&tree, &raw_prefix(&id_prefix)) {
                let (k, _) = item.map_err(|e| self.store.engine_err(e))?;
                let n = codec::segment_len(&k).map_err(|e| StoreError::corrupt(&name, &k, e))?;
                if k[..n] == last[..] {
                    continue;
                }
                last.clear();
                last.extend_from_slice(&k[..n]);
                let [id] =
                    decode_strs::<1>(&k[..n]).map_err(|e| StoreError::corrupt(&name, &k, e))?;
                found.insert(format!("{node_type}:{id}"));
                taken += 1;
                if taken >= limit {
                    break;
                }
            }
        }
        let mut taken = 0;
        for item in self.snap.prefix(&self.store.inner.id, &raw_prefix(prefix)) {
            let (k, _) = item.map_err(|e| self.store.engine_err(e))?;
            let [id] = decode_strs::<1>(&k).map_err(|e| StoreError::corrupt(TREE_ID, &k, e))?;
            found.insert(id.into_owned());
            taken += 1;
            if taken >= limit {
                break;
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }
}
