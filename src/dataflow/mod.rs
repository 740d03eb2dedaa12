//! The dataflow layer: one timely computation with a region per definition
//! (its sources' ops folded into per-record aggregates) and one identity
//! region fed by the links of every definition.
//!
//! Invariant: nothing here knows about the store. Everything bound for it
//! leaves through the [`Emitter`] as [`Emitted::Data`] for one time, followed
//! by [`Emitted::Frontier`] reports; a time is complete (safe to commit
//! atomically) once every worker has reported a frontier beyond it. Timely
//! and differential types never leave this module.

mod at_once;
mod collect;
mod driver;
mod fold;
mod identity;
mod ops;
mod records;
mod stages;
mod symbols;
mod tally;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Input;
use timely::dataflow::operators::core::{Concatenate, Enter, Leave, Probe};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::{Scope, StreamVec};
use timely::progress::operate::FrontierInterest;

use differential_dataflow::AsCollection;

use crate::model::{Change, ClusterShape, DeadLetter, Progress};
use crate::source::{Source, SourceError};
use crate::spec::{IdentityConfig, Plan};
use at_once::Assignment;
use collect::{RecordsOut, ToStore};
use ops::{LastKeyed, Names, Op, OpKind, RecKey, Retentions};
use records::Folded;
pub use stages::{StageSeconds, StageTimes};
use symbols::Sym;
use tally::Tallier;
pub use tally::Tally;

/// What the dataflow hands to whoever persists it.
#[derive(Clone, Debug, PartialEq)]
pub enum Emitted {
    /// Changes, dead letters and progress that belong to time `epoch`,
    /// from worker `worker` (index within this process).
    Data {
        worker: usize,
        epoch: u64,
        changes: Vec<Change>,
        dead_letters: Vec<DeadLetter>,
        progress: Progress,
    },
    /// What worker `worker` (index within this process) emitted, counted
    /// as its store counts (runs with [`RunConfig::tally`]); sent once, just
    /// before its last frontier.
    Tally { worker: usize, tally: Tally },
    /// Worker `worker` (index within this process) has emitted every
    /// record its folds will change (runs with [`RunConfig::at_end`] only):
    /// what it emits after this is identity's assignments, late counts and
    /// positions, and they write none of the folds' namespaces.
    RecordsDone { worker: usize },
    /// Worker `worker` (index within this process) will emit no more data
    /// for times before `upto`
    /// (`u64::MAX`: it is finished).
    Frontier { worker: usize, upto: u64 },
    /// How far source `source` of `worker` is behind its input (messages),
    /// and how many positions it went past without a record so far.
    Lag {
        worker: usize,
        source: usize,
        dataflow: String,
        lag: i64,
        skipped: u64,
    },
}

/// How often a live run's sources report their lag (`rdg run`'s status
/// line and metrics).
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How often a replay's sources report their lag (the progress line's
/// records left to read).
const REPLAY_LAG_EVERY: Duration = Duration::from_millis(200);

/// The wall clock in milliseconds since the epoch (0 before it): a live
/// run's times, which the writer compares with its own readings of it.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Receives everything the dataflow emits, from every worker thread.
pub type Emitter = Arc<dyn Fn(Emitted) + Send + Sync>;

/// Positions by (dataflow, partition key): the next offset to read.
pub use crate::model::Positions;

/// Builds the sources of one worker: `(worker index, number of workers,
/// where to resume)`. The positions are the smallest any process of the
/// cluster stored (this process's own when alone).
pub type SourceFactory = Arc<
    dyn Fn(usize, usize, &Positions) -> Result<Vec<Box<dyn Source>>, SourceError> + Send + Sync,
>;

/// The time of the rebuild: a run continuing a state loads its stored
/// contributions into the folds at this time, before any source is read
/// (sources start after it). What the folds hold at it is already stored:
/// they emit only links at it, which identity starts from
/// (`Records::take_changes`), and the collector writes none of its records,
/// only identity's assignments (`collect`).
pub(crate) const REBUILD_TIME: u64 = 0;

/// Contributions rebuilt from the store, read by worker 0 at time 0.
pub type Contributions = Box<dyn Iterator<Item = Result<Change, String>> + Send>;

