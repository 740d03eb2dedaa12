//! The store's reader additions for the query service: cursor paging equals
//! the full neighbour list (seeded random graphs with identifiers that
//! stress the key codec: NUL bytes, prefixes of one another, multi-byte
//! characters), cursors survive their text form, a cursor of the other order
//! is refused, search by prefix, the schema, per-namespace counts, and the
//! commit count. Every test runs on both engines.

mod support;
use support::{both_engines, open_engine};

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rdg::model::{Change, ClusterOf, Progress, Record};
use rdg::store::{
    Direction, EdgeCursor, EdgeOrder, EdgeQuery, EdgeView, Engine, Store, StoreError,
};

const IDS: &[&str] = &[
    "t", "t\u{0}", "t\u{0}1", "t1", "t10", "tÿ", "t😀", "", "u", "t!",
];
const DATAFLOWS: &[&str] = &["a", "b", "c\u{0}"];

fn rec(rng: &mut StdRng) -> Record {
    let first = rng.random_range(0..50);
    Record {
        count: rng.random_range(1..4),
        first_seen: first,
        last_seen: first + rng.random_range(0..20),
        props: if rng.random_bool(0.5) {
            format!(r#"{{"x":{}}}"#, rng.random_range(0..9)).into()
        } else {
            "".into()
        },
    }
}

fn random_graph(rng: &mut StdRng, store: &Store) {
    for _ in 0..4 {
        let mut changes = Vec::new();
        for _ in 0..150 {
            let from = format!("p:{}", IDS[rng.random_range(0..3)]);
            let to = format!(
                "title:{}{}",
                IDS[rng.random_range(0..IDS.len())],
                rng.random_range(0..6)
            );
            let record = if rng.random_bool(0.85) {
                Some(rec(rng))
            } else {
                None
            };
            changes.push(Change::Edge {
                edge_type: "w".into(),
                from: from.as_str().into(),
                to: to.as_str().into(),
                dataflow: DATAFLOWS[rng.random_range(0..DATAFLOWS.len())].into(),
                reverse: true,
                record,
            });
        }
        store
            .commit(&changes, &[], &Progress::default())
            .expect("commit");
    }
}

/// Walks every page of `q` with page size `size`.
fn walk(store: &Store, id: &str, q: &EdgeQuery, size: usize) -> Vec<EdgeView> {
    let mut out = Vec::new();
    let mut cursor: Option<EdgeCursor> = None;
    let page_q = EdgeQuery {
        limit: Some(size),
        ..*q
    };
    loop {
        let page = store
            .edges_page("w", id, &page_q, cursor.as_ref())
            .expect("page");
        assert!(page.items.len() <= size);
        out.extend(page.items);
        match page.next {
            // Through the text form, as a client would.
            Some(c) => {
                let text = c.encode();
                // A page that ends where it started would be asked for
                // again and again: fail instead of looping.
                assert_ne!(
                    cursor.as_ref().map(EdgeCursor::encode),
                    Some(text.clone()),
                    "the page after a cursor gave the same cursor back: paging {id} would not end"
                );
                cursor = Some(EdgeCursor::decode(&text).expect("decodes"));
            }
            None => return out,
        }
    }
}

fn paging_equals_the_full_list(engine: Engine) {
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open_engine(tmp.path(), engine).expect("open");
        random_graph(&mut rng, &store);
        let mut ids: Vec<String> = (0..3).map(|i| format!("p:{}", IDS[i])).collect();
        ids.extend(IDS.iter().take(4).map(|i| format!("title:{i}0")));
        for id in &ids {
            for direction in [Direction::Out, Direction::In] {
                for order in [EdgeOrder::Id, EdgeOrder::Recent] {
                    for since in [None, Some(30)] {
                        let q = EdgeQuery {
                            direction,
                            limit: None,
                            since,
                            order,
                        };
                        let all = store.edges("w", id, &q).expect("edges");
                        if let Some(s) = since {
                            // `since` keeps what was last seen at or after it.
                            let unfiltered = EdgeQuery { since: None, ..q };
                            let want: Vec<EdgeView> = store
                                .edges("w", id, &unfiltered)
                                .expect("edges")
                                .into_iter()
                                .filter(|e| e.last_seen >= s)
                                .collect();
                            assert_eq!(all, want, "seed {seed} {id:?} since {s}");
                        }
                        for size in [1, 2, 3, 7, 1000] {
                            assert_eq!(
                                walk(&store, id, &q, size),
                                all,
                                "seed {seed} {id:?} {direction:?} {order:?} since {since:?} size {size}"
                            );
                        }
                    }
                }
            }
        }
    }
}

