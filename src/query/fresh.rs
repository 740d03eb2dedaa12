//! Freshness: which state an answer reflects, as response headers.
//!
//! - `X-Rdg-Commit`: the store's commit count seen by the read (it names
//!   the state: equal numbers, equal data).
//! - `X-Rdg-Watermark`: `dataflow=ms` pairs, comma-separated, for each
//!   dataflow that has a watermark.
//! - `X-Rdg-Offsets`: `dataflow/partition=next` pairs, comma-separated (the
//!   stored positions: next line or offset to read).
//!
//! - `X-Rdg-Commits` (answers put together by a process of a cluster):
//!   `process=commit` of every process the answer was read on.
//!
//! One process's reads carry a [`Fresh`]; an answer read on several
//! processes a [`FreshSet`] of each one's [`ProcessFresh`]; an answer
//! carries either as a [`Freshness`].
//!
//! Invariant: headers built for commit count N come from `meta` read under
//! the same gate hold that saw N, so they describe exactly the state the
//! answer was read from. Answers that read nothing (health, static files,
//! rejected requests) carry the latest headers built.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::store::{Meta, ReadView, StoreError};

pub const COMMIT: HeaderName = HeaderName::from_static("x-rdg-commit");
pub const WATERMARK: HeaderName = HeaderName::from_static("x-rdg-watermark");
pub const OFFSETS: HeaderName = HeaderName::from_static("x-rdg-offsets");
/// On answers put together by a process of a cluster: `process=commit`
/// pairs of every process whose store the answer was read from.
pub const COMMITS: HeaderName = HeaderName::from_static("x-rdg-commits");

/// The freshness headers of one state.
#[derive(Clone, Debug, PartialEq)]
pub struct Fresh {
    pub commit: u64,
    /// The largest watermark of any dataflow.
    pub max_watermark: Option<i64>,
    commit_value: HeaderValue,
    watermark: HeaderValue,
    offsets: HeaderValue,
    /// The same, in the form answers of peers are read in.
    process: ProcessFresh,
}

/// Percent-encodes what may not appear in a header list item.
fn header_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b',' | b'=' | b'/' | b'%') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Fresh {
    pub fn new(commit: u64, meta: &Meta) -> Fresh {
        // Header items in the store's order (dataflow, then partition).
        let watermarks: Vec<(String, i64)> = meta
            .dataflows
            .iter()
            .filter_map(|(d, m)| Some((header_safe(d), m.watermark?)))
            .collect();
        let offsets: Vec<(String, u64)> = meta
            .positions
            .iter()
            .map(|((d, p), next)| (format!("{}/{}", header_safe(d), header_safe(p)), *next))
            .collect();
        Fresh {
            commit,
            max_watermark: meta.dataflows.values().filter_map(|m| m.watermark).max(),
            commit_value: HeaderValue::from(commit),
            watermark: list_value(watermarks.iter().map(|(k, v)| (k, v))),
            offsets: list_value(offsets.iter().map(|(k, v)| (k, v))),
            process: ProcessFresh {
                commit,
                watermarks: watermarks.into_iter().collect(),
                offsets: offsets.into_iter().collect(),
            },
        }
    }

    /// This state's freshness as one process's part of a cluster answer.
    pub fn process(&self) -> ProcessFresh {
        self.process.clone()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(COMMIT, self.commit_value.clone());
        headers.insert(WATERMARK, self.watermark.clone());
        headers.insert(OFFSETS, self.offsets.clone());
    }
}

/// `k=v,k=v` as a header value (empty if it cannot be one).
fn list_value<K, V>(items: impl IntoIterator<Item = (K, V)>) -> HeaderValue
where
    K: std::fmt::Display,
    V: std::fmt::Display,
{
    let mut text = String::new();
    for (k, v) in items {
        if !text.is_empty() {
            text.push(',');
        }
        let _ = write!(text, "{k}={v}");
    }
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// The freshness of what one process answered, read back from its
/// `X-Rdg-Commit`, `X-Rdg-Watermark` and `X-Rdg-Offsets` headers (items
/// kept in their header-safe form).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFresh {
    pub commit: u64,
    /// dataflow -> watermark (epoch ms).
    pub watermarks: BTreeMap<String, i64>,
    /// `dataflow/partition` -> next position.
    pub offsets: BTreeMap<String, u64>,
}

