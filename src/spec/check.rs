//! Checking definition files and `rdg.toml`, one file at a time and across
//! files, and assembling the [`Plan`].
//!
//! Owns what each key of a definition means and every check on it.
//! Invariant: a file yields a `DataflowPlan` (or an `IdentityConfig`) only when
//! it produced no problem at all; the declarations other files are checked
//! against (topics, edge types) are recorded even when another part of the same
//! file is wrong, so one run reports as much as it can.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use toml::de::DeValue;

use super::condition::condition;
use super::plan::{
    Condition, DataflowPlan, EdgeRule, EdgeType, FieldPath, IdRef, IdentityConfig, IdentityRule,
    NodeRule, Plan, TimeField, TimeUnit,
};
use super::problem::{Problem, one_of};
use super::reader::{FileCx, Span, Table, Val, article, name_problem};

/// Where something was declared, for messages that point back at it.
#[derive(Clone, Debug)]
pub(crate) struct Site {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Site {
    fn of(cx: &FileCx<'_>, span: &Span) -> Site {
        let (line, column) = cx.position(span.start);
        Site {
            file: cx.file.clone(),
            line,
            column,
        }
    }

    fn problem(&self, message: String, hint: Option<String>) -> Problem {
        Problem {
            file: self.file.clone(),
            line: Some(self.line),
            column: Some(self.column),
            message,
            hint,
        }
    }
}

/// An edge rule's type and endpoint types, where its `type` is written.
#[derive(Clone, Debug)]
pub(crate) struct EdgeDecl {
    pub(crate) edge_type: String,
    pub(crate) from_type: String,
    pub(crate) to_type: String,
    pub(crate) reverse: bool,
    pub(crate) site: Site,
}

/// What one definition file yields.
pub(crate) struct Definition {
    /// Present only when the file had no problem.
    pub(crate) plan: Option<DataflowPlan>,
    pub(crate) topic: Option<(String, Site)>,
    pub(crate) edges: Vec<EdgeDecl>,
    pub(crate) problems: Vec<Problem>,
}

const TOP_KEYS: [&str; 4] = ["source", "nodes", "edges", "identity"];
const SOURCE_KEYS: [&str; 5] = ["topic", "event_time", "delete", "when", "kafka"];
const NODE_KEYS: [&str; 6] = ["type", "id", "props", "retention", "when", "required"];
const EDGE_KEYS: [&str; 8] = [
    "type",
    "from",
    "to",
    "props",
    "retention",
    "when",
    "reverse",
    "required",
];
const IDENTITY_KEYS: [&str; 4] = ["ids", "retention", "when", "required"];
const IDREF_KEYS: [&str; 2] = ["type", "id"];
const TIME_KEYS: [&str; 2] = ["field", "unit"];
const SETTINGS_KEYS: [&str; 3] = ["blocklist", "max_links", "max_links_by_type"];
const UNITS: [&str; 3] = ["s", "ms", "us"];

const IDREF_EXAMPLE: &str = "{ type = \"profile\", id = \"profile_id\" }";
const IDS_EXAMPLE: &str = "ids = [{ type = \"account\", id = \"account_id\" }, { type = \"device\", id = \"device_id\" }]";

/// A hint for a missing required key.
fn required_hint(key: &str) -> Option<String> {
    let h = match key {
        "topic" => "name the topic this definition reads, e.g. `topic = \"playback\"`".to_string(),
        "event_time" => "name the field holding the event time, e.g. `event_time = \"ts\"` \
             or `event_time = { field = \"ts\", unit = \"s\" }`"
            .to_string(),
        "type" => "e.g. `type = \"profile\"`".to_string(),
        "id" => "name the field holding the id, e.g. `id = \"profile_id\"`".to_string(),
        "from" => format!("e.g. `from = {IDREF_EXAMPLE}`"),
        "to" => "e.g. `to = { type = \"title\", id = \"title_id\" }`".to_string(),
        "ids" => format!("e.g. `{IDS_EXAMPLE}`"),
        "field" => "e.g. `field = \"ts\"`".to_string(),
        _ => return None,
    };
    Some(h)
}

/// Looks up a required key, recording a problem when it is missing.
fn required<'a, 'i>(cx: &mut FileCx<'_>, t: &Table<'a, 'i>, key: &str) -> Option<&'a Val<'i>> {
    let v = t.get(key);
    if v.is_none() && !t.misspells(key) {
        let hint = if key == "type" && t.what == "[[edges]]" {
            Some("e.g. `type = \"watched\"`".to_string())
        } else {
            required_hint(key)
        };
        cx.missing(t, key, hint);
    }
    v
}

/// Reads one definition file. `name` is the file stem (the dataflow name).
pub(crate) fn read_definition(file: &Path, name: &str, text: &str) -> Definition {
    let mut cx = FileCx::new(file.to_path_buf(), text);
    let mut out = Definition {
        plan: None,
        topic: None,
        edges: Vec::new(),
        problems: Vec::new(),
    };
    if let Some(message) = name_problem(name, "dataflow name") {
        cx.error(
            None,
            format!("{message} (the dataflow name is the file name without `.toml`)"),
            Some(
                "rename the file; use letters, digits, `_` or `-`, e.g. `playback.toml`"
                    .to_string(),
            ),
        );
    }
    let Some(doc) = cx.parse(text) else {
        out.problems = cx.problems;
        return out;
    };
    let top = Table {
        map: &doc,
        span: 0..0,
        what: "a definition".to_string(),
        known: &TOP_KEYS,
    };
    top.check_keys(&mut cx);

    let source = read_source(&mut cx, &top);
    if let Some((topic, span)) = &source.topic {
        out.topic = Some((topic.clone(), Site::of(&cx, span)));
    }

    let rules = read_rules(&mut cx, &top, &mut out.edges);

    if cx.problems.is_empty()
        && let (Some((topic, _)), Some(event_time)) = (source.topic, source.event_time)
    {
        let mut plan = DataflowPlan {
            name: name.to_string(),
            file: file.to_path_buf(),
            topic,
            event_time,
            delete: source.delete,
            when: source.when,
            nodes: rules.nodes,
            edges: rules.edges,
            identity: rules.identity,
            kafka: source.kafka,
            fields: Default::default(),
        };
        plan.index_fields();
        out.plan = Some(plan);
    }
    out.problems = cx.problems;
    out
}

/// A definition's rules, each read and checked.
struct Rules {
    nodes: Vec<NodeRule>,
    edges: Vec<EdgeRule>,
    identity: Vec<IdentityRule>,
}

/// Reads the `[[nodes]]`, `[[edges]]` and `[[identity]]` tables (a
/// definition needs at least one) and checks retentions per type across
/// rules; the edge types declared go to `decls`.
fn read_rules(cx: &mut FileCx<'_>, top: &Table<'_, '_>, decls: &mut Vec<EdgeDecl>) -> Rules {
    let node_tables = rule_tables(cx, top, "nodes", "node", &NODE_KEYS);
    let edge_tables = rule_tables(cx, top, "edges", "edge", &EDGE_KEYS);
    let identity_tables = rule_tables(cx, top, "identity", "identity", &IDENTITY_KEYS);
    // A rule key that is present but not an array of tables already has its
    // problem; so has a misspelt one.
    let rules_written = ["nodes", "edges", "identity"].iter().any(|k| {
        top.misspells(k)
            || top
                .get(k)
                .is_some_and(|v| v.get_ref().as_array().is_none_or(|a| !a.is_empty()))
    });
    if !rules_written {
        cx.error(
            None,
            "definition has no rules".to_string(),
            Some("add at least one [[nodes]], [[edges]] or [[identity]] table".to_string()),
        );
    }

    let mut nodes = Vec::new();
    let mut node_retention = RetentionCheck::new("node");
    for t in &node_tables {
        let (rule, retention) = node_rule(cx, t);
        if let Some((node_type, ms, span)) = retention {
            node_retention.check(cx, &node_type, ms, span);
        }
        nodes.extend(rule);
    }

    let mut edges = Vec::new();
    let mut edge_retention = RetentionCheck::new("edge");
    for t in &edge_tables {
        let (rule, decl, retention) = edge_rule(cx, t);
        if let Some((edge_type, ms, span)) = retention {
            edge_retention.check(cx, &edge_type, ms, span);
        }
        decls.extend(decl);
        edges.extend(rule);
    }

    let mut identity = Vec::new();
    for t in &identity_tables {
        identity.extend(identity_rule(cx, t));
    }

    Rules {
        nodes,
        edges,
        identity,
    }
}

/// The parts of `[source]` that could be read.
#[derive(Default)]
struct Source {
    topic: Option<(String, Span)>,
    event_time: Option<TimeField>,
    delete: Option<Condition>,
    when: Option<Condition>,
    kafka: BTreeMap<String, String>,
}

fn read_source(cx: &mut FileCx<'_>, top: &Table<'_, '_>) -> Source {
    let mut out = Source::default();
    let Some(v) = top.get("source") else {
        if top.misspells("source") {
            return out;
        }
        cx.error(
            None,
            "missing required table [source]".to_string(),
            Some(
                "start the definition with a [source] table naming its `topic` and `event_time`"
                    .to_string(),
            ),
        );
        return out;
    };
    let Some(s) = cx.table(
        v,
        "source",
        "[source]",
        "write a single `[source]` table with `topic` and `event_time`",
        &SOURCE_KEYS,
    ) else {
        return out;
    };
    s.check_keys(cx);

    if let Some(v) = required(cx, &s, "topic")
        && let Some(topic) = cx.string(v, "topic")
    {
        if topic.is_empty() {
            cx.error(
                Some(&v.span()),
                "empty topic".to_string(),
                required_hint("topic"),
            );
        } else {
            out.topic = Some((topic, v.span()));
        }
    }
    if let Some(v) = required(cx, &s, "event_time") {
        out.event_time = event_time(cx, v);
    }
    if let Some(v) = s.get("delete") {
        out.delete = condition(cx, v, "delete");
    }
    if let Some(v) = s.get("when") {
        out.when = condition(cx, v, "when");
    }
    if let Some(v) = s.get("kafka")
        && let Some(k) = cx.table(
            v,
            "kafka",
            "[source.kafka]",
            "write librdkafka settings as a table, e.g. `[source.kafka]` then `\"fetch.min.bytes\" = \"1\"`",
            &[],
        )
    {
        for (key, value) in k.map.iter() {
            let key_text = key.get_ref().to_string();
            if key_text.is_empty() {
                cx.error(
                    Some(&key.span()),
                    "empty key in [source.kafka]".to_string(),
                    Some("keys of [source.kafka] are librdkafka setting names, e.g. `\"fetch.min.bytes\"`".to_string()),
                );
                continue;
            }
            let text = match value.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                DeValue::Boolean(b) => Some(b.to_string()),
                DeValue::Float(f) => Some(f.as_str().to_string()),
                DeValue::Integer(_) => cx.json(value, &key_text).map(|j| j.to_string()),
                _ => {
                    cx.wrong_type(
                        value,
                        &key_text,
                        "a string, number or boolean",
                        Some("librdkafka settings are single values, e.g. `\"fetch.min.bytes\" = \"1\"`".to_string()),
                    );
                    None
                }
            };
            if let Some(text) = text {
                out.kafka.insert(key_text, text);
            }
        }
    }
    out
}

