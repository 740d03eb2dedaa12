//! A Kafka topic as a source: one [`KafkaSource`] per dataflow and worker,
//! reading the partitions of the dataflow's topic that the worker owns.
//!
//! Invariants:
//! - Each partition is owned by exactly one worker ([`owner`], a pure function
//!   of topic, partition and number of workers), assigned by hand: no
//!   consumer group rebalancing ever moves it.
//! - Positions belong to rdg: a partition starts at the next offset rdg stored
//!   with its state, else at [`StartFrom`]. Kafka's committed offsets are
//!   written ([`KafkaSource::commit_offsets`], [`OffsetCommitter`]) so lag
//!   tools see progress, but never read back.
//! - Records of one partition are delivered in offset order, each once: a
//!   record below the partition's next offset is skipped (fetches resume a
//!   little before the position, see [`RESUME_BACKTRACK`], and restart after
//!   refused offsets). Offsets the broker goes past without delivering them
//!   are never skipped silently either: they are counted
//!   ([`KafkaSource::skipped_offsets`]) and logged, after being fetched
//!   again for [`KafkaConfig::recheck_gaps`] when that is set.
//! - An offset the broker no longer has is never skipped silently: with
//!   [`OnGap::Stop`] `poll` fails with [`SourceError::Gap`], with
//!   [`OnGap::Earliest`] it logs and continues from the earliest offset.
//! - `poll` never blocks on the network. Metadata, watermarks and offset
//!   lookups by time run on a watcher thread that refreshes every
//!   [`KafkaConfig::refresh_interval`] and calls the waker when something
//!   changed; messages of each partition land in their own queue whose
//!   non-empty callback calls the waker too. Dropping the source stops the
//!   watcher and waits (up to a second) until it let go of the consumer,
//!   so its client is closed when the drop returns.
//!
//! A bounded source (replay) ends once every owned partition has caught up
//! with its end. A missing topic is waited for (logged once) in live mode and
//! an error in bounded mode; partitions that appear while running are read from their
//! earliest offset; an unreachable broker is logged and retried with backoff
//! and becomes [`SourceError::Broker`] after [`KafkaConfig::broker_timeout`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::{Poll, RawBatch, Source, SourceError};

/// What to do when a stored offset is no longer on the broker (retention
/// deleted it, or the topic was recreated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnGap {
    /// Fail with [`SourceError::Gap`]: the records in between are lost and
    /// the operator decides. The default.
    #[default]
    Stop,
    /// Log a warning and continue from the earliest offset still available.
    Earliest,
}

/// Where a partition without a stored position starts. Partitions that
/// appear while rdg runs always start at their earliest offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// The earliest offset still on the broker. The default.
    #[default]
    Earliest,
    /// After the last record present when rdg first sees the partition
    /// (its high watermark then).
    Latest,
    /// The first record whose timestamp is at or after this time (epoch ms),
    /// looked up with `offsets_for_times`; after the last record if none is.
    /// rdkafka's MockCluster cannot look offsets up by time (it answers
    /// "after the last record" for every time); tansu 0.6 answers offset 0
    /// for a time after its last record.
    TimeMs(i64),
}

/// How to reach Kafka and how to start. Every default is on its field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]` (librdkafka's `bootstrap.servers`).
    /// Default `127.0.0.1:9092`.
    pub brokers: String,
    /// librdkafka settings from `-X key=value` and `[source.kafka]`, applied
    /// over rdg's defaults. The settings rdg's guarantees depend on (group,
    /// auto-commit, offset reset) cannot be overridden; trying logs a
    /// warning. Default: none.
    pub settings: BTreeMap<String, String>,
    /// See [`OnGap`]. Default [`OnGap::Stop`].
    pub on_gap: OnGap,
    /// See [`StartFrom`]. Default [`StartFrom::Earliest`].
    pub start: StartFrom,
    /// How long the brokers may stay unreachable before `poll` fails with
    /// [`SourceError::Broker`]; until then rdg logs and retries. Default
    /// 30 s.
    pub broker_timeout: Duration,
    /// How often the watcher thread refreshes metadata (new partitions, the
    /// topic's existence) and watermarks (lag). Default 5 s.
    pub refresh_interval: Duration,
    /// Timeout of one metadata, watermark or offset request. Default 5 s.
    pub request_timeout: Duration,
    /// How long a partition whose broker went past the offset due is
    /// fetched again (from [`RESUME_BACKTRACK`] before it, every
    /// [`RECHECK_PAUSE`]) before the gap is counted: for a broker that can
    /// make a later batch readable before an earlier one. tansu 0.6 does
    /// under load (its produce advances the high watermark before it stores
    /// the batch). A Kafka broker never does, and its gaps (compacted or
    /// transactional topics) are real, so the default, zero, counts a gap
    /// at once ([`KafkaSource::skipped_offsets`]).
    pub recheck_gaps: Duration,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            settings: BTreeMap::new(),
            on_gap: OnGap::Stop,
            start: StartFrom::Earliest,
            broker_timeout: Duration::from_secs(30),
            refresh_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            recheck_gaps: Duration::ZERO,
        }
    }
}

/// The consumer group rdg commits a dataflow's offsets to.
pub fn group_id(dataflow: &str) -> String {
    format!("rdg-{dataflow}")
}

/// The worker (of `peers`) that owns `partition` of `topic`. Partitions are
/// dealt round-robin from a start that depends on the topic, so the first
/// partitions of several topics do not all land on worker 0. Deterministic
/// across runs, processes and machines (FNV-1a of the topic name).
pub fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    let peers = peers.max(1) as u64;
    let start = fnv1a(topic.as_bytes()) % peers;
    let p = u64::try_from(partition).unwrap_or(0) % peers;
    ((start + p) % peers) as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

type Waker = Arc<dyn Fn() + Send + Sync>;

/// The waker set by the caller, shared with librdkafka's queue callbacks and
/// the watcher thread (which may fire before a waker is set).
#[derive(Clone, Default)]
struct WakerSlot(Arc<Mutex<Option<Waker>>>);

impl WakerSlot {
    fn wake(&self) {
        let waker = lock(&self.0).clone();
        if let Some(waker) = waker {
            waker();
        }
    }

    fn set(&self, waker: Waker) {
        *lock(&self.0) = Some(waker);
    }
}

