//! The worker's driver: reads its sources, decodes each record into ops
//! (`spec::decode` + [`Feeder`]), and feeds them to the dataflow's inputs one
//! time at a time, with backpressure from the store.
//!
//! Invariant: a worker sends each batch at a time no smaller than any it
//! sent before, and moves every input past a time only when it has sent all
//! of that time's data; a record's ops are stamped with its position in its
//! partition (`seq`), so the fold applies a partition's events in order
//! whichever worker decoded them. Replays take times from one clock shared
//! by the process's workers (a source shared by several workers draws its
//! time inside its lock, so a partition's batches get increasing times);
//! live runs use wall-clock milliseconds, one time per round of polls, or
//! several rounds while catching up a backlog.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use timely::dataflow::InputHandleVec;
use timely::dataflow::ProbeHandle;

use super::at_once::Assignment;
use super::ops::{Feeder, Lookahead, Names, Op};
use super::stages::Stage;
use super::symbols::{Sym, SymCache};
use super::{DataflowError, Emitted, Emitter, LAG_EVERY, RunConfig, Start, seq_of, wall_clock_ms};
use crate::model::{DataflowProgress, DeadLetter, Progress, RecordTimes};
use crate::source::{MAX_RECORD_BYTES, Poll, RawBatch, Source};
use crate::spec::{DecodeScratch, Plan, Verdict};

/// How long an idle worker sleeps unless woken by a source or a peer.
const IDLE_PARK: Duration = Duration::from_millis(100);
/// An idle worker moves its times forward at most this often (ms).
const IDLE_TICK_MS: u64 = 50;
/// How long a worker waiting for the store parks before looking again (it
/// is woken as soon as a commit lands).
const COMMIT_PARK: Duration = Duration::from_millis(20);
/// Live runs catching up a backlog: while a poll comes back full (the
/// source has more waiting), a worker keeps reading into the same time until
/// it holds this many records or is [`CATCH_UP_OPEN`] old. Fewer, larger
/// times fold a busy record, compute identity and commit once where a time
/// per poll did it many times (`scripts/bench-kafka.sh 1000000 2`: 31 700 →
/// ~46 000 records/s, docs/performance.md). A worker that is not behind
/// moves to a new time after every round of polls, as before.
const CATCH_UP_RECORDS: usize = 250_000;
/// The longest a time stays open while catching up.
const CATCH_UP_OPEN: Duration = Duration::from_millis(1000);

/// A live time open this long is logged (at debug level) when it closes:
/// a worker caught up a backlog in it, or waited for the store's commits.
const CATCH_UP_LOG: Duration = Duration::from_millis(50);

/// A read whose oldest record (by its source timestamp) is this old is
/// logged at debug level: the delay arose before rdg read the record (the
/// producer, the broker, or a worker that was not polling).
const OLD_READ_LOG: i64 = 100;

/// The dead letter's reason for a record the source did not take.
fn too_long(len: u64) -> String {
    format!(
        "a record of {len} bytes (its end of line included) is longer than the {} MiB one may be",
        MAX_RECORD_BYTES >> 20
    )
}

/// Logs (debug) a read of `records` records of `dataflow` whose oldest
/// record's source timestamp is `oldest_ms`, when it is [`OLD_READ_LOG`] ms
/// old or more.
fn log_old_read(dataflow: &str, records: usize, oldest_ms: Option<i64>) {
    let Some(oldest) = oldest_ms else { return };
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let age = chrono::Utc::now().timestamp_millis().saturating_sub(oldest);
    if age >= OLD_READ_LOG {
        tracing::debug!(
            dataflow,
            records,
            age_ms = age,
            "read records 100 ms or more after their timestamp"
        );
    }
}

/// Record timestamps counted as runs of equal ones (consecutive records of
/// a Kafka batch mostly share one) before they reach [`RecordTimes`].
#[derive(Default)]
struct TimeRuns(Option<(i64, u64)>);

