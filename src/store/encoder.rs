//! A bulk load's changes encoded on threads other than the one that owns
//! the load: an [`Encoder`] (`BulkLoad::encoder`) encodes a share of them
//! exactly as the load encodes its own (`writer::Plan`), sorts and packs
//! them, on the thread that produced them (in a replay, each worker's).
//!
//! Invariant: everything an encoder is given reaches the load's [`Inbox`]
//! in the order given, in sorted runs handed over whole: at its size, and
//! when it is dropped (so what it holds is never lost, only late); the load
//! takes the inbox in at its next write, when asked (`BulkLoad::take_in`)
//! and at its finish, and refuses to finish while an encoder is open. An
//! encoder that hands a run over while the inbox holds more than its bound
//! waits until the load takes it in (or is gone): the runs waiting are
//! bounded, as the writer's backlog bounded the changes waiting before;
//! dropping never waits. An encoder's first error is the load's:
//! the load fails with it. Of a key that several encoders write, the run
//! handed over last wins: callers keep their encoders' keys apart.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::engine::Packed;
use super::writer::{Namespaces, Plan};
use super::{Store, StoreError};
use crate::model::Change;

/// A share of a bulk load's changes, encoded, sorted and packed on the
/// thread that calls [`Encoder::encode`] (see the module doc).
pub struct Encoder {
    store: Store,
    plan: Plan,
    /// Bytes of keys and values buffered before a hand-over.
    set_bytes: usize,
    inbox: Arc<Shared>,
}

/// What a load's encoders handed over and it has not taken in yet.
#[derive(Default)]
pub(super) struct Inbox(Arc<Shared>);

#[derive(Default)]
struct Shared {
    handover: Mutex<Handover>,
    /// Signalled when the inbox is taken in or closed.
    taken: Condvar,
}

#[derive(Default)]
struct Handover {
    /// The runs' bytes (arena and writes).
    bytes: usize,
    /// Past this an encoder waits before handing a run over (0: never).
    bound: usize,
    /// The load is gone: nobody takes the inbox in any more.
    closed: bool,
    /// Sorted runs in the order handed over, each with the names of the
    /// namespaces its indexes stand for.
    runs: Vec<(Packed, Namespaces)>,
    /// The first error of an encoder.
    failed: Option<StoreError>,
    /// Time the encoders spent encoding, sorting and packing so far.
    busy: Duration,
}

/// An encoder failed; its load fails with the reason (at its finish, or
/// its next write).
#[derive(Debug, thiserror::Error)]
#[error("encoding a share of the bulk load failed (the load reports why)")]
pub struct EncodeFailed;

impl Encoder {
    pub(super) fn new(store: &Store, inbox: &Inbox, set_bytes: usize) -> Encoder {
        let mut plan = Plan::new(store);
        // A hand-over comes once the set passes its size, after the chunk
        // that took it there: room for a quarter more.
        plan.set
            .reserve_for(set_bytes.saturating_add(set_bytes / 4));
        Encoder {
            store: store.clone(),
            plan,
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
            done = self.hand_over(true);
        }
        self.settle(started, done)
    }

    /// Hands over what is buffered now, sorted and packed, without waiting
    /// (as a drop does): for a share whose changes so far are all of some
    /// namespaces' (`BulkLoad::held_final`). An error is kept for the
    /// load, which fails with it.
    pub fn hand_over_now(&mut self) -> Result<(), EncodeFailed> {
        let started = Instant::now();
        let done = self.hand_over(false);
        self.settle(started, done)
    }

    /// Sorts and packs what is buffered and puts it in the load's inbox,
    /// first waiting (when `wait`) while the inbox is past its bound.
    fn hand_over(&mut self, wait: bool) -> Result<(), StoreError> {
        if self.plan.set.ops.is_empty() {
            self.plan.set.clear();
            return Ok(());
        }
        self.plan.set.normalize();
        let packed = Packed::of(&self.plan.set).map_err(|e| self.store.engine_err(e))?;
        self.plan.set.clear();
        let names = self.plan.dynamic();
        let mut inbox = lock(&self.inbox);
        if wait {
            while inbox.bound > 0 && inbox.bytes > inbox.bound && !inbox.closed {
                inbox = self
                    .inbox
                    .taken
                    .wait_timeout(inbox, WAIT_AT_MOST)
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }
        inbox.bytes += packed.held_bytes();
        inbox.runs.push((packed, names));
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
        let _ = self.hand_over_now();
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
    /// An inbox past whose `bound` bytes an encoder waits (0: never).
    pub fn with_bound(bound: usize) -> Inbox {
        let inbox = Inbox::default();
        lock(&inbox.0).bound = bound;
        inbox
    }

    /// Everything handed over since the last call, in order; an encoder's
    /// error instead, if one failed (what was handed over is then dropped).
    /// Either way the encoders waiting go on.
    pub fn take(&self) -> Result<Vec<(Packed, Namespaces)>, StoreError> {
        let mut inbox = lock(&self.0);
        let runs = std::mem::take(&mut inbox.runs);
        inbox.bytes = 0;
        let failed = inbox.failed.take();
        drop(inbox);
        self.0.taken.notify_all();
        match failed {
            Some(e) => Err(e),
            None => Ok(runs),
        }
    }

    /// Nobody takes the inbox in any more: encoders never wait for it.
    pub fn close(&self) {
        lock(&self.0).closed = true;
        self.0.taken.notify_all();
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

/// The longest an encoder waits for its load to take the inbox in before
/// it looks again (it is woken when the inbox is taken in or closed).
const WAIT_AT_MOST: Duration = Duration::from_millis(100);

/// The inbox, also after a thread panicked holding it (every change to it
/// is one push or one take).
fn lock(inbox: &Shared) -> MutexGuard<'_, Handover> {
    inbox.handover.lock().unwrap_or_else(|p| p.into_inner())
}
