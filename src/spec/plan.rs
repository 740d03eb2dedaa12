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

use super::decode::{EventView, FieldRef, FieldSet, Fields};
use crate::model::{EventTime, MAX_IDENT_BYTES, push_ident, push_ident_str};

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
    /// Every path above, compiled for fast decoding ([`DataflowPlan::index_fields`]).
    pub fields: FieldSet,
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
///
/// Equality and order are by text; `slot` is where the definition's
/// [`FieldSet`] keeps this path's value when decoding (set by
/// [`DataflowPlan::index_fields`]).
#[derive(Clone, Debug)]
pub struct FieldPath {
    pub text: String,
    pub parts: Vec<String>,
    pub slot: Option<usize>,
}

impl PartialEq for FieldPath {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for FieldPath {}

impl PartialOrd for FieldPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FieldPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl FieldPath {
    /// Splits `a.b.c`; the spec checks that no part is empty.
    pub fn parse(text: &str) -> FieldPath {
        FieldPath {
            text: text.to_string(),
            parts: text.split('.').map(str::to_string).collect(),
            slot: None,
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
    pub fn eval(&self, event: &impl EventView) -> bool {
        match self {
            Condition::Equals(p, v) => event.field(p).is_some_and(|x| field_eq(x, v)),
            Condition::In(p, vs) => event
                .field(p)
                .is_some_and(|x| vs.iter().any(|v| field_eq(x, v))),
            Condition::Exists(p, want) => event.field(p).is_some_and(|x| !x.is_null()) == *want,
            Condition::Not(c) => !c.eval(event),
            Condition::All(cs) => cs.iter().all(|c| c.eval(event)),
            Condition::Any(cs) => cs.iter().any(|c| c.eval(event)),
        }
    }

    /// Every path the condition reads.
    fn paths_mut(&mut self) -> Vec<&mut FieldPath> {
        match self {
            Condition::Equals(p, _) | Condition::In(p, _) | Condition::Exists(p, _) => vec![p],
            Condition::Not(c) => c.paths_mut(),
            Condition::All(cs) | Condition::Any(cs) => {
                cs.iter_mut().flat_map(|c| c.paths_mut()).collect()
            }
        }
    }
}

/// [`json_eq`] between a field as read and a literal.
fn field_eq(a: FieldRef<'_>, b: &Value) -> bool {
    match (a, b) {
        (FieldRef::Null, Value::Null) => true,
        (FieldRef::Bool(x), Value::Bool(y)) => x == *y,
        (FieldRef::Number(x), Value::Number(y)) => number_eq(x, y),
        (FieldRef::Str(x), Value::String(y)) => x == y,
        (FieldRef::Complex(x), y) => json_eq(x, y),
        _ => false,
    }
}

fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
        x == y
    } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
        x == y
    } else {
        x.as_f64() == y.as_f64()
    }
}

/// JSON equality where numbers compare by value (5 equals 5.0).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
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

/// What one event asserts (or, when `delete`, retracts). Its identifiers
/// are held once each, as text in one buffer that lives as long as the
/// `Decoded` (which a worker reuses from event to event), and the rules'
/// records name them by [`IdIndex`]: evaluating an event allocates nothing
/// for its identifiers, however many rules name them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decoded {
    pub time: EventTime,
    pub delete: bool,
    /// (rule index, node identifier, props JSON).
    pub nodes: Vec<(usize, IdIndex, CompactString)>,
    /// (rule index, from, to, props JSON).
    pub edges: Vec<(usize, IdIndex, IdIndex, CompactString)>,
    /// (rule index, a, b) with `a < b` by text, already without blocklisted ids.
    pub links: Vec<(usize, IdIndex, IdIndex)>,
    /// The distinct identifiers (`type:id`), in the order first read.
    text: String,
    /// Where each identifier's text ends in `text`.
    ends: Vec<usize>,
}

