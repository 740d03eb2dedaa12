//! The Kafka source and producer against rdkafka's in-process MockCluster:
//! no external service. MockCluster serves about 2k messages/s per
//! partition, so each test uses a few hundred messages at most.
//!
//! What the mock cannot do, and how it is covered instead: it cannot add
//! partitions to an existing topic (no CreatePartitions), so "partitions
//! added while running" is tested as a topic created while the source waits
//! for it (the same discovery path), and against a real broker by
//! `real_broker_*` tests when `RDG_TEST_BROKERS` is set (see
//! `scripts/broker.sh`). It cannot look offsets up by time, nor create
//! topics through the admin API.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use rdg::produce::{ProduceError, produce};
use rdg::source::kafka::{OffsetCommitter, group_id, owner};
use rdg::source::{
    KafkaConfig, KafkaSource, OnGap, Poll, RawBatch, RawRecord, Source, SourceError,
};
use support::{eventually, logs, real_broker_topic};

/// A bound on every wait, so a broken test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

fn mock(topic: &str, partitions: i32) -> MockCluster<'static, DefaultProducerContext> {
    logs();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("create topic");
    cluster
}

fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_string(),
        refresh_interval: Duration::from_millis(200),
        request_timeout: Duration::from_secs(2),
        ..KafkaConfig::default()
    }
}

/// `n` keyed events for `topic`: key `acct-{i % 37}`, line `{"i":i}`.
fn events(topic: &str, n: usize) -> Vec<(String, String, String)> {
    (0..n)
        .map(|i| {
            (
                topic.to_string(),
                format!("acct-{}", i % 37),
                format!("{{\"i\":{i}}}"),
            )
        })
        .collect()
}

fn send(brokers: &str, events: Vec<(String, String, String)>) {
    let n = events.len() as u64;
    let delivered = produce(brokers, &BTreeMap::new(), events, None, |_| {}).expect("produce");
    assert_eq!(delivered, n);
}

/// A waker that records calls and lets the test park until one comes.
#[derive(Clone, Default)]
struct Parker(Arc<(Mutex<bool>, Condvar)>, Arc<AtomicUsize>);

impl Parker {
    fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let me = self.clone();
        Arc::new(move || {
            me.1.fetch_add(1, Ordering::SeqCst);
            *me.0.0.lock().unwrap() = true;
            me.0.1.notify_all();
        })
    }

    /// Waits up to `timeout` for a wake; true if one came. Consumes it.
    fn park(&self, timeout: Duration) -> bool {
        let guard = self.0.0.lock().unwrap();
        let (mut woken, _) = self
            .0
            .1
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap();
        std::mem::replace(&mut *woken, false)
    }

    fn reset(&self) {
        *self.0.0.lock().unwrap() = false;
    }
}

/// Polls a source the way the dataflow driver does (park on `Idle` until
/// woken) until it is `Done`, or until `stop` says so.
fn run(
    src: &mut KafkaSource,
    stop: impl Fn(&[RawRecord]) -> bool,
) -> Result<(Vec<RawRecord>, bool), SourceError> {
    let parker = Parker::default();
    src.set_waker(parker.waker());
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    let mut batch = RawBatch::default();
    loop {
        assert!(Instant::now() < deadline, "no end after {PATIENCE:?}");
        batch.clear();
        let poll = src.poll(50, &mut batch)?;
        out.extend(batch.iter().map(|r| r.to_record()));
        match poll {
            Poll::Ready => {}
            Poll::Done => return Ok((out, true)),
            Poll::Idle => {
                if stop(&out) {
                    return Ok((out, false));
                }
                parker.park(Duration::from_secs(1));
            }
        }
    }
}

fn drain_bounded(src: &mut KafkaSource) -> Vec<RawRecord> {
    let (out, done) = run(src, |_| false).expect("bounded read");
    assert!(done);
    out
}

/// Offsets by partition, in delivery order.
fn by_partition(records: &[RawRecord]) -> BTreeMap<u32, Vec<u64>> {
    let mut m: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for r in records {
        m.entry(r.partition).or_default().push(r.offset);
    }
    m
}

