//! The query service, route by route, against a real server on a loopback
//! port (port 0): answers cross-checked with the export and the store's own
//! reads, paging while another thread commits, reads never seeing half of
//! a commit, identity paths, traversal defaults and caps, auth, bad input
//! (each with its 4xx and message), the OpenAPI document against the live
//! routes, status and metrics, and `rdg query --url` against `--state`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdg::model::{Change, ClusterOf, DataflowProgress, Progress, Record};
use rdg::query::{LiveGauges, LiveStatus, ROUTES, ServeConfig, Server, StaticStatus};
use rdg::store::{Direction, EdgeOrder, EdgeQuery, Store};
use serde_json::{Value, json};
use support::*;

// ---------------------------------------------------------------------------
// helpers

/// A server on a loopback port over `store`.
fn start(store: &Store, config: ServeConfig, live: Arc<dyn LiveStatus>) -> (Server, String) {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..config
    };
    let server = Server::start(store.clone(), config, live).expect("server starts");
    let base = format!("http://{}", server.addr());
    (server, base)
}

fn start_default(store: &Store) -> (Server, String) {
    start(store, ServeConfig::default(), Arc::new(StaticStatus))
}

fn rec(count: u64, first: i64, last: i64, props: &str) -> Record {
    Record {
        count,
        first_seen: first,
        last_seen: last,
        props: props.into(),
    }
}

fn edge(t: &str, from: &str, to: &str, r: Option<Record>) -> Change {
    Change::Edge {
        edge_type: t.into(),
        from: from.into(),
        to: to.into(),
        dataflow: "playback".into(),
        reverse: true,
        record: r,
    }
}

fn progress(watermark: i64) -> Progress {
    let mut p = Progress::default();
    p.dataflows.insert(
        "playback".into(),
        DataflowProgress {
            events: 1,
            late: 0,
            watermark: Some(watermark),
            record_times: Default::default(),
        },
    );
    p.positions.insert(("playback".into(), "0".into()), 1);
    p
}

/// The sample in `data/` replayed by the binary, then opened here.
fn sample() -> (tempfile::TempDir, Store, Vec<Value>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay(&state, 1, &data_files());
    let lines = parse_export(&support::export(&state));
    let store = open_when_free(&state);
    (tmp, store, lines)
}

// ---------------------------------------------------------------------------
// answers

#[test]
fn nodes_edges_and_identity_agree_with_the_export_and_the_store() {
    let (_tmp, store, lines) = sample();
    let (_server, base) = start_default(&store);

    // Nodes: the export line, exactly; freshness headers name the state.
    let nodes = of_ns(&lines, "node");
    for v in nodes.iter().step_by(37) {
        let ident = format!(
            "{}:{}",
            v["type"].as_str().expect("type"),
            v["id"].as_str().expect("id")
        );
        let a = get(&base, &format!("/v1/nodes/{}", segs(&ident)));
        assert_eq!(a.ok(), *v, "node {ident}");
        assert_eq!(a.headers["x-rdg-commit"], store.commit_count().to_string());
        assert!(
            a.headers["x-rdg-watermark"].contains("playback=17"),
            "{:?}",
            a.headers
        );
        assert!(
            a.headers["x-rdg-offsets"].contains("playback/playback.jsonl="),
            "{:?}",
            a.headers
        );
    }
    get(&base, "/v1/nodes/profile/nope").error(404, "not found: profile:nope");

    // Edges: every page of every order walks the store's full list.
    let edges = of_ns(&lines, "edge");
    let mut from_counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for e in &edges {
        *from_counts
            .entry((
                e["type"].as_str().expect("t"),
                e["from"].as_str().expect("f"),
            ))
            .or_default() += 1;
    }
    let busy: Vec<(&str, &str)> = from_counts
        .iter()
        .filter(|(_, n)| **n >= 5)
        .map(|(k, _)| *k)
        .take(6)
        .collect();
    assert!(!busy.is_empty());
    for (edge_type, from) in busy {
        for (order, order_name) in [(EdgeOrder::Id, "id"), (EdgeOrder::Recent, "recent")] {
            let want = store
                .edges(
                    edge_type,
                    from,
                    &EdgeQuery {
                        order,
                        ..EdgeQuery::default()
                    },
                )
                .expect("edges");
            let mut got: Vec<Value> = Vec::new();
            let mut cursor = String::new();
            loop {
                let a = get(
                    &base,
                    &format!(
                        "/v1/edges/{edge_type}/{}?limit=2&order={order_name}&cursor={cursor}",
                        segs(from)
                    ),
                );
                let page = a.ok();
                assert_eq!(page["node"], from);
                assert_eq!(page["edge_type"], edge_type);
                assert_eq!(page["direction"], "out");
                got.extend(page["items"].as_array().expect("items").iter().cloned());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = seg(c),
                    None => break,
                }
            }
            assert_eq!(
                Value::Array(got),
                serde_json::to_value(&want).expect("json"),
                "{edge_type} from {from} order {order_name}"
            );
        }
    }

    // Incoming edges and `since`.
    let title = edges
        .iter()
        .find(|e| e["type"] == "watched")
        .map(|e| e["to"].as_str().expect("to"))
        .expect("a watched edge");
    let since = 1_700_001_000_000i64;
    let want = store
        .edges(
            "watched",
            title,
            &EdgeQuery {
                direction: Direction::In,
                since: Some(since),
                ..EdgeQuery::default()
            },
        )
        .expect("edges");
    let a = get(
        &base,
        &format!(
            "/v1/edges/watched/{}?direction=in&since={since}&limit=1000",
            segs(title)
        ),
    );
    assert_eq!(a.ok()["items"], serde_json::to_value(&want).expect("json"));
    assert_eq!(a.ok()["direction"], "in");

    // Identity: the store's view; no entry is a 404.
    let ident = of_ns(&lines, "identity")
        .into_iter()
        .find(|v| v["hub"] == false && v["cluster"] != v["id"])
        .expect("a clustered identifier");
    let id = ident["id"].as_str().expect("id");
    let a = get(&base, &format!("/v1/identity/{}", segs(id)));
    assert_eq!(
        a.ok(),
        &serde_json::to_value(store.identity(id).expect("identity").expect("some")).expect("json")
    );
    get(&base, "/v1/identity/device/nope").error(404, "no identity entry for device:nope");

    // Search finds nodes and identifiers by prefix.
    let a = get(&base, "/v1/search?q=device:dev-shared&limit=3");
    let items = a.ok()["items"].as_array().expect("items");
    assert!(!items.is_empty() && items.len() <= 3, "{}", a.describe());
    assert!(
        items
            .iter()
            .all(|i| i.as_str().expect("s").starts_with("device:dev-shared"))
    );

    // The neighbourhood groups every edge type and direction.
    let a = get(&base, &format!("/v1/neighbourhood/{}?limit=5", segs(title)));
    let n = a.ok();
    assert_eq!(n["node"], title);
    assert!(n["record"].is_object(), "{}", a.describe());
    let groups = n["groups"].as_array().expect("groups");
    assert!(
        groups
            .iter()
            .any(|g| g["edge_type"] == "watched" && g["direction"] == "in")
    );
}

