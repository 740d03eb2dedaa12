//! The per-record state of one dataflow on one worker: one aggregate per live
//! record, and an index of when records expire. [`Records::apply_time`]
//! applies one complete time's ops; [`Records::take_changes`] emits what
//! changed since it last did; the fold operator (`fold.rs`) decides when a
//! time is complete and how often changes are emitted.
//!
//! Invariants: after `apply_time`, the state equals the sequential model
//! after the same events: per record, ops in `seq` order, each against
//! the watermark its event saw; then every record that the time's final
//! watermark ends is gone. `take_changes` emits each record changed since
//! its last call once, with its aggregate now, so a reader of everything
//! emitted holds the same records as after per-time emission, with fewer
//! writes. Memory follows live records: ops are dropped once applied, the
//! set of changed records is a subset of the records, and the expiry index
//! holds each live record at most a bounded number of times (see
//! [`Expiry`]).

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::ops::{ORDER_INDEX_BITS, Op, OpKind, RecKey, Retention};
use crate::model::Record;

/// Hash maps of the fold, placed by [`RecKey::local_hash`] as it is:
/// iteration order never reaches output (the store sorts every write by
/// key, identity is a function of the set of links).
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Passes a key's one `write_u64` through as the hash ([`RecKey`]'s `Hash`
/// writes its `local_hash` and nothing else); any other write is mixed in.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One output of a time: a record's aggregate after the time, or a count of
/// late ops, or (time 0, when the collector tallies) a record rebuilt from
/// the store. `old_first_seen` is set for links only (identity retracts the
/// link's earlier first_seen); `existed` says whether the record was live
/// when its changes were last emitted (or loaded at time 0): the tally
/// counts a record of one contributor by it, without a map
/// (`tally::Tallier::record`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Folded {
    Changed {
        key: RecKey,
        /// For links: whether the link existed before the time, and its
        /// first_seen then.
        old_first_seen: Option<i64>,
        existed: bool,
        new: Option<Record>,
    },
    Late(u64),
    /// A stored record the fold loaded at time 0 (`fold::fold`'s `tally`).
    Loaded(RecKey),
}

/// A live record of the dataflow on this worker: 72 bytes, 88 with its key
/// in the map's slot (88 and 104 before `Emitted` became an enum and the
/// retention a sentinel-coded `u64`, [`Retention`]; the fold's map is most
/// of a replay's memory).
struct Entry {
    rec: Record,
    /// The rule's retention, as its op carried it.
    retention: Retention,
    /// What the record was at the last emission, if it changed since.
    since: Option<Emitted>,
}

impl Entry {
    /// Stands in for a record while it is taken out of its slot.
    fn placeholder() -> Entry {
        Entry {
            rec: Record {
                count: 0,
                first_seen: 0,
                last_seen: 0,
                props: compact_str::CompactString::const_new(""),
            },
            retention: Retention::NONE,
            since: None,
        }
    }

    fn retention(&self) -> Option<u64> {
        self.retention.get()
    }

    fn deadline(&self) -> Option<i64> {
        self.retention().map(|r| deadline(self.rec.last_seen, r))
    }
}

fn deadline(last_seen: i64, retention: u64) -> i64 {
    last_seen.saturating_add(retention.min(i64::MAX as u64) as i64)
}

/// When records expire, in buckets of deadlines: per retention, buckets of
/// `retention / 16` ms. A record is filed under the bucket of its deadline
/// when it is created and whenever its deadline moves to another bucket; an
/// older filing is left behind and skipped when its bucket comes due (the
/// record's real deadline is checked). So most ops cost no index update, and
/// a live record is filed at most ~17 times per retention.
#[derive(Default)]
struct Expiry {
    /// (retention, bucket) → keys filed there.
    buckets: BTreeMap<(u64, i64), Vec<RecKey>>,
}

impl Expiry {
    fn width(retention: u64) -> i64 {
        (retention / 16).clamp(1, i64::MAX as u64) as i64
    }

    fn bucket(deadline: i64, retention: u64) -> i64 {
        deadline.div_euclid(Expiry::width(retention))
    }

    /// Files `key` when its deadline moved to another bucket (or is new).
    fn refile(&mut self, key: RecKey, before: Option<(u64, i64)>, after: Option<&Entry>) {
        let Some(e) = after else { return };
        let (Some(r), Some(d)) = (e.retention(), e.deadline()) else {
            return;
        };
        let b = Expiry::bucket(d, r);
        if before != Some((r, b)) {
            self.buckets.entry((r, b)).or_default().push(key);
        }
    }

