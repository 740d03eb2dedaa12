//! The store: rdg's state on disk, one sled tree per namespace, behind a
//! narrow API (open, atomic commit, point and neighbour reads, export).
//!
//! It owns the on-disk layout below and keeps one invariant: **every commit
//! is applied in one sled multi-tree transaction**, so after a crash either
//! all of a commit's changes, dead letters, counters and positions are there,
//! or none are (durable once [`Store::flush`] returned).
//!
//! # Layout
//! `enc(..)` is the order-preserving, prefix-free key codec of [`codec`];
//! identifiers are `type:id` strings; `<x>` in a tree name is the raw name.
//!
//! | tree | key | value |
//! |------|-----|-------|
//! | `node/<type>` | enc(id part, dataflow) | postcard([`Record`](crate::model::Record)) |
//! | `edge/<edge_type>` | enc(from, to, dataflow) | postcard([`Record`](crate::model::Record)) ++ reverse byte |
//! | `edge_in/<edge_type>` | enc(to, from, dataflow) | the same bytes as the `edge/` value |
//! | `identity/link` | enc(a, b, dataflow) and enc(b, a, dataflow) | postcard([`Record`](crate::model::Record)) |
//! | `identity/id` | enc(ident) | postcard([`ClusterOf`](crate::model::ClusterOf)) |
//! | `identity/cluster` | enc(cluster, member) | empty |
//! | `dead_letter/<dataflow>` | u64 big-endian sequence | postcard((source, reason)) |
//! | `meta` | see below | |
//!
//! The edge value ends with one byte, `1` when the contribution was written
//! with `reverse = true` (then the `edge_in/` key exists too) and `0`
//! otherwise, so [`Store::contributions`] can hand `reverse` back and a put
//! or remove knows whether an `edge_in/` key must go.
//!
//! `meta` keys (all through the codec):
//! - enc("format") → u64 BE format version ([`FORMAT_VERSION`]); a store with
//!   another version is refused.
//! - enc("commits") → u64 BE number of non-empty commits (0 / absent: empty).
//! - enc("dataflow", name) → postcard of the dataflow's counters: events,
//!   late, dead letters, maximum watermark, next dead-letter sequence.
//! - enc("position", dataflow, partition) → u64 BE next position.
//!
//! # Reading
//! Several dataflows may contribute to one node, edge or link; reads merge
//! the contributions as `docs/semantics.md` says (module `merge`): count = sum,
//! first_seen = min, last_seen = max, props = union by key where the
//! contribution with the greater last_seen wins, ties to the greater dataflow
//! name. Incoming edges ([`Direction::In`]) only see the contributions written
//! with `reverse = true`. [`Store::links`] reads an identifier's link
//! neighbours from `identity/link` (one prefix scan, thanks to the two key
//! directions), for "why are these merged" path queries.
//!
//! # Isolation
//! sled's plain reads are not isolated from a multi-tree transaction in
//! progress: a prefix scan could see some of a commit's keys and not others.
//! So the store has a gate (an `RwLock<()>` shared by every clone):
//! [`Store::commit`] holds it exclusively around its transaction, and every
//! public read holds it shared for the whole read, so **a read never sees
//! half of a commit**. [`Store::read`] hands out a [`ReadView`] that holds the
//! gate across several reads (a traversal, an answer with its freshness), so
//! they all see the same commits. The lock is writer-preferring: while a
//! commit waits, new readers wait too, so a commit is delayed by at most the
//! reads already running. Do not call the `Store`'s own read methods while
//! holding a `ReadView` on the same thread (the lock is not re-entrant: it
//! would deadlock behind a waiting commit); use the view's methods.
//! Exceptions: [`Store::contributions`] (a restart stream, read before this
//! process commits) and [`Store::namespace_counts`] (statistics, read in
//! short gated chunks so that a large store does not stall commits).

pub mod codec;
mod export;
mod merge;
mod reader;
mod view;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::Tree;

pub use reader::Contributions;
pub use view::{EdgeCursor, EdgePage, ReadView, Schema};

