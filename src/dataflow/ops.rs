//! What flows from the sources into the per-record fold: one `Op` per record
//! that an event asserts or retracts, and the `Feeder` that turns decoded
//! events into ops for one dataflow.
//!
//! Invariant: the feeder sees a partition's events in partition order and
//! stamps each op with the dataflow's watermark *before* its event (`wm`) and
//! the event's position (`seq`), so the fold can replay the sequential
//! semantics exactly whatever the batching.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::symbols::{Sym, SymCache, TableFull};
use crate::model::{Change, DataflowName, Record, shard, split_ident};
use crate::spec::{DataflowPlan, Decoded, IdIndex, Plan};

/// The identity of a record inside one dataflow: small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum RecKey {
    Node(Sym),
    /// (edge type as its index in the plan's `edge_types`, from, to)
    Edge(u16, Sym, Sym),
    /// An identity link, `a < b` by text.
    Link(Sym, Sym),
}

/// Hashes by [`RecKey::local_hash`] (cheap; never leaves the process:
/// records are routed by `Op::shard`, not by this hash).
impl std::hash::Hash for RecKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.local_hash());
    }
}

/// Where [`RecKey::order`] puts a key: the low [`ORDER_INDEX_BITS`] bits are
/// left for an index.
pub(crate) const ORDER_INDEX_BITS: u32 = 46;

impl RecKey {
    /// The hash of the fold's map (`records.rs`, which places an entry by
    /// the hash's low bits and tags it with the top 7). A node's low bits
    /// are its symbol's index: nodes that sort near each other sit near
    /// each other in the map, so a time's node ops, sorted by key, sweep
    /// the map instead of jumping around it, and no two nodes share a
    /// start (indexes are distinct; only the table's size folds them). An
    /// edge or a link is mixed in full (murmur3's finalizer): keying them
    /// by their first index as well would crowd a node with many edges
    /// into one place.
    pub fn local_hash(self) -> u64 {
        const LOW: u64 = (1 << 57) - 1;
        match self {
            RecKey::Node(a) => {
                let a = u64::from(a.index());
                (mix(a) & !LOW) | a
            }
            RecKey::Edge(t, a, b) => {
                mix((u64::from(a.index()) << 32 | u64::from(b.index())) ^ u64::from(t) << 48)
            }
            RecKey::Link(a, b) => mix(u64::from(a.index()) << 32 | u64::from(b.index()) ^ 1 << 63),
        }
    }

    /// The key's place in `RecKey`'s order as an integer: variant, edge
    /// type and both symbols' indexes in its top 82 bits, the low
    /// [`ORDER_INDEX_BITS`] zero. Two keys compare as their `order`s do, so
    /// a time's ops are sorted as plain integers (`records.rs`).
    pub fn order(self) -> u128 {
        let (variant, t, a, b) = match self {
            RecKey::Node(a) => (0u128, 0u16, a.index(), 0u32),
            RecKey::Edge(t, a, b) => (1, t, a.index(), b.index()),
            RecKey::Link(a, b) => (2, 0, a.index(), b.index()),
        };
        variant << 126
            | u128::from(t) << 110
            | u128::from(a) << 78
            | u128::from(b) << ORDER_INDEX_BITS
    }
}

/// murmur3's 64-bit finalizer: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// What the dataflow knows of the plan's names, by index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Names {
    /// Dataflow names, in plan order.
    pub dataflows: Vec<DataflowName>,
    /// Edge types, in the order of `Plan::edge_types`.
    pub edge_types: Vec<CompactString>,
    /// Whether an edge type keeps its reverse index, by the same index.
    pub reverse: Vec<bool>,
    /// Whether an edge type has rules in one definition only, by the same
    /// index: each of its edges then has one contributor (`tally.rs`).
    pub one_source: Vec<bool>,
}

impl Names {
    pub fn of(plan: &Plan) -> Names {
        Names {
            dataflows: plan
                .dataflows
                .iter()
                .map(|d| CompactString::from(d.name.as_str()))
                .collect(),
            edge_types: plan
                .edge_types
                .keys()
                .map(|t| CompactString::from(t.as_str()))
                .collect(),
            reverse: plan.edge_types.values().map(|e| e.reverse).collect(),
            one_source: plan
                .edge_types
                .keys()
                .map(|t| {
                    let defines = |d: &&DataflowPlan| d.edges.iter().any(|e| &e.edge_type == t);
                    plan.dataflows.iter().filter(defines).count() == 1
                })
                .collect(),
        }
    }

