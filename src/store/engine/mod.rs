//! The storage engines under the store: **fjall 3** (the default, an LSM
//! tree) and **sled 0.34**, behind one narrow internal surface so that the
//! reader, the views and the export are written once.
//!
//! What this module owns: the choice of engine ([`Engine`]), the handle of an
//! open database ([`Db`]), one handle per namespace ([`Ns`]: a fjall
//! keyspace or a sled tree), consistent reads ([`Snap`]), and the three ways
//! to write: one atomic [`WriteSet`] ([`Db::write`]), a bulk load chunk
//! ([`Db::bulk_write`]), and single writes outside commits ([`Db::put_one`]).
//!
//! Invariants it keeps:
//! - [`Db::write`] is atomic across namespaces: fjall's cross-keyspace
//!   `WriteBatch`, sled's multi-tree transaction. Nothing on this path reads.
//! - A [`WriteSet`] is normalized before it reaches an engine: sorted by
//!   (namespace, key), one operation per key, the last one given winning, so
//!   what a commit means does not depend on how an engine orders writes of
//!   one key inside a batch.
//! - A [`Snap::Fjall`] sees one point in the commit history of every
//!   keyspace; [`Snap::Sled`] reads the trees as they are, and the store
//!   holds its gate around such reads (see "Isolation" in the store docs).

pub(crate) mod fjall;
mod packed;
pub(crate) mod sled;

pub(crate) use packed::{Packed, by_size, merged};

use std::fmt;
use std::ops::Deref;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The key-value engine a state is written with. Recorded in the state when
/// it is created; a state is always reopened with the same engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// fjall 3: an LSM tree, one keyspace per namespace (the default).
    #[default]
    Fjall,
    /// sled 0.34: one tree per namespace (the engine of rdg's first states).
    Sled,
}

impl Engine {
    /// Every engine, in the order the CLI lists them.
    pub const ALL: [Engine; 2] = [Engine::Fjall, Engine::Sled];

    /// The name used on the command line and in the state's marker file.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fjall => "fjall",
            Engine::Sled => "sled",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An engine name that is neither `fjall` nor `sled`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown store engine `{0}` (expected fjall or sled)")]
pub struct UnknownEngine(pub String);

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Engine, UnknownEngine> {
        match s.trim() {
            "fjall" => Ok(Engine::Fjall),
            "sled" => Ok(Engine::Sled),
            other => Err(UnknownEngine(other.to_string())),
        }
    }
}

/// An error of the engine itself (I/O, a damaged database).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("fjall: {0}")]
    Fjall(#[from] ::fjall::Error),
    #[error("sled: {0}")]
    Sled(#[from] ::sled::Error),
    /// sled 0.34 panicked while it opened its files (it does on some
    /// damaged ones); the panic was caught there.
    #[error("sled stopped while opening its files: {0}")]
    SledPanicked(String),
    /// A namespace name the engine cannot store (fjall: at most 255 bytes).
    #[error("namespace name `{0}` is too long (at most 255 bytes)")]
    Name(String),
    /// A handle of one engine was given to the other (a bug in the store).
    #[error("internal: a {0} handle was used with the other engine")]
    Mismatch(&'static str),
    /// An ingestion whose tables were written but not registered, because
    /// what it waited for (the commit's redo file) failed: the state is as
    /// before, and the next open removes the tables.
    #[error("ingestion abandoned before its tables were registered")]
    Abandoned,
    /// A key or value longer than the engines store (keys [`MAX_KEY`]
    /// bytes, values 4 GiB).
    #[error(
        "a {what} of {len} bytes is too long to store (keys at most 65 535 bytes, values 4 GiB)"
    )]
    TooLong { what: &'static str, len: usize },
}

impl EngineError {
    /// The kind of the I/O error this one comes from, if any.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            EngineError::Sled(::sled::Error::Io(e)) => Some(e.kind()),
            EngineError::Fjall(e) => {
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
                while let Some(c) = cause {
                    if let Some(io) = c.downcast_ref::<std::io::Error>() {
                        return Some(io.kind());
                    }
                    cause = c.source();
                }
                None
            }
            _ => None,
        }
    }

    /// False when the error comes from the machine rather than from the
    /// database's files: a full disk, a quota, permissions, a read-only
    /// file system, memory. A state that fails to open for such a reason
    /// is not damaged.
    pub fn may_be_damage(&self) -> bool {
        use std::io::ErrorKind as K;
        !matches!(
            self.io_kind(),
            Some(
                K::StorageFull
                    | K::QuotaExceeded
                    | K::PermissionDenied
                    | K::ReadOnlyFilesystem
                    | K::OutOfMemory
                    | K::ResourceBusy
                    | K::FileTooLarge
            )
        )
    }
}