impl TimeRuns {
    /// Counts one record with timestamp `ts`, handing the run before it to
    /// `into` when `ts` starts another.
    fn push(&mut self, ts: i64, into: &mut RecordTimes) {
        match &mut self.0 {
            Some((t, n)) if *t == ts => *n += 1,
            _ => {
                if let Some((t, n)) = self.0.replace((ts, 1)) {
                    into.add(t, n);
                }
            }
        }
    }

    /// Hands the last run to `into`.
    fn finish(self, into: &mut RecordTimes) {
        if let Some((t, n)) = self.0 {
            into.add(t, n);
        }
    }
}

/// The live time a worker is reading into: how many records it holds and
/// since when.
struct OpenTime {
    records: usize,
    since: Instant,
}

impl OpenTime {
    fn new() -> OpenTime {
        OpenTime {
            records: 0,
            since: Instant::now(),
        }
    }

    /// Whether a worker that is `behind` keeps reading into this time.
    fn stays_open(&self, behind: bool) -> bool {
        behind && self.records < CATCH_UP_RECORDS && self.since.elapsed() < CATCH_UP_OPEN
    }
}

/// A worker's handles on the dataflow's inputs.
pub(super) struct Inputs {
    pub ops: Vec<InputHandleVec<u64, Op>>,
    pub watermarks: Vec<InputHandleVec<u64, i64>>,
    /// (dataflow, partition key, next position, time)
    pub positions: InputHandleVec<u64, (usize, String, u64, u64)>,
    /// Identity assignments stored by an earlier run (the rebuild of a
    /// single process, at time 0).
    pub given: InputHandleVec<u64, (Sym, Assignment)>,
    pub probe: ProbeHandle<u64>,
}

impl Inputs {
    /// The time every input is at.
    fn time(&self) -> u64 {
        *self.positions.time()
    }

    /// Moves every input to `t` (no-op when already there or beyond).
    pub fn advance_to(&mut self, t: u64) {
        if t <= self.time() {
            return;
        }
        for h in self.ops.iter_mut() {
            h.advance_to(t);
        }
        for h in self.watermarks.iter_mut() {
            h.advance_to(t);
        }
        self.positions.advance_to(t);
        self.given.advance_to(t);
    }

    /// Closes every input: this worker sends nothing more.
    fn close(self) -> ProbeHandle<u64> {
        drop(self.ops);
        drop(self.watermarks);
        drop(self.positions);
        drop(self.given);
        self.probe
    }
}

/// One source of this worker with its dataflow's feeder.
struct Reading {
    source: Box<dyn Source>,
    dataflow: usize,
    feeder: Feeder,
    done: bool,
}

/// What one poll of one source produced, bound for one time.
struct Batch {
    dataflow: usize,
    /// The time a shared source drew for it (replays).
    time: Option<u64>,
    dead_letters: Vec<DeadLetter>,
    progress: DataflowProgress,
    /// partition key → next position.
    positions: Vec<(String, u64)>,
    /// The largest event time of the batch's events, if any.
    watermark: Option<i64>,
}

/// Reads and decodes this worker's sources; buffers are reused.
pub(super) struct Reader<'a> {
    plan: &'a Plan,
    start: &'a Start,
    config: &'a RunConfig,
    readings: Vec<Reading>,
    raw: RawBatch,
    scratch: DecodeScratch,
    decoded: Lookahead,
    /// This worker's front of the symbol table, shared by its sources.
    symbols: SymCache,
    /// The ops of the last batch.
    pub ops: Vec<Op>,
}

