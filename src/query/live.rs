//! What only a running pipeline knows, as the server sees it: the
//! [`LiveStatus`] trait, [`StaticStatus`] for a state nothing ingests into
//! (`rdg serve`), and [`LiveGauges`], a ready-made [`LiveStatus`] that an
//! ingest loop (`rdg run`, `rdg demo`) updates (readiness and outages, per-dataflow
//! committed events and lag, time per stage, how long each commit took and
//! how old its records were) and the server reads.
//!
//! Invariant: rates are derived only from what the owner reported, over
//! windows of at least [`RATE_WINDOW`], so a burst of reports in one
//! instant does not make a rate spike.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Histograms by dataflow (label `dataflow`).
pub type DataflowHistograms =
    Family<Vec<(String, String)>, CountedHistogram, fn() -> CountedHistogram>;

/// A histogram that takes many observations of one value in one call
/// (`prometheus_client`'s [`Histogram`] takes one per call, each under its
/// lock: a catch-up commit of a million records made a million calls).
/// Encoded exactly as a [`Histogram`] with the same bounds would be.
#[derive(Clone, Debug)]
pub struct CountedHistogram {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Debug)]
struct Counts {
    sum: f64,
    count: u64,
    /// Upper bound and observations in (previous bound, bound]; the last
    /// bound is infinite.
    buckets: Vec<(f64, u64)>,
}

impl CountedHistogram {
    /// Buckets with these upper bounds (non-finite ones dropped), and one
    /// more for everything above them.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> CountedHistogram {
        let buckets = bounds
            .into_iter()
            .filter(|b| b.is_finite())
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        CountedHistogram {
            inner: Arc::new(Mutex::new(Counts {
                sum: 0.0,
                count: 0,
                buckets,
            })),
        }
    }

    /// Records `n` observations of `v` (NaN lands in the last bucket).
    pub fn observe_n(&self, v: f64, n: u64) {
        if n == 0 {
            return;
        }
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.sum += v * n as f64;
        c.count = c.count.saturating_add(n);
        let last = c.buckets.len().saturating_sub(1);
        let i = c.buckets.iter().position(|(b, _)| v <= *b).unwrap_or(last);
        if let Some((_, k)) = c.buckets.get_mut(i) {
            *k = k.saturating_add(n);
        }
    }
}

impl TypedMetric for CountedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CountedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (c.sum, c.count, c.buckets.clone())
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// What only a running pipeline knows. `rdg serve` uses [`StaticStatus`];
/// `rdg run` and `rdg demo` pass a [`LiveGauges`] they update as they commit.
/// Everything else (stored offsets, watermarks, counters, dead letters,
/// sizes) comes from the store.
pub trait LiveStatus: Send + Sync {
    /// Ready to answer: the state is loaded and the sources are assigned.
    fn ready(&self) -> bool;
    /// Why it is not ready, when it is not and knows why (a broker outage).
    fn not_ready_because(&self) -> Option<String> {
        None
    }
    /// Per dataflow: messages behind the end of its input (`None`: unknown).
    fn lag(&self) -> BTreeMap<String, Option<i64>>;
    /// Per dataflow: events committed per second, recently.
    fn ingest_rates(&self) -> BTreeMap<String, f64>;
    /// Per dataflow: positions its sources went past without a record so
    /// far (Kafka offset gaps: compacted or transactional topics, or records
    /// a broker lost).
    fn skipped_offsets(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// What is serving, for `/v1/status`: `serve`, `run`, `demo`.
    fn mode(&self) -> &str;
    /// Seconds the pipeline spent so far per stage (`decode`, `fold`,
    /// `identity`, `collect`, `commit`), summed over its threads.
    fn stage_seconds(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    /// How long the store took to write each commit of this run, if it
    /// commits (a handle on the live histogram).
    fn commit_seconds(&self) -> Option<Histogram> {
        None
    }
    /// Per dataflow, how old each record was (from its source timestamp)
    /// when a commit made it queryable, if the run reads timestamped
    /// records (a handle on the live histograms).
    fn record_age_seconds(&self) -> Option<DataflowHistograms> {
        None
    }
    /// How long each live time took to reach the store, in its two parts
    /// (handles on the live histograms), if the run commits live times.
    fn time_delay_seconds(&self) -> Option<TimeDelayHistograms> {
        None
    }
}

/// A live run's times on their way to the store (`app::TimeDelays`): from
/// a time's opening to the hand-over of its last changes to the writer
/// (`dataflow`), and from there to the start of the commit that writes
/// them (`wait`). 1 ms to 16 s, doubling.
#[derive(Clone, Debug)]
pub struct TimeDelayHistograms {
    pub dataflow: Histogram,
    pub wait: Histogram,
}

impl TimeDelayHistograms {
    fn new() -> TimeDelayHistograms {
        TimeDelayHistograms {
            dataflow: Histogram::new(ms_to_16_s()),
            wait: Histogram::new(ms_to_16_s()),
        }
    }
}

/// The status of a state that nothing ingests into (`rdg serve`): always
/// ready, no lag, no ingest.
#[derive(Clone, Copy, Debug, Default)]
pub struct StaticStatus;

impl LiveStatus for StaticStatus {
    fn ready(&self) -> bool {
        true
    }
    fn lag(&self) -> BTreeMap<String, Option<i64>> {
        BTreeMap::new()
    }
    fn ingest_rates(&self) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    fn mode(&self) -> &str {
        "serve"
    }
}

/// The shortest time between two rate samples.
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Gauge {
    lag: Option<i64>,
    skipped_offsets: u64,
    rate: f64,
    /// (events, when) at the start of the current window.
    window: Option<(u64, Instant)>,
}

#[derive(Debug, Default)]
struct Inner {
    ready: bool,
    /// Why not ready, beyond loading (a broker outage).
    outage: Option<String>,
    dataflows: BTreeMap<String, Gauge>,
    stages: BTreeMap<String, f64>,
}

/// Readiness, lag and ingest rates reported by `rdg run` / `rdg demo`.
#[derive(Debug)]
pub struct LiveGauges {
    mode: String,
    inner: Mutex<Inner>,
    /// Seconds per commit: 0.5 ms to 8 s, doubling (a live run's commits
    /// take a few ms; the catch-up of a backlog, hundreds).
    commit_seconds: Histogram,
    /// Seconds from each record's source timestamp to the commit that made
    /// it queryable, per dataflow: 1 ms to 16 s (`RECORD_TIMES_SPAN_MS`),
    /// doubling.
    record_age_seconds: DataflowHistograms,
    /// Each live time's way to the store, in two parts.
    time_delay_seconds: TimeDelayHistograms,
}

/// Bucket bounds of the live delays (record ages, times on their way to
/// the store): 1 ms to 16 s (`RECORD_TIMES_SPAN_MS`), doubling.
fn ms_to_16_s() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 15)
}