/// `event_time = "ts"` or `event_time = { field = "ts", unit = "s" }`.
fn event_time(cx: &mut FileCx<'_>, v: &Val<'_>) -> Option<TimeField> {
    match v.get_ref() {
        DeValue::String(_) => cx.field_path(v, "event_time").map(|path| TimeField {
            path,
            unit: TimeUnit::Millis,
        }),
        DeValue::Table(map) => {
            let t = Table {
                map,
                span: v.span(),
                what: "`event_time`".to_string(),
                known: &TIME_KEYS,
            };
            t.check_keys(cx);
            let path = required(cx, &t, "field").and_then(|f| cx.field_path(f, "field"));
            let unit = match t.get("unit") {
                None => Some(TimeUnit::Millis),
                Some(u) => match cx.string(u, "unit").as_deref() {
                    None => None,
                    Some("s") => Some(TimeUnit::Seconds),
                    Some("ms") => Some(TimeUnit::Millis),
                    Some("us") => Some(TimeUnit::Micros),
                    Some(other) => {
                        cx.error(
                            Some(&u.span()),
                            format!("unknown time unit `{other}`"),
                            Some(format!(
                                "the unit of numeric event times is {} (RFC 3339 strings are always accepted)",
                                one_of(&UNITS)
                            )),
                        );
                        None
                    }
                },
            };
            Some(TimeField {
                path: path?,
                unit: unit?,
            })
        }
        _ => {
            cx.wrong_type(
                v,
                "event_time",
                "a field path string or a table",
                required_hint("event_time"),
            );
            None
        }
    }
}

