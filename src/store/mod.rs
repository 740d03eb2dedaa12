//! The store: rdg's state on disk, one namespace per node type, edge type,
//! dataflow and identity table, behind a narrow API (open, atomic commit,
//! bulk load, point and neighbour reads, export), over one of two engines
//! chosen when a state is created: **fjall 3** (the default) or **sled 0.34**
//! (module `engine`).
//!
//! It owns the on-disk layout below and keeps one invariant: **every commit
//! is applied in one atomic write across namespaces** (fjall: one
//! cross-keyspace `WriteBatch`; sled: one multi-tree transaction), so after a
//! crash either all of a commit's changes, dead letters, counters and
//! positions are there, or none are (durable once [`Store::flush`]
//! returned). Nothing on the commit path reads the engine: counters, the
//! commit count and dead-letter sequence numbers are loaded at open and kept
//! in memory, and every write is blind.
//!
//! # Engines and files
//! The engine is recorded in the state directory (`rdg-engine`, module
//! `layout`) when the state is created, and [`Store::open_with`] refuses to
//! open it with the other one ([`StoreError::EngineMismatch`]). A state
//! without that file that holds sled's files is a sled state of rdg before
//! engines existed: it opens as sled, unchanged (format version 1).
//!
//! | engine | where | one namespace is |
//! |--------|-------|------------------|
//! | fjall  | `STATE/fjall/` | a keyspace named as below |
//! | sled   | `STATE/` (sled's `conf`, `db`, `blobs/`) | a tree named as below |
//!
//! Both engines hold the same namespaces, keys and values, so the export of
//! a state does not depend on its engine (tested byte for byte).
//!
//! # Layout
//! `enc(..)` is the order-preserving, prefix-free key codec of [`codec`];
//! identifiers are `type:id` strings; `<x>` in a namespace name is the raw
//! name.
//!
//! | namespace | key | value |
//! |------|-----|-------|
//! | `node/<type>` | enc(id part, dataflow) | postcard([`Record`](crate::model::Record)) |
//! | `edge/<edge_type>` | enc(from, to, dataflow) | postcard([`Record`](crate::model::Record)) ++ reverse byte |
//! | `edge_in/<edge_type>` | enc(to, from, dataflow) | the same bytes as the `edge/` value |
//! | `identity/link` | enc(a, b, dataflow) and enc(b, a, dataflow), `a < b` | postcard([`Record`](crate::model::Record)) for `(a, b)`; `(b, a)` is empty (format 1: the record as of the link's appearance, never read) |
//! | `identity/id` | enc(ident) | postcard([`ClusterOf`](crate::model::ClusterOf)) |
//! | `identity/cluster` | enc(cluster, member) | empty |
//! | `dead_letter/<dataflow>` | u64 big-endian sequence | postcard((source, reason)) |
//! | `meta` | see below | |
//!
//! The edge value ends with one byte, `1` when the contribution was written
//! with `reverse = true` (then the `edge_in/` key exists too) and `0`
//! otherwise, so [`Store::contributions`] can hand `reverse` back. A put
//! with `reverse = false` removes the `edge_in/` key blindly whenever that
//! namespace exists (it may have been written reversed before); a removal
//! removes both keys.
//!
//! A link's record is kept up to date in its `(a, b)` entry only (`a < b`,
//! the order [`Store::contributions`] loads). The `(b, a)` entry exists
//! exactly while the link does, so that one prefix scan finds an
//! identifier's links in both directions, but it is written (empty) only
//! when the link appears (`Change::Link::mirrored` is false); readers that
//! meet it take the record from `(a, b)`, whatever its value holds. A
//! removal removes both.
//!
//! `meta` keys (all through the codec):
//! - enc("format") → u64 BE format version ([`FORMAT_VERSION`]); a store with
//!   another version is refused, but for format 1, which is upgraded at open.
//! - enc("commits") → u64 BE number of non-empty commits (0 / absent: empty).
//! - enc("dataflow", name) → postcard of the dataflow's counters: events,
//!   late, dead letters, maximum watermark, next dead-letter sequence.
//! - enc("position", dataflow, partition) → u64 BE next position.
//! - enc("shape") → postcard([`Shape`]).
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
//! **A read never sees half of a commit**, on either engine. Every read goes
//! through a [`ReadView`] ([`Store::read`]; the `Store`'s own read methods
//! open one per call), and everything read through one view sees the same
//! commits, named by [`ReadView::commit_count`].
//! - fjall: the view reads through the snapshot (one sequence number
//!   across all keyspaces) that the last commit published with its count
//!   and meta ([`Published`]): the writer takes it after the engine applied
//!   the commit, batch or ingestion, and before the next one, so it sees
//!   every commit up to that one whole and nothing after. A view never
//!   takes a snapshot of its own and never waits for a commit, not even
//!   for fjall's write stalls (which a batch meets after it became visible
//!   and before its commit returns); an ingestion's keyspaces, registered
//!   one after another at newer sequence numbers, stay out of the published
//!   snapshot until the whole commit is applied. A read that finds the
//!   snapshot older than [`REFRESH_AFTER`] while no commit or bulk load
//!   runs (and no ingested commit failed part-way) takes it again (the
//!   same commits: under the commit lock the engine holds exactly what is
//!   published), so the versions of fjall's trees that flushes and
//!   compactions replaced are not kept alive by a state that stopped
//!   committing.
//! - sled: plain reads are not isolated from a transaction in progress, so
//!   the view holds the gate shared for its whole life and a commit holds it
//!   exclusively around its transaction. The lock is writer-preferring: a
//!   commit is delayed by at most the reads already running. Do not call the
//!   `Store`'s own read methods while holding a `ReadView` on the same thread
//!   (the lock is not re-entrant: it would deadlock behind a waiting commit);
//!   use the view's methods.
//!
//! Exceptions: [`Store::contributions`] (a restart stream, read before this
//! process commits; on fjall it reads one snapshot, on sled it does not hold
//! the gate) and [`Store::namespace_counts`] (statistics, read in short
//! chunks, each through its own view).
//!
//! # Durability
//! A commit is handed to the engine's log when [`Store::commit`] returns
//! (fjall: written to the OS; sled: in its log buffer, written back within
//! about 500 ms) and fsynced by [`Store::flush`]. A crash loses at most the
//! commits after the last flush, always whole commits. The flush records
//! how many commits it made durable (`rdg-durable`); a state whose engine
//! opens with fewer lost durable commits to damage (a journal zeroed in the
//! middle, which fjall's recovery cuts short silently) and is refused.
//!
//! # Bulk load
//! [`Store::bulk_load`] writes a backfill into an **empty** state faster than
//! commits (fjall: sorted ingestion straight into tables; sled: one batch per
//! tree), chunk by chunk, and is not atomic. Its crash contract: a marker
//! file is written durably before the first chunk and removed by
//! [`BulkLoad::finish`] once everything (counters, positions, commit count
//! included) is durable; opening a state that still has the marker (the load
//! was interrupted) wipes it back to empty, with a logged warning. So a
//! replay into an empty state that fails leaves the state before it: empty.
//! Reads during a bulk load see the state before it (fjall: the empty
//! state's snapshot stays published until `finish`; sled: its trees as the
//! load leaves them chunk by chunk: sled reads see part of it).