/// One of a [`Decoded`] event's distinct identifiers: an index, in the
/// order they were first read.
pub type IdIndex = u32;

impl Decoded {
    fn reset(&mut self, time: EventTime, delete: bool) {
        self.time = time;
        self.delete = delete;
        self.nodes.clear();
        self.edges.clear();
        self.links.clear();
        self.text.clear();
        self.ends.clear();
    }

    /// How many distinct identifiers the event has.
    pub fn id_count(&self) -> usize {
        self.ends.len()
    }

    /// The text of identifier `r` (empty for an index the event lacks).
    pub fn id(&self, r: IdIndex) -> &str {
        let i = r as usize;
        let start = match i.checked_sub(1) {
            Some(before) => self.ends.get(before).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.text.get(start..end).unwrap_or_default()
    }

    /// The identifier `node_type:id`, added unless the event has it.
    pub(crate) fn add_id(&mut self, node_type: &str, id: impl std::fmt::Display) -> IdIndex {
        let start = self.text.len();
        push_ident(&mut self.text, node_type, id);
        self.settle_id(start)
    }

    /// [`Decoded::add_id`] of a text id: looked for among the event's
    /// identifiers before it is copied (most of an event's reads name an
    /// identifier read before: a playback event's 11 reads are 4 ids).
    pub(crate) fn add_id_str(&mut self, node_type: &str, id: &str) -> IdIndex {
        let len = node_type.len() + 1 + id.len();
        let same = |t: &[u8]| match t.split_at_checked(node_type.len()) {
            Some((ty, [b':', rest @ ..])) => ty == node_type.as_bytes() && rest == id.as_bytes(),
            _ => false,
        };
        if let Some(i) = self.position(len, same) {
            return i;
        }
        push_ident_str(&mut self.text, node_type, id);
        self.ends.push(self.text.len());
        (self.ends.len() - 1) as IdIndex
    }

    /// The index of the identifier just appended from `start`: an earlier
    /// one's if the event named it already (the text appended is dropped).
    fn settle_id(&mut self, start: usize) -> IdIndex {
        let added = self.text.as_bytes().get(start..).unwrap_or_default();
        match self.position(added.len(), |t| t == added) {
            Some(i) => {
                self.text.truncate(start);
                i
            }
            None => {
                self.ends.push(self.text.len());
                (self.ends.len() - 1) as IdIndex
            }
        }
    }

    /// The first identifier `len` bytes long that `same` accepts.
    fn position(&self, len: usize, same: impl Fn(&[u8]) -> bool) -> Option<IdIndex> {
        let text = self.text.as_bytes();
        let mut from = 0;
        let found = self.ends.iter().position(|&end| {
            let hit = end - from == len && text.get(from..end).is_some_and(&same);
            from = end;
            hit
        });
        found.map(|i| i as IdIndex)
    }
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

/// The result of [`DataflowPlan::decode_into`]: like [`Outcome`], with the
/// event's content left in the caller's [`Decoded`].
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Ignored,
    Event,
    Reject(String),
}

/// Buffers reused from one event to the next by [`DataflowPlan::decode_into`].
#[derive(Debug, Default)]
pub struct DecodeScratch {
    /// Empty between events: only its allocation is kept.
    slots: Fields<'static>,
    ids: Vec<IdIndex>,
    text: String,
}

impl DataflowPlan {
    /// Numbers every path the definition reads and compiles them for
    /// [`DataflowPlan::decode_into`]. Called once when the plan is built.
    pub fn index_fields(&mut self) {
        let mut paths: Vec<&mut FieldPath> = vec![&mut self.event_time.path];
        for c in [&mut self.delete, &mut self.when].into_iter().flatten() {
            paths.extend(c.paths_mut());
        }
        for r in &mut self.nodes {
            paths.push(&mut r.id);
            paths.extend(r.props.iter_mut().map(|(_, p)| p));
            paths.extend(r.when.iter_mut().flat_map(|c| c.paths_mut()));
        }
        for r in &mut self.edges {
            paths.push(&mut r.from.path);
            paths.push(&mut r.to.path);
            paths.extend(r.props.iter_mut().map(|(_, p)| p));
            paths.extend(r.when.iter_mut().flat_map(|c| c.paths_mut()));
        }
        for r in &mut self.identity {
            paths.extend(r.ids.iter_mut().map(|i| &mut i.path));
            paths.extend(r.when.iter_mut().flat_map(|c| c.paths_mut()));
        }
        self.fields = FieldSet::build(paths);
    }