#[test]
fn query_url_prints_what_query_state_prints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay(&state, 1, &data_files());
    let lines = parse_export(&support::export(&state));
    // A copy for `--state`, since the server holds the original.
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(&copy).expect("mkdir");
    for f in support::store::files_under(&state) {
        let to = copy.join(f.strip_prefix(&state).expect("under state"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&f, &to).expect("copy");
    }
    let store = open_when_free(&state);
    let (_server, base) = start_default(&store);
    let profile = of_ns(&lines, "edge")
        .into_iter()
        .filter(|e| e["type"] == "watched")
        .map(|e| e["from"].as_str().expect("from").to_string())
        .max_by_key(|p| {
            lines
                .iter()
                .filter(|e| e["ns"] == "edge" && e["from"] == p.as_str())
                .count()
        })
        .expect("a profile");
    let pid = profile.split_once(':').expect("type:id").1;
    let cases: Vec<Vec<&str>> = vec![
        vec!["node", "profile", pid],
        vec!["node", "profile", "nope"],
        vec!["edges", "watched", "profile", pid],
        vec![
            "edges", "watched", "profile", pid, "--limit", "2", "--order", "recent",
        ],
        vec![
            "edges",
            "watched",
            "profile",
            pid,
            "--since",
            "1700001500000",
        ],
        vec!["identity", "device", "dev-shared-0"],
        vec!["identity", "account", "nope"],
    ];
    for args in cases {
        let mut local: Vec<String> = vec!["query".into(), "--state".into()];
        local.push(copy.display().to_string());
        local.extend(args.iter().map(|s| s.to_string()));
        let mut remote: Vec<String> = vec!["query".into(), "--url".into(), base.clone()];
        remote.extend(args.iter().map(|s| s.to_string()));
        let (l, r) = (rdg(&local), rdg(&remote));
        assert_eq!(
            (l.code, &l.stdout, &l.stderr),
            (r.code, &r.stdout, &r.stderr),
            "{args:?}\nlocal: {}\nremote: {}",
            l.describe(),
            r.describe()
        );
    }
    // The export too, byte for byte.
    let local = rdg([
        "export".to_string(),
        "--state".into(),
        copy.display().to_string(),
    ]);
    let remote = rdg(["export", "--url", &base]);
    assert_eq!(remote.ok(), local.ok());
    assert!(local.stdout.lines().count() > 100);
}

