//! The sled 0.34 engine: one tree per namespace, the database at the top of
//! the state directory (where rdg's first states have it).
//!
//! Invariants: a commit is one multi-tree transaction over every tree it
//! touches (recovered all or nothing), whose closure only writes (it is pure:
//! every byte is encoded before, and nothing is read); sled's reads are not
//! isolated from a transaction in progress, so the store holds its gate
//! around sled reads and commits. `flush` fsyncs; without it sled writes
//! back about every 500 ms. A bulk load chunk is one `apply_batch` per tree
//! (atomic per tree only; the bulk load's marker covers a crash).

use std::path::Path;

use sled::Tree;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{Bound, Bytes, EngineError, KvIter, Ns, OpenConfig, OpenError, WriteSet};

/// sled's own tree, which rdg does not use.
const DEFAULT_TREE: &[u8] = b"__sled__default";

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
            match sled::Config::new()
                .path(dir)
                .cache_capacity(config.cache_bytes)
                .open()
            {
                Ok(db) => Ok(SledDb { db }),
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    Err(OpenError::Locked)
                }
                Err(e) => Err(OpenError::Engine(e.into())),
            }
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

    /// One `apply_batch` per tree.
    pub fn bulk_write(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        for run in set.ops.chunk_by(|a, b| a.ns == b.ns) {
            let Some(Ns::Sled(tree)) = run.first().and_then(|op| ns.get(op.ns())) else {
                return Err(EngineError::Mismatch("namespace"));
            };
            let mut batch = sled::Batch::default();
            for op in run {
                match op.value() {
                    Some(v) => batch.insert(set.bytes(op.key()), set.bytes(v)),
                    None => batch.remove(set.bytes(op.key())),
                }
            }
            tree.apply_batch(batch)?;
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
