//! Wiring: the only place (with the binary's `cli`) that sees every layer.
//! `replay` checks the definitions, maps files to dataflows, opens the store,
//! runs the dataflow over file sources and commits what it emits.
//!
//! Invariant: the store receives a time's changes only when every worker has
//! reported a frontier beyond that time, all of them in one atomic commit
//! together with the dead letters, counters and positions of the same times.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::dataflow::{
    self, Committed, Contributions, Emitted, RunConfig, StageSeconds, StageTimes, Start,
};
use crate::model::{Change, DeadLetter, Progress};
use crate::source::{FileSource, Shared, Source, TopicFiles};
use crate::spec::{self, Plan, SpecErrors};
use crate::store::{
    BulkLoad, Counts, Engine, PendingCommit, Store, StoreError, StoreOptions, WriteStats,
};

mod encode;
pub mod kafka;
mod progress;

use encode::Encoders;
use progress::ReplayProgress;
pub use progress::ShowProgress;

/// The first panic of the process, recorded by [`install_panic_hook`].
static FIRST_PANIC: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Replaces Rust's panic output with one line for the first panic and
/// silence for the rest: when a peer process of a cluster dies, every
/// communication and worker thread panics in turn, and the first message is
/// the one that says why. [`run_into_store`] reports it as an error. A
/// panic the store contains (sled's open, on damaged files) is not shown.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if crate::store::panic_is_contained() {
            // The store caught it and refuses the state: nothing stopped.
            return;
        }
        let what = info.payload_as_str().unwrap_or("unknown panic");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let first = format!("{what}{at}");
        if FIRST_PANIC.set(first.clone()).is_ok() {
            eprintln!("error: a thread stopped: {first}");
            if is_lost_peer(&first) {
                // Timely's other threads now panic in turn, some while
                // unwinding (which aborts the process before the run could
                // report). Nothing more can be committed without the peer,
                // and what was committed is atomic: say why and stop here.
                eprintln!("error: {}", lost_peer(&first));
                std::process::exit(2);
            }
        }
    }));
}

/// A panic of timely's communication: a peer process went away.
fn is_lost_peer(first: &str) -> bool {
    first.contains("timely communication error")
}

/// What a process of a cluster says when a peer went away.
fn lost_peer(first: &str) -> String {
    format!(
        "lost the connection to a peer process ({first}). A timely cluster cannot continue without every process, so this one stops too; what was committed is safe: restart every process of the cluster to resume"
    )
}

/// Explains a worker panic; a lost peer gets the cluster's story.
fn panic_error() -> AppError {
    let first = FIRST_PANIC
        .get()
        .cloned()
        .unwrap_or_else(|| "a dataflow thread panicked".to_string());
    if is_lost_peer(&first) {
        AppError::Input(lost_peer(&first))
    } else {
        AppError::Input(format!("a dataflow thread panicked: {first}"))
    }
}

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dataflow(#[from] dataflow::DataflowError),
    #[error("{0}")]
    Input(String),
}

/// What `rdg replay` is asked to do.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub dataflows: PathBuf,
    pub state: PathBuf,
    pub workers: usize,
    /// Files whose topic is their name up to the first dot.
    pub files: Vec<PathBuf>,
    /// Files with an explicit topic (`--topic TOPIC=FILE`).
    pub topic_files: Vec<(String, PathBuf)>,
    pub batch: usize,
    /// A progress bar, status lines, or nothing.
    pub progress: ShowProgress,
    /// The store's engine (for a new state) and cache.
    pub store: StoreOptions,
}

/// The end-of-replay report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReplaySummary {
    pub events: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub nodes: u64,
    pub edges: u64,
    pub identifiers: u64,
    pub clusters: u64,
    pub elapsed_s: f64,
    pub events_per_s: f64,
    /// The state's engine (`fjall` or `sled`).
    pub store_engine: String,
    /// True when the state was empty and was bulk loaded.
    pub bulk_load: bool,
    /// Keys the store wrote (puts and removals).
    pub store_keys_written: u64,
    pub store_bytes_written: u64,
    /// Seconds spent inside the engine's writes.
    pub store_write_s: f64,
    /// `store_keys_written / store_write_s`.
    pub store_keys_per_s: f64,
    /// Seconds the store spent merging sorted runs at the end of a bulk
    /// load (0 otherwise), beside `store_write_s`.
    pub store_merge_s: f64,
    /// Seconds spent per stage, summed over threads: decode, fold,
    /// identity, collect (the dataflow's workers) and commit (the writer,
    /// engine included).
    pub stage_s: BTreeMap<String, f64>,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "events {}  dead letters {}  late {}",
            self.events, self.dead_letters, self.late
        )?;
        writeln!(
            f,
            "nodes {}  edges {}  identifiers {}  clusters {}",
            self.nodes, self.edges, self.identifiers, self.clusters
        )?;
        writeln!(
            f,
            "elapsed {:.2}s  {:.0} events/s",
            self.elapsed_s, self.events_per_s
        )?;
        write!(
            f,
            "store {}{}: {} keys in {:.2}s of engine writes ({:.0} keys/s)",
            self.store_engine,
            if self.bulk_load { " (bulk load)" } else { "" },
            self.store_keys_written,
            self.store_write_s,
            self.store_keys_per_s
        )?;
        if self.store_merge_s > 0.0 {
            write!(f, ", sorted runs merged in {:.2}s", self.store_merge_s)?;
        }
        if !self.stage_s.is_empty() {
            write!(
                f,
                "\ntime by stage (summed over threads): {}",
                stage_list(&self.stage_s, 2)
            )?;
        }
        Ok(())
    }
}

