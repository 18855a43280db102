//! PostgreSQL values ↔ JSON, for the `sql` step.
//!
//! # Reading (binary format, as tokio-postgres asks the server for it)
//!
//! | PostgreSQL | JSON |
//! |---|---|
//! | `bool` | true / false |
//! | `smallint`, `integer`, `bigint`, `oid` | a number |
//! | `real`, `double precision` | a number; `NaN`, `Infinity`, `-Infinity` as those strings |
//! | `numeric` | a string with every digit the server sent (`"12.50"`): a JSON number would round |
//! | `text`, `varchar`, `char(n)`, `name`, `"char"`, `citext`, `xml`, enums | a string |
//! | `json`, `jsonb` | the JSON value itself |
//! | `uuid` | its hyphenated string |
//! | `bytea` | base64 (standard alphabet, padded) |
//! | `timestamptz` | RFC 3339 in UTC: `2024-05-01T12:00:00.25Z` |
//! | `timestamp` | the same without a zone: `2024-05-01T12:00:00.25` |
//! | `date`, `time`, `timetz` | `2024-05-01`, `12:00:00.25`, `12:00:00+02:00` |
//! | `interval` | ISO 8601, as PostgreSQL's `intervalstyle = iso_8601` writes it: `P1Y2M3DT4H5M6S` |
//! | `inet`, `cidr`, `macaddr` | their text (`10.0.0.1`, `10.0.0.0/8`, `08:00:2b:01:02:03`) |
//! | arrays | lists (nested for several dimensions) of the element's mapping |
//! | composite types (rows) | objects by field name |
//! | domains | as their base type |
//! | NULL | null |
//!
//! Infinite timestamps and dates are `"infinity"` and `"-infinity"`. A type not in the table
//! (ranges, geometric types, `money`, `tsvector`, extension types) is an [`Unreadable`] error
//! naming it, so the statement can cast it (`x::text`) instead of getting a wrong value.
//!
//! # Binding (text format)
//!
//! A parameter is sent in PostgreSQL's *text* format and the server parses it with the
//! parameter's type, as if it were a literal of that type: so a JSON value binds to every type
//! whose input accepts its text (`42` to `integer`, `numeric` or `text`; `"2024-05-01"` to
//! `date`; `"10.0.0.1"` to `inet`; `"1 day"` to `interval`; enum labels), and a value that does
//! not fit fails with PostgreSQL's own error and SQLSTATE (22P02 and friends). Exceptions,
//! where JSON's text is not the type's: `json`/`jsonb` take any JSON value as JSON (a string
//! becomes a JSON string); `bytea` takes base64 (the same alphabet it is read in); arrays take
//! a JSON list (nested for several dimensions), each item mapped by the element type. null is
//! NULL.