mod bulk;
pub mod codec;
mod direct;
mod encoder;
mod engine;
mod export;
mod layout;
mod merge;
mod reader;
mod redo;
mod view;
mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use bulk::{
    BulkLoad, DEFAULT_BUFFER_BYTES as DEFAULT_BULK_BUFFER_BYTES,
    DEFAULT_HOLD_BYTES as DEFAULT_BULK_HOLD_BYTES,
};
pub use encoder::{EncodeFailed, Encoder};
pub(crate) use engine::sled::panic_is_contained;
pub use engine::{AUTO_INGEST_BYTES, BulkMethod, Engine, EngineError, UnknownEngine};
pub use reader::Contributions;
pub use view::{EdgeCursor, EdgePage, ReadView, Schema};
pub use writer::PendingCommit;

use engine::{Db, Ns, OpenConfig, OpenError, PointReads, Snap};

#[cfg(test)]
mod tests;

/// The on-disk format this build reads and writes (the same on both engines).
/// 2: a link's `(b, a)` entry is empty and never read (1: it held the
/// record too).
pub const FORMAT_VERSION: u64 = 2;

/// The one older format this build opens: format 1 is read as format 2 (its
/// `(b, a)` link entries hold records, which format 2 never reads), and the
/// state is marked format 2 at open, since this build may then write empty
/// ones that an older rdg cannot read.
const UPGRADES_FROM: u64 = 1;

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

/// The point reads the namespace `name` serves (which filters its engine
/// builds): the reader looks up a link's `(a, b)` entry from its `(b, a)`
/// one (always there) and an identifier's cluster (absent for an identifier
/// that no link names); `meta` is read by key at open. Every other
/// namespace is read by prefix and range scans only.
fn point_reads(name: &str) -> PointReads {
    match name {
        TREE_LINK => PointReads::Hits,
        TREE_ID | TREE_META => PointReads::Misses,
        _ => PointReads::None,
    }
}

/// The namespace `name` of `db`, created if missing with the filters its
/// point reads need.
fn namespace(db: &Db, name: &str) -> Result<Ns, engine::EngineError> {
    db.namespace(name, point_reads(name))
}

/// Default block cache of fjall: 256 MiB. fjall's commits never read, so
/// the cache only serves queries and restarts.
pub const FJALL_CACHE_BYTES: u64 = 256 << 20;

/// Default page cache of sled: 512 MiB. sled reads the old value of every
/// insert internally, so a cache smaller than the hot part of the state
/// slows commits: replaying 1M generated events ran at 6.9k events/s with
/// 64 MiB and 10.9k with 512 MiB, at the same peak RSS
/// (`scripts/bench-replay.sh 1000000 2`).
pub const SLED_CACHE_BYTES: u64 = 512 << 20;