#[cfg(test)]
mod tests;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

const TREE_META: &str = "meta";
const TREE_LINK: &str = "identity/link";
const TREE_ID: &str = "identity/id";
const TREE_CLUSTER: &str = "identity/cluster";
const PREFIX_NODE: &str = "node/";
const PREFIX_EDGE: &str = "edge/";
const PREFIX_EDGE_IN: &str = "edge_in/";
const PREFIX_DEAD: &str = "dead_letter/";

const META_FORMAT: &str = "format";
const META_COMMITS: &str = "commits";
const META_DATAFLOW: &str = "dataflow";
const META_POSITION: &str = "position";
/// The cluster shape the state was written by: processes, process, workers.
const META_SHAPE: &str = "shape";

/// Everything that can go wrong in the store. Each variant names where.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {} is in use by another rdg process", path.display())]
    Locked { path: PathBuf },
    #[error(
        "state directory {} has format version {found}, but this rdg reads version {expected}",
        path.display()
    )]
    Version {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {}: {source}", path.display())]
    Sled { path: PathBuf, source: sled::Error },
    #[error("corrupt entry in tree {tree} at key {key}: {detail}")]
    Corrupt {
        tree: String,
        /// The key, hex-encoded.
        key: String,
        detail: String,
    },
    #[error("export failed: {source}")]
    Export { source: std::io::Error },
    #[error(
        "state directory {} was written by {stored}; this is {requested}. Keys are sharded by worker, so a state cannot change shape: re-shard by replaying into fresh state directories (`rdg replay --brokers ...` from Kafka, or from files)",
        path.display()
    )]
    Shape {
        path: PathBuf,
        stored: Shape,
        requested: Shape,
    },
    /// A value could not be serialized (a bug: postcard cannot fail on rdg's types).
    #[error("could not encode {what}: {detail}")]
    Encode { what: &'static str, detail: String },
    /// A paging cursor that does not fit the query (made for another order).
    #[error("bad cursor: {detail}")]
    Cursor { detail: String },
}

impl StoreError {
    fn corrupt(tree: &str, key: &[u8], detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            tree: tree.to_string(),
            key: hex::encode(key),
            detail: detail.to_string(),
        }
    }
}

/// Where a state sits in a cluster: process `process` of `processes`, each
/// with `workers` workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Shape {
    pub processes: u64,
    pub process: u64,
    pub workers: u64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.processes <= 1 {
            write!(f, "a single process with {} workers", self.workers)
        } else {
            write!(
                f,
                "process {} of a cluster of {} processes × {} workers",
                self.process, self.processes, self.workers
            )
        }
    }
}

impl Store {
    /// Records the cluster shape on first use and refuses a different one
    /// later. A single process may change its number of workers (it holds
    /// every key either way); a process of a cluster may not.
    pub fn claim_shape(&self, shape: &crate::model::ClusterShape) -> Result<(), StoreError> {
        let requested = Shape {
            processes: shape.processes as u64,
            process: shape.process as u64,
            workers: shape.workers as u64,
        };
        let key = codec::encode(&[META_SHAPE]);
        let stored = match self.inner.meta.get(&key).map_err(|e| self.sled(e))? {
            Some(v) => Some(
                merge::decode_exact::<Shape>(&v, "cluster shape")
                    .map_err(|e| StoreError::corrupt(TREE_META, &key, e))?,
            ),
            None => None,
        };
        let is_single = |s: &Shape| s.processes <= 1;
        match stored {
            Some(stored) if stored == requested => Ok(()),
            Some(stored) if is_single(&stored) && is_single(&requested) => {
                self.put_shape(&key, requested)
            }
            Some(stored) => Err(StoreError::Shape {
                path: self.inner.path.clone(),
                stored,
                requested,
            }),
            None if !is_single(&requested) && !self.is_empty()? => Err(StoreError::Shape {
                path: self.inner.path.clone(),
                stored: Shape {
                    processes: 1,
                    process: 0,
                    workers: 0,
                },
                requested,
            }),
            None => self.put_shape(&key, requested),
        }
    }

