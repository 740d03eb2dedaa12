//! Broker outages during `rdg run`, on both engines, against a tansu of the
//! test's own on a private port (never the shared test broker): the broker
//! paused (SIGSTOP) and resumed (SIGCONT), then taken away and brought back
//! with its data (through a proxy: the tansu built here keeps its data in
//! memory only). rdg must log the outage, say it in `/readyz` (503 with the
//! reason) while it lasts, keep running, resume, and end with the export of
//! the file replay of the same events.
//!
//! Needs the tansu binary (`scripts/test.sh` installs it and runs ignored
//! tests); outages stay shorter than rdg's 30 s broker timeout, beyond
//! which `rdg run` stops with an error naming the brokers.

mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdg::store::Engine;
use support::*;

const EVENTS: u64 = 3000;

struct Tansu {
    child: Child,
}

impl Tansu {
    /// tansu on `port`, advertising `advertised` to its clients.
    fn start(port: u16, advertised: &str) -> Tansu {
        let child = Command::new("tansu")
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{advertised}"))
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (scripts/broker.sh installs it)");
        eventually("tansu listens", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Tansu { child }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        signal(&self.child, "-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn readyz(base: &str) -> (u16, String) {
    let a = get(base, "/readyz");
    (a.status, a.text)
}

/// Waits until `/readyz` reports the outage, then until it is ready again.
fn outage_is_reported_then_over(base: &str, run: &mut Child, what: &str, end: impl FnOnce()) {
    eventually(
        &format!("{what}: /readyz reports the outage"),
        Duration::from_secs(25),
        || {
            let (status, text) = readyz(base);
            status == 503 && text.contains("cannot reach the Kafka broker")
        },
    );
    assert!(
        run.try_wait().expect("try_wait").is_none(),
        "{what}: rdg run stopped during the outage"
    );
    end();
    eventually(
        &format!("{what}: /readyz is ready again"),
        Duration::from_secs(60),
        || readyz(base).0 == 200,
    );
}

fn broker_outages_during_a_run(engine: &str) {
    let engine: Engine = engine.parse().expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = file_replay_export(dir.path(), EVENTS, true);
    let expected = committed(&dir.path().join("file-state"));

    let ports = free_ports(3);
    let proxy_addr = format!("127.0.0.1:{}", ports[1]);
    let tansu = Tansu::start(ports[0], &proxy_addr);
    let proxy = Proxy::start(&proxy_addr, &format!("127.0.0.1:{}", ports[0]));
    let brokers = proxy_addr.clone();
    let topics: Vec<(String, i32)> = TOPICS.iter().map(|t| (t.to_string(), 1)).collect();
    rdg::produce::create_topics(&brokers, &BTreeMap::new(), &topics).expect("create topics");
    let sent = rdg::produce::produce(
        &brokers,
        &BTreeMap::new(),
        rdg::generate::events(&gen_opts(EVENTS, true)),
        None,
        |_| {},
    )
    .expect("produce");
    assert_eq!(sent, EVENTS);

    let state = dir.path().join("state");
    create_state(&state, engine);
    let listen = format!("127.0.0.1:{}", ports[2]);
    let base = format!("http://{listen}");
    let log = dir.path().join("run.log");
    let mut run = command()
        .arg("run")
        .arg("--dataflows")
        .arg(dataflows_dir())
        .arg("--state")
        .arg(&state)
        .arg("--brokers")
        .arg(&brokers)
        .args(["--workers", "2", "--listen", &listen])
        .args(["--status-interval", "0", "--batch", "97"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start rdg run");
    eventually("rdg run is ready", PATIENCE, || {
        std::net::TcpStream::connect(&listen).is_ok() && readyz(&base).0 == 200
    });

    // Paused: the broker accepts connections and answers nothing.
    signal(&tansu.child, "-STOP");
    outage_is_reported_then_over(&base, &mut run, "SIGSTOP", || signal(&tansu.child, "-CONT"));
    // Gone and back, with its data.
    proxy.cut();
    outage_is_reported_then_over(&base, &mut run, "broker gone", || proxy.restore());

    signal(&run, "-TERM");
    let (status, _) = wait_exit(run, PATIENCE);
    let logged = std::fs::read_to_string(&log).expect("read the log");
    assert!(
        status.success(),
        "rdg run after the outages: {status}\n{logged}"
    );
    assert!(
        logged.contains("cannot reach the Kafka broker") && logged.contains("again"),
        "rdg run must log the outage and the reconnection:\n{logged}"
    );
    assert!(!logged.contains("panicked"), "{logged}");
    run_to_completion(&brokers, &state, 2, expected);
    assert_same(
        &normalized_export(&state),
        &reference,
        "a run through broker outages",
    );
    drop(proxy);
    drop(tansu);
}

mod on_fjall {
    #[test]
    #[ignore = "needs tansu: scripts/test.sh runs it"]
    fn broker_outages_during_a_run() {
        super::broker_outages_during_a_run("fjall")
    }
}

mod on_sled {
    #[test]
    #[ignore = "needs tansu: scripts/test.sh runs it"]
    fn broker_outages_during_a_run() {
        super::broker_outages_during_a_run("sled")
    }
}
