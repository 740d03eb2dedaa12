//! Fast event decoding: the fields a definition reads, extracted from the
//! JSON bytes in one pass without building a `serde_json::Value` tree.
//!
//! A definition reads a few dotted paths (event time, ids, props, conditions).
//! [`FieldSet`] compiles them into a small trie; [`FieldSet::decode`] walks
//! the event's JSON once with serde_json, skips every other key without
//! allocating, and keeps each wanted value as a [`Slot`] that borrows from the
//! input (strings without escapes are not copied).
//!
//! Invariant: for an event this decoder accepts, every path sees exactly
//! what [`FieldPath::get`] would see on the parsed `Value` (last duplicate key
//! wins, a path through a non-object is missing), so evaluating the decoded
//! fields gives the same outcome as evaluating the `Value`. Anything the
//! decoder does not accept (invalid JSON, a top level that is not an object)
//! is handed back as `None`, and the caller evaluates through the `Value`
//! path, which produces the reference error messages.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Number, Value};

use super::plan::FieldPath;

/// The value of one wanted path in one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Slot<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    /// An object or an array (rare in the fields definitions read).
    Complex(Value),
}

/// A borrowed view of a JSON value at a path: what the evaluator reads,
/// whether the event was decoded into a `Value` or into [`Fields`].
#[derive(Clone, Copy, Debug)]
pub enum FieldRef<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    Str(&'a str),
    Complex(&'a Value),
}

impl<'a> FieldRef<'a> {
    /// The view of a parsed value.
    pub fn of_value(v: &'a Value) -> FieldRef<'a> {
        match v {
            Value::Null => FieldRef::Null,
            Value::Bool(b) => FieldRef::Bool(*b),
            Value::Number(n) => FieldRef::Number(n),
            Value::String(s) => FieldRef::Str(s),
            other => FieldRef::Complex(other),
        }
    }

    /// The view of a decoded slot.
    pub fn of_slot(s: &'a Slot<'_>) -> FieldRef<'a> {
        match s {
            Slot::Null => FieldRef::Null,
            Slot::Bool(b) => FieldRef::Bool(*b),
            Slot::Number(n) => FieldRef::Number(n),
            Slot::Str(s) => FieldRef::Str(s),
            Slot::Complex(v) => FieldRef::Complex(v),
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, FieldRef::Null)
    }
}

/// Where evaluation reads an event's fields from.
pub trait EventView {
    /// The value at `path`, `None` when a step is missing or not an object.
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>>;
}

impl EventView for Value {
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        path.get(self).map(FieldRef::of_value)
    }
}

/// The decoded fields of one event, one slot per wanted path.
#[derive(Debug, Default)]
pub struct Fields<'a> {
    slots: Vec<Option<Slot<'a>>>,
}

impl<'a> Fields<'a> {
    /// The same allocation for another input's lifetime (emptied first).
    pub(crate) fn recycle<'b>(mut self) -> Fields<'b> {
        self.slots.clear();
        Fields {
            slots: self.slots.into_iter().map(|_| None).collect(),
        }
    }
}

impl EventView for Fields<'_> {
    fn field(&self, path: &FieldPath) -> Option<FieldRef<'_>> {
        let i = path.slot?;
        self.slots.get(i)?.as_ref().map(FieldRef::of_slot)
    }
}

/// One level of the path trie.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Level {
    keys: Vec<(Box<str>, Child)>,
    /// The slots of every path below this level, as a range (slots are
    /// numbered depth-first), cleared when a duplicate key re-enters it.
    first_slot: usize,
    end_slot: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Child {
    /// The slot of the path that ends here.
    slot: Option<usize>,
    /// Paths that continue below.
    below: Option<Level>,
}

/// The compiled paths of one definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet {
    root: Level,
    slots: usize,
}