    fn put_shape(&self, key: &[u8], shape: Shape) -> Result<(), StoreError> {
        let v = postcard::to_stdvec(&shape).map_err(|e| StoreError::Encode {
            what: "cluster shape",
            detail: e.to_string(),
        })?;
        self.inner.meta.insert(key, v).map_err(|e| self.sled(e))?;
        Ok(())
    }
}

/// Counters and positions of every dataflow that ever committed some.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub dataflows: BTreeMap<String, DataflowMeta>,
    pub positions: BTreeMap<(String, String), u64>,
}

/// The counters of one dataflow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DataflowMeta {
    pub events: u64,
    pub late: u64,
    pub dead_letters: u64,
    /// The largest watermark ever committed.
    pub watermark: Option<i64>,
}

pub use crate::model::{Direction, EdgeOrder};

/// A neighbour query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EdgeQuery {
    pub direction: Direction,
    /// At most this many neighbours (after `since`, in `order`).
    pub limit: Option<usize>,
    /// Keep neighbours whose merged `last_seen >= since`.
    pub since: Option<i64>,
    pub order: EdgeOrder,
}

/// A node as read: all dataflows' contributions merged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeView {
    /// `type:id`.
    pub id: String,
    pub node_type: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub props: serde_json::Map<String, Value>,
}

/// One neighbour of an edge query, contributions merged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeView {
    /// The neighbour's `type:id`.
    pub node: String,
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub props: serde_json::Map<String, Value>,
}

/// Where an identifier belongs, with its cluster's members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    pub id: String,
    pub cluster: String,
    pub hub: bool,
    /// Sorted bytewise.
    pub members: Vec<String>,
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    pub lines: u64,
}

/// Sizes of the stored graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct nodes (contributions merged).
    pub nodes: u64,
    /// Distinct forward edges (contributions merged).
    pub edges: u64,
    /// Entries of `identity/id`.
    pub identifiers: u64,
    /// Distinct cluster ids among the `identity/id` entries (hubs included).
    pub clusters: u64,
    /// Stored dead letters.
    pub dead_letters: u64,
}

/// The stored form of a dataflow's counters (`meta`, enc("dataflow", name)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DataflowCounters {
    events: u64,
    late: u64,
    dead_letters: u64,
    watermark: Option<i64>,
    next_dead_letter: u64,
}

/// The stored form of a dead letter (its dataflow is in the tree name).
#[derive(Serialize)]
struct DeadLetterRef<'a> {
    source: &'a str,
    reason: &'a str,
}

#[derive(Deserialize)]
struct DeadLetterOwned {
    source: String,
    reason: String,
}

/// The trees whose names carry a type or a dataflow, by that name.
#[derive(Default)]
struct DynTrees {
    nodes: BTreeMap<CompactString, Tree>,
    edges: BTreeMap<CompactString, Tree>,
    edges_in: BTreeMap<CompactString, Tree>,
    dead: BTreeMap<CompactString, Tree>,
}

/// Which family of dynamic trees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    Node,
    Edge,
    EdgeIn,
    Dead,
}

impl Family {
    fn prefix(self) -> &'static str {
        match self {
            Family::Node => PREFIX_NODE,
            Family::Edge => PREFIX_EDGE,
            Family::EdgeIn => PREFIX_EDGE_IN,
            Family::Dead => PREFIX_DEAD,
        }
    }
}

impl DynTrees {
    fn map(&self, f: Family) -> &BTreeMap<CompactString, Tree> {
        match f {
            Family::Node => &self.nodes,
            Family::Edge => &self.edges,
            Family::EdgeIn => &self.edges_in,
            Family::Dead => &self.dead,
        }
    }

    fn map_mut(&mut self, f: Family) -> &mut BTreeMap<CompactString, Tree> {
        match f {
            Family::Node => &mut self.nodes,
            Family::Edge => &mut self.edges,
            Family::EdgeIn => &mut self.edges_in,
            Family::Dead => &mut self.dead,
        }
    }
}

