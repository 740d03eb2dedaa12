//! Durations as written in definition files (`retention = "100d"`).
//!
//! Owns [`parse_duration`]. Invariant: an accepted duration is a whole number
//! of one unit (`ms`, `s`, `m`, `h`, `d`) and its value in milliseconds fits in
//! an `i64`, so adding it to an event time can be checked rather than wrap.

/// The units a duration may use, for hints.
pub(crate) const UNITS_HINT: &str = "write a whole number and a unit: `ms`, `s`, `m`, `h` or `d`, \
     e.g. `500ms`, `30s`, `15m`, `12h`, `100d`";

/// Parses `"500ms"`, `"30s"`, `"15m"`, `"12h"`, `"100d"` into milliseconds.
///
/// Rejects the empty string, signs, spaces, fractions, a missing or unknown
/// unit, and values above `i64::MAX` milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    if s.starts_with('-') {
        return Err(format!("negative duration `{s}`"));
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(format!("duration `{s}` does not start with a number"));
    }
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!("duration `{s}` is not a whole number"));
    }
    let scale: u64 = match unit {
        "" => return Err(format!("duration `{s}` has no unit")),
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit `{other}` in duration `{s}`")),
    };
    let too_large = || format!("duration `{s}` is too large");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let ms = n.checked_mul(scale).ok_or_else(too_large)?;
    if ms > i64::MAX as u64 {
        return Err(too_large());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("15m"), Ok(900_000));
        assert_eq!(parse_duration("12h"), Ok(43_200_000));
        assert_eq!(parse_duration("100d"), Ok(8_640_000_000));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("007s"), Ok(7_000));
    }

    #[test]
    fn rejects() {
        for bad in [
            "", "-5s", "5", "s", "5x", "5 s", " 5s", "5s ", "1.5h", "+5s", "5S", "5sec", "ms5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_duration(""), Err("empty duration".to_string()));
        assert_eq!(
            parse_duration("-5s"),
            Err("negative duration `-5s`".to_string())
        );
        assert_eq!(
            parse_duration("5"),
            Err("duration `5` has no unit".to_string())
        );
        assert_eq!(
            parse_duration("5w"),
            Err("unknown unit `w` in duration `5w`".to_string())
        );
        assert_eq!(
            parse_duration("1.5h"),
            Err("duration `1.5h` is not a whole number".to_string())
        );
    }

    #[test]
    fn overflow() {
        assert!(parse_duration("99999999999999999999999ms").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("106751991168d").is_err()); // > i64::MAX ms
        assert_eq!(
            parse_duration("106751991167d"),
            Ok(106_751_991_167 * 86_400_000)
        );
        assert_eq!(parse_duration("9223372036854775807ms"), Ok(i64::MAX as u64));
        assert!(parse_duration("9223372036854775808ms").is_err());
    }
}