/// Locks, ignoring poisoning: the data behind these mutexes stays consistent
/// (plain values written whole).
/// Topics whose brokers the watcher threads of this process cannot reach
/// now, with why (for readiness: [`broker_outage`]).
static OUTAGES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Why the Kafka brokers of some topic cannot be reached right now, if
/// they cannot (`topic: detail`); `None` once every watcher reached its
/// brokers again.
pub fn broker_outage() -> Option<String> {
    lock(&OUTAGES)
        .iter()
        .next()
        .map(|(topic, detail)| format!("topic `{topic}`: {detail}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Routes librdkafka's logs and errors to `tracing` and reports failed offset
/// commits.
struct RdgContext {
    /// Names the client in logs: `playback (worker 1)`.
    what: String,
    /// The last global error logged, so a repeated one is logged at debug.
    last_error: Mutex<Option<String>>,
}

impl RdgContext {
    fn new(what: String) -> RdgContext {
        RdgContext {
            what,
            last_error: Mutex::new(None),
        }
    }
}

impl ClientContext for RdgContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{}: {fac} {message}", self.what)
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{}: {fac} {message}", self.what)
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "{}: {fac} {message}", self.what)
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Unreachable brokers are reported by the watcher thread, once per
        // retry and with the address (librdkafka repeats them every few
        // hundred milliseconds); offsets out of range by the source, with
        // the partition and what it does about it; the end of a partition is
        // how a bounded read ends, not a problem.
        let reported = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::Resolve
                    | RDKafkaErrorCode::AutoOffsetReset
                    | RDKafkaErrorCode::PartitionEOF
            )
        );
        let text = format!("{error}: {reason}");
        let mut last = lock(&self.last_error);
        if reported || last.as_deref() == Some(text.as_str()) {
            tracing::debug!("{}: {text}", self.what);
        } else {
            tracing::warn!("{}: {text}", self.what);
        }
        *last = Some(text);
    }
}

impl ConsumerContext for RdgContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!("{}: committed {} offsets", self.what, offsets.count()),
            Err(e) => tracing::warn!(
                "{}: committing offsets to the consumer group failed (lag tools will \
                 show old positions; rdg's own positions are unaffected): {e}",
                self.what
            ),
        }
    }
}

/// Settings rdg's guarantees depend on; `-X` cannot override them.
const FORCED: [&str; 6] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// The consumer configuration, every setting with its reason.
fn consumer_config(config: &KafkaConfig, group: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    // Names the client in broker logs and quotas; may be overridden.
    c.set("client.id", client_id);
    // A consumer must never create the topic it waits for: a typo would
    // otherwise create an empty topic with the broker's defaults.
    c.set("allow.auto.create.topics", "false");
    // A fetch the broker holds open waits at most 10 ms for more data
    // (librdkafka's default, 500 ms, puts half a second between a quiet
    // topic's message and the graph). `-X fetch.wait.max.ms=...` overrides.
    c.set("fetch.wait.max.ms", "10");
    // librdkafka's own log lines at warning and above (routed to tracing);
    // `-X debug=...` adds its debug contexts when investigating.
    c.set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &config.settings {
        if FORCED.contains(&k.as_str()) {
            tracing::warn!(
                "ignoring Kafka setting {k}={v}: rdg sets {k} itself (its positions and \
                 gap handling depend on it)"
            );
            continue;
        }
        c.set(k, v);
    }
    c.set("bootstrap.servers", &config.brokers);
    // Commits go to `rdg-<dataflow>` so lag tools see progress. The consumer
    // never subscribes (partitions are assigned by hand), so it never joins
    // the group and no rebalance ever moves a partition.
    c.set("group.id", group);
    // Offsets are committed only after rdg committed its own state, by
    // `commit_offsets`; auto-commit would run ahead of the stored state.
    c.set("enable.auto.commit", "false");
    // rdg tracks positions itself; librdkafka's offset store is unused.
    c.set("enable.auto.offset.store", "false");
    // An offset missing on the broker must be reported, not silently reset:
    // `OnGap` decides what happens, and the default is to stop.
    c.set("auto.offset.reset", "error");
    // The end-of-partition event says where a partition really ends (the
    // high watermark of a fetch response): bounded reads (replay) end on
    // it, and a stored position past it is a gap (a recreated topic).
    c.set("enable.partition.eof", "true");
    c
}

fn kafka_error(topic: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Kafka {
        topic: topic.to_string(),
        detail: e.to_string(),
    }
}

/// What the watcher thread learned, read by `poll`.
/// (low, high) watermarks per partition.
type Watermarks = BTreeMap<i32, (i64, i64)>;

#[derive(Debug, Default)]
struct Shared {
    /// The topic's partition count from the last metadata answer; `None`
    /// until the topic was seen.
    partitions: Option<i32>,
    /// The last metadata answer said the topic does not exist.
    missing: bool,
    /// (low, high) watermarks of the owned partitions, from the last refresh
    /// that could fetch them.
    watermarks: Watermarks,
    /// Number of completed refreshes (metadata and every owned partition's
    /// watermarks fetched). A gap check waits for the next one.
    generation: u64,
    /// Since when, and why, the brokers are unreachable.
    unreachable: Option<(Instant, String)>,
    /// Start offsets looked up by time: `None` = after the last record.
    by_time: BTreeMap<i32, Option<i64>>,
    /// Partitions whose start offset `poll` wants looked up by time.
    want_by_time: BTreeSet<i32>,
    /// `poll` waits for the next refresh: wake it when it is done.
    want_refresh: bool,
}

/// The watcher thread: everything that needs a network round trip.
struct Watcher {
    consumer: Arc<BaseConsumer<RdgContext>>,
    shared: Arc<Mutex<Shared>>,
    waker: WakerSlot,
    topic: String,
    brokers: String,
    worker: usize,
    peers: usize,
    start_ms: Option<i64>,
    refresh: Duration,
    timeout: Duration,
}

/// What the watcher logged last, so a state is logged once, not every round.
#[derive(Default)]
struct Logged {
    /// The topic was reported missing.
    missing: bool,
    /// The last error the brokers answered about the topic.
    topic_error: Option<String>,
}