struct Inner {
    path: PathBuf,
    db: sled::Db,
    meta: Tree,
    link: Tree,
    id: Tree,
    cluster: Tree,
    /// Every dynamic tree that exists. Only this process can create trees
    /// (sled locks the directory) and all creation goes through
    /// [`Store::dyn_tree_or_create`], so absence here means absence on disk.
    dyn_trees: RwLock<DynTrees>,
    /// Isolates readers from commits: [`Store::commit`] holds it exclusively
    /// around its transaction, every read holds it shared (see "Isolation").
    gate: RwLock<()>,
    /// The number of non-empty commits (meta enc("commits")), kept in memory;
    /// only changed while `gate` is held exclusively.
    commits: AtomicU64,
}

/// The stores opened by this process, by canonical directory. A live entry
/// means the directory is open here; a dead one that it was closed, in which
/// case sled may hold its file lock a few more milliseconds (background
/// threads finishing), so [`open_db`] waits for it.
static OPEN_IN_PROCESS: std::sync::Mutex<BTreeMap<PathBuf, std::sync::Weak<Inner>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// How long to wait for sled to release the lock of a store this process
/// has closed before.
const RELOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long to wait for the lock otherwise (another process, or a raw sled
/// handle of this one that was just dropped).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// sled's page cache. Every insert reads the old value, so a cache smaller
/// than the hot part of the state slows commits: replaying 1M generated
/// events ran at 6.9k events/s with 64 MiB and 10.9k with 512 MiB, at the
/// same peak RSS (`scripts/bench-replay.sh 1000000 2`).
const CACHE_BYTES: u64 = 512 << 20;

/// Opens the sled database in `dir`. A lock conflict is
/// [`StoreError::Locked`] once it lasted [`LOCK_WAIT`], or [`RELOCK_WAIT`]
/// when this process itself closed the directory before.
fn open_db(dir: &Path, recently_closed: bool) -> Result<sled::Db, StoreError> {
    let wait = if recently_closed {
        RELOCK_WAIT
    } else {
        LOCK_WAIT
    };
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_BYTES)
            .open()
        {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= wait {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(StoreError::Sled {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// rdg's state directory. Cloning is cheap and shares the open database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if missing) the state directory `dir`.
    ///
    /// A new store gets the current [`FORMAT_VERSION`]; an existing one must
    /// have it ([`StoreError::Version`] otherwise). Fails with
    /// [`StoreError::Locked`] when another `Store` has the directory open: at
    /// once when it is one of this process, after a short wait (sled's lock
    /// is released asynchronously after a close) when it is another process.
    /// Share one open `Store` by cloning it.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let canonical = std::fs::canonicalize(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        // Held for the whole open, so two threads cannot race on one dir.
        let mut open = OPEN_IN_PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let recently_closed = match open.get(&canonical) {
            Some(w) if w.strong_count() > 0 => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Some(_) => true,
            None => false,
        };
        let db = open_db(dir, recently_closed)?;
        match Store::from_db(dir, db) {
            Ok(store) => {
                open.insert(canonical, Arc::downgrade(&store.inner));
                Ok(store)
            }
            Err(e) => {
                // The database was opened and dropped: a retry may race
                // sled's lock release like a reopen after close.
                open.insert(canonical, std::sync::Weak::new());
                Err(e)
            }
        }
    }

    fn from_db(dir: &Path, db: sled::Db) -> Result<Store, StoreError> {
        let sled_err = |source| StoreError::Sled {
            path: dir.to_path_buf(),
            source,
        };
        let mut dyn_trees = DynTrees::default();
        let mut has_data = false;
        for name in db.tree_names() {
            let Ok(name) = std::str::from_utf8(&name) else {
                continue;
            };
            let family = [Family::Node, Family::Edge, Family::EdgeIn, Family::Dead]
                .into_iter()
                .find_map(|f| name.strip_prefix(f.prefix()).map(|rest| (f, rest)));
            if let Some((family, rest)) = family {
                let tree = db.open_tree(name).map_err(sled_err)?;
                has_data |= !tree.is_empty();
                dyn_trees.map_mut(family).insert(rest.into(), tree);
            }
        }
        let meta = db.open_tree(TREE_META).map_err(sled_err)?;
        let link = db.open_tree(TREE_LINK).map_err(sled_err)?;
        let id = db.open_tree(TREE_ID).map_err(sled_err)?;
        let cluster = db.open_tree(TREE_CLUSTER).map_err(sled_err)?;
        has_data |= !meta.is_empty() || !link.is_empty() || !id.is_empty() || !cluster.is_empty();

        let format_key = codec::encode(&[META_FORMAT]);
        match meta.get(&format_key).map_err(sled_err)? {
            Some(v) => {
                let found = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| {
                        StoreError::corrupt(TREE_META, &format_key, "format version is not 8 bytes")
                    })?;
                if found != FORMAT_VERSION {
                    return Err(StoreError::Version {
                        path: dir.to_path_buf(),
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None if has_data => {
                return Err(StoreError::corrupt(
                    TREE_META,
                    &format_key,
                    format!(
                        "{} holds data but no format version (not an rdg state directory?)",
                        dir.display()
                    ),
                ));
            }
            None => {
                meta.insert(&format_key, &FORMAT_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        let commits = match meta.get(codec::encode(&[META_COMMITS])).map_err(sled_err)? {
            Some(v) => <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StoreError::corrupt(
                        TREE_META,
                        &codec::encode(&[META_COMMITS]),
                        "commit count is not 8 bytes",
                    )
                })?,
            None => 0,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                path: dir.to_path_buf(),
                db,
                meta,
                link,
                id,
                cluster,
                dyn_trees: RwLock::new(dyn_trees),
                gate: RwLock::new(()),
                commits: AtomicU64::new(commits),
            }),
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// True when nothing (no data, no counters) has ever been committed.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        let _shared = self.gate_shared();
        let key = codec::encode(&[META_COMMITS]);
        Ok(self
            .inner
            .meta
            .get(key)
            .map_err(|e| self.sled(e))?
            .is_none())
    }

    /// Writes everything committed so far to disk (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush().map(|_| ()).map_err(|e| self.sled(e))
    }

    /// Every dataflow's counters and every stored position.
    pub fn meta(&self) -> Result<Meta, StoreError> {
        let _shared = self.gate_shared();
        self.meta_unguarded()
    }

    pub(crate) fn meta_unguarded(&self) -> Result<Meta, StoreError> {
        let mut out = Meta::default();
        for item in self.inner.meta.iter() {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let corrupt = |d: &dyn std::fmt::Display| StoreError::corrupt(TREE_META, &k, d);
            let mut d = codec::Decoder::new(&k);
            let tag = d.str().map_err(|e| corrupt(&e))?;
            match tag.as_ref() {
                META_DATAFLOW => {
                    let name = d.str().map_err(|e| corrupt(&e))?;
                    d.end().map_err(|e| corrupt(&e))?;
                    let c: DataflowCounters =
                        merge::decode_exact(&v, "dataflow counters").map_err(|e| corrupt(&e))?;
                    out.dataflows.insert(
                        name.into_owned(),
                        DataflowMeta {
                            events: c.events,
                            late: c.late,
                            dead_letters: c.dead_letters,
                            watermark: c.watermark,
                        },
                    );
                }
                META_POSITION => {
                    let dataflow = d.str().map_err(|e| corrupt(&e))?;
                    let partition = d.str().map_err(|e| corrupt(&e))?;
                    d.end().map_err(|e| corrupt(&e))?;
                    let pos = <[u8; 8]>::try_from(v.as_ref())
                        .map(u64::from_be_bytes)
                        .map_err(|_| corrupt(&"position is not 8 bytes"))?;
                    out.positions
                        .insert((dataflow.into_owned(), partition.into_owned()), pos);
                }
                META_FORMAT | META_COMMITS | META_SHAPE => {
                    if tag.as_ref() == META_SHAPE {
                        continue;
                    }
                    d.end().map_err(|e| corrupt(&e))?;
                    if v.len() != 8 {
                        return Err(corrupt(&"value is not a u64 (8 bytes)"));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Holds the gate shared: no commit runs until the guard is dropped.
    fn gate_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the gate exclusively: no read runs until the guard is dropped.
    fn gate_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.inner.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of non-empty commits so far (0 for an empty store). It
    /// identifies a state: two reads that see the same number see the same
    /// data. [`ReadView::commit_count`] gives the number its reads see.
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Acquire)
    }

    /// Bytes the state directory takes on disk (sled's estimate).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(|e| self.sled(e))
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.inner.path.clone(),
            source,
        }
    }

    /// The dynamic tree `family/name`, if it exists.
    fn dyn_tree(&self, family: Family, name: &str) -> Option<Tree> {
        let trees = self
            .inner
            .dyn_trees
            .read()
            .unwrap_or_else(|p| p.into_inner());
        trees.map(family).get(name).cloned()
    }

    /// The dynamic tree `family/name`, created if missing.
    fn dyn_tree_or_create(&self, family: Family, name: &str) -> Result<Tree, StoreError> {
        if let Some(t) = self.dyn_tree(family, name) {
            return Ok(t);
        }
        let mut trees = self
            .inner
            .dyn_trees
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trees.map(family).get(name) {
            return Ok(t.clone());
        }
        let mut tree_name = String::with_capacity(family.prefix().len() + name.len());
        tree_name.push_str(family.prefix());
        tree_name.push_str(name);
        let tree = self
            .inner
            .db
            .open_tree(tree_name.as_bytes())
            .map_err(|e| self.sled(e))?;
        trees.map_mut(family).insert(name.into(), tree.clone());
        Ok(tree)
    }

    /// A snapshot of the dynamic trees of `family`, sorted by name.
    fn dyn_trees(&self, family: Family) -> Vec<(CompactString, Tree)> {
        let trees = self
            .inner
            .dyn_trees
            .read()
            .unwrap_or_else(|p| p.into_inner());
        trees
            .map(family)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Sizes of the stored graph (scans everything).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let _shared = self.gate_shared();
        let mut c = Counts::default();
        for (name, tree) in self.dyn_trees(Family::Node) {
            c.nodes += self.count_distinct_prefixes(&tree, Family::Node, &name, 1)?;
        }
        for (name, tree) in self.dyn_trees(Family::Edge) {
            c.edges += self.count_distinct_prefixes(&tree, Family::Edge, &name, 2)?;
        }
        for (_, tree) in self.dyn_trees(Family::Dead) {
            c.dead_letters += tree.len() as u64;
        }
        let mut clusters = std::collections::BTreeSet::new();
        for item in self.inner.id.iter() {
            let (k, v) = item.map_err(|e| self.sled(e))?;
            let of =
                reader::decode_cluster_of(&v).map_err(|e| StoreError::corrupt(TREE_ID, &k, e))?;
            c.identifiers += 1;
            clusters.insert(of.cluster);
        }
        c.clusters = clusters.len() as u64;
        Ok(c)
    }

    /// Counts the distinct values of the first `segments` string segments of
    /// the keys of `tree` (adjacent, since keys are sorted).
    fn count_distinct_prefixes(
        &self,
        tree: &Tree,
        family: Family,
        name: &str,
        segments: usize,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut last: Vec<u8> = Vec::new();
        for item in tree.iter().keys() {
            let k = item.map_err(|e| self.sled(e))?;
            let mut len = 0;
            for _ in 0..segments {
                len += codec::segment_len(&k[len..])
                    .map_err(|e| StoreError::corrupt(&reader::tree_name(family, name), &k, e))?;
            }
            // Encoded prefixes are never empty, so the first key counts.
            if last[..] != k[..len] {
                n += 1;
                last.clear();
                last.extend_from_slice(&k[..len]);
            }
        }
        Ok(n)
    }
}