    /// The index of an edge type (the plan declares every type a rule uses).
    pub fn edge_type(&self, name: &str) -> Option<u16> {
        self.edge_types
            .binary_search_by(|t| t.as_str().cmp(name))
            .ok()
            .and_then(|i| u16::try_from(i).ok())
    }
}

impl RecKey {
    /// The key of a stored contribution, and the hash that decides its owner
    /// (`model::shard`). `last` remembers the previous contribution's first
    /// identifier.
    pub fn of_change(
        c: &Change,
        names: &Names,
        last: &mut LastKeyed,
    ) -> Result<Option<(RecKey, u64)>, TableFull> {
        Ok(match c {
            Change::Node { id, .. } => {
                let (sym, h) = last.first(id)?;
                Some((RecKey::Node(sym), h))
            }
            Change::Edge {
                edge_type,
                from,
                to,
                ..
            } => match names.edge_type(edge_type) {
                Some(t) => {
                    let (from_sym, _) = last.first(from)?;
                    let h = last.edge_shard(t, || shard::edge(edge_type, from));
                    Some((RecKey::Edge(t, from_sym, Sym::intern(to)?), h))
                }
                None => None,
            },
            Change::Link { a, b, .. } => Some((
                RecKey::Link(last.first(a)?.0, Sym::intern(b)?),
                shard::link(a, b),
            )),
            _ => None,
        })
    }
}

/// The first identifier of the last stored contribution keyed (a node's,
/// an edge's source, a link's first end), interned, with its hashes. Stored
/// records come in key order, so an edge record's items name their source
/// one after another, as a node's contributions by several dataflows name
/// the node: each is interned and hashed once.
#[derive(Default)]
pub(crate) struct LastKeyed {
    text: CompactString,
    /// Its symbol and `shard::node` hash; `None` before the first.
    sym: Option<(Sym, u64)>,
    /// The edge type it was last the source of, and that edge's shard.
    edge: Option<(u16, u64)>,
}

impl LastKeyed {
    /// `text` interned, with its `shard::node` hash.
    fn first(&mut self, text: &str) -> Result<(Sym, u64), TableFull> {
        if let Some(known) = self.sym
            && self.text == text
        {
            return Ok(known);
        }
        let h = shard::node(text);
        let known = (Sym::intern_hashed(text, h)?, h);
        self.text = CompactString::from(text);
        self.sym = Some(known);
        self.edge = None;
        Ok(known)
    }

    /// The shard of an edge of type `t` from the identifier last given to
    /// [`LastKeyed::first`] (`hash` computes it when not known).
    fn edge_shard(&mut self, t: u16, hash: impl FnOnce() -> u64) -> u64 {
        match self.edge {
            Some((known, h)) if known == t => h,
            _ => {
                let h = hash();
                self.edge = Some((t, h));
                h
            }
        }
    }
}

/// What an op does to its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum OpKind {
    /// An event asserts the record with these props.
    Assert(CompactString),
    /// An event retracts the record.
    Delete,
    /// State rebuilt from the store on start.
    Load(Box<Record>),
}

/// One op for one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Op {
    pub key: RecKey,
    /// `model::shard` of the record: decides the worker that owns it.
    pub shard: u64,
    /// Position of the event: its partition and offset (`seq_of`), so
    /// sorting by it orders each partition's events as read.
    pub seq: u64,
    /// The dataflow's watermark before this event; `i64::MIN` when none.
    pub wm: i64,
    /// The event time.
    pub time: i64,
    /// The rule's retention.
    pub retention: Retention,
    pub kind: OpKind,
}

/// A rule's retention in ms, in 8 bytes where `Option<u64>` takes 16 (an
/// op is sorted, exchanged and buffered by value: 80 bytes instead of 88;
/// the fold's records keep it too). `u64::MAX` ms (585 million years) is
/// none: its deadline saturates at `i64::MAX`, which no watermark reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Retention(u64);

impl Retention {
    pub const NONE: Retention = Retention(u64::MAX);

    pub fn new(ms: Option<u64>) -> Retention {
        ms.map_or(Retention::NONE, Retention)
    }

