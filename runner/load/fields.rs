//! Reading typed fields out of YAML nodes, recording a positioned problem for anything wrong
//! and carrying on, so one pass reports every problem of a file.

use std::time::Duration;

use crate::diag::{Diagnostic, Diagnostics};
use crate::yaml::{Map, Node, Scalar};

/// Collects problems while fields are read.
#[derive(Debug, Default)]
pub struct Fields {
    /// Problems found so far.
    pub diags: Diagnostics,
}

/// Where a problem with a scalar is shown: its text inside any quotes, or the quotes when the
/// text is empty.
fn span(scalar: &Scalar) -> (crate::source::Pos, usize) {
    if scalar.text.is_empty() && scalar.content != scalar.pos {
        (scalar.pos, 2)
    } else {
        (scalar.content, scalar.text.chars().count())
    }
}

/// The closest of `candidates` to `word`, if close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Jaro-Winkler misses swapped letters in short words (`sbu` for `sub`); one edit, a swap
    // included, is a typo too.
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, c)| {
            *score > 0.8 || (word.chars().count() > 2 && strsim::osa_distance(word, c) <= 1)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl Fields {
    /// Records a problem at a node.
    pub fn error(&mut self, node: &Node, message: impl Into<String>) {
        match node.as_scalar() {
            Some(s) => self.error_at(s, message),
            None => self.diags.push(Diagnostic::new(node.pos(), 1, message)),
        }
    }

    /// Records a problem at a scalar (e.g. a key), underlining its text (inside any quotes;
    /// the quotes themselves when the text is empty).
    pub fn error_at(&mut self, scalar: &Scalar, message: impl Into<String>) {
        let (pos, len) = span(scalar);
        self.diags.push(Diagnostic::new(pos, len, message));
    }

    /// Records a fully built diagnostic.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diags.push(diagnostic);
    }

    /// Rejects keys of `map` not in `allowed`, suggesting the closest allowed key.
    pub fn known_keys(&mut self, map: &Map, allowed: &[&str], what: &str) {
        for (key, _) in &map.entries {
            if allowed.contains(&key.text.as_str()) {
                continue;
            }
            let mut d = Diagnostic::new(
                key.content,
                key.text.chars().count(),
                format!("unknown field `{}` in {what}", key.text),
            );
            if let Some(s) = suggest(&key.text, allowed.iter().copied()) {
                d = d.did_you_mean(s);
            } else {
                d = d.help(format!("the fields of {what} are: {}", allowed.join(", ")));
            }
            self.diags.push(d);
        }
    }

    /// The node as a mapping, or a problem.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n Map> {
        if let Some(m) = node.as_map() {
            return Some(m);
        }
        self.error(
            node,
            format!("{what} must be a mapping, not {}", node.describe()),
        );
        None
    }

    /// The node as a list, or a problem. A null scalar counts as an empty list.
    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match node {
            Node::Seq(s) => Some(&s.items),
            Node::Scalar(s) if s.is_null() => Some(&[]),
            _ => {
                self.error(
                    node,
                    format!("{what} must be a list, not {}", node.describe()),
                );
                None
            }
        }
    }

    /// The node as a scalar string (numbers and booleans as written), or a problem.
    pub fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n Scalar> {
        match node {
            Node::Scalar(s) if !s.is_null() => Some(s),
            _ => {
                self.error(
                    node,
                    format!("{what} must be a string, not {}", node.describe()),
                );
                None
            }
        }
    }

    /// The node as a boolean, or a problem.
    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.as_scalar().map(Scalar::to_json) {
            Some(serde_json::Value::Bool(b)) => Some(b),
            _ => {
                self.error(node, format!("{what} must be true or false"));
                None
            }
        }
    }

    /// The node as a non-negative integer, or a problem.
    pub fn uint(&mut self, node: &Node, what: &str) -> Option<u64> {
        match node.as_scalar().map(Scalar::to_json) {
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => n.as_u64(),
            _ => {
                self.error(node, format!("{what} must be a whole number ≥ 0"));
                None
            }
        }
    }

    /// The node as a number, or a problem.
    pub fn float(&mut self, node: &Node, what: &str) -> Option<f64> {
        match node.as_scalar().map(Scalar::to_json) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            _ => {
                self.error(node, format!("{what} must be a number"));
                None
            }
        }
    }

    /// The node as a duration (`30s`, `5m`, `1h30m`; a bare number means seconds), or a problem.
    pub fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let s = self.string(node, what)?;
        match parse_duration(&s.text) {
            Ok(d) => Some(d),
            Err(_) => {
                let (pos, len) = span(s);
                self.push(
                    Diagnostic::new(
                        pos,
                        len,
                        format!("{what} is not a duration: {}", duration_problem(&s.text)),
                    )
                    .help("write a number and a unit, e.g. 250ms, 30s, 5m, 1h30m"),
                );
                None
            }
        }
    }
}

/// Why `text` is not a duration, in an author's words rather than the parser's.
fn duration_problem(text: &str) -> String {
    let t = text.trim();
    if t.starts_with('-') {
        return "it must not be negative".into();
    }
    match humantime::parse_duration(t) {
        Err(humantime::DurationError::Empty) => "it is empty".into(),
        Err(humantime::DurationError::UnknownUnit { unit, .. }) => {
            format!("unknown unit `{unit}`")
        }
        Err(humantime::DurationError::NumberOverflow) => "it is too large or too precise".into(),
        _ => format!("`{t}` is not a number followed by a unit"),
    }
}

/// Parses `30s`, `5m`, `1h 30m`, `250ms`; a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        return Err("must not be negative".into());
    }
    humantime::parse_duration(t).map_err(|e| format!("{e} (write e.g. 30s, 5m, 1h30m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let fields = ["when", "timeout", "retry", "assert"];
        assert_eq!(suggest("whne", fields), Some("when"));
        assert_eq!(suggest("timout", fields), Some("timeout"));
        assert_eq!(suggest("zzz", fields), None);
        assert_eq!(suggest("sbu", ["sub", "other"]), Some("sub"));
        assert_eq!(suggest("b", ["a"]), None);
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
    }
}