    /// Takes every filing whose bucket may hold a deadline `<= watermark`,
    /// with the bucket it was filed under.
    fn due(&mut self, watermark: i64, out: &mut Vec<((u64, i64), RecKey)>) {
        let due: Vec<(u64, i64)> = self
            .buckets
            .keys()
            .filter(|(r, b)| b.saturating_mul(Expiry::width(*r)) <= watermark)
            .copied()
            .collect();
        for k in due {
            if let Some(keys) = self.buckets.remove(&k) {
                out.extend(keys.into_iter().map(|key| (k, key)));
            }
        }
    }
}

/// What a record was when its changes were last emitted: absent, present,
/// or (links) present with this first_seen. 16 bytes as an `Option`.
#[derive(Clone, Copy)]
enum Emitted {
    Absent,
    Present,
    Link(i64),
}

impl Emitted {
    fn of(key: RecKey, entry: Option<&Entry>) -> Emitted {
        match (entry, key) {
            (None, _) => Emitted::Absent,
            (Some(e), RecKey::Link(..)) => Emitted::Link(e.rec.first_seen),
            (Some(_), _) => Emitted::Present,
        }
    }

    fn existed(self) -> bool {
        !matches!(self, Emitted::Absent)
    }

    fn link_first_seen(self) -> Option<i64> {
        match self {
            Emitted::Link(first_seen) => Some(first_seen),
            _ => None,
        }
    }
}

/// The live records of one dataflow on one worker.
#[derive(Default)]
pub(crate) struct Records {
    state: HashMap<RecKey, Entry>,
    expiry: Expiry,
    /// Records changed since [`Records::take_changes`] last emitted, each
    /// once: a record changed by many times in a row is emitted once, with
    /// its aggregate at the end. What a live one was then is its entry's
    /// `since`; what a gone one was, `gone`'s.
    changed: Vec<RecKey>,
    /// Records changed since the last emission and gone now: what they
    /// were at the last emission.
    gone: HashMap<RecKey, Emitted>,
    /// Reused buffer of due filings.
    due: Vec<((u64, i64), RecKey)>,
    /// Reused order of a time's ops.
    order: Order,
}

impl Records {
    /// The number of live records.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// The aggregate of a live record.
    #[cfg(test)]
    pub fn get(&self, key: &RecKey) -> Option<&Record> {
        self.state.get(key).map(|e| &e.rec)
    }

