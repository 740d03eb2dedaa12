//! The collector: the one sink of a worker. It turns everything bound for the
//! store (folded records, late counts, identity assignments) into
//! `model::Change`s and hands them out one complete time at a time.
//!
//! Invariant: a time's changes are emitted only after the sink's input
//! frontier has passed it, and always before the frontier report that says
//! so (bulk loads: the folds' records, each emitted once, as they come,
//! and [`Emitted::RecordsDone`] once the folds' stream is closed, after the
//! last of them); identity assignments are consolidated per key first, so a
//! reader never sees a half-applied time.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::ops::{Names, RecKey};
use super::records::Folded;
use super::symbols::Sym;
use super::tally::Tallier;
use super::{Emitted, Emitter, REBUILD_TIME, StoreUpdate};
use crate::model::{Change, ClusterOf, DataflowProgress, Progress};

/// Everything that reaches the collector.
#[derive(Clone, Debug)]
pub(crate) enum ToStore {
    /// A folded record of dataflow `usize` (index in the plan).
    Folded(usize, Folded),
    /// Differential updates of identifier -> (cluster, hub).
    Cluster(Sym, (Sym, bool)),
    /// The next position of a source partition of dataflow `usize`, broadcast
    /// to every worker so every process stores every partition's position
    /// with the times it commits.
    Position(usize, String, u64),
}

/// Set by a worker's collector once it has emitted its folds' last
/// records ([`Emitted::RecordsDone`]); read by identity on the same worker
/// (`identity::stitch_at_once`), whose last completion waits for it.
pub(crate) type RecordsOut = Rc<Cell<bool>>;

/// How many emptied buffers the collector keeps for reuse.
const FREE_BUFFERS: usize = 2;

/// The collector of worker `worker`, fed by the folds (`records`) and by
/// identity and the sources' positions (`rest`). With `forward` (replays
/// whose folds emit each changed record once, at the end) the folds'
/// records are emitted as they arrive instead of once their time is
/// complete, and once the folds' stream is closed [`Emitted::RecordsDone`]
/// follows the last of them and `forward` is set (identity's completion
/// waits for it, `identity::stitch_at_once`). With a `tallier` it counts
/// what it emits and the records loaded at time 0, and reports the counts
/// ([`Emitted::Tally`]) just before its last frontier.
pub(crate) fn collect<'s>(
    (records, rest): (
        StreamVec<'s, u64, StoreUpdate>,
        StreamVec<'s, u64, StoreUpdate>,
    ),
    names: Arc<Names>,
    worker: usize,
    (forward, tallier): (Option<RecordsOut>, Option<Rc<RefCell<Tallier>>>),
    emit: Emitter,
) -> StreamVec<'s, u64, ()> {
    records.binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        rest,
        Pipeline,
        Pipeline,
        "collect",
        move |_cap, _info| {
            let mut held = Held::new(forward.is_some());
            let mut reported: Option<u64> = None;
            move |(records, records_frontier), (rest, rest_frontier), _output| {
                let mut tallier = tallier.as_ref().map(|t| t.borrow_mut());
                let mut take = |at: Option<&u64>, data: &mut Vec<StoreUpdate>| {
                    let at = at.copied().unwrap_or(0);
                    held.take(at, data.drain(..), tallier.as_deref_mut());
                };
                records.for_each(|cap, data| take(cap.least(), data));
                rest.for_each(|cap, data| take(cap.least(), data));
                held.emit_forwarded(&names, worker, tallier.as_deref_mut(), &emit);
                // Everything the folds sent is in (their stream closed after
                // it, and a pipeline delivers in order): what may follow is
                // identity's, late counts and positions.
                if let Some(done) = forward.as_ref().filter(|d| !d.get())
                    && records_frontier.is_empty()
                {
                    done.set(true);
                    emit(Emitted::RecordsDone { worker });
                }
                let first = |f: &timely::progress::frontier::MutableAntichain<u64>| {
                    f.frontier().first().copied().unwrap_or(u64::MAX)
                };
                let upto = first(records_frontier).min(first(rest_frontier));
                held.emit_complete(upto, &names, worker, tallier.as_deref_mut(), &emit);
                if reported != Some(upto) {
                    reported = Some(upto);
                    if let Some(t) = tallier.as_ref().filter(|_| upto == u64::MAX) {
                        emit(Emitted::Tally {
                            worker,
                            tally: t.tally(),
                        });
                    }
                    emit(Emitted::Frontier { worker, upto });
                }
            }
        },
    )
}