/// Assigns each file to the dataflow reading its topic; files of one topic
/// keep the order given.
pub fn assign_files(
    plan: &Plan,
    files: &[PathBuf],
    topic_files: &[(String, PathBuf)],
) -> Result<Vec<TopicFiles>, AppError> {
    let mut by_dataflow: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let topics: Vec<&str> = plan.dataflows.iter().map(|d| d.topic.as_str()).collect();
    let mut place = |topic: &str, file: &Path| -> Result<(), AppError> {
        let d = plan
            .dataflows
            .iter()
            .find(|d| d.topic == topic)
            .ok_or_else(|| {
                AppError::Input(format!(
                    "{}: no definition reads topic `{topic}` (known topics: {}); name the file after its topic or pass --topic TOPIC=FILE",
                    file.display(),
                    topics.join(", ")
                ))
            })?;
        if !file.is_file() {
            return Err(AppError::Input(format!("{}: no such file", file.display())));
        }
        by_dataflow
            .entry(d.name.clone())
            .or_default()
            .push(file.to_path_buf());
        Ok(())
    };
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let topic = name.split('.').next().unwrap_or_default().to_string();
        place(&topic, f)?;
    }
    for (t, f) in topic_files {
        place(t, f)?;
    }
    Ok(by_dataflow
        .into_iter()
        .map(|(dataflow, files)| TopicFiles { dataflow, files })
        .collect())
}

/// Backfills files through the dataflows into the state directory.
pub fn replay(opts: &ReplayOptions) -> Result<ReplaySummary, AppError> {
    let started = Instant::now();
    let plan = Arc::new(spec::load(&opts.dataflows)?);
    let topics = assign_files(&plan, &opts.files, &opts.topic_files)?;
    let total_bytes: u64 = topics
        .iter()
        .flat_map(|t| t.files.iter())
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let store = Store::open_with(&opts.state, &opts.store)?;
    let bulk = store.is_empty()?;
    let bytes_read = Arc::new(AtomicU64::new(0));
    let workers = opts.workers.max(1);
    let clock = Arc::new(AtomicU64::new(1));
    // Every worker reads (and decodes) every topic: each takes the next
    // batch of lines of a topic's files under that topic's lock.
    let mut handles: Vec<Vec<Option<Shared>>> = topics
        .iter()
        .map(|t| {
            let file = FileSource::new(t.clone(), bytes_read.clone());
            Shared::handles(Box::new(file), clock.clone(), workers)
                .into_iter()
                .map(Some)
                .collect()
        })
        .collect();
    let sources = {
        let handles = Mutex::new(std::mem::take(&mut handles));
        Arc::new(
            move |index: usize, _peers: usize, _resume: &dataflow::Positions| {
                let mut handles = handles.lock().unwrap_or_else(|p| p.into_inner());
                Ok(handles
                    .iter_mut()
                    .filter_map(|per_worker| per_worker.get_mut(index).and_then(Option::take))
                    .map(|h| Box::new(h) as Box<dyn Source>)
                    .collect())
            },
        )
    };
    let config = RunConfig {
        workers,
        batch: opts.batch.max(1),
        clock,
        step: dataflow::REPLAY_STEP,
        ..RunConfig::default()
    };
    let mut progress = ReplayProgress::files(opts.progress, &bytes_read, total_bytes);
    let ran = replay_into_store(&store, bulk, plan, config, sources, &mut progress);
    progress.clear();
    let totals = ran?;
    let counts = counts_after(&store, &totals, workers)?;
    let mut summary = ReplaySummary::new(&totals, &counts, started.elapsed());
    summary.add_store(&store, bulk);
    Ok(summary)
}

/// The sizes of the state a replay left. After a replay that wrote each
/// record once, at its end (a bulk load, or a fjall replay continuing a
/// state as one commit), the sum of what the collectors of this process's
/// `workers` counted, with the records and assignments the rebuild loaded
/// (`dataflow::Tally`: exact there, and `tests/oracle.rs` holds it equal to
/// the store's count on random inputs, continues included), and the dead
/// letters of the store's counters; otherwise, or when a worker's tally is
/// missing or inexact, a scan of the store ([`Store::counts`]).
pub fn counts_after(store: &Store, totals: &Totals, workers: usize) -> Result<Counts, AppError> {
    let tallies = &totals.tallies;
    if tallies.len() == workers && tallies.values().all(|t| t.exact) {
        let sum = |f: fn(&dataflow::Tally) -> i64| tallies.values().map(f).sum::<i64>();
        let identifiers = u64::try_from(sum(|t| t.identifiers));
        let clusters = u64::try_from(sum(|t| t.clusters));
        if let (Ok(identifiers), Ok(clusters)) = (identifiers, clusters) {
            let meta = store.meta()?;
            return Ok(Counts {
                nodes: tallies.values().map(|t| t.nodes).sum(),
                edges: tallies.values().map(|t| t.edges).sum(),
                identifiers,
                clusters,
                dead_letters: meta.dataflows.values().map(|d| d.dead_letters).sum(),
            });
        }
    }
    Ok(store.counts()?)
}

