//! `rdg run` and `rdg replay --brokers` end to end against rdkafka's
//! in-process MockCluster (the real Kafka protocol, no external service):
//! runs killed and restarted at random points end with the same graph as one
//! file replay of the same events, with nothing lost or counted twice.
//!
//! The shipped definitions are used with generated events keyed by account.
//! With one partition per topic the graph must equal the file replay exactly,
//! deletes included. With several partitions, records shared by accounts
//! (titles, games) are written from several partitions, and a delete's effect
//! on them depends on how the partitions interleave (docs/semantics.md), so
//! that scenario runs without deletes: every record with props is then
//! written from one account's events, nothing is late or expires within the
//! generated span, and the graph again cannot depend on the interleaving.
//!
//! The killed-and-restarted scenarios run on the fjall store (the default);
//! the one-partition one also on sled, against the same fjall file replay.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdg::store::{Engine, Store};
use support::*;

const EVENTS: u64 = 3000;

#[test]
fn one_partition_per_topic_with_deletes() {
    killed_and_restarted_runs_equal_one_file_replay(1, true, Engine::Fjall);
}

#[test]
fn one_partition_per_topic_with_deletes_on_sled() {
    killed_and_restarted_runs_equal_one_file_replay(1, true, Engine::Sled);
}

#[test]
fn four_partitions_per_topic_spread_over_workers() {
    killed_and_restarted_runs_equal_one_file_replay(4, false, Engine::Fjall);
}

fn killed_and_restarted_runs_equal_one_file_replay(partitions: i32, deletes: bool, engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = file_replay_export(dir.path(), EVENTS, deletes);
    let expected = committed(&dir.path().join("file-state"));
    let cluster = mock_with_events(partitions, &gen_opts(EVENTS, deletes));
    let brokers = cluster.bootstrap_servers();

    // Several runs killed (SIGKILL: no chance to commit) at pseudo-random
    // moments, alternating 1 and 2 workers, then runs until complete.
    let state = dir.path().join("kafka-state");
    create_state(&state, engine);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let workers = 1 + round % 2;
        let mut child = start_run(&brokers, &state, workers);
        std::thread::sleep(Duration::from_millis(300 + seed % 1500));
        child.kill().expect("kill");
        let _ = wait_exit(child, PATIENCE);
        let got = committed(&state);
        assert!(
            got.0 <= expected.0,
            "round {round}: more events committed ({}) than exist ({})",
            got.0,
            expected.0
        );
    }
    run_to_completion(&brokers, &state, 2, expected);
    assert_same(
        &normalized_export(&state),
        &reference,
        "killed and restarted runs",
    );

    // A bounded replay from Kafka into a fresh state equals the file replay.
    let replayed = dir.path().join("kafka-replay");
    create_state(&replayed, engine);
    // Its stderr is not a terminal: progress comes as status lines, and
    // the brokers' watermarks tell how many records are left to read.
    let run = rdg(replay_args(
        &[
            "--brokers",
            brokers.as_str(),
            "--json",
            "--status-interval",
            "0.05",
        ],
        &replayed,
        2,
        &[],
    ));
    let summary = run.ok();
    let status = run.stderr_lines(|l| l.starts_with("replay: "));
    assert!(
        status.iter().any(|l| l.contains(" records left to read, ")),
        "no status line told the records left: {}",
        run.describe()
    );
    assert!(
        status
            .last()
            .is_some_and(|l| l.starts_with("replay: all read, ")),
        "the last status line says what the end does: {}",
        run.describe()
    );
    // A bulk load: the counts are the collectors' tally.
    assert!(summary.contains("\"bulk_load\":true"), "{summary}");
    assert_summary_counts(summary, &replayed);
    assert_same(
        &normalized_export(&replayed),
        &reference,
        "replay --brokers",
    );
    let store = Store::open(&replayed).expect("open the replayed state");
    assert_eq!(store.engine(), engine);
    drop(store);
    drop(cluster);
}

/// Against a real Kafka-compatible broker (tansu, started by
/// `scripts/broker.sh`; `scripts/test.sh` sets `RDG_TEST_BROKERS` and runs
/// this test), with the events produced by an independent client:
/// kafka-python, a pure-Python implementation of the protocol.
#[test]
#[ignore = "needs a real broker and kafka-python: scripts/test.sh runs it"]
fn real_broker_events_from_an_independent_client() {
    let brokers = std::env::var("RDG_TEST_BROKERS")
        .expect("RDG_TEST_BROKERS=HOST:PORT of a running broker (scripts/broker.sh start)");
    let dir = tempfile::tempdir().expect("tempdir");
    // Topics of their own, so runs against one broker do not meet.
    let suffix = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let defs = dir.path().join("dataflows");
    std::fs::create_dir_all(&defs).expect("mkdir");
    for entry in std::fs::read_dir(dataflows_dir()).expect("dataflows") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = ["playback", "gaming", "login"]
            .iter()
            .fold(text, |t, topic| {
                t.replace(
                    &format!("topic = \"{topic}\""),
                    &format!("topic = \"{topic}-{suffix}\""),
                )
            });
        std::fs::write(defs.join(path.file_name().expect("name")), text).expect("write");
    }
    let topics: Vec<(String, i32)> = ["playback", "gaming", "login"]
        .iter()
        .map(|t| (format!("{t}-{suffix}"), 1))
        .collect();
    rdg::produce::create_topics(&brokers, &BTreeMap::new(), &topics).expect("create topics");

    let input = dir.path().join("input");
    rdg::generate::generate(&gen_opts(EVENTS, true), &input).expect("generate");
    let mut produce = Command::new("python3");
    produce
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/produce.py"))
        .arg(&brokers);
    for t in ["playback", "gaming", "login"] {
        produce
            .arg(format!("{t}-{suffix}"))
            .arg(input.join(format!("{t}.jsonl")));
    }
    let out = produce.output().expect("python3 tests/support/produce.py");
    assert!(
        out.status.success(),
        "kafka-python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let acked: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("count");
    assert_eq!(acked, EVENTS);

    // The reference: the same files replayed, read as the suffixed topics.
    let file_state = dir.path().join("file-state");
    let mut replay = command();
    replay
        .arg("replay")
        .arg("--dataflows")
        .arg(&defs)
        .arg("--state")
        .arg(&file_state);
    for t in ["playback", "gaming", "login"] {
        replay.arg("--topic").arg(format!(
            "{t}-{suffix}={}",
            input.join(format!("{t}.jsonl")).display()
        ));
    }
    let out = replay.output().expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = normalized_export(&file_state);
    let expected = committed(&file_state);

    // One run killed mid-way, then runs until everything is committed.
    let state = dir.path().join("kafka-state");
    let mut child = start_run_with(&defs, &brokers, &state, 2);
    std::thread::sleep(Duration::from_millis(700));
    child.kill().expect("kill");
    let _ = wait_exit(child, PATIENCE);
    run_to_completion_with(&defs, &brokers, &state, 2, expected);
    assert_same(&normalized_export(&state), &reference, "real broker");
}

