//! Oracle test: seeded random events for the fixture in
//! `tests/fixtures/oracle/` are replayed by the real `rdg` binary, and its
//! export must equal what the independent sequential model
//! (`tests/oracle/model.rs`) computes from the same lines.
//!
//! Invariant: the only thing shared with rdg is the input files; the model
//! never calls rdg's library. Dead letters are compared on (dataflow, source)
//! only, since the reason text is rdg's; when the input is split into several
//! replays the sources name part files whose line numbers can repeat, so
//! there the distinct (dataflow, source) pairs are compared.
//!
//! `RDG_ORACLE_SEEDS=N` changes the number of seeds per test (default 20).
//! A failing case leaves its inputs, expected and actual exports under
//! `$CARGO_TARGET_TMPDIR/oracle-failures/<case>/`.

#[path = "oracle/inputs.rs"]
mod inputs;
#[path = "oracle/model.rs"]
mod model;
mod support;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use inputs::Run;
use model::Model;
use support::{MANIFEST, graph_counts, rdg_result, summary_counts};

/// Lines per seed, over the three topics.
const EVENTS: usize = 300;

fn seeds() -> u64 {
    std::env::var("RDG_ORACLE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn fixture() -> PathBuf {
    Path::new(MANIFEST).join("tests/fixtures/oracle")
}

/// Writes a run's non-empty files as `<dir>/<topic>.jsonl`.
fn write_run(dir: &Path, run: &Run) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for (topic, lines) in run {
        if lines.is_empty() {
            continue;
        }
        let path = dir.join(format!("{topic}.jsonl"));
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

/// One check: successive replays (each with its number of workers) into one
/// fresh state of store engine `engine`, then one export.
struct Case {
    name: String,
    seed: u64,
    runs: Vec<(Run, usize)>,
    engine: &'static str,
}

impl Case {
    fn check(&self) -> Result<(), String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let state = tmp.path().join("state");
        let mut model = Model::new();
        for (i, (run, workers)) in self.runs.iter().enumerate() {
            let files = write_run(&tmp.path().join(format!("run{i}")), run)?;
            if files.is_empty() {
                // Every topic's part is empty: nothing to replay.
                continue;
            }
            let mut args: Vec<OsString> = vec![
                "replay".into(),
                "--engine".into(),
                self.engine.into(),
                "--dataflows".into(),
                fixture().into(),
                "--state".into(),
                state.clone().into(),
                "--workers".into(),
                workers.to_string().into(),
            ];
            // Small batches for odd seeds: many times per topic, decoded by
            // several workers, whose watermarks must carry over in order.
            if self.seed % 2 == 1 {
                args.push("--batch".into());
                args.push((3 + self.seed % 29).to_string().into());
            }
            args.push("--json".into());
            args.extend(files.into_iter().map(OsString::from));
            let summary = rdg_result(args)?;
            let refs: Vec<(&str, &[String])> =
                run.iter().map(|(t, l)| (*t, l.as_slice())).collect();
            model.replay(&refs);
            self.check_counts(i, &summary, &model)?;
        }
        let actual = rdg_result(vec!["export".into(), "--state".into(), state.into()])?;
        let actual: Vec<String> = actual.lines().map(str::to_string).collect();
        let split = self.runs.len() > 1;
        let expected = comparable_expected(&model, split);
        let (got, unsorted) = comparable_actual(&actual, split);
        if expected == got && unsorted.is_none() {
            return Ok(());
        }
        let mut msg = format!(
            "case {} (seed {}, workers {:?}): the export differs from the model\n",
            self.name,
            self.seed,
            self.runs.iter().map(|(_, w)| *w).collect::<Vec<_>>()
        );
        if let Some(u) = unsorted {
            let _ = writeln!(msg, "the export is not sorted bytewise: {u}");
        }
        msg.push_str(&diff(&expected, &got));
        let _ = writeln!(msg, "{}", self.save(&model, &actual));
        Err(msg)
    }

    /// The sizes the summary of replay `i` reports (after a bulk load, the
    /// collectors' tally; after the others, a scan of the store) against
    /// the model's graph at that point.
    fn check_counts(&self, i: usize, summary: &str, model: &Model) -> Result<(), String> {
        let got = summary_counts(summary).map_err(|e| format!("replay {i}: {e}"))?;
        let lines = model.graph_lines();
        let expected = graph_counts(lines.iter().map(String::as_str)).map(Some);
        if got == expected {
            return Ok(());
        }
        Err(format!(
            "case {} (seed {}), replay {i}: the summary counts nodes, edges, identifiers, clusters {got:?}, the model {expected:?}",
            self.name, self.seed
        ))
    }

    /// Keeps a failing case's inputs and exports; says where.
    fn save(&self, model: &Model, actual: &[String]) -> String {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("oracle-failures")
            .join(&self.name);
        let _ = std::fs::remove_dir_all(&dir);
        for (i, (run, _)) in self.runs.iter().enumerate() {
            if let Err(e) = write_run(&dir.join(format!("run{i}")), run) {
                return format!("could not save the inputs: {e}");
            }
        }
        let mut expected = model.graph_lines();
        expected.extend(model.dead_letter_prefixes());
        expected.sort();
        let written = std::fs::write(dir.join("expected.jsonl"), expected.join("\n") + "\n")
            .and_then(|_| std::fs::write(dir.join("actual.jsonl"), actual.join("\n") + "\n"));
        match written {
            Ok(()) => format!(
                "inputs (run*/), expected.jsonl (dead letters without reason) and actual.jsonl in {}",
                dir.display()
            ),
            Err(e) => format!("could not save the exports: {e}"),
        }
    }
}

/// An export in comparable form: the node, edge and identity lines, and
/// the dead letters cut before their reason; each sorted.
#[derive(Debug, PartialEq)]
struct Comparable {
    graph: Vec<String>,
    dead: Vec<String>,
}

/// The model's export in comparable form (dead letters deduplicated when
/// `split`).
fn comparable_expected(model: &Model, split: bool) -> Comparable {
    let mut dead = model.dead_letter_prefixes();
    if split {
        dead.dedup();
    }
    Comparable {
        graph: model.graph_lines(),
        dead,
    }
}

/// The actual export in comparable form (a dead-letter line is cut before
/// `,"reason":`), and the first pair of lines out of bytewise order if any.
fn comparable_actual(lines: &[String], split: bool) -> (Comparable, Option<String>) {
    let unsorted = lines
        .windows(2)
        .find(|w| w[0] > w[1])
        .map(|w| format!("{:?} before {:?}", w[0], w[1]));
    let dead_prefix = "{\"ns\":\"dead_letter\",";
    let mut graph: Vec<String> = Vec::new();
    let mut dead: Vec<String> = Vec::new();
    for l in lines {
        if !l.starts_with(dead_prefix) {
            graph.push(l.clone());
            continue;
        }
        // Keep the line whole (so it shows up in the diff) unless it is
        // valid JSON with a string reason as its last key.
        let valid = serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .is_some_and(|v| v.get("reason").is_some_and(|r| r.is_string()));
        match l.find(",\"reason\":") {
            Some(i) if valid => dead.push(l[..i].to_string()),
            _ => dead.push(l.clone()),
        }
    }
    graph.sort();
    dead.sort();
    if split {
        dead.dedup();
    }
    (Comparable { graph, dead }, unsorted)
}

/// The graph lines only expected (-) and only actual (+), the first 20 of
/// each, then the same for dead letters.
fn diff(expected: &Comparable, actual: &Comparable) -> String {
    let mut out = String::new();
    for (what, e, a) in [
        ("graph", &expected.graph, &actual.graph),
        ("dead-letter", &expected.dead, &actual.dead),
    ] {
        let (missing, unexpected) = sorted_difference(e, a);
        if missing.is_empty() && unexpected.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{what} lines: {} expected, {} actual; {} missing (-), {} unexpected (+)",
            e.len(),
            a.len(),
            missing.len(),
            unexpected.len()
        );
        for l in missing.iter().take(20) {
            let _ = writeln!(out, "- {l}");
        }
        for l in unexpected.iter().take(20) {
            let _ = writeln!(out, "+ {l}");
        }
    }
    out
}

