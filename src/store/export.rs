//! `rdg export`: the whole graph as JSON Lines sorted bytewise, in the exact
//! shapes of `docs/semantics.md` ("Export").
//!
//! Invariant: the output is the bytewise-sorted list of lines, whatever the
//! tree order. Lines are produced block by block, where a block is one tree
//! (`dead_letter/<dataflow>`, `edge/<type>`, `identity/id`, `node/<type>`):
//! every line of a block starts with the same text up to and including the
//! JSON string of the block's name and its closing quote (`{"ns":"node",
//! "type":"profile"`), and a closing quote cannot occur inside a JSON string,
//! so blocks never interleave. Blocks are written in the order of that text
//! (`ns` first: dead_letter < edge < identity < node; then the JSON-escaped
//! name followed by `"`), and each block's lines are sorted by a
//! [`LineSorter`] that spills sorted runs to temporary files when a block
//! outgrows its memory budget, then merges them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, BufWriter, Seek, Write};

use compact_str::CompactString;
use serde_json::Value;

use super::engine::{Ns, Snap};
use super::merge::{Contribution, Merged, decode_edge_value, decode_exact, decode_record, merge};
use super::reader::{decode_cluster_of, decode_strs, tree_name};
use super::{DeadLetterOwned, ExportCounts, Family, Store, StoreError, TREE_ID, codec};
use crate::model::Record;

/// Default memory for one block's lines before they spill to disk.
pub(crate) const DEFAULT_BUDGET: usize = 64 << 20;

fn export_err(source: std::io::Error) -> StoreError {
    StoreError::Export { source }
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends an integer.
fn push_num(out: &mut Vec<u8>, n: impl std::fmt::Display) {
    let _ = write!(out, "{n}");
}

/// Appends sorted props as a compact JSON object.
fn push_props(out: &mut Vec<u8>, props: &std::collections::BTreeMap<String, Value>) {
    let _ = serde_json::to_writer(&mut *out, props);
}

/// The text that orders a block: its name as a JSON string without the
/// opening quote (so the closing quote is kept).
fn block_order(name: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 2);
    push_json_str(&mut v, name);
    v.remove(0);
    v
}

/// Sorts trees by [`block_order`] of their names.
fn in_block_order(mut trees: Vec<(CompactString, Ns)>) -> Vec<(CompactString, Ns)> {
    trees.sort_by_cached_key(|(name, _)| block_order(name));
    trees
}

/// Collects lines (without newline) and writes them sorted bytewise.
pub(crate) struct LineSorter {
    data: Vec<u8>,
    lines: Vec<(usize, usize)>,
    /// True while every pushed line was >= the previous one.
    in_order: bool,
    runs: Vec<std::fs::File>,
    budget: usize,
}

impl LineSorter {
    pub(crate) fn new(budget: usize) -> Self {
        LineSorter {
            data: Vec::new(),
            lines: Vec::new(),
            in_order: true,
            runs: Vec::new(),
            budget: budget.max(1),
        }
    }

    fn line(&self, i: usize) -> &[u8] {
        let (s, e) = self.lines[i];
        &self.data[s..e]
    }

    pub(crate) fn push(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.in_order
            && let Some(&(s, e)) = self.lines.last()
        {
            self.in_order = self.data[s..e] <= *line;
        }
        let start = self.data.len();
        self.data.extend_from_slice(line);
        self.lines.push((start, self.data.len()));
        if self.data.len() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn sort(&mut self) {
        if !self.in_order {
            let data = &self.data;
            self.lines
                .sort_unstable_by(|&(a, b), &(c, d)| data[a..b].cmp(&data[c..d]));
        }
    }

    /// Writes the buffered lines, sorted, to `out`; returns how many.
    fn write_sorted(&mut self, out: &mut dyn Write) -> std::io::Result<u64> {
        self.sort();
        for i in 0..self.lines.len() {
            out.write_all(self.line(i))?;
            out.write_all(b"\n")?;
        }
        let n = self.lines.len() as u64;
        self.data.clear();
        self.lines.clear();
        self.in_order = true;
        Ok(n)
    }

    fn spill(&mut self) -> std::io::Result<()> {
        let mut w = BufWriter::new(tempfile::tempfile()?);
        self.write_sorted(&mut w)?;
        let mut f = w.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        self.runs.push(f);
        Ok(())
    }

    /// Writes every line pushed so far, sorted, to `out` and resets.
    pub(crate) fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<u64> {
        if self.runs.is_empty() {
            return self.write_sorted(out);
        }
        if !self.lines.is_empty() {
            self.spill()?;
        }
        let mut readers: Vec<BufReader<std::fs::File>> =
            self.runs.drain(..).map(BufReader::new).collect();
        // (line, run) min-heap; lines keep their trailing newline so that
        // equal prefixes compare like the lines themselves ('\n' sorts below
        // every byte a JSON line contains).
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? > 0 {
                heap.push(Reverse((line, i)));
            }
        }
        let mut n = 0;
        while let Some(Reverse((mut line, i))) = heap.pop() {
            out.write_all(&line)?;
            n += 1;
            line.clear();
            if readers[i].read_until(b'\n', &mut line)? > 0 {
                heap.push(Reverse((line, i)));
            }
        }
        Ok(n)
    }
}

