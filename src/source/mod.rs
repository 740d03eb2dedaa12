//! Sources: where raw records come from (JSON Lines files or Kafka topics),
//! behind one small trait that the dataflow driver polls. A poll appends
//! into a [`RawBatch`] that the driver clears and reuses, so reading
//! allocates nothing per record.
//!
//! Invariant: a source yields each partition's records in order, exactly
//! once, with a position that names where the record came from; it never
//! interprets payloads (decoding errors are the dataflow's dead letters).
//! A record too long to take ([`RawRef::too_long`]) is yielded in its place
//! with its length and no bytes, so that it too becomes a dead letter.

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

/// The longest record a file source takes (a line's end not counted): a
/// longer line becomes a dead letter naming its length, read past without
/// being held in memory. (Kafka's brokers bound a message themselves, 1 MiB
/// by default.)
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// One raw record: its partition, its position within the partition (a line
/// number for files, an offset for Kafka), its bytes and, when the source
/// has one, its timestamp (Kafka's message timestamp, epoch ms). The owned
/// form of a [`RawRef`], for callers that keep records past the next poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: u32,
    pub offset: u64,
    pub payload: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub too_long: Option<u64>,
}

/// One record of a [`RawBatch`], borrowing its payload from the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRef<'a> {
    pub partition: u32,
    pub offset: u64,
    pub payload: &'a [u8],
    pub timestamp_ms: Option<i64>,
    /// A record the source did not take, being longer than it reads (a
    /// file's line over [`MAX_RECORD_BYTES`]): its length in bytes; its
    /// payload is then empty.
    pub too_long: Option<u64>,
}

impl RawRef<'_> {
    /// The record as an owned [`RawRecord`].
    pub fn to_record(self) -> RawRecord {
        RawRecord {
            partition: self.partition,
            offset: self.offset,
            payload: self.payload.to_vec(),
            timestamp_ms: self.timestamp_ms,
            too_long: self.too_long,
        }
    }
}

/// The records a poll appends: each one's partition, position and
/// timestamp, and every payload's bytes in one buffer. The caller clears
/// and reuses the batch from poll to poll, so reading allocates nothing per
/// record once the buffers have grown to a batch's size (a payload of its
/// own was an allocation and a free per record).
#[derive(Clone, Debug, Default)]
pub struct RawBatch {
    records: Vec<RawMeta>,
    bytes: Vec<u8>,
}

/// A [`RawBatch`] record without its bytes: they end at `end` in the
/// batch's buffer, where the previous record's end (or 0).
#[derive(Clone, Copy, Debug)]
struct RawMeta {
    partition: u32,
    offset: u64,
    timestamp_ms: Option<i64>,
    too_long: Option<u64>,
    end: usize,
}

impl RawBatch {
    /// An empty batch with room for `records` records.
    pub fn with_capacity(records: usize) -> RawBatch {
        RawBatch {
            records: Vec::with_capacity(records),
            bytes: Vec::new(),
        }
    }

    /// Removes every record, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes.clear();
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends a record, copying its payload into the batch's buffer.
    pub fn push(&mut self, partition: u32, offset: u64, payload: &[u8], timestamp_ms: Option<i64>) {
        self.bytes.extend_from_slice(payload);
        self.records.push(RawMeta {
            partition,
            offset,
            timestamp_ms,
            too_long: None,
            end: self.bytes.len(),
        });
    }

    /// Appends, in place of a record longer than the source takes, its
    /// position and length (no bytes).
    pub fn push_too_long(&mut self, partition: u32, offset: u64, len: u64) {
        self.records.push(RawMeta {
            partition,
            offset,
            timestamp_ms: None,
            too_long: Some(len),
            end: self.bytes.len(),
        });
    }

    /// The records in the order they were appended.
    pub fn iter(&self) -> impl Iterator<Item = RawRef<'_>> + '_ {
        self.records.iter().scan(0, |start, m| {
            let payload = self.bytes.get(*start..m.end).unwrap_or_default();
            *start = m.end;
            Some(RawRef {
                partition: m.partition,
                offset: m.offset,
                payload,
                timestamp_ms: m.timestamp_ms,
                too_long: m.too_long,
            })
        })
    }

    /// The records as owned [`RawRecord`]s.
    pub fn to_records(&self) -> Vec<RawRecord> {
        self.iter().map(RawRef::to_record).collect()
    }
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
    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError>;
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
    /// Positions the input went past without delivering a record, so far
    /// (a Kafka broker's offset gaps); files have none.
    fn skipped_offsets(&self) -> u64 {
        0
    }
    /// The time the records of the last `poll` belong to, for a source
    /// that several workers read ([`Shared`]); `None`: the caller decides.
    fn time(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random records (empty payloads and records too long among them) come
    /// back as pushed, in order; a cleared batch holds nothing and refills
    /// within the capacity it grew to.
    #[test]
    fn a_batch_gives_back_what_was_pushed_and_reuses_its_buffers() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(11);
        let mut batch = RawBatch::with_capacity(4);
        for round in 0..3 {
            let records: Vec<RawRecord> = (0..200)
                .map(|i| {
                    // One in ten stands for a record too long to take.
                    let too_long: Option<u64> = rng.random_bool(0.1).then(|| rng.random());
                    let taken = too_long.is_none();
                    let len = if taken { rng.random_range(0..40) } else { 0 };
                    RawRecord {
                        partition: rng.random_range(0..4),
                        offset: i,
                        payload: (0..len).map(|_| rng.random()).collect(),
                        timestamp_ms: rng.random_bool(0.5).then(|| rng.random()).filter(|_| taken),
                        too_long,
                    }
                })
                .collect();
            batch.clear();
            assert!(batch.is_empty());
            let capacity = batch.bytes.capacity();
            for r in &records {
                match r.too_long {
                    Some(len) => batch.push_too_long(r.partition, r.offset, len),
                    None => batch.push(r.partition, r.offset, &r.payload, r.timestamp_ms),
                }
            }
            assert_eq!(batch.len(), records.len());
            assert_eq!(batch.to_records(), records, "round {round}");
            if round > 0 {
                let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
                assert!(bytes > capacity || batch.bytes.capacity() == capacity);
            }
        }
    }
}
