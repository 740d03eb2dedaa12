//! Damaged state directories, on both engines, through the real binary: a
//! file of the engine truncated, zero-filled or replaced by a foreign file,
//! a file deleted, the engine marker garbled, fjall's journal zeroed in the
//! middle, and a state of another format version (rdg's own, and the
//! engine's). Every command that opens a state
//! (`export`, `query`, `replay` continuing it, `serve`) must either refuse
//! it — exit non-zero, a message naming the state directory, no panic — or
//! answer exactly what the intact state answers. Never a wrong answer, and
//! never a damaged state silently reopened as a new, empty one.
//!
//! And replays killed (SIGKILL) part-way, on both engines: a bulk load into
//! an empty state leaves a state that opens, empty (then the same replay
//! again gives what an uninterrupted one gives) or holding the whole load if
//! it had finished; a replay continuing a fjall state leaves the state before
//! it (then the same replay again completes it) or after it; one continuing
//! a sled state leaves a state that opens (a prefix, which files carry no
//! position to resume: `docs/reliability.md`). A continue's commit of 8 MiB
//! or more, ingested behind its redo file, is killed by
//! `scripts/crash-continue.sh` (its events are too many for a debug build).

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// How a case damages a copy of the state.
type Damage = fn(&Path);

/// What every case of one engine starts from: the sample replayed, its
/// export, the answer to one node query, and the export after one more
/// replay continuing it.
struct Intact {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    export: String,
    node: String,
    continued: String,
}

fn intact(engine: &str) -> Intact {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay_with(&["--engine", engine], &state, 1, &data_files());
    let export = support::export(&state);
    assert!(export.lines().count() > 1000, "the sample exports a graph");
    let node = node_query(&state).ok().to_string();
    let more = tmp.path().join("continued");
    copy_dir(&state, &more);
    rdg(continue_args(&more)).ok();
    let continued = support::export(&more);
    Intact {
        _tmp: tmp,
        state,
        export,
        node,
        continued,
    }
}

/// `rdg replay` of one more file, continuing the state.
fn continue_args(state: &Path) -> Vec<OsString> {
    replay_args(&[], state, 1, &[data_dir().join("login.jsonl")])
}

fn node_query(state: &Path) -> Run {
    rdg([
        OsString::from("query"),
        "--state".into(),
        state.into(),
        "node".into(),
        "account".into(),
        "acc0".into(),
    ])
}

/// Copies a state directory (files only, recursively).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The largest table file of the fjall database (where the bulk load put
/// the sample).
fn largest_table(state: &Path) -> PathBuf {
    support::store::files_under(&state.join("fjall/keyspaces"))
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("tables")))
        .max_by_key(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .unwrap_or_else(|| panic!("no table file under {}", state.display()))
}

fn truncate_to(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
}

fn zero_fill(path: &Path) {
    let len = std::fs::metadata(path).expect("metadata").len();
    std::fs::write(path, vec![0u8; len as usize]).expect("zero-fill");
}

/// Zeroes `len` bytes at `offset`, keeping the rest.
fn zero_range(path: &Path, offset: usize, len: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    assert!(
        bytes.len() > offset + len,
        "{} is too short",
        path.display()
    );
    bytes[offset..offset + len].fill(0);
    std::fs::write(path, bytes).expect("write");
}

/// A file that belongs to nobody's database.
fn foreign(path: &Path) {
    std::fs::copy(Path::new(MANIFEST).join("Cargo.toml"), path).expect("copy a foreign file");
}

fn journal(state: &Path) -> PathBuf {
    let j = state.join("fjall/0.jnl");
    assert!(j.exists(), "fjall's first journal is {}", j.display());
    j
}

