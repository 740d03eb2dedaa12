//! A full disk under the state, on both engines, through the real binary:
//! the state lives on a small tmpfs of the test's own while `rdg replay`
//! (a bulk load into an empty state, or a replay continuing a state) and
//! `rdg run` (commits from Kafka) write. rdg must stop by itself with an
//! error that names the state directory and the cause, exit non-zero and
//! not panic; once space is freed (the file system grown), a restart must
//! continue and end with the export of an uninterrupted run.
//!
//! Needs root (mount); without it each test says `SKIPPED` on stderr.

mod support;

use std::path::Path;

use rdg::store::Engine;
use support::*;

const EVENTS: u64 = 3000;

fn engine_of(name: &str) -> Engine {
    name.parse().expect("engine name")
}

/// Checks how a process that ran out of space stopped.
#[track_caller]
fn stopped_for_lack_of_space(what: &str, code: Option<i32>, stderr: &str, state: &Path) {
    assert!(
        !stderr.contains("panicked"),
        "{what} panicked on a full disk:\n{stderr}"
    );
    assert!(
        code.is_some_and(|c| c != 0),
        "{what} on a full disk exited with {code:?}:\n{stderr}"
    );
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{what}: no `error:` line on stderr:\n{stderr}"));
    assert!(
        last.contains(&state.display().to_string()) && last.contains("No space left on device"),
        "{what}: the error must name the state directory and the cause:\n{stderr}"
    );
}

fn disk_full_during_a_replay(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = event_files(&gen_opts(EVENTS, true), &dir.path().join("input"));
    let reference_state = dir.path().join("reference");
    replay_with(&["--engine", engine], &reference_state, 1, &files);
    let reference = export(&reference_state);
    let needed = disk_usage(&reference_state);

    let Some(fs) = Tmpfs::mount(needed / 3, "disk_full_during_a_replay") else {
        return;
    };
    let state = fs.path("state");
    let run = rdg(replay_args(&["--engine", engine], &state, 1, &files));
    stopped_for_lack_of_space("rdg replay", run.code, &run.stderr, &state);

    // Space freed: the interrupted bulk load is wiped, the replay redone.
    fs.resize(needed * 4 + (64 << 20));
    replay_with(&["--engine", engine], &state, 1, &files);
    assert!(
        export(&state) == reference,
        "the replay after space was freed differs from an uninterrupted one"
    );
}

/// A replay continuing a state (fjall: one atomic commit at its end; sled:
/// commits) that runs out of space stops with an error, leaves fjall's
/// state as it was before it, and once space is freed, the same replay
/// again ends with the export of an uninterrupted run.
fn disk_full_during_a_continuing_replay(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = event_files(&gen_opts(EVENTS, true), &dir.path().join("first"));
    let more_opts = rdg::generate::GenOptions {
        seed: 12,
        ..gen_opts(EVENTS, true)
    };
    let more = event_files(&more_opts, &dir.path().join("more"));
    let reference_state = dir.path().join("reference");
    replay_with(&["--engine", engine], &reference_state, 1, &first);
    let before = export(&reference_state);
    let needed = disk_usage(&reference_state);
    replay_with(&[], &reference_state, 1, &more);
    let after = export(&reference_state);
    assert!(before != after, "the second replay changed nothing");

    let Some(fs) = Tmpfs::mount(
        needed * 4 + (64 << 20),
        "disk_full_during_a_continuing_replay",
    ) else {
        return;
    };
    let state = fs.path("state");
    replay_with(&["--engine", engine], &state, 1, &first);
    // No room left beyond what the state holds now.
    fs.resize(disk_usage(fs.path("").as_path()) + 4096);
    let run = rdg(replay_args(&[], &state, 1, &more));
    stopped_for_lack_of_space("a continuing rdg replay", run.code, &run.stderr, &state);

    fs.resize(needed * 4 + (64 << 20));
    if engine_of(engine) == Engine::Fjall {
        assert!(
            export(&state) == before,
            "a continuing replay that failed changed the fjall state"
        );
    }
    replay_with(&[], &state, 1, &more);
    assert!(
        export(&state) == after,
        "the continuing replay after space was freed differs from an uninterrupted one"
    );
}

fn disk_full_during_a_run(engine: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = file_replay_export(dir.path(), EVENTS, true);
    let expected = committed(&dir.path().join("file-state"));
    // What the same events take in a state of this engine (a bulk load;
    // commits from Kafka take more, so a third of it is surely too small).
    let sized = dir.path().join("sized");
    let files: Vec<std::path::PathBuf> = TOPICS
        .iter()
        .map(|t| dir.path().join("input").join(format!("{t}.jsonl")))
        .collect();
    replay_with(&["--engine", engine], &sized, 1, &files);
    let needed = disk_usage(&sized);
    let cluster = mock_with_events(1, &gen_opts(EVENTS, true));
    let brokers = cluster.bootstrap_servers();

    let Some(fs) = Tmpfs::mount(needed / 3, "disk_full_during_a_run") else {
        return;
    };
    let state = fs.path("state");
    create_state(&state, engine_of(engine));
    let child = start_run(&brokers, &state, 2);
    let (status, stderr) = wait_exit(child, PATIENCE);
    stopped_for_lack_of_space("rdg run", status.code(), &stderr, &state);

    // Space freed (sled cannot even open its state on the full disk).
    fs.resize(needed * 4 + (64 << 20));
    let before = committed(&state);
    assert!(
        before.0 < expected.0,
        "everything was committed on a disk too small for it"
    );
    run_to_completion(&brokers, &state, 2, expected);
    assert_same(
        &normalized_export(&state),
        &reference,
        "runs restarted after the disk filled",
    );
    drop(cluster);
}

both_engines!(
    names: disk_full_during_a_replay,
    disk_full_during_a_continuing_replay,
    disk_full_during_a_run
);
