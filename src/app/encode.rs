//! A bulk load's changes encoded on the workers' threads.
//!
//! In a replay into an empty state each worker's changes go, on that
//! worker's thread, to a `store::Encoder` of its own, which encodes, sorts
//! and packs them and hands the sorted runs to the load; the writer's thread
//! only takes the runs in and merges them at the end. Before, the writer
//! encoded, sorted and packed every change itself while the workers, done
//! with their own part, waited for it (docs/performance.md).
//!
//! Invariant: a worker's changes reach its encoder in the order it emits
//! them, and its encoder is dropped (handing over what it still holds)
//! before its last frontier report goes on, so the load has every run once
//! every worker has finished; likewise it hands over what it holds before
//! the worker's `RecordsDone` goes on, so the load has every run of the
//! folds' records once every worker has said so. Every record has one owner
//! worker, which emits all of its changes, so no two encoders write the
//! same key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::dataflow::Emitted;
use crate::model::Progress;
use crate::store::Encoder;

/// One encoder per worker of this process (`None` once it is finished).
pub(super) struct Encoders {
    slots: Vec<Mutex<Option<Encoder>>>,
    /// Set when an encoder fails: the run stops, and the write fails with
    /// the encoder's error.
    stop: Arc<AtomicBool>,
}

impl Encoders {
    /// `encoders[i]` is worker `i`'s.
    pub fn new(encoders: Vec<Encoder>, stop: Arc<AtomicBool>) -> Encoders {
        Encoders {
            slots: encoders.into_iter().map(|e| Mutex::new(Some(e))).collect(),
            stop,
        }
    }

    /// What of `e` still goes to the writer: with its changes encoded, a
    /// data message's dead letters and progress (nothing if it has
    /// neither), or `e` as it is. A worker's last frontier report first
    /// finishes its encoder.
    pub fn encode(&self, e: Emitted) -> Option<Emitted> {
        match e {
            Emitted::Data {
                worker,
                epoch,
                changes,
                dead_letters,
                progress,
            } if !changes.is_empty() => {
                let mut slot = self
                    .slots
                    .get(worker)
                    .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
                // Not a worker of this process, or one that said it was
                // finished: the writer writes them itself.
                let Some(encoder) = slot.as_mut().and_then(|s| s.as_mut()) else {
                    return Some(Emitted::Data {
                        worker,
                        epoch,
                        changes,
                        dead_letters,
                        progress,
                    });
                };
                if encoder.encode(&changes).is_err() {
                    self.stop.store(true, Ordering::Relaxed);
                }
                // Each message wakes the writer: only what it still needs.
                (!dead_letters.is_empty() || progress != Progress::default()).then_some(
                    Emitted::Data {
                        worker,
                        epoch,
                        changes: Vec::new(),
                        dead_letters,
                        progress,
                    },
                )
            }
            // The worker's records are all in: what its encoder holds goes
            // to the load before the writer hears so.
            Emitted::RecordsDone { worker } => {
                let mut slot = self
                    .slots
                    .get(worker)
                    .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()));
                if let Some(encoder) = slot.as_mut().and_then(|s| s.as_mut())
                    && encoder.hand_over_now().is_err()
                {
                    self.stop.store(true, Ordering::Relaxed);
                }
                Some(e)
            }
            Emitted::Frontier {
                worker,
                upto: u64::MAX,
            } => {
                if let Some(slot) = self.slots.get(worker) {
                    // Dropped here, on the worker's thread: it sorts and
                    // hands over the rest.
                    drop(slot.lock().unwrap_or_else(|p| p.into_inner()).take());
                }
                Some(e)
            }
            e => Some(e),
        }
    }

    /// Finishes every encoder still open (a run that stopped before its
    /// workers' last reports).
    pub fn finish(&self) {
        for slot in &self.slots {
            drop(slot.lock().unwrap_or_else(|p| p.into_inner()).take());
        }
    }
}
