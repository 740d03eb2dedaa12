//! Interned identifiers: inside the dataflow every `type:id` string is a
//! [`Sym`], a 4-byte index into one table shared by the process's workers.
//! Strings exist only at the edges: the decoder interns them, the collector
//! turns symbols back into text for the store.
//!
//! Invariant: one string has one symbol for the life of the process, and a
//! symbol's text never changes, so workers can hand symbols to each other
//! freely. Between processes (timely's cluster mode) a symbol travels as its
//! text and is interned again on arrival, and it hashes (`Hash`, used by
//! differential's exchange) by its text's stable hash, so an identifier
//! meets the same worker whichever process saw it. The derived order of
//! symbols is the order they were interned in this process: use it for
//! grouping only; [`ByText`] orders by the text.
//!
//! The table grows with the distinct identifiers this process has seen (about
//! 80 bytes each: the entry's text and stable hash, and a 32-byte slot in
//! the index that repeats the hash and, up to 19 bytes, the text, so that a
//! lookup of a short text reads no entry); a restart starts a new table from
//! the live records only.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, RwLock};

use compact_str::CompactString;
use hashbrown::HashTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An interned `type:id`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Sym(u32);

/// A symbol ordered by its text (bytewise), for the places where the order
/// of identifiers decides a result (a cluster's id is its smallest member).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct ByText(pub Sym);

struct Entry {
    text: CompactString,
    /// `model::shard::node(text)`: stable across processes and builds.
    hash: u64,
}

const SHARDS: usize = 64;

struct Table {
    entries: boxcar::Vec<Entry>,
    /// Indexes of `entries`, found by stable hash, split to keep writers
    /// from contending. A slot holds the hash (a resize reads no entry) and
    /// a short text (a hit on it reads no entry either).
    shards: Vec<RwLock<HashTable<CacheSlot>>>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| Table {
    entries: boxcar::Vec::new(),
    shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
});

/// The table is full: more than `u32::MAX` distinct identifiers.
#[derive(Debug, thiserror::Error)]
#[error("more than {} distinct identifiers in one process", u32::MAX)]
pub struct TableFull;

impl Sym {
    /// Stands in where no symbol was looked up; never read as an
    /// identifier.
    pub const UNUSED: Sym = Sym(u32::MAX);

    /// The symbol of `text`, interning it if new.
    pub fn intern(text: &str) -> Result<Sym, TableFull> {
        Sym::intern_hashed(text, crate::model::shard::node(text))
    }

    /// [`Sym::intern`] when the caller has `shard::node(text)` already.
    pub fn intern_hashed(text: &str, hash: u64) -> Result<Sym, TableFull> {
        let table = &*TABLE;
        let shard = &table.shards[(hash as usize) % SHARDS];
        let same = |slot: &CacheSlot| slot.hit(text, hash).is_some();
        {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = map.find(hash, same) {
                return Ok(Sym(slot.sym));
            }
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.find(hash, same) {
            return Ok(Sym(slot.sym));
        }
        let i = table.entries.push(Entry {
            text: CompactString::from(text),
            hash,
        });
        let sym = Sym(u32::try_from(i).map_err(|_| TableFull)?);
        map.insert_unique(hash, CacheSlot::of(text, hash, sym), |slot| slot.hash);
        Ok(sym)
    }

    /// The index in this process's table (for hashing inside the process).
    pub fn index(self) -> u32 {
        self.0
    }

    /// A symbol of any index, for tests of what packs indexes.
    #[cfg(test)]
    pub(crate) fn of_index(index: u32) -> Sym {
        Sym(index)
    }

    fn entry(self) -> &'static Entry {
        // Symbols are only made by `intern`, after their entry was pushed.
        static MISSING: Entry = Entry {
            text: CompactString::const_new(""),
            hash: 0,
        };
        TABLE.entries.get(self.0 as usize).unwrap_or(&MISSING)
    }

