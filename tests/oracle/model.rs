//! The oracle: a plain sequential model of `docs/semantics.md` for exactly the
//! definitions in `tests/fixtures/oracle/` (views, sessions, logins, rdg.toml).
//!
//! It owns the meaning of those fixture files, hard-coded (it is a reference
//! model of this fixture, not a general interpreter), and computes from input
//! lines the export `rdg export` must print.
//!
//! Invariant: nothing here uses rdg's library. Each dataflow is a `BTreeMap`
//! of its own contributions, updated one event at a time in file order, with
//! expiry applied lazily (a record whose `last_seen + retention <= W` is
//! treated as gone whenever it is looked at, which is the same as removing it
//! eagerly because W only grows). Everything read across dataflows (merged
//! nodes and edges, hubs, clusters) is recomputed from scratch at export.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

/// Props of a record: prop name to JSON value, sorted by name.
pub type Props = BTreeMap<String, Value>;

/// The dataflows of the fixture (definition file stems, equal to their
/// topics), sorted by name.
pub const DATAFLOWS: [&str; 3] = ["logins", "sessions", "views"];

/// `rdg.toml` of the fixture.
const BLOCKLIST: [&str; 3] = ["", "0", "anon"];

fn max_links(ident: &str) -> usize {
    match ident.split_once(':').map(|(t, _)| t) {
        Some("device") => 2,
        _ => 3,
    }
}

const SECOND: i64 = 1000;

/// A record one dataflow contributes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    /// `id` is the part after `type:`.
    Node { ty: String, id: String },
    /// `from` and `to` are `type:id` identifiers.
    Edge {
        ty: String,
        from: String,
        to: String,
    },
    /// An identity link, `a < b`.
    Link { a: String, b: String },
}

/// One dataflow's aggregate for one record.
#[derive(Clone, Debug, PartialEq)]
pub struct Rec {
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub props: Props,
}

/// What one rule asserts (or retracts) for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Assertion {
    /// Index of the rule in its file (nodes, then edges, then identity).
    pub rule: usize,
    pub key: Key,
    /// Retention of the rule, in ms.
    pub retention: Option<i64>,
    pub props: Props,
}

/// The meaning of one input line for its dataflow.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// The source `when` does not hold.
    Ignored,
    Dead,
    Event {
        time: i64,
        delete: bool,
        asserts: Vec<Assertion>,
    },
}

/// The state of one dataflow: watermark, counters, contributions.
#[derive(Clone, Debug, Default)]
pub struct Dataflow {
    /// `None` is minus infinity.
    pub watermark: Option<i64>,
    /// Events applied (not ignored, not dead letters).
    pub events: u64,
    /// One per rule that ignored an event because it was late.
    pub late: u64,
    /// Contributions with the retention of the rule that asserts them.
    records: BTreeMap<Key, (Option<i64>, Rec)>,
}

fn expired(retention: Option<i64>, rec: &Rec, watermark: Option<i64>) -> bool {
    match (retention, watermark) {
        (Some(r), Some(w)) => rec.last_seen + r <= w,
        _ => false,
    }
}

impl Dataflow {
    /// Applies one event that is neither ignored nor a dead letter.
    pub fn apply(&mut self, time: i64, delete: bool, asserts: Vec<Assertion>) {
        self.events += 1;
        // One event asserting the same record through several rules counts
        // once; props of later rules (file order) win per key.
        let mut grouped: Vec<(BTreeSet<usize>, Assertion)> = Vec::new();
        for a in asserts {
            match grouped.iter_mut().find(|(_, g)| g.key == a.key) {
                Some((rules, g)) => {
                    assert_eq!(g.retention, a.retention, "fixture: same retention");
                    rules.insert(a.rule);
                    g.props.extend(a.props);
                }
                None => grouped.push((BTreeSet::from([a.rule]), a)),
            }
        }
        let w = self.watermark;
        let mut late_rules = BTreeSet::new();
        for (rules, a) in grouped {
            if let Some((ret, rec)) = self.records.get(&a.key)
                && expired(*ret, rec, w)
            {
                self.records.remove(&a.key);
            }
            if let (Some(r), Some(w)) = (a.retention, w)
                && time + r <= w
            {
                late_rules.extend(rules);
                continue;
            }
            if delete {
                self.records.remove(&a.key);
                continue;
            }
            match self.records.get_mut(&a.key) {
                None => {
                    let rec = Rec {
                        count: 1,
                        first_seen: time,
                        last_seen: time,
                        props: a.props,
                    };
                    self.records.insert(a.key, (a.retention, rec));
                }
                Some((_, rec)) => {
                    rec.count += 1;
                    rec.first_seen = rec.first_seen.min(time);
                    if time >= rec.last_seen {
                        rec.props = a.props;
                    }
                    rec.last_seen = rec.last_seen.max(time);
                }
            }
        }
        self.late += late_rules.len() as u64;
        self.watermark = Some(w.map_or(time, |w| w.max(time)));
    }

