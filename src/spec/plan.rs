//! The checked plan: what a set of valid definition files means, and how one
//! event (a JSON value) is evaluated against a definition.
//!
//! Invariant: a `Plan` is only ever built by `spec::load` after every check
//! passed, so evaluation never meets an unknown node type, a bad path or an
//! inconsistent edge type. Evaluating an event never panics: anything wrong
//! with the event itself comes back as a `Reject` with a reason naming the
//! field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use compact_str::CompactString;
use serde_json::Value;

use crate::model::{EventTime, Ident, ident};

/// All definitions of a folder plus the global settings from `rdg.toml`.
#[derive(Clone, Debug)]
pub struct Plan {
    /// One per definition file, sorted by name.
    pub dataflows: Vec<DataflowPlan>,
    pub identity: IdentityConfig,
    /// Every edge type declared anywhere, with its endpoint types.
    pub edge_types: BTreeMap<String, EdgeType>,
    /// Every node type that a node rule declares.
    pub node_types: BTreeSet<String>,
}

/// The endpoint types of an edge type, identical in every rule that declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeType {
    pub from_type: String,
    pub to_type: String,
    /// True when any rule asks for the reverse index.
    pub reverse: bool,
}

/// Global identity settings (`[identity]` in `rdg.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityConfig {
    /// Id values (the part after `type:`) that never take part in stitching.
    pub blocklist: BTreeSet<String>,
    /// An identifier with more distinct live neighbours than this is a hub.
    pub max_links: u64,
    pub max_links_by_type: BTreeMap<String, u64>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            blocklist: ["", "0", "-1", "null", "none", "unknown", "anonymous"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_links: 50,
            max_links_by_type: BTreeMap::new(),
        }
    }
}

impl IdentityConfig {
    /// The hub threshold for an identifier of `node_type`.
    pub fn max_links_for(&self, node_type: &str) -> u64 {
        self.max_links_by_type
            .get(node_type)
            .copied()
            .unwrap_or(self.max_links)
    }
}

/// One definition file: one topic, its rules.
#[derive(Clone, Debug)]
pub struct DataflowPlan {
    /// The file stem, e.g. `playback`.
    pub name: String,
    pub file: PathBuf,
    pub topic: String,
    pub event_time: TimeField,
    pub delete: Option<Condition>,
    pub when: Option<Condition>,
    pub nodes: Vec<NodeRule>,
    pub edges: Vec<EdgeRule>,
    pub identity: Vec<IdentityRule>,
    /// Extra librdkafka settings from `[source.kafka]`.
    pub kafka: BTreeMap<String, String>,
}

/// Where the event time is and how to read it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeField {
    pub path: FieldPath,
    /// Unit of numeric times; RFC 3339 strings are always accepted.
    pub unit: TimeUnit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    Micros,
}

/// A dotted path into a JSON object (`device.id`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath {
    pub text: String,
    pub parts: Vec<String>,
}

impl FieldPath {
    /// Splits `a.b.c`; the spec checks that no part is empty.
    pub fn parse(text: &str) -> FieldPath {
        FieldPath {
            text: text.to_string(),
            parts: text.split('.').map(str::to_string).collect(),
        }
    }

    /// The value at this path; `None` when any step is missing or not an object.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        let mut v = value;
        for p in &self.parts {
            v = v.as_object()?.get(p)?;
        }
        Some(v)
    }
}

/// A condition on an event's fields.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Equals(FieldPath, Value),
    In(FieldPath, Vec<Value>),
    /// True when the field is present and not null (`exists = true`), or the
    /// reverse (`exists = false`).
    Exists(FieldPath, bool),
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    pub fn eval(&self, event: &Value) -> bool {
        match self {
            Condition::Equals(p, v) => p.get(event).is_some_and(|x| json_eq(x, v)),
            Condition::In(p, vs) => p
                .get(event)
                .is_some_and(|x| vs.iter().any(|v| json_eq(x, v))),
            Condition::Exists(p, want) => p.get(event).is_some_and(|x| !x.is_null()) == *want,
            Condition::Not(c) => !c.eval(event),
            Condition::All(cs) => cs.iter().all(|c| c.eval(event)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(event)),
        }
    }
}

