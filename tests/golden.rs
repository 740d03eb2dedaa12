//! Golden test: the committed sample `data/*.jsonl`, replayed by the real
//! `rdg` binary with the shipped `dataflows/`, must export exactly
//! `tests/golden/export.jsonl`, byte for byte, with one worker, with two, and
//! when each file is split at its middle line into two successive replays
//! (the first a bulk load into an empty state, the second commits), on each
//! store engine: so the export is byte-identical whichever engine wrote it.
//!
//! Invariant: the golden file is only ever written on purpose. When it is
//! missing, or `RDG_BLESS=1` is set, the one-worker test writes it and
//! fails saying so; review the diff before committing it. A failing
//! comparison leaves the actual export under
//! `$CARGO_TARGET_TMPDIR/golden-actual-<case>.jsonl`.
//!
//! Split replays read part files named like the originals, whose line
//! numbers start again at 1, so there a dead letter of the second half
//! names `file:(line - middle)`: the expected export is the golden one with
//! those sources renumbered (and sorted again). Everything else is compared
//! unchanged.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::*;

fn golden_path() -> PathBuf {
    Path::new(MANIFEST).join("tests/golden/export.jsonl")
}

fn blessing() -> bool {
    std::env::var("RDG_BLESS").is_ok_and(|v| v == "1")
}

/// The golden export. Writes `actual` there and fails when it is missing or
/// `RDG_BLESS=1` and `may_bless`; fails without writing otherwise.
#[track_caller]
fn golden_or_bless(actual: &str, may_bless: bool) -> String {
    let path = golden_path();
    let missing = !path.exists();
    if may_bless && (missing || blessing()) {
        std::fs::create_dir_all(path.parent().expect("golden has a parent"))
            .expect("creating tests/golden");
        std::fs::write(&path, actual).expect("writing the golden file");
        panic!(
            "wrote the golden file {} ({} lines){}; review it, commit it, and run the tests again without RDG_BLESS",
            path.display(),
            actual.lines().count(),
            if missing {
                " because it was missing"
            } else {
                " because RDG_BLESS=1"
            }
        );
    }
    if blessing() {
        panic!(
            "RDG_BLESS=1: only `on_fjall::replay_with_one_worker_matches_golden` writes the golden file; run again without RDG_BLESS"
        );
    }
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the golden file {} ({e}); write it with `RDG_BLESS=1 cargo test --test golden`",
            path.display()
        )
    })
}

/// Fails with a line diff when `actual != expected`, keeping the actual
/// export for inspection.
#[track_caller]
fn assert_same_export(case: &str, expected: &str, actual: &str) {
    if expected == actual {
        return;
    }
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("golden-actual-{case}.jsonl"));
    let kept_msg = match std::fs::write(&kept, actual) {
        Ok(()) => format!("actual export kept in {}", kept.display()),
        Err(e) => format!("could not keep the actual export: {e}"),
    };
    let e: BTreeSet<&str> = expected.lines().collect();
    let a: BTreeSet<&str> = actual.lines().collect();
    let mut msg = format!(
        "case {case}: the export differs from the golden file ({} expected lines, {} actual)\n",
        expected.lines().count(),
        actual.lines().count()
    );
    for l in e.difference(&a).take(20) {
        let _ = writeln!(msg, "- {l}");
    }
    for l in a.difference(&e).take(20) {
        let _ = writeln!(msg, "+ {l}");
    }
    if e == a {
        msg.push_str("same set of lines: the order, duplicates or the final newline differ\n");
    }
    msg.push_str(&kept_msg);
    panic!("{msg}");
}

fn replay_with_one_worker_matches_golden(engine: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay_with(&["--engine", engine], &state, 1, &data_files());
    let actual = export(&state);
    let golden = golden_or_bless(&actual, engine == "fjall");
    assert_same_export(&format!("{engine}-workers-1"), &golden, &actual);
}