/// [`run_into_store`] for a replay. Into an empty state (`bulk`) through a
/// bulk load, which leaves the state empty if the replay fails; into a
/// non-empty fjall state as one atomic commit at the end, which leaves the
/// state as it was if the replay fails; into a non-empty sled state (whose
/// transactions hold everything in memory, slowly) by commits, which leave
/// a consistent prefix.
pub fn replay_into_store(
    store: &Store,
    bulk: bool,
    plan: Arc<Plan>,
    config: RunConfig,
    sources: dataflow::SourceFactory,
    observer: &mut dyn Observer,
) -> Result<Totals, AppError> {
    let mut sink = if bulk {
        Sink::Bulk(Box::new(store.bulk_load()?))
    } else if store.engine() == Engine::Fjall {
        Sink::Single(Box::new(store.begin_large_commit()?))
    } else {
        return run_into_store(store, plan, config, sources, observer);
    };
    // Nothing of the run is visible before it finishes: each changed record
    // written once, identity computed once, at the end, is all it needs.
    let config = RunConfig {
        at_end: true,
        tally: true,
        ..config
    };
    let ran = run_into_sink(store, &mut sink, plan, config, sources, observer);
    let began = Instant::now();
    let mut totals = match sink {
        Sink::Bulk(load) => {
            let totals = ran?;
            observer.finishing("merging and writing the sorted buffers");
            // Fails with an encoder's error if one failed (the run stopped).
            load.finish()?;
            totals
        }
        Sink::Single(commit) => {
            let finished = ran.and_then(|totals| {
                observer.finishing("committing");
                commit.finish()?;
                Ok(totals)
            });
            // As after commits: flushed also after an error.
            let flushed = store.flush();
            let totals = finished?;
            flushed?;
            totals
        }
        Sink::Commit(_) => ran?,
    };
    *totals.stages.entry("commit".to_string()).or_default() += began.elapsed().as_secs_f64();
    Ok(totals)
}

impl ReplaySummary {
    /// The summary of a run that committed `totals`, over a store that now
    /// holds `counts`.
    pub fn new(totals: &Totals, counts: &Counts, elapsed: Duration) -> ReplaySummary {
        let elapsed = elapsed.as_secs_f64();
        ReplaySummary {
            events: totals.events,
            dead_letters: totals.dead_letters,
            late: totals.late,
            nodes: counts.nodes,
            edges: counts.edges,
            identifiers: counts.identifiers,
            clusters: counts.clusters,
            elapsed_s: elapsed,
            events_per_s: if elapsed > 0.0 {
                totals.events as f64 / elapsed
            } else {
                0.0
            },
            stage_s: totals.stages.clone(),
            ..ReplaySummary::default()
        }
    }

    /// Adds what `store` wrote (its write statistics).
    pub fn add_store(&mut self, store: &Store, bulk: bool) {
        let w: WriteStats = store.write_stats();
        self.store_engine = store.engine().to_string();
        self.bulk_load = bulk;
        self.store_keys_written = w.keys_written;
        self.store_bytes_written = w.bytes_written;
        self.store_write_s = w.engine_time.as_secs_f64();
        self.store_keys_per_s = w.keys_per_s();
        self.store_merge_s = w.merge_time.as_secs_f64();
    }
}

/// Counters summed over what was committed by one run.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub events: u64,
    pub dead_letters: u64,
    pub late: u64,
    /// Per dataflow: what this run committed, and the latest lag and
    /// watermark.
    pub dataflows: BTreeMap<String, DataflowTotals>,
    /// The state is rebuilt and the sources are assigned: every worker has
    /// passed time 0.
    pub ready: bool,
    /// Seconds spent so far per stage, summed over threads: the dataflow's
    /// (decode, fold, identity, collect) and the writer's `commit`.
    pub stages: BTreeMap<String, f64>,
    /// What each worker's collector counted, by worker (runs that ask for
    /// it: bulk loads; see [`counts_after`]).
    pub tallies: BTreeMap<usize, dataflow::Tally>,
}

/// One dataflow's share of [`Totals`].
#[derive(Clone, Debug, Default)]
pub struct DataflowTotals {
    pub events: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub watermark: Option<i64>,
    /// Messages behind the end of its input, summed over its sources.
    pub lag: Option<i64>,
    /// Positions its sources went past without a record (Kafka offset
    /// gaps), summed over its sources.
    pub skipped_offsets: u64,
}

/// One commit, as the writer reports it to its [`Observer`].
#[derive(Clone, Debug)]
pub struct CommitReport {
    /// What the commit holds of the sources' progress.
    pub progress: Progress,
    /// How long the store took to write it.
    pub took: Duration,
    /// In a live run, one entry per time the commit holds; empty otherwise.
    pub times: Vec<TimeDelays>,
}

