//! Sources: where raw records come from (JSON Lines files or Kafka topics),
//! behind one small trait that the dataflow driver polls.
//!
//! Invariant: a source yields each partition's records in order, exactly
//! once, with a position that names where the record came from; it never
//! interprets payloads (decoding errors are the dataflow's dead letters).

mod file;
pub mod kafka;
mod memory;
mod shared;

pub use file::{FileSource, TopicFiles};
pub use kafka::{KafkaConfig, KafkaSource, OffsetCommitter, OnGap, StartFrom};
pub use memory::MemorySource;
pub use shared::Shared;

use std::sync::Arc;

use thiserror::Error;

/// One raw record: its partition, its position within the partition (a line
/// number for files, an offset for Kafka), its bytes and, when the source
/// has one, its timestamp (Kafka's message timestamp, epoch ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: u32,
    pub offset: u64,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

/// What a poll found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Records were appended (maybe fewer than asked); poll again.
    Ready,
    /// Nothing now; more may come later.
    Idle,
    /// The source is exhausted.
    Done,
}

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path} after line {line}: {source}")]
    Read {
        path: String,
        line: u64,
        source: std::io::Error,
    },
    #[error(
        "offset {requested} of {topic}/{partition} is no longer on the broker \
         (available: {earliest}..{latest}); the records in between are lost to rdg. \
         Rerun with `--on-gap earliest` to continue from offset {earliest}"
    )]
    Gap {
        topic: String,
        partition: i32,
        /// The next offset rdg had stored for the partition.
        requested: i64,
        /// The earliest offset the broker still has.
        earliest: i64,
        /// The partition's high watermark (the offset after its last record).
        latest: i64,
    },
    #[error("cannot reach the Kafka broker(s) at {brokers}: {detail}")]
    Broker { brokers: String, detail: String },
    #[error("topic `{topic}` does not exist on the Kafka broker(s) at {brokers}")]
    MissingTopic { topic: String, brokers: String },
    #[error("Kafka client for topic `{topic}`: {detail}")]
    Kafka { topic: String, detail: String },
}

/// A stream of raw records for one dataflow.
pub trait Source {
    /// The dataflow (definition name) these records are for.
    fn dataflow(&self) -> &str;
    /// Appends up to `max` records to `out`.
    fn poll(&mut self, max: usize, out: &mut Vec<RawRecord>) -> Result<Poll, SourceError>;
    /// Names a record's origin for dead letters: `playback.jsonl:17` or
    /// `playback/3/1042`.
    fn describe(&self, partition: u32, offset: u64) -> String;
    /// The key under which the position of `partition` is stored.
    fn partition_key(&self, partition: u32) -> String;
    /// Arranges for `waker` to be called (from any thread) when records may
    /// have become available after `poll` returned [`Poll::Idle`], so the
    /// caller can park instead of polling in a loop. After [`Poll::Ready`] the
    /// caller polls again without waiting. Sources that never return `Idle`
    /// (files) ignore it.
    fn set_waker(&mut self, _waker: Arc<dyn Fn() + Send + Sync>) {}
    /// Messages behind the input's end, when the source can tell.
    fn lag(&self) -> Option<i64> {
        None
    }
    /// The time the records of the last `poll` belong to, for a source
    /// that several workers read ([`Shared`]); `None`: the caller decides.
    fn time(&self) -> Option<u64> {
        None
    }
}