    /// The retention in ms, `None` for none.
    pub fn get(self) -> Option<u64> {
        (self != Retention::NONE).then_some(self.0)
    }
}

/// Per-dataflow lookup of retentions, for ops rebuilt from the store: by
/// the types a stored contribution names in its text, so that the rebuild
/// looks no symbol's text up and makes no key for a lookup.
#[derive(Clone, Debug, Default)]
pub(crate) struct Retentions {
    nodes: BTreeMap<String, Option<u64>>,
    edges: BTreeMap<String, Option<u64>>,
    /// Type pair, the lesser first -> retention of the first identity rule
    /// linking them.
    links: BTreeMap<String, BTreeMap<String, Option<u64>>>,
    default_link: Option<u64>,
}

impl Retentions {
    pub fn new(plan: &DataflowPlan) -> Retentions {
        let mut r = Retentions::default();
        for n in &plan.nodes {
            r.nodes.entry(n.node_type.clone()).or_insert(n.retention);
        }
        for e in &plan.edges {
            r.edges.entry(e.edge_type.clone()).or_insert(e.retention);
        }
        for i in &plan.identity {
            for x in &i.ids {
                for y in &i.ids {
                    let (lo, hi) = ordered(&x.node_type, &y.node_type);
                    r.links
                        .entry(lo.to_string())
                        .or_default()
                        .entry(hi.to_string())
                        .or_insert(i.retention);
                }
            }
        }
        r.default_link = plan.identity.first().and_then(|i| i.retention);
        r
    }

    /// The retention of the record a stored contribution `c` keeps.
    pub fn of(&self, c: &Change) -> Retention {
        Retention::new(match c {
            Change::Node { id, .. } => self.nodes.get(split_ident(id).0).copied().flatten(),
            Change::Edge { edge_type, .. } => self.edges.get(edge_type.as_str()).copied().flatten(),
            Change::Link { a, b, .. } => {
                let (lo, hi) = ordered(split_ident(a).0, split_ident(b).0);
                self.links
                    .get(lo)
                    .and_then(|m| m.get(hi))
                    .copied()
                    .unwrap_or(self.default_link)
            }
            _ => None,
        })
    }
}

/// `a` and `b`, the lesser first.
fn ordered<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Turns the decoded events of one dataflow into ops, keeping its watermark.
pub(crate) struct Feeder {
    plan: DataflowPlan,
    /// Every edge rule's type, as its index in the plan's edge types, and
    /// its shard hash over that type, to finish per edge.
    edges: Vec<(u16, shard::EdgeSeed)>,
    /// Whether two rules can assert one record in one event (two node
    /// rules of a type, two edge rules of a type, two identity rules: one
    /// rule's records are distinct); only then is each of an event's
    /// records looked for among those before it, to be merged.
    repeats: bool,
    /// Largest event time read so far (`i64::MIN`: none).
    pub watermark: i64,
    /// The records of one event: key, owner hash, retention, props.
    scratch: Vec<(RecKey, u64, Retention, CompactString)>,
}

impl Feeder {
    pub fn new(plan: DataflowPlan, names: &Names, watermark: i64) -> Feeder {
        let edges: Vec<(u16, shard::EdgeSeed)> = plan
            .edges
            .iter()
            .map(|r| {
                let t = names.edge_type(&r.edge_type).unwrap_or(u16::MAX);
                (t, shard::EdgeSeed::new(&r.edge_type))
            })
            .collect();
        let repeats = has_repeats(plan.nodes.iter().map(|r| r.node_type.as_str()))
            || has_repeats(edges.iter().map(|&(t, _)| t))
            || plan.identity.len() > 1;
        Feeder {
            plan,
            edges,
            repeats,
            watermark,
            scratch: Vec::new(),
        }
    }

