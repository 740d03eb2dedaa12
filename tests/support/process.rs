//! Processes and ports: free loopback ports, hosts files, signals, and
//! waiting for a child (or anything else) with a bound, so that a broken
//! test fails instead of hanging.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Free loopback ports (held together while chosen, so they differ).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// A hosts file: `127.0.0.1:PORT` per line, in process order.
pub fn write_hosts(path: &Path, ports: &[u16]) {
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(path, text).expect("hosts file");
}

/// Waits until `ok()` holds, checking every 100 ms; panics with `what`
/// after `patience`.
#[track_caller]
pub fn eventually(what: &str, patience: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `sig` (`-TERM`, `-STOP`, ...) to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

/// What a child wrote to its piped stderr.
pub fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Waits for a child to exit (at most `patience`): its status and stderr.
#[track_caller]
pub fn wait_exit(mut child: Child, patience: Duration) -> (ExitStatus, String) {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, stderr_of(&mut child));
        }
        assert!(Instant::now() < deadline, "the process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to all (a cluster stops together), then each must exit with
/// success within `patience`.
#[track_caller]
pub fn stop_all(children: Vec<Child>, patience: Duration) {
    for c in &children {
        signal(c, "-TERM");
    }
    for c in children {
        let (status, err) = wait_exit(c, patience);
        assert!(status.success(), "rdg run after SIGTERM: {status}\n{err}");
    }
}

/// Opens a state another process just closed (sled releases a closed
/// database's lock asynchronously), for at most 10 s.
#[track_caller]
pub fn open_when_free(state: &Path) -> rdg::store::Store {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match rdg::store::Store::open(state) {
            Ok(s) => return s,
            Err(_) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("open {}: {e}", state.display()),
        }
    }
}