impl<'a> Reader<'a> {
    pub fn new(
        plan: &'a Plan,
        start: &'a Start,
        config: &'a RunConfig,
        names: &Names,
        sources: Vec<Box<dyn Source>>,
    ) -> Result<Reader<'a>, DataflowError> {
        let mut readings = Vec::new();
        for source in sources {
            let dataflow = plan
                .dataflows
                .iter()
                .position(|d| d.name == source.dataflow())
                .ok_or_else(|| DataflowError::UnknownDataflow(source.dataflow().to_string()))?;
            let d = &plan.dataflows[dataflow];
            let w0 = start.watermarks.get(&d.name).copied().unwrap_or(i64::MIN);
            let feeder = Feeder::new(d.clone(), names, w0);
            readings.push(Reading {
                source,
                dataflow,
                feeder,
                done: false,
            });
        }
        Ok(Reader {
            plan,
            start,
            config,
            readings,
            raw: RawBatch::with_capacity(config.batch),
            scratch: DecodeScratch::default(),
            decoded: Lookahead::default(),
            symbols: SymCache::new(),
            ops: Vec::new(),
        })
    }

    fn all_done(&self) -> bool {
        self.readings.iter().all(|r| r.done)
    }

    /// Arranges for this thread to be unparked when a source may have data.
    fn wake_me(&mut self) {
        let me = std::thread::current();
        for r in self.readings.iter_mut() {
            let me = me.clone();
            r.source.set_waker(Arc::new(move || me.unpark()));
        }
    }

    /// Polls source `k` once and decodes what it returned into `self.ops`.
    fn read(&mut self, k: usize) -> Result<Option<Batch>, DataflowError> {
        let reading = &mut self.readings[k];
        if reading.done {
            return Ok(None);
        }
        self.raw.clear();
        if reading.source.poll(self.config.batch, &mut self.raw)? == Poll::Done {
            reading.done = true;
        }
        if self.raw.is_empty() {
            return Ok(None);
        }
        let time = reading.source.time();
        if time.is_some() {
            // A shared source's batch follows other workers' batches of the
            // same partition: the fold adds their watermark to the ops'.
            reading.feeder.watermark = i64::MIN;
        }
        let d = &self.plan.dataflows[reading.dataflow];
        let mut batch = Batch {
            dataflow: reading.dataflow,
            time,
            dead_letters: Vec::new(),
            progress: DataflowProgress::default(),
            positions: Vec::new(),
            watermark: None,
        };
        let began = Instant::now();
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        let mut counted_from: BTreeMap<u32, u64> = BTreeMap::new();
        self.ops.clear();
        let mut times = TimeRuns::default();
        for r in self.raw.iter() {
            // Records before this process's stored position were counted
            // (and their dead letters kept) before a restart: their ops still
            // go out, for owners whose state is behind, but nothing is counted.
            let from = *counted_from.entry(r.partition).or_insert_with(|| {
                if !self.config.skip_applied {
                    return 0;
                }
                let key = (
                    d.name.as_str().into(),
                    reading.source.partition_key(r.partition),
                );
                self.start.positions.get(&key).copied().unwrap_or(0)
            });
            let fresh = r.offset >= from;
            if let Some(ts) = r.timestamp_ms.filter(|_| fresh) {
                times.push(ts, &mut batch.progress.record_times);
            }
            let verdict = match r.too_long {
                Some(len) => Verdict::Reject(too_long(len)),
                None => d.decode_into(
                    r.payload,
                    &self.plan.identity,
                    &mut self.scratch,
                    self.decoded.next(),
                ),
            };
            match verdict {
                Verdict::Ignored => {}
                Verdict::Event => {
                    if fresh {
                        batch.progress.events += 1;
                    }
                    self.decoded.push(
                        seq_of(r.partition, r.offset),
                        &mut reading.feeder,
                        &mut self.symbols,
                        &mut self.ops,
                    )?;
                }
                Verdict::Reject(reason) if fresh => batch.dead_letters.push(DeadLetter {
                    dataflow: CompactString::from(d.name.as_str()),
                    source: reading.source.describe(r.partition, r.offset),
                    reason,
                }),
                Verdict::Reject(_) => {}
            }
            // The stored position is the next one to read.
            last.insert(r.partition, r.offset + 1);
        }
        self.decoded
            .flush(&mut reading.feeder, &mut self.symbols, &mut self.ops)?;
        batch.positions = last
            .into_iter()
            .map(|(part, next)| (reading.source.partition_key(part), next))
            .collect();
        times.finish(&mut batch.progress.record_times);
        log_old_read(
            d.name.as_str(),
            self.raw.len(),
            batch.progress.record_times.oldest(),
        );
        if reading.feeder.watermark > i64::MIN {
            batch.watermark = Some(reading.feeder.watermark);
            batch.progress.watermark = Some(reading.feeder.watermark);
        }
        self.config.stages.add(Stage::Decode, began.elapsed());
        Ok(Some(batch))
    }

    /// Reports each source's lag (Kafka sources; files tell none). True
    /// once every source has told.
    fn report_lag(&self, local: usize, emit: &Emitter) -> bool {
        let mut all = true;
        for (k, r) in self.readings.iter().enumerate() {
            match r.source.lag() {
                Some(lag) => emit(Emitted::Lag {
                    worker: local,
                    source: k,
                    dataflow: r.source.dataflow().to_string(),
                    lag,
                    skipped: r.source.skipped_offsets(),
                }),
                None => all = false,
            }
        }
        all
    }
}

