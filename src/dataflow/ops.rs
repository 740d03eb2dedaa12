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

use crate::model::{Ident, Record, shard, split_ident};
use crate::spec::{DataflowPlan, Decoded};

/// The identity of a record inside one dataflow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum RecKey {
    Node(Ident),
    /// (edge type, from, to)
    Edge(CompactString, Ident, Ident),
    /// An identity link, `a < b`.
    Link(Ident, Ident),
}

impl RecKey {
    /// The hash that decides which worker owns the record (`model::shard`).
    pub fn shard(&self) -> u64 {
        match self {
            RecKey::Node(id) => shard::node(id),
            RecKey::Edge(t, from, _) => shard::edge(t, from),
            RecKey::Link(a, b) => shard::link(a, b),
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
    Load(Record),
}

/// One op for one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Op {
    pub key: RecKey,
    /// Position of the event in its source (partition order).
    pub seq: u64,
    /// The source (partition) the event came from.
    pub src: u32,
    /// The dataflow's watermark before this event; `i64::MIN` when none.
    pub wm: i64,
    /// The event time.
    pub time: i64,
    /// The rule's retention in ms.
    pub retention: Option<u64>,
    pub kind: OpKind,
}

/// Per-dataflow lookup of retentions, for ops rebuilt from the store.
#[derive(Clone, Debug, Default)]
pub(crate) struct Retentions {
    nodes: BTreeMap<String, Option<u64>>,
    edges: BTreeMap<String, Option<u64>>,
    /// (type pair sorted) -> retention of the first identity rule linking them.
    links: BTreeMap<(String, String), Option<u64>>,
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
                    let k = if x.node_type <= y.node_type {
                        (x.node_type.clone(), y.node_type.clone())
                    } else {
                        (y.node_type.clone(), x.node_type.clone())
                    };
                    r.links.entry(k).or_insert(i.retention);
                }
            }
        }
        r.default_link = plan.identity.first().and_then(|i| i.retention);
        r
    }

    pub fn of(&self, key: &RecKey) -> Option<u64> {
        match key {
            RecKey::Node(id) => self.nodes.get(split_ident(id).0).copied().flatten(),
            RecKey::Edge(t, _, _) => self.edges.get(t.as_str()).copied().flatten(),
            RecKey::Link(a, b) => {
                let (ta, tb) = (split_ident(a).0, split_ident(b).0);
                let k = if ta <= tb { (ta, tb) } else { (tb, ta) };
                self.links
                    .get(&(k.0.to_string(), k.1.to_string()))
                    .copied()
                    .unwrap_or(self.default_link)
            }
        }
    }
}

/// Turns the decoded events of one dataflow into ops, keeping its watermark.
pub(crate) struct Feeder {
    plan: DataflowPlan,
    /// Largest event time read so far (`i64::MIN`: none).
    pub watermark: i64,
    scratch: BTreeMap<RecKey, (Option<u64>, Vec<CompactString>)>,
}

impl Feeder {
    pub fn new(plan: DataflowPlan, watermark: i64) -> Feeder {
        Feeder {
            plan,
            watermark,
            scratch: BTreeMap::new(),
        }
    }

    /// Appends the ops of one event to `out` and advances the watermark.
    /// A record asserted by several rules of this event counts once; its
    /// props are merged key by key, later rules winning.
    pub fn feed(&mut self, ev: Decoded, seq: u64, src: u32, out: &mut Vec<Op>) {
        let wm = self.watermark;
        self.scratch.clear();
        for (rule, id, props) in ev.nodes {
            let ret = self.plan.nodes[rule].retention;
            push_scratch(&mut self.scratch, RecKey::Node(id), ret, props);
        }
        for (rule, from, to, props) in ev.edges {
            let r = &self.plan.edges[rule];
            let key = RecKey::Edge(CompactString::from(r.edge_type.as_str()), from, to);
            push_scratch(&mut self.scratch, key, r.retention, props);
        }
        for (rule, a, b) in ev.links {
            let ret = self.plan.identity[rule].retention;
            push_scratch(
                &mut self.scratch,
                RecKey::Link(a, b),
                ret,
                CompactString::default(),
            );
        }
        for (key, (retention, props)) in std::mem::take(&mut self.scratch) {
            let kind = if ev.delete {
                OpKind::Delete
            } else {
                OpKind::Assert(merge_props(props))
            };
            out.push(Op {
                key,
                seq,
                src,
                wm,
                time: ev.time,
                retention,
                kind,
            });
        }
        self.watermark = self.watermark.max(ev.time);
    }
}

fn push_scratch(
    scratch: &mut BTreeMap<RecKey, (Option<u64>, Vec<CompactString>)>,
    key: RecKey,
    retention: Option<u64>,
    props: CompactString,
) {
    scratch
        .entry(key)
        .or_insert_with(|| (retention, Vec::new()))
        .1
        .push(props);
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
