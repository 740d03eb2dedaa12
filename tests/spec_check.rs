//! `spec::load` on the shipped definitions (they must load, and mean what
//! they say) and on broken fixture folders (every problem reported, with the
//! exact file:line:col, message and hint), plus garbage input that must never
//! panic.
//!
//! Fixture folders live in `tests/fixtures/bad_definitions/<case>/`; messages
//! are compared with the manifest directory stripped from paths, so they read
//! `case/file.toml:line:col: error: ...`.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rdg::spec::{self, Condition, EdgeType, FieldPath, Outcome, Plan, TimeUnit};
use serde_json::json;
use support::{MANIFEST, dataflows_dir};

fn fixtures() -> PathBuf {
    Path::new(MANIFEST).join("tests/fixtures/bad_definitions")
}

/// The rendered problems of loading fixture `case`, paths relative to the
/// fixture folder.
fn problems_of(case: &str) -> String {
    let base = fixtures();
    match spec::load(&base.join(case)) {
        Ok(_) => panic!("fixture `{case}` loaded without problems"),
        Err(e) => e.to_string().replace(&format!("{}/", base.display()), ""),
    }
}

#[track_caller]
fn assert_problems(case: &str, expected: &str) {
    let actual = problems_of(case);
    assert!(
        actual == expected,
        "fixture `{case}`\n--- expected ---\n{expected}\n--- actual ---\n{actual}\n"
    );
}

fn shipped() -> Plan {
    match spec::load(&dataflows_dir()) {
        Ok(plan) => plan,
        Err(e) => panic!("shipped definitions do not load:\n{e}"),
    }
}

#[test]
fn shipped_definitions_load() {
    let plan = shipped();
    let names: Vec<&str> = plan.dataflows.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["gaming", "login", "playback"]);
    let flow = |name: &str| {
        plan.dataflows
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no dataflow {name}"))
    };

    let playback = flow("playback");
    assert_eq!(playback.topic, "playback");
    assert_eq!(playback.edges.len(), 3);
    assert_eq!(playback.nodes.len(), 3);
    assert_eq!(playback.event_time.unit, TimeUnit::Millis);
    assert_eq!(
        playback.when,
        Some(Condition::In(
            FieldPath::parse("event"),
            vec![json!("play_start"), json!("play_stop")]
        ))
    );
    let watched = &playback.edges[1];
    assert_eq!(watched.edge_type, "watched");
    assert_eq!(watched.retention, Some(100 * 86_400_000));
    assert!(watched.reverse);
    let props: Vec<&str> = watched.props.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(props, ["device", "position"]);
    assert_eq!(
        playback.nodes[1].props[1].1,
        FieldPath::parse("profile.maturity")
    );
    assert!(playback.kafka.is_empty());

    let login = flow("login");
    assert_eq!(login.event_time.unit, TimeUnit::Seconds);
    assert_eq!(login.event_time.path, FieldPath::parse("ts"));
    assert_eq!(login.identity[0].ids.len(), 3);

    let gaming = flow("gaming");
    assert_eq!(gaming.identity.len(), 1);
    assert_eq!(gaming.identity[0].ids.len(), 3);
    assert_eq!(gaming.identity[0].retention, Some(365 * 86_400_000));
    assert_eq!(gaming.identity[0].ids[1].node_type, "account");

    assert_eq!(
        plan.edge_types.get("watched"),
        Some(&EdgeType {
            from_type: "profile".to_string(),
            to_type: "title".to_string(),
            reverse: true,
        })
    );
    assert_eq!(
        plan.edge_types.get("has_profile").map(|e| e.reverse),
        Some(false)
    );
    assert_eq!(plan.edge_types.len(), 7);
    let node_types: Vec<&str> = plan.node_types.iter().map(String::as_str).collect();
    assert_eq!(
        node_types,
        [
            "account",
            "email",
            "game",
            "game_profile",
            "profile",
            "title"
        ]
    );
    assert_eq!(plan.identity.max_links, 50);
    assert_eq!(plan.identity.max_links_for("device"), 20);
    assert_eq!(plan.identity.max_links_for("account"), 50);
    assert!(plan.identity.blocklist.contains("unknown"));
}

