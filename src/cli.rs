//! Command-line interface: argument parsing and the thin glue from each
//! command to the library, as ripgrep's `main` does it: [`main`] parses and
//! maps errors to exit codes, [`run`] dispatches, and each subcommand is one
//! short function over its own argument struct. Errors here are `anyhow`
//! and end as a message on stderr with a non-zero exit status.
//!
//! Invariant: every flag is defined once (shared groups are flattened:
//! [`KafkaArgs`], [`ClusterArgs`], [`ServeArgs`]) and every file a flag
//! names is read in one place (hosts files: [`host_lines`], into one
//! [`ClusterShape`] for the dataflow, the store and the query service;
//! tokens: [`read_token`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use rdg::app::kafka::{DemoOptions, KafkaRunOptions};
use rdg::app::{self, ReplayOptions};
use rdg::model::ClusterShape;
use rdg::query::client::Client;
use rdg::query::{ServeConfig, Server, StaticStatus};
use rdg::source::kafka::{KafkaConfig, OnGap, StartFrom};
use rdg::store::{Direction, EdgeOrder, EdgeQuery, Engine, Store, StoreOptions};

#[derive(Parser)]
#[command(name = "rdg", version, about = "A real-time graph of user activity")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate every definition file and print every problem at once.
    Check(CheckArgs),
    /// Backfill JSON Lines files (`.jsonl`, `.jsonl.gz`) into a state directory.
    Replay(ReplayArgs),
    /// Consume every definition's topic live until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Send generated events to the definitions' topics (keyed by account).
    Produce(ProduceArgs),
    /// Zero-setup demo: an in-process Kafka-protocol cluster, generated events
    /// at a steady rate, the pipeline consuming them live.
    Demo(DemoArgs),
    /// Look up records in a state directory, or ask a running server
    /// (`--url`); prints JSON.
    Query(QueryArgs),
    /// Serve a state directory that no other process holds over HTTP (JSON
    /// API, /metrics, /openapi.json, explorer page at /) until Ctrl-C.
    Serve(ServeCommandArgs),
    /// Print the whole graph as sorted JSON Lines, from a state directory or
    /// from a running server (`--url`; any process of a cluster gives the
    /// whole cluster's graph).
    Export(ExportArgs),
    /// Generate deterministic synthetic events for the shipped definitions.
    Gen(GenArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The definitions folder.
    #[arg(long, default_value = "dataflows")]
    dataflows: PathBuf,
}

#[derive(Args)]
struct ReplayArgs {
    #[arg(long, default_value = "dataflows")]
    dataflows: PathBuf,
    /// The state directory (created if missing; continued if it holds data).
    #[arg(long)]
    state: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1, value_parser = parse_count::<usize>)]
    workers: usize,
    /// Files: read FILE as topic TOPIC (`TOPIC=FILE`; otherwise a file's
    /// topic is its name up to the first dot). With --brokers: replay only
    /// this topic (repeatable).
    #[arg(long = "topic", value_name = "TOPIC=FILE | TOPIC")]
    topics: Vec<String>,
    /// Replay from Kafka instead of files: each partition up to the end
    /// offset it had when the replay started.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Records read from each file per batch (one batch = one atomic commit unit).
    #[arg(long, default_value_t = 4096, value_parser = parse_count::<usize>)]
    batch: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Into an empty fjall state: MiB of sorted buffers held in memory and
    /// written once, merged (default 768; 0 writes each 64 MiB buffer at
    /// once, as a run that the end merges again).
    #[arg(long, value_name = "MB")]
    bulk_memory_mb: Option<u64>,
    /// Off a terminal: seconds between progress lines on stderr, fractions
    /// allowed (0: none). On a terminal a progress bar is drawn instead.
    #[arg(long, default_value = "10", value_parser = parse_interval)]
    status_interval: Duration,
    /// Input files.
    files: Vec<PathBuf>,
}

impl ReplayArgs {
    /// The store's options: `--engine`, `--cache-mb`, `--bulk-memory-mb`.
    fn store_options(&self) -> StoreOptions {
        StoreOptions {
            bulk_memory_bytes: self.bulk_memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
            ..self.store.options()
        }
    }