fn record_age_histogram() -> CountedHistogram {
    CountedHistogram::new(ms_to_16_s())
}

impl LiveGauges {
    /// Not ready until [`LiveGauges::set_ready`]; `mode` is shown in status
    /// (`run`, `demo`).
    pub fn new(mode: &str) -> LiveGauges {
        LiveGauges {
            mode: mode.to_string(),
            inner: Mutex::new(Inner::default()),
            commit_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 15)),
            record_age_seconds: Family::new_with_constructor(record_age_histogram),
            time_delay_seconds: TimeDelayHistograms::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready once the state is loaded and the sources are assigned.
    pub fn set_ready(&self, ready: bool) {
        self.lock().ready = ready;
    }

    /// Reports an outage of the input (`None`: none): not ready while it
    /// lasts, with that reason.
    pub fn set_outage(&self, outage: Option<String>) {
        self.lock().outage = outage;
    }

    /// Reports the seconds spent so far per stage (running totals).
    pub fn set_stages(&self, stages: BTreeMap<String, f64>) {
        self.lock().stages = stages;
    }

    /// Reports how long one commit took the store.
    pub fn observe_commit(&self, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Reports how long one live time took to reach the store: until its
    /// last changes were handed to the writer (`dataflow`), then until the
    /// commit that writes them began (`wait`).
    pub fn observe_time_delays(&self, dataflow: Duration, wait: Duration) {
        self.time_delay_seconds
            .dataflow
            .observe(dataflow.as_secs_f64());
        self.time_delay_seconds.wait.observe(wait.as_secs_f64());
    }

    /// Reports that a commit made `dataflow`'s records queryable: `ages`
    /// holds (milliseconds after their source timestamp, how many records);
    /// clocks of other hosts can make an age negative: counted as 0.
    pub fn observe_record_ages(&self, dataflow: &str, ages: impl IntoIterator<Item = (i64, u64)>) {
        let labels = vec![("dataflow".to_string(), dataflow.to_string())];
        let histogram = self.record_age_seconds.get_or_create(&labels);
        for (age_ms, records) in ages {
            histogram.observe_n(age_ms.max(0) as f64 / 1e3, records);
        }
    }

    /// Reports a dataflow's events committed so far by this run (a running
    /// total) and its lag (messages behind the end of its input).
    pub fn observe(&self, dataflow: &str, events_committed: u64, lag: Option<i64>) {
        self.observe_at(dataflow, events_committed, lag, Instant::now());
    }

    /// Reports the positions a dataflow's sources went past without a
    /// record so far.
    pub fn set_skipped_offsets(&self, dataflow: &str, skipped: u64) {
        let mut inner = self.lock();
        inner
            .dataflows
            .entry(dataflow.to_string())
            .or_default()
            .skipped_offsets = skipped;
    }

    fn observe_at(&self, dataflow: &str, events: u64, lag: Option<i64>, now: Instant) {
        let mut inner = self.lock();
        let g = inner.dataflows.entry(dataflow.to_string()).or_default();
        g.lag = lag;
        match g.window {
            None => g.window = Some((events, now)),
            Some((start, at)) => {
                let dt = now.saturating_duration_since(at);
                if dt >= RATE_WINDOW {
                    g.rate = events.saturating_sub(start) as f64 / dt.as_secs_f64();
                    g.window = Some((events, now));
                }
            }
        }
    }
}

impl LiveStatus for LiveGauges {
    fn ready(&self) -> bool {
        let inner = self.lock();
        inner.ready && inner.outage.is_none()
    }