/// How long one live time took to reach the store, in two parts: from its
/// opening (the wall-clock millisecond that names it, when a worker began
/// reading into it) to the hand-over of its last changes to the writer
/// (reading, folds, identity, the collectors, and every worker's frontier
/// passing it), and from there to the start of the commit that writes
/// them (the writer finishing the commit before). With the commit's own
/// duration they make up rdg's share of a record's way to being
/// queryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeDelays {
    pub dataflow: Duration,
    pub wait: Duration,
}

impl TimeDelays {
    /// The delays of time `t` (opened at wall-clock ms `t`), its last
    /// changes handed over at `handed_ms`, committed from `began_ms`. A
    /// clock stepped backwards makes a part 0, never negative.
    pub fn of(t: u64, handed_ms: u64, began_ms: u64) -> TimeDelays {
        TimeDelays {
            dataflow: Duration::from_millis(handed_ms.saturating_sub(t)),
            wait: Duration::from_millis(began_ms.saturating_sub(handed_ms)),
        }
    }
}

/// Called by [`run_into_store`] on the calling thread.
pub trait Observer {
    /// About ten times a second.
    fn tick(&mut self, _totals: &Totals) {}
    /// After each successful commit, with what it committed, how long the
    /// store took to write it and how long its times took to reach it.
    fn committed(&mut self, _report: &CommitReport) {}
    /// Once the dataflow has handed on everything, before a replay's last
    /// step (a bulk load's merge and flush, or its one commit), which
    /// takes seconds at scale and ticks nothing.
    fn finishing(&mut self, _what: &'static str) {}
}

impl<F: FnMut(&Totals)> Observer for F {
    fn tick(&mut self, totals: &Totals) {
        self(totals)
    }
}

/// Where the [`Writer`] sends complete times.
enum Sink<'a> {
    /// One atomic commit per write.
    Commit(&'a Store),
    /// Chunks of a bulk load into an empty state.
    Bulk(Box<BulkLoad>),
    /// Everything of the run in one atomic commit, at its end.
    Single(Box<PendingCommit>),
}

impl Sink<'_> {
    /// Writes the changes of several times (in time order) with their dead
    /// letters and progress: one commit, or chunks of the bulk load.
    fn write(
        &mut self,
        parts: &[&[Change]],
        dead: &[DeadLetter],
        progress: &Progress,
    ) -> Result<(), StoreError> {
        match self {
            Sink::Commit(store) => store.commit_parts(parts, dead, progress),
            Sink::Bulk(load) => {
                for changes in parts {
                    load.write(changes, &[], &Progress::default())?;
                }
                load.write(&[], dead, progress)
            }
            Sink::Single(commit) => {
                for changes in parts {
                    commit.changes(changes)?;
                }
                commit.add(dead, progress);
                Ok(())
            }
        }
    }

    /// Takes in what the workers' encoders handed over (a bulk load's:
    /// they wait while too much is waiting).
    fn take_in(&mut self) -> Result<(), StoreError> {
        match self {
            Sink::Bulk(load) => load.take_in(),
            Sink::Commit(_) | Sink::Single(_) => Ok(()),
        }
    }

    /// The run's folds' records are all in (a bulk load's): their
    /// namespaces can be written while identity's assignments are computed
    /// ([`Sink::write_early`]); nothing else writes before a time is complete.
    fn held_final(&mut self) -> Result<(), StoreError> {
        match self {
            Sink::Bulk(load) => load.held_final(),
            Sink::Commit(_) | Sink::Single(_) => Ok(()),
        }
    }

    /// Whether namespaces wait to be written early (a bulk load's).
    fn writes_early(&self) -> bool {
        match self {
            Sink::Bulk(load) => load.writes_early(),
            Sink::Commit(_) | Sink::Single(_) => false,
        }
    }

    /// Writes the next namespace that waits to be written early.
    fn write_early(&mut self) -> Result<(), StoreError> {
        match self {
            Sink::Bulk(load) => load.write_early(),
            Sink::Commit(_) | Sink::Single(_) => Ok(()),
        }
    }

    /// After a failure: the encoders never wait for their runs to be taken.
    fn close_inbox(&self) {
        if let Sink::Bulk(load) = self {
            load.close_inbox();
        }
    }

    /// Time the workers' encoders spent so far (a bulk load's; none else).
    fn encoding(&self) -> Duration {
        match self {
            Sink::Bulk(load) => load.encoders_busy(),
            Sink::Commit(_) | Sink::Single(_) => Duration::ZERO,
        }
    }

    /// Whether changes are written as they arrive (the run's records come
    /// once each, at its end, and nothing is visible before it finishes).
    fn on_receipt(&self) -> bool {
        !matches!(self, Sink::Commit(_))
    }
}

/// Runs the dataflow and commits everything it emits; `observer` hears
/// about progress on the calling thread while it runs.
pub fn run_into_store(
    store: &Store,
    plan: Arc<Plan>,
    config: RunConfig,
    sources: dataflow::SourceFactory,
    observer: &mut dyn Observer,
) -> Result<Totals, AppError> {
    let totals = run_into_sink(
        store,
        &mut Sink::Commit(store),
        plan,
        config,
        sources,
        observer,
    );
    // Flushed also after an error (what was committed stays), but the
    // run's own error is the one reported: after a failed write the engine
    // refuses everything else (fjall: "Poisoned"), which says nothing of why.
    let flushed = store.flush();
    let totals = totals?;
    flushed?;
    Ok(totals)
}

