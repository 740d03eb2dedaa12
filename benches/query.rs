//! In-process benchmark of the store's read side as the query service uses
//! it (no HTTP): point lookups of nodes, identities and first pages of
//! neighbour lists, each through a `ReadView` (gate held, as a request
//! does), on 1 and 2 threads. Compare with `scripts/bench-query.sh` (HTTP).
//!
//! cargo bench --bench query -- [STATE_DIR] [SECONDS]
//!
//! Without STATE_DIR it replays 100 000 generated events into
//! target/bench-query/inproc-state first (kept for the next run).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdg::store::{EdgeOrder, EdgeQuery, Store};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let state = match args.first() {
        Some(s) => PathBuf::from(s),
        None => {
            let dir = root.join("target/bench-query/inproc-state");
            // Written once the replay finished: a state without it (absent,
            // or cut short) is replayed again from empty.
            let ready = dir.join("ready");
            if !ready.exists() {
                let _ = std::fs::remove_dir_all(&dir);
                let events = root.join("target/bench-query/inproc-events");
                std::fs::create_dir_all(&events).expect("mkdir");
                rdg::generate::generate(
                    &rdg::generate::GenOptions {
                        events: 100_000,
                        seed: 7,
                        ..Default::default()
                    },
                    &events,
                )
                .expect("generate");
                let files = ["gaming", "login", "playback"]
                    .iter()
                    .map(|t| events.join(format!("{t}.jsonl")))
                    .collect();
                rdg::app::replay(&rdg::app::ReplayOptions {
                    dataflows: root.join("dataflows"),
                    state: dir.clone(),
                    workers: 2,
                    files,
                    topic_files: Vec::new(),
                    batch: 4096,
                    progress: rdg::app::ShowProgress::Off,
                    store: rdg::store::StoreOptions::default(),
                })
                .expect("replay");
                std::fs::write(&ready, b"").expect("mark the state ready");
            }
            dir
        }
    };
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let store = Store::open(&state).expect("open the state");
    let (profiles, accounts, devices) = {
        let view = store.read();
        (
            view.search("profile:", 20_000).expect("search"),
            view.search("account:", 20_000).expect("search"),
            view.search("device:", 20_000).expect("search"),
        )
    };
    println!(
        "state {}: {} profiles, {} accounts, {} devices sampled",
        state.display(),
        profiles.len(),
        accounts.len(),
        devices.len()
    );
    let profiles = Arc::new(profiles);
    let accounts = Arc::new(accounts);
    let devices = Arc::new(devices);
    let page = EdgeQuery {
        limit: Some(10),
        order: EdgeOrder::Id,
        ..EdgeQuery::default()
    };
    let recent = EdgeQuery {
        limit: Some(10),
        order: EdgeOrder::Recent,
        ..EdgeQuery::default()
    };
    type Op = fn(&Store, &str, &EdgeQuery, &EdgeQuery) -> usize;
    let cases: Vec<(&str, Arc<Vec<String>>, Op)> = vec![
        ("node (profile)", profiles.clone(), |s, id, _, _| {
            usize::from(s.read().node(id).expect("node").is_some())
        }),
        ("identity (device)", devices.clone(), |s, id, _, _| {
            usize::from(s.read().identity(id).expect("identity").is_some())
        }),
        (
            "edges watched, 10 by id",
            profiles.clone(),
            |s, id, p, _| {
                s.read()
                    .edges_page("watched", id, p, None)
                    .expect("edges")
                    .items
                    .len()
            },
        ),
        (
            "edges watched, 10 most recent",
            profiles.clone(),
            |s, id, _, r| {
                s.read()
                    .edges_page("watched", id, r, None)
                    .expect("edges")
                    .items
                    .len()
            },
        ),
        (
            "edges has_profile, 10 by id",
            accounts.clone(),
            |s, id, p, _| {
                s.read()
                    .edges_page("has_profile", id, p, None)
                    .expect("edges")
                    .items
                    .len()
            },
        ),
    ];
    for (name, ids, op) in cases {
        for threads in [1usize, 2] {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let store = store.clone();
                    let ids = ids.clone();
                    std::thread::spawn(move || {
                        let mut n = 0u64;
                        let mut found = 0usize;
                        // A fixed-step walk over the ids (different per thread).
                        let mut i = t * 7919;
                        let started = Instant::now();
                        while Instant::now() < deadline {
                            for _ in 0..256 {
                                i = (i + 104_729) % ids.len().max(1);
                                found += op(&store, &ids[i], &page, &recent);
                                n += 1;
                            }
                        }
                        (n, found, started.elapsed())
                    })
                })
                .collect();
            let mut total = 0u64;
            let mut found = 0usize;
            let mut elapsed = Duration::ZERO;
            for h in handles {
                let (n, f, e) = h.join().expect("thread");
                total += n;
                found += f;
                elapsed = elapsed.max(e);
            }
            println!(
                "{name:32} {threads} thread(s): {:>10.0} lookups/s ({:.2} µs each per thread; {} results)",
                total as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64() * 1e6 * threads as f64 / total as f64,
                found
            );
        }
    }
}
