//! Store tests that need the inside: raw bytes written around the API to
//! check that corruption is reported (never a panic), the export's spilling
//! sorter against the in-memory path, what `open` refuses, and that the
//! commit path does not read. Each runs on both engines (`both_engines!`).

use super::*;
use crate::model::{Change, ClusterOf, DeadLetter, Progress, Record, ident};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn rec(t: i64, props: &str) -> Record {
    Record {
        count: 1,
        first_seen: t,
        last_seen: t,
        props: props.into(),
    }
}

fn node(id: &str, df: &str, t: i64) -> Change {
    Change::Node {
        id: id.into(),
        dataflow: df.into(),
        record: Some(rec(t, r#"{"a":1}"#)),
    }
}

/// Calls every read of what the engine holds now (the tests' raw writes
/// went around the commits); returns the first error.
fn read_all(store: &Store) -> Result<(), StoreError> {
    store.republish();
    store.node("profile:p1")?;
    store.edges("watched", "profile:p1", &EdgeQuery::default())?;
    store.edges(
        "watched",
        "title:t1",
        &EdgeQuery {
            direction: Direction::In,
            ..EdgeQuery::default()
        },
    )?;
    store.links("account:a1", &EdgeQuery::default())?;
    store.links("device:d1", &EdgeQuery::default())?;
    store.identity("device:d1")?;
    store.export(&mut Vec::new())?;
    store.counts()?;
    store.meta()?;
    store.is_empty()?;
    for c in store.contributions() {
        c?;
    }
    Ok(())
}

fn open(dir: &Path, engine: Engine) -> Store {
    Store::open_with(
        dir,
        &StoreOptions {
            engine: Some(engine),
            cache_bytes: Some(8 << 20),
            ..Default::default()
        },
    )
    .expect("open")
}

fn seeded(dir: &Path, engine: Engine) -> Store {
    let store = open(dir, engine);
    let changes = vec![
        node("profile:p1", "playback", 1),
        Change::Edge {
            edge_type: "watched".into(),
            from: "profile:p1".into(),
            to: "title:t1".into(),
            dataflow: "playback".into(),
            reverse: true,
            record: Some(rec(2, "")),
        },
        Change::Link {
            a: "account:a1".into(),
            b: "device:d1".into(),
            dataflow: "playback".into(),
            mirrored: false,
            record: Some(rec(3, "")),
        },
        Change::Cluster {
            id: "device:d1".into(),
            cluster: Some(ClusterOf {
                cluster: "account:a1".into(),
                hub: false,
            }),
        },
        Change::Member {
            cluster: "account:a1".into(),
            member: "device:d1".into(),
            present: true,
        },
    ];
    let dead = vec![DeadLetter {
        dataflow: "playback".into(),
        source: "p.jsonl:1".into(),
        reason: "no time".into(),
    }];
    store
        .commit(&changes, &dead, &Progress::default())
        .expect("commit");
    read_all(&store).expect("clean store reads");
    store
}

/// Every namespace of the seeded store, by name.
fn trees(store: &Store) -> Vec<(String, Ns)> {
    store
        .inner
        .db
        .namespace_names()
        .into_iter()
        .map(|name| {
            let ns = namespace(&store.inner.db, &name).expect("namespace");
            (name, ns)
        })
        .collect()
}

/// A link's `(b, a)` entry whose `(a, b)` entry is gone (a damaged state):
/// reading the link from `b` is a corrupt error naming the `(b, a)` key,
/// from `a` it is simply not there.
fn a_link_without_its_a_b_entry_is_corrupt(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    let link = store.inner.link.clone();
    let ab = codec::encode(&["account:a1", "device:d1", "playback"]);
    let ba = codec::encode(&["device:d1", "account:a1", "playback"]);
    link.raw_remove(&ab);
    store.republish();
    let none = store
        .links("account:a1", &EdgeQuery::default())
        .expect("links of a");
    assert!(none.is_empty(), "{none:?}");
    match store.links("device:d1", &EdgeQuery::default()) {
        Err(StoreError::Corrupt { tree, key, .. }) => {
            assert_eq!(tree, "identity/link");
            assert_eq!(key, hex::encode(&ba));
        }
        other => panic!("expected a corrupt error, got {other:?}"),
    }
}

fn bad_values_are_corrupt_errors(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    for (name, tree) in trees(&store) {
        for (k, v) in tree.raw_pairs() {
            // Values that are read and decoded (`meta` is read at open:
            // `bad_meta_values_are_refused_at_open`).
            if name == "identity/cluster" || name == "meta" {
                continue;
            }
            // A link's `(b, a)` entry is empty and never decoded: readers
            // take the record from `(a, b)`.
            if name == "identity/link" {
                let [a, b, _] = super::reader::decode_strs::<3>(&k).expect("a link key");
                if a > b {
                    continue;
                }
            }
            for bad in [&b""[..], b"\xff\xff\xff", &[&v[..], b"\x07\x07"].concat()] {
                tree.raw_insert(&k, bad);
                match read_all(&store) {
                    Err(StoreError::Corrupt { tree: t, key, .. }) => {
                        assert_eq!(t, name);
                        assert_eq!(key, hex::encode(&k));
                    }
                    other => panic!("{name}: {bad:?} gave {other:?}"),
                }
            }
            tree.raw_insert(&k, &v);
        }
    }
    read_all(&store).expect("restored");
}

fn bad_keys_are_corrupt_errors(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    for (name, tree) in trees(&store) {
        if name == "meta" {
            continue;
        }
        for (k, v) in tree.raw_pairs() {
            tree.raw_remove(&k);
            // Cut inside the last segment, or add a trailing byte.
            let bad_keys = [k[..k.len() - 1].to_vec(), [&k[..], b"\x00"].concat()];
            for bad in bad_keys {
                tree.raw_insert(&bad, &v);
                let r = read_all(&store);
                assert!(
                    matches!(r, Err(StoreError::Corrupt { .. })),
                    "{name}: key {bad:?} gave {r:?}"
                );
                tree.raw_remove(&bad);
            }
            tree.raw_insert(&k, &v);
        }
    }
    read_all(&store).expect("restored");
}

fn random_garbage_never_panics(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    let trees = trees(&store);
    let mut rng = StdRng::seed_from_u64(11);
    let bytes = |rng: &mut StdRng| -> Vec<u8> {
        let n = rng.random_range(0..24);
        (0..n)
            .map(|_| [0x00, 0x01, 0xFF, b'p', b':', 0xC3, 0x80][rng.random_range(0..7)])
            .collect()
    };
    for _ in 0..300 {
        let (_, tree) = &trees[rng.random_range(0..trees.len())];
        let mut k = if rng.random_bool(0.5) {
            codec::encode(&["profile:p1"])
        } else {
            Vec::new()
        };
        k.extend(bytes(&mut rng));
        if k.is_empty() {
            // The store never writes an empty key (fjall cannot hold one).
            continue;
        }
        let v = bytes(&mut rng);
        tree.raw_insert(&k, &v);
        let _ = read_all(&store);
        tree.raw_remove(&k);
    }
}

fn spilled_export_equals_in_memory_export(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), engine);
    let mut rng = StdRng::seed_from_u64(12);
    let ids = ["a", "a!", "a\u{1}", "a\"", "a\\", "ab", "", "ÿ", "a\u{0}"];
    let mut changes = Vec::new();
    for i in 0..3000 {
        let id = format!("{}{}", ids[rng.random_range(0..ids.len())], i % 97);
        changes.push(node(
            &ident(["profile", "a", "a!"][i % 3], &id),
            ["x", "y"][i % 2],
            rng.random_range(0..50),
        ));
        changes.push(Change::Cluster {
            id: ident("device", &id),
            cluster: Some(ClusterOf {
                cluster: "account:a".into(),
                hub: i % 5 == 0,
            }),
        });
    }
    store
        .commit(&changes, &[], &Progress::default())
        .expect("commit");
    let mut big = Vec::new();
    let mut small = Vec::new();
    let n = store.export_with_budget(&mut big, 1 << 30).expect("export");
    let m = store.export_with_budget(&mut small, 1000).expect("export");
    assert_eq!(n, m);
    assert_eq!(big, small);
    let lines: Vec<&[u8]> = big
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len() as u64, n.lines);
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "sorted");
}