/// An event's rules name the same identifiers many times (the shipped
/// login definition: the account in 5 places, the email in 3, the device
/// in 2); the decoded event holds each once, numbers as decimals, every
/// reference resolves to its text, and links come ordered by text.
#[test]
fn a_decoded_event_holds_each_identifier_once() {
    let plan = shipped();
    let Some(login) = plan.dataflows.iter().find(|d| d.name == "login") else {
        panic!("no login dataflow");
    };
    let email = "e".repeat(64);
    let event = json!({
        "ts": 1_700_000_000, "result": "success", "account_id": "acc9",
        "device_id": 77, "email_sha256": email, "geo": {"country": "NL"},
    });
    let Outcome::Event(d) = login.evaluate(&event, &plan.identity) else {
        panic!("not an event");
    };
    let mut ids: Vec<&str> = (0..d.id_count()).map(|i| d.id(i as u32)).collect();
    ids.sort();
    let email_id = format!("email:{email}");
    assert_eq!(ids, ["account:acc9", "device:77", email_id.as_str()]);
    let nodes: Vec<&str> = d.nodes.iter().map(|n| d.id(n.1)).collect();
    assert_eq!(nodes, ["account:acc9", email_id.as_str()]);
    let edges: Vec<(&str, &str)> = d.edges.iter().map(|e| (d.id(e.1), d.id(e.2))).collect();
    assert_eq!(
        edges,
        [
            ("account:acc9", "device:77"),
            ("account:acc9", email_id.as_str())
        ]
    );
    let links: Vec<(&str, &str)> = d.links.iter().map(|l| (d.id(l.1), d.id(l.2))).collect();
    assert_eq!(
        links,
        [
            ("account:acc9", "device:77"),
            ("account:acc9", email_id.as_str()),
            ("device:77", email_id.as_str()),
        ]
    );
}

