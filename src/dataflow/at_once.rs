//! Identity from the live links, kept by a worker alone and brought up to
//! date as each time completes by taking apart and finding again only the
//! components that time's link updates can change, instead of
//! differential's label propagation (which pays for arrangements and
//! iteration rounds at every time, spread over the workers).
//!
//! Invariant: after [`AtOnce::complete`], each identifier's given
//! assignment is the one [`super::identity::stitch`] maintains for the same
//! live links (hubs by distinct-neighbour count, first_seen as the earliest
//! live link, components by minimum label over links between non-hubs),
//! and the updates emitted are the difference from the assignments given
//! before (by earlier completions, or preloaded from the store). A time's updates change the assignment only of an identifier
//! they touch (an endpoint of a pair whose facts changed) or of one in the
//! old component of such an identifier or of a neighbour of one whose hub
//! status changed: those components are taken apart and found again by a
//! search over the live links between non-hubs, which cannot leave them;
//! every other component stays as it was.

use differential_dataflow::consolidation::consolidate;
use smallvec::SmallVec;

use super::identity::LinkFact;
use super::symbols::{ByText, Sym};
use crate::model::{EventTime, split_ident};
use crate::spec::IdentityConfig;

/// Maps keyed by dense indexes.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// An identifier's cluster and whether it is a hub.
pub(crate) type Assignment = (Sym, bool);

/// No component: a hub, or an identifier without live links.
const NONE: u32 = u32::MAX;

/// An identifier that has had a live link.
struct Node {
    sym: Sym,
    /// More distinct neighbours than this make it a hub.
    limit: u64,
    /// The identifiers it has a live link with (dense indexes).
    neighbours: SmallVec<[u32; 4]>,
    /// Its component (a non-hub with a live link), else [`NONE`].
    component: u32,
    /// Its assignment as last given.
    given: Option<Assignment>,
    /// The completion that last touched it, and the one that last found it
    /// affected (scratch marks, compared with [`AtOnce::round`]).
    touched: u32,
    affected: u32,
}

impl Node {
    fn is_hub(&self) -> bool {
        self.neighbours.len() as u64 > self.limit
    }
}

/// A pair's link facts: first_seens with their net multiplicity (a pair
/// may come with several: one per dataflow that links it).
type Facts = SmallVec<[(EventTime, isize); 1]>;

/// The live links and the assignments given for them.
#[derive(Default)]
pub(crate) struct AtOnce {
    /// Updates of the time that completes next.
    pending: Vec<(LinkFact, isize)>,
    /// Dense index by symbol index ([`NONE`]: not a node yet). Symbols are
    /// numbered densely from 0, so a vector is a map without hashing.
    index: Vec<u32>,
    nodes: Vec<Node>,
    /// Facts by pair of dense indexes, the smaller first; only pairs with a
    /// fact of positive multiplicity are live.
    pairs: HashMap<(u32, u32), Facts>,
    /// Each component's members and label (its least first_seen, then
    /// text), by component id; ids of emptied ones.
    members: Vec<Vec<u32>>,
    labels: Vec<Sym>,
    free: Vec<u32>,
    /// Identifiers given an assignment by [`AtOnce::preload`] since the
    /// last completion: the next one finds theirs again.
    preloaded: Vec<u32>,
    /// Counts completions, for the nodes' marks.
    round: u32,
    /// Reused by every completion.
    scratch: Scratch,
}

/// Identifiers a completion touched (with whether each was a hub before)
/// and those whose assignment it finds again.
#[derive(Default)]
struct Scratch {
    touched: Vec<(u32, bool)>,
    affected: Vec<u32>,
    queue: Vec<u32>,
}

impl AtOnce {
    /// Adds an update of a link fact (of the time that completes next).
    pub fn push(&mut self, fact: LinkFact, diff: isize) {
        self.pending.push((fact, diff));
    }

