//! Command-line interface: argument parsing and the thin glue from each
//! command to the library. Errors here are `anyhow` and end as a message on
//! stderr with a non-zero exit status.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use std::collections::BTreeMap;
use std::time::Duration;

use rdg::app::kafka::{DemoOptions, KafkaRunOptions};
use rdg::app::{self, ReplayOptions};
use rdg::dataflow::Cluster;
use rdg::query::client::Client;
use rdg::query::{ServeConfig, Server, StaticStatus};
use rdg::source::kafka::{KafkaConfig, OnGap, StartFrom};
use rdg::store::{Direction, EdgeOrder, EdgeQuery, Engine, Store, StoreOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(name = "rdg", version, about = "A real-time graph of user activity")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate every definition file and print every problem at once.
    Check {
        /// The definitions folder.
        #[arg(long, default_value = "dataflows")]
        dataflows: PathBuf,
    },
    /// Backfill JSON Lines files (`.jsonl`, `.jsonl.gz`) into a state directory.
    Replay {
        #[arg(long, default_value = "dataflows")]
        dataflows: PathBuf,
        /// The state directory (created if missing; continued if it holds data).
        #[arg(long)]
        state: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
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
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// The store engine of a new state: fjall (default) or sled. An
        /// existing state keeps the engine it was written with.
        #[arg(long)]
        engine: Option<Engine>,
        /// The store's cache in MiB (default: fjall 256, sled 512).
        #[arg(long)]
        cache_mb: Option<u64>,
        /// Input files.
        files: Vec<PathBuf>,
    },
    /// Consume every definition's topic live until SIGINT/SIGTERM.
    Run {
        #[arg(long, default_value = "dataflows")]
        dataflows: PathBuf,
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Seconds between status lines (0: none).
        #[arg(long, default_value_t = 10)]
        status_interval: u64,
        #[command(flatten)]
        cluster: ClusterArgs,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        #[command(flatten)]
        serve: ServeArgs,
        /// The store engine of a new state: fjall (default) or sled.
        #[arg(long)]
        engine: Option<Engine>,
        /// The store's cache in MiB (default: fjall 256, sled 512).
        #[arg(long)]
        cache_mb: Option<u64>,
    },
    /// Send generated events to the definitions' topics (keyed by account).
    Produce {
        #[arg(long, default_value = "dataflows")]
        dataflows: PathBuf,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Events per second (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Partitions of topics that do not exist yet.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// librdkafka settings for the producer.
        #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
        settings: Vec<(String, String)>,
    },
    /// Zero-setup demo: an in-process Kafka-protocol cluster, generated events
    /// at a steady rate, the pipeline consuming them live.
    Demo {
        #[arg(long, default_value = "dataflows")]
        dataflows: PathBuf,
        #[arg(long, default_value = "demo-state")]
        state: PathBuf,
        #[arg(long, default_value_t = 2)]
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
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        serve: ServeArgs,
        /// The store engine of a new state: fjall (default) or sled.
        #[arg(long)]
        engine: Option<Engine>,
        /// The store's cache in MiB (default: fjall 256, sled 512).
        #[arg(long)]
        cache_mb: Option<u64>,
    },
    /// Look up records in a state directory, or ask a running server
    /// (`--url`); prints JSON.
    Query {
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
        #[arg(long, conflicts_with = "url")]
        cache_mb: Option<u64>,
        #[command(subcommand)]
        what: QueryCommand,
    },
    /// Serve a state directory that no other process holds over HTTP (JSON
    /// API, /metrics, /openapi.json, explorer page at /) until Ctrl-C.
    Serve {
        #[arg(long)]
        state: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
        /// The store's cache in MiB (default: fjall 256, sled 512).
        #[arg(long)]
        cache_mb: Option<u64>,
    },
    /// Print the whole graph as sorted JSON Lines, from a state directory or
    /// from a running server (`--url`; any process of a cluster gives the
    /// whole cluster's graph).
    Export {
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        state: Option<PathBuf>,
        /// Ask the query service at this address (`http://HOST:PORT`).
        #[arg(long)]
        url: Option<String>,
        /// With --url: a file holding the server's bearer token.
        #[arg(long, requires = "url")]
        auth_token_file: Option<PathBuf>,
        /// With --state: the store's cache in MiB (default: fjall 256, sled 512).
        #[arg(long, conflicts_with = "url")]
        cache_mb: Option<u64>,
    },
    /// Generate deterministic synthetic events for the shipped definitions.
    Gen {
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
    },
}

/// Timely's cluster mode: several processes exchanging data by key.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Number of processes in the cluster (1: this process alone).
    #[arg(long, default_value_t = 1)]
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

/// The non-comment lines of a hosts file.
fn host_lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the hosts file {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

impl ClusterArgs {
    /// Where the other processes serve their query API (`--http-hosts`),
    /// for a process that serves one (`listen`) in a cluster.
    fn query_view(
        &self,
        workers: usize,
        listen: std::net::SocketAddr,
    ) -> Result<Option<rdg::query::ClusterView>> {
        if self.processes <= 1 {
            return Ok(None);
        }
        let Some(file) = &self.http_hosts else {
            anyhow::bail!(
                "--processes {} with --listen needs --http-hosts FILE (the query API address of every process, one per line), so that each process can answer for the whole graph",
                self.processes
            );
        };
        let hosts = host_lines(file)?;
        if hosts.len() != self.processes {
            anyhow::bail!(
                "{} lists {} addresses, but --processes is {}",
                file.display(),
                hosts.len(),
                self.processes
            );
        }
        let own = hosts.get(self.process).map(String::as_str).unwrap_or("");
        let own_port = own.rsplit_once(':').map(|(_, p)| p);
        if own_port != Some(listen.port().to_string().as_str()) {
            anyhow::bail!(
                "{} gives `{own}` for process {}, but --listen is {listen}: the ports must match",
                file.display(),
                self.process
            );
        }
        Ok(Some(rdg::query::ClusterView {
            process: self.process,
            workers: workers.max(1),
            peers: hosts.iter().map(|h| format!("http://{h}")).collect(),
        }))
    }

    fn cluster(&self) -> Result<Option<Cluster>> {
        if self.processes <= 1 {
            return Ok(None);
        }
        let hosts = self
            .hosts
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("--processes {} needs --hosts FILE", self.processes))?;
        let text = std::fs::read_to_string(hosts)
            .with_context(|| format!("reading the hosts file {}", hosts.display()))?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if addresses.len() != self.processes {
            anyhow::bail!(
                "{} lists {} addresses, but --processes is {}",
                hosts.display(),
                addresses.len(),
                self.processes
            );
        }
        if self.process >= self.processes {
            anyhow::bail!(
                "--process {} is out of range for --processes {} (0 to {})",
                self.process,
                self.processes,
                self.processes - 1
            );
        }
        Ok(Some(Cluster {
            process: self.process,
            addresses,
        }))
    }
}

/// How to reach Kafka.
#[derive(clap::Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers, `HOST:PORT[,...]`.
    #[arg(long)]
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
            ..KafkaConfig::default()
        }
    }
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
        #[arg(long, value_enum, default_value_t = Order::Id)]
        order: Order,
    },
    /// The identity cluster of an identifier: `identity TYPE ID`.
    Identity { node_type: String, id: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Order {
    Recent,
    Id,
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
    // Logs go to stderr; RUST_LOG overrides the default level (info; the
    // store engine's own logs from warnings up).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check { dataflows } => match rdg::spec::load(&dataflows) {
            Ok(plan) => {
                let rules: usize = plan
                    .dataflows
                    .iter()
                    .map(|d| d.nodes.len() + d.edges.len() + d.identity.len())
                    .sum();
                print(format!(
                    "ok: {} definitions, {rules} rules in {}",
                    plan.dataflows.len(),
                    dataflows.display()
                ))?;
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Replay {
            dataflows,
            state,
            workers,
            topics,
            kafka,
            batch,
            json,
            engine,
            cache_mb,
            files,
        } => {
            let store = store_options(engine, cache_mb);
            let result = if let Some(brokers) = kafka.brokers.clone() {
                if !files.is_empty() {
                    anyhow::bail!("pass either input files or --brokers, not both");
                }
                let opts = KafkaRunOptions {
                    dataflows: dataflows.clone(),
                    state,
                    workers,
                    batch,
                    kafka: kafka.config(brokers),
                    topics,
                    status_every: None,
                    stop: app::kafka::stop_on_signals()?,
                    cluster: None,
                    serve: None,
                    mode: "replay",
                    store,
                };
                app::kafka::replay_kafka(&opts)
            } else {
                if files.is_empty() && topics.is_empty() {
                    anyhow::bail!(
                        "no input: pass FILE..., --topic TOPIC=FILE, or --brokers HOST:PORT"
                    );
                }
                let topic_files = topics
                    .iter()
                    .map(|t| parse_topic_file(t))
                    .collect::<Result<Vec<_>>>()?;
                let opts = ReplayOptions {
                    dataflows: dataflows.clone(),
                    state,
                    workers,
                    files,
                    topic_files,
                    batch,
                    progress: std::io::stderr().is_terminal(),
                    store,
                };
                app::replay(&opts)
            };
            match result {
                Ok(summary) => {
                    if json {
                        print(serde_json::to_string(&summary)?)?;
                    } else {
                        print(format!("{summary}"))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(app::AppError::Spec(e)) => {
                    eprintln!("{e}");
                    eprintln!(
                        "error: the definitions in {} are invalid; nothing was replayed",
                        dataflows.display()
                    );
                    Ok(ExitCode::from(1))
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Run {
            dataflows,
            state,
            workers,
            kafka,
            status_interval,
            cluster,
            batch,
            serve,
            engine,
            cache_mb,
        } => {
            let brokers = kafka
                .brokers
                .clone()
                .unwrap_or_else(|| "127.0.0.1:9092".to_string());
            let opts = KafkaRunOptions {
                dataflows,
                state,
                workers,
                batch,
                kafka: kafka.config(brokers),
                topics: Vec::new(),
                status_every: (status_interval > 0).then(|| Duration::from_secs(status_interval)),
                stop: app::kafka::stop_on_signals()?,
                cluster: cluster.cluster()?,
                serve: match serve.listen {
                    Some(listen) => Some(ServeConfig {
                        cluster: cluster.query_view(workers, listen)?,
                        ..serve.config()?
                    }),
                    None => None,
                },
                mode: "run",
                store: store_options(engine, cache_mb),
            };
            let totals = app::kafka::run_live(&opts)?;
            eprintln!(
                "stopped: {} events, {} dead letters, {} late committed by this run",
                totals.events, totals.dead_letters, totals.late
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce {
            dataflows,
            brokers,
            events,
            rate,
            seed,
            partitions,
            settings,
        } => {
            let plan = rdg::spec::load(&dataflows)?;
            let settings: BTreeMap<String, String> = settings.into_iter().collect();
            let topics: Vec<(String, i32)> = plan
                .dataflows
                .iter()
                .map(|d| (d.topic.clone(), partitions))
                .collect();
            rdg::produce::create_topics(&brokers, &settings, &topics)?;
            let gen_opts = rdg::generate::GenOptions {
                events,
                seed,
                ..Default::default()
            };
            let sent = rdg::produce::produce(
                &brokers,
                &settings,
                rdg::generate::events(&gen_opts),
                rate,
                |_| {},
            )?;
            print(format!("produced {sent} events to {brokers}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dataflows,
            state,
            workers,
            rate,
            events,
            seconds,
            partitions,
            seed,
            serve,
            engine,
            cache_mb,
        } => {
            let opts = DemoOptions {
                dataflows,
                state,
                workers,
                rate,
                events,
                duration: seconds.map(Duration::from_secs),
                partitions,
                seed,
                stop: app::kafka::stop_on_signals()?,
                serve: serve.config()?,
                store: store_options(engine, cache_mb),
            };
            let totals = app::kafka::demo(&opts)?;
            eprintln!(
                "demo stopped: {} events, {} dead letters committed",
                totals.events, totals.dead_letters
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            state,
            serve: args,
            cache_mb,
        } => serve(&state, &args, cache_mb),
        Command::Query {
            state,
            url,
            auth_token_file,
            cache_mb,
            what,
        } => {
            if let Some(url) = url {
                return query_url(&url, auth_token_file.as_deref(), what);
            }
            let Some(state) = state else {
                anyhow::bail!("pass --state DIR or --url URL");
            };
            let store = open_existing(&state, cache_mb)?;
            let value = match what {
                QueryCommand::Node { node_type, id } => {
                    let ident = format!("{node_type}:{id}");
                    match store.node(&ident)? {
                        Some(n) => serde_json::to_value(n)?,
                        None => return not_found(&ident),
                    }
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
                    serde_json::json!({
                        "node": ident,
                        "edge_type": edge_type,
                        "direction": if incoming { "in" } else { "out" },
                        "items": items,
                    })
                }
                QueryCommand::Identity { node_type, id } => {
                    let ident = format!("{node_type}:{id}");
                    match store.identity(&ident)? {
                        Some(v) => serde_json::to_value(v)?,
                        None => return not_found(&ident),
                    }
                }
            };
            print(serde_json::to_string_pretty(&value)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            state,
            url,
            auth_token_file,
            cache_mb,
        } => {
            if let Some(url) = url {
                let token = auth_token_file.as_deref().map(read_token).transpose()?;
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let written = Client::new(&url, token)
                    .export(&mut out)
                    .map_err(anyhow::Error::new)
                    .and_then(|_| out.flush().context("writing the export"));
                return match written {
                    Err(e) if broken_pipe(&e) => Ok(ExitCode::SUCCESS),
                    Err(e) => Err(e),
                    Ok(()) => Ok(ExitCode::SUCCESS),
                };
            }
            let Some(state) = state else {
                anyhow::bail!("pass --state DIR or --url URL");
            };
            let store = open_existing(&state, cache_mb)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = store
                .export(&mut out)
                .map_err(anyhow::Error::new)
                .and_then(|_| out.flush().context("writing the export"));
            match written {
                Err(e) if broken_pipe(&e) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e),
                Ok(()) => Ok(ExitCode::SUCCESS),
            }
        }
        Command::Gen {
            events,
            seed,
            out,
            delete_share,
            jitter_ms,
            malformed_share,
        } => {
            let mut opts = rdg::generate::GenOptions {
                events,
                seed,
                ..Default::default()
            };
            if let Some(x) = delete_share {
                opts.delete_share = x;
            }
            if let Some(x) = jitter_ms {
                opts.jitter_ms = x;
            }
            if let Some(x) = malformed_share {
                opts.malformed_share = x;
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let summary = rdg::generate::generate(&opts, &out)
                .with_context(|| format!("writing events to {}", out.display()))?;
            for (path, lines) in summary.files {
                print(format!("{}\t{lines} lines", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a state directory that must already exist (reads never create one),
/// with the engine it records.
fn open_existing(state: &std::path::Path, cache_mb: Option<u64>) -> Result<Store> {
    if !state.is_dir() {
        anyhow::bail!("state directory {} does not exist", state.display());
    }
    Ok(Store::open_with(state, &store_options(None, cache_mb))?)
}

/// The store options of `--engine` and `--cache-mb`.
fn store_options(engine: Option<Engine>, cache_mb: Option<u64>) -> StoreOptions {
    StoreOptions {
        engine,
        cache_bytes: cache_mb.map(|mb| mb.saturating_mul(1 << 20)),
    }
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
fn edge_query(incoming: bool, limit: Option<usize>, since: Option<i64>, order: Order) -> EdgeQuery {
    EdgeQuery {
        direction: if incoming {
            Direction::In
        } else {
            Direction::Out
        },
        limit,
        since,
        order: match order {
            Order::Recent => EdgeOrder::Recent,
            Order::Id => EdgeOrder::Id,
        },
    }
}

fn not_found(ident: &str) -> Result<ExitCode> {
    eprintln!("not found: {ident}");
    Ok(ExitCode::from(1))
}

// ---------------------------------------------------------------------------
// The query service: `rdg serve`, `rdg query --url`, and the settings that
// `run`/`demo` can share (`ServeArgs`).

/// HTTP query service settings.
#[derive(clap::Args, Clone, Debug)]
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
    #[arg(long, default_value_t = ServeConfig::default().max_hops)]
    max_hops: usize,
    /// Largest per-hop edge limit a traversal may ask for.
    #[arg(long, default_value_t = ServeConfig::default().max_edges_per_hop)]
    max_edges_per_hop: usize,
    /// Longest time a request may take, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// Threads answering requests.
    #[arg(long, default_value_t = ServeConfig::default().worker_threads)]
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
fn read_token(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

fn serve(state: &std::path::Path, args: &ServeArgs, cache_mb: Option<u64>) -> Result<ExitCode> {
    let config = args.config()?;
    let store = open_existing(state, cache_mb)?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the signal handler")?;
    let server = Server::start(store, config, Arc::new(StaticStatus))?;
    eprintln!(
        "rdg serve: {} on http://{} (Ctrl-C to stop)",
        state.display(),
        server.addr()
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop()?;
    eprintln!("rdg serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `rdg query --url`: the same answers as `--state`, from a server.
fn query_url(
    url: &str,
    token_file: Option<&std::path::Path>,
    what: QueryCommand,
) -> Result<ExitCode> {
    let token = token_file.map(read_token).transpose()?;
    let client = Client::new(url, token);
    let value = match what {
        QueryCommand::Node { node_type, id } => match client.node(&node_type, &id)? {
            Some(v) => v,
            None => return not_found(&format!("{node_type}:{id}")),
        },
        QueryCommand::Edges {
            edge_type,
            node_type,
            id,
            incoming,
            limit,
            since,
            order,
        } => client.edges(
            &edge_type,
            &node_type,
            &id,
            &edge_query(incoming, limit, since, order),
        )?,
        QueryCommand::Identity { node_type, id } => match client.identity(&node_type, &id)? {
            Some(v) => v,
            None => return not_found(&format!("{node_type}:{id}")),
        },
    };
    print(serde_json::to_string_pretty(&value)?)?;
    Ok(ExitCode::SUCCESS)
}