/// JSON equality where numbers compare by value (5 equals 5.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// An endpoint: a node type and the field holding its id.
#[derive(Clone, Debug, PartialEq)]
pub struct IdRef {
    pub node_type: String,
    pub path: FieldPath,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeRule {
    pub node_type: String,
    pub id: FieldPath,
    /// (prop name, field path), sorted by prop name.
    pub props: Vec<(String, FieldPath)>,
    /// Retention in milliseconds.
    pub retention: Option<u64>,
    pub when: Option<Condition>,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EdgeRule {
    pub edge_type: String,
    pub from: IdRef,
    pub to: IdRef,
    pub props: Vec<(String, FieldPath)>,
    pub retention: Option<u64>,
    pub when: Option<Condition>,
    pub reverse: bool,
    pub required: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IdentityRule {
    pub ids: Vec<IdRef>,
    pub retention: Option<u64>,
    pub when: Option<Condition>,
    pub required: bool,
}

/// What one event asserts (or, when `delete`, retracts).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub time: EventTime,
    pub delete: bool,
    /// (rule index, node identifier, props JSON).
    pub nodes: Vec<(usize, Ident, CompactString)>,
    /// (rule index, from, to, props JSON).
    pub edges: Vec<(usize, Ident, Ident, CompactString)>,
    /// (rule index, a, b) with `a < b`, already without blocklisted ids.
    pub links: Vec<(usize, Ident, Ident)>,
}

/// The result of evaluating one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The source's `when` does not hold: the event is ignored entirely.
    Ignored,
    Event(Decoded),
    /// The event is bad: it goes to the dead letters with this reason.
    Reject(String),
}

impl DataflowPlan {
    /// Evaluates one event. `blocklist` comes from the plan's identity config.
    pub fn evaluate(&self, event: &Value, identity: &IdentityConfig) -> Outcome {
        if !event.is_object() {
            return Outcome::Reject("event is not a JSON object".to_string());
        }
        if let Some(w) = &self.when
            && !w.eval(event)
        {
            return Outcome::Ignored;
        }
        let time = match read_time(&self.event_time, event) {
            Ok(t) => t,
            Err(e) => return Outcome::Reject(e),
        };
        let delete = self.delete.as_ref().is_some_and(|c| c.eval(event));
        let mut out = Decoded {
            time,
            delete,
            ..Decoded::default()
        };
        for (i, r) in self.nodes.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            match read_id(&r.id, event, r.required) {
                Ok(Some(id)) => {
                    out.nodes
                        .push((i, ident(&r.node_type, &id), props_json(&r.props, event)))
                }
                Ok(None) => {}
                Err(e) => return Outcome::Reject(e),
            }
        }
        for (i, r) in self.edges.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            let from = match read_id(&r.from.path, event, r.required) {
                Ok(v) => v,
                Err(e) => return Outcome::Reject(e),
            };
            let to = match read_id(&r.to.path, event, r.required) {
                Ok(v) => v,
                Err(e) => return Outcome::Reject(e),
            };
            if let (Some(f), Some(t)) = (from, to) {
                out.edges.push((
                    i,
                    ident(&r.from.node_type, &f),
                    ident(&r.to.node_type, &t),
                    props_json(&r.props, event),
                ));
            }
        }
        for (i, r) in self.identity.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            let mut present: Vec<Ident> = Vec::new();
            for idref in &r.ids {
                match read_id(&idref.path, event, r.required) {
                    Ok(Some(v)) => {
                        if !identity.blocklist.contains(v.as_str()) {
                            present.push(ident(&idref.node_type, &v));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Reject(e),
                }
            }
            present.sort();
            present.dedup();
            for x in 0..present.len() {
                for y in x + 1..present.len() {
                    out.links.push((i, present[x].clone(), present[y].clone()));
                }
            }
        }
        Outcome::Event(out)
    }
}

fn applies(when: &Option<Condition>, event: &Value) -> bool {
    when.as_ref().is_none_or(|c| c.eval(event))
}

