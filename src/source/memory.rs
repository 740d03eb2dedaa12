//! An in-memory source: lines held in a vector, one partition. Used by
//! benchmarks and tests to drive the dataflow without files or a broker.
//!
//! Invariant: yields every line exactly once, in order, with 1-based offsets.

use std::sync::Arc;

use super::{Poll, RawBatch, Source, SourceError};

/// Lines of one topic, shared so several runs can read the same input.
pub struct MemorySource {
    dataflow: String,
    lines: Arc<Vec<Vec<u8>>>,
    next: usize,
}

impl MemorySource {
    pub fn new(dataflow: impl Into<String>, lines: Arc<Vec<Vec<u8>>>) -> MemorySource {
        MemorySource {
            dataflow: dataflow.into(),
            lines,
            next: 0,
        }
    }
}

impl Source for MemorySource {
    fn dataflow(&self) -> &str {
        &self.dataflow
    }

    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError> {
        if self.next >= self.lines.len() {
            return Ok(Poll::Done);
        }
        let end = self.lines.len().min(self.next + max);
        for (i, line) in self.lines[self.next..end].iter().enumerate() {
            out.push(0, (self.next + i + 1) as u64, line, None);
        }
        self.next = end;
        Ok(Poll::Ready)
    }

    fn describe(&self, _partition: u32, offset: u64) -> String {
        format!("{}:{offset}", self.dataflow)
    }

    fn partition_key(&self, _partition: u32) -> String {
        "memory".to_string()
    }
}