    /// The `type:id` text.
    pub fn text(self) -> &'static str {
        &self.entry().text
    }

    /// The text as an owned identifier (inline when short).
    pub fn ident(self) -> CompactString {
        self.entry().text.clone()
    }

    /// `model::shard::node` of the text.
    pub fn stable_hash(self) -> u64 {
        self.entry().hash
    }
}

/// A worker's direct-mapped front for the table: a hit costs no lock and
/// no shared write (frequent identifiers: accounts, titles), and for a text
/// of up to [`INLINE`] bytes no read of the table either: the slot holds the
/// text it stands for, so the one cache line of the slot decides the hit.
pub(crate) struct SymCache {
    slots: Vec<CacheSlot>,
}

/// Texts up to this long are kept in their cache slot.
const INLINE: usize = 19;

/// One slot of [`SymCache`] or of the table's index: 32 bytes, two to a
/// cache line.
#[derive(Clone, Copy)]
struct CacheSlot {
    /// `model::shard::node` of the text.
    hash: u64,
    /// The symbol; `u32::MAX`: empty.
    sym: u32,
    /// The text's length when it is inline; `u8::MAX`: not inline (the
    /// table's entry holds it).
    len: u8,
    text: [u8; INLINE],
}

impl CacheSlot {
    const EMPTY: CacheSlot = CacheSlot {
        hash: 0,
        sym: u32::MAX,
        len: u8::MAX,
        text: [0; INLINE],
    };

    fn of(text: &str, hash: u64, sym: Sym) -> CacheSlot {
        let mut slot = CacheSlot {
            hash,
            sym: sym.0,
            ..CacheSlot::EMPTY
        };
        if let Some(inline) = slot.text.get_mut(..text.len()) {
            inline.copy_from_slice(text.as_bytes());
            slot.len = text.len() as u8;
        }
        slot
    }

    /// The symbol of `text` if this slot holds it.
    fn hit(&self, text: &str, hash: u64) -> Option<Sym> {
        if self.hash != hash || self.sym == u32::MAX {
            return None;
        }
        let same = match self.text.get(..usize::from(self.len)) {
            Some(inline) => inline == text.as_bytes(),
            None => Sym(self.sym).text() == text,
        };
        same.then_some(Sym(self.sym))
    }
}

impl SymCache {
    /// 8 MiB per worker: hits for about the 200 000 most recent identifiers.
    const SLOTS: usize = 1 << 18;

    pub fn new() -> SymCache {
        SymCache {
            slots: vec![CacheSlot::EMPTY; SymCache::SLOTS],
        }
    }

    fn slot(hash: u64) -> usize {
        ((hash ^ (hash >> 29)) as usize) & (SymCache::SLOTS - 1)
    }

    /// `model::shard::node(text)`, and a prefetch of the slot that
    /// [`SymCache::intern_hashed`] will read for it.
    pub fn hash_and_prefetch(&self, text: &str) -> u64 {
        let hash = crate::model::shard::node(text);
        if let Some(slot) = self.slots.get(SymCache::slot(hash)) {
            crate::hint::prefetch(slot);
        }
        hash
    }

    /// [`Sym::intern_hashed`] through the cache.
    pub fn intern_hashed(&mut self, text: &str, hash: u64) -> Result<Sym, TableFull> {
        let i = SymCache::slot(hash);
        if let Some(sym) = self.slots[i].hit(text, hash) {
            return Ok(sym);
        }
        let sym = Sym::intern_hashed(text, hash)?;
        self.slots[i] = CacheSlot::of(text, hash, sym);
        Ok(sym)
    }

    /// [`Sym::intern`] through the cache.
    #[cfg(test)]
    pub fn intern(&mut self, text: &str) -> Result<Sym, TableFull> {
        self.intern_hashed(text, crate::model::shard::node(text))
    }
}

impl Hash for Sym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.stable_hash());
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

impl Serialize for Sym {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.text())
    }
}

impl<'de> Deserialize<'de> for Sym {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sym, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sym::intern(&text).map_err(serde::de::Error::custom)
    }
}