fn replay_with_two_workers_matches_golden(engine: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay_with(&["--engine", engine], &state, 2, &data_files());
    let actual = export(&state);
    let golden = golden_or_bless(&actual, false);
    assert_same_export(&format!("{engine}-workers-2"), &golden, &actual);
}

fn two_successive_replays_of_split_files_match_golden(engine: &str) {
    successive_replays_match_golden(engine, 2, 2);
}

/// Nine tenths first, then the rest on one worker: the second replay's
/// rebuild sends its one fold more loads than the fold applies at once
/// (`dataflow::fold`'s `LOAD_CHUNK`), so the loads are applied in chunks
/// as they arrive.
fn a_continue_whose_rebuild_is_applied_in_chunks_matches_golden(engine: &str) {
    successive_replays_match_golden(engine, 10, 1);
}

/// The data files split before their last `1 / parts` of lines, the first
/// part replayed into a new state with one worker, then the rest with
/// `workers`: the export is the golden one (dead letters of the second
/// part numbered from its own first line).
fn successive_replays_match_golden(engine: &str, parts: usize, workers: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    std::fs::create_dir_all(&first).expect("mkdir");
    std::fs::create_dir_all(&second).expect("mkdir");
    // File name -> number of lines in the first part.
    let mut middles: BTreeMap<String, usize> = BTreeMap::new();
    let (mut part1, mut part2) = (Vec::new(), Vec::new());
    for f in data_files() {
        let text = std::fs::read_to_string(&f).expect("reading data");
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let middle = lines.len() - lines.len() / parts;
        let name = f.file_name().expect("file name").to_owned();
        middles.insert(name.to_string_lossy().into_owned(), middle);
        let (p1, p2) = (first.join(&name), second.join(&name));
        std::fs::write(&p1, lines[..middle].concat()).expect("writing part 1");
        std::fs::write(&p2, lines[middle..].concat()).expect("writing part 2");
        part1.push(p1);
        part2.push(p2);
    }
    let state = tmp.path().join("state");
    replay_with(&["--engine", engine], &state, 1, &part1);
    replay_with(&["--engine", engine], &state, workers, &part2);
    let actual = export(&state);

    let golden = golden_or_bless(&actual, false);
    let mut expected: Vec<String> = golden
        .lines()
        .map(|l| renumber_dead_letter(l, &middles))
        .collect();
    expected.sort();
    let mut expected = expected.join("\n");
    expected.push('\n');
    assert_same_export(&format!("{engine}-split-{parts}"), &expected, &actual);
}

both_engines!(
    names:
    replay_with_one_worker_matches_golden,
    replay_with_two_workers_matches_golden,
    two_successive_replays_of_split_files_match_golden,
    a_continue_whose_rebuild_is_applied_in_chunks_matches_golden,
);

/// A bulk load large enough for fjall to write the folds' namespaces one
/// at a time while identity is computed (more than 8 MiB held:
/// `BulkLoad::held_final` and `write_early`, which its debug log reports),
/// each namespace written once, exports byte for byte what a sled load of
/// the same generated events exports (sled writes every namespace once, at
/// the end).
#[test]
fn a_bulk_load_that_writes_early_exports_what_sled_exports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = tmp.path().join("events");
    rdg([
        OsStr::new("gen"),
        OsStr::new("--events"),
        OsStr::new("60000"),
        OsStr::new("--seed"),
        OsStr::new("5"),
        OsStr::new("--out"),
        events.as_os_str(),
    ])
    .ok();
    let files: Vec<PathBuf> = ["playback", "gaming", "login"]
        .iter()
        .map(|t| events.join(format!("{t}.jsonl")))
        .collect();
    let (fjall, sled) = (tmp.path().join("fjall"), tmp.path().join("sled"));
    let out = command()
        .args(replay_args(&["--engine", "fjall"], &fjall, 2, &files))
        .env("RUST_LOG", "rdg::store::bulk=debug")
        .output()
        .expect("run rdg");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let early = log.matches("namespace written early").count();
    assert!(early >= 3, "namespaces written early: {early}\n{log}");
    // Nothing follows the folds' records into their namespaces, and a
    // namespace written early is not written again at the end: every
    // namespace is one run, with nothing to merge.
    assert!(
        log.contains("sorted runs merged namespaces=0"),
        "a namespace was written twice:\n{log}"
    );
    replay_with(&["--engine", "sled"], &sled, 2, &files);
    assert_same_export("fjall-early-vs-sled", &export(&sled), &export(&fjall));
}

