//! `/metrics` in the Prometheus text format, and the per-namespace sizes
//! shared with `/v1/status`.
//!
//! Request counts and latency histograms are recorded per endpoint (the
//! route template, so label values are a fixed set) as requests end. The
//! pipeline's numbers (events, late events, dead letters, watermarks, lag,
//! ingest rates, commits, their durations and their records' ages) are
//! read at scrape time by a collector, so they are never stale copies;
//! store sizes come from the latest background count, which a scrape asks
//! to refresh.
//!
//! Invariant: the set of label values is bounded (route templates, status
//! codes, dataflow and namespace names from the store), whatever clients
//! send.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::live::LiveStatus;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

/// Per-namespace sizes as of one commit.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NamespaceCounts {
    pub as_of_commit: u64,
    /// Seconds since the Unix epoch when the count ended.
    pub counted_at_s: u64,
    pub namespaces: BTreeMap<String, u64>,
}

/// The latest [`NamespaceCounts`], refreshed in the background when asked
/// for (a count scans the whole store and churns its cache, so it is not
/// done unless someone reads status or metrics).
#[derive(Debug, Default)]
pub struct CountsCache {
    latest: Mutex<Option<Arc<NamespaceCounts>>>,
    wanted: tokio::sync::Notify,
}

impl CountsCache {
    /// Asks for a recount (done in the background, at most once per
    /// `counts_interval`).
    pub fn want(&self) {
        self.wanted.notify_one();
    }

    /// Waits until a recount is asked for.
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    pub fn get(&self) -> Option<Arc<NamespaceCounts>> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Recounts unless the last count saw the store's current commit.
    /// Blocking (a full scan): call it off the request path.
    pub fn refresh(&self, store: &Store) {
        let commit = store.commit_count();
        if self.get().is_some_and(|c| c.as_of_commit == commit) {
            return;
        }
        match store.namespace_counts(10_000) {
            Ok(namespaces) => {
                let counted_at_s = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs();
                *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::new(NamespaceCounts {
                        as_of_commit: commit,
                        counted_at_s,
                        namespaces,
                    }));
            }
            Err(e) => tracing::warn!("counting the store's namespaces: {e}"),
        }
    }
}

/// The registry and the request metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabels, Histogram>,
    /// Per route (by its index in the route table): its 200 counter and its
    /// latency histogram, handles into the families above, made on first use
    /// (so a series appears only once it has a value), so that the common
    /// answer costs no family lookup.
    by_route: Vec<RouteMetrics>,
}

#[derive(Default)]
struct RouteMetrics {
    ok: OnceLock<Counter>,
    latency: OnceLock<Histogram>,
}

