//! Plain data shared by every layer: identifiers, record aggregates, and the
//! changes the dataflow hands to the store.
//!
//! Invariant: this module depends on nothing else in rdg. Everything here is
//! cheap to clone (short strings are stored inline by `CompactString`), and
//! ordered (`Ord`) so it can travel through differential dataflow and sort the
//! same way everywhere.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Event time: milliseconds since the Unix epoch.
pub type EventTime = i64;

/// A graph identifier, always written `type:id` (for example `profile:p42`).
pub type Ident = CompactString;

/// The name of a dataflow: its definition file's stem (`playback`).
pub type DataflowName = CompactString;

/// Where each source partition of each dataflow continues: (dataflow,
/// partition) -> the next line or offset to read. The one type of positions
/// for the dataflow (where workers resume), the store (what commits record)
/// and the query service (freshness).
pub type Positions = std::collections::BTreeMap<(DataflowName, String), u64>;

/// The longest identifier (`type:id`, in bytes) an event may carry; an event
/// with a longer one is a dead letter. A stored key holds at most three
/// identifiers, each at most doubled by the key codec's escapes, and fjall
/// refuses (panics on) keys longer than 65 535 bytes: 4 KiB leaves room.
pub const MAX_IDENT_BYTES: usize = 4096;

/// Builds the `type:id` form of an identifier.
pub fn ident(node_type: &str, id: &str) -> Ident {
    let mut s = CompactString::with_capacity(node_type.len() + 1 + id.len());
    push_ident_str(&mut s, node_type, id);
    s
}

/// [`push_ident`] of a text id, copied as it is (no formatting on the
/// decoder's path, where most ids are text).
pub fn push_ident_str(out: &mut impl std::fmt::Write, node_type: &str, id: &str) {
    // Writing into a string cannot fail.
    let _ = out.write_str(node_type);
    let _ = out.write_char(':');
    let _ = out.write_str(id);
}

/// Appends the `type:id` form of an identifier to `out` (`id` as it
/// displays: text as it is, integers in decimal).
pub fn push_ident(out: &mut impl std::fmt::Write, node_type: &str, id: impl std::fmt::Display) {
    // Writing into a string cannot fail.
    let _ = out.write_str(node_type);
    let _ = out.write_char(':');
    let _ = write!(out, "{id}");
}

/// Splits `type:id` at its first colon. An identifier without a colon has an
/// empty type.
pub fn split_ident(ident: &str) -> (&str, &str) {
    match ident.split_once(':') {
        Some((t, i)) => (t, i),
        None => ("", ident),
    }
}

/// Which side of an edge a queried identifier is on. One type for the
/// store's queries, the HTTP API (`direction=out|in`, JSON `"out"`/`"in"`)
/// and the command line; [`Direction::as_str`] is the name everywhere.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Edges from the identifier (`edge/<type>`).
    #[default]
    Out,
    /// Edges to the identifier (`edge_in/<type>`, only `reverse` edges).
    In,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// How neighbours are ordered. One type for the store's queries, the HTTP
/// API (`order=id|recent`) and the command line (`--order`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum EdgeOrder {
    /// Neighbour identifier ascending (bytewise).
    #[default]
    Id,
    /// `last_seen` descending, ties by neighbour identifier ascending.
    Recent,
}

impl EdgeOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeOrder::Id => "id",
            EdgeOrder::Recent => "recent",
        }
    }
}

/// Where this process sits in a cluster of processes, and where the others
/// are: one type for the dataflow (timely's cluster mode), the store (the
/// shape a state was written by: keys are sharded by worker) and the query
/// service (which process owns a key, where to forward).
///
/// Invariant (see [`ClusterShape::problems`]): `process < processes`,
/// `workers >= 1`, and each address list is empty or names every process,
/// in process order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterShape {
    /// How many processes (1: this process alone).
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// Worker threads per process; worker index = process × workers + i.
    pub workers: usize,
    /// Every process's `host:port` for timely's data exchange, in process
    /// order (empty for a single process).
    pub addresses: Vec<String>,
    /// Every process's query API base URL (`http://host:port`), in process
    /// order (empty when the processes do not serve queries to each other).
    pub query_urls: Vec<String>,
}