/// Lines of sorted `e` not in sorted `a`, and of `a` not in `e` (multisets).
fn sorted_difference<'l>(e: &'l [String], a: &'l [String]) -> (Vec<&'l str>, Vec<&'l str>) {
    let (mut missing, mut unexpected) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (e.get(i), a.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                missing.push(x.as_str());
                i += 1;
            }
            (Some(x), None) => {
                missing.push(x.as_str());
                i += 1;
            }
            (_, Some(y)) => {
                unexpected.push(y.as_str());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (missing, unexpected)
}

/// Runs every case and fails with the first few reports.
fn check_all(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(e) = case.check() {
            failures.push((case.name.clone(), e));
        }
    }
    if failures.is_empty() {
        return;
    }
    let names: Vec<&str> = failures.iter().map(|(n, _)| n.as_str()).collect();
    let mut msg = format!(
        "{} of {} cases failed: {}\n\n",
        failures.len(),
        cases.len(),
        names.join(", ")
    );
    for (_, e) in failures.iter().take(3) {
        msg.push_str(e);
        msg.push('\n');
    }
    panic!("{msg}");
}

fn single_replays(workers: usize, seeds: u64, engine: &'static str) -> Vec<Case> {
    (0..seeds)
        .map(|seed| Case {
            name: format!("{engine}-w{workers}-seed{seed}"),
            seed,
            runs: vec![(inputs::generate(seed, EVENTS), workers)],
            engine,
        })
        .collect()
}

#[test]
fn replay_with_one_worker_matches_the_model() {
    check_all(single_replays(1, seeds(), "fjall"));
}

#[test]
fn replay_with_two_workers_matches_the_model() {
    check_all(single_replays(2, seeds(), "fjall"));
}

