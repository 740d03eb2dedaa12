//! The fjall 3 engine: one keyspace per namespace in `STATE/fjall/`.
//!
//! Invariants: a commit is one cross-keyspace `WriteBatch` (atomic after a
//! crash: fjall's journal replays a batch whole or not at all), written to
//! the OS at commit (`PersistMode::Buffer`) and fsynced by [`FjallDb::flush`];
//! reads go through a `Snapshot`, which sees every keyspace at one sequence
//! number, so a read never sees part of a batch. A bulk load's writes are
//! either ingested (sorted runs written straight into tables, the keyspaces
//! side by side: not atomic, which the bulk load's marker covers; held
//! buffers merged into one run per keyspace, [`FjallDb::ingest_merged`]) or
//! written as unsynced batches.
//!
//! Memory: the block cache is `cache_bytes` (the store's default is
//! 256 MiB); each keyspace's memtable is sealed at [`MEMTABLE_BYTES`] (4 MiB) and
//! the journals are bounded by [`JOURNAL_BYTES`] (past it, fjall flushes the
//! memtables that hold the oldest journal back), so write buffers take at
//! most about `MEMTABLE_BYTES` per written keyspace plus sealed memtables
//! waiting for their flush.
//!
//! Filters: a keyspace builds bloom filters only for the point reads its
//! [`PointReads`] says it serves, chosen when it is created and kept by the
//! state (fjall records a keyspace's options).

use std::path::Path;
use std::sync::Arc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};

use super::{
    Bound, BulkMethod, Bytes, EngineError, KvIter, MAX_KEY, Ns, OpenConfig, OpenError, Packed,
    PointReads, WriteSet,
};

/// fjall's background threads (flushes and compactions). One: with two
/// or more, fjall 3.1's first worker hands every compaction request it
/// receives back to the queue while another worker compacts, and so spins
/// (`worker_pool::worker_tick`, 6% of all samples of a 2M-event replay here
/// with two workers, for nothing).
const WORKER_THREADS: usize = 1;

/// Sorted runs a keyspace's level 0 holds before fjall compacts it (its
/// default is 4). A bulk load used to ingest one level-0 run per keyspace
/// per 64 MiB buffer (~6 for 2M events; it now ingests one per
/// `--bulk-memory-mb` of sorted buffers, and merges several at its end, see
/// [`FjallDb::merge_runs`]), so with 4 most keyspaces were compacted
/// during the load and again at the next open, beside a continuing
/// replay's rebuild (measured before the bulk load merged its runs):
/// `scripts/ab-replay.sh 2000000 2`, 4 vs 8: continue 118 900 / 131 300 vs
/// 135 400 / 136 600 events/s, 26.8 / 24.4 vs 23.1 / 23.1 CPU-s; empty
/// 15.1 vs 14.7 CPU-s; HTTP lookups and traversals the same within the
/// noise (docs/performance.md). A keyspace keeps the
/// threshold it was created with. Keep it well below 20: fjall 3.1 slows
/// every write to a keyspace with 20 runs in level 0 and halts it at 30
/// until a compaction lowers the count, so a threshold of 30 or more
/// deadlocks the writer (tried: 32 hung `rdg run` in its first commit past
/// 30 runs, queries waiting behind it); 16 measured the same as 8 under a
/// live 50 000 events/s (docs/performance.md).
const L0_RUNS: u8 = 8;

/// The engine's folder inside the state directory.
pub(crate) const DIR: &str = "fjall";

/// Size at which a keyspace's memtable is sealed and flushed (fjall's
/// default is 64 MiB per keyspace; rdg writes about 15 keyspaces at once).
/// Small, because a scan steps over every version of a key still in the
/// memtable, and rdg rewrites hot records (a popular title, a busy profile's
/// edges) on many commits: `tests/query_http.rs`
/// `paging_is_stable_while_another_thread_commits` (one node's edges
/// rewritten in a tight loop while pages are read) took 160 s with 16 MiB
/// memtables and 26 s with 2 MiB. Commits of 1M edges
/// (`cargo bench --bench store -- 1000000 10000 fjall-commit`) ran at
/// 314–350k keys/s with 16 MiB and 225k with 2 MiB on a busier machine;
/// 4 MiB sits between the two (not measured separately).
pub(crate) const MEMTABLE_BYTES: u64 = 4 << 20;

