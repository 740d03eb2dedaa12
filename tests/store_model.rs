//! Model test of the store: seeded random commits (nodes, edges, links,
//! clusters, members, puts and removes from several dataflows, dead letters,
//! progress), with occasional close-and-reopen, checked after every step
//! against a plain `BTreeMap` model of the merged view: `node`, `edges` (both
//! directions, limit/since/order), `identity`, `export`, `counts`,
//! `contributions`, `meta` and `is_empty`. Also: the directory lock, the
//! format version check, a many-tree commit surviving a reopen, the engine
//! recorded in the state, and bulk loads equal to the same commits. Every
//! test runs on both engines (`both_engines!`).

mod support;
use support::{both_engines, open_engine};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdg::model::{Change, ClusterOf, DataflowProgress, DeadLetter, Progress, Record, ident};
use rdg::store::{
    BulkMethod, Counts, DataflowMeta, Direction, EdgeOrder, EdgeQuery, Engine, Meta, Store,
    StoreError, codec,
};
use serde_json::Value;

const NODE_TYPES: &[&str] = &["profile", "a", "a!", "x\u{0}"];
const IDS: &[&str] = &["p4", "p42", "p4\u{0}", "", "ÿ", "q\"", "a b", "p4!"];
const EDGE_TYPES: &[&str] = &["watched", "w", "w!"];
const DATAFLOWS: &[&str] = &["playback", "search", "a", "a!", "b\u{0}"];
const PROP_KEYS: &[&str] = &["x", "y", "z", "é"];

type Props = BTreeMap<String, Value>;
/// Contributions of one record: (dataflow, record).
type Group<'a> = Vec<(&'a str, &'a Record)>;

#[derive(Default)]
struct Model {
    /// (type, id part, dataflow) -> record
    nodes: BTreeMap<(String, String, String), Record>,
    /// (edge type, from, to, dataflow) -> (record, reverse)
    edges: BTreeMap<(String, String, String, String), (Record, bool)>,
    /// (a, b, dataflow) with a < b -> record
    links: BTreeMap<(String, String, String), Record>,
    clusters: BTreeMap<String, ClusterOf>,
    members: BTreeSet<(String, String)>,
    dead: BTreeMap<String, Vec<(String, String)>>,
    meta: Meta,
    committed: bool,
}

/// A merged record, computed independently of the store's merge: for each
/// prop key, the contribution with the greatest (last_seen, dataflow) among
/// those having the key wins.
#[derive(Debug, PartialEq)]
struct Merged {
    count: u64,
    first_seen: i64,
    last_seen: i64,
    props: Props,
}

fn parse(props: &str) -> Props {
    if props.is_empty() {
        Props::new()
    } else {
        serde_json::from_str(props).expect("model props are JSON objects")
    }
}

fn merge<'a>(contribs: impl IntoIterator<Item = (&'a str, &'a Record)>) -> Option<Merged> {
    let contribs: Vec<(&str, &Record)> = contribs.into_iter().collect();
    if contribs.is_empty() {
        return None;
    }
    let parsed: Vec<(&str, &Record, Props)> = contribs
        .iter()
        .map(|&(df, r)| (df, r, parse(&r.props)))
        .collect();
    let keys: BTreeSet<&String> = parsed.iter().flat_map(|(_, _, p)| p.keys()).collect();
    let mut props = Props::new();
    for k in keys {
        let winner = parsed
            .iter()
            .filter(|(_, _, p)| p.contains_key(k))
            .max_by(|a, b| (a.1.last_seen, a.0).cmp(&(b.1.last_seen, b.0)))
            .expect("some contribution has the key");
        props.insert(k.clone(), winner.2[k].clone());
    }
    Some(Merged {
        count: contribs.iter().map(|(_, r)| r.count).sum(),
        first_seen: contribs.iter().map(|(_, r)| r.first_seen).min()?,
        last_seen: contribs.iter().map(|(_, r)| r.last_seen).max()?,
        props,
    })
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

fn props_json(p: &Props) -> String {
    serde_json::to_string(p).expect("json props")
}