/// Runs the dataflow and writes everything it emits to `sink`.
fn run_into_sink(
    store: &Store,
    sink: &mut Sink<'_>,
    plan: Arc<Plan>,
    config: RunConfig,
    sources: dataflow::SourceFactory,
    observer: &mut dyn Observer,
) -> Result<Totals, AppError> {
    let start = Arc::new(start_of(store, config.cluster.is_none())?);
    let workers = config.workers;
    // Commits that readers or a restart can see end at identity steps; the
    // chunks of a bulk load are seen by nobody until it finishes.
    let align = match sink {
        Sink::Bulk(_) | Sink::Single(_) => 1,
        Sink::Commit(_) => config.step,
    };
    let stop = config.stop.clone();
    let stages = config.stages.clone();
    // A live run's times are wall-clock milliseconds from here on (before
    // them: the rebuild's time 0, and a first time that may be 1).
    let live_since = config.live.then(dataflow::wall_clock_ms);
    let committed = Arc::new(Committed::new(0));
    let config = RunConfig {
        committed: committed.clone(),
        ..config
    };
    // Each message with the wall-clock millisecond it was handed over (0
    // in a replay).
    let (tx, rx) = mpsc::channel::<(Emitted, u64)>();
    let backlog = Arc::new(Backlog::default());
    let sent = backlog.clone();
    // A bulk load's changes are encoded on the workers' threads.
    let shares = workers.max(1);
    let encoders = match sink {
        Sink::Bulk(load) => Some(Arc::new(Encoders::new(
            (0..shares).map(|_| load.encoder(shares)).collect(),
            stop.clone(),
        ))),
        // A single commit gained nothing from it (docs/performance.md).
        Sink::Commit(_) | Sink::Single(_) => None,
    };
    let encoding = encoders.clone();
    let emit: dataflow::Emitter = Arc::new(move |e| {
        let e = match &encoding {
            Some(encoders) => match encoders.encode(e) {
                Some(e) => e,
                None => return,
            },
            None => e,
        };
        if let Emitted::Data { changes, .. } = &e {
            sent.add(changes.len());
        }
        // Stamped in live runs only: a replay's writer reports no delays.
        let handed_ms = live_since.map_or(0, |_| dataflow::wall_clock_ms());
        // `Sender` is `Sync`: the workers send side by side, no lock. The
        // receiver outlives the run; a send can only fail after a commit
        // error, when nothing more is wanted.
        let _ = tx.send((e, handed_ms));
    });
    std::thread::scope(|s| {
        let handle = s.spawn(move || dataflow::run(config, plan, start, sources, emit));
        let mut writer = Writer::new(workers, committed, align, live_since);
        let result = write_all(&rx, &mut writer, sink, &backlog, (&stop, &stages), observer);
        let joined = handle.join().map_err(|_| panic_error()).and_then(|r| {
            r.map_err(|e| match e {
                dataflow::DataflowError::Timely(_) if FIRST_PANIC.get().is_some() => panic_error(),
                e => AppError::from(e),
            })
        });
        if let Some(encoders) = &encoders {
            encoders.finish();
        }
        writer.totals.stages = stage_map(&stages.seconds(), writer.commit_s, sink.encoding());
        result.and(joined).map(|()| writer.totals.clone())
    })
}

/// Where a run starts: the stored watermarks and positions, and the stored
/// contributions to rebuild the folds from (none for an empty state), with
/// every stored identity assignment when `one_process` (identity starts
/// from them, `dataflow::rebuild`).
fn start_of(store: &Store, one_process: bool) -> Result<Start, AppError> {
    let meta = store.meta()?;
    let watermarks = meta
        .dataflows
        .iter()
        .filter_map(|(name, m)| m.watermark.map(|w| (name.clone(), w)))
        .collect();
    let contributions: Option<Contributions> = if store.is_empty()? {
        None
    } else {
        Some(Box::new(
            if one_process {
                store.contributions_and_identity()
            } else {
                store.contributions()
            }
            .map(|c| c.map_err(|e| e.to_string())),
        ))
    };
    let positions = meta
        .positions
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    Ok(Start {
        watermarks,
        contributions: Mutex::new(contributions),
        positions,
    })
}

