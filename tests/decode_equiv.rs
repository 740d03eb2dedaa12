//! The fast decoder (`DataflowPlan::decode_into`, fields extracted from the
//! bytes) against the reference (`serde_json::Value` + `evaluate`): the same
//! outcome for every generated event of every shipped definition, and for
//! seeded random mutations of them (fields dropped, retyped, duplicated,
//! escaped, nested; bytes flipped or cut).

use std::path::PathBuf;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rdg::generate::{GenOptions, events};
use rdg::spec::{DataflowPlan, DecodeScratch, Decoded, Outcome, Plan, Verdict};
use serde_json::{Value, json};

fn plan() -> Plan {
    rdg::spec::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dataflows"))
        .expect("shipped definitions")
}

/// The reference outcome of a payload.
fn reference(d: &DataflowPlan, plan: &Plan, bytes: &[u8]) -> Outcome {
    if bytes.is_empty() {
        return Outcome::Reject("empty payload".to_string());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => d.evaluate(&v, &plan.identity),
        Err(e) => Outcome::Reject(format!("not JSON: {e}")),
    }
}

fn fast(
    d: &DataflowPlan,
    plan: &Plan,
    bytes: &[u8],
    scratch: &mut DecodeScratch,
    out: &mut Decoded,
) -> Outcome {
    match d.decode_into(bytes, &plan.identity, scratch, out) {
        Verdict::Ignored => Outcome::Ignored,
        Verdict::Event => Outcome::Event(out.clone()),
        Verdict::Reject(r) => Outcome::Reject(r),
    }
}

/// A random JSON value of any type, sometimes with escapes.
fn random_value(rng: &mut Xoshiro256PlusPlus) -> Value {
    match rng.random_range(0..11) {
        0 => Value::Null,
        1 => json!(rng.random_bool(0.5)),
        2 => json!(rng.random_range(-1000i64..1000)),
        3 => json!(rng.random_range(0u64..u64::MAX)),
        4 => json!(rng.random_range(-1.0e6..1.0e6)),
        5 => json!(format!("s{}", rng.random_range(0..50))),
        6 => json!(format!("q\"\\\u{e9}\n{}", rng.random_range(0..5))),
        7 => json!([1, "a", null]),
        8 => json!({"id": format!("n{}", rng.random_range(0..9)), "x": 1.5}),
        9 => json!("2023-11-14T22:13:20.5Z"),
        _ => json!(""),
    }
}

/// Mutates one event's text.
fn mutate(rng: &mut Xoshiro256PlusPlus, line: &str) -> Vec<u8> {
    let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
        return line.as_bytes().to_vec();
    };
    let keys: Vec<String> = m.keys().cloned().collect();
    let pick = |rng: &mut Xoshiro256PlusPlus| keys[rng.random_range(0..keys.len())].clone();
    match rng.random_range(0..9) {
        0 => {
            m.remove(&pick(rng));
        }
        1 | 2 => {
            let k = pick(rng);
            m.insert(k, random_value(rng));
        }
        3 => {
            // A duplicate key: the later one wins in both decoders.
            let k = pick(rng);
            let v = serde_json::to_string(&random_value(rng)).unwrap_or_default();
            let text = serde_json::to_string(&Value::Object(m)).unwrap_or_default();
            return format!("{}, {:?}: {v}}}", &text[..text.len() - 1], k).into_bytes();
        }
        4 => {
            // A key written with an escape.
            let k = pick(rng);
            if let Some(v) = m.remove(&k) {
                let text = serde_json::to_string(&Value::Object(m)).unwrap_or_default();
                let esc: String = k.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
                let v = serde_json::to_string(&v).unwrap_or_default();
                let sep = if text.len() > 2 { "," } else { "" };
                return format!("{}{sep}\"{esc}\": {v}}}", &text[..text.len() - 1]).into_bytes();
            }
        }
        5 => {
            let k = pick(rng);
            let mut inner = serde_json::Map::new();
            inner.insert(k.clone(), random_value(rng));
            m.insert(k, Value::Object(inner));
        }
        6 => {
            let mut b = line.as_bytes().to_vec();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random_range(0..=255u8);
            return b;
        }
        7 => {
            let b = line.as_bytes();
            return b[..rng.random_range(0..b.len())].to_vec();
        }
        _ => {
            return format!(" \t{line}\n ").into_bytes();
        }
    }
    serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
}

#[test]
fn fast_decoding_equals_the_value_path_on_generated_and_mutated_events() {
    let plan = plan();
    let mut scratch = DecodeScratch::default();
    let mut out = Decoded::default();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let mut compared = 0u64;
    let mut events_seen = 0u64;
    let mut rejects = 0u64;
    for (topic, _key, line) in events(&GenOptions {
        events: 20_000,
        seed: 3,
        malformed_share: 0.02,
        ..GenOptions::default()
    }) {
        let d = plan
            .dataflows
            .iter()
            .find(|d| d.topic == topic)
            .expect("topic has a definition");
        let mut inputs = vec![line.as_bytes().to_vec()];
        for _ in 0..3 {
            inputs.push(mutate(&mut rng, &line));
        }
        for bytes in inputs {
            let want = reference(d, &plan, &bytes);
            let got = fast(d, &plan, &bytes, &mut scratch, &mut out);
            assert_eq!(got, want, "{topic}: {}", String::from_utf8_lossy(&bytes));
            compared += 1;
            match want {
                Outcome::Event(_) => events_seen += 1,
                Outcome::Reject(_) => rejects += 1,
                Outcome::Ignored => {}
            }
        }
    }
    // The comparison covered real events and real rejections.
    assert!(compared >= 80_000);
    assert!(events_seen > 30_000, "{events_seen}");
    assert!(rejects > 3_000, "{rejects}");
}

#[test]
fn payloads_that_are_not_objects_are_rejected_alike() {
    let plan = plan();
    let d = &plan.dataflows[0];
    let mut scratch = DecodeScratch::default();
    let mut out = Decoded::default();
    for bytes in [
        &b""[..],
        b"[]",
        b"1",
        b"\"x\"",
        b"null",
        b"{",
        b"{}x",
        b"\xff\xfe",
    ] {
        assert_eq!(
            fast(d, &plan, bytes, &mut scratch, &mut out),
            reference(d, &plan, bytes),
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}