/// Reads an id: strings as they are, integers in decimal; missing or null is
/// `None` unless `required`.
fn read_id(
    path: &FieldPath,
    event: &Value,
    required: bool,
) -> Result<Option<CompactString>, String> {
    match path.get(event) {
        None | Some(Value::Null) => {
            if required {
                Err(format!("required field `{}` is missing", path.text))
            } else {
                Ok(None)
            }
        }
        Some(Value::String(s)) => Ok(Some(CompactString::from(s.as_str()))),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {
            Ok(Some(compact_str::format_compact!("{n}")))
        }
        Some(other) => Err(format!(
            "field `{}` must be a string or an integer id, found {}",
            path.text,
            kind(other)
        )),
    }
}

/// Reads the event time in epoch milliseconds.
fn read_time(tf: &TimeField, event: &Value) -> Result<EventTime, String> {
    let v = tf
        .path
        .get(event)
        .ok_or_else(|| format!("event time field `{}` is missing", tf.path.text))?;
    let scale = |x: f64| -> Result<EventTime, String> {
        let ms = match tf.unit {
            TimeUnit::Seconds => x * 1000.0,
            TimeUnit::Millis => x,
            TimeUnit::Micros => x / 1000.0,
        };
        if ms.is_finite() && ms.abs() < 9.0e15 {
            Ok(ms.floor() as EventTime)
        } else {
            Err(format!(
                "event time field `{}` is out of range",
                tf.path.text
            ))
        }
    };
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                match tf.unit {
                    TimeUnit::Millis => Ok(i),
                    TimeUnit::Seconds => i.checked_mul(1000).ok_or_else(|| {
                        format!("event time field `{}` is out of range", tf.path.text)
                    }),
                    TimeUnit::Micros => Ok(i.div_euclid(1000)),
                }
            } else {
                scale(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .map_err(|e| {
                format!(
                    "event time field `{}` is not RFC 3339 ({e}): {:?}",
                    tf.path.text,
                    truncate(s, 40)
                )
            }),
        other => Err(format!(
            "event time field `{}` must be a number or an RFC 3339 string, found {}",
            tf.path.text,
            kind(other)
        )),
    }
}

/// The props of a rule as a JSON object with sorted keys; absent and null
/// fields are left out; empty text when the rule has no props at all.
fn props_json(props: &[(String, FieldPath)], event: &Value) -> CompactString {
    if props.is_empty() {
        return CompactString::default();
    }
    let mut map = serde_json::Map::new();
    for (name, path) in props {
        if let Some(v) = path.get(event)
            && !v.is_null()
        {
            map.insert(name.clone(), v.clone());
        }
    }
    // Serializing a Map of Values cannot fail.
    CompactString::from(serde_json::to_string(&map).unwrap_or_default())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a non-integer number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(&json!(5), &json!(5.0)));
        assert!(!json_eq(&json!(5), &json!("5")));
        assert!(json_eq(&json!([1, {"a": 2}]), &json!([1.0, {"a": 2.0}])));
    }

    #[test]
    fn paths_reach_into_objects() {
        let p = FieldPath::parse("device.id");
        assert_eq!(p.get(&json!({"device": {"id": "d1"}})), Some(&json!("d1")));
        assert_eq!(p.get(&json!({"device": "d1"})), None);
    }

    #[test]
    fn times_in_every_unit() {
        let tf = |u| TimeField {
            path: FieldPath::parse("ts"),
            unit: u,
        };
        let e = json!({"ts": 1700000000});
        assert_eq!(read_time(&tf(TimeUnit::Seconds), &e), Ok(1_700_000_000_000));
        assert_eq!(read_time(&tf(TimeUnit::Millis), &e), Ok(1_700_000_000));
        assert_eq!(read_time(&tf(TimeUnit::Micros), &e), Ok(1_700_000));
        let s = json!({"ts": "2023-11-14T22:13:20.5Z"});
        assert_eq!(read_time(&tf(TimeUnit::Millis), &s), Ok(1_700_000_000_500));
        assert!(read_time(&tf(TimeUnit::Millis), &json!({"ts": "yesterday"})).is_err());
        assert!(read_time(&tf(TimeUnit::Millis), &json!({"ts": true})).is_err());
        assert!(read_time(&tf(TimeUnit::Millis), &json!({})).is_err());
    }
}