fn watermarks(brokers: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
        })
        .collect()
}

#[test]
fn two_workers_read_every_message_once_in_order() {
    let cluster = mock("plays", 4);
    let brokers = cluster.bootstrap_servers();
    let sent = events("plays", 300);
    send(&brokers, sent.clone());
    let cfg = config(&brokers);
    let mut all = Vec::new();
    for worker in 0..2 {
        let mut src =
            KafkaSource::bounded("df", "plays", &cfg, worker, 2, BTreeMap::new()).unwrap();
        let got = drain_bounded(&mut src);
        for r in &got {
            assert_eq!(owner("plays", r.partition as i32, 2), worker);
        }
        assert_eq!(src.lag(), Some(0));
        all.extend(got);
    }
    assert_eq!(all.len(), sent.len());
    let highs = watermarks(&brokers, "plays", 4);
    for (p, offsets) in by_partition(&all) {
        let expected: Vec<u64> = (0..highs[p as usize].1 as u64).collect();
        assert_eq!(offsets, expected, "partition {p}");
    }
    let got: BTreeSet<Vec<u8>> = all.iter().map(|r| r.payload.clone()).collect();
    let want: BTreeSet<Vec<u8>> = sent.iter().map(|e| e.2.clone().into_bytes()).collect();
    assert_eq!(got, want);
    // Every partition got something (the keys spread over all four).
    assert_eq!(by_partition(&all).len(), 4);
}

#[test]
fn resumes_from_stored_positions() {
    let cluster = mock("plays", 4);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 200));
    let highs = watermarks(&brokers, "plays", 4);
    // Resume partition p after 5 * (p + 1) records; partition 3 is complete.
    let mut positions: BTreeMap<i32, i64> = (0..3).map(|p| (p, 5 * (p as i64 + 1))).collect();
    positions.insert(3, highs[3].1);
    let mut src =
        KafkaSource::bounded("df", "plays", &config(&brokers), 0, 1, positions.clone()).unwrap();
    let got = by_partition(&drain_bounded(&mut src));
    for p in 0..4i32 {
        let from = positions[&p] as u64;
        let want: Vec<u64> = (from..highs[p as usize].1 as u64).collect();
        assert_eq!(
            got.get(&(p as u32)).cloned().unwrap_or_default(),
            want,
            "partition {p}"
        );
    }
}

#[test]
fn empty_payload_arrives_as_an_empty_record_with_its_origin() {
    let cluster = mock("logins", 1);
    let brokers = cluster.bootstrap_servers();
    send(
        &brokers,
        vec![
            ("logins".into(), "a".into(), "{}".into()),
            ("logins".into(), "a".into(), String::new()),
            ("logins".into(), "a".into(), "not json".into()),
        ],
    );
    let mut src =
        KafkaSource::bounded("df", "logins", &config(&brokers), 0, 1, BTreeMap::new()).unwrap();
    let got = drain_bounded(&mut src);
    let payloads: Vec<&[u8]> = got.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"{}"[..], b"", b"not json"]);
    assert_eq!(src.describe(got[1].partition, got[1].offset), "logins/0/1");
    assert_eq!(src.partition_key(7), "7");
    assert_eq!(src.dataflow(), "df");
}

#[test]
fn waker_is_called_when_a_message_reaches_an_idle_source() {
    let cluster = mock("plays", 2);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 10));
    // A slow refresh, so only the partition queues can wake the source.
    let cfg = KafkaConfig {
        refresh_interval: Duration::from_secs(60),
        ..config(&brokers)
    };
    let mut src = KafkaSource::new("df", "plays", &cfg, 0, 1, BTreeMap::new()).unwrap();
    let (first, done) = run(&mut src, |out| out.len() >= 10).unwrap();
    assert!(!done);
    assert_eq!(first.len(), 10);
    let parker = Parker::default();
    src.set_waker(parker.waker());
    // Idle now: drain what set_waker's own wake announced.
    let mut out = RawBatch::default();
    assert_eq!(src.poll(50, &mut out).unwrap(), Poll::Idle);
    parker.reset();
    let calls = parker.1.load(Ordering::SeqCst);

    send(&brokers, events("plays", 1));
    assert!(parker.park(PATIENCE), "no wake after a produce");
    assert!(parker.1.load(Ordering::SeqCst) > calls);
    let deadline = Instant::now() + PATIENCE;
    while out.is_empty() {
        assert!(Instant::now() < deadline);
        if src.poll(50, &mut out).unwrap() == Poll::Idle {
            parker.park(Duration::from_secs(1));
        }
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out.to_records()[0].payload, b"{\"i\":0}");
}

