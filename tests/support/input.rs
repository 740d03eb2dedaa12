//! An independent reading of input lines under the shipped definitions:
//! what `dataflows/*.toml` and `docs/semantics.md` say about the sample
//! input (which events are ignored, which lines are dead letters, which
//! identifiers an event links), written out by hand so that tests
//! cross-check rdg's answers instead of repeating them.
//!
//! Invariant: nothing here calls rdg's library.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::bin::data_files;

/// What the shipped definition of a topic reads, copied by hand from
/// `dataflows/<topic>.toml`.
pub struct TopicRules {
    pub topic: &'static str,
    /// `event_time` field.
    pub time: &'static str,
    /// The source `when`: events failing it are ignored.
    pub when: fn(&Value) -> bool,
    /// Every id field of every rule. In the shipped definitions each of them
    /// is read by at least one rule without a `when`, so a bad value in any
    /// of them makes every event that passes the source `when` a dead letter.
    pub id_fields: &'static [&'static str],
    /// The identity rule's ids: (type, field).
    pub identity: &'static [(&'static str, &'static str)],
}

pub const SHIPPED: [TopicRules; 3] = [
    TopicRules {
        topic: "gaming",
        time: "time",
        when: |_| true,
        id_fields: &[
            "game_profile_id",
            "game_id",
            "device_id",
            "linked_account_id",
        ],
        identity: &[
            ("game_profile", "game_profile_id"),
            ("account", "linked_account_id"),
            ("device", "device_id"),
        ],
    },
    TopicRules {
        topic: "login",
        time: "ts",
        when: |v| v["result"] == "success",
        id_fields: &["account_id", "email_sha256", "device_id"],
        identity: &[
            ("account", "account_id"),
            ("device", "device_id"),
            ("email", "email_sha256"),
        ],
    },
    TopicRules {
        topic: "playback",
        time: "ts",
        when: |v| v["event"] == "play_start" || v["event"] == "play_stop",
        id_fields: &["account_id", "profile_id", "title_id", "device_id"],
        identity: &[("account", "account_id"), ("device", "device_id")],
    },
];

/// `rdg.toml`'s blocklist (the default one).
pub const BLOCKLIST: [&str; 7] = ["", "0", "-1", "null", "none", "unknown", "anonymous"];

/// `max_links` for an identifier of `id_type` (`rdg.toml`).
pub fn max_links(id_type: &str) -> usize {
    if id_type == "device" { 20 } else { 50 }
}

pub fn rules_of(topic: &str) -> &'static TopicRules {
    SHIPPED
        .iter()
        .find(|r| r.topic == topic)
        .unwrap_or_else(|| panic!("no shipped definition reads topic {topic}"))
}

/// Why a line is a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bad {
    NotJson,
    NotObject,
    /// The time field is missing or not a number or string.
    Time(&'static str),
    /// An id field holds something else than a string, an integer or null.
    Id(&'static str),
}

/// How the shipped definition treats one input line.
#[derive(Clone, Debug, PartialEq)]
pub enum LineKind {
    /// Whitespace only: skipped, but counted in line numbers.
    Blank,
    Ignored,
    Dead(Bad),
    Event(Value),
}

/// Reads one line as the shipped definition of `rules.topic` would.
pub fn classify(rules: &TopicRules, line: &str) -> LineKind {
    if line.trim().is_empty() {
        return LineKind::Blank;
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return LineKind::Dead(Bad::NotJson);
    };
    if !v.is_object() {
        return LineKind::Dead(Bad::NotObject);
    }
    if !(rules.when)(&v) {
        return LineKind::Ignored;
    }
    match v.get(rules.time) {
        Some(Value::Number(_)) | Some(Value::String(_)) => {}
        _ => return LineKind::Dead(Bad::Time(rules.time)),
    }
    for f in rules.id_fields {
        match v.get(*f) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            Some(_) => return LineKind::Dead(Bad::Id(f)),
        }
    }
    LineKind::Event(v)
}

/// Every line of a file under the shipped definition of `topic`, with its
/// 1-based line number.
pub fn classify_file(topic: &str, text: &str) -> Vec<(usize, LineKind)> {
    let rules = rules_of(topic);
    text.lines()
        .enumerate()
        .map(|(n, l)| (n + 1, classify(rules, l)))
        .collect()
}

/// The identifiers (`type:id`) an event's identity rule links, blocklisted
/// ones left out, deduplicated.
pub fn identity_ids(rules: &TopicRules, event: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (t, f) in rules.identity {
        let id = match event.get(*f) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => continue,
        };
        if !BLOCKLIST.contains(&id.as_str()) {
            out.insert(format!("{t}:{id}"));
        }
    }
    out
}

/// For every identifier, every identifier an event ever linked it to (deletes
/// and expiry ignored): a superset of its live neighbours.
pub fn neighbour_upper_bound(files: &[(&str, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (topic, text) in files {
        let rules = rules_of(topic);
        for (_, kind) in classify_file(topic, text) {
            let LineKind::Event(v) = kind else { continue };
            let ids = identity_ids(rules, &v);
            for a in &ids {
                for b in &ids {
                    if a != b {
                        out.entry(a.clone()).or_default().insert(b.clone());
                    }
                }
            }
        }
    }
    out
}

/// The topic of a data file (its name up to the first dot).
pub fn topic_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.split('.').next().unwrap_or_default().to_string()
}

/// The sample files as (topic, text).
pub fn read_data() -> Vec<(&'static str, String)> {
    data_files()
        .iter()
        .map(|p| {
            let topic = rules_of(&topic_of(p)).topic;
            let text = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (topic, text)
        })
        .collect()
}