/// How a state is opened. The defaults: the engine the state records (fjall
/// for a new state), and the engine's default cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// The engine: a new state is created with it; an existing state must
    /// have been written with it ([`StoreError::EngineMismatch`]). `None`:
    /// the recorded engine, fjall for a new state.
    pub engine: Option<Engine>,
    /// The engine's cache in bytes (fjall's block cache, sled's page cache).
    /// `None`: [`FJALL_CACHE_BYTES`] or [`SLED_CACHE_BYTES`].
    pub cache_bytes: Option<u64>,
    /// A bulk load's sorted buffers held in memory before they are merged
    /// and written (fjall; sled holds none). `None`:
    /// [`DEFAULT_BULK_HOLD_BYTES`]; 0 writes each buffer at once.
    pub bulk_memory_bytes: Option<u64>,
}

impl StoreOptions {
    /// The cache size `engine` gets with these options.
    pub fn cache_bytes_for(&self, engine: Engine) -> u64 {
        self.cache_bytes.unwrap_or(match engine {
            Engine::Fjall => FJALL_CACHE_BYTES,
            Engine::Sled => SLED_CACHE_BYTES,
        })
    }

    /// The bytes a bulk load into `engine` holds with these options.
    pub fn bulk_hold_bytes_for(&self, engine: Engine) -> usize {
        match engine {
            Engine::Fjall => self.bulk_memory_bytes.map_or(DEFAULT_BULK_HOLD_BYTES, |b| {
                usize::try_from(b).unwrap_or(usize::MAX)
            }),
            Engine::Sled => 0,
        }
    }
}

/// What this `Store` wrote since it was opened (commits and bulk loads),
/// for the caller's metrics. Cumulative; cheap to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    /// Non-empty commits, plus bulk load chunks written.
    pub commits: u64,
    /// Keys written or removed (after the last write of a key in one commit
    /// or chunk replaced the earlier ones).
    pub keys_written: u64,
    /// Key and value bytes written.
    pub bytes_written: u64,
    /// Time spent inside the engine's write calls.
    pub engine_time: Duration,
    /// Time spent merging sorted runs (the end of a bulk load; not in
    /// `engine_time`).
    pub merge_time: Duration,
}

impl WriteStats {
    /// Keys written per second of engine time (0 when none was spent).
    pub fn keys_per_s(&self) -> f64 {
        let s = self.engine_time.as_secs_f64();
        if s > 0.0 {
            self.keys_written as f64 / s
        } else {
            0.0
        }
    }
}

/// The atomics behind [`WriteStats`].
#[derive(Default)]
struct StatCounters {
    commits: AtomicU64,
    keys: AtomicU64,
    bytes: AtomicU64,
    nanos: AtomicU64,
    merge_nanos: AtomicU64,
}

impl StatCounters {
    fn add(&self, keys: u64, bytes: u64, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn add_merge(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.merge_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn get(&self) -> WriteStats {
        WriteStats {
            commits: self.commits.load(Ordering::Relaxed),
            keys_written: self.keys.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
            engine_time: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
            merge_time: Duration::from_nanos(self.merge_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// Finishes a commit that a crash interrupted while it was being ingested:
/// ingests its redo file again, then removes it (see `redo`).
fn finish_from_redo(dir: &Path, db: &Db) -> Result<(), StoreError> {
    let Some((names, set)) = redo::read(dir)? else {
        return Ok(());
    };
    tracing::warn!(
        "state directory {}: a replay's final commit was interrupted while it was being written; finishing it from {} (the state then holds that replay in full: do not replay its files again)",
        dir.display(),
        redo::path(dir).display()
    );
    let engine_err = |source| StoreError::Engine {
        path: dir.to_path_buf(),
        source,
    };
    let ns = names
        .iter()
        .map(|name| namespace(db, name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(engine_err)?;
    db.ingest(&ns, &set).map_err(engine_err)?;
    redo::remove(dir)
}

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
    #[error(
        "state directory {} was written with the {recorded} engine and cannot be opened with {requested}: omit --engine to use {recorded}, or replay into a new state directory to change engines",
        path.display()
    )]
    EngineMismatch {
        path: PathBuf,
        recorded: Engine,
        requested: Engine,
    },
    #[error("state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state directory {}: {source}", path.display())]
    Engine { path: PathBuf, source: EngineError },
    /// The engine could not open the database of an existing state: a
    /// file of it is missing, truncated, zeroed or not the engine's.
    #[error(
        "state directory {} is damaged: its {engine} database in {} cannot be opened ({error}); restore the directory from a copy, or replay into a new state directory",
        path.display(), files.display()
    )]
    Unreadable {
        path: PathBuf,
        engine: Engine,
        /// The engine's files (`STATE/fjall`, or the state for sled).
        files: PathBuf,
        error: EngineError,
    },
    /// The state recorded that it holds data (`rdg-format`), but its engine
    /// holds none: its files were lost or damaged.
    #[error(
        "state directory {} is damaged: {detail}; restore the directory from a copy, or replay into a new state directory",
        path.display()
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("state directory {}: {detail}", path.display())]
    BulkLoad { path: PathBuf, detail: String },
    /// A one-off commit's ingestion failed after its redo file was made
    /// durable (see `redo`): the next open finishes it.
    #[error(
        "state directory {}: the replay's final commit could not be written ({source}); it is kept in {}, and the next open of the state (any rdg command) finishes it: the state then holds this replay in full, so do not replay its files again",
        path.display(), redo.display()
    )]
    CommitPending {
        path: PathBuf,
        redo: PathBuf,
        source: EngineError,
    },
    #[error(
        "state directory {}: {open} encoders of the write are still open, and what they hold would be lost",
        path.display()
    )]
    EncodersOpen { path: PathBuf, open: usize },
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
        let found = {
            let view = self.read();
            view.snap
                .get(&self.inner.meta, &key)
                .map_err(|e| self.engine_err(e))?
        };
        let stored = match found {
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

    /// Writes the shape outside a commit, then publishes it with what the
    /// last commit published (under the commit lock: no commit is half
    /// applied meanwhile), so views see it.
    fn put_shape(&self, key: &[u8], shape: Shape) -> Result<(), StoreError> {
        let v = postcard::to_stdvec(&shape).map_err(|e| StoreError::Encode {
            what: "cluster shape",
            detail: e.to_string(),
        })?;
        let _commits = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _exclusive = self.gates_apply().then(|| self.gate_exclusive());
        self.inner
            .db
            .put_one(&self.inner.meta, key, &v)
            .map_err(|e| self.engine_err(e))?;
        self.republish();
        Ok(())
    }
}