/// The tables of `[[key]]`, or a problem when `key` is not an array of tables.
fn rule_tables<'a, 'i>(
    cx: &mut FileCx<'_>,
    top: &Table<'a, 'i>,
    key: &str,
    kind: &str,
    known: &'static [&'static str],
) -> Vec<Table<'a, 'i>> {
    let Some(v) = top.get(key) else {
        return Vec::new();
    };
    let mut hint = format!("write `[[{key}]]` (double brackets) before each {kind} rule");
    if key == "identity" {
        hint.push_str("; global identity settings (`blocklist`, `max_links`) go in rdg.toml");
    }
    let DeValue::Array(items) = v.get_ref() else {
        cx.wrong_type(v, key, "an array of tables", Some(hint));
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::Table(map) => out.push(Table {
                map,
                span: item.span(),
                what: format!("[[{key}]]"),
                known,
            }),
            other => cx.error(
                Some(&item.span()),
                format!(
                    "each entry of `{key}` must be a table, not {}",
                    article(other)
                ),
                Some(hint.clone()),
            ),
        }
    }
    out
}

/// Rules of one definition asserting the same type must share a retention.
struct RetentionCheck {
    kind: &'static str,
    /// type → (retention ms, its text for messages, line of the first rule)
    first: BTreeMap<String, (Option<u64>, String, usize)>,
}