/// A stored key or value, borrowed from the engine (cheap to clone).
#[derive(Clone)]
pub(crate) enum Bytes {
    Fjall(::fjall::Slice),
    Sled(::sled::IVec),
    #[cfg(test)]
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Fjall(s) => s,
            Bytes::Sled(v) => v,
            #[cfg(test)]
            Bytes::Owned(v) => v,
        }
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self[..]))
    }
}

#[cfg(test)]
impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Bytes {
        Bytes::Owned(b.to_vec())
    }
}

/// One namespace: a fjall keyspace or a sled tree.
#[derive(Clone)]
pub(crate) enum Ns {
    Fjall(::fjall::Keyspace),
    Sled(::sled::Tree),
}

impl Ns {
    /// How many sorted runs a read of it merges (fjall: level 0's runs and
    /// one per deeper level holding tables; sled: 1).
    pub fn sorted_runs(&self) -> usize {
        match self {
            Ns::Fjall(ks) => fjall::sorted_runs(ks),
            Ns::Sled(_) => 1,
        }
    }

    /// The namespace's name in its database.
    pub fn name(&self) -> String {
        match self {
            Ns::Fjall(ks) => ks.name().to_string(),
            Ns::Sled(tree) => String::from_utf8_lossy(&tree.name()).into_owned(),
        }
    }
}

/// What point reads (`get`) a namespace serves; it decides, when the
/// namespace is created, which filters the engine builds for it (fjall's
/// bloom filters: built for every table a flush, an ingestion or a
/// compaction writes, and consulted only by point reads; sled has none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PointReads {
    /// None: the namespace is read by scans only, so no filter is built.
    None,
    /// Only of keys that exist: filters above the last level (they spare a
    /// point read the levels that do not hold its key), none on the last
    /// one, where the key is found anyway.
    Hits,
    /// Of keys that may be absent: filters on every level (the engine's
    /// default).
    Misses,
}

/// Key-value pairs in key order.
pub(crate) type KvIter = Box<dyn Iterator<Item = Result<(Bytes, Bytes), EngineError>> + Send>;

/// A byte range of a [`WriteSet`]'s arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

/// One write: a key and, unless it removes the key, a value, both ranges of
/// the set's arena. 32 bytes: with three `usize` ranges it was 48, and the
/// one-off write set of a continuing replay holds millions of ops (twice
/// over while it is sorted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    key_start: u64,
    value_start: u64,
    key_len: u32,
    /// [`REMOVE`]: the op removes the key.
    value_len: u32,
    /// Index into the namespace list given with the set.
    ns: u32,
}

/// `Op::value_len` of a removal.
const REMOVE: u32 = u32::MAX;

/// The longest key either engine is given: fjall's limit (it panics on a
/// longer key, in reads too), kept for sled as well so both refuse alike.
/// Events cannot make one (identifiers are at most
/// `model::MAX_IDENT_BYTES`); a write set holding one is refused.
pub(crate) const MAX_KEY: usize = u16::MAX as usize;

impl Op {
    /// The index of the op's namespace in the list given with the set.
    pub fn ns(&self) -> usize {
        self.ns as usize
    }

    pub fn key(&self) -> Span {
        span(self.key_start, self.key_len)
    }

    /// `None`: the op removes the key.
    pub fn value(&self) -> Option<Span> {
        (self.value_len != REMOVE).then(|| span(self.value_start, self.value_len))
    }
}

fn span(start: u64, len: u32) -> Span {
    let start = start as usize;
    Span {
        start,
        end: start + len as usize,
    }
}

/// Writes with their bytes in one arena.
#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    pub arena: Vec<u8>,
    pub ops: Vec<Op>,
    /// Scratch of `normalize`, kept for its capacity: (namespace, key
    /// prefix as two integers, position).
    order: Vec<OrderEntry>,
    /// The other buffer of `normalize`, kept for its capacity.
    sorted: Vec<Op>,
    /// The first key or value added that is too long to store (keys over
    /// [`MAX_KEY`], values of 4 GiB and over), as what it is and its length:
    /// the engine write refuses the set ([`WriteSet::check`]).
    oversized: Option<(&'static str, usize)>,
}

/// How far ahead of the operation being written [`WriteSet::in_order`]
/// asks for the bytes of another.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to bring the cache line of `bytes[at]` in (nothing when
/// `at` is out of bounds).
#[inline]
fn prefetch(bytes: &[u8], at: usize) {
    if let Some(b) = bytes.get(at) {
        crate::hint::prefetch(b);
    }
}

impl WriteSet {
    pub fn bytes(&self, s: Span) -> &[u8] {
        &self.arena[s.start..s.end]
    }