#[test]
fn live_source_never_ends_and_reports_lag() {
    let cluster = mock("plays", 2);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 20));
    let mut src =
        KafkaSource::new("df", "plays", &config(&brokers), 0, 1, BTreeMap::new()).unwrap();
    let (got, done) = run(&mut src, |out| out.len() >= 20).unwrap();
    assert!(!done);
    assert_eq!(got.len(), 20);
    // Watermarks are refreshed every 200 ms: lag settles at zero.
    let deadline = Instant::now() + PATIENCE;
    while src.lag() != Some(0) {
        assert!(Instant::now() < deadline, "lag {:?}", src.lag());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut out = RawBatch::default();
    assert_eq!(src.poll(10, &mut out).unwrap(), Poll::Idle);
}

#[test]
fn start_latest_skips_what_is_already_there() {
    let cluster = mock("plays", 2);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 10));
    let cfg = KafkaConfig {
        start: rdg::source::StartFrom::Latest,
        ..config(&brokers)
    };
    let mut src = KafkaSource::new("df", "plays", &cfg, 0, 1, BTreeMap::new()).unwrap();
    let parker = Parker::default();
    src.set_waker(parker.waker());
    // Until both partitions are assigned at their end, lag counts the ten.
    let deadline = Instant::now() + PATIENCE;
    let mut out = RawBatch::default();
    loop {
        assert!(Instant::now() < deadline);
        assert_eq!(src.poll(50, &mut out).unwrap(), Poll::Idle);
        if src.lag() == Some(0) && src.owned_partitions().len() == 2 {
            break;
        }
        parker.park(Duration::from_millis(200));
    }
    let before = watermarks(&brokers, "plays", 2);
    send(&brokers, events("plays", 5));
    let (got, _) = run(&mut src, |out| out.len() >= 5).unwrap();
    assert_eq!(got.len(), 5);
    for (p, offsets) in by_partition(&got) {
        assert!(offsets.iter().all(|&o| o >= before[p as usize].1 as u64));
    }
}

/// Fills partition 0 of `topic` past the mock's 5 MiB per partition, so it
/// drops its oldest records. Returns (earliest, end) afterwards.
fn overflow(brokers: &str, topic: &str) -> (i64, i64) {
    let big = "x".repeat(700_000);
    for i in 0..10 {
        // One message per produce call: one message set each, so the mock
        // evicts them one at a time.
        send(brokers, vec![(topic.into(), format!("k{i}"), big.clone())]);
    }
    let (low, high) = watermarks(brokers, topic, 1)[0];
    assert!(low > 0, "the mock kept everything: {low}..{high}");
    (low, high)
}

#[test]
fn a_gap_stops_the_source_unless_told_to_continue_from_earliest() {
    let cluster = mock("big", 1);
    let brokers = cluster.bootstrap_servers();
    let (low, high) = overflow(&brokers, "big");
    let stored = BTreeMap::from([(0, 1)]);

    let mut src =
        KafkaSource::bounded("df", "big", &config(&brokers), 0, 1, stored.clone()).unwrap();
    match run(&mut src, |_| false) {
        Err(SourceError::Gap {
            topic,
            partition,
            requested,
            earliest,
            latest,
        }) => {
            assert_eq!((topic.as_str(), partition, requested), ("big", 0, 1));
            assert_eq!((earliest, latest), (low, high));
        }
        other => panic!("expected a gap, got {other:?}"),
    }

    // Beyond the end (a recreated topic) is a gap too.
    let beyond = BTreeMap::from([(0, high + 100)]);
    let mut src = KafkaSource::new("df", "big", &config(&brokers), 0, 1, beyond).unwrap();
    match run(&mut src, |_| false) {
        Err(SourceError::Gap {
            requested, latest, ..
        }) => assert_eq!((requested, latest), (high + 100, high)),
        other => panic!("expected a gap past the end, got {other:?}"),
    }

    let cfg = KafkaConfig {
        on_gap: OnGap::Earliest,
        ..config(&brokers)
    };
    let mut src = KafkaSource::bounded("df", "big", &cfg, 0, 1, stored).unwrap();
    let got = drain_bounded(&mut src);
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (low as u64..high as u64).collect::<Vec<_>>());
}

