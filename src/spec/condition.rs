//! Conditions as written in definition files (`when`, `delete`).
//!
//! Owns the reading of condition tables into [`Condition`]. Invariant: a
//! condition table holds exactly one operator; `field` appears with `equals`,
//! `in` and `exists` and never with `not`, `all` or `any`; `in`, `all` and
//! `any` are non-empty. Anything else is a problem, never a guess.

use toml::de::DeValue;

use super::plan::Condition;
use super::problem::one_of;
use super::reader::{FileCx, Table, Val};

const KEYS: [&str; 7] = ["field", "equals", "in", "exists", "not", "all", "any"];
const OPERATORS: [&str; 6] = ["equals", "in", "exists", "not", "all", "any"];
const FORMS_HINT: &str = "a condition is one of `{ field = \"f\", equals = V }`, \
     `{ field = \"f\", in = [V, ...] }`, `{ field = \"f\", exists = true }`, \
     `{ not = COND }`, `{ all = [COND, ...] }`, `{ any = [COND, ...] }`";

/// Reads the condition `v`, the value of `key` (for messages).
pub(crate) fn condition(cx: &mut FileCx<'_>, v: &Val<'_>, key: &str) -> Option<Condition> {
    let DeValue::Table(map) = v.get_ref() else {
        cx.wrong_type(v, key, "a condition table", Some(FORMS_HINT.to_string()));
        return None;
    };
    let t = Table {
        map,
        span: v.span(),
        what: "a condition".to_string(),
        known: &KEYS,
    };
    t.check_keys(cx);

    let op = operator(cx, &t)?;
    let operand = t.get(op)?;
    match op {
        "equals" | "in" | "exists" => field_test(cx, &t, op, operand),
        _ => nested(cx, &t, op, operand),
    }
}