    /// Appends the ops of one event to `out` and advances the watermark.
    /// A record asserted by several rules of this event counts once; its
    /// props are merged key by key, later rules winning.
    /// `ids` were prepared for `ev` ([`EventSyms::prepare`]); `symbols` is
    /// the worker's cache of the symbol table.
    fn feed(
        &mut self,
        ev: &mut Decoded,
        ids: &mut EventSyms,
        seq: u64,
        symbols: &mut SymCache,
        out: &mut Vec<Op>,
    ) -> Result<(), TableFull> {
        let wm = self.watermark;
        self.scratch.clear();
        ids.intern(ev, symbols)?;
        let ids = &*ids;
        for (rule, id, props) in ev.nodes.drain(..) {
            let (sym, h) = ids.get(id);
            push_scratch(
                &mut self.scratch,
                self.repeats,
                RecKey::Node(sym),
                h,
                Retention::new(self.plan.nodes[rule].retention),
                props,
            );
        }
        // Taken out (and put back, for its allocation) to read the
        // identifiers' text while moving the props.
        let mut edges = std::mem::take(&mut ev.edges);
        for (rule, from, to, props) in edges.drain(..) {
            let r = &self.plan.edges[rule];
            let (t, seed) = self.edges[rule];
            let key = RecKey::Edge(t, ids.get(from).0, ids.get(to).0);
            let h = seed.edge(ev.id(from));
            let ret = Retention::new(r.retention);
            push_scratch(&mut self.scratch, self.repeats, key, h, ret, props);
        }
        ev.edges = edges;
        for &(rule, a, b) in &ev.links {
            let key = RecKey::Link(ids.get(a).0, ids.get(b).0);
            let h = shard::link(ev.id(a), ev.id(b));
            let ret = Retention::new(self.plan.identity[rule].retention);
            let props = CompactString::default();
            push_scratch(&mut self.scratch, self.repeats, key, h, ret, props);
        }
        for (key, shard, retention, props) in self.scratch.drain(..) {
            let kind = if ev.delete {
                OpKind::Delete
            } else {
                OpKind::Assert(props)
            };
            out.push(Op {
                key,
                shard,
                seq,
                wm,
                time: ev.time,
                retention,
                kind,
            });
        }
        self.watermark = self.watermark.max(ev.time);
        Ok(())
    }
}

/// Events decoded one ahead of the feeder: when an event is decoded its
/// identifiers are hashed and their cache slots asked for, and its ops are
/// made only after the next record is decoded, so that the slots' cache
/// misses overlap that decoding instead of stalling the lookups (within one
/// event they overlapped only each other). Events are fed in the order
/// given.
#[derive(Default)]
pub(crate) struct Lookahead {
    events: [Decoded; 2],
    ids: [EventSyms; 2],
    /// The buffer the next record is decoded into.
    next: usize,
    /// The seq of the event waiting in the other buffer.
    waiting: Option<u64>,
}

impl Lookahead {
    /// Where to decode the next record.
    pub fn next(&mut self) -> &mut Decoded {
        &mut self.events[self.next]
    }

    /// The record just decoded into [`Lookahead::next`] is an event at
    /// `seq`: asks for its slots, then feeds the event before it.
    pub fn push(
        &mut self,
        seq: u64,
        feeder: &mut Feeder,
        symbols: &mut SymCache,
        out: &mut Vec<Op>,
    ) -> Result<(), TableFull> {
        let i = self.next;
        self.ids[i].prepare(&self.events[i], symbols);
        self.flush(feeder, symbols, out)?;
        self.waiting = Some(seq);
        self.next = 1 - i;
        Ok(())
    }

    /// Feeds the event waiting, if any (at the end of a batch: `feeder`
    /// is the one every event since the last flush was pushed with).
    pub fn flush(
        &mut self,
        feeder: &mut Feeder,
        symbols: &mut SymCache,
        out: &mut Vec<Op>,
    ) -> Result<(), TableFull> {
        if let Some(seq) = self.waiting.take() {
            let w = 1 - self.next;
            feeder.feed(&mut self.events[w], &mut self.ids[w], seq, symbols, out)?;
        }
        Ok(())
    }
}

/// One event's identifiers as symbols: the decoder holds each distinct
/// identifier of an event once (a playback event's 11 references are 4
/// identifiers), and each that a record names is interned once. One that
/// none names (a blocklisted identity id, an edge's end whose other end is
/// missing) is not: the table holds only identifiers of records.
#[derive(Default)]
struct EventSyms {
    /// Whether a record of the event names the identifier, by [`IdIndex`].
    named: Vec<bool>,
    /// The identifiers' hashes, by [`IdIndex`] (0 where not named).
    hashes: Vec<u64>,
    /// Their symbols, by [`IdIndex`] (only named ones are looked up).
    syms: Vec<Sym>,
}

