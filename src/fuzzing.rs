//! Fuzz entry points: one function per input surface, each taking arbitrary
//! bytes. The fuzz targets in `fuzz/` (built with afl.rs) call them, and
//! `tests/fuzz_corpus.rs` replays the committed corpus (`fuzz/corpus/`)
//! through them in the ordinary test command, without a fuzz engine.
//!
//! Invariant: each function returns normally for every input; a panic is a
//! bug found. Besides not panicking, each checks a property of its surface:
//! - [`event`]: the fast decoder and the `serde_json::Value` path give the
//!   same verdict for every shipped definition (as
//!   `DataflowPlan::decode_into` promises);
//! - [`definitions`]: a definition that loads evaluates sample events
//!   without panicking, under both paths, with the same verdicts;
//! - [`store_codec`]: a key that decodes re-encodes to the same bytes, a
//!   cursor that decodes re-encodes to the same text;
//! - [`http`]: no request is answered 500 (the server's answer to a
//!   handler that panicked).
//!
//! Not part of rdg's API (hidden from its docs).

use std::path::Path;
use std::sync::OnceLock;

use crate::spec::{DecodeScratch, Decoded, Outcome, Plan, Verdict};
use crate::store::codec::{self, Decoder};

/// Inputs longer than this are cut (bounded time and memory per input).
pub const MAX_INPUT: usize = 64 << 10;

fn bounded(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

fn shipped() -> &'static Plan {
    static PLAN: OnceLock<Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dataflows");
        // The shipped definitions are checked by the tests; a failure here
        // is a broken checkout, not an input.
        crate::spec::load(&dir).unwrap_or_else(|e| panic!("the shipped definitions: {e}"))
    })
}

/// Checks that both decoding paths of `plan` agree on `bytes`.
fn evaluate_both(plan: &Plan, bytes: &[u8]) {
    let mut scratch = DecodeScratch::default();
    for dataflow in &plan.dataflows {
        let mut out = Decoded::default();
        let fast = dataflow.decode_into(bytes, &plan.identity, &mut scratch, &mut out);
        let value = match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => v,
            // A number beyond f64's range is JSON, but not a `Value`: in a
            // field the definition does not read, the fast decoder (which
            // skips it) accepts the event (see `decode_into`).
            Err(e) if e.to_string().starts_with("number out of range") => continue,
            Err(_) => {
                assert!(
                    matches!(fast, Verdict::Reject(_)),
                    "{}: bytes that are not JSON were accepted: {fast:?}",
                    dataflow.name
                );
                continue;
            }
        };
        let slow = dataflow.evaluate(&value, &plan.identity);
        let same = match (&fast, &slow) {
            (Verdict::Ignored, Outcome::Ignored) => true,
            (Verdict::Event, Outcome::Event(d)) => d == &out,
            (Verdict::Reject(a), Outcome::Reject(b)) => a == b,
            _ => false,
        };
        assert!(
            same,
            "{}: the fast decoder says {fast:?} ({out:?}), the Value path {slow:?}",
            dataflow.name
        );
    }
}

/// An event payload through decode and evaluate of every shipped definition.
pub fn event(data: &[u8]) {
    evaluate_both(shipped(), bounded(data));
}

/// Sample events for definitions built from fuzzed text: the first lines of
/// the committed sample.
const SAMPLE_EVENTS: &[&str] = &[
    r#"{"ts":1700000000000,"event":"play_start","account_id":"acc1","profile_id":"acc1-p0","title_id":"t1","device_id":"d1","position_s":0}"#,
    r#"{"time":1700000000,"game_profile_id":"g1","game_id":"x","device_id":"d1","linked_account_id":"acc1","op":"delete"}"#,
    r#"{"ts":"2023-11-14T22:13:20Z","result":"success","account_id":7,"email_sha256":null,"device_id":"d2","a":{"b":[1,2]}}"#,
];

/// A definition folder as text: `rdg.toml` and one definition, separated by
/// a line `=====` (without it, all of it is the definition). Loaded and
/// checked as `rdg check` does; a definition that loads evaluates the
/// sample events.
pub fn definitions(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(bounded(data)) else {
        return;
    };
    let mut files = Vec::new();
    match text.split_once("\n=====\n") {
        Some((settings, def)) => {
            files.push(("rdg.toml".to_string(), settings.to_string()));
            files.push(("fuzzed.toml".to_string(), def.to_string()));
        }
        None => files.push(("fuzzed.toml".to_string(), text.to_string())),
    }
    match crate::spec::load_texts(Path::new("fuzz"), &files) {
        Ok(plan) => {
            for e in SAMPLE_EVENTS {
                evaluate_both(&plan, e.as_bytes());
            }
        }
        Err(errors) => {
            // Every problem must be printable (file:line:col, hint).
            let shown = errors.to_string();
            assert!(!shown.is_empty(), "an error without a message");
        }
    }
}