/// Starts every process of an N × W cluster (`--state DIR/process-I`).
fn start_cluster(brokers: &str, dir: &Path, hosts: &Path, n: usize, w: usize) -> Vec<Child> {
    (0..n)
        .map(|i| {
            command()
                .arg("run")
                .arg("--dataflows")
                .arg(dataflows_dir())
                .arg("--state")
                .arg(dir.join(format!("process-{i}")))
                .arg("--brokers")
                .arg(brokers)
                .args(["--workers", &w.to_string(), "--processes", &n.to_string()])
                .args(["--process", &i.to_string()])
                .arg("--hosts")
                .arg(hosts)
                .args(["--status-interval", "0", "--batch", "97"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a cluster process")
        })
        .collect()
}

/// The union of every process's export and the sum of their counters.
fn cluster_export(dir: &Path, n: usize) -> (Vec<String>, (u64, u64)) {
    let mut lines = Vec::new();
    let mut total = (0, 0);
    for i in 0..n {
        let state = dir.join(format!("process-{i}"));
        lines.extend(normalized_export(&state));
        let c = committed(&state);
        total = (total.0 + c.0, total.1 + c.1);
    }
    lines.sort();
    (lines, total)
}

/// 2 processes × 2 workers against 1 process × 1 worker on the same topics:
/// the same graph (each process holding the keys its workers own), also
/// after one process is killed mid-stream (the other stops with a message,
/// not a hang) and the whole cluster restarts.
#[test]
fn two_processes_equal_one_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = mock_with_events(4, &gen_opts(EVENTS, false));
    let brokers = cluster.bootstrap_servers();
    let single = dir.path().join("single");
    let reference_counts = {
        // What the file replay commits is what every run must commit.
        let files = dir.path().join("files");
        file_replay_export(&files, EVENTS, false);
        committed(&files.join("file-state"))
    };
    run_to_completion(&brokers, &single, 1, reference_counts);
    let reference = normalized_export(&single);

    let hosts = dir.path().join("hosts");
    let ports = free_ports(2);
    write_hosts(&hosts, &ports);
    let states = dir.path().join("cluster");

    // A first run: process 1 is killed; process 0 must stop by itself.
    let mut procs = start_cluster(&brokers, &states, &hosts, 2, 2);
    std::thread::sleep(Duration::from_millis(1500));
    let mut p1 = procs.pop().expect("process 1");
    p1.kill().expect("kill process 1");
    let _ = wait_exit(p1, PATIENCE);
    let p0 = procs.pop().expect("process 0");
    let (status, err) = wait_exit(p0, PATIENCE);
    assert!(
        !status.success(),
        "process 0 should fail when its peer dies"
    );
    assert!(
        err.contains("lost the connection to a peer process"),
        "process 0 should say why it stopped: {err}"
    );

    // Restart the whole cluster until everything is committed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut procs = start_cluster(&brokers, &states, &hosts, 2, 2);
        std::thread::sleep(Duration::from_secs(4));
        for p in procs.iter_mut() {
            signal(p, "-TERM");
        }
        for p in procs {
            let (status, err) = wait_exit(p, PATIENCE);
            assert!(
                status.success(),
                "cluster process after SIGTERM: {status}\n{err}"
            );
        }
        let (_, got) = cluster_export(&states, 2);
        assert!(
            got.0 <= reference_counts.0,
            "more committed than produced: {got:?} > {reference_counts:?}"
        );
        if got == reference_counts {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got:?} of {reference_counts:?}"
        );
    }
    let (lines, _) = cluster_export(&states, 2);
    assert_same(&lines, &reference, "2 × 2 cluster against 1 × 1");
    // Both processes hold a share of the graph.
    for i in 0..2 {
        let share = normalized_export(&states.join(format!("process-{i}")));
        assert!(
            share.len() > reference.len() / 5,
            "process {i} holds only {} lines",
            share.len()
        );
    }

    // A different shape is refused with a message that explains re-sharding.
    let out = command()
        .arg("run")
        .arg("--dataflows")
        .arg(dataflows_dir())
        .arg("--state")
        .arg(states.join("process-0"))
        .arg("--brokers")
        .arg(&brokers)
        .args(["--workers", "3", "--processes", "2", "--process", "0"])
        .arg("--hosts")
        .arg(&hosts)
        .output()
        .expect("run with another shape");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("re-shard"), "{err}");
    drop(cluster);
}
