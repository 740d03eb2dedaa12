//! Runs of `rdg run` and `rdg replay` whose results are compared: the
//! file replay of generated events as the reference, exports with dead
//! letters reduced to their dataflow (a file line in one run, a Kafka offset
//! in the other), runs driven until every event is committed.
//!
//! Invariant: every wait is bounded by [`PATIENCE`].

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rdg::store::{Engine, Store, StoreOptions};

use super::bin::{command, dataflows_dir, export, replay_with};
use super::kafka::{committed, gen_opts};
use super::process::{signal, wait_exit};

/// A bound on every wait, so a broken test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// The export of a file replay of the same events.
pub fn file_replay_export(dir: &Path, events: u64, deletes: bool) -> Vec<String> {
    let input = dir.join("input");
    rdg::generate::generate(&gen_opts(events, deletes), &input).expect("generate");
    let state = dir.join("file-state");
    let files = ["playback", "gaming", "login"].map(|t| input.join(format!("{t}.jsonl")));
    replay_with(&[], &state, 1, &files);
    normalized_export(&state)
}

/// The export with dead letters reduced to their dataflow (their source
/// names a file line in one run, a topic/partition/offset in the other).
pub fn normalized_export(state: &Path) -> Vec<String> {
    let mut lines: Vec<String> = export(state)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            if v["ns"] == "dead_letter" {
                format!("dead_letter {}", v["dataflow"])
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.sort();
    lines
}

pub fn start_run(brokers: &str, state: &Path, workers: usize) -> Child {
    start_run_with(&dataflows_dir(), brokers, state, workers)
}

pub fn start_run_with(dataflows: &Path, brokers: &str, state: &Path, workers: usize) -> Child {
    command()
        .arg("run")
        .arg("--dataflows")
        .arg(dataflows)
        .arg("--state")
        .arg(state)
        .arg("--brokers")
        .arg(brokers)
        .arg("--workers")
        .arg(workers.to_string())
        .args(["--status-interval", "0", "--batch", "97"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rdg run")
}

/// Runs until every event is committed: start, let it work, SIGTERM, check.
pub fn run_to_completion(brokers: &str, state: &Path, workers: usize, expected: (u64, u64)) {
    run_to_completion_with(&dataflows_dir(), brokers, state, workers, expected)
}

pub fn run_to_completion_with(
    dataflows: &Path,
    brokers: &str,
    state: &Path,
    workers: usize,
    expected: (u64, u64),
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let child = start_run_with(dataflows, brokers, state, workers);
        std::thread::sleep(Duration::from_secs(3));
        signal(&child, "-TERM");
        let (status, err) = wait_exit(child, PATIENCE);
        assert!(status.success(), "rdg run after SIGTERM: {status}\n{err}");
        let got = committed(state);
        assert!(
            got.0 <= expected.0 && got.1 <= expected.1,
            "more committed than produced: {got:?} > {expected:?} (counted twice)"
        );
        if got == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {got:?} of {expected:?} committed"
        );
    }
}

/// Compares two sorted exports and shows what differs.
pub fn assert_same(actual: &[String], expected: &[String], what: &str) {
    if actual == expected {
        return;
    }
    let a: std::collections::BTreeSet<&String> = actual.iter().collect();
    let e: std::collections::BTreeSet<&String> = expected.iter().collect();
    let missing: Vec<_> = e.difference(&a).take(10).collect();
    let extra: Vec<_> = a.difference(&e).take(10).collect();
    panic!(
        "{what}: {} lines, expected {}\nmissing: {missing:#?}\nunexpected: {extra:#?}",
        actual.len(),
        expected.len()
    );
}

/// Creates an empty state written with `engine`; the runs started on it
/// keep that engine (it is recorded in the state).
pub fn create_state(state: &Path, engine: Engine) {
    let options = StoreOptions {
        engine: Some(engine),
        ..Default::default()
    };
    drop(Store::open_with(state, &options).expect("create the state"));
}

/// Nodes, edges, identifiers and distinct clusters among export lines (a
/// replay summary's counts); a line that is not JSON fails the test.
pub fn graph_counts<'a>(lines: impl IntoIterator<Item = &'a str>) -> [u64; 4] {
    let mut counts = [0u64; 4];
    let mut clusters = std::collections::BTreeSet::new();
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("an export line: {e}: {l}"));
        match v["ns"].as_str() {
            Some("node") => counts[0] += 1,
            Some("edge") => counts[1] += 1,
            Some("identity") => {
                counts[2] += 1;
                clusters.insert(v["cluster"].to_string());
            }
            _ => {}
        }
    }
    counts[3] = clusters.len() as u64;
    counts
}

/// The counts a replay's `--json` summary reports, in [`graph_counts`]'s
/// order.
pub fn summary_counts(summary: &str) -> Result<[Option<u64>; 4], String> {
    let summary: serde_json::Value =
        serde_json::from_str(summary).map_err(|e| format!("summary: {e}: {summary}"))?;
    Ok(["nodes", "edges", "identifiers", "clusters"].map(|k| summary[k].as_u64()))
}

/// The counts a replay's `--json` summary reports (nodes, edges,
/// identifiers, clusters) are those of the state's export.
#[track_caller]
pub fn assert_summary_counts(summary: &str, state: &Path) {
    let want = graph_counts(export(state).lines());
    let got = summary_counts(summary).expect("a --json summary");
    assert_eq!(got, want.map(Some), "summary {summary}");
}
