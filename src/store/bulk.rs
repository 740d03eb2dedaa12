//! Bulk load: a backfill written into an **empty** state faster than by
//! commits, and not atomic.
//!
//! [`Store::bulk_load`] refuses a state that is not empty, writes the bulk
//! load marker durably (module `layout`) and returns a [`BulkLoad`].
//! [`BulkLoad::write`] takes successive chunks (the same arguments as
//! [`Store::commit`]): their writes are encoded exactly as a commit's and
//! buffered; once the buffer holds about [`DEFAULT_BUFFER_BYTES`] of keys and
//! values it is sorted and reduced to the last write of each key (later
//! chunks override earlier ones, removals become tombstones). On fjall the
//! sorted buffer is then held in memory, packed in key order, up to
//! `StoreOptions::bulk_memory_bytes` ([`DEFAULT_HOLD_BYTES`]); the held
//! buffers are merged into one sorted run per namespace and ingested when
//! they reach it and at the end ([`engine::Db::ingest_merged`]), so that a
//! load that fits is written once. On sled (and with no room to hold) each
//! sorted buffer goes to the engine at once ([`engine::Db::bulk_write`]:
//! sled batches).
//! When the caller knows that what the load holds is all its namespaces
//! will get ([`BulkLoad::held_final`]: a replay's folds' records are in,
//! identity's assignments are still to come), those namespaces are merged
//! and ingested one at a time ([`BulkLoad::write_early`]) while the rest is
//! computed; their sections are then forgotten by the held buffers
//! (`Packed::forget`), and a namespace written again later gets another
//! run, which the end merges.
//! Other threads may encode, sort and pack their share of the changes
//! themselves ([`BulkLoad::encoder`], [`Encoder`]: a replay's workers
//! do): their sorted runs reach the load through its inbox and are held
//! like its own buffers.
//! [`BulkLoad::finish`] writes what is left, merges each namespace's runs
//! into one if there are several ([`engine::Db::merge_runs`]: every run
//! ingested covers the whole key range, and a read seeks in each), then
//! writes the counters, positions and commit count in one atomic write,
//! makes it all durable and removes the marker.
//!
//! Invariant (the crash contract): the marker exists, durably, from before
//! the first byte of the load until every byte of it is durable. Opening a
//! state with the marker wipes it back to empty, so an interrupted load
//! leaves the state it started from. A `BulkLoad` dropped without `finish`
//! leaves the marker (and this `Store` refuses commits): reopen to wipe.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::encoder::{Encoder, Inbox};
use super::engine::{BulkMethod, Packed, WriteSet, by_size};
use super::writer::{Plan, add_progress, counters_of};
use super::{DataflowCounters, Store, StoreError, layout};
use crate::model::{Change, DeadLetter, Progress};

/// Key and value bytes buffered before they are written on fjall (the sort
/// and the operations' index take about as much again): large sorted runs
/// are what makes ingestion fast.
pub const DEFAULT_BUFFER_BYTES: usize = 64 << 20;

/// Sorted buffers held in memory before they are merged and ingested on
/// fjall (`StoreOptions::bulk_memory_bytes`, `rdg replay --bulk-memory-mb`).
/// A 2M-event replay holds about 400 MiB (keys, values and 8 bytes per
/// write): it fits, and each byte is compressed and written once. A larger
/// load is ingested in merged runs of about this size, which the end merges
/// again.
pub const DEFAULT_HOLD_BYTES: usize = 768 << 20;

/// The same on sled, whose batches gain nothing from size: replaying 200k
/// events (`scripts/bench-replay.sh 200000 2`, busy machine), 64 MiB
/// batches wrote 26k keys/s at 2.4 GB peak RSS, 4 MiB batches 55k keys/s at
/// 2.2 GB, and commits (into a non-empty state) 54k keys/s at 1.6 GB: on sled
/// a bulk load is about as fast as commits, and is kept for its crash
/// contract.
pub const SLED_BUFFER_BYTES: usize = 4 << 20;