impl ClusterShape {
    /// One process alone, with `workers` workers.
    pub fn single(workers: usize) -> ClusterShape {
        ClusterShape {
            processes: 1,
            process: 0,
            workers,
            addresses: Vec::new(),
            query_urls: Vec::new(),
        }
    }

    /// The process whose workers own a record of `hash` (a [`shard`] hash).
    pub fn owner(&self, hash: u64) -> usize {
        let workers = self.workers.max(1);
        shard::worker(hash, self.processes.max(1) * workers) / workers
    }

    /// Every inconsistency, one sentence each (none: the invariant holds).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.processes == 0 {
            problems.push("a cluster has at least 1 process".to_string());
        } else if self.process >= self.processes {
            problems.push(format!(
                "process {} is out of range for {} processes (0 to {})",
                self.process,
                self.processes,
                self.processes - 1
            ));
        }
        if self.workers == 0 {
            problems.push("a process has at least 1 worker".to_string());
        }
        for (what, list) in [
            ("addresses", &self.addresses),
            ("query URLs", &self.query_urls),
        ] {
            if !list.is_empty() && list.len() != self.processes {
                problems.push(format!(
                    "{} {what} for {} processes: one per process, in process order",
                    list.len(),
                    self.processes
                ));
            }
        }
        problems
    }
}

/// The aggregate one dataflow keeps for one record (node, edge or identity
/// link): how often it was asserted since it was (re)created, when it was first
/// and last seen (event time), and the props of the latest event by event time.
///
/// `props` holds a JSON object as text with sorted keys (`{"country":"NL"}`),
/// or is empty when the rule has no props; short objects are stored inline.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Record {
    pub count: u64,
    pub first_seen: EventTime,
    pub last_seen: EventTime,
    pub props: CompactString,
}

/// One change for the store, produced by the dataflow once the frontier has
/// passed the time it belongs to. `None` removes what a dataflow contributed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// `dataflow`'s contribution to the node `id` (in `type:id` form).
    Node {
        id: Ident,
        dataflow: DataflowName,
        record: Option<Record>,
    },
    /// `dataflow`'s contribution to the edge `from -[edge_type]-> to`.
    /// `reverse` asks the store to keep the `edge_in/<type>` index too.
    Edge {
        edge_type: CompactString,
        from: Ident,
        to: Ident,
        dataflow: DataflowName,
        reverse: bool,
        record: Option<Record>,
    },
    /// `dataflow`'s identity link between `a` and `b` (`a < b`).
    /// `mirrored`: the link is already stored (it was live when its changes
    /// were last emitted), so a put rewrites only its `(a, b)` entry; the
    /// `(b, a)` entry, written when the link appeared, only points there.
    Link {
        a: Ident,
        b: Ident,
        dataflow: DataflowName,
        mirrored: bool,
        record: Option<Record>,
    },
    /// The cluster an identifier belongs to (`None`: it has no live link).
    Cluster {
        id: Ident,
        cluster: Option<ClusterOf>,
    },
    /// Membership of `member` in `cluster`: present or removed.
    Member {
        cluster: Ident,
        member: Ident,
        present: bool,
    },
}

/// Where an identifier belongs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterOf {
    pub cluster: Ident,
    pub hub: bool,
}

/// A record that could not be processed, kept with where it came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeadLetter {
    pub dataflow: DataflowName,
    /// `file.jsonl:17` or `topic/partition/offset`.
    pub source: String,
    pub reason: String,
}

/// Per-dataflow counters and positions that are committed atomically with the
/// changes of the same times. Counters are deltas; watermark and positions are
/// the new values (the store keeps the maximum watermark).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// dataflow -> (events applied delta, late delta, watermark if any).
    pub dataflows: std::collections::BTreeMap<DataflowName, DataflowProgress>,
    /// (dataflow, partition) -> next position to read (line or offset).
    pub positions: Positions,
}

/// Counters of one dataflow for a commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataflowProgress {
    pub events: u64,
    pub late: u64,
    pub watermark: Option<EventTime>,
    /// The source timestamps of the records read for this delta, when the
    /// source has them (Kafka). Not stored: the live run reports how old
    /// each record is when a commit makes it queryable.
    pub record_times: RecordTimes,
}

