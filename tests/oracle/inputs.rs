//! Seeded random input lines for the oracle fixture (`views`, `sessions`,
//! `logins`), built to hit every corner of the semantics often in a few
//! hundred events.
//!
//! Invariant: a pure function of the seed. Id spaces are tiny so records
//! collide; times advance by multiples of 500 ms (so ties are common) and
//! jump back and forth (late events, and events ahead of the others); a share
//! of events deletes, is ignored by the source `when`, carries blocklisted,
//! null, missing or badly typed ids, a bad time, or is not JSON at all.
//! A badly typed id is only ever put in a field that a rule reads whatever
//! its `when` (so whether it makes a dead letter does not depend on reading
//! rules' conditions first).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

/// The topics, in the order of the files of a run.
pub const TOPICS: [&str; 3] = ["views", "sessions", "logins"];

/// One replay's input: `(topic, lines)` per topic, written as `<topic>.jsonl`.
pub type Run = Vec<(&'static str, Vec<String>)>;

/// 2023-11-14T22:13:20Z
const START: i64 = 1_700_000_000_000;

struct Gen {
    rng: Xoshiro256PlusPlus,
}

impl Gen {
    /// A number in `0..n`.
    fn below(&mut self, n: u32) -> u32 {
        self.rng.random_range(0..n)
    }

    fn pct(&mut self, p: u32) -> bool {
        self.below(100) < p
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize].clone()
    }

    /// A badly typed id.
    fn bad(&mut self) -> Value {
        self.pick(&[json!(true), json!(2.5), json!({"id": "1"}), json!(["1"])])
    }

    /// A user id: numeric, as a string or an integer (the same identifier),
    /// sometimes blocklisted, empty, null or missing (`None`); `bad_pct`
    /// percent of the time badly typed.
    fn user(&mut self, bad_pct: u32) -> Option<Value> {
        if self.pct(bad_pct) {
            return Some(self.bad());
        }
        let k = 1 + self.below(6);
        match self.below(100) {
            0..62 => Some(json!(k.to_string())),
            62..77 => Some(json!(k)),
            77..79 => Some(json!("0")),
            79..80 => Some(json!(0)),
            80..83 => Some(json!("anon")),
            83..84 => Some(json!("")),
            84..91 => Some(Value::Null),
            _ => None,
        }
    }

    fn device(&mut self, bad_pct: u32) -> Option<Value> {
        if self.pct(bad_pct) {
            return Some(self.bad());
        }
        match self.below(100) {
            0..78 => Some(json!(format!("d{}", 1 + self.below(5)))),
            78..82 => Some(json!(42)),
            82..85 => Some(json!("0")),
            85..92 => Some(Value::Null),
            _ => None,
        }
    }

    fn item(&mut self, bad_pct: u32) -> Option<Value> {
        if self.pct(bad_pct) {
            return Some(self.bad());
        }
        match self.below(100) {
            0..88 => Some(json!(format!("i{}", 1 + self.below(4)))),
            88..94 => Some(json!(9)),
            94..97 => Some(Value::Null),
            _ => None,
        }
    }

    fn email(&mut self, bad_pct: u32) -> Option<Value> {
        if self.pct(bad_pct) {
            return Some(self.bad());
        }
        match self.below(100) {
            0..75 => Some(json!(format!("e{}", 1 + self.below(4)))),
            75..80 => Some(json!("anon")),
            80..88 => Some(Value::Null),
            _ => None,
        }
    }

    fn country(&mut self) -> Option<Value> {
        match self.below(10) {
            0..8 => Some(json!(self.pick(&["NL", "DE", "US", "FR"]))),
            _ => None,
        }
    }

    /// A broken time, or `None` for a missing one.
    fn bad_time(&mut self) -> Option<Value> {
        self.pick(&[
            None,
            Some(json!("yesterday")),
            Some(json!(true)),
            Some(Value::Null),
            Some(json!("2023-13-45T25:61:00Z")),
            Some(json!({"ms": 1})),
        ])
    }

    /// A time for a field read as epoch ms (RFC 3339 strings accepted).
    fn time_ms(&mut self, t: i64) -> Option<Value> {
        match self.below(100) {
            0..86 => Some(json!(t)),
            86..90 => Some(json!(t as f64 + self.pick(&[0.25, 0.5]))),
            90..96 => Some(json!(rfc3339(t, self.below(3)))),
            _ => self.bad_time(),
        }
    }

    /// A time for a field read as epoch seconds (RFC 3339 strings accepted).
    fn time_s(&mut self, t: i64) -> Option<Value> {
        match self.below(100) {
            0..80 => Some(json!(t.div_euclid(1000))),
            // t is a multiple of 500 ms: t / 1000 is exact in binary.
            80..90 => Some(json!(t as f64 / 1000.0)),
            90..96 => Some(json!(rfc3339(t, self.below(3)))),
            _ => self.bad_time(),
        }
    }

    /// A time for a field holding RFC 3339 strings (integers read as ms).
    fn time_rfc3339(&mut self, t: i64) -> Option<Value> {
        match self.below(100) {
            0..88 => Some(json!(rfc3339(t, self.below(3)))),
            88..96 => Some(json!(t)),
            _ => self.bad_time(),
        }
    }

    fn not_json(&mut self) -> String {
        self.pick(&[
            "not json".to_string(),
            "{\"ts\": 17".to_string(),
            "[1,2]".to_string(),
            "\"just a string\"".to_string(),
            "{\"kind\":\"start\",}".to_string(),
        ])
    }
}