const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Watcher {
    fn run(self, poke: Receiver<()>) {
        let mut backoff = MIN_BACKOFF;
        let mut logged = Logged::default();
        loop {
            let wait = match self.refresh(&mut logged) {
                Ok(changed) => {
                    let was_down = lock(&self.shared).unreachable.take().is_some();
                    lock(&OUTAGES).remove(&self.topic);
                    if was_down {
                        tracing::info!("reached the Kafka broker(s) at {} again", self.brokers);
                    }
                    backoff = MIN_BACKOFF;
                    if changed || was_down {
                        self.waker.wake();
                    }
                    self.refresh
                }
                Err(detail) => {
                    tracing::warn!(
                        "cannot reach the Kafka broker(s) at {} for topic `{}`: {detail}; \
                         retrying in {:.1} s",
                        self.brokers,
                        self.topic,
                        backoff.as_secs_f64()
                    );
                    lock(&OUTAGES).insert(
                        self.topic.clone(),
                        format!(
                            "cannot reach the Kafka broker(s) at {}: {detail}",
                            self.brokers
                        ),
                    );
                    lock(&self.shared)
                        .unreachable
                        .get_or_insert_with(|| (Instant::now(), String::new()))
                        .1 = detail;
                    // `poll` decides whether the outage has lasted too long.
                    self.waker.wake();
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            match poke.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => while poke.try_recv().is_ok() {},
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// One round: metadata, the owned partitions' watermarks, pending
    /// lookups by time. `Err` only when the brokers could not be reached.
    /// `Ok(true)` when `poll` has something new to act on.
    fn refresh(&self, logged: &mut Logged) -> Result<bool, String> {
        let Some((count, missing)) = self.partition_count(logged)? else {
            return Ok(false);
        };
        let (watermarks, complete) = self.owned_watermarks(count.unwrap_or(0))?;
        let by_time = self.offsets_by_time()?;

        let mut s = lock(&self.shared);
        let mut changed = s.partitions != count.or(s.partitions) || s.missing != missing;
        if count.is_some() {
            s.partitions = count;
        }
        s.missing = missing;
        changed |= watermarks.keys().any(|p| !s.watermarks.contains_key(p));
        changed |= !by_time.is_empty();
        s.watermarks.extend(watermarks);
        s.by_time.extend(by_time);
        if complete {
            s.generation += 1;
            changed |= std::mem::take(&mut s.want_refresh);
        }
        Ok(changed)
    }

    /// The topic's partition count from the metadata (`None` while it does
    /// not exist) and whether it is missing; `Ok(None)` when the broker
    /// answers with another error about it (logged once until it changes).
    fn partition_count(&self, logged: &mut Logged) -> Result<Option<(Option<i32>, bool)>, String> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), self.timeout)
            .map_err(|e| e.to_string())?;
        let topic = metadata.topics().iter().find(|t| t.name() == self.topic);
        let (count, missing) = match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                let n = t.partitions().iter().map(|p| p.id() + 1).max().unwrap_or(0);
                (Some(n), false)
            }
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => (None, true),
                Some(other) => {
                    // E.g. a leader not yet elected right after creation
                    // (transient), or no authorization (not transient).
                    let text = other.to_string();
                    if logged.topic_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(
                            "the broker(s) at {} answer about topic `{}`: {text}; retrying",
                            self.brokers,
                            self.topic
                        );
                    }
                    logged.topic_error = Some(text);
                    return Ok(None);
                }
            },
            None => (None, true),
        };
        logged.topic_error = None;
        if missing && !logged.missing {
            tracing::warn!(
                "topic `{}` does not exist on {}; waiting for it to be created",
                self.topic,
                self.brokers
            );
        } else if !missing && logged.missing {
            tracing::info!("topic `{}` now exists", self.topic);
        }
        logged.missing = missing;
        Ok(Some((count, missing)))
    }

    /// The watermarks of the partitions below `count` this worker owns, and
    /// whether every one was read.
    fn owned_watermarks(&self, count: i32) -> Result<(Watermarks, bool), String> {
        let mut watermarks = BTreeMap::new();
        let mut complete = true;
        for p in 0..count {
            if owner(&self.topic, p, self.peers) != self.worker {
                continue;
            }
            match self.consumer.fetch_watermarks(&self.topic, p, self.timeout) {
                Ok(w) => {
                    watermarks.insert(p, w);
                }
                Err(e) if is_transport(&e) => return Err(e.to_string()),
                Err(e) => {
                    complete = false;
                    tracing::debug!("watermarks of {}/{p}: {e}", self.topic);
                }
            }
        }
        Ok((watermarks, complete))
    }

    /// The offsets at the run's start time (`--from-time`) of the partitions
    /// still waiting for theirs (`None`: past the end).
    fn offsets_by_time(&self) -> Result<BTreeMap<i32, Option<i64>>, String> {
        let wanted: Vec<i32> = {
            let s = lock(&self.shared);
            s.want_by_time
                .iter()
                .filter(|p| !s.by_time.contains_key(p))
                .copied()
                .collect()
        };
        let mut by_time = BTreeMap::new();
        let (Some(ms), false) = (self.start_ms, wanted.is_empty()) else {
            return Ok(by_time);
        };
        let mut tpl = TopicPartitionList::with_capacity(wanted.len());
        for &p in &wanted {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(ms))
                .map_err(|e| e.to_string())?;
        }
        match self.consumer.offsets_for_times(tpl, self.timeout) {
            Ok(found) => {
                for e in found.elements() {
                    match (e.error(), e.offset()) {
                        (Ok(()), Offset::Offset(o)) => {
                            by_time.insert(e.partition(), Some(o));
                        }
                        (Ok(()), Offset::End) => {
                            by_time.insert(e.partition(), None);
                        }
                        (r, o) => tracing::debug!(
                            "offset of {}/{} at {ms} ms: {o:?} {r:?}",
                            self.topic,
                            e.partition()
                        ),
                    }
                }
            }
            Err(e) if is_transport(&e) => return Err(e.to_string()),
            Err(e) => tracing::warn!(
                "cannot look up the offsets of topic `{}` at {ms} ms: {e}; retrying",
                self.topic
            ),
        }
        Ok(by_time)
    }
}

fn is_transport(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::Resolve
        )
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Known, not yet assigned: waits for its watermarks (or its offset by
    /// time).
    Pending,
    /// Assigned and fetching.
    Active,
    /// Its fetch was refused as out of range; waits for fresh watermarks
    /// (refresh number `after` + 1) to tell a gap from a transient error.
    Checking { after: u64 },
    /// Bounded mode: read to its end.
    Finished,
}

/// One owned partition.
struct Part {
    state: State,
    /// Its own message queue (split from the consumer's), created before the
    /// first assignment and kept across re-assignments.
    queue: Option<PartitionQueue<RdgContext>>,
    /// The next offset to deliver.
    next: i64,
    /// `next` is a real position (stored, looked up, or after a delivered
    /// record), not an estimate from the watermarks of where `Beginning` or
    /// `End` will land.
    exact: bool,
    /// Where a fetch restarts when `next` is an estimate.
    origin: Offset,
    /// Where the current fetch started (an estimate for `Beginning`): the
    /// partition's end if it ends before any record was consumed.
    fetch_from: i64,
    /// It appeared after the first metadata answer: start at the earliest.
    added: bool,
    /// The last fetch error logged, to log a repeated one at debug.
    last_error: Option<String>,
    /// Offsets the broker went past without delivering them.
    skipped: Skipped,
}

/// Offsets of one partition that the broker went past without delivering
/// them, and in how many gaps (see [`Skipped::note`]); the gap being
/// fetched again, if any (see [`Skipped::on_gap`]).
#[derive(Default)]
struct Skipped {
    offsets: u64,
    gaps: u64,
    recheck: Option<Recheck>,
    /// Gaps whose records came when fetched again.
    recovered: u64,
}

/// A gap being fetched again: the offset due, since when, when the
/// partition was last fetched again for it, and whether the broker went
/// past it since (only then is it fetched again: a fetch in flight is not
/// cut short by the next).
#[derive(Clone, Copy)]
struct Recheck {
    due: i64,
    since: Instant,
    fetched: Option<Instant>,
    seen: bool,
}

/// The least time between two fetches again of one gap.
const RECHECK_PAUSE: Duration = Duration::from_millis(100);

/// What to do with a record that came after a gap.
#[derive(Debug, PartialEq, Eq)]
enum AfterGap {
    /// Deliver it: the gap is counted.
    Deliver,
    /// Drop it and fetch the partition again: it will come again.
    Refetch,
}

impl Skipped {
    /// A record came while `next` was due and the gap before it is fetched
    /// again for up to `recheck`: until then the record waits (the fetch
    /// again brings it back), after that the gap is counted.
    fn on_gap(&mut self, next: i64, recheck: Duration, now: Instant) -> AfterGap {
        if recheck.is_zero() {
            return AfterGap::Deliver;
        }
        match self.recheck {
            Some(r) if r.due == next && now.duration_since(r.since) >= recheck => {
                self.recheck = None;
                AfterGap::Deliver
            }
            Some(ref mut r) if r.due == next => {
                r.seen = true;
                AfterGap::Refetch
            }
            _ => {
                self.recheck = Some(Recheck {
                    due: next,
                    since: now,
                    fetched: None,
                    seen: true,
                });
                AfterGap::Refetch
            }
        }
    }