fn data_without_format_version_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    match engine {
        Engine::Sled => {
            let db = ::sled::open(dir.path()).expect("sled");
            db.open_tree("node/profile")
                .expect("tree")
                .insert(b"k", b"v")
                .expect("insert");
            db.flush().expect("flush");
        }
        Engine::Fjall => {
            let db = ::fjall::Database::builder(dir.path().join("fjall"))
                .open()
                .expect("fjall");
            let ks = db
                .keyspace("node/profile", ::fjall::KeyspaceCreateOptions::default)
                .expect("keyspace");
            ks.insert(b"k", b"v").expect("insert");
            db.persist(::fjall::PersistMode::SyncAll).expect("persist");
        }
    }
    // Without --engine the files say which engine it is.
    let r = Store::open(dir.path());
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
}

fn empty_commit_keeps_store_empty_and_data_makes_it_not(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), engine);
    assert!(store.is_empty().expect("is_empty"));
    store
        .commit(&[], &[], &Progress::default())
        .expect("commit");
    assert!(store.is_empty().expect("is_empty"));
    let put = node("profile:p1", "x", 1);
    let Change::Node { id, dataflow, .. } = put.clone() else {
        unreachable!()
    };
    let del = Change::Node {
        id,
        dataflow,
        record: None,
    };
    // Put and remove in one commit: the remove wins, the commit counts.
    store
        .commit(&[put, del], &[], &Progress::default())
        .expect("commit");
    assert!(!store.is_empty().expect("is_empty"));
    assert_eq!(store.node("profile:p1").expect("node"), None);
}