/// Counters and positions of every dataflow that ever committed some.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub dataflows: BTreeMap<String, DataflowMeta>,
    pub positions: crate::model::Positions,
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

/// One namespace scanned by [`Store::counts`].
enum CountScan {
    Identity(Ns),
    Family(Family, CompactString, Ns),
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

impl From<&DataflowCounters> for DataflowMeta {
    fn from(c: &DataflowCounters) -> DataflowMeta {
        DataflowMeta {
            events: c.events,
            late: c.late,
            dead_letters: c.dead_letters,
            watermark: c.watermark,
        }
    }
}

/// The stored form of a dataflow's counters (`meta`, enc("dataflow", name)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DataflowCounters {
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

/// The namespaces whose names carry a type or a dataflow, by that name.
#[derive(Default)]
struct DynTrees {
    nodes: BTreeMap<CompactString, Ns>,
    edges: BTreeMap<CompactString, Ns>,
    edges_in: BTreeMap<CompactString, Ns>,
    dead: BTreeMap<CompactString, Ns>,
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
    fn map(&self, f: Family) -> &BTreeMap<CompactString, Ns> {
        match f {
            Family::Node => &self.nodes,
            Family::Edge => &self.edges,
            Family::EdgeIn => &self.edges_in,
            Family::Dead => &self.dead,
        }
    }

    fn map_mut(&mut self, f: Family) -> &mut BTreeMap<CompactString, Ns> {
        match f {
            Family::Node => &mut self.nodes,
            Family::Edge => &mut self.edges,
            Family::EdgeIn => &mut self.edges_in,
            Family::Dead => &mut self.dead,
        }
    }
}

/// The counters of every dataflow, as committed, kept in memory so that a
/// commit never reads them; its mutex also serializes commits.
#[derive(Default)]
struct Counters {
    dataflows: BTreeMap<CompactString, DataflowCounters>,
}

struct Inner {
    path: PathBuf,
    db: Db,
    meta: Ns,
    link: Ns,
    id: Ns,
    cluster: Ns,
    /// Every dynamic namespace that exists. Only this process can create
    /// namespaces (the state is locked) and all creation goes through
    /// [`Store::dyn_tree_or_create`], so absence here means absence on disk.
    dyn_trees: RwLock<DynTrees>,
    /// Isolates sled readers from commits (see "Isolation"): sled views
    /// hold it shared for their whole life, sled commits exclusively while
    /// sled applies them. fjall does not use it.
    gate: RwLock<()>,
    /// What the last commit made visible (see [`Published`]): a view reads
    /// it instead of scanning `meta`, whose few keys every commit rewrites
    /// (on fjall, a scan would step over every version still in the
    /// memtable).
    published: RwLock<Arc<Published>>,
    /// Committed counters; held by every commit from plan to apply.
    counters: Mutex<Counters>,
    stats: StatCounters,
    /// Bytes of sorted buffers a bulk load holds ([`StoreOptions`]).
    bulk_hold_bytes: usize,
    /// A bulk load started in this process and has not finished: commits
    /// and other bulk loads are refused.
    bulk: AtomicBool,
    /// An ingested commit failed part-way (its redo file is finished by the
    /// next open): the engine may hold part of it, so reads no longer take
    /// the published snapshot again ([`Store::published_fresh`]).
    unsettled: AtomicBool,
    /// The state's lock file, locked while this is alive.
    _lock: std::fs::File,
}

/// The state the last commit made visible, replaced as one piece after the
/// engine applied the commit.
pub(crate) struct Published {
    /// Every dataflow's counters and every position (what `meta` holds).
    pub meta: Arc<Meta>,
    /// The commit count.
    pub commits: u64,
    /// On fjall, the snapshot taken right after the commit was applied,
    /// which every view reads through until the next commit (or a read's
    /// refresh, [`REFRESH_AFTER`]); on sled a marker (its views hold the
    /// gate and read the trees).
    pub snap: Snap,
    /// When `snap` was taken.
    pub at: Instant,
}

/// How old the published fjall snapshot may get before a read takes a new
/// one, when no commit or bulk load is running (the engine then holds
/// exactly what is published). fjall's flushes and compactions make new
/// versions of its trees, and a snapshot keeps the version it reads alive:
/// sealed memtables in memory, compacted tables on disk. Commits replace
/// the snapshot every few milliseconds; without this, a state that stops
/// committing (`rdg serve`, a live run between bursts) would keep the
/// version of its last commit for good.
pub(crate) const REFRESH_AFTER: Duration = Duration::from_millis(100);

#[cfg(test)]
thread_local! {
    /// Tests: a refresh age for reads on this thread instead of
    /// [`REFRESH_AFTER`].
    pub(crate) static REFRESH_AFTER_TEST: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// The stores opened by this process, by canonical directory. A live entry
/// means the directory is open here; a dead one that it was closed, in which
/// case the engine may hold its own file lock a few more milliseconds
/// (background threads finishing), so opening waits for it.
static OPEN_IN_PROCESS: std::sync::Mutex<BTreeMap<PathBuf, std::sync::Weak<Inner>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// rdg's state directory. Cloning is cheap and shares the open database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("engine", &self.engine())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if missing) the state directory `dir` with the
    /// default [`StoreOptions`]: the engine it records, fjall for a new one.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// Opens (creating if missing) the state directory `dir`.
    ///
    /// A new store gets `options.engine` (fjall by default), recorded in the
    /// directory, and the current [`FORMAT_VERSION`]; an existing one must
    /// have both ([`StoreError::EngineMismatch`], [`StoreError::Version`]
    /// otherwise). A state whose bulk load was interrupted is wiped back to
    /// empty first (with a warning). Fails with [`StoreError::Locked`] when
    /// another `Store` has the directory open: at once when it is one of this
    /// process, after a short wait when it is another process. Share one open
    /// `Store` by cloning it.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
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
        let lock = layout::lock(dir)?;
        let result = Store::open_locked(dir, options, lock, recently_closed);
        match &result {
            Ok(store) => {
                open.insert(canonical, Arc::downgrade(&store.inner));
            }
            Err(_) => {
                // The database may have been opened and dropped: a retry may
                // race the engine's lock release like a reopen after close.
                open.insert(canonical, std::sync::Weak::new());
            }
        }
        result
    }

