//! Reading one TOML file as a spanned tree, collecting problems as it goes.
//!
//! Owns [`FileCx`] (one file's text, its line index and its problems) and the
//! typed accessors that turn spanned TOML values into Rust values or problems.
//! Invariant: an accessor that returns `None` for a present-but-bad value has
//! recorded exactly one problem for it, at the value's position; nothing here
//! stops at the first problem or panics on any input.

use std::ops::Range;
use std::path::PathBuf;

use serde_json::Value;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::duration::{UNITS_HINT, parse_duration};
use super::plan::FieldPath;
use super::problem::{LineIndex, Problem, did_you_mean, one_of};

pub(crate) type Span = Range<usize>;
pub(crate) type Val<'i> = Spanned<DeValue<'i>>;

/// One file being read: where problems go and how to place them.
pub(crate) struct FileCx<'s> {
    pub(crate) file: PathBuf,
    lines: LineIndex<'s>,
    pub(crate) problems: Vec<Problem>,
}

impl<'s> FileCx<'s> {
    pub(crate) fn new(file: PathBuf, text: &'s str) -> Self {
        FileCx {
            file,
            lines: LineIndex::new(text),
            problems: Vec::new(),
        }
    }

    /// 1-based (line, column) of a byte offset.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        self.lines.position(offset)
    }

    /// Records a problem at `span` (or at the file, when `None`).
    pub(crate) fn error(&mut self, span: Option<&Span>, message: String, hint: Option<String>) {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.position(s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            column,
            message,
            hint,
        });
    }

    /// Parses the text; syntax errors become problems and yield `None`.
    pub(crate) fn parse<'i>(&mut self, text: &'i str) -> Option<DeTable<'i>> {
        let (table, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Some(table.into_inner());
        }
        for e in errors {
            let hint = syntax_hint(e.message());
            self.error(
                Some(&e.span().unwrap_or(0..0)),
                format!("TOML syntax error: {}", e.message()),
                hint,
            );
        }
        None
    }

    /// Views `v` as a table whose keys are `known` (empty: any key), or
    /// records a type problem.
    pub(crate) fn table<'a, 'i>(
        &mut self,
        v: &'a Val<'i>,
        key: &str,
        what: &str,
        example: &str,
        known: &'static [&'static str],
    ) -> Option<Table<'a, 'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(Table {
                map: t,
                span: v.span(),
                what: what.to_string(),
                known,
            }),
            _ => {
                self.wrong_type(v, key, "a table", Some(example.to_string()));
                None
            }
        }
    }

    /// Records "`key` must be EXPECTED, not FOUND".
    pub(crate) fn wrong_type(
        &mut self,
        v: &Val<'_>,
        key: &str,
        expected: &str,
        hint: Option<String>,
    ) {
        let found = article(v.get_ref());
        let hint = match v.get_ref() {
            DeValue::Datetime(_) => Some(format!(
                "TOML reads an unquoted date or time as a datetime; quote it to make a string{}",
                hint.map(|h| format!(" ({h})")).unwrap_or_default()
            )),
            _ => hint,
        };
        self.error(
            Some(&v.span()),
            format!("`{key}` must be {expected}, not {found}"),
            hint,
        );
    }

    /// Records a missing required key in `t`, at the table's position.
    pub(crate) fn missing(&mut self, t: &Table<'_, '_>, key: &str, hint: Option<String>) {
        let span = t.span.clone();
        self.error(
            Some(&span),
            format!("missing required key `{key}` in {}", t.what),
            hint,
        );
    }

    /// A string value.
    pub(crate) fn string(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(v, key, "a string", None);
                None
            }
        }
    }

    /// A boolean value.
    pub(crate) fn boolean(&mut self, v: &Val<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(
                    v,
                    key,
                    "a boolean",
                    Some(format!("write `{key} = true` or `{key} = false`")),
                );
                None
            }
        }
    }

    /// An array value's elements.
    pub(crate) fn array<'a, 'i>(
        &mut self,
        v: &'a Val<'i>,
        key: &str,
        hint: Option<String>,
    ) -> Option<Vec<&'a Val<'i>>> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a.iter().collect()),
            _ => {
                self.wrong_type(v, key, "an array", hint);
                None
            }
        }
    }

    /// An integer of at least `min` that fits in a `u64`.
    pub(crate) fn integer_at_least(
        &mut self,
        v: &Val<'_>,
        key: &str,
        min: u64,
        hint: &str,
    ) -> Option<u64> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(v, key, "an integer", Some(hint.to_string()));
            return None;
        };
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if n > u64::MAX as i128 => {
                self.error(Some(&v.span()), format!("`{key}` is too large: {i}"), None);
                None
            }
            Ok(n) if n < min as i128 => {
                self.error(
                    Some(&v.span()),
                    format!("`{key}` must be at least {min}, not {i}"),
                    Some(hint.to_string()),
                );
                None
            }
            Ok(n) => u64::try_from(n).ok(),
            Err(_) => {
                self.error(
                    Some(&v.span()),
                    format!("`{key}` is out of range: {i}"),
                    None,
                );
                None
            }
        }
    }

    /// A duration string, in milliseconds.
    pub(crate) fn duration(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        match v.get_ref() {
            DeValue::String(s) => match parse_duration(s) {
                Ok(ms) => Some(ms),
                Err(e) => {
                    self.error(
                        Some(&v.span()),
                        format!("bad duration for `{key}`: {e}"),
                        Some(UNITS_HINT.to_string()),
                    );
                    None
                }
            },
            DeValue::Integer(_) | DeValue::Float(_) => {
                self.wrong_type(
                    v,
                    key,
                    "a duration string",
                    Some("durations are strings with a unit, e.g. `retention = \"30d\"`; the units are `ms`, `s`, `m`, `h` and `d`".to_string()),
                );
                None
            }
            _ => {
                self.wrong_type(v, key, "a duration string", Some(UNITS_HINT.to_string()));
                None
            }
        }
    }

    /// A field path string: non-empty, no empty segment.
    pub(crate) fn field_path(&mut self, v: &Val<'_>, key: &str) -> Option<FieldPath> {
        let DeValue::String(s) = v.get_ref() else {
            self.wrong_type(
                v,
                key,
                "a field path string",
                Some("a field path names a field of the event, e.g. `\"device_id\"` or `\"device.id\"`".to_string()),
            );
            return None;
        };
        let problem = if s.is_empty() {
            Some("empty field path".to_string())
        } else if s.starts_with('.') {
            Some(format!("field path `{s}` starts with a dot"))
        } else if s.ends_with('.') {
            Some(format!("field path `{s}` ends with a dot"))
        } else if s.contains("..") {
            Some(format!("field path `{s}` has an empty segment"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                self.error(
                    Some(&v.span()),
                    message,
                    Some("a field path is field names joined by single dots, e.g. `device_id` or `device.id`".to_string()),
                );
                None
            }
            None => Some(FieldPath::parse(s)),
        }
    }

    /// A node or edge type name: it becomes part of store names
    /// (`node/<type>`) and identifiers (`type:id`).
    pub(crate) fn type_name(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        let s = self.string(v, key)?;
        if let Some(message) = name_problem(&s, "type name") {
            self.error(
                Some(&v.span()),
                message,
                Some("type names become store names (`node/<type>`) and identifiers (`<type>:<id>`); use letters, digits, `_` or `-`".to_string()),
            );
            return None;
        }
        Some(s)
    }

    /// Any TOML value as JSON, for condition operands.
    pub(crate) fn json(&mut self, v: &Val<'_>, key: &str) -> Option<Value> {
        match v.get_ref() {
            DeValue::String(s) => Some(Value::String(s.to_string())),
            DeValue::Boolean(b) => Some(Value::Bool(*b)),
            DeValue::Integer(i) => {
                if let Ok(n) = i64::from_str_radix(i.as_str(), i.radix()) {
                    Some(Value::from(n))
                } else if let Ok(n) = u64::from_str_radix(i.as_str(), i.radix()) {
                    Some(Value::from(n))
                } else {
                    self.error(
                        Some(&v.span()),
                        format!("integer {i} in `{key}` is out of range"),
                        Some("JSON events can only be compared with integers that fit in 64 bits; quote it to compare as a string".to_string()),
                    );
                    None
                }
            }
            DeValue::Float(f) => {
                match f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Some(Value::Number(n)),
                    None => {
                        self.error(
                            Some(&v.span()),
                            format!(
                                "float {} in `{key}` cannot be compared with JSON",
                                f.as_str()
                            ),
                            Some(
                                "JSON has no `nan` or `inf`, and floats must be finite".to_string(),
                            ),
                        );
                        None
                    }
                }
            }
            DeValue::Datetime(d) => {
                self.error(
                    Some(&v.span()),
                    format!("`{key}` is a TOML datetime ({d}), which JSON events never contain"),
                    Some(format!("quote it to compare with a string: `\"{d}\"`")),
                );
                None
            }
            DeValue::Array(a) => {
                let mut out = Vec::new();
                let mut ok = true;
                for x in a.iter() {
                    match self.json(x, key) {
                        Some(j) => out.push(j),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Array(out))
            }
            DeValue::Table(t) => {
                let mut out = serde_json::Map::new();
                let mut ok = true;
                for (k, x) in t.iter() {
                    match self.json(x, key) {
                        Some(j) => {
                            out.insert(k.get_ref().to_string(), j);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Object(out))
            }
        }
    }
}

/// Why `s` is not a valid type or dataflow name, if it is not.
pub(crate) fn name_problem(s: &str, what: &str) -> Option<String> {
    if s.is_empty() {
        Some(format!("empty {what}"))
    } else if s.contains(':') {
        Some(format!("{what} `{s}` contains `:`"))
    } else if s.contains('/') {
        Some(format!("{what} `{s}` contains `/`"))
    } else if s.contains(char::is_whitespace) {
        Some(format!("{what} {s:?} contains whitespace"))
    } else if s.contains(char::is_control) {
        Some(format!("{what} {s:?} contains a control character"))
    } else {
        None
    }
}

/// A table of the tree, with a label for messages (`[[nodes]]`) and the
/// keys it may have.
pub(crate) struct Table<'a, 'i> {
    pub(crate) map: &'a DeTable<'i>,
    pub(crate) span: Span,
    pub(crate) what: String,
    /// The keys this table may have; empty when its keys are free (`props`).
    pub(crate) known: &'static [&'static str],
}

impl<'a, 'i> Table<'a, 'i> {
    pub(crate) fn get(&self, key: &str) -> Option<&'a Val<'i>> {
        self.map.get(key)
    }

    /// The span of `key` itself (not its value).
    pub(crate) fn key_span(&self, key: &str) -> Option<Span> {
        self.map.get_key_value(key).map(|(k, _)| k.span())
    }

    /// True when an unknown key of this table looks like a typo of `key`;
    /// then "missing `key`" would only repeat the unknown-key problem.
    pub(crate) fn misspells(&self, key: &str) -> bool {
        self.map.keys().any(|k| {
            !self.known.contains(&k.get_ref().as_ref())
                && did_you_mean(k.get_ref(), self.known) == Some(key)
        })
    }

    /// Records a problem for every key not in `known`, with a suggestion.
    pub(crate) fn check_keys(&self, cx: &mut FileCx<'_>) {
        let known = self.known;
        if known.is_empty() {
            return;
        }
        let mut keys: Vec<_> = self.map.keys().collect();
        keys.sort_by_key(|k| k.span().start);
        for k in keys {
            let name = k.get_ref();
            if known.contains(&name.as_ref()) {
                continue;
            }
            let hint = match did_you_mean(name, known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("the keys of {} are {}", self.what, one_of(known)),
            };
            cx.error(
                Some(&k.span()),
                format!("unknown key `{name}` in {}", self.what),
                Some(hint),
            );
        }
    }
}

/// `a string`, `an integer`, ...
pub(crate) fn article(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A hint for the TOML syntax errors people make most.
fn syntax_hint(message: &str) -> Option<String> {
    if message.contains("string values must be quoted") {
        Some("put text values in double quotes: `key = \"value\"`".to_string())
    } else if message.contains("duplicate key") {
        Some("each key may appear once per table; remove or rename one of them".to_string())
    } else if message.contains("invalid basic string") {
        Some("a string opened with `\"` must close with `\"` on the same line".to_string())
    } else {
        None
    }
}
