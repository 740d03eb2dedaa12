//! Input checking: query strings, path segments, limits. Each check turns
//! a bad value into a 400 that names the parameter, what was given and what
//! is allowed.
//!
//! Invariant: a value that passes is within the server's bounds
//! ([`ServeConfig`](super::ServeConfig)); handlers never see an unchecked
//! length or count.

use std::borrow::Cow;

use clap::ValueEnum;
use percent_encoding::percent_decode_str;

use super::error::ApiError;

/// A parsed query string: each allowed key at most once. Keys and values
/// borrow from the query string unless they had to be decoded.
#[derive(Debug, Default)]
pub struct Params<'q> {
    pairs: Vec<(Cow<'q, str>, Cow<'q, str>)>,
}

/// `part` with `+` as space and percent-escapes decoded; `what` names it in
/// the error.
fn decode<'q>(part: &'q str, what: impl FnOnce() -> String) -> Result<Cow<'q, str>, ApiError> {
    let bad = || ApiError::bad_request(format!("{} is not UTF-8 once percent-decoded", what()));
    if part.contains('+') {
        let spaced = part.replace('+', " ");
        let decoded = percent_decode_str(&spaced)
            .decode_utf8()
            .map_err(|_| bad())?;
        return Ok(Cow::Owned(decoded.into_owned()));
    }
    percent_decode_str(part).decode_utf8().map_err(|_| bad())
}

impl<'q> Params<'q> {
    /// Parses `raw` (the part after `?`), refusing keys not in `allowed`
    /// and keys given twice.
    pub fn parse(raw: Option<&'q str>, allowed: &[&str]) -> Result<Params<'q>, ApiError> {
        let mut pairs: Vec<(Cow<'q, str>, Cow<'q, str>)> = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k, || "a parameter name".to_string())?;
            let v = decode(v, || format!("parameter `{k}`"))?;
            if !allowed.contains(&k.as_ref()) {
                let shown: String = k.chars().take(64).collect();
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{shown}`; allowed: {}",
                    if allowed.is_empty() {
                        "none".to_string()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            if pairs.iter().any(|(x, _)| *x == k) {
                return Err(ApiError::bad_request(format!(
                    "parameter `{k}` is given twice"
                )));
            }
            pairs.push((k, v));
        }
        Ok(Params { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_ref())
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub fn int_in(
        &self,
        key: &str,
        min: usize,
        max: usize,
        default: usize,
    ) -> Result<usize, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => int_in(key, v, min, max),
        }
    }

    /// An epoch-ms time, or `None` when absent.
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "`{key}` must be a time in epoch milliseconds (an integer), got `{}`",
                        shorten(v)
                    ))
                })
            })
            .transpose()
    }
}

/// At most 64 characters of a client's value, for messages.
pub fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(64).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    s
}

/// An integer in `min..=max`.
pub fn int_in(key: &str, v: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    match v.parse::<u64>() {
        Ok(n) if n >= min as u64 && n <= max as u64 => Ok(n as usize),
        _ => Err(ApiError::bad_request(format!(
            "`{key}` must be an integer from {min} to {max}, got `{}`",
            shorten(v)
        ))),
    }
}

/// One of an enum's names, the same words as its JSON and its command-line
/// values (`direction`: `out`/`in`, `order`: `id`/`recent`); its default
/// when absent.
pub fn choice<E: ValueEnum + Default>(key: &str, v: Option<&str>) -> Result<E, ApiError> {
    let Some(v) = v else {
        return Ok(E::default());
    };
    E::from_str(v, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(ValueEnum::to_possible_value)
            .map(|p| format!("`{}`", p.get_name()))
            .collect();
        ApiError::bad_request(format!(
            "`{key}` must be {}, got `{}`",
            names.join(" or "),
            shorten(v)
        ))
    })
}

/// A name (edge type) of 1 to `max` bytes.
pub fn name(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > max {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1 to {max} bytes long, got {} bytes",
            v.len()
        )));
    }
    Ok(())
}

/// `type:id` from separate path segments: the type must be non-empty and
/// without a colon (identifiers split at their first colon), the whole at
/// most `max` bytes.
pub fn ident(node_type: &str, id: &str, max: usize) -> Result<String, ApiError> {
    if node_type.is_empty() || node_type.contains(':') {
        return Err(ApiError::bad_request(format!(
            "a node type must be non-empty and without `:`, got `{}`",
            shorten(node_type)
        )));
    }
    let len = node_type.len() + 1 + id.len();
    if len > max {
        return Err(ApiError::bad_request(format!(
            "an identifier may be at most {max} bytes, got {len}"
        )));
    }
    let mut ident = String::with_capacity(len);
    crate::model::push_ident_str(&mut ident, node_type, id);
    Ok(ident)
}

/// A `type:id` string as given in a request body.
pub fn ident_str(what: &str, v: &str, max: usize) -> Result<String, ApiError> {
    match v.split_once(':') {
        Some((t, id)) if !t.is_empty() => ident(t, id, max).map_err(|e| ApiError {
            message: format!("{what}: {}", e.message),
            ..e
        }),
        _ => Err(ApiError::bad_request(format!(
            "{what} must be an identifier `type:id`, got `{}`",
            shorten(v)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let p = Params::parse(Some("limit=5&since=-3&q=a%20b+c"), &["limit", "since", "q"])
            .expect("parses");
        assert_eq!(p.int_in("limit", 1, 10, 2), Ok(5));
        assert_eq!(p.time("since"), Ok(Some(-3)));
        assert_eq!(p.get("q"), Some("a b c"));
        assert_eq!(p.int_in("cursor", 1, 10, 2), Ok(2));
        let e = Params::parse(Some("limit=1&limit=2"), &["limit"]).expect_err("twice");
        assert!(e.message.contains("twice"));
        let e = Params::parse(Some("x=1"), &["limit"]).expect_err("unknown");
        assert_eq!(e.message, "unknown parameter `x`; allowed: limit");
        let e = Params::parse(Some("limit=%FF"), &["limit"]).expect_err("utf-8");
        assert!(e.message.contains("UTF-8"));
        let p = Params::parse(Some("limit=0"), &["limit"]).expect("parses");
        assert_eq!(
            p.int_in("limit", 1, 10, 2).expect_err("range").message,
            "`limit` must be an integer from 1 to 10, got `0`"
        );
    }

    #[test]
    fn choices() {
        use crate::model::{Direction, EdgeOrder};
        assert_eq!(choice("direction", None), Ok(Direction::Out));
        assert_eq!(choice("direction", Some("in")), Ok(Direction::In));
        assert_eq!(choice("order", Some("recent")), Ok(EdgeOrder::Recent));
        assert_eq!(
            choice::<Direction>("direction", Some("up"))
                .expect_err("bad")
                .message,
            "`direction` must be `out` or `in`, got `up`"
        );
        assert_eq!(
            choice::<EdgeOrder>("order", Some("ID"))
                .expect_err("bad")
                .message,
            "`order` must be `id` or `recent`, got `ID`"
        );
    }

    #[test]
    fn identifiers() {
        assert_eq!(ident("profile", "p:1", 64), Ok("profile:p:1".to_string()));
        assert!(ident("a:b", "x", 64).is_err());
        assert!(ident("", "x", 64).is_err());
        assert!(ident("profile", &"x".repeat(100), 64).is_err());
        assert_eq!(
            ident_str("start", "account:a1", 64),
            Ok("account:a1".into())
        );
        assert!(ident_str("start", "a1", 64).is_err());
    }
}