    /// A bar on a terminal, otherwise a line every `--status-interval`.
    fn progress(&self) -> app::ShowProgress {
        if std::io::stderr().is_terminal() {
            app::ShowProgress::Bar
        } else if self.status_interval.is_zero() {
            app::ShowProgress::Off
        } else {
            app::ShowProgress::Lines(self.status_interval)
        }
    }
}

/// The store of a run: engine (for a new state) and cache.
#[derive(Args, Clone, Copy)]
struct StoreArgs {
    /// The store engine of a new state: fjall (default) or sled. An
    /// existing state keeps the engine it was written with.
    #[arg(long)]
    engine: Option<Engine>,
    /// The store's cache in MiB (default: fjall 256, sled 512).
    #[arg(long, value_parser = parse_count::<u64>)]
    cache_mb: Option<u64>,
}

impl StoreArgs {
    fn options(self) -> StoreOptions {
        StoreOptions {
            engine: self.engine,
            cache_bytes: self.cache_mb.map(|mb| mb.saturating_mul(1 << 20)),
            bulk_memory_bytes: None,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value = "dataflows")]
    dataflows: PathBuf,
    #[arg(long)]
    state: PathBuf,
    #[arg(long, default_value_t = 1, value_parser = parse_count::<usize>)]
    workers: usize,
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Seconds between status lines, fractions allowed (0: none).
    #[arg(long, default_value = "10", value_parser = parse_interval)]
    status_interval: Duration,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[arg(long, default_value_t = 4096, value_parser = parse_count::<usize>)]
    batch: usize,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct ProduceArgs {
    #[arg(long, default_value = "dataflows")]
    dataflows: PathBuf,
    #[arg(long, default_value = "127.0.0.1:9092", value_parser = parse_brokers)]
    brokers: String,
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// Events per second (default: as fast as possible). Paced events are
    /// stamped with the wall clock (from now, up to 5 s out of order), as
    /// a live load; unpaced ones with `rdg gen`'s fixed timeline.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Partitions of topics that do not exist yet.
    #[arg(long, default_value_t = 4, value_parser = parse_count::<i32>)]
    partitions: i32,
    /// librdkafka settings for the producer.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long, default_value = "dataflows")]
    dataflows: PathBuf,
    #[arg(long, default_value = "demo-state")]
    state: PathBuf,
    #[arg(long, default_value_t = 2, value_parser = parse_count::<usize>)]
    workers: usize,
    /// Events produced per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Events to produce in all (they cover events/20 accounts).
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    #[arg(long, default_value_t = 4, value_parser = parse_count::<i32>)]
    partitions: i32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// Where `query` and `export` read: a state directory or a query service.
#[derive(Args)]
struct ReadFrom {
    #[arg(long, required_unless_present = "url", conflicts_with = "url")]
    state: Option<PathBuf>,
    /// Ask the query service at this address (`http://HOST:PORT`)
    /// instead of opening the state.
    #[arg(long)]
    url: Option<String>,
    /// With --url: a file holding the server's bearer token.
    #[arg(long, requires = "url")]
    auth_token_file: Option<PathBuf>,
    /// With --state: the store's cache in MiB (default: fjall 256, sled 512).
    #[arg(long, conflicts_with = "url", value_parser = parse_count::<u64>)]
    cache_mb: Option<u64>,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    from: ReadFrom,
    #[command(subcommand)]
    what: QueryCommand,
}

#[derive(Args)]
struct ServeCommandArgs {
    #[arg(long)]
    state: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
    /// The store's cache in MiB (default: fjall 256, sled 512).
    #[arg(long, value_parser = parse_count::<u64>)]
    cache_mb: Option<u64>,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    from: ReadFrom,
}

#[derive(Args)]
struct GenArgs {
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "data")]
    out: PathBuf,
    /// Share of events that are deletes.
    #[arg(long)]
    delete_share: Option<f64>,
    /// Maximum out-of-order jitter of event times, in ms.
    #[arg(long)]
    jitter_ms: Option<i64>,
    /// Share of malformed lines.
    #[arg(long)]
    malformed_share: Option<f64>,
}

/// Timely's cluster mode: several processes exchanging data by key.
#[derive(Args)]
struct ClusterArgs {
    /// Number of processes in the cluster (1: this process alone).
    #[arg(long, default_value_t = 1, value_parser = parse_count::<usize>)]
    processes: usize,
    /// This process's index, 0-based, in the hosts file's order.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// A file with one `host:port` per process, in process order.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// With --listen in a cluster: a file with the `host:port` of each
    /// process's query API, one per line in process order, so that every
    /// process can answer for the whole graph.
    #[arg(long)]
    http_hosts: Option<PathBuf>,
}