/// Upper bound of all journals (fjall's default is 512 MiB, its minimum 64).
pub(crate) const JOURNAL_BYTES: u64 = 128 << 20;

/// The longest name fjall accepts for a keyspace (it panics beyond).
const MAX_NAME: usize = 255;

pub(crate) struct FjallDb {
    db: Database,
}

impl FjallDb {
    pub fn open(
        dir: &Path,
        config: OpenConfig,
        recently_closed: bool,
    ) -> Result<FjallDb, OpenError> {
        let path = dir.join(DIR);
        super::open_retrying(recently_closed, || {
            match Database::builder(&path)
                .cache_size(config.cache_bytes)
                .max_journaling_size(JOURNAL_BYTES)
                .worker_threads(WORKER_THREADS)
                .open()
            {
                Ok(db) => Ok(FjallDb { db }),
                Err(fjall::Error::Locked) => Err(OpenError::Locked),
                Err(e) => Err(OpenError::Engine(e.into())),
            }
        })
    }

    pub fn namespace_names(&self) -> Vec<String> {
        self.db
            .list_keyspace_names()
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    pub fn namespace(&self, name: &str, reads: PointReads) -> Result<Keyspace, EngineError> {
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(EngineError::Name(name.to_string()));
        }
        Ok(self.db.keyspace(name, || {
            // Tables from level 1 on lz4-compressed (fjall's default
            // starts at level 2): ingested runs are written with level 1's
            // policy (then registered in level 0), and compressed they take
            // half the disk (2M events: 334 → 168 MB) for the same load
            // time, and a continue reads them back faster
            // (docs/performance.md); a bulk load's merge writes the last
            // level. Level 0 and 1 uncompressed instead, so that only the
            // merge compresses: the same CPU (`scripts/ab-replay.sh`). A
            // keyspace keeps the policy it was created with.
            let options = KeyspaceCreateOptions::default()
                .compaction_strategy(Arc::new(
                    fjall::compaction::Leveled::default().with_l0_threshold(L0_RUNS),
                ))
                .max_memtable_size(MEMTABLE_BYTES)
                .data_block_compression_policy(fjall::config::CompressionPolicy::new([
                    fjall::CompressionType::None,
                    fjall::CompressionType::Lz4,
                ]));
            // Filters only where a point read consults them: building one
            // hashes every key of every table written (1.2–1.6% of a
            // replay's instructions, docs/performance.md).
            match reads {
                PointReads::None => options.filter_policy(fjall::config::FilterPolicy::disabled()),
                PointReads::Hits => options.expect_point_read_hits(true),
                PointReads::Misses => options,
            }
        })?)
    }