impl FieldSet {
    /// Compiles `paths` (duplicates allowed) and numbers their slots; sets
    /// each path's `slot`.
    pub fn build<'p>(paths: impl IntoIterator<Item = &'p mut FieldPath>) -> FieldSet {
        let mut paths: Vec<&mut FieldPath> = paths.into_iter().collect();
        let mut texts: Vec<Vec<String>> = paths.iter().map(|p| p.parts.clone()).collect();
        texts.sort();
        texts.dedup();
        let mut set = FieldSet::default();
        for parts in &texts {
            insert(&mut set.root, parts);
        }
        set.slots = number(&mut set.root, 0);
        for p in paths.iter_mut() {
            p.slot = set.slot_of(&p.parts);
        }
        set
    }

    fn slot_of(&self, parts: &[String]) -> Option<usize> {
        let mut level = &self.root;
        let (last, init) = parts.split_last()?;
        for p in init {
            level = level.child(p)?.below.as_ref()?;
        }
        level.child(last)?.slot
    }

    /// Decodes an event. `None` when the bytes are not a JSON object or
    /// not UTF-8 (the caller then takes the reference path through `Value`).
    pub fn decode<'a>(&self, bytes: &'a [u8], out: &mut Fields<'a>) -> Option<()> {
        out.slots.clear();
        out.slots.resize(self.slots, None);
        // serde_json skips the strings it ignores without checking their
        // UTF-8, where the reference path rejects invalid UTF-8 anywhere
        // (found by fuzzing: fuzz/corpus/event/regression-*): check first.
        let text = std::str::from_utf8(bytes).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = LevelSeed {
            level: &self.root,
            slots: &mut out.slots,
            top: true,
        };
        match seed.deserialize(&mut de) {
            Ok(true) => de.end().ok(),
            _ => None,
        }
    }
}

impl Level {
    fn child(&self, key: &str) -> Option<&Child> {
        self.keys
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, c)| c)
    }
}

fn insert(level: &mut Level, parts: &[String]) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    let i = match level.keys.iter().position(|(k, _)| k.as_ref() == first) {
        Some(i) => i,
        None => {
            level.keys.push((first.as_str().into(), Child::default()));
            level.keys.len() - 1
        }
    };
    let child = &mut level.keys[i].1;
    if rest.is_empty() {
        child.slot = Some(usize::MAX);
    } else {
        insert(child.below.get_or_insert_with(Level::default), rest);
    }
}

/// Numbers the slots depth-first from `next`; returns the next free number.
fn number(level: &mut Level, mut next: usize) -> usize {
    level.first_slot = next;
    for (_, child) in level.keys.iter_mut() {
        if child.slot.is_some() {
            child.slot = Some(next);
            next += 1;
        }
        if let Some(below) = child.below.as_mut() {
            next = number(below, next);
        }
    }
    level.end_slot = next;
    next
}

/// Visits one JSON value at a trie level: an object is walked for wanted
/// keys, anything else is skipped. Returns whether it was an object.
struct LevelSeed<'s, 'a> {
    level: &'s Level,
    slots: &'s mut Vec<Option<Slot<'a>>>,
    /// The event's top level: only an object is accepted.
    top: bool,
}

impl<'de, 's> DeserializeSeed<'de> for LevelSeed<'s, 'de> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

/// Errors out of a visitor that rejects a non-object top level.
fn not_object<E: serde::de::Error>(top: bool) -> Result<bool, E> {
    if top {
        Err(E::custom("event is not a JSON object"))
    } else {
        Ok(false)
    }
}