/// What the collector holds between activations: updates by time until the
/// frontier passes it, and (with `forward`) the folds' records to emit at
/// the end of this activation.
struct Held {
    forward: bool,
    pending: BTreeMap<u64, Vec<(ToStore, isize)>>,
    /// Buffers reused from time to time (see the fold); a few only: a
    /// step's time holds many more updates than the others, and a long free
    /// list would keep that size many times over.
    free: Vec<Vec<(ToStore, isize)>>,
    forwarded: Vec<(ToStore, isize)>,
    /// The time of the last container forwarded from.
    forwarded_at: u64,
}

impl Held {
    fn new(forward: bool) -> Held {
        Held {
            forward,
            pending: BTreeMap::new(),
            free: Vec::new(),
            forwarded: Vec::new(),
            forwarded_at: 0,
        }
    }

    /// Takes one container's updates, whose capability is at `at`.
    fn take(
        &mut self,
        at: u64,
        updates: impl Iterator<Item = (ToStore, u64, isize)>,
        mut tallier: Option<&mut Tallier>,
    ) {
        let before = self.forwarded.len();
        for (x, t, d) in updates {
            if let ToStore::Folded(df, Folded::Loaded(key)) = x {
                if let Some(t) = tallier.as_deref_mut() {
                    t.loaded(df, key);
                }
                continue;
            }
            // Time 0 rebuilds the folds from the store: their records are
            // already stored. Identity's updates at time 0 are kept: in one
            // process they are what the loaded links imply against the
            // stored assignments (`dataflow::rebuild`), usually nothing; in
            // a cluster every assignment comes again, since the process
            // owning an identifier may have committed fewer times than the
            // processes owning its links, and time 0 is the only moment
            // that says what the loaded links imply.
            if t == REBUILD_TIME && !matches!(x, ToStore::Cluster(..)) {
                continue;
            }
            if self.forward && matches!(x, ToStore::Folded(_, Folded::Changed { .. })) {
                self.forwarded.push((x, d));
                continue;
            }
            let free = &mut self.free;
            self.pending
                .entry(t)
                .or_insert_with(|| free.pop().unwrap_or_default())
                .push((x, d));
        }
        if self.forwarded.len() > before {
            self.forwarded_at = at;
        }
    }

    /// Emits the records forwarded in this activation: once per
    /// activation, not per container (each a few hundred records), since
    /// every message costs the writer a wake-up.
    fn emit_forwarded(
        &mut self,
        names: &Names,
        worker: usize,
        tallier: Option<&mut Tallier>,
        emit: &Emitter,
    ) {
        if self.forwarded.is_empty() {
            return;
        }
        let (changes, _) = to_changes(self.forwarded.drain(..), names, tallier);
        emit(Emitted::Data {
            worker,
            epoch: self.forwarded_at,
            changes,
            dead_letters: Vec::new(),
            progress: Progress::default(),
        });
    }

    /// Emits every held time before `upto`, in order.
    fn emit_complete(
        &mut self,
        upto: u64,
        names: &Names,
        worker: usize,
        mut tallier: Option<&mut Tallier>,
        emit: &Emitter,
    ) {
        while let Some((&t, _)) = self.pending.first_key_value() {
            if t >= upto {
                break;
            }
            let Some((t, mut updates)) = self.pending.pop_first() else {
                break;
            };
            let (changes, progress) = to_changes(updates.drain(..), names, tallier.as_deref_mut());
            if self.free.len() < FREE_BUFFERS {
                self.free.push(updates);
            }
            if !changes.is_empty() || progress != Progress::default() {
                emit(Emitted::Data {
                    worker,
                    epoch: t,
                    changes,
                    dead_letters: Vec::new(),
                    progress,
                });
            }
        }
    }
}

