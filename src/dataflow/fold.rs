//! The per-record fold: an upsert-style stateful operator that keeps one
//! aggregate per live record of one dataflow (in [`Records`]) and emits, for
//! every time, the records whose aggregate changed.
//!
//! Invariant: ops of a time are applied only once both inputs' frontiers have
//! passed that time (time 0's `Load` ops excepted: see [`LOAD_CHUNK`]),
//! per record in `seq` order, each against the watermark
//! its event saw (its own batch's, raised to the watermark of every earlier
//! time); then every record that the time's final watermark
//! expires is removed. So the state after a time equals the sequential model
//! after the same prefix of events, whatever the batching. Memory grows with
//! live records, not with events: ops are dropped once applied.

use std::collections::BTreeMap;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::REBUILD_TIME;
use super::ops::{Op, OpKind};
use super::records::{Folded, Records};

/// Per partition, the next offset whose effects this process's state does
/// not hold yet (its stored positions). After a restart the sources re-read
/// from the smallest position of any process; an op from an earlier offset
/// is already in this process's state and is skipped, so nothing counts
/// twice even when processes had committed different times.
#[derive(Clone, Debug, Default)]
pub(crate) struct Applied(std::collections::BTreeMap<u32, u64>);

impl Applied {
    pub fn new(next: std::collections::BTreeMap<u32, u64>) -> Applied {
        Applied(next)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn holds(&self, op: &Op) -> bool {
        if matches!(op.kind, OpKind::Load(_)) {
            return false;
        }
        let (part, offset) = super::partition_offset(op.seq);
        self.0.get(&part).is_some_and(|next| offset < *next)
    }
}

/// Records emitted per activation once the inputs are closed.
const END_CHUNK: usize = 16_384;

/// Time 0 is the rebuild: only `Load` ops, one per stored record (replay
/// times start at 1, live times are wall-clock ms). A record's load does not
/// depend on any other op of the time, so they are applied as they arrive,
/// this many at a time, against the watermark known then; the time's own
/// watermark still expires what it ends once time 0 completes. Before, a
/// continuing replay held every stored record as an op until time 0
/// completed: the rebuild alone of a 2M-event state peaked at 1.71 GB, now
/// 1.12 GB (docs/performance.md).
const LOAD_CHUNK: usize = 1024;

/// Applies ops of one time. An op's watermark covers the events before it
/// in its own batch; the batches of earlier times (decoded on any worker)
/// come before it too, so it is raised to `before`, their watermark. Then
/// `after` (the time's own) expires what it ends. Returns the late ops.
fn apply(records: &mut Records, ops: &mut [Op], before: i64, after: i64) -> u64 {
    for op in ops.iter_mut() {
        op.wm = op.wm.max(before);
    }
    records.apply_time(ops, after)
}

/// What waits for a time to complete: a capability to emit at it, its ops,
/// and the largest watermark reported for it.
type Pending = (Option<Capability<u64>>, Vec<Op>, i64);

/// The times waiting to complete, and emptied op buffers to reuse: a
/// time's ops can take megabytes, and fresh buffers cost page faults every
/// time.
#[derive(Default)]
struct Stash {
    times: BTreeMap<u64, Pending>,
    free: Vec<Vec<Op>>,
}

impl Stash {
    /// Time `t`'s slot, made if missing.
    fn slot(&mut self, t: u64) -> &mut Pending {
        let free = &mut self.free;
        self.times
            .entry(t)
            .or_insert_with(|| (None, free.pop().unwrap_or_default(), i64::MIN))
    }

    /// The earliest time, taken out if `complete` says it is.
    fn pop_complete(&mut self, complete: impl Fn(u64) -> bool) -> Option<(u64, Pending)> {
        let (&t, _) = self.times.first_key_value()?;
        if complete(t) {
            self.times.pop_first()
        } else {
            None
        }
    }