    /// Whether a record changed since the last [`Records::take_changes`]
    /// (or one of its changes is still to be emitted).
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Applies the ops of one time and expires what `watermark` (the time's
    /// final watermark) ends; returns how many ops were late. What changed
    /// is emitted by [`Records::take_changes`].
    ///
    /// The records are looked up [`LOOKUPS`] at a time (one call that finds
    /// them all), so the processor waits for their cache misses together
    /// rather than one after another; inserts and removals follow each
    /// batch.
    pub fn apply_time(&mut self, ops: &mut [Op], watermark: i64) -> u64 {
        let mut late = 0u64;
        let Records {
            state,
            expiry,
            changed,
            gone,
            order,
            ..
        } = self;
        order.sort(ops);
        let mut books = Books {
            expiry,
            changed,
            gone,
            after: Vec::with_capacity(LOOKUPS),
        };
        let mut groups = order.groups();
        let mut batch: Vec<&[u128]> = Vec::with_capacity(LOOKUPS);
        loop {
            batch.clear();
            batch.extend(groups.by_ref().take(LOOKUPS));
            if batch.len() == LOOKUPS {
                // Groups are distinct keys, as `get_disjoint_mut` requires.
                let keys: [RecKey; LOOKUPS] = std::array::from_fn(|i| ops[at(batch[i][0])].key);
                let slots = state.get_disjoint_mut(keys.each_ref());
                for (group, slot) in batch.iter().zip(slots) {
                    late += books.apply(slot, ops, group, watermark);
                }
            } else {
                for group in &batch {
                    let slot = state.get_mut(&ops[at(group[0])].key);
                    late += books.apply(slot, ops, group, watermark);
                }
            }
            for (key, entry) in books.after.drain(..) {
                match entry {
                    Some(e) => {
                        state.insert(key, e);
                    }
                    None => {
                        state.remove(&key);
                    }
                }
            }
            if batch.len() < LOOKUPS {
                break;
            }
        }
        self.expire(watermark);
        late
    }

    /// Appends, at time `t`, up to `limit` records changed since the last
    /// call began, once each, with their aggregates now (`None`: gone);
    /// returns whether more remain (the next call goes on with them). A
    /// record that did not exist when the last call began and does not exist
    /// now is left out: nothing was ever emitted for it. At time 0 (the
    /// rebuild: stored records loaded) only links are emitted, which
    /// identity starts from; every other record is what the store holds,
    /// and nothing downstream takes it (the collector drops time 0's
    /// records), so it is settled without a copy (after a 2M-event state's
    /// rebuild, 1.8M records were cloned into one growing vector only to be
    /// dropped). A plain load does not even mark its record (`apply_group`):
    /// only one that expired or replaced something at time 0 comes here.
    /// When `last` (the inputs are closed: no op will reach these
    /// records again), a record's props move out instead of being copied.
    pub fn take_changes(
        &mut self,
        t: u64,
        out: &mut Vec<(Folded, u64, isize)>,
        limit: usize,
        last: bool,
    ) -> bool {
        let from = self.changed.len().saturating_sub(limit);
        for key in self.changed.drain(from..) {
            if t == super::REBUILD_TIME && !matches!(key, RecKey::Link(..)) {
                match self.state.get_mut(&key) {
                    Some(e) => e.since = None,
                    None => {
                        self.gone.remove(&key);
                    }
                }
                continue;
            }
            let (before, new) = match self.state.get_mut(&key) {
                Some(e) => match e.since.take() {
                    Some(before) if last => (before, Some(take_record(&mut e.rec))),
                    Some(before) => (before, Some(e.rec.clone())),
                    None => continue,
                },
                None => match self.gone.remove(&key) {
                    Some(before) => (before, None),
                    None => continue,
                },
            };
            if !before.existed() && new.is_none() {
                continue;
            }
            out.push((
                Folded::Changed {
                    key,
                    old_first_seen: before.link_first_seen(),
                    existed: before.existed(),
                    new,
                },
                t,
                1,
            ));
        }
        !self.changed.is_empty()
    }

    /// Removes every record, untouched by this time, whose deadline is
    /// `<= watermark`.
    fn expire(&mut self, watermark: i64) {
        let mut due = std::mem::take(&mut self.due);
        self.expiry.due(watermark, &mut due);
        due.sort_unstable();
        due.dedup();
        for (filed, key) in due.drain(..) {
            let Some(e) = self.state.get(&key) else {
                continue;
            };
            let (Some(r), Some(d)) = (e.retention(), e.deadline()) else {
                continue;
            };
            if d > watermark {
                // Still alive: file it again if this was its current bucket
                // (only partly due); an older filing is just dropped.
                if filed == (r, Expiry::bucket(d, r)) {
                    self.expiry.refile(key, None, Some(e));
                }
                continue;
            }
            if let Some(e) = self.state.remove(&key) {
                if e.since.is_none() {
                    self.changed.push(key);
                }
                let before = e.since.unwrap_or_else(|| Emitted::of(key, Some(&e)));
                self.gone.insert(key, before);
            }
        }
        self.due = due;
    }
}

/// A record's aggregate, its props moved out (the entry keeps empty
/// props: it is never read again).
fn take_record(rec: &mut Record) -> Record {
    Record {
        count: rec.count,
        first_seen: rec.first_seen,
        last_seen: rec.last_seen,
        props: std::mem::take(&mut rec.props),
    }
}

/// The order a time's ops are applied in, without moving them: one integer
/// per op, its key's [`RecKey::order`] with the op's index below, sorted;
/// then the ops of each key by seq. Sorting these 16 bytes instead of the
/// 80-byte ops was 6% of a 2M bulk load's CPU (docs/performance.md).
/// An index has [`ORDER_INDEX_BITS`] (46) bits: 2^46 ops would take 5.6 PB.
#[derive(Default)]
struct Order(Vec<u128>);

/// The index an [`Order`] entry holds.
fn at(entry: u128) -> usize {
    (entry & ((1 << ORDER_INDEX_BITS) - 1)) as usize
}

impl Order {
    /// Orders `ops` by key, each key's by seq.
    fn sort(&mut self, ops: &[Op]) {
        debug_assert!(ops.len() < 1 << ORDER_INDEX_BITS);
        self.0.clear();
        self.0.extend(
            ops.iter()
                .enumerate()
                .map(|(i, op)| op.key.order() | i as u128),
        );
        self.0.sort_unstable();
        for group in self.0.chunk_by_mut(same_key) {
            if group.len() > 1 {
                group.sort_unstable_by_key(|&e| ops[at(e)].seq);
            }
        }
    }