/// How far before the newest timestamp [`RecordTimes`] keeps timestamps
/// one by one (ms): 2^14, the last bound of the live run's record-age
/// histogram.
pub const RECORD_TIMES_SPAN_MS: i64 = 1 << 14;

/// The source timestamps (epoch ms) of a delta's records, as a count per
/// millisecond, so that a commit can report each record's age.
///
/// Invariant: bounded by [`RECORD_TIMES_SPAN_MS`] entries, plus one
/// aggregate: a timestamp the span or more before the newest one is
/// counted with the other such (their number and the sum of their
/// timestamps, so the sum of their ages is still exact). Their ages exceed
/// the span whenever the commit's clock is not behind the sources'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordTimes {
    by_ms: std::collections::BTreeMap<i64, u64>,
    older: u64,
    older_sum: i128,
    oldest: Option<i64>,
}

impl RecordTimes {
    /// Counts `n` records with timestamp `ts`.
    pub fn add(&mut self, ts: i64, n: u64) {
        if n == 0 {
            return;
        }
        self.oldest = Some(self.oldest.map_or(ts, |o| o.min(ts)));
        *self.by_ms.entry(ts).or_default() += n;
        if self.by_ms.len() as i64 > RECORD_TIMES_SPAN_MS {
            self.age_out();
        }
    }

    /// Moves the timestamps more than the span before the newest into the
    /// aggregate.
    fn age_out(&mut self) {
        let Some((&newest, _)) = self.by_ms.last_key_value() else {
            return;
        };
        let keep = self
            .by_ms
            .split_off(&newest.saturating_sub(RECORD_TIMES_SPAN_MS - 1));
        for (ts, n) in std::mem::replace(&mut self.by_ms, keep) {
            self.older += n;
            self.older_sum += i128::from(ts) * i128::from(n);
        }
    }