    /// The live contributions (expiry with the current watermark applied).
    pub fn live(&self) -> impl Iterator<Item = (&Key, &Rec)> {
        self.records
            .iter()
            .filter(|(_, (ret, rec))| !expired(*ret, rec, self.watermark))
            .map(|(k, (_, rec))| (k, rec))
    }
}

/// The live contributions to one record, with their dataflow names.
type Contribs<'a> = Vec<(&'a str, &'a Rec)>;

/// The whole model: every dataflow, and the dead letters as
/// `(dataflow, source)` in the order they were met.
#[derive(Clone, Debug)]
pub struct Model {
    pub dataflows: BTreeMap<&'static str, Dataflow>,
    pub dead: Vec<(String, String)>,
}

impl Default for Model {
    fn default() -> Self {
        Model::new()
    }
}

impl Model {
    pub fn new() -> Model {
        Model {
            dataflows: DATAFLOWS
                .iter()
                .map(|d| (*d, Dataflow::default()))
                .collect(),
            dead: Vec::new(),
        }
    }

    /// One replay: each `(topic, lines)` is the file `<topic>.jsonl`, read in
    /// order. Topics are independent, so the order of the files is irrelevant.
    pub fn replay(&mut self, files: &[(&str, &[String])]) {
        for (topic, lines) in files {
            let Some((name, df)) = self.dataflows.iter_mut().find(|(n, _)| *n == topic) else {
                panic!("no dataflow reads topic {topic}");
            };
            for (i, line) in lines.iter().enumerate() {
                match decode(name, line) {
                    Decoded::Ignored => {}
                    Decoded::Dead => self
                        .dead
                        .push((name.to_string(), format!("{topic}.jsonl:{}", i + 1))),
                    Decoded::Event {
                        time,
                        delete,
                        asserts,
                    } => df.apply(time, delete, asserts),
                }
            }
        }
    }

