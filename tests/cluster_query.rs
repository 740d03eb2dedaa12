//! Queries against a cluster: every process of a 2 × 2 `rdg run` cluster
//! answers for the whole graph exactly as one process holding everything
//! does, and says clearly when a peer it needs is not answering.
//!
//! Set-up as in `tests/kafka_e2e.rs`: rdkafka's MockCluster in this test
//! process, generated events without deletes (so the graph does not depend
//! on how partitions interleave), a 1 × 1 `rdg run` as the reference, and a
//! 2 × 2 cluster with `--listen` and `--http-hosts` on free loopback ports.
//! Checked against the reference: `rdg export --url` of either process
//! (byte for byte); node, identity and neighbour-list lookups of a sample of
//! keys on both processes (the JSON of `rdg query --state`), paged with
//! small pages too; traversals, identity paths, neighbourhoods, links,
//! cluster members and search (the JSON of a one-process server). Then a
//! peer that stops answering (SIGSTOP) gives a 504 naming it, and one that
//! is gone a 502 naming it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdg::model::shard;
use rdg::query::client::Client;
use rdg::query::{ClusterView, ServeConfig, Server, StaticStatus};
use rdg::store::{Direction, EdgeOrder, EdgeQuery, Store};
use rdkafka::mocking::MockCluster;
use serde_json::{Value, json};

const EVENTS: u64 = 3000;
/// A bound on every wait, so a broken test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);
/// Keys of each kind checked on both processes.
const SAMPLE: usize = 150;

fn rdg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rdg"))
}

fn dataflows() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows")
}

fn gen_opts() -> rdg::generate::GenOptions {
    rdg::generate::GenOptions {
        events: EVENTS,
        seed: 11,
        delete_share: 0.0,
        ..rdg::generate::GenOptions::default()
    }
}

/// Free loopback ports.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn write_hosts(path: &Path, ports: &[u16]) {
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(path, text).expect("hosts file");
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Status, headers and JSON body of one request.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    let mut resp = resp.expect("request");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

fn get(base: &str, path: &str) -> Answer {
    answer(agent().get(format!("{base}{path}")).call())
}

fn post(base: &str, path: &str, body: &Value) -> Answer {
    answer(
        agent()
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string()),
    )
}

fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `type/id` path segments of `type:id`.
fn segs(ident: &str) -> String {
    let (t, id) = ident.split_once(':').expect("type:id");
    format!("{}/{}", seg(t), seg(id))
}

/// Events and dead letters committed on every process, from `/v1/status`.
fn committed(bases: &[String]) -> Option<(u64, u64)> {
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
        if committed(bases) == Some(expected) {
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
            committed(bases)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    err
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// SIGTERM to all (a cluster stops together), then each exit status must
/// be success.
fn stop_all(children: Vec<Child>) {
    for c in &children {
        signal(c, "-TERM");
    }
    for c in children {
        wait_success(c);
    }
}

fn wait_success(mut child: Child) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "rdg run after SIGTERM: {status}\n{}",
                stderr_of(&mut child)
            );
            return;
        }
        assert!(Instant::now() < deadline, "rdg run did not stop");
        std::thread::sleep(Duration::from_millis(50));
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
    let mut cmd = rdg();
    cmd.arg("run")
        .arg("--dataflows")
        .arg(dataflows())
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

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("run rdg");
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
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