    /// Adds another delta's timestamps.
    pub fn merge(&mut self, other: &RecordTimes) {
        for (&ts, &n) in &other.by_ms {
            self.add(ts, n);
        }
        self.older += other.older;
        self.older_sum += other.older_sum;
        self.oldest = match (self.oldest, other.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// The earliest timestamp counted.
    pub fn oldest(&self) -> Option<i64> {
        self.oldest
    }

    /// The records' ages at `now_ms` (negative when a source's clock is
    /// ahead), as (age in ms, number of records); the aggregate of old
    /// timestamps at the age of their mean.
    pub fn ages(&self, now_ms: i64) -> impl Iterator<Item = (i64, u64)> + '_ {
        let older = (self.older > 0).then(|| {
            let mean = self.older_sum / i128::from(self.older);
            let age = (i128::from(now_ms) - mean).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
            (age as i64, self.older)
        });
        self.by_ms
            .iter()
            .rev()
            .map(move |(&ts, &n)| (now_ms.saturating_sub(ts), n))
            .chain(older)
    }
}

impl DataflowProgress {
    /// Folds another delta into this one.
    pub fn merge(&mut self, other: &DataflowProgress) {
        self.events += other.events;
        self.late += other.late;
        self.watermark = match (self.watermark, other.watermark) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.record_times.merge(&other.record_times);
    }
}

impl Progress {
    /// Folds another progress report into this one.
    pub fn merge(&mut self, other: Progress) {
        for (name, p) in other.dataflows {
            self.dataflows.entry(name).or_default().merge(&p);
        }
        for (k, v) in other.positions {
            let e = self.positions.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Ages from a list of timestamps, computed directly.
    fn direct_ages(ts: &[i64], now: i64) -> (u64, i128, BTreeMap<i64, u64>) {
        let mut by_age = BTreeMap::new();
        for &t in ts {
            *by_age.entry(now - t).or_default() += 1;
        }
        let sum = ts.iter().map(|&t| i128::from(now - t)).sum();
        (ts.len() as u64, sum, by_age)
    }

    #[test]
    fn record_times_give_every_record_s_age_and_stay_bounded() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut aggregated = false;
        for round in 0..60 {
            let now = 1_700_000_000_000 + rng.random_range(0..100_000);
            // Timestamps over up to 40 s (beyond the span; with more
            // distinct ones than the span has ms, so old ones are
            // aggregated), in deltas merged as commits merge them.
            let (spread, most) = [(100, 3_000), (5_000, 3_000), (40_000, 60_000)][round % 3];
            let ts: Vec<i64> = (0..rng.random_range(0..most))
                .map(|_| now - rng.random_range(0..spread))
                .collect();
            let mut merged = RecordTimes::default();
            for part in ts.chunks(rng.random_range(1..500)) {
                let mut delta = RecordTimes::default();
                for chunk in part.chunk_by(|a, b| a == b) {
                    delta.add(chunk[0], chunk.len() as u64);
                }
                merged.merge(&delta);
            }
            assert!(merged.by_ms.len() as i64 <= RECORD_TIMES_SPAN_MS);
            aggregated |= merged.older > 0;
            assert_eq!(merged.oldest(), ts.iter().copied().min());
            assert_eq!(merged.oldest().is_none(), ts.is_empty());
            let (count, sum, by_age) = direct_ages(&ts, now);
            let ages: Vec<(i64, u64)> = merged.ages(now).collect();
            assert_eq!(ages.iter().map(|a| a.1).sum::<u64>(), count);
            // The sum of ages is exact up to the aggregate's rounding (its
            // mean, below one ms per record).
            let got: i128 = ages
                .iter()
                .map(|&(a, n)| i128::from(a) * i128::from(n))
                .sum();
            assert!((got - sum).abs() <= i128::from(count), "{got} vs {sum}");
            // Ages within the span are exact, one by one.
            let newest = ts.iter().max().copied().unwrap_or(now);
            let within = |a: &i64| *a < RECORD_TIMES_SPAN_MS + (now - newest);
            let mut exact: BTreeMap<i64, u64> = BTreeMap::new();
            for &(a, n) in &ages {
                if within(&a) {
                    *exact.entry(a).or_default() += n;
                }
            }
            let expected: BTreeMap<i64, u64> =
                by_age.into_iter().filter(|(a, _)| within(a)).collect();
            assert_eq!(exact, expected);
        }
        assert!(aggregated, "no round aged timestamps out");
    }

    /// The serde names, the clap names and `as_str` are the same words.
    #[test]
    fn direction_and_order_have_one_name_each() {
        use clap::ValueEnum;
        for d in Direction::value_variants() {
            let clap_name = d.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(clap_name.as_deref(), Some(d.as_str()));
            assert_eq!(serde_json::to_value(d).ok(), Some(d.as_str().into()));
        }
        for o in EdgeOrder::value_variants() {
            let clap_name = o.to_possible_value().map(|v| v.get_name().to_string());
            assert_eq!(clap_name.as_deref(), Some(o.as_str()));
            assert_eq!(serde_json::to_value(o).ok(), Some(o.as_str().into()));
        }
    }

    #[test]
    fn cluster_shapes_check_themselves() {
        let mut c = ClusterShape {
            processes: 2,
            process: 1,
            workers: 2,
            addresses: vec!["h:1".into(), "h:2".into()],
            query_urls: Vec::new(),
        };
        assert!(c.problems().is_empty());
        for i in 0..100 {
            let hash = shard::node(&format!("n:{i}"));
            assert_eq!(c.owner(hash), shard::worker(hash, 4) / 2);
        }
        c.process = 2;
        c.workers = 0;
        c.query_urls = vec!["http://h:3".into()];
        assert_eq!(c.problems().len(), 3, "{:?}", c.problems());
        assert!(ClusterShape::single(3).problems().is_empty());
    }

    #[test]
    fn ident_round_trips() {
        let i = ident("profile", "p:42");
        assert_eq!(i, "profile:p:42");
        let mut n = String::from("x");
        push_ident(&mut n, "game", 1036);
        assert_eq!(n, "xgame:1036");
        assert_eq!(split_ident(&i), ("profile", "p:42"));
        assert_eq!(split_ident("bare"), ("", "bare"));
    }
}

/// Which shard (worker) owns a record. Stable across runs, processes and
/// builds (FNV-1a over the key's bytes), so a process can tell which peer
/// holds a key without asking: nodes by id, edges by (type, source node) so
/// a node's out-edges of one type live together, links by the pair.
pub mod shard {
    const BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// FNV-1a of `bytes`, continuing from `h`.
    fn more(mut h: u64, bytes: &[u8]) -> u64 {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
        h
    }