    /// The entries of each key, in key order.
    fn groups(&self) -> std::slice::ChunkBy<'_, u128, fn(&u128, &u128) -> bool> {
        self.0.chunk_by(same_key)
    }
}

/// Whether two [`Order`] entries are of one key.
fn same_key(a: &u128, b: &u128) -> bool {
    a >> ORDER_INDEX_BITS == b >> ORDER_INDEX_BITS
}

/// How many records [`Records::apply_time`] looks up at once.
const LOOKUPS: usize = 8;

/// The bookkeeping beside the map that applying a record's ops updates.
struct Books<'a> {
    expiry: &'a mut Expiry,
    changed: &'a mut Vec<RecKey>,
    gone: &'a mut HashMap<RecKey, Emitted>,
    /// What the map owes once a batch's borrows of it end: an insert
    /// (`Some`: absent before, present now) or a removal (`None`).
    after: Vec<(RecKey, Option<Entry>)>,
}

impl Books<'_> {
    /// Applies one record's ops (`group`: their [`Order`] entries in
    /// `ops`, by seq, all of one key) to its entry in the map (`slot`),
    /// updating it in place or noting an insert or a removal in `after`;
    /// returns how many ops were late.
    fn apply(
        &mut self,
        mut slot: Option<&mut Entry>,
        ops: &mut [Op],
        group: &[u128],
        watermark: i64,
    ) -> u64 {
        let key = ops[at(group[0])].key;
        let cur = slot
            .as_mut()
            .map(|e| std::mem::replace(*e, Entry::placeholder()));
        let filed = cur.as_ref().and_then(|e| {
            Some((
                e.retention()?,
                Expiry::bucket(e.deadline()?, e.retention()?),
            ))
        });
        // What the record was at the last emission (`None`: it has not
        // changed since).
        let since = match &cur {
            Some(e) => e.since,
            None if self.gone.is_empty() => None,
            None => self.gone.remove(&key),
        };
        let first_change = since.is_none();
        let before = since.unwrap_or_else(|| Emitted::of(key, cur.as_ref()));
        let (mut cur, mut changed, late) = apply_group(cur, ops, group);
        // The time's final watermark may end the record right away.
        if cur
            .as_ref()
            .and_then(Entry::deadline)
            .is_some_and(|d| d <= watermark)
        {
            cur = None;
            changed = true;
        }
        self.expiry.refile(key, filed, cur.as_ref());
        let pending = changed || !first_change;
        match &mut cur {
            Some(e) => e.since = pending.then_some(before),
            None if pending => {
                self.gone.insert(key, before);
            }
            None => {}
        }
        if changed && first_change {
            self.changed.push(key);
        }
        match (slot, cur) {
            (Some(slot), Some(e)) => *slot = e,
            (Some(_), None) => self.after.push((key, None)),
            (None, Some(e)) => self.after.push((key, Some(e))),
            (None, None) => {}
        }
        late
    }
}

/// Applies one record's ops (`group`: their [`Order`] entries in `ops`, by
/// seq) to its aggregate. Returns the aggregate after them, whether
/// anything changed, and how many ops were late.
fn apply_group(
    mut cur: Option<Entry>,
    ops: &mut [Op],
    group: &[u128],
) -> (Option<Entry>, bool, u64) {
    let mut changed = false;
    let mut late = 0u64;
    for &entry in group {
        let op = &mut ops[at(entry)];
        // Expired before this event, by the watermark the event saw.
        if cur
            .as_ref()
            .and_then(Entry::deadline)
            .is_some_and(|d| d <= op.wm)
        {
            cur = None;
            changed = true;
        }
        match std::mem::replace(&mut op.kind, OpKind::Delete) {
            OpKind::Load(rec) => {
                // A stored record (time 0): the store holds it already, so
                // it is a change only for identity, which starts from the
                // stored links (`Records::take_changes`), or if it
                // replaced something. Before, every loaded record was
                // marked and then unmarked by time 0's emission: 2.75M
                // lookups at random after a 2M-event state.
                changed |= cur.is_some() || matches!(op.key, RecKey::Link(..));
                cur = Some(Entry {
                    rec: *rec,
                    retention: op.retention,
                    since: None,
                });
            }
            kind => {
                if let Some(r) = op.retention.get()
                    && deadline(op.time, r) <= op.wm
                {
                    late += 1;
                    continue;
                }
                match kind {
                    OpKind::Assert(props) => {
                        assert_record(&mut cur, op, props);
                        changed = true;
                    }
                    _ => {
                        changed |= cur.is_some();
                        cur = None;
                    }
                }
            }
        }
    }
    (cur, changed, late)
}