fn dead_letter_sequences_continue_across_commits_and_reopen(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let letter = |s: &str| DeadLetter {
        dataflow: "d".into(),
        source: s.into(),
        reason: "r".into(),
    };
    {
        let store = open(dir.path(), engine);
        store
            .commit(&[], &[letter("1"), letter("2")], &Progress::default())
            .expect("commit");
    }
    let store = open(dir.path(), engine);
    store
        .commit(&[], &[letter("3")], &Progress::default())
        .expect("commit");
    let tree = store.dyn_tree(Family::Dead, "d").expect("tree");
    let keys: Vec<u64> = tree
        .raw_pairs()
        .into_iter()
        .map(|(k, _)| codec::Decoder::new(&k).u64().expect("u64"))
        .collect();
    assert_eq!(keys, vec![0, 1, 2]);
    assert_eq!(store.meta().expect("meta").dataflows["d"].dead_letters, 3);
}

fn removes_do_not_create_trees(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), engine);
    let changes = [
        Change::Node {
            id: "ghost:g1".into(),
            dataflow: "d".into(),
            record: None,
        },
        Change::Edge {
            edge_type: "haunts".into(),
            from: "ghost:g1".into(),
            to: "house:h1".into(),
            dataflow: "d".into(),
            reverse: true,
            record: None,
        },
    ];
    store
        .commit(&changes, &[], &Progress::default())
        .expect("commit");
    assert!(store.dyn_tree(Family::Node, "ghost").is_none());
    assert!(store.dyn_tree(Family::Edge, "haunts").is_none());
    assert!(store.dyn_tree(Family::EdgeIn, "haunts").is_none());
    assert!(!store.is_empty().expect("is_empty"));
}

/// `meta` is read (and checked) when the state is opened: a damaged entry
/// is an error naming it then.
fn bad_meta_values_are_refused_at_open(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut progress = Progress::default();
    progress
        .positions
        .insert(("playback".into(), "0".into()), 7);
    {
        let store = seeded(dir.path(), engine);
        store.commit(&[], &[], &progress).expect("commit");
    }
    let keys = [
        codec::encode(&[META_DATAFLOW, "playback"]),
        codec::encode(&[META_POSITION, "playback", "0"]),
        codec::encode(&[META_COMMITS]),
    ];
    for key in &keys {
        let good = {
            let store = open(dir.path(), engine);
            let good = store
                .inner
                .meta
                .raw_pairs()
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .expect("the key is stored");
            store.inner.meta.raw_insert(key, b"\xff\xff\xff");
            good
        };
        let r = Store::open_with(
            dir.path(),
            &StoreOptions {
                engine: Some(engine),
                ..Default::default()
            },
        );
        match r {
            Err(StoreError::Corrupt { tree, key: k, .. }) => {
                assert_eq!(tree, TREE_META);
                assert_eq!(k, hex::encode(key));
            }
            other => panic!("{key:?}: expected Corrupt, got {other:?}"),
        }
        // Repair it through the engine directly.
        let db = Db::open(
            engine,
            dir.path(),
            OpenConfig {
                cache_bytes: 8 << 20,
            },
            true,
        )
        .map_err(|_| "open")
        .expect("raw open");
        namespace(&db, TREE_META)
            .expect("meta")
            .raw_insert(key, &good);
        db.flush().expect("flush");
    }
    let store = open(dir.path(), engine);
    assert_eq!(store.meta().expect("meta").positions.len(), 1);
}

