//! The query service under overload and hostile clients, through the real
//! `rdg serve` (2 query threads): ten times more connections than threads
//! doing lookups, clients that send their headers byte by byte and never
//! finish (slowloris), connections that send nothing, bodies beyond the
//! limit (announced, chunked, and announced but never sent), and more
//! connections than `max_connections` (in process, where the limit can be
//! set low). Health stays answered throughout, memory stays bounded, and
//! every refused request gets a 4xx/503 (a 408 for headers that never
//! finish) from the server within its time limits, never a hang.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdg::query::{ServeConfig, Server, StaticStatus};
use support::*;

/// Query threads of the server under test.
const THREADS: usize = 2;
/// Connections per client kind: ten per thread.
const CONNECTIONS: usize = 10 * THREADS;
/// hyper's header read timeout in the server (`query/server.rs`) is 10 s;
/// a connection the server should have cut must be cut within this bound.
const CUT_WITHIN: Duration = Duration::from_secs(40);

struct Served {
    _tmp: tempfile::TempDir,
    child: Child,
    base: String,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rdg serve` over the sample, answering.
fn serve_sample() -> Served {
    let tmp = tempfile::tempdir().expect("tempdir");
    let state = tmp.path().join("state");
    replay(&state, 1, &data_files());
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let child = command()
        .args([
            "serve",
            "--listen",
            &addr,
            "--query-threads",
            "2",
            "--state",
        ])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rdg serve");
    let base = format!("http://{addr}");
    eventually(
        "rdg serve answers /healthz",
        Duration::from_secs(60),
        || TcpStream::connect(&addr).is_ok() && get(&base, "/healthz").status == 200,
    );
    Served {
        _tmp: tmp,
        child,
        base,
        addr,
    }
}

/// Resident memory of a process, in bytes (`VmRSS` of /proc/PID/status).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Reads until the server closes or `patience` passes: what came back and
/// whether the server closed the connection.
fn read_until_closed(s: &mut TcpStream, patience: Duration) -> (String, bool) {
    let until = Instant::now() + patience;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            // A reset is the server closing too.
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}

/// The status of an HTTP answer, if the text starts with one.
fn status_of(answer: &str) -> Option<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
}

#[test]
fn overload_and_hostile_clients_leave_health_answered() {
    let served = serve_sample();
    let pid = served.child.id();
    let before = rss(pid);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Slowloris: headers byte by byte, never finished.
    let slow: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let addr = served.addr.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                let header = b"GET /v1/nodes/account/acc0 HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                let started = Instant::now();
                for b in header.iter().chain(std::iter::repeat(&b'a')) {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return (None, started.elapsed());
                    }
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    // The server answered (and will close): stop writing,
                    // so that the close does not become a reset.
                    let mut peek = [0u8; 1];
                    s.set_nonblocking(true).expect("nonblocking");
                    let answered = s.peek(&mut peek).is_ok_and(|n| n > 0);
                    s.set_nonblocking(false).expect("blocking");
                    if answered {
                        break;
                    }
                    if started.elapsed() > CUT_WITHIN {
                        return (None, started.elapsed());
                    }
                }
                let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(5));
                (closed.then_some(answer), started.elapsed())
            })
        })
        .collect();
    // Idle: connect and send nothing.
    let idle: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let addr = served.addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                let started = Instant::now();
                let (answer, closed) = read_until_closed(&mut s, CUT_WITHIN);
                (closed.then_some(answer), started.elapsed())
            })
        })
        .collect();
    // Busy: ten connections per thread of lookups, all the while.
    let busy: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let base = served.base.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let a = get(
                        &base,
                        &format!("/v1/edges/watched/profile/acc{i}-p0?limit=50"),
                    );
                    assert!(
                        a.status == 200 || a.status == 404,
                        "a lookup under load: {}",
                        a.describe()
                    );
                    answered += 1;
                }
                answered
            })
        })
        .collect();

    // Health, meanwhile.
    for _ in 0..20 {
        assert_eq!(get(&served.base, "/healthz").status, 200);
        std::thread::sleep(Duration::from_millis(250));
    }

    // Bodies beyond the limit (64 KiB): announced, chunked, never sent.
    let big = format!(
        r#"{{"start":"account:acc0","hops":[{{"edge_type":"{}"}}]}}"#,
        "w".repeat(1 << 20)
    );
    // Announced with its length: the server answers from the length and
    // closes without reading the body, so the client's write may fail
    // half-way (a reset); the answer is read all the same (an HTTP client
    // that gives up at the failed write saw a broken pipe here once in many
    // runs).
    let mut s = TcpStream::connect(&served.addr).expect("connect");
    s.set_write_timeout(Some(CUT_WITHIN)).expect("timeout");
    let head = format!(
        "POST /v1/traverse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    );
    let _ = s
        .write_all(head.as_bytes())
        .and_then(|()| s.write_all(big.as_bytes()));
    let (answer, _) = read_until_closed(&mut s, CUT_WITHIN);
    assert_eq!(
        status_of(&answer),
        Some(413),
        "announced, too large: {answer:?}"
    );
    assert!(answer.contains("larger than"), "{answer:?}");
    let mut s = TcpStream::connect(&served.addr).expect("connect");
    s.write_all(b"POST /v1/traverse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("write");
    let chunk = vec![b'x'; 8192];
    for _ in 0..20 {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let (answer, _) = read_until_closed(&mut s, CUT_WITHIN);
    assert_eq!(
        status_of(&answer),
        Some(413),
        "chunked, too large: {answer:?}"
    );
    let mut s = TcpStream::connect(&served.addr).expect("connect");
    s.write_all(b"POST /v1/traverse HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n{\"start\":")
        .expect("write");
    let (answer, closed) = read_until_closed(&mut s, CUT_WITHIN);
    assert!(
        closed && status_of(&answer).is_some_and(|c| (400..600).contains(&c)),
        "a body announced and never sent must get an error and a close: {answer:?}"
    );

    // Every slow or idle connection is cut by the server.
    for (kind, handles) in [("slowloris", slow), ("idle", idle)] {
        for h in handles {
            let (closed, after) = h.join().expect("client thread");
            let answer = closed
                .unwrap_or_else(|| panic!("a {kind} connection was still open after {after:?}"));
            // Headers that never finish are a 408; a connection that sent
            // nothing gets one too, or just the close.
            assert!(
                status_of(&answer) == Some(408) || (kind == "idle" && answer.is_empty()),
                "{kind}: {answer:?}"
            );
        }
    }
    assert_eq!(get(&served.base, "/healthz").status, 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = busy
        .into_iter()
        .map(|h| h.join().expect("busy client"))
        .sum();
    assert!(answered > 0, "no lookup answered under load");
    let after = rss(pid);
    eprintln!(
        "rss before {} MiB, after {} MiB; {answered} lookups answered",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + (128 << 20),
        "rdg serve grew from {before} to {after} bytes under overload"
    );
}

/// More connections than `max_connections`: the extra ones are answered
/// 503 and closed, and once they go, health is answered again.
#[test]
fn connections_beyond_the_limit_get_a_503() {
    let (_tmp, store) = temp_store();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        max_connections: 4,
        worker_threads: THREADS,
        ..ServeConfig::default()
    };
    let server = Server::start(store, config, Arc::new(StaticStatus)).expect("server");
    let addr = server.addr().to_string();
    let base = format!("http://{addr}");
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    // The server counts a connection once it accepted it.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..CONNECTIONS {
        let mut s = TcpStream::connect(&addr).expect("connect");
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let (answer, closed) = read_until_closed(&mut s, CUT_WITHIN);
        assert!(closed, "an extra connection was left open");
        assert_eq!(status_of(&answer), Some(503), "{answer:?}");
        assert!(answer.contains("connections"), "{answer:?}");
    }
    drop(held);
    eventually(
        "health is answered once the connections are gone",
        CUT_WITHIN,
        || {
            let mut s = TcpStream::connect(&addr).expect("connect");
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            status_of(&read_until_closed(&mut s, Duration::from_secs(5)).0) == Some(200)
        },
    );
    assert_eq!(get(&base, "/healthz").status, 200);
}