#[test]
fn export_links_and_cluster_members_agree_with_the_store() {
    let (_tmp, store, lines) = sample();
    let (_server, base) = start_default(&store);
    let mut expected = Vec::new();
    store.export(&mut expected).expect("export");
    let expected = String::from_utf8(expected).expect("utf-8");
    for path in [
        "/v1/export",
        "/v1/export?scope=local",
        "/v1/export?scope=cluster",
    ] {
        let a = get(&base, path);
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.text, expected, "{path}");
        assert_eq!(a.headers["content-type"], "application/x-ndjson");
        assert_eq!(a.headers["x-rdg-commit"], store.commit_count().to_string());
    }
    get(&base, "/v1/export?scope=everything").error(400, "`scope` must be `cluster` or `local`");

    // Links: every identity entry's links, whole and in pages of 2.
    let ids = of_ns(&lines, "identity");
    assert!(!ids.is_empty());
    for v in ids.iter().step_by(7) {
        let id = v["id"].as_str().expect("id");
        let all = store.links(id, &EdgeQuery::default()).expect("links");
        assert!(!all.is_empty(), "{id} has an entry, so a link");
        let a = get(&base, &format!("/v1/links/{}?limit=1000", segs(id)));
        assert_eq!(
            a.ok()["items"],
            serde_json::to_value(&all).expect("json"),
            "{id}"
        );
        let mut paged = Vec::new();
        let mut cursor = String::new();
        loop {
            let a = get(
                &base,
                &format!("/v1/links/{}?limit=2&order=recent{cursor}", segs(id)),
            );
            paged.extend(a.ok()["items"].as_array().expect("items").iter().cloned());
            match a.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        let recent = store
            .links(
                id,
                &EdgeQuery {
                    order: EdgeOrder::Recent,
                    ..EdgeQuery::default()
                },
            )
            .expect("links");
        assert_eq!(
            Value::Array(paged),
            serde_json::to_value(&recent).expect("json")
        );
    }
    // Cluster members: the identity's members, by the cluster's id.
    for v in ids.iter().step_by(11) {
        let id = v["id"].as_str().expect("id");
        let identity = store.identity(id).expect("identity").expect("entry");
        let a = get(&base, &format!("/v1/clusters/{}", segs(&identity.cluster)));
        assert_eq!(
            *a.ok(),
            json!({"cluster": identity.cluster, "members": identity.members})
        );
    }
    get(&base, "/v1/clusters/account/nobody").error(404, "no cluster account:nobody");
    get(&base, "/v1/links/account/a?limit=0").error(400, "`limit` must be an integer");
    // A single process has no cluster: X-Rdg-Local changes nothing.
    let a = answer(
        agent()
            .get(format!("{base}/v1/search?q=acc"))
            .header("X-Rdg-Local", "1")
            .call()
            .expect("request"),
    );
    assert_eq!(a.body, get(&base, "/v1/search?q=acc").body);
    assert!(!a.headers.contains_key("x-rdg-commits"));
}

// ---------------------------------------------------------------------------
// consistency while commits run

