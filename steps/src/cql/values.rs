//! CQL values ↔ JSON, for the `cql` step.
//!
//! # Reading
//!
//! | CQL | JSON |
//! |---|---|
//! | `boolean` | true / false |
//! | `tinyint`, `smallint`, `int`, `bigint`, `counter` | a number |
//! | `varint` | a number when it fits 64 bits, else a string of its digits |
//! | `float`, `double` | a number; `NaN`, `Infinity`, `-Infinity` as those strings |
//! | `decimal` | a string with every digit (`"12.50"`): a JSON number would round |
//! | `text`, `varchar`, `ascii` | a string |
//! | `uuid`, `timeuuid` | its hyphenated string |
//! | `blob` | base64 (standard alphabet, padded) |
//! | `timestamp` | RFC 3339 in UTC: `2024-05-01T12:00:00.250Z` |
//! | `date`, `time` | `2024-05-01`, `12:00:00.25` |
//! | `duration` | ISO 8601: `P1Y2M3DT4H5M6.5S` |
//! | `inet` | its text (`10.0.0.1`, `::1`) |
//! | `list`, `set`, `vector`, `tuple` | lists |
//! | `map` | an object; a key that is not text is written as its JSON text (`1` → `"1"`) |
//! | user-defined types | objects by field name |
//! | null (and the legacy empty value) | null |
//!
//! # Binding
//!
//! A prepared statement tells each marker's type, and a JSON value is converted to it: numbers
//! bind to the numeric types (range-checked), strings to text, and a string also binds to any
//! type whose text it is — `"42"` to `int`, `"true"` to `boolean`, `"12.50"` to `decimal` —
//! since a template always renders to a string. `blob` takes base64; `timestamp` takes RFC 3339
//! (`2024-05-01T12:00:00Z`; no zone means UTC) or milliseconds since 1970; `date` takes
//! `2024-05-01`; `time` takes `12:00:00.5`; `duration` takes ISO 8601 (`P1DT2H`); lists, sets,
//! vectors and tuples take a list; a map and a user-defined type take an object. null is NULL;
//! a value that does not fit fails the statement naming its marker, before anything is sent.

use std::net::IpAddr;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Timelike as _};
use num_bigint::BigInt;
use scylla::frame::response::result::{CollectionType, ColumnType, NativeType};
use scylla::value::{
    Counter, CqlDate, CqlDecimal, CqlDuration, CqlTime, CqlTimestamp, CqlTimeuuid, CqlValue,
    CqlVarint,
};
use serde_json::{Map, Value, json};

use crate::iso8601;
use crate::util::json_type;

/// `CqlDate` counts days from 2^31 days before 1970-01-01.
const DATE_EPOCH_OFFSET: i64 = 1 << 31;

fn unix_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date")
}

/// A CQL type's name as `DESCRIBE` writes it, for messages.
pub(crate) fn type_name(ty: &ColumnType<'_>) -> String {
    match ty {
        ColumnType::Native(n) => native_name(n).to_owned(),
        ColumnType::Collection { typ, .. } => match typ {
            CollectionType::List(t) => format!("list<{}>", type_name(t)),
            CollectionType::Set(t) => format!("set<{}>", type_name(t)),
            CollectionType::Map(k, v) => format!("map<{}, {}>", type_name(k), type_name(v)),
            _ => "collection".to_owned(),
        },
        ColumnType::Vector { typ, dimensions } => {
            format!("vector<{}, {dimensions}>", type_name(typ))
        }
        ColumnType::UserDefinedType { definition, .. } => definition.name.to_string(),
        ColumnType::Tuple(types) => format!(
            "tuple<{}>",
            types.iter().map(type_name).collect::<Vec<_>>().join(", ")
        ),
        _ => "an unknown type".to_owned(),
    }
}

