//! The dataflow layer: one timely computation with a region per definition
//! (its sources' ops folded into per-record aggregates) and one identity
//! region fed by the links of every definition.
//!
//! Invariant: nothing here knows about the store. Everything bound for it
//! leaves through the [`Emitter`] as [`Emitted::Data`] for one time, followed
//! by [`Emitted::Frontier`] reports; a time is complete (safe to commit
//! atomically) once every worker has reported a frontier beyond it. Timely
//! and differential types never leave this module.

mod collect;
mod fold;
mod identity;
mod ops;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use thiserror::Error;
use timely::dataflow::operators::Input;
use timely::dataflow::operators::core::{Concatenate, Enter, Leave, Probe};
use timely::dataflow::operators::vec::{Broadcast, Map};

use differential_dataflow::AsCollection;

use crate::model::{Change, ClusterShape, DataflowProgress, DeadLetter, Progress};
use crate::source::{Poll, RawRecord, Source, SourceError};
use crate::spec::{Outcome, Plan};
use collect::{Names, ToStore};
use fold::Folded;
use ops::{Feeder, Op, OpKind, RecKey, Retentions};

/// What the dataflow hands to whoever persists it.
#[derive(Clone, Debug, PartialEq)]
pub enum Emitted {
    /// Changes, dead letters and progress that belong to time `epoch`.
    Data {
        epoch: u64,
        changes: Vec<Change>,
        dead_letters: Vec<DeadLetter>,
        progress: Progress,
    },
    /// Worker `worker` (index within this process) will emit no more data
    /// for times before `upto`
    /// (`u64::MAX`: it is finished).
    Frontier { worker: usize, upto: u64 },
    /// How far source `source` of `worker` is behind its input (messages).
    Lag {
        worker: usize,
        source: usize,
        dataflow: String,
        lag: i64,
    },
}

/// How often live sources report their lag.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long an idle worker sleeps unless woken by a source or a peer.
const IDLE_PARK: Duration = Duration::from_millis(100);
/// An idle worker moves its times forward at most this often (ms).
const IDLE_TICK_MS: u64 = 50;

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Receives everything the dataflow emits, from every worker thread.
pub type Emitter = Arc<dyn Fn(Emitted) + Send + Sync>;

/// Positions by (dataflow, partition key): the next offset to read.
pub type Positions = BTreeMap<(String, String), u64>;

/// Builds the sources of one worker: `(worker index, number of workers,
/// where to resume)`. The positions are the smallest any process of the
/// cluster stored (this process's own when alone).
pub type SourceFactory = Arc<
    dyn Fn(usize, usize, &Positions) -> Result<Vec<Box<dyn Source>>, SourceError> + Send + Sync,