#[test]
fn a_gap_opening_while_reading_is_caught() {
    for on_gap in [OnGap::Stop, OnGap::Earliest] {
        let cluster = mock("big", 1);
        let brokers = cluster.bootstrap_servers();
        let (_, high) = overflow(&brokers, "big");
        // Prefetch at most one message, so the source falls behind.
        let mut cfg = KafkaConfig {
            on_gap,
            ..config(&brokers)
        };
        for (k, v) in [
            ("queued.max.messages.kbytes", "1"),
            ("max.partition.fetch.bytes", "1"),
        ] {
            cfg.settings.insert(k.into(), v.into());
        }
        let stored = BTreeMap::from([(0, high - 2)]);
        let mut src = KafkaSource::new("df", "big", &cfg, 0, 1, stored).unwrap();
        let (first, _) = run(&mut src, |out| !out.is_empty()).unwrap();
        // The record at high - 2, and the one after it when librdkafka's
        // next one-message fetch came back before the source went idle
        // (timing: it failed 1 run in 6 on this 2-core host). Either way the
        // gap below opens at the source's next offset.
        let offsets: Vec<u64> = first.iter().map(|r| r.offset).collect();
        let from = high as u64 - 2;
        assert!(
            offsets == [from] || offsets == [from, from + 1],
            "{offsets:?}"
        );
        // Ten more 700 kB messages push everything older out of the mock.
        let (low2, high2) = overflow(&brokers, "big");
        assert!(low2 > high);
        let result = run(&mut src, |out| {
            out.last().is_some_and(|r| r.offset + 1 == high2 as u64)
        });
        match (on_gap, result) {
            (
                OnGap::Stop,
                Err(SourceError::Gap {
                    requested,
                    earliest,
                    ..
                }),
            ) => {
                assert!(requested == high - 1 || requested == high, "{requested}");
                assert_eq!(earliest, low2);
            }
            (OnGap::Earliest, Ok((rest, _))) => {
                let offsets: Vec<u64> = rest.iter().map(|r| r.offset).collect();
                // Maybe the one prefetched record, then everything kept.
                let kept: Vec<u64> = (low2 as u64..high2 as u64).collect();
                assert!(
                    offsets == kept || (offsets[0] == high as u64 - 1 && offsets[1..] == kept),
                    "{offsets:?}"
                );
            }
            (_, other) => panic!("{on_gap:?}: {other:?}"),
        }
    }
}

#[test]
fn a_refused_fetch_offset_that_is_on_the_broker_is_fetched_again() {
    let cluster = mock("plays", 1);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 30));
    // The broker answers the first fetches "offset out of range" although
    // the offset exists (as after an unclean leader change).
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE; 2],
    );
    let stored = BTreeMap::from([(0, 10)]);
    let mut src = KafkaSource::bounded("df", "plays", &config(&brokers), 0, 1, stored).unwrap();
    let got = drain_bounded(&mut src);
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (10..30).collect::<Vec<_>>());
}