impl RetentionCheck {
    fn new(kind: &'static str) -> Self {
        RetentionCheck {
            kind,
            first: BTreeMap::new(),
        }
    }

    /// `text_span` is the retention value (or the type, when there is none).
    fn check(&mut self, cx: &mut FileCx<'_>, ty: &str, ms: (Option<u64>, String), span: Span) {
        let (line, _) = cx.position(span.start);
        match self.first.get(ty) {
            None => {
                self.first.insert(ty.to_string(), (ms.0, ms.1, line));
            }
            Some((first_ms, first_text, first_line)) if *first_ms != ms.0 => {
                cx.error(
                    Some(&span),
                    format!(
                        "{} type `{ty}` has {} here but {} in the rule at line {first_line}",
                        self.kind, ms.1, first_text
                    ),
                    Some(format!(
                        "rules of one definition that assert the same {} type must have the same retention",
                        self.kind
                    )),
                );
            }
            Some(_) => {}
        }
    }
}

/// A retention as (ms, text for messages), and where to report a mismatch.
type RetentionSeen = (String, (Option<u64>, String), Span);

/// `retention`, `when`, `required` and `props`, shared by all rules.
struct Common {
    retention: Option<Option<u64>>,
    retention_text: String,
    retention_span: Option<Span>,
    when: Option<Option<Condition>>,
    required: Option<bool>,
}

