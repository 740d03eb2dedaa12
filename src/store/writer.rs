//! The write path: [`Store::commit`] turns changes, dead letters and progress
//! into one atomic write across namespaces ([`engine::Db::write`]).
//!
//! Invariants: everything a commit writes is encoded first into one
//! [`WriteSet`] (keys and values in one arena) and then applied by a single
//! engine call, so the engine recovers it all or nothing. **Nothing on this
//! path reads the engine**: counters, the commit count and dead-letter
//! sequence numbers come from the store's memory (loaded at open, updated
//! only after the engine accepted the write, under the counters' mutex,
//! which also serializes commits), and a put of a non-reversed edge removes
//! its `edge_in/` key blindly when that namespace exists. Namespaces are
//! created before the write; removals never create one. [`Plan`] is shared
//! with the bulk load, so both encode changes the same way.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use compact_str::CompactString;

use super::engine::{Engine, Ns, Span, WriteSet};
use super::{
    AUTO_INGEST_BYTES, DataflowCounters, DeadLetterRef, Family, META_COMMITS, META_DATAFLOW,
    META_POSITION, Store, StoreError, codec,
};
use crate::model::{Change, DataflowProgress, DeadLetter, Progress, Record, split_ident};

/// Key and value bytes a large commit asks room for at its start (address
/// space: only what is written is ever touched).
const LARGE_COMMIT_BYTES: usize = 512 << 20;
/// Operations a large commit asks room for at its start (32 bytes each).
const LARGE_COMMIT_OPS: usize = 1 << 23;

/// Fixed positions of the always-present namespaces in a [`Plan`].
const T_META: usize = 0;
const T_LINK: usize = 1;
const T_ID: usize = 2;
const T_CLUSTER: usize = 3;

/// A plan's dynamic namespaces by name, with their indexes.
pub(super) type Namespaces = BTreeMap<(Family, CompactString), usize>;

/// Encoded writes and the namespaces they go to.
pub(crate) struct Plan {
    pub ns: Vec<Ns>,
    /// The dynamic namespaces named so far, with their indexes: a short
    /// list searched by family and `&str` without making a key (every
    /// change looks its own up; a map's search cost ~400 instructions).
    names: Vec<(Family, CompactString, usize)>,
    pub set: WriteSet,
}

impl Plan {
    pub fn new(store: &Store) -> Plan {
        let inner = &store.inner;
        Plan {
            ns: vec![
                inner.meta.clone(),
                inner.link.clone(),
                inner.id.clone(),
                inner.cluster.clone(),
            ],
            names: Vec::new(),
            set: WriteSet::default(),
        }
    }

    /// The index of `family/name`, creating the namespace if needed.
    fn get_or_create(
        &mut self,
        store: &Store,
        family: Family,
        name: &str,
    ) -> Result<usize, StoreError> {
        if let Some(i) = self.named(family, name) {
            return Ok(i);
        }
        let ns = store.dyn_tree_or_create(family, name)?;
        Ok(self.push(family, name, ns))
    }

    /// The index of `family/name` if that namespace exists.
    fn get_existing(&mut self, store: &Store, family: Family, name: &str) -> Option<usize> {
        if let Some(i) = self.named(family, name) {
            return Some(i);
        }
        let ns = store.dyn_tree(family, name)?;
        Some(self.push(family, name, ns))
    }

    /// How another plan's namespace indexes (`theirs`: that plan's
    /// dynamic namespaces, as [`Plan::dynamic`] gives them) map to this
    /// plan's: the result's `i` is this plan's index of their `i`.
    /// Namespaces are looked up (or created, as the other plan did) by
    /// name.
    pub(super) fn adopt(
        &mut self,
        store: &Store,
        theirs: &Namespaces,
    ) -> Result<Vec<usize>, StoreError> {
        let mut map: Vec<usize> = (0..=T_CLUSTER).collect();
        map.resize(
            theirs.values().max().map_or(0, |&i| i + 1).max(map.len()),
            0,
        );
        for ((family, name), &i) in theirs {
            map[i] = self.get_or_create(store, *family, name)?;
        }
        Ok(map)
    }