    /// Whether the gap being fetched again is due another fetch at `now`:
    /// the broker went past it again, and the last fetch again was at least
    /// [`RECHECK_PAUSE`] ago (notes that it gets one).
    fn fetch_again(&mut self, now: Instant) -> bool {
        let Some(r) = self.recheck.as_mut() else {
            return false;
        };
        let paused = r
            .fetched
            .is_none_or(|at| now.duration_since(at) >= RECHECK_PAUSE);
        if !r.seen || !paused {
            return false;
        }
        r.fetched = Some(now);
        r.seen = false;
        true
    }

    /// Offset `o` was delivered: if it is the one a gap was fetched again
    /// for, the gap is closed.
    fn delivered(&mut self, topic: &str, p: i32, o: i64) {
        if self.recheck.is_some_and(|r| r.due == o) {
            self.recheck = None;
            self.recovered += 1;
            tracing::info!(
                "{topic}/{p}: offset {o} and those after it came when fetched again, after the \
                 broker had gone past them ({} gaps closed so far)",
                self.recovered
            );
        }
    }

    /// The broker delivered offset `o` of `topic`/`p` while `next` was due:
    /// the offsets in between were never delivered. A compacted topic
    /// (records removed), a transactional one (commit markers, aborted
    /// records) and a broker that lost records all look the same from here,
    /// so the records after the gap are delivered as usual and the gap is
    /// counted ([`KafkaSource::skipped_offsets`]) and logged: a partition's
    /// first as a warning, later ones at debug level, so that a
    /// transactional topic does not flood the log. tansu 0.6 loses the rest
    /// of a record batch when a fetch starts inside it (see
    /// [`RESUME_BACKTRACK`]), and under a backlog it went past whole batches
    /// (docs/performance.md).
    fn note(&mut self, topic: &str, p: i32, next: i64, o: i64) {
        let last = o - 1;
        self.gaps += 1;
        self.offsets += u64::try_from(o - next).unwrap_or(0);
        if self.gaps == 1 {
            tracing::warn!(
                "{topic}/{p}: offsets {next}..={last} were not delivered (the broker answered \
                 with offset {o} next): a compacted or transactional topic leaves such gaps, \
                 any other topic lost these records on the broker; later gaps of {topic}/{p} \
                 are logged at debug level"
            );
        } else {
            tracing::debug!(
                "{topic}/{p}: offsets {next}..={last} were not delivered ({} offsets in {} \
                 gaps so far)",
                self.offsets,
                self.gaps
            );
        }
    }
}

/// Reads the partitions of one topic owned by one worker. See the module
/// documentation for the guarantees.
pub struct KafkaSource {
    dataflow: String,
    topic: String,
    brokers: String,
    worker: usize,
    peers: usize,
    on_gap: OnGap,
    /// See [`KafkaConfig::recheck_gaps`].
    recheck_gaps: Duration,
    start: StartFrom,
    bounded: bool,
    broker_timeout: Duration,
    consumer: Arc<BaseConsumer<RdgContext>>,
    shared: Arc<Mutex<Shared>>,
    /// Asks the watcher for an immediate refresh; dropping it stops the
    /// watcher.
    poke: Sender<()>,
    /// Disconnected once the watcher has returned (and dropped its handle
    /// on the consumer): what a drop waits for.
    watcher_gone: Receiver<()>,
    waker: WakerSlot,
    /// Next offsets rdg stored, by partition.
    stored: BTreeMap<i32, i64>,
    parts: BTreeMap<i32, Part>,
    /// Partition count at the first metadata answer; partitions beyond it
    /// were added while running.
    initial_count: Option<i32>,
    /// The topic was seen missing before it had partitions: all of them
    /// were created while running.
    seen_missing: bool,
    /// Round-robin start among partitions, for fairness under `max`.
    rotate: usize,
}

/// How long a dropped source waits for its watcher to let go of the
/// consumer (it finishes the round it is in; against a broker that does not
/// answer, that round can outlast this).
const WATCHER_EXIT_WAIT: Duration = Duration::from_secs(1);

/// A dropped source stops its watcher and waits (boundedly) until the
/// watcher has dropped its handle on the consumer, so that the consumer's
/// client is closed when the drop returns: nothing of it keeps talking to
/// the brokers after the pipeline stopped (a demo's mock cluster is shut
/// down right after, which the client would log as connections refused).
impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Dropping the only sender disconnects the watcher's receiver,
        // which ends its loop; the field needs a stand-in until then.
        let (stopped, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.poke, stopped));
        let _ = self.watcher_gone.recv_timeout(WATCHER_EXIT_WAIT);
    }
}

impl KafkaSource {
    /// A live source: never returns [`Poll::Done`].
    ///
    /// `positions` holds the next offset (last processed + 1) of the
    /// partitions rdg stored; entries for partitions this worker does not
    /// own are ignored. Connects lazily: an unreachable
    /// broker is reported by `poll`, after `config.broker_timeout`.
    pub fn new(
        dataflow: &str,
        topic: &str,
        config: &KafkaConfig,
        worker: usize,
        peers: usize,
        positions: BTreeMap<i32, i64>,
    ) -> Result<KafkaSource, SourceError> {
        KafkaSource::open(dataflow, topic, config, worker, peers, positions, false)
    }

    /// A bounded source (`rdg replay --brokers`): reads each owned partition
    /// until it has caught up with its end (librdkafka's end-of-partition
    /// event: the fetch position reached the high watermark of a fetch
    /// response, so at least everything present at creation was read), then
    /// returns [`Poll::Done`]. Ending on that event rather than at a high
    /// watermark listed at creation keeps replay complete on brokers whose
    /// listed watermarks lag (tansu 0.6), and also covers offsets that only
    /// transaction markers occupy. A missing topic is an error.
    pub fn bounded(
        dataflow: &str,
        topic: &str,
        config: &KafkaConfig,
        worker: usize,
        peers: usize,
        positions: BTreeMap<i32, i64>,
    ) -> Result<KafkaSource, SourceError> {
        KafkaSource::open(dataflow, topic, config, worker, peers, positions, true)
    }