    /// The node, edge and identity lines of the export, sorted bytewise.
    pub fn graph_lines(&self) -> Vec<String> {
        let mut nodes: BTreeMap<(&str, &str), Contribs> = BTreeMap::new();
        let mut edges: BTreeMap<(&str, &str, &str), Contribs> = BTreeMap::new();
        let mut links: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for (name, df) in &self.dataflows {
            for (key, rec) in df.live() {
                match key {
                    Key::Node { ty, id } => nodes.entry((ty, id)).or_default().push((name, rec)),
                    Key::Edge { ty, from, to } => {
                        edges.entry((ty, from, to)).or_default().push((name, rec))
                    }
                    Key::Link { a, b } => {
                        let f = links.entry((a, b)).or_insert(rec.first_seen);
                        *f = (*f).min(rec.first_seen);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for ((ty, id), contribs) in &nodes {
            let (_, first, last, props) = merge(contribs);
            out.push(format!(
                "{{\"ns\":\"node\",\"type\":{},\"id\":{},\"first_seen\":{first},\"last_seen\":{last},\"props\":{}}}",
                js(ty),
                js(id),
                props_json(&props)
            ));
        }
        for ((ty, from, to), contribs) in &edges {
            let (count, first, last, props) = merge(contribs);
            out.push(format!(
                "{{\"ns\":\"edge\",\"type\":{},\"from\":{},\"to\":{},\"count\":{count},\"first_seen\":{first},\"last_seen\":{last},\"props\":{}}}",
                js(ty),
                js(from),
                js(to),
                props_json(&props)
            ));
        }
        for (id, (cluster, hub)) in clusters(&links) {
            out.push(format!(
                "{{\"ns\":\"identity\",\"id\":{},\"cluster\":{},\"hub\":{hub}}}",
                js(&id),
                js(&cluster)
            ));
        }
        out.sort();
        out
    }

    /// The dead letters as export lines without their reason: everything
    /// up to `,"reason":`, sorted bytewise.
    pub fn dead_letter_prefixes(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .dead
            .iter()
            .map(|(d, s)| dead_letter_prefix(d, s))
            .collect();
        out.sort();
        out
    }
}

/// `{"ns":"dead_letter","dataflow":D,"source":S`: a dead letter line up to
/// its reason.
pub fn dead_letter_prefix(dataflow: &str, source: &str) -> String {
    format!(
        "{{\"ns\":\"dead_letter\",\"dataflow\":{},\"source\":{}",
        js(dataflow),
        js(source)
    )
}

/// Merges the live contributions of several dataflows (given in name
/// order): count summed, first_seen min, last_seen max, props by key from the
/// contribution with the greater last_seen, ties to the greater name.
fn merge(contribs: &[(&str, &Rec)]) -> (u64, i64, i64, Props) {
    let count = contribs.iter().map(|(_, r)| r.count).sum();
    let first = contribs.iter().map(|(_, r)| r.first_seen).min();
    let last = contribs.iter().map(|(_, r)| r.last_seen).max();
    let mut best: BTreeMap<&str, ((i64, &str), &Value)> = BTreeMap::new();
    for (name, rec) in contribs {
        for (k, v) in &rec.props {
            let rank = (rec.last_seen, *name);
            match best.get(k.as_str()) {
                Some((r, _)) if *r > rank => {}
                _ => {
                    best.insert(k, (rank, v));
                }
            }
        }
    }
    let props = best
        .into_iter()
        .map(|(k, (_, v))| (k.to_string(), v.clone()))
        .collect();
    (
        count,
        first.unwrap_or_default(),
        last.unwrap_or_default(),
        props,
    )
}

/// Identifier -> (cluster, hub) for every identifier with a live link,
/// computed from scratch: neighbours, hubs, then connected components (BFS)
/// of the links between non-hubs.
fn clusters(links: &BTreeMap<(&str, &str), i64>) -> BTreeMap<String, (String, bool)> {
    let mut neighbours: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut first_seen: BTreeMap<&str, i64> = BTreeMap::new();
    for (&(a, b), &f) in links {
        neighbours.entry(a).or_default().insert(b);
        neighbours.entry(b).or_default().insert(a);
        for x in [a, b] {
            let e = first_seen.entry(x).or_insert(f);
            *e = (*e).min(f);
        }
    }
    let hub = |x: &str| neighbours[x].len() > max_links(x);
    let mut out = BTreeMap::new();
    for &start in neighbours.keys() {
        if out.contains_key(start) {
            continue;
        }
        if hub(start) {
            out.insert(start.to_string(), (start.to_string(), true));
            continue;
        }
        let mut component = vec![start];
        let mut seen = BTreeSet::from([start]);
        let mut queue = VecDeque::from([start]);
        while let Some(x) = queue.pop_front() {
            for &y in &neighbours[x] {
                if !hub(y) && seen.insert(y) {
                    component.push(y);
                    queue.push_back(y);
                }
            }
        }
        let id = component
            .iter()
            .min_by_key(|x| (first_seen[**x], **x))
            .map(|x| x.to_string())
            .unwrap_or_default();
        for x in component {
            out.insert(x.to_string(), (id.clone(), false));
        }
    }
    out
}

/// A JSON string literal.
pub fn js(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn props_json(p: &Props) -> String {
    let fields: Vec<String> = p.iter().map(|(k, v)| format!("{}:{}", js(k), v)).collect();
    format!("{{{}}}", fields.join(","))
}

// ---- Reading events: the hard-coded meaning of the fixture files. ----

/// An id field: strings as they are, integers in decimal; missing or null is
/// absent; anything else is bad.
#[derive(Clone, Debug, PartialEq)]
enum Id {
    Absent,
    Bad,
    Is(String),
}

fn at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |v, p| v.as_object()?.get(p))
}

fn id(v: &Value, path: &str) -> Id {
    match at(v, path) {
        None | Some(Value::Null) => Id::Absent,
        Some(Value::String(s)) => Id::Is(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Id::Is(n.to_string()),
        Some(_) => Id::Bad,
    }
}

fn is_str(v: &Value, path: &str, want: &str) -> bool {
    at(v, path).and_then(Value::as_str) == Some(want)
}

/// Props from (name, path): absent and null fields are left out.
fn props(v: &Value, fields: &[(&str, &str)]) -> Props {
    fields
        .iter()
        .filter_map(|(name, path)| {
            at(v, path)
                .filter(|x| !x.is_null())
                .map(|x| (name.to_string(), x.clone()))
        })
        .collect()
}

/// The event time in ms: integers times `ms_per_unit`, other numbers
/// floored after scaling, strings as RFC 3339.
fn time(v: &Value, path: &str, ms_per_unit: i64) -> Option<i64> {
    match at(v, path)? {
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.checked_mul(ms_per_unit),
            None => Some((n.as_f64()? * ms_per_unit as f64).floor() as i64),
        },
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_millis()),
        _ => None,
    }
}

fn node(rule: usize, ty: &str, id: &Id, retention: Option<i64>, props: Props) -> Vec<Assertion> {
    match id {
        Id::Is(i) => vec![Assertion {
            rule,
            key: Key::Node {
                ty: ty.to_string(),
                id: i.clone(),
            },
            retention,
            props,
        }],
        _ => vec![],
    }
}

#[allow(clippy::too_many_arguments)]
fn edge(
    rule: usize,
    ty: &str,
    from_ty: &str,
    from: &Id,
    to_ty: &str,
    to: &Id,
    retention: Option<i64>,
    props: Props,
) -> Vec<Assertion> {
    match (from, to) {
        (Id::Is(f), Id::Is(t)) => vec![Assertion {
            rule,
            key: Key::Edge {
                ty: ty.to_string(),
                from: format!("{from_ty}:{f}"),
                to: format!("{to_ty}:{t}"),
            },
            retention,
            props,
        }],
        _ => vec![],
    }
}

/// Links between the present, non-blocklisted identifiers, pairwise.
fn links(rule: usize, ids: &[(&str, &Id)], retention: Option<i64>) -> Vec<Assertion> {
    let mut present: Vec<String> = ids
        .iter()
        .filter_map(|(ty, id)| match id {
            Id::Is(i) if !BLOCKLIST.contains(&i.as_str()) => Some(format!("{ty}:{i}")),
            _ => None,
        })
        .collect();
    present.sort();
    present.dedup();
    let mut out = Vec::new();
    for (x, a) in present.iter().enumerate() {
        for b in &present[x + 1..] {
            out.push(Assertion {
                rule,
                key: Key::Link {
                    a: a.clone(),
                    b: b.clone(),
                },
                retention,
                props: Props::new(),
            });
        }
    }
    out
}

/// Decodes one line of `topic` as the fixture definition of that topic says.
pub fn decode(topic: &str, line: &str) -> Decoded {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return Decoded::Dead;
    };
    if !v.is_object() {
        return Decoded::Dead;
    }
    match topic {
        "views" => views(&v),
        "sessions" => sessions(&v),
        "logins" => logins(&v),
        other => panic!("no fixture definition reads topic {other}"),
    }
}

/// views.toml
fn views(v: &Value) -> Decoded {
    if !(is_str(v, "kind", "start") || is_str(v, "kind", "stop")) {
        return Decoded::Ignored;
    }
    let Some(time) = time(v, "ts", 1) else {
        return Decoded::Dead;
    };
    let (user, item, device) = (id(v, "user"), id(v, "item"), id(v, "device"));
    // `item` is required; every id field is read by a rule without `when`.
    if [&user, &item, &device].contains(&&Id::Bad) || item == Id::Absent {
        return Decoded::Dead;
    }
    let mut asserts = Vec::new();
    let user_props = props(v, &[("country", "geo.country"), ("tier", "tier")]);
    asserts.extend(node(0, "user", &user, Some(30 * SECOND), user_props));
    asserts.extend(node(1, "item", &item, None, Props::new()));
    if is_str(v, "kind", "start") {
        let p = props(v, &[("device", "device"), ("pos", "pos")]);
        asserts.extend(edge(
            2,
            "viewed",
            "user",
            &user,
            "item",
            &item,
            Some(10 * SECOND),
            p,
        ));
    }
    asserts.extend(edge(
        3,
        "uses",
        "user",
        &user,
        "device",
        &device,
        Some(20 * SECOND),
        Props::new(),
    ));
    asserts.extend(links(
        4,
        &[("user", &user), ("device", &device)],
        Some(30 * SECOND),
    ));
    Decoded::Event {
        time,
        delete: is_str(v, "op", "delete"),
        asserts,
    }
}

/// sessions.toml
fn sessions(v: &Value) -> Decoded {
    let Some(time) = time(v, "at", 1) else {
        return Decoded::Dead;
    };
    let invite = is_str(v, "via", "invite");
    let (uid, dev, mail) = (id(v, "uid"), id(v, "dev"), id(v, "mail"));
    // `referrer` is only read when its rule's `when` holds.
    let referrer = if invite {
        id(v, "referrer")
    } else {
        Id::Absent
    };
    if [&uid, &dev, &mail, &referrer].contains(&&Id::Bad) {
        return Decoded::Dead;
    }
    let mut asserts = Vec::new();
    let p = props(v, &[("country", "country"), ("plan", "plan")]);
    asserts.extend(node(0, "user", &uid, Some(30 * SECOND), p));
    if invite {
        let p = props(v, &[("country", "ref_country")]);
        asserts.extend(node(1, "user", &referrer, Some(30 * SECOND), p));
    }
    let p = props(v, &[("os", "os")]);
    asserts.extend(edge(
        2,
        "uses",
        "user",
        &uid,
        "device",
        &dev,
        Some(10 * SECOND),
        p,
    ));
    asserts.extend(links(
        3,
        &[("user", &uid), ("device", &dev), ("email", &mail)],
        Some(30 * SECOND),
    ));
    Decoded::Event {
        time,
        delete: is_str(v, "action", "forget"),
        asserts,
    }
}

/// logins.toml
fn logins(v: &Value) -> Decoded {
    if !is_str(v, "result", "ok") {
        return Decoded::Ignored;
    }
    let Some(time) = time(v, "ts", SECOND) else {
        return Decoded::Dead;
    };
    let (uid, mail) = (id(v, "uid"), id(v, "mail"));
    if [&uid, &mail].contains(&&Id::Bad) {
        return Decoded::Dead;
    }
    let mut asserts = Vec::new();
    asserts.extend(node(
        0,
        "user",
        &uid,
        None,
        props(v, &[("country", "country")]),
    ));
    asserts.extend(node(1, "email", &mail, None, Props::new()));
    let p = props(v, &[("verified", "verified")]);
    asserts.extend(edge(
        2,
        "has_email",
        "user",
        &uid,
        "email",
        &mail,
        Some(30 * SECOND),
        p,
    ));
    asserts.extend(links(
        3,
        &[("user", &uid), ("email", &mail)],
        Some(20 * SECOND),
    ));
    Decoded::Event {
        time,
        delete: is_str(v, "op", "delete"),
        asserts,
    }
}

#[cfg(test)]
mod tests {
    //! Hand-computed scenarios, checked against the model itself.