/// The writer's loop: takes what the workers emit until they are done,
/// writes it to `sink` and commits what is complete. After a failed write
/// it sets `stop` and only drains, so that no worker waits on the backlog;
/// returns the first error.
fn write_all(
    rx: &mpsc::Receiver<(Emitted, u64)>,
    writer: &mut Writer,
    sink: &mut Sink<'_>,
    backlog: &Backlog,
    (stop, stages): (&AtomicBool, &StageTimes),
    observer: &mut dyn Observer,
) -> Result<(), AppError> {
    let mut result: Result<(), AppError> = Ok(());
    loop {
        // While a bulk load writes namespaces early, one between looks at
        // the messages.
        let wait = if result.is_ok() && sink.writes_early() {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match rx.recv_timeout(wait) {
            Ok(e) => {
                let mut next = Some(e);
                while let Some((e, handed_ms)) = next.take().or_else(|| rx.try_recv().ok()) {
                    let n = match &e {
                        Emitted::Data { changes, .. } => changes.len(),
                        _ => 0,
                    };
                    // After a failed write the rest is only drained, so
                    // that no worker waits on the backlog.
                    if result.is_ok()
                        && let Err(e) = writer.receive(e, handed_ms, sink)
                    {
                        stop.store(true, Ordering::Relaxed);
                        result = Err(e.into());
                    }
                    backlog.take(n);
                }
                if result.is_ok() {
                    match writer.commit_ready(sink) {
                        Ok(Some(report)) => observer.committed(&report),
                        Ok(None) => {}
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            result = Err(e.into());
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if result.is_ok() && sink.writes_early() {
                    let began = Instant::now();
                    let written = sink.write_early();
                    writer.commit_s += began.elapsed().as_secs_f64();
                    if let Err(e) = written {
                        stop.store(true, Ordering::Relaxed);
                        result = Err(e.into());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // At least every 100 ms: the workers' encoders may be waiting.
        if result.is_ok()
            && let Err(e) = sink.take_in()
        {
            stop.store(true, Ordering::Relaxed);
            result = Err(e.into());
        }
        if result.is_err() {
            sink.close_inbox();
        }
        writer.totals.stages = stage_map(&stages.seconds(), writer.commit_s, sink.encoding());
        observer.tick(&writer.totals);
    }
    result
}

/// Stage times as text: `decode 1.25s, fold 0.50s, ...` with `decimals`.
fn stage_list(stages: &BTreeMap<String, f64>, decimals: usize) -> String {
    stages
        .iter()
        .map(|(stage, secs)| format!("{stage} {secs:.decimals$}s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stage times as reported: the dataflow's and the writer's. A bulk
/// load's workers encode inside the collector's operator (`encoding`): that
/// time is the store's, so it counts once, as commit.
fn stage_map(dataflow: &StageSeconds, commit_s: f64, encoding: Duration) -> BTreeMap<String, f64> {
    let encoding = encoding.as_secs_f64();
    [
        ("decode", dataflow.decode),
        ("fold", dataflow.fold),
        ("identity", dataflow.identity),
        ("collect", (dataflow.collect - encoding).max(0.0)),
        ("commit", commit_s + encoding),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The commit bound for a frontier `upto` (every time below it complete):
/// the times up to the last multiple of `align` below `upto`, or all of them
/// once the run is done (`u64::MAX`).
fn aligned(upto: u64, align: u64) -> u64 {
    if upto == u64::MAX || align <= 1 {
        return upto;
    }
    (upto.saturating_sub(1) / align) * align + 1
}

/// Changes emitted and not yet taken by the writer. An emitter that would
/// take it past [`BACKLOG_CHANGES`] waits: the end of a bulk load hands on
/// every record at once, faster than the writer encodes them, and memory
/// must not hold them all twice. The writer takes every message on
/// receipt, whatever it then waits for, so a waiting worker never waits on
/// itself.
#[derive(Default)]
struct Backlog {
    changes: Mutex<usize>,
    taken: Condvar,
}

/// The most changes in flight between the workers and the writer (a
/// message alone may be larger).
const BACKLOG_CHANGES: usize = 1 << 18;

impl Backlog {
    fn add(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        while *c > 0 && *c + n > BACKLOG_CHANGES {
            c = self.taken.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        *c += n;
    }

    fn take(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut c = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        *c = c.saturating_sub(n);
        self.taken.notify_all();
    }
}

/// Collects emitted times and commits them once complete on every worker.
struct Writer {
    frontiers: Vec<u64>,
    /// Every time below this is committed (shared with the driver).
    committed: Arc<Committed>,
    /// Commits end at multiples of this (the dataflow's identity step), so
    /// every commit holds the identity assignments its links imply.
    align: u64,
    /// Seconds spent writing to the store (encoding and engine).
    commit_s: f64,
    /// Per (dataflow, worker, source): its latest lag and skipped offsets.
    lag: BTreeMap<(String, usize, usize), (i64, u64)>,
    pending: BTreeMap<u64, PendingTime>,
    /// A live run's start (wall-clock ms): each commit reports how long
    /// its times from then on took to reach it ([`TimeDelays`]); the times
    /// before it are not wall-clock times.
    live_since: Option<u64>,
    /// Which workers have emitted all their folds' records
    /// ([`Emitted::RecordsDone`]).
    records_done: Vec<bool>,
    totals: Totals,
}

/// What the writer holds for one time until every worker has finished it:
/// each worker's changes (kept apart, never concatenated), dead letters,
/// source progress, and when the last of them was handed over.
#[derive(Default)]
struct PendingTime {
    changes: Vec<Vec<Change>>,
    dead_letters: Vec<DeadLetter>,
    progress: Progress,
    /// Wall-clock milliseconds of the latest hand-over for this time.
    handed_ms: u64,
}

impl Writer {
    fn new(
        workers: usize,
        committed: Arc<Committed>,
        align: u64,
        live_since: Option<u64>,
    ) -> Writer {
        Writer {
            align: align.max(1),
            commit_s: 0.0,
            frontiers: vec![0; workers],
            committed,
            lag: BTreeMap::new(),
            pending: BTreeMap::new(),
            live_since,
            records_done: vec![false; workers],
            totals: Totals::default(),
        }
    }

    /// Takes one message. A bulk load's changes are written on receipt:
    /// each record comes once, from the worker that owns it, in the order
    /// it emitted them; dead letters and progress wait for their time.
    fn receive(
        &mut self,
        e: Emitted,
        handed_ms: u64,
        sink: &mut Sink<'_>,
    ) -> Result<(), StoreError> {
        match e {
            Emitted::Data {
                epoch,
                changes,
                mut dead_letters,
                worker: _,
                progress,
            } => {
                let changes = if sink.on_receipt() && !changes.is_empty() {
                    let began = Instant::now();
                    sink.write(&[&changes], &[], &Progress::default())?;
                    self.commit_s += began.elapsed().as_secs_f64();
                    Vec::new()
                } else {
                    changes
                };
                let slot = self.pending.entry(epoch).or_default();
                slot.changes.push(changes);
                slot.dead_letters.append(&mut dead_letters);
                slot.progress.merge(progress);
                slot.handed_ms = slot.handed_ms.max(handed_ms);
            }
            Emitted::Tally { worker, tally } => {
                self.totals.tallies.insert(worker, tally);
            }
            Emitted::RecordsDone { worker } => {
                // Once, when the last worker's records are in.
                let Some(done) = self.records_done.get_mut(worker).filter(|d| !**d) else {
                    return Ok(());
                };
                *done = true;
                if self.records_done.iter().all(|d| *d) {
                    let began = Instant::now();
                    sink.held_final()?;
                    self.commit_s += began.elapsed().as_secs_f64();
                }
            }
            Emitted::Frontier { worker, upto } => {
                if let Some(f) = self.frontiers.get_mut(worker) {
                    *f = (*f).max(upto);
                }
                self.totals.ready = self.frontiers.iter().all(|f| *f > 0);
            }
            Emitted::Lag {
                worker,
                source,
                dataflow,
                lag,
                skipped,
            } => {
                self.lag
                    .insert((dataflow.clone(), worker, source), (lag, skipped));
                let (lag, skipped) = self
                    .lag
                    .iter()
                    .filter(|((d, _, _), _)| *d == dataflow)
                    .fold((0, 0), |(l, s), (_, (lag, skipped))| (l + lag, s + skipped));
                let t = self.totals.dataflows.entry(dataflow).or_default();
                t.lag = Some(lag);
                t.skipped_offsets = skipped;
            }
        }
        Ok(())
    }

    /// Commits every pending time below the smallest worker frontier, in one
    /// atomic step, in time order. Returns what was committed, if anything,
    /// how long the write took and, in a live run, how long each time took
    /// to reach it.
    fn commit_ready(&mut self, sink: &mut Sink<'_>) -> Result<Option<CommitReport>, StoreError> {
        let upto = aligned(
            self.frontiers.iter().copied().min().unwrap_or(0),
            self.align,
        );
        // Each time's changes stay in the vectors they arrived in (moving
        // them into one would copy megabytes into fresh pages per commit).
        let mut parts: Vec<Vec<Change>> = Vec::new();
        let mut dead = Vec::new();
        let mut progress = Progress::default();
        // (time, when its last changes were handed over), live runs only.
        let mut handed: Vec<(u64, u64)> = Vec::new();
        while let Some((&t, _)) = self.pending.first_key_value() {
            if t >= upto {
                break;
            }
            if let Some((_, mut p)) = self.pending.pop_first() {
                parts.extend(p.changes.into_iter().filter(|c| !c.is_empty()));
                dead.append(&mut p.dead_letters);
                progress.merge(p.progress);
                if self.live_since.is_some_and(|since| t >= since) {
                    handed.push((t, p.handed_ms));
                }
            }
        }
        if parts.is_empty() && dead.is_empty() && progress == Progress::default() {
            self.committed.advance(upto);
            return Ok(None);
        }
        let began_ms = dataflow::wall_clock_ms();
        let times = handed
            .iter()
            .map(|&(t, handed_ms)| TimeDelays::of(t, handed_ms, began_ms))
            .collect();
        let began = Instant::now();
        let slices: Vec<&[Change]> = parts.iter().map(Vec::as_slice).collect();
        sink.write(&slices, &dead, &progress)?;
        let took = began.elapsed();
        self.commit_s += took.as_secs_f64();
        self.committed.advance(upto);
        tracing::debug!(
            upto,
            changes = slices.iter().map(|s| s.len()).sum::<usize>(),
            ms = took.as_secs_f64() * 1e3,
            "committed"
        );
        for (name, p) in &progress.dataflows {
            self.totals.events += p.events;
            self.totals.late += p.late;
            let t = self.totals.dataflows.entry(name.to_string()).or_default();
            t.events += p.events;
            t.late += p.late;
            t.watermark = t.watermark.max(p.watermark);
        }
        for d in &dead {
            self.totals.dead_letters += 1;
            self.totals
                .dataflows
                .entry(d.dataflow.to_string())
                .or_default()
                .dead_letters += 1;
        }
        Ok(Some(CommitReport {
            progress,
            took,
            times,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_load_s_encoding_counts_once_as_commit() {
        let dataflow = StageSeconds {
            decode: 5.0,
            fold: 3.0,
            identity: 0.5,
            collect: 2.5,
        };
        let stages = stage_map(&dataflow, 1.0, Duration::from_secs(2));
        assert_eq!(stages["collect"], 0.5);
        assert_eq!(stages["commit"], 3.0);
        assert_eq!(stages["decode"], 5.0);
        // The sum is the time spent, each part once.
        assert_eq!(stages.values().sum::<f64>(), 5.0 + 3.0 + 0.5 + 2.5 + 1.0);
        // Read between two stage updates, encoding may run ahead of the
        // collector's time: never below zero.
        assert_eq!(
            stage_map(&dataflow, 1.0, Duration::from_secs(3))["collect"],
            0.0
        );
        assert_eq!(stage_map(&dataflow, 1.0, Duration::ZERO)["collect"], 2.5);
    }

    #[test]
    fn commits_end_at_identity_steps() {
        // Times below 40 are complete; steps of 16: commit up to 32.
        assert_eq!(aligned(40, 16), 33);
        assert_eq!(aligned(33, 16), 33);
        assert_eq!(aligned(32, 16), 17);
        // Time 0 (the rebuild) is a step of its own.
        assert_eq!(aligned(5, 16), 1);
        assert_eq!(aligned(0, 16), 1);
        assert_eq!(aligned(u64::MAX, 16), u64::MAX);
        assert_eq!(aligned(7, 1), 7);
    }

    #[test]
    fn a_time_s_delays_are_its_hand_over_and_the_commit_s_start_never_negative() {
        let d = TimeDelays::of(1_000, 1_130, 1_175);
        assert_eq!(d.dataflow, Duration::from_millis(130));
        assert_eq!(d.wait, Duration::from_millis(45));
        // A clock stepped backwards between the stamps: 0, not a wrap.
        let d = TimeDelays::of(1_000, 990, 980);
        assert_eq!((d.dataflow, d.wait), (Duration::ZERO, Duration::ZERO));
    }

    /// A worker's data for time `t`, with one position so that it commits.
    fn data(worker: usize, t: u64) -> Emitted {
        let mut progress = Progress::default();
        progress
            .positions
            .insert(("playback".into(), worker.to_string()), t);
        Emitted::Data {
            worker,
            epoch: t,
            changes: Vec::new(),
            dead_letters: Vec::new(),
            progress,
        }
    }

    /// Two workers each hand a time over; once both frontiers pass them,
    /// one commit holds both, and a live writer reports each wall-clock
    /// time's delays from its own hand-over (the latest of its messages'),
    /// a replay's writer none.
    fn delays_reported(live: bool) -> Vec<TimeDelays> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut sink = Sink::Commit(&store);
        let now = dataflow::wall_clock_ms();
        let since = live.then_some(now - 1_000);
        let mut writer = Writer::new(2, Arc::new(Committed::new(0)), 1, since);
        let (t0, t1) = (now - 300, now - 200);
        // A live run's first time may be 1, before any wall-clock time:
        // committed, never reported (its "delay" would be decades).
        writer
            .receive(data(0, 1), now - 260, &mut sink)
            .expect("receive");
        // Stamped before the send: they may arrive out of order (the
        // latest stamp neither the first nor the last to arrive).
        for (worker, handed) in [(0, now - 250), (1, now - 230), (0, now - 245)] {
            writer
                .receive(data(worker, t0), handed, &mut sink)
                .expect("receive");
        }
        writer
            .receive(data(1, t1), now - 120, &mut sink)
            .expect("receive");
        for worker in 0..2 {
            let upto = if worker == 0 { t1 + 1 } else { u64::MAX };
            writer
                .receive(Emitted::Frontier { worker, upto }, now, &mut sink)
                .expect("frontier");
        }
        let report = writer
            .commit_ready(&mut sink)
            .expect("commits")
            .expect("a commit");
        assert_eq!(report.progress.positions.len(), 2);
        assert_eq!(store.meta().expect("meta").positions.len(), 2);
        report.times
    }

    #[test]
    fn a_live_writer_reports_each_committed_time_s_delays() {
        let began = dataflow::wall_clock_ms();
        let times = delays_reported(true);
        let spent = Duration::from_millis(dataflow::wall_clock_ms() - began + 1);
        assert_eq!(times.len(), 2, "{times:?}");
        // Handed over 70 ms after it opened (its latest stamp), 80 ms for
        // the second time; the commit began after the last hand-over.
        assert_eq!(times[0].dataflow, Duration::from_millis(70));
        assert_eq!(times[1].dataflow, Duration::from_millis(80));
        assert!(times[0].wait >= Duration::from_millis(230), "{times:?}");
        assert!(
            times[0].wait <= Duration::from_millis(230) + spent,
            "{times:?}"
        );
        assert!(times[1].wait >= Duration::from_millis(120), "{times:?}");
        assert!(
            times[1].wait <= Duration::from_millis(120) + spent,
            "{times:?}"
        );
        assert!(delays_reported(false).is_empty());
    }
}