    fn open(
        dataflow: &str,
        topic: &str,
        config: &KafkaConfig,
        worker: usize,
        peers: usize,
        positions: BTreeMap<i32, i64>,
        bounded: bool,
    ) -> Result<KafkaSource, SourceError> {
        let peers = peers.max(1);
        let group = group_id(dataflow);
        let client_id = format!("rdg-{dataflow}-{worker}");
        let what = format!("Kafka consumer of `{topic}` (worker {worker})");
        let waker = WakerSlot::default();
        let mut consumer: BaseConsumer<RdgContext> = consumer_config(config, &group, &client_id)
            .create_with_context(RdgContext::new(what))
            .map_err(|e| kafka_error(topic, e))?;
        // The consumer's own queue carries errors, logs and commit results
        // (messages go to the partition queues).
        let w = waker.clone();
        consumer.set_nonempty_callback(move || w.wake());
        let consumer = Arc::new(consumer);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (poke, pokes) = mpsc::channel();
        let watcher = Watcher {
            consumer: consumer.clone(),
            shared: shared.clone(),
            waker: waker.clone(),
            topic: topic.to_string(),
            brokers: config.brokers.clone(),
            worker,
            peers,
            start_ms: match config.start {
                StartFrom::TimeMs(ms) => Some(ms),
                _ => None,
            },
            refresh: config.refresh_interval,
            timeout: config.request_timeout,
        };
        let (gone, watcher_gone) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("rdg-kafka-{topic}-{worker}"))
            .spawn(move || {
                watcher.run(pokes);
                drop(gone);
            })
            .map_err(|e| kafka_error(topic, format!("cannot start the watcher thread: {e}")))?;
        let stored = positions
            .into_iter()
            .filter(|&(p, _)| owner(topic, p, peers) == worker)
            .collect();
        Ok(KafkaSource {
            dataflow: dataflow.to_string(),
            topic: topic.to_string(),
            brokers: config.brokers.clone(),
            worker,
            peers,
            on_gap: config.on_gap,
            recheck_gaps: config.recheck_gaps,
            start: config.start,
            bounded,
            broker_timeout: config.broker_timeout,
            consumer,
            shared,
            poke,
            watcher_gone,
            waker,
            stored,
            parts: BTreeMap::new(),
            initial_count: None,
            seen_missing: false,
            rotate: 0,
        })
    }

    /// The topic read.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partitions this worker owns among those known so far.
    pub fn owned_partitions(&self) -> Vec<i32> {
        self.parts.keys().copied().collect()
    }

    /// Commits next offsets to the consumer group `rdg-<dataflow>`,
    /// asynchronously, for lag tools; call after rdg committed its state.
    /// Only this worker's partitions are committed. rdg never reads them
    /// back. A failed commit is logged by a later `poll`.
    pub fn commit_offsets(&self, positions: &BTreeMap<i32, i64>) -> Result<(), SourceError> {
        let mine: BTreeMap<i32, i64> = positions
            .iter()
            .filter(|&(&p, _)| owner(&self.topic, p, self.peers) == self.worker)
            .map(|(&p, &o)| (p, o))
            .collect();
        commit(&self.consumer, &self.topic, &mine)
    }

    /// Offsets of this source's partitions that the broker went past without
    /// delivering them, since it was created (see [`Skipped::note`]).
    pub fn skipped_offsets(&self) -> u64 {
        self.parts.values().map(|part| part.skipped.offsets).sum()
    }

    /// Records behind the end of the owned partitions: the sum of (high
    /// watermark − next offset), from watermarks at most one refresh
    /// interval old. `None` until the watermarks of every owned partition
    /// are known. Under-reported by brokers whose listed high watermark lags
    /// (tansu 0.6: the last batch's first offset + 1).
    pub fn lag(&self) -> Option<i64> {
        let s = lock(&self.shared);
        if s.partitions.is_none() || self.parts.is_empty() {
            return None;
        }
        let mut sum = 0i64;
        for (p, part) in &self.parts {
            let &(low, high) = s.watermarks.get(p)?;
            let next = match part.state {
                State::Pending => self.stored.get(p).copied().unwrap_or(low),
                _ => part.next,
            };
            sum = sum.saturating_add((high - next).max(0));
        }
        Some(sum)
    }

    /// Adds the owned partitions among `0..count` not yet known.
    fn discover(&mut self, count: i32) {
        let initial = *self
            .initial_count
            .get_or_insert(if self.seen_missing { 0 } else { count });
        for p in 0..count {
            if owner(&self.topic, p, self.peers) != self.worker || self.parts.contains_key(&p) {
                continue;
            }
            let added = p >= initial;
            if added {
                tracing::info!(
                    "new partition {}/{p}: reading it from its earliest offset",
                    self.topic
                );
            }
            self.parts.insert(
                p,
                Part {
                    state: State::Pending,
                    queue: None,
                    next: 0,
                    exact: false,
                    origin: Offset::Beginning,
                    fetch_from: 0,
                    added,
                    last_error: None,
                    skipped: Skipped::default(),
                },
            );
        }
        for p in self.stored.keys().filter(|&&p| p >= count) {
            tracing::warn!(
                "rdg stored a position for {}/{p}, but the topic has {count} partitions",
                self.topic
            );
        }
        self.stored.retain(|&p, _| p < count);
    }

    fn gap(&self, partition: i32, requested: i64, (earliest, latest): (i64, i64)) -> SourceError {
        SourceError::Gap {
            topic: self.topic.clone(),
            partition,
            requested,
            earliest,
            latest,
        }
    }

    /// Decides where each pending partition starts and assigns those that
    /// can start now.
    fn start_pending(&mut self, watermarks: &Watermarks) -> Result<(), SourceError> {
        let by_time = lock(&self.shared).by_time.clone();
        let mut want_by_time = Vec::new();
        let mut assign = Vec::new();
        let pending: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, part)| part.state == State::Pending)
            .map(|(&p, _)| p)
            .collect();
        for p in pending {
            let Some(&(low, high)) = watermarks.get(&p) else {
                continue;
            };
            let stored = self.stored.get(&p).copied();
            // Only an offset below the earliest is a gap known here. One past
            // the end shows when the partition's real end is reached
            // (`at_end`): some brokers' listed end lags their real one
            // (tansu 0.6 lists the last batch's first offset + 1).
            let (origin, next, exact) = match stored {
                Some(s) if s < low => match self.on_gap {
                    OnGap::Stop => return Err(self.gap(p, s, (low, high))),
                    OnGap::Earliest => {
                        tracing::warn!(
                            "{}: offset {s} of {}/{p} is no longer on the broker (available: \
                             {low}..{high}); continuing from offset {low} as --on-gap \
                             earliest asks",
                            self.dataflow,
                            self.topic
                        );
                        (Offset::Beginning, low, false)
                    }
                },
                Some(s) => (resume_at(s, low), s, true),
                None if self.parts.get(&p).is_some_and(|x| x.added) => {
                    (Offset::Beginning, low, false)
                }
                None => match self.start {
                    StartFrom::Earliest => (Offset::Beginning, low, false),
                    // The high watermark just fetched rather than
                    // `Offset::End`, which librdkafka resolves later: what
                    // counts as "already there" is decided here.
                    StartFrom::Latest => (Offset::Offset(high), high, false),
                    StartFrom::TimeMs(_) => match by_time.get(&p) {
                        Some(&Some(o)) => (resume_at(o, low), o, true),
                        Some(&None) => (Offset::End, high, false),
                        None => {
                            want_by_time.push(p);
                            continue;
                        }
                    },
                },
            };
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            part.origin = origin;
            part.next = next;
            part.exact = exact;
            part.fetch_from = fetch_start(origin, (low, high));
            assign.push((p, origin));
        }
        if !want_by_time.is_empty() {
            lock(&self.shared).want_by_time.extend(want_by_time);
            let _ = self.poke.send(());
        }
        if assign.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::with_capacity(assign.len());
        for &(p, origin) in &assign {
            self.split_queue(p)?;
            tpl.add_partition_offset(&self.topic, p, origin)
                .map_err(|e| kafka_error(&self.topic, e))?;
        }
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_error(&self.topic, format!("cannot assign partitions: {e}")))?;
        for (p, _) in assign {
            if let Some(part) = self.parts.get_mut(&p) {
                part.state = State::Active;
            }
            tracing::debug!("assigned {}/{p} to worker {}", self.topic, self.worker);
        }
        Ok(())
    }

    /// Gives partition `p` its own queue (before it is first assigned, so
    /// none of its messages reach the consumer's queue) with the waker as
    /// non-empty callback.
    fn split_queue(&mut self, p: i32) -> Result<(), SourceError> {
        let Some(part) = self.parts.get_mut(&p) else {
            return Ok(());
        };
        if part.queue.is_some() {
            return Ok(());
        }
        let mut queue = self
            .consumer
            .split_partition_queue(&self.topic, p)
            .ok_or_else(|| kafka_error(&self.topic, format!("no queue for partition {p}")))?;
        let w = self.waker.clone();
        queue.set_nonempty_callback(move || w.wake());
        part.queue = Some(queue);
        Ok(())
    }

    /// Restarts the fetch of `p` at `offset` (after an out-of-range error,
    /// which stops it).
    /// Continues partition `p` from its earliest available offset `low`
    /// (`--on-gap earliest`).
    fn restart_from_earliest(&mut self, p: i32, low: i64) -> Result<(), SourceError> {
        if let Some(part) = self.parts.get_mut(&p) {
            part.next = low;
            part.exact = false;
            part.origin = Offset::Beginning;
        }
        self.restart(p, Offset::Beginning)
    }

    fn restart(&mut self, p: i32, offset: Offset) -> Result<(), SourceError> {
        let watermarks = lock(&self.shared).watermarks.get(&p).copied();
        if let Some(part) = self.parts.get_mut(&p) {
            part.fetch_from = fetch_start(offset, watermarks.unwrap_or((0, 0)));
        }
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(&self.topic, p);
        self.consumer
            .incremental_unassign(&tpl)
            .map_err(|e| kafka_error(&self.topic, format!("cannot unassign {p}: {e}")))?;
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(&self.topic, p, offset)
            .map_err(|e| kafka_error(&self.topic, e))?;
        self.consumer
            .incremental_assign(&tpl)
            .map_err(|e| kafka_error(&self.topic, format!("cannot assign {p}: {e}")))?;
        if let Some(part) = self.parts.get_mut(&p) {
            part.state = State::Active;
        }
        Ok(())
    }

    /// Resolves out-of-range errors once fresh watermarks are in.
    fn check_gaps(&mut self, watermarks: &Watermarks, generation: u64) -> Result<(), SourceError> {
        let checking: Vec<(i32, u64)> = self
            .parts
            .iter()
            .filter_map(|(&p, part)| match part.state {
                State::Checking { after } => Some((p, after)),
                _ => None,
            })
            .collect();
        for (p, after) in checking {
            let Some(&(low, high)) = watermarks.get(&p).filter(|_| generation > after) else {
                continue;
            };
            let Some(part) = self.parts.get(&p) else {
                continue;
            };
            let (next, exact, origin) = (part.next, part.exact, part.origin);
            if !exact {
                // Nothing was promised for this partition yet (no stored
                // position, nothing delivered): start over where it started,
                // or at the end if that was a watermark now out of range.
                let at = match origin {
                    Offset::Offset(o) if o < low || o > high => Offset::End,
                    other => other,
                };
                tracing::debug!("{}/{p}: restarting at {at:?}", self.topic);
                self.restart(p, at)?;
            } else if next < low || next > high {
                match self.on_gap {
                    OnGap::Stop => return Err(self.gap(p, next, (low, high))),
                    OnGap::Earliest => {
                        tracing::warn!(
                            "{}: offset {next} of {}/{p} is no longer on the broker (available: \
                             {low}..{high}); continuing from offset {low} as --on-gap \
                             earliest asks",
                            self.dataflow,
                            self.topic
                        );
                        self.restart_from_earliest(p, low)?;
                    }
                }
            } else {
                tracing::warn!(
                    "{}/{p}: the broker refused offset {next} as out of range but has \
                     {low}..{high}; fetching it again",
                    self.topic
                );
                self.restart(p, resume_at(next, low))?;
            }
        }
        Ok(())
    }

    /// Serves the consumer's own queue: commit results and errors (logged by
    /// the context). A `None` from `poll` may also mean an event was served,
    /// so stop only after a few in a row.
    fn serve_consumer_queue(&mut self) -> Result<(), SourceError> {
        let mut nones = 0;
        let mut refetch = BTreeSet::new();
        for _ in 0..256 {
            match self.consumer.poll(Duration::ZERO) {
                None => {
                    nones += 1;
                    if nones >= 4 {
                        break;
                    }
                }
                Some(Ok(m)) => {
                    // Cannot happen while queues are split before the first
                    // assignment; if it does, fetch the partition again from
                    // its position rather than deliver out of order.
                    tracing::warn!(
                        "{}/{}: message at offset {} reached the consumer's queue instead \
                         of its partition's; fetching the partition again",
                        self.topic,
                        m.partition(),
                        m.offset()
                    );
                    refetch.insert(m.partition());
                }
                Some(Err(e)) => tracing::debug!("{}: {e}", self.topic),
            }
        }
        for p in refetch {
            let Some(part) = self.parts.get(&p).filter(|x| x.state == State::Active) else {
                continue;
            };
            let at = if part.exact {
                let low = lock(&self.shared).watermarks.get(&p).map_or(0, |w| w.0);
                resume_at(part.next, low)
            } else {
                part.origin
            };
            self.restart(p, at)?;
        }
        Ok(())
    }

    /// Drains the active partitions' queues round-robin into `out`, at most
    /// `max` records. Returns the number of records appended.
    fn read(&mut self, max: usize, out: &mut RawBatch) -> Result<usize, SourceError> {
        let active: Vec<i32> = self
            .parts
            .iter()
            .filter(|(_, part)| part.state == State::Active)
            .map(|(&p, _)| p)
            .collect();
        if active.is_empty() || max == 0 {
            return Ok(0);
        }
        self.rotate = (self.rotate + 1) % active.len();
        let mut got = 0;
        let mut ends = Vec::new();
        let mut checking = Vec::new();
        loop {
            let per = (max - got).div_ceil(active.len()).max(1);
            let mut more = false;
            for i in 0..active.len() {
                let p = active[(self.rotate + i) % active.len()];
                let Some(part) = self.parts.get_mut(&p) else {
                    continue;
                };
                if part.state != State::Active {
                    continue;
                }
                let budget = per.min(max - got);
                let (n, outcome) = drain(&self.topic, p, part, budget, self.recheck_gaps, out);
                got += n;
                match outcome {
                    Drained::Empty | Drained::Gap => {}
                    Drained::Full => more = true,
                    Drained::End => ends.push(p),
                    Drained::OutOfRange => checking.push(p),
                }
                if got >= max {
                    break;
                }
            }
            if !more || got >= max {
                break;
            }
        }
        if !ends.is_empty() {
            self.at_end(&ends)?;
        }
        self.fetch_gaps_again()?;
        if !checking.is_empty() {
            let generation = {
                let mut s = lock(&self.shared);
                s.want_refresh = true;
                s.generation
            };
            for p in checking {
                if let Some(part) = self.parts.get_mut(&p) {
                    part.state = State::Checking { after: generation };
                }
            }
            let _ = self.poke.send(());
        }
        Ok(got)
    }

    /// Fetches again, from [`RESUME_BACKTRACK`] before the offset due, each
    /// partition whose gap is being rechecked and is due another fetch.
    fn fetch_gaps_again(&mut self) -> Result<(), SourceError> {
        // Most reads: nothing is being rechecked (always, with the default,
        // which never starts a recheck).
        if self.recheck_gaps.is_zero()
            || !self
                .parts
                .values()
                .any(|part| part.skipped.recheck.is_some())
        {
            return Ok(());
        }
        let now = Instant::now();
        let due: Vec<(i32, i64)> = self
            .parts
            .iter_mut()
            .filter(|(_, part)| part.state == State::Active)
            .filter_map(|(&p, part)| part.skipped.fetch_again(now).then_some((p, part.next)))
            .collect();
        for (p, next) in due {
            let low = lock(&self.shared).watermarks.get(&p).map_or(0, |w| w.0);
            tracing::debug!("{}/{p}: fetching again for the gap at {next}", self.topic);
            self.restart(p, resume_at(next, low))?;
        }
        Ok(())
    }

    /// Partitions `ends` were read to their end. A position rdg stored past
    /// that end is a gap (the topic was recreated); otherwise a bounded read
    /// of the partition is complete.
    fn at_end(&mut self, ends: &[i32]) -> Result<(), SourceError> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| kafka_error(&self.topic, e))?;
        for &p in ends {
            let Some(part) = self.parts.get(&p) else {
                continue;
            };
            // The offset after the last record consumed (skipped ones
            // included); where the fetch started if none was.
            let end = match positions.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => part.fetch_from,
            };
            if part.exact && end < part.next {
                let requested = part.next;
                let low = lock(&self.shared).watermarks.get(&p).map_or(0, |w| w.0);
                match self.on_gap {
                    OnGap::Stop => return Err(self.gap(p, requested, (low, end))),
                    OnGap::Earliest => {
                        tracing::warn!(
                            "{}: offset {requested} of {}/{p} is past the partition's end \
                             ({end}; was the topic recreated?); continuing from its earliest \
                             offset as --on-gap earliest asks",
                            self.dataflow,
                            self.topic
                        );
                        self.restart_from_earliest(p, low)?;
                        continue;
                    }
                }
            }
            if self.bounded {
                self.finish(p);
            }
        }
        Ok(())
    }

    /// Bounded mode: `p` was read to its end; stop fetching it.
    fn finish(&mut self, p: i32) {
        if let Some(part) = self.parts.get_mut(&p) {
            part.state = State::Finished;
            part.queue = None;
        }
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition(&self.topic, p);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::debug!("unassigning finished {}/{p}: {e}", self.topic);
        }
    }
}

