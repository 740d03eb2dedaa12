//! Queries against a cluster: every process of a 2 × 2 `rdg run` cluster
//! answers for the whole graph exactly as one process holding everything
//! does, and says clearly when a peer it needs is not answering.
//!
//! Set-up as in `tests/kafka_e2e.rs`: rdkafka's MockCluster in this test
//! process, generated events without deletes (so the graph does not depend
//! on how partitions interleave), a 1 × 1 `rdg run` as the reference, and a
//! 2 × 2 cluster with `--listen` and `--http-hosts` on free loopback ports.
//! Checked against the reference, in sections:
//! (a) `rdg export --url` of either process (byte for byte);
//! (b) node, identity and neighbour-list lookups of a sample of keys on
//!     both processes (the JSON of `rdg query --state`), paged with small
//!     pages too; then traversals, identity paths, neighbourhoods, links,
//!     cluster members and search (the JSON of a one-process server);
//! (c) a peer that stops answering (SIGSTOP) gives a 504 naming it, and one
//!     that is gone a 502 naming it.
//!
//! Apart from the cluster: a fan-out where one peer fails names that peer
//! and keeps every other peer's answer with its own process.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdg::model::{ClusterShape, shard};
use rdg::query::client::Client;
use rdg::query::{ServeConfig, Server, StaticStatus};
use rdg::store::{Direction, EdgeOrder, EdgeQuery, Store};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::{Value, json};
use support::*;

const EVENTS: u64 = 3000;
/// A bound on every wait, so a broken test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
/// Keys of each kind checked on both processes.
const SAMPLE: usize = 150;

/// Events and dead letters committed on every process, from `/v1/status`.
fn committed_on(bases: &[String]) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    for base in bases {
        let resp = agent().get(format!("{base}/v1/status")).call().ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let status: Value = serde_json::from_str(&resp.into_body().read_to_string().ok()?).ok()?;
        for d in status["dataflows"].as_object()?.values() {
            total.0 += d["events"].as_u64()?;
            total.1 += d["dead_letters"].as_u64()?;
        }
    }
    Some(total)
}