/// Garbage where a commit used to read (the stored counters, the commit
/// count, the old value of an edge) does not stop a commit: nothing on the
/// commit path reads. The commit's blind writes then replace the garbage.
fn commit_path_does_not_read(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    let edge_key = codec::encode(&["profile:p1", "title:t1", "playback"]);
    let counters_key = codec::encode(&[META_DATAFLOW, "playback"]);
    let commits_key = codec::encode(&[META_COMMITS]);
    let edges = store.dyn_tree(Family::Edge, "watched").expect("edge ns");
    edges.raw_insert(&edge_key, b"\xff\xff\xff");
    store.inner.meta.raw_insert(&counters_key, b"\xff\xff");
    store.inner.meta.raw_insert(&commits_key, b"\x01");

    let mut progress = Progress::default();
    progress.dataflows.insert(
        "playback".into(),
        crate::model::DataflowProgress {
            events: 5,
            late: 1,
            watermark: Some(9),
            record_times: Default::default(),
        },
    );
    let changes = [Change::Edge {
        edge_type: "watched".into(),
        from: "profile:p1".into(),
        to: "title:t1".into(),
        dataflow: "playback".into(),
        reverse: false,
        record: Some(rec(4, "")),
    }];
    let dead = [DeadLetter {
        dataflow: "playback".into(),
        source: "p.jsonl:9".into(),
        reason: "bad".into(),
    }];
    store.commit(&changes, &dead, &progress).expect("commit");

    read_all(&store).expect("the commit replaced every damaged value");
    let meta = store.meta().expect("meta");
    assert_eq!(
        meta.dataflows["playback"],
        DataflowMeta {
            events: 5,
            late: 1,
            dead_letters: 2,
            watermark: Some(9),
        }
    );
    assert_eq!(store.commit_count(), 2);
    drop(edges);
    let out = store
        .edges("watched", "profile:p1", &EdgeQuery::default())
        .expect("out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].last_seen, 4);
    // Not reversed any more: the `edge_in/` key went blindly.
    let incoming = EdgeQuery {
        direction: Direction::In,
        ..EdgeQuery::default()
    };
    assert!(
        store
            .edges("watched", "title:t1", &incoming)
            .expect("in")
            .is_empty()
    );
    drop(store);
    let store = open(dir.path(), engine);
    assert_eq!(store.commit_count(), 2);
    assert_eq!(store.meta().expect("meta"), meta);
}

/// A bulk load that did not finish leaves its marker; the store that ran it
/// refuses commits, and reopening wipes the state back to empty: whether
/// its sorted buffers reached the engine one by one (hold 0) or merged
/// (a hold smaller than one buffer).
fn interrupted_bulk_load_reopens_empty(engine: Engine) {
    for hold in [0, 100] {
        interrupted_bulk_load_holding(engine, hold);
    }
}

fn interrupted_bulk_load_holding(engine: Engine, hold: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), engine);
        let mut bulk = store
            .bulk_load_with(BulkMethod::Ingest, 64, hold)
            .expect("bulk load");
        let changes: Vec<Change> = (0..50)
            .map(|i| node(&format!("profile:p{i}"), "x", i))
            .collect();
        let dead = [DeadLetter {
            dataflow: "x".into(),
            source: "f:1".into(),
            reason: "r".into(),
        }];
        bulk.write(&changes, &dead, &Progress::default())
            .expect("write");
        drop(bulk);
        // The chunks reached the engine (the buffer is 64 bytes). Views on
        // fjall read the state published before the load, and do not take
        // the snapshot again while it runs however old it is; sled's read
        // its trees as the load leaves them.
        REFRESH_AFTER_TEST.set(Some(Duration::ZERO));
        assert!(store.write_stats().keys_written >= 50);
        assert_eq!(
            store.node("profile:p1").expect("node").is_some(),
            engine == Engine::Sled
        );
        let r = store.commit(&[node("profile:q", "x", 1)], &[], &Progress::default());
        assert!(matches!(r, Err(StoreError::BulkLoad { .. })), "{r:?}");
        assert!(matches!(
            store.bulk_load(),
            Err(StoreError::BulkLoad { .. })
        ));
    }
    assert!(layout::bulk_marker_present(dir.path()));
    // As if the load's finish had recorded its commit durable just before
    // the crash: the wipe forgets it with the load.
    layout::record_durable(dir.path(), 1).expect("record");
    let store = open(dir.path(), engine);
    assert!(!layout::bulk_marker_present(dir.path()));
    assert_eq!(layout::durable_commits(dir.path()).expect("read"), None);
    assert!(store.is_empty().expect("is_empty"));
    assert_eq!(store.counts().expect("counts"), Counts::default());
    assert_eq!(store.schema(), Schema::default());
    let mut out = Vec::new();
    assert_eq!(store.export(&mut out).expect("export").lines, 0);
    assert_eq!(store.meta().expect("meta"), Meta::default());
    // The wiped state works as a new one.
    store
        .commit(&[node("profile:q", "x", 1)], &[], &Progress::default())
        .expect("commit");
    drop(store);
    let store = open(dir.path(), engine);
    assert_eq!(store.commit_count(), 1);
    assert!(store.node("profile:q").expect("node").is_some());
    assert!(store.node("profile:p1").expect("node").is_none());
}