    /// Keeps an applied time's buffer for a later time.
    fn recycle(&mut self, mut ops: Vec<Op>) {
        ops.clear();
        self.free.push(ops);
    }
}

/// Builds the fold for one dataflow. `watermarks` carries each source's
/// watermark at the end of a time and is broadcast to every worker. The
/// records a time changed are emitted at the next multiple of `every` (at
/// that time itself when `every` is 1), once each however many times in
/// between changed them; late counts at their own time. With `tally`, each
/// stored record it loads at time 0 is emitted there as
/// [`Folded::Loaded`], for the collector's count (`tally.rs`).
pub(crate) fn fold<'s>(
    ops: StreamVec<'s, u64, Op>,
    watermarks: StreamVec<'s, u64, i64>,
    initial_watermark: i64,
    applied: Applied,
    (every, tally): (u64, bool),
    name: &str,
) -> StreamVec<'s, u64, (Folded, u64, isize)> {
    let exchange = Exchange::new(|op: &Op| op.shard);
    let scope = ops.scope();
    ops.binary_frontier(watermarks, exchange, Pipeline, name, move |_cap, info| {
        let activator = scope.activator_for(info.address);
        let mut records = Records::default();
        let mut stash = Stash::default();
        let mut watermark = initial_watermark;
        // A capability at the last time of the step whose changes are not
        // emitted yet.
        let mut step: Option<Capability<u64>> = None;
        let mut out: Vec<(Folded, u64, isize)> = Vec::new();
        move |(input, frontier), (wms, wm_frontier), output| {
            input.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                let slot = stash.slot(t);
                if slot.0.is_none() {
                    slot.0 = cap.retain_least(output.output_index());
                }
                if tally && t == REBUILD_TIME {
                    output.session(&cap).give_iterator(
                        data.iter()
                            .filter(|op| matches!(op.kind, OpKind::Load(_)))
                            .map(|op| (Folded::Loaded(op.key), 0, 1)),
                    );
                }
                slot.1.append(data);
                if t == REBUILD_TIME
                    && slot.1.len() >= LOAD_CHUNK
                    && slot.1.iter().all(|op| matches!(op.kind, OpKind::Load(_)))
                {
                    // Loads are never late.
                    apply(&mut records, &mut slot.1, watermark, watermark);
                    slot.1.clear();
                }
            });
            wms.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                let slot = stash.slot(t);
                // A time with only a watermark can still expire records:
                // hold a capability for it too.
                if slot.0.is_none() {
                    slot.0 = cap.retain_least(output.output_index());
                }
                for w in data.drain(..) {
                    slot.2 = slot.2.max(w);
                }
            });
            // Process every stashed time that both frontiers have passed, in order.
            while let Some((t, (cap, mut ops, wm))) =
                stash.pop_complete(|t| !frontier.less_equal(&t) && !wm_frontier.less_equal(&t))
            {
                // A time of a later step: the earlier step is complete.
                if let Some(c) = step.take_if(|c| *c.time() < t) {
                    records.take_changes(*c.time(), &mut out, usize::MAX, false);
                    output.session(&c).give_iterator(out.drain(..));
                }
                if !applied.is_empty() {
                    ops.retain(|op| !applied.holds(op));
                }
                let before = watermark;
                watermark = watermark.max(wm);
                let late = apply(&mut records, &mut ops, before, watermark);
                stash.recycle(ops);
                if let Some(cap) = cap {
                    if late > 0 {
                        output.session(&cap).give((Folded::Late(late), t, 1));
                    }
                    if step.is_none() && records.has_changes() {
                        step = Some(cap.delayed(&super::round_up(t, every)));
                    }
                }
            }
            // The step's last time is complete on both inputs.
            if let Some(c) = step
                .take_if(|c| !frontier.less_equal(c.time()) && !wm_frontier.less_equal(c.time()))
            {
                // Once the inputs are closed nothing can come between two
                // chunks: the records of a whole run (a bulk load's step)
                // go out a chunk per activation, never copied all at once.
                let closed = frontier.is_empty() && wm_frontier.is_empty();
                let limit = if closed { END_CHUNK } else { usize::MAX };
                let more = records.take_changes(*c.time(), &mut out, limit, closed);
                output.session(&c).give_iterator(out.drain(..));
                if more {
                    step = Some(c);
                    activator.activate();
                }
            }
        }
    })
}
