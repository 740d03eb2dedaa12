//! Sorted runs a bulk load holds in memory ([`Packed`]) and their k-way
//! merge into one run per namespace ([`merged`]).
//!
//! Invariant: a [`Packed`] holds a normalized [`WriteSet`]'s writes in its
//! order (by namespace, then key, one write per key) with their bytes one
//! after another in that same order, so a run is read front to back, and a
//! write costs 8 bytes beside its bytes (a set's `Op` is 32: it locates
//! bytes written in any order). Keys and values too long for the engines
//! never get into one (the set is checked first).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use super::{EngineError, REMOVE, WriteSet};

/// A normalized set's writes and their bytes, in key order.
#[derive(Debug, Default)]
pub(crate) struct Packed {
    arena: Vec<u8>,
    writes: Vec<Write>,
    /// Each namespace written, in order: (namespace, its first write, the
    /// arena offset of that write's key).
    starts: Vec<(usize, usize, usize)>,
}

/// The namespace index of a [`Packed::forget`]ten section.
const WRITTEN: usize = usize::MAX;

/// One write of a [`Packed`]: lengths only, its bytes follow the previous
/// write's.
#[derive(Clone, Copy, Debug)]
struct Write {
    key_len: u32,
    /// [`REMOVE`]: the write removes the key.
    value_len: u32,
}

impl Packed {
    /// Copies the writes of `set` (normalized) in its order; refuses a set
    /// holding a key or value too long for the engines.
    pub fn of(set: &WriteSet) -> Result<Packed, EngineError> {
        set.check()?;
        // Exactly the bytes kept (the set's arena also holds overridden
        // writes).
        let (_, bytes) = set.size();
        let mut out = Packed::default();
        out.arena.reserve_exact(usize::try_from(bytes).unwrap_or(0));
        out.writes.reserve_exact(set.ops.len());
        for op in set.in_order(&set.ops) {
            if out.starts.last().is_none_or(|&(ns, _, _)| ns != op.ns()) {
                out.starts
                    .push((op.ns(), out.writes.len(), out.arena.len()));
            }
            out.arena.extend_from_slice(set.bytes(op.key()));
            let value_len = match op.value() {
                Some(v) => {
                    out.arena.extend_from_slice(set.bytes(v));
                    op.value_len
                }
                None => REMOVE,
            };
            out.writes.push(Write {
                key_len: op.key_len,
                value_len,
            });
        }
        Ok(out)
    }

    /// Renames the namespaces written: `ns` becomes `map[ns]` (the set
    /// was encoded by another plan, `store::writer::Plan::adopt`). The
    /// writes keep their order: a namespace's run is found by its index,
    /// wherever it sits.
    pub fn renumber(&mut self, map: &[usize]) {
        for (ns, _, _) in &mut self.starts {
            if let Some(&to) = map.get(*ns) {
                *ns = to;
            }
        }
    }

    /// The memory it holds (bytes and writes).
    pub fn held_bytes(&self) -> usize {
        self.arena.len() + std::mem::size_of_val(self.writes.as_slice())
    }

    /// Writes and key + value bytes (of the namespaces not
    /// [`Packed::forget`]ten).
    pub fn size(&self) -> (u64, u64) {
        (0..self.starts.len())
            .filter(|&i| self.starts[i].0 != WRITTEN)
            .fold((0, 0), |(writes, bytes), i| {
                let (_, section, off) = self.section(i);
                let end = self
                    .starts
                    .get(i + 1)
                    .map_or(self.arena.len(), |&(_, _, next)| next);
                (writes + section.len() as u64, bytes + (end - off) as u64)
            })
    }

