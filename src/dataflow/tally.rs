//! What a worker's collector emitted, counted the way the store counts its
//! state (`store::Store::counts`), so that a replay can report its state's
//! size without scanning it afterwards (0.4–1 s of a 2M-event load, 0.75 s
//! of a 2M-event continue).
//!
//! Invariant: the counts are exact for a run of one process whose folds
//! emit each record at most once, with its aggregate at the end (a bulk
//! load, or a replay continuing a state as one commit), when every stored
//! record was loaded at time 0: a record is counted once however many
//! dataflows contribute it (all of its contributions, stored or new, come
//! to the worker that owns it, `Op::shard`), while at least one dataflow's
//! contribution is live (loaded, or emitted live, and not emitted as gone
//! since); an identifier while it has a
//! cluster, a cluster by the one identifier that names it (every cluster's
//! label is one of its members: a hub is its own). Identity's changes are
//! counted where they are emitted and the stored assignments where the
//! rebuild read them, so one worker's share may be negative; the sum over
//! the process's workers is the count. A stored contribution the rebuild
//! could not load (of a definition or an edge type no longer in the plan),
//! a rebuild across processes (each store holds its own share of the
//! assignments), and a plan of more than [`MAX_DATAFLOWS`] definitions make
//! the tally inexact, and whoever reads it falls back to counting the store.

use std::collections::HashMap;

use super::ops::RecKey;
use super::symbols::Sym;

/// One worker's counts; summed over the workers of a process, they are
/// what its store holds after the run (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub nodes: u64,
    pub edges: u64,
    /// This worker's share: may be negative.
    pub identifiers: i64,
    /// This worker's share: may be negative.
    pub clusters: i64,
    /// Whether the counts hold (see the module doc).
    pub exact: bool,
}

/// Definitions a tally follows (one bit each of a record's contributors).
const MAX_DATAFLOWS: usize = 32;

/// A worker's running tally, kept by its collector and fed by its rebuild.
pub(crate) struct Tallier {
    /// Live nodes and edges of several possible contributors, each with the
    /// dataflows (bit `1 << index`) whose contribution to it is live.
    records: HashMap<RecKey, u32, foldhash::fast::FixedState>,
    /// By edge type index: whether the type has rules in one definition
    /// only. Such an edge has one contributor, so it is live while that
    /// contribution is, and it is counted without `records`: +1 when
    /// loaded, and by what each emission says it was before and is now
    /// (`Folded::Changed::existed`). 1.37M of a 2M-event load's 1.77M
    /// records, whose map inserts cost ~0.45 CPU-s, and 2.27M of the 2.75M
    /// after a continue of 2M more, where the map was 4% of the samples.
    one_source: Vec<bool>,
    /// An emission was counted without `records`.
    counted_directly: bool,
    /// How many of `records` are nodes, and edges.
    nodes: u64,
    edges: u64,
    /// Edges counted without `records`.
    direct_edges: i64,
    identifiers: i64,
    clusters: i64,
    exact: bool,
}

impl Tallier {
    /// `one_source` as [`Names::one_source`](super::ops::Names).
    pub fn new(one_source: Vec<bool>) -> Tallier {
        Tallier {
            records: HashMap::default(),
            one_source,
            counted_directly: false,
            nodes: 0,
            edges: 0,
            direct_edges: 0,
            identifiers: 0,
            clusters: 0,
            exact: true,
        }
    }

    /// Dataflow `df`'s contribution to a record, as the store holds it
    /// (loaded by the rebuild): the same as a live emission of a record
    /// that did not exist.
    pub fn loaded(&mut self, df: usize, key: RecKey) {
        if self.counted_directly {
            // Loads come before every emission (time 0); if not, an
            // emission's `existed` could have missed this load.
            self.exact = false;
        }
        self.count(df, key, true, false);
    }

    /// Dataflow `df`'s contribution to a folded record, emitted with its
    /// aggregate (`live`) or as gone; `existed`: whether it was live when
    /// last emitted or loaded.
    pub fn record(&mut self, df: usize, key: RecKey, live: bool, existed: bool) {
        if self.count(df, key, live, existed) {
            self.counted_directly = true;
        }
    }