/// The `host:port` lines of a hosts file (comments and blank lines
/// skipped), which must be one per process.
fn host_lines(path: &Path, processes: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the hosts file {}", path.display()))?;
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if hosts.len() != processes {
        anyhow::bail!(
            "{} lists {} addresses, but --processes is {}",
            path.display(),
            hosts.len(),
            processes
        );
    }
    Ok(hosts)
}

impl ClusterArgs {
    /// This process's cluster shape (`None`: a process alone): timely's
    /// addresses from `--hosts`, and with `listen` (it serves queries) every
    /// process's query URL from `--http-hosts`, whose line for this process
    /// must have `listen`'s port.
    fn shape(
        &self,
        workers: usize,
        listen: Option<std::net::SocketAddr>,
    ) -> Result<Option<ClusterShape>> {
        if self.processes <= 1 {
            return Ok(None);
        }
        let hosts = self
            .hosts
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--processes {} needs --hosts FILE", self.processes))?;
        let addresses = host_lines(hosts, self.processes)?;
        if self.process >= self.processes {
            anyhow::bail!(
                "--process {} is out of range for --processes {} (0 to {})",
                self.process,
                self.processes,
                self.processes - 1
            );
        }
        let query_urls = match listen {
            Some(listen) => self.query_urls(listen)?,
            None => Vec::new(),
        };
        Ok(Some(ClusterShape {
            processes: self.processes,
            process: self.process,
            workers: workers.max(1),
            addresses,
            query_urls,
        }))
    }

    /// Where every process serves its query API (`--http-hosts`).
    fn query_urls(&self, listen: std::net::SocketAddr) -> Result<Vec<String>> {
        let Some(file) = &self.http_hosts else {
            anyhow::bail!(
                "--processes {} with --listen needs --http-hosts FILE (the query API address of every process, one per line), so that each process can answer for the whole graph",
                self.processes
            );
        };
        let hosts = host_lines(file, self.processes)?;
        let own = hosts.get(self.process).map(String::as_str).unwrap_or("");
        let own_port = own.rsplit_once(':').map(|(_, p)| p);
        if own_port != Some(listen.port().to_string().as_str()) {
            anyhow::bail!(
                "{} gives `{own}` for process {}, but --listen is {listen}: the ports must match",
                file.display(),
                self.process
            );
        }
        Ok(hosts.iter().map(|h| format!("http://{h}")).collect())
    }
}

/// How to reach Kafka.
#[derive(Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, `HOST:PORT[,...]`.
    #[arg(long, value_parser = parse_brokers)]
    brokers: Option<String>,
    /// Where partitions without a stored position start: earliest, latest, or a time (epoch ms).
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    from: StartFrom,
    /// When a stored offset is no longer on the broker: stop, or continue from the earliest.
    #[arg(long, value_enum, default_value_t = Gap::Stop)]
    on_gap: Gap,
    /// librdkafka settings for every client (security, timeouts), repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// How long (ms) a partition whose broker went past offsets is fetched
    /// again before the gap is counted: for brokers that can make a later
    /// batch readable before an earlier one (tansu 0.6 under load). 0, the
    /// default, counts a gap at once, as Kafka's (compacted or
    /// transactional topics) are real.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    recheck_gaps_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Gap {
    Stop,
    Earliest,
}

impl KafkaArgs {
    fn config(&self, brokers: String) -> KafkaConfig {
        KafkaConfig {
            brokers,
            settings: self.settings.iter().cloned().collect(),
            on_gap: match self.on_gap {
                Gap::Stop => OnGap::Stop,
                Gap::Earliest => OnGap::Earliest,
            },
            start: self.from,
            recheck_gaps: Duration::from_millis(self.recheck_gaps_ms),
            ..KafkaConfig::default()
        }
    }
}

/// A count (threads, processes, records a batch, MiB of cache): 1 or
/// more. 0 is refused, not quietly taken as 1 (nor handed to an engine that
/// stops on it: sled panics on a cache under 256 bytes).
fn parse_count<T: std::str::FromStr + PartialOrd + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!("expected a whole number, 1 or more, got `{s}`")),
    }
}

