//! Helpers shared by the step kinds: error messages, excerpts, JSON type names and the
//! process-wide TLS provider.

use std::error::Error as StdError;
use std::sync::Once;
use std::time::Duration;

use serde_json::{Value, json};

/// Longest excerpt quoted in a failure message (a body, a stderr line), and longest
/// `describe` line.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// Makes ring the process's rustls provider unless one is installed already. reqwest is built
/// without a provider of its own (its default, aws-lc-rs, is a long C build); async-nats uses
/// ring too. Public so that other reqwest clients in the process (the server's webhook
/// notifier) work before any http step ran.
pub fn install_crypto_provider() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race to another installer is fine: a provider is installed either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// The most telling message in an error's chain: the innermost I/O or TLS error, with an OS
/// error's code left out ("connection refused", not "Connection refused (os error 111)").
pub(crate) fn cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    loop {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.raw_os_error().is_some() {
                let text = io.to_string();
                let text = text.split(" (os error").next().unwrap_or(&text);
                let mut chars = text.chars();
                return match chars.next() {
                    Some(first) => first.to_lowercase().chain(chars).collect(),
                    None => io.kind().to_string(),
                };
            }
            if let Some(inner) = io.get_ref() {
                return cause(inner);
            }
            return io.to_string();
        }
        match current.source() {
            Some(next) => current = next,
            None => return current.to_string(),
        }
    }
}

/// `text` cut to [`EXCERPT_CHARS`] characters.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A value's JSON type, for messages: "a list", "a mapping", "null".
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo (the rule the
/// runbook loader's "did you mean" follows).
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(score, c)| {
            *score > 0.8 || (word.chars().count() > 2 && strsim::osa_distance(word, c) <= 1)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A duration: `30s`, `1h30m`, `250ms`, or a bare number of seconds (the rule the runbook's own
/// durations follow); the error is humantime's.
fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return if secs.is_finite() && secs >= 0.0 {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err("must not be negative".into())
        };
    }
    humantime::parse_duration(t).map_err(|e| e.to_string())
}

/// A load-time problem with the duration in `spec[field]`, as `(field, message)`. Templates
/// are filled in at run time, so a string holding one is not checked now.
pub(crate) fn duration_problem(spec: &Value, field: &str) -> Option<(String, String)> {
    let text = match spec.get(field)? {
        Value::String(text) if !text.contains("{{") => text.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    duration(&text)
        .err()
        .map(|e| (field.into(), format!("invalid duration `{text}`: {e}")))
}

/// The rendered duration of `field`, if given; the error is a spec error's message.
pub(crate) fn parse_duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    text.map(|text| {
        duration(text).map_err(|e| format!("`{field}`: invalid duration `{text}`: {e}"))
    })
    .transpose()
}

/// Deserializes a duration field given as text or as a number of seconds, as text.
pub(crate) fn duration_text<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    match <Option<Value> as serde::Deserialize>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a duration such as 30s, not {}",
            json_type(&other)
        ))),
    }
}

/// A duration as whole milliseconds, for an output's `duration_ms`.
pub(crate) fn duration_ms(took: Duration) -> Value {
    json!(u64::try_from(took.as_millis()).unwrap_or(u64::MAX))
}

/// The trimmed text parsed as JSON, unless it is blank or not JSON.
pub(crate) fn parse_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    serde_json::from_str(trimmed).ok()
}

/// Whether a spec value is still a template (rendered later, so not judged yet).
pub(crate) fn is_template(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.contains("{{"))
}
