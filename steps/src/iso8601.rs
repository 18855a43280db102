//! ISO 8601 durations with designators (`P1Y2M3DT4H5M6.5S`), for the database kinds'
//! interval-like values: PostgreSQL's `interval` and CQL's `duration` both hold months, days
//! and a time part apiece, which no single number can stand for (a month is not a fixed
//! number of days, nor a day of hours across a DST change).
//!
//! [`format`] writes each component with its own sign, as PostgreSQL's `intervalstyle =
//! iso_8601` does (`P-1M-1D`, `PT-1.5S`); [`parse`] reads that form back, plus a leading `-`
//! that negates every component and weeks (`P2W`).

use std::fmt::Write as _;

const NANOS_PER_SECOND: i64 = 1_000_000_000;
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: i64 = 60 * NANOS_PER_MINUTE;

/// A duration's components: months, days and nanoseconds, each with its own sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    pub months: i64,
    pub days: i64,
    pub nanos: i64,
}

/// `P1Y2M3DT4H5M6.5S`; `PT0S` for zero.
pub(crate) fn format(parts: Parts) -> String {
    let mut text = String::from("P");
    let (years, months) = (parts.months / 12, parts.months % 12);
    for (n, unit) in [(years, 'Y'), (months, 'M'), (parts.days, 'D')] {
        if n != 0 {
            let _ = write!(text, "{n}{unit}");
        }
    }
    let nanos = parts.nanos;
    let hours = nanos / NANOS_PER_HOUR;
    let minutes = nanos % NANOS_PER_HOUR / NANOS_PER_MINUTE;
    let rest = nanos % NANOS_PER_MINUTE;
    if hours != 0 || minutes != 0 || rest != 0 {
        text.push('T');
        if hours != 0 {
            let _ = write!(text, "{hours}H");
        }
        if minutes != 0 {
            let _ = write!(text, "{minutes}M");
        }
        if rest != 0 {
            let sign = if rest < 0 { "-" } else { "" };
            let abs = rest.unsigned_abs();
            let _ = write!(text, "{sign}{}", abs / NANOS_PER_SECOND.unsigned_abs());
            let fraction = abs % NANOS_PER_SECOND.unsigned_abs();
            if fraction != 0 {
                let digits = format!("{fraction:09}");
                let _ = write!(text, ".{}", digits.trim_end_matches('0'));
            }
            text.push('S');
        }
    }
    if text == "P" {
        text.push_str("T0S");
    }
    text
}

/// Reads what [`format`] writes (and weeks, and a leading `-`); the error says what is wrong.
pub(crate) fn parse(text: &str) -> Result<Parts, String> {
    let bad = |why: &str| format!("`{text}` is not an ISO 8601 duration such as P1DT2H30M: {why}");
    let trimmed = text.trim();
    let (negate, rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed),
    };
    let rest = rest
        .strip_prefix(['P', 'p'])
        .ok_or_else(|| bad("it must start with P"))?;
    if rest.is_empty() {
        return Err(bad("it has no component"));
    }
    let mut parts = Parts::default();
    let mut in_time = false;
    let mut number = String::new();
    let overflow = || bad("a component is too large");
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' | '-' | '+' => number.push(c),
            unit => {
                if number.is_empty() {
                    return Err(bad(&format!("`{c}` has no number before it")));
                }
                let fractional = number.contains('.');
                if fractional && !(in_time && unit == 'S') {
                    return Err(bad("only seconds may have a fraction"));
                }
                let whole = |n: &str| {
                    n.parse::<i64>()
                        .map_err(|_| bad(&format!("`{n}` is not a number")))
                };
                match (in_time, unit) {
                    (false, 'Y') => {
                        parts.months += whole(&number)?.checked_mul(12).ok_or_else(overflow)?;
                    }
                    (false, 'M') => parts.months += whole(&number)?,
                    (false, 'W') => {
                        parts.days += whole(&number)?.checked_mul(7).ok_or_else(overflow)?;
                    }
                    (false, 'D') => parts.days += whole(&number)?,
                    (true, 'H') => {
                        parts.nanos += whole(&number)?
                            .checked_mul(NANOS_PER_HOUR)
                            .ok_or_else(overflow)?;
                    }
                    (true, 'M') => {
                        parts.nanos += whole(&number)?
                            .checked_mul(NANOS_PER_MINUTE)
                            .ok_or_else(overflow)?;
                    }
                    (true, 'S') => {
                        parts.nanos += seconds(&number).ok_or_else(|| {
                            bad(&format!("`{number}` is not a number of seconds"))
                        })?;
                    }
                    _ => return Err(bad(&format!("`{c}` is not a unit here"))),
                }
                number.clear();
            }
        }
    }
    if !number.is_empty() {
        return Err(bad(&format!("`{number}` has no unit")));
    }
    if negate {
        parts = Parts {
            months: -parts.months,
            days: -parts.days,
            nanos: -parts.nanos,
        };
    }
    Ok(parts)
}

/// `6.5` seconds as nanoseconds (at most nine fraction digits).
fn seconds(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() > 9 || (whole.is_empty() && fraction.is_empty()) {
        return None;
    }
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = format!("{fraction:0<9}").parse().ok()?;
    let nanos = whole.checked_mul(NANOS_PER_SECOND)?.checked_add(fraction)?;
    Some(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(months: i64, days: i64, nanos: i64) -> Parts {
        Parts {
            months,
            days,
            nanos,
        }
    }

    #[test]
    fn formats_as_postgres_prints_iso_8601() {
        assert_eq!(format(parts(0, 0, 0)), "PT0S");
        assert_eq!(format(parts(14, 3, 14_706_500_000_000)), "P1Y2M3DT4H5M6.5S");
        assert_eq!(format(parts(0, 0, -1_500_000_000)), "PT-1.5S");
        assert_eq!(format(parts(-1, -1, 0)), "P-1M-1D");
        assert_eq!(format(parts(0, 0, 3_600_000_000_000)), "PT1H");
        assert_eq!(format(parts(0, 0, 1)), "PT0.000000001S");
    }

    #[test]
    fn parses_what_it_formats_and_more() {
        for p in [
            parts(14, 3, 14_706_500_000_000),
            parts(0, 0, -1_500_000_000),
            parts(-1, -1, 0),
            parts(0, 0, 1),
            parts(0, 0, 0),
        ] {
            assert_eq!(parse(&format(p)), Ok(p), "{}", format(p));
        }
        assert_eq!(parse("P2W"), Ok(parts(0, 14, 0)));
        assert_eq!(parse("-P1DT1S"), Ok(parts(0, -1, -NANOS_PER_SECOND)));
        assert_eq!(parse("pt90m"), Ok(parts(0, 0, 90 * NANOS_PER_MINUTE)));
        assert_eq!(
            parse("1h").unwrap_err(),
            "`1h` is not an ISO 8601 duration such as P1DT2H30M: it must start with P"
        );
        assert_eq!(
            parse("P1.5D").unwrap_err(),
            "`P1.5D` is not an ISO 8601 duration such as P1DT2H30M: only seconds may have a fraction"
        );
        assert_eq!(
            parse("P1H").unwrap_err(),
            "`P1H` is not an ISO 8601 duration such as P1DT2H30M: `H` is not a unit here"
        );
        assert_eq!(
            parse("PT5").unwrap_err(),
            "`PT5` is not an ISO 8601 duration such as P1DT2H30M: `5` has no unit"
        );
        assert!(parse("P").is_err());
        assert!(parse("PT1.0000000001S").is_err());
    }
}