    use super::*;

    /// 2023-11-14T22:13:20Z
    const T: i64 = 1_700_000_000_000;

    fn owned(lines: &[String]) -> Vec<String> {
        lines.to_vec()
    }

    fn run(files: &[(&str, Vec<String>)]) -> Model {
        let mut m = Model::new();
        let refs: Vec<(&str, &[String])> = files.iter().map(|(t, l)| (*t, l.as_slice())).collect();
        m.replay(&refs);
        m
    }

    fn ns(m: &Model, ns: &str) -> Vec<String> {
        let prefix = format!("{{\"ns\":\"{ns}\"");
        m.graph_lines()
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }

    fn node(ty: &str, id: &str, first: i64, last: i64, props: &str) -> String {
        format!(
            "{{\"ns\":\"node\",\"type\":\"{ty}\",\"id\":\"{id}\",\"first_seen\":{first},\"last_seen\":{last},\"props\":{props}}}"
        )
    }

    fn edge(
        ty: &str,
        from: &str,
        to: &str,
        count: u64,
        first: i64,
        last: i64,
        props: &str,
    ) -> String {
        format!(
            "{{\"ns\":\"edge\",\"type\":\"{ty}\",\"from\":\"{from}\",\"to\":\"{to}\",\"count\":{count},\"first_seen\":{first},\"last_seen\":{last},\"props\":{props}}}"
        )
    }