#[test]
fn a_topic_created_while_waiting_is_read_from_its_start() {
    logs();
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    // Even with `start = Latest`: partitions that appear while rdg runs
    // hold only new records.
    let cfg = KafkaConfig {
        start: rdg::source::StartFrom::Latest,
        ..config(&brokers)
    };
    let mut src = KafkaSource::new("df", "late", &cfg, 0, 1, BTreeMap::new()).unwrap();
    let parker = Parker::default();
    src.set_waker(parker.waker());
    let mut out = RawBatch::default();
    // The watcher reports the topic missing; the source waits.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert_eq!(src.poll(50, &mut out).unwrap(), Poll::Idle);
        parker.park(Duration::from_millis(200));
    }
    assert!(src.owned_partitions().is_empty());

    cluster.create_topic("late", 3, 1).unwrap();
    send(&brokers, events("late", 60));
    let (got, _) = run(&mut src, |out| out.len() >= 60).unwrap();
    assert_eq!(got.len(), 60);
    assert_eq!(src.owned_partitions(), vec![0, 1, 2]);

    // A bounded source (replay) does not wait for a missing topic.
    let mut src = KafkaSource::bounded("df", "nope", &cfg, 0, 1, BTreeMap::new()).unwrap();
    assert!(matches!(
        run(&mut src, |_| false),
        Err(SourceError::MissingTopic { .. })
    ));
}