fn to_changes(
    updates: impl ExactSizeIterator<Item = (ToStore, isize)>,
    names: &Names,
    mut tallier: Option<&mut Tallier>,
) -> (Vec<Change>, Progress) {
    let mut changes = Vec::with_capacity(updates.len());
    let mut progress = Progress::default();
    // (identifier, (cluster, hub), diff), consolidated below.
    let mut clusters: Vec<(Sym, (Sym, bool), isize)> = Vec::new();
    for (u, d) in updates {
        match u {
            // Taken by the collector before (never reaches here).
            ToStore::Folded(_, Folded::Loaded(_)) => {}
            ToStore::Folded(df, Folded::Late(n)) => {
                let p: &mut DataflowProgress = progress
                    .dataflows
                    .entry(names.dataflows[df].clone())
                    .or_default();
                p.late += n;
            }
            ToStore::Folded(
                df,
                Folded::Changed {
                    key,
                    new,
                    old_first_seen,
                    existed,
                },
            ) => {
                if let Some(t) = tallier.as_deref_mut() {
                    t.record(df, key, new.is_some(), existed);
                }
                let dataflow = names.dataflows[df].clone();
                changes.push(match key {
                    RecKey::Node(id) => Change::Node {
                        id: id.ident(),
                        dataflow,
                        record: new,
                    },
                    RecKey::Edge(t, from, to) => Change::Edge {
                        reverse: names.reverse.get(usize::from(t)).copied().unwrap_or(false),
                        edge_type: names
                            .edge_types
                            .get(usize::from(t))
                            .cloned()
                            .unwrap_or_default(),
                        from: from.ident(),
                        to: to.ident(),
                        dataflow,
                        record: new,
                    },
                    RecKey::Link(a, b) => Change::Link {
                        a: a.ident(),
                        b: b.ident(),
                        dataflow,
                        // A link's old first_seen is known when it was live.
                        mirrored: old_first_seen.is_some(),
                        record: new,
                    },
                });
            }
            ToStore::Cluster(id, c) => clusters.push((id, c, d)),
            ToStore::Position(df, key, next) => {
                let e = progress
                    .positions
                    .entry((names.dataflows[df].clone(), key))
                    .or_insert(next);
                *e = (*e).max(next);
            }
        }
    }
    cluster_changes(&mut clusters, tallier, &mut changes);
    (changes, progress)
}

/// The store's changes for identity's updates of one time (identifier,
/// (cluster, hub), diff): per identifier, the memberships it left and took
/// and its assignment (or its removal when it has none left).
fn cluster_changes(
    clusters: &mut [(Sym, (Sym, bool), isize)],
    mut tallier: Option<&mut Tallier>,
    changes: &mut Vec<Change>,
) {
    // Per identifier, its clusters in order with their net diffs: the ones
    // it left (net -1) and joined (net +1).
    clusters.sort_unstable_by_key(|&(id, c, _)| (id, c));
    for updates in clusters.chunk_by(|a, b| a.0 == b.0) {
        let id = updates[0].0;
        let (mut old, mut new) = (Vec::new(), Vec::new());
        for same in updates.chunk_by(|a, b| a.1 == b.1) {
            match same.iter().map(|u| u.2).sum::<isize>().signum() {
                -1 => old.push(same[0].1),
                1 => new.push(same[0].1),
                _ => {}
            }
        }
        if let Some(t) = tallier.as_deref_mut() {
            t.assignment(id, &old, &new);
        }
        let old: Vec<ClusterOf> = old.into_iter().map(cluster_of).collect();
        let new: Vec<ClusterOf> = new.into_iter().map(cluster_of).collect();
        let id = id.ident();
        for c in &old {
            if !new.iter().any(|n| n.cluster == c.cluster) {
                changes.push(Change::Member {
                    cluster: c.cluster.clone(),
                    member: id.clone(),
                    present: false,
                });
            }
        }
        for c in &new {
            changes.push(Change::Member {
                cluster: c.cluster.clone(),
                member: id.clone(),
                present: true,
            });
        }
        if let Some(c) = new.into_iter().next() {
            changes.push(Change::Cluster {
                id,
                cluster: Some(c),
            });
        } else if !old.is_empty() {
            changes.push(Change::Cluster { id, cluster: None });
        }
    }
}

fn cluster_of((cluster, hub): (Sym, bool)) -> ClusterOf {
    ClusterOf {
        cluster: cluster.ident(),
        hub,
    }
}