/// Tuning of a run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Worker threads in this process.
    pub workers: usize,
    /// Several processes exchanging data by key over TCP; `None`: this
    /// process alone.
    pub cluster: Option<ClusterShape>,
    /// Records read from each source per time.
    pub batch: usize,
    /// How many times may be in flight before the driver waits.
    pub in_flight: u64,
    /// Set from outside to stop reading; what was read is still completed.
    /// A worker that fails sets it too, so every worker stops with it.
    pub stop: Arc<AtomicBool>,
    /// Live sources: idle is not the end; run until `stop`. Times follow the
    /// wall clock (ms) so idle workers let the others' times complete.
    pub live: bool,
    /// Skip records whose effects the state already holds (Kafka, where
    /// partition keys are partition numbers). Off for file replays.
    pub skip_applied: bool,
    /// Set from outside: every time below it has been persisted. The driver
    /// reads no further than `in_flight` times beyond it (backpressure from
    /// the store, so memory does not fill with uncommitted changes).
    pub committed: Arc<Committed>,
    /// The next replay time, shared by the process's workers and by sources
    /// that several workers read ([`crate::source::Shared`]).
    pub clock: Arc<AtomicU64>,
    /// Where the workers' time goes, by stage.
    pub stages: Arc<StageTimes>,
    /// The folds emit the records they changed, and identity is computed,
    /// at multiples of this time only (replays: a coarser step writes a
    /// record changed by many times once and saves relabelling; live runs:
    /// 1, every time).
    pub step: u64,
    /// For replays that nobody sees before they finish (bulk loads, and
    /// fjall replays continuing a state as one commit): the folds emit the
    /// records changed after time 0 (the rebuild), and identity is
    /// computed (`identity::stitch_at_once`, also in a cluster) at time 0
    /// and after the last time (the links wait on worker 0 until then), and the collector
    /// hands the folds' records on as they come, each record exactly once.
    pub at_end: bool,
    /// Each worker's collector counts the records and identity assignments
    /// it emits, with those its rebuild loaded ([`Emitted::Tally`]): exact
    /// for a run of one process with [`RunConfig::at_end`] (a bulk load, or
    /// a replay continuing a state as one commit: each record emitted at
    /// most once), whose summary then needs no scan of the store
    /// (`tally.rs`). Costs a map of every live node and edge key while it
    /// runs.
    pub tally: bool,
}

/// How far the store has committed, with the workers that wait for it: a
/// commit wakes them instead of their polling.
#[derive(Debug)]
pub struct Committed {
    upto: AtomicU64,
    waiters: Mutex<Vec<std::thread::Thread>>,
}

impl Committed {
    pub fn new(upto: u64) -> Committed {
        Committed {
            upto: AtomicU64::new(upto),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Every time below `upto` is persisted; wakes the waiting workers.
    pub fn advance(&self, upto: u64) {
        self.upto.store(upto, Ordering::Release);
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for t in waiters.iter() {
            t.unpark();
        }
    }

    /// Every time below this is persisted.
    pub fn get(&self) -> u64 {
        self.upto.load(Ordering::Acquire)
    }

    /// The calling thread is woken by every `advance`.
    fn register_waiter(&self) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(std::thread::current());
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            workers: 1,
            cluster: None,
            batch: 20_000,
            in_flight: 4,
            live: false,
            skip_applied: false,
            stop: Arc::new(AtomicBool::new(false)),
            committed: Arc::new(Committed::new(u64::MAX)),
            clock: Arc::new(AtomicU64::new(1)),
            stages: Arc::new(StageTimes::default()),
            step: 1,
            at_end: false,
            tally: false,
        }
    }
}

/// Where a run starts from.
pub struct Start {
    /// Each dataflow's watermark from earlier runs.
    pub watermarks: BTreeMap<String, i64>,
    /// Stored contributions to rebuild the in-memory state.
    pub contributions: Mutex<Option<Contributions>>,
    /// This process's stored positions: its state holds the effects of every
    /// record before them.
    pub positions: Positions,
}

#[derive(Debug, Error)]
pub enum DataflowError {
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("a source names dataflow `{0}`, which no definition declares")]
    UnknownDataflow(String),
    #[error("cannot rebuild state from the store: {0}")]
    Rebuild(String),
    #[error(transparent)]
    Symbols(#[from] symbols::TableFull),
    #[error("timely: {0}")]
    Timely(String),
}