/// Pages through one node's neighbours with a small page while another
/// thread adds, updates and removes edges. Neighbours never touched must be
/// returned exactly once; nothing twice; the walk strictly in order.
#[test]
fn paging_is_stable_while_another_thread_commits() {
    let (_tmp, store) = temp_store();
    let node = "profile:p";
    // Stable neighbours: even numbers; volatile ones: odd numbers.
    let stable: BTreeSet<String> = (0..300).map(|i| format!("title:t{:04}", i * 2)).collect();
    let initial: Vec<Change> = (0..300)
        .flat_map(|i| {
            [
                edge(
                    "watched",
                    node,
                    &format!("title:t{:04}", i * 2),
                    Some(rec(1, i, 1000 + (i % 17), "")),
                ),
                edge(
                    "watched",
                    node,
                    &format!("title:t{:04}", i * 2 + 1),
                    Some(rec(1, i, 1000 + (i % 13), "")),
                ),
            ]
        })
        .collect();
    store
        .commit(&initial, &[], &progress(2000))
        .expect("commit");
    let (_server, base) = start_default(&store);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0i64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let mut changes = Vec::new();
                for k in 0..20 {
                    let odd = (round * 37 + k * 11) % 300 * 2 + 1;
                    let t = format!("title:t{odd:04}");
                    changes.push(if (round + k) % 3 == 0 {
                        edge("watched", node, &t, None)
                    } else {
                        // Updates only raise last_seen (as ingestion does).
                        edge("watched", node, &t, Some(rec(2, 0, 2000 + round, "")))
                    });
                    // New neighbours anywhere in the id order (at most
                    // 600 of them, so that a walk ends).
                    changes.push(edge(
                        "watched",
                        node,
                        &format!("title:t{:04}x", (round * 13 + k * 7) % 600),
                        Some(rec(1, 0, 1500 + round, "")),
                    ));
                }
                store
                    .commit(&changes, &[], &progress(2000 + round))
                    .expect("commit");
                std::thread::sleep(Duration::from_millis(1));
            }
            round
        })
    };

    for order in ["id", "recent"] {
        for _walk in 0..3 {
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut cursor = String::new();
            let mut pages = 0;
            loop {
                let a = get(
                    &base,
                    &format!("/v1/edges/watched/profile/p?limit=7&order={order}&cursor={cursor}"),
                );
                pages += 1;
                for it in a.ok()["items"].as_array().expect("items") {
                    seen.push((
                        it["last_seen"].as_i64().expect("ls"),
                        it["node"].as_str().expect("node").to_string(),
                    ));
                }
                match a.ok()["next_cursor"].as_str() {
                    Some(c) => cursor = seg(c),
                    None => break,
                }
            }
            // At least the 300 stable neighbours, 7 a page; how many of the
            // others a walk meets depends on how fast the store commits.
            assert!(pages > 300 / 7, "the walk took {pages} pages");
            // Strictly in order: no duplicates, no going back.
            for w in seen.windows(2) {
                let ok = match order {
                    "id" => w[0].1 < w[1].1,
                    _ => w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1),
                };
                assert!(ok, "order {order}: {:?} then {:?}", w[0], w[1]);
            }
            let names: Vec<&String> = seen.iter().map(|(_, n)| n).collect();
            let unique: BTreeSet<&String> = names.iter().copied().collect();
            assert_eq!(
                unique.len(),
                names.len(),
                "order {order}: a neighbour twice"
            );
            for s in &stable {
                assert!(
                    unique.contains(s),
                    "order {order}: stable neighbour {s} missing"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().expect("writer");
    assert!(
        rounds > 5,
        "the writer committed {rounds} times during the walks"
    );
}

/// Each commit rewrites all of a node's edges and its record with one
/// generation number; a reader must never see two generations at once, nor
/// the data of one generation with the watermark of another.
fn reads_never_see_half_of_a_commit(engine: rdg::store::Engine) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = open_engine(tmp.path(), engine).expect("open");
    let batch = |g: i64| -> Vec<Change> {
        let props = format!(r#"{{"gen":{g}}}"#);
        let mut c: Vec<Change> = (0..200)
            .map(|i| {
                edge(
                    "watched",
                    "profile:p",
                    &format!("title:t{i:03}"),
                    Some(rec(1, 0, g, &props)),
                )
            })
            .collect();
        c.push(Change::Node {
            id: "profile:p".into(),
            dataflow: "playback".into(),
            record: Some(rec(1, 0, g, &props)),
        });
        c
    };
    store.commit(&batch(1), &[], &progress(1)).expect("commit");
    let (_server, base) = start_default(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut g = 1;
            while !stop.load(Ordering::Relaxed) {
                g += 1;
                store.commit(&batch(g), &[], &progress(g)).expect("commit");
            }
            g
        })
    };
    let until = Instant::now() + Duration::from_secs(3);
    let mut reads = 0;
    let mut generations = BTreeSet::new();
    while Instant::now() < until {
        let a = get(&base, "/v1/edges/watched/profile/p?limit=1000");
        let items = a.ok()["items"].as_array().expect("items");
        assert_eq!(items.len(), 200);
        let gens: BTreeSet<i64> = items
            .iter()
            .map(|i| i["props"]["gen"].as_i64().expect("gen"))
            .collect();
        assert_eq!(gens.len(), 1, "one answer saw generations {gens:?}");
        let g = *gens.iter().next().expect("one");
        // The freshness header names the state the answer was read from.
        assert_eq!(a.headers["x-rdg-watermark"], format!("playback={g}"));
        generations.insert(g);
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().expect("writer");
    assert!(
        last > 10 && generations.len() > 3,
        "{reads} reads saw {} of {last} generations",
        generations.len()
    );
}

both_engines!(reads_never_see_half_of_a_commit);

// ---------------------------------------------------------------------------
// identity paths and traversals

fn link(a: &str, b: &str, last: i64) -> Change {
    let (a, b) = if a < b { (a, b) } else { (b, a) };
    Change::Link {
        a: a.into(),
        b: b.into(),
        dataflow: "login".into(),
        mirrored: false,
        record: Some(rec(1, last, last, "")),
    }
}

fn member_of(cluster: &str, id: &str, hub: bool) -> Vec<Change> {
    let mut v = vec![Change::Cluster {
        id: id.into(),
        cluster: Some(ClusterOf {
            cluster: cluster.into(),
            hub,
        }),
    }];
    if !hub {
        v.push(Change::Member {
            cluster: cluster.into(),
            member: id.into(),
            present: true,
        });
    }
    v
}

#[test]
fn identity_path_explains_a_merge() {
    let (_tmp, store) = temp_store();
    // account:a - device:d1 - email:e - account:b, plus a shortcut-free
    // detour a - device:d2 - email:e; a hub device:h linked to a and c.
    let mut c = vec![
        link("account:a", "device:d1", 1),
        link("device:d1", "email:e", 2),
        link("email:e", "account:b", 3),
        link("account:a", "device:d2", 4),
        link("device:d2", "email:e", 5),
        link("device:h", "account:a", 6),
        link("device:h", "account:c", 7),
        link("account:c", "device:d3", 8),
    ];
    for m in [
        "account:a",
        "device:d1",
        "email:e",
        "account:b",
        "device:d2",
    ] {
        c.extend(member_of("account:a", m, false));
    }
    c.extend(member_of("device:h", "device:h", true));
    for m in ["account:c", "device:d3"] {
        c.extend(member_of("account:c", m, false));
    }
    store.commit(&c, &[], &progress(10)).expect("commit");
    let (_server, base) = start_default(&store);

    let a = get(&base, "/v1/identity/account/a/path/account/b");
    let p = a.ok();
    assert_eq!(p["cluster"], "account:a");
    assert_eq!(
        p["path"],
        json!(["account:a", "device:d1", "email:e", "account:b"])
    );
    let links = p["links"].as_array().expect("links");
    assert_eq!(links.len(), 3);
    assert_eq!(links[0]["a"], "account:a");
    assert_eq!(links[0]["b"], "device:d1");
    assert_eq!(links[2]["last_seen"], 3);

    let a = get(&base, "/v1/identity/account/b/path/account/b");
    assert_eq!(a.ok()["path"], json!(["account:b"]));
    get(&base, "/v1/identity/account/a/path/account/c").error(404, "different clusters");
    get(&base, "/v1/identity/account/a/path/device/h").error(404, "is a hub");
    get(&base, "/v1/identity/account/a/path/device/zz")
        .error(404, "device:zz has no identity entry");
}

#[test]
fn traversal_follows_hops_with_defaults_and_caps() {
    let (_tmp, store) = temp_store();
    let day = 24 * 3600 * 1000i64;
    let now = 1_000 * day;
    let mut c = vec![
        edge(
            "has_profile",
            "account:a1",
            "profile:p1",
            Some(rec(1, 0, now, "")),
        ),
        edge(
            "has_profile",
            "account:a1",
            "profile:p2",
            Some(rec(1, 0, now - day, "")),
        ),
        // Older than the 100-day default lookback.
        edge(
            "has_profile",
            "account:a1",
            "profile:old",
            Some(rec(1, 0, now - 101 * day, "")),
        ),
    ];
    for i in 0..400 {
        c.push(edge(
            "watched",
            "profile:p1",
            &format!("title:t{i:03}"),
            Some(rec(1, 0, now - i, r#"{"device":"d1"}"#)),
        ));
    }
    c.push(edge(
        "watched",
        "profile:p2",
        "title:t000",
        Some(rec(1, 0, now, "")),
    ));
    c.push(edge(
        "watched",
        "profile:p2",
        "title:only2",
        Some(rec(1, 0, now, "")),
    ));
    store.commit(&c, &[], &progress(now)).expect("commit");
    let config = ServeConfig {
        max_hops: 3,
        max_edges_per_hop: 500,
        ..ServeConfig::default()
    };
    let (_server, base) = start(&store, config, Arc::new(StaticStatus));

    // Defaults: out, 300 per node, since = watermark - 100 days, limit 1000.
    let a = post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","hops":[{"edge_type":"has_profile"},{"edge_type":"watched"}]}"#,
    );
    let t = a.ok();
    assert_eq!(t["truncated"], false);
    let hops = t["hops"].as_array().expect("hops");
    assert_eq!(hops[0]["since"], now - 100 * day);
    assert_eq!(hops[0]["limit"], 300);
    assert_eq!(hops[0]["direction"], "out");
    let reached0: Vec<&str> = hops[0]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["node"].as_str().expect("n"))
        .collect();
    assert_eq!(reached0, ["profile:p1", "profile:p2"]);
    let nodes1 = hops[1]["nodes"].as_array().expect("nodes");
    // p1's 300 most recent titles plus p2's `only2`; t000 reached by both.
    assert_eq!(nodes1.len(), 301);
    let t000 = nodes1
        .iter()
        .find(|n| n["node"] == "title:t000")
        .expect("t000");
    assert_eq!(t000["edges"].as_array().expect("edges").len(), 2);
    assert_eq!(t000["edges"][0]["from"], "profile:p1");
    assert_eq!(t000["edges"][0]["to"], "title:t000");
    assert_eq!(t000["edges"][0]["props"]["device"], "d1");
    assert!(nodes1.iter().all(|n| n["node"] != "title:t399"));

    // A total limit truncates; explicit since and per-hop limit apply.
    let a = post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","limit":50,"hops":[{"edge_type":"has_profile","since":0,"limit":1},{"edge_type":"watched","limit":500}]}"#,
    );
    let t = a.ok();
    assert_eq!(t["truncated"], true);
    assert_eq!(t["hops"][0]["nodes"].as_array().expect("n").len(), 1);
    assert_eq!(t["hops"][1]["nodes"].as_array().expect("n").len(), 49);

    // Back along the reverse index: who else watched t000 (the start is
    // never reached again).
    let a = post(
        &base,
        "/v1/traverse",
        r#"{"start":"profile:p2","hops":[{"edge_type":"watched"},{"edge_type":"watched","direction":"in"}]}"#,
    );
    let t = a.ok();
    let back: Vec<&str> = t["hops"][1]["nodes"]
        .as_array()
        .expect("n")
        .iter()
        .map(|n| n["node"].as_str().expect("n"))
        .collect();
    assert_eq!(back, ["profile:p1"]);
    assert_eq!(t["hops"][1]["nodes"][0]["edges"][0]["from"], "profile:p1");

    // Caps.
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","hops":[{"edge_type":"a"},{"edge_type":"b"},{"edge_type":"c"},{"edge_type":"d"}]}"#,
    )
    .error(400, "`hops` must list 1 to 3 hops, got 4");
    post(&base, "/v1/traverse", r#"{"start":"account:a1","hops":[]}"#)
        .error(400, "`hops` must list 1 to 3 hops, got 0");
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","hops":[{"edge_type":"watched","limit":501}]}"#,
    )
    .error(
        400,
        "hops[0]: `limit` must be an integer from 1 to 500, got `501`",
    );
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","limit":100000,"hops":[{"edge_type":"watched"}]}"#,
    )
    .error(400, "`limit` must be an integer from 1 to 10000");
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","hops":[{"edge_type":"watched","direction":"up"}]}"#,
    )
    .error(400, "hops[0]: `direction` must be `out` or `in`");
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"a1","hops":[{"edge_type":"watched"}]}"#,
    )
    .error(400, "`start` must be an identifier `type:id`");
    post(
        &base,
        "/v1/traverse",
        r#"{"start":"account:a1","hops":[{"edge_type":"watched","sinse":1}]}"#,
    )
    .error(400, "unknown field `sinse`");
    post(&base, "/v1/traverse", "{not json").error(400, "bad traversal request");
}