    fn open_locked(
        dir: &Path,
        options: &StoreOptions,
        lock: std::fs::File,
        recently_closed: bool,
    ) -> Result<Store, StoreError> {
        let recorded = layout::recorded_engine(dir)?;
        // Only a state created by this open may lack its format version.
        let mut may_be_empty = recorded.is_none();
        let engine = match (recorded, options.engine) {
            (Some(recorded), Some(requested)) if recorded != requested => {
                return Err(StoreError::EngineMismatch {
                    path: dir.to_path_buf(),
                    recorded,
                    requested,
                });
            }
            (Some(recorded), _) => recorded,
            (None, requested) => {
                let engine = requested.unwrap_or_default();
                layout::record_engine(dir, engine)?;
                engine
            }
        };
        let config = OpenConfig {
            cache_bytes: options.cache_bytes_for(engine),
        };
        let db = Db::open(engine, dir, config, recently_closed).map_err(|e| match e {
            OpenError::Locked => StoreError::Locked {
                path: dir.to_path_buf(),
            },
            OpenError::Engine(error) if !may_be_empty && error.may_be_damage() => {
                StoreError::Unreadable {
                    path: dir.to_path_buf(),
                    engine,
                    files: match engine {
                        Engine::Fjall => dir.join(engine::fjall::DIR),
                        Engine::Sled => dir.to_path_buf(),
                    },
                    error,
                }
            }
            OpenError::Engine(source) => StoreError::Engine {
                path: dir.to_path_buf(),
                source,
            },
        })?;
        if layout::bulk_marker_present(dir) {
            tracing::warn!(
                "state directory {}: a bulk load into it was interrupted; wiping it back to empty (the state before the load)",
                dir.display()
            );
            layout::remove_durable(dir)?;
            db.wipe().map_err(|source| StoreError::Engine {
                path: dir.to_path_buf(),
                source,
            })?;
            layout::remove_bulk_marker(dir)?;
            may_be_empty = true;
        }
        if db.engine() == Engine::Fjall {
            finish_from_redo(dir, &db)?;
        }
        let bulk_hold_bytes = options.bulk_hold_bytes_for(engine);
        Store::from_db(dir, db, lock, may_be_empty, bulk_hold_bytes)
    }

