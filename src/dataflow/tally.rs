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
    /// Live nodes and edges, each with the dataflows (bit `1 << index`)
    /// whose contribution to it is live.
    records: HashMap<RecKey, u32, foldhash::fast::FixedState>,
    /// By edge type index: whether the type has rules in one definition
    /// only. While nothing was loaded, such an edge is counted without
    /// `records` (one contributor, emitted at most once: a removal is of an
    /// edge never counted); 1.37M of a 2M-event load's 1.77M records, whose
    /// map inserts cost ~0.45 CPU-s.
    one_source: Vec<bool>,
    /// Something was loaded: every record goes through `records`.
    loaded_any: bool,
    /// An edge was counted without `records`.
    counted_directly: bool,
    /// How many of `records` are nodes, and edges.
    nodes: u64,
    edges: u64,
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
            loaded_any: false,
            counted_directly: false,
            nodes: 0,
            edges: 0,
            identifiers: 0,
            clusters: 0,
            exact: true,
        }
    }

    /// Dataflow `df`'s contribution to a record, as the store holds it
    /// (loaded by the rebuild): the same as a live emission.
    pub fn loaded(&mut self, df: usize, key: RecKey) {
        if self.counted_directly {
            // Loads come before every emission (time 0); if not, the
            // direct counts could be off.
            self.exact = false;
        }
        self.loaded_any = true;
        self.record(df, key, true);
    }

    /// Dataflow `df`'s contribution to a folded record, emitted with its
    /// aggregate (`live`) or as gone.
    pub fn record(&mut self, df: usize, key: RecKey, live: bool) {
        let one = match key {
            RecKey::Link(..) => return,
            RecKey::Node(_) => &mut self.nodes,
            RecKey::Edge(t, ..)
                if !self.loaded_any
                    && self
                        .one_source
                        .get(usize::from(t))
                        .copied()
                        .unwrap_or(false) =>
            {
                self.counted_directly = true;
                self.edges += u64::from(live);
                return;
            }
            RecKey::Edge(..) => &mut self.edges,
        };
        if df >= MAX_DATAFLOWS {
            self.exact = false;
            return;
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
        Tally {
            nodes: self.nodes,
            edges: self.edges,
            identifiers: self.identifiers,
            clusters: self.clusters,
            exact: self.exact,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Sym {
        Sym::intern(s).unwrap()
    }

    #[test]
    fn a_record_of_several_dataflows_counts_once_and_links_not_at_all() {
        let mut t = Tallier::new(Vec::new());
        let (a, b) = (sym("account:tally-a"), sym("device:tally-b"));
        t.record(0, RecKey::Node(a), true);
        t.record(1, RecKey::Node(a), true);
        t.record(0, RecKey::Node(b), true);
        t.record(0, RecKey::Edge(0, a, b), true);
        t.record(0, RecKey::Edge(1, a, b), true);
        t.record(0, RecKey::Link(a, b), true);
        let got = t.tally();
        assert_eq!((got.nodes, got.edges, got.exact), (2, 2, true));
        // a stays while dataflow 1 contributes it; b goes once.
        t.record(0, RecKey::Node(a), false);
        t.record(0, RecKey::Node(b), false);
        t.record(0, RecKey::Node(b), false);
        let got = t.tally();
        assert_eq!((got.nodes, got.edges, got.exact), (1, 2, true));
        t.record(1, RecKey::Node(a), false);
        assert_eq!(t.tally().nodes, 0);
        t.record(MAX_DATAFLOWS, RecKey::Node(a), true);
        assert!(!t.tally().exact, "a dataflow beyond the bits");
    }

    #[test]
    fn a_loaded_record_counts_once_and_until_it_is_gone() {
        let mut t = Tallier::new(Vec::new());
        let (a, b) = (sym("account:tally-l1"), sym("device:tally-l2"));
        t.loaded(0, RecKey::Node(a));
        t.loaded(0, RecKey::Edge(0, a, b));
        // Another dataflow's contribution to a stored record.
        t.record(1, RecKey::Node(a), true);
        t.record(1, RecKey::Node(b), true);
        assert_eq!((t.tally().nodes, t.tally().edges), (2, 1));
        t.record(0, RecKey::Node(a), false);
        assert_eq!(t.tally().nodes, 2, "a is still dataflow 1's");
        t.record(0, RecKey::Edge(0, a, b), false);
        assert_eq!((t.tally().nodes, t.tally().edges), (2, 0));
        t.inexact();
        assert!(!t.tally().exact);
    }

    /// Edges of types with one definition, counted without the map while
    /// nothing is loaded, count what the map counts: random emissions, each
    /// record at most once (live or gone), of types with one definition and
    /// with two; a load after a direct count makes the tally inexact.
    #[test]
    fn one_source_edges_counted_directly_count_what_the_map_counts() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let ids: Vec<Sym> = (0..40).map(|i| sym(&format!("x:tally-d{i}"))).collect();
        for round in 0..50 {
            let one_source: Vec<bool> = (0..4).map(|_| rng.random_bool(0.6)).collect();
            let mut direct = Tallier::new(one_source.clone());
            let mut mapped = Tallier::new(Vec::new());
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..300 {
                let t: u16 = rng.random_range(0..4);
                let df = if one_source[usize::from(t)] {
                    usize::from(t)
                } else {
                    rng.random_range(0..3)
                };
                let key = match rng.random_range(0..3) {
                    0 => RecKey::Node(ids[rng.random_range(0..ids.len())]),
                    _ => RecKey::Edge(
                        t,
                        ids[rng.random_range(0..ids.len())],
                        ids[rng.random_range(0..ids.len())],
                    ),
                };
                if !seen.insert((df, key)) {
                    continue;
                }
                let live = rng.random_bool(0.8);
                direct.record(df, key, live);
                mapped.record(df, key, live);
            }
            assert_eq!(direct.tally(), mapped.tally(), "round {round}");
            assert!(direct.tally().exact);
            if direct.counted_directly {
                direct.loaded(0, RecKey::Node(ids[0]));
                assert!(!direct.tally().exact, "a load after a direct count");
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