    /// The dynamic namespaces this plan has named so far, with their
    /// indexes (for [`Plan::adopt`]).
    pub(super) fn dynamic(&self) -> Namespaces {
        self.names
            .iter()
            .map(|(family, name, i)| ((*family, name.clone()), *i))
            .collect()
    }

    /// The index of `family/name` if this plan has named it.
    fn named(&self, family: Family, name: &str) -> Option<usize> {
        self.names
            .iter()
            .find(|(f, n, _)| *f == family && n.as_str() == name)
            .map(|&(_, _, i)| i)
    }

    fn push(&mut self, family: Family, name: &str, ns: Ns) -> usize {
        let i = self.ns.len();
        self.ns.push(ns);
        self.names.push((family, name.into(), i));
        i
    }

    fn key(&mut self, segments: &[&str]) -> Span {
        let start = self.set.arena.len();
        for s in segments {
            codec::push_str(&mut self.set.arena, s);
        }
        self.set.span_from(start)
    }

    fn postcard<T: serde::Serialize>(
        &mut self,
        value: &T,
        what: &'static str,
    ) -> Result<Span, StoreError> {
        let start = self.set.arena.len();
        postcard::to_io(value, &mut self.set.arena).map_err(|e| StoreError::Encode {
            what,
            detail: e.to_string(),
        })?;
        Ok(self.set.span_from(start))
    }

    /// Encodes every change (puts and removes).
    pub fn changes(&mut self, store: &Store, changes: &[Change]) -> Result<(), StoreError> {
        self.set.ops.reserve(changes.len() * 2);
        self.set.arena.reserve(changes.len() * 96);
        for change in changes {
            self.change(store, change)?;
        }
        Ok(())
    }

    fn change(&mut self, store: &Store, change: &Change) -> Result<(), StoreError> {
        match change {
            Change::Node {
                id,
                dataflow,
                record,
            } => {
                let (node_type, id_part) = split_ident(id);
                let tree = match record {
                    Some(_) => self.get_or_create(store, Family::Node, node_type)?,
                    // No namespace, nothing to remove: do not create one.
                    None => match self.get_existing(store, Family::Node, node_type) {
                        Some(tree) => tree,
                        None => return Ok(()),
                    },
                };
                let key = self.key(&[id_part, dataflow]);
                match record {
                    Some(r) => {
                        let value = self.postcard(r, "a node record")?;
                        self.set.put(tree, key, value);
                    }
                    None => self.set.remove(tree, key),
                }
            }
            Change::Edge {
                edge_type,
                from,
                to,
                dataflow,
                reverse,
                record,
            } => self.edge(
                store,
                [edge_type, from, to, dataflow],
                *reverse,
                record.as_ref(),
            )?,
            Change::Link {
                a: x,
                b: y,
                dataflow,
                mirrored,
                record,
            } => {
                let ab = self.key(&[x, y, dataflow]);
                let ba = self.key(&[y, x, dataflow]);
                match record {
                    // The `(b, a)` entry, empty, is written when the link
                    // appears; readers take the record from `(a, b)`, so an
                    // update (a link's count and last_seen change with
                    // every event) writes one key, not two.
                    Some(r) => {
                        let value = self.postcard(r, "a link record")?;
                        self.set.put(T_LINK, ab, value);
                        if !mirrored {
                            self.set.put(T_LINK, ba, Span::default());
                        }
                    }
                    None => {
                        self.set.remove(T_LINK, ab);
                        self.set.remove(T_LINK, ba);
                    }
                }
            }
            Change::Cluster { id, cluster } => {
                let key = self.key(&[id]);
                match cluster {
                    Some(c) => {
                        let value = self.postcard(c, "a cluster entry")?;
                        self.set.put(T_ID, key, value);
                    }
                    None => self.set.remove(T_ID, key),
                }
            }
            Change::Member {
                cluster,
                member,
                present,
            } => {
                let key = self.key(&[cluster, member]);
                if *present {
                    self.set.put(T_CLUSTER, key, Span::default());
                } else {
                    self.set.remove(T_CLUSTER, key);
                }
            }
        }
        Ok(())
    }