#[test]
fn shipped_plan_evaluates_an_event() {
    let plan = shipped();
    let Some(playback) = plan.dataflows.iter().find(|d| d.name == "playback") else {
        panic!("no playback dataflow");
    };
    let event = json!({
        "event": "play_start", "ts": 1_700_000_000_000i64, "account_id": "a1",
        "profile_id": "p1", "title_id": "t1", "device_id": "d1", "country": "NL",
    });
    match playback.evaluate(&event, &plan.identity) {
        Outcome::Event(d) => {
            assert_eq!(d.time, 1_700_000_000_000);
            assert_eq!(d.nodes.len(), 3);
            assert_eq!(d.edges.len(), 3);
            assert_eq!(d.links.len(), 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    let ignored = json!({"event": "pause", "ts": 1});
    assert_eq!(
        playback.evaluate(&ignored, &plan.identity),
        Outcome::Ignored
    );
}

#[test]
fn unknown_key_with_typo() {
    assert_problems(
        "unknown_key",
        "unknown_key/playback.toml:6:1: error: unknown key `tpye` in [[nodes]]
  hint: did you mean `type`?

1 problem in 1 file",
    );
}

#[test]
fn missing_topic() {
    assert_problems(
        "missing_topic",
        "missing_topic/login.toml:1:1: error: missing required key `topic` in [source]
  hint: name the topic this definition reads, e.g. `topic = \"playback\"`

1 problem in 1 file",
    );
}

#[test]
fn bad_duration() {
    assert_problems(
        "bad_duration",
        "bad_duration/playback.toml:9:13: error: bad duration for `retention`: unknown unit ` days` in duration `100 days`
  hint: write a whole number and a unit: `ms`, `s`, `m`, `h` or `d`, e.g. `500ms`, `30s`, `15m`, `12h`, `100d`

1 problem in 1 file",
    );
}

#[test]
fn edge_type_with_other_endpoints_in_another_file() {
    assert_problems(
        "edge_conflict",
        "edge_conflict/b_trailers.toml:6:8: error: edge type `watched` goes from `account` to `title` here, but from `profile` to `title` at edge_conflict/a_playback.toml:6
  hint: an edge type has the same endpoint types everywhere; use the same `from`/`to` types or another edge type name

1 problem in 1 file",
    );
}

#[test]
fn toml_syntax_error() {
    assert_problems(
        "syntax_error",
        "syntax_error/playback.toml:2:18: error: TOML syntax error: invalid basic string, expected `\"`
  hint: a string opened with `\"` must close with `\"` on the same line

1 problem in 1 file",
    );
}

#[test]
fn condition_with_two_operators() {
    assert_problems(
        "two_operators",
        "two_operators/playback.toml:4:50: error: condition has more than one operator: `equals` and `in`
  hint: a condition table holds one test; combine tests with `all = [...]` or `any = [...]`

1 problem in 1 file",
    );
}

#[test]
fn identity_rule_with_one_id() {
    assert_problems(
        "identity_one_id",
        "identity_one_id/login.toml:6:7: error: identity rule needs at least 2 ids, found 1
  hint: an identity rule links the ids one event carries, e.g. `ids = [{ type = \"account\", id = \"account_id\" }, { type = \"device\", id = \"device_id\" }]`

1 problem in 1 file",
    );
}

#[test]
fn many_problems_in_many_files_at_once() {
    assert_problems(
        "many_problems",
        "many_problems/gaming.toml:3:39: error: unknown time unit `sec`
  hint: the unit of numeric event times is `s`, `ms` or `us` (RFC 3339 strings are always accepted)

many_problems/gaming.toml:6:8: error: type name \"game profile\" contains whitespace
  hint: type names become store names (`node/<type>`) and identifiers (`<type>:<id>`); use letters, digits, `_` or `-`

many_problems/gaming.toml:8:22: error: field path `platform.` ends with a dot
  hint: a field path is field names joined by single dots, e.g. `device_id` or `device.id`

many_problems/gaming.toml:8:46: error: `gamertag` must be a field path string, not an integer
  hint: a field path names a field of the event, e.g. `\"device_id\"` or `\"device.id\"`

many_problems/gaming.toml:9:12: error: `required` must be a boolean, not a string
  hint: write `required = true` or `required = false`

many_problems/gaming.toml:14:6: error: missing required key `id` in `to` of [[edges]]
  hint: name the field holding the id, e.g. `id = \"profile_id\"`

many_problems/login.toml:4:35: error: `equals` is a TOML datetime (2024-01-01T00:00:00Z), which JSON events never contain
  hint: quote it to compare with a string: `\"2024-01-01T00:00:00Z\"`

many_problems/login.toml:6:3: error: unknown key `node` in a definition
  hint: did you mean `nodes`?

many_problems/rdg.toml:2:13: error: `max_links` must be at least 1, not 0
  hint: an identifier with more distinct live neighbours than this is a hub; use 1 or more

many_problems/rdg.toml:3:1: error: unknown key `max_link_by_type` in [identity]
  hint: did you mean `max_links_by_type`?

10 problems in 3 files",
    );
}

#[test]
fn problems_are_structured() {
    let base = fixtures();
    let Err(e) = spec::load(&base.join("unknown_key")) else {
        panic!("loaded");
    };
    assert_eq!(
        e.problems,
        vec![spec::Problem {
            file: base.join("unknown_key/playback.toml"),
            line: Some(6),
            column: Some(1),
            message: "unknown key `tpye` in [[nodes]]".to_string(),
            hint: Some("did you mean `type`?".to_string()),
        }]
    );
}

#[test]
fn same_topic_in_two_definitions() {
    assert_problems(
        "same_topic",
        "same_topic/login_v2.toml:2:9: error: topic `login` is already read by definition `login` (same_topic/login.toml:2)
  hint: each topic is read by exactly one definition; put the rules of both in one file

1 problem in 1 file",
    );
}

#[test]
fn one_type_with_two_retentions_in_one_definition() {
    assert_problems(
        "retention_conflict",
        "retention_conflict/playback.toml:13:13: error: node type `profile` has retention `30d` here but retention `100d` in the rule at line 8
  hint: rules of one definition that assert the same node type must have the same retention

retention_conflict/playback.toml:22:8: error: edge type `watched` has no retention here but retention `2400h` in the rule at line 19
  hint: rules of one definition that assert the same edge type must have the same retention

2 problems in 1 file",
    );
}

#[test]
fn bad_names_and_paths() {
    assert_problems(
        "bad_names",
        "bad_names/my flow.toml: error: dataflow name \"my flow\" contains whitespace (the dataflow name is the file name without `.toml`)
  hint: rename the file; use letters, digits, `_` or `-`, e.g. `playback.toml`

bad_names/my flow.toml:2:9: error: empty topic
  hint: name the topic this definition reads, e.g. `topic = \"playback\"`

bad_names/my flow.toml:3:14: error: field path `a..b` has an empty segment
  hint: a field path is field names joined by single dots, e.g. `device_id` or `device.id`

bad_names/my flow.toml:6:8: error: type name `node/profile` contains `/`
  hint: type names become store names (`node/<type>`) and identifiers (`<type>:<id>`); use letters, digits, `_` or `-`

bad_names/my flow.toml:7:6: error: field path `.profile_id` starts with a dot
  hint: a field path is field names joined by single dots, e.g. `device_id` or `device.id`

bad_names/my flow.toml:10:8: error: type name `watched:by` contains `:`
  hint: type names become store names (`node/<type>`) and identifiers (`<type>:<id>`); use letters, digits, `_` or `-`

bad_names/my flow.toml:11:17: error: empty type name
  hint: type names become store names (`node/<type>`) and identifiers (`<type>:<id>`); use letters, digits, `_` or `-`

bad_names/my flow.toml:12:29: error: empty field path
  hint: a field path is field names joined by single dots, e.g. `device_id` or `device.id`

8 problems in 1 file",
    );
}

#[test]
fn bad_global_settings() {
    assert_problems(
        "rdg_settings",
        "rdg_settings/rdg.toml:1:2: error: unknown key `source` in rdg.toml
  hint: rdg.toml is not a definition: it holds only global settings ([identity]); put a definition in its own file, e.g. `playback.toml`

rdg_settings/rdg.toml:5:18: error: blocklist entries must be strings, not an integer
  hint: quote each id value, e.g. `blocklist = [\"\", \"0\", \"unknown\"]`

rdg_settings/rdg.toml:6:13: error: `max_links` must be at least 1, not -3
  hint: an identifier with more distinct live neighbours than this is a hub; use 1 or more

rdg_settings/rdg.toml:7:23: error: type name \"de vice\" contains whitespace in `max_links_by_type`
  hint: the keys of `max_links_by_type` are node types, e.g. `device = 20`

rdg_settings/rdg.toml:7:49: error: `max_links_by_type.account` must be at least 1, not 0
  hint: an identifier with more distinct live neighbours than this is a hub; use 1 or more

5 problems in 1 file",
    );
}

#[test]
fn settings_alone_are_not_definitions() {
    assert_problems(
        "only_settings",
        "only_settings: error: no definitions in `only_settings`
  hint: a definition is a `NAME.toml` file with a [source] table and rules; `rdg.toml` holds only global settings

1 problem in 1 file",
    );
}

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "rdg-spec-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), contents).expect("write temp file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn only_problem(dir: &Path) -> spec::Problem {
    match spec::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(mut e) => {
            assert_eq!(e.problems.len(), 1, "{e}");
            e.problems.remove(0)
        }
    }
}

#[test]
fn missing_empty_and_file_folders() {
    let missing = Path::new("/definitely/not/here/dataflows");
    let p = only_problem(missing);
    assert_eq!(p.file, missing);
    assert_eq!(p.line, None);
    assert_eq!(
        p.message,
        "definition folder `/definitely/not/here/dataflows` does not exist"
    );

    let empty = TempDir::new();
    let p = only_problem(&empty.0);
    assert!(p.message.starts_with("no definitions in"), "{p}");
    // Other files are not definitions.
    empty.write("README.md", "# hi");
    empty.write("notes.toml.bak", "x");
    assert!(
        only_problem(&empty.0)
            .message
            .starts_with("no definitions in")
    );

    let file = empty.0.join("README.md");
    assert!(only_problem(&file).message.ends_with("is not a folder"));
}

#[test]
fn definition_without_rules_and_without_source() {
    let dir = TempDir::new();
    dir.write("a.toml", "[source]\ntopic = \"a\"\nevent_time = \"ts\"\n");
    dir.write("b.toml", "# nothing\n");
    let Err(e) = spec::load(&dir.0) else {
        panic!("loaded");
    };
    let messages: Vec<(&str, Option<usize>, &str)> = e
        .problems
        .iter()
        .map(|p| {
            (
                p.file.file_name().and_then(|f| f.to_str()).unwrap_or(""),
                p.line,
                p.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("a.toml", None, "definition has no rules"),
            ("b.toml", None, "missing required table [source]"),
            ("b.toml", None, "definition has no rules"),
        ]
    );
    assert!(e.to_string().ends_with("\n\n3 problems in 2 files"));
}

#[test]
fn every_form_loads() {
    let dir = TempDir::new();
    dir.write(
        "full.toml",
        r#"
[source]
topic = "t"
event_time = { field = "meta.ts", unit = "us" }
delete = { not = { field = "op", in = ["upsert", 1, 2.5, true] } }
when = { all = [{ field = "e", exists = true }, { any = [{ field = "x", equals = { a = [1] } }] }] }

[source.kafka]
"fetch.min.bytes" = "1"
"enable.partition.eof" = false
"queued.min.messages" = 100000
"fetch.wait.max.ms" = 0x10

[[nodes]]
type = "profile"
id = "profile.id"
props = { z = "z", a = "a.b" }
retention = "12h"
when = { field = "kind", equals = "p" }
required = true

[[edges]]
type = "watched"
from = { type = "profile", id = "profile.id" }
to = { type = "title", id = "title_id" }
retention = "500ms"
required = true

[[edges]]
type = "watched"
from = { type = "profile", id = "profile.id" }
to = { type = "title", id = "other_title_id" }
retention = "500ms"
reverse = true

[[identity]]
ids = [{ type = "a", id = "a" }, { type = "b", id = "b" }]
retention = "15m"
when = { field = "ok", equals = true }
required = true
"#,
    );
    dir.write(
        "rdg.toml",
        "[identity]\nblocklist = [\"x\"]\nmax_links = 3\n[identity.max_links_by_type]\nb = 1\n",
    );
    let plan = match spec::load(&dir.0) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let d = &plan.dataflows[0];
    assert_eq!(d.name, "full");
    assert_eq!(d.event_time.unit, TimeUnit::Micros);
    assert_eq!(d.event_time.path.parts, ["meta", "ts"]);
    assert_eq!(
        d.delete,
        Some(Condition::Not(Box::new(Condition::In(
            FieldPath::parse("op"),
            vec![json!("upsert"), json!(1), json!(2.5), json!(true)]
        ))))
    );
    assert!(matches!(&d.when, Some(Condition::All(v)) if v.len() == 2));
    let kafka: Vec<(&str, &str)> = d
        .kafka
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        kafka,
        [
            ("enable.partition.eof", "false"),
            ("fetch.min.bytes", "1"),
            ("fetch.wait.max.ms", "16"),
            ("queued.min.messages", "100000"),
        ]
    );
    let n = &d.nodes[0];
    assert_eq!(
        n.props,
        vec![
            ("a".to_string(), FieldPath::parse("a.b")),
            ("z".to_string(), FieldPath::parse("z"))
        ]
    );
    assert_eq!(n.retention, Some(43_200_000));
    assert!(n.required);
    assert!(d.edges[0].required && !d.edges[0].reverse);
    assert!(!d.edges[1].required && d.edges[1].reverse);
    assert_eq!(d.edges[0].retention, Some(500));
    assert_eq!(d.identity[0].retention, Some(900_000));
    assert!(d.identity[0].required);
    // reverse = any rule of the type asks for it.
    assert!(plan.edge_types["watched"].reverse);
    assert_eq!(plan.identity.max_links, 3);
    assert_eq!(plan.identity.max_links_for("b"), 1);
    assert_eq!(plan.identity.blocklist.len(), 1);

    // Without rdg.toml the defaults apply.
    std::fs::remove_file(dir.0.join("rdg.toml")).expect("remove");
    let plan = spec::load(&dir.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.identity, spec::IdentityConfig::default());
}

#[test]
fn not_utf8_is_a_problem_with_a_position() {
    let dir = TempDir::new();
    dir.write("a.toml", b"[source]\ntopic = \"\xff\"\n");
    let p = only_problem(&dir.0);
    assert_eq!((p.line, p.column), (Some(2), Some(10)));
    assert_eq!(p.message, "file is not valid UTF-8");
}

#[test]
fn parse_duration_is_public() {
    assert_eq!(spec::parse_duration("100d"), Ok(8_640_000_000));
    assert!(spec::parse_duration("100").is_err());
}

/// Garbage must give problems, never a panic.
#[test]
fn garbage_never_panics() {
    let mut inputs: Vec<Vec<u8>> = [
        "",
        "=",
        "[",
        "[[",
        "]]]",
        "\"",
        "'''",
        "source = 1",
        "source = []",
        "[[source]]\ntopic = 1",
        "[source]\ntopic = []\nevent_time = 5",
        "[source]\nevent_time = { unit = 5 }\n[nodes]\ntype = 1",
        "nodes = 1\nedges = [1, \"x\", {}]\nidentity = [[]]",
        "[source]\ntopic=\"t\"\nevent_time=\"t\"\nwhen = { not = 1 }\ndelete = { all = [1, {}] }",
        "[source]\ntopic=\"t\"\nevent_time=\"t\"\n[[identity]]\nids = [1, 2, 3]\nretention = 1",
        "[source]\ntopic=\"t\"\nevent_time=\"t\"\n[[edges]]\nfrom = 1\nto = { type = [] }\nprops = []\nreverse = 1",
        "[source.kafka]\na = []\nb = {}\nc = 1979-05-27\n\"\" = 1",
        "a.b.c.d.e.f = 1\n[x.y.z]\n[[x.y.w]]",
        "\u{feff}[source]\ntopic = \"t\"",
        "[source]\ntopic = \"t\"\nevent_time = \"\u{1F600}.\"\n[[nodes]]\ntype = \"\u{e9}\"\nid = \"\u{e9}\"",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let deep = format!(
        "[source]\ntopic=\"t\"\nevent_time=\"t\"\nwhen = {}{{ field = \"a\", exists = true }}{}\n",
        "{ not = ".repeat(500),
        " }".repeat(500)
    );
    inputs.push(deep.into_bytes());
    inputs.push(vec![0, 159, 146, 150, b'\n', 0xc3]);

    // Every prefix of each shipped definition, and seeded byte changes.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for name in ["playback.toml", "login.toml", "gaming.toml", "rdg.toml"] {
        let text = std::fs::read(dataflows_dir().join(name)).expect("read");
        for cut in (0..text.len()).step_by(7) {
            inputs.push(text[..cut].to_vec());
        }
        let alphabet = b"[]{}=\",.'#\n 0aZ";
        for _ in 0..60 {
            let mut t = text.clone();
            for _ in 0..3 {
                let i = (next() as usize) % t.len();
                t[i] = alphabet[(next() as usize) % alphabet.len()];
            }
            inputs.push(t);
        }
    }

    let dir = TempDir::new();
    for input in &inputs {
        dir.write("x.toml", input);
        dir.write("rdg.toml", input);
        // Ok or Err, both fine; what matters is no panic and a rendering.
        if let Err(e) = spec::load(&dir.0) {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
}
