//! The committed fuzz corpus (`fuzz/corpus/TARGET/*`: seeds, inputs the
//! fuzzer kept, and every crash found, fixed and kept as a regression)
//! replayed through the same `rdg::fuzzing` functions the fuzz targets
//! call, without a fuzz engine: what once crashed stays fixed.

use std::path::{Path, PathBuf};

/// A fuzz entry point.
type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("event", rdg::fuzzing::event),
    ("definitions", rdg::fuzzing::definitions),
    ("store_codec", rdg::fuzzing::store_codec),
    ("http", rdg::fuzzing::http),
];

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: Target) {
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    for file in &files {
        let data = std::fs::read(file).expect("read");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails (rerun: cargo test --test fuzz_corpus)",
            file.display()
        );
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn every_corpus_input_passes() {
    for (target, run) in TARGETS {
        replay(target, *run);
    }
}