/// The store's key codec and value decoders on bytes a damaged state could
/// hold. The first byte chooses the key's shape (two bits per segment: end,
/// string, bytes, u64); the rest is the key.
pub fn store_codec(data: &[u8]) {
    let data = bounded(data);
    let Some((&shape, key)) = data.split_first() else {
        return;
    };
    let mut decoder = Decoder::new(key);
    let mut again = Vec::with_capacity(key.len());
    let mut whole = true;
    for i in 0..4 {
        let decoded = match (shape >> (2 * i)) & 3 {
            0 => break,
            1 => decoder.str().map(|s| codec::push_str(&mut again, &s)),
            2 => decoder.bytes().map(|b| codec::push_bytes(&mut again, &b)),
            _ => decoder.u64().map(|n| codec::push_u64(&mut again, n)),
        };
        if decoded.is_err() {
            whole = false;
            break;
        }
    }
    if whole && decoder.end().is_ok() {
        assert_eq!(again, key, "a decoded key re-encodes to other bytes");
    }
    let _ = codec::segment_len(key);
    let _ = crate::store::decode_value_for_fuzzing(key);
    if let Ok(text) = std::str::from_utf8(key)
        && let Ok(cursor) = crate::store::EdgeCursor::decode(text)
    {
        assert_eq!(
            cursor.encode(),
            text,
            "a decoded cursor re-encodes otherwise"
        );
    }
}

struct Http {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    _state: tempfile::TempDir,
}

fn http_server() -> &'static Http {
    static HTTP: OnceLock<Http> = OnceLock::new();
    HTTP.get_or_init(|| {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = crate::store::Store::open(state.path())
            .unwrap_or_else(|e| panic!("a store for the HTTP target: {e}"));
        store
            .commit(&sample_changes(), &[], &sample_progress())
            .unwrap_or_else(|e| panic!("committing the HTTP target's graph: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let config = crate::query::ServeConfig {
            request_timeout: std::time::Duration::from_secs(2),
            ..crate::query::ServeConfig::default()
        };
        let router = {
            let _entered = runtime.enter();
            crate::query::in_process_router(store, config)
                .unwrap_or_else(|e| panic!("the router: {e}"))
        };
        Http {
            runtime,
            router,
            _state: state,
        }
    })
}

fn sample_changes() -> Vec<crate::model::Change> {
    use crate::model::{Change, ClusterOf, Record};
    let rec = |t: i64, props: &str| {
        Some(Record {
            count: 1,
            first_seen: t,
            last_seen: t,
            props: props.into(),
        })
    };
    let mut c = vec![
        Change::Node {
            id: "account:a1".into(),
            dataflow: "login".into(),
            record: rec(5, r#"{"country":"NL"}"#),
        },
        Change::Node {
            id: "profile:p1".into(),
            dataflow: "playback".into(),
            record: rec(6, ""),
        },
    ];
    for (t, title) in ["title:t1", "title:t2", "title:t\u{0}3"].iter().enumerate() {
        c.push(Change::Edge {
            edge_type: "watched".into(),
            from: "profile:p1".into(),
            to: (*title).into(),
            dataflow: "playback".into(),
            reverse: true,
            record: rec(10 + t as i64, r#"{"device":"d1"}"#),
        });
    }
    c.push(Change::Edge {
        edge_type: "has_profile".into(),
        from: "account:a1".into(),
        to: "profile:p1".into(),
        dataflow: "playback".into(),
        reverse: false,
        record: rec(6, ""),
    });
    c.push(Change::Link {
        a: "account:a1".into(),
        b: "device:d1".into(),
        dataflow: "login".into(),
        mirrored: false,
        record: rec(7, ""),
    });
    for id in ["account:a1", "device:d1"] {
        c.push(Change::Cluster {
            id: id.into(),
            cluster: Some(ClusterOf {
                cluster: "account:a1".into(),
                hub: false,
            }),
        });
        c.push(Change::Member {
            cluster: "account:a1".into(),
            member: id.into(),
            present: true,
        });
    }
    c
}

fn sample_progress() -> crate::model::Progress {
    let mut p = crate::model::Progress::default();
    p.dataflows.insert(
        "playback".into(),
        crate::model::DataflowProgress {
            events: 3,
            late: 0,
            watermark: Some(12),
            record_times: Default::default(),
        },
    );
    p
}

/// One HTTP request through the server's router, in process. The input is
/// a request as on the wire, loosely: `METHOD TARGET` on the first line,
/// `Name: value` headers up to an empty line, then the body. Parts that
/// cannot make a request at all (an invalid method or target) are what
/// hyper refuses before the router, and are skipped.
pub fn http(data: &[u8]) {
    use hyper::service::Service as _;
    let data = bounded(data);
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut req = axum::http::Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            req = req.header(name.trim(), value.trim());
        }
    }
    let Ok(req) = req.body(axum::body::Body::from(body.to_vec())) else {
        return;
    };
    let server = http_server();
    let service = hyper_util::service::TowerToHyperService::new(server.router.clone());
    server.runtime.block_on(async {
        let Ok(resp) = service.call(req).await;
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 64 << 20).await;
        assert!(
            status != axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "a 500 (a handler panicked) for {first:?}: {body:?}"
        );
    });
}