    /// Encodes an edge put (its `edge_in/` key put when `reverse`, removed
    /// blindly otherwise) or removal (both keys).
    fn edge(
        &mut self,
        store: &Store,
        [edge_type, from, to, dataflow]: [&str; 4],
        reverse: bool,
        record: Option<&Record>,
    ) -> Result<(), StoreError> {
        let fwd = match record {
            Some(_) => self.get_or_create(store, Family::Edge, edge_type)?,
            // An `edge_in/` key never exists without its `edge/` key.
            None => match self.get_existing(store, Family::Edge, edge_type) {
                Some(tree) => tree,
                None => return Ok(()),
            },
        };
        let inn = if record.is_some() && reverse {
            Some(self.get_or_create(store, Family::EdgeIn, edge_type)?)
        } else {
            self.get_existing(store, Family::EdgeIn, edge_type)
        };
        let key = self.key(&[from, to, dataflow]);
        let in_key = inn.map(|_| self.key(&[to, from, dataflow]));
        match record {
            Some(r) => {
                let start = self.postcard(r, "an edge record")?.start;
                self.set.arena.push(u8::from(reverse));
                let value = self.set.span_from(start);
                self.set.put(fwd, key, value);
                if let (Some(inn), Some(in_key)) = (inn, in_key) {
                    if reverse {
                        self.set.put(inn, in_key, value);
                    } else {
                        // Blind: it may have been written reversed.
                        self.set.remove(inn, in_key);
                    }
                }
            }
            None => {
                self.set.remove(fwd, key);
                if let (Some(inn), Some(in_key)) = (inn, in_key) {
                    self.set.remove(inn, in_key);
                }
            }
        }
        Ok(())
    }

    /// Encodes dead letter `d` under sequence number `seq`.
    pub fn dead_letter(
        &mut self,
        store: &Store,
        d: &DeadLetter,
        seq: u64,
    ) -> Result<(), StoreError> {
        let tree = self.get_or_create(store, Family::Dead, &d.dataflow)?;
        let key = self.set.push(&seq.to_be_bytes());
        let value = self.postcard(
            &DeadLetterRef {
                source: &d.source,
                reason: &d.reason,
            },
            "a dead letter",
        )?;
        self.set.put(tree, key, value);
        Ok(())
    }

    /// Encodes the counters of dataflow `name`.
    pub fn counters(&mut self, name: &str, c: &DataflowCounters) -> Result<(), StoreError> {
        let key = self.key(&[META_DATAFLOW, name]);
        let value = self.postcard(c, "dataflow counters")?;
        self.set.put(T_META, key, value);
        Ok(())
    }

    /// Encodes a position.
    pub fn position(&mut self, dataflow: &str, partition: &str, pos: u64) {
        let key = self.key(&[META_POSITION, dataflow, partition]);
        let value = self.set.push(&pos.to_be_bytes());
        self.set.put(T_META, key, value);
    }

    /// Encodes the commit count.
    pub fn commit_count(&mut self, commits: u64) {
        let key = self.key(&[META_COMMITS]);
        let value = self.set.push(&commits.to_be_bytes());
        self.set.put(T_META, key, value);
    }
}

/// Adds a commit's progress to a dataflow's counters (the watermark keeps
/// its maximum).
pub(crate) fn add_progress(c: &mut DataflowCounters, p: &DataflowProgress) {
    c.events = c.events.saturating_add(p.events);
    c.late = c.late.saturating_add(p.late);
    c.watermark = match (c.watermark, p.watermark) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
}

