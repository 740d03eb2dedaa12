//! Where a run's time goes, by stage: decoding (the driver), the folds (one
//! region per definition), identity (its region) and the collector, summed
//! over the process's workers.
//!
//! Invariant: stage times are wall time spent *inside* the stage on a worker
//! thread (a region's time includes its operators'), read from timely's own
//! operator scheduling log and the driver's clock, so they never overlap
//! each other and never include time a worker spent waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

/// Cumulative stage times of a run, shared by its workers.
#[derive(Debug, Default)]
pub struct StageTimes {
    decode_ns: AtomicU64,
    fold_ns: AtomicU64,
    identity_ns: AtomicU64,
    collect_ns: AtomicU64,
}

/// A reading of [`StageTimes`], in seconds summed over workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageSeconds {
    /// Parsing events and turning them into ops.
    pub decode: f64,
    /// The per-record folds (every definition's region).
    pub fold: f64,
    /// Identity stitching (its region).
    pub identity: f64,
    /// Turning folded records and clusters into store changes.
    pub collect: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    Decode,
    Fold,
    Identity,
    Collect,
}

impl StageTimes {
    pub(crate) fn add(&self, stage: Stage, d: Duration) {
        let counter = match stage {
            Stage::Decode => &self.decode_ns,
            Stage::Fold => &self.fold_ns,
            Stage::Identity => &self.identity_ns,
            Stage::Collect => &self.collect_ns,
        };
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(ns, Ordering::Relaxed);
    }

    /// The times so far.
    pub fn seconds(&self) -> StageSeconds {
        let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / 1e9;
        StageSeconds {
            decode: s(&self.decode_ns),
            fold: s(&self.fold_ns),
            identity: s(&self.identity_ns),
            collect: s(&self.collect_ns),
        }
    }
}

/// Registers a timely logger on this worker that adds the scheduling time
/// of the dataflow's top-level regions and collector to `times`. Call
/// before the dataflow is built (operators announce themselves then).
/// `folds` are the definitions' region names.
pub(crate) fn install(
    worker: &mut timely::worker::Worker,
    times: Arc<StageTimes>,
    folds: Vec<String>,
) {
    let Some(mut register) = worker.log_register() else {
        return;
    };
    // Operator id → its stage; operator id → when its current run started.
    let mut stage_of: BTreeMap<usize, Stage> = BTreeMap::new();
    let mut started: BTreeMap<usize, Duration> = BTreeMap::new();
    register.insert::<TimelyEventBuilder, _>("timely", move |_now, batch| {
        let Some(events) = batch else { return };
        for (at, event) in events.iter() {
            match event {
                TimelyEvent::Operates(op) if op.addr.len() == 2 => {
                    let stage = if op.name == "identity" {
                        Some(Stage::Identity)
                    } else if op.name == "collect" {
                        Some(Stage::Collect)
                    } else if folds.contains(&op.name) {
                        Some(Stage::Fold)
                    } else {
                        None
                    };
                    if let Some(stage) = stage {
                        stage_of.insert(op.id, stage);
                    }
                }
                TimelyEvent::Schedule(s) if stage_of.contains_key(&s.id) => match s.start_stop {
                    StartStop::Start => {
                        started.insert(s.id, *at);
                    }
                    StartStop::Stop => {
                        if let (Some(from), Some(stage)) =
                            (started.remove(&s.id), stage_of.get(&s.id))
                        {
                            times.add(*stage, at.saturating_sub(from));
                        }
                    }
                },
                _ => {}
            }
        }
    });
}