/// A flush records how many commits it made durable; an engine that opens
/// with fewer lost some, and the state is refused; commits after the last
/// flush may be lost (as after a crash) without a refusal.
fn losing_durable_commits_is_refused(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path(), engine);
        for t in 0..3 {
            store
                .commit(&[node("profile:p1", "x", t)], &[], &Progress::default())
                .expect("commit");
        }
        store.flush().expect("flush");
        assert_eq!(layout::durable_commits(dir.path()).expect("read"), Some(3));
        store
            .commit(&[node("profile:p1", "x", 9)], &[], &Progress::default())
            .expect("commit");
    }
    // One commit past the last flush: more than it recorded, accepted.
    assert_eq!(open(dir.path(), engine).commit_count(), 4);
    // The engine holds fewer than a flush made durable.
    layout::record_durable(dir.path(), 5).expect("record");
    let refused = Store::open_with(
        dir.path(),
        &StoreOptions {
            engine: Some(engine),
            cache_bytes: Some(8 << 20),
            ..Default::default()
        },
    );
    match refused {
        Err(e @ StoreError::Damaged { .. }) => {
            let text = e.to_string();
            assert!(text.contains("made 5 commits durable"), "{text}");
            assert!(
                text.contains(&format!("{engine} database holds 4")),
                "{text}"
            );
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
        }
        other => panic!(
            "expected Damaged, got {:?}",
            other.map(|s| s.commit_count())
        ),
    }
    // A mark that is not a number is refused too, never ignored.
    std::fs::write(dir.path().join("rdg-durable"), b"\x00\x00").expect("write");
    let garbled = Store::open_with(dir.path(), &StoreOptions::default());
    assert!(
        matches!(garbled, Err(StoreError::Damaged { .. })),
        "{:?}",
        garbled.map(|s| s.commit_count())
    );
}

/// A bulk load needs an empty state.
fn bulk_load_refuses_a_state_with_commits(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), engine);
    match store.bulk_load() {
        Err(e @ StoreError::BulkLoad { .. }) => {
            assert!(e.to_string().contains("empty"), "{e}");
        }
        other => panic!("expected BulkLoad, got {other:?}"),
    }
    assert!(!layout::bulk_marker_present(dir.path()));
    // Still writable by commits.
    store
        .commit(&[node("profile:p2", "x", 1)], &[], &Progress::default())
        .expect("commit");
}