    fn ident(id: &str, cluster: &str, hub: bool) -> String {
        format!("{{\"ns\":\"identity\",\"id\":\"{id}\",\"cluster\":\"{cluster}\",\"hub\":{hub}}}")
    }

    fn view(
        ts: i64,
        kind: &str,
        user: &str,
        item: &str,
        device: Option<&str>,
        extra: &str,
    ) -> String {
        let device = device
            .map(|d| format!(",\"device\":\"{d}\""))
            .unwrap_or_default();
        format!(
            "{{\"ts\":{ts},\"kind\":\"{kind}\",\"user\":\"{user}\",\"item\":\"{item}\"{device}{extra}}}"
        )
    }

    fn count_of(m: &Model, dataflow: &str, key: &Key) -> Option<u64> {
        m.dataflows[dataflow]
            .live()
            .find(|(k, _)| *k == key)
            .map(|(_, r)| r.count)
    }

    fn user_key(id: &str) -> Key {
        Key::Node {
            ty: "user".into(),
            id: id.into(),
        }
    }

    #[test]
    fn expired_record_restarts() {
        let m = run(&[(
            "views",
            vec![
                view(T, "stop", "u1", "i1", None, ""),
                view(T + 30_000, "stop", "u2", "i1", None, ""),
                // W = T+30s: u1 (last_seen T, retention 30s) has expired.
                view(T + 31_000, "stop", "u1", "i1", None, ""),
            ],
        )]);
        assert_eq!(
            m.graph_lines(),
            vec![
                node("item", "i1", T, T + 31_000, "{}"),
                node("user", "u1", T + 31_000, T + 31_000, "{}"),
                node("user", "u2", T + 30_000, T + 30_000, "{}"),
            ]
        );
        assert_eq!(count_of(&m, "views", &user_key("u1")), Some(1));
        // And at the end: one more event 30 s after u2 expires u2 too, but
        // never the item (no retention).
        let mut m = m;
        m.replay(&[(
            "views",
            &owned(&[view(T + 60_000, "stop", "u3", "i2", None, "")]),
        )]);
        assert_eq!(
            m.graph_lines(),
            vec![
                node("item", "i1", T, T + 31_000, "{}"),
                node("item", "i2", T + 60_000, T + 60_000, "{}"),
                node("user", "u1", T + 31_000, T + 31_000, "{}"),
                node("user", "u3", T + 60_000, T + 60_000, "{}"),
            ]
        );
    }

    #[test]
    fn late_event_is_ignored_by_the_rules_it_is_late_for() {
        let m = run(&[(
            "views",
            vec![
                view(T + 20_000, "start", "u1", "i1", Some("d1"), ""),
                // W = T+20s. viewed (10s) is late; user (30s), uses (20s),
                // the link (30s) and item (no retention) still apply.
                view(
                    T + 5_000,
                    "start",
                    "u1",
                    "i2",
                    Some("d1"),
                    ",\"pos\":7,\"tier\":2",
                ),
                // Exactly on the boundary: T+10s + 10s <= W is late too.
                view(T + 10_000, "start", "u1", "i1", Some("d1"), ""),
            ],
        )]);
        assert_eq!(
            m.graph_lines(),
            vec![
                edge(
                    "uses",
                    "user:u1",
                    "device:d1",
                    3,
                    T + 5_000,
                    T + 20_000,
                    "{}"
                ),
                edge(
                    "viewed",
                    "user:u1",
                    "item:i1",
                    1,
                    T + 20_000,
                    T + 20_000,
                    "{\"device\":\"d1\"}"
                ),
                ident("device:d1", "device:d1", false),
                ident("user:u1", "device:d1", false),
                node("item", "i1", T + 10_000, T + 20_000, "{}"),
                node("item", "i2", T + 5_000, T + 5_000, "{}"),
                // Older events never replace the props of a newer one.
                node("user", "u1", T + 5_000, T + 20_000, "{}"),
            ]
        );
        assert_eq!(m.dataflows["views"].late, 2);
        assert_eq!(m.dataflows["views"].watermark, Some(T + 20_000));
    }

