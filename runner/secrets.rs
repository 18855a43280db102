//! Keeping secrets out of everything written or printed.
//!
//! Redaction is by value: the values of secret parameters and the strings inside secret step
//! outputs are remembered, and every event is scrubbed of them before it reaches the journal,
//! the terminal or `--output json`. Scrubbing by value catches a secret wherever it ends up — in
//! a rendered command line, an HTTP header, an error message or a child's stderr.

use std::sync::{Arc, RwLock};

use serde_json::Value;

/// The shortest string inside a secret step's output that is treated as a secret.
pub const MIN_OUTPUT_SECRET: usize = 4;

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";

/// The set of secret values known to a run. Cheap to clone; clones share the set.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers a secret value without its surrounding whitespace: a command's output ends
    /// in a newline that templates and scripts usually trim away, and whitespace is no secret.
    /// Blank strings are ignored (they would match everywhere).
    pub fn add(&self, secret: &str) {
        let secret = secret.trim();
        if secret.is_empty() || secret == MASK {
            return;
        }
        let mut secrets = self.secrets.write().expect("redactor poisoned");
        if !secrets.iter().any(|s| s == secret) {
            secrets.push(secret.to_owned());
            // Longest first, so a secret that contains another is masked whole.
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Remembers every string inside a value, and the value itself if it is a bare number (a
    /// secret PIN). Numbers inside a structure are not learned: they are an output's exit code,
    /// duration or status, and masking `0` everywhere would garble every later record.
    pub fn add_value(&self, value: &Value) {
        match value {
            Value::Number(n) => self.add(&n.to_string()),
            other => self.add_strings(other),
        }
    }

    /// Remembers the strings inside a secret step's output. Strings shorter than
    /// [`MIN_OUTPUT_SECRET`] characters (`ok`, `200`, `true`) are structure, not secrets, and
    /// masking them everywhere would make every log unreadable.
    pub fn add_output(&self, value: &Value) {
        match value {
            Value::String(s) if s.trim().chars().count() >= MIN_OUTPUT_SECRET => self.add(s),
            Value::Array(items) => items.iter().for_each(|v| self.add_output(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_output(v)),
            _ => {}
        }
    }

    fn add_strings(&self, value: &Value) {
        match value {
            Value::String(s) => self.add(s),
            Value::Array(items) => items.iter().for_each(|v| self.add_strings(v)),
            Value::Object(map) => map.values().for_each(|v| self.add_strings(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Whether any secret is known.
    pub fn is_empty(&self) -> bool {
        self.secrets.read().expect("redactor poisoned").is_empty()
    }

    /// The text with every known secret masked.
    pub fn text(&self, text: &str) -> String {
        let secrets = self.secrets.read().expect("redactor poisoned");
        let mut out = text.to_owned();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// The value with every known secret masked in every string (keys included).
    pub fn value(&self, value: &Value) -> Value {
        if self.is_empty() {
            return value.clone();
        }
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.value(v)))
                    .collect(),
            ),
            Value::Number(n) => {
                let s = n.to_string();
                if self.text(&s) == s {
                    value.clone()
                } else {
                    Value::String(MASK.to_owned())
                }
            }
            Value::Null | Value::Bool(_) => value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_secrets_anywhere_in_a_value() {
        let r = Redactor::new();
        r.add("s3cr3t");
        let v = json!({"cmd": "login --token s3cr3t", "s3cr3t": 1, "list": ["a", "xs3cr3tx"]});
        assert_eq!(
            r.value(&v),
            json!({"cmd": "login --token ***", "***": 1, "list": ["a", "x***x"]})
        );
    }

    #[test]
    fn longer_secrets_are_masked_whole() {
        let r = Redactor::new();
        r.add("abc");
        r.add("abcdef");
        assert_eq!(r.text("x abcdef y abc"), "x *** y ***");
    }

    #[test]
    fn values_of_secret_outputs_are_learned() {
        let r = Redactor::new();
        r.add_value(&json!({"root_token": "hvs.123", "keys": ["k1k1k1"], "exit_code": 0}));
        r.add_value(&json!(424_242));
        assert_eq!(r.text("hvs.123 k1k1k1 424242"), "*** *** ***");
        assert_eq!(r.value(&json!(424_242)), json!("***"));
        // An exit code inside a secret output is not a secret.
        assert_eq!(r.text("exit 0 after 10s"), "exit 0 after 10s");
    }

    #[test]
    fn a_secret_is_masked_with_or_without_its_trailing_newline() {
        let r = Redactor::new();
        r.add_value(&json!({"stdout": "pw-123\n", "stderr": "\n"}));
        assert_eq!(r.text("use pw-123 now"), "use *** now");
        assert_eq!(r.text("pw-123\n"), "***\n");
        assert_eq!(r.text("a\nb"), "a\nb", "blank strings are not secrets");
    }

    #[test]
    fn short_strings_of_a_secret_output_are_structure_not_secrets() {
        let r = Redactor::new();
        r.add_output(&json!({"status": "ok", "token": "s.abcdef", "keys": ["k1k1k1"]}));
        assert_eq!(r.text("ok s.abcdef k1k1k1"), "ok *** ***");
    }
}