fn common(cx: &mut FileCx<'_>, t: &Table<'_, '_>) -> Common {
    let (retention, retention_text, retention_span) = match t.get("retention") {
        None => (Some(None), "no retention".to_string(), None),
        Some(v) => {
            let text = match v.get_ref() {
                DeValue::String(s) => format!("retention `{s}`"),
                _ => "retention".to_string(),
            };
            (cx.duration(v, "retention").map(Some), text, Some(v.span()))
        }
    };
    let when = match t.get("when") {
        None => Some(None),
        Some(v) => condition(cx, v, "when").map(Some),
    };
    let required = match t.get("required") {
        None => Some(false),
        Some(v) => cx.boolean(v, "required"),
    };
    Common {
        retention,
        retention_text,
        retention_span,
        when,
        required,
    }
}

/// `props = { name = "field.path", ... }`, sorted by prop name.
fn props(cx: &mut FileCx<'_>, t: &Table<'_, '_>) -> Option<Vec<(String, FieldPath)>> {
    let Some(v) = t.get("props") else {
        return Some(Vec::new());
    };
    let p = cx.table(
        v,
        "props",
        "`props`",
        "props map a prop name to a field path, e.g. `props = { country = \"geo.country\" }`",
        &[],
    )?;
    let mut out = Vec::new();
    let mut ok = true;
    for (name, path) in p.map.iter() {
        if name.get_ref().is_empty() {
            cx.error(
                Some(&name.span()),
                "empty prop name".to_string(),
                Some("e.g. `props = { country = \"geo.country\" }`".to_string()),
            );
            ok = false;
            continue;
        }
        match cx.field_path(path, name.get_ref()) {
            Some(fp) => out.push((name.get_ref().to_string(), fp)),
            None => ok = false,
        }
    }
    out.sort();
    ok.then_some(out)
}

/// `{ type = "profile", id = "profile_id" }` of an edge or identity rule,
/// with the span of its type.
fn id_ref(cx: &mut FileCx<'_>, v: &Val<'_>, key: &str, what: &str) -> Option<(IdRef, Span)> {
    let t = cx.table(
        v,
        key,
        what,
        &format!("e.g. `{key} = {IDREF_EXAMPLE}`"),
        &IDREF_KEYS,
    )?;
    t.check_keys(cx);
    let ty = required(cx, &t, "type").map(|v| (cx.type_name(v, "type"), v.span()));
    let path = required(cx, &t, "id").and_then(|v| cx.field_path(v, "id"));
    let (Some(node_type), span) = ty? else {
        return None;
    };
    Some((
        IdRef {
            node_type,
            path: path?,
        },
        span,
    ))
}

fn node_rule(cx: &mut FileCx<'_>, t: &Table<'_, '_>) -> (Option<NodeRule>, Option<RetentionSeen>) {
    t.check_keys(cx);
    let ty = required(cx, t, "type").map(|v| (cx.type_name(v, "type"), v.span()));
    let id = required(cx, t, "id").and_then(|v| cx.field_path(v, "id"));
    let props = props(cx, t);
    let c = common(cx, t);

    let seen = match (&ty, &c.retention) {
        (Some((Some(node_type), type_span)), Some(ms)) => Some((
            node_type.clone(),
            (*ms, c.retention_text.clone()),
            c.retention_span
                .clone()
                .unwrap_or_else(|| type_span.clone()),
        )),
        _ => None,
    };
    let rule = (|| {
        Some(NodeRule {
            node_type: ty?.0?,
            id: id?,
            props: props?,
            retention: c.retention?,
            when: c.when?,
            required: c.required?,
        })
    })();
    (rule, seen)
}