/// Runs every definition over the sources until they are exhausted.
pub fn run(
    config: RunConfig,
    plan: Arc<Plan>,
    start: Arc<Start>,
    sources: SourceFactory,
    emit: Emitter,
) -> Result<(), DataflowError> {
    let threads = config.workers.max(1);
    let timely_config = match &config.cluster {
        None => timely::Config::process(threads),
        Some(c) => timely::Config {
            communication: timely::CommunicationConfig::Cluster {
                threads,
                process: c.process,
                addresses: c.addresses.clone(),
                // Prints which peers it is still waiting for at start.
                report: true,
                zerocopy: false,
            },
            worker: timely::WorkerConfig::default(),
        },
    };
    let guards = timely::execute(timely_config, move |worker| {
        let result = run_worker(worker, &config, &plan, &start, &sources, &emit);
        if result.is_err() {
            // One worker cannot go on: every other stops reading too (what
            // was read is still completed), so the run ends with this error
            // instead of going on with this worker's sources unread.
            config.stop.store(true, Ordering::Relaxed);
        }
        result
    })
    .map_err(DataflowError::Timely)?;
    let mut first_error = None;
    for r in guards.join() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(DataflowError::Timely(e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    config: &RunConfig,
    plan: &Arc<Plan>,
    start: &Arc<Start>,
    sources: &SourceFactory,
    emit: &Emitter,
) -> Result<(), DataflowError> {
    let index = worker.index();
    let peers = worker.peers();
    // Index among this process's workers: what the process's writer counts.
    let local = index % config.workers.max(1);
    let names = Names::of(plan);

    // Where every source resumes: the smallest position any process stored.
    let resume = if config.cluster.is_some() {
        agree_on_positions(worker, &start.positions, local == 0)
    } else {
        start.positions.clone()
    };
    let folds = plan.dataflows.iter().map(|d| d.name.clone()).collect();
    stages::install(worker, config.stages.clone(), folds);
    // Shared by the collector (what it emits, what the folds loaded) and
    // the rebuild (the stored assignments it reads).
    let tallier = config
        .tally
        .then(|| Rc::new(RefCell::new(Tallier::new(names.one_source.clone()))));
    let mut inputs = build(
        worker,
        config,
        (plan, start, &names),
        local,
        emit,
        tallier.clone(),
    );
    // Time 0: rebuild the folds' state from this process's store (its
    // workers take chunks of it; exchange sends each record to its owner).
    rebuild(
        worker,
        &mut inputs,
        (plan, start, &names),
        config.cluster.is_none(),
        tallier.as_deref(),
    )?;
    let reader = driver::Reader::new(plan, start, config, &names, sources(index, peers, &resume)?)?;
    driver::drive(worker, inputs, reader, &names, local, emit)
}

/// Builds the dataflow: a region per definition (ops folded into records),
/// the identity region fed by every definition's links, and the collector.
fn build(
    worker: &mut timely::worker::Worker,
    config: &RunConfig,
    (plan, start, names): (&Plan, &Start, &Names),
    local: usize,
    emit: &Emitter,
    tallier: Option<Rc<RefCell<Tallier>>>,
) -> driver::Inputs {
    let initial_wm = |name: &str| start.watermarks.get(name).copied().unwrap_or(i64::MIN);
    let applied_of = |name: &str| {
        if !config.skip_applied {
            return fold::Applied::default();
        }
        fold::Applied::new(
            start
                .positions
                .iter()
                .filter(|((d, _), _)| d == name)
                .filter_map(|((_, p), next)| Some((p.parse::<u32>().ok()?, *next)))
                .collect(),
        )
    };
    let collect_names = Arc::new(names.clone());
    // Far beyond any time of a replay (they count from 1).
    let step = if config.at_end {
        1 << 62
    } else {
        config.step.max(1)
    };
    let at_end = config.at_end;
    // Identity's last completion waits for the collector to hand on the
    // folds' last records (a replay's end).
    let records_out: Option<RecordsOut> = at_end.then(RecordsOut::default);
    let one_process = config.cluster.is_none();
    let tally = tallier.is_some();
    worker.dataflow::<u64, _, _>(|scope| {
        let (positions_in, positions) = scope.new_input::<Vec<(usize, String, u64, u64)>>();
        let (given_in, given) = scope.new_input::<Vec<(Sym, Assignment)>>();
        let mut ops_in = Vec::new();
        let mut watermarks_in = Vec::new();
        let mut to_store = Vec::new();
        let mut links = Vec::new();
        for (i, d) in plan.dataflows.iter().enumerate() {
            let (op_in, ops) = scope.new_input::<Vec<Op>>();
            let (wm_in, wms) = scope.new_input::<Vec<i64>>();
            ops_in.push(op_in);
            watermarks_in.push(wm_in);
            let start_of = (initial_wm(&d.name), applied_of(&d.name));
            let folded = fold_region(scope, &d.name, (ops, wms), start_of, (step, tally));
            let (stored, changed_links) = to_store_and_links(folded, i);
            links.push(changed_links);
            to_store.push(stored);
        }
        let identity_config = Arc::new(plan.identity.clone());
        let clusters = identity_region(
            scope,
            links,
            given,
            identity_config,
            (step, at_end || one_process),
            records_out.clone(),
        );
        let records = scope.concatenate(to_store);
        let rest = scope.concatenate([
            clusters.map(|((id, c), t, d)| (ToStore::Cluster(id, c), t, d)),
            positions
                .broadcast()
                .map(|(df, key, next, t)| (ToStore::Position(df, key, next), t, 1)),
        ]);
        let (probe, _) = collect::collect(
            (records, rest),
            collect_names,
            local,
            (records_out, tallier),
            emit.clone(),
        )
        .probe();
        driver::Inputs {
            ops: ops_in,
            watermarks: watermarks_in,
            positions: positions_in,
            given: given_in,
            probe,
        }
    })
}

/// One definition's region: its ops folded into records, starting from the
/// watermark and the positions already applied that the store holds.
fn fold_region<'s>(
    scope: Scope<'s, u64>,
    name: &str,
    (ops, wms): (StreamVec<'s, u64, Op>, StreamVec<'s, u64, i64>),
    (w0, applied): (i64, fold::Applied),
    (step, tally): (u64, bool),
) -> StreamVec<'s, u64, (Folded, u64, isize)> {
    let fold_name = format!("{name}.fold");
    scope.region_named(name, |region| {
        let ops = ops.enter(region);
        let wms = wms.enter(region).broadcast();
        fold::fold(ops, wms, w0, applied, (step, tally), &fold_name).leave(scope)
    })
}