    /// FNV-1a over `parts`, each after the first preceded by the byte 0xff.
    fn fnv1a(parts: &[&str]) -> u64 {
        let mut h = BASIS;
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                h = more(h, &[0xff]);
            }
            h = more(h, p.as_bytes());
        }
        h
    }

    /// [`edge`]'s hash taken over the edge type once, to be finished per
    /// source node: a dataflow hashes many edges of a few types.
    #[derive(Clone, Copy, Debug)]
    pub struct EdgeSeed(u64);

    impl EdgeSeed {
        pub fn new(edge_type: &str) -> EdgeSeed {
            EdgeSeed(more(more(BASIS, edge_type.as_bytes()), &[0xff]))
        }

        /// `edge(edge_type, from)`.
        pub fn edge(self, from: &str) -> u64 {
            more(self.0, from.as_bytes())
        }
    }

    /// The hash of a node record's key.
    pub fn node(id: &str) -> u64 {
        fnv1a(&[id])
    }

    /// The hash of an edge record's key: its type and source node only.
    pub fn edge(edge_type: &str, from: &str) -> u64 {
        EdgeSeed::new(edge_type).edge(from)
    }

    /// The hash of an identity link's key.
    pub fn link(a: &str, b: &str) -> u64 {
        fnv1a(&[a, b])
    }

    /// The worker (of `peers`) that owns a hash.
    pub fn worker(hash: u64, peers: usize) -> usize {
        (hash % peers.max(1) as u64) as usize
    }

    #[cfg(test)]
    mod tests {
        /// Distinct keys spread over every worker; key parts are separated,
        /// so ("a", "bc") and ("ab", "c") differ.
        #[test]
        fn keys_spread_and_parts_stay_apart() {
            assert_ne!(super::edge("a", "bc"), super::edge("ab", "c"));
            let spread: std::collections::BTreeSet<usize> = (0..100)
                .map(|i| super::worker(super::node(&format!("n:{i}")), 4))
                .collect();
            assert_eq!(spread.len(), 4);
        }

        /// The hashes of a few fixed keys, computed once from this code: they
        /// decide which worker's state holds a record on disk and which
        /// process a query is forwarded to, so a change here would silently
        /// misplace every stored key. Changing them needs a format version
        /// bump and a re-shard (a replay into fresh states).
        #[test]
        fn pinned_values() {
            use super::{edge, link, node, worker};
            // The FNV-1a offset basis: the hash of nothing.
            assert_eq!(node(""), 0xcbf2_9ce4_8422_2325);
            let nodes = [
                ("profile:p1", 0x518c_8b16_f798_014f, 3),
                ("account:a1", 0xec92_3f20_d384_48a8, 0),
                ("device:d-42", 0x2cf6_c04b_f768_1dfa, 2),
                ("title:t7", 0xc22a_7b63_3c9e_39b0, 0),
                ("email:ab12", 0xeae2_bd81_e2bb_5c33, 3),
            ];
            for (id, hash, of_4) in nodes {
                assert_eq!(node(id), hash, "node {id}");
                assert_eq!(worker(hash, 4), of_4, "node {id} of 4 workers");
            }
            assert_eq!(worker(node("account:a1"), 6), 4);
            assert_eq!(worker(node("email:ab12"), 6), 5);
            assert_eq!(edge("watched", "profile:p1"), 0xae9a_5a26_055e_e2a4);
            assert_eq!(edge("has_profile", "account:a1"), 0xa7bc_9f17_cf06_481f);
            assert_eq!(edge("a", "bc"), 0xd2b3_f581_9298_d9d6);
            assert_eq!(edge("ab", "c"), 0xfdf3_a083_ef9b_c024);
            assert_eq!(link("account:a1", "device:d-42"), 0xbd2d_e953_cd81_1aca);
            assert_eq!(link("email:ab12", "profile:p1"), 0x4c9f_f17f_b630_43a6);
            assert_eq!(worker(edge("has_profile", "account:a1"), 4), 3);
            assert_eq!(worker(link("account:a1", "device:d-42"), 4), 2);
        }
    }
}
