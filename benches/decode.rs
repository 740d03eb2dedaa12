//! Decoding alone, one thread: the fast path (`DataflowPlan::decode_into`)
//! against parsing into `serde_json::Value` and evaluating, on generated
//! events for the shipped definitions.
//!
//! cargo bench --bench decode -- [EVENTS]

use std::path::PathBuf;
use std::time::Instant;

use rdg::generate::{GenOptions, events};
use rdg::spec::{DecodeScratch, Decoded, Verdict};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let n: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let plan = rdg::spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows"))
        .expect("shipped definitions");
    let lines: Vec<(usize, Vec<u8>)> = events(&GenOptions {
        events: n,
        seed: 7,
        ..GenOptions::default()
    })
    .map(|(topic, _, line)| {
        let i = plan
            .dataflows
            .iter()
            .position(|d| d.topic == topic)
            .expect("topic");
        (i, line.into_bytes())
    })
    .collect();
    let mut scratch = DecodeScratch::default();
    let mut out = Decoded::default();
    let t = Instant::now();
    let mut ok = 0u64;
    for (i, line) in &lines {
        if plan.dataflows[*i].decode_into(line, &plan.identity, &mut scratch, &mut out)
            == Verdict::Event
        {
            ok += 1;
        }
    }
    let fast = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut ok2 = 0u64;
    for (i, line) in &lines {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
            && matches!(
                plan.dataflows[*i].evaluate(&v, &plan.identity),
                rdg::spec::Outcome::Event(_)
            )
        {
            ok2 += 1;
        }
    }
    let slow = t.elapsed().as_secs_f64();
    println!(
        "{} lines: fast {:.0} ns/line ({ok} events), Value {:.0} ns/line ({ok2} events)",
        lines.len(),
        fast * 1e9 / lines.len() as f64,
        slow * 1e9 / lines.len() as f64
    );
}
