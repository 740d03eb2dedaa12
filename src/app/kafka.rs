//! Kafka wiring: `rdg run` (live, until stopped), `rdg replay --brokers`
//! (bounded), `rdg produce` and `rdg demo` (an in-process mock cluster).
//!
//! Invariant: a partition's position is read from the store only, never from
//! Kafka's committed offsets; group commits happen after the state commit
//! they describe, for lag tools only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{
    AppError, CommitReport, Observer, ReplayProgress, ReplaySummary, ShowProgress, Totals,
    replay_into_store, run_into_store, stage_list,
};
use crate::dataflow::{Positions, RunConfig, SourceFactory};
use crate::model::ClusterShape;
use crate::query::{LiveGauges, ServeConfig, Server};
use crate::source::kafka::{KafkaConfig, KafkaSource, OffsetCommitter};
use crate::source::{Source, SourceError};
use crate::spec::{self, Plan};
use crate::store::{Store, StoreOptions};

/// What `rdg run` and `rdg replay --brokers` are asked to do.
#[derive(Clone, Debug)]
pub struct KafkaRunOptions {
    pub dataflows: PathBuf,
    pub state: PathBuf,
    pub workers: usize,
    pub batch: usize,
    pub kafka: KafkaConfig,
    /// Only these topics (replay `--topic`); empty: every definition.
    pub topics: Vec<String>,
    /// How often `rdg run` prints its status line; `None`: never.
    pub status_every: Option<Duration>,
    /// How `rdg replay --brokers` shows its progress (`rdg run`: unused).
    pub progress: ShowProgress,
    /// Set to stop (SIGINT/SIGTERM): what was read is committed, then exit.
    pub stop: Arc<AtomicBool>,
    /// This process's place in a cluster (`rdg run --processes N ...`):
    /// timely's addresses, and the query URLs when it serves queries. Its
    /// `workers` are this run's.
    pub cluster: Option<ClusterShape>,
    /// Serve the query API while ingesting (in a cluster, with `cluster`'s
    /// query URLs: the query service and the dataflow see one shape).
    pub serve: Option<ServeConfig>,
    /// What the query API's status calls this run: `run`, `demo`, or
    /// `replay` (`rdg replay --brokers`, which serves nothing).
    pub mode: &'static str,
    /// The store's engine (for a new state) and cache.
    pub store: StoreOptions,
}