fn edge_rule(
    cx: &mut FileCx<'_>,
    t: &Table<'_, '_>,
) -> (Option<EdgeRule>, Option<EdgeDecl>, Option<RetentionSeen>) {
    t.check_keys(cx);
    let ty = required(cx, t, "type").map(|v| (cx.type_name(v, "type"), v.span()));
    let from = required(cx, t, "from").and_then(|v| id_ref(cx, v, "from", "`from` of [[edges]]"));
    let to = required(cx, t, "to").and_then(|v| id_ref(cx, v, "to", "`to` of [[edges]]"));
    let props = props(cx, t);
    let c = common(cx, t);
    let reverse = match t.get("reverse") {
        None => Some(false),
        Some(v) => cx.boolean(v, "reverse"),
    };

    let decl = match (&ty, &from, &to) {
        (Some((Some(edge_type), span)), Some((f, _)), Some((to, _))) => Some(EdgeDecl {
            edge_type: edge_type.clone(),
            from_type: f.node_type.clone(),
            to_type: to.node_type.clone(),
            reverse: reverse.unwrap_or(false),
            site: Site::of(cx, span),
        }),
        _ => None,
    };
    let seen = match (&ty, &c.retention) {
        (Some((Some(edge_type), type_span)), Some(ms)) => Some((
            edge_type.clone(),
            (*ms, c.retention_text.clone()),
            c.retention_span
                .clone()
                .unwrap_or_else(|| type_span.clone()),
        )),
        _ => None,
    };
    let rule = (|| {
        Some(EdgeRule {
            edge_type: ty?.0?,
            from: from?.0,
            to: to?.0,
            props: props?,
            retention: c.retention?,
            when: c.when?,
            reverse: reverse?,
            required: c.required?,
        })
    })();
    (rule, decl, seen)
}

fn identity_rule(cx: &mut FileCx<'_>, t: &Table<'_, '_>) -> Option<IdentityRule> {
    t.check_keys(cx);
    let ids = required(cx, t, "ids").and_then(|v| {
        let items = cx.array(v, "ids", Some(format!("e.g. `{IDS_EXAMPLE}`")))?;
        let mut refs = Vec::new();
        let mut ok = true;
        for item in &items {
            if !item.get_ref().is_table() {
                cx.error(
                    Some(&item.span()),
                    format!(
                        "each entry of `ids` must be a table, not {}",
                        article(item.get_ref())
                    ),
                    Some(format!("e.g. `{IDS_EXAMPLE}`")),
                );
                ok = false;
                continue;
            }
            match id_ref(cx, item, "ids", "an `ids` entry of [[identity]]") {
                Some((r, _)) => refs.push(r),
                None => ok = false,
            }
        }
        if items.len() < 2 {
            cx.error(
                Some(&v.span()),
                format!("identity rule needs at least 2 ids, found {}", items.len()),
                Some(format!(
                    "an identity rule links the ids one event carries, e.g. `{IDS_EXAMPLE}`"
                )),
            );
            return None;
        }
        ok.then_some(refs)
    });
    let c = common(cx, t);
    Some(IdentityRule {
        ids: ids?,
        retention: c.retention?,
        when: c.when?,
        required: c.required?,
    })
}