/// Events per second: a finite number above 0, checked before any broker
/// is asked for anything.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("expected events per second above 0, got `{s}`")),
    }
}

/// Kafka bootstrap servers: `HOST[:PORT]`, comma-separated, none empty
/// (an empty list would have the sources retry forever, naming no broker).
fn parse_brokers(s: &str) -> Result<String, String> {
    if s.split(',').any(|b| b.trim().is_empty()) {
        return Err(format!("expected HOST:PORT[,HOST:PORT...], got `{s}`"));
    }
    Ok(s.to_string())
}

fn parse_from(s: &str) -> Result<StartFrom, String> {
    match s {
        "earliest" => Ok(StartFrom::Earliest),
        "latest" => Ok(StartFrom::Latest),
        t => t
            .parse::<i64>()
            .map(StartFrom::TimeMs)
            .map_err(|_| format!("expected earliest, latest or a time in epoch ms, got `{s}`")),
    }
}

/// Seconds, with a fraction if wanted (`1`, `0.2`); `0` is zero.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("expected seconds such as 1 or 0.2, got `{s}`"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("expected a number of seconds from 0 up, got `{s}`"))
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[derive(Subcommand)]
enum QueryCommand {
    /// A node record: `node TYPE ID`.
    Node { node_type: String, id: String },
    /// The neighbours along an edge type: `edges EDGE_TYPE TYPE ID`.
    Edges {
        edge_type: String,
        node_type: String,
        id: String,
        /// Follow the reverse index (edges pointing at the node).
        #[arg(long = "in")]
        incoming: bool,
        #[arg(long)]
        limit: Option<usize>,
        /// Only edges last seen at or after this time (epoch ms).
        #[arg(long)]
        since: Option<i64>,
        #[arg(long, value_enum, default_value_t = EdgeOrder::Id)]
        order: EdgeOrder,
    },
    /// The identity cluster of an identifier: `identity TYPE ID`.
    Identity { node_type: String, id: String },
}

