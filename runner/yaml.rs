//! YAML behind one module: parsing into a tree whose every node keeps its line and column.
//!
//! The parser is marked-yaml (built on yaml-rust2). Nothing outside this module names it, so it
//! can be swapped. Scalars keep whether they were plain (unquoted): only plain scalars are typed
//! as numbers, booleans or null, as in YAML 1.2's core schema; `"3"` stays a string.

use marked_yaml::{LoadError, LoaderOptions};
use serde_json::Value;

use crate::diag::Diagnostic;
use crate::source::{FileId, Pos};

/// A parsed YAML node.
#[derive(Clone, Debug)]
pub enum Node {
    /// A scalar (any text; typed only on request).
    Scalar(Scalar),
    /// A mapping, in file order.
    Map(Map),
    /// A sequence.
    Seq(Seq),
}

/// A scalar with its position and style.
#[derive(Clone, Debug)]
pub struct Scalar {
    /// The text (quotes and escapes resolved).
    pub text: String,
    /// Where the scalar starts (the opening quote for quoted scalars).
    pub pos: Pos,
    /// Whether it was written without quotes or block indicators.
    pub plain: bool,
    /// Where the text itself starts (after an opening quote).
    pub content: Pos,
}

/// A mapping with its position.
#[derive(Clone, Debug)]
pub struct Map {
    /// Entries in file order.
    pub entries: Vec<(Scalar, Node)>,
    /// Where the mapping starts.
    pub pos: Pos,
}

/// A sequence with its position.
#[derive(Clone, Debug)]
pub struct Seq {
    /// Items in file order.
    pub items: Vec<Node>,
    /// Where the sequence starts.
    pub pos: Pos,
}

impl Node {
    /// Where the node starts.
    pub fn pos(&self) -> Pos {
        match self {
            Self::Scalar(s) => s.pos,
            Self::Map(m) => m.pos,
            Self::Seq(s) => s.pos,
        }
    }

    /// What kind of node this is, for messages ("a string", "a mapping", "a list").
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Scalar(s) if s.plain && s.text.is_empty() => "nothing",
            Self::Scalar(_) => "a scalar",
            Self::Map(_) => "a mapping",
            Self::Seq(_) => "a list",
        }
    }

    /// The scalar, if this is one.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Self::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// The mapping, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence, if this is one.
    pub fn as_seq(&self) -> Option<&Seq> {
        match self {
            Self::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON, typing plain scalars by YAML 1.2's core schema.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Scalar(s) => s.to_json(),
            Self::Map(m) => Value::Object(
                m.entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect(),
            ),
            Self::Seq(s) => Value::Array(s.items.iter().map(Node::to_json).collect()),
        }
    }
}

impl Map {
    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// The key node for `key` (for positions).
    pub fn key(&self, key: &str) -> Option<&Scalar> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .map(|(k, _)| k)
    }
}

impl Scalar {
    /// Whether this is a plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }

    /// The scalar typed by YAML 1.2's core schema (quoted scalars are always strings).
    pub fn to_json(&self) -> Value {
        if !self.plain {
            return Value::String(self.text.clone());
        }
        let t = self.text.as_str();
        if self.is_null() {
            return Value::Null;
        }
        match t {
            "true" | "True" | "TRUE" => return Value::Bool(true),
            "false" | "False" | "FALSE" => return Value::Bool(false),
            _ => {}
        }
        if let Some(n) = parse_int(t) {
            return Value::from(n);
        }
        if looks_like_float(t)
            && let Ok(f) = t.parse::<f64>()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Value::Number(n);
        }
        Value::String(self.text.clone())
    }

    /// The position in the file of a 1-based `line`/`column` inside the scalar's text.
    ///
    /// Exact for single-line and block scalars; for folded plain scalars spanning lines it is
    /// the best guess (their line breaks were folded away).
    pub fn pos_at(&self, line: usize, column: usize) -> Pos {
        let line = line.max(1);
        let column = column.max(1);
        Pos {
            file: self.content.file,
            line: self.content.line + line - 1,
            column: if line == 1 {
                self.content.column + column - 1
            } else if self.content != self.pos {
                // A multi-line quoted scalar: continuation lines start where the text is indented.
                column
            } else {
                self.content.column + column - 1
            },
        }
    }

    /// The position of a byte `offset` into the scalar's text.
    pub fn pos_at_offset(&self, offset: usize) -> Pos {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.pos_at(line, column)
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn looks_like_float(t: &str) -> bool {
    let body = t.trim_start_matches(['-', '+']);
    !body.is_empty()
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && body.bytes().any(|b| b.is_ascii_digit())
}

/// Parses a YAML document whose top level must be a mapping.
pub fn parse(file: FileId, text: &str) -> Result<Node, Diagnostic> {
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true)
        .toplevel_mapping();
    match marked_yaml::parse_yaml_with_options(file, text, options) {
        Ok(node) => Ok(convert(file, text, &node)),
        Err(err) => Err(load_error(file, &err)),
    }
}