fn pairs<V: std::str::FromStr>(text: &str) -> BTreeMap<String, V> {
    text.split(',')
        .filter_map(|item| {
            let (k, v) = item.rsplit_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

impl ProcessFresh {
    /// From an answer's headers (missing or odd items are left out).
    pub fn from_headers(h: &HeaderMap) -> ProcessFresh {
        let text = |name: &HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        ProcessFresh {
            commit: text(&COMMIT).parse().unwrap_or(0),
            watermarks: pairs(&text(&WATERMARK)),
            offsets: pairs(&text(&OFFSETS)),
        }
    }

    /// The largest watermark of any dataflow.
    pub fn max_watermark(&self) -> Option<i64> {
        self.watermarks.values().copied().max()
    }
}

/// The freshness of an answer read on several processes: per process, the
/// newest state any of its reads saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FreshSet {
    by_process: BTreeMap<usize, ProcessFresh>,
}

impl FreshSet {
    /// The freshness of one process's answer.
    pub fn of(process: usize, f: ProcessFresh) -> FreshSet {
        let mut set = FreshSet::default();
        set.add(process, f);
        set
    }

    pub fn add(&mut self, process: usize, f: ProcessFresh) {
        match self.by_process.get(&process) {
            Some(old) if old.commit >= f.commit => {}
            _ => {
                self.by_process.insert(process, f);
            }
        }
    }

    pub fn merge(&mut self, other: FreshSet) {
        for (p, f) in other.by_process {
            self.add(p, f);
        }
    }

    /// The largest watermark of any dataflow on any process.
    pub fn max_watermark(&self) -> Option<i64> {
        self.by_process
            .values()
            .filter_map(ProcessFresh::max_watermark)
            .max()
    }

    /// Sets the freshness headers of a cluster answer:
    /// - `X-Rdg-Commits`: `process=commit` of each process read;
    /// - `X-Rdg-Commit`: the sum of those commit counts (it grows with every
    ///   commit of any of them; equal per-process counts mean equal data);
    /// - `X-Rdg-Watermark`: per dataflow, the smallest watermark among the
    ///   processes that have one (every process has read at least that far);
    /// - `X-Rdg-Offsets`: every process's stored offsets (each partition is
    ///   read by one worker, so they do not overlap).
    pub fn apply(&self, h: &mut HeaderMap) {
        let mut sum = 0u64;
        let mut watermarks: BTreeMap<&str, i64> = BTreeMap::new();
        let mut offsets: BTreeMap<&str, u64> = BTreeMap::new();
        for f in self.by_process.values() {
            sum = sum.saturating_add(f.commit);
            for (d, w) in &f.watermarks {
                let e = watermarks.entry(d).or_insert(*w);
                *e = (*e).min(*w);
            }
            for (k, n) in &f.offsets {
                let e = offsets.entry(k).or_insert(*n);
                *e = (*e).min(*n);
            }
        }
        h.insert(COMMIT, HeaderValue::from(sum));
        h.insert(
            COMMITS,
            list_value(self.by_process.iter().map(|(p, f)| (p, f.commit))),
        );
        h.insert(WATERMARK, list_value(&watermarks));
        h.insert(OFFSETS, list_value(&offsets));
    }
}

/// The freshness an answer carries: one process's state, or the states of
/// every process a cluster answer was read on.
#[derive(Clone, Debug, PartialEq)]
pub enum Freshness {
    Local(Arc<Fresh>),
    Cluster(FreshSet),
}

impl Freshness {
    pub fn apply(&self, h: &mut HeaderMap) {
        match self {
            Freshness::Local(f) => f.apply(h),
            Freshness::Cluster(set) => set.apply(h),
        }
    }
}

/// The headers of the newest state read so far.
#[derive(Debug)]
pub struct FreshCache {
    latest: RwLock<Arc<Fresh>>,
}

impl FreshCache {
    pub fn new(view: &ReadView<'_>) -> Result<FreshCache, StoreError> {
        Ok(FreshCache {
            latest: RwLock::new(Arc::new(Fresh::new(view.commit_count(), &view.meta()?))),
        })
    }

    /// The headers of the state `view` sees (rebuilt from its meta when it
    /// is not the cached one).
    pub fn of(&self, view: &ReadView<'_>) -> Result<Arc<Fresh>, StoreError> {
        let commit = view.commit_count();
        {
            let latest = self.latest.read().unwrap_or_else(|p| p.into_inner());
            if latest.commit == commit {
                return Ok(latest.clone());
            }
        }
        let fresh = Arc::new(Fresh::new(commit, &view.meta()?));
        let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
        if latest.commit < commit {
            *latest = fresh.clone();
        }
        Ok(fresh)
    }

    /// The newest headers built, without reading the store.
    pub fn latest(&self) -> Arc<Fresh> {
        self.latest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DataflowMeta;

    #[test]
    fn headers_list_watermarks_and_offsets() {
        let mut meta = Meta::default();
        meta.dataflows.insert(
            "playback".into(),
            DataflowMeta {
                watermark: Some(17),
                ..DataflowMeta::default()
            },
        );
        meta.dataflows
            .insert("idle".into(), DataflowMeta::default());
        meta.positions.insert(("playback".into(), "0".into()), 5);
        meta.positions
            .insert(("login".into(), "a file,1.jsonl".into()), 9);
        let f = Fresh::new(3, &meta);
        let mut h = HeaderMap::new();
        f.apply(&mut h);
        assert_eq!(h[&COMMIT], "3");
        assert_eq!(h[&WATERMARK], "playback=17");
        assert_eq!(h[&OFFSETS], "login/a%20file%2C1.jsonl=9,playback/0=5");
        // The process form is what a peer reading these headers gets.
        assert_eq!(f.process(), ProcessFresh::from_headers(&h));
    }

    #[test]
    fn fresh_set_merges_processes() {
        let mut h = HeaderMap::new();
        h.insert(COMMIT, HeaderValue::from_static("5"));
        h.insert(WATERMARK, HeaderValue::from_static("login=7,playback=10"));
        h.insert(OFFSETS, HeaderValue::from_static("playback/0=3"));
        let a = ProcessFresh::from_headers(&h);
        assert_eq!(a.commit, 5);
        assert_eq!(a.max_watermark(), Some(10));
        let mut h2 = HeaderMap::new();
        h2.insert(COMMIT, HeaderValue::from_static("2"));
        h2.insert(WATERMARK, HeaderValue::from_static("playback=8"));
        h2.insert(OFFSETS, HeaderValue::from_static("playback/1=4"));
        let mut set = FreshSet::default();
        set.add(0, a);
        set.add(1, ProcessFresh::from_headers(&h2));
        let mut out = HeaderMap::new();
        set.apply(&mut out);
        assert_eq!(out[&COMMIT], "7");
        assert_eq!(out[&COMMITS], "0=5,1=2");
        assert_eq!(out[&WATERMARK], "login=7,playback=8");
        assert_eq!(out[&OFFSETS], "playback/0=3,playback/1=4");
        assert_eq!(set.max_watermark(), Some(10));
    }
}