    /// Operations in key order, each with the one [`PREFETCH_AHEAD`] places
    /// after it asked into the cache first: the arena holds keys and values
    /// in arrival order, so reading them in key order is a random read of
    /// up to 64 MiB (and more at a replay's end), each a cache miss that
    /// the engine's copy of the bytes waited for.
    pub fn in_order(&self, ops: &[Op]) -> impl Iterator<Item = Op> {
        ops.iter().enumerate().map(move |(i, op)| {
            if let Some(ahead) = ops.get(i + PREFETCH_AHEAD) {
                prefetch(&self.arena, ahead.key().start);
                if let Some(v) = ahead.value() {
                    prefetch(&self.arena, v.start);
                }
            }
            *op
        })
    }

    /// A span for the bytes pushed to the arena since `start`.
    pub fn span_from(&self, start: usize) -> Span {
        Span {
            start,
            end: self.arena.len(),
        }
    }

    /// Asks for room for `bytes` of keys and values and `ops` operations
    /// up front, if the allocator can give it (else nothing changes): a
    /// one-off commit that grows to hundreds of megabytes then writes into
    /// address space that was never touched, page by page, instead of being
    /// copied into twice the room at every doubling (each copy a fresh page
    /// fault per 4 KiB). Room not written to takes no memory.
    pub fn reserve_room(&mut self, bytes: usize, ops: usize) {
        let _ = self.arena.try_reserve_exact(bytes);
        let _ = self.ops.try_reserve_exact(ops);
    }

    /// Copies `bytes` into the arena.
    pub fn push(&mut self, bytes: &[u8]) -> Span {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.span_from(start)
    }

    pub fn put(&mut self, ns: usize, key: Span, value: Span) {
        let value_len = self.len_of(value, "value", REMOVE as usize - 1);
        self.push_op(ns, key, value.start, value_len);
    }

    pub fn remove(&mut self, ns: usize, key: Span) {
        self.push_op(ns, key, 0, REMOVE);
    }

    fn push_op(&mut self, ns: usize, key: Span, value_start: usize, value_len: u32) {
        let key_len = self.len_of(key, "key", MAX_KEY);
        self.ops.push(Op {
            key_start: key.start as u64,
            value_start: value_start as u64,
            key_len,
            value_len,
            ns: u32::try_from(ns).unwrap_or(u32::MAX),
        });
    }

    /// A span's length as an op holds it; one over `max` is noted for
    /// [`WriteSet::check`] (the set is then never written).
    fn len_of(&mut self, s: Span, what: &'static str, max: usize) -> u32 {
        let len = s.end.saturating_sub(s.start);
        match u32::try_from(len) {
            Ok(n) if len <= max => n,
            _ => {
                self.oversized.get_or_insert((what, len));
                0
            }
        }
    }

    /// Refuses a set with a key or value too long for the engines.
    pub fn check(&self) -> Result<(), EngineError> {
        match self.oversized {
            Some((what, len)) => Err(EngineError::TooLong { what, len }),
            None => Ok(()),
        }
    }

    /// Sorts by (namespace, key) and keeps the last operation given for each
    /// key.
    ///
    /// Sorting a large buffer is most of a bulk load's own work: keys are
    /// compared by their first 32 bytes as two integers (zero-padded, which
    /// keeps the bytewise order), and by their bytes in the arena only when
    /// those are equal (a random read: 16 bytes left most edge keys of one
    /// source tied); the sort is unstable, with the position as the last
    /// tie-break (the last write of a key sorts last).
    pub fn normalize(&mut self) {
        use rayon::prelude::*;
        let arena = &self.arena;
        let key = |op: &Op| {
            let k = op.key();
            &arena[k.start..k.end]
        };
        // Bytes `from..from + 16` of `k`, zero-padded, as one integer.
        let word = |k: &[u8], from: usize| {
            let part = k.get(from..).unwrap_or_default();
            let n = part.len().min(16);
            let mut b = [0u8; 16];
            b[..n].copy_from_slice(&part[..n]);
            u128::from_be_bytes(b)
        };
        let entry = |(i, op): (usize, &Op)| {
            let k = key(op);
            (op.ns(), word(k, 0), word(k, 16), i)
        };
        let ops = &self.ops;
        let order = &mut self.order;
        order.clear();
        let cmp = |a: &OrderEntry, b: &OrderEntry| {
            (a.0, a.1, a.2)
                .cmp(&(b.0, b.1, b.2))
                .then_with(|| key(&ops[a.3]).cmp(key(&ops[b.3])))
                .then(a.3.cmp(&b.3))
        };
        // A large set (the end of a replay, a bulk load's buffer) is
        // ordered, sorted and reduced on every core: at a replay's end the
        // workers are idle, and reading each operation back in key order
        // waits on memory.
        if ops.len() < PARALLEL_SORT_OPS {
            order.extend(ops.iter().enumerate().map(entry));
            order.sort_unstable_by(cmp);
            let out = last_writes(order, ops, arena, std::mem::take(&mut self.sorted));
            self.sorted = std::mem::replace(&mut self.ops, out);
            return;
        }
        order.par_extend(ops.par_iter().enumerate().map(entry));
        order.par_sort_unstable_by(cmp);
        let chunk = order.len().div_ceil(rayon::current_num_threads().max(1));
        let parts: Vec<Vec<Op>> = order
            .par_chunks(chunk)
            .map(|part| last_writes(part, ops, arena, Vec::with_capacity(part.len())))
            .collect();
        let mut out = std::mem::take(&mut self.sorted);
        out.clear();
        out.reserve(parts.iter().map(Vec::len).sum());
        for part in parts {
            // A key's writes may straddle two parts: the later part's is
            // the later write.
            if let (Some(last), Some(first)) = (out.last(), part.first())
                && last.ns() == first.ns()
                && key(last) == key(first)
            {
                out.pop();
            }
            out.extend(part);
        }
        self.sorted = std::mem::replace(&mut self.ops, out);
    }