impl EventSyms {
    /// Hashes the identifiers the records of `ev` name and asks for their
    /// cache slots, ahead of [`EventSyms::intern`].
    fn prepare(&mut self, ev: &Decoded, symbols: &SymCache) {
        self.named.clear();
        self.named.resize(ev.id_count(), false);
        let refs = ev.nodes.iter().map(|n| n.1);
        let refs = refs.chain(ev.edges.iter().flat_map(|e| [e.1, e.2]));
        for i in refs.chain(ev.links.iter().flat_map(|l| [l.1, l.2])) {
            if let Some(named) = self.named.get_mut(i as usize) {
                *named = true;
            }
        }
        let ids = (0..ev.id_count()).map(|i| (ev.id(i as IdIndex), self.named[i]));
        self.hashes.clear();
        self.hashes.extend(ids.map(|(text, named)| {
            if named {
                symbols.hash_and_prefetch(text)
            } else {
                0
            }
        }));
    }

    /// Interns the identifiers the records of `ev` name (prepared).
    fn intern(&mut self, ev: &Decoded, symbols: &mut SymCache) -> Result<(), TableFull> {
        let ids = (0..ev.id_count()).map(|i| (ev.id(i as IdIndex), self.named[i]));
        self.syms.clear();
        for ((text, named), &h) in ids.zip(&self.hashes) {
            self.syms.push(if named {
                symbols.intern_hashed(text, h)?
            } else {
                Sym::UNUSED
            });
        }
        Ok(())
    }

    /// The symbol and hash of identifier `i` (named by a record) of the
    /// event last interned.
    fn get(&self, i: IdIndex) -> (Sym, u64) {
        let i = i as usize;
        (self.syms[i], self.hashes[i])
    }
}

/// Adds a record of the event, or, when rules may `repeat` a record,
/// merges its props into the same record asserted by an earlier rule (the
/// first rule's retention stays).
fn push_scratch(
    scratch: &mut Vec<(RecKey, u64, Retention, CompactString)>,
    repeat: bool,
    key: RecKey,
    shard: u64,
    retention: Retention,
    props: CompactString,
) {
    let earlier = if repeat {
        scratch.iter_mut().find(|(k, ..)| *k == key)
    } else {
        None
    };
    match earlier {
        Some((_, _, _, old)) => {
            let merged = merge_props(vec![std::mem::take(old), props]);
            *old = merged;
        }
        None => scratch.push((key, shard, retention, props)),
    }
}

/// Whether any item occurs twice.
fn has_repeats<T: Ord>(items: impl Iterator<Item = T>) -> bool {
    let mut seen = std::collections::BTreeSet::new();
    items.into_iter().any(|x| !seen.insert(x))
}