/// A type name fjall cannot hold as a keyspace name (over 255 bytes) is an
/// error naming it, not a panic; sled holds it.
fn overlong_type_name_is_an_error_not_a_panic(engine: Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), engine);
    let long = "t".repeat(300);
    let r = store.commit(
        &[node(&format!("{long}:x"), "d", 1)],
        &[],
        &Progress::default(),
    );
    match engine {
        Engine::Fjall => match r {
            Err(e @ StoreError::Engine { .. }) => {
                assert!(e.to_string().contains(&long), "{e}");
                assert!(store.is_empty().expect("is_empty"), "nothing committed");
            }
            other => panic!("expected an engine error, got {other:?}"),
        },
        Engine::Sled => {
            r.expect("sled takes any name");
            assert!(store.node(&format!("{long}:x")).expect("node").is_some());
        }
    }
}

/// The changes of a continuing replay's one-off commit onto `seeded`: new
/// nodes, edges and links, a removal, a position and counters.
fn one_off_commit(store: &Store) -> Result<(), StoreError> {
    let mut changes: Vec<Change> = (0..300)
        .map(|i| node(&format!("profile:q{i}"), "playback", i))
        .collect();
    changes.extend((0..100).map(|i| Change::Edge {
        edge_type: "watched".into(),
        from: format!("profile:q{i}").into(),
        to: format!("title:t{}", i % 7).into(),
        dataflow: "playback".into(),
        reverse: true,
        record: Some(rec(i, "")),
    }));
    changes.push(Change::Link {
        a: "account:a1".into(),
        b: "device:d1".into(),
        dataflow: "playback".into(),
        mirrored: true,
        record: None,
    });
    let mut progress = Progress::default();
    progress
        .positions
        .insert(("playback".into(), "p.jsonl".into()), 4242);
    progress.dataflows.insert(
        "playback".into(),
        crate::model::DataflowProgress {
            events: 400,
            late: 1,
            watermark: Some(99),
            record_times: Default::default(),
        },
    );
    let mut commit = store.begin_commit()?;
    commit.changes(&changes)?;
    commit.add(&[], &progress);
    commit.finish()
}

fn export_text(store: &Store) -> Vec<u8> {
    let mut out = Vec::new();
    store.export(&mut out).expect("export");
    out
}

/// A fjall commit made through its redo file (`store::redo`) that a crash
/// cuts after the file is durable, before or during the ingestion of its
/// namespaces, is finished by the next open: the state is the one of the
/// uncut commit, and the file is gone.
#[test]
fn a_commit_cut_during_ingestion_is_finished_at_open() {
    // The reference: the same commit as one write batch.
    let reference = tempfile::tempdir().expect("tempdir");
    let want = {
        let store = seeded(reference.path(), Engine::Fjall);
        let before = export_text(&store);
        writer::INGEST_FROM.set(Some(usize::MAX));
        one_off_commit(&store).expect("commit");
        let after = export_text(&store);
        assert_ne!(before, after, "the commit changed nothing");
        (after, store.commit_count(), store.meta().expect("meta"))
    };
    writer::INGEST_FROM.set(Some(0));
    // Uncut, then cut with none, some, or all but one namespaces ingested.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = seeded(dir.path(), Engine::Fjall);
        one_off_commit(&store).expect("commit");
        assert!(!redo::path(dir.path()).exists(), "the redo file stayed");
        assert!(
            export_text(&store) == want.0,
            "ingested, the commit differs from the batch"
        );
        drop(store);
        let store = open(dir.path(), Engine::Fjall);
        assert!(
            export_text(&store) == want.0,
            "reopened, the commit differs from the batch"
        );
    }
    for ingested in [0, 2, usize::MAX] {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = seeded(dir.path(), Engine::Fjall);
            let before = export_text(&store);
            writer::STOP_AFTER_REDO.set(true);
            let cut = one_off_commit(&store);
            writer::STOP_AFTER_REDO.set(false);
            assert!(cut.is_err(), "the commit was not cut");
            let (names, set) = redo::read(dir.path()).expect("read").expect("a redo file");
            let runs = set
                .ops
                .iter()
                .map(|op| op.ns())
                .collect::<std::collections::BTreeSet<_>>();
            let keep: Vec<usize> = runs
                .iter()
                .copied()
                .take(ingested.min(runs.len() - 1))
                .collect();
            let mut part = engine::WriteSet::default();
            for op in set.ops.iter().filter(|op| keep.contains(&op.ns())) {
                part.write(
                    op.ns(),
                    set.bytes(op.key()),
                    op.value().map(|v| set.bytes(v)),
                );
            }
            let ns: Vec<Ns> = names
                .iter()
                .map(|n| namespace(&store.inner.db, n).expect("namespace"))
                .collect();
            store.inner.db.ingest(&ns, &part).expect("ingest a part");
            // Views keep the state before the commit, however old their
            // snapshot gets.
            REFRESH_AFTER_TEST.set(Some(Duration::ZERO));
            assert!(
                export_text(&store) == before,
                "cut with {ingested} namespaces ingested: a view saw part of the commit"
            );
            REFRESH_AFTER_TEST.set(None);
        }
        let store = open(dir.path(), Engine::Fjall);
        assert!(!redo::path(dir.path()).exists(), "the redo file stayed");
        assert!(
            export_text(&store) == want.0,
            "cut with {ingested} namespaces ingested: the state differs from the uncut commit's"
        );
        assert_eq!(store.commit_count(), want.1);
        assert_eq!(store.meta().expect("meta"), want.2);
    }
}