impl Metrics {
    /// `routes`: how many routes [`Metrics::observe`] may name by index.
    pub fn new(
        store: Store,
        live: Arc<dyn LiveStatus>,
        counts: Arc<CountsCache>,
        routes: usize,
    ) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rdg_http_requests",
            "HTTP requests answered, by endpoint (route template) and status code",
            requests.clone(),
        );
        // 50 µs to 3.3 s, doubling.
        let latency_family: Family<EndpointLabels, Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 17)));
        registry.register(
            "rdg_http_request_duration_seconds",
            "Time from request to response, by endpoint (route template)",
            latency_family.clone(),
        );
        registry.register_collector(Box::new(StateCollector {
            store,
            live,
            counts,
        }));
        Metrics {
            registry,
            requests,
            latency: latency_family,
            by_route: (0..routes).map(|_| RouteMetrics::default()).collect(),
        }
    }

    /// Records one answered request: `route` is the index of the route
    /// `endpoint` (its template) names, if any.
    pub fn observe(
        &self,
        route: Option<usize>,
        endpoint: &'static str,
        code: u16,
        elapsed: Duration,
    ) {
        let cached = route.and_then(|i| self.by_route.get(i));
        let requests = |code| {
            self.requests
                .get_or_create(&RequestLabels { endpoint, code })
                .clone()
        };
        match cached {
            Some(m) if code == 200 => m.ok.get_or_init(|| requests(200)).inc(),
            _ => requests(code).inc(),
        };
        let latency = || {
            self.latency
                .get_or_create(&EndpointLabels { endpoint })
                .clone()
        };
        let secs = elapsed.as_secs_f64();
        match cached {
            Some(m) => m.latency.get_or_init(latency).observe(secs),
            None => latency().observe(secs),
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads the pipeline's numbers at scrape time.
struct StateCollector {
    store: Store,
    live: Arc<dyn LiveStatus>,
    counts: Arc<CountsCache>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One metric family with a `label` per entry.
fn labelled<N, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &str,
    entries: impl IntoIterator<Item = (String, N)>,
    make: impl Fn(N) -> M,
) -> Result<(), std::fmt::Error> {
    let entries: Vec<(String, N)> = entries.into_iter().collect();
    if entries.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, n) in entries {
        let labels = [(label, value.as_str())];
        let m = family.encode_family(&labels)?;
        make(n).encode(m)?;
    }
    Ok(())
}

/// The per-dataflow families: stored counters and watermarks, and what the
/// running pipeline reports (lag, ingest rates, stages, histograms).
fn per_dataflow(
    e: &mut DescriptorEncoder,
    meta: &crate::store::Meta,
    live: &dyn LiveStatus,
) -> Result<(), std::fmt::Error> {
    stored_per_dataflow(e, meta)?;
    live_per_dataflow(e, live)
}

/// The stored counters and watermarks, per dataflow.
fn stored_per_dataflow(
    e: &mut DescriptorEncoder,
    meta: &crate::store::Meta,
) -> Result<(), std::fmt::Error> {
    let df = |f: fn(&crate::store::DataflowMeta) -> u64| {
        meta.dataflows
            .iter()
            .map(move |(d, m)| (d.clone(), f(m)))
            .collect::<Vec<_>>()
    };
    labelled(
        e,
        "rdg_events",
        "Events applied, per dataflow (stored counter)",
        MetricType::Counter,
        "dataflow",
        df(|m| m.events),
        ConstCounter::new,
    )?;
    labelled(
        e,
        "rdg_late_events",
        "Late events ignored by a rule, per dataflow (stored counter)",
        MetricType::Counter,
        "dataflow",
        df(|m| m.late),
        ConstCounter::new,
    )?;
    labelled(
        e,
        "rdg_dead_letters",
        "Dead letters stored, per dataflow",
        MetricType::Counter,
        "dataflow",
        df(|m| m.dead_letters),
        ConstCounter::new,
    )?;
    labelled(
        e,
        "rdg_watermark_milliseconds",
        "Largest committed watermark (event time, epoch ms), per dataflow",
        MetricType::Gauge,
        "dataflow",
        meta.dataflows
            .iter()
            .filter_map(|(d, m)| m.watermark.map(|w| (d.clone(), w))),
        ConstGauge::new,
    )
}

/// What the running pipeline reports: lag, ingest rates, skipped offsets,
/// stage seconds and its histograms.
fn live_per_dataflow(
    e: &mut DescriptorEncoder,
    live: &dyn LiveStatus,
) -> Result<(), std::fmt::Error> {
    labelled(
        e,
        "rdg_lag_messages",
        "Messages behind the end of the input, per dataflow (when known)",
        MetricType::Gauge,
        "dataflow",
        live.lag()
            .into_iter()
            .filter_map(|(d, l)| l.map(|l| (d, l))),
        ConstGauge::new,
    )?;
    labelled(
        e,
        "rdg_ingest_events_per_second",
        "Events committed per second recently, per dataflow",
        MetricType::Gauge,
        "dataflow",
        live.ingest_rates(),
        ConstGauge::new,
    )?;
    labelled(
        e,
        "rdg_source_offsets_skipped",
        "Positions a dataflow's sources went past without a record, per dataflow: Kafka offset gaps (a compacted or transactional topic, or records the broker lost; the source logs each partition's first)",
        MetricType::Counter,
        "dataflow",
        live.skipped_offsets(),
        ConstCounter::new,
    )?;
    labelled(
        e,
        "rdg_stage_seconds",
        "Seconds the pipeline spent per stage (decode, fold, identity, collect, commit), summed over its threads",
        MetricType::Counter,
        "stage",
        live.stage_seconds(),
        ConstCounter::new,
    )?;
    if let Some(h) = live.commit_seconds() {
        live_histogram(
            e,
            "rdg_commit_duration_seconds",
            "Time the store took to write each commit of this run",
            &h,
        )?;
    }
    if let Some(f) = live.record_age_seconds() {
        live_histogram(
            e,
            "rdg_record_age_at_commit_seconds",
            "Per dataflow: seconds from each committed record's source timestamp (Kafka's) to the commit that made it queryable",
            &f,
        )?;
    }
    if let Some(t) = live.time_delay_seconds() {
        live_histogram(
            e,
            "rdg_live_time_dataflow_seconds",
            "Per live time (a worker's round of reads): seconds from its opening to the hand-over of its last changes to the store's writer (reading, folds, identity, collecting, every worker's frontier passing it)",
            &t.dataflow,
        )?;
        live_histogram(
            e,
            "rdg_live_time_commit_wait_seconds",
            "Per live time: seconds from the hand-over of its last changes to the start of the commit that writes them (the writer finishing the commit before)",
            &t.wait,
        )?;
    }
    Ok(())
}

/// Encodes one of the running pipeline's histograms (or a family of them).
fn live_histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let m = e.encode_descriptor(name, help, None, h.metric_type())?;
    h.encode(m)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (commits, meta) = {
            let view = self.store.read();
            (view.commit_count(), view.meta())
        };
        let meta = match meta {
            Ok(m) => m,
            Err(err) => {
                tracing::warn!("metrics: reading meta: {err}");
                crate::store::Meta::default()
            }
        };
        gauge(
            &mut e,
            "rdg_ready",
            "1 when the state is loaded and sources are assigned",
            i64::from(self.live.ready()),
        )?;
        let commits_metric = ConstCounter::new(commits);
        let m = e.encode_descriptor(
            "rdg_commits",
            "Non-empty commits in the state",
            None,
            commits_metric.metric_type(),
        )?;
        commits_metric.encode(m)?;
        per_dataflow(&mut e, &meta, self.live.as_ref())?;
        self.counts.want();
        if let Some(c) = self.counts.get() {
            labelled(
                &mut e,
                "rdg_store_records",
                "Distinct records per store namespace (recounted in the background)",
                MetricType::Gauge,
                "namespace",
                c.namespaces.iter().map(|(k, v)| (k.clone(), *v as i64)),
                ConstGauge::new,
            )?;
        }
        match self.store.sorted_runs() {
            Ok(runs) => labelled(
                &mut e,
                "rdg_store_sorted_runs",
                "Sorted runs a read of each store namespace merges (fjall: level 0's runs and one per deeper level; sled: 1); a bulk load leaves 1",
                MetricType::Gauge,
                "namespace",
                runs.into_iter().map(|(k, v)| (k, v as i64)),
                ConstGauge::new,
            )?,
            Err(err) => tracing::warn!("metrics: sorted runs: {err}"),
        }
        match self.store.size_on_disk() {
            Ok(bytes) => gauge(
                &mut e,
                "rdg_store_disk_bytes",
                "Bytes the state directory takes on disk",
                bytes as i64,
            )?,
            Err(err) => tracing::warn!("metrics: size on disk: {err}"),
        }
        let w = self.store.write_stats();
        counter(
            &mut e,
            "rdg_store_keys_written",
            "Keys this process wrote to the store (puts and removals)",
            w.keys_written,
        )?;
        counter(
            &mut e,
            "rdg_store_write_seconds",
            "Seconds this process spent inside the store engine's writes",
            w.engine_time.as_secs_f64(),
        )?;
        Ok(())
    }
}

/// One unlabelled counter.
fn counter<N: prometheus_client::encoding::EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    let m = e.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}