/// A bulk load in progress (see the module docs).
pub struct BulkLoad {
    store: Store,
    plan: Plan,
    counters: BTreeMap<CompactString, DataflowCounters>,
    positions: crate::model::Positions,
    /// Something (data, dead letters or progress) was written.
    wrote: bool,
    buffer_bytes: usize,
    method: BulkMethod,
    /// Sorted buffers not yet written, packed, oldest first.
    held: Vec<Packed>,
    /// Their bytes (arena and operations).
    held_bytes: usize,
    /// At most this many are held (0: every buffer is written at once).
    hold_bytes: usize,
    /// Runs its encoders handed over ([`BulkLoad::encoder`]).
    inbox: Inbox,
    /// Namespaces all of whose writes are held, to write one at a time
    /// before the end, the next last ([`BulkLoad::held_final`]).
    early: Vec<usize>,
}

impl Drop for BulkLoad {
    /// Encoders still open never wait for a load that is gone.
    fn drop(&mut self) {
        self.inbox.close();
    }
}

impl std::fmt::Debug for BulkLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkLoad")
            .field("store", &self.store)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Starts a bulk load into this state, which must be empty (no commit
    /// ever). See [`BulkLoad`].
    pub fn bulk_load(&self) -> Result<BulkLoad, StoreError> {
        let buffer = match self.engine() {
            super::Engine::Fjall => DEFAULT_BUFFER_BYTES,
            super::Engine::Sled => SLED_BUFFER_BYTES,
        };
        let hold = self.inner.bulk_hold_bytes;
        self.bulk_load_with(BulkMethod::default(), buffer, hold)
    }

    /// [`Store::bulk_load`] with the way chunks reach fjall, the bytes
    /// buffered between sorts and the sorted bytes held before a write
    /// (for benchmarks and tests).
    pub fn bulk_load_with(
        &self,
        method: BulkMethod,
        buffer_bytes: usize,
        hold_bytes: usize,
    ) -> Result<BulkLoad, StoreError> {
        let refuse = |detail: String| StoreError::BulkLoad {
            path: self.inner.path.clone(),
            detail,
        };
        // Hold the commit lock so no commit slips in between the check and
        // the flag.
        let _counters = self
            .inner
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.commit_count() != 0 {
            return Err(refuse(format!(
                "a bulk load needs an empty state, and this one holds {} commits (continue it with commits instead)",
                self.commit_count()
            )));
        }
        if self
            .inner
            .bulk
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(refuse(
                "a bulk load into this state is already running or was interrupted (reopen the state to wipe it)".to_string(),
            ));
        }
        if let Err(e) = layout::write_bulk_marker(&self.inner.path) {
            self.inner.bulk.store(false, Ordering::Release);
            return Err(e);
        }
        Ok(BulkLoad {
            store: self.clone(),
            plan: Plan::new(self),
            counters: BTreeMap::new(),
            positions: BTreeMap::new(),
            wrote: false,
            buffer_bytes: buffer_bytes.max(1),
            method,
            held: Vec::new(),
            held_bytes: 0,
            hold_bytes,
            // Runs waiting: about one buffer, what the writer's backlog
            // let wait before encoders moved to the workers.
            inbox: Inbox::with_bound(buffer_bytes.max(1)),
            early: Vec::new(),
        })
    }
}

impl BulkLoad {
    /// Adds one chunk: the same arguments and meaning as
    /// [`Store::commit`], except that nothing is visible or durable before
    /// [`BulkLoad::finish`]. A later chunk overrides an earlier one for the
    /// same key; within a chunk the last change of a key wins.
    pub fn write(
        &mut self,
        changes: &[Change],
        dead_letters: &[DeadLetter],
        progress: &Progress,
    ) -> Result<(), StoreError> {
        self.take_inbox()?;
        let store = &self.store;
        self.plan.changes(store, changes)?;
        let committed = BTreeMap::new();
        for (name, p) in &progress.dataflows {
            add_progress(counters_of(&mut self.counters, &committed, name), p);
        }
        for d in dead_letters {
            let c = counters_of(&mut self.counters, &committed, &d.dataflow);
            let seq = c.next_dead_letter;
            c.next_dead_letter = c.next_dead_letter.saturating_add(1);
            c.dead_letters = c.dead_letters.saturating_add(1);
            self.plan.dead_letter(store, d, seq)?;
        }
        for ((dataflow, partition), pos) in &progress.positions {
            self.positions
                .insert((dataflow.clone(), partition.clone()), *pos);
        }
        self.wrote |= !changes.is_empty()
            || !dead_letters.is_empty()
            || !progress.dataflows.is_empty()
            || !progress.positions.is_empty();
        if self.plan.set.arena.len() >= self.buffer_bytes {
            self.write_buffer()?;
        }
        Ok(())
    }