/// The identity region: every definition's link changes in, cluster
/// assignments out.
///
/// Identity is a function of the live links alone: a replay may compute it
/// every `step` times instead of every time, or once at the end
/// (intermediate cluster labels are never visible there), which saves most
/// relabelling as clusters grow. With `at_once`, one worker brings it up to
/// date by the components a time touches, far cheaper than differential's
/// propagation (docs/performance.md); across processes that would send
/// every link to one worker, so a cluster keeps differential's, spread by
/// key, unless it is asked only at the end.
fn identity_region<'s>(
    scope: Scope<'s, u64>,
    links: Vec<StreamVec<'s, u64, LinkChange>>,
    given: StreamVec<'s, u64, (Sym, Assignment)>,
    config: Arc<IdentityConfig>,
    (step, at_once): (u64, bool),
    records_out: Option<RecordsOut>,
) -> StreamVec<'s, u64, ((Sym, Assignment), u64, isize)> {
    scope.region_named("identity", |region| {
        let links = scope
            .concatenate(links)
            .map(move |(d, t, r)| (d, round_up(t, step), r))
            .enter(region);
        if at_once {
            let given = given.enter(region);
            identity::stitch_at_once(links, given, config, records_out).leave(scope)
        } else {
            identity::stitch(links.as_collection(), config)
                .inner
                .leave(scope)
        }
    })
}

/// A link's (a, b) existence with its first_seen, changed at a time by a
/// diff: what identity reads of the folds.
type LinkChange = (((Sym, Sym), i64), u64, isize);

/// Something for the collector, at a time, with a diff.
pub(crate) type StoreUpdate = (ToStore, u64, isize);