/// A redo file that is damaged (a byte changed, or cut short) refuses the
/// state with the file's name; a temporary one a crash left is ignored.
#[test]
fn a_damaged_redo_file_refuses_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    writer::INGEST_FROM.set(Some(0));
    {
        let store = seeded(dir.path(), Engine::Fjall);
        writer::STOP_AFTER_REDO.set(true);
        assert!(one_off_commit(&store).is_err());
        writer::STOP_AFTER_REDO.set(false);
    }
    let path = redo::path(dir.path());
    let good = std::fs::read(&path).expect("read");
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    for bad in [flipped, good[..good.len() - 3].to_vec()] {
        std::fs::write(&path, &bad).expect("write");
        let err = Store::open_with(dir.path(), &StoreOptions::default())
            .map(|_| ())
            .expect_err("a damaged redo file was accepted");
        let text = err.to_string();
        assert!(
            matches!(err, StoreError::Damaged { .. })
                && text.contains("rdg-redo")
                && text.contains("checksum"),
            "{text}"
        );
    }
    // Without the redo file, a temporary one is a commit that never began.
    std::fs::rename(&path, dir.path().join("rdg-redo.tmp")).expect("rename");
    let store = open(dir.path(), Engine::Fjall);
    assert!(!dir.path().join("rdg-redo.tmp").exists());
    assert_eq!(store.commit_count(), 1);
}