    /// The namespaces written and not [`Packed::forget`]ten, each with its
    /// number of writes.
    pub fn namespaces(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.starts.len()).filter_map(|i| {
            let (ns, writes, _) = self.section(i);
            (ns != WRITTEN).then_some((ns, writes.len()))
        })
    }

    /// Namespace `ns`'s writes are written elsewhere (ingested on their
    /// own): no merge or set made of this one holds them any more. Their
    /// bytes stay until the whole run is dropped.
    pub fn forget(&mut self, ns: usize) {
        for (n, _, _) in &mut self.starts {
            if *n == ns {
                *n = WRITTEN;
            }
        }
    }

    /// The `i`th namespace written: its index, its writes, and the arena
    /// offset of the first one's key.
    fn section(&self, i: usize) -> (usize, &[Write], usize) {
        let (ns, first, off) = self.starts[i];
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.writes.len(), |&(_, next, _)| next);
        (ns, &self.writes[first..end], off)
    }

    /// The writes back as a normalized set (for engines that take sets).
    pub fn to_set(&self) -> WriteSet {
        let mut set = WriteSet::default();
        set.arena.reserve_exact(self.arena.len());
        set.ops.reserve_exact(self.writes.len());
        for (ns, _) in self.namespaces() {
            for (key, value) in self.run(ns) {
                set.write(ns, key, value);
            }
        }
        set
    }

    /// The writes of namespace `ns`, in key order.
    fn run(&self, ns: usize) -> Run<'_> {
        let (writes, off) = match self.starts.iter().position(|&(n, _, _)| n == ns) {
            Some(i) => {
                let (_, writes, off) = self.section(i);
                (writes, off)
            }
            None => (&self.writes[..0], 0),
        };
        Run {
            arena: &self.arena,
            writes: writes.iter(),
            off,
        }
    }
}

/// A namespace's writes in a [`Packed`], read front to back.
struct Run<'a> {
    arena: &'a [u8],
    writes: std::slice::Iter<'a, Write>,
    /// The arena offset of the next write's key.
    off: usize,
}

impl<'a> Iterator for Run<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let w = self.writes.next()?;
        let key_end = self.off + w.key_len as usize;
        let key = &self.arena[self.off..key_end];
        self.off = key_end;
        let value = (w.value_len != REMOVE).then(|| {
            let end = self.off + w.value_len as usize;
            let value = &self.arena[self.off..end];
            self.off = end;
            value
        });
        Some((key, value))
    }
}

/// The writes of namespace `ns` in `sets` (oldest first), merged into key
/// order with one write per key: of a key that several sets write, the
/// last set's write. `(key, None)` removes the key.
pub(crate) fn merged(sets: &[Packed], ns: usize) -> Merged<'_> {
    let mut merged = Merged {
        runs: sets.iter().map(|s| s.run(ns)).collect(),
        heap: BinaryHeap::with_capacity(sets.len()),
    };
    for set in 0..merged.runs.len() {
        merged.advance(set);
    }
    merged
}

/// Every namespace `sets` write (not [`Packed::forget`]ten), with its
/// writes in all of them, the largest first.
pub(crate) fn by_size(sets: &[Packed]) -> Vec<(usize, usize)> {
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    for (n, writes) in sets.iter().flat_map(Packed::namespaces) {
        *sizes.entry(n).or_default() += writes;
    }
    let mut order: Vec<(usize, usize)> = sizes.into_iter().collect();
    order.sort_by_key(|&(_, writes)| std::cmp::Reverse(writes));
    order
}

/// The iterator of [`merged`]: a k-way merge over the sets' runs of one
/// namespace, by a heap of each run's next write.
pub(crate) struct Merged<'a> {
    runs: Vec<Run<'a>>,
    heap: BinaryHeap<Head<'a>>,
}

/// A run's next write in [`Merged`]'s heap (a max-heap): the smallest key
/// is the greatest, and of equal keys the one of the latest set.
struct Head<'a> {
    key: &'a [u8],
    value: Option<&'a [u8]>,
    set: usize,
}

impl Ord for Head<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(self.key).then(self.set.cmp(&other.set))
    }
}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head<'_> {}

impl Merged<'_> {
    /// Puts run `set`'s next write on the heap, if it has one.
    fn advance(&mut self, set: usize) {
        if let Some((key, value)) = self.runs[set].next() {
            self.heap.push(Head { key, value, set });
        }
    }
}