/// The counters of `name` as updated so far, starting from `committed`.
pub(crate) fn counters_of<'a>(
    updated: &'a mut BTreeMap<CompactString, DataflowCounters>,
    committed: &BTreeMap<CompactString, DataflowCounters>,
    name: &str,
) -> &'a mut DataflowCounters {
    updated
        .entry(name.into())
        .or_insert_with(|| committed.get(name).cloned().unwrap_or_default())
}

impl Store {
    /// Applies all `changes`, `dead_letters` and `progress` in ONE atomic
    /// step across every namespace (see the module docs), so that no read
    /// sees a part of it.
    ///
    /// `record: Some(r)` puts that dataflow's contribution, `None` removes it
    /// (with its reverse-index or other-direction key). `Cluster { cluster:
    /// None }` and `Member { present: false }` remove. Within one commit the
    /// last change of a key wins. Progress counters are added, the watermark
    /// keeps its maximum, positions are set. Dead letters get the next
    /// sequence numbers of their dataflow. Refused while a bulk load runs.
    pub fn commit(
        &self,
        changes: &[Change],
        dead_letters: &[DeadLetter],
        progress: &Progress,
    ) -> Result<(), StoreError> {
        self.commit_parts(&[changes], dead_letters, progress)
    }

    /// [`Store::commit`] of the changes of several parts, in order (as if
    /// concatenated), without concatenating them.
    pub fn commit_parts(
        &self,
        parts: &[&[Change]],
        dead_letters: &[DeadLetter],
        progress: &Progress,
    ) -> Result<(), StoreError> {
        if parts.iter().all(|p| p.is_empty())
            && dead_letters.is_empty()
            && progress.dataflows.is_empty()
            && progress.positions.is_empty()
        {
            return Ok(());
        }
        let mut commit = self.begin_commit()?;
        for changes in parts {
            commit.changes(changes)?;
        }
        commit.add(dead_letters, progress);
        commit.finish()
    }

    /// [`Store::begin_commit`] for a commit expected to be large (a
    /// replay's one commit at its end): its write set asks for
    /// `LARGE_COMMIT_BYTES` and `LARGE_COMMIT_OPS` of room at once
    /// (`WriteSet::reserve_room`; a 2M-event continue's set grew to ~400 MB
    /// and 4.4M operations by doubling, copying each time).
    pub fn begin_large_commit(&self) -> Result<PendingCommit, StoreError> {
        let mut commit = self.begin_commit()?;
        commit
            .plan
            .set
            .reserve_room(LARGE_COMMIT_BYTES, LARGE_COMMIT_OPS);
        Ok(commit)
    }

    /// Starts one atomic commit whose changes are encoded as they come (see
    /// [`PendingCommit`]). Refused while a bulk load runs.
    pub fn begin_commit(&self) -> Result<PendingCommit, StoreError> {
        self.refuse_during_bulk_load()?;
        Ok(PendingCommit {
            store: self.clone(),
            plan: Plan::new(self),
            changed: false,
            dead_letters: Vec::new(),
            progress: Progress::default(),
        })
    }