/// How far before a position a fetch starts (records before the position are
/// skipped as already delivered).
///
/// A Kafka broker answers a fetch with whole record batches, from the one
/// holding the fetch offset, and the client drops the records before it.
/// tansu 0.6 answers with the batches that *start* at or after the offset
/// instead: a resumed partition would lose the rest of the batch it stopped
/// in, or get nothing at all inside its last batch. Starting a batch's worth
/// earlier (librdkafka's producers put at most 10 000 records in a batch,
/// by default) costs reading that many records once per (re)assignment.
const RESUME_BACKTRACK: i64 = 10_000;

/// The offset a fetch from `offset` starts at, given the partition's
/// watermarks.
fn fetch_start(offset: Offset, (low, high): (i64, i64)) -> i64 {
    match offset {
        Offset::Offset(o) => o,
        Offset::End => high,
        _ => low,
    }
}

/// Where to fetch from to resume at `next`, given the earliest offset
/// `low`.
fn resume_at(next: i64, low: i64) -> Offset {
    Offset::Offset(next.saturating_sub(RESUME_BACKTRACK).max(low).min(next))
}

/// How draining one partition's queue ended.
enum Drained {
    /// The queue is empty.
    Empty,
    /// The budget ran out; the queue may hold more.
    Full,
    /// The partition was read to its end (the end-of-partition event).
    End,
    /// The broker refused the fetch offset; fetching has stopped.
    OutOfRange,
    /// The broker went past the offset due, and the gap is being fetched
    /// again ([`KafkaConfig::recheck_gaps`]).
    Gap,
}