/// Each worker reads every selected dataflow's topic, owning the partitions
/// `kafka::owner` gives it; positions are the ones the run resumes from.
fn kafka_sources(
    plan: &Plan,
    opts: &KafkaRunOptions,
    bounded: bool,
) -> Result<SourceFactory, AppError> {
    let mut specs = Vec::new();
    for d in &plan.dataflows {
        if !opts.topics.is_empty() && !opts.topics.contains(&d.topic) {
            continue;
        }
        let mut config = opts.kafka.clone();
        for (k, v) in &d.kafka {
            config.settings.insert(k.clone(), v.clone());
        }
        specs.push((d.name.clone(), d.topic.clone(), config));
    }
    if let Some(t) = opts
        .topics
        .iter()
        .find(|t| !plan.dataflows.iter().any(|d| d.topic == **t))
    {
        return Err(AppError::Input(format!(
            "no definition reads topic `{t}` (known topics: {})",
            plan.dataflows
                .iter()
                .map(|d| d.topic.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(Arc::new(
        move |index: usize, peers: usize, resume: &Positions| {
            specs
                .iter()
                .map(|(name, topic, config)| {
                    // Resume positions are next offsets, keyed by partition number.
                    let positions: BTreeMap<i32, i64> = resume
                        .iter()
                        .filter(|((df, _), _)| df == name)
                        .filter_map(|((_, p), next)| {
                            Some((p.parse().ok()?, i64::try_from(*next).ok()?))
                        })
                        .collect();
                    let s = if bounded {
                        KafkaSource::bounded(name, topic, config, index, peers, positions)
                    } else {
                        KafkaSource::new(name, topic, config, index, peers, positions)
                    };
                    s.map(|s| Box::new(s) as Box<dyn Source>)
                })
                .collect::<Result<Vec<_>, SourceError>>()
        },
    ))
}

/// Commits stored positions to each dataflow's consumer group after the
/// state commit, and prints the status line.
struct LiveObserver {
    committers: BTreeMap<String, OffsetCommitter>,
    /// What the query API reports as live status.
    gauges: Arc<LiveGauges>,
    status_every: Option<Duration>,
    last_status: Instant,
    last_events: BTreeMap<String, u64>,
}

impl Observer for LiveObserver {
    fn committed(&mut self, report: &CommitReport) {
        self.gauges.observe_commit(report.took);
        for t in &report.times {
            self.gauges.observe_time_delays(t.dataflow, t.wait);
        }
        let progress = &report.progress;
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (d, p) in &progress.dataflows {
            self.gauges
                .observe_record_ages(d, p.record_times.ages(now_ms));
        }
        let mut by_dataflow: BTreeMap<&str, BTreeMap<i32, i64>> = BTreeMap::new();
        for ((d, p), next) in &progress.positions {
            if let (Ok(p), Ok(next)) = (p.parse::<i32>(), i64::try_from(*next)) {
                by_dataflow.entry(d.as_str()).or_default().insert(p, next);
            }
        }
        for (d, positions) in by_dataflow {
            if let Some(c) = self.committers.get(d)
                && let Err(e) = c.commit(&positions)
            {
                tracing::warn!("committing offsets of {d} to group {}: {e}", c.group());
            }
        }
    }

    fn tick(&mut self, totals: &Totals) {
        self.gauges.set_ready(totals.ready);
        self.gauges
            .set_outage(crate::source::kafka::broker_outage());
        self.gauges.set_stages(totals.stages.clone());
        for (name, t) in &totals.dataflows {
            self.gauges.observe(name, t.events, t.lag);
            self.gauges.set_skipped_offsets(name, t.skipped_offsets);
        }
        let Some(every) = self.status_every else {
            return;
        };
        let elapsed = self.last_status.elapsed();
        if elapsed < every {
            return;
        }
        self.last_status = Instant::now();
        eprintln!("{}", status_line(totals, &mut self.last_events, elapsed));
    }
}

/// `playback: 1200 ev/s (35000 events), lag 40, watermark 2023-11-14T22:13:20.000Z (delay 1.2s), dead letters 3 | ...; time by stage: collect 0.4s, commit 2.1s, ...`
/// (events and dead letters: committed by this run; stage seconds summed
/// over threads since the start).
pub fn status_line(
    totals: &Totals,
    last_events: &mut BTreeMap<String, u64>,
    elapsed: Duration,
) -> String {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let parts: Vec<String> = totals
        .dataflows
        .iter()
        .map(|(name, t)| {
            let before = last_events.insert(name.clone(), t.events).unwrap_or(0);
            let rate = (t.events - before.min(t.events)) as f64 / elapsed.as_secs_f64().max(1e-3);
            let lag = t.lag.map_or("?".to_string(), |l| l.to_string());
            let wm = match t.watermark {
                Some(w) => format!(
                    "watermark {} (delay {:.1}s)",
                    chrono::DateTime::from_timestamp_millis(w)
                        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                        .unwrap_or_else(|| w.to_string()),
                    (now_ms - w) as f64 / 1000.0
                ),
                None => "no watermark yet".to_string(),
            };
            format!(
                "{name}: {rate:.0} ev/s ({} events), lag {lag}, {wm}, dead letters {}",
                t.events, t.dead_letters
            )
        })
        .collect();
    if parts.is_empty() {
        return "status: waiting for data".to_string();
    }
    let mut line = format!("status: {}", parts.join(" | "));
    if !totals.stages.is_empty() {
        line.push_str("; time by stage: ");
        line.push_str(&stage_list(&totals.stages, 1));
    }
    line
}

/// This run's cluster shape (a single process when there is no cluster),
/// checked.
fn shape(opts: &KafkaRunOptions) -> Result<ClusterShape, AppError> {
    let workers = opts.workers.max(1);
    let shape = opts
        .cluster
        .clone()
        .unwrap_or_else(|| ClusterShape::single(workers));
    let mut problems = shape.problems();
    if shape.workers != workers {
        problems.push(format!(
            "the cluster shape has {} workers per process, but the run has {workers}",
            shape.workers
        ));
    }
    if problems.is_empty() {
        Ok(shape)
    } else {
        Err(AppError::Input(format!(
            "invalid cluster shape: {}",
            problems.join("; ")
        )))
    }
}

/// Opens the state and checks that it was written by this cluster shape.
fn open_state(opts: &KafkaRunOptions) -> Result<Store, AppError> {
    let store = Store::open_with(&opts.state, &opts.store)?;
    store.claim_shape(&shape(opts)?)?;
    Ok(store)
}

/// The query API's settings for this run: in a cluster, its shape (so the
/// query service routes by the same shape the dataflow shards by), which
/// must name every process's query URL.
fn serve_config(opts: &KafkaRunOptions, serve: &ServeConfig) -> Result<ServeConfig, AppError> {
    let shape = shape(opts)?;
    if shape.processes <= 1 {
        return Ok(serve.clone());
    }
    if shape.query_urls.is_empty() {
        return Err(AppError::Input(
            "a process of a cluster that serves the query API needs the query addresses of every process (--http-hosts)".into(),
        ));
    }
    Ok(ServeConfig {
        cluster: Some(shape),
        ..serve.clone()
    })
}

/// `rdg run`: consumes every definition's topic until `opts.stop` is set.
pub fn run_live(opts: &KafkaRunOptions) -> Result<Totals, AppError> {
    let plan = Arc::new(spec::load(&opts.dataflows)?);
    let store = open_state(opts)?;
    if let Some(c) = &opts.cluster {
        tracing::info!(
            "process {} of {}: connecting to its peers {} (timely reports each it still waits for)",
            c.process,
            c.processes,
            c.addresses.join(", ")
        );
    }
    let sources = kafka_sources(&plan, opts, false)?;
    let mut committers = BTreeMap::new();
    for d in &plan.dataflows {
        let mut config = opts.kafka.clone();
        config.settings.extend(d.kafka.clone());
        let c = OffsetCommitter::new(&d.name, &d.topic, &config).map_err(|e| {
            AppError::Input(format!(
                "cannot create the offset committer of {}: {e}",
                d.name
            ))
        })?;
        committers.insert(d.name.clone(), c);
    }
    let gauges = Arc::new(LiveGauges::new(opts.mode));
    let server = match &opts.serve {
        Some(config) => {
            let config = serve_config(opts, config)?;
            let server = Server::start(store.clone(), config, gauges.clone())
                .map_err(|e| AppError::Input(format!("cannot serve the query API: {e}")))?;
            eprintln!(
                "serving the query API and the graph explorer on http://{}",
                server.addr()
            );
            Some(server)
        }
        None => None,
    };
    let mut observer = LiveObserver {
        committers,
        status_every: opts.status_every,
        last_status: Instant::now(),
        last_events: BTreeMap::new(),
        gauges,
    };
    let config = RunConfig {
        workers: opts.workers.max(1),
        batch: opts.batch.max(1),
        live: true,
        skip_applied: true,
        stop: opts.stop.clone(),
        cluster: opts.cluster.clone(),
        ..RunConfig::default()
    };
    let result = run_into_store(&store, plan, config, sources, &mut observer);
    if let Some(server) = server
        && let Err(e) = server.stop()
    {
        tracing::warn!("stopping the query API: {e}");
    }
    result
}

/// How often the demo prints its status line.
const DEMO_STATUS: Duration = Duration::from_secs(5);

/// `rdg replay --brokers`: reads each partition up to the end offset it had
/// at the start, then stops. Into an empty state it is a bulk load (see
/// [`replay_into_store`]).
pub fn replay_kafka(opts: &KafkaRunOptions) -> Result<ReplaySummary, AppError> {
    let started = Instant::now();
    let plan = Arc::new(spec::load(&opts.dataflows)?);
    let store = open_state(opts)?;
    let bulk = store.is_empty()?;
    let sources = kafka_sources(&plan, opts, true)?;
    let config = RunConfig {
        workers: opts.workers.max(1),
        batch: opts.batch.max(1),
        skip_applied: true,
        stop: opts.stop.clone(),
        cluster: opts.cluster.clone(),
        step: crate::dataflow::REPLAY_STEP,
        ..RunConfig::default()
    };
    let mut progress = ReplayProgress::kafka(opts.progress);
    let workers = config.workers;
    let ran = replay_into_store(&store, bulk, plan, config, sources, &mut progress);
    progress.clear();
    let totals = ran?;
    let counts = super::counts_after(&store, &totals, workers)?;
    let mut summary = ReplaySummary::new(&totals, &counts, started.elapsed());
    summary.add_store(&store, bulk);
    Ok(summary)
}

/// Installs SIGINT/SIGTERM handling that sets `stop`; a second signal exits
/// at once.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>, AppError> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second signal: exiting without waiting");
            std::process::exit(130);
        }
        eprintln!("stopping: committing what is complete (signal again to exit at once)");
    })
    .map_err(|e| AppError::Input(format!("cannot install the signal handler: {e}")))?;
    Ok(stop)
}

/// What `rdg demo` is asked to do.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub dataflows: PathBuf,
    pub state: PathBuf,
    pub workers: usize,
    /// Events produced per second.
    pub rate: f64,
    /// Events to produce in all (then the demo keeps consuming until stopped).
    pub events: u64,
    /// Stop after this long; `None`: run until SIGINT/SIGTERM.
    pub duration: Option<Duration>,
    pub partitions: i32,
    pub seed: u64,
    pub stop: Arc<AtomicBool>,
    /// The query API, served while the demo runs.
    pub serve: ServeConfig,
    /// The store's engine (for a new state) and cache.
    pub store: StoreOptions,
}

