//! In-process benchmark of the dataflow alone (no store): generated events
//! for the shipped definitions, held in memory, folded and stitched with a
//! sink that drops what it receives. Compare with `scripts/bench-replay.sh`
//! (end to end, with sled) to see where time goes.
//!
//! cargo bench --bench dataflow -- [EVENTS] [WORKERS] [BATCH]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdg::dataflow::{self, Emitted, RunConfig, Start};
use rdg::source::Shared;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use rdg::generate::{GenOptions, events};
use rdg::source::{MemorySource, Source};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let workers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let batch: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let plan = Arc::new(
        rdg::spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows"))
            .expect("shipped definitions"),
    );
    let mut by_topic: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (topic, _key, line) in events(&GenOptions {
        events: n,
        seed: 7,
        ..GenOptions::default()
    }) {
        by_topic
            .entry(topic.to_string())
            .or_default()
            .push(line.into_bytes());
    }
    let inputs: Vec<(String, Arc<Vec<Vec<u8>>>)> = by_topic
        .into_iter()
        .map(|(t, lines)| {
            let d = plan.dataflows.iter().find(|d| d.topic == t).expect("topic");
            (d.name.clone(), Arc::new(lines))
        })
        .collect();
    let changes = Arc::new(AtomicU64::new(0));
    let counted = changes.clone();
    let emit: dataflow::Emitter = Arc::new(move |e| {
        if let Emitted::Data { changes, .. } = e {
            counted.fetch_add(changes.len() as u64, Ordering::Relaxed);
        }
    });
    // Every worker reads every topic (a shared source per topic), as a file
    // replay does.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let handles: Vec<Vec<Option<Shared>>> = inputs
        .iter()
        .map(|(d, lines)| {
            Shared::handles(
                Box::new(MemorySource::new(d.clone(), lines.clone())),
                clock.clone(),
                workers,
            )
            .into_iter()
            .map(Some)
            .collect()
        })
        .collect();
    let handles = Mutex::new(handles);
    let sources: dataflow::SourceFactory =
        Arc::new(move |index, _peers, _resume: &dataflow::Positions| {
            let mut handles = handles.lock().expect("handles");
            Ok(handles
                .iter_mut()
                .filter_map(|per_worker| per_worker.get_mut(index).and_then(Option::take))
                .map(|h| Box::new(h) as Box<dyn Source>)
                .collect())
        });
    let start = Arc::new(Start {
        watermarks: BTreeMap::new(),
        contributions: Mutex::new(None),
        positions: BTreeMap::new(),
    });
    let config = RunConfig {
        workers,
        batch,
        clock,
        step: dataflow::REPLAY_STEP,
        ..RunConfig::default()
    };
    let stages = config.stages.clone();
    let t = Instant::now();
    dataflow::run(config, plan, start, sources, emit).expect("run");
    let s = t.elapsed().as_secs_f64();
    let st = stages.seconds();
    println!(
        "dataflow only: {n} generated events, {workers} workers: {s:.2}s, {:.0} events/s, {} store changes emitted",
        n as f64 / s,
        changes.load(Ordering::Relaxed)
    );
    println!(
        "worker time by stage (s, summed over workers): decode {:.2}, fold {:.2}, identity {:.2}, collect {:.2}",
        st.decode, st.fold, st.identity, st.collect
    );
}