/// Moves up to `budget` records of partition `p` from its queue to `out`.
fn drain(
    topic: &str,
    p: i32,
    part: &mut Part,
    budget: usize,
    recheck: Duration,
    out: &mut RawBatch,
) -> (usize, Drained) {
    let Some(queue) = part.queue.as_ref() else {
        return (0, Drained::Empty);
    };
    let mut n = 0;
    loop {
        if n >= budget {
            return (n, Drained::Full);
        }
        match queue.poll(Duration::ZERO) {
            None => return (n, Drained::Empty),
            Some(Ok(m)) => {
                let o = m.offset();
                if part.exact && o < part.next {
                    // Fetched again after a restart: already delivered.
                    continue;
                }
                if part.exact && o > part.next {
                    let now = Instant::now();
                    if part.skipped.on_gap(part.next, recheck, now) == AfterGap::Refetch {
                        return (n, Drained::Gap);
                    }
                    part.skipped.note(topic, p, part.next, o);
                } else {
                    part.skipped.delivered(topic, p, o);
                }
                out.push(
                    u32::try_from(p).unwrap_or(0),
                    u64::try_from(o).unwrap_or(0),
                    m.payload().unwrap_or_default(),
                    m.timestamp().to_millis(),
                );
                n += 1;
                part.next = o + 1;
                part.exact = true;
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // The fetch position reached the partition's high watermark
                // as the last fetch response gave it.
                return (n, Drained::End);
            }
            Some(Err(e)) => {
                let code = e.rdkafka_error_code();
                if matches!(
                    code,
                    Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
                ) {
                    tracing::debug!("{topic}/{p}: {e}");
                    return (n, Drained::OutOfRange);
                }
                let text = e.to_string();
                if part.last_error.as_deref() == Some(text.as_str()) {
                    tracing::debug!("{topic}/{p}: {text}");
                } else {
                    tracing::warn!("fetching {topic}/{p}: {text}");
                }
                part.last_error = Some(text);
            }
        }
    }
}

