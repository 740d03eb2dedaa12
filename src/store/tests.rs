//! Store tests that need the inside: raw bytes written around the API to
//! check that corruption is reported (never a panic), the export's spilling
//! sorter against the in-memory path, and what `open` refuses.

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

/// Calls every read; returns the first error.
fn read_all(store: &Store) -> Result<(), StoreError> {
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

fn seeded(dir: &Path) -> Store {
    let store = Store::open(dir).expect("open");
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

/// Every tree of the seeded store, by name.
fn trees(store: &Store) -> Vec<(String, Tree)> {
    store
        .inner
        .db
        .tree_names()
        .into_iter()
        .filter(|n| &n[..] != b"__sled__default")
        .map(|n| {
            let name = String::from_utf8_lossy(&n).into_owned();
            let tree = store.inner.db.open_tree(&n).expect("open tree");
            (name, tree)
        })
        .collect()
}

#[test]
fn bad_values_are_corrupt_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path());
    for (name, tree) in trees(&store) {
        for item in tree.iter() {
            let (k, v) = item.expect("item");
            // Values that are read and decoded.
            if name == "identity/cluster" {
                continue;
            }
            for bad in [&b""[..], b"\xff\xff\xff", &[&v[..], b"\x07\x07"].concat()] {
                tree.insert(&k, bad).expect("insert");
                match read_all(&store) {
                    Err(StoreError::Corrupt { tree: t, key, .. }) => {
                        assert_eq!(t, name);
                        assert_eq!(key, hex::encode(&k));
                    }
                    other => panic!("{name}: {bad:?} gave {other:?}"),
                }
            }
            tree.insert(&k, v).expect("restore");
        }
    }
    read_all(&store).expect("restored");
}

#[test]
fn bad_keys_are_corrupt_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path());
    for (name, tree) in trees(&store) {
        if name == "meta" {
            continue;
        }
        let entries: Vec<(sled::IVec, sled::IVec)> =
            tree.iter().collect::<Result<_, _>>().expect("entries");
        for (k, v) in entries {
            tree.remove(&k).expect("remove");
            // Cut inside the last segment, or add a trailing byte.
            let bad_keys = [k[..k.len() - 1].to_vec(), [&k[..], b"\x00"].concat()];
            for bad in bad_keys {
                tree.insert(&bad, &v).expect("insert");
                let r = read_all(&store);
                assert!(
                    matches!(r, Err(StoreError::Corrupt { .. })),
                    "{name}: key {bad:?} gave {r:?}"
                );
                tree.remove(&bad).expect("remove");
            }
            tree.insert(&k, v).expect("restore");
        }
    }
    read_all(&store).expect("restored");
}

#[test]
fn random_garbage_never_panics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = seeded(dir.path());
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
        let v = bytes(&mut rng);
        tree.insert(&k, v).expect("insert");
        let _ = read_all(&store);
        tree.remove(&k).expect("remove");
    }
}

#[test]
fn spilled_export_equals_in_memory_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
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

#[test]
fn data_without_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        db.open_tree("node/profile")
            .expect("tree")
            .insert(b"k", b"v")
            .expect("insert");
        db.flush().expect("flush");
    }
    let r = Store::open(dir.path());
    assert!(matches!(r, Err(StoreError::Corrupt { .. })), "{r:?}");
}

#[test]
fn empty_commit_keeps_store_empty_and_data_makes_it_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
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

#[test]
fn dead_letter_sequences_continue_across_commits_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let letter = |s: &str| DeadLetter {
        dataflow: "d".into(),
        source: s.into(),
        reason: "r".into(),
    };
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .commit(&[], &[letter("1"), letter("2")], &Progress::default())
            .expect("commit");
    }
    let store = Store::open(dir.path()).expect("reopen");
    store
        .commit(&[], &[letter("3")], &Progress::default())
        .expect("commit");
    let tree = store.dyn_tree(Family::Dead, "d").expect("tree");
    let keys: Vec<u64> = tree
        .iter()
        .keys()
        .map(|k| {
            let k = k.expect("key");
            codec::Decoder::new(&k).u64().expect("u64")
        })
        .collect();
    assert_eq!(keys, vec![0, 1, 2]);
    assert_eq!(store.meta().expect("meta").dataflows["d"].dead_letters, 3);
}

#[test]
fn removes_do_not_create_trees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
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
