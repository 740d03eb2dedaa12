//! A bulk load's changes encoded on threads other than the one that owns
//! the load: an [`Encoder`] (`BulkLoad::encoder`) encodes a share of them
//! exactly as the load encodes its own (`writer::Plan`), sorts and packs
//! them, on the thread that produced them (in a replay, each worker's).
//!
//! Invariant: everything an encoder is given reaches the load's [`Inbox`]
//! in the order given, in sorted runs handed over whole: at its size, and
//! when it is dropped (so what it holds is never lost, only late); the load
//! takes the inbox in at its next write and at its finish, and refuses to
//! finish while an encoder is open. An encoder's first error is the load's:
//! the load fails with it. Of a key that several encoders write, the run
//! handed over last wins: callers keep their encoders' keys apart.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::engine::Packed;
use super::writer::Plan;
use super::{Family, Store, StoreError};
use crate::model::Change;

/// A share of a bulk load's changes, encoded, sorted and packed on the
/// thread that calls [`Encoder::encode`] (see the module doc).
pub struct Encoder {
    store: Store,
    plan: Plan,
    /// Bytes of keys and values buffered before a hand-over.
    set_bytes: usize,
    inbox: Arc<Mutex<Handover>>,
}

/// What a load's encoders handed over and it has not taken in yet.
#[derive(Default)]
pub(super) struct Inbox(Arc<Mutex<Handover>>);

#[derive(Default)]
struct Handover {
    /// Sorted runs in the order handed over, each with the names of the
    /// namespaces its indexes stand for.
    runs: Vec<(Packed, Namespaces)>,
    /// The first error of an encoder.
    failed: Option<StoreError>,
    /// Time the encoders spent encoding, sorting and packing so far.
    busy: Duration,
}

/// A plan's dynamic namespaces by name, with their indexes.
pub(super) type Namespaces = BTreeMap<(Family, CompactString), usize>;

/// An encoder failed; its load fails with the reason (at its finish, or
/// its next write).
#[derive(Debug, thiserror::Error)]
#[error("encoding a share of the bulk load failed (the load reports why)")]
pub struct EncodeFailed;

impl Encoder {
    pub(super) fn new(store: &Store, inbox: &Inbox, set_bytes: usize) -> Encoder {
        Encoder {
            store: store.clone(),
            plan: Plan::new(store),
            set_bytes: set_bytes.max(1),
            inbox: inbox.0.clone(),
        }
    }

    /// Encodes `changes`, and hands what is buffered over, sorted and
    /// packed, once it holds the encoder's size. An error is kept for the
    /// load, which fails with it.
    pub fn encode(&mut self, changes: &[Change]) -> Result<(), EncodeFailed> {
        let started = Instant::now();
        let mut done = self.plan.changes(&self.store, changes);
        if done.is_ok() && self.plan.set.arena.len() >= self.set_bytes {
            done = self.hand_over();
        }
        self.settle(started, done)
    }

    /// Sorts and packs what is buffered and puts it in the load's inbox.
    fn hand_over(&mut self) -> Result<(), StoreError> {
        if self.plan.set.ops.is_empty() {
            self.plan.set.clear();
            return Ok(());
        }
        self.plan.set.normalize();
        let packed = Packed::of(&self.plan.set).map_err(|e| self.store.engine_err(e))?;
        self.plan.set.clear();
        let names = self.plan.dynamic().clone();
        lock(&self.inbox).runs.push((packed, names));
        Ok(())
    }

    /// Counts the time since `started` and keeps an error for the load
    /// (the first of any of its encoders).
    fn settle(&self, started: Instant, done: Result<(), StoreError>) -> Result<(), EncodeFailed> {
        let mut inbox = lock(&self.inbox);
        inbox.busy += started.elapsed();
        match done {
            Ok(()) => Ok(()),
            Err(e) => {
                inbox.failed.get_or_insert(e);
                Err(EncodeFailed)
            }
        }
    }
}

impl Drop for Encoder {
    /// Hands over what is still buffered (its error, if any, is the
    /// load's).
    fn drop(&mut self) {
        let started = Instant::now();
        let done = self.hand_over();
        let _ = self.settle(started, done);
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("set_bytes", &self.set_bytes)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Everything handed over since the last call, in order; an encoder's
    /// error instead, if one failed.
    pub fn take(&self) -> Result<Vec<(Packed, Namespaces)>, StoreError> {
        let mut inbox = lock(&self.0);
        match inbox.failed.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut inbox.runs)),
        }
    }

    /// How many encoders are still open.
    pub fn open_encoders(&self) -> usize {
        Arc::strong_count(&self.0) - 1
    }

    /// Time the encoders spent so far.
    pub fn busy(&self) -> Duration {
        lock(&self.0).busy
    }
}

/// The inbox, also after a thread panicked holding it (every change to it
/// is one push or one take).
fn lock(inbox: &Mutex<Handover>) -> MutexGuard<'_, Handover> {
    inbox.lock().unwrap_or_else(|p| p.into_inner())
}