/// `rdg demo`: an in-process Kafka-protocol cluster (librdkafka's mock
/// cluster), the shipped definitions' topics, generated events produced at a
/// steady rate, and the pipeline consuming them live.
pub fn demo(opts: &DemoOptions) -> Result<Totals, AppError> {
    let plan = spec::load(&opts.dataflows)?;
    let cluster = rdkafka::mocking::MockCluster::new(1)
        .map_err(|e| AppError::Input(format!("cannot start the mock Kafka cluster: {e}")))?;
    for d in &plan.dataflows {
        cluster
            .create_topic(&d.topic, opts.partitions, 1)
            .map_err(|e| AppError::Input(format!("cannot create topic {}: {e}", d.topic)))?;
    }
    let brokers = cluster.bootstrap_servers();
    eprintln!(
        "demo: mock Kafka cluster at {brokers}; producing {} events at {}/s to {}",
        opts.events,
        opts.rate,
        plan.dataflows
            .iter()
            .map(|d| d.topic.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "demo: state in {}; while it runs, open http://{1}/ (the graph explorer) or try:\n  curl http://{1}/v1/identity/account/acc1\n  curl 'http://{1}/v1/edges/watched/profile/acc1-p0?order=recent&limit=5'\n  rdg query --url http://{1} identity account acc1\nafter Ctrl-C: rdg export --state {0} | head",
        opts.state.display(),
        opts.serve.listen
    );
    // Event time follows the wall clock at the produce rate.
    let gen_opts = crate::generate::GenOptions::live(
        opts.events,
        opts.seed,
        opts.rate,
        chrono::Utc::now().timestamp_millis(),
    );
    let producer_brokers = brokers.clone();
    let rate = opts.rate;
    let stop = opts.stop.clone();
    let producer = std::thread::spawn(move || {
        let events =
            crate::generate::events(&gen_opts).take_while(move |_| !stop.load(Ordering::Relaxed));
        crate::produce::produce(
            &producer_brokers,
            &BTreeMap::new(),
            events,
            Some(rate),
            |_| {},
        )
    });
    if let Some(d) = opts.duration {
        let stop = opts.stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::SeqCst);
        });
    }
    let run = KafkaRunOptions {
        dataflows: opts.dataflows.clone(),
        state: opts.state.clone(),
        workers: opts.workers,
        batch: 4096,
        kafka: KafkaConfig {
            brokers,
            ..KafkaConfig::default()
        },
        topics: Vec::new(),
        status_every: Some(DEMO_STATUS),
        progress: ShowProgress::Off,
        stop: opts.stop.clone(),
        cluster: None,
        serve: Some(opts.serve.clone()),
        mode: "demo",
        store: opts.store,
    };
    let totals = run_live(&run);
    opts.stop.store(true, Ordering::SeqCst);
    match producer.join() {
        Ok(Ok(n)) => eprintln!("demo: produced {n} events"),
        Ok(Err(e)) => eprintln!("demo: the producer stopped: {e}"),
        Err(_) => eprintln!("demo: the producer thread panicked"),
    }
    drop(cluster);
    totals
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::status_line;
    use crate::app::{CommitReport, DataflowTotals, TimeDelays, Totals};

    #[test]
    fn record_ages_from_any_timestamp_are_observed_without_overflow() {
        let gauges = std::sync::Arc::new(crate::query::LiveGauges::new("run"));
        let mut observer = super::LiveObserver {
            committers: BTreeMap::new(),
            gauges: gauges.clone(),
            status_every: None,
            last_status: std::time::Instant::now(),
            last_events: BTreeMap::new(),
        };
        let mut progress = crate::model::Progress::default();
        for (d, ts) in [
            ("far_past", i64::MIN),
            ("future", i64::MAX),
            ("now", chrono::Utc::now().timestamp_millis()),
        ] {
            let mut p = crate::model::DataflowProgress::default();
            p.record_times.add(ts, 1);
            progress.dataflows.insert(d.into(), p);
        }
        let report = CommitReport {
            progress,
            took: Duration::from_millis(1),
            times: vec![
                TimeDelays::of(1_000, 1_030, 1_100),
                TimeDelays::of(2_000, 2_500, 2_500),
            ],
        };
        crate::app::Observer::committed(&mut observer, &report);
        // Each time's two parts land in their histograms.
        let delays = crate::query::LiveStatus::time_delay_seconds(&*gauges).expect("histograms");
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("dataflow", "", delays.dataflow);
        registry.register("wait", "", delays.wait);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for needle in [
            "dataflow_sum 0.53\n",
            "dataflow_count 2\n",
            "dataflow_bucket{le=\"0.032\"} 1\n",
            "dataflow_bucket{le=\"0.512\"} 2\n",
            "wait_sum 0.07\n",
            "wait_bucket{le=\"0.001\"} 1\n",
            "wait_bucket{le=\"0.064\"} 1\n",
            "wait_bucket{le=\"0.128\"} 2\n",
        ] {
            assert!(text.contains(needle), "{needle:?}: {text}");
        }
        let ages = crate::query::LiveStatus::record_age_seconds(&*gauges).expect("histograms");
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("age", "", ages);
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for d in ["far_past", "future", "now"] {
            assert!(
                text.contains(&format!("age_count{{dataflow=\"{d}\"}} 1")),
                "{d}: {text}"
            );
        }
        // A timestamp in the future counts as age 0; one in the far past
        // lands in the last bucket only.
        assert!(text.contains("age_sum{dataflow=\"future\"} 0.0"), "{text}");
        assert!(
            text.contains("age_bucket{le=\"16.384\",dataflow=\"far_past\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn status_line_names_each_dataflow_then_the_stage_times() {
        let mut totals = Totals::default();
        assert_eq!(
            status_line(&totals, &mut BTreeMap::new(), Duration::from_secs(1)),
            "status: waiting for data"
        );
        totals.dataflows.insert(
            "playback".into(),
            DataflowTotals {
                events: 500,
                dead_letters: 2,
                lag: Some(7),
                ..DataflowTotals::default()
            },
        );
        totals.stages = [("commit".to_string(), 2.04), ("decode".to_string(), 0.5)]
            .into_iter()
            .collect();
        let mut last = BTreeMap::from([("playback".to_string(), 300)]);
        let line = status_line(&totals, &mut last, Duration::from_secs(2));
        assert!(
            line.starts_with(
                "status: playback: 100 ev/s (500 events), lag 7, no watermark yet, dead letters 2"
            ),
            "{line}"
        );
        assert!(
            line.ends_with("; time by stage: commit 2.0s, decode 0.5s"),
            "{line}"
        );
        assert_eq!(last["playback"], 500);
    }
}
