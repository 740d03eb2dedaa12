//! The sled 0.34 engine: one tree per namespace, the database at the top of
//! the state directory (where rdg's first states have it).
//!
//! Invariants: a commit is one multi-tree transaction over every tree it
//! touches (recovered all or nothing), whose closure only writes (it is pure:
//! every byte is encoded before, and nothing is read); sled's reads are not
//! isolated from a transaction in progress, so the store holds its gate
//! around sled reads and commits. `flush` fsyncs; without it sled writes
//! back about every 500 ms. A bulk load writes each tree by single inserts
//! and removals, flushed every [`BULK_CHUNK_OPS`] operations (not atomic;
//! the bulk load's marker covers a crash).

use std::path::Path;

use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{Bound, Bytes, EngineError, KvIter, Ns, OpenConfig, OpenError, WriteSet};

/// Operations a bulk load writes between two flushes. sled keeps what it
/// wrote in memory until it is flushed, and its background flush (every
/// 500 ms) falls behind a bulk load: one `apply_batch` per tree and buffer
/// took a 2M-event load to a 12 GB peak. Batches of 2 048 operations, each
/// flushed, held it to 2.0 GB, but only while the state fitted sled's
/// cache: with `--cache-mb 64` the same load peaked at 7.0–8.3 GB, and 9M
/// events passed 20 GB. Single inserts, flushed as often, follow the
/// cache: 1.7 GB at the default cache, 0.99 GB at 64 MiB, and 25–28% faster
/// (`docs/performance.md`, "sled").
const BULK_CHUNK_OPS: usize = 2048;

/// sled's own tree, which rdg does not use.
const DEFAULT_TREE: &[u8] = b"__sled__default";

/// Removes what sled left of snapshots it did not finish writing; whether
/// there were any. sled writes a snapshot to `snap.<lsn>.generating`, syncs
/// it, and only then renames it to `snap.<lsn>`: a `.generating` file is
/// never a snapshot. sled 0.34 still takes the last `snap.*` file by name
/// when it opens, so one cut short (a full disk while sled closed) made it
/// refuse the state as corrupt (`tests/faults_disk.rs`, a continuing replay
/// on a full disk). Without it, sled opens as after a crash before that
/// snapshot began. Called only after an open failed, so never beside a
/// sled that is still writing one.
fn removed_unfinished_snapshots(dir: &Path) -> Result<bool, OpenError> {
    let io = |e: std::io::Error| OpenError::Engine(EngineError::Sled(sled::Error::Io(e)));
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(
                "{}: removing {name}, a snapshot sled did not finish writing",
                dir.display()
            );
            std::fs::remove_file(entry.path()).map_err(io)?;
            removed = true;
        }
    }
    Ok(removed)
}

thread_local! {
    /// Whether this thread is inside sled's open, where a panic is caught
    /// and becomes a refusal of the state ([`panic_is_contained`]).
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread happens inside sled's open, which catches
/// it and refuses the state as damaged: the process's panic hook then says
/// nothing, since nothing stopped.
pub fn panic_is_contained() -> bool {
    OPENING.with(|o| o.get())
}

/// Opens sled's database in `dir`.
fn open_sled(dir: &Path, config: OpenConfig) -> Result<sled::Db, OpenError> {
    // sled 0.34 panics on some damaged files (a `db` file emptied under a
    // snapshot that names its segments): a refusal, not a crash.
    OPENING.with(|o| o.set(true));
    let open = std::panic::catch_unwind(|| {
        sled::Config::new()
            .path(dir)
            .cache_capacity(config.cache_bytes)
            .open()
    });
    OPENING.with(|o| o.set(false));
    match open {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(sled::Error::Io(io))) if io.to_string().contains("could not acquire lock") => {
            Err(OpenError::Locked)
        }
        Ok(Err(e)) => Err(OpenError::Engine(e.into())),
        Err(payload) => Err(OpenError::Engine(EngineError::SledPanicked(panic_text(
            payload.as_ref(),
        )))),
    }
}

/// What a caught panic said.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// Whether an open failed on sled's files (where an unfinished snapshot
/// may be the cause), not on the machine or a lock.
fn failed_on_files(open: &Result<sled::Db, OpenError>) -> bool {
    matches!(
        open,
        Err(OpenError::Engine(
            EngineError::Sled(sled::Error::Corruption { .. }) | EngineError::SledPanicked(_)
        ))
    )
}

pub(crate) struct SledDb {
    db: sled::Db,
}

impl SledDb {
    pub fn open(
        dir: &Path,
        config: OpenConfig,
        recently_closed: bool,
    ) -> Result<SledDb, OpenError> {
        super::open_retrying(recently_closed, || {
            let open = open_sled(dir, config);
            let db = if failed_on_files(&open) && removed_unfinished_snapshots(dir)? {
                open_sled(dir, config)?
            } else {
                open?
            };
            Ok(SledDb { db })
        })
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter(|n| &n[..] != DEFAULT_TREE)
            .filter_map(|n| String::from_utf8(n.to_vec()).ok())
            .collect()
    }

    pub fn namespace(&self, name: &str) -> Result<Tree, EngineError> {
        Ok(self.db.open_tree(name.as_bytes())?)
    }

