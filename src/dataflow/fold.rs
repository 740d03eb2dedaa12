//! The per-record fold: an upsert-style stateful operator that keeps one
//! aggregate per live record of one dataflow and emits, for every time, the
//! records whose aggregate changed (old and new).
//!
//! Invariant: ops of a time are applied only once both inputs' frontiers have
//! passed that time, per record in (seq, src) order, each against the
//! watermark its event saw; then every record that the time's final watermark
//! expires is removed. So the state after a time equals the sequential model
//! after the same prefix of events, whatever the batching. Memory grows with
//! live records, not with events: ops are dropped once applied.

use std::collections::{BTreeMap, BTreeSet};

/// Hash maps of the fold: iteration order never reaches output (changes are
/// sorted before they leave), so a fast fixed-seed hasher is fine.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;

use super::ops::{Op, OpKind, RecKey};
use crate::model::Record;

/// One output of the fold: a record's aggregate before and after a time, or a
/// count of late ops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Folded {
    Changed {
        key: RecKey,
        old: Option<Record>,
        new: Option<Record>,
    },
    Late(u64),
}

/// What waits for a time to complete: a capability to emit at it, its ops,
/// and the largest watermark reported for it.
type Pending = (
    Option<timely::dataflow::operators::Capability<u64>>,
    Vec<Op>,
    i64,
);

struct Entry {
    rec: Record,
    retention: Option<u64>,
}

impl Entry {
    fn deadline(&self) -> Option<i64> {
        self.retention.map(|r| {
            self.rec
                .last_seen
                .saturating_add(r.min(i64::MAX as u64) as i64)
        })
    }
}

/// Builds the fold for one dataflow. `watermarks` carries each source's
/// watermark at the end of a time and is broadcast to every worker.
pub(crate) fn fold<'s>(
    ops: StreamVec<'s, u64, Op>,
    watermarks: StreamVec<'s, u64, i64>,
    initial_watermark: i64,
    name: &str,
) -> StreamVec<'s, u64, (Folded, u64, isize)> {
    let exchange = Exchange::new(|op: &Op| op.key.shard());
    ops.binary_frontier(watermarks, exchange, Pipeline, name, move |_cap, _info| {
        let mut state: HashMap<RecKey, Entry> = HashMap::default();
        let mut expiry: BTreeSet<(i64, RecKey)> = BTreeSet::new();
        let mut stash: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut watermark = initial_watermark;
        move |(input, frontier), (wms, wm_frontier), output| {
            input.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                let slot = stash
                    .entry(t)
                    .or_insert_with(|| (None, Vec::new(), i64::MIN));
                if slot.0.is_none() {
                    slot.0 = cap.retain_least(output.output_index());
                }
                slot.1.append(data);
            });
            wms.for_each(|cap, data| {
                let Some(&t) = cap.least() else { return };
                let slot = stash
                    .entry(t)
                    .or_insert_with(|| (None, Vec::new(), i64::MIN));
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
            while let Some((&t, _)) = stash.first_key_value() {
                if frontier.less_equal(&t) || wm_frontier.less_equal(&t) {
                    break;
                }
                let Some((_, (cap, mut ops, wm))) = stash.pop_first() else {
                    break;
                };
                watermark = watermark.max(wm);
                let mut out: Vec<(Folded, u64, isize)> = Vec::new();
                apply_time(&mut state, &mut expiry, &mut ops, watermark, t, &mut out);
                if let Some(cap) = cap
                    && !out.is_empty()
                {
                    output.session(&cap).give_iterator(out.into_iter());
                }
            }
        }
    })
}