fn pos_of(file: FileId, marker: Option<&marked_yaml::Marker>) -> Pos {
    marker.map_or(
        Pos {
            file,
            line: 1,
            column: 1,
        },
        |m| Pos {
            file,
            line: m.line(),
            column: m.column(),
        },
    )
}

fn load_error(file: FileId, err: &LoadError) -> Diagnostic {
    match err {
        LoadError::TopLevelMustBeMapping(m) => Diagnostic::new(
            pos_of(file, Some(m)),
            1,
            "a runbook must be a YAML mapping (`runbook: NAME`, `steps: […]`, …)",
        ),
        LoadError::TopLevelMustBeSequence(m) => {
            Diagnostic::new(pos_of(file, Some(m)), 1, "expected a YAML list here")
        }
        LoadError::UnexpectedAnchor(m) => Diagnostic::new(
            pos_of(file, Some(m)),
            1,
            "YAML anchors and aliases are not supported in runbooks",
        )
        .help("repeat the value, or move shared logic into a called runbook"),
        LoadError::MappingKeyMustBeScalar(m) => Diagnostic::new(
            pos_of(file, Some(m)),
            1,
            "mapping keys must be plain strings",
        ),
        LoadError::UnexpectedTag(m) => Diagnostic::new(
            pos_of(file, Some(m)),
            1,
            "YAML tags (`!tag`) are not supported in runbooks",
        ),
        LoadError::ScanError(m, e) => {
            // yaml-rust2 reports columns from 0 in its own marker; marked-yaml's is 1-based.
            let mark = e.marker();
            let pos = Pos {
                file,
                line: mark.line(),
                column: mark.col() + 1,
            };
            let pos = if pos.line == 0 {
                pos_of(file, Some(m))
            } else {
                pos
            };
            Diagnostic::new(pos, 1, format!("invalid YAML: {}", e.info()))
        }
        LoadError::DuplicateKey(inner) => {
            let first = pos_of(file, inner.prev_key.span().start());
            Diagnostic::new(
                pos_of(file, inner.key.span().start()),
                inner.key.as_str().chars().count(),
                format!("duplicate key `{}`", inner.key.as_str()),
            )
            .label(format!("first given on line {}", first.line))
        }
    }
}

fn convert(file: FileId, text: &str, node: &marked_yaml::Node) -> Node {
    match node {
        marked_yaml::Node::Scalar(s) => Node::Scalar(scalar(file, text, s)),
        marked_yaml::Node::Mapping(m) => Node::Map(Map {
            pos: pos_of(file, m.span().start()),
            entries: m
                .iter()
                .map(|(k, v)| (scalar(file, text, k), convert(file, text, v)))
                .collect(),
        }),
        marked_yaml::Node::Sequence(s) => Node::Seq(Seq {
            pos: pos_of(file, s.span().start()),
            items: s.iter().map(|n| convert(file, text, n)).collect(),
        }),
    }
}

fn scalar(file: FileId, text: &str, s: &marked_yaml::types::MarkedScalarNode) -> Scalar {
    let pos = pos_of(file, s.span().start());
    let quoted = s
        .span()
        .start()
        .and_then(|m| text.chars().nth(m.character()))
        .is_some_and(|c| c == '"' || c == '\'');
    Scalar {
        text: s.as_str().to_owned(),
        pos,
        plain: s.may_coerce(),
        content: if quoted { pos.shifted(1) } else { pos },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> Map {
        parse(0, text).unwrap().as_map().unwrap().clone()
    }

    #[test]
    fn plain_scalars_are_typed_and_quoted_ones_stay_strings() {
        let m = map("a: 3\nb: \"3\"\nc: true\nd: 'true'\ne: ~\nf: 1.5\ng: 2.7.2\nh: -4\n");
        let j = Node::Map(m).to_json();
        assert_eq!(
            j,
            serde_json::json!({"a": 3, "b": "3", "c": true, "d": "true", "e": null, "f": 1.5, "g": "2.7.2", "h": -4})
        );
    }

    #[test]
    fn positions_point_at_text_inside_quotes_and_blocks() {
        let m = map("a: \"x == 1\"\nb: |\n  first\n  second\n");
        let a = m.get("a").unwrap().as_scalar().unwrap();
        assert_eq!((a.content.line, a.content.column), (1, 5));
        assert_eq!(
            a.pos_at(1, 3),
            Pos {
                file: 0,
                line: 1,
                column: 7
            }
        );
        let b = m.get("b").unwrap().as_scalar().unwrap();
        assert_eq!(
            b.pos_at(2, 4),
            Pos {
                file: 0,
                line: 4,
                column: 6
            }
        );
        assert_eq!(
            b.pos_at_offset(6),
            Pos {
                file: 0,
                line: 4,
                column: 3
            }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_places() {
        let d = parse(0, "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(d.message, "duplicate key `a`");
        assert_eq!(d.pos.map(|p| (p.line, p.column)), Some((3, 1)));
        assert_eq!(d.label.as_deref(), Some("first given on line 1"));
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let d = parse(0, "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(d.message.starts_with("invalid YAML: "), "{}", d.message);
        assert_eq!(d.pos.map(|p| p.line), Some(2));
    }
}