fn cursors_are_checked(engine: Engine) {
    for c in [
        EdgeCursor::Id {
            after: "title:\u{0}ÿ😀".into(),
        },
        EdgeCursor::Recent {
            last_seen: -5,
            after: "".into(),
        },
        EdgeCursor::Recent {
            last_seen: i64::MAX,
            after: "x:y".into(),
        },
    ] {
        assert_eq!(EdgeCursor::decode(&c.encode()).expect("round trip"), c);
    }
    for bad in ["", "!!", "cg", "cgAA", "_w"] {
        assert!(
            matches!(EdgeCursor::decode(bad), Err(StoreError::Cursor { .. })),
            "{bad:?}"
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_engine(tmp.path(), engine).expect("open");
    let q = EdgeQuery {
        order: EdgeOrder::Recent,
        limit: Some(1),
        ..EdgeQuery::default()
    };
    let id_cursor = EdgeCursor::Id { after: "a".into() };
    assert!(matches!(
        store.edges_page("w", "p:x", &q, Some(&id_cursor)),
        Err(StoreError::Cursor { .. }) | Ok(_)
    ));
    // With a tree present the order is checked.
    let change = Change::Edge {
        edge_type: "w".into(),
        from: "p:x".into(),
        to: "t:1".into(),
        dataflow: "a".into(),
        reverse: false,
        record: Some(Record {
            count: 1,
            first_seen: 1,
            last_seen: 1,
            props: "".into(),
        }),
    };
    store
        .commit(&[change], &[], &Progress::default())
        .expect("commit");
    assert!(matches!(
        store.edges_page("w", "p:x", &q, Some(&id_cursor)),
        Err(StoreError::Cursor { .. })
    ));
}

fn search_schema_counts_and_commit_count(engine: Engine) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_engine(tmp.path(), engine).expect("open");
    assert_eq!(store.commit_count(), 0);
    let r = Record {
        count: 1,
        first_seen: 1,
        last_seen: 2,
        props: "".into(),
    };
    let node = |id: &str, df: &str| Change::Node {
        id: id.into(),
        dataflow: df.into(),
        record: Some(r.clone()),
    };
    let changes = vec![
        node("profile:p1", "a"),
        node("profile:p1", "b"),
        node("profile:p10", "a"),
        node("profile:p2", "a"),
        node("profile:q\u{0}", "a"),
        node("title:p1x", "a"),
        Change::Edge {
            edge_type: "watched".into(),
            from: "profile:p1".into(),
            to: "title:p1x".into(),
            dataflow: "a".into(),
            reverse: true,
            record: Some(r.clone()),
        },
        Change::Link {
            a: "account:a".into(),
            b: "device:p1d".into(),
            dataflow: "a".into(),
            mirrored: false,
            record: Some(r.clone()),
        },
        Change::Cluster {
            id: "device:p1d".into(),
            cluster: Some(ClusterOf {
                cluster: "account:a".into(),
                hub: false,
            }),
        },
        Change::Cluster {
            id: "account:a".into(),
            cluster: Some(ClusterOf {
                cluster: "account:a".into(),
                hub: false,
            }),
        },
        Change::Member {
            cluster: "account:a".into(),
            member: "device:p1d".into(),
            present: true,
        },
    ];
    store
        .commit(&changes, &[], &Progress::default())
        .expect("commit");
    assert_eq!(store.commit_count(), 1);
    let view = store.read();
    assert_eq!(view.commit_count(), 1);
    assert_eq!(
        view.search("profile:p1", 10).expect("search"),
        ["profile:p1", "profile:p10"]
    );
    assert_eq!(
        view.search("profile:p1", 1).expect("search"),
        ["profile:p1"]
    );
    assert_eq!(
        view.search("profile:q\u{0}", 10).expect("search"),
        ["profile:q\u{0}"]
    );
    // Without a type: ids in every node type, and identifiers by prefix.
    let all: BTreeSet<String> = view.search("p1", 10).expect("search").into_iter().collect();
    assert_eq!(
        all,
        ["profile:p1", "profile:p10", "title:p1x"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_eq!(view.search("device:p", 10).expect("search"), ["device:p1d"]);
    assert!(view.search("nosuchtype:p", 10).expect("search").is_empty());
    drop(view);

    let schema = store.schema();
    assert_eq!(schema.node_types, ["profile", "title"]);
    assert_eq!(schema.edge_types, ["watched"]);
    assert_eq!(schema.reverse_edge_types, ["watched"]);

    for chunk in [1, 2, 3, 10_000] {
        let counts = store.namespace_counts(chunk).expect("counts");
        assert_eq!(counts["node/profile"], 4, "chunk {chunk}");
        assert_eq!(counts["node/title"], 1);
        assert_eq!(counts["edge/watched"], 1);
        assert_eq!(counts["edge_in/watched"], 1);
        assert_eq!(counts["identity/link"], 1);
        assert_eq!(counts["identity/id"], 2);
        assert_eq!(counts["identity/cluster"], 1);
    }
    // An empty commit changes nothing.
    store
        .commit(&[], &[], &Progress::default())
        .expect("commit");
    assert_eq!(store.commit_count(), 1);
    drop(store);
    let store = open_engine(tmp.path(), engine).expect("reopen");
    assert_eq!(store.commit_count(), 1, "read back from meta");
}

both_engines!(
    paging_equals_the_full_list,
    cursors_are_checked,
    search_schema_counts_and_commit_count
);