    /// Frees `normalize`'s scratch (as large as the set was) when the set is
    /// not reused: a one-off commit of millions of operations would hold
    /// it through the engine's write.
    pub fn release_scratch(&mut self) {
        self.order = Vec::new();
        self.sorted = Vec::new();
    }

    /// Keys and key + value bytes of the operations.
    pub fn size(&self) -> (u64, u64) {
        let bytes = self
            .ops
            .iter()
            .map(|op| {
                let v = op.value().map_or(0, |v| v.end - v.start);
                let k = op.key();
                (k.end - k.start + v) as u64
            })
            .sum();
        (self.ops.len() as u64, bytes)
    }

    /// Copies `key` and `value` into the arena and adds their write
    /// (`None`: the key's removal) to namespace `ns`.
    pub fn write(&mut self, ns: usize, key: &[u8], value: Option<&[u8]>) {
        let key = self.push(key);
        match value {
            Some(v) => {
                let value = self.push(v);
                self.put(ns, key, value);
            }
            None => self.remove(ns, key),
        }
    }

    /// Makes room for about `bytes` of keys and values (and their
    /// operations, at one per 64 bytes) up front: a set filled to a known
    /// size then never copies itself into a larger allocation on the way
    /// (each doubling faulted in fresh pages and copied the old ones).
    /// Untouched room costs address space, not memory. A hint: room that
    /// cannot be had is left to grow as before.
    pub fn reserve_for(&mut self, bytes: usize) {
        let _ = self
            .arena
            .try_reserve_exact(bytes.saturating_sub(self.arena.len()));
        let _ = self
            .ops
            .try_reserve_exact((bytes / 64).saturating_sub(self.ops.len()));
    }

    pub fn clear(&mut self) {
        self.arena.clear();
        self.ops.clear();
        self.oversized = None;
    }
}

/// An operation's place in [`WriteSet::normalize`]'s order: its namespace,
/// the first 32 bytes of its key as two integers, its index.
type OrderEntry = (usize, u128, u128, usize);

/// Each key's last write, in `order` (sorted by key, a key's writes in the
/// order they were made), appended to `out`. Keys whose namespace or first
/// 32 bytes differ differ: only ties read the arena (at random) to tell a
/// key's repetition from another key.
fn last_writes(order: &[OrderEntry], ops: &[Op], arena: &[u8], mut out: Vec<Op>) -> Vec<Op> {
    let key = |op: &Op| {
        let k = op.key();
        &arena[k.start..k.end]
    };
    out.clear();
    let mut last_prefix = None;
    for &(ns, w0, w1, i) in order {
        let op = ops[i];
        let tied = last_prefix == Some((ns, w0, w1));
        last_prefix = Some((ns, w0, w1));
        match out.last_mut() {
            Some(last) if tied && key(last) == key(&op) => *last = op,
            _ => out.push(op),
        }
    }
    out
}

/// Write sets with at least this many operations are sorted in parallel
/// (rayon's pool, one thread per core); smaller ones (a live run's commits)
/// on the calling thread.
const PARALLEL_SORT_OPS: usize = 1 << 16;

/// How a bulk load's buffer reaches fjall (sled always uses per-tree
/// batches).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BulkMethod {
    /// Ingestion for buffers of at least [`AUTO_INGEST_BYTES`], one batch
    /// for smaller ones (an ingestion costs a few fsyncs per keyspace, which
    /// dominate small loads).
    #[default]
    Auto,
    /// Keyspace ingestion: sorted runs written straight to tables.
    Ingest,
    /// One write batch per buffer, as a commit (not synced until the end).
    Batch,
}