    /// Applies a one-off commit: on fjall, from [`AUTO_INGEST_BYTES`] on,
    /// by ingestion through the redo file (`store::redo`: all of it or none
    /// after a crash; a continuing replay's commit of 2M events went in 2.0 s
    /// instead of 4.4 s as a batch), the file written on its own thread while
    /// the namespaces write their tables, which they register once the file
    /// is durable; smaller ones, and sled's, as one write.
    fn apply_large(&self, plan: &Plan) -> Result<(), StoreError> {
        let inner = &self.inner;
        if !self.ingests(plan) {
            return inner
                .db
                .write(&plan.ns, &plan.set)
                .map_err(|e| self.engine_err(e));
        }
        // Refused before the redo file: a set the engine refuses there would
        // be refused again at every open.
        plan.set.check().map_err(|e| self.engine_err(e))?;
        let names: Vec<String> = plan.ns.iter().map(Ns::name).collect();
        #[cfg(test)]
        let stop_after_redo = STOP_AFTER_REDO.get();
        #[cfg(not(test))]
        let stop_after_redo = false;
        // The redo file is written beside the ingestion's tables; no
        // namespace registers its tables before the file is durable.
        let durable = Signal::default();
        let (written, ingested) = std::thread::scope(|s| {
            let redo = s.spawn(|| {
                // Answered when this thread ends, even by a panic (no).
                let mut answer = Answer(&durable, false);
                let written = super::redo::write(&inner.path, &names, &plan.set);
                answer.1 = written.is_ok() && !stop_after_redo;
                written
            });
            let ingested = inner
                .db
                .ingest_when(&plan.ns, &plan.set, &|| durable.wait());
            let written = redo
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (written, ingested)
        });
        let applied = written.and_then(|()| {
            if stop_after_redo {
                return Err(StoreError::Io {
                    path: inner.path.clone(),
                    source: std::io::Error::other("stopped after the redo file, as by a crash"),
                });
            }
            ingested.map_err(|source| StoreError::CommitPending {
                path: inner.path.clone(),
                redo: super::redo::path(&inner.path),
                source,
            })
        });
        if applied.is_err() {
            // Some namespaces may hold their part: until the next open
            // finishes the commit, views keep the snapshot published before.
            inner
                .unsettled
                .store(true, std::sync::atomic::Ordering::Release);
        }
        applied?;
        super::redo::remove(&inner.path)
    }

    /// Whether [`Store::apply_large`] ingests `plan` (fjall, from
    /// [`AUTO_INGEST_BYTES`] on) rather than writing it as one batch.
    fn ingests(&self, plan: &Plan) -> bool {
        self.inner.db.engine() == Engine::Fjall && plan.set.arena.len() >= ingest_from_bytes()
    }

    /// Whether readers must wait while the engine applies a commit: on
    /// sled, whose reads are not isolated from a transaction; never on
    /// fjall, whose views read the published snapshot.
    pub(super) fn gates_apply(&self) -> bool {
        self.inner.db.engine() == Engine::Sled
    }

    fn refuse_during_bulk_load(&self) -> Result<(), StoreError> {
        if self.inner.bulk.load(std::sync::atomic::Ordering::Acquire) {
            return Err(StoreError::BulkLoad {
                path: self.inner.path.clone(),
                detail: "a bulk load into this state is running or was interrupted; commits wait for its finish (after an interruption, reopen the state: it is wiped back to empty)".to_string(),
            });
        }
        Ok(())
    }
}

/// A yes or no given once by one thread and awaited by others.
#[derive(Default)]
struct Signal {
    given: Mutex<Option<bool>>,
    changed: Condvar,
}

impl Signal {
    /// Gives the answer (the first one given stands).
    fn set(&self, yes: bool) {
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        if given.is_none() {
            *given = Some(yes);
            self.changed.notify_all();
        }
    }