impl Ord for ByText {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self.0 == other.0 {
            std::cmp::Ordering::Equal
        } else {
            self.0.text().cmp(other.0.text())
        }
    }
}

impl PartialOrd for ByText {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for ByText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_string_one_symbol_across_threads() {
        let texts: Vec<String> = (0..2000).map(|i| format!("t:sym-test-{i}")).collect();
        let syms: Vec<Vec<Sym>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| texts.iter().map(|t| Sym::intern(t).unwrap()).collect()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for other in &syms[1..] {
            assert_eq!(&syms[0], other);
        }
        for (t, s) in texts.iter().zip(&syms[0]) {
            assert_eq!(s.text(), t);
            assert_eq!(s.stable_hash(), crate::model::shard::node(t));
        }
        let distinct: std::collections::BTreeSet<Sym> = syms[0].iter().copied().collect();
        assert_eq!(distinct.len(), texts.len());
    }

    #[test]
    fn the_cache_gives_the_table_s_symbols() {
        let mut cache = SymCache::new();
        for round in 0..2 {
            for i in 0..(SymCache::SLOTS * 2) {
                let t = format!("t:cache-{i}");
                assert_eq!(
                    cache.intern(&t).unwrap(),
                    Sym::intern(&t).unwrap(),
                    "{round}"
                );
            }
        }
    }

    #[test]
    fn the_cache_tells_texts_apart_inline_or_not() {
        assert_eq!(std::mem::size_of::<CacheSlot>(), 32);
        let mut cache = SymCache::new();
        // Lengths around the inline limit, each text twice (miss, then hit).
        for len in 0..(INLINE + 8) {
            let t = format!("t:{}", "x".repeat(len));
            for _ in 0..2 {
                assert_eq!(cache.intern(&t).unwrap(), Sym::intern(&t).unwrap(), "{t}");
            }
        }
        // Two texts made to share a hash (and so a slot): neither is taken
        // for the other, whether it is inline or not.
        let long = "t:collide-".repeat(4);
        for (a, b) in [
            ("t:collide-a", "t:collide-b"),
            ("t:collide-a", long.as_str()),
        ] {
            for _ in 0..2 {
                let sa = cache.intern_hashed(a, 77).unwrap();
                let sb = cache.intern_hashed(b, 77).unwrap();
                assert_ne!(sa, sb);
                assert_eq!((sa.text(), sb.text()), (a, b));
            }
        }
    }

    #[test]
    fn the_table_finds_texts_inline_or_not() {
        // Texts around the inline limit share a hash: the table's slots
        // must tell them apart by text, whether held inline or not.
        let texts: Vec<String> = (INLINE - 3..INLINE + 4)
            .flat_map(|len| ["p", "q"].map(|c| format!("t:{}", c.repeat(len - 2))))
            .collect();
        let syms: Vec<Sym> = texts
            .iter()
            .map(|t| Sym::intern_hashed(t, 4242).unwrap())
            .collect();
        for (t, s) in texts.iter().zip(&syms) {
            assert_eq!(s.text(), t);
            assert_eq!(Sym::intern_hashed(t, 4242).unwrap(), *s);
        }
        let distinct: std::collections::BTreeSet<Sym> = syms.iter().copied().collect();
        assert_eq!(distinct.len(), texts.len());
    }

    #[test]
    fn by_text_orders_by_text_and_serde_round_trips_through_text() {
        let b = Sym::intern("t:b-order").unwrap();
        let a = Sym::intern("t:a-order").unwrap();
        assert!(ByText(a) < ByText(b));
        assert_eq!(ByText(a).cmp(&ByText(a)), std::cmp::Ordering::Equal);
        let json = serde_json::to_string(&(a, ByText(b))).unwrap();
        assert_eq!(json, r#"["t:a-order","t:b-order"]"#);
        let back: (Sym, ByText) = serde_json::from_str(&json).unwrap();
        assert_eq!(back, (a, ByText(b)));
    }
}