    /// An encoder for a share of this load's changes, to run on another
    /// thread ([`Encoder`]); `shares` encoders
    /// together buffer about what this load buffers.
    pub fn encoder(&self, shares: usize) -> Encoder {
        Encoder::new(&self.store, &self.inbox, self.buffer_bytes / shares.max(1))
    }

    /// Takes in the runs the encoders handed over (as every write does);
    /// encoders wait while the runs not taken in pass the load's buffer
    /// size, so whoever owns the load calls this often.
    pub fn take_in(&mut self) -> Result<(), StoreError> {
        self.take_inbox()
    }

    /// Nobody will take the encoders' runs in any more (a run that failed):
    /// encoders never wait for it.
    pub fn close_inbox(&self) {
        self.inbox.close();
    }

    /// Time the encoders spent encoding, sorting and packing so far.
    pub fn encoders_busy(&self) -> Duration {
        self.inbox.busy()
    }

    /// Takes in the runs the encoders handed over, in that order, after the
    /// writes buffered so far; fails with an encoder's error.
    fn take_inbox(&mut self) -> Result<(), StoreError> {
        for (mut packed, names) in self.inbox.take()? {
            if packed.size().0 == 0 {
                continue;
            }
            let map = self.plan.adopt(&self.store, &names)?;
            packed.renumber(&map);
            self.wrote = true;
            self.hold(packed)?;
        }
        Ok(())
    }

    /// Sorts the buffered writes and holds them, or hands them to the
    /// engine when there is no room to hold them.
    fn write_buffer(&mut self) -> Result<(), StoreError> {
        if self.plan.set.ops.is_empty() {
            self.plan.set.clear();
            return Ok(());
        }
        self.plan.set.normalize();
        if self.hold_bytes == 0 {
            self.write_now(&self.plan.set)?;
        } else {
            let packed = Packed::of(&self.plan.set).map_err(|e| self.store.engine_err(e))?;
            self.hold(packed)?;
        }
        self.plan.set.clear();
        Ok(())
    }

    /// Holds a sorted buffer, and writes the held ones once they reach the
    /// room to hold them; with no room, writes it at once.
    fn hold(&mut self, packed: Packed) -> Result<(), StoreError> {
        if self.hold_bytes == 0 {
            return self.write_now(&packed.to_set());
        }
        self.held_bytes += packed.held_bytes();
        self.held.push(packed);
        if self.held_bytes >= self.hold_bytes {
            self.write_held()?;
        }
        Ok(())
    }

    /// Hands a normalized set to the engine.
    fn write_now(&self, set: &WriteSet) -> Result<(), StoreError> {
        let (keys, bytes) = set.size();
        let started = Instant::now();
        let inner = &self.store.inner;
        inner
            .db
            .bulk_write(&self.plan.ns, set, self.method)
            .map_err(|e| self.store.engine_err(e))?;
        inner.stats.add(keys, bytes, started.elapsed());
        Ok(())
    }