    /// Evaluates one parsed event. `identity` gives the blocklist.
    pub fn evaluate(&self, event: &Value, identity: &IdentityConfig) -> Outcome {
        if !event.is_object() {
            return Outcome::Reject("event is not a JSON object".to_string());
        }
        let mut out = Decoded::default();
        let mut scratch = DecodeScratch::default();
        match self.evaluate_view(event, identity, &mut scratch, &mut out) {
            Verdict::Ignored => Outcome::Ignored,
            Verdict::Event => Outcome::Event(out),
            Verdict::Reject(r) => Outcome::Reject(r),
        }
    }

    /// Decodes and evaluates one event from its bytes into `out`, reusing
    /// `scratch`. Equal to parsing the bytes into a `Value` and calling
    /// [`DataflowPlan::evaluate`] (which it falls back to for anything the
    /// fast decoder refuses, so errors read the same), without building the
    /// `Value`. One difference, found by fuzzing: a number beyond f64's
    /// range (`1e400`) in a field the definition does not read is skipped
    /// here, where `serde_json::Value` cannot hold it and rejects the line.
    pub fn decode_into(
        &self,
        bytes: &[u8],
        identity: &IdentityConfig,
        scratch: &mut DecodeScratch,
        out: &mut Decoded,
    ) -> Verdict {
        if bytes.is_empty() {
            return Verdict::Reject("empty payload".to_string());
        }
        // Reuse the slots' allocation across lifetimes: the vector is empty.
        let mut fields: Fields<'_> = std::mem::take(&mut scratch.slots).recycle();
        let verdict = self
            .fields
            .decode(bytes, &mut fields)
            .map(|()| self.evaluate_view(&fields, identity, scratch, out));
        scratch.slots = fields.recycle();
        match verdict {
            Some(v) => v,
            None => match serde_json::from_slice::<Value>(bytes) {
                Ok(v) => match self.evaluate(&v, identity) {
                    Outcome::Ignored => Verdict::Ignored,
                    Outcome::Event(d) => {
                        *out = d;
                        Verdict::Event
                    }
                    Outcome::Reject(r) => Verdict::Reject(r),
                },
                Err(e) => Verdict::Reject(format!("not JSON: {e}")),
            },
        }
    }

    /// Evaluates an event (known to be an object) through `event`'s view.
    fn evaluate_view(
        &self,
        event: &impl EventView,
        identity: &IdentityConfig,
        scratch: &mut DecodeScratch,
        out: &mut Decoded,
    ) -> Verdict {
        if let Some(w) = &self.when
            && !w.eval(event)
        {
            return Verdict::Ignored;
        }
        let time = match read_time(&self.event_time, event) {
            Ok(t) => t,
            Err(e) => return Verdict::Reject(e),
        };
        let delete = self.delete.as_ref().is_some_and(|c| c.eval(event));
        out.reset(time, delete);
        let result = self
            .eval_nodes(event, scratch, out)
            .and_then(|()| self.eval_edges(event, scratch, out))
            .and_then(|()| self.eval_identity(event, identity, scratch, out));
        match result {
            Ok(()) => Verdict::Event,
            Err(e) => Verdict::Reject(e),
        }
    }