    /// Takes `a` as the assignment already given to `x` (stored by an
    /// earlier run of the same process): the next completion finds `x`'s
    /// assignment again and emits only how it differs from `a` (its
    /// retraction, if `x` has no live link by then).
    pub fn preload(&mut self, x: Sym, a: Assignment, config: &IdentityConfig) {
        let i = self.node(x, config);
        self.nodes[i as usize].given = Some(a);
        self.preloaded.push(i);
    }

    /// The updates pushed so far complete a time: appends to `out` how every
    /// identifier's assignment changed (`-1` the old, `+1` the new).
    pub fn complete(&mut self, config: &IdentityConfig, out: &mut Vec<((Sym, Assignment), isize)>) {
        consolidate(&mut self.pending);
        self.round = self.round.wrapping_add(1);
        if self.round == 0 {
            // Marks from 2^32 completions ago could pass for this one's.
            for n in self.nodes.iter_mut() {
                (n.touched, n.affected) = (0, 0);
            }
            self.round = 1;
        }
        let mut s = std::mem::take(&mut self.scratch);
        // Preloading happens once (the rebuild): its list is not kept.
        for i in std::mem::take(&mut self.preloaded) {
            self.touch(i, &mut s);
        }
        let pending = std::mem::take(&mut self.pending);
        for &(((a, b), fs), diff) in &pending {
            let (a, b) = (self.node(a, config), self.node(b, config));
            self.touch(a, &mut s);
            self.touch(b, &mut s);
            self.update_pair(a, b, fs, diff);
        }
        self.pending = pending;
        self.pending.clear();
        self.collect_affected(&mut s);
        self.find_components(&mut s);
        self.emit_changes(&s, out);
        s.touched.clear();
        s.affected.clear();
        self.scratch = s;
    }

    /// The dense index of `x`, a new node when first seen.
    fn node(&mut self, x: Sym, config: &IdentityConfig) -> u32 {
        let next = self.nodes.len() as u32;
        let at = x.index() as usize;
        if at >= self.index.len() {
            // Room for the symbols made since, and as many again.
            self.index.resize((at + 1).max(2 * self.index.len()), NONE);
        }
        let i = self.index[at];
        if i == NONE {
            self.index[at] = next;
            self.nodes.push(Node {
                sym: x,
                limit: config.max_links_for(split_ident(x.text()).0),
                neighbours: SmallVec::new(),
                component: NONE,
                given: None,
                touched: 0,
                affected: 0,
            });
            return next;
        }
        i
    }

    /// Notes `i` as touched by this completion, with its hub status before.
    fn touch(&mut self, i: u32, s: &mut Scratch) {
        let n = &mut self.nodes[i as usize];
        if n.touched != self.round {
            n.touched = self.round;
            s.touched.push((i, n.is_hub()));
        }
    }

