//! Kafka for tests: rdkafka's in-process MockCluster (the real protocol, no
//! external service) holding generated events, and the counters a run must
//! reach.

use std::collections::BTreeMap;
use std::path::Path;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// The shipped definitions' topics.
pub const TOPICS: [&str; 3] = ["playback", "gaming", "login"];

/// Logs to the test's output (shown when it fails).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
}

/// A real broker's address (`RDG_TEST_BROKERS`, which `scripts/test.sh`
/// sets) and a new topic `rdg-test-NAME-PID` of `partitions` partitions on
/// it; logs to the test's output.
pub fn real_broker_topic(name: &str, partitions: i32) -> (String, String) {
    let brokers = std::env::var("RDG_TEST_BROKERS")
        .expect("RDG_TEST_BROKERS=HOST:PORT of a running broker (scripts/test.sh sets it)");
    logs();
    let topic = format!("rdg-test-{name}-{}", std::process::id());
    rdg::produce::create_topics(&brokers, &BTreeMap::new(), &[(topic.clone(), partitions)])
        .expect("create the test topic");
    (brokers, topic)
}

/// `events` generated events (seed 11; deletes only if `deletes`).
pub fn gen_opts(events: u64, deletes: bool) -> rdg::generate::GenOptions {
    rdg::generate::GenOptions {
        events,
        seed: 11,
        delete_share: if deletes { 0.02 } else { 0.0 },
        ..rdg::generate::GenOptions::default()
    }
}

/// A mock cluster with the shipped topics (`partitions` each) holding the
/// events of `opts`, keyed by account.
pub fn mock_with_events(
    partitions: i32,
    opts: &rdg::generate::GenOptions,
) -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    for t in TOPICS {
        cluster.create_topic(t, partitions, 1).expect("topic");
    }
    let sent = rdg::produce::produce(
        &cluster.bootstrap_servers(),
        &BTreeMap::new(),
        rdg::generate::events(opts),
        None,
        |_| {},
    )
    .expect("produce");
    assert_eq!(sent, opts.events);
    cluster
}

/// Writes the events of `opts` as the shipped topics' files under `dir`;
/// their paths, in [`TOPICS`] order.
pub fn event_files(opts: &rdg::generate::GenOptions, dir: &Path) -> Vec<std::path::PathBuf> {
    rdg::generate::generate(opts, dir).expect("generate");
    TOPICS.map(|t| dir.join(format!("{t}.jsonl"))).to_vec()
}

/// Events and dead letters committed in a state, from its counters.
pub fn committed(state: &Path) -> (u64, u64) {
    let store = rdg::store::Store::open(state).expect("open state");
    let meta = store.meta().expect("meta");
    meta.dataflows
        .values()
        .fold((0, 0), |(e, d), m| (e + m.events, d + m.dead_letters))
}