impl Store {
    /// Writes the whole graph as JSON Lines, sorted bytewise (see
    /// `docs/semantics.md`, "Export"). Reverse indexes and links are not
    /// exported.
    ///
    /// Reads through one view (a consistent copy): on sled it holds the gate
    /// for the whole export, so commits of this process wait until it ends.
    pub fn export(&self, out: &mut dyn Write) -> Result<ExportCounts, StoreError> {
        self.export_with_budget(out, DEFAULT_BUDGET)
    }

    pub(crate) fn export_with_budget(
        &self,
        out: &mut dyn Write,
        budget: usize,
    ) -> Result<ExportCounts, StoreError> {
        let view = self.read();
        self.export_in(&view.snap, out, budget)
    }

    /// [`Store::export`] through the snapshot of a
    /// [`ReadView`](super::ReadView).
    pub(crate) fn export_in(
        &self,
        snap: &Snap,
        out: &mut dyn Write,
        budget: usize,
    ) -> Result<ExportCounts, StoreError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        let mut sorter = LineSorter::new(budget);
        let mut line = Vec::with_capacity(256);
        let mut lines = 0;

        for (dataflow, tree) in in_block_order(self.dyn_trees(Family::Dead)) {
            let name = tree_name(Family::Dead, &dataflow);
            for item in snap.iter(&tree) {
                let (k, v) = item.map_err(|e| self.engine_err(e))?;
                let mut seq = codec::Decoder::new(&k);
                seq.u64()
                    .and_then(|_| seq.end())
                    .map_err(|e| StoreError::corrupt(&name, &k, e))?;
                let d: DeadLetterOwned = decode_exact(&v, "dead letter")
                    .map_err(|e| StoreError::corrupt(&name, &k, e))?;
                line.clear();
                line.extend_from_slice(br#"{"ns":"dead_letter","dataflow":"#);
                push_json_str(&mut line, &dataflow);
                line.extend_from_slice(br#","source":"#);
                push_json_str(&mut line, &d.source);
                line.extend_from_slice(br#","reason":"#);
                push_json_str(&mut line, &d.reason);
                line.push(b'}');
                sorter.push(&line).map_err(export_err)?;
            }
            lines += sorter.finish(&mut out).map_err(export_err)?;
        }

        lines += self.export_records(snap, Records::Edge, &mut sorter, &mut out)?;

        for item in snap.iter(&self.inner.id) {
            let (k, v) = item.map_err(|e| self.engine_err(e))?;
            let [id] = decode_strs::<1>(&k).map_err(|e| StoreError::corrupt(TREE_ID, &k, e))?;
            let of = decode_cluster_of(&v).map_err(|e| StoreError::corrupt(TREE_ID, &k, e))?;
            line.clear();
            line.extend_from_slice(br#"{"ns":"identity","id":"#);
            push_json_str(&mut line, &id);
            line.extend_from_slice(br#","cluster":"#);
            push_json_str(&mut line, &of.cluster);
            line.extend_from_slice(if of.hub {
                br#","hub":true}"#
            } else {
                br#","hub":false}"#
            });
            sorter.push(&line).map_err(export_err)?;
        }
        lines += sorter.finish(&mut out).map_err(export_err)?;

        lines += self.export_records(snap, Records::Node, &mut sorter, &mut out)?;

        out.flush().map_err(export_err)?;
        Ok(ExportCounts { lines })
    }
}

/// The two kinds of record blocks, which differ only in how many key
/// segments name the record and in the line they write.
#[derive(Clone, Copy)]
enum Records {
    /// `node/<type>`: keys `id / dataflow`.
    Node,
    /// `edge/<type>`: keys `from / to / dataflow`.
    Edge,
}

impl Records {
    fn family(self) -> Family {
        match self {
            Records::Node => Family::Node,
            Records::Edge => Family::Edge,
        }
    }

    /// Length of the key segments that name the record (all but the
    /// dataflow).
    fn record_len(self, k: &[u8]) -> Result<usize, codec::CodecError> {
        let n = codec::segment_len(k)?;
        Ok(match self {
            Records::Node => n,
            Records::Edge => n + codec::segment_len(&k[n..])?,
        })
    }

    /// One contribution's record from its stored value.
    fn decode(self, v: &[u8]) -> Result<Record, String> {
        match self {
            Records::Node => decode_record(v),
            Records::Edge => decode_edge_value(v).map(|(r, _)| r),
        }
    }

    /// The export line of the merged record named by `record` (the encoded
    /// key segments of [`Records::record_len`]) in the block of `name`.
    fn line(
        self,
        line: &mut Vec<u8>,
        name: &str,
        record: &[u8],
        m: &Merged,
    ) -> Result<(), codec::CodecError> {
        line.clear();
        match self {
            Records::Node => {
                let [id] = decode_strs::<1>(record)?;
                line.extend_from_slice(br#"{"ns":"node","type":"#);
                push_json_str(line, name);
                line.extend_from_slice(br#","id":"#);
                push_json_str(line, &id);
            }
            Records::Edge => {
                let [from, to] = decode_strs::<2>(record)?;
                line.extend_from_slice(br#"{"ns":"edge","type":"#);
                push_json_str(line, name);
                line.extend_from_slice(br#","from":"#);
                push_json_str(line, &from);
                line.extend_from_slice(br#","to":"#);
                push_json_str(line, &to);
                line.extend_from_slice(br#","count":"#);
                push_num(line, m.count);
            }
        }
        line.extend_from_slice(br#","first_seen":"#);
        push_num(line, m.first_seen);
        line.extend_from_slice(br#","last_seen":"#);
        push_num(line, m.last_seen);
        line.extend_from_slice(br#","props":"#);
        push_props(line, &m.props);
        line.push(b'}');
        Ok(())
    }
}

impl Store {
    /// Writes every block of `kind`: each tree's keys grouped by record
    /// (keys of one record are adjacent: they share the record's segments
    /// and differ in the dataflow), contributions merged, one line a record.
    fn export_records(
        &self,
        snap: &Snap,
        kind: Records,
        sorter: &mut LineSorter,
        out: &mut dyn Write,
    ) -> Result<u64, StoreError> {
        let mut lines = 0;
        let mut line = Vec::with_capacity(256);
        for (type_name, tree) in in_block_order(self.dyn_trees(kind.family())) {
            let name = tree_name(kind.family(), &type_name);
            let corrupt = |k: &[u8], d: &dyn std::fmt::Display| StoreError::corrupt(&name, k, d);
            let mut group: Vec<Contribution> = Vec::new();
            // The encoded record segments of `group`.
            let mut record: Vec<u8> = Vec::new();
            let mut emit = |group: &mut Vec<Contribution>,
                            record: &[u8],
                            sorter: &mut LineSorter|
             -> Result<(), StoreError> {
                if group.is_empty() {
                    return Ok(());
                }
                let m = merge(group).map_err(|(k, d)| corrupt(&k, &d))?;
                let key = group[0].key.clone();
                group.clear();
                kind.line(&mut line, &type_name, record, &m)
                    .map_err(|e| corrupt(&key, &e))?;
                sorter.push(&line).map_err(export_err)
            };
            for item in snap.iter(&tree) {
                let (k, v) = item.map_err(|e| self.engine_err(e))?;
                let n = kind.record_len(&k).map_err(|e| corrupt(&k, &e))?;
                if k[..n] != record[..] {
                    emit(&mut group, &record, sorter)?;
                    record.clear();
                    record.extend_from_slice(&k[..n]);
                }
                let [dataflow] = decode_strs::<1>(&k[n..]).map_err(|e| corrupt(&k, &e))?;
                let rec = kind.decode(&v).map_err(|e| corrupt(&k, &e))?;
                group.push(Contribution {
                    dataflow: CompactString::from(dataflow.as_ref()),
                    record: rec,
                    key: k.clone(),
                });
            }
            emit(&mut group, &record, sorter)?;
            lines += sorter.finish(out).map_err(export_err)?;
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    #[test]
    fn sorter_spills_and_merges() {
        let mut rng = StdRng::seed_from_u64(7);
        for budget in [1, 10, 100, 1 << 20] {
            let mut lines: Vec<Vec<u8>> = (0..500)
                .map(|_| {
                    let n = rng.random_range(0..8);
                    (0..n)
                        .map(|_| b"ab{\"}~ "[rng.random_range(0..7)])
                        .collect()
                })
                .collect();
            let mut s = LineSorter::new(budget);
            for l in &lines {
                s.push(l).expect("push");
            }
            let mut out = Vec::new();
            assert_eq!(s.finish(&mut out).expect("finish"), 500);
            lines.sort();
            let mut expected = Vec::new();
            for l in &lines {
                expected.extend_from_slice(l);
                expected.push(b'\n');
            }
            assert_eq!(out, expected, "budget {budget}");
            // Reusable after finish.
            s.push(b"z").expect("push");
            let mut out = Vec::new();
            assert_eq!(s.finish(&mut out).expect("finish"), 1);
            assert_eq!(out, b"z\n");
        }
    }

    #[test]
    fn block_order_matches_line_order() {
        // "a" vs "a!": the line of "a!" sorts first ('!' < '"').
        assert!(block_order("a!") < block_order("a"));
        assert!(block_order("a") < block_order("a#"));
        assert!(block_order("a\"") > block_order("a"));
    }
}