// ---------------------------------------------------------------------------
// auth, bad input, limits

#[test]
fn a_token_protects_every_route_but_health_and_the_page() {
    let (_tmp, store) = temp_store();
    let config = ServeConfig {
        auth_token: Some("s3cret-token".into()),
        ..ServeConfig::default()
    };
    let (_server, base) = start(&store, config, Arc::new(StaticStatus));
    for r in ROUTES {
        let path = sample_path(r.path);
        let a = if r.method == "POST" {
            post(&base, &path, "{}")
        } else {
            get(&base, &path)
        };
        let public = matches!(
            r.path,
            "/healthz" | "/readyz" | "/" | "/assets/explorer.js" | "/assets/explorer.css"
        );
        if public {
            assert_eq!(a.status, 200, "{} {}: {}", r.method, r.path, a.describe());
        } else {
            a.error(401, "this server needs a bearer token");
            assert_eq!(a.headers["www-authenticate"], "Bearer");
        }
    }
    get_with(&base, "/v1/status", Some("wrong")).error(401, "wrong bearer token");
    assert_eq!(
        get_with(&base, "/v1/status", Some("s3cret-token")).status,
        200
    );
    assert_eq!(
        get_with(&base, "/metrics", Some("s3cret-token")).status,
        200
    );
    // An unknown route says 401 too (nothing about what exists).
    get(&base, "/v1/secret").error(401, "bearer token");
}

