//! One source read by several workers: each poll takes the next batch of the
//! underlying source under a lock, so decoding a large file is spread over
//! every worker while the file is still read once, in order.
//!
//! Invariant: a batch's time is drawn from the run's clock inside the same
//! lock that reads the batch, so the batches of one partition get strictly
//! increasing times in read order, whichever worker took them (the fold
//! applies times in order, and a time's ops in partition order).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Poll, RawBatch, Source, SourceError};

/// A handle on a source shared by several workers.
pub struct Shared {
    dataflow: String,
    inner: Arc<Mutex<Box<dyn Source + Send>>>,
    clock: Arc<AtomicU64>,
    time: Option<u64>,
}

impl Shared {
    /// `count` handles on `source`, drawing times from `clock`.
    pub fn handles(
        source: Box<dyn Source + Send>,
        clock: Arc<AtomicU64>,
        count: usize,
    ) -> Vec<Shared> {
        let dataflow = source.dataflow().to_string();
        let inner = Arc::new(Mutex::new(source));
        (0..count)
            .map(|_| Shared {
                dataflow: dataflow.clone(),
                inner: inner.clone(),
                clock: clock.clone(),
                time: None,
            })
            .collect()
    }

    fn inner(&self) -> MutexGuard<'_, Box<dyn Source + Send>> {
        // A panic while reading leaves nothing half-written that matters:
        // the run stops on that panic anyway.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Source for Shared {
    fn dataflow(&self) -> &str {
        &self.dataflow
    }

    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let before = out.len();
        let poll = inner.poll(max, out)?;
        self.time = (out.len() > before).then(|| self.clock.fetch_add(1, Ordering::AcqRel));
        Ok(poll)
    }

    fn describe(&self, partition: u32, offset: u64) -> String {
        self.inner().describe(partition, offset)
    }

    fn partition_key(&self, partition: u32) -> String {
        self.inner().partition_key(partition)
    }

    fn time(&self) -> Option<u64> {
        self.time
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemorySource;

    #[test]
    fn handles_share_one_read_and_times_follow_the_reads() {
        let lines: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("{{\"i\":{i}}}").into_bytes())
            .collect();
        let clock = Arc::new(AtomicU64::new(1));
        let mut hs = Shared::handles(
            Box::new(MemorySource::new("t", Arc::new(lines))),
            clock.clone(),
            2,
        );
        let mut seen = Vec::new();
        let mut times = Vec::new();
        for round in 0..4 {
            let h = &mut hs[round % 2];
            let mut out = RawBatch::default();
            h.poll(3, &mut out).unwrap();
            if let Some(t) = h.time() {
                times.push(t);
            }
            seen.extend(out.iter().map(|r| r.offset));
        }
        assert_eq!(seen, (1..=10).collect::<Vec<u64>>());
        assert_eq!(times, vec![1, 2, 3, 4]);
        let mut out = RawBatch::default();
        assert_eq!(hs[0].poll(3, &mut out).unwrap(), Poll::Done);
        assert_eq!(hs[0].time(), None);
        assert_eq!(hs[1].partition_key(0), "memory");
    }
}