fn native_name(n: &NativeType) -> &'static str {
    match n {
        NativeType::Ascii => "ascii",
        NativeType::Boolean => "boolean",
        NativeType::Blob => "blob",
        NativeType::Counter => "counter",
        NativeType::Date => "date",
        NativeType::Decimal => "decimal",
        NativeType::Double => "double",
        NativeType::Duration => "duration",
        NativeType::Float => "float",
        NativeType::Int => "int",
        NativeType::BigInt => "bigint",
        NativeType::Text => "text",
        NativeType::Timestamp => "timestamp",
        NativeType::Inet => "inet",
        NativeType::SmallInt => "smallint",
        NativeType::TinyInt => "tinyint",
        NativeType::Time => "time",
        NativeType::Timeuuid => "timeuuid",
        NativeType::Uuid => "uuid",
        NativeType::Varint => "varint",
        _ => "an unknown type",
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// One value of a row as JSON.
pub(crate) fn to_json(value: Option<&CqlValue>) -> Value {
    let Some(value) = value else {
        return Value::Null;
    };
    match value {
        CqlValue::Ascii(s) | CqlValue::Text(s) => json!(s),
        CqlValue::Boolean(b) => json!(b),
        CqlValue::Blob(bytes) => json!(BASE64.encode(bytes)),
        CqlValue::Counter(Counter(n)) | CqlValue::BigInt(n) => json!(n),
        CqlValue::Int(n) => json!(n),
        CqlValue::SmallInt(n) => json!(n),
        CqlValue::TinyInt(n) => json!(n),
        CqlValue::Varint(v) => {
            let n = BigInt::from_signed_bytes_be(v.as_signed_bytes_be_slice());
            i64::try_from(&n).map_or_else(|_| json!(n.to_string()), |small| json!(small))
        }
        CqlValue::Decimal(d) => {
            let (bytes, scale) = d.as_signed_be_bytes_slice_and_exponent();
            json!(decimal_text(&BigInt::from_signed_bytes_be(bytes), scale))
        }
        CqlValue::Float(f) => float(f64::from(*f)),
        CqlValue::Double(f) => float(*f),
        CqlValue::Uuid(u) => json!(u.to_string()),
        CqlValue::Timeuuid(u) => json!(uuid::Uuid::from_bytes(*u.as_bytes()).to_string()),
        CqlValue::Timestamp(CqlTimestamp(ms)) => DateTime::from_timestamp_millis(*ms).map_or_else(
            || json!(ms),
            |at| json!(at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        ),
        CqlValue::Date(CqlDate(days)) => unix_epoch()
            .checked_add_signed(chrono::TimeDelta::days(
                i64::from(*days) - DATE_EPOCH_OFFSET,
            ))
            .map_or_else(|| json!(days), |d| json!(d.format("%Y-%m-%d").to_string())),
        CqlValue::Time(CqlTime(nanos)) => {
            time_text(*nanos).map_or_else(|| json!(nanos), |t| json!(t))
        }
        CqlValue::Duration(d) => json!(iso8601::format(iso8601::Parts {
            months: i64::from(d.months),
            days: i64::from(d.days),
            nanos: d.nanoseconds,
        })),
        CqlValue::Inet(ip) => json!(ip.to_string()),
        CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items) => {
            Value::Array(items.iter().map(|v| to_json(Some(v))).collect())
        }
        CqlValue::Tuple(items) => Value::Array(items.iter().map(|v| to_json(v.as_ref())).collect()),
        CqlValue::Map(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match to_json(Some(k)) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(Some(v)))
                })
                .collect(),
        ),
        CqlValue::UserDefinedType { fields, .. } => Value::Object(
            fields
                .iter()
                .map(|(name, v)| (name.clone(), to_json(v.as_ref())))
                .collect(),
        ),
        // The legacy empty value (an empty byte string in a non-text column) reads as no value.
        _ => Value::Null,
    }
}