/// Reads `rdg.toml`; `None` when it has a problem.
pub(crate) fn read_settings(file: &Path, text: &str) -> (Option<IdentityConfig>, Vec<Problem>) {
    let mut cx = FileCx::new(file.to_path_buf(), text);
    let Some(doc) = cx.parse(text) else {
        return (None, cx.problems);
    };
    let mut config = IdentityConfig::default();
    for (key, _) in doc.iter() {
        let name = key.get_ref();
        if name == "identity" {
            continue;
        }
        let hint = if TOP_KEYS.contains(&name.as_ref()) {
            "rdg.toml is not a definition: it holds only global settings ([identity]); \
             put a definition in its own file, e.g. `playback.toml`"
                .to_string()
        } else if super::problem::did_you_mean(name, &["identity"]).is_some() {
            "did you mean `identity`?".to_string()
        } else {
            "rdg.toml holds only an [identity] table".to_string()
        };
        cx.error(
            Some(&key.span()),
            format!("unknown key `{name}` in rdg.toml"),
            Some(hint),
        );
    }
    if let Some(v) = doc.get("identity")
        && let Some(t) = cx.table(
            v,
            "identity",
            "[identity]",
            "write an `[identity]` table with `blocklist`, `max_links`, `max_links_by_type`",
            &SETTINGS_KEYS,
        )
    {
        t.check_keys(&mut cx);
        if let Some(v) = t.get("blocklist")
            && let Some(items) = cx.array(
                v,
                "blocklist",
                Some("e.g. `blocklist = [\"\", \"0\", \"unknown\"]`".to_string()),
            )
        {
            let mut list = BTreeSet::new();
            for item in items {
                match item.get_ref() {
                    DeValue::String(s) => {
                        list.insert(s.to_string());
                    }
                    other => cx.error(
                        Some(&item.span()),
                        format!("blocklist entries must be strings, not {}", article(other)),
                        Some(
                            "quote each id value, e.g. `blocklist = [\"\", \"0\", \"unknown\"]`"
                                .to_string(),
                        ),
                    ),
                }
            }
            config.blocklist = list;
        }
        if let Some(v) = t.get("max_links")
            && let Some(n) = at_least_one(&mut cx, v, "max_links")
        {
            config.max_links = n;
        }
        if let Some(v) = t.get("max_links_by_type")
            && let Some(by_type) = cx.table(
                v,
                "max_links_by_type",
                "`max_links_by_type`",
                "e.g. `max_links_by_type = { device = 20 }`",
                &[],
            )
        {
            for (key, n) in by_type.map.iter() {
                if let Some(message) = name_problem(key.get_ref(), "type name") {
                    cx.error(
                        Some(&key.span()),
                        format!("{message} in `max_links_by_type`"),
                        Some(
                            "the keys of `max_links_by_type` are node types, e.g. `device = 20`"
                                .to_string(),
                        ),
                    );
                    continue;
                }
                let label = format!("max_links_by_type.{}", key.get_ref());
                if let Some(n) = at_least_one(&mut cx, n, &label) {
                    config
                        .max_links_by_type
                        .insert(key.get_ref().to_string(), n);
                }
            }
        }
    }
    let ok = cx.problems.is_empty();
    (ok.then_some(config), cx.problems)
}

/// A hub threshold: an integer of at least 1.
fn at_least_one(cx: &mut FileCx<'_>, v: &Val<'_>, key: &str) -> Option<u64> {
    cx.integer_at_least(
        v,
        key,
        1,
        "an identifier with more distinct live neighbours than this is a hub; use 1 or more",
    )
}