    fn batch(&self, ns: &[Ns], set: &WriteSet) -> Result<fjall::OwnedWriteBatch, EngineError> {
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), set.ops.len());
        for op in set.in_order(&set.ops) {
            let Some(Ns::Fjall(ks)) = ns.get(op.ns()) else {
                return Err(EngineError::Mismatch("namespace"));
            };
            match op.value() {
                Some(v) => batch.insert(ks, set.bytes(op.key()), set.bytes(v)),
                None => batch.remove(ks, set.bytes(op.key())),
            }
        }
        Ok(batch)
    }

    /// One atomic batch, handed to the OS before it returns.
    pub fn write(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        let batch = self.batch(ns, set)?.durability(Some(PersistMode::Buffer));
        Ok(batch.commit()?)
    }

    /// A bulk load chunk, sorted by (namespace, key), one entry per key.
    pub fn bulk_write(
        &self,
        ns: &[Ns],
        set: &WriteSet,
        method: BulkMethod,
    ) -> Result<(), EngineError> {
        if !method.ingests(set.arena.len()) {
            return Ok(self.batch(ns, set)?.commit()?);
        }
        self.ingest(ns, set)
    }

    /// Writes a normalized set by ingestion: one sorted run per keyspace,
    /// side by side on rayon's pool (each writes its own tables; fjall
    /// serializes only their registration, in `finish`). Atomic per
    /// keyspace only; durable when it returns.
    pub fn ingest(&self, ns: &[Ns], set: &WriteSet) -> Result<(), EngineError> {
        use rayon::prelude::*;
        runs(ns, set)?
            .par_iter()
            .try_for_each(|(ks, run)| ingest_run(ks, set, run, &|| true))
    }

    /// [`FjallDb::ingest`] where each keyspace, once its tables are
    /// written, registers them only if `ready()` says so (else
    /// [`EngineError::Abandoned`]: the tables stay unregistered, and fjall
    /// removes them at the next open). Each keyspace on a thread of its own:
    /// one that waits for `ready` must not hold a thread of rayon's pool
    /// while larger ones wait for it.
    pub fn ingest_when(
        &self,
        ns: &[Ns],
        set: &WriteSet,
        ready: &(dyn Fn() -> bool + Sync),
    ) -> Result<(), EngineError> {
        let runs = runs(ns, set)?;
        std::thread::scope(|s| {
            let threads: Vec<_> = runs
                .iter()
                .map(|(ks, run)| s.spawn(move || ingest_run(ks, set, run, ready)))
                .collect();
            let mut result = Ok(());
            for t in threads {
                let done = t
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                result = result.and(done);
            }
            result
        })
    }

    /// [`super::Db::ingest_merged`]: one ingestion per keyspace that any
    /// of `sets` writes, of their merged writes, the largest first, side
    /// by side on rayon's pool. Durable when it returns.
    pub fn ingest_merged(&self, ns: &[Ns], sets: &[Packed]) -> Result<(u64, u64), EngineError> {
        use rayon::prelude::*;
        super::by_size(sets)
            .par_iter()
            .map(|&(n, _)| ingest_merged_one(ns, sets, n))
            .try_reduce(|| (0, 0), |a, b| Ok((a.0 + b.0, a.1 + b.1)))
    }

    /// Major-compacts every keyspace of `ns` that holds more than one
    /// sorted run, the largest first, side by side on rayon's pool. Work
    /// a bulk-loaded state would meet anyway: its runs sit in level 0, and
    /// fjall compacts them all into level 1 as soon as a live run's flushes
    /// bring level 0 to [`L0_RUNS`], blocking its one worker (and so the
    /// flushes) meanwhile; a state that is only served never compacts.
    pub fn merge_runs(&self, ns: &[Ns]) -> Result<usize, EngineError> {
        use rayon::prelude::*;
        let mut many: Vec<&Keyspace> = ns
            .iter()
            .filter_map(|n| match n {
                Ns::Fjall(ks) if sorted_runs(ks) > 1 => Some(ks),
                _ => None,
            })
            .collect();
        many.sort_by_key(|ks| std::cmp::Reverse(ks.disk_space()));
        many.par_iter().try_for_each(|ks| ks.major_compact())?;
        Ok(many.len())
    }

    pub fn put_one(&self, ks: &Keyspace, key: &[u8], value: &[u8]) -> Result<(), EngineError> {
        Ok(ks.insert(key, value)?)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.db.snapshot()
    }

    pub fn flush(&self) -> Result<(), EngineError> {
        Ok(self.db.persist(PersistMode::SyncAll)?)
    }

    pub fn size_on_disk(&self) -> Result<u64, EngineError> {
        Ok(self.db.disk_space()?)
    }

    /// Deletes every keyspace.
    pub fn wipe(&self) -> Result<(), EngineError> {
        for name in self.namespace_names() {
            // It exists: its filters are the ones it was created with.
            let ks = self.namespace(&name, PointReads::Misses)?;
            self.db.delete_keyspace(ks)?;
        }
        self.flush()
    }
}

