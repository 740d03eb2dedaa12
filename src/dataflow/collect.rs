//! The collector: the one sink of a worker. It turns everything bound for the
//! store (folded records, late counts, identity assignments) into
//! `model::Change`s and hands them out one complete time at a time.
//!
//! Invariant: a time's changes are emitted only after the sink's input
//! frontier has passed it, and always before the frontier report that says
//! so (bulk loads: the folds' records, each emitted once, as they come);
//! identity assignments are consolidated per key first, so a reader never sees
//! a half-applied time.

use std::cell::RefCell;
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
use super::{Emitted, Emitter, REBUILD_TIME};
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

/// How many emptied buffers the collector keeps for reuse.
const FREE_BUFFERS: usize = 2;

/// The collector of worker `worker`. With `forward` (replays whose folds
/// emit each changed record once, at the end) the folds' records are
/// emitted as they arrive instead of once their time is complete. With a
/// `tallier` it counts what it emits and the records loaded at time 0, and
/// reports the counts ([`Emitted::Tally`]) just before its last frontier.
pub(crate) fn collect<'s>(
    stream: StreamVec<'s, u64, (ToStore, u64, isize)>,
    names: Arc<Names>,
    worker: usize,
    (forward, tallier): (bool, Option<Rc<RefCell<Tallier>>>),
    emit: Emitter,
) -> StreamVec<'s, u64, ()> {
    stream.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Pipeline,
        "collect",
        move |_cap, _info| {
            let mut pending: BTreeMap<u64, Vec<(ToStore, isize)>> = BTreeMap::new();
            let mut reported: Option<u64> = None;
            // Buffers reused from time to time (see the fold); a few only:
            // a step's time holds many more updates than the others, and a
            // long free list would keep that size many times over.
            let mut free: Vec<Vec<(ToStore, isize)>> = Vec::new();
            let mut forwarded: Vec<(ToStore, isize)> = Vec::new();
            move |(input, frontier), _output| {
                let mut tallier = tallier.as_ref().map(|t| t.borrow_mut());
                let mut forwarded_at = 0;
                input.for_each(|cap, data| {
                    for (x, t, d) in data.drain(..) {
                        if let ToStore::Folded(df, Folded::Loaded(key)) = x {
                            if let Some(t) = tallier.as_deref_mut() {
                                t.loaded(df, key);
                            }
                            continue;
                        }
                        // Time 0 rebuilds the folds from the store: their
                        // records are already stored. Identity's updates at
                        // time 0 are kept: in one process they are what the
                        // loaded links imply against the stored assignments
                        // (`dataflow::rebuild`), usually nothing; in a
                        // cluster every assignment comes again, since the
                        // process owning an identifier may have committed
                        // fewer times than the processes owning its links,
                        // and time 0 is the only moment that says what the
                        // loaded links imply.
                        if t == REBUILD_TIME && !matches!(x, ToStore::Cluster(..)) {
                            continue;
                        }
                        if forward && matches!(x, ToStore::Folded(_, Folded::Changed { .. })) {
                            forwarded.push((x, d));
                            continue;
                        }
                        pending
                            .entry(t)
                            .or_insert_with(|| free.pop().unwrap_or_default())
                            .push((x, d));
                    }
                    if !forwarded.is_empty() {
                        forwarded_at = cap.least().copied().unwrap_or(0);
                    }
                });
                // Once per activation, not per container (each a few
                // hundred records): every message costs the writer a wake-up.
                if !forwarded.is_empty() {
                    let (changes, _) =
                        to_changes(forwarded.drain(..), &names, tallier.as_deref_mut());
                    emit(Emitted::Data {
                        worker,
                        epoch: forwarded_at,
                        changes,
                        dead_letters: Vec::new(),
                        progress: Progress::default(),
                    });
                }
                let upto = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                while let Some((&t, _)) = pending.first_key_value() {
                    if t >= upto {
                        break;
                    }
                    let Some((t, mut updates)) = pending.pop_first() else {
                        break;
                    };
                    let (changes, progress) =
                        to_changes(updates.drain(..), &names, tallier.as_deref_mut());
                    if free.len() < FREE_BUFFERS {
                        free.push(updates);
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
                },
            ) => {
                if let Some(t) = tallier.as_deref_mut() {
                    t.record(df, key, new.is_some());
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