    /// Writes the held buffers: merged and ingested, one run per namespace
    /// on fjall; as chunks in order on sled, when the method asks for
    /// batches, or when they are too small for ingestion to pay.
    fn write_held(&mut self) -> Result<(), StoreError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let inner = &self.store.inner;
        let db = &inner.db;
        let ns = &self.plan.ns;
        let written = if self.ingests_held() {
            db.ingest_merged(ns, &self.held)
        } else {
            self.held.iter().try_fold((0, 0), |(keys, bytes), set| {
                db.bulk_write(ns, &set.to_set(), self.method)?;
                let (k, b) = set.size();
                Ok((keys + k, bytes + b))
            })
        };
        let (keys, bytes) = written.map_err(|e| self.store.engine_err(e))?;
        let took = started.elapsed();
        inner.stats.add(keys, bytes, took);
        tracing::debug!(
            buffers = self.held.len(),
            held_mib = self.held_bytes >> 20,
            keys,
            ms = took.as_millis() as u64,
            "bulk load: held buffers merged and written"
        );
        self.held.clear();
        self.held_bytes = 0;
        // What was queued to be written early has just been written.
        self.early.clear();
        Ok(())
    }

    /// Whether what is held is ingested (fjall, and the method ingests
    /// that much) rather than written as batches.
    fn ingests_held(&self) -> bool {
        self.store.engine() == super::Engine::Fjall && self.method.ingests(self.held_bytes)
    }

    /// Everything handed to the load so far holds every write its
    /// namespaces will get (a replay's folds' records are all in; what
    /// follows is identity's): on fjall, queues those namespaces to be
    /// merged and ingested one at a time ([`BulkLoad::write_early`]) while
    /// the rest is computed. A namespace written again later gets another
    /// run, which [`BulkLoad::finish`] merges.
    pub fn held_final(&mut self) -> Result<(), StoreError> {
        self.take_inbox()?;
        self.write_buffer()?;
        if !self.ingests_held() {
            return Ok(());
        }
        // Popped smallest first: each is soon written, and the large ones
        // are left for the end, side by side.
        self.early = by_size(&self.held).into_iter().map(|(n, _)| n).collect();
        Ok(())
    }

    /// Whether namespaces queued by [`BulkLoad::held_final`] wait.
    pub fn writes_early(&self) -> bool {
        !self.early.is_empty()
    }

    /// Merges and ingests the next namespace [`BulkLoad::held_final`]
    /// queued, on the calling thread (one namespace: the caller looks at
    /// its messages in between).
    pub fn write_early(&mut self) -> Result<(), StoreError> {
        let Some(n) = self.early.pop() else {
            return Ok(());
        };
        let started = Instant::now();
        let inner = &self.store.inner;
        let (keys, bytes) = inner
            .db
            .ingest_merged_one(&self.plan.ns, &self.held, n)
            .map_err(|e| self.store.engine_err(e))?;
        for run in &mut self.held {
            run.forget(n);
        }
        let took = started.elapsed();
        inner.stats.add(keys, bytes, took);
        tracing::debug!(
            namespace = n,
            keys,
            ms = took.as_millis() as u64,
            left = self.early.len(),
            "bulk load: namespace written early"
        );
        Ok(())
    }

    /// Writes the rest, the counters, positions and commit count, makes the
    /// whole load durable and removes the marker. The state then holds one
    /// commit (none if nothing was written).
    pub fn finish(mut self) -> Result<(), StoreError> {
        let open = self.inbox.open_encoders();
        if open > 0 {
            return Err(StoreError::EncodersOpen {
                path: self.store.inner.path.clone(),
                open,
            });
        }
        self.take_inbox()?;
        self.write_buffer()?;
        self.plan.set = Default::default();
        self.write_held()?;
        let store = self.store.clone();
        let inner = &store.inner;
        let started = Instant::now();
        let merged = inner
            .db
            .merge_runs(&self.plan.ns)
            .map_err(|e| store.engine_err(e))?;
        let took = started.elapsed();
        if merged > 0 {
            inner.stats.add_merge(took);
        }
        tracing::debug!(
            namespaces = merged,
            ms = took.as_millis() as u64,
            "bulk load: sorted runs merged"
        );
        let mut plan = Plan::new(&store);
        for (name, c) in &self.counters {
            plan.counters(name, c)?;
        }
        for ((dataflow, partition), pos) in &self.positions {
            plan.position(dataflow, partition, *pos);
        }
        let commits = u64::from(self.wrote);
        if self.wrote {
            plan.commit_count(commits);
        }
        plan.set.normalize();
        let meta = super::Meta {
            dataflows: self
                .counters
                .iter()
                .map(|(name, c)| (name.to_string(), c.into()))
                .collect(),
            positions: self.positions.clone(),
        };
        let mut counters = inner.counters.lock().unwrap_or_else(|p| p.into_inner());
        {
            let _exclusive = store.gate_exclusive();
            inner
                .db
                .write(&plan.ns, &plan.set)
                .map_err(|e| store.engine_err(e))?;
            inner.db.flush().map_err(|e| store.engine_err(e))?;
            layout::record_durable(&inner.path, commits)?;
            layout::remove_bulk_marker(&inner.path)?;
            store.publish(meta, commits);
        }
        counters.dataflows = std::mem::take(&mut self.counters);
        inner.bulk.store(false, Ordering::Release);
        Ok(())
    }
}