macro_rules! both_engines {
    ($($name:ident),* $(,)?) => {
        mod on_fjall {
            $( #[test] fn $name() { super::$name(super::Engine::Fjall) } )*
        }
        mod on_sled {
            $( #[test] fn $name() { super::$name(super::Engine::Sled) } )*
        }
    };
}

both_engines!(
    bad_values_are_corrupt_errors,
    a_link_without_its_a_b_entry_is_corrupt,
    bad_keys_are_corrupt_errors,
    random_garbage_never_panics,
    spilled_export_equals_in_memory_export,
    data_without_format_version_is_refused,
    empty_commit_keeps_store_empty_and_data_makes_it_not,
    dead_letter_sequences_continue_across_commits_and_reopen,
    removes_do_not_create_trees,
    commit_path_does_not_read,
    bad_meta_values_are_refused_at_open,
    interrupted_bulk_load_reopens_empty,
    losing_durable_commits_is_refused,
    bulk_load_refuses_a_state_with_commits,
    overlong_type_name_is_an_error_not_a_panic,
);

/// fjall commits made by ingestion (every keyspace registers its tables at
/// a sequence number of its own, one after another) while views read, each
/// read taking the published snapshot again when no commit runs: each view
/// sees one commit whole, its node, edges, reverse entries, watermark and
/// count together, and never one keyspace of the next.
#[test]
fn views_never_see_half_of_an_ingested_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), Engine::Fjall);
    let commit = |store: &Store, g: i64| {
        let props = format!(r#"{{"gen":{g}}}"#);
        let mut changes: Vec<Change> = (0..50)
            .map(|i| Change::Edge {
                edge_type: "watched".into(),
                from: "profile:p".into(),
                to: format!("title:t{i:02}").into(),
                dataflow: "playback".into(),
                reverse: true,
                record: Some(rec(g, &props)),
            })
            .collect();
        changes.push(Change::Node {
            id: "profile:p".into(),
            dataflow: "playback".into(),
            record: Some(rec(g, &props)),
        });
        let mut progress = Progress::default();
        progress.dataflows.insert(
            "playback".into(),
            crate::model::DataflowProgress {
                events: 1,
                watermark: Some(g),
                ..Default::default()
            },
        );
        store.commit(&changes, &[], &progress).expect("commit");
    };
    commit(&store, 1);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            writer::INGEST_FROM.set(Some(0));
            let mut g = 1;
            while !stop.load(Ordering::Relaxed) && g < 400 {
                g += 1;
                commit(&store, g);
            }
            g
        })
    };
    let gen_re = |text: &str| -> std::collections::BTreeSet<i64> {
        text.split(r#"\"gen\":"#)
            .chain(text.split(r#""gen":"#))
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    // Every read takes the snapshot again whenever no commit runs.
    REFRESH_AFTER_TEST.set(Some(Duration::ZERO));
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until && !writer.is_finished() {
        let view = store.read();
        let mut out = Vec::new();
        view.export(&mut out).expect("export");
        let text = String::from_utf8(out).expect("utf-8");
        let gens = gen_re(&text);
        assert_eq!(gens.len(), 1, "one view saw generations {gens:?}");
        let g = *gens.first().expect("one");
        let meta = view.meta().expect("meta");
        assert_eq!(meta.dataflows["playback"].watermark, Some(g));
        assert_eq!(view.commit_count(), g as u64, "count against data");
        let reverse = view
            .edges_page(
                "watched",
                "title:t07",
                &EdgeQuery {
                    direction: Direction::In,
                    ..EdgeQuery::default()
                },
                None,
            )
            .expect("reverse");
        assert_eq!(reverse.items.len(), 1);
        assert_eq!(
            reverse.items[0].props["gen"], g,
            "reverse entry against data"
        );
        seen.insert(g);
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("writer");
    assert!(
        last > 10 && seen.len() > 3,
        "views saw {} of {last} generations",
        seen.len()
    );
}

/// A fjall snapshot older than the refresh age is taken again by the next
/// read when no commit runs (so it does not keep fjall's replaced versions
/// alive), and not while one does.
#[test]
fn an_aged_snapshot_is_taken_again_only_between_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path(), Engine::Fjall);
    let seqno = |store: &Store| match &store.published().snap {
        Snap::Fjall(s) => s.seqno(),
        Snap::Sled => unreachable!("a fjall store"),
    };
    // The engine moves on without a commit (as fjall's flushes and
    // compactions make it): a raw write outside any commit.
    let key = codec::encode(&["a raw key"]);
    store
        .inner
        .db
        .put_one(&store.inner.meta, &key, b"v")
        .expect("put");
    let before = seqno(&store);
    // Young: kept.
    REFRESH_AFTER_TEST.set(Some(Duration::from_secs(3600)));
    drop(store.read());
    assert_eq!(seqno(&store), before);
    // Aged, but a commit holds the commit lock: kept.
    REFRESH_AFTER_TEST.set(Some(Duration::ZERO));
    {
        let _commit = store.inner.counters.lock().expect("lock");
        let other = store.clone();
        std::thread::spawn(move || {
            REFRESH_AFTER_TEST.set(Some(Duration::ZERO));
            drop(other.read());
        })
        .join()
        .expect("reader");
        assert_eq!(seqno(&store), before);
    }
    // Aged and no commit: taken again, with the same commits.
    let commits = store.commit_count();
    let view = store.read();
    assert!(seqno(&store) > before);
    assert_eq!(view.commit_count(), commits);
    assert!(
        view.snap
            .get(&store.inner.meta, &key)
            .expect("get")
            .is_some()
    );
}