/// Sorted runs a read of `ks` merges: each of level 0's, and one per
/// deeper level that holds tables (leveled compaction keeps each level
/// one run).
pub(crate) fn sorted_runs(ks: &Keyspace) -> usize {
    use fjall::AbstractTree;
    let deeper = (1..)
        .map_while(|level| ks.tree.level_table_count(level))
        .filter(|&tables| tables > 0)
        .count();
    ks.tree.l0_run_count() + deeper
}

/// A normalized set's operations as one run per keyspace.
fn runs<'a>(
    ns: &'a [Ns],
    set: &'a WriteSet,
) -> Result<Vec<(&'a Keyspace, &'a [super::Op])>, EngineError> {
    set.ops
        .chunk_by(|a, b| a.ns == b.ns)
        .map(|run| match run.first().and_then(|op| ns.get(op.ns())) {
            Some(Ns::Fjall(ks)) => Ok((ks, run)),
            _ => Err(EngineError::Mismatch("namespace")),
        })
        .collect()
}

/// Writes one keyspace's sorted run into new tables and, if `ready()`,
/// registers them.
fn ingest_run(
    ks: &Keyspace,
    set: &WriteSet,
    run: &[super::Op],
    ready: &(dyn Fn() -> bool + Sync),
) -> Result<(), EngineError> {
    let mut ingestion = ks.start_ingestion()?;
    for op in set.in_order(run) {
        match op.value() {
            Some(v) => ingestion.write(set.bytes(op.key()), set.bytes(v))?,
            None => ingestion.write_tombstone(set.bytes(op.key()))?,
        }
    }
    if !ready() {
        return Err(EngineError::Abandoned);
    }
    Ok(ingestion.finish()?)
}

/// [`FjallDb::ingest_merged`] of namespace `n` of `ns` alone, on the
/// calling thread.
pub(crate) fn ingest_merged_one(
    ns: &[Ns],
    sets: &[Packed],
    n: usize,
) -> Result<(u64, u64), EngineError> {
    match ns.get(n) {
        Some(Ns::Fjall(ks)) => ingest_merged_run(ks, sets, n),
        _ => Err(EngineError::Mismatch("namespace")),
    }
}

/// Ingests namespace `n`'s merged writes of `sets` into `ks` as one run;
/// returns the keys and bytes written.
fn ingest_merged_run(ks: &Keyspace, sets: &[Packed], n: usize) -> Result<(u64, u64), EngineError> {
    let mut ingestion = ks.start_ingestion()?;
    let (mut keys, mut bytes) = (0u64, 0u64);
    for (key, value) in super::merged(sets, n) {
        keys += 1;
        bytes += (key.len() + value.map_or(0, <[u8]>::len)) as u64;
        match value {
            Some(v) => ingestion.write(key, v)?,
            None => ingestion.write_tombstone(key)?,
        }
    }
    ingestion.finish()?;
    Ok((keys, bytes))
}

// Reads with a key longer than `MAX_KEY` (an identifier typed into a
// query) are answered from what that means: no stored key is that long.

pub(crate) fn get(s: &Snapshot, ks: &Keyspace, key: &[u8]) -> Result<Option<Bytes>, EngineError> {
    if key.len() > MAX_KEY {
        return Ok(None);
    }
    Ok(s.get(ks, key)?.map(Bytes::Fjall))
}

fn pairs(iter: fjall::Iter) -> KvIter {
    Box::new(iter.map(|guard| {
        guard
            .into_inner()
            .map(|(k, v)| (Bytes::Fjall(k), Bytes::Fjall(v)))
            .map_err(EngineError::from)
    }))
}

