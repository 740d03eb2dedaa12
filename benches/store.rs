//! Store micro-benchmark: rdg's real key shapes (edges with their reverse
//! index, nodes, identity links and entries) written into a fresh state by
//! commits and by bulk loads, on each engine. Prints keys/s (wall clock,
//! encoding included) and the engine's own time.
//!
//! `cargo bench --bench store -- [EDGES] [EDGES_PER_COMMIT] [CASES] [BUFFER_MB]`
//! (defaults 1000000, 10000, all, 64); CASES is a comma-separated subset of
//! `fjall-commit,sled-commit,fjall-ingest,fjall-batch,fjall-auto,sled-bulk`;
//! BUFFER_MB is the bulk load's buffer.

use std::time::Instant;

use rdg::model::{Change, ClusterOf, DataflowProgress, Progress, Record};
use rdg::store::{BulkMethod, DEFAULT_BULK_HOLD_BYTES, Engine, Store, StoreOptions};

/// One chunk of changes like a time of a replay: per edge, the edge
/// (reversed: two keys), and every 4th edge a node, a link (two keys) and an
/// identity entry.
fn chunk(start: u64, n: u64) -> Vec<Change> {
    let mut out = Vec::with_capacity(n as usize * 2);
    for i in start..start + n {
        let account = i / 20;
        let profile = format!("profile:acc{account}-p{}", i % 3);
        let record = Record {
            count: 1 + i % 3,
            first_seen: 1_700_000_000_000 + i as i64,
            last_seen: 1_700_000_000_000 + i as i64 * 2,
            props: r#"{"device":"tv","minutes":42}"#.into(),
        };
        out.push(Change::Edge {
            edge_type: "watched".into(),
            from: profile.as_str().into(),
            to: format!("title:t{}", (i * 7919) % 50_000).into(),
            dataflow: "playback".into(),
            reverse: true,
            record: Some(record.clone()),
        });
        if i % 4 == 0 {
            out.push(Change::Node {
                id: profile.as_str().into(),
                dataflow: "playback".into(),
                record: Some(record.clone()),
            });
            out.push(Change::Link {
                a: format!("account:acc{account}").into(),
                b: format!("device:d{}", i / 3).into(),
                dataflow: "login".into(),
                mirrored: false,
                record: Some(record),
            });
            out.push(Change::Cluster {
                id: format!("device:d{}", i / 3).into(),
                cluster: Some(ClusterOf {
                    cluster: format!("account:acc{account}").into(),
                    hub: false,
                }),
            });
        }
    }
    out
}

fn progress(events: u64) -> Progress {
    let mut p = Progress::default();
    p.dataflows.insert(
        "playback".into(),
        DataflowProgress {
            events,
            late: 0,
            watermark: Some(1),
            record_times: Default::default(),
        },
    );
    p.positions.insert(("playback".into(), "0".into()), events);
    p
}

fn run(case: &str, edges: u64, per_commit: u64, buffer: usize) {
    let (engine, bulk) = match case {
        "fjall-commit" => (Engine::Fjall, None),
        "sled-commit" => (Engine::Sled, None),
        "fjall-ingest" => (Engine::Fjall, Some(BulkMethod::Ingest)),
        "fjall-batch" => (Engine::Fjall, Some(BulkMethod::Batch)),
        "fjall-auto" => (Engine::Fjall, Some(BulkMethod::Auto)),
        "sled-bulk" => (Engine::Sled, Some(BulkMethod::Auto)),
        other => {
            eprintln!("unknown case {other}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(
        dir.path(),
        &StoreOptions {
            engine: Some(engine),
            ..Default::default()
        },
    )
    .expect("open");
    let started = Instant::now();
    // Sled's loads hold nothing (as `Store::bulk_load`).
    let hold = match engine {
        Engine::Fjall => DEFAULT_BULK_HOLD_BYTES,
        Engine::Sled => 0,
    };
    let mut load = bulk.map(|m| store.bulk_load_with(m, buffer, hold).expect("bulk load"));
    let mut i = 0;
    while i < edges {
        let changes = chunk(i, per_commit);
        let p = progress(per_commit);
        match &mut load {
            Some(l) => l.write(&changes, &[], &p).expect("write"),
            None => store.commit(&changes, &[], &p).expect("commit"),
        }
        i += per_commit;
    }
    if let Some(l) = load {
        l.finish().expect("finish");
    }
    store.flush().expect("flush");
    let wall = started.elapsed().as_secs_f64();
    let w = store.write_stats();
    let disk = store.size_on_disk().unwrap_or(0);
    println!(
        "{case:<13} {:>9} keys  {:>7.2} s  {:>8.0} keys/s wall  {:>8.0} keys/s engine  {:>5} MB on disk",
        w.keys_written,
        wall,
        w.keys_written as f64 / wall,
        w.keys_per_s(),
        disk >> 20
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let edges: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let per_commit: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let cases = args.get(2).cloned().unwrap_or_else(|| {
        "fjall-commit,sled-commit,fjall-ingest,fjall-batch,fjall-auto,sled-bulk".into()
    });
    let buffer = args
        .get(3)
        .and_then(|a| a.parse::<usize>().ok())
        .map_or(rdg::store::DEFAULT_BULK_BUFFER_BYTES, |mb| mb << 20);
    println!(
        "{edges} edges, {per_commit} per commit or chunk, bulk buffer {} MiB; machine: 2 cores (shared)",
        buffer >> 20
    );
    for case in cases.split(',') {
        run(case, edges, per_commit, buffer);
    }
}