/// The one operator of condition table `t`; an error when it has none or
/// several.
fn operator(cx: &mut FileCx<'_>, t: &Table<'_, '_>) -> Option<&'static str> {
    let mut ops: Vec<(&'static str, usize)> = OPERATORS
        .iter()
        .filter_map(|op| t.key_span(op).map(|s| (*op, s.start)))
        .collect();
    ops.sort_by_key(|(_, start)| *start);
    match ops.as_slice() {
        [] => {
            cx.error(
                Some(&t.span),
                format!("condition has no operator (one of {})", one_of(&OPERATORS)),
                Some(FORMS_HINT.to_string()),
            );
            None
        }
        [(op, _)] => Some(*op),
        [(first, _), (second, _), ..] => {
            let span = t.key_span(second);
            cx.error(
                span.as_ref(),
                format!("condition has more than one operator: `{first}` and `{second}`"),
                Some(
                    "a condition table holds one test; combine tests with `all = [...]` or `any = [...]`"
                        .to_string(),
                ),
            );
            None
        }
    }
}

/// A test of a field: `equals`, `in` or `exists` (`op`) with its `operand`.
fn field_test(
    cx: &mut FileCx<'_>,
    t: &Table<'_, '_>,
    op: &str,
    operand: &Val<'_>,
) -> Option<Condition> {
    let Some(field) = t.get("field") else {
        if t.misspells("field") {
            return None;
        }
        cx.error(
            Some(&t.span),
            format!("condition with `{op}` needs a `field`"),
            Some(format!(
                "e.g. `{{ field = \"event\", {op} = {} }}`",
                example(op)
            )),
        );
        return None;
    };
    let path = cx.field_path(field, "field");
    match op {
        "equals" => {
            let value = cx.json(operand, "equals");
            Some(Condition::Equals(path?, value?))
        }
        "in" => {
            let values = in_values(cx, operand);
            Some(Condition::In(path?, values?))
        }
        _ => {
            let want = cx.boolean(operand, "exists");
            Some(Condition::Exists(path?, want?))
        }
    }
}

/// Conditions of conditions: `not`, `all` or `any` (`op`) of `operand`.
fn nested(
    cx: &mut FileCx<'_>,
    t: &Table<'_, '_>,
    op: &str,
    operand: &Val<'_>,
) -> Option<Condition> {
    if let Some(span) = t.key_span("field") {
        cx.error(
            Some(&span),
            format!("`field` cannot be used with `{op}`"),
            Some(format!(
                "put the field inside the nested condition, e.g. `{{ {op} = {} }}`",
                example(op)
            )),
        );
        return None;
    }
    if op == "not" {
        return condition(cx, operand, "not").map(|c| Condition::Not(Box::new(c)));
    }
    let items = cx.array(operand, op, Some(FORMS_HINT.to_string()))?;
    if items.is_empty() {
        cx.error(
            Some(&operand.span()),
            format!("`{op}` has no conditions"),
            Some(format!(
                "list at least one condition, e.g. `{{ {op} = {} }}`",
                example(op)
            )),
        );
        return None;
    }
    let mut conds = Vec::new();
    let mut ok = true;
    for item in items {
        match condition(cx, item, op) {
            Some(c) => conds.push(c),
            None => ok = false,
        }
    }
    if !ok {
        return None;
    }
    Some(if op == "all" {
        Condition::All(conds)
    } else {
        Condition::Any(conds)
    })
}

/// The values of `in = [...]`: a non-empty array of JSON-able values.
fn in_values(cx: &mut FileCx<'_>, operand: &Val<'_>) -> Option<Vec<serde_json::Value>> {
    let items = cx.array(
        operand,
        "in",
        Some("e.g. `in = [\"play_start\", \"play_stop\"]`".to_string()),
    )?;
    if items.is_empty() {
        cx.error(
            Some(&operand.span()),
            "`in` has no values, so the condition never holds".to_string(),
            Some(
                "list the values to match, e.g. `in = [\"play_start\", \"play_stop\"]`".to_string(),
            ),
        );
        return None;
    }
    let mut values = Vec::new();
    let mut ok = true;
    for item in items {
        match cx.json(item, "in") {
            Some(j) => values.push(j),
            None => ok = false,
        }
    }
    ok.then_some(values)
}

fn example(op: &str) -> &'static str {
    match op {
        "equals" => "\"play_start\"",
        "in" => "[\"play_start\", \"play_stop\"]",
        "exists" => "true",
        "not" => "{ field = \"op\", equals = \"delete\" }",
        _ => "[{ field = \"event\", equals = \"play\" }, { field = \"result\", equals = \"ok\" }]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::plan::FieldPath;
    use serde_json::json;
    use std::path::PathBuf;

    /// Reads `when = <cond>` and returns the condition or the problem texts.
    fn read(cond: &str) -> Result<Condition, Vec<String>> {
        let text = format!("when = {cond}\n");
        let mut cx = FileCx::new(PathBuf::from("t.toml"), &text);
        let doc = cx.parse(&text).ok_or_else(|| render(&cx))?;
        let v = doc.get("when").ok_or_else(|| vec!["no when".to_string()])?;
        let c = condition(&mut cx, v, "when");
        match c {
            Some(c) if cx.problems.is_empty() => Ok(c),
            _ => Err(render(&cx)),
        }
    }

    fn render(cx: &FileCx<'_>) -> Vec<String> {
        cx.problems.iter().map(|p| p.to_string()).collect()
    }

    fn path(s: &str) -> FieldPath {
        FieldPath::parse(s)
    }

    #[test]
    fn every_form() {
        assert_eq!(
            read(r#"{ field = "a.b", equals = "x" }"#),
            Ok(Condition::Equals(path("a.b"), json!("x")))
        );
        assert_eq!(
            read(r#"{ field = "n", equals = 5 }"#),
            Ok(Condition::Equals(path("n"), json!(5)))
        );
        assert_eq!(
            read(r#"{ field = "n", equals = 0x10 }"#),
            Ok(Condition::Equals(path("n"), json!(16)))
        );
        assert_eq!(
            read(r#"{ field = "n", equals = 1.5 }"#),
            Ok(Condition::Equals(path("n"), json!(1.5)))
        );
        assert_eq!(
            read(r#"{ field = "n", equals = { a = [1, true] } }"#),
            Ok(Condition::Equals(path("n"), json!({"a": [1, true]})))
        );
        assert_eq!(
            read(r#"{ field = "e", in = ["a", 2] }"#),
            Ok(Condition::In(path("e"), vec![json!("a"), json!(2)]))
        );
        assert_eq!(
            read(r#"{ field = "e", exists = false }"#),
            Ok(Condition::Exists(path("e"), false))
        );
        assert_eq!(
            read(r#"{ not = { field = "e", exists = true } }"#),
            Ok(Condition::Not(Box::new(Condition::Exists(path("e"), true))))
        );
        assert_eq!(
            read(
                r#"{ all = [{ field = "a", equals = 1 }, { any = [{ field = "b", equals = 2 }] }] }"#
            ),
            Ok(Condition::All(vec![
                Condition::Equals(path("a"), json!(1)),
                Condition::Any(vec![Condition::Equals(path("b"), json!(2))]),
            ]))
        );
    }

    #[test]
    fn two_operators() {
        assert_eq!(
            read(r#"{ field = "e", equals = "a", in = ["b"] }"#),
            Err(vec![
                "t.toml:1:37: error: condition has more than one operator: `equals` and `in`\n  hint: a condition table holds one test; combine tests with `all = [...]` or `any = [...]`".to_string()
            ])
        );
    }

    #[test]
    fn mistakes() {
        let one = |c: &str| -> String {
            match read(c) {
                Ok(c) => panic!("accepted {c:?}"),
                Err(mut ps) => {
                    assert_eq!(ps.len(), 1, "{ps:?}");
                    ps.remove(0)
                }
            }
        };
        assert!(one(r#"{ field = "e" }"#).contains("condition has no operator"));
        assert!(one(r#"{ equals = "e" }"#).contains("condition with `equals` needs a `field`"));
        assert!(
            one(r#"{ field = "e", not = { field = "x", exists = true } }"#)
                .contains("`field` cannot be used with `not`")
        );
        assert!(one(r#"{ field = "e", equals = 1979-05-27 }"#).contains("TOML datetime"));
        assert!(one(r#"{ field = "e", equals = nan }"#).contains("cannot be compared"));
        assert!(one(r#"{ field = "e", in = [] }"#).contains("`in` has no values"));
        assert!(one(r#"{ all = [] }"#).contains("`all` has no conditions"));
        assert!(
            one(r#"{ field = "e", in = "x" }"#).contains("`in` must be an array, not a string")
        );
        assert!(one(r#"{ field = "e", exists = "yes" }"#).contains("`exists` must be a boolean"));
        assert!(one(r#"{ field = "a..b", exists = true }"#).contains("empty segment"));
        assert!(one(r#""event""#).contains("`when` must be a condition table, not a string"));
        assert!(
            one(r#"{ feild = "e", equals = 1, field = "x" }"#).contains("did you mean `field`?")
        );
        assert!(one(r#"{ field = "e", equals = 99999999999999999999 }"#).contains("out of range"));
        // Problems in nested conditions are all reported.
        assert_eq!(
            read(r#"{ any = [{ field = "" , equals = 1 }, { nope = 1 }] }"#)
                .err()
                .map(|v| v.len()),
            Some(3)
        );
    }
}