impl Model {
    fn apply(&mut self, changes: &[Change], dead: &[DeadLetter], progress: &Progress) {
        for c in changes {
            match c.clone() {
                Change::Node {
                    id,
                    dataflow,
                    record,
                } => {
                    let (t, i) = rdg::model::split_ident(&id);
                    let k = (t.to_string(), i.to_string(), dataflow.to_string());
                    match record {
                        Some(r) => {
                            self.nodes.insert(k, r);
                        }
                        None => {
                            self.nodes.remove(&k);
                        }
                    }
                }
                Change::Edge {
                    edge_type,
                    from,
                    to,
                    dataflow,
                    reverse,
                    record,
                } => {
                    let k = (
                        edge_type.to_string(),
                        from.to_string(),
                        to.to_string(),
                        dataflow.to_string(),
                    );
                    match record {
                        Some(r) => {
                            self.edges.insert(k, (r, reverse));
                        }
                        None => {
                            self.edges.remove(&k);
                        }
                    }
                }
                Change::Link {
                    a,
                    b,
                    dataflow,
                    record,
                    ..
                } => {
                    let k = (a.to_string(), b.to_string(), dataflow.to_string());
                    match record {
                        Some(r) => {
                            self.links.insert(k, r);
                        }
                        None => {
                            self.links.remove(&k);
                        }
                    }
                }
                Change::Cluster { id, cluster } => match cluster {
                    Some(c) => {
                        self.clusters.insert(id.to_string(), c);
                    }
                    None => {
                        self.clusters.remove(id.as_str());
                    }
                },
                Change::Member {
                    cluster,
                    member,
                    present,
                } => {
                    let k = (cluster.to_string(), member.to_string());
                    if present {
                        self.members.insert(k);
                    } else {
                        self.members.remove(&k);
                    }
                }
            }
        }
        for d in dead {
            self.dead
                .entry(d.dataflow.to_string())
                .or_default()
                .push((d.source.clone(), d.reason.clone()));
            self.meta
                .dataflows
                .entry(d.dataflow.to_string())
                .or_default()
                .dead_letters += 1;
        }
        for (name, p) in &progress.dataflows {
            let m = self.meta.dataflows.entry(name.to_string()).or_default();
            m.events += p.events;
            m.late += p.late;
            m.watermark = match (m.watermark, p.watermark) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        for ((df, part), pos) in &progress.positions {
            self.meta
                .positions
                .insert((df.clone(), part.to_string()), *pos);
        }
        if !changes.is_empty()
            || !dead.is_empty()
            || !progress.dataflows.is_empty()
            || !progress.positions.is_empty()
        {
            self.committed = true;
        }
    }

    fn node(&self, id: &str) -> Option<(i64, i64, Props)> {
        let (t, i) = rdg::model::split_ident(id);
        let m = merge(
            self.nodes
                .iter()
                .filter(|((nt, ni, _), _)| nt == t && ni == i)
                .map(|((_, _, df), r)| (df.as_str(), r)),
        )?;
        Some((m.first_seen, m.last_seen, m.props))
    }

    /// Neighbour -> merged, over the contributions visible in `dir`.
    fn neighbours(&self, edge_type: &str, id: &str, dir: Direction) -> BTreeMap<String, Merged> {
        let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
        for ((t, from, to, df), (r, reverse)) in &self.edges {
            if t != edge_type {
                continue;
            }
            match dir {
                Direction::Out if from == id => groups.entry(to).or_default().push((df, r)),
                Direction::In if to == id && *reverse => {
                    groups.entry(from).or_default().push((df, r))
                }
                _ => {}
            }
        }
        groups
            .into_iter()
            .filter_map(|(n, c)| Some((n.to_string(), merge(c)?)))
            .collect()
    }

    fn edges(&self, edge_type: &str, id: &str, q: &EdgeQuery) -> Vec<(String, Merged)> {
        let mut v: Vec<(String, Merged)> = self
            .neighbours(edge_type, id, q.direction)
            .into_iter()
            .filter(|(_, m)| q.since.is_none_or(|s| m.last_seen >= s))
            .collect();
        if q.order == EdgeOrder::Recent {
            v.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
        }
        if let Some(l) = q.limit {
            v.truncate(l);
        }
        v
    }

    /// Link neighbours of `id` with `q` applied (direction ignored).
    fn links(&self, id: &str, q: &EdgeQuery) -> Vec<(String, Merged)> {
        let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
        for ((a, b, df), r) in &self.links {
            if a == id {
                groups.entry(b).or_default().push((df, r));
            } else if b == id {
                groups.entry(a).or_default().push((df, r));
            }
        }
        let mut v: Vec<(String, Merged)> = groups
            .into_iter()
            .filter_map(|(n, c)| Some((n.to_string(), merge(c)?)))
            .filter(|(_, m)| q.since.is_none_or(|s| m.last_seen >= s))
            .collect();
        if q.order == EdgeOrder::Recent {
            v.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
        }
        if let Some(l) = q.limit {
            v.truncate(l);
        }
        v
    }

    fn export(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut nodes: BTreeMap<(&str, &str), Group> = BTreeMap::new();
        for ((t, i, df), r) in &self.nodes {
            nodes.entry((t, i)).or_default().push((df, r));
        }
        for ((t, i), c) in nodes {
            let m = merge(c).expect("non-empty");
            lines.push(format!(
                r#"{{"ns":"node","type":{},"id":{},"first_seen":{},"last_seen":{},"props":{}}}"#,
                js(t),
                js(i),
                m.first_seen,
                m.last_seen,
                props_json(&m.props)
            ));
        }
        let mut edges: BTreeMap<(&str, &str, &str), Group> = BTreeMap::new();
        for ((t, f, to, df), (r, _)) in &self.edges {
            edges.entry((t, f, to)).or_default().push((df, r));
        }
        for ((t, f, to), c) in edges {
            let m = merge(c).expect("non-empty");
            lines.push(format!(
                r#"{{"ns":"edge","type":{},"from":{},"to":{},"count":{},"first_seen":{},"last_seen":{},"props":{}}}"#,
                js(t),
                js(f),
                js(to),
                m.count,
                m.first_seen,
                m.last_seen,
                props_json(&m.props)
            ));
        }
        for (id, c) in &self.clusters {
            lines.push(format!(
                r#"{{"ns":"identity","id":{},"cluster":{},"hub":{}}}"#,
                js(id),
                js(&c.cluster),
                c.hub
            ));
        }
        for (df, letters) in &self.dead {
            for (source, reason) in letters {
                lines.push(format!(
                    r#"{{"ns":"dead_letter","dataflow":{},"source":{},"reason":{}}}"#,
                    js(df),
                    js(source),
                    js(reason)
                ));
            }
        }
        lines.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        lines
    }

    fn counts(&self) -> Counts {
        let nodes: BTreeSet<_> = self.nodes.keys().map(|(t, i, _)| (t, i)).collect();
        let edges: BTreeSet<_> = self.edges.keys().map(|(t, f, to, _)| (t, f, to)).collect();
        let clusters: BTreeSet<_> = self.clusters.values().map(|c| &c.cluster).collect();
        Counts {
            nodes: nodes.len() as u64,
            edges: edges.len() as u64,
            identifiers: self.clusters.len() as u64,
            clusters: clusters.len() as u64,
            dead_letters: self.dead.values().map(|v| v.len() as u64).sum(),
        }
    }

    fn contributions(&self) -> Vec<Change> {
        let mut v = Vec::new();
        for ((t, i, df), r) in &self.nodes {
            v.push(Change::Node {
                id: ident(t, i),
                dataflow: df.into(),
                record: Some(r.clone()),
            });
        }
        for ((t, f, to, df), (r, reverse)) in &self.edges {
            v.push(Change::Edge {
                edge_type: t.into(),
                from: f.into(),
                to: to.into(),
                dataflow: df.into(),
                reverse: *reverse,
                record: Some(r.clone()),
            });
        }
        for ((a, b, df), r) in &self.links {
            v.push(Change::Link {
                a: a.into(),
                b: b.into(),
                dataflow: df.into(),
                mirrored: true,
                record: Some(r.clone()),
            });
        }
        v.sort();
        v
    }
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn all_idents() -> Vec<String> {
    NODE_TYPES
        .iter()
        .flat_map(|t| IDS.iter().map(move |i| ident(t, i).to_string()))
        .collect()
}

fn random_ident(rng: &mut StdRng) -> String {
    ident(pick(rng, NODE_TYPES), pick(rng, IDS)).to_string()
}

fn random_record(rng: &mut StdRng) -> Record {
    let first_seen = rng.random_range(-5..20);
    let props = if rng.random_bool(0.2) {
        String::new()
    } else {
        let mut p = Props::new();
        for _ in 0..rng.random_range(0..4) {
            let v = match rng.random_range(0..6) {
                0 => Value::from(rng.random_range(-3..3)),
                1 => Value::from(pick(rng, &["s", "NL", "\"q\"", "é"])),
                2 => Value::Bool(rng.random_bool(0.5)),
                3 => Value::Null,
                4 => serde_json::json!({"n": rng.random_range(0..3), "a": [1, "b"]}),
                _ => serde_json::json!([1.5, null]),
            };
            p.insert(pick(rng, PROP_KEYS).to_string(), v);
        }
        props_json(&p)
    };
    Record {
        count: rng.random_range(1..5),
        first_seen,
        last_seen: first_seen + rng.random_range(0..4),
        props: props.into(),
    }
}

/// A random change: mostly puts, removes mostly of things that exist.
fn random_change(rng: &mut StdRng, model: &Model) -> Change {
    let remove = rng.random_bool(0.3);
    let record = |rng: &mut StdRng| {
        if remove {
            None
        } else {
            Some(random_record(rng))
        }
    };
    match rng.random_range(0..10) {
        0..=2 => {
            // Removes mostly, and puts often, hit an existing contribution.
            if !model.nodes.is_empty()
                && rng.random_bool(if remove { 0.8 } else { 0.4 })
                && let Some(((t, i, df), _)) = model
                    .nodes
                    .iter()
                    .nth(rng.random_range(0..model.nodes.len()))
            {
                return Change::Node {
                    id: ident(t, i),
                    dataflow: df.into(),
                    record: record(rng),
                };
            }
            Change::Node {
                id: random_ident(rng).into(),
                dataflow: pick(rng, DATAFLOWS).into(),
                record: record(rng),
            }
        }
        3..=5 => {
            if !model.edges.is_empty()
                && rng.random_bool(if remove { 0.8 } else { 0.4 })
                && let Some(((t, f, to, df), (_, reverse))) = model
                    .edges
                    .iter()
                    .nth(rng.random_range(0..model.edges.len()))
            {
                // The reverse flag may change between puts of one contribution.
                return Change::Edge {
                    edge_type: t.into(),
                    from: f.into(),
                    to: to.into(),
                    dataflow: df.into(),
                    reverse: if rng.random_bool(0.6) {
                        *reverse
                    } else {
                        !reverse
                    },
                    record: record(rng),
                };
            }
            Change::Edge {
                edge_type: pick(rng, EDGE_TYPES).into(),
                from: random_ident(rng).into(),
                to: random_ident(rng).into(),
                dataflow: pick(rng, DATAFLOWS).into(),
                reverse: rng.random_bool(0.5),
                record: record(rng),
            }
        }
        6 => {
            if !model.links.is_empty()
                && rng.random_bool(if remove { 0.8 } else { 0.4 })
                && let Some(((a, b, df), _)) = model
                    .links
                    .iter()
                    .nth(rng.random_range(0..model.links.len()))
            {
                return Change::Link {
                    a: a.into(),
                    b: b.into(),
                    dataflow: df.into(),
                    mirrored: true,
                    record: record(rng),
                };
            }
            let (mut a, mut b) = (random_ident(rng), random_ident(rng));
            while a == b {
                b = random_ident(rng);
            }
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            Change::Link {
                a: a.into(),
                b: b.into(),
                dataflow: pick(rng, DATAFLOWS).into(),
                mirrored: false,
                record: record(rng),
            }
        }
        7..=8 => Change::Cluster {
            id: random_ident(rng).into(),
            cluster: if remove {
                None
            } else {
                Some(ClusterOf {
                    cluster: random_ident(rng).into(),
                    hub: rng.random_bool(0.2),
                })
            },
        },
        _ => Change::Member {
            cluster: random_ident(rng).into(),
            member: random_ident(rng).into(),
            present: !remove,
        },
    }
}

/// Sets each link change's `mirrored` as the dataflow does: true exactly
/// when the link is live just before it (stored, or put earlier in the same
/// commit and not removed since).
fn mark_mirrored(model: &Model, changes: &mut [Change]) {
    let mut live: BTreeSet<(String, String, String)> = model.links.keys().cloned().collect();
    for c in changes.iter_mut() {
        if let Change::Link {
            a,
            b,
            dataflow,
            mirrored,
            record,
        } = c
        {
            let k = (a.to_string(), b.to_string(), dataflow.to_string());
            *mirrored = live.contains(&k);
            if record.is_some() {
                live.insert(k);
            } else {
                live.remove(&k);
            }
        }
    }
}

fn random_commit(rng: &mut StdRng, model: &Model) -> (Vec<Change>, Vec<DeadLetter>, Progress) {
    let mut changes: Vec<Change> = (0..rng.random_range(0..10))
        .map(|_| random_change(rng, model))
        .collect();
    mark_mirrored(model, &mut changes);
    let dead = if rng.random_bool(0.2) {
        (0..rng.random_range(1..4))
            .map(|_| DeadLetter {
                dataflow: pick(rng, DATAFLOWS).into(),
                source: format!(
                    "{}.jsonl:{}",
                    pick(rng, &["f", "g\u{0}"]),
                    rng.random_range(0..5)
                ),
                reason: pick(rng, &["bad time", "id is \"bool\"", "ÿ\n"]).to_string(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut progress = Progress::default();
    if rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..3) {
            progress.dataflows.insert(
                pick(rng, DATAFLOWS).into(),
                DataflowProgress {
                    events: rng.random_range(0..100),
                    late: rng.random_range(0..3),
                    watermark: rng.random_bool(0.7).then(|| rng.random_range(-10..1000)),
                    record_times: Default::default(),
                },
            );
        }
        for _ in 0..rng.random_range(0..3) {
            progress.positions.insert(
                (
                    pick(rng, DATAFLOWS).into(),
                    pick(rng, &["0", "1", "t/0", "f.jsonl"]).to_string(),
                ),
                rng.random_range(0..1000),
            );
        }
    }
    (changes, dead, progress)
}

fn random_query(rng: &mut StdRng, direction: Direction) -> EdgeQuery {
    EdgeQuery {
        direction,
        limit: rng.random_bool(0.5).then(|| rng.random_range(0..4)),
        since: rng.random_bool(0.5).then(|| rng.random_range(-5..25)),
        order: if rng.random_bool(0.5) {
            EdgeOrder::Id
        } else {
            EdgeOrder::Recent
        },
    }
}

fn views(v: Vec<rdg::store::EdgeView>) -> Vec<(String, Merged)> {
    v.into_iter()
        .map(|e| {
            (
                e.node,
                Merged {
                    count: e.count,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    props: e.props.into_iter().collect(),
                },
            )
        })
        .collect()
}

fn check(store: &Store, model: &Model, rng: &mut StdRng, step: usize) {
    let ctx = |what: &str| format!("step {step}: {what}");
    assert_eq!(
        store.is_empty().expect("is_empty"),
        !model.committed,
        "{}",
        ctx("is_empty")
    );
    for id in all_idents().iter().chain([&"nosuch:p4".to_string()]) {
        let got = store.node(id).expect("node").map(|n| {
            assert_eq!(n.id, *id);
            assert_eq!(n.node_type, rdg::model::split_ident(id).0);
            (
                n.first_seen,
                n.last_seen,
                n.props.into_iter().collect::<Props>(),
            )
        });
        assert_eq!(got, model.node(id), "{}", ctx(&format!("node {id:?}")));

        for t in EDGE_TYPES.iter().chain(&["nosuch"]) {
            for direction in [Direction::Out, Direction::In] {
                for q in [
                    EdgeQuery {
                        direction,
                        ..EdgeQuery::default()
                    },
                    random_query(rng, direction),
                ] {
                    let got = views(store.edges(t, id, &q).expect("edges"));
                    assert_eq!(
                        got,
                        model.edges(t, id, &q),
                        "{}",
                        ctx(&format!("edges {t:?} {id:?} {q:?}"))
                    );
                }
            }
        }

        for q in [EdgeQuery::default(), random_query(rng, Direction::Out)] {
            let got = views(store.links(id, &q).expect("links"));
            assert_eq!(
                got,
                model.links(id, &q),
                "{}",
                ctx(&format!("links {id:?} {q:?}"))
            );
        }

        let got = store.identity(id).expect("identity");
        let expected = model.clusters.get(id.as_str()).map(|c| {
            let members: Vec<String> = model
                .members
                .iter()
                .filter(|(cl, _)| *cl == c.cluster)
                .map(|(_, m)| m.clone())
                .collect();
            (id.clone(), c.cluster.to_string(), c.hub, members)
        });
        assert_eq!(
            got.map(|v| (v.id, v.cluster, v.hub, v.members)),
            expected,
            "{}",
            ctx(&format!("identity {id:?}"))
        );
    }

    let mut out = Vec::new();
    let counts = store.export(&mut out).expect("export");
    let text = String::from_utf8(out).expect("utf-8 export");
    let lines: Vec<&str> = text.lines().collect();
    let expected = model.export();
    assert_eq!(lines, expected, "{}", ctx("export"));
    assert_eq!(counts.lines, expected.len() as u64);

    assert_eq!(
        store.counts().expect("counts"),
        model.counts(),
        "{}",
        ctx("counts")
    );
    let mut got: Vec<Change> = store
        .contributions()
        .collect::<Result<_, _>>()
        .expect("contributions");
    got.sort();
    assert_eq!(got, model.contributions(), "{}", ctx("contributions"));
    assert_eq!(store.meta().expect("meta"), model.meta, "{}", ctx("meta"));
}

fn run_model(seed: u64, steps: usize, engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = open_engine(dir.path(), engine).expect("open");
    let mut model = Model::default();
    check(&store, &model, &mut rng, 0);
    for step in 1..=steps {
        let (changes, dead, progress) = random_commit(&mut rng, &model);
        store.commit(&changes, &dead, &progress).expect("commit");
        model.apply(&changes, &dead, &progress);
        if rng.random_bool(0.1) {
            if rng.random_bool(0.5) {
                store.flush().expect("flush");
            }
            drop(store);
            store = open_engine(dir.path(), engine).expect("reopen");
        }
        check(&store, &model, &mut rng, step);
    }
    // The run exercised what it claims to.
    assert!(
        model.nodes.len() > 10 && model.links.len() > 10,
        "seed {seed}"
    );
    assert!(model.edges.values().any(|(_, r)| *r) && model.edges.values().any(|(_, r)| !*r));
    assert!(!model.clusters.is_empty() && !model.members.is_empty() && !model.dead.is_empty());
    assert!(!model.meta.positions.is_empty());
}

fn model_seed_1(engine: Engine) {
    run_model(1, 300, engine);
}

fn model_seed_2(engine: Engine) {
    run_model(2, 300, engine);
}

fn model_seed_3(engine: Engine) {
    run_model(3, 300, engine);
}

fn second_open_is_locked_and_names_the_dir(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    let store = open_engine(&path, engine).expect("open");
    match open_engine(&path, engine) {
        Err(e @ StoreError::Locked { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("in use by another rdg process"), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Clones share the open database; once all are gone it opens again.
    let clone = store.clone();
    drop(store);
    drop(clone);
    open_engine(&path, engine).expect("reopens after drop");
}

/// Waits for the engine's own lock after a store was dropped.
fn retry<T, E: std::fmt::Debug>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let started = std::time::Instant::now();
    loop {
        match f() {
            Ok(x) => return x,
            Err(e) if started.elapsed().as_secs() >= 5 => panic!("open: {e:?}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

fn set_version(path: &Path, version: u64, engine: Engine) {
    let key = codec::encode(&["format"]);
    match engine {
        Engine::Sled => {
            let db = retry(|| sled::open(path));
            let meta = db.open_tree("meta").expect("meta tree");
            meta.insert(key, &version.to_be_bytes()).expect("insert");
            db.flush().expect("flush");
        }
        Engine::Fjall => {
            let db = retry(|| fjall::Database::builder(path.join("fjall")).open());
            let meta = db
                .keyspace("meta", fjall::KeyspaceCreateOptions::default)
                .expect("meta keyspace");
            meta.insert(key, version.to_be_bytes()).expect("insert");
            db.persist(fjall::PersistMode::SyncAll).expect("persist");
        }
    }
}

fn other_format_version_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(open_engine(dir.path(), engine).expect("open"));
    set_version(dir.path(), 99, engine);
    match open_engine(dir.path(), engine) {
        Err(e @ StoreError::Version { found: 99, .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
            assert!(
                msg.contains("99") && msg.contains(&rdg::store::FORMAT_VERSION.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected Version, got {other:?}"),
    }
}

/// Format 1 (a link's `(b, a)` entry held the record too) opens, and is
/// marked format 2 at once, in the engine and in `rdg-format`.
fn format_1_is_upgraded_at_open(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Record {
        count: 2,
        first_seen: 5,
        last_seen: 9,
        props: "".into(),
    };
    {
        let store = open_engine(dir.path(), engine).expect("open");
        let link = Change::Link {
            a: ident("account", "a"),
            b: ident("device", "d"),
            dataflow: "login".into(),
            mirrored: false,
            record: Some(rec.clone()),
        };
        store
            .commit(&[link], &[], &Progress::default())
            .expect("commit");
    }
    set_version(dir.path(), 1, engine);
    let format_file = dir.path().join("rdg-format");
    std::fs::write(&format_file, "1\n").expect("write rdg-format");
    let store = retry(|| open_engine(dir.path(), engine));
    assert_eq!(
        std::fs::read_to_string(&format_file).expect("rdg-format"),
        format!("{}\n", rdg::store::FORMAT_VERSION)
    );
    for (from, to) in [("account:a", "device:d"), ("device:d", "account:a")] {
        let items = store.links(from, &EdgeQuery::default()).expect("links");
        assert_eq!(items.len(), 1, "{from}");
        assert_eq!(
            (items[0].node.as_str(), items[0].count, items[0].last_seen),
            (to, 2, 9)
        );
    }
    drop(store);
    // The engine holds format 2 now: setting only the file back to 1
    // changes nothing at the next open.
    std::fs::write(&format_file, "1\n").expect("write rdg-format");
    drop(retry(|| open_engine(dir.path(), engine)));
    assert_eq!(
        std::fs::read_to_string(&format_file).expect("rdg-format"),
        "1\n",
        "a format-2 engine is not upgraded again"
    );
}

fn many_tree_commit_is_all_there_after_reopen(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = |t: i64| Record {
        count: 1,
        first_seen: t,
        last_seen: t,
        props: r#"{"k":1}"#.into(),
    };
    let mut changes = Vec::new();
    for i in 0..50 {
        changes.push(Change::Node {
            id: ident(&format!("type{}", i % 7), &format!("n{i}")),
            dataflow: "playback".into(),
            record: Some(rec(i)),
        });
        changes.push(Change::Edge {
            edge_type: format!("e{}", i % 5).into(),
            from: ident("profile", &format!("p{i}")),
            to: ident("title", &format!("t{i}")),
            dataflow: "search".into(),
            reverse: i % 2 == 0,
            record: Some(rec(i)),
        });
        changes.push(Change::Link {
            a: ident("account", &format!("a{i}")),
            b: ident("device", &format!("d{i}")),
            dataflow: "playback".into(),
            mirrored: false,
            record: Some(rec(i)),
        });
        changes.push(Change::Cluster {
            id: ident("device", &format!("d{i}")),
            cluster: Some(ClusterOf {
                cluster: ident("account", &format!("a{i}")),
                hub: false,
            }),
        });
        changes.push(Change::Member {
            cluster: ident("account", &format!("a{i}")),
            member: ident("device", &format!("d{i}")),
            present: true,
        });
    }
    let dead = vec![DeadLetter {
        dataflow: "playback".into(),
        source: "p.jsonl:1".into(),
        reason: "no time".into(),
    }];
    let mut progress = Progress::default();
    progress.dataflows.insert(
        "playback".into(),
        DataflowProgress {
            events: 250,
            late: 1,
            watermark: Some(49),
            record_times: Default::default(),
        },
    );
    progress
        .positions
        .insert(("playback".into(), "0".into()), 251);
    let before = {
        let store = open_engine(dir.path(), engine).expect("open");
        assert!(store.is_empty().expect("is_empty"));
        store.commit(&changes, &dead, &progress).expect("commit");
        store.flush().expect("flush");
        let mut out = Vec::new();
        store.export(&mut out).expect("export");
        out
    };
    let store = open_engine(dir.path(), engine).expect("reopen");
    assert!(!store.is_empty().expect("is_empty"));
    assert_eq!(
        store.counts().expect("counts"),
        Counts {
            nodes: 50,
            edges: 50,
            identifiers: 50,
            clusters: 50,
            dead_letters: 1,
        }
    );
    let mut after = Vec::new();
    store.export(&mut after).expect("export");
    assert_eq!(before, after);
    assert_eq!(store.contributions().count(), 150);
    let meta = store.meta().expect("meta");
    assert_eq!(
        meta.dataflows.get("playback"),
        Some(&DataflowMeta {
            events: 250,
            late: 1,
            dead_letters: 1,
            watermark: Some(49),
        })
    );
    assert_eq!(
        meta.positions.get(&("playback".into(), "0".into())),
        Some(&251)
    );
    let incoming = store
        .edges(
            "e0",
            "title:t0",
            &EdgeQuery {
                direction: Direction::In,
                ..EdgeQuery::default()
            },
        )
        .expect("edges");
    assert_eq!(incoming.len(), 1);
    assert_eq!(incoming[0].node, "profile:p0");
}

fn concurrent_commits_from_clones_add_up(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_engine(dir.path(), engine).expect("open");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let mut progress = Progress::default();
                    progress.dataflows.insert(
                        "d".into(),
                        DataflowProgress {
                            events: 1,
                            late: 0,
                            watermark: Some(i),
                            record_times: Default::default(),
                        },
                    );
                    let dead = [DeadLetter {
                        dataflow: "d".into(),
                        source: format!("t{t}:{i}"),
                        reason: "r".into(),
                    }];
                    let node = [Change::Node {
                        id: ident("n", &format!("{t}-{i}")),
                        dataflow: "d".into(),
                        record: Some(Record {
                            count: 1,
                            first_seen: i,
                            last_seen: i,
                            props: "".into(),
                        }),
                    }];
                    store.commit(&node, &dead, &progress).expect("commit");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let meta = store.meta().expect("meta");
    assert_eq!(
        meta.dataflows["d"],
        DataflowMeta {
            events: 200,
            late: 0,
            dead_letters: 200,
            watermark: Some(49),
        }
    );
    let counts = store.counts().expect("counts");
    assert_eq!((counts.nodes, counts.dead_letters), (200, 200));
    let mut out = Vec::new();
    assert_eq!(store.export(&mut out).expect("export").lines, 400);
}

fn other(engine: Engine) -> Engine {
    match engine {
        Engine::Fjall => Engine::Sled,
        Engine::Sled => Engine::Fjall,
    }
}

fn engine_is_recorded_and_another_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state");
    {
        let store = open_engine(&path, engine).expect("open");
        assert_eq!(store.engine(), engine);
        store
            .commit(
                &[Change::Node {
                    id: "n:1".into(),
                    dataflow: "d".into(),
                    record: Some(Record {
                        count: 1,
                        first_seen: 1,
                        last_seen: 1,
                        props: "".into(),
                    }),
                }],
                &[],
                &Progress::default(),
            )
            .expect("commit");
    }
    match retry(|| match open_engine(&path, other(engine)) {
        Err(StoreError::Locked { .. }) => Err("locked"),
        other => Ok(other),
    }) {
        Err(e @ StoreError::EngineMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(engine.name()), "{msg}");
            assert!(msg.contains(other(engine).name()), "{msg}");
        }
        other => panic!("expected EngineMismatch, got {other:?}"),
    }
    // Without an engine: the recorded one.
    let store = retry(|| Store::open(&path));
    assert_eq!(store.engine(), engine);
    assert!(store.node("n:1").expect("node").is_some());
}

fn new_state_defaults_to_fjall() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(store.engine(), Engine::Fjall);
    assert!(dir.path().join("fjall").is_dir());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("rdg-engine")).expect("marker"),
        "fjall\n"
    );
}

/// A sled state written before engines were recorded (no `rdg-engine`
/// file) opens as sled.
fn state_without_engine_marker_opens_as_sled() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open_engine(dir.path(), Engine::Sled).expect("open");
        store
            .commit(
                &[Change::Cluster {
                    id: "device:d".into(),
                    cluster: Some(ClusterOf {
                        cluster: "account:a".into(),
                        hub: false,
                    }),
                }],
                &[],
                &Progress::default(),
            )
            .expect("commit");
        store.flush().expect("flush");
    }
    std::fs::remove_file(dir.path().join("rdg-engine")).expect("remove marker");
    let store = retry(|| Store::open(dir.path()));
    assert_eq!(store.engine(), Engine::Sled);
    assert!(store.identity("device:d").expect("identity").is_some());
    drop(store);
    assert!(matches!(
        retry(|| match open_engine(dir.path(), Engine::Fjall) {
            Err(StoreError::Locked { .. }) => Err("locked"),
            other => Ok(other),
        }),
        Err(StoreError::EngineMismatch {
            recorded: Engine::Sled,
            requested: Engine::Fjall,
            ..
        })
    ));
}

/// Random chunks (with overrides, removals and dead letters) written by a
/// bulk load give the state that committing them one by one gives: the
/// same export, meta, counts and contributions, and the model's answers.
/// Each way a load reaches the engine: every sorted buffer at once
/// (hold 0), sorted buffers held and merged a few at a time (a small hold,
/// then merged again at the end), all of them held and merged once.
fn bulk_load_equals_commits(engine: Engine) {
    let cases: &[(BulkMethod, usize)] = match engine {
        Engine::Fjall => &[
            (BulkMethod::Ingest, 0),
            (BulkMethod::Batch, 0),
            (BulkMethod::Ingest, 5_000),
            (BulkMethod::Batch, 5_000),
            (BulkMethod::Ingest, usize::MAX),
        ],
        Engine::Sled => &[(BulkMethod::Ingest, 0), (BulkMethod::Ingest, 5_000)],
    };
    for (seed, &(method, hold)) in cases.iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(40 + seed as u64);
        let (_dir, committed, loaded) = two_states(engine);
        // A small buffer: many engine writes that override each other.
        let mut bulk = loaded
            .bulk_load_with(method, 1500, hold)
            .expect("bulk load");
        let mut model = Model::default();
        for _ in 0..120 {
            let (changes, dead, progress) = committed_at_random(&mut rng, &model, &committed);
            bulk.write(&changes, &dead, &progress).expect("bulk write");
            model.apply(&changes, &dead, &progress);
        }
        bulk.finish().expect("finish");
        // Engine writes: one per buffer, one per few buffers, or one (and
        // the final commit of counters and positions).
        let writes = loaded.write_stats().commits;
        match hold {
            0 => assert!(writes > 8, "one write per buffer: {writes}"),
            usize::MAX => assert_eq!(writes, 1, "one merged write"),
            _ => assert!(writes > 3, "several merged writes: {writes}"),
        }
        // Each buffer ingested was a sorted run of its own; the load
        // leaves at most one per namespace.
        let runs = loaded.sorted_runs().expect("runs");
        assert!(
            runs.values().all(|&n| n <= 1),
            "{engine} {method:?} hold {hold}: {runs:?}"
        );
        if (engine, method) == (Engine::Fjall, BulkMethod::Ingest) {
            assert!(runs.values().any(|&n| n == 1), "{runs:?}");
        }
        same_as_committed(loaded, &committed, &mut model, &mut rng);
    }
}

/// A load told midway that what it holds is complete for its namespaces
/// (`BulkLoad::held_final`, as a replay's writer is once its folds'
/// records are in), then writing those namespaces one at a time between
/// later chunks (`BulkLoad::write_early`), which still override, remove
/// and add keys of some of them, gives the state that committing them one
/// by one gives, with at most one sorted run per namespace. Held until the
/// end, and held a few buffers at a time (namespaces queued may then be
/// written before their turn).
fn bulk_load_written_early_equals_commits(engine: Engine) {
    for (seed, hold) in [usize::MAX, 5_000].into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(90 + seed as u64);
        let (_dir, committed, loaded) = two_states(engine);
        let mut bulk = loaded
            .bulk_load_with(BulkMethod::Ingest, 1500, hold)
            .expect("bulk load");
        let mut model = Model::default();
        let mut early = 0;
        for i in 0..120 {
            let (changes, dead, progress) = committed_at_random(&mut rng, &model, &committed);
            bulk.write(&changes, &dead, &progress).expect("bulk write");
            model.apply(&changes, &dead, &progress);
            if i == 60 {
                bulk.held_final().expect("held final");
                // Only fjall ingests a namespace on its own.
                assert_eq!(bulk.writes_early(), engine == Engine::Fjall);
            }
            if bulk.writes_early() && rng.random_bool(0.3) {
                bulk.write_early().expect("write early");
                early += 1;
            }
        }
        if engine == Engine::Fjall {
            assert!(early > 3, "namespaces written early: {early}");
        }
        bulk.finish().expect("finish");
        let runs = loaded.sorted_runs().expect("runs");
        assert!(
            runs.values().all(|&n| n <= 1),
            "{engine} hold {hold}: {runs:?}"
        );
        same_as_committed(loaded, &committed, &mut model, &mut rng);
    }
}

/// A temporary directory with two new states in it: one for commits, one
/// for the same writes another way.
fn two_states(engine: Engine) -> (tempfile::TempDir, Store, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let committed = open_engine(&dir.path().join("commits"), engine).expect("open");
    let other = open_engine(&dir.path().join("other"), engine).expect("open");
    (dir, committed, other)
}

/// A random commit, committed to `committed` (and returned).
fn committed_at_random(
    rng: &mut StdRng,
    model: &Model,
    committed: &Store,
) -> (Vec<Change>, Vec<DeadLetter>, Progress) {
    let (changes, dead, progress) = random_commit(rng, model);
    committed
        .commit(&changes, &dead, &progress)
        .expect("commit");
    (changes, dead, progress)
}

/// The export of `s`.
fn export(s: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    s.export(&mut out).expect("export");
    out
}

/// A finished bulk load (`loaded`) holds what `committed` holds: the same
/// export, meta and counts, the model's answers; the same after a reopen,
/// and it continues with commits like any state.
fn same_as_committed(loaded: Store, committed: &Store, model: &mut Model, rng: &mut StdRng) {
    let expected = export(committed);
    assert!(expected.len() > 1000, "a real export");
    assert_eq!(export(&loaded), expected);
    assert_eq!(
        loaded.meta().expect("meta"),
        committed.meta().expect("meta")
    );
    assert_eq!(
        loaded.counts().expect("counts"),
        committed.counts().expect("counts")
    );
    check(&loaded, model, rng, 0);
    let path = loaded.path().to_path_buf();
    let engine = loaded.engine();
    drop(loaded);
    let loaded = retry(|| open_engine(&path, engine));
    assert_eq!(loaded.commit_count(), 1);
    assert_eq!(export(&loaded), expected);
    let (changes, dead, progress) = random_commit(rng, model);
    loaded.commit(&changes, &dead, &progress).expect("commit");
    model.apply(&changes, &dead, &progress);
    check(&loaded, model, rng, 1);
}

/// Which of `n` encoders a change goes to: every key has one owner, as a
/// replay's records have one owner worker (a link's two entries, an
/// identifier's assignment and its memberships go together).
fn owner(change: &Change, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match change {
        Change::Node { id, dataflow, .. } => (id, dataflow).hash(&mut h),
        Change::Edge {
            edge_type,
            from,
            to,
            dataflow,
            ..
        } => (edge_type, from, to, dataflow).hash(&mut h),
        Change::Link { a, b, dataflow, .. } => (a, b, dataflow).hash(&mut h),
        Change::Cluster { id, .. } => id.hash(&mut h),
        Change::Member { member, .. } => member.hash(&mut h),
    }
    (h.finish() % n as u64) as usize
}

/// Changes encoded by several encoders on threads of their own
/// (`BulkLoad::encoder`, as a replay's workers encode theirs), with dead
/// letters and progress written by the load itself, give the state that
/// committing them one by one gives. Small runs: many of them, and each
/// encoder meets the namespaces in its own order. Every way runs reach the
/// engine (at once, merged a few at a time, merged once).
fn bulk_load_from_encoders_equals_commits(engine: Engine) {
    for (seed, hold) in [0, 5_000, usize::MAX].into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(70 + seed as u64);
        let (_dir, committed, loaded) = two_states(engine);
        let mut bulk = loaded
            .bulk_load_with(BulkMethod::Ingest, 3_000, hold)
            .expect("bulk load");
        let n = 3;
        let mut encoders: Vec<_> = (0..n).map(|_| bulk.encoder(n)).collect();
        let mut model = Model::default();
        for _ in 0..120 {
            let (changes, dead, progress) = committed_at_random(&mut rng, &model, &committed);
            let mut shares = vec![Vec::new(); n];
            for c in &changes {
                shares[owner(c, n)].push(c.clone());
            }
            std::thread::scope(|s| {
                for (encoder, share) in encoders.iter_mut().zip(&shares) {
                    s.spawn(move || encoder.encode(share).expect("encode"));
                }
            });
            bulk.write(&[], &dead, &progress).expect("bulk write");
            model.apply(&changes, &dead, &progress);
        }
        // Dropping an encoder hands over what it still holds.
        drop(encoders);
        bulk.finish().expect("finish");
        same_as_committed(loaded, &committed, &mut model, &mut rng);
    }
}

/// Playback's node `profile:id`, seen once.
fn profile_seen_once(id: &str) -> Change {
    Change::Node {
        id: ident("profile", id),
        dataflow: "playback".into(),
        record: Some(Record {
            count: 1,
            first_seen: 1,
            last_seen: 1,
            props: "".into(),
        }),
    }
}

/// A load does not finish while an encoder is open (what it holds would
/// be lost), and an encoder's failure is the load's: a key too long for
/// the engines fails the load with the reason, and the state reopens
/// empty.
fn bulk_load_refuses_open_or_failed_encoders(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_engine(dir.path(), engine).expect("open");
    let change = |id: String| profile_seen_once(&id);
    let bulk = store.bulk_load().expect("bulk load");
    let mut open = bulk.encoder(1);
    open.encode(&[change("p1".into())]).expect("encode");
    let refused = bulk.finish();
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("1 encoders of the write are still open")),
        "{refused:?}"
    );
    drop(open);
    drop(store);
    let store = retry(|| open_engine(dir.path(), engine));
    assert_eq!(store.commit_count(), 0, "the refused load was wiped");

    let mut bulk = store
        .bulk_load_with(BulkMethod::Ingest, 100, 0)
        .expect("bulk load");
    let mut encoder = bulk.encoder(1);
    encoder.encode(&[change("p2".into())]).expect("encode");
    let failed = encoder.encode(&[change("x".repeat(100_000))]);
    assert!(failed.is_err(), "a key too long fails its encoder");
    drop(encoder);
    let refused = bulk.write(&[], &[], &Progress::default());
    let reason = refused
        .expect_err("the load fails with the encoder's error")
        .to_string();
    assert!(reason.contains("long"), "{reason}");
}
/// Runs not yet taken in are bounded (by the load's buffer size): an
/// encoder handing a run over past the bound waits until the load takes
/// its inbox in, and never once the load is gone.
fn encoders_wait_while_their_runs_are_not_taken_in(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_engine(dir.path(), engine).expect("open");
    let node = |i: usize| profile_seen_once(&format!("wait-{i:04}"));
    // Every change is a run of its own, past the bound of 100 bytes.
    let mut bulk = store
        .bulk_load_with(BulkMethod::Ingest, 100, usize::MAX)
        .expect("bulk load");
    let mut encoder = bulk.encoder(1);
    let writer = std::thread::spawn(move || {
        for i in 0..20 {
            encoder.encode(&[node(i)]).expect("encode");
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "the encoder waits for its runs to be taken in"
    );
    while !writer.is_finished() {
        bulk.take_in().expect("take in");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    writer.join().expect("encoder thread");
    bulk.finish().expect("finish");
    assert_eq!(store.counts().expect("counts").nodes, 20, "every run is in");

    // A load that is gone is never waited for.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_engine(dir.path(), engine).expect("open");
    let bulk = store
        .bulk_load_with(BulkMethod::Ingest, 100, usize::MAX)
        .expect("bulk load");
    let mut encoder = bulk.encoder(1);
    drop(bulk);
    for i in 0..20 {
        encoder.encode(&[node(i)]).expect("encode");
    }
}

both_engines!(
    model_seed_1,
    model_seed_2,
    model_seed_3,
    second_open_is_locked_and_names_the_dir,
    other_format_version_is_refused,
    format_1_is_upgraded_at_open,
    many_tree_commit_is_all_there_after_reopen,
    concurrent_commits_from_clones_add_up,
    engine_is_recorded_and_another_is_refused,
    bulk_load_equals_commits,
    bulk_load_written_early_equals_commits,
    bulk_load_from_encoders_equals_commits,
    bulk_load_refuses_open_or_failed_encoders,
    encoders_wait_while_their_runs_are_not_taken_in,
);

#[test]
fn a_new_state_defaults_to_fjall() {
    new_state_defaults_to_fjall();
}

#[test]
fn a_state_without_engine_marker_opens_as_sled() {
    state_without_engine_marker_opens_as_sled();
}