/// Sends one batch (its ops in `ops`) at time `t`.
fn send(
    inputs: &mut Inputs,
    batch: Batch,
    ops: &mut Vec<Op>,
    t: u64,
    names: &Names,
    (local, emit): (usize, &Emitter),
) {
    let i = batch.dataflow;
    for (key, next) in batch.positions {
        inputs.positions.send((i, key, next, t));
    }
    if let Some(w) = batch.watermark {
        inputs.watermarks[i].send(w);
    }
    for op in ops.drain(..) {
        inputs.ops[i].send(op);
    }
    let mut progress = Progress::default();
    progress
        .dataflows
        .insert(names.dataflows[i].clone(), batch.progress);
    emit(Emitted::Data {
        worker: local,
        epoch: t,
        changes: Vec::new(),
        dead_letters: batch.dead_letters,
        progress,
    });
}

/// The drive loop of one worker: read, send, bound what is in flight;
/// returns when the sources are done (replays) or `stop` is set.
pub(super) fn drive(
    worker: &mut timely::worker::Worker,
    mut inputs: Inputs,
    mut reader: Reader<'_>,
    names: &Names,
    local: usize,
    emit: &Emitter,
) -> Result<(), DataflowError> {
    let config = reader.config;
    reader.wake_me();
    config.committed.register_waiter();
    let mut epoch: u64 = inputs.time().max(super::REBUILD_TIME + 1);
    inputs.advance_to(epoch);
    // Times sent but maybe not yet complete, oldest first.
    let mut started: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut lag = LagReports::new(config.live);
    let mut open = OpenTime::new();
    loop {
        if config.stop.load(Ordering::Relaxed) || (!config.live && reader.all_done()) {
            break;
        }
        let mut read_any = false;
        let mut behind = false;
        for k in 0..reader.readings.len() {
            let Some(batch) = reader.read(k)? else {
                continue;
            };
            read_any = true;
            behind |= reader.raw.len() >= config.batch;
            open.records += reader.raw.len();
            let t = if config.live {
                epoch
            } else {
                let t = batch
                    .time
                    .unwrap_or_else(|| config.clock.fetch_add(1, Ordering::AcqRel));
                inputs.advance_to(t);
                t
            };
            let mut ops = std::mem::take(&mut reader.ops);
            send(&mut inputs, batch, &mut ops, t, names, (local, emit));
            reader.ops = ops;
            if !config.live {
                started.push_back(t);
                inputs.advance_to(t + 1);
                bound_in_flight(worker, &inputs, &mut started, config);
            }
        }
        lag.report(&reader, local, emit);
        if config.live {
            let now = wall_clock_ms();
            if !read_any {
                // Idle: let the frontier follow the clock so other workers'
                // times complete, then sleep until woken or the next tick.
                if now > epoch + IDLE_TICK_MS {
                    if open.records > 0 {
                        started.push_back(epoch);
                    }
                    open = OpenTime::new();
                    epoch = now;
                    inputs.advance_to(epoch);
                }
                worker.step_or_park(Some(IDLE_PARK));
                continue;
            }
            if open.stays_open(behind) {
                worker.step();
                continue;
            }
            if open.records > 0 && open.since.elapsed() >= CATCH_UP_LOG {
                tracing::debug!(
                    worker = local,
                    time = epoch,
                    records = open.records,
                    ms = open.since.elapsed().as_secs_f64() * 1e3,
                    "a live time stayed open 50 ms or more (catching up, or waiting for the store)"
                );
            }
            open = OpenTime::new();
            started.push_back(epoch);
            epoch = (epoch + 1).max(now);
            inputs.advance_to(epoch);
            bound_in_flight(worker, &inputs, &mut started, config);
        }
        worker.step();
    }
    let probe = inputs.close();
    while !probe.done() {
        worker.step_or_park(Some(COMMIT_PARK));
    }
    Ok(())
}