    /// `may_be_empty`: the state was created by this open or wiped back to
    /// empty, so it may lack its format version; otherwise a state whose
    /// `rdg-format` file says it has one must have it.
    fn from_db(
        dir: &Path,
        db: Db,
        lock: std::fs::File,
        may_be_empty: bool,
        bulk_hold_bytes: usize,
    ) -> Result<Store, StoreError> {
        let engine_err = |source| StoreError::Engine {
            path: dir.to_path_buf(),
            source,
        };
        let mut dyn_trees = DynTrees::default();
        let snap = db.snapshot();
        let non_empty = |ns: &Ns| snap.iter(ns).next().is_some();
        let mut has_data = false;
        for name in db.namespace_names() {
            let family = [Family::Node, Family::Edge, Family::EdgeIn, Family::Dead]
                .into_iter()
                .find_map(|f| name.strip_prefix(f.prefix()).map(|rest| (f, rest)));
            if let Some((family, rest)) = family {
                let ns = namespace(&db, &name).map_err(engine_err)?;
                has_data |= non_empty(&ns);
                dyn_trees.map_mut(family).insert(rest.into(), ns);
            }
        }
        let meta = namespace(&db, TREE_META).map_err(engine_err)?;
        let link = namespace(&db, TREE_LINK).map_err(engine_err)?;
        let id = namespace(&db, TREE_ID).map_err(engine_err)?;
        let cluster = namespace(&db, TREE_CLUSTER).map_err(engine_err)?;
        has_data |= non_empty(&meta) || non_empty(&link) || non_empty(&id) || non_empty(&cluster);

        check_format(dir, &db, &snap, &meta, (may_be_empty, has_data))?;
        let (commits, counters) = load_counters(&snap, &meta).map_err(|e| match e {
            LoadError::Engine(source) => engine_err(source),
            LoadError::Store(e) => e,
        })?;
        check_durable(dir, db.engine(), commits)?;
        let published = meta_of(&snap, &meta).map_err(|e| match e {
            LoadError::Engine(source) => engine_err(source),
            LoadError::Store(e) => e,
        })?;
        drop(snap);
        // After `check_format`'s write, if it made one.
        let snap = db.snapshot();
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
                published: RwLock::new(Arc::new(Published {
                    meta: Arc::new(published),
                    commits,
                    snap,
                    at: Instant::now(),
                })),
                counters: Mutex::new(counters),
                stats: StatCounters::default(),
                bulk_hold_bytes,
                bulk: AtomicBool::new(false),
                unsettled: AtomicBool::new(false),
                _lock: lock,
            }),
        })
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The engine this state is written with.
    pub fn engine(&self) -> Engine {
        self.inner.db.engine()
    }

    /// What this `Store` wrote since it was opened.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.stats.get()
    }

    /// True when nothing (no data, no counters) has ever been committed.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.commit_count() == 0)
    }

    /// Writes everything committed so far to disk (fsync), and records how
    /// many commits that made durable (`rdg-durable`, checked at open).
    pub fn flush(&self) -> Result<(), StoreError> {
        // Commits counted before the flush are durable after it.
        let commits = self.commit_count();
        self.inner.db.flush().map_err(|e| self.engine_err(e))?;
        layout::record_durable(&self.inner.path, commits)
    }

    /// Every dataflow's counters and every stored position.
    pub fn meta(&self) -> Result<Meta, StoreError> {
        self.read().meta()
    }

    /// Makes `meta` and `commits` what views see from now on, with the
    /// engine's state as it is now (a fjall snapshot taken here): called
    /// under the commit lock after the engine applied the commit that wrote
    /// them, before the next one (see "Isolation").
    fn publish(&self, meta: Meta, commits: u64) {
        self.publish_shared(Arc::new(meta), commits);
    }

    /// [`Store::publish`] of a meta already shared; returns what it
    /// published.
    fn publish_shared(&self, meta: Arc<Meta>, commits: u64) -> Arc<Published> {
        let published = Arc::new(Published {
            meta,
            commits,
            snap: self.inner.db.snapshot(),
            at: Instant::now(),
        });
        let mut p = self
            .inner
            .published
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *p = published.clone();
        published
    }

    /// Publishes what the engine holds now with the last commit's count and
    /// meta, after a write outside a commit (the caller holds the commit
    /// lock, and on sled the gate exclusively); returns what it published.
    fn republish(&self) -> Arc<Published> {
        let published = self.published();
        self.publish_shared(published.meta.clone(), published.commits)
    }

    /// What views see now.
    fn published(&self) -> Arc<Published> {
        self.inner
            .published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What fjall views see now, the snapshot first taken again if it is
    /// older than [`REFRESH_AFTER`] and neither a commit (which holds the
    /// commit lock from plan to publication) nor a bulk load (checked under
    /// that lock: one starts only holding it) is running, nor an ingested
    /// commit failed part-way.
    fn published_fresh(&self) -> Arc<Published> {
        let published = self.published();
        #[cfg(test)]
        let refresh_after = REFRESH_AFTER_TEST.get().unwrap_or(REFRESH_AFTER);
        #[cfg(not(test))]
        let refresh_after = REFRESH_AFTER;
        if published.at.elapsed() < refresh_after {
            return published;
        }
        let Ok(_commits) = self.inner.counters.try_lock() else {
            return published;
        };
        if self.inner.bulk.load(Ordering::Acquire) || self.inner.unsettled.load(Ordering::Acquire) {
            return published;
        }
        self.republish()
    }

    /// Holds the gate shared: no commit is applied until the guard is dropped.
    fn gate_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.inner.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds the gate exclusively: no read starts until the guard is dropped.
    fn gate_exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.inner.gate.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The number of non-empty commits so far (0 for an empty store). It
    /// identifies a state: two reads that see the same number see the same
    /// data. [`ReadView::commit_count`] gives the number its reads see.
    pub fn commit_count(&self) -> u64 {
        self.published().commits
    }

    /// How many sorted runs a read of each namespace merges, by name (1 or
    /// 0 after a bulk load; commits add runs until the engine compacts).
    pub fn sorted_runs(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let db = &self.inner.db;
        db.namespace_names()
            .into_iter()
            .map(|name| {
                let ns = namespace(db, &name).map_err(|e| self.engine_err(e))?;
                Ok((name, ns.sorted_runs()))
            })
            .collect()
    }

    /// Bytes the state directory takes on disk (the engine's estimate).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.db.size_on_disk().map_err(|e| self.engine_err(e))
    }

    fn engine_err(&self, source: EngineError) -> StoreError {
        StoreError::Engine {
            path: self.inner.path.clone(),
            source,
        }
    }

    /// The dynamic namespace `family/name`, if it exists.
    fn dyn_tree(&self, family: Family, name: &str) -> Option<Ns> {
        let trees = self
            .inner
            .dyn_trees
            .read()
            .unwrap_or_else(|p| p.into_inner());
        trees.map(family).get(name).cloned()
    }

    /// The dynamic namespace `family/name`, created if missing.
    fn dyn_tree_or_create(&self, family: Family, name: &str) -> Result<Ns, StoreError> {
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
        let tree = namespace(&self.inner.db, &tree_name).map_err(|e| self.engine_err(e))?;
        trees.map_mut(family).insert(name.into(), tree.clone());
        Ok(tree)
    }

    /// A snapshot of the dynamic namespaces of `family`, sorted by name.
    fn dyn_trees(&self, family: Family) -> Vec<(CompactString, Ns)> {
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

    /// Sizes of the stored graph (scans everything, through one view; the
    /// namespaces in parallel, on rayon's pool).
    pub fn counts(&self) -> Result<Counts, StoreError> {
        use rayon::prelude::*;
        let view = self.read();
        let snap = &view.snap;
        // The identity namespace, one of the largest, first.
        let mut scans = vec![CountScan::Identity(self.inner.id.clone())];
        for family in [Family::Node, Family::Edge, Family::Dead] {
            scans.extend(
                self.dyn_trees(family)
                    .into_iter()
                    .map(|(name, tree)| CountScan::Family(family, name, tree)),
            );
        }
        let parts = scans
            .par_iter()
            .map(|scan| match scan {
                CountScan::Identity(tree) => self.count_identity(snap, tree),
                CountScan::Family(family @ Family::Node, name, tree) => Ok(Counts {
                    nodes: self.count_distinct_prefixes(snap, tree, *family, name, 1)?,
                    ..Counts::default()
                }),
                CountScan::Family(family @ Family::Edge, name, tree) => Ok(Counts {
                    edges: self.count_distinct_prefixes(snap, tree, *family, name, 2)?,
                    ..Counts::default()
                }),
                CountScan::Family(_, _, tree) => Ok(Counts {
                    dead_letters: snap.iter(tree).try_fold(0u64, |n, item| {
                        item.map(|_| n + 1).map_err(|e| self.engine_err(e))
                    })?,
                    ..Counts::default()
                }),
            })
            .collect::<Result<Vec<Counts>, StoreError>>()?;
        Ok(parts.iter().fold(Counts::default(), |a, b| Counts {
            nodes: a.nodes + b.nodes,
            edges: a.edges + b.edges,
            dead_letters: a.dead_letters + b.dead_letters,
            identifiers: a.identifiers + b.identifiers,
            clusters: a.clusters + b.clusters,
        }))
    }

    /// The identifiers and distinct clusters of the identity namespace.
    fn count_identity(&self, snap: &Snap, tree: &Ns) -> Result<Counts, StoreError> {
        let mut c = Counts::default();
        let mut clusters = std::collections::BTreeSet::new();
        for item in snap.iter(tree) {
            let (k, v) = item.map_err(|e| self.engine_err(e))?;
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
        snap: &Snap,
        tree: &Ns,
        family: Family,
        name: &str,
        segments: usize,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut last: Vec<u8> = Vec::new();
        for item in snap.iter(tree) {
            let (k, _) = item.map_err(|e| self.engine_err(e))?;
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

/// Why [`load_counters`] failed.
enum LoadError {
    Engine(EngineError),
    Store(StoreError),
}

/// Checks the format version a state's engine holds against this rdg's:
/// upgrades [`UPGRADES_FROM`], records `rdg-format` where it is missing,
/// writes the version into a new (`may_be_empty`) state, and refuses a
/// state of another version, one that lost its data (`rdg-format` present,
/// the version not) and one that holds data without a version.
fn check_format(
    dir: &Path,
    db: &Db,
    snap: &Snap,
    meta: &Ns,
    (may_be_empty, has_data): (bool, bool),
) -> Result<(), StoreError> {
    let engine_err = |source| StoreError::Engine {
        path: dir.to_path_buf(),
        source,
    };
    let format_key = codec::encode(&[META_FORMAT]);
    match snap.get(meta, &format_key).map_err(engine_err)? {
        Some(v) => {
            let found = <[u8; 8]>::try_from(&v[..])
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    StoreError::corrupt(TREE_META, &format_key, "format version is not 8 bytes")
                })?;
            if found == UPGRADES_FROM {
                db.put_one(meta, &format_key, &FORMAT_VERSION.to_be_bytes())
                    .map_err(engine_err)?;
                db.flush().map_err(engine_err)?;
                layout::record_format(dir, FORMAT_VERSION)?;
            } else if found != FORMAT_VERSION {
                return Err(StoreError::Version {
                    path: dir.to_path_buf(),
                    found,
                    expected: FORMAT_VERSION,
                });
            }
            if !layout::format_recorded(dir) {
                // A state of an rdg before the file existed.
                layout::record_format(dir, FORMAT_VERSION)?;
            }
        }
        None if !may_be_empty && layout::format_recorded(dir) => {
            return Err(StoreError::Damaged {
                path: dir.to_path_buf(),
                detail: format!(
                    "it was written by rdg (rdg-format), but its {} database holds {} (files of it missing, truncated or zeroed?)",
                    db.engine(),
                    if has_data {
                        "data without a format version"
                    } else {
                        "nothing, not even the format version"
                    }
                ),
            });
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
            db.put_one(meta, &format_key, &FORMAT_VERSION.to_be_bytes())
                .map_err(engine_err)?;
            db.flush().map_err(engine_err)?;
            layout::record_format(dir, FORMAT_VERSION)?;
        }
    }
    Ok(())
}

/// The commit count and every dataflow's counters, from `meta`.
/// Refuses a state whose engine holds fewer commits than its last flush
/// made durable (`rdg-durable`): its engine lost some without an error
/// (fjall cuts a damaged journal short at the first bad batch).
fn check_durable(dir: &Path, engine: Engine, commits: u64) -> Result<(), StoreError> {
    match layout::durable_commits(dir)? {
        Some(durable) if durable > commits => Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            detail: format!(
                "its last flush made {durable} commits durable, but its {engine} database holds {commits} (the engine's journal lost commits: a file of it truncated, zeroed or damaged?)"
            ),
        }),
        _ => Ok(()),
    }
}