    /// Applies one consolidated fact update; the pair becomes or stops
    /// being a link between its two identifiers accordingly.
    fn update_pair(&mut self, a: u32, b: u32, fs: EventTime, diff: isize) {
        let (a, b) = (a.min(b), a.max(b));
        let facts = self.pairs.entry((a, b)).or_default();
        let was_live = facts.iter().any(|(_, n)| *n > 0);
        match facts.iter_mut().find(|(f, _)| *f == fs) {
            Some(entry) => entry.1 += diff,
            None => facts.push((fs, diff)),
        }
        facts.retain(|(_, n)| *n != 0);
        let is_live = facts.iter().any(|(_, n)| *n > 0);
        if facts.is_empty() {
            self.pairs.remove(&(a, b));
        }
        match (was_live, is_live) {
            (false, true) => {
                self.nodes[a as usize].neighbours.push(b);
                self.nodes[b as usize].neighbours.push(a);
            }
            (true, false) => {
                for (x, y) in [(a, b), (b, a)] {
                    let ns = &mut self.nodes[x as usize].neighbours;
                    if let Some(k) = ns.iter().position(|&n| n == y) {
                        ns.swap_remove(k);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every identifier whose assignment may change: the touched ones, the
    /// members of their old components and, for each whose hub status
    /// changed, its neighbours and theirs. Those components are taken apart.
    fn collect_affected(&mut self, s: &mut Scratch) {
        for k in 0..s.touched.len() {
            let (i, was_hub) = s.touched[k];
            self.affect(i, s);
            if self.nodes[i as usize].is_hub() != was_hub {
                for k in 0..self.nodes[i as usize].neighbours.len() {
                    self.affect(self.nodes[i as usize].neighbours[k], s);
                }
            }
        }
    }

    /// Marks `i` and every member of its component affected, and frees that
    /// component.
    fn affect(&mut self, i: u32, s: &mut Scratch) {
        let round = self.round;
        let c = self.nodes[i as usize].component;
        if c == NONE {
            let n = &mut self.nodes[i as usize];
            if n.affected != round {
                n.affected = round;
                s.affected.push(i);
            }
            return;
        }
        let members = std::mem::take(&mut self.members[c as usize]);
        self.free.push(c);
        for &m in &members {
            let n = &mut self.nodes[m as usize];
            n.component = NONE;
            if n.affected != round {
                n.affected = round;
                s.affected.push(m);
            }
        }
        // Keep the allocation for the next component found.
        self.members[c as usize] = members;
        self.members[c as usize].clear();
    }

    /// Finds the components of the affected non-hubs with live links by a
    /// search over links between non-hubs (it never leaves the affected
    /// set: see the module's invariant), and labels each.
    fn find_components(&mut self, s: &mut Scratch) {
        for k in 0..s.affected.len() {
            let start = s.affected[k];
            let n = &self.nodes[start as usize];
            if n.component != NONE || n.neighbours.is_empty() || n.is_hub() {
                continue;
            }
            let c = self.free.pop().unwrap_or_else(|| {
                self.members.push(Vec::new());
                self.labels.push(n.sym);
                (self.members.len() - 1) as u32
            });
            let mut members = std::mem::take(&mut self.members[c as usize]);
            self.nodes[start as usize].component = c;
            s.queue.clear();
            s.queue.push(start);
            while let Some(x) = s.queue.pop() {
                members.push(x);
                for k in 0..self.nodes[x as usize].neighbours.len() {
                    let y = self.nodes[x as usize].neighbours[k];
                    let ny = &mut self.nodes[y as usize];
                    if ny.component == NONE && !ny.is_hub() {
                        debug_assert_eq!(
                            ny.affected, self.round,
                            "the search left the affected set"
                        );
                        ny.component = c;
                        s.queue.push(y);
                    }
                }
            }
            let least = members
                .iter()
                .map(|&m| (self.first_seen(m), ByText(self.nodes[m as usize].sym)))
                .min();
            if let Some((_, ByText(label))) = least {
                self.labels[c as usize] = label;
            }
            self.members[c as usize] = members;
        }
    }

    /// The earliest first_seen of `i`'s live links.
    fn first_seen(&self, i: u32) -> EventTime {
        self.nodes[i as usize]
            .neighbours
            .iter()
            .filter_map(|&j| {
                let facts = self.pairs.get(&(i.min(j), i.max(j)))?;
                facts.iter().filter(|(_, n)| *n > 0).map(|(f, _)| *f).min()
            })
            .min()
            .unwrap_or(EventTime::MAX)
    }

    /// Each affected identifier's new assignment against the one given.
    fn emit_changes(&mut self, s: &Scratch, out: &mut Vec<((Sym, Assignment), isize)>) {
        for &i in &s.affected {
            let n = &self.nodes[i as usize];
            let new = if n.is_hub() {
                Some((n.sym, true))
            } else if n.component != NONE {
                Some((self.labels[n.component as usize], false))
            } else {
                None
            };
            if n.given == new {
                continue;
            }
            if let Some(old) = n.given {
                out.push(((n.sym, old), -1));
            }
            if let Some(new) = new {
                out.push(((n.sym, new), 1));
            }
            self.nodes[i as usize].given = new;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{RngExt, SeedableRng};

    use super::*;

    /// The reference: every identifier's assignment computed from scratch
    /// from the live facts (union-find over the links between non-hubs).
    fn from_scratch(
        live: &BTreeMap<LinkFact, isize>,
        config: &IdentityConfig,
    ) -> BTreeMap<Sym, Assignment> {
        let facts: Vec<LinkFact> = live
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, _)| *f)
            .collect();
        let mut first_seen: BTreeMap<Sym, EventTime> = BTreeMap::new();
        let mut neighbours: BTreeMap<Sym, std::collections::BTreeSet<Sym>> = BTreeMap::new();
        for &((a, b), fs) in &facts {
            for (x, y) in [(a, b), (b, a)] {
                let f = first_seen.entry(x).or_insert(fs);
                *f = (*f).min(fs);
                neighbours.entry(x).or_default().insert(y);
            }
        }
        let hub =
            |x: &Sym| neighbours[x].len() as u64 > config.max_links_for(split_ident(x.text()).0);
        // Components by repeated relabelling to the least label in reach.
        let mut label: BTreeMap<Sym, (EventTime, ByText)> = first_seen
            .iter()
            .filter(|(x, _)| !hub(x))
            .map(|(x, fs)| (*x, (*fs, ByText(*x))))
            .collect();
        loop {
            let mut changed = false;
            for (x, ys) in &neighbours {
                if hub(x) {
                    continue;
                }
                for y in ys.iter().filter(|y| !hub(y)) {
                    if label[y] < label[x] {
                        let l = label[y];
                        label.insert(*x, l);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        neighbours
            .keys()
            .map(|x| match label.get(x) {
                Some((_, ByText(c))) => (*x, (*c, false)),
                None => (*x, (*x, true)),
            })
            .collect()
    }

    /// A link's pair, the smaller by text first.
    fn ordered(a: Sym, b: Sym) -> (Sym, Sym) {
        if ByText(a) < ByText(b) {
            (a, b)
        } else {
            (b, a)
        }
    }

    /// Random completions over `ids` identifiers per type: new facts (a
    /// pair again with another first_seen, as a second dataflow would),
    /// removals, first_seen changes; after each, the assignments given (the
    /// sum of every update emitted) equal the reference's.
    fn check(seed: u64, ids: usize, times: usize, per_time: usize) -> usize {
        let config = IdentityConfig {
            max_links: 3,
            max_links_by_type: [("device".to_string(), 2)].into_iter().collect(),
            ..IdentityConfig::default()
        };
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
        let id = |rng: &mut rand::rngs::Xoshiro256PlusPlus| {
            let ty = ["account", "device", "gp"][rng.random_range(0..3)];
            Sym::intern(&format!("{ty}:{}", rng.random_range(0..ids))).unwrap()
        };
        let mut state = AtOnce::default();
        let mut live: BTreeMap<LinkFact, isize> = BTreeMap::new();
        let mut given: BTreeMap<(Sym, Assignment), isize> = BTreeMap::new();
        let mut hubs = 0;
        for t in 0..times {
            for _ in 0..rng.random_range(0..per_time) {
                let facts: Vec<LinkFact> = live.keys().copied().collect();
                let mut update = |fact: LinkFact, d: isize| {
                    state.push(fact, d);
                    *live.entry(fact).or_default() += d;
                };
                match rng.random_range(0..6) {
                    0..=2 => {
                        let (a, b) = (id(&mut rng), id(&mut rng));
                        if a != b {
                            update((ordered(a, b), rng.random_range(0..50)), 1);
                        }
                    }
                    3 | 4 if !facts.is_empty() => {
                        let fact = facts[rng.random_range(0..facts.len())];
                        update(fact, -1);
                        if rng.random_range(0..2) == 0 {
                            update((fact.0, rng.random_range(0..50)), 1);
                        }
                    }
                    _ => {}
                }
            }
            live.retain(|_, n| *n != 0);
            let mut out = Vec::new();
            state.complete(&config, &mut out);
            for (a, d) in out {
                *given.entry(a).or_default() += d;
            }
            given.retain(|_, d| *d != 0);
            assert!(
                given.values().all(|d| *d == 1),
                "seed {seed} time {t}: {given:?}"
            );
            let expected = from_scratch(&live, &config);
            let got: BTreeMap<Sym, Assignment> = given.keys().copied().collect();
            assert_eq!(got, expected, "seed {seed} time {t}");
            hubs += expected.values().filter(|a| a.1).count();
        }
        hubs
    }

    #[test]
    fn every_completion_gives_what_a_computation_from_scratch_gives() {
        let mut hubs = 0;
        for seed in 0..200 {
            hubs += check(seed, 4 + (seed as usize % 12), 20, 30);
        }
        // The limits made hubs, which came and went.
        assert!(hubs > 1000, "{hubs}");
    }

    /// A restart: the stored assignments (some stale: another cluster, a
    /// hub flag flipped, missing, or an identifier with no live link left)
    /// are preloaded, the stored links pushed, and one completion emits
    /// exactly the differences: the result equals the reference, and every
    /// assignment stored right is left alone.
    #[test]
    fn a_preloaded_baseline_is_only_corrected() {
        let config = IdentityConfig {
            max_links: 3,
            ..IdentityConfig::default()
        };
        for seed in 0..100u64 {
            let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(seed);
            let id = |rng: &mut rand::rngs::Xoshiro256PlusPlus| {
                Sym::intern(&format!("account:p{}", rng.random_range(0..40))).unwrap()
            };
            let mut live: BTreeMap<LinkFact, isize> = BTreeMap::new();
            for _ in 0..rng.random_range(1..60) {
                let (a, b) = (id(&mut rng), id(&mut rng));
                if a != b {
                    live.insert((ordered(a, b), rng.random_range(0..50)), 1);
                }
            }
            let expected = from_scratch(&live, &config);
            let mut stored = expected.clone();
            for (x, a) in stored.iter_mut() {
                match rng.random_range(0..8) {
                    0 => a.0 = *x,
                    1 => a.1 = !a.1,
                    _ => {}
                }
            }
            stored.retain(|_, _| rng.random_range(0..10) != 0);
            let wrong = stored.iter().filter(|(x, a)| expected[*x] != **a).count();
            let missing = expected.keys().filter(|x| !stored.contains_key(x)).count();
            let gone = Sym::intern(&format!("account:gone{seed}")).unwrap();
            stored.insert(gone, (gone, false));

            let mut state = AtOnce::default();
            for (x, a) in &stored {
                state.preload(*x, *a, &config);
            }
            for (fact, d) in &live {
                state.push(*fact, *d);
            }
            let mut out = Vec::new();
            state.complete(&config, &mut out);
            // Each wrong one retracted and given again, each missing one
            // given, the one without links retracted; nothing else.
            assert_eq!(out.len(), 2 * wrong + missing + 1, "seed {seed}: {out:?}");
            let mut given: BTreeMap<(Sym, Assignment), isize> =
                stored.iter().map(|(x, a)| ((*x, *a), 1)).collect();
            for (u, d) in out {
                *given.entry(u).or_default() += d;
            }
            given.retain(|_, d| *d != 0);
            assert!(given.values().all(|d| *d == 1), "seed {seed}: {given:?}");
            let got: BTreeMap<Sym, Assignment> = given.keys().copied().collect();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn large_completions_of_hundreds_of_identifiers() {
        for seed in 0..5 {
            check(1000 + seed, 300, 3, 2000);
        }
    }
}
