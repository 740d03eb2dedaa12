//! Identity computed at once from the whole set of live links, for runs
//! that need it only at a few moments (a bulk load at its end; a replay
//! continuing a state as one commit at time 0 and at its end): a union-find
//! over the links instead of differential's label propagation, which pays
//! for being incremental at every time even when it is asked once.
//!
//! Invariant: [`AtOnce::complete`] gives exactly the updates that
//! [`super::identity::stitch`] emits for the same times, consolidated: each
//! identifier's assignment is the same function of the live links (hubs by
//! distinct-neighbour count, first_seen as the earliest live link,
//! components by minimum label over links between non-hubs), and the
//! updates are the difference from the assignments it gave before.

use differential_dataflow::consolidation::consolidate;

use super::identity::LinkFact;
use super::symbols::{ByText, Sym};
use crate::model::{EventTime, split_ident};
use crate::spec::IdentityConfig;

/// Maps keyed by a symbol's index (its `Hash` reads the shared table).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

/// An identifier's cluster and whether it is a hub.
pub(crate) type Assignment = (Sym, bool);

/// The links heard so far and the assignments given for them.
#[derive(Default)]
pub(crate) struct AtOnce {
    /// Link facts with their net multiplicity, consolidated at the last
    /// completion (none zero), then the updates of the completing time.
    links: Vec<(LinkFact, isize)>,
    /// Each identifier's assignment as last given, by symbol index.
    given: HashMap<u32, (Sym, Assignment)>,
}

impl AtOnce {
    /// Adds an update of a link fact (of the time that completes next).
    pub fn push(&mut self, fact: LinkFact, diff: isize) {
        self.links.push((fact, diff));
    }

    /// The updates pushed so far complete a time: appends to `out` how every
    /// identifier's assignment changed (`-1` the old, `+1` the new).
    pub fn complete(&mut self, config: &IdentityConfig, out: &mut Vec<((Sym, Assignment), isize)>) {
        consolidate(&mut self.links);
        let now = assign(
            self.links
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(fact, _)| *fact),
            config,
        );
        for (i, old) in &self.given {
            if now.get(i) != Some(old) {
                out.push((*old, -1));
            }
        }
        for (i, new) in &now {
            if self.given.get(i) != Some(new) {
                out.push((*new, 1));
            }
        }
        self.given = now;
    }
}

/// The identifiers of the live links, densely numbered.
struct Nodes {
    /// Dense index by symbol index.
    index: HashMap<u32, u32>,
    sym: Vec<Sym>,
    /// The earliest first_seen of each identifier's live links.
    first_seen: Vec<EventTime>,
}

impl Nodes {
    fn add(&mut self, x: Sym, fs: EventTime) -> u32 {
        let next = self.sym.len() as u32;
        let i = *self.index.entry(x.index()).or_insert(next);
        if i == next {
            self.sym.push(x);
            self.first_seen.push(fs);
        } else {
            let f = &mut self.first_seen[i as usize];
            *f = (*f).min(fs);
        }
        i
    }
}

/// Every identifier's assignment for a set of live link facts (a pair may
/// come with several first_seens: one per dataflow that links it).
fn assign(
    facts: impl Iterator<Item = LinkFact>,
    config: &IdentityConfig,
) -> HashMap<u32, (Sym, Assignment)> {
    let mut nodes = Nodes {
        index: HashMap::default(),
        sym: Vec::new(),
        first_seen: Vec::new(),
    };
    // Each distinct pair once, as dense indexes (a fact's pair is always
    // ordered by text, so the same link never comes reversed).
    let mut pairs: Vec<(u32, u32)> = facts
        .map(|((a, b), fs)| (nodes.add(a, fs), nodes.add(b, fs)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let hub = hubs(&nodes, &pairs, config);
    // Components over the links between non-hubs.
    let mut sets = UnionFind::new(nodes.sym.len());
    for &(a, b) in &pairs {
        if !hub[a as usize] && !hub[b as usize] {
            sets.union(a, b);
        }
    }
    // Each component's smallest label (first_seen, then text) names it.
    let label = |i: usize| (nodes.first_seen[i], ByText(nodes.sym[i]));
    let mut least: Vec<Option<u32>> = vec![None; nodes.sym.len()];
    for (i, _) in hub.iter().enumerate().filter(|(_, h)| !**h) {
        let root = sets.find(i as u32) as usize;
        match least[root] {
            Some(l) if label(l as usize) <= label(i) => {}
            _ => least[root] = Some(i as u32),
        }
    }
    (0..nodes.sym.len())
        .map(|i| {
            let x = nodes.sym[i];
            if hub[i] {
                return (x.index(), (x, (x, true)));
            }
            let root = sets.find(i as u32) as usize;
            let l = least[root].map_or(i, |l| l as usize);
            (x.index(), (x, (nodes.sym[l], false)))
        })
        .collect()
}

/// Whether each identifier has more distinct neighbours than its type allows.
fn hubs(nodes: &Nodes, pairs: &[(u32, u32)], config: &IdentityConfig) -> Vec<bool> {
    let mut degree = vec![0u64; nodes.sym.len()];
    for &(a, b) in pairs {
        degree[a as usize] += 1;
        degree[b as usize] += 1;
    }
    let mut limits: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    nodes
        .sym
        .iter()
        .zip(degree)
        .map(|(x, n)| {
            let ty = split_ident(x.text()).0;
            let limit = *limits.entry(ty).or_insert_with(|| config.max_links_for(ty));
            n > limit
        })
        .collect()
}

/// Disjoint sets of dense indexes (path halving, union by size).
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}