use std::error::Error as StdError;
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta};
use postgres_protocol::types as pg;
use serde_json::{Map, Value, json};
use tokio_postgres::types::{Format, FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A column of a type the step cannot map to JSON.
#[derive(Debug, thiserror::Error)]
#[error("the sql step cannot read type `{type_name}`")]
pub(crate) struct Unreadable {
    /// The type's name as PostgreSQL knows it.
    pub type_name: String,
}

/// A parameter value the step cannot send as the parameter's type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unbindable(pub String);

/// One value of a row, as JSON.
#[derive(Debug)]
pub(crate) struct Cell(pub Value);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        decode(ty, raw).map(Cell)
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Midnight of 2000-01-01, PostgreSQL's epoch for dates and timestamps.
fn pg_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

fn unreadable(ty: &Type) -> BoxError {
    Box::new(Unreadable {
        type_name: ty.name().to_owned(),
    })
}

/// A float as JSON: a number when finite, else PostgreSQL's spelling.
fn float(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// Decodes one non-NULL value in binary format.
pub(crate) fn decode(ty: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    Ok(match *ty {
        Type::BOOL => json!(pg::bool_from_sql(raw)?),
        Type::INT2 => json!(pg::int2_from_sql(raw)?),
        Type::INT4 => json!(pg::int4_from_sql(raw)?),
        Type::INT8 => json!(pg::int8_from_sql(raw)?),
        Type::OID | Type::XID | Type::CID => json!(pg::oid_from_sql(raw)?),
        Type::FLOAT4 => float(f64::from(pg::float4_from_sql(raw)?)),
        Type::FLOAT8 => float(pg::float8_from_sql(raw)?),
        Type::NUMERIC => json!(numeric(raw)?),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::XML => {
            json!(pg::text_from_sql(raw)?)
        }
        Type::CHAR => json!(char::from(pg::char_from_sql(raw)? as u8).to_string()),
        Type::JSON => serde_json::from_slice(raw)?,
        Type::JSONB => match raw.split_first() {
            Some((1, text)) => serde_json::from_slice(text)?,
            _ => return Err("unknown jsonb version".into()),
        },
        Type::UUID => json!(uuid::Uuid::from_bytes(pg::uuid_from_sql(raw)?).to_string()),
        Type::BYTEA => json!(BASE64.encode(pg::bytea_from_sql(raw))),
        Type::TIMESTAMP => json!(timestamp(pg::timestamp_from_sql(raw)?, false)?),
        Type::TIMESTAMPTZ => json!(timestamp(pg::timestamp_from_sql(raw)?, true)?),
        Type::DATE => json!(date(pg::date_from_sql(raw)?)?),
        Type::TIME => json!(time(pg::time_from_sql(raw)?)?),
        Type::TIMETZ => json!(timetz(raw)?),
        Type::INTERVAL => json!(interval(raw)?),
        Type::INET | Type::CIDR => {
            let inet = pg::inet_from_sql(raw)?;
            let full = if inet.addr().is_ipv4() { 32 } else { 128 };
            if *ty == Type::INET && inet.netmask() == full {
                json!(inet.addr().to_string())
            } else {
                json!(format!("{}/{}", inet.addr(), inet.netmask()))
            }
        }
        // An anonymous row, `ROW(1, 'a')`: its fields carry their types, named as
        // PostgreSQL names them (f1, f2, …).
        Type::RECORD => record(raw)?,
        Type::MACADDR => {
            let bytes = pg::macaddr_from_sql(raw)?;
            let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
            json!(parts.join(":"))
        }
        _ => match ty.kind() {
            Kind::Array(member) => array(member, raw)?,
            Kind::Enum(_) => json!(pg::text_from_sql(raw)?),
            Kind::Domain(base) => decode(base, raw)?,
            Kind::Composite(fields) => composite(fields, raw)?,
            // citext is an extension's type, sent as its text.
            Kind::Simple if ty.name() == "citext" => json!(pg::text_from_sql(raw)?),
            _ => return Err(unreadable(ty)),
        },
    })
}

/// NUMERIC's binary form (digits in base 10 000, a weight, a sign and a display scale) as the
/// decimal text PostgreSQL prints, every digit kept.
pub(crate) fn numeric(raw: &[u8]) -> Result<String, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "numeric value too short".into())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        0x0000 | 0x4000 => {}
        _ => return Err(format!("invalid numeric sign {sign:#x}").into()),
    }
    if digits.iter().any(|d| *d > 9999) {
        return Err("invalid numeric digit".into());
    }
    // Digit i stands for digits[i] × 10000^(weight − i).
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut text = String::new();
    if sign == 0x4000 {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for i in 0..=weight {
            if i == 0 {
                let _ = write!(text, "{}", digit(i));
            } else {
                let _ = write!(text, "{:04}", digit(i));
            }
        }
    }
    if dscale > 0 {
        let mut fraction = String::new();
        let mut i = weight + 1;
        while fraction.len() < dscale {
            let _ = write!(fraction, "{:04}", digit(i));
            i += 1;
        }
        fraction.truncate(dscale);
        text.push('.');
        text.push_str(&fraction);
    }
    Ok(text)
}