fn parse_topic_file(s: &str) -> Result<(String, PathBuf)> {
    match s.split_once('=') {
        Some((t, f)) if !t.is_empty() && !f.is_empty() => Ok((t.to_string(), PathBuf::from(f))),
        _ => anyhow::bail!("--topic: expected TOPIC=FILE for a file replay, got `{s}`"),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    app::install_panic_hook();
    // Logs go to stderr; RUST_LOG overrides the default level (info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Named, so that a profile or `top -H` tells the sorts and ingestions
    // from the thread that happened to start the pool (a worker).
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("rdg:pool-{i}"))
        .build_global()
    {
        tracing::debug!(error = %e, "rayon's pool was already started");
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message already holds (errors that print their source themselves,
/// as the store's and the engines' do, would otherwise repeat it).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// One function per subcommand.
fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check(args) => check(args),
        Command::Replay(args) => replay(args),
        Command::Run(args) => run_live(args),
        Command::Produce(args) => produce(args),
        Command::Demo(args) => demo(args),
        Command::Query(args) => query(args),
        Command::Serve(args) => serve(args),
        Command::Export(args) => export(args),
        Command::Gen(args) => generate(args),
    }
}

/// `rdg check`: exit 1 with every problem, or a one-line summary.
fn check(args: CheckArgs) -> Result<ExitCode> {
    let plan = match rdg::spec::load(&args.dataflows) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(1));
        }
    };
    let rules: usize = plan
        .dataflows
        .iter()
        .map(|d| d.nodes.len() + d.edges.len() + d.identity.len())
        .sum();
    print(format!(
        "ok: {} definitions, {rules} rules in {}",
        plan.dataflows.len(),
        args.dataflows.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `rdg replay`: files, or Kafka with `--brokers`; prints the summary.
fn replay(args: ReplayArgs) -> Result<ExitCode> {
    let result = match args.kafka.brokers.clone() {
        Some(brokers) => replay_kafka(&args, brokers)?,
        None => replay_files(&args)?,
    };
    match result {
        Ok(summary) if args.json => print(serde_json::to_string(&summary)?)?,
        Ok(summary) => print(format!("{summary}"))?,
        Err(app::AppError::Spec(e)) => {
            eprintln!("{e}");
            eprintln!(
                "error: the definitions in {} are invalid; nothing was replayed",
                args.dataflows.display()
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(ExitCode::SUCCESS)
}

type Replayed = std::result::Result<app::ReplaySummary, app::AppError>;

fn replay_kafka(args: &ReplayArgs, brokers: String) -> Result<Replayed> {
    if !args.files.is_empty() {
        anyhow::bail!("pass either input files or --brokers, not both");
    }
    let opts = KafkaRunOptions {
        dataflows: args.dataflows.clone(),
        state: args.state.clone(),
        workers: args.workers,
        batch: args.batch,
        kafka: args.kafka.config(brokers),
        topics: args.topics.clone(),
        status_every: None,
        progress: args.progress(),
        stop: app::kafka::stop_on_signals()?,
        cluster: None,
        serve: None,
        mode: "replay",
        store: args.store_options(),
    };
    Ok(app::kafka::replay_kafka(&opts))
}

fn replay_files(args: &ReplayArgs) -> Result<Replayed> {
    if args.files.is_empty() && args.topics.is_empty() {
        anyhow::bail!("no input: pass FILE..., --topic TOPIC=FILE, or --brokers HOST:PORT");
    }
    let topic_files = args
        .topics
        .iter()
        .map(|t| parse_topic_file(t))
        .collect::<Result<Vec<_>>>()?;
    let opts = ReplayOptions {
        dataflows: args.dataflows.clone(),
        state: args.state.clone(),
        workers: args.workers,
        files: args.files.clone(),
        topic_files,
        batch: args.batch,
        progress: args.progress(),
        store: args.store_options(),
    };
    Ok(app::replay(&opts))
}

/// `rdg run`: live until SIGINT/SIGTERM, serving queries with `--listen`.
fn run_live(args: RunArgs) -> Result<ExitCode> {
    let brokers = args
        .kafka
        .brokers
        .clone()
        .unwrap_or_else(|| "127.0.0.1:9092".to_string());
    let stop = app::kafka::stop_on_signals()?;
    let cluster = args.cluster.shape(args.workers, args.serve.listen)?;
    let serve = match args.serve.listen {
        Some(_) => Some(args.serve.config()?),
        None => None,
    };
    let opts = KafkaRunOptions {
        kafka: args.kafka.config(brokers),
        topics: Vec::new(),
        status_every: (!args.status_interval.is_zero()).then_some(args.status_interval),
        progress: app::ShowProgress::Off,
        stop,
        cluster,
        serve,
        mode: "run",
        dataflows: args.dataflows,
        state: args.state,
        workers: args.workers,
        batch: args.batch,
        store: args.store.options(),
    };
    let totals = app::kafka::run_live(&opts)?;
    eprintln!(
        "stopped: {} events, {} dead letters, {} late committed by this run",
        totals.events, totals.dead_letters, totals.late
    );
    Ok(ExitCode::SUCCESS)
}

/// `rdg produce`: generated events to the definitions' topics.
fn produce(args: ProduceArgs) -> Result<ExitCode> {
    let plan = rdg::spec::load(&args.dataflows)?;
    let settings: BTreeMap<String, String> = args.settings.into_iter().collect();
    let topics: Vec<(String, i32)> = plan
        .dataflows
        .iter()
        .map(|d| (d.topic.clone(), args.partitions))
        .collect();
    rdg::produce::create_topics(&args.brokers, &settings, &topics)?;
    // Paced, the events' time follows the wall clock, as a live source's
    // would; as fast as possible, it is `rdg gen`'s fixed timeline.
    let gen_opts = match args.rate {
        Some(rate) => rdg::generate::GenOptions::live(
            args.events,
            args.seed,
            rate,
            chrono::Utc::now().timestamp_millis(),
        ),
        None => rdg::generate::GenOptions {
            events: args.events,
            seed: args.seed,
            ..Default::default()
        },
    };
    let events = rdg::generate::events(&gen_opts);
    let sent = rdg::produce::produce(&args.brokers, &settings, events, args.rate, |_| {})?;
    print(format!("produced {sent} events to {}", args.brokers))?;
    Ok(ExitCode::SUCCESS)
}

/// `rdg demo`: a mock cluster, generated events, the pipeline, the API.
fn demo(args: DemoArgs) -> Result<ExitCode> {
    let opts = DemoOptions {
        stop: app::kafka::stop_on_signals()?,
        serve: args.serve.config()?,
        dataflows: args.dataflows,
        state: args.state,
        workers: args.workers,
        rate: args.rate,
        events: args.events,
        duration: args.seconds.map(Duration::from_secs),
        partitions: args.partitions,
        seed: args.seed,
        store: args.store.options(),
    };
    let totals = app::kafka::demo(&opts)?;
    eprintln!(
        "demo stopped: {} events, {} dead letters committed",
        totals.events, totals.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}

/// `rdg query`: from a state directory, or from a server with `--url`.
fn query(args: QueryArgs) -> Result<ExitCode> {
    let from = &args.from;
    let found = match (&from.url, &from.state) {
        (Some(url), _) => query_url(url, from.auth_token_file.as_deref(), args.what)?,
        (None, Some(state)) => query_state(state, from.cache_mb, args.what)?,
        (None, None) => anyhow::bail!("pass --state DIR or --url URL"),
    };
    match found {
        Found::Yes(value) => {
            print(serde_json::to_string_pretty(&value)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Found::No(ident) => {
            eprintln!("not found: {ident}");
            Ok(ExitCode::from(1))
        }
    }
}

/// What a lookup found: the JSON to print, or the identifier not found.
enum Found {
    Yes(serde_json::Value),
    No(String),
}

impl Found {
    fn of(value: Option<serde_json::Value>, node_type: &str, id: &str) -> Found {
        value.map_or_else(|| Found::No(format!("{node_type}:{id}")), Found::Yes)
    }
}

/// `rdg query --state`.
fn query_state(state: &Path, cache_mb: Option<u64>, what: QueryCommand) -> Result<Found> {
    let store = open_existing(state, cache_mb)?;
    Ok(match what {
        QueryCommand::Node { node_type, id } => {
            let node = store.node(&format!("{node_type}:{id}"))?;
            Found::of(node.map(serde_json::to_value).transpose()?, &node_type, &id)
        }
        QueryCommand::Edges {
            edge_type,
            node_type,
            id,
            incoming,
            limit,
            since,
            order,
        } => {
            let ident = format!("{node_type}:{id}");
            let q = edge_query(incoming, limit, since, order);
            let items = store.edges(&edge_type, &ident, &q)?;
            Found::Yes(serde_json::json!({
                "node": ident,
                "edge_type": edge_type,
                "direction": q.direction,
                "items": items,
            }))
        }
        QueryCommand::Identity { node_type, id } => {
            let entry = store.identity(&format!("{node_type}:{id}"))?;
            Found::of(
                entry.map(serde_json::to_value).transpose()?,
                &node_type,
                &id,
            )
        }
    })
}

/// `rdg query --url`: the same answers as `--state`, from a server.
fn query_url(url: &str, token_file: Option<&Path>, what: QueryCommand) -> Result<Found> {
    let token = token_file.map(read_token).transpose()?;
    let client = Client::new(url, token);
    Ok(match what {
        QueryCommand::Node { node_type, id } => {
            Found::of(client.node(&node_type, &id)?, &node_type, &id)
        }
        QueryCommand::Edges {
            edge_type,
            node_type,
            id,
            incoming,
            limit,
            since,
            order,
        } => {
            let q = edge_query(incoming, limit, since, order);
            Found::Yes(client.edges(&edge_type, &node_type, &id, &q)?)
        }
        QueryCommand::Identity { node_type, id } => {
            Found::of(client.identity(&node_type, &id)?, &node_type, &id)
        }
    })
}

/// `rdg export`: the whole graph to stdout, from a state or a server.
fn export(args: ExportArgs) -> Result<ExitCode> {
    let from = &args.from;
    let source = match (&from.url, &from.state) {
        (Some(url), _) => {
            let token = from
                .auth_token_file
                .as_deref()
                .map(read_token)
                .transpose()?;
            Ok(Client::new(url, token))
        }
        (None, Some(state)) => Err(open_existing(state, from.cache_mb)?),
        (None, None) => anyhow::bail!("pass --state DIR or --url URL"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match source {
        Ok(client) => client
            .export(&mut out)
            .map(drop)
            .map_err(anyhow::Error::new),
        Err(store) => store.export(&mut out).map(drop).map_err(anyhow::Error::new),
    };
    match written.and_then(|()| out.flush().context("writing the export")) {
        Err(e) if !broken_pipe(&e) => Err(e),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `rdg gen`: deterministic synthetic events into a folder.
fn generate(args: GenArgs) -> Result<ExitCode> {
    let defaults = rdg::generate::GenOptions::default();
    let opts = rdg::generate::GenOptions {
        events: args.events,
        seed: args.seed,
        delete_share: args.delete_share.unwrap_or(defaults.delete_share),
        jitter_ms: args.jitter_ms.unwrap_or(defaults.jitter_ms),
        malformed_share: args.malformed_share.unwrap_or(defaults.malformed_share),
        ..defaults
    };
    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let summary = rdg::generate::generate(&opts, out)
        .with_context(|| format!("writing events to {}", out.display()))?;
    for (path, lines) in summary.files {
        print(format!("{}\t{lines} lines", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens a state directory that must already exist (reads never create one),
/// with the engine it records.
fn open_existing(state: &Path, cache_mb: Option<u64>) -> Result<Store> {
    if !state.is_dir() {
        anyhow::bail!("state directory {} does not exist", state.display());
    }
    let options = StoreArgs {
        engine: None,
        cache_mb,
    }
    .options();
    Ok(Store::open_with(state, &options)?)
}

/// Writes to stdout; a reader that went away (`| head`) ends the command
/// quietly instead of failing.
fn print(text: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// True when the error comes from writing to a reader that went away.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The store's edge query for `rdg query edges` flags.
fn edge_query(
    incoming: bool,
    limit: Option<usize>,
    since: Option<i64>,
    order: EdgeOrder,
) -> EdgeQuery {
    EdgeQuery {
        direction: if incoming {
            Direction::In
        } else {
            Direction::Out
        },
        limit,
        since,
        order,
    }
}

// ---------------------------------------------------------------------------
// The query service: `rdg serve`, `rdg query --url`, and the settings that
// `run`/`demo` can share (`ServeArgs`).

/// HTTP query service settings.
#[derive(Args, Clone, Debug)]
struct ServeArgs {
    /// Address to serve the query API on (`rdg serve` and `rdg demo`:
    /// 127.0.0.1:7878 by default; `rdg run` serves only when given).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// A file holding a bearer token that every route but health (and the
    /// explorer's static files) then needs.
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Most hops in one traversal.
    #[arg(long, default_value_t = ServeConfig::default().max_hops, value_parser = parse_count::<usize>)]
    max_hops: usize,
    /// Largest per-hop edge limit a traversal may ask for.
    #[arg(long, default_value_t = ServeConfig::default().max_edges_per_hop, value_parser = parse_count::<usize>)]
    max_edges_per_hop: usize,
    /// Longest time a request may take, in milliseconds.
    #[arg(long, default_value_t = 5000, value_parser = parse_count::<u64>)]
    request_timeout_ms: u64,
    /// Threads answering requests.
    #[arg(long, default_value_t = ServeConfig::default().worker_threads, value_parser = parse_count::<usize>)]
    query_threads: usize,
}

impl ServeArgs {
    fn config(&self) -> Result<ServeConfig> {
        let auth_token = self
            .auth_token_file
            .as_deref()
            .map(read_token)
            .transpose()?;
        let config = ServeConfig {
            listen: self.listen.unwrap_or(ServeConfig::default().listen),
            auth_token,
            max_hops: self.max_hops,
            max_edges_per_hop: self.max_edges_per_hop,
            default_edges_per_hop: ServeConfig::default()
                .default_edges_per_hop
                .min(self.max_edges_per_hop),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            worker_threads: self.query_threads,
            ..ServeConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

/// Reads a bearer token: the file's content without surrounding whitespace.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// `rdg serve`: the query API over a state until Ctrl-C.
fn serve(args: ServeCommandArgs) -> Result<ExitCode> {
    let config = args.serve.config()?;
    let store = open_existing(&args.state, args.cache_mb)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    let server = Server::start(store, config, Arc::new(StaticStatus))?;
    eprintln!(
        "rdg serve: {} on http://{} (Ctrl-C to stop)",
        args.state.display(),
        server.addr()
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop()?;
    eprintln!("rdg serve: stopped");
    Ok(ExitCode::SUCCESS)
}