/// Pairs whose key starts with `prefix`: a scan from `prefix` with no
/// upper bound, stopped at the first key without it. fjall's own `prefix`
/// gives the scan an upper bound, which every table it opens seeks in its
/// index and then in its first data block (a seek from the block's end,
/// decoding the block's items onto a stack); a lookup reads one record, so
/// those seeks were a third of a node lookup's instructions
/// (docs/performance.md). Keys are sorted, so the first key without the
/// prefix ends it.
pub(crate) fn prefix(s: &Snapshot, ks: &Keyspace, prefix: &[u8]) -> KvIter {
    use std::ops::Bound as B;
    if prefix.len() > MAX_KEY {
        return Box::new(std::iter::empty());
    }
    let from: (B<&[u8]>, B<&[u8]>) = (B::Included(prefix), B::Unbounded);
    let prefix = prefix.to_vec();
    Box::new(
        pairs(s.range::<&[u8], _>(ks, from)).take_while(move |item| match item {
            Ok((k, _)) => k.starts_with(&prefix),
            Err(_) => true,
        }),
    )
}

pub(crate) fn range(s: &Snapshot, ks: &Keyspace, start: Bound<'_>) -> KvIter {
    use std::ops::Bound as B;
    let r: (B<&[u8]>, B<&[u8]>) = match start {
        Bound::Unbounded => (B::Unbounded, B::Unbounded),
        // For stored keys (at most `MAX_KEY` bytes), being at or after a
        // longer `k` is the same as being after its first `MAX_KEY` bytes.
        Bound::Included(k) | Bound::Excluded(k) if k.len() > MAX_KEY => {
            (B::Excluded(&k[..MAX_KEY]), B::Unbounded)
        }
        Bound::Included(k) => (B::Included(k), B::Unbounded),
        Bound::Excluded(k) => (B::Excluded(k), B::Unbounded),
    };
    pairs(s.range::<&[u8], _>(ks, r))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fjall::config::FilterPolicyEntry;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    const KEYS: u32 = 20_000;

    fn key(i: u32) -> Vec<u8> {
        format!("k{i:06}").into_bytes()
    }

    /// Asserts that every key of `0..KEYS` reads, in each of `ns`, as
    /// `want` says: present with its value, or absent.
    fn reads_as(db: &FjallDb, ns: &[Keyspace], want: &BTreeMap<Vec<u8>, Vec<u8>>, when: &str) {
        let snap = db.snapshot();
        for ks in ns {
            for i in 0..KEYS {
                let k = key(i);
                let got = snap.get(ks, &k).expect("get").map(|v| v.to_vec());
                assert_eq!(got.as_ref(), want.get(&k), "{} key {i} {when}", ks.name());
            }
        }
    }

    /// Every prefix scan returns exactly the live keys that start with the
    /// prefix, in order, whichever way the keys were written (a memtable,
    /// a flushed table, ingested runs, removals over them, the merge of
    /// runs): keys over a small alphabet so that many are prefixes of
    /// others and of the prefixes asked for, with the byte 0xff, which ends
    /// a prefix's upper bound, among them.
    #[test]
    fn prefix_scans_return_the_keys_with_the_prefix() {
        const ALPHABET: [u8; 4] = [0x00, b'a', b'b', 0xff];
        let random_bytes = |rng: &mut StdRng, len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
                .collect()
        };
        let config = OpenConfig {
            cache_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let db = FjallDb::open(dir.path(), config, false).expect("open");
        let ks = db
            .namespace("scanned", PointReads::None)
            .expect("namespace");
        let ns = [Ns::Fjall(ks.clone())];
        let mut rng = StdRng::seed_from_u64(5);
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for round in 0..5 {
            let mut set = WriteSet::default();
            for n in 0..400 {
                let len = rng.random_range(1..6);
                let k = random_bytes(&mut rng, len);
                let k_span = set.push(&k);
                if round >= 3 && rng.random_range(0..3) == 0 {
                    set.remove(0, k_span);
                    want.remove(&k);
                } else {
                    let v = format!("v{round}-{n}").into_bytes();
                    let v_span = set.push(&v);
                    set.put(0, k_span, v_span);
                    want.insert(k, v);
                }
            }
            set.normalize();
            match round {
                0 => {}
                1 => ks.rotate_memtable_and_wait().expect("flush the memtable"),
                2 => {
                    db.ingest(&ns, &set).expect("ingest");
                    set = WriteSet::default();
                }
                _ => db.merge_runs(&ns).map(drop).expect("merge the runs"),
            }
            if !set.ops.is_empty() {
                db.write(&ns, &set).expect("write");
            }
            if round == 4 {
                // The last round's removals into a table too.
                ks.rotate_memtable_and_wait().expect("flush the memtable");
            }
            let snap = db.snapshot();
            for _ in 0..300 {
                let len = rng.random_range(0..7);
                let p = random_bytes(&mut rng, len);
                let got: Vec<(Vec<u8>, Vec<u8>)> = prefix(&snap, &ks, &p)
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("scan"))
                    .collect();
                let expected: Vec<(Vec<u8>, Vec<u8>)> = want
                    .range(p.clone()..)
                    .take_while(|(k, _)| k.starts_with(&p))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, expected, "round {round}, prefix {p:?}");
            }
        }
    }

    /// Namespaces created for each kind of point read answer every `get`,
    /// of present and absent keys, as written, whichever way their tables
    /// were written (a memtable flushed into level 0, ingested runs, the
    /// merge of runs into the last level), before and after a reopen; and
    /// the filters each records are the ones its kind asks for.
    #[test]
    fn point_reads_answer_as_written_whatever_the_filters() {
        let kinds = [
            ("none", PointReads::None),
            ("hits", PointReads::Hits),
            ("misses", PointReads::Misses),
        ];
        let config = OpenConfig {
            cache_bytes: 1 << 20,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rng = StdRng::seed_from_u64(11);
        let mut want = BTreeMap::new();
        {
            let db = FjallDb::open(dir.path(), config, false).expect("open");
            let ks: Vec<Keyspace> = kinds
                .iter()
                .map(|&(name, reads)| db.namespace(name, reads).expect("namespace"))
                .collect();
            let ns: Vec<Ns> = ks.iter().cloned().map(Ns::Fjall).collect();
            for round in 0..3 {
                let mut set = WriteSet::default();
                for n in 0..2_000 {
                    let k = key(rng.random_range(0..KEYS));
                    let v = format!("v{round}-{n}").into_bytes();
                    let (k_span, v_span) = (set.push(&k), set.push(&v));
                    for i in 0..ns.len() {
                        set.put(i, k_span, v_span);
                    }
                    want.insert(k, v);
                }
                set.normalize();
                if round == 0 {
                    db.write(&ns, &set).expect("write");
                    for k in &ks {
                        k.rotate_memtable_and_wait().expect("flush the memtable");
                    }
                } else {
                    db.ingest(&ns, &set).expect("ingest");
                }
                reads_as(&db, &ks, &want, &format!("after round {round}"));
            }
            db.merge_runs(&ns).expect("merge the runs");
            reads_as(&db, &ks, &want, "after the merge");
            db.flush().expect("flush");
        }
        let db = FjallDb::open(dir.path(), config, false).expect("reopen");
        let ks: Vec<Keyspace> = kinds
            .iter()
            // Asked for with the wrong kind: an existing namespace keeps its own.
            .map(|&(name, _)| db.namespace(name, PointReads::Misses).expect("namespace"))
            .collect();
        reads_as(&db, &ks, &want, "after a reopen");
        for (k, (name, reads)) in ks.iter().zip(kinds) {
            let fjall::AnyTree::Standard(tree) = &k.tree else {
                panic!("{name}: not a standard tree");
            };
            let policy = &tree.config.filter_policy;
            let built = policy.iter().any(|e| *e != FilterPolicyEntry::None);
            assert_eq!(built, reads != PointReads::None, "{name}: {policy:?}");
        }
    }
}