    #[test]
    fn delete_then_reassert() {
        let m = run(&[(
            "views",
            vec![
                view(T, "start", "u1", "i1", Some("d1"), ",\"pos\":1"),
                view(
                    T + 1_000,
                    "start",
                    "u1",
                    "i1",
                    Some("d1"),
                    ",\"op\":\"delete\"",
                ),
                // Deleting what does not exist is a no-op.
                view(T + 1_500, "stop", "u9", "i9", None, ",\"op\":\"delete\""),
                view(T + 2_000, "stop", "u1", "i1", None, ",\"tier\":\"gold\""),
            ],
        )]);
        assert_eq!(
            m.graph_lines(),
            vec![
                node("item", "i1", T + 2_000, T + 2_000, "{}"),
                node("user", "u1", T + 2_000, T + 2_000, "{\"tier\":\"gold\"}"),
            ]
        );
        assert_eq!(count_of(&m, "views", &user_key("u1")), Some(1));
        assert_eq!(m.dataflows["views"].watermark, Some(T + 2_000));
    }

    #[test]
    fn a_late_delete_deletes_nothing() {
        let m = run(&[(
            "views",
            vec![
                view(T + 10_000, "start", "u1", "i1", None, ""),
                view(T + 15_000, "stop", "u2", "i2", None, ""),
                // Late for viewed (10s) only: the user and the item go, the
                // edge (last seen T+10s, so still live at W = T+15s) stays.
                view(T + 4_000, "start", "u1", "i1", None, ",\"op\":\"delete\""),
            ],
        )]);
        assert_eq!(
            m.graph_lines(),
            vec![
                edge(
                    "viewed",
                    "user:u1",
                    "item:i1",
                    1,
                    T + 10_000,
                    T + 10_000,
                    "{}"
                ),
                node("item", "i2", T + 15_000, T + 15_000, "{}"),
                node("user", "u2", T + 15_000, T + 15_000, "{}"),
            ]
        );
        assert_eq!(m.dataflows["views"].late, 1);
    }