/// Microseconds since 2000-01-01 as an ISO 8601 date-time: RFC 3339 in UTC with `zoned`,
/// without a zone otherwise.
fn timestamp(micros: i64, zoned: bool) -> Result<String, BoxError> {
    match micros {
        i64::MAX => return Ok("infinity".into()),
        i64::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let at = pg_epoch()
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .checked_add_signed(TimeDelta::microseconds(micros))
        .ok_or("timestamp out of range")?;
    Ok(if zoned {
        DateTime::<chrono::Utc>::from_naive_utc_and_offset(at, chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
    })
}

fn date(days: i32) -> Result<String, BoxError> {
    match days {
        i32::MAX => return Ok("infinity".into()),
        i32::MIN => return Ok("-infinity".into()),
        _ => {}
    }
    let day = pg_epoch()
        .checked_add_signed(TimeDelta::days(i64::from(days)))
        .ok_or("date out of range")?;
    Ok(day.format("%Y-%m-%d").to_string())
}

/// Microseconds since midnight; PostgreSQL allows 24:00:00.
fn time(micros: i64) -> Result<String, BoxError> {
    const DAY: i64 = 86_400_000_000;
    if micros == DAY {
        return Ok("24:00:00".into());
    }
    let secs = u32::try_from(micros.div_euclid(1_000_000)).map_err(|_| "time out of range")?;
    let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1000).expect("below a second");
    let t =
        NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos).ok_or("time out of range")?;
    Ok(t.format("%H:%M:%S%.f").to_string())
}

/// `timetz`: microseconds since midnight, then the zone as seconds *west* of UTC.
fn timetz(raw: &[u8]) -> Result<String, BoxError> {
    let (micros, zone) = raw.split_at_checked(8).ok_or("timetz value too short")?;
    let mut text = time(pg::time_from_sql(micros)?)?;
    let west = pg::int4_from_sql(zone)?;
    let east = -i64::from(west);
    let abs = east.unsigned_abs();
    let _ = write!(
        text,
        "{}{:02}:{:02}",
        if east < 0 { '-' } else { '+' },
        abs / 3600,
        abs % 3600 / 60
    );
    if abs % 60 != 0 {
        let _ = write!(text, ":{:02}", abs % 60);
    }
    Ok(text)
}

/// `interval` (microseconds, days, months) in ISO 8601's format with designators, each
/// component with its own sign, as PostgreSQL's `iso_8601` style prints it.
fn interval(raw: &[u8]) -> Result<String, BoxError> {
    if raw.len() != 16 {
        return Err("invalid interval value".into());
    }
    let micros = pg::int8_from_sql(&raw[..8])?;
    let days = pg::int4_from_sql(&raw[8..12])?;
    let months = pg::int4_from_sql(&raw[12..])?;
    Ok(crate::iso8601::format(crate::iso8601::Parts {
        months: i64::from(months),
        days: i64::from(days),
        nanos: micros.checked_mul(1000).ok_or("interval out of range")?,
    }))
}

fn array(member: &Type, raw: &[u8]) -> Result<Value, BoxError> {
    use postgres_protocol::types::ArrayDimension;
    let array = pg::array_from_sql(raw)?;
    let dims: Vec<ArrayDimension> =
        fallible_iterator::FallibleIterator::collect(array.dimensions())?;
    let values: Vec<Option<&[u8]>> = fallible_iterator::FallibleIterator::collect(array.values())?;
    let mut items = values
        .into_iter()
        .map(|v| v.map_or(Ok(Value::Null), |raw| decode(member, raw)))
        .collect::<Result<Vec<Value>, BoxError>>()?;
    if dims.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    // Values come in row-major order; group them from the innermost dimension out.
    for dim in dims[1..].iter().rev() {
        let len = usize::try_from(dim.len).map_err(|_| "invalid array dimension")?;
        if len == 0 {
            return Ok(Value::Array(Vec::new()));
        }
        items = items
            .chunks(len)
            .map(|chunk| Value::Array(chunk.to_vec()))
            .collect();
    }
    Ok(Value::Array(items))
}