    fn not_ready_because(&self) -> Option<String> {
        self.lock().outage.clone()
    }

    fn lag(&self) -> BTreeMap<String, Option<i64>> {
        self.lock()
            .dataflows
            .iter()
            .map(|(k, g)| (k.clone(), g.lag))
            .collect()
    }

    fn skipped_offsets(&self) -> BTreeMap<String, u64> {
        self.lock()
            .dataflows
            .iter()
            .map(|(k, g)| (k.clone(), g.skipped_offsets))
            .collect()
    }

    fn ingest_rates(&self) -> BTreeMap<String, f64> {
        self.lock()
            .dataflows
            .iter()
            .map(|(k, g)| (k.clone(), g.rate))
            .collect()
    }

    fn mode(&self) -> &str {
        &self.mode
    }

    fn stage_seconds(&self) -> BTreeMap<String, f64> {
        self.lock().stages.clone()
    }

    fn commit_seconds(&self) -> Option<Histogram> {
        Some(self.commit_seconds.clone())
    }
    fn record_age_seconds(&self) -> Option<DataflowHistograms> {
        Some(self.record_age_seconds.clone())
    }
    fn time_delay_seconds(&self) -> Option<TimeDelayHistograms> {
        Some(self.time_delay_seconds.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;
    use rand::{RngExt, SeedableRng};

    fn text_of(metric: impl EncodeMetric + std::fmt::Debug + Send + Sync + 'static) -> String {
        let mut registry = Registry::default();
        registry.register("age", "", metric);
        let mut text = String::new();
        encode(&mut text, &registry).expect("encode");
        text
    }

    /// Observations in runs of one value, as a commit reports its records'
    /// ages, against `prometheus_client`'s histogram given each observation
    /// alone: the same text, bucket by bucket, count and sum.
    #[test]
    fn a_counted_histogram_encodes_as_one_observation_at_a_time_would() {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(5);
        for round in 0..30 {
            let bounds: Vec<f64> =
                exponential_buckets(0.001, 2.0, rng.random_range(1..16)).collect();
            let counted = CountedHistogram::new(bounds.iter().copied());
            let single = Histogram::new(bounds.iter().copied());
            for _ in 0..rng.random_range(0..40) {
                // Whole milliseconds, as ages are, from below the first
                // bound to past the last; some exactly on a bound.
                let v = match rng.random_range(0..4) {
                    0 => bounds[rng.random_range(0..bounds.len())],
                    _ => f64::from(rng.random_range(0..40_000u32)) / 1e3,
                };
                let n = rng.random_range(0..5u64);
                counted.observe_n(v, n);
                for _ in 0..n {
                    single.observe(v);
                }
            }
            let (got, want) = (text_of(counted), text_of(single));
            let lines = |t: &str| -> Vec<(String, f64)> {
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(|l| {
                        let (name, value) = l.rsplit_once(' ').expect("a sample line");
                        (name.to_string(), value.parse().expect("a number"))
                    })
                    .collect()
            };
            let (got, want) = (lines(&got), lines(&want));
            assert_eq!(got.len(), want.len(), "round {round}");
            for ((gn, gv), (wn, wv)) in got.iter().zip(&want) {
                assert_eq!(gn, wn, "round {round}");
                // The sum: n·v against v added n times.
                assert!(
                    (gv - wv).abs() <= 1e-9 * wv.abs().max(1.0),
                    "round {round} {gn}: {gv} vs {wv}"
                );
            }
        }
    }

    #[test]
    fn rates_over_windows() {
        let g = LiveGauges::new("run");
        assert!(!g.ready());
        g.set_ready(true);
        assert!(g.ready());
        let t0 = Instant::now();
        g.observe_at("playback", 100, Some(5), t0);
        g.observe_at("playback", 150, Some(4), t0 + Duration::from_millis(10));
        assert_eq!(g.ingest_rates()["playback"], 0.0);
        g.observe_at("playback", 2100, Some(0), t0 + Duration::from_secs(2));
        assert_eq!(g.ingest_rates()["playback"], 1000.0);
        assert_eq!(g.lag()["playback"], Some(0));
        assert_eq!(g.mode(), "run");
    }
}