/// Merges the props objects of several rules, later ones winning per key.
fn merge_props(mut props: Vec<CompactString>) -> CompactString {
    if props.len() <= 1 {
        return props.pop().unwrap_or_default();
    }
    let mut map = serde_json::Map::new();
    let mut any = false;
    for p in &props {
        if p.is_empty() {
            continue;
        }
        any = true;
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str::<serde_json::Value>(p) {
            map.extend(m);
        }
    }
    if !any {
        return CompactString::default();
    }
    CompactString::from(serde_json::to_string(&map).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_s_named_identifiers_are_interned_once_each() {
        let mut ev = Decoded::default();
        let texts = [("account", "ev-a"), ("profile", "ev-p"), ("title", "ev-t")];
        let refs: Vec<IdIndex> = texts
            .iter()
            .chain(&texts)
            .map(|(t, id)| ev.add_id(t, id))
            .collect();
        assert_eq!(refs, [0, 1, 2, 0, 1, 2], "an identifier is held once");
        // Read by a rule that then asserted nothing: not interned.
        let unnamed = ev.add_id("device", "ev-unnamed");
        for &i in &refs[..3] {
            ev.nodes.push((0, i, CompactString::default()));
        }
        let mut cache = SymCache::new();
        let mut ids = EventSyms::default();
        ids.prepare(&ev, &cache);
        ids.intern(&ev, &mut cache).unwrap();
        assert_eq!(ids.named, [true, true, true, false]);
        assert_eq!(ids.get(unnamed).0, Sym::UNUSED);
        for (i, (t, id)) in texts.iter().enumerate() {
            let text = format!("{t}:{id}");
            assert_eq!(ev.id(i as IdIndex), text);
            let (sym, h) = ids.get(i as IdIndex);
            assert_eq!(sym, Sym::intern(&text).unwrap(), "identifier {i}");
            assert_eq!(h, shard::node(&text), "identifier {i}");
        }
    }

    /// Whether the feeder of `defs`' only dataflow looks for repeated
    /// records, and the (key, kind) of the ops it makes of one event.
    fn ops_of(defs: &str, event: &str) -> (bool, Vec<(RecKey, OpKind)>) {
        let texts = [("d.toml".to_string(), defs.to_string())];
        let plan = crate::spec::load_texts(std::path::Path::new("defs"), &texts).unwrap();
        let names = Names::of(&plan);
        let d = plan.dataflows[0].clone();
        let mut ev = Decoded::default();
        let mut scratch = crate::spec::DecodeScratch::default();
        let verdict = d.decode_into(event.as_bytes(), &plan.identity, &mut scratch, &mut ev);
        assert_eq!(verdict, crate::spec::Verdict::Event);
        let mut feeder = Feeder::new(d, &names, i64::MIN);
        let (mut cache, mut ids, mut out) = (SymCache::new(), EventSyms::default(), Vec::new());
        ids.prepare(&ev, &cache);
        feeder
            .feed(&mut ev, &mut ids, 0, &mut cache, &mut out)
            .unwrap();
        let ops = out.into_iter().map(|op| (op.key, op.kind)).collect();
        (feeder.repeats, ops)
    }

    /// Rules that can assert one record in one event (two node rules of a
    /// type, two identity rules) make one op of it, props merged with the
    /// later rule winning; a dataflow whose rules cannot is fed without
    /// looking, and its records come out the same, once each.
    #[test]
    fn a_record_that_rules_repeat_is_one_op() {
        let head = "[source]\ntopic = \"t\"\nevent_time = \"ts\"\n";
        let node = |props: &str| {
            format!("[[nodes]]\ntype = \"user\"\nid = \"uid\"\nprops = {{ {props} }}\n")
        };
        let edge = "[[edges]]\ntype = \"used\"\nfrom = { type = \"user\", id = \"uid\" }\nto = { type = \"device\", id = \"dev\" }\n";
        let link = "[[identity]]\nids = [{ type = \"user\", id = \"uid\" }, { type = \"device\", id = \"dev\" }]\n";
        let event = r#"{"ts":1,"uid":"u1","dev":"d1","a":"x","b":"y"}"#;
        let once = format!("{head}{}{edge}{link}", node("a = \"a\""));
        let twice = format!(
            "{head}{}{}{edge}{link}{link}",
            node("a = \"a\", b = \"a\""),
            node("b = \"b\"")
        );
        let (repeats, single) = ops_of(&once, event);
        assert!(!repeats);
        let (repeats, merged) = ops_of(&twice, event);
        assert!(repeats);
        let keys = |ops: &[(RecKey, OpKind)]| ops.iter().map(|(k, _)| *k).collect::<Vec<_>>();
        assert_eq!(keys(&single), keys(&merged));
        assert_eq!(single.len(), 3, "{single:?}");
        assert_eq!(single[0].1, OpKind::Assert(r#"{"a":"x"}"#.into()));
        assert_eq!(merged[0].1, OpKind::Assert(r#"{"a":"x","b":"y"}"#.into()));
    }

    /// `RecKey::order` sorts as `RecKey`'s own order and leaves the index
    /// bits free, over random keys of every variant with indexes and types
    /// up to their largest (a field that spilled into another would show).
    #[test]
    fn a_key_s_order_sorts_as_the_key() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(11);
        let sym = |rng: &mut rand::rngs::Xoshiro256PlusPlus| {
            Sym::of_index(match rng.random_range(0..3) {
                0 => rng.random_range(0..4),
                1 => u32::MAX - rng.random_range(0..4),
                _ => rng.random(),
            })
        };
        let keys: Vec<RecKey> = (0..5_000)
            .map(|_| match rng.random_range(0..3) {
                0 => RecKey::Node(sym(&mut rng)),
                1 => RecKey::Edge(
                    [0, 1, u16::MAX][rng.random_range(0..3)],
                    sym(&mut rng),
                    sym(&mut rng),
                ),
                _ => RecKey::Link(sym(&mut rng), sym(&mut rng)),
            })
            .collect();
        let index_bits = (1u128 << ORDER_INDEX_BITS) - 1;
        for (i, a) in keys.iter().enumerate() {
            assert_eq!(a.order() & index_bits, 0, "{a:?}");
            let b = keys[(i * 7 + 3) % keys.len()];
            assert_eq!(a.order().cmp(&b.order()), a.cmp(&b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn the_map_hash_keeps_nodes_in_order_and_spreads_a_hub_s_edges() {
        let low = |k: RecKey| k.local_hash() & ((1 << 57) - 1);
        let hub = Sym::intern("account:hash-hub").unwrap();
        let others: Vec<Sym> = (0..20_000)
            .map(|i| Sym::intern(&format!("title:hash-{i}")).unwrap())
            .collect();
        // Nodes: placed by their index, so distinct nodes start apart.
        for s in &others {
            assert_eq!(low(RecKey::Node(*s)), u64::from(s.index()));
        }
        // Edges and links of one node spread over a table of 2^15 buckets
        // about as random keys would (20 000 into 32 768: ~14 000 distinct
        // starts), not crowded into a few.
        let mask = (1u64 << 15) - 1;
        for key in [
            |h, o| RecKey::Edge(0, h, o),
            |h, o| RecKey::Edge(0, o, h),
            |h, o| RecKey::Link(h, o),
        ] {
            let starts: std::collections::BTreeSet<u64> = others
                .iter()
                .map(|o| key(hub, *o).local_hash() & mask)
                .collect();
            assert!(starts.len() > 13_000, "{}", starts.len());
        }
        // The tag (top 7 bits) varies among nodes too.
        let tags: std::collections::BTreeSet<u64> = others
            .iter()
            .map(|s| RecKey::Node(*s).local_hash() >> 57)
            .collect();
        assert_eq!(tags.len(), 128);
    }

    /// Keying stored contributions one after another (remembering the
    /// last first identifier) gives what keying each alone gives, over runs
    /// of one source's items, a node's several dataflows, edge types and
    /// links in any order.
    #[test]
    fn keying_in_sequence_equals_keying_each_alone() {
        use rand::{RngExt, SeedableRng};
        let names = Names {
            dataflows: vec!["d".into()],
            edge_types: vec!["played".into(), "watched".into()],
            reverse: vec![false, true],
            one_source: vec![true, true],
        };
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(7);
        let mut last = LastKeyed::default();
        let mut distinct_firsts = std::collections::BTreeSet::new();
        for _ in 0..5_000 {
            let pick = |rng: &mut rand::rngs::Xoshiro256PlusPlus, ty: &str| -> CompactString {
                format!("{ty}:seq-{}", rng.random_range(0..4)).into()
            };
            let c = match rng.random_range(0..4) {
                0 => Change::Node {
                    id: pick(&mut rng, "account"),
                    dataflow: "d".into(),
                    record: None,
                },
                1 | 2 => Change::Edge {
                    edge_type: ["played", "watched", "unknown"][rng.random_range(0..3)].into(),
                    from: pick(&mut rng, "account"),
                    to: pick(&mut rng, "title"),
                    dataflow: "d".into(),
                    reverse: false,
                    record: None,
                },
                _ => Change::Link {
                    a: pick(&mut rng, "account"),
                    b: pick(&mut rng, "device"),
                    dataflow: "d".into(),
                    mirrored: false,
                    record: None,
                },
            };
            let alone = RecKey::of_change(&c, &names, &mut LastKeyed::default()).unwrap();
            let seq = RecKey::of_change(&c, &names, &mut last).unwrap();
            assert_eq!(seq, alone, "{c:?}");
            if let Some((RecKey::Edge(_, from, _) | RecKey::Link(from, _), _)) = seq {
                distinct_firsts.insert(from);
            }
        }
        assert_eq!(
            distinct_firsts.len(),
            4,
            "the sequence repeats and changes sources"
        );
    }

    #[test]
    fn merged_props_later_rule_wins() {
        let m = merge_props(vec![
            r#"{"a":1,"b":2}"#.into(),
            r#"{"b":3}"#.into(),
            "".into(),
        ]);
        assert_eq!(m, r#"{"a":1,"b":3}"#);
        assert_eq!(merge_props(vec!["".into(), "".into()]), "");
        assert_eq!(merge_props(vec![r#"{"x":true}"#.into()]), r#"{"x":true}"#);
    }
}