impl<'de, 's> Visitor<'de> for LevelSeed<'s, 'de> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let level = self.level;
        let slots = self.slots;
        while let Some(child) = map.next_key_seed(KeySeed { level })? {
            let Some(child) = child else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            // A repeated key replaces what the first one held (as in `Value`).
            if let Some(below) = &child.below {
                for s in &mut slots[below.first_slot..below.end_slot] {
                    *s = None;
                }
            }
            match (child.slot, &child.below) {
                (Some(slot), None) => {
                    slots[slot] = Some(map.next_value_seed(SlotSeed)?);
                }
                (None, Some(below)) => {
                    map.next_value_seed(LevelSeed {
                        level: below,
                        slots: &mut *slots,
                        top: false,
                    })?;
                }
                (Some(slot), Some(below)) => {
                    // Wanted itself and below: read twice from its text.
                    let raw: &'de RawValue = map.next_value()?;
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    slots[slot] = Some(
                        SlotSeed
                            .deserialize(&mut de)
                            .map_err(serde::de::Error::custom)?,
                    );
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    LevelSeed {
                        level: below,
                        slots: &mut *slots,
                        top: false,
                    }
                    .deserialize(&mut de)
                    .map_err(serde::de::Error::custom)?;
                }
                (None, None) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(true)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        if self.top {
            return not_object(true);
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        not_object(self.top)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        not_object(self.top)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        not_object(self.top)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        not_object(self.top)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<bool, E> {
        not_object(self.top)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        not_object(self.top)
    }
}

/// Finds a key among a level's wanted keys without allocating.
struct KeySeed<'s> {
    level: &'s Level,
}

impl<'de, 's> DeserializeSeed<'de> for KeySeed<'s> {
    type Value = Option<&'s Child>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, 's> Visitor<'de> for KeySeed<'s> {
    type Value = Option<&'s Child>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.level.child(key))
    }
}

/// Reads one wanted value into a [`Slot`] as `serde_json::Value`'s own
/// visitor reads it: numbers through `Number`'s conversions, `null` as
/// null, objects and arrays into a `Value` by `Value`'s deserializer. A
/// string serde_json hands over unescaped is borrowed from the input; one
/// with escapes arrives decoded and is owned. One pass over the value's
/// bytes: no raw text kept and read again.
struct SlotSeed;

impl<'de> DeserializeSeed<'de> for SlotSeed {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Slot<'de>, E> {
        Ok(Slot::Number(n.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Slot<'de>, E> {
        Ok(Slot::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Slot<'de>, E> {
        // As `Value` does: a float JSON cannot hold is null.
        Ok(Number::from_f64(n).map_or(Slot::Null, Slot::Number))
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, s: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(s)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Slot<'de>, A::Error> {
        let d = serde::de::value::SeqAccessDeserializer::new(seq);
        Ok(Slot::Complex(Value::deserialize(d)?))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Slot<'de>, A::Error> {
        let d = serde::de::value::MapAccessDeserializer::new(map);
        Ok(Slot::Complex(Value::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(paths: &[&str]) -> (FieldSet, Vec<FieldPath>) {
        let mut ps: Vec<FieldPath> = paths.iter().map(|p| FieldPath::parse(p)).collect();
        let set = FieldSet::build(ps.iter_mut());
        (set, ps)
    }

    /// Every path reads what `FieldPath::get` reads on the parsed value.
    fn same_as_value(json: &str, paths: &[&str]) {
        let (set, ps) = set(paths);
        let v: Value = serde_json::from_str(json).unwrap();
        let mut f = Fields::default();
        set.decode(json.as_bytes(), &mut f).expect("decodes");
        for p in &ps {
            let want = p.get(&v).cloned();
            let got = f.field(p).map(|r| match r {
                FieldRef::Null => Value::Null,
                FieldRef::Bool(b) => Value::Bool(b),
                FieldRef::Number(n) => Value::Number(n.clone()),
                FieldRef::Str(s) => Value::String(s.to_string()),
                FieldRef::Complex(v) => v.clone(),
            });
            assert_eq!(got, want, "{} in {json}", p.text);
        }
    }

    #[test]
    fn reads_nested_and_skips_the_rest() {
        let paths = ["a", "b.c", "b", "d.e.f", "s", "n", "x.y"];
        same_as_value(
            r#"{"a":"x","b":{"c":1.50,"z":[1,{"c":2}]},"d":{"e":{"f":null}},"s":"q\"\u00e9","n":-7,"x":3}"#,
            &paths,
        );
        // The last duplicate wins, also for a repeated object.
        same_as_value(
            r#"{"a":1,"a":"two","b":{"c":1},"b":{"z":2},"d":{"e":{"f":true}}}"#,
            &paths,
        );
        same_as_value(r#"{"b":[1],"d":"e","a":{"k":[]}}"#, &paths);
        same_as_value(
            r#"{"b":{"c":1},"b":5,"d":{"e":{"f":1}},"d":{"e":2}}"#,
            &paths,
        );
        same_as_value(
            r#"{"\u0061":"escaped key","n":18446744073709551615}"#,
            &paths,
        );
        same_as_value(r#"{"n":1e400}"#.replace("1e400", "1e300").as_str(), &paths);
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        let (set, _) = set(&["a"]);
        let mut f = Fields::default();
        for bad in [
            "[1]",
            "1",
            "\"a\"",
            "null",
            "{\"a\":1",
            "{\"a\":1} x",
            "",
            "{\"a\":}",
        ] {
            assert!(set.decode(bad.as_bytes(), &mut f).is_none(), "{bad}");
        }
    }
}