/// When the driver asks its sources for their lag: at every round until
/// each has told (a file replay's sources, which never tell, cost a call
/// each per batch), so a Kafka source's first report comes as soon as its
/// watermarks are known; then every [`LAG_EVERY`] in a live run, every
/// [`super::REPLAY_LAG_EVERY`] in a replay.
struct LagReports {
    every: Duration,
    last: Instant,
    known: bool,
}

impl LagReports {
    fn new(live: bool) -> LagReports {
        LagReports {
            every: if live {
                LAG_EVERY
            } else {
                super::REPLAY_LAG_EVERY
            },
            last: Instant::now(),
            known: false,
        }
    }

    fn report(&mut self, reader: &Reader<'_>, local: usize, emit: &Emitter) {
        if !self.known || self.last.elapsed() >= self.every {
            self.last = Instant::now();
            self.known = reader.report_lag(local, emit);
        }
    }
}

/// Waits, stepping the dataflow, until at most `in_flight` started times
/// are neither complete in the dataflow nor committed by the store.
fn bound_in_flight(
    worker: &mut timely::worker::Worker,
    inputs: &Inputs,
    started: &mut std::collections::VecDeque<u64>,
    config: &RunConfig,
) {
    // The folds emit, and the store commits, whole steps: wait for one only
    // when more than a step is in flight, or the driver and the store wait
    // for each other (a bulk load, whose chunks need not end at steps, is
    // also faster so: a step's worth of reading ahead covers the writer's
    // pauses while it hands a buffer to the engine).
    let limit = config.in_flight.max(config.step.saturating_add(2));
    while started.len() as u64 > limit {
        let Some(oldest) = started.pop_front() else {
            break;
        };
        let floor = oldest + 1;
        while inputs.probe.less_than(&floor) {
            worker.step_or_park(Some(COMMIT_PARK));
        }
        while config.committed.get() < floor && !config.stop.load(Ordering::Relaxed) {
            // Woken by the writer's commit (or a peer's message).
            worker.step_or_park(Some(COMMIT_PARK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RecordTimes, TimeRuns};

    #[test]
    fn time_runs_count_every_timestamp_once() {
        let stamps = [5, 5, 7, 5, 5, 5, 9];
        let (mut runs, mut times, mut direct) = (
            TimeRuns::default(),
            RecordTimes::default(),
            RecordTimes::default(),
        );
        for ts in stamps {
            runs.push(ts, &mut times);
            direct.add(ts, 1);
        }
        runs.finish(&mut times);
        let ages = |t: &RecordTimes| {
            let mut a: Vec<(i64, u64)> = t.ages(10).collect();
            a.sort_unstable();
            a
        };
        assert_eq!(ages(&times), ages(&direct));
        assert_eq!(ages(&times), vec![(1, 1), (3, 1), (5, 5)]);
    }
}