    /// Counts one contribution; returns whether it was counted without
    /// `records`.
    fn count(&mut self, df: usize, key: RecKey, live: bool, existed: bool) -> bool {
        let one = match key {
            RecKey::Link(..) => return false,
            RecKey::Node(_) => &mut self.nodes,
            RecKey::Edge(t, ..)
                if self
                    .one_source
                    .get(usize::from(t))
                    .copied()
                    .unwrap_or(false) =>
            {
                self.direct_edges += i64::from(live) - i64::from(existed);
                return true;
            }
            RecKey::Edge(..) => &mut self.edges,
        };
        if df >= MAX_DATAFLOWS {
            self.exact = false;
            return false;
        }
        let bit = 1u32 << df;
        if live {
            let contributors = self.records.entry(key).or_insert(0);
            if *contributors == 0 {
                *one += 1;
            }
            *contributors |= bit;
        } else if let Some(contributors) = self.records.get_mut(&key) {
            *contributors &= !bit;
            if *contributors == 0 {
                self.records.remove(&key);
                *one -= 1;
            }
        }
        false
    }

    /// An identifier's assignment as the store holds it (read by the
    /// rebuild; identity starts from it).
    pub fn stored_assignment(&mut self, id: Sym, cluster: Sym) {
        self.assignment(id, &[], &[(cluster, false)]);
    }

    /// Something stored that the counts cannot follow (see the module doc).
    pub fn inexact(&mut self) {
        self.exact = false;
    }

    /// One identifier's consolidated change of one time: the assignments
    /// (cluster, hub) it left (`old`) and took (`new`).
    pub fn assignment(&mut self, id: Sym, old: &[(Sym, bool)], new: &[(Sym, bool)]) {
        let names = |a: &[(Sym, bool)]| i64::from(a.iter().any(|(c, _)| *c == id));
        self.identifiers += i64::from(!new.is_empty()) - i64::from(!old.is_empty());
        self.clusters += names(new) - names(old);
    }