const FJALL_CASES: &[(&str, Damage)] = &[
    ("table truncated", |s| truncate_to(&largest_table(s), 1000)),
    ("table emptied", |s| truncate_to(&largest_table(s), 0)),
    ("table zero-filled", |s| zero_fill(&largest_table(s))),
    ("table replaced by a foreign file", |s| {
        foreign(&largest_table(s))
    }),
    ("journal zero-filled", |s| zero_fill(&journal(s))),
    ("journal replaced by a foreign file", |s| {
        foreign(&journal(s))
    }),
    ("journal deleted", |s| {
        std::fs::remove_file(journal(s)).expect("rm")
    }),
    ("every keyspace deleted", |s| {
        std::fs::remove_dir_all(s.join("fjall/keyspaces")).expect("rm")
    }),
    ("fjall's version file of another version", |s| {
        std::fs::write(s.join("fjall/version"), b"FJL\x09").expect("write")
    }),
    ("fjall's version file foreign", |s| {
        foreign(&s.join("fjall/version"))
    }),
    ("engine marker garbled", |s| {
        std::fs::write(s.join("rdg-engine"), b"\x00\x00garbage").expect("write")
    }),
];

const SLED_CASES: &[(&str, Damage)] = &[
    ("db truncated", |s| truncate_to(&s.join("db"), 1000)),
    ("db emptied", |s| truncate_to(&s.join("db"), 0)),
    ("db zero-filled", |s| zero_fill(&s.join("db"))),
    ("db zeroed in the middle", |s| {
        zero_range(&s.join("db"), 400_000, 200_000)
    }),
    ("db replaced by a foreign file", |s| foreign(&s.join("db"))),
    ("db deleted", |s| {
        std::fs::remove_file(s.join("db")).expect("rm")
    }),
    ("conf zero-filled", |s| zero_fill(&s.join("conf"))),
    ("conf replaced by a foreign file", |s| {
        foreign(&s.join("conf"))
    }),
    ("engine marker garbled", |s| {
        std::fs::write(s.join("rdg-engine"), b"\x00\x00garbage").expect("write")
    }),
];

/// Cases in which the damage is found when the state is opened, so every
/// command refuses it with "is damaged" (or the marker's own message).
/// Others (sled reads pages lazily) may fail later, on the read that meets
/// the damage.
fn refused_at_open(case: &str) -> bool {
    case != "db zeroed in the middle"
}

/// The checks every command's run must pass on a damaged state: refused
/// (non-zero, naming the state, no panic shown: neither Rust's own message nor
/// rdg's hook's "a thread stopped") or the intact answer.
#[track_caller]
fn refused_or_right(case: &str, what: &str, run: &Run, state: &Path, right: Option<&str>) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("a thread stopped"),
        "{case}: {what} panicked\n{}",
        run.describe()
    );
    if run.code == Some(0) {
        let right = right.unwrap_or_else(|| {
            panic!(
                "{case}: {what} accepted a damaged state\n{}",
                run.describe()
            )
        });
        assert!(
            run.stdout == right,
            "{case}: {what} answered from a damaged state, and wrongly\n{}",
            run.describe()
        );
        return;
    }
    assert_eq!(run.code, Some(2), "{case}: {what}\n{}", run.describe());
    assert!(
        run.stderr.contains(&state.display().to_string()),
        "{case}: {what}'s error does not name the state directory\n{}",
        run.describe()
    );
    if refused_at_open(case) {
        assert!(
            run.stderr.contains("is damaged") || run.stderr.contains("unknown store engine"),
            "{case}: {what}'s error does not say the state is damaged\n{}",
            run.describe()
        );
    }
}

/// `rdg serve` on the damaged state: exits non-zero by itself when the
/// damage is found at open; otherwise it is stopped (its answers are the
/// query's, checked above).
fn serve_refuses(case: &str, state: &Path) {
    let child = command()
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rdg serve");
    let (status, stderr) = wait_exit(child, Duration::from_secs(60));
    assert!(
        !status.success() && !stderr.contains("panicked") && !stderr.contains("a thread stopped"),
        "{case}: rdg serve on a damaged state: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("is damaged") || stderr.contains("unknown store engine"),
        "{case}: rdg serve: {stderr}"
    );
}