impl BulkMethod {
    /// Whether `bytes` of keys and values are written by ingestion (else
    /// as a batch).
    pub fn ingests(self, bytes: usize) -> bool {
        match self {
            BulkMethod::Ingest => true,
            BulkMethod::Batch => false,
            BulkMethod::Auto => bytes >= AUTO_INGEST_BYTES,
        }
    }
}

/// The buffer size from which [`BulkMethod::Auto`] ingests. Measured with
/// `cargo bench --bench store -- N N fjall-ingest,fjall-batch` (one buffer
/// of N edges): 58k keys (about 4 MiB) went in 0.05 s as a batch and 0.10 s
/// ingested; 174k keys (about 12 MiB) in 0.17 s as a batch and 0.11 s
/// ingested (engine time).
pub const AUTO_INGEST_BYTES: usize = 8 << 20;

/// Sizes and knobs an engine is opened with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OpenConfig {
    pub cache_bytes: u64,
}

/// An open database.
pub(crate) enum Db {
    Fjall(fjall::FjallDb),
    Sled(sled::SledDb),
}

impl Db {
    /// Opens (creating if missing) the database of `engine` for the state
    /// directory `dir`. `recently_closed`: this process closed it before, so
    /// the engine may still be releasing its own lock.
    pub fn open(
        engine: Engine,
        dir: &Path,
        config: OpenConfig,
        recently_closed: bool,
    ) -> Result<Db, OpenError> {
        match engine {
            Engine::Fjall => fjall::FjallDb::open(dir, config, recently_closed).map(Db::Fjall),
            Engine::Sled => sled::SledDb::open(dir, config, recently_closed).map(Db::Sled),
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Db::Fjall(_) => Engine::Fjall,
            Db::Sled(_) => Engine::Sled,
        }
    }

    /// Names of every namespace that exists.
    pub fn namespace_names(&self) -> Vec<String> {
        match self {
            Db::Fjall(db) => db.namespace_names(),
            Db::Sled(db) => db.namespace_names(),
        }
    }

    /// The namespace `name`, created if missing (with filters for `reads`;
    /// an existing namespace keeps the ones it was created with).
    pub fn namespace(&self, name: &str, reads: PointReads) -> Result<Ns, EngineError> {
        match self {
            Db::Fjall(db) => db.namespace(name, reads).map(Ns::Fjall),
            Db::Sled(db) => db.namespace(name).map(Ns::Sled),
        }
    }

    /// Applies `set` (normalized) atomically across `ns`.
    pub fn write(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        set.check()?;
        match self {
            Db::Fjall(db) => db.write(ns, set),
            Db::Sled(db) => db.write(ns, set),
        }
    }

    /// Writes a normalized chunk of a bulk load (not atomic: the bulk load's
    /// marker covers a crash).
    pub fn bulk_write(
        &self,
        ns: &[Ns],
        set: &WriteSet,
        method: BulkMethod,
    ) -> Result<(), EngineError> {
        set.check()?;
        match self {
            Db::Fjall(db) => db.bulk_write(ns, set, method),
            Db::Sled(db) => db.bulk_write(ns, set),
        }
    }

    /// Writes a normalized set by ingestion (fjall only): atomic per
    /// namespace, not across them (the caller's redo file covers a crash);
    /// durable when it returns.
    pub fn ingest(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        self.ingest_when(ns, set, &|| true)
    }

    /// [`Db::ingest`] whose namespaces register their tables only if
    /// `ready` returns true, asked by each namespace once its tables are
    /// written; false abandons that namespace ([`EngineError::Abandoned`]).
    pub fn ingest_when(
        &self,
        ns: &[Ns],
        set: &WriteSet,
        ready: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), EngineError> {
        set.check()?;
        match self {
            Db::Fjall(db) => db.ingest_when(ns, set, ready),
            Db::Sled(_) => Err(EngineError::Mismatch("database")),
        }
    }

    /// Writes packed sets as if one after the other (fjall only): each
    /// namespace's writes of all of them, merged ([`merged`]), ingested as
    /// one sorted run. Not atomic (a bulk load's marker covers a crash);
    /// returns the keys and key + value bytes written.
    pub fn ingest_merged(&self, ns: &[Ns], sets: &[Packed]) -> Result<(u64, u64), EngineError> {
        match self {
            Db::Fjall(db) => db.ingest_merged(ns, sets),
            Db::Sled(_) => Err(EngineError::Mismatch("database")),
        }
    }