/// A float as JSON: a number when finite, else CQL's spelling.
fn float(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// An unscaled integer and a scale as decimal text: (1250, 2) → `12.50`, (5, -2) → `500`.
pub(crate) fn decimal_text(unscaled: &BigInt, scale: i32) -> String {
    let negative = unscaled.sign() == num_bigint::Sign::Minus;
    let mut digits = unscaled.magnitude().to_string();
    let sign = if negative { "-" } else { "" };
    if scale <= 0 {
        digits.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        return format!("{sign}{digits}");
    }
    let scale = scale.unsigned_abs() as usize;
    if digits.len() <= scale {
        digits = format!("{}{digits}", "0".repeat(scale - digits.len() + 1));
    }
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// Nanoseconds since midnight as `HH:MM:SS[.fraction]`.
fn time_text(nanos: i64) -> Option<String> {
    let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let frac = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    let t = NaiveTime::from_num_seconds_from_midnight_opt(secs, frac)?;
    Some(t.format("%H:%M:%S%.f").to_string())
}

// ---------------------------------------------------------------------------------------------
// Binding

/// A non-null JSON value as a CQL value of type `ty`; the error says why it does not fit.
pub(crate) fn from_json(value: &Value, ty: &ColumnType<'_>) -> Result<CqlValue, String> {
    let cannot = || {
        format!(
            "{} cannot be bound to type {}",
            describe(value),
            type_name(ty)
        )
    };
    match ty {
        ColumnType::Native(native) => native_value(value, native).ok_or_else(cannot)?,
        ColumnType::Collection { typ, .. } => match (typ, value) {
            (CollectionType::List(t), Value::Array(items)) => {
                Ok(CqlValue::List(elements(items, t)?))
            }
            (CollectionType::Set(t), Value::Array(items)) => Ok(CqlValue::Set(elements(items, t)?)),
            (CollectionType::Map(k, v), Value::Object(entries)) => Ok(CqlValue::Map(
                entries
                    .iter()
                    .map(|(key, item)| {
                        let key = from_json(&Value::String(key.clone()), k)
                            .map_err(|e| format!("key `{key}`: {e}"))?;
                        Ok((key, element(item, v)?))
                    })
                    .collect::<Result<_, String>>()?,
            )),
            _ => Err(cannot()),
        },
        ColumnType::Vector { typ, dimensions } => match value {
            Value::Array(items) if items.len() == usize::from(*dimensions) => {
                Ok(CqlValue::Vector(elements(items, typ)?))
            }
            Value::Array(items) => Err(format!(
                "a list of {} items cannot be bound to type {} (it takes {dimensions})",
                items.len(),
                type_name(ty)
            )),
            _ => Err(cannot()),
        },
        ColumnType::Tuple(types) => match value {
            Value::Array(items) if items.len() == types.len() => Ok(CqlValue::Tuple(
                items
                    .iter()
                    .zip(types)
                    .map(|(item, t)| nullable(item, t))
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(cannot()),
        },
        ColumnType::UserDefinedType { definition, .. } => {
            let Value::Object(given) = value else {
                return Err(cannot());
            };
            if let Some(unknown) = given.keys().find(|k| {
                !definition
                    .field_types
                    .iter()
                    .any(|(name, _)| name == k.as_str())
            }) {
                return Err(format!(
                    "type {} has no field `{unknown}`; its fields: {}",
                    definition.name,
                    definition
                        .field_types
                        .iter()
                        .map(|(n, _)| n.as_ref())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Ok(CqlValue::UserDefinedType {
                keyspace: definition.keyspace.to_string(),
                name: definition.name.to_string(),
                fields: definition
                    .field_types
                    .iter()
                    .map(|(name, t)| {
                        let v = given.get(name.as_ref()).unwrap_or(&Value::Null);
                        Ok((
                            name.to_string(),
                            nullable(v, t).map_err(|e| format!("field `{name}`: {e}"))?,
                        ))
                    })
                    .collect::<Result<_, String>>()?,
            })
        }
        _ => Err(cannot()),
    }
}

/// Positional or named values bound to markers of `types` (named by `names`).
pub(crate) fn bind(
    params: &Value,
    names: &[String],
    types: &[ColumnType<'_>],
) -> Result<Vec<Option<CqlValue>>, String> {
    let wanted = types.len();
    let ordered: Vec<&Value> = match params {
        Value::Array(items) => {
            if items.len() != wanted {
                return Err(format!(
                    "it takes {wanted} value{} (?) but {} {} given",
                    if wanted == 1 { "" } else { "s" },
                    items.len(),
                    if items.len() == 1 { "was" } else { "were" }
                ));
            }
            items.iter().collect()
        }
        Value::Object(by_name) => {
            if let Some(unknown) = by_name.keys().find(|k| !names.contains(k)) {
                return Err(format!(
                    "it has no marker `:{unknown}`; its markers: {}",
                    names
                        .iter()
                        .map(|n| format!(":{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            names
                .iter()
                .map(|n| {
                    by_name
                        .get(n)
                        .ok_or_else(|| format!("no value for marker `:{n}`"))
                })
                .collect::<Result<_, _>>()?
        }
        other => {
            return Err(format!(
                "`params` must be a list or a mapping, not {}",
                json_type(other)
            ));
        }
    };
    ordered
        .into_iter()
        .zip(types)
        .enumerate()
        .map(|(i, (value, ty))| {
            nullable(value, ty).map_err(|e| match names.get(i) {
                Some(name) => format!("value {} (`{name}`): {e}", i + 1),
                None => format!("value {}: {e}", i + 1),
            })
        })
        .collect()
}

fn nullable(value: &Value, ty: &ColumnType<'_>) -> Result<Option<CqlValue>, String> {
    if value.is_null() {
        Ok(None)
    } else {
        from_json(value, ty).map(Some)
    }
}

/// An element of a collection, which cannot be null.
fn element(value: &Value, ty: &ColumnType<'_>) -> Result<CqlValue, String> {
    if value.is_null() {
        return Err(format!(
            "a collection of {} cannot hold null",
            type_name(ty)
        ));
    }
    from_json(value, ty)
}

fn elements(items: &[Value], ty: &ColumnType<'_>) -> Result<Vec<CqlValue>, String> {
    items.iter().map(|item| element(item, ty)).collect()
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("`{}`", crate::util::excerpt(s)),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        other => json_type(other).to_owned(),
    }
}

/// The text of a scalar (a number's or a bool's too), for types whose input is text.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn integer<T: TryFrom<i64>>(value: &Value) -> Option<T> {
    let n = match value {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    T::try_from(n).ok()
}

fn float_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// `Some(Err(why))` for a value of the right kind that is still wrong (with a reason worth
/// more than "cannot be bound"); `None` when it does not fit at all.
fn native_value(value: &Value, ty: &NativeType) -> Option<Result<CqlValue, String>> {
    let ok = |v: CqlValue| Some(Ok(v));
    match ty {
        NativeType::Text => scalar_text(value).map(|_| match value {
            Value::String(s) => Ok(CqlValue::Text(s.clone())),
            other => Ok(CqlValue::Text(scalar_text(other).unwrap_or_default())),
        }),
        NativeType::Ascii => {
            let text = match value {
                Value::String(s) => s.clone(),
                other => scalar_text(other)?,
            };
            if text.is_ascii() {
                ok(CqlValue::Ascii(text))
            } else {
                Some(Err("type ascii takes ASCII text only".to_owned()))
            }
        }
        NativeType::Boolean => match value {
            Value::Bool(b) => ok(CqlValue::Boolean(*b)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => ok(CqlValue::Boolean(true)),
                "false" => ok(CqlValue::Boolean(false)),
                _ => None,
            },
            _ => None,
        },
        NativeType::TinyInt => integer(value).map(|n| Ok(CqlValue::TinyInt(n))),
        NativeType::SmallInt => integer(value).map(|n| Ok(CqlValue::SmallInt(n))),
        NativeType::Int => integer(value).map(|n| Ok(CqlValue::Int(n))),
        NativeType::BigInt => integer(value).map(|n| Ok(CqlValue::BigInt(n))),
        NativeType::Counter => integer(value).map(|n| Ok(CqlValue::Counter(Counter(n)))),
        NativeType::Varint => {
            let n = BigInt::from_str(&scalar_text(value)?).ok()?;
            ok(CqlValue::Varint(CqlVarint::from_signed_bytes_be(
                n.to_signed_bytes_be(),
            )))
        }
        NativeType::Decimal => {
            let (unscaled, scale) = parse_decimal(&scalar_text(value)?)?;
            ok(CqlValue::Decimal(
                CqlDecimal::from_signed_be_bytes_and_exponent(unscaled.to_signed_bytes_be(), scale),
            ))
        }
        // A double's text converted to f32 rounds to the nearest float, as CQL's own literal does.
        NativeType::Float => float_of(value).map(|f| Ok(CqlValue::Float(f as f32))),
        NativeType::Double => float_of(value).map(|f| Ok(CqlValue::Double(f))),
        NativeType::Blob => match value {
            Value::String(s) => Some(
                BASE64
                    .decode(s.trim())
                    .map(CqlValue::Blob)
                    .map_err(|e| format!("a blob takes base64 text: {e}")),
            ),
            _ => None,
        },
        NativeType::Uuid => uuid_of(value).map(|u| Ok(CqlValue::Uuid(u))),
        NativeType::Timeuuid => {
            uuid_of(value).map(|u| Ok(CqlValue::Timeuuid(CqlTimeuuid::from(u))))
        }
        NativeType::Inet => match value {
            Value::String(s) => IpAddr::from_str(s.trim())
                .ok()
                .map(|ip| Ok(CqlValue::Inet(ip))),
            _ => None,
        },
        NativeType::Timestamp => {
            timestamp_ms(value).map(|ms| Ok(CqlValue::Timestamp(CqlTimestamp(ms))))
        }
        NativeType::Date => match value {
            Value::String(s) => {
                let day = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
                let days = (day - unix_epoch()).num_days() + DATE_EPOCH_OFFSET;
                u32::try_from(days)
                    .ok()
                    .map(|d| Ok(CqlValue::Date(CqlDate(d))))
            }
            _ => None,
        },
        NativeType::Time => match value {
            Value::String(s) => {
                let t = NaiveTime::parse_from_str(s.trim(), "%H:%M:%S%.f").ok()?;
                let nanos = i64::from(t.num_seconds_from_midnight()) * 1_000_000_000
                    + i64::from(t.nanosecond());
                ok(CqlValue::Time(CqlTime(nanos)))
            }
            _ => None,
        },
        NativeType::Duration => match value {
            Value::String(s) => Some(iso8601::parse(s).and_then(|p| {
                Ok(CqlValue::Duration(CqlDuration {
                    months: i32::try_from(p.months).map_err(|_| "too many months".to_owned())?,
                    days: i32::try_from(p.days).map_err(|_| "too many days".to_owned())?,
                    nanoseconds: p.nanos,
                }))
            })),
            _ => None,
        },
        _ => None,
    }
}

fn uuid_of(value: &Value) -> Option<uuid::Uuid> {
    value
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
}

/// Milliseconds since 1970 from RFC 3339 (or without a zone: UTC) or a number of milliseconds.
fn timestamp_ms(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(ms) = s.parse::<i64>() {
                return Some(ms);
            }
            if let Ok(at) = DateTime::parse_from_rfc3339(s) {
                return Some(at.timestamp_millis());
            }
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .or_else(|| {
                    NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .ok()?
                        .and_hms_opt(0, 0, 0)
                })
                .map(|at| at.and_utc().timestamp_millis())
        }
        _ => None,
    }
}

/// `-12.50` → (-1250, 2); `1e3` → (1, -3).
fn parse_decimal(text: &str) -> Option<(BigInt, i32)> {
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || digits == "-" || digits == "+" {
        return None;
    }
    let unscaled = BigInt::from_str(&digits).ok()?;
    let scale = i32::try_from(fraction.len()).ok()?.checked_sub(exponent)?;
    Some((unscaled, scale))
}

/// Column specs as `{name, type}` objects, for an output's `columns`.
pub(crate) fn columns<'a>(
    specs: impl Iterator<Item = (&'a str, &'a ColumnType<'a>)>,
) -> Vec<Value> {
    specs
        .map(|(name, ty)| {
            let mut m = Map::new();
            m.insert("name".into(), json!(name));
            m.insert("type".into(), json!(type_name(ty)));
            Value::Object(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use scylla::frame::response::result::UserDefinedType;

    use super::*;

    fn native(n: NativeType) -> ColumnType<'static> {
        ColumnType::Native(n)
    }

    fn list(t: ColumnType<'static>) -> ColumnType<'static> {
        ColumnType::Collection {
            frozen: false,
            typ: CollectionType::List(Box::new(t)),
        }
    }

    #[test]
    fn decimals_keep_every_digit() {
        let text = |n: i64, scale: i32| decimal_text(&BigInt::from(n), scale);
        assert_eq!(text(1250, 2), "12.50");
        assert_eq!(text(-1, 3), "-0.001");
        assert_eq!(text(5, -2), "500");
        assert_eq!(text(0, 0), "0");
        for (input, unscaled, scale) in [
            ("12.50", 1250, 2),
            ("-0.001", -1, 3),
            ("1e3", 1, -3),
            ("7", 7, 0),
        ] {
            assert_eq!(
                parse_decimal(input),
                Some((BigInt::from(unscaled), scale)),
                "{input}"
            );
        }
        assert_eq!(parse_decimal("x"), None);
        assert_eq!(parse_decimal("."), None);
    }

    #[test]
    fn strings_bind_to_the_type_they_spell() {
        let bind = |v: Value, t: NativeType| from_json(&v, &native(t));
        assert_eq!(bind(json!("42"), NativeType::Int), Ok(CqlValue::Int(42)));
        assert_eq!(
            bind(json!(42), NativeType::BigInt),
            Ok(CqlValue::BigInt(42))
        );
        assert_eq!(
            bind(json!("TRUE"), NativeType::Boolean),
            Ok(CqlValue::Boolean(true))
        );
        assert_eq!(
            bind(json!(7), NativeType::Text),
            Ok(CqlValue::Text("7".into()))
        );
        assert_eq!(
            bind(json!("1970-01-02T00:00:00.5+00:00"), NativeType::Timestamp),
            Ok(CqlValue::Timestamp(CqlTimestamp(86_400_500)))
        );
        assert_eq!(
            bind(json!("1970-01-01 00:00:01"), NativeType::Timestamp),
            Ok(CqlValue::Timestamp(CqlTimestamp(1000)))
        );
        assert_eq!(
            bind(json!("1970-01-02"), NativeType::Date),
            Ok(CqlValue::Date(CqlDate((1 << 31) + 1)))
        );
        assert_eq!(
            bind(json!("00:00:01.5"), NativeType::Time),
            Ok(CqlValue::Time(CqlTime(1_500_000_000)))
        );
        assert_eq!(
            bind(json!("P1MT1S"), NativeType::Duration),
            Ok(CqlValue::Duration(CqlDuration {
                months: 1,
                days: 0,
                nanoseconds: 1_000_000_000
            }))
        );
        assert_eq!(
            bind(json!(128), NativeType::TinyInt).unwrap_err(),
            "`128` cannot be bound to type tinyint"
        );
        assert_eq!(
            bind(json!("seven"), NativeType::Int).unwrap_err(),
            "`seven` cannot be bound to type int"
        );
        assert_eq!(
            bind(json!("é"), NativeType::Ascii).unwrap_err(),
            "type ascii takes ASCII text only"
        );
        assert!(
            bind(json!("not base64!"), NativeType::Blob)
                .unwrap_err()
                .starts_with("a blob takes base64 text: ")
        );
    }

    #[test]
    fn collections_and_user_types_bind_from_lists_and_objects() {
        assert_eq!(
            from_json(&json!(["1", 2]), &list(native(NativeType::Int))),
            Ok(CqlValue::List(vec![CqlValue::Int(1), CqlValue::Int(2)]))
        );
        assert_eq!(
            from_json(&json!([1, null]), &list(native(NativeType::Int))).unwrap_err(),
            "a collection of int cannot hold null"
        );
        let map = ColumnType::Collection {
            frozen: false,
            typ: CollectionType::Map(
                Box::new(native(NativeType::Int)),
                Box::new(native(NativeType::Text)),
            ),
        };
        assert_eq!(
            from_json(&json!({"1": "a"}), &map),
            Ok(CqlValue::Map(vec![(
                CqlValue::Int(1),
                CqlValue::Text("a".into())
            )]))
        );
        assert_eq!(
            from_json(&json!({"x": "a"}), &map).unwrap_err(),
            "key `x`: `x` cannot be bound to type int"
        );
        let udt = ColumnType::UserDefinedType {
            frozen: false,
            definition: Arc::new(UserDefinedType {
                name: Cow::Borrowed("address"),
                keyspace: Cow::Borrowed("ks"),
                field_types: vec![
                    (Cow::Borrowed("street"), native(NativeType::Text)),
                    (Cow::Borrowed("zip"), native(NativeType::Int)),
                ],
            }),
        };
        assert_eq!(
            from_json(&json!({"street": "Main"}), &udt),
            Ok(CqlValue::UserDefinedType {
                keyspace: "ks".into(),
                name: "address".into(),
                fields: vec![
                    ("street".into(), Some(CqlValue::Text("Main".into()))),
                    ("zip".into(), None)
                ],
            })
        );
        assert_eq!(
            from_json(&json!({"stret": "Main"}), &udt).unwrap_err(),
            "type address has no field `stret`; its fields: street, zip"
        );
    }

    #[test]
    fn named_values_follow_the_markers() {
        let types = [native(NativeType::Int), native(NativeType::Text)];
        let names = ["id".to_owned(), "who".to_owned()];
        assert_eq!(
            bind(&json!({"who": "me", "id": "3"}), &names, &types),
            Ok(vec![
                Some(CqlValue::Int(3)),
                Some(CqlValue::Text("me".into()))
            ])
        );
        assert_eq!(
            bind(&json!({"id": 1}), &names, &types).unwrap_err(),
            "no value for marker `:who`"
        );
        assert_eq!(
            bind(&json!({"id": 1, "whom": 2}), &names, &types).unwrap_err(),
            "it has no marker `:whom`; its markers: :id, :who"
        );
        assert_eq!(
            bind(&json!([1]), &names, &types).unwrap_err(),
            "it takes 2 values (?) but 1 was given"
        );
        assert_eq!(
            bind(&json!(["x", null]), &names, &types).unwrap_err(),
            "value 1 (`id`): `x` cannot be bound to type int"
        );
        assert_eq!(
            bind(&json!([1, null]), &names, &types),
            Ok(vec![Some(CqlValue::Int(1)), None])
        );
    }

    #[test]
    fn values_read_as_typed_json() {
        assert_eq!(to_json(None), Value::Null);
        assert_eq!(
            to_json(Some(&CqlValue::Timestamp(CqlTimestamp(1_714_564_800_250)))),
            json!("2024-05-01T12:00:00.250Z")
        );
        assert_eq!(
            to_json(Some(&CqlValue::Date(CqlDate((1 << 31) - 1)))),
            json!("1969-12-31")
        );
        assert_eq!(
            to_json(Some(&CqlValue::Time(CqlTime(45_296_500_000_000)))),
            json!("12:34:56.500")
        );
        assert_eq!(to_json(Some(&CqlValue::Double(f64::NAN))), json!("NaN"));
        assert_eq!(
            to_json(Some(&CqlValue::Varint(CqlVarint::from_signed_bytes_be(
                BigInt::from_str("123456789012345678901234567890")
                    .unwrap()
                    .to_signed_bytes_be()
            )))),
            json!("123456789012345678901234567890")
        );
        assert_eq!(
            to_json(Some(&CqlValue::Varint(CqlVarint::from_signed_bytes_be(
                vec![0xff]
            )))),
            json!(-1)
        );
        assert_eq!(
            to_json(Some(&CqlValue::Map(vec![(
                CqlValue::Int(1),
                CqlValue::Blob(vec![0, 255])
            )]))),
            json!({"1": "AP8="})
        );
        assert_eq!(
            to_json(Some(&CqlValue::Tuple(vec![Some(CqlValue::Int(1)), None]))),
            json!([1, null])
        );
    }
}