fn damaged_states_are_refused(engine: &str) {
    let intact = intact(engine);
    let cases = if engine == "sled" {
        SLED_CASES
    } else {
        FJALL_CASES
    };
    for (case, damage) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("damaged");
        copy_dir(&intact.state, &state);
        damage(&state);
        eprintln!("{engine}: {case}");

        let export = rdg([OsString::from("export"), "--state".into(), (&state).into()]);
        refused_or_right(case, "export", &export, &state, Some(&intact.export));
        let node = node_query(&state);
        refused_or_right(case, "query", &node, &state, Some(&intact.node));
        let replay = rdg(continue_args(&state));
        if replay.code == Some(0) && export.code == Some(0) {
            // The damage missed every live page (sled reads lazily, and
            // stale log segments hold nothing live): the export read the
            // whole state and answered right, so the replay must too.
            assert_eq!(
                support::export(&state),
                intact.continued,
                "{case}: a replay continuing a damaged state answered wrongly\n{}",
                replay.describe()
            );
        } else {
            // Otherwise it has no right answer: refused.
            refused_or_right(case, "replay", &replay, &state, None);
        }
        if refused_at_open(case) {
            serve_refuses(case, &state);
        }
    }
}

/// The state's `meta` format version rewritten to 99, with the engine
/// itself.
fn set_format_version(state: &Path, engine: &str, version: u64) {
    let key = rdg::store::codec::encode(&["format"]);
    if engine == "sled" {
        let db = sled::open(state).expect("open with sled");
        let meta = db.open_tree("meta").expect("meta tree");
        meta.insert(key, &version.to_be_bytes()).expect("insert");
        db.flush().expect("flush");
    } else {
        let db = fjall::Database::builder(state.join("fjall"))
            .open()
            .expect("open with fjall");
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .expect("meta keyspace");
        meta.insert(key, version.to_be_bytes()).expect("insert");
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
}

fn another_format_version_is_refused(engine: &str) {
    let intact = intact(engine);
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("v99");
    copy_dir(&intact.state, &state);
    set_format_version(&state, engine, 99);
    let expected = format!(
        "state directory {} has format version 99, but this rdg reads version {}",
        state.display(),
        rdg::store::FORMAT_VERSION
    );
    every_command_refuses(&state, &expected);
}

/// `export`, `query` and a `replay` continuing `state` each exit 2 with
/// nothing on stdout and `expected` in the error, without a panic.
fn every_command_refuses(state: &Path, expected: &str) {
    for args in [
        vec!["export"],
        vec!["query", "node", "account", "acc0"],
        vec!["replay", "data/login.jsonl"],
    ] {
        let mut all: Vec<OsString> = vec![args[0].into(), "--state".into(), state.into()];
        all.extend(args[1..].iter().map(OsString::from));
        let run = rdg(all);
        run.expect_code(2);
        assert_eq!(run.stdout, "", "{}", run.describe());
        assert!(
            run.stderr.contains(expected) && !run.stderr.contains("panicked"),
            "{}",
            run.describe()
        );
    }
}

/// A journal damaged in the middle: fjall's recovery cuts it short at the
/// first bad batch without an error, so the engine opens with fewer commits
/// than its last flush made durable, which `rdg-durable` recorded: every
/// command refuses the state, saying how many commits were lost.
#[test]
fn fjall_journal_damaged_in_the_middle_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    // A bulk load of one file, then two replays that continue it with
    // commits, which go through the journal.
    let files = data_files();
    for file in &files {
        replay_with(
            &["--engine", "fjall"],
            &state,
            1,
            std::slice::from_ref(file),
        );
    }
    let durable = std::fs::read_to_string(state.join("rdg-durable")).expect("rdg-durable");
    let durable: u64 = durable.trim().parse().expect("a number of commits");
    assert!(durable >= 3, "three replays flushed {durable} commits");
    let journal = journal(&state);
    let len = std::fs::metadata(&journal).expect("metadata").len() as usize;
    assert!(len > 10_000, "the journal holds the commits ({len} bytes)");
    zero_range(&journal, len / 2, 64);

    let expected = format!(
        "state directory {} is damaged: its last flush made {durable} commits durable, but its fjall database holds ",
        state.display()
    );
    every_command_refuses(&state, &expected);
    serve_refuses("journal zeroed in the middle", &state);
}

/// Events in each replay a kill test interrupts: a debug build replays them
/// in one to three seconds.
const KILL_EVENTS: u64 = 8_000;

/// When a replay is killed, as shares of the time the same replay takes
/// uninterrupted (reading, then the end's encoding and writing).
const KILL_AT: [f64; 3] = [0.3, 0.6, 0.9];