#[test]
fn an_unreachable_broker_is_reported_with_its_address() {
    logs();
    // Nothing listens on port 1.
    let cfg = KafkaConfig {
        broker_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(500),
        ..config("127.0.0.1:1")
    };
    let started = Instant::now();
    let mut src = KafkaSource::new("df", "plays", &cfg, 0, 1, BTreeMap::new()).unwrap();
    match run(&mut src, |_| false) {
        Err(e @ SourceError::Broker { .. }) => {
            assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
        }
        other => panic!("expected a broker error, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    (0..partitions)
        .map(|p| got.find_partition(topic, p).unwrap().offset())
        .collect()
}

#[test]
fn offsets_are_committed_to_the_dataflow_group() {
    let cluster = mock("plays", 4);
    let brokers = cluster.bootstrap_servers();
    send(&brokers, events("plays", 40));
    let positions: BTreeMap<i32, i64> = (0..4).map(|p| (p, p as i64 + 1)).collect();

    let committer = OffsetCommitter::new("df", "plays", &config(&brokers)).unwrap();
    assert_eq!(committer.group(), "rdg-df");
    committer.commit(&positions).unwrap();
    eventually("committer's offsets", PATIENCE, || {
        committed(&brokers, "rdg-df", "plays", 4) == (1..=4).map(Offset::Offset).collect::<Vec<_>>()
    });

    // A source commits only the partitions its worker owns.
    let src = KafkaSource::new("other", "plays", &config(&brokers), 1, 2, BTreeMap::new()).unwrap();
    src.commit_offsets(&positions).unwrap();
    let want: Vec<Offset> = (0..4)
        .map(|p| {
            if owner("plays", p, 2) == 1 {
                Offset::Offset(p as i64 + 1)
            } else {
                Offset::Invalid
            }
        })
        .collect();
    eventually("source's offsets", PATIENCE, || {
        committed(&brokers, &group_id("other"), "plays", 4) == want
    });
}

#[test]
fn failed_deliveries_are_counted() {
    let settings = BTreeMap::from([("message.timeout.ms".to_string(), "1000".to_string())]);
    let err = produce("127.0.0.1:1", &settings, events("plays", 3), None, |_| {}).unwrap_err();
    match err {
        ProduceError::Delivery { sent, failed, .. } => assert_eq!((sent, failed), (3, 3)),
        other => panic!("expected delivery errors, got {other}"),
    }
}

#[test]
fn produce_respects_the_rate() {
    let cluster = mock("plays", 1);
    let brokers = cluster.bootstrap_servers();
    let started = Instant::now();
    let mut calls = Vec::new();
    let n = produce(
        &brokers,
        &BTreeMap::new(),
        events("plays", 21),
        Some(40.0),
        |sent| calls.push(sent),
    )
    .unwrap();
    assert_eq!(n, 21);
    // 21 messages at 40/s: the last is due 0.5 s after the first.
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(calls.last(), Some(&21));
}

/// Against a real broker (`RDG_TEST_BROKERS=127.0.0.1:9092`, e.g. from
/// `scripts/broker.sh start`): topics created through the admin API, and
/// partitions added to a topic while a source reads it (where the broker
/// can add partitions: tansu 0.6 cannot).
#[test]
#[ignore = "needs a real broker: scripts/test.sh runs it"]
fn real_broker_partitions_added_while_running_are_picked_up() {
    let (brokers, topic) = real_broker_topic("added", 2);
    let settings = BTreeMap::new();
    // Creating it again is fine.
    rdg::produce::create_topics(&brokers, &settings, &[(topic.clone(), 2)]).unwrap();
    send(&brokers, events(&topic, 50));
    let mut src = KafkaSource::new("df", &topic, &config(&brokers), 0, 1, BTreeMap::new()).unwrap();
    let (got, _) = run(&mut src, |out| out.len() >= 50).unwrap();
    assert_eq!(got.len(), 50);

    match rdg::produce::add_partitions(&brokers, &settings, &topic, 4) {
        Ok(()) => {}
        Err(e) if e.to_string().contains("UnsupportedFeature") => {
            // tansu 0.6 has no CreatePartitions.
            eprintln!("the broker cannot add partitions ({e}): rest skipped");
            return;
        }
        Err(e) => panic!("{e}"),
    }
    eventually("new partitions known", PATIENCE, || {
        let mut out = RawBatch::default();
        src.poll(10, &mut out).unwrap();
        src.owned_partitions().len() == 4
    });
    // Records produced to the new partitions (directly, by partition) arrive.
    let p: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for partition in [2, 3] {
        p.send(
            rdkafka::producer::BaseRecord::to(&topic)
                .partition(partition)
                .key("k")
                .payload("{}"),
        )
        .unwrap();
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(10)).unwrap();
    let (got, _) = run(&mut src, |out| out.len() >= 2).unwrap();
    let parts: BTreeSet<u32> = got.iter().map(|r| r.partition).collect();
    assert_eq!(parts, BTreeSet::from([2, 3]));
}

/// Against a real broker (see above): a start time is looked up with
/// `offsets_for_times` (MockCluster answers "the end" for every time).
#[test]
#[ignore = "needs a real broker: scripts/test.sh runs it"]
fn real_broker_start_time_skips_older_records() {
    let (brokers, topic) = real_broker_topic("time", 2);
    send(&brokers, events(&topic, 20));
    // Record timestamps are milliseconds: step past the last old one.
    std::thread::sleep(Duration::from_millis(20));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    std::thread::sleep(Duration::from_millis(20));
    let newer: Vec<_> = events(&topic, 30).into_iter().skip(20).collect();
    send(&brokers, newer.clone());
    let cfg = KafkaConfig {
        start: rdg::source::StartFrom::TimeMs(now_ms),
        ..config(&brokers)
    };
    let mut src = KafkaSource::bounded("df", &topic, &cfg, 0, 1, BTreeMap::new()).unwrap();
    let got = drain_bounded(&mut src);
    let payloads: BTreeSet<Vec<u8>> = got.iter().map(|r| r.payload.clone()).collect();
    let want: BTreeSet<Vec<u8>> = newer.iter().map(|e| e.2.clone().into_bytes()).collect();
    assert_eq!(payloads, want);
}

/// Against a real broker (see above): resuming inside a record batch reads
/// the rest of that batch (tansu 0.6 answers a fetch with the batches that
/// start at or after the offset, so the source starts earlier and skips).
#[test]
#[ignore = "needs a real broker: scripts/test.sh runs it"]
fn real_broker_resume_inside_a_batch() {
    let (brokers, topic) = real_broker_topic("batch", 1);
    // Each produce call is flushed: batches at offsets 0..5, 5..6, 6..9, 9..16.
    let mut next = 0;
    for size in [5, 1, 3, 7] {
        let batch: Vec<_> = events(&topic, next + size).into_iter().skip(next).collect();
        send(&brokers, batch);
        next += size;
    }
    for from in [2u64, 7, 12, 15, 16] {
        let stored = BTreeMap::from([(0, from as i64)]);
        let mut src = KafkaSource::bounded("df", &topic, &config(&brokers), 0, 1, stored).unwrap();
        let offsets: Vec<u64> = drain_bounded(&mut src).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (from..16).collect::<Vec<_>>(), "from {from}");
    }
}

/// Sends `payloads` to partition 0 of `topic` in batches of up to
/// `per_batch` records (each waits up to `linger_ms` to fill), then flushes:
/// what one call sends never shares a batch with another call's.
fn send_batched(
    brokers: &str,
    topic: &str,
    payloads: impl IntoIterator<Item = String>,
    linger_ms: u32,
    per_batch: u32,
) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms.to_string())
        .set("batch.num.messages", per_batch.to_string())
        .create()
        .expect("producer");
    for payload in payloads {
        let record = || {
            BaseRecord::<str, str>::to(topic)
                .payload(&payload)
                .partition(0)
        };
        while let Err((e, _)) = p.send(record()) {
            let full = Some(rdkafka::types::RDKafkaErrorCode::QueueFull);
            assert_eq!(e.rdkafka_error_code(), full, "{e}");
            p.poll(Duration::from_millis(10));
        }
    }
    p.flush(PATIENCE).expect("flush");
}