    /// [`Db::ingest_merged`] of namespace `n` alone, on the calling thread.
    pub fn ingest_merged_one(
        &self,
        ns: &[Ns],
        sets: &[Packed],
        n: usize,
    ) -> Result<(u64, u64), EngineError> {
        match self {
            Db::Fjall(_) => fjall::ingest_merged_one(ns, sets, n),
            Db::Sled(_) => Err(EngineError::Mismatch("database")),
        }
    }

    /// Merges each namespace of `ns` whose reads merge more than one
    /// sorted run into one (fjall: a major compaction per keyspace, side by
    /// side; a sled tree is one B-tree: nothing to do). Returns how many
    /// namespaces were merged.
    pub fn merge_runs(&self, ns: &[Ns]) -> Result<usize, EngineError> {
        match self {
            Db::Fjall(db) => db.merge_runs(ns),
            Db::Sled(_) => Ok(0),
        }
    }

    /// One write outside a commit.
    pub fn put_one(&self, ns: &Ns, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        match (self, ns) {
            (Db::Fjall(db), Ns::Fjall(ks)) => db.put_one(ks, key, value),
            (Db::Sled(_), Ns::Sled(tree)) => sled::put_one(tree, key, value),
            _ => Err(EngineError::Mismatch("namespace")),
        }
    }

    /// A consistent read of every namespace (for sled: reads of the trees as
    /// they are; the caller holds the gate).
    pub fn snapshot(&self) -> Snap {
        match self {
            Db::Fjall(db) => Snap::Fjall(db.snapshot()),
            Db::Sled(_) => Snap::Sled,
        }
    }

    /// Makes everything written so far durable (fsync).
    pub fn flush(&self) -> Result<(), EngineError> {
        match self {
            Db::Fjall(db) => db.flush(),
            Db::Sled(db) => db.flush(),
        }
    }

    /// Bytes on disk, as the engine estimates them.
    pub fn size_on_disk(&self) -> Result<u64, EngineError> {
        match self {
            Db::Fjall(db) => db.size_on_disk(),
            Db::Sled(db) => db.size_on_disk(),
        }
    }

    /// Removes every namespace's content (an interrupted bulk load).
    pub fn wipe(&self) -> Result<(), EngineError> {
        match self {
            Db::Fjall(db) => db.wipe(),
            Db::Sled(db) => db.wipe(),
        }
    }
}

/// Why a database could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Another process (or this one, not yet released) holds it.
    Locked,
    Engine(EngineError),
}

/// How long to wait for an engine's own lock when this process closed the
/// database just before (both engines release it from background threads),
/// and otherwise.
const RELOCK_WAIT: Duration = Duration::from_secs(5);
const LOCK_WAIT: Duration = Duration::from_millis(250);

/// Calls `open` until it succeeds, fails otherwise than [`OpenError::Locked`],
/// or the lock wait is over (backing off from 1 to 50 ms).
fn open_retrying<T>(
    recently_closed: bool,
    mut open: impl FnMut() -> Result<T, OpenError>,
) -> Result<T, OpenError> {
    let wait = if recently_closed {
        RELOCK_WAIT
    } else {
        LOCK_WAIT
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match open() {
            Err(OpenError::Locked) if started.elapsed() < wait => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            done => return done,
        }
    }
}

/// A consistent read of the store's namespaces.
#[derive(Clone)]
pub(crate) enum Snap {
    Fjall(::fjall::Snapshot),
    Sled,
}

impl Snap {
    pub fn get(&self, ns: &Ns, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
        match (self, ns) {
            (Snap::Fjall(s), Ns::Fjall(ks)) => fjall::get(s, ks, key),
            (Snap::Sled, Ns::Sled(t)) => sled::get(t, key),
            _ => Err(EngineError::Mismatch("snapshot")),
        }
    }

    /// Every pair of `ns`.
    pub fn iter(&self, ns: &Ns) -> KvIter {
        self.range(ns, Bound::Unbounded)
    }

    /// Pairs whose key starts with `prefix`.
    pub fn prefix(&self, ns: &Ns, prefix: &[u8]) -> KvIter {
        match (self, ns) {
            (Snap::Fjall(s), Ns::Fjall(ks)) => fjall::prefix(s, ks, prefix),
            (Snap::Sled, Ns::Sled(t)) => sled::prefix(t, prefix),
            _ => mismatch(),
        }
    }

    /// Pairs from `start` (included or excluded) to the end.
    pub fn range(&self, ns: &Ns, start: Bound<'_>) -> KvIter {
        match (self, ns) {
            (Snap::Fjall(s), Ns::Fjall(ks)) => fjall::range(s, ks, start),
            (Snap::Sled, Ns::Sled(t)) => sled::range(t, start),
            _ => mismatch(),
        }
    }
}