/// Generated events (deletes included) written to `dir`; the files.
fn generated(dir: &Path, seed: u64) -> Vec<PathBuf> {
    let opts = rdg::generate::GenOptions {
        seed,
        ..gen_opts(KILL_EVENTS, true)
    };
    rdg::generate::generate(&opts, dir).expect("generate");
    ["playback", "gaming", "login"]
        .iter()
        .map(|t| dir.join(format!("{t}.jsonl")))
        .collect()
}

/// Runs `rdg ARGS` to its end (it must succeed); how long it took.
fn timed(args: &[OsString]) -> Duration {
    let start = Instant::now();
    rdg(args).ok();
    start.elapsed()
}

/// Runs `rdg ARGS` and kills it (SIGKILL) once `after` has passed, unless
/// it ended before (then it must have succeeded).
fn kill_after(args: &[OsString], after: Duration) {
    let mut child = command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rdg");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "{args:?} ended before its kill: {status}");
            return;
        }
        if start.elapsed() >= after {
            child.kill().expect("kill");
            child.wait().expect("wait");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `rdg export` of a state a killed replay left: it must open (a killed
/// replay is not damage) and export.
#[track_caller]
fn export_after_kill(state: &Path, what: &str) -> String {
    let run = rdg([OsString::from("export"), "--state".into(), state.into()]);
    assert_eq!(
        run.code,
        Some(0),
        "{what}: the state a killed replay left does not open\n{}",
        run.describe()
    );
    run.stdout
}

fn replays_killed_part_way_leave_the_documented_state(engine: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = generated(&tmp.path().join("first"), 21);
    let second = generated(&tmp.path().join("second"), 22);
    let load = |state: &Path| replay_args(&["--engine", engine], state, 2, &first);
    let more = |state: &Path| replay_args(&[], state, 2, &second);

    // The uninterrupted replays: a bulk load, then a replay continuing it.
    let loaded = tmp.path().join("loaded");
    let load_time = timed(&load(&loaded));
    let loaded_export = support::export(&loaded);
    assert!(
        loaded_export.lines().count() > 1000,
        "the load exports a graph"
    );
    let continued = tmp.path().join("continued");
    copy_dir(&loaded, &continued);
    let more_time = timed(&more(&continued));
    let continued_export = support::export(&continued);
    assert_ne!(
        continued_export, loaded_export,
        "the second replay changes the graph"
    );

    for (n, share) in KILL_AT.iter().enumerate() {
        // A bulk load killed: the state opens empty, or holds the whole
        // load if the kill came after its end.
        let state = tmp.path().join(format!("load-{n}"));
        kill_after(&load(&state), load_time.mul_f64(*share));
        let what = format!("{engine}: a bulk load killed at {share} of its time");
        let after = export_after_kill(&state, &what);
        eprintln!("{what}: {} lines", after.lines().count());
        if after.is_empty() {
            rdg(load(&state)).ok();
            assert_eq!(
                support::export(&state),
                loaded_export,
                "{what}, then replayed"
            );
        } else {
            assert!(
                after == loaded_export,
                "{what}: the state holds {} lines, neither none nor the load's {}",
                after.lines().count(),
                loaded_export.lines().count()
            );
        }

        // A replay continuing a state killed: fjall's one commit leaves the
        // state before or after it; sled's commits leave a prefix.
        let state = tmp.path().join(format!("more-{n}"));
        copy_dir(&loaded, &state);
        kill_after(&more(&state), more_time.mul_f64(*share));
        let what = format!("{engine}: a continuing replay killed at {share} of its time");
        let after = export_after_kill(&state, &what);
        let left = match &after {
            a if *a == loaded_export => "the state before it",
            a if *a == continued_export => "the state after it",
            _ => "a prefix",
        };
        eprintln!("{what}: {left}");
        if engine == "fjall" && after == loaded_export {
            rdg(more(&state)).ok();
            assert_eq!(
                support::export(&state),
                continued_export,
                "{what}, then replayed"
            );
        } else if engine == "fjall" {
            assert!(
                after == continued_export,
                "{what}: the state is neither the one before the replay nor the one after"
            );
        }
    }
}

both_engines!(
    names: damaged_states_are_refused,
    another_format_version_is_refused,
    replays_killed_part_way_leave_the_documented_state,
);