/// Applies the ops of time `t` and expires what `watermark` ends.
fn apply_time(
    state: &mut HashMap<RecKey, Entry>,
    expiry: &mut BTreeSet<(i64, RecKey)>,
    ops: &mut [Op],
    watermark: i64,
    t: u64,
    out: &mut Vec<(Folded, u64, isize)>,
) {
    ops.sort_by(|a, b| (&a.key, a.seq, a.src).cmp(&(&b.key, b.seq, b.src)));
    // Records touched at this time, with their aggregate before it.
    let mut before: HashMap<RecKey, Option<Record>> = HashMap::default();
    let mut late = 0u64;
    let mut i = 0;
    while i < ops.len() {
        let mut j = i;
        while j < ops.len() && ops[j].key == ops[i].key {
            j += 1;
        }
        let key = ops[i].key.clone();
        let mut cur = state.remove(&key);
        if let Some(e) = &cur
            && let Some(d) = e.deadline()
        {
            expiry.remove(&(d, key.clone()));
        }
        before
            .entry(key.clone())
            .or_insert_with(|| cur.as_ref().map(|e| e.rec.clone()));
        for op in ops[i..j].iter_mut() {
            if let Some(e) = &cur
                && let Some(d) = e.deadline()
                && d <= op.wm
            {
                cur = None;
            }
            match std::mem::replace(&mut op.kind, OpKind::Delete) {
                OpKind::Load(rec) => {
                    cur = Some(Entry {
                        rec,
                        retention: op.retention,
                    })
                }
                kind => {
                    if let Some(r) = op.retention
                        && op.time.saturating_add(r.min(i64::MAX as u64) as i64) <= op.wm
                    {
                        late += 1;
                        continue;
                    }
                    match kind {
                        OpKind::Assert(props) => match &mut cur {
                            Some(e) => {
                                e.rec.count += 1;
                                if op.time >= e.rec.last_seen {
                                    e.rec.props = props;
                                }
                                e.rec.first_seen = e.rec.first_seen.min(op.time);
                                e.rec.last_seen = e.rec.last_seen.max(op.time);
                                e.retention = op.retention;
                            }
                            None => {
                                cur = Some(Entry {
                                    rec: Record {
                                        count: 1,
                                        first_seen: op.time,
                                        last_seen: op.time,
                                        props,
                                    },
                                    retention: op.retention,
                                })
                            }
                        },
                        _ => cur = None,
                    }
                }
            }
        }
        if let Some(e) = cur {
            if let Some(d) = e.deadline() {
                expiry.insert((d, key.clone()));
            }
            state.insert(key, e);
        }
        i = j;
    }
    // Expire everything the time's final watermark ends.
    while let Some((d, _)) = expiry.first() {
        if *d > watermark {
            break;
        }
        let Some((_, key)) = expiry.pop_first() else {
            break;
        };
        if let Some(e) = state.remove(&key) {
            before.entry(key).or_insert(Some(e.rec));
        }
    }
    let mut changed: Vec<(RecKey, Option<Record>)> = before.into_iter().collect();
    changed.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, old) in changed {
        let new = state.get(&key).map(|e| e.rec.clone());
        if old != new {
            out.push((Folded::Changed { key, old, new }, t, 1));
        }
    }
    if late > 0 {
        out.push((Folded::Late(late), t, 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compact_str::CompactString;

    fn op(key: &str, seq: u64, wm: i64, time: i64, retention: Option<u64>, kind: OpKind) -> Op {
        Op {
            key: RecKey::Node(key.into()),
            seq,
            src: 0,
            wm,
            time,
            retention,
            kind,
        }
    }

    fn assert_op(key: &str, seq: u64, wm: i64, time: i64, props: &str) -> Op {
        op(
            key,
            seq,
            wm,
            time,
            Some(10),
            OpKind::Assert(CompactString::from(props)),
        )
    }

    #[test]
    fn expiry_restarts_and_late_events_are_counted() {
        let mut state = HashMap::default();
        let mut expiry = BTreeSet::new();
        let mut out = Vec::new();
        // a at 0; then an event at 20 (W before = 0) on b; then a again at 25 with W = 20:
        // a (last_seen 0, retention 10) expired at W = 20 and starts anew.
        let mut ops = vec![
            assert_op("n:a", 0, i64::MIN, 0, "{}"),
            assert_op("n:b", 1, 0, 20, "{}"),
            assert_op("n:a", 2, 20, 25, r#"{"x":1}"#),
            // late for the rule: 5 + 10 <= 25
            assert_op("n:a", 3, 25, 5, r#"{"x":2}"#),
        ];
        apply_time(&mut state, &mut expiry, &mut ops, 25, 1, &mut out);
        let a = &state[&RecKey::Node("n:a".into())].rec;
        assert_eq!((a.count, a.first_seen, a.last_seen), (1, 25, 25));
        assert_eq!(a.props, r#"{"x":1}"#);
        assert!(out.contains(&(Folded::Late(1), 1, 1)));
        // W = 35 expires b (20 + 10 <= 35) and a (25 + 10 <= 35).
        let mut out = Vec::new();
        apply_time(&mut state, &mut expiry, &mut [], 35, 2, &mut out);
        assert!(state.is_empty());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn delete_then_reassert_starts_a_new_record() {
        let mut state = HashMap::default();
        let mut expiry = BTreeSet::new();
        let mut out = Vec::new();
        let mut ops = vec![
            op("n:a", 0, i64::MIN, 5, None, OpKind::Assert("".into())),
            op("n:a", 1, 5, 6, None, OpKind::Assert("".into())),
            op("n:a", 2, 6, 7, None, OpKind::Delete),
            op("n:a", 3, 7, 3, None, OpKind::Assert("".into())),
        ];
        apply_time(&mut state, &mut expiry, &mut ops, 7, 1, &mut out);
        let a = &state[&RecKey::Node("n:a".into())].rec;
        assert_eq!((a.count, a.first_seen, a.last_seen), (1, 3, 3));
        // Nothing changed relative to "before" is not emitted twice.
        assert_eq!(out.len(), 1);
    }
}
