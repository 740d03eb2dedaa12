//! The dataflow layer alone: events in, emitted changes out, on 1 and 2
//! workers, with every time complete before its frontier report.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdg::dataflow::{self, Emitted, RunConfig, Start};
use rdg::model::{Change, ClusterOf};
use rdg::source::{Poll, RawBatch, Source, SourceError};

struct Lines {
    dataflow: String,
    lines: Vec<String>,
    next: usize,
}

impl Source for Lines {
    fn dataflow(&self) -> &str {
        &self.dataflow
    }
    fn poll(&mut self, max: usize, out: &mut RawBatch) -> Result<Poll, SourceError> {
        if self.next >= self.lines.len() {
            return Ok(Poll::Done);
        }
        let end = (self.next + max).min(self.lines.len());
        for i in self.next..end {
            out.push(0, i as u64 + 1, self.lines[i].as_bytes(), None);
        }
        self.next = end;
        Ok(Poll::Ready)
    }
    fn describe(&self, _p: u32, o: u64) -> String {
        format!("{}.jsonl:{o}", self.dataflow)
    }
    fn partition_key(&self, _p: u32) -> String {
        format!("{}.jsonl", self.dataflow)
    }
}

/// Runs the shipped definitions over a few login events (one invalid) with
/// `config`, handing every emitted message to `emit`.
fn run_login(config: RunConfig, emit: dataflow::Emitter) {
    let plan =
        Arc::new(rdg::spec::load(&support::dataflows_dir()).expect("shipped definitions load"));
    let login: Vec<String> = vec![
        r#"{"ts": 100, "result": "success", "account_id": "a1", "device_id": "d1", "email_sha256": "e1"}"#,
        r#"{"ts": 101, "result": "success", "account_id": "a2", "device_id": "d1"}"#,
        r#"{"ts": 102, "result": "failure", "account_id": "a3", "device_id": "d3"}"#,
        r#"not json"#,
        r#"{"ts": 103, "result": "success", "account_id": "a3", "device_id": "d3"}"#,
        r#"{"ts": 104, "result": "success", "op": "delete", "account_id": "a3", "device_id": "d3"}"#,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let sources: dataflow::SourceFactory =
        Arc::new(move |index, _peers, _resume: &dataflow::Positions| {
            Ok(if index == 0 {
                vec![Box::new(Lines {
                    dataflow: "login".into(),
                    lines: login.clone(),
                    next: 0,
                }) as Box<dyn Source>]
            } else {
                vec![]
            })
        });
    let start = Arc::new(Start {
        watermarks: BTreeMap::new(),
        contributions: Mutex::new(None),
        positions: BTreeMap::new(),
    });
    dataflow::run(config, plan, start, sources, emit).expect("run");
}

/// The last change of each key, and the dead letters.
fn run(workers: usize, batch: usize) -> (BTreeMap<String, Change>, usize) {
    let state: Arc<Mutex<(BTreeMap<String, Change>, usize)>> = Arc::default();
    let seen = state.clone();
    let emit: dataflow::Emitter = Arc::new(move |e| {
        let mut s = seen.lock().unwrap();
        if let Emitted::Data {
            changes,
            dead_letters,
            ..
        } = e
        {
            s.1 += dead_letters.len();
            for c in changes {
                let key = match &c {
                    Change::Node { id, dataflow, .. } => format!("node {id} {dataflow}"),
                    Change::Edge {
                        edge_type,
                        from,
                        to,
                        ..
                    } => format!("edge {edge_type} {from} {to}"),
                    Change::Link { a, b, .. } => format!("link {a} {b}"),
                    Change::Cluster { id, .. } => format!("cluster {id}"),
                    Change::Member {
                        cluster, member, ..
                    } => format!("member {cluster} {member}"),
                };
                s.0.insert(key, c);
            }
        }
    });
    let config = RunConfig {
        workers,
        batch,
        ..RunConfig::default()
    };
    run_login(config, emit);
    let s = state.lock().unwrap();
    (s.0.clone(), s.1)
}

/// What one worker emitted, in order: `R` a folded record's change (node,
/// edge, link), `I` an identity assignment's (cluster, member), `D` its
/// records-done report, `F` its last frontier report.
fn emitted_in_order(config: RunConfig) -> BTreeMap<usize, String> {
    let seen: Arc<Mutex<BTreeMap<usize, String>>> = Arc::default();
    let log = seen.clone();
    let emit: dataflow::Emitter = Arc::new(move |e| {
        let mut log = log.lock().unwrap();
        match e {
            Emitted::Data {
                worker, changes, ..
            } => {
                let line = log.entry(worker).or_default();
                for c in changes {
                    line.push(match c {
                        Change::Node { .. } | Change::Edge { .. } | Change::Link { .. } => 'R',
                        Change::Cluster { .. } | Change::Member { .. } => 'I',
                    });
                }
            }
            Emitted::RecordsDone { worker } => log.entry(worker).or_default().push('D'),
            Emitted::Frontier {
                worker,
                upto: u64::MAX,
            } => log.entry(worker).or_default().push('F'),
            _ => {}
        }
    });
    run_login(config, emit);
    let log = seen.lock().unwrap();
    log.clone()
}

/// A replay at its end (`RunConfig::at_end`, a bulk load's) says once per
/// worker when that worker's folds' records are all out: after every
/// record's change and before any identity assignment's (the store writes
/// the records' namespaces meanwhile), and before its last frontier. A run
/// that commits as it goes never says so.
#[test]
fn a_replay_says_when_its_records_are_out() {
    for workers in [1, 2] {
        let config = RunConfig {
            workers,
            batch: 2,
            at_end: true,
            ..RunConfig::default()
        };
        let log = emitted_in_order(config);
        assert_eq!(log.len(), workers, "{log:?}");
        for (worker, line) in &log {
            let shape = format!(
                "{}D{}F",
                "R".repeat(line.matches('R').count()),
                "I".repeat(line.matches('I').count())
            );
            assert_eq!(line, &shape, "worker {worker} of {workers}");
        }
        let all: String = log.values().cloned().collect();
        assert!(all.contains('R') && all.contains('I'), "{log:?}");

        let config = RunConfig {
            workers,
            batch: 2,
            ..RunConfig::default()
        };
        let log = emitted_in_order(config);
        assert!(log.values().all(|line| !line.contains('D')), "{log:?}");
    }
}

#[test]
fn login_events_become_nodes_edges_and_clusters() {
    for (workers, batch) in [(1, 100), (2, 1), (2, 3)] {
        let (changes, dead) = run(workers, batch);
        assert_eq!(dead, 1, "workers {workers} batch {batch}");
        // The last change of each key; absent when the key never changed
        // (created and removed within one batch).
        let cluster = |id: &str| match changes.get(&format!("cluster {id}")) {
            Some(Change::Cluster { cluster, .. }) => cluster.clone(),
            None => None,
            other => panic!("not a cluster change for {id}: {other:?}"),
        };
        let c = |s: &str| {
            Some(ClusterOf {
                cluster: s.into(),
                hub: false,
            })
        };
        // a1, d1, e1 and a2 are one person; a1 was seen first.
        assert_eq!(cluster("account:a1"), c("account:a1"));
        assert_eq!(cluster("device:d1"), c("account:a1"));
        assert_eq!(cluster("account:a2"), c("account:a1"));
        assert_eq!(cluster("email:e1"), c("account:a1"));
        // a3 -- d3 was linked, then deleted: no cluster left.
        assert_eq!(cluster("account:a3"), None);
        match changes.get("edge logged_in_from account:a3 device:d3") {
            Some(Change::Edge { record, .. }) => assert_eq!(record, &None),
            None => assert_ne!(batch, 1, "with one event per batch the removal is emitted"),
            other => panic!("{other:?}"),
        }
        match changes.get("edge logged_in_from account:a1 device:d1") {
            Some(Change::Edge {
                record: Some(r),
                reverse,
                ..
            }) => {
                assert!(*reverse);
                assert_eq!((r.count, r.first_seen), (1, 100_000));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A live source that never has anything, or fails on its `fail_at`th poll.
struct Quiet {
    polls: usize,
    fail_at: Option<usize>,
}

impl Source for Quiet {
    fn dataflow(&self) -> &str {
        "login"
    }
    fn poll(&mut self, _max: usize, _out: &mut RawBatch) -> Result<Poll, SourceError> {
        self.polls += 1;
        if self.fail_at.is_some_and(|n| self.polls >= n) {
            return Err(SourceError::Broker {
                brokers: "127.0.0.1:1".into(),
                detail: "unreachable for 30 s".into(),
            });
        }
        Ok(Poll::Idle)
    }
    fn describe(&self, _p: u32, o: u64) -> String {
        format!("quiet:{o}")
    }
    fn partition_key(&self, _p: u32) -> String {
        "0".into()
    }
}

/// A live run whose source fails on one worker ends, with that error, on
/// every worker: the other workers must not go on reading their sources
/// (their partitions) as if nothing happened, with the failed worker's
/// partitions silently stalled.
#[test]
fn a_source_error_on_one_worker_stops_the_whole_run() {
    let plan =
        Arc::new(rdg::spec::load(&support::dataflows_dir()).expect("shipped definitions load"));
    let sources: dataflow::SourceFactory =
        Arc::new(move |index, _peers, _resume: &dataflow::Positions| {
            let fail_at = (index == 1).then_some(3);
            Ok(vec![
                Box::new(Quiet { polls: 0, fail_at }) as Box<dyn Source>
            ])
        });
    let start = Arc::new(Start {
        watermarks: BTreeMap::new(),
        contributions: Mutex::new(None),
        positions: BTreeMap::new(),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let config = RunConfig {
        workers: 2,
        live: true,
        stop: stop.clone(),
        ..RunConfig::default()
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let run = std::thread::spawn(move || {
        let r = dataflow::run(config, plan, start, sources, Arc::new(|_| {}));
        let _ = done_tx.send(());
        r
    });
    let ended = done_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .is_ok();
    // Unblock the run either way, so a failure does not hang the test.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let result = run.join().expect("run thread");
    assert!(
        ended,
        "worker 1's source failed, but the run went on (worker 0 kept reading) for 30 s"
    );
    match result {
        Err(e) => assert!(
            e.to_string().contains("cannot reach the Kafka broker"),
            "{e}"
        ),
        Ok(()) => panic!("the run ended without the source's error"),
    }
}