/// A fold's output, each record moved on to the collector (as
/// [`ToStore::Folded`] of dataflow `df`) and, for a link whose existence or
/// first_seen changed, that change to identity, in one pass: a stream read
/// by two operators is copied for the first, and that copy of every folded
/// record was ~8% of a continue's reading phase (`perf`, docs/performance.md).
fn to_store_and_links<'s>(
    folded: StreamVec<'s, u64, (Folded, u64, isize)>,
    df: usize,
) -> (
    StreamVec<'s, u64, StoreUpdate>,
    StreamVec<'s, u64, LinkChange>,
) {
    let mut builder = OperatorBuilder::new("to_store_and_links".to_owned(), folded.scope());
    let mut input = builder.new_input(folded, Pipeline);
    builder.set_notify_for(0, FrontierInterest::Never);
    let (stored, stored_stream) = builder.new_output();
    let (links, links_stream) = builder.new_output();
    let mut stored = OutputBuilder::<_, CapacityContainerBuilder<Vec<_>>>::from(stored);
    let mut links = OutputBuilder::<_, CapacityContainerBuilder<Vec<_>>>::from(links);
    builder.build(move |_| {
        move |_frontiers| {
            let mut stored = stored.activate();
            let mut links = links.activate();
            input.for_each_stamp(|cap, data| {
                let mut stored = stored.session(&cap);
                let mut links = links.session(&cap);
                for (f, t, d) in data.flat_map(|d| d.drain(..)) {
                    if let Folded::Changed {
                        key: RecKey::Link(a, b),
                        old_first_seen,
                        new,
                        ..
                    } = &f
                    {
                        // Identity sees only a link's existence and
                        // first_seen: most changes (count, last_seen) do not
                        // reach it.
                        let new_first_seen = new.as_ref().map(|r| r.first_seen);
                        if *old_first_seen != new_first_seen {
                            if let Some(fs) = old_first_seen {
                                links.give((((*a, *b), *fs), t, -1isize));
                            }
                            if let Some(fs) = new_first_seen {
                                links.give((((*a, *b), fs), t, 1isize));
                            }
                        }
                    }
                    stored.give((ToStore::Folded(df, f), t, d));
                }
            });
        }
    });
    (stored_stream, links_stream)
}

/// Contributions a worker takes from the shared stream at a time.
const REBUILD_CHUNK: usize = 4096;

/// Sends the stored contributions as `Load` ops at time 0. Every worker
/// takes chunks from the one stream until it ends: reading is serial, the
/// rest (interning, building ops) spread over the workers. The worker
/// steps after each chunk, so the folds apply the loads as they arrive
/// (`fold.rs`) instead of every stored record waiting as an op in timely's
/// queues until the rebuild ends.
///
/// With `one_process`, stored identity assignments (`Change::Cluster`) go
/// to identity as already given, so time 0 writes only the ones the loaded
/// links no longer imply. Across processes each store holds its own share
/// of them, so there every assignment is written again instead (see the
/// collector). A `tallier` counts the stored assignments, and learns when
/// its counts cannot hold (`tally.rs`).
fn rebuild(
    worker: &mut timely::worker::Worker,
    inputs: &mut driver::Inputs,
    (plan, start, names): (&Plan, &Start, &Names),
    one_process: bool,
    tallier: Option<&RefCell<Tallier>>,
) -> Result<(), DataflowError> {
    let by_name: BTreeMap<&str, usize> = plan
        .dataflows
        .iter()
        .enumerate()
        .map(|(i, d)| (d.name.as_str(), i))
        .collect();
    let retentions: Vec<Retentions> = plan.dataflows.iter().map(Retentions::new).collect();
    let mut chunk: Vec<Result<Change, String>> = Vec::with_capacity(REBUILD_CHUNK);
    let mut last = LastKeyed::default();
    loop {
        {
            let mut shared = start
                .contributions
                .lock()
                .map_err(|_| DataflowError::Rebuild("state loader poisoned".into()))?;
            let Some(contributions) = shared.as_mut() else {
                return Ok(());
            };
            chunk.extend(contributions.by_ref().take(REBUILD_CHUNK));
            if chunk.len() < REBUILD_CHUNK {
                *shared = None;
            }
        }
        // Borrowed between steps only (the collector borrows it in them).
        let mut tallier = tallier.map(RefCell::borrow_mut);
        if let Some(t) = tallier.as_deref_mut()
            && !one_process
            && !chunk.is_empty()
        {
            t.inexact();
        }
        for c in chunk.drain(..) {
            let c = c.map_err(DataflowError::Rebuild)?;
            let loaded = match &c {
                Change::Cluster {
                    id,
                    cluster: Some(of),
                } if one_process => {
                    let (id, cluster) = (Sym::intern(id)?, Sym::intern(&of.cluster)?);
                    if let Some(t) = tallier.as_deref_mut() {
                        t.stored_assignment(id, cluster);
                    }
                    inputs.given.send((id, (cluster, of.hub)));
                    true
                }
                _ => load_op(inputs, c, &by_name, &retentions, names, &mut last)?,
            };
            if !loaded && let Some(t) = tallier.as_deref_mut() {
                t.inexact();
            }
        }
        drop(tallier);
        worker.step();
    }
}