/// RFC 3339 in one of three styles: `Z` with ms, `Z` without fraction when
/// whole seconds (ms otherwise), or a `+02:00` offset with ms.
fn rfc3339(t: i64, style: u32) -> String {
    let Some(d) = chrono::DateTime::from_timestamp_millis(t) else {
        return "out of range".to_string();
    };
    match style {
        0 => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        1 => {
            if t % 1000 == 0 {
                d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            }
        }
        _ => {
            let offset = chrono::FixedOffset::east_opt(2 * 3600).map(|o| d.with_timezone(&o));
            match offset {
                Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
                None => d.to_rfc3339(),
            }
        }
    }
}

fn put(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

/// `events` lines over the three topics, for `seed`.
pub fn generate(seed: u64, events: usize) -> Run {
    let mut g = Gen {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed),
    };
    let mut run: Run = TOPICS.iter().map(|t| (*t, Vec::new())).collect();
    let mut clock = START;
    for _ in 0..events {
        clock += g.pick(&[0, 500, 500, 1000, 1000, 1500, 2500]);
        let t = match g.below(100) {
            0..70 => clock,
            70..92 => clock - 500 * i64::from(1 + g.below(50)),
            92..97 => clock + 500 * i64::from(1 + g.below(10)),
            _ => clock - 500 * i64::from(120 + g.below(120)),
        };
        let topic = match g.below(10) {
            0..5 => 0,
            5..8 => 1,
            _ => 2,
        };
        let line = if g.pct(1) {
            g.not_json()
        } else {
            let mut m = Map::new();
            match topic {
                0 => views(&mut g, &mut m, t),
                1 => sessions(&mut g, &mut m, t),
                _ => logins(&mut g, &mut m, t),
            }
            Value::Object(m).to_string()
        };
        run[topic].1.push(line);
    }
    run
}

fn views(g: &mut Gen, m: &mut Map<String, Value>, t: i64) {
    let ts = g.time_ms(t);
    put(m, "ts", ts);
    let kind = match g.below(100) {
        0..45 => Some(json!("start")),
        45..85 => Some(json!("stop")),
        85..95 => Some(json!("pause")),
        95..97 => Some(json!(7)),
        _ => None,
    };
    put(m, "kind", kind);
    let (user, item, device) = (g.user(1), g.item(1), g.device(1));
    put(m, "user", user);
    put(m, "item", item);
    put(m, "device", device);
    let geo = match g.below(10) {
        0..7 => g.country().map(|c| json!({ "country": c })),
        7 => Some(json!("NL")),
        _ => None,
    };
    put(m, "geo", geo);
    let tier = match g.below(10) {
        0..4 => Some(json!(1 + g.below(3))),
        4..6 => Some(json!("gold")),
        6 => Some(json!(false)),
        _ => None,
    };
    put(m, "tier", tier);
    if g.pct(60) {
        let pos = g.below(300);
        put(m, "pos", Some(json!(pos)));
    }
    let op = match g.below(100) {
        0..10 => Some(json!("delete")),
        10..13 => Some(json!("upsert")),
        _ => None,
    };
    put(m, "op", op);
}

fn sessions(g: &mut Gen, m: &mut Map<String, Value>, t: i64) {
    let at = g.time_rfc3339(t);
    put(m, "at", at);
    let (uid, dev, mail) = (g.user(1), g.device(1), g.email(1));
    put(m, "uid", uid);
    put(m, "dev", dev);
    put(m, "mail", mail);
    let via = match g.below(10) {
        0..4 => Some(json!("invite")),
        4..6 => Some(json!("ad")),
        _ => None,
    };
    // A badly typed referrer only where its rule reads it.
    let invite = via == Some(json!("invite"));
    let referrer = g.user(if invite { 2 } else { 0 });
    put(m, "via", via);
    put(m, "referrer", referrer);
    let country = g.country();
    put(m, "country", country);
    let ref_country = g.country();
    put(m, "ref_country", ref_country);
    let plan = match g.below(3) {
        0 => Some(json!("free")),
        1 => Some(json!("pro")),
        _ => None,
    };
    put(m, "plan", plan);
    let os = match g.below(3) {
        0 => Some(json!("ios")),
        1 => Some(json!("android")),
        _ => None,
    };
    put(m, "os", os);
    let action = match g.below(100) {
        0..10 => Some(json!("forget")),
        10..60 => Some(json!("login")),
        _ => None,
    };
    put(m, "action", action);
}

fn logins(g: &mut Gen, m: &mut Map<String, Value>, t: i64) {
    let ts = g.time_s(t);
    put(m, "ts", ts);
    let result = match g.below(100) {
        0..85 => Some(json!("ok")),
        85..95 => Some(json!("fail")),
        _ => None,
    };
    put(m, "result", result);
    let (uid, mail) = (g.user(1), g.email(1));
    put(m, "uid", uid);
    put(m, "mail", mail);
    let country = g.country();
    put(m, "country", country);
    let verified = match g.below(3) {
        0 => Some(json!(true)),
        1 => Some(json!(false)),
        _ => None,
    };
    put(m, "verified", verified);
    if g.pct(8) {
        put(m, "op", Some(json!("delete")));
    }
}

/// Splits every topic's lines at random positions into `parts` successive
/// runs (a part may be empty for a topic).
pub fn split(run: &Run, parts: usize, seed: u64) -> Vec<Run> {
    let mut g = Gen {
        rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5911_7000),
    };
    let mut out: Vec<Run> = (0..parts).map(|_| Vec::new()).collect();
    for (topic, lines) in run {
        let mut cuts: Vec<usize> = (1..parts)
            .map(|_| g.below(lines.len() as u32 + 1) as usize)
            .collect();
        cuts.sort_unstable();
        cuts.insert(0, 0);
        cuts.push(lines.len());
        for (p, w) in cuts.windows(2).enumerate() {
            out[p].push((topic, lines[w[0]..w[1]].to_vec()));
        }
    }
    out
}