/// A concrete path for a route template.
fn sample_path(template: &str) -> String {
    template
        .replace("{edge_type}", "watched")
        .replace("{type2}", "account")
        .replace("{id2}", "a2")
        .replace("{type}", "account")
        .replace("{id}", "a1")
        .replace("/v1/search", "/v1/search?q=a")
}

#[test]
fn bad_requests_get_a_4xx_that_says_what_is_allowed() {
    let (_tmp, store) = temp_store();
    store
        .commit(
            &[edge(
                "watched",
                "profile:p",
                "title:t",
                Some(rec(1, 0, 5, "")),
            )],
            &[],
            &progress(5),
        )
        .expect("commit");
    let (_server, base) = start_default(&store);
    let e = "/v1/edges/watched/profile/p";
    let cases: &[(&str, u16, &str)] = &[
        (
            &format!("{e}?limit=0"),
            400,
            "`limit` must be an integer from 1 to 1000, got `0`",
        ),
        (
            &format!("{e}?limit=5000"),
            400,
            "`limit` must be an integer from 1 to 1000, got `5000`",
        ),
        (&format!("{e}?limit=-1"), 400, "from 1 to 1000"),
        (
            &format!("{e}?since=yesterday"),
            400,
            "`since` must be a time in epoch milliseconds",
        ),
        (
            &format!("{e}?direction=sideways"),
            400,
            "`direction` must be `out` or `in`",
        ),
        (
            &format!("{e}?order=random"),
            400,
            "`order` must be `id` or `recent`",
        ),
        (&format!("{e}?cursor=@@@"), 400, "bad cursor"),
        (&format!("{e}?cursor=eA"), 400, "unknown kind"),
        (
            &format!("{e}?limit=1&limit=2"),
            400,
            "`limit` is given twice",
        ),
        (
            &format!("{e}?frobnicate=1"),
            400,
            "unknown parameter `frobnicate`; allowed: direction, limit, since, order, cursor",
        ),
        (
            &format!("{e}?cursor={}", "A".repeat(2000)),
            400,
            "`cursor` may be at most",
        ),
        (
            "/v1/nodes/pro:file/p",
            400,
            "a node type must be non-empty and without `:`",
        ),
        (
            &format!("/v1/nodes/profile/{}", "x".repeat(600)),
            400,
            "an identifier may be at most 512 bytes",
        ),
        ("/v1/nodes/profile/%FF", 400, "bad path"),
        ("/v1/search", 400, "`q` must be 1 to 512 bytes"),
        (
            "/v1/search?q=a&limit=100000",
            400,
            "`limit` must be an integer from 1 to 1000",
        ),
        (
            "/v1/status?verbose=1",
            400,
            "unknown parameter `verbose`; allowed: none",
        ),
        (
            &format!("/v1/nodes/profile/p?x={}", "y".repeat(5000)),
            414,
            "at most 4096 are allowed",
        ),
        ("/v1/nothing/here", 404, "no such route: /v1/nothing/here"),
        ("/v1/nodes/profile", 404, "no such route"),
        ("/v1/traverse", 405, "GET is not allowed on /v1/traverse"),
    ];
    for (path, status, fragment) in cases {
        get(&base, path).error(*status, fragment);
    }
    // A cursor of the other order.
    let a = get(&base, &format!("{e}?limit=1&order=recent"));
    assert!(a.ok()["next_cursor"].is_null());
    let cursor = rdg::store::EdgeCursor::Id {
        after: "title:a".into(),
    }
    .encode();
    get(&base, &format!("{e}?order=recent&cursor={cursor}")).error(
        400,
        "`cursor` was made for order=id, but this request asks for order=recent",
    );

    // Bodies: too large, then not JSON.
    let big = format!(
        r#"{{"start":"account:a","hops":[{{"edge_type":"{}"}}]}}"#,
        "w".repeat(70_000)
    );
    post(&base, "/v1/traverse", &big).error(413, "larger than 65536 bytes");

    // Garbage on the wire: an HTTP error or a closed connection, never a
    // dead server.
    let answer = raw(&base, b"GARBAGE\r\n\r\n");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    let answer = raw(
        &base,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer:?}"
    );
    assert_eq!(get(&base, "/healthz").status, 200);
}