/// Checks across definitions: one definition per topic, one pair of endpoint
/// types per edge type. Reports at the later declaration (in file order).
pub(crate) fn cross_check(defs: &[(String, &Definition)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut topics: BTreeMap<&str, (&str, &Site)> = BTreeMap::new();
    let mut edge_types: BTreeMap<&str, &EdgeDecl> = BTreeMap::new();
    for (name, def) in defs {
        if let Some((topic, site)) = &def.topic {
            match topics.get(topic.as_str()) {
                None => {
                    topics.insert(topic, (name, site));
                }
                Some((first_name, first)) => problems.push(site.problem(
                    format!(
                        "topic `{topic}` is already read by definition `{first_name}` ({}:{})",
                        first.file.display(),
                        first.line
                    ),
                    Some("each topic is read by exactly one definition; put the rules of both in one file".to_string()),
                )),
            }
        }
        for e in &def.edges {
            match edge_types.get(e.edge_type.as_str()) {
                None => {
                    edge_types.insert(&e.edge_type, e);
                }
                Some(first) if first.from_type != e.from_type || first.to_type != e.to_type => {
                    problems.push(e.site.problem(
                        format!(
                            "edge type `{}` goes from `{}` to `{}` here, but from `{}` to `{}` at {}:{}",
                            e.edge_type,
                            e.from_type,
                            e.to_type,
                            first.from_type,
                            first.to_type,
                            first.site.file.display(),
                            first.site.line
                        ),
                        Some("an edge type has the same endpoint types everywhere; use the same `from`/`to` types or another edge type name".to_string()),
                    ));
                }
                Some(_) => {}
            }
        }
    }
    problems
}

/// The plan of definitions that all passed every check.
pub(crate) fn assemble(
    mut dataflows: Vec<DataflowPlan>,
    edges: &[EdgeDecl],
    identity: IdentityConfig,
) -> Plan {
    dataflows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut edge_types: BTreeMap<String, EdgeType> = BTreeMap::new();
    for e in edges {
        edge_types
            .entry(e.edge_type.clone())
            .and_modify(|t| t.reverse |= e.reverse)
            .or_insert_with(|| EdgeType {
                from_type: e.from_type.clone(),
                to_type: e.to_type.clone(),
                reverse: e.reverse,
            });
    }
    let node_types = dataflows
        .iter()
        .flat_map(|d| d.nodes.iter().map(|n| n.node_type.clone()))
        .collect();
    Plan {
        dataflows,
        identity,
        edge_types,
        node_types,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(text: &str) -> Vec<String> {
        read_definition(Path::new("d.toml"), "d", text)
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const SOURCE: &str = "[source]\ntopic = \"t\"\nevent_time = \"ts\"\n";

    #[test]
    fn event_time_forms() {
        for (text, unit) in [
            ("event_time = \"a.b\"", TimeUnit::Millis),
            ("event_time = { field = \"a.b\" }", TimeUnit::Millis),
            (
                "event_time = { field = \"a.b\", unit = \"s\" }",
                TimeUnit::Seconds,
            ),
            (
                "event_time = { field = \"a.b\", unit = \"us\" }",
                TimeUnit::Micros,
            ),
        ] {
            let def =
                format!("[source]\ntopic = \"t\"\n{text}\n[[nodes]]\ntype = \"n\"\nid = \"i\"\n");
            let d = read_definition(Path::new("d.toml"), "d", &def);
            let Some(plan) = d.plan else {
                panic!("{text}: {:?}", d.problems);
            };
            assert_eq!(plan.event_time.unit, unit);
            assert_eq!(plan.event_time.path, FieldPath::parse("a.b"));
        }
    }

    #[test]
    fn a_misspelt_rule_table_is_not_also_a_missing_rule() {
        let m = messages(&format!("{SOURCE}[[node]]\ntype = \"n\"\nid = \"i\"\n"));
        assert_eq!(
            m,
            [
                "d.toml:4:3: error: unknown key `node` in a definition\n  hint: did you mean `nodes`?"
            ]
        );
        let m = messages(&format!("{SOURCE}[[nodes]]\ntpye = \"n\"\nid = \"i\"\n"));
        assert_eq!(m.len(), 1, "{m:?}");
        let m = messages("[sorce]\ntopic = \"t\"\n[[nodes]]\ntype = \"n\"\nid = \"i\"\n");
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("did you mean `source`?"));
    }

    #[test]
    fn identity_settings_in_a_definition() {
        let m = messages(&format!("{SOURCE}[identity]\nmax_links = 5\n"));
        assert_eq!(
            m,
            [
                "d.toml:4:1: error: `identity` must be an array of tables, not a table\n  hint: write `[[identity]]` (double brackets) before each identity rule; global identity settings (`blocklist`, `max_links`) go in rdg.toml"
            ]
        );
    }

    #[test]
    fn same_retention_in_other_units_is_the_same() {
        let text = format!(
            "{SOURCE}[[nodes]]\ntype = \"n\"\nid = \"a\"\nretention = \"1d\"\n[[nodes]]\ntype = \"n\"\nid = \"b\"\nretention = \"24h\"\n"
        );
        assert_eq!(messages(&text), Vec::<String>::new());
    }
}