fn load_counters(snap: &Snap, meta: &Ns) -> Result<(u64, Counters), LoadError> {
    let commits_key = codec::encode(&[META_COMMITS]);
    let commits = match snap.get(meta, &commits_key).map_err(LoadError::Engine)? {
        Some(v) => <[u8; 8]>::try_from(&v[..])
            .map(u64::from_be_bytes)
            .map_err(|_| {
                LoadError::Store(StoreError::corrupt(
                    TREE_META,
                    &commits_key,
                    "commit count is not 8 bytes",
                ))
            })?,
        None => 0,
    };
    let mut counters = Counters::default();
    let prefix = codec::encode(&[META_DATAFLOW]);
    for item in snap.prefix(meta, &prefix) {
        let (k, v) = item.map_err(LoadError::Engine)?;
        let corrupt =
            |d: &dyn std::fmt::Display| LoadError::Store(StoreError::corrupt(TREE_META, &k, d));
        let mut d = codec::Decoder::new(&k[prefix.len()..]);
        let name = d.str().map_err(|e| corrupt(&e))?;
        d.end().map_err(|e| corrupt(&e))?;
        let c: DataflowCounters =
            merge::decode_exact(&v, "dataflow counters").map_err(|e| corrupt(&e))?;
        counters.dataflows.insert(name.as_ref().into(), c);
    }
    Ok((commits, counters))
}