    /// One multi-tree transaction over the trees `set` writes.
    pub fn write(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        // Only the trees written, in the order of the set's namespaces.
        let mut trees: Vec<Tree> = Vec::new();
        let mut slot: Vec<Option<usize>> = vec![None; ns.len()];
        for op in &set.ops {
            if slot[op.ns()].is_none() {
                let Some(Ns::Sled(tree)) = ns.get(op.ns()) else {
                    return Err(EngineError::Mismatch("namespace"));
                };
                slot[op.ns()] = Some(trees.len());
                trees.push(tree.clone());
            }
        }
        if trees.is_empty() {
            return Ok(());
        }
        let result = trees.as_slice().transaction(|t| {
            for op in &set.ops {
                let Some(i) = slot[op.ns()] else {
                    return Err(ConflictableTransactionError::Abort(()));
                };
                match op.value() {
                    Some(v) => {
                        t[i].insert(set.bytes(op.key()), set.bytes(v))?;
                    }
                    None => {
                        t[i].remove(set.bytes(op.key()))?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => Err(EngineError::Mismatch("namespace")),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Each tree's operations as single inserts and removals, with a flush
    /// after every [`BULK_CHUNK_OPS`] (`apply_batch`es of that size, flushed
    /// as often, grew past the machine's memory once the state outgrew
    /// sled's cache).
    pub fn bulk_write(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        for run in set.ops.chunk_by(|a, b| a.ns == b.ns) {
            let Some(Ns::Sled(tree)) = run.first().and_then(|op| ns.get(op.ns())) else {
                return Err(EngineError::Mismatch("namespace"));
            };
            for chunk in run.chunks(BULK_CHUNK_OPS) {
                for op in chunk {
                    match op.value() {
                        Some(v) => tree.insert(set.bytes(op.key()), set.bytes(v))?,
                        None => tree.remove(set.bytes(op.key()))?,
                    };
                }
                self.db.flush()?;
            }
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), EngineError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Drops every tree.
    pub fn wipe(&self) -> Result<(), EngineError> {
        for name in self.namespace_names() {
            self.db.drop_tree(name.as_bytes())?;
        }
        self.flush()
    }
}

pub(crate) fn put_one(tree: &Tree, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
    tree.insert(key, value)?;
    Ok(())
}

pub(crate) fn get(tree: &Tree, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
    Ok(tree.get(key)?.map(Bytes::Sled))
}

fn pairs(iter: sled::Iter) -> KvIter {
    Box::new(iter.map(|item| {
        item.map(|(k, v)| (Bytes::Sled(k), Bytes::Sled(v)))
            .map_err(EngineError::from)
    }))
}

pub(crate) fn prefix(tree: &Tree, prefix: &[u8]) -> KvIter {
    pairs(tree.scan_prefix(prefix))
}

pub(crate) fn range(tree: &Tree, start: Bound<'_>) -> KvIter {
    use std::ops::Bound as B;
    let r: (B<&[u8]>, B<&[u8]>) = match start {
        Bound::Unbounded => (B::Unbounded, B::Unbounded),
        Bound::Included(k) => (B::Included(k), B::Unbounded),
        Bound::Excluded(k) => (B::Excluded(k), B::Unbounded),
    };
    pairs(tree.range::<&[u8], _>(r))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    use super::super::tests::random_write;
    use super::*;

    /// A bulk write of several batches per tree (two trees, keys written
    /// by an earlier bulk write removed or written again) reads back as
    /// written, after a reopen too.
    #[test]
    fn a_bulk_write_of_many_batches_reads_back_as_written() {
        let config = OpenConfig {
            cache_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut want = BTreeMap::new();
        let live = |want: &BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>, t: usize| {
            want.iter()
                .filter_map(|((ns, k), v)| Some((k.clone(), v.clone()?)).filter(|_| *ns == t))
                .collect::<Vec<_>>()
        };
        let reads_as = |db: &SledDb, want: &BTreeMap<_, _>, when: &str| {
            for t in 0..2 {
                let tree = Ns::Sled(db.namespace(&format!("t{t}")).expect("tree"));
                let (got, want) = (tree.raw_pairs(), live(want, t));
                assert!(
                    got == want,
                    "tree t{t} {when}: {} keys, want {}",
                    got.len(),
                    want.len()
                );
            }
        };
        {
            let db = SledDb::open(dir.path(), config, false).expect("open");
            let ns: Vec<Ns> = (0..2)
                .map(|t| Ns::Sled(db.namespace(&format!("t{t}")).expect("tree")))
                .collect();
            for round in 0..2 {
                let mut set = WriteSet::default();
                for n in 0..3 * BULK_CHUNK_OPS {
                    let t = rng.random_range(0..2);
                    let k = format!("k{:05}", rng.random_range(0..4 * BULK_CHUNK_OPS)).into_bytes();
                    random_write(&mut rng, &mut set, &mut want, t, k, format!("{round}-{n}"));
                }
                set.normalize();
                db.bulk_write(&ns, &set).expect("bulk write");
                reads_as(&db, &want, &format!("after round {round}"));
            }
        }
        let db = SledDb::open(dir.path(), config, true).expect("reopen");
        reads_as(&db, &want, "after a reopen");
        assert!(
            (0..2).all(|t| live(&want, t).len() > BULK_CHUNK_OPS),
            "several batches per tree"
        );
    }
}