fn wait_committed(bases: &[String], expected: (u64, u64), procs: &mut [Child]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if committed_on(bases) == Some(expected) {
            return;
        }
        for p in procs.iter_mut() {
            if let Some(status) = p.try_wait().expect("try_wait") {
                panic!("rdg run exited early: {status}\n{}", stderr_of(p));
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {:?} of {expected:?} committed",
            committed_on(bases)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `rdg run` with the query API on `listen`; `cluster`: (processes,
/// process, hosts file, http-hosts file).
fn start_run(
    brokers: &str,
    state: &Path,
    workers: usize,
    listen: u16,
    cluster: Option<(usize, usize, &Path, &Path)>,
) -> Child {
    let mut cmd = command();
    cmd.arg("run")
        .arg("--dataflows")
        .arg(dataflows_dir())
        .arg("--state")
        .arg(state)
        .arg("--brokers")
        .arg(brokers)
        .args(["--workers", &workers.to_string()])
        .args(["--status-interval", "0", "--batch", "97"])
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--request-timeout-ms", "2000"]);
    if let Some((n, i, hosts, http_hosts)) = cluster {
        cmd.args(["--processes", &n.to_string(), "--process", &i.to_string()])
            .arg("--hosts")
            .arg(hosts)
            .arg("--http-hosts")
            .arg(http_hosts);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rdg run")
}

/// Up to `n` items spread evenly over `items`.
fn spread<T: Clone>(items: &[T], n: usize) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    (0..n).map(|i| items[i * items.len() / n].clone()).collect()
}

/// Walks a neighbour list page by page (`limit` each), following cursors.
fn walk_pages(base: &str, first: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let mut path = format!("{first}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let a = get(base, &path);
        assert_eq!(a.status, 200, "{path}: {}", a.body);
        let page = a.body["items"].as_array().expect("items");
        assert!(page.len() <= limit);
        items.extend(page.iter().cloned());
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
    panic!("{first}: paging did not end");
}

/// `type:id` split in two.
fn split(id: &str) -> (String, String) {
    let (t, i) = id.split_once(':').expect("type:id");
    (t.to_string(), i.to_string())
}

/// The process (of 2 × 2 workers) that owns a node.
fn owner(id: &str) -> usize {
    shard::worker(shard::node(id), 4) / 2
}

/// The reference run and the running 2 × 2 cluster over the same events.
struct Fixture {
    dir: tempfile::TempDir,
    kafka: MockCluster<'static, DefaultProducerContext>,
    /// The 1 × 1 run's state, and its export.
    single: PathBuf,
    reference: Vec<u8>,
    /// The cluster's states (`process-I`), query APIs and processes.
    states: PathBuf,
    bases: Vec<String>,
    procs: Vec<Child>,
}

impl Fixture {
    /// Everything committed on the reference and on the cluster.
    fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let opts = gen_opts(EVENTS, false);

        // The reference counts: a file replay of the same events.
        let files = event_files(&opts, &dir.path().join("input"));
        let file_state = dir.path().join("file-state");
        replay(&file_state, 1, &files);
        let expected = committed(&file_state);
        let kafka = mock_with_events(4, &opts);
        let brokers = kafka.bootstrap_servers();

        // The reference: one process, one worker, until everything is in.
        let single = dir.path().join("single");
        let port = free_ports(1)[0];
        let mut one = vec![start_run(&brokers, &single, 1, port, None)];
        wait_committed(&[format!("http://127.0.0.1:{port}")], expected, &mut one);
        stop_all(one, PATIENCE);
        let reference = run_ok(command().arg("export").arg("--state").arg(&single));

        // The cluster: 2 processes × 2 workers, each serving the query API.
        let ports = free_ports(4);
        let hosts = dir.path().join("hosts");
        let http_hosts = dir.path().join("http-hosts");
        write_hosts(&hosts, &ports[..2]);
        write_hosts(&http_hosts, &ports[2..]);
        let states = dir.path().join("cluster");
        let bases: Vec<String> = ports[2..]
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut procs: Vec<Child> = (0..2)
            .map(|i| {
                let state = states.join(format!("process-{i}"));
                let cluster = Some((2, i, hosts.as_path(), http_hosts.as_path()));
                start_run(&brokers, &state, 2, ports[2 + i], cluster)
            })
            .collect();
        wait_committed(&bases, expected, &mut procs);
        eprintln!("cluster committed everything after {:?}", started.elapsed());
        Fixture {
            dir,
            kafka,
            single,
            reference,
            states,
            bases,
            procs,
        }
    }
}

/// The keys of the reference export.
struct Sample {
    lines: Vec<Value>,
    nodes: Vec<String>,
    identities: Vec<String>,
    /// (type, from, to)
    edges: Vec<(String, String, String)>,
}

impl Sample {
    fn of(export: &[u8]) -> Sample {
        let lines = parse_export(std::str::from_utf8(export).expect("utf-8"));
        let nodes = of_ns(&lines, "node")
            .iter()
            .map(|v| format!("{}:{}", s(v, "type"), s(v, "id")))
            .collect();
        let identities = of_ns(&lines, "identity")
            .iter()
            .map(|v| s(v, "id").to_string())
            .collect();
        let edges = of_ns(&lines, "edge")
            .iter()
            .map(|v| (s(v, "type").into(), s(v, "from").into(), s(v, "to").into()))
            .collect();
        Sample {
            lines,
            nodes,
            identities,
            edges,
        }
    }
}

#[test]
fn every_process_answers_for_the_whole_graph() {
    let started = Instant::now();
    let fx = Fixture::start();
    exports_equal_the_reference(&fx);
    let sample = Sample::of(&fx.reference);
    assert!(sample.nodes.len() > 100 && sample.identities.len() > 100 && sample.edges.len() > 100);
    query_url_prints_what_query_state_prints(&fx, &sample);
    let store = Store::open(&fx.single).expect("open the reference state");
    lookups_equal_the_reference(&fx, &sample, &store);
    multi_reads_equal_the_reference(&fx, &sample, &store);
    record_ages_are_reported(&fx, started.elapsed());
    time_delays_are_reported(&fx, started.elapsed());
    let Fixture {
        dir,
        kafka,
        states,
        bases,
        procs,
        ..
    } = fx;
    let procs = a_stopped_peer_is_a_504_naming_it(&sample, &bases, procs);
    stop_all(procs, PATIENCE);
    a_gone_peer_is_a_502_naming_it(&sample, &store, &states);
    drop((kafka, dir));
    eprintln!("done after {:?}", started.elapsed());
}

/// (a) The export from either process is the one-process export; each
/// process holds a share, and the shares add up to the whole.
fn exports_equal_the_reference(fx: &Fixture) {
    for base in &fx.bases {
        let got = run_ok(command().arg("export").arg("--url").arg(base));
        assert!(
            got == fx.reference,
            "rdg export --url {base}: {} bytes, expected {} bytes",
            got.len(),
            fx.reference.len()
        );
    }
    let mut shares = 0;
    for base in &fx.bases {
        let share = get_bytes(base, "/v1/export?scope=local");
        assert!(share.len() < fx.reference.len() && !share.is_empty());
        shares += share.len();
    }
    assert_eq!(shares, fx.reference.len());
}

/// Every process reports, per dataflow, how old each record it read was
/// when a commit made it queryable: every record counted (at least the
/// events it committed, which exclude dead letters and ignored records),
/// every age within the test's run so far (the events were produced after
/// it started).
fn record_ages_are_reported(fx: &Fixture, so_far: Duration) {
    for base in &fx.bases {
        let text = String::from_utf8(get_bytes(base, "/metrics")).expect("utf-8 metrics");
        for dataflow in ["playback", "gaming", "login"] {
            // The value of metric `name` for this dataflow.
            let value = |name: &str| {
                metric_value(base, &text, &format!("{name}{{dataflow=\"{dataflow}\"}}"))
            };
            let count = value("rdg_record_age_at_commit_seconds_count");
            let sum = value("rdg_record_age_at_commit_seconds_sum");
            let events = value("rdg_events_total");
            assert!(
                count >= 1.0 && count >= events,
                "{base}: {dataflow}: {count} record ages, {events} events committed"
            );
            assert!(
                sum >= 0.0 && sum <= count * so_far.as_secs_f64(),
                "{base}: {dataflow}: ages sum to {sum} s over {count} records, the test ran {so_far:?}"
            );
        }
    }
}

/// The value of `series` (a metric's name with its labels, if any) in the
/// `/metrics` text of `base`.
fn metric_value(base: &str, text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("{base}/metrics lacks {prefix:?}:\n{text}"))
        .parse()
        .expect("a number")
}

/// Every process reports how long its live times took to reach its store,
/// in two parts (to the writer, then to the commit's start): at least one
/// time each (every process committed events), none longer than the test
/// has run (a time that is not a wall-clock millisecond, the rebuild's 0 or
/// a first time of 1, would count as decades).
fn time_delays_are_reported(fx: &Fixture, so_far: Duration) {
    for base in &fx.bases {
        let text = String::from_utf8(get_bytes(base, "/metrics")).expect("utf-8 metrics");
        let value = |series: &str| metric_value(base, &text, series);
        for part in ["dataflow", "commit_wait"] {
            let count = value(&format!("rdg_live_time_{part}_seconds_count"));
            let sum = value(&format!("rdg_live_time_{part}_seconds_sum"));
            assert!(count >= 1.0, "{base}: {part}: {count} times");
            assert!(
                sum >= 0.0 && sum <= count * so_far.as_secs_f64(),
                "{base}: {part}: {sum} s over {count} times, the test ran {so_far:?}"
            );
        }
    }
}

/// (b) `rdg query --url` of either process prints what `--state` prints
/// (before the test opens the reference state itself).
fn query_url_prints_what_query_state_prints(fx: &Fixture, sample: &Sample) {
    for id in spread(&sample.nodes, 3) {
        let (t, i) = split(&id);
        let by_state = run_ok(
            command()
                .args(["query", "--state"])
                .arg(&fx.single)
                .args(["node", &t, &i]),
        );
        for base in &fx.bases {
            let by_url = run_ok(command().args(["query", "--url", base, "node", &t, &i]));
            assert_eq!(
                String::from_utf8_lossy(&by_url),
                String::from_utf8_lossy(&by_state)
            );
        }
    }
}

/// (b) Both processes answer every sampled node, identity and neighbour
/// list as the reference does; a node asked of the process that does not
/// own it is forwarded, and the answer says it was read on the owner.
fn lookups_equal_the_reference(fx: &Fixture, sample: &Sample, store: &Store) {
    let clients: Vec<Client> = fx.bases.iter().map(|b| Client::new(b, None)).collect();
    for id in spread(&sample.nodes, SAMPLE) {
        let expected = serde_json::to_value(store.node(&id).expect("node")).expect("json");
        let (t, i) = split(&id);
        for (p, c) in clients.iter().enumerate() {
            let got = c.node(&t, &i).expect("node").unwrap_or(Value::Null);
            assert_eq!(got, expected, "node {id} from process {p}");
        }
        let a = get(
            &fx.bases[1 - owner(&id)],
            &format!("/v1/nodes/{}", segs(&id)),
        );
        assert_eq!(a.status, 200);
        assert_eq!(
            a.headers.get("x-rdg-commits").map(|c| c.split('=').next()),
            Some(Some(owner(&id).to_string().as_str())),
            "{id}: {:?}",
            a.headers
        );
    }

    let mut sampled_ids = spread(&sample.identities, SAMPLE);
    sampled_ids.push("device:no-such-device".to_string());
    for id in &sampled_ids {
        let expected = serde_json::to_value(store.identity(id).expect("identity")).expect("json");
        let (t, i) = split(id);
        for (p, c) in clients.iter().enumerate() {
            let got = c.identity(&t, &i).expect("identity").unwrap_or(Value::Null);
            assert_eq!(got, expected, "identity {id} from process {p}");
        }
    }

    // Neighbour lists, both ways, both orders, whole and in pages of 3.
    let reverse: BTreeSet<&str> = ["played", "logged_in_from", "has_email", "watched"].into();
    let mut lists: Vec<(String, String, Direction)> = Vec::new();
    for (t, from, to) in spread(&sample.edges, SAMPLE / 2) {
        lists.push((t.clone(), from, Direction::Out));
        if reverse.contains(t.as_str()) {
            lists.push((t, to, Direction::In));
        }
    }
    for (edge_type, id, direction) in &lists {
        let (t, i) = split(id);
        for order in [EdgeOrder::Id, EdgeOrder::Recent] {
            let q = EdgeQuery {
                direction: *direction,
                limit: None,
                since: None,
                order,
            };
            let items = store.edges(edge_type, id, &q).expect("edges");
            let dir = direction.as_str();
            let expected = json!({
                "node": id, "edge_type": edge_type, "direction": dir, "items": items,
            });
            for (p, c) in clients.iter().enumerate() {
                let got = c.edges(edge_type, &t, &i, &q).expect("edges");
                assert_eq!(got, expected, "{edge_type} {dir} {id} from process {p}");
                let first = format!(
                    "/v1/edges/{}/{}?direction={dir}&order={}",
                    seg(edge_type),
                    segs(id),
                    order.as_str()
                );
                let paged = walk_pages(&fx.bases[p], &first, 3);
                assert_eq!(
                    Value::Array(paged),
                    expected["items"],
                    "pages of 3: {edge_type} {dir} {id} from process {p}"
                );
            }
        }
    }
}

/// (b) The same JSON as one process serving the reference state, for the
/// multi-read routes: traversals, neighbourhoods, links, cluster members,
/// identity paths, search.
fn multi_reads_equal_the_reference(fx: &Fixture, sample: &Sample, store: &Store) {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..ServeConfig::default()
    };
    let server = Server::start(store.clone(), config, Arc::new(StaticStatus)).expect("server");
    let reference_base = format!("http://{}", server.addr());
    let same = |path: &str, body: Option<&Value>| {
        let ask = |base: &str| match body {
            Some(b) => post(base, path, &b.to_string()),
            None => get(base, path),
        };
        let expected = ask(&reference_base);
        for (p, base) in fx.bases.iter().enumerate() {
            let got = ask(base);
            assert_eq!(
                (got.status, &got.body),
                (expected.status, &expected.body),
                "{path} {body:?} from process {p}"
            );
        }
        expected
    };
    let accounts: Vec<&String> = sample
        .nodes
        .iter()
        .filter(|n| n.starts_with("account:"))
        .collect();
    for a in spread(&accounts, 8) {
        let hops = json!({"start": a, "hops": [
            {"edge_type": "has_profile"},
            {"edge_type": "watched", "limit": 5},
            {"edge_type": "watched", "direction": "in", "limit": 7}
        ], "limit": 500});
        let t = same("/v1/traverse", Some(&hops));
        assert_eq!(t.status, 200, "{}", t.body);
        let logins = json!({"start": a, "hops": [
            {"edge_type": "logged_in_from"},
            {"edge_type": "logged_in_from", "direction": "in"}
        ]});
        same("/v1/traverse", Some(&logins));
        same(&format!("/v1/neighbourhood/{}?limit=4", segs(a)), None);
        same(&format!("/v1/links/{}", segs(a)), None);
    }
    // Identity paths between members of the larger clusters.
    let mut by_cluster: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in of_ns(&sample.lines, "identity") {
        if v["hub"] == false {
            by_cluster
                .entry(s(v, "cluster").to_string())
                .or_default()
                .push(s(v, "id").to_string());
        }
    }
    let mut big: Vec<(&String, &Vec<String>)> = by_cluster.iter().collect();
    big.sort_by_key(|(_, m)| std::cmp::Reverse(m.len()));
    let mut paths = 0;
    for (c, members) in big.into_iter().take(10) {
        same(&format!("/v1/clusters/{}", segs(c)), None);
        for m in spread(members, 3) {
            let p = same(&format!("/v1/identity/{}/path/{}", segs(c), segs(&m)), None);
            paths += usize::from(p.status == 200);
        }
        same(&format!("/v1/links/{}?limit=2&order=recent", segs(c)), None);
    }
    assert!(paths > 5, "only {paths} identity paths found");
    for q in ["acc", "profile:acc1", "d", "title:", "zzz"] {
        same(&format!("/v1/search?q={}&limit=7", seg(q)), None);
    }
}

/// (c) A peer that stops answering: a 504 naming it, in bounded time; the
/// same request answers again once it is back.
fn a_stopped_peer_is_a_504_naming_it(
    sample: &Sample,
    bases: &[String],
    procs: Vec<Child>,
) -> Vec<Child> {
    let owned_by_1 = sample
        .nodes
        .iter()
        .find(|id| owner(id) == 1)
        .expect("a node of process 1");
    let path = format!("/v1/nodes/{}", segs(owned_by_1));
    assert_eq!(get(&bases[0], &path).status, 200);
    signal(&procs[1], "-STOP");
    let asked = Instant::now();
    let a = get(&bases[0], &path);
    signal(&procs[1], "-CONT");
    assert_eq!(a.status, 504, "{}", a.body);
    let msg = a.body["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("process 1") && msg.contains(&bases[1]),
        "the message names the peer: {msg}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(
        get(&bases[0], &path).status,
        200,
        "answers again once it is back"
    );
    procs
}

/// (c) A peer that is gone: a 502 naming it (servers over the stopped
/// cluster's states, so that the other process lives on); what process 0
/// owns it still answers.
fn a_gone_peer_is_a_502_naming_it(sample: &Sample, store: &Store, states: &Path) {
    let owned_by = |p: usize| {
        sample
            .nodes
            .iter()
            .find(|id| owner(id) == p)
            .expect("a node of each process")
    };
    let ports = free_ports(2);
    let peers: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut servers = (0..2).map(|i| {
        let store = open_when_free(&states.join(format!("process-{i}")));
        let config = ServeConfig {
            listen: format!("127.0.0.1:{}", ports[i]).parse().expect("addr"),
            cluster: Some(ClusterShape {
                processes: 2,
                process: i,
                workers: 2,
                addresses: Vec::new(),
                query_urls: peers.clone(),
            }),
            ..ServeConfig::default()
        };
        Server::start(store, config, Arc::new(StaticStatus)).expect("server")
    });
    let (s0, s1) = (servers.next().expect("0"), servers.next().expect("1"));
    let expected_node = serde_json::to_value(store.node(owned_by(1)).expect("node")).expect("json");
    let (t, i) = split(owned_by(1));
    assert_eq!(
        Client::new(&peers[0], None).node(&t, &i).expect("node"),
        Some(expected_node)
    );
    s1.stop().expect("stop process 1's server");
    for path in [
        format!("/v1/nodes/{}", segs(owned_by(1))),
        format!("/v1/identity/{}", segs(&sample.identities[0])),
        "/v1/export".to_string(),
    ] {
        get(&peers[0], &path).error(502, "process 1");
        let a = get(&peers[0], &path);
        assert!(
            a.text.contains(&peers[1]),
            "{path}: names the peer: {}",
            a.text
        );
    }
    let out = command()
        .args(["export", "--url", &peers[0]])
        .output()
        .expect("export");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("process 1"));
    let path = format!("/v1/nodes/{}", segs(owned_by(0)));
    assert_eq!(get(&peers[0], &path).status, 200);
    s0.stop().expect("stop");
}

/// A fake peer's answer to a fan-out read: `items` (a page, a search, a
/// cluster's members) with freshness headers saying commit `commit`.
fn fake_answer(target: &str, commit: u64, item: &str) -> Reply {
    let fresh = vec![
        ("X-Rdg-Commit".to_string(), commit.to_string()),
        ("X-Rdg-Watermark".to_string(), format!("playback={commit}")),
        ("X-Rdg-Offsets".to_string(), String::new()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    let body = if target.starts_with("/v1/clusters/") {
        json!({"cluster": "account:x", "members": [item]})
    } else if target.starts_with("/v1/search") {
        json!({"q": "account", "items": [item]})
    } else {
        let edge = json!({"node": item, "count": 1, "first_seen": 0, "last_seen": 0, "props": {}});
        json!({"node": "account:x", "items": [edge], "next_cursor": null})
    };
    (200, fresh, body.to_string())
}

/// Process 0 of a 3-process cluster (a real server over an empty store)
/// with two fake peers: every fan-out answer stays with the process that
/// sent it (`X-Rdg-Commits` lists each process's own commit count, the
/// items are each process's), and when one peer fails (an error status,
/// an answer that is not JSON, no answer at all) the answer is that
/// process's 502, naming it and no other.
#[test]
fn a_failing_peer_is_named_and_no_other_answer_moves() {
    let one = FakePeer::start(|t| fake_answer(t, 101, "account:from-1"));
    let two = FakePeer::start(|t| fake_answer(t, 202, "account:from-2"));
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state")).expect("open");
    let port = free_ports(1)[0];
    let me = format!("http://127.0.0.1:{port}");
    let config = ServeConfig {
        listen: format!("127.0.0.1:{port}").parse().expect("addr"),
        request_timeout: Duration::from_secs(2),
        cluster: Some(ClusterShape {
            processes: 3,
            process: 0,
            workers: 1,
            addresses: Vec::new(),
            query_urls: vec![me.clone(), one.base.clone(), two.base.clone()],
        }),
        ..ServeConfig::default()
    };
    let server = Server::start(store, config, Arc::new(StaticStatus)).expect("server");
    let fan_outs = [
        "/v1/search?q=account&limit=10",
        "/v1/links/account/x",
        "/v1/edges/watched/title/x?direction=in",
        "/v1/clusters/account/x",
    ];
    for path in fan_outs {
        let a = get(&me, path);
        assert_eq!(a.status, 200, "{path}: {}", a.describe());
        assert_eq!(a.headers["x-rdg-commits"], "0=0,1=101,2=202", "{path}");
        assert_eq!(a.headers["x-rdg-commit"], "303", "{path}");
        let text = a.text.clone();
        assert!(
            text.contains("account:from-1") && text.contains("account:from-2"),
            "{path}: {text}"
        );
    }

    type Broken = fn(&str) -> Reply;
    let broken: [(&str, Broken); 2] = [
        ("answered 500: boom", |_| {
            (500, Vec::new(), json!({"error": "boom"}).to_string())
        }),
        ("does not understand", |t| {
            let (status, headers, _) = fake_answer(t, 101, "x");
            (status, headers, "not json".to_string())
        }),
    ];
    for (what, reply) in broken {
        one.set(reply);
        for path in fan_outs {
            let a = get(&me, path);
            a.error(502, &format!("process 1 of the cluster ({})", one.base));
            a.error(502, what);
            assert!(
                !a.text.contains("process 2") && !a.text.contains(&two.base),
                "{path}: only process 1 failed: {}",
                a.describe()
            );
        }
    }
    // A peer that does not answer in time is a 504 naming it.
    one.set(|_| {
        std::thread::sleep(Duration::from_secs(3));
        (200, Vec::new(), String::new())
    });
    get(&me, fan_outs[0]).error(504, &format!("process 1 of the cluster ({})", one.base));
    one.set(|t| fake_answer(t, 101, "account:from-1"));
    assert_eq!(get(&me, fan_outs[0]).status, 200);
    assert!(two.seen.lock().expect("seen").len() >= fan_outs.len());
    server.stop().expect("stop");
}