    fn eval_nodes(
        &self,
        event: &impl EventView,
        scratch: &mut DecodeScratch,
        out: &mut Decoded,
    ) -> Result<(), String> {
        for (i, r) in self.nodes.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            if let Some(id) = read_id(&r.node_type, &r.id, event, r.required, out)? {
                let props = props_json(&r.props, event, &mut scratch.text);
                out.nodes.push((i, id, props));
            }
        }
        Ok(())
    }

    fn eval_edges(
        &self,
        event: &impl EventView,
        scratch: &mut DecodeScratch,
        out: &mut Decoded,
    ) -> Result<(), String> {
        for (i, r) in self.edges.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            let from = read_id(&r.from.node_type, &r.from.path, event, r.required, out)?;
            let to = read_id(&r.to.node_type, &r.to.path, event, r.required, out)?;
            if let (Some(f), Some(t)) = (from, to) {
                let props = props_json(&r.props, event, &mut scratch.text);
                out.edges.push((i, f, t, props));
            }
        }
        Ok(())
    }

    fn eval_identity(
        &self,
        event: &impl EventView,
        identity: &IdentityConfig,
        scratch: &mut DecodeScratch,
        out: &mut Decoded,
    ) -> Result<(), String> {
        for (i, r) in self.identity.iter().enumerate() {
            if !applies(&r.when, event) {
                continue;
            }
            let present = &mut scratch.ids;
            present.clear();
            for idref in &r.ids {
                // The id's value follows `type:` (a type name has no `:`).
                if let Some(id) = read_id(&idref.node_type, &idref.path, event, r.required, out)?
                    && !identity.blocklist.contains(
                        out.id(id)
                            .get(idref.node_type.len() + 1..)
                            .unwrap_or_default(),
                    )
                {
                    present.push(id);
                }
            }
            // An identifier has one index per event: equal text, equal index.
            present.sort_by(|a, b| out.id(*a).cmp(out.id(*b)));
            present.dedup();
            for x in 0..present.len() {
                for y in x + 1..present.len() {
                    out.links.push((i, present[x], present[y]));
                }
            }
        }
        Ok(())
    }
}

fn applies(when: &Option<Condition>, event: &impl EventView) -> bool {
    when.as_ref().is_none_or(|c| c.eval(event))
}

/// Reads an id as the identifier `node_type:id`: strings as they are,
/// integers in decimal; missing or null is `None` unless `required`.
fn read_id(
    node_type: &str,
    path: &FieldPath,
    event: &impl EventView,
    required: bool,
    out: &mut Decoded,
) -> Result<Option<IdIndex>, String> {
    match event.field(path) {
        None | Some(FieldRef::Null) => {
            if required {
                Err(format!("required field `{}` is missing", path.text))
            } else {
                Ok(None)
            }
        }
        Some(FieldRef::Str(s)) if node_type.len() + 1 + s.len() > MAX_IDENT_BYTES => Err(format!(
            "field `{}` is {} bytes long: an identifier (`{node_type}:` and the id) is at most {MAX_IDENT_BYTES} bytes",
            path.text,
            s.len()
        )),
        Some(FieldRef::Str(s)) => Ok(Some(out.add_id_str(node_type, s))),
        Some(FieldRef::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(out.add_id(node_type, n))),
        Some(other) => Err(format!(
            "field `{}` must be a string or an integer id, found {}",
            path.text,
            kind(other)
        )),
    }
}