#[test]
fn requests_that_take_too_long_are_cut_off() {
    let (_tmp, store) = temp_store();
    // A long chain: a path search has to walk it link by link.
    let n = 3000;
    let mut c = Vec::new();
    for i in 0..n {
        c.push(link(
            &format!("device:d{i:05}"),
            &format!("device:d{:05}", i + 1),
            1,
        ));
    }
    for i in 0..=n {
        c.extend(member_of(
            "device:d00000",
            &format!("device:d{i:05}"),
            false,
        ));
    }
    store.commit(&c, &[], &progress(1)).expect("commit");
    let config = ServeConfig {
        max_path_visits: 100,
        ..ServeConfig::default()
    };
    let (_server, base) = start(&store, config, Arc::new(StaticStatus));
    get(
        &base,
        &format!("/v1/identity/device/d00000/path/device/d{n:05}"),
    )
    .error(503, "gave up after visiting 100 identifiers");
    let config = ServeConfig {
        request_timeout: Duration::from_millis(1),
        ..ServeConfig::default()
    };
    let (_server2, base2) = start(&store, config, Arc::new(StaticStatus));
    get(
        &base2,
        &format!("/v1/identity/device/d00000/path/device/d{n:05}"),
    )
    .error(503, "took longer than the server allows (1 ms)");
    // The first server still finds short paths.
    let a = get(&base, "/v1/identity/device/d00000/path/device/d00003");
    assert_eq!(a.ok()["path"].as_array().expect("path").len(), 4);
}

// ---------------------------------------------------------------------------
// the document, status, metrics, health

#[test]
fn every_documented_route_answers_and_every_route_is_documented() {
    let (_tmp, store) = temp_store();
    let (_server, base) = start_default(&store);
    let doc = get(&base, "/openapi.json");
    let doc = doc.ok();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            let method = method.to_uppercase();
            documented.insert((method.clone(), path.clone()));
            let url = sample_path(path);
            let a = if method == "POST" {
                post(
                    &base,
                    &url,
                    r#"{"start":"account:a1","hops":[{"edge_type":"watched"}]}"#,
                )
            } else {
                get(&base, &url)
            };
            assert!(
                !(a.status == 404 && a.text.contains("no such route")) && a.status != 405,
                "{method} {path} is documented but not routed: {}",
                a.describe()
            );
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, routed);
}