impl<'a> Iterator for Merged<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        let Head { key, value, set } = self.heap.pop()?;
        self.advance(set);
        // Earlier sets' writes of the same key are overridden.
        while let Some(older) = self.heap.peek().filter(|h| h.key == key).map(|h| h.set) {
            self.heap.pop();
            self.advance(older);
        }
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::Xoshiro256PlusPlus;
    use rand::{RngExt, SeedableRng};

    use super::{Packed, merged};
    use crate::store::engine::WriteSet;
    use crate::store::engine::tests::{Written, random_write, writes};

    /// Sets written one after the other, normalized and packed (some of
    /// them empty, some without a namespace), merged per namespace: each
    /// key once, in byte order, with the last set's write, as a `BTreeMap`
    /// fed set after set gives. Each packed set also gives its writes back
    /// as the set it came from.
    #[test]
    fn merged_sets_keep_the_last_sets_write_of_each_key() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(12);
        for round in 0..60 {
            let mut want: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
            let sets: Vec<Packed> = (0..rng.random_range(0..7usize))
                .map(|s| {
                    let (set, packed) = random_packed(&mut rng, &mut want, &format!("{round}-{s}"));
                    assert_eq!(writes(&packed.to_set()), writes(&set), "round {round}");
                    assert_eq!(packed.size(), set.size(), "round {round}");
                    packed
                })
                .collect();
            let want: Vec<Written> = want.into_iter().collect();
            assert_eq!(merged_all(&sets), want, "round {round}");
        }
    }

    /// A namespace forgotten in every set is gone from each set's
    /// namespaces, size and writes given back, and from the merge; the
    /// other namespaces' are as they were.
    #[test]
    fn a_forgotten_namespace_is_gone_from_every_view() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(21);
        for round in 0..60 {
            let mut want: BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>> = BTreeMap::new();
            let mut sets: Vec<(WriteSet, Packed)> = (0..rng.random_range(1..6usize))
                .map(|s| random_packed(&mut rng, &mut want, &format!("{round}-{s}")))
                .collect();
            let gone = rng.random_range(0..3usize);
            for (_, packed) in &mut sets {
                packed.forget(gone);
            }
            for (set, packed) in &sets {
                let kept: Vec<Written> = writes(set)
                    .into_iter()
                    .filter(|((ns, _), _)| *ns != gone)
                    .collect();
                assert_eq!(writes(&packed.to_set()), kept, "round {round}");
                assert!(
                    packed.namespaces().all(|(ns, _)| ns != gone),
                    "round {round}"
                );
                let keys = packed.namespaces().map(|(_, w)| w as u64).sum::<u64>();
                let bytes = kept
                    .iter()
                    .map(|((_, k), v)| (k.len() + v.as_ref().map_or(0, Vec::len)) as u64)
                    .sum::<u64>();
                assert_eq!(packed.size(), (keys, bytes), "round {round}");
                assert_eq!(keys, kept.len() as u64, "round {round}");
            }
            let packed: Vec<Packed> = sets.into_iter().map(|(_, p)| p).collect();
            let want: Vec<Written> = want
                .into_iter()
                .filter(|((ns, _), _)| *ns != gone)
                .collect();
            assert_eq!(merged_all(&packed), want, "round {round}");
        }
    }

    /// A random normalized set over namespaces 0..3 (its writes also
    /// recorded in `want`, later ones overriding) and its packing; values
    /// start with `tag`.
    fn random_packed(
        rng: &mut Xoshiro256PlusPlus,
        want: &mut BTreeMap<(usize, Vec<u8>), Option<Vec<u8>>>,
        tag: &str,
    ) -> (WriteSet, Packed) {
        let mut set = WriteSet::default();
        for n in 0..rng.random_range(0..60usize) {
            let ns = rng.random_range(0..3usize);
            let key: Vec<u8> = (0..rng.random_range(0..4usize))
                .map(|_| [0u8, b'a', b'b', 0xff][rng.random_range(0..4usize)])
                .collect();
            random_write(rng, &mut set, want, ns, key, format!("{tag}-{n}"));
        }
        set.normalize();
        let packed = Packed::of(&set).expect("pack");
        (set, packed)
    }

    /// Every namespace's merge of `sets`, namespace after namespace.
    fn merged_all(sets: &[Packed]) -> Vec<Written> {
        (0..3)
            .flat_map(|ns| {
                merged(sets, ns).map(move |(k, v)| ((ns, k.to_vec()), v.map(<[u8]>::to_vec)))
            })
            .collect()
    }
}