/// Runs the store's value decoders on `v` (for `rdg::fuzzing`: bytes a
/// damaged state could hold): each must refuse bad bytes, never panic.
/// How many accepted them.
#[doc(hidden)]
pub fn decode_value_for_fuzzing(v: &[u8]) -> usize {
    [
        merge::decode_record(v).is_ok(),
        merge::decode_edge_value(v).is_ok(),
        reader::decode_cluster_of(v).is_ok(),
        merge::decode_exact::<DataflowCounters>(v, "dataflow counters").is_ok(),
        merge::decode_exact::<Shape>(v, "shape").is_ok(),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count()
}

/// Every dataflow's counters and every position stored in `meta` (which
/// also checks every `meta` entry).
fn meta_of(snap: &Snap, meta: &Ns) -> Result<Meta, LoadError> {
    let mut out = Meta::default();
    for item in snap.iter(meta) {
        let (k, v) = item.map_err(LoadError::Engine)?;
        let corrupt =
            |d: &dyn std::fmt::Display| LoadError::Store(StoreError::corrupt(TREE_META, &k, d));
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
                let pos = <[u8; 8]>::try_from(&v[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(&"position is not 8 bytes"))?;
                out.positions
                    .insert((dataflow.as_ref().into(), partition.into_owned()), pos);
            }
            META_FORMAT | META_COMMITS => {
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