/// A composite value: a field count, then each field's type oid, length (−1 for NULL) and
/// bytes.
fn composite(fields: &[tokio_postgres::types::Field], mut raw: &[u8]) -> Result<Value, BoxError> {
    let mut take = |n: usize| -> Result<&[u8], BoxError> {
        let (head, rest) = raw.split_at_checked(n).ok_or("composite value too short")?;
        raw = rest;
        Ok(head)
    };
    let count = usize::try_from(pg::int4_from_sql(take(4)?)?).map_err(|_| "invalid field count")?;
    if count != fields.len() {
        return Err("composite value does not match its type".into());
    }
    let mut out = Map::new();
    for field in fields {
        let _oid = take(4)?;
        let len = pg::int4_from_sql(take(4)?)?;
        let value = match usize::try_from(len) {
            Ok(len) => decode(field.type_(), take(len)?)?,
            Err(_) => Value::Null,
        };
        out.insert(field.name().to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// An anonymous record: like a composite value, but each field's type is known by its oid
/// only, so only built-in types can be read.
fn record(mut raw: &[u8]) -> Result<Value, BoxError> {
    let mut take = |n: usize| -> Result<&[u8], BoxError> {
        let (head, rest) = raw.split_at_checked(n).ok_or("record value too short")?;
        raw = rest;
        Ok(head)
    };
    let count = pg::int4_from_sql(take(4)?)?;
    let mut out = Map::new();
    for i in 1..=count {
        let oid = pg::oid_from_sql(take(4)?)?;
        let len = pg::int4_from_sql(take(4)?)?;
        let value = match usize::try_from(len) {
            Ok(len) => {
                let bytes = take(len)?;
                let ty = Type::from_oid(oid).ok_or_else(|| {
                    Box::new(Unreadable {
                        type_name: format!("record with a field of type oid {oid}"),
                    }) as BoxError
                })?;
                decode(&ty, bytes)?
            }
            Err(_) => Value::Null,
        };
        out.insert(format!("f{i}"), value);
    }
    Ok(Value::Object(out))
}

/// A parameter value, sent in text format as the type's input reads it.
#[derive(Debug)]
pub(crate) struct Bind<'a>(pub &'a Value);

impl ToSql for Bind<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if self.0.is_null() {
            return Ok(IsNull::Yes);
        }
        out.extend_from_slice(text(ty, self.0)?.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// The base type of a domain (or the type itself).
fn base(ty: &Type) -> &Type {
    match ty.kind() {
        Kind::Domain(inner) => base(inner),
        _ => ty,
    }
}

/// The text a non-null JSON value has as a literal of `ty`.
pub(crate) fn text(ty: &Type, value: &Value) -> Result<String, Unbindable> {
    let ty = base(ty);
    if matches!(*ty, Type::JSON | Type::JSONB) {
        return Ok(value.to_string());
    }
    if *ty == Type::BYTEA {
        let Value::String(encoded) = value else {
            return Err(Unbindable(format!(
                "a bytea parameter takes base64 text, not {}",
                crate::util::json_type(value)
            )));
        };
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|e| Unbindable(format!("a bytea parameter takes base64 text: {e}")))?;
        let mut hex = String::with_capacity(2 + 2 * bytes.len());
        hex.push_str("\\x");
        for b in bytes {
            let _ = write!(hex, "{b:02x}");
        }
        return Ok(hex);
    }
    if let Kind::Array(member) = ty.kind() {
        return match value {
            Value::Array(items) => array_literal(member, items),
            other => Err(Unbindable(format!(
                "an array parameter ({}) takes a list, not {}",
                ty.name(),
                crate::util::json_type(other)
            ))),
        };
    }
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(Unbindable(format!(
            "{} cannot be bound to type {}",
            crate::util::json_type(other),
            ty.name()
        ))),
    }
}

/// `{"a","b c",NULL}`: every item quoted, so any text is safe inside.
fn array_literal(member: &Type, items: &[Value]) -> Result<String, Unbindable> {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Null => out.push_str("NULL"),
            // A nested list is the next dimension, unless the elements are JSON themselves.
            Value::Array(inner) if !matches!(*base(member), Type::JSON | Type::JSONB) => {
                out.push_str(&array_literal(member, inner)?);
            }
            other => {
                out.push('"');
                for c in text(member, other)?.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NUMERIC's binary form from its parts.
    fn num(weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&u16::try_from(digits.len()).unwrap().to_be_bytes());
        raw.extend_from_slice(&weight.to_be_bytes());
        raw.extend_from_slice(&sign.to_be_bytes());
        raw.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numeric_keeps_every_digit_and_the_scale() {
        // The encodings PostgreSQL 15 sends for these literals.
        let cases: &[(Vec<u8>, &str)] = &[
            (num(0, 0, 2, &[12, 5000]), "12.50"),
            (num(0, 0, 0, &[0]), "0"),
            (num(0, 0, 0, &[]), "0"),
            (num(-1, 0x4000, 3, &[10]), "-0.001"),
            (num(-2, 0, 6, &[1200]), "0.000012"),
            (num(7, 0, 0, &[1]), "10000000000000000000000000000"),
            (
                num(4, 0, 4, &[1234, 5678, 9012, 3456, 7890, 1234]),
                "12345678901234567890.1234",
            ),
            (num(1, 0x4000, 0, &[1, 0]), "-10000"),
            (num(0, 0, 1, &[3, 1000]), "3.1"),
            (num(0, 0xC000, 0, &[]), "NaN"),
            (num(0, 0xD000, 0, &[]), "Infinity"),
            (num(0, 0xF000, 0, &[]), "-Infinity"),
        ];
        for (raw, want) in cases {
            assert_eq!(numeric(raw).unwrap(), *want);
        }
        assert!(numeric(&[0, 1]).is_err());
        assert!(numeric(&num(0, 0x1234, 0, &[1])).is_err());
    }

    #[test]
    fn dates_and_times_are_iso_8601() {
        let micros = |s: &str| {
            let at = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap();
            (at - pg_epoch().and_hms_opt(0, 0, 0).unwrap())
                .num_microseconds()
                .unwrap()
        };
        assert_eq!(
            timestamp(micros("2024-05-01 12:00:00.25"), true).unwrap(),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(
            timestamp(micros("1999-12-31 23:59:59.000001"), true).unwrap(),
            "1999-12-31T23:59:59.000001Z"
        );
        assert_eq!(
            timestamp(micros("2024-05-01 12:00:00"), false).unwrap(),
            "2024-05-01T12:00:00"
        );
        assert_eq!(timestamp(i64::MAX, true).unwrap(), "infinity");
        assert_eq!(timestamp(i64::MIN, false).unwrap(), "-infinity");
        assert_eq!(date(0).unwrap(), "2000-01-01");
        assert_eq!(date(-1).unwrap(), "1999-12-31");
        assert_eq!(date(i32::MAX).unwrap(), "infinity");
        assert_eq!(time(0).unwrap(), "00:00:00");
        assert_eq!(time(45_296_500_000).unwrap(), "12:34:56.500");
        assert_eq!(time(86_400_000_000).unwrap(), "24:00:00");
        let tz = |micros: i64, west: i32| {
            let mut raw = micros.to_be_bytes().to_vec();
            raw.extend_from_slice(&west.to_be_bytes());
            timetz(&raw).unwrap()
        };
        assert_eq!(tz(43_200_000_000, -7200), "12:00:00+02:00");
        assert_eq!(tz(0, 19_800), "00:00:00-05:30");
        assert_eq!(tz(0, 0), "00:00:00+00:00");
    }

    #[test]
    fn intervals_are_iso_8601_as_postgres_prints_them() {
        let iv = |micros: i64, days: i32, months: i32| {
            let mut raw = micros.to_be_bytes().to_vec();
            raw.extend_from_slice(&days.to_be_bytes());
            raw.extend_from_slice(&months.to_be_bytes());
            interval(&raw).unwrap()
        };
        assert_eq!(iv(0, 0, 0), "PT0S");
        assert_eq!(iv(14_706_500_000, 3, 14), "P1Y2M3DT4H5M6.5S");
        assert_eq!(iv(-1_500_000, 0, 0), "PT-1.5S");
        assert_eq!(iv(0, -1, -1), "P-1M-1D");
        assert_eq!(iv(3_600_000_000, 0, 0), "PT1H");
    }

    #[test]
    fn scalars_decode_to_their_json_kind() {
        let mut raw = BytesMut::new();
        pg::int8_to_sql(-42, &mut raw);
        assert_eq!(decode(&Type::INT8, &raw).unwrap(), json!(-42));
        raw.clear();
        pg::float8_to_sql(f64::NAN, &mut raw);
        assert_eq!(decode(&Type::FLOAT8, &raw).unwrap(), json!("NaN"));
        raw.clear();
        pg::float4_to_sql(1.5, &mut raw);
        assert_eq!(decode(&Type::FLOAT4, &raw).unwrap(), json!(1.5));
        assert_eq!(
            decode(&Type::JSONB, b"\x01{\"a\": [1, null]}").unwrap(),
            json!({"a": [1, null]})
        );
        assert_eq!(
            decode(&Type::BYTEA, b"\x00\xffhi").unwrap(),
            json!("AP9oaQ==")
        );
        assert_eq!(decode(&Type::CHAR, b"r").unwrap(), json!("r"));
        raw.clear();
        pg::inet_to_sql("10.0.0.1".parse().unwrap(), 32, &mut raw);
        assert_eq!(decode(&Type::INET, &raw).unwrap(), json!("10.0.0.1"));
        assert_eq!(decode(&Type::CIDR, &raw).unwrap(), json!("10.0.0.1/32"));
        let err = decode(&Type::TS_VECTOR, b"").unwrap_err();
        assert_eq!(err.to_string(), "the sql step cannot read type `tsvector`");
    }

    #[test]
    fn arrays_decode_to_nested_lists() {
        let mut raw = BytesMut::new();
        // A 2×2 int4 array with a NULL.
        pg::array_to_sql(
            [
                pg::ArrayDimension {
                    len: 2,
                    lower_bound: 1,
                },
                pg::ArrayDimension {
                    len: 2,
                    lower_bound: 1,
                },
            ],
            Type::INT4.oid(),
            [Some(1), Some(2), None, Some(4)],
            |v, buf| match v {
                Some(v) => {
                    pg::int4_to_sql(v, buf);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            &mut raw,
        )
        .unwrap();
        assert_eq!(
            decode(&Type::INT4_ARRAY, &raw).unwrap(),
            json!([[1, 2], [null, 4]])
        );
    }

    #[test]
    fn parameters_are_literals_of_their_type() {
        assert_eq!(text(&Type::INT4, &json!(42)).unwrap(), "42");
        assert_eq!(text(&Type::NUMERIC, &json!("12.50")).unwrap(), "12.50");
        assert_eq!(text(&Type::TEXT, &json!(1.5)).unwrap(), "1.5");
        assert_eq!(text(&Type::BOOL, &json!(true)).unwrap(), "true");
        assert_eq!(
            text(&Type::JSONB, &json!({"a": [1, "x"]})).unwrap(),
            r#"{"a":[1,"x"]}"#
        );
        assert_eq!(text(&Type::JSON, &json!("s")).unwrap(), r#""s""#);
        assert_eq!(
            text(&Type::BYTEA, &json!("AP9oaQ==")).unwrap(),
            "\\x00ff6869"
        );
        assert_eq!(
            text(&Type::TEXT_ARRAY, &json!(["a", "b \"c\"", null, "\\"])).unwrap(),
            r#"{"a","b \"c\"",NULL,"\\"}"#
        );
        assert_eq!(
            text(&Type::INT4_ARRAY, &json!([[1, 2], [3, 4]])).unwrap(),
            r#"{{"1","2"},{"3","4"}}"#
        );
        assert_eq!(
            text(&Type::JSONB_ARRAY, &json!([[1], {"a": 1}])).unwrap(),
            r#"{"[1]","{\"a\":1}"}"#
        );
        assert_eq!(text(&Type::INT4_ARRAY, &json!([])).unwrap(), "{}");
        assert_eq!(
            text(&Type::INT4, &json!({"a": 1})).unwrap_err().to_string(),
            "a mapping cannot be bound to type int4"
        );
        assert_eq!(
            text(&Type::INT4_ARRAY, &json!(3)).unwrap_err().to_string(),
            "an array parameter (_int4) takes a list, not a number"
        );
        assert!(
            text(&Type::BYTEA, &json!("not base64!"))
                .unwrap_err()
                .to_string()
                .starts_with("a bytea parameter takes base64 text: ")
        );
    }
}