/// Where a range scan starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Bound<'a> {
    Unbounded,
    Included(&'a [u8]),
    Excluded(&'a [u8]),
}

fn mismatch() -> KvIter {
    Box::new(std::iter::once(Err(EngineError::Mismatch("snapshot"))))
}

/// Direct access for tests that damage a state on purpose.
#[cfg(test)]
impl Ns {
    pub fn raw_insert(&self, key: &[u8], value: &[u8]) {
        match self {
            Ns::Fjall(ks) => ks.insert(key, value).expect("fjall insert"),
            Ns::Sled(t) => {
                t.insert(key, value).expect("sled insert");
            }
        }
    }

    pub fn raw_remove(&self, key: &[u8]) {
        match self {
            Ns::Fjall(ks) => ks.remove(key).expect("fjall remove"),
            Ns::Sled(t) => {
                t.remove(key).expect("sled remove");
            }
        }
    }

    pub fn raw_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Ns::Fjall(ks) => ks
                .iter()
                .map(|g| {
                    let (k, v) = g.into_inner().expect("fjall item");
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
            Ns::Sled(t) => t
                .iter()
                .map(|i| {
                    let (k, v) = i.expect("sled item");
                    (k.to_vec(), v.to_vec())
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    use super::WriteSet;

    /// (namespace, key) → the value written last, `None` for a removal.
    pub(super) type Written = ((usize, Vec<u8>), Option<Vec<u8>>);

    /// Writes `value` at `key` into `set` (removes the key one time in
    /// four instead) and records the write in `want`.
    /// A normalized set's writes in its order: ((namespace, key), value).
    pub(super) fn writes(s: &WriteSet) -> Vec<Written> {
        s.ops
            .iter()
            .map(|op| {
                let value = op.value().map(|v| s.bytes(v).to_vec());
                ((op.ns(), s.bytes(op.key()).to_vec()), value)
            })
            .collect()
    }

    pub(super) fn random_write(
        rng: &mut Xoshiro256PlusPlus,
        set: &mut WriteSet,
        want: &mut BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
        ns: usize,
        key: Vec<u8>,
        value: String,
    ) {
        let key_span = set.push(&key);
        if rng.random_range(0..4u8) == 0 {
            set.remove(ns, key_span);
            want.insert((ns, key), None);
        } else {
            let value = value.into_bytes();
            let value_span = set.push(&value);
            set.put(ns, key_span, value_span);
            want.insert((ns, key), Some(value));
        }
    }

    /// Reads with keys longer than fjall accepts (it panics on keys over
    /// 65 535 bytes, in reads too) answer what they mean, on both engines:
    /// no stored key is that long, so `get` finds nothing, a prefix scan
    /// returns nothing, and a range from such a bound returns the stored
    /// keys after it in byte order.
    #[test]
    fn reads_with_keys_longer_than_any_stored_key_answer_what_they_mean() {
        use super::{Bound, Db, Engine, OpenConfig, PointReads};
        for engine in [Engine::Fjall, Engine::Sled] {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = Db::open(
                engine,
                dir.path(),
                OpenConfig {
                    cache_bytes: 1 << 20,
                },
                false,
            )
            .expect("open");
            let ns = db.namespace("t", PointReads::Misses).expect("namespace");
            let mut set = WriteSet::default();
            for k in [&b"a"[..], b"b", b"bb", b"c"] {
                let key = set.push(k);
                let value = set.push(b"v");
                set.put(0, key, value);
            }
            set.normalize();
            db.write(std::slice::from_ref(&ns), &set).expect("write");
            let snap = db.snapshot();
            let mut long = b"b".to_vec();
            long.resize(70_000, b'b');
            assert!(snap.get(&ns, &long).expect("get").is_none(), "{engine:?}");
            assert_eq!(snap.prefix(&ns, &long).count(), 0, "{engine:?}");
            let keys = |start: Bound<'_>| -> Vec<Vec<u8>> {
                snap.range(&ns, start)
                    .map(|kv| kv.expect("read").0.to_vec())
                    .collect()
            };
            assert_eq!(keys(Bound::Included(&long)), [b"c".to_vec()], "{engine:?}");
            assert_eq!(keys(Bound::Excluded(&long)), [b"c".to_vec()], "{engine:?}");
        }
    }

    /// An op is 32 bytes; a key or value too long for one (4 GiB or more:
    /// no arena is needed to say so) makes the engine write refuse the set
    /// instead of writing a wrong length; `clear` forgets it.
    #[test]
    fn ops_are_small_and_an_oversized_value_is_refused() {
        assert_eq!(std::mem::size_of::<super::Op>(), 32);
        let mut set = WriteSet::default();
        let key = set.push(b"k");
        set.put(
            0,
            key,
            super::Span {
                start: 0,
                end: 1 << 33,
            },
        );
        assert!(matches!(
            set.check(),
            Err(super::EngineError::TooLong { what: "value", len }) if len == 1 << 33
        ));
        set.clear();
        assert!(set.check().is_ok());
        set.remove(
            0,
            super::Span {
                start: 0,
                end: super::MAX_KEY + 1,
            },
        );
        assert!(matches!(
            set.check(),
            Err(super::EngineError::TooLong { what: "key", len }) if len == super::MAX_KEY + 1
        ));
        set.clear();
        let key = set.push(b"k");
        let value = set.push(b"v");
        set.put(2, key, value);
        set.remove(1, key);
        assert!(set.check().is_ok());
        assert_eq!(set.ops[0].ns(), 2);
        assert_eq!(set.bytes(set.ops[0].value().unwrap()), b"v");
        assert_eq!(set.ops[1].value(), None);
        assert_eq!(set.bytes(set.ops[1].key()), b"k");
    }

    /// Room asked for up front is there (no growth while the set fills to
    /// it), and room that cannot be had leaves the set as it was, usable.
    #[test]
    fn a_set_reserved_for_a_size_holds_it_and_an_impossible_size_is_ignored() {
        let mut set = WriteSet::default();
        set.reserve_for(1 << 20);
        assert!(set.arena.capacity() >= 1 << 20);
        assert!(set.ops.capacity() >= (1 << 20) / 64);
        let (arena, ops) = (set.arena.capacity(), set.ops.capacity());
        for i in 0..1000u32 {
            set.write(0, &i.to_be_bytes(), Some(b"v".as_slice()));
        }
        assert_eq!((set.arena.capacity(), set.ops.capacity()), (arena, ops));
        set.reserve_for(usize::MAX);
        assert_eq!(set.ops.len(), 1000);
        set.normalize();
        assert_eq!(set.ops.len(), 1000);
    }

    /// A set large enough to be normalized on every core
    /// ([`super::PARALLEL_SORT_OPS`]), over few keys written many times
    /// each, so that a key's writes straddle the parts reduced apart.
    #[test]
    fn a_large_set_keeps_the_last_write_of_each_key() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(17);
        for round in 0..2 {
            let count = super::PARALLEL_SORT_OPS * 2 + rng.random_range(0..1000usize);
            // Few keys, all sharing their first 32 bytes.
            normalizes_as_a_map_would(&mut rng, round, count, |rng, _| {
                format!("{:040}{}", 0, rng.random_range(0..40u32)).into_bytes()
            });
        }
    }

    /// Keys that share long prefixes (up to past the 32 bytes compared as
    /// integers), differ only in length or end in zero bytes, written several
    /// times each.
    #[test]
    fn normalize_sorts_by_key_bytes_and_keeps_the_last_write() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        for round in 0..50 {
            // Every key of a namespace starts the same in half the rounds:
            // many keys then tie in the 32 bytes the sort compares first.
            let prefixes: Vec<Vec<u8>> = (0..3)
                .map(|_| {
                    let len = if round % 2 == 0 {
                        rng.random_range(0..40usize)
                    } else {
                        0
                    };
                    (0..len)
                        .map(|_| [b'p', 0, 0xff][rng.random_range(0..3usize)])
                        .collect()
                })
                .collect();
            let count = rng.random_range(0..400usize);
            normalizes_as_a_map_would(&mut rng, round, count, |rng, ns| {
                let mut key = prefixes[ns].clone();
                key.extend(std::iter::repeat_n(b'k', rng.random_range(0..40usize)));
                for _ in 0..rng.random_range(0..3usize) {
                    key.push([0u8, 1, b'a', 0xff][rng.random_range(0..4usize)]);
                }
                key
            });
        }
    }

    /// `count` random writes (puts and removals) into namespaces 0..3 of
    /// the keys `key` makes for a namespace, normalized: sorted by
    /// (namespace, key bytes) with each key's last write, as a `BTreeMap`
    /// fed in order gives.
    fn normalizes_as_a_map_would(
        rng: &mut Xoshiro256PlusPlus,
        round: usize,
        count: usize,
        mut key: impl FnMut(&mut Xoshiro256PlusPlus, usize) -> Vec<u8>,
    ) {
        let mut set = WriteSet::default();
        let mut want: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
        for n in 0..count {
            let ns = rng.random_range(0..3usize);
            let k = key(rng, ns);
            random_write(rng, &mut set, &mut want, ns, k, format!("{round}-{n}"));
        }
        set.normalize();
        let want: Vec<Written> = want.into_iter().collect();
        assert_eq!(writes(&set), want, "round {round}");
    }
}