    #[test]
    fn hubs_are_kept_out_of_clusters() {
        let three = vec![
            view(T, "stop", "u1", "i1", Some("d1"), ""),
            view(T + 1_000, "stop", "u2", "i1", Some("d1"), ""),
            // Blocklisted ids never link.
            view(T + 1_500, "stop", "anon", "i1", Some("d1"), ""),
            view(T + 1_600, "stop", "u1", "i1", Some("0"), ""),
        ];
        // Two neighbours is exactly max_links for a device: not a hub.
        let m = run(&[("views", three.clone())]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("device:d1", "device:d1", false),
                ident("user:u1", "device:d1", false),
                ident("user:u2", "device:d1", false),
            ]
        );
        let mut more = three;
        more.push(view(T + 2_000, "stop", "u3", "i1", Some("d1"), ""));
        let m = run(&[("views", more)]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("device:d1", "device:d1", true),
                ident("user:u1", "user:u1", false),
                ident("user:u2", "user:u2", false),
                ident("user:u3", "user:u3", false),
            ]
        );
    }

    #[test]
    fn a_user_with_four_neighbours_is_a_hub() {
        // max_links = 3 for users; links from two dataflows count once each.
        let m = run(&[
            (
                "sessions",
                vec![
                    format!("{{\"at\":{T},\"uid\":\"u1\",\"dev\":\"d1\",\"mail\":\"e1\"}}"),
                    format!("{{\"at\":{},\"uid\":\"u1\",\"dev\":\"d2\"}}", T + 1_000),
                ],
            ),
            (
                "views",
                vec![
                    view(T, "stop", "u1", "i1", Some("d1"), ""),
                    view(T + 2_000, "stop", "u1", "i1", Some("d3"), ""),
                ],
            ),
        ]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("device:d1", "device:d1", false),
                ident("device:d2", "device:d2", false),
                ident("device:d3", "device:d3", false),
                ident("email:e1", "device:d1", false),
                ident("user:u1", "user:u1", true),
            ]
        );
    }

    #[test]
    fn cluster_id_stays_when_a_newer_identifier_joins() {
        let s1 = "{\"at\":\"2023-11-14T22:13:20Z\",\"uid\":\"u5\",\"mail\":\"e5\"}".to_string();
        let s2 = "{\"at\":\"2023-11-14T22:13:21.000Z\",\"uid\":\"u5\",\"dev\":\"d7\"}".to_string();
        let m = run(&[("sessions", vec![s1.clone()])]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("email:e5", "email:e5", false),
                ident("user:u5", "email:e5", false)
            ]
        );
        // device:d7 sorts before email:e5 but was first seen later.
        let m = run(&[("sessions", vec![s1, s2])]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("device:d7", "email:e5", false),
                ident("email:e5", "email:e5", false),
                ident("user:u5", "email:e5", false),
            ]
        );
        assert_eq!(
            ns(&m, "edge"),
            vec![edge(
                "uses",
                "user:u5",
                "device:d7",
                1,
                T + 1_000,
                T + 1_000,
                "{}"
            )]
        );
    }

    #[test]
    fn cluster_splits_when_a_link_is_deleted() {
        let logins = vec![format!(
            "{{\"ts\":{},\"result\":\"ok\",\"uid\":\"u1\",\"mail\":\"e1\"}}",
            T / 1000
        )];
        let mut views = vec![
            view(T + 1_000, "stop", "u1", "i1", Some("d1"), ""),
            view(T + 2_000, "stop", "u2", "i1", Some("d1"), ""),
        ];
        let m = run(&[("logins", logins.clone()), ("views", views.clone())]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                ident("device:d1", "email:e1", false),
                ident("email:e1", "email:e1", false),
                ident("user:u1", "email:e1", false),
                ident("user:u2", "email:e1", false),
            ]
        );
        views.push(view(
            T + 3_000,
            "stop",
            "u1",
            "i1",
            Some("d1"),
            ",\"op\":\"delete\"",
        ));
        let m = run(&[("logins", logins), ("views", views)]);
        assert_eq!(
            ns(&m, "identity"),
            vec![
                // d1's first_seen is now that of its only live link, to u2.
                ident("device:d1", "device:d1", false),
                ident("email:e1", "email:e1", false),
                ident("user:u1", "email:e1", false),
                ident("user:u2", "device:d1", false),
            ]
        );
    }

    #[test]
    fn contributions_merge_props_by_latest_then_by_dataflow_name() {
        let views = vec![view(
            T,
            "stop",
            "u1",
            "i1",
            Some("d1"),
            ",\"geo\":{\"country\":\"NL\"},\"tier\":1",
        )];
        let sessions = vec![format!(
            "{{\"at\":\"2023-11-14T23:13:20+01:00\",\"uid\":\"u1\",\"dev\":\"d1\",\"country\":\"DE\",\"plan\":\"pro\",\"os\":\"ios\"}}"
        )];
        let logins = vec![format!(
            "{{\"ts\":{},\"result\":\"ok\",\"uid\":\"u1\",\"country\":\"US\"}}",
            T / 1000
        )];
        let m = run(&[
            ("views", views.clone()),
            ("sessions", sessions.clone()),
            ("logins", logins.clone()),
        ]);
        // All last seen at T: views > sessions > logins wins each key.
        assert_eq!(
            ns(&m, "node"),
            vec![
                node("item", "i1", T, T, "{}"),
                node(
                    "user",
                    "u1",
                    T,
                    T,
                    "{\"country\":\"NL\",\"plan\":\"pro\",\"tier\":1}"
                ),
            ]
        );
        assert_eq!(
            ns(&m, "edge"),
            vec![edge(
                "uses",
                "user:u1",
                "device:d1",
                2,
                T,
                T,
                "{\"os\":\"ios\"}"
            )]
        );
        // A later login wins `country`; the others keep theirs.
        let mut logins = logins;
        logins.push(format!(
            "{{\"ts\":{}.5,\"result\":\"ok\",\"uid\":\"u1\",\"country\":\"BE\"}}",
            T / 1000
        ));
        let m = run(&[("views", views), ("sessions", sessions), ("logins", logins)]);
        assert_eq!(
            ns(&m, "node"),
            vec![
                node("item", "i1", T, T, "{}"),
                node(
                    "user",
                    "u1",
                    T,
                    T + 500,
                    "{\"country\":\"BE\",\"plan\":\"pro\",\"tier\":1}"
                ),
            ]
        );
    }

    #[test]
    fn one_event_asserting_a_record_twice_counts_once() {
        let m = run(&[(
            "sessions",
            vec![format!(
                "{{\"at\":{T},\"uid\":\"u1\",\"referrer\":\"u1\",\"via\":\"invite\",\"country\":\"NL\",\"ref_country\":\"SE\",\"plan\":\"free\"}}"
            )],
        )]);
        // The referrer rule comes later in the file: its `country` wins.
        assert_eq!(
            ns(&m, "node"),
            vec![node(
                "user",
                "u1",
                T,
                T,
                "{\"country\":\"SE\",\"plan\":\"free\"}"
            )]
        );
        assert_eq!(count_of(&m, "sessions", &user_key("u1")), Some(1));
        let m = run(&[(
            "sessions",
            vec![
                format!(
                    "{{\"at\":{T},\"uid\":\"u1\",\"referrer\":\"u1\",\"via\":\"invite\",\"country\":\"NL\",\"ref_country\":\"SE\",\"plan\":\"free\"}}"
                ),
                format!(
                    "{{\"at\":{T},\"uid\":\"u2\",\"referrer\":\"u1\",\"via\":\"invite\",\"ref_country\":\"DK\"}}"
                ),
                // Not an invite: `referrer` is not read at all, even if bad.
                format!("{{\"at\":{T},\"uid\":\"u3\",\"referrer\":true}}"),
            ],
        )]);
        assert_eq!(
            ns(&m, "node"),
            vec![
                node("user", "u1", T, T, "{\"country\":\"DK\"}"),
                node("user", "u2", T, T, "{}"),
                node("user", "u3", T, T, "{}"),
            ]
        );
        assert_eq!(count_of(&m, "sessions", &user_key("u1")), Some(2));
        assert!(m.dead.is_empty());
    }

    #[test]
    fn ignored_events_and_dead_letters_assert_nothing_and_keep_the_watermark() {
        let far = T + 100_000;
        let m = run(&[
            (
                "views",
                vec![
                    view(far, "pause", "u1", "i1", None, ""),
                    format!("{{\"ts\":{far},\"kind\":\"start\",\"user\":\"u1\"}}"),
                    format!("{{\"ts\":true,\"kind\":\"start\",\"user\":\"u1\",\"item\":\"i1\"}}"),
                    "not json".to_string(),
                    format!(
                        "{{\"ts\":{far},\"kind\":\"start\",\"user\":{{\"id\":1}},\"item\":\"i1\"}}"
                    ),
                    format!(
                        "{{\"ts\":{far},\"kind\":\"stop\",\"user\":\"u1\",\"item\":\"i1\",\"device\":2.5}}"
                    ),
                    format!("{{\"ts\":{far},\"kind\":\"stop\",\"user\":\"u1\",\"item\":null}}"),
                    "[1,2]".to_string(),
                    // Ignored even though its id is bad.
                    format!("{{\"ts\":{far},\"kind\":\"pause\",\"user\":true,\"item\":\"i1\"}}"),
                    view(T, "stop", "u1", "i1", None, ""),
                ],
            ),
            (
                "logins",
                vec![
                    format!("{{\"ts\":\"yesterday\",\"result\":\"fail\",\"uid\":\"u1\"}}"),
                    format!("{{\"ts\":\"yesterday\",\"result\":\"ok\",\"uid\":\"u1\"}}"),
                    format!("{{\"result\":\"ok\",\"uid\":\"u1\"}}"),
                    format!("{{\"ts\":null,\"result\":\"ok\",\"uid\":\"u1\"}}"),
                ],
            ),
        ]);
        assert_eq!(
            m.graph_lines(),
            vec![
                node("item", "i1", T, T, "{}"),
                node("user", "u1", T, T, "{}")
            ]
        );
        assert_eq!(m.dataflows["views"].watermark, Some(T));
        assert_eq!(m.dataflows["views"].events, 1);
        assert_eq!(m.dataflows["logins"].watermark, None);
        let sources: Vec<(&str, &str)> = m
            .dead
            .iter()
            .map(|(d, s)| (d.as_str(), s.as_str()))
            .collect();
        assert_eq!(
            sources,
            vec![
                ("views", "views.jsonl:2"),
                ("views", "views.jsonl:3"),
                ("views", "views.jsonl:4"),
                ("views", "views.jsonl:5"),
                ("views", "views.jsonl:6"),
                ("views", "views.jsonl:7"),
                ("views", "views.jsonl:8"),
                ("logins", "logins.jsonl:2"),
                ("logins", "logins.jsonl:3"),
                ("logins", "logins.jsonl:4"),
            ]
        );
        assert_eq!(
            m.dead_letter_prefixes()[0],
            "{\"ns\":\"dead_letter\",\"dataflow\":\"logins\",\"source\":\"logins.jsonl:2\""
        );
    }

    #[test]
    fn times_ids_and_props_keep_their_forms() {
        let m = run(&[
            (
                "views",
                vec![
                    // A float time is floored; an RFC 3339 string is accepted.
                    format!(
                        "{{\"ts\":{T}.5,\"kind\":\"start\",\"user\":7,\"item\":\"i1\",\"device\":12,\"pos\":3}}"
                    ),
                    format!(
                        "{{\"ts\":\"2023-11-14T22:13:21.250Z\",\"kind\":\"stop\",\"user\":\"7\",\"item\":8,\"tier\":true}}"
                    ),
                ],
            ),
            (
                "logins",
                vec![format!(
                    "{{\"ts\":{}.5,\"result\":\"ok\",\"uid\":0,\"mail\":\"e1\",\"verified\":false}}",
                    T / 1000
                )],
            ),
        ]);
        assert_eq!(
            m.graph_lines(),
            vec![
                edge(
                    "has_email",
                    "user:0",
                    "email:e1",
                    1,
                    T + 500,
                    T + 500,
                    "{\"verified\":false}"
                ),
                edge("uses", "user:7", "device:12", 1, T, T, "{}"),
                edge(
                    "viewed",
                    "user:7",
                    "item:i1",
                    1,
                    T,
                    T,
                    "{\"device\":12,\"pos\":3}"
                ),
                // user:0 is blocklisted: no link to email:e1.
                ident("device:12", "device:12", false),
                ident("user:7", "device:12", false),
                node("email", "e1", T + 500, T + 500, "{}"),
                node("item", "8", T + 1_250, T + 1_250, "{}"),
                node("item", "i1", T, T, "{}"),
                node("user", "0", T + 500, T + 500, "{}"),
                node("user", "7", T, T + 1_250, "{\"tier\":true}"),
            ]
        );
        assert_eq!(count_of(&m, "views", &user_key("7")), Some(2));
    }
}