/// The sled engine on a quarter of the seeds (the store model tests cover
/// it fully).
#[test]
fn replay_with_two_workers_on_sled_matches_the_model() {
    check_all(single_replays(2, seeds().div_ceil(4), "sled"));
}

#[test]
fn successive_replays_into_one_state_match_the_model() {
    check_all(successive_replays(seeds().div_ceil(2), "fjall"));
}

#[test]
fn successive_replays_on_sled_match_the_model() {
    check_all(successive_replays(seeds().div_ceil(4), "sled"));
}

fn successive_replays(seeds: u64, engine: &'static str) -> Vec<Case> {
    (0..seeds)
        .map(|seed| {
            let parts = 2 + (seed % 2) as usize;
            let runs = inputs::split(&inputs::generate(seed, EVENTS), parts, seed)
                .into_iter()
                .enumerate()
                .map(|(i, run)| (run, 1 + (i + seed as usize) % 2))
                .collect();
            Case {
                name: format!("{engine}-split{parts}-seed{seed}"),
                seed,
                runs,
                engine,
            }
        })
        .collect()
}

#[test]
fn generated_inputs_exercise_every_corner() {
    // The inputs are only useful if the model sees all of these happen.
    let mut totals: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    let (mut dead, mut lines) = (0usize, 0usize);
    let mut hubs = 0usize;
    let mut multi_clusters = 0usize;
    for seed in 0..seeds() {
        let run = inputs::generate(seed, EVENTS);
        assert_eq!(run, inputs::generate(seed, EVENTS), "deterministic");
        let mut m = Model::new();
        let refs: Vec<(&str, &[String])> = run.iter().map(|(t, l)| (*t, l.as_slice())).collect();
        m.replay(&refs);
        for (name, df) in &m.dataflows {
            let t = totals.entry(name).or_default();
            t.0 += df.events;
            t.1 += df.late;
        }
        dead += m.dead.len();
        lines += run.iter().map(|(_, l)| l.len()).sum::<usize>();
        let graph = m.graph_lines();
        hubs += graph
            .iter()
            .filter(|l| l.ends_with("\"hub\":true}"))
            .count();
        let clusters: std::collections::BTreeMap<String, usize> = graph
            .iter()
            .filter(|l| l.ends_with("\"hub\":false}"))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .fold(Default::default(), |mut acc, v| {
                *acc.entry(v["cluster"].to_string()).or_default() += 1;
                acc
            });
        multi_clusters += clusters.values().filter(|n| **n > 1).count();
        // Split replays see the same events.
        let parts = inputs::split(&run, 3, seed);
        for (topic, lines) in &run {
            let joined: Vec<String> = parts
                .iter()
                .flat_map(|p| p.iter().filter(|(t, _)| t == topic))
                .flat_map(|(_, l)| l.clone())
                .collect();
            assert_eq!(&joined, lines);
        }
    }
    let late: u64 = totals.values().map(|(_, late)| late).sum();
    assert!(
        dead * 100 > lines * 3 && dead * 100 < lines * 20,
        "{dead} of {lines}"
    );
    assert!(late > 100, "late {late}");
    assert!(hubs > 5, "hubs {hubs}");
    assert!(multi_clusters > 5, "clusters {multi_clusters}");
    for (name, (events, _)) in &totals {
        assert!(*events > 0, "{name}");
    }
}

#[test]
fn comparison_ignores_only_the_reason_of_dead_letters() {
    let run = inputs::generate(0, EVENTS);
    let mut model = Model::new();
    let refs: Vec<(&str, &[String])> = run.iter().map(|(t, l)| (*t, l.as_slice())).collect();
    model.replay(&refs);
    assert!(!model.dead.is_empty());
    let render = |reason: &str| {
        let mut lines = model.graph_lines();
        lines.extend(model.dead.iter().map(|(d, s)| {
            format!(
                "{},\"reason\":{}}}",
                model::dead_letter_prefix(d, s),
                model::js(reason)
            )
        }));
        lines.sort();
        lines
    };
    let expected = comparable_expected(&model, false);
    let (actual, unsorted) = comparable_actual(&render("field `x` is \"bad\", really"), false);
    assert_eq!(unsorted, None);
    assert_eq!(actual, expected);
    // Any other change shows up, with the line in the diff.
    let mut lines = render("r");
    let edge = lines
        .iter()
        .position(|l| l.starts_with("{\"ns\":\"edge\""))
        .expect("an edge");
    let changed = lines[edge].replacen("\"count\":", "\"count\":1", 1);
    lines[edge] = changed.clone();
    lines.swap(1, 2);
    let (actual, unsorted) = comparable_actual(&lines, false);
    assert!(unsorted.is_some());
    assert_ne!(actual, expected);
    assert!(diff(&expected, &actual).contains(&format!("+ {changed}")));
    let mut lines = render("r");
    lines.retain(|l| !l.starts_with("{\"ns\":\"dead_letter\",\"dataflow\":\"views\""));
    let (actual, _) = comparable_actual(&lines, false);
    assert!(diff(&expected, &actual).contains("dead-letter lines"));
}