#[test]
fn every_process_answers_for_the_whole_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();

    // The reference counts: a file replay of the same events.
    let input = dir.path().join("input");
    rdg::generate::generate(&gen_opts(), &input).expect("generate");
    let file_state = dir.path().join("file-state");
    run_ok(
        rdg()
            .arg("replay")
            .arg("--dataflows")
            .arg(dataflows())
            .arg("--state")
            .arg(&file_state)
            .args(["playback", "gaming", "login"].map(|t| input.join(format!("{t}.jsonl")))),
    );
    let expected = {
        let store = Store::open(&file_state).expect("open");
        let meta = store.meta().expect("meta");
        meta.dataflows
            .values()
            .fold((0, 0), |(e, d), m| (e + m.events, d + m.dead_letters))
    };

    let kafka = MockCluster::new(1).expect("mock cluster");
    for t in ["playback", "gaming", "login"] {
        kafka.create_topic(t, 4, 1).expect("topic");
    }
    let brokers = kafka.bootstrap_servers();
    let sent = rdg::produce::produce(
        &brokers,
        &BTreeMap::new(),
        rdg::generate::events(&gen_opts()),
        None,
        |_| {},
    )
    .expect("produce");
    assert_eq!(sent, EVENTS);

    // The reference: one process, one worker, until everything is in.
    let single = dir.path().join("single");
    let port = free_ports(1)[0];
    let mut one = vec![start_run(&brokers, &single, 1, port, None)];
    wait_committed(&[format!("http://127.0.0.1:{port}")], expected, &mut one);
    stop_all(one);
    let reference = run_ok(rdg().arg("export").arg("--state").arg(&single));

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
            start_run(
                &brokers,
                &states.join(format!("process-{i}")),
                2,
                ports[2 + i],
                Some((2, i, &hosts, &http_hosts)),
            )
        })
        .collect();
    wait_committed(&bases, expected, &mut procs);
    eprintln!("cluster committed everything after {:?}", started.elapsed());

    // (a) The export from either process is the one-process export.
    for base in &bases {
        let got = run_ok(rdg().arg("export").arg("--url").arg(base));
        assert!(
            got == reference,
            "rdg export --url {base}: {} bytes, expected {} bytes",
            got.len(),
            reference.len()
        );
    }
    // Each process holds a share, and the shares add up to the whole.
    let mut shares = 0;
    for base in &bases {
        let a = agent()
            .get(format!("{base}/v1/export?scope=local"))
            .call()
            .expect("local export")
            .into_body()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .expect("body");
        assert!(a.len() < reference.len() && !a.is_empty());
        shares += a.len();
    }
    assert_eq!(shares, reference.len());

    // (b) Both processes answer every sampled key as the reference does.
    let lines: Vec<Value> = String::from_utf8(reference.clone())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let of_ns = |ns: &str| -> Vec<&Value> { lines.iter().filter(|v| v["ns"] == ns).collect() };
    let nodes: Vec<String> = of_ns("node")
        .iter()
        .map(|v| {
            format!(
                "{}:{}",
                v["type"].as_str().expect("type"),
                v["id"].as_str().expect("id")
            )
        })
        .collect();
    let identities: Vec<String> = of_ns("identity")
        .iter()
        .map(|v| v["id"].as_str().expect("id").to_string())
        .collect();
    let edges: Vec<(String, String, String)> = of_ns("edge")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().expect(k).to_string();
            (s("type"), s("from"), s("to"))
        })
        .collect();
    assert!(nodes.len() > 100 && identities.len() > 100 && edges.len() > 100);
    let clients: Vec<Client> = bases.iter().map(|b| Client::new(b, None)).collect();
    let split = |id: &str| {
        let (t, i) = id.split_once(':').expect("type:id");
        (t.to_string(), i.to_string())
    };

    // `rdg query --url` of either process prints what `--state` prints
    // (before this test opens the reference state itself).
    for id in spread(&nodes, 3) {
        let (t, i) = split(&id);
        let by_state = run_ok(
            rdg()
                .args(["query", "--state"])
                .arg(&single)
                .args(["node", &t, &i]),
        );
        for base in &bases {
            let by_url = run_ok(rdg().args(["query", "--url", base, "node", &t, &i]));
            assert_eq!(
                String::from_utf8_lossy(&by_url),
                String::from_utf8_lossy(&by_state)
            );
        }
    }
    let store = Store::open(&single).expect("open the reference state");

    let mut forwarded = 0;
    for id in spread(&nodes, SAMPLE) {
        let expected = serde_json::to_value(store.node(&id).expect("node")).expect("json");
        let (t, i) = split(&id);
        for (p, c) in clients.iter().enumerate() {
            let got = c.node(&t, &i).expect("node").unwrap_or(Value::Null);
            assert_eq!(got, expected, "node {id} from process {p}");
        }
        // Asked of the process that does not own it: forwarded, and the
        // answer says it was read on the owner.
        let owner = shard::worker(shard::node(&id), 4) / 2;
        let a = get(&bases[1 - owner], &format!("/v1/nodes/{}", segs(&id)));
        assert_eq!(a.status, 200);
        assert_eq!(
            a.headers.get("x-rdg-commits").map(|c| c.split('=').next()),
            Some(Some(owner.to_string().as_str())),
            "{id}: {:?}",
            a.headers
        );
        forwarded += 1;
    }
    assert!(forwarded > 0);

    let mut sampled_ids = spread(&identities, SAMPLE);
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
    for (t, from, to) in spread(&edges, SAMPLE / 2) {
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
            let dir = if *direction == Direction::In {
                "in"
            } else {
                "out"
            };
            let expected = json!({
                "node": id, "edge_type": edge_type, "direction": dir, "items": items,
            });
            let order_name = if order == EdgeOrder::Id {
                "id"
            } else {
                "recent"
            };
            for (p, c) in clients.iter().enumerate() {
                let got = c.edges(edge_type, &t, &i, &q).expect("edges");
                assert_eq!(got, expected, "{edge_type} {dir} {id} from process {p}");
                let paged = walk_pages(
                    &bases[p],
                    &format!(
                        "/v1/edges/{}/{}?direction={dir}&order={order_name}",
                        seg(edge_type),
                        segs(id)
                    ),
                    3,
                );
                assert_eq!(
                    Value::Array(paged),
                    expected["items"],
                    "pages of 3: {edge_type} {dir} {id} from process {p}"
                );
            }
        }
    }

    // The same JSON as one process serving the reference state, for the
    // multi-read routes.
    let (reference_server, reference_base) = {
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ..ServeConfig::default()
        };
        let s = Server::start(store.clone(), config, Arc::new(StaticStatus)).expect("server");
        let base = format!("http://{}", s.addr());
        (s, base)
    };
    let same = |path: &str, body: Option<&Value>| {
        let ask = |base: &str| match body {
            Some(b) => post(base, path, b),
            None => get(base, path),
        };
        let expected = ask(&reference_base);
        for (p, base) in bases.iter().enumerate() {
            let got = ask(base);
            assert_eq!(
                (got.status, &got.body),
                (expected.status, &expected.body),
                "{path} {body:?} from process {p}"
            );
        }
        expected
    };
    let accounts: Vec<&String> = nodes.iter().filter(|n| n.starts_with("account:")).collect();
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
    for v in of_ns("identity") {
        if v["hub"] == false {
            by_cluster
                .entry(v["cluster"].as_str().expect("cluster").to_string())
                .or_default()
                .push(v["id"].as_str().expect("id").to_string());
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

    drop(reference_server);

    // (c) A peer that stops answering: a 504 naming it, in bounded time.
    let owned_by_1 = nodes
        .iter()
        .find(|id| shard::worker(shard::node(id), 4) / 2 == 1)
        .expect("a node of process 1")
        .clone();
    let path = format!("/v1/nodes/{}", segs(&owned_by_1));
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
    stop_all(procs);

    // A peer that is gone: a 502 naming it (servers over the stopped
    // cluster's states, so that the other process lives on).
    let ports = free_ports(2);
    let peers: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let servers: Vec<Server> = (0..2)
        .map(|i| {
            let store = Store::open(&states.join(format!("process-{i}"))).expect("open");
            let config = ServeConfig {
                listen: format!("127.0.0.1:{}", ports[i]).parse().expect("addr"),
                cluster: Some(ClusterView {
                    process: i,
                    workers: 2,
                    peers: peers.clone(),
                }),
                ..ServeConfig::default()
            };
            Server::start(store, config, Arc::new(StaticStatus)).expect("server")
        })
        .collect();
    let expected_node = serde_json::to_value(store.node(&owned_by_1).expect("node")).expect("json");
    let (t, i) = split(&owned_by_1);
    assert_eq!(
        Client::new(&peers[0], None).node(&t, &i).expect("node"),
        Some(expected_node)
    );
    let mut servers = servers.into_iter();
    let (s0, s1) = (servers.next().expect("0"), servers.next().expect("1"));
    s1.stop().expect("stop process 1's server");
    for path in [
        path.clone(),
        format!("/v1/identity/{}", segs(&identities[0])),
        "/v1/export".to_string(),
    ] {
        let a = get(&peers[0], &path);
        assert_eq!(a.status, 502, "{path}: {}", a.body);
        let msg = a.body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("process 1") && msg.contains(&peers[1]),
            "{path}: the message names the peer: {msg}"
        );
    }
    let out = rdg()
        .args(["export", "--url", &peers[0]])
        .output()
        .expect("export");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("process 1"));
    // What process 0 owns it still answers.
    let owned_by_0 = nodes
        .iter()
        .find(|id| shard::worker(shard::node(id), 4) / 2 == 0)
        .expect("a node of process 0");
    assert_eq!(
        get(&peers[0], &format!("/v1/nodes/{}", segs(owned_by_0))).status,
        200
    );
    s0.stop().expect("stop");
    drop(kafka);
    eprintln!("done after {:?}", started.elapsed());
}