>;

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
    pub committed: Arc<AtomicU64>,
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
            committed: Arc::new(AtomicU64::new(u64::MAX)),
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
        run_worker(worker, &config, &plan, &start, &sources, &emit)
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
    let names = Arc::new(Names {
        dataflows: plan
            .dataflows
            .iter()
            .map(|d| CompactString::from(d.name.as_str()))
            .collect(),
        reverse: plan
            .edge_types
            .iter()
            .filter(|(_, e)| e.reverse)
            .map(|(t, _)| CompactString::from(t.as_str()))
            .collect(),
    });
    let initial_wm = |name: &str| start.watermarks.get(name).copied().unwrap_or(i64::MIN);

    // Where every source resumes: the smallest position any process stored.
    let resume = if config.cluster.is_some() {
        agree_on_positions(worker, &start.positions, local == 0)
    } else {
        start.positions.clone()
    };
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
    let (mut op_inputs, mut wm_inputs, mut pos_input, probe) =
        worker.dataflow::<u64, _, _>(|scope| {
            let (pos_input, positions) = scope.new_input::<Vec<(usize, String, u64, u64)>>();
            let mut op_inputs = Vec::new();
            let mut wm_inputs = Vec::new();
            let mut to_store = Vec::new();
            let mut links = Vec::new();
            for (i, d) in plan.dataflows.iter().enumerate() {
                let (op_in, ops) = scope.new_input::<Vec<Op>>();
                let (wm_in, wms) = scope.new_input::<Vec<i64>>();
                op_inputs.push(op_in);
                wm_inputs.push(wm_in);
                let fold_name = format!("{}.fold", d.name);
                let w0 = initial_wm(&d.name);
                let applied = applied_of(&d.name);
                let folded = scope.region_named(&d.name, |region| {
                    let ops = ops.enter(region);
                    let wms = wms.enter(region).broadcast();
                    fold::fold(ops, wms, w0, applied, &fold_name).leave(scope)
                });
                links.push(folded.clone().flat_map(|(f, t, _)| match f {
                    Folded::Changed {
                        key: RecKey::Link(a, b),
                        old,
                        new,
                    } => {
                        let old = old.map(|r| (((a.clone(), b.clone()), r.first_seen), t, -1isize));
                        let new = new.map(|r| (((a, b), r.first_seen), t, 1isize));
                        old.into_iter().chain(new).collect::<Vec<_>>()
                    }
                    _ => Vec::new(),
                }));
                to_store.push(folded.map(move |(f, t, d)| (ToStore::Folded(i, f), t, d)));
            }
            let identity_config = Arc::new(plan.identity.clone());
            let clusters = scope.region_named("identity", |region| {
                let links = scope.concatenate(links).enter(region).as_collection();
                identity::stitch(links, identity_config).inner.leave(scope)
            });
            to_store.push(clusters.map(|((id, c), t, d)| (ToStore::Cluster(id, c), t, d)));
            to_store.push(
                positions
                    .broadcast()
                    .map(|(df, key, next, t)| (ToStore::Position(df, key, next), t, 1)),
            );
            let all = scope.concatenate(to_store);
            let (probe, _) = collect::collect(all, names.clone(), local, emit.clone()).probe();
            (op_inputs, wm_inputs, pos_input, probe)
        });

    // Time 0: rebuild the folds' state from this process's store (its first
    // worker reads it; exchange sends each record to its owner).
    if local == 0 {
        let taken = start
            .contributions
            .lock()
            .map_err(|_| DataflowError::Rebuild("state loader poisoned".into()))?
            .take();
        if let Some(contributions) = taken {
            let by_name: BTreeMap<&str, usize> = plan
                .dataflows
                .iter()
                .enumerate()
                .map(|(i, d)| (d.name.as_str(), i))
                .collect();
            let retentions: Vec<Retentions> = plan.dataflows.iter().map(Retentions::new).collect();
            for c in contributions {
                let c = c.map_err(DataflowError::Rebuild)?;
                let (dataflow, key, record) = match c {
                    Change::Node {
                        id,
                        dataflow,
                        record: Some(r),
                    } => (dataflow, RecKey::Node(id), r),
                    Change::Edge {
                        edge_type,
                        from,
                        to,
                        dataflow,
                        record: Some(r),
                        ..
                    } => (dataflow, RecKey::Edge(edge_type, from, to), r),
                    Change::Link {
                        a,
                        b,
                        dataflow,
                        record: Some(r),
                    } => (dataflow, RecKey::Link(a, b), r),
                    _ => continue,
                };
                // Contributions of a definition that was removed stay in the
                // store untouched; nothing in memory needs them.
                let Some(&i) = by_name.get(dataflow.as_str()) else {
                    continue;
                };
                let retention = retentions[i].of(&key);
                op_inputs[i].send(Op {
                    key,
                    seq: 0,
                    src: 0,
                    wm: i64::MIN,
                    time: record.last_seen,
                    retention,
                    origin: None,
                    kind: OpKind::Load(record),
                });
            }
        }
    }

    // The sources this worker reads, each with its dataflow's feeder.
    let mut mine: Vec<(Box<dyn Source>, usize, Feeder, u64)> = Vec::new();
    for s in sources(index, peers, &resume)? {
        let i = plan
            .dataflows
            .iter()
            .position(|d| d.name == s.dataflow())
            .ok_or_else(|| DataflowError::UnknownDataflow(s.dataflow().to_string()))?;
        let feeder = Feeder::new(
            plan.dataflows[i].clone(),
            initial_wm(&plan.dataflows[i].name),
        );
        mine.push((s, i, feeder, 0));
    }

    // Wake this worker when a source may have data (instead of spinning).
    let me = std::thread::current();
    for (src, ..) in mine.iter_mut() {
        let me = me.clone();
        src.set_waker(Arc::new(move || me.unpark()));
    }

    let mut epoch: u64 = 1;
    for h in op_inputs.iter_mut() {
        h.advance_to(epoch);
    }
    for h in wm_inputs.iter_mut() {
        h.advance_to(epoch);
    }
    pos_input.advance_to(epoch);
    let mut raw: Vec<RawRecord> = Vec::with_capacity(config.batch);
    let mut ops: Vec<Op> = Vec::new();
    let mut done = vec![false; mine.len()];
    // Times started but maybe not yet complete, oldest first.
    let mut started: VecDeque<u64> = VecDeque::new();
    let mut last_lag = Instant::now();
    loop {
        if config.stop.load(Ordering::Relaxed) {
            break;
        }
        if !config.live && done.iter().all(|d| *d) {
            break;
        }
        let mut dead_letters = Vec::new();
        let mut progress = Progress::default();
        let mut read_any = false;
        for (k, (src, i, feeder, seq)) in mine.iter_mut().enumerate() {
            if done[k] {
                continue;
            }
            raw.clear();
            if src.poll(config.batch, &mut raw)? == Poll::Done {
                done[k] = true;
            }
            if raw.is_empty() {
                continue;
            }
            read_any = true;
            let d = &plan.dataflows[*i];
            let mut p = DataflowProgress::default();
            // Records before this process's stored position were counted (and
            // their dead letters kept) before a restart: their ops still go
            // out, for owners whose state is behind, but nothing is counted.
            let counted_from = |part: u32| -> u64 {
                if !config.skip_applied {
                    return 0;
                }
                start
                    .positions
                    .get(&(d.name.clone(), src.partition_key(part)))
                    .copied()
                    .unwrap_or(0)
            };
            let mut last: BTreeMap<u32, u64> = BTreeMap::new();
            for r in raw.drain(..) {
                *seq += 1;
                let fresh = r.offset >= counted_from(r.partition);
                let outcome = if r.payload.is_empty() {
                    Outcome::Reject("empty payload".to_string())
                } else {
                    match serde_json::from_slice::<serde_json::Value>(&r.payload) {
                        Ok(v) => d.evaluate(&v, &plan.identity),
                        Err(e) => Outcome::Reject(format!("not JSON: {e}")),
                    }
                };
                match outcome {
                    Outcome::Ignored => {}
                    Outcome::Event(ev) => {
                        if fresh {
                            p.events += 1;
                        }
                        let from = ops.len();
                        feeder.feed(ev, *seq, k as u32, &mut ops);
                        for op in &mut ops[from..] {
                            op.origin = Some((r.partition, r.offset));
                        }
                    }
                    Outcome::Reject(reason) if fresh => dead_letters.push(DeadLetter {
                        dataflow: CompactString::from(d.name.as_str()),
                        source: src.describe(r.partition, r.offset),
                        reason,
                    }),
                    Outcome::Reject(_) => {}
                }
                // The stored position is the next one to read.
                last.insert(r.partition, r.offset + 1);
            }
            for (part, next) in last {
                pos_input.send((*i, src.partition_key(part), next, epoch));
            }
            if feeder.watermark > i64::MIN {
                p.watermark = Some(feeder.watermark);
                wm_inputs[*i].send(feeder.watermark);
            }
            progress
                .dataflows
                .entry(CompactString::from(d.name.as_str()))
                .or_default()
                .merge(&p);
            for op in ops.drain(..) {
                op_inputs[*i].send(op);
            }
        }
        if config.live && last_lag.elapsed() >= LAG_EVERY {
            last_lag = Instant::now();
            for (k, (src, ..)) in mine.iter().enumerate() {
                if let Some(lag) = src.lag() {
                    emit(Emitted::Lag {
                        worker: local,
                        source: k,
                        dataflow: src.dataflow().to_string(),
                        lag,
                    });
                }
            }
        }
        let next = if config.live {
            (epoch + 1).max(wall_clock_ms())
        } else {
            epoch + 1
        };
        if !read_any {
            if config.live {
                // Idle: let the frontier follow the clock so other workers'
                // times complete, then sleep until woken or the next tick.
                if wall_clock_ms() > epoch + IDLE_TICK_MS {
                    epoch = next;
                    for h in op_inputs.iter_mut() {
                        h.advance_to(epoch);
                    }
                    for h in wm_inputs.iter_mut() {
                        h.advance_to(epoch);
                    }
                    pos_input.advance_to(epoch);
                }
                worker.step_or_park(Some(IDLE_PARK));
            }
            continue;
        }
        if !dead_letters.is_empty() || progress != Progress::default() {
            emit(Emitted::Data {
                epoch,
                changes: Vec::new(),
                dead_letters,
                progress,
            });
        }
        started.push_back(epoch);
        epoch = next;
        for h in op_inputs.iter_mut() {
            h.advance_to(epoch);
        }
        for h in wm_inputs.iter_mut() {
            h.advance_to(epoch);
        }
        pos_input.advance_to(epoch);
        // Bound the work in flight: wait for the oldest started time to be
        // complete in the dataflow and committed by the store.
        while started.len() as u64 > config.in_flight {
            let Some(oldest) = started.pop_front() else {
                break;
            };
            let floor = oldest + 1;
            worker.step_while(|| probe.less_than(&floor));
            while config.committed.load(Ordering::Acquire) < floor
                && !config.stop.load(Ordering::Relaxed)
            {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        worker.step();
    }
    drop(op_inputs);
    drop(wm_inputs);
    drop(pos_input);
    worker.step_while(|| !probe.done());
    Ok(())
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
            input.send((me, d.clone(), p.clone(), *next));
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
        .map(|(k, (_, next))| (k, next))
        .collect()
}