/// Sends one stored contribution as a `Load` op; `false` when it sent
/// nothing (a removal, or a contribution of a definition or an edge type no
/// longer in the plan).
fn load_op(
    inputs: &mut driver::Inputs,
    mut c: Change,
    by_name: &BTreeMap<&str, usize>,
    retentions: &[Retentions],
    names: &Names,
    last: &mut LastKeyed,
) -> Result<bool, DataflowError> {
    let (i, record) = match &mut c {
        Change::Node {
            dataflow, record, ..
        }
        | Change::Edge {
            dataflow, record, ..
        }
        | Change::Link {
            dataflow, record, ..
        } => {
            let Some(r) = record.take() else {
                return Ok(false);
            };
            // Contributions of a definition (or an edge type) that was
            // removed stay in the store untouched; nothing in memory needs
            // them.
            let Some(&i) = by_name.get(dataflow.as_str()) else {
                return Ok(false);
            };
            (i, r)
        }
        _ => return Ok(false),
    };
    // Keyed without its record (moved out above: the key reads only names).
    let Some((key, shard)) =
        RecKey::of_change(&c, names, last).map_err(|e| DataflowError::Rebuild(e.to_string()))?
    else {
        return Ok(false);
    };
    let retention = retentions[i].of(&c);
    inputs.ops[i].send(Op {
        key,
        shard,
        seq: 0,
        wm: i64::MIN,
        time: record.last_seen,
        retention,
        kind: OpKind::Load(Box::new(record)),
    });
    Ok(true)
}

/// The step of replays ([`RunConfig::step`]): with the default batch of
/// 20 000 records, changed records are emitted and identity runs about every
/// 320 000.
pub const REPLAY_STEP: u64 = 16;

/// The first multiple of `every` at or after `t` (0 stays 0: the rebuild).
fn round_up(t: u64, every: u64) -> u64 {
    t.div_ceil(every).saturating_mul(every)
}

/// The position of a record in its source, as the fold orders it: its
/// partition (files: the file's index among the topic's files, read one
/// after the other) then its offset. Partitions up to 2^24, offsets up to
/// 2^40.
pub(crate) fn seq_of(partition: u32, offset: u64) -> u64 {
    (u64::from(partition) << 40) | (offset & ((1 << 40) - 1))
}

/// The inverse of [`seq_of`].
pub(crate) fn partition_offset(seq: u64) -> (u32, u64) {
    ((seq >> 40) as u32, seq & ((1 << 40) - 1))
}

/// Every process contributes its stored positions; each partition resumes at
/// the smallest of them, or from the source's configured start when some
/// process has none for it (its state holds nothing from that partition).
fn agree_on_positions(
    worker: &mut timely::worker::Worker,
    mine: &Positions,
    contribute: bool,
) -> Positions {
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::Inspect;
    // (contributing worker, dataflow, partition key, next offset)
    type Contribution = (u64, String, String, u64);
    let seen: Rc<RefCell<Vec<Contribution>>> = Rc::default();
    let sink = seen.clone();
    let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<Vec<Contribution>>();
        let (probe, _) = stream
            .broadcast()
            .inspect(move |x| sink.borrow_mut().push(x.clone()))
            .probe();
        (input, probe)
    });
    if contribute {
        let me = worker.index() as u64;
        // A marker, so processes without positions are counted too.
        input.send((me, String::new(), String::new(), 0));
        for ((d, p), next) in mine {
            input.send((me, d.to_string(), p.clone(), *next));
        }
    }
    drop(input);
    worker.step_while(|| !probe.done());
    let seen = seen.borrow();
    let contributors: std::collections::BTreeSet<u64> = seen.iter().map(|x| x.0).collect();
    let mut by_key: BTreeMap<(String, String), (usize, u64)> = BTreeMap::new();
    for (_, d, p, next) in seen.iter().filter(|x| !x.1.is_empty()) {
        let e = by_key
            .entry((d.clone(), p.clone()))
            .or_insert((0, u64::MAX));
        e.0 += 1;
        e.1 = e.1.min(*next);
    }
    by_key
        .into_iter()
        .filter(|(_, (n, _))| *n == contributors.len())
        .map(|((d, p), (_, next))| ((d.into(), p), next))
        .collect()
}
