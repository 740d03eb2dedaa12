//! Freshness: which state an answer reflects, as response headers.
//!
//! - `X-Rdg-Commit`: the store's commit count seen by the read (it names
//!   the state: equal numbers, equal data).
//! - `X-Rdg-Watermark`: `dataflow=ms` pairs, comma-separated, for each
//!   dataflow that has a watermark.
//! - `X-Rdg-Offsets`: `dataflow/partition=next` pairs, comma-separated (the
//!   stored positions: next line or offset to read).
//!
//! Invariant: headers built for commit count N come from `meta` read under
//! the same gate hold that saw N, so they describe exactly the state the
//! answer was read from. Answers that read nothing (health, static files,
//! rejected requests) carry the latest headers built.

use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::store::{Meta, ReadView, StoreError};

pub const COMMIT: HeaderName = HeaderName::from_static("x-rdg-commit");
pub const WATERMARK: HeaderName = HeaderName::from_static("x-rdg-watermark");
pub const OFFSETS: HeaderName = HeaderName::from_static("x-rdg-offsets");

/// The freshness headers of one state.
#[derive(Clone, Debug)]
pub struct Fresh {
    pub commit: u64,
    /// The largest watermark of any dataflow.
    pub max_watermark: Option<i64>,
    commit_value: HeaderValue,
    watermark: HeaderValue,
    offsets: HeaderValue,
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
        let watermark: Vec<String> = meta
            .dataflows
            .iter()
            .filter_map(|(d, m)| m.watermark.map(|w| format!("{}={w}", header_safe(d))))
            .collect();
        let offsets: Vec<String> = meta
            .positions
            .iter()
            .map(|((d, p), next)| format!("{}/{}={next}", header_safe(d), header_safe(p)))
            .collect();
        let value = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
        Fresh {
            commit,
            max_watermark: meta.dataflows.values().filter_map(|m| m.watermark).max(),
            commit_value: HeaderValue::from(commit),
            watermark: value(watermark.join(",")),
            offsets: value(offsets.join(",")),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(COMMIT, self.commit_value.clone());
        headers.insert(WATERMARK, self.watermark.clone());
        headers.insert(OFFSETS, self.offsets.clone());
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
    }
}