/// Against a real broker (see above): fetch answers cut short (a
/// `max.partition.fetch.bytes` of a fifth of a batch) still deliver every
/// record once and in order.
#[test]
#[ignore = "needs a real broker: scripts/test.sh runs it"]
fn real_broker_fetches_that_end_inside_a_batch_lose_nothing() {
    let (brokers, topic) = real_broker_topic("split", 1);
    // Batches of up to 500 records of ~200 bytes (linger lets them fill).
    let n = 3_000usize;
    let pad = "x".repeat(180);
    let payloads = (0..n).map(|i| format!("{{\"i\":{i},\"pad\":\"{pad}\"}}"));
    send_batched(&brokers, &topic, payloads, 50, 500);
    let cfg = KafkaConfig {
        settings: BTreeMap::from([("max.partition.fetch.bytes".to_string(), "20000".to_string())]),
        ..config(&brokers)
    };
    let mut src = KafkaSource::bounded("df", &topic, &cfg, 0, 1, BTreeMap::new()).unwrap();
    let got = drain_bounded(&mut src);
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..n as u64).collect::<Vec<_>>());
    assert_eq!(src.skipped_offsets(), 0);
}

/// Against a real broker (see above): a partition resumed deep inside a
/// record batch larger than the source's backtrack. A Kafka broker answers
/// with that batch (the source drops the records before the position);
/// tansu 0.6 answers with the next batch, so the rest of this one never
/// comes. Either way every offset from the
/// position on is delivered once, in order, or counted as skipped: none is
/// lost without a word.
#[test]
#[ignore = "needs a real broker: scripts/test.sh runs it"]
fn real_broker_offsets_past_a_resume_are_delivered_or_counted() {
    // Counted at once, and after fetching the gap again for 300 ms.
    for (name, recheck) in [("deep", 0), ("deep-recheck", 300)] {
        let (brokers, topic) = real_broker_topic(name, 1);
        // One batch of 25 000 records, then one of 10.
        for batch in [0..25_000, 25_000..25_010] {
            send_batched(
                &brokers,
                &topic,
                batch.map(|i| i.to_string()),
                2_000,
                100_000,
            );
        }
        let from = 20_000u64;
        let cfg = KafkaConfig {
            recheck_gaps: Duration::from_millis(recheck),
            ..config(&brokers)
        };
        let positions = BTreeMap::from([(0, from as i64)]);
        let mut src = KafkaSource::bounded("df", &topic, &cfg, 0, 1, positions).unwrap();
        let got = drain_bounded(&mut src);
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "in order, once");
        assert!(offsets.first().is_some_and(|&o| o >= from));
        assert_eq!(offsets.last(), Some(&25_009));
        assert_eq!(offsets.len() as u64 + src.skipped_offsets(), 25_010 - from);
        for r in &got {
            assert_eq!(r.payload, r.offset.to_string().into_bytes());
        }
    }
}