    /// Waits for the answer.
    fn wait(&self) -> bool {
        let mut given = self.given.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(yes) = *given {
                return yes;
            }
            given = self.changed.wait(given).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The answer a [`Signal`] gets when this is dropped (so that waiters
/// never wait for a thread that panicked).
struct Answer<'a>(&'a Signal, bool);

impl Drop for Answer<'_> {
    fn drop(&mut self) {
        self.0.set(self.1);
    }
}

#[cfg(test)]
thread_local! {
    /// Tests: a fjall commit of this thread stops once its redo file is
    /// durable, before any ingestion, as a crash there would.
    pub(crate) static STOP_AFTER_REDO: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Tests: the size from which this thread's one-off commits are
    /// ingested, instead of [`AUTO_INGEST_BYTES`].
    pub(crate) static INGEST_FROM: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// The size of a one-off commit from which fjall ingests it.
fn ingest_from_bytes() -> usize {
    #[cfg(test)]
    if let Some(bytes) = INGEST_FROM.get() {
        return bytes;
    }
    AUTO_INGEST_BYTES
}

/// One atomic commit built up in parts: [`PendingCommit::changes`] encodes
/// changes as they come (only their encoding is held, never the changes),
/// [`PendingCommit::add`] adds dead letters and progress, and
/// [`PendingCommit::finish`] applies it all in one engine write, exactly as
/// [`Store::commit`] of everything added, in the order added. Dropped
/// without `finish`, nothing is written (namespaces it created stay, empty).
pub struct PendingCommit {
    store: Store,
    plan: Plan,
    /// Some change was added (even one that encodes to nothing).
    changed: bool,
    dead_letters: Vec<DeadLetter>,
    progress: Progress,
}

impl std::fmt::Debug for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCommit")
            .field("store", &self.store)
            .field("bytes", &self.plan.set.arena.len())
            .finish_non_exhaustive()
    }
}

impl PendingCommit {
    /// Encodes `changes` (after those added before).
    pub fn changes(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        self.changed |= !changes.is_empty();
        self.plan.changes(&self.store, changes)
    }

    /// Adds dead letters and progress (merged with what was added before).
    pub fn add(&mut self, dead_letters: &[DeadLetter], progress: &Progress) {
        self.dead_letters.extend_from_slice(dead_letters);
        self.progress.merge(progress.clone());
    }

    /// Whether nothing was added (changes that encode to nothing, such as
    /// removals from namespaces that do not exist, still make a commit).
    fn is_empty(&self) -> bool {
        !self.changed
            && self.dead_letters.is_empty()
            && self.progress.dataflows.is_empty()
            && self.progress.positions.is_empty()
    }

    /// Applies everything added in one atomic write (nothing when nothing
    /// was added).
    pub fn finish(self) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let PendingCommit {
            store,
            mut plan,
            dead_letters,
            progress,
            ..
        } = self;
        store.refuse_during_bulk_load()?;
        // Serializes commits and guards the in-memory counters.
        let mut counters = store
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut updated: BTreeMap<CompactString, DataflowCounters> = BTreeMap::new();
        for (name, p) in &progress.dataflows {
            add_progress(counters_of(&mut updated, &counters.dataflows, name), p);
        }
        for d in &dead_letters {
            let c = counters_of(&mut updated, &counters.dataflows, &d.dataflow);
            let seq = c.next_dead_letter;
            c.next_dead_letter = c.next_dead_letter.saturating_add(1);
            c.dead_letters = c.dead_letters.saturating_add(1);
            plan.dead_letter(&store, d, seq)?;
        }
        for (name, c) in &updated {
            plan.counters(name, c)?;
        }
        for ((dataflow, partition), pos) in &progress.positions {
            plan.position(dataflow, partition, *pos);
        }
        let commits = store.commit_count().saturating_add(1);
        plan.commit_count(commits);
        plan.set.normalize();
        plan.set.release_scratch();
        let mut meta = super::Meta::clone(&store.published().meta);
        for (name, c) in &updated {
            meta.dataflows.insert(name.to_string(), c.into());
        }
        for ((dataflow, partition), pos) in &progress.positions {
            meta.positions
                .insert((dataflow.clone(), partition.clone()), *pos);
        }
        let (keys, bytes) = plan.set.size();
        let started = Instant::now();
        {
            // sled readers wait while sled applies it; fjall views read the
            // snapshot published with the commit before until this one is
            // (see "Isolation").
            let _exclusive = store.gates_apply().then(|| store.gate_exclusive());
            store.apply_large(&plan)?;
            store.publish(meta, commits);
        }
        store.inner.stats.add(keys, bytes, started.elapsed());
        counters.dataflows.extend(updated);
        Ok(())
    }
}