impl Source for KafkaSource {
    fn dataflow(&self) -> &str {
        &self.dataflow
    }

    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError> {
        self.serve_consumer_queue()?;
        let (partitions, missing, watermarks, generation, unreachable) = {
            let s = lock(&self.shared);
            (
                s.partitions,
                s.missing,
                s.watermarks.clone(),
                s.generation,
                s.unreachable.clone(),
            )
        };
        if let Some((since, detail)) = unreachable
            && since.elapsed() >= self.broker_timeout
        {
            return Err(SourceError::Broker {
                brokers: self.brokers.clone(),
                detail: format!("{detail} (unreachable for {} s)", since.elapsed().as_secs()),
            });
        }
        if missing && self.bounded {
            return Err(SourceError::MissingTopic {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
            });
        }
        self.seen_missing |= missing && self.initial_count.is_none();
        if let Some(count) = partitions {
            self.discover(count);
        }
        self.start_pending(&watermarks)?;
        self.check_gaps(&watermarks, generation)?;
        if self.read(max, out)? > 0 {
            return Ok(Poll::Ready);
        }
        if self.bounded
            && partitions.is_some()
            && self.parts.values().all(|p| p.state == State::Finished)
        {
            return Ok(Poll::Done);
        }
        Ok(Poll::Idle)
    }

    fn describe(&self, partition: u32, offset: u64) -> String {
        format!("{}/{partition}/{offset}", self.topic)
    }

    fn partition_key(&self, partition: u32) -> String {
        partition.to_string()
    }

    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>) {
        self.waker.set(waker);
        // Anything that arrived before the waker was set did not wake
        // anyone: let the caller poll once.
        self.waker.wake();
    }

    fn lag(&self) -> Option<i64> {
        KafkaSource::lag(self)
    }

    fn skipped_offsets(&self) -> u64 {
        KafkaSource::skipped_offsets(self)
    }
}

/// Commits next offsets of `topic` through `consumer` (whose `group.id` is
/// the group), asynchronously.
fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
) -> Result<(), SourceError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::with_capacity(positions.len());
    for (&p, &next) in positions {
        tpl.add_partition_offset(topic, p, Offset::Offset(next))
            .map_err(|e| kafka_error(topic, e))?;
    }
    consumer
        .commit(&tpl, CommitMode::Async)
        .map_err(|e| kafka_error(topic, format!("cannot commit offsets: {e}")))
}

/// Commits a dataflow's positions to its consumer group `rdg-<dataflow>`
/// from outside the workers (e.g. the thread that commits rdg's state),
/// with a client of its own. Commits are asynchronous; failures are logged
/// on the next call.
pub struct OffsetCommitter {
    topic: String,
    group: String,
    consumer: BaseConsumer<RdgContext>,
}

impl OffsetCommitter {
    pub fn new(
        dataflow: &str,
        topic: &str,
        config: &KafkaConfig,
    ) -> Result<OffsetCommitter, SourceError> {
        let group = group_id(dataflow);
        let what = format!("offset committer of `{topic}` (group {group})");
        let consumer = consumer_config(config, &group, &format!("rdg-{dataflow}-commit"))
            .create_with_context(RdgContext::new(what))
            .map_err(|e| kafka_error(topic, e))?;
        Ok(OffsetCommitter {
            topic: topic.to_string(),
            group,
            consumer,
        })
    }

    /// The consumer group committed to.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Commits next offsets (last processed + 1) by partition.
    pub fn commit(&self, positions: &BTreeMap<i32, i64>) -> Result<(), SourceError> {
        // Serve the results of earlier commits (logged by the context).
        for _ in 0..16 {
            if self.consumer.poll(Duration::ZERO).is_none() {
                break;
            }
        }
        commit(&self.consumer, &self.topic, positions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_is_fetched_again_until_its_offset_comes_or_the_time_is_up() {
        let t0 = Instant::now();
        let recheck = Duration::from_secs(2);
        let mut s = Skipped::default();
        // Off: a gap is delivered past at once.
        assert_eq!(s.on_gap(5, Duration::ZERO, t0), AfterGap::Deliver);
        assert!(!s.fetch_again(t0));
        // 5 due, 9 came: fetched again at once, then not more often than
        // every pause.
        assert_eq!(s.on_gap(5, recheck, t0), AfterGap::Refetch);
        assert!(s.fetch_again(t0));
        // Not again until the broker goes past 5 again (the fetch is in
        // flight), and then not before the pause.
        assert!(!s.fetch_again(t0 + RECHECK_PAUSE));
        assert_eq!(
            s.on_gap(5, recheck, t0 + RECHECK_PAUSE / 2),
            AfterGap::Refetch
        );
        assert!(!s.fetch_again(t0 + RECHECK_PAUSE / 2));
        assert!(s.fetch_again(t0 + RECHECK_PAUSE));
        // 4 came (below the offset due: skipped by the caller), then 5: closed.
        s.delivered("t", 0, 4);
        assert!(s.recheck.is_some());
        s.delivered("t", 0, 5);
        assert_eq!((s.recheck.is_none(), s.recovered), (true, 1));
        // Another gap, at 20, that stays until the time is up: delivered past.
        assert_eq!(s.on_gap(20, recheck, t0), AfterGap::Refetch);
        assert_eq!(s.on_gap(20, recheck, t0 + recheck / 2), AfterGap::Refetch);
        assert_eq!(s.on_gap(20, recheck, t0 + recheck), AfterGap::Deliver);
        assert!(s.recheck.is_none() && !s.fetch_again(t0 + recheck));
    }

    #[test]
    fn skipped_offsets_count_what_each_gap_went_past() {
        let mut skipped = Skipped::default();
        // Offset 5 was due and 6 came: one offset; then 10 due, 13 came.
        skipped.note("t", 0, 5, 6);
        skipped.note("t", 0, 10, 13);
        assert_eq!((skipped.offsets, skipped.gaps), (4, 2));
    }

    #[test]
    fn owner_is_deterministic_and_balanced() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for peers in 1..6 {
            let mut counts = vec![0; peers];
            for p in 0..(peers as i32 * 4) {
                let w = owner("playback", p, peers);
                assert!(w < peers);
                counts[w] += 1;
            }
            assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
        }
        assert_eq!(owner("t", 3, 0), 0);
        // Consecutive partitions go to consecutive workers.
        let w0 = owner("gaming", 0, 3);
        assert_eq!(owner("gaming", 1, 3), (w0 + 1) % 3);
    }

    #[test]
    fn sources_move_between_threads() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<KafkaSource>();
        send::<OffsetCommitter>();
        sync::<OffsetCommitter>();
    }

    #[test]
    fn forced_settings_win() {
        let mut config = KafkaConfig::default();
        config
            .settings
            .insert("enable.auto.commit".into(), "true".into());
        config
            .settings
            .insert("fetch.wait.max.ms".into(), "50".into());
        let c = consumer_config(&config, "rdg-x", "rdg-x-0");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("error"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("50"));
        assert_eq!(c.get("group.id"), Some("rdg-x"));
    }

    #[test]
    fn gap_error_names_the_way_out() {
        let e = SourceError::Gap {
            topic: "playback".into(),
            partition: 2,
            requested: 10,
            earliest: 500,
            latest: 900,
        };
        let text = e.to_string();
        assert!(text.contains("playback/2"), "{text}");
        assert!(text.contains("--on-gap earliest"), "{text}");
        assert!(text.contains("500..900"), "{text}");
    }
}