/// Applies one assertion (semantics: docs/semantics.md, "Watermark").
fn assert_record(cur: &mut Option<Entry>, op: &Op, props: compact_str::CompactString) {
    match cur {
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
            *cur = Some(Entry {
                rec: Record {
                    count: 1,
                    first_seen: op.time,
                    last_seen: op.time,
                    props,
                },
                retention: op.retention,
                since: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::symbols::Sym;
    use compact_str::CompactString;

    fn node(name: &str) -> RecKey {
        RecKey::Node(Sym::intern(name).unwrap())
    }

    fn op(key: &str, seq: u64, wm: i64, time: i64, retention: Option<u64>, kind: OpKind) -> Op {
        Op {
            key: node(key),
            shard: 0,
            seq,
            wm,
            time,
            retention: Retention::new(retention),
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

    /// One time applied and its changes taken: (late ops, changes).
    fn step(
        r: &mut Records,
        ops: &mut [Op],
        watermark: i64,
        t: u64,
    ) -> (u64, Vec<(Folded, u64, isize)>) {
        let late = r.apply_time(ops, watermark);
        let mut out = Vec::new();
        assert!(!r.take_changes(t, &mut out, usize::MAX, false));
        (late, out)
    }

    #[test]
    fn expiry_restarts_and_late_events_are_counted() {
        let mut r = Records::default();
        // a at 0; then an event at 20 (W before = 0) on b; then a again at 25 with W = 20:
        // a (last_seen 0, retention 10) expired at W = 20 and starts anew.
        let mut ops = vec![
            assert_op("n:a", 0, i64::MIN, 0, "{}"),
            assert_op("n:b", 1, 0, 20, "{}"),
            assert_op("n:a", 2, 20, 25, r#"{"x":1}"#),
            // late for the rule: 5 + 10 <= 25
            assert_op("n:a", 3, 25, 5, r#"{"x":2}"#),
        ];
        let (late, _) = step(&mut r, &mut ops, 25, 1);
        let a = r.get(&node("n:a")).unwrap();
        assert_eq!((a.count, a.first_seen, a.last_seen), (1, 25, 25));
        assert_eq!(a.props, r#"{"x":1}"#);
        assert_eq!(late, 1);
        // W = 35 expires b (20 + 10 <= 35) and a (25 + 10 <= 35).
        let (_, out) = step(&mut r, &mut [], 35, 2);
        assert_eq!(r.len(), 0);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_record_has_expired_once_its_deadline_reaches_the_watermark_an_event_saw() {
        // a (retention 10) last seen at 0: its deadline is 10. An event at
        // 12 that saw the watermark at 9 continues it, one that saw 10
        // starts it anew.
        for (wm, want) in [(9, (2, 0, 12)), (10, (1, 12, 12))] {
            let mut r = Records::default();
            let mut ops = vec![
                assert_op("n:a", 0, i64::MIN, 0, ""),
                assert_op("n:a", 1, wm, 12, ""),
            ];
            step(&mut r, &mut ops, 12, 1);
            let a = r.get(&node("n:a")).unwrap();
            assert_eq!((a.count, a.first_seen, a.last_seen), want, "watermark {wm}");
        }
    }

    #[test]
    fn an_event_is_late_once_its_own_deadline_reaches_the_watermark_it_saw() {
        // An event at 5 (retention 10: deadline 15) that saw the watermark
        // at 14 asserts its record; one that saw 15 is late and does not.
        for (wm, late_want, live) in [(14, 0, 1), (15, 1, 0)] {
            let mut r = Records::default();
            let (late, _) = step(&mut r, &mut [assert_op("n:a", 0, wm, 5, "")], wm, 1);
            assert_eq!((late, r.len()), (late_want, live), "watermark {wm}");
        }
    }

    #[test]
    fn delete_then_reassert_starts_a_new_record() {
        let mut r = Records::default();
        let mut ops = vec![
            op("n:a", 0, i64::MIN, 5, None, OpKind::Assert("".into())),
            op("n:a", 1, 5, 6, None, OpKind::Assert("".into())),
            op("n:a", 2, 6, 7, None, OpKind::Delete),
            op("n:a", 3, 7, 3, None, OpKind::Assert("".into())),
        ];
        let (_, out) = step(&mut r, &mut ops, 7, 1);
        let a = r.get(&node("n:a")).unwrap();
        assert_eq!((a.count, a.first_seen, a.last_seen), (1, 3, 3));
        // One output per record and time.
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_record_whose_ops_are_all_late_still_expires_with_the_time() {
        let mut r = Records::default();
        step(
            &mut r,
            &mut [assert_op("n:late", 0, i64::MIN, 15, "")],
            15,
            1,
        );
        // Only a late op (5 + 10 <= 16), before which the record lives
        // (15 + 10 > 16); the time's final watermark 30 ends it.
        let (late, out) = step(&mut r, &mut [assert_op("n:late", 1, 16, 5, "")], 30, 2);
        assert_eq!(r.len(), 0);
        assert!(out.contains(&(
            Folded::Changed {
                key: node("n:late"),
                old_first_seen: None,
                existed: true,
                new: None
            },
            2,
            1
        )));
        assert_eq!(late, 1);
    }

    /// Time 0 (the rebuild) emits the loaded links only; the other loaded
    /// records are settled as the store's, so a later time emits them as
    /// changes of what was loaded (a removal too).
    #[test]
    fn the_rebuild_emits_only_links_and_later_times_see_the_loaded_records() {
        let mut r = Records::default();
        let stored = Record {
            count: 1,
            first_seen: 3,
            last_seen: 3,
            props: CompactString::default(),
        };
        let load = |key: RecKey, seq| Op {
            key,
            shard: 0,
            seq,
            wm: i64::MIN,
            time: 3,
            retention: Retention::NONE,
            kind: OpKind::Load(Box::new(stored.clone())),
        };
        let (a, b) = (
            Sym::intern("n:t0-a").unwrap(),
            Sym::intern("n:t0-b").unwrap(),
        );
        let mut loads = vec![
            load(RecKey::Node(a), 0),
            load(RecKey::Node(b), 1),
            load(RecKey::Link(a, b), 2),
        ];
        // Only the link is a change to emit: the others are what the store
        // holds, not even looked up again by time 0's emission.
        let mut alone = Records::default();
        alone.apply_time(&mut loads.clone(), 0);
        assert_eq!(alone.changed, vec![RecKey::Link(a, b)]);
        let (_, out) = step(&mut r, &mut loads, 0, 0);
        let keys: Vec<RecKey> = out
            .iter()
            .filter_map(|(f, _, _)| match f {
                Folded::Changed { key, .. } => Some(*key),
                _ => None,
            })
            .collect();
        assert_eq!(keys, vec![RecKey::Link(a, b)]);
        assert_eq!(r.len(), 3, "every loaded record is kept");
        // Time 1: a asserted again, b deleted: both emitted against the load.
        let mut ops = vec![
            op("n:t0-a", 3, 0, 5, None, OpKind::Assert("".into())),
            op("n:t0-b", 4, 0, 5, None, OpKind::Delete),
        ];
        let (_, out) = step(&mut r, &mut ops, 0, 1);
        let changed: BTreeMap<String, Option<u64>> = out
            .iter()
            .filter_map(|(f, _, _)| match f {
                Folded::Changed {
                    key, new, existed, ..
                } => {
                    assert!(existed, "{key:?} was loaded");
                    Some((format!("{key:?}"), new.as_ref().map(|r| r.count)))
                }
                _ => None,
            })
            .collect();
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert_eq!(
            changed.get(&format!("{:?}", RecKey::Node(a))),
            Some(&Some(2))
        );
        assert_eq!(changed.get(&format!("{:?}", RecKey::Node(b))), Some(&None));
    }

    /// The fold's map holds one slot per live record: keep it small.
    #[test]
    fn a_live_record_takes_88_bytes_in_the_map() {
        assert_eq!(std::mem::size_of::<(RecKey, Entry)>(), 88);
        assert_eq!(std::mem::size_of::<Option<Emitted>>(), 16);
    }

    /// Ops are sorted, exchanged and buffered by value: keep them small.
    #[test]
    fn an_op_takes_80_bytes() {
        assert_eq!(std::mem::size_of::<Op>(), 80);
    }

    /// The folds' output is exchanged and buffered by value too: `existed`
    /// fits in the padding.
    #[test]
    fn a_folded_change_takes_80_bytes() {
        assert_eq!(std::mem::size_of::<Folded>(), 80);
    }

    /// A retention of `u64::MAX` ms ends nothing, as none does.
    #[test]
    fn the_longest_retention_is_none() {
        assert_eq!(Retention::new(Some(u64::MAX)), Retention::new(None));
        assert_eq!(Retention::new(Some(u64::MAX)).get(), None);
        assert_eq!(Retention::new(Some(10)).get(), Some(10));
        let mut r = Records::default();
        let mut ops = vec![op(
            "n:never",
            0,
            i64::MIN,
            0,
            Some(u64::MAX),
            OpKind::Assert("".into()),
        )];
        r.apply_time(&mut ops, i64::MAX - 1);
        assert_eq!(r.len(), 1);
        let mut ops = vec![op("n:short", 1, 0, 0, Some(10), OpKind::Assert("".into()))];
        r.apply_time(&mut ops, 10);
        assert!(r.get(&node("n:never")).is_some());
        assert!(r.get(&node("n:short")).is_none(), "10 ms ends at W = 10");
    }

    /// Against a plain model: records asserted at random times with random
    /// watermarks expire exactly when `last_seen + retention <= W`,
    /// whatever buckets the index filed them in.
    #[test]
    fn the_expiry_index_expires_exactly_what_the_watermark_ends() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(5);
        let mut r = Records::default();
        let mut model: BTreeMap<String, i64> = BTreeMap::new();
        let retention = 1000u64;
        let mut w = 0i64;
        for t in 1..400u64 {
            let mut ops = Vec::new();
            for i in 0..20 {
                let name = format!("n:exp{}", rng.random_range(0..60));
                let time = w + rng.random_range(-200..400);
                ops.push(op(
                    &name,
                    i,
                    w,
                    time,
                    Some(retention),
                    OpKind::Assert("".into()),
                ));
            }
            // The model: ops in order, each against W before it.
            for o in &ops {
                let name = o.key_text();
                if let Some(last) = model.get(&name)
                    && last + retention as i64 <= o.wm
                {
                    model.remove(&name);
                }
                if o.time + retention as i64 <= o.wm {
                    continue;
                }
                let e = model.entry(name).or_insert(o.time);
                *e = (*e).max(o.time);
            }
            w += rng.random_range(0..150);
            model.retain(|_, last| *last + retention as i64 > w);
            step(&mut r, &mut ops, w, t);
            assert_eq!(r.len(), model.len(), "time {t}");
            for (name, last) in &model {
                assert_eq!(r.get(&node(name)).map(|x| x.last_seen), Some(*last));
            }
        }
    }

    /// What a reader of everything emitted holds: the store's records, and
    /// identity's view of the links (first_seen per link, from the retracted
    /// and asserted first_seen of each change).
    #[derive(Default, PartialEq, Debug)]
    struct Reader {
        records: BTreeMap<String, Record>,
        links: BTreeMap<String, i64>,
    }

    impl Reader {
        fn apply(&mut self, out: Vec<(Folded, u64, isize)>) {
            for (f, _, _) in out {
                let Folded::Changed {
                    key,
                    old_first_seen,
                    existed,
                    new,
                } = f
                else {
                    continue;
                };
                let name = format!("{key:?}");
                assert_eq!(self.records.contains_key(&name), existed, "{name}");
                if let RecKey::Link(..) = key {
                    assert_eq!(self.links.get(&name).copied(), old_first_seen, "{name}");
                    match &new {
                        Some(r) => self.links.insert(name.clone(), r.first_seen),
                        None => self.links.remove(&name),
                    };
                }
                match new {
                    Some(r) => self.records.insert(name, r),
                    None => self.records.remove(&name),
                };
            }
        }
    }

    /// An op on `key` at (seq, wm, time): a delete with probability
    /// `delete`, else an assert whose props name its seq.
    fn random_op(
        rng: &mut rand::rngs::Xoshiro256PlusPlus,
        key: RecKey,
        (seq, wm, time): (u64, i64, i64),
        delete: f64,
        retention: u64,
    ) -> Op {
        use rand::RngExt;
        let kind = if rng.random_bool(delete) {
            OpKind::Delete
        } else {
            OpKind::Assert(CompactString::from(format!("{{\"v\":{seq}}}")))
        };
        Op {
            key,
            shard: 0,
            seq,
            wm,
            time,
            retention: Retention::new(Some(retention)),
            kind,
        }
    }

    /// A time's ops are applied by seq whatever order they come in (the
    /// exchange delivers several workers' ops interleaved): shuffled, they
    /// leave the records and changes they leave in seq order, on few
    /// records with ties of event time (props then go by seq), deletes
    /// and links.
    #[test]
    fn a_time_s_ops_apply_by_seq_whatever_order_they_come_in() {
        use rand::seq::SliceRandom;
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(13);
        let (mut in_order, mut shuffled) = (Records::default(), Records::default());
        let (mut reader_in_order, mut reader_shuffled) = (Reader::default(), Reader::default());
        let syms: Vec<Sym> = (0..4)
            .map(|i| Sym::intern(&format!("n:byseq{i}")).unwrap())
            .collect();
        let (mut w, mut seq) = (0i64, 0u64);
        for t in 1..=400u64 {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(1..10) {
                let a = syms[rng.random_range(0..syms.len())];
                let b = syms[rng.random_range(0..syms.len())];
                let key = if a == b {
                    RecKey::Node(a)
                } else {
                    RecKey::Link(a.min(b), a.max(b))
                };
                seq += 1;
                let time = w + 10 * rng.random_range(-2..3);
                ops.push(random_op(&mut rng, key, (seq, w, time), 0.3, 100));
            }
            w += rng.random_range(0..20);
            let mut mixed = ops.clone();
            mixed.shuffle(&mut rng);
            let (late, out) = step(&mut in_order, &mut ops, w, t);
            reader_in_order.apply(out);
            let (late_mixed, out) = step(&mut shuffled, &mut mixed, w, t);
            reader_shuffled.apply(out);
            assert_eq!(late, late_mixed, "time {t}");
            assert_eq!(reader_in_order, reader_shuffled, "time {t}");
            assert_eq!(in_order.len(), shuffled.len(), "time {t}");
        }
        assert!(!reader_in_order.records.is_empty());
    }

    /// Changes taken every `k` times (all at once, or in chunks, and the
    /// last ones moved out) leave a reader with what changes taken every
    /// time leave it with (and the live records), at every step, on
    /// random asserts, deletes, late events and expiry of nodes and links;
    /// a record changed several times in a step is emitted once.
    #[test]
    fn changes_taken_every_k_times_equal_changes_taken_every_time() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(11);
        let k = 5u64;
        let (mut each, mut every_k) = (Records::default(), Records::default());
        let (mut reader_each, mut reader_k) = (Reader::default(), Reader::default());
        let (mut emitted_each, mut emitted_k) = (0usize, 0usize);
        let syms: Vec<Sym> = (0..40)
            .map(|i| Sym::intern(&format!("n:coalesce{i}")).unwrap())
            .collect();
        let mut w = 0i64;
        let mut seq = 0u64;
        for t in 1..=300u64 {
            let mut ops = Vec::new();
            for _ in 0..rng.random_range(0..12) {
                let a = syms[rng.random_range(0..syms.len())];
                let key = if rng.random_bool(0.5) {
                    RecKey::Node(a)
                } else {
                    let b = syms[rng.random_range(0..syms.len())];
                    if a == b {
                        continue;
                    }
                    RecKey::Link(a.min(b), a.max(b))
                };
                let time = w + rng.random_range(-300..200);
                ops.push(random_op(&mut rng, key, (seq, w, time), 0.2, 400));
                seq += 1;
            }
            w += rng.random_range(0..60);
            let mut ops_k = ops.clone();
            let (_, out) = step(&mut each, &mut ops, w, t);
            emitted_each += out.len();
            reader_each.apply(out);
            every_k.apply_time(&mut ops_k, w);
            if t % k == 0 {
                // In chunks of 3 (as after the last time), or all at once;
                // after the last time, moving the records out.
                let limit = if t % (2 * k) == 0 { 3 } else { usize::MAX };
                let last = t == 300;
                let mut out = Vec::new();
                while every_k.take_changes(t, &mut out, limit, last) {
                    assert!(every_k.has_changes());
                }
                emitted_k += out.len();
                reader_k.apply(out);
                assert_eq!(reader_k, reader_each, "time {t}");
                assert_eq!(reader_k.records.len(), every_k.len(), "time {t}");
            }
        }
        assert!(emitted_k < emitted_each, "{emitted_k} vs {emitted_each}");
    }

    impl Op {
        fn key_text(&self) -> String {
            match self.key {
                RecKey::Node(s) => s.text().to_string(),
                _ => String::new(),
            }
        }
    }
}
