//! Stored values (records, edge values) and the merge of several dataflows'
//! contributions into the record that reads and the export see.
//!
//! Invariant: [`merge`] is the only place that implements the merge rule of
//! `docs/semantics.md` ("Records and contributions"): count = sum,
//! first_seen = min, last_seen = max, props = union by key where, for a key
//! present in several contributions, the one with the greater last_seen wins,
//! ties to the greater dataflow name. Decoding never panics: bad bytes are
//! reported as a detail string the caller turns into `StoreError::Corrupt`.

use std::collections::BTreeMap;

use compact_str::CompactString;
use serde_json::Value;

use super::engine::Bytes;
use crate::model::Record;

/// Decodes a postcard value that must fill `v` exactly (no trailing bytes).
pub(crate) fn decode_exact<'a, T: serde::Deserialize<'a>>(
    v: &'a [u8],
    what: &str,
) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(v) {
        Ok((x, [])) => Ok(x),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the {what}", rest.len())),
        Err(e) => Err(format!("bad {what}: {e}")),
    }
}

/// Decodes a `postcard(Record)` value that must have no trailing bytes.
pub(crate) fn decode_record(v: &[u8]) -> Result<Record, String> {
    decode_exact(v, "record")
}

/// Decodes an edge value: `postcard(Record)` followed by the reverse byte.
pub(crate) fn decode_edge_value(v: &[u8]) -> Result<(Record, bool), String> {
    match postcard::take_from_bytes::<Record>(v) {
        Ok((r, [0])) => Ok((r, false)),
        Ok((r, [1])) => Ok((r, true)),
        Ok(_) => Err("edge value must end with one reverse byte (0 or 1)".to_string()),
        Err(e) => Err(format!("bad record: {e}")),
    }
}

/// One dataflow's contribution to a record.
#[derive(Clone, Debug)]
pub(crate) struct Contribution {
    pub dataflow: CompactString,
    pub record: Record,
    /// The key it was read from, for error messages.
    pub key: Bytes,
}

/// A record as read: contributions merged.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Merged {
    pub count: u64,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Sorted by key.
    pub props: BTreeMap<String, Value>,
}

/// Parses stored props text: empty = none, otherwise a JSON object.
fn parse_props(text: &str) -> Result<BTreeMap<String, Value>, String> {
    if text.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(text).map_err(|e| format!("props are not a JSON object: {e}"))
}

/// Merges contributions (at least one; sorted in place). On bad props,
/// returns the offending contribution's key with the detail.
pub(crate) fn merge(contribs: &mut [Contribution]) -> Result<Merged, (Bytes, String)> {
    // Apply props in (last_seen, dataflow) order so that later writes win.
    contribs.sort_unstable_by(|a, b| {
        (a.record.last_seen, &a.dataflow).cmp(&(b.record.last_seen, &b.dataflow))
    });
    let mut m = Merged {
        count: 0,
        first_seen: i64::MAX,
        last_seen: i64::MIN,
        props: BTreeMap::new(),
    };
    for c in contribs.iter() {
        m.count = m.count.saturating_add(c.record.count);
        m.first_seen = m.first_seen.min(c.record.first_seen);
        m.last_seen = m.last_seen.max(c.record.last_seen);
        let props = parse_props(&c.record.props).map_err(|d| (c.key.clone(), d))?;
        if m.props.is_empty() {
            m.props = props;
        } else {
            m.props.extend(props);
        }
    }
    Ok(m)
}

/// Converts sorted props to the views' map type.
pub(crate) fn to_json_map(props: BTreeMap<String, Value>) -> serde_json::Map<String, Value> {
    props.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(df: &str, count: u64, first: i64, last: i64, props: &str) -> Contribution {
        Contribution {
            dataflow: df.into(),
            record: Record {
                count,
                first_seen: first,
                last_seen: last,
                props: props.into(),
            },
            key: Bytes::from(df.as_bytes()),
        }
    }

    #[test]
    fn merge_rule() {
        // Out of dataflow order, to catch a merge that relies on scan order.
        let mut v = vec![
            c("c", 4, 10, 20, r#"{"y":"c","z":true}"#),
            c("a", 1, 3, 30, r#"{"x":2}"#),
            c("b", 2, 5, 20, r#"{"x":1,"y":"b"}"#),
            c("d", 1, 1, 1, ""),
        ];
        let m = merge(&mut v).expect("merges");
        assert_eq!((m.count, m.first_seen, m.last_seen), (8, 1, 30));
        let props = serde_json::to_string(&m.props).expect("json");
        // x: a has the greatest last_seen; y: b and c tie, c is greater.
        assert_eq!(props, r#"{"x":2,"y":"c","z":true}"#);
    }

    #[test]
    fn bad_props_name_their_key() {
        let mut v = vec![c("a", 1, 1, 1, "[1]")];
        let (key, _) = merge(&mut v).expect_err("not an object");
        assert_eq!(&key[..], b"a");
    }

    #[test]
    fn values_decode_strictly() {
        let r = Record {
            count: 3,
            first_seen: -1,
            last_seen: 7,
            props: "{}".into(),
        };
        let mut v = postcard::to_stdvec(&r).expect("encodes");
        assert_eq!(decode_record(&v), Ok(r.clone()));
        v.push(1);
        assert!(decode_record(&v).is_err());
        assert_eq!(decode_edge_value(&v), Ok((r, true)));
        v.push(0);
        assert!(decode_edge_value(&v).is_err());
        assert!(decode_edge_value(&[0xff, 0xff]).is_err());
    }
}