    pub fn tally(&self) -> Tally {
        // Negative only if an emission said a record existed that was never
        // counted: then the counts do not hold.
        let direct = u64::try_from(self.direct_edges);
        Tally {
            nodes: self.nodes,
            edges: self.edges + direct.unwrap_or(0),
            identifiers: self.identifiers,
            clusters: self.clusters,
            exact: self.exact && direct.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn sym(s: &str) -> Sym {
        Sym::intern(s).unwrap()
    }

    #[test]
    fn a_record_of_several_dataflows_counts_once_and_links_not_at_all() {
        let mut t = Tallier::new(Vec::new());
        let (a, b) = (sym("account:tally-a"), sym("device:tally-b"));
        t.record(0, RecKey::Node(a), true, false);
        t.record(1, RecKey::Node(a), true, false);
        t.record(0, RecKey::Node(b), true, false);
        t.record(0, RecKey::Edge(0, a, b), true, false);
        t.record(0, RecKey::Edge(1, a, b), true, false);
        t.record(0, RecKey::Link(a, b), true, false);
        let got = t.tally();
        assert_eq!((got.nodes, got.edges, got.exact), (2, 2, true));
        // a stays while dataflow 1 contributes it; b goes once.
        t.record(0, RecKey::Node(a), false, true);
        t.record(0, RecKey::Node(b), false, true);
        t.record(0, RecKey::Node(b), false, true);
        let got = t.tally();
        assert_eq!((got.nodes, got.edges, got.exact), (1, 2, true));
        t.record(1, RecKey::Node(a), false, true);
        assert_eq!(t.tally().nodes, 0);
        t.record(MAX_DATAFLOWS, RecKey::Node(a), true, false);
        assert!(!t.tally().exact, "a dataflow beyond the bits");
    }

    #[test]
    fn a_loaded_record_counts_once_and_until_it_is_gone() {
        let mut t = Tallier::new(Vec::new());
        let (a, b) = (sym("account:tally-l1"), sym("device:tally-l2"));
        t.loaded(0, RecKey::Node(a));
        t.loaded(0, RecKey::Edge(0, a, b));
        // Another dataflow's contribution to a stored record.
        t.record(1, RecKey::Node(a), true, false);
        t.record(1, RecKey::Node(b), true, false);
        assert_eq!((t.tally().nodes, t.tally().edges), (2, 1));
        t.record(0, RecKey::Node(a), false, true);
        assert_eq!(t.tally().nodes, 2, "a is still dataflow 1's");
        t.record(0, RecKey::Edge(0, a, b), false, true);
        assert_eq!((t.tally().nodes, t.tally().edges), (2, 0));
        t.inexact();
        assert!(!t.tally().exact);
    }

    /// Random loads, then random emissions (a record emitted several
    /// times, live or gone, with whether it was live before), of nodes and
    /// of edges of types with one definition (counted without the map)
    /// and with several: the tally counts the records with at least one
    /// live contribution, as a tally that maps every record does; a load
    /// after a direct count, or an emission that says a record existed
    /// that was never counted, makes the tally inexact.
    #[test]
    fn one_source_edges_counted_directly_count_what_the_map_counts() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let ids: Vec<Sym> = (0..12).map(|i| sym(&format!("x:tally-d{i}"))).collect();
        for round in 0..100 {
            let one_source: Vec<bool> = (0..4).map(|_| rng.random_bool(0.6)).collect();
            let mut direct = Tallier::new(one_source.clone());
            let mut mapped = Tallier::new(Vec::new());
            // (dataflow, record) -> live
            let mut live: BTreeMap<(usize, RecKey), bool> = BTreeMap::new();
            let pick = |rng: &mut rand::rngs::StdRng| {
                let t: u16 = rng.random_range(0..4);
                let df = if one_source[usize::from(t)] {
                    usize::from(t)
                } else {
                    rng.random_range(0..3)
                };
                let id = |rng: &mut rand::rngs::StdRng| ids[rng.random_range(0..ids.len())];
                let key = match rng.random_range(0..3) {
                    0 => RecKey::Node(id(rng)),
                    _ => RecKey::Edge(t, id(rng), id(rng)),
                };
                (df, key)
            };
            for _ in 0..rng.random_range(0..60) {
                let (df, key) = pick(&mut rng);
                if !live.insert((df, key), true).unwrap_or(false) {
                    direct.loaded(df, key);
                    mapped.loaded(df, key);
                }
            }
            for _ in 0..300 {
                let (df, key) = pick(&mut rng);
                let now = rng.random_bool(0.7);
                let existed = live.get(&(df, key)).copied().unwrap_or(false);
                if !existed && !now {
                    continue; // never emitted (`Records::take_changes`)
                }
                live.insert((df, key), now);
                direct.record(df, key, now, existed);
                mapped.record(df, key, now, existed);
            }
            let records: BTreeSet<RecKey> = live
                .iter()
                .filter(|(_, l)| **l)
                .map(|((_, k), _)| *k)
                .collect();
            let nodes = records
                .iter()
                .filter(|k| matches!(k, RecKey::Node(_)))
                .count() as u64;
            let want = (nodes, records.len() as u64 - nodes, true);
            for (name, t) in [("direct", &direct), ("mapped", &mapped)] {
                let got = t.tally();
                assert_eq!(
                    (got.nodes, got.edges, got.exact),
                    want,
                    "{name}, round {round}"
                );
            }
            if direct.counted_directly {
                let mut late = Tallier::new(one_source.clone());
                late.record(0, RecKey::Node(ids[0]), true, false);
                let t = one_source.iter().position(|&one| one).unwrap_or(0) as u16;
                late.record(usize::from(t), RecKey::Edge(t, ids[0], ids[1]), true, false);
                late.loaded(0, RecKey::Node(ids[1]));
                assert!(!late.tally().exact, "a load after a direct count");
                let mut never = Tallier::new(one_source.clone());
                never.record(usize::from(t), RecKey::Edge(t, ids[0], ids[1]), false, true);
                assert!(!never.tally().exact, "gone, never counted");
            }
        }
    }

    #[test]
    fn identifiers_and_clusters_follow_consolidated_changes() {
        let mut t = Tallier::new(Vec::new());
        let (a, b, c) = (sym("x:tally-1"), sym("x:tally-2"), sym("x:tally-3"));
        // {a, b} labelled a, c alone.
        t.assignment(a, &[], &[(a, false)]);
        t.assignment(b, &[], &[(a, false)]);
        t.assignment(c, &[], &[(c, false)]);
        assert_eq!((t.tally().identifiers, t.tally().clusters), (3, 2));
        // A stored assignment read by the rebuild: d in a's cluster.
        let d = sym("x:tally-4");
        t.stored_assignment(d, a);
        assert_eq!((t.tally().identifiers, t.tally().clusters), (4, 2));
        t.assignment(d, &[(a, false)], &[]);
        // c joins a's cluster; b leaves every cluster.
        t.assignment(c, &[(c, false)], &[(a, false)]);
        t.assignment(b, &[(a, false)], &[]);
        let got = t.tally();
        assert_eq!((got.identifiers, got.clusters, got.exact), (2, 1, true));
    }
}
