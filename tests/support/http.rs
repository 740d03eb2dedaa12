//! Asking a running query service: one answer per request (status, headers,
//! JSON body), path segments encoded as the server expects, raw bytes for
//! malformed requests, and a fake peer process whose answers a test sets.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One answer: status, headers (lower-case names), body as JSON (or a
/// string when it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn describe(&self) -> String {
        format!("status {} body {}", self.status, self.text)
    }

    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.describe());
        &self.body
    }

    /// Panics unless the status is `status` and the error message contains
    /// `fragment`.
    #[track_caller]
    pub fn error(&self, status: u16, fragment: &str) {
        assert_eq!(self.status, status, "{}", self.describe());
        let msg = self.body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(fragment),
            "expected an error containing {fragment:?}: {}",
            self.describe()
        );
    }
}

/// A client that hands back every status (not only 2xx) and gives up
/// after 20 s.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

pub fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    Answer {
        status,
        headers,
        body,
        text,
    }
}

pub fn get_with(base: &str, path: &str, token: Option<&str>) -> Answer {
    let mut req = agent().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    answer(req.call().expect("request"))
}

pub fn get(base: &str, path: &str) -> Answer {
    get_with(base, path, None)
}

pub fn post(base: &str, path: &str, body: &str) -> Answer {
    answer(
        agent()
            .post(format!("{base}{path}"))
            .header("Content-Type", "application/json")
            .send(body)
            .expect("request"),
    )
}

/// The whole body of a GET, as bytes (an export).
pub fn get_bytes(base: &str, path: &str) -> Vec<u8> {
    agent()
        .get(format!("{base}{path}"))
        .call()
        .expect("request")
        .into_body()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("body")
}

/// Sends raw bytes, returns what came back until the server closed or
/// 2 s passed.
pub fn raw(base: &str, bytes: &[u8]) -> String {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `type/id` path segments of `type:id`.
pub fn segs(ident: &str) -> String {
    let (t, id) = ident.split_once(':').expect("type:id");
    format!("{}/{}", seg(t), seg(id))
}

/// What a [`FakePeer`] sends: status, extra headers, body.
pub type Reply = (u16, Vec<(String, String)>, String);
type Handler = Arc<Mutex<Box<dyn FnMut(&str) -> Reply + Send>>>;

/// An HTTP server on a loopback port that answers every request with what
/// its handler returns for the request target (one request per
/// connection). Stands in for a peer process that misbehaves.
pub struct FakePeer {
    pub base: String,
    handler: Handler,
    /// Request targets received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl FakePeer {
    pub fn start(handler: impl FnMut(&str) -> Reply + Send + 'static) -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let handler: Handler = Arc::new(Mutex::new(Box::new(handler)));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (handler.clone(), seen.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve_one(stream, &h, &s);
            }
        });
        FakePeer {
            base,
            handler,
            seen,
        }
    }

    /// Answers from now on with `handler`.
    pub fn set(&self, handler: impl FnMut(&str) -> Reply + Send + 'static) {
        *self.handler.lock().expect("lock") = Box::new(handler);
    }
}

fn serve_one(
    stream: TcpStream,
    handler: &Handler,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split(' ').nth(1).unwrap_or("").to_string();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    seen.lock().expect("lock").push(target.clone());
    let (status, headers, body) = (handler.lock().expect("lock"))(&target);
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    let mut stream = stream;
    stream.write_all(out.as_bytes())
}