/// Reads the event time in epoch milliseconds.
fn read_time(tf: &TimeField, event: &impl EventView) -> Result<EventTime, String> {
    let v = event
        .field(&tf.path)
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
        FieldRef::Number(n) => {
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
        FieldRef::Str(s) => chrono::DateTime::parse_from_rfc3339(s)
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
/// `text` is a reusable buffer.
fn props_json(
    props: &[(String, FieldPath)],
    event: &impl EventView,
    text: &mut String,
) -> CompactString {
    if props.is_empty() {
        return CompactString::default();
    }
    text.clear();
    text.push('{');
    // `props` is sorted by name, as a serialized map would be.
    for (name, path) in props {
        let Some(v) = event.field(path) else { continue };
        if v.is_null() {
            continue;
        }
        if text.len() > 1 {
            text.push(',');
        }
        push_json_str(text, name);
        text.push(':');
        push_json(text, v);
    }
    text.push('}');
    CompactString::from(text.as_str())
}

/// The bytes a JSON string escapes: control characters, `"` and `\`.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(text: &mut String, s: &str) {
    let needs_escape = s.bytes().any(|b| ESCAPED[usize::from(b)]);
    if needs_escape {
        // Serializing a string into a String cannot fail.
        let _ = serde_json::to_writer(StringWriter(text), s);
    } else {
        text.push('"');
        text.push_str(s);
        text.push('"');
    }
}

/// Appends a value as serde_json serializes it.
fn push_json(text: &mut String, v: FieldRef<'_>) {
    match v {
        FieldRef::Null => text.push_str("null"),
        FieldRef::Bool(true) => text.push_str("true"),
        FieldRef::Bool(false) => text.push_str("false"),
        FieldRef::Str(s) => push_json_str(text, s),
        FieldRef::Number(n) => {
            let _ = serde_json::to_writer(StringWriter(text), n);
        }
        FieldRef::Complex(v) => {
            let _ = serde_json::to_writer(StringWriter(text), v);
        }
    }
}

/// `io::Write` into a `String` for serde_json (which writes UTF-8 only).
struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let s = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(s);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn kind(v: FieldRef<'_>) -> &'static str {
    match v {
        FieldRef::Null => "null",
        FieldRef::Bool(_) => "a boolean",
        FieldRef::Number(_) => "a non-integer number",
        FieldRef::Str(_) => "a string",
        FieldRef::Complex(Value::Array(_)) => "an array",
        FieldRef::Complex(_) => "an object",
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

    /// An event's identifiers, read in any mix of text and integer ids
    /// and types that prefix one another, get one index per distinct
    /// `type:id` text, numbered in the order first read (a map from text
    /// to index as the reference).
    #[test]
    fn an_event_holds_each_identifier_once() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(5);
        let types = ["a", "a:b", "ab", "account"];
        let mut d = Decoded::default();
        for _ in 0..2_000 {
            d.reset(0, false);
            let mut reference: BTreeMap<String, IdIndex> = BTreeMap::new();
            for _ in 0..rng.random_range(0..12) {
                let ty = types[rng.random_range(0..types.len())];
                let n: u64 = rng.random_range(0..6);
                let (text, got) = match rng.random_range(0..3) {
                    0 => (format!("{ty}:{n}"), d.add_id(ty, n)),
                    1 => (format!("{ty}:{n}"), d.add_id_str(ty, &n.to_string())),
                    _ => (format!("{ty}:b:{n}"), d.add_id_str(ty, &format!("b:{n}"))),
                };
                let next = reference.len() as IdIndex;
                let want = *reference.entry(text.clone()).or_insert(next);
                assert_eq!(got, want, "{text}");
                assert_eq!(d.id(got), text);
            }
            assert_eq!(d.id_count(), reference.len());
        }
    }

    /// A string is written as serde_json writes it: every character below
    /// 0x80 alone and inside text, and random strings of them and others.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        use rand::{RngExt, SeedableRng};
        let same = |s: &str| {
            let mut text = String::new();
            push_json_str(&mut text, s);
            assert_eq!(text, serde_json::to_string(s).unwrap(), "{s:?}");
        };
        for c in (0u8..0x80).map(char::from) {
            same(&c.to_string());
            same(&format!("ab{c}cd"));
        }
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(9);
        let chars = [
            'a', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', 'é', '\u{7f}', '/',
        ];
        for _ in 0..2_000 {
            let n = rng.random_range(0..20);
            let s: String = (0..n)
                .map(|_| chars[rng.random_range(0..chars.len())])
                .collect();
            same(&s);
        }
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