#[test]
fn status_metrics_and_readiness() {
    let (_tmp, store) = temp_store();
    let mut p = progress(1234);
    p.dataflows.get_mut("playback").expect("playback").late = 2;
    store
        .commit(
            &[edge(
                "watched",
                "profile:p",
                "title:t",
                Some(rec(1, 0, 5, "")),
            )],
            &[rdg::model::DeadLetter {
                dataflow: "playback".into(),
                source: "playback.jsonl:3".into(),
                reason: "bad".into(),
            }],
            &p,
        )
        .expect("commit");
    let live = Arc::new(LiveGauges::new("run"));
    let (_server, base) = start(&store, ServeConfig::default(), live.clone());

    assert_eq!(get(&base, "/healthz").status, 200);
    get(&base, "/readyz").error(503, "not ready");
    live.set_ready(true);
    live.observe("playback", 10, Some(42));
    live.set_skipped_offsets("playback", 3);
    live.observe_commit(Duration::from_millis(3));
    live.observe_commit(Duration::from_millis(300));
    live.observe_record_ages("playback", [(30, 3), (5_000, 1)]);
    // A clock ahead of the producer's: counted as 0.
    live.observe_record_ages("gaming", [(-7, 1)]);
    live.observe_time_delays(Duration::from_millis(20), Duration::from_millis(90));
    live.observe_time_delays(Duration::from_millis(700), Duration::ZERO);
    assert_eq!(get(&base, "/readyz").ok()["ready"], true);

    let s = get(&base, "/v1/status");
    let s = s.ok();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["mode"], "run");
    assert_eq!(s["ready"], true);
    assert_eq!(s["commit"], 1);
    let d = &s["dataflows"]["playback"];
    assert_eq!(d["events"], 1);
    assert_eq!(d["late"], 2);
    assert_eq!(d["dead_letters"], 1);
    assert_eq!(d["watermark"], 1234);
    assert_eq!(d["offsets"]["0"], 1);
    assert_eq!(d["lag"], 42);
    assert_eq!(d["skipped_offsets"], 3);
    // Namespace sizes are counted in the background, right after start.
    let until = Instant::now() + Duration::from_secs(10);
    let counts = loop {
        let s = get(&base, "/v1/status");
        if !s.ok()["counts"].is_null() || Instant::now() > until {
            break s.ok()["counts"].clone();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(counts["namespaces"]["edge/watched"], 1, "{counts}");
    assert_eq!(counts["namespaces"]["dead_letter/playback"], 1, "{counts}");

    get(&base, "/v1/nodes/profile/p");
    let runs = store.sorted_runs().expect("runs")["edge/watched"];
    let runs_line = format!("rdg_store_sorted_runs{{namespace=\"edge/watched\"}} {runs}\n");
    let m = get(&base, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"].starts_with("text/plain"));
    for needle in [
        "rdg_events_total{dataflow=\"playback\"} 1",
        "rdg_late_events_total{dataflow=\"playback\"} 2",
        "rdg_dead_letters_total{dataflow=\"playback\"} 1",
        "rdg_watermark_milliseconds{dataflow=\"playback\"} 1234",
        "rdg_lag_messages{dataflow=\"playback\"} 42",
        "rdg_source_offsets_skipped_total{dataflow=\"playback\"} 3",
        "rdg_ingest_events_per_second{dataflow=\"playback\"}",
        "rdg_store_records{namespace=\"edge/watched\"} 1",
        "rdg_store_disk_bytes ",
        runs_line.as_str(),
        "rdg_ready 1",
        "rdg_commits_total 1",
        "rdg_http_requests_total{endpoint=\"/v1/nodes/{type}/{id}\",code=\"404\"} 1",
        "rdg_http_request_duration_seconds_bucket{le=\"0.0001\",endpoint=\"/v1/status\"}",
        // 3 ms and 300 ms: one commit up to 4 ms, both up to 512 ms.
        "rdg_commit_duration_seconds_bucket{le=\"0.004\"} 1\n",
        "rdg_commit_duration_seconds_bucket{le=\"0.256\"} 1\n",
        "rdg_commit_duration_seconds_bucket{le=\"0.512\"} 2\n",
        "rdg_commit_duration_seconds_count 2\n",
        // Three records 30 ms old and one 5 s old: each counted.
        "rdg_record_age_at_commit_seconds_bucket{le=\"0.032\",dataflow=\"playback\"} 3\n",
        "rdg_record_age_at_commit_seconds_bucket{le=\"4.096\",dataflow=\"playback\"} 3\n",
        "rdg_record_age_at_commit_seconds_bucket{le=\"8.192\",dataflow=\"playback\"} 4\n",
        "rdg_record_age_at_commit_seconds_count{dataflow=\"playback\"} 4\n",
        "rdg_record_age_at_commit_seconds_sum{dataflow=\"playback\"} 5.09\n",
        "rdg_record_age_at_commit_seconds_bucket{le=\"0.001\",dataflow=\"gaming\"} 1\n",
        "rdg_record_age_at_commit_seconds_sum{dataflow=\"gaming\"} 0.0\n",
        // Two live times: 20 ms and 700 ms to the writer, then 90 and 0 ms.
        "rdg_live_time_dataflow_seconds_bucket{le=\"0.032\"} 1\n",
        "rdg_live_time_dataflow_seconds_bucket{le=\"1.024\"} 2\n",
        "rdg_live_time_dataflow_seconds_sum 0.72\n",
        "rdg_live_time_commit_wait_seconds_bucket{le=\"0.001\"} 1\n",
        "rdg_live_time_commit_wait_seconds_bucket{le=\"0.064\"} 1\n",
        "rdg_live_time_commit_wait_seconds_bucket{le=\"0.128\"} 2\n",
        "rdg_live_time_commit_wait_seconds_count 2\n",
    ] {
        assert!(
            m.text.contains(needle),
            "metrics lack {needle:?}:\n{}",
            m.text
        );
    }
}

#[test]
fn the_server_stops_and_frees_its_port() {
    let (_tmp, store) = temp_store();
    let (server, base) = start_default(&store);
    let addr = server.addr();
    assert_eq!(get(&base, "/healthz").status, 200);
    server.stop().expect("stops");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening on {addr}"
    );
    // Binding a busy port is an error at start, not a dead thread.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = ServeConfig {
        listen: holder.local_addr().expect("addr"),
        ..ServeConfig::default()
    };
    let err = Server::start(store.clone(), busy, Arc::new(StaticStatus)).expect_err("busy port");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
}

// ---------------------------------------------------------------------------
// the binary

/// `rdg serve` with a token file, asked by `rdg query --url` with and
/// without the token, then stopped by SIGTERM.
#[test]
fn rdg_serve_with_a_token_answers_rdg_query_url_and_stops_on_sigterm() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    {
        let store = Store::open(&state).expect("open");
        store
            .commit(
                &[Change::Node {
                    id: "account:a1".into(),
                    dataflow: "login".into(),
                    record: Some(rec(1, 5, 7, r#"{"country":"NL"}"#)),
                }],
                &[],
                &progress(7),
            )
            .expect("commit");
    }
    let token = tmp.path().join("token");
    std::fs::write(&token, "  t0ken-123\n").expect("write token");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rdg"))
        .args(["serve", "--listen", "127.0.0.1:0", "--state"])
        .arg(&state)
        .arg("--auth-token-file")
        .arg(&token)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rdg serve starts");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("first line");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_string();

    let with = rdg([
        "query",
        "--url",
        url.as_str(),
        "--auth-token-file",
        token.to_str().expect("utf-8"),
        "node",
        "account",
        "a1",
    ]);
    let v: Value = serde_json::from_str(with.ok()).expect("json");
    assert_eq!(
        v,
        json!({"id":"account:a1","node_type":"account","first_seen":5,"last_seen":7,"props":{"country":"NL"}})
    );
    let without = rdg(["query", "--url", url.as_str(), "node", "account", "a1"]);
    without.expect_code(2);
    assert!(
        without.stderr.contains("401") && without.stderr.contains("bearer token"),
        "{}",
        without.describe()
    );
    assert_eq!(get(&url, "/healthz").status, 200);

    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", pid.as_str()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("rest of stderr");
    assert!(status.success(), "rdg serve exited with {status}: {rest}");
    assert!(rest.contains("stopped"), "{rest}");
}