/// A golden line as the split replay writes it: a dead letter from line `n`
/// past the middle `m` of its file names `file:(n - m)`.
fn renumber_dead_letter(line: &str, middles: &BTreeMap<String, usize>) -> String {
    if !line.starts_with(r#"{"ns":"dead_letter","#) {
        return line.to_string();
    }
    let v: Value = serde_json::from_str(line).expect("golden dead letter is JSON");
    let source = s(&v, "source");
    let (file, n) = source.rsplit_once(':').expect("source is file:line");
    let n: usize = n.parse().expect("line number");
    let middle = middles[file];
    if n <= middle {
        return line.to_string();
    }
    let old = format!(r#""source":"{source}""#);
    let new = format!(r#""source":"{file}:{}""#, n - middle);
    assert_eq!(line.matches(&old).count(), 1, "{line}");
    line.replace(&old, &new)
}

/// The golden file says what it should: every kind of line, sorted, the
/// dead letters exactly where the input is malformed, clusters that merge
/// several identifiers, hub flags consistent with the input.
#[test]
fn golden_file_content_is_plausible() {
    let Ok(text) = std::fs::read_to_string(golden_path()) else {
        panic!(
            "no golden file at {}; `replay_with_one_worker_matches_golden` writes it",
            golden_path().display()
        );
    };
    let raw: Vec<&str> = text.lines().collect();
    assert!(text.ends_with('\n'), "the export ends with a newline");
    if let Some(w) = raw.windows(2).find(|w| w[0] >= w[1]) {
        panic!(
            "not sorted bytewise or duplicated: {:?} then {:?}",
            w[0], w[1]
        );
    }
    let lines = parse_export(&text);
    for (l, v) in raw.iter().zip(&lines) {
        let prefix = match v["ns"].as_str() {
            Some("node") => r#"{"ns":"node","type":"#,
            Some("edge") => r#"{"ns":"edge","type":"#,
            Some("identity") => r#"{"ns":"identity","id":"#,
            Some("dead_letter") => r#"{"ns":"dead_letter","dataflow":"#,
            _ => panic!("unknown ns: {l}"),
        };
        assert!(l.starts_with(prefix), "key order: {l}");
    }

    // Every node and edge type of the shipped definitions is there.
    let types =
        |ns: &str| -> BTreeSet<&str> { of_ns(&lines, ns).iter().map(|v| s(v, "type")).collect() };
    assert_eq!(
        types("node"),
        [
            "account",
            "email",
            "game",
            "game_profile",
            "profile",
            "title"
        ]
        .into()
    );
    assert_eq!(
        types("edge"),
        [
            "has_email",
            "has_profile",
            "logged_in_from",
            "played",
            "plays_on",
            "used_device",
            "watched"
        ]
        .into()
    );
    for v in of_ns(&lines, "edge") {
        let (from, to) = (s(v, "from"), s(v, "to"));
        assert!(from.contains(':') && to.contains(':'), "{v}");
        assert!(
            i(v, "count") >= 1 && i(v, "first_seen") <= i(v, "last_seen"),
            "{v}"
        );
    }

    // Dead letters: exactly the malformed lines, found independently, with
    // a reason naming what is wrong.
    let data = read_data();
    let mut expected_dead: BTreeMap<String, (&str, Bad)> = BTreeMap::new();
    for (topic, text) in &data {
        for (n, kind) in classify_file(topic, text) {
            if let LineKind::Dead(bad) = kind {
                expected_dead.insert(format!("{topic}.jsonl:{n}"), (topic, bad));
            }
        }
    }
    assert!(!expected_dead.is_empty(), "the sample has malformed lines");
    let dead = of_ns(&lines, "dead_letter");
    let got: BTreeSet<&str> = dead.iter().map(|v| s(v, "source")).collect();
    let want: BTreeSet<&str> = expected_dead.keys().map(String::as_str).collect();
    assert_eq!(got, want, "dead-letter sources");
    assert_eq!(dead.len(), want.len(), "one dead letter per malformed line");
    for v in &dead {
        let (topic, bad) = &expected_dead[s(v, "source")];
        assert_eq!(s(v, "dataflow"), *topic, "{v}");
        let reason = s(v, "reason");
        let named = match bad {
            Bad::NotJson => reason.starts_with("not JSON"),
            Bad::NotObject => reason.contains("not a JSON object"),
            Bad::Time(f) | Bad::Id(f) => reason.contains(&format!("`{f}`")),
        };
        assert!(named, "reason of {v} does not say {bad:?}");
    }

    // Identity: a cluster id is a member of its own cluster, hubs are their
    // own cluster, and some clusters merge several identifiers.
    let identity = of_ns(&lines, "identity");
    let cluster_of: BTreeMap<&str, &str> = identity
        .iter()
        .map(|v| (s(v, "id"), s(v, "cluster")))
        .collect();
    let mut members: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &identity {
        let (id, cluster) = (s(v, "id"), s(v, "cluster"));
        if v["hub"] == true {
            assert_eq!(id, cluster, "a hub is its own cluster: {v}");
        } else {
            assert_eq!(v["hub"], false, "{v}");
            assert_eq!(
                cluster_of.get(cluster),
                Some(&cluster),
                "cluster id is a member: {v}"
            );
            *members.entry(cluster).or_default() += 1;
        }
    }
    let big = members.values().filter(|n| **n >= 3).count();
    assert!(big >= 10, "only {big} clusters with 3 or more members");
    assert!(
        identity.iter().any(|v| s(v, "id").starts_with("email:")),
        "emails are stitched"
    );

    // Hub flags against an independent upper bound of the neighbours: an
    // identifier linked to at most max_links others can never be a hub, and
    // a hub must have been linked to more than that.
    let bound = neighbour_upper_bound(&data);
    let shared: Vec<&str> = identity
        .iter()
        .map(|v| s(v, "id"))
        .filter(|id| id.starts_with("device:dev-shared-"))
        .collect();
    assert!(
        !shared.is_empty(),
        "the shared devices have identity entries"
    );
    for v in &identity {
        let id = s(v, "id");
        let ty = id.split(':').next().unwrap_or_default();
        let n = bound.get(id).map_or(0, BTreeSet::len);
        assert!(n > 0, "{id} has an identity entry but no link in the input");
        if v["hub"] == true {
            assert!(
                n > max_links(ty),
                "{id} is a hub with at most {n} neighbours"
            );
        }
    }
    let hubs: Vec<&str> = identity
        .iter()
        .filter(|v| v["hub"] == true)
        .map(|v| s(v, "id"))
        .collect();
    // With `--events 3000 --seed 42` the shared device has 18 neighbours at
    // most (see data/README.md), so there is no hub in this sample; the
    // shared device then merges many identifiers into one cluster.
    let shared_bound = bound.get("device:dev-shared-0").map_or(0, BTreeSet::len);
    assert!(
        shared_bound <= max_links("device"),
        "dev-shared-0 has {shared_bound} neighbours at most; update data/README.md and this test"
    );
    assert!(hubs.is_empty(), "hubs {hubs:?}");
    let c = cluster_of["device:dev-shared-0"];
    assert!(
        members[c] >= 20,
        "the shared device's cluster {c} has {} members",
        members[c]
    );
}
