//! YAML behind one module: parsing into a tree whose every node keeps its line and column.
//!
//! The parser is marked-yaml (built on yaml-rust2, whose event parser also tells where a second
//! document would start: a file holds one). Nothing outside this module names them, so they can
//! be swapped. Scalars keep whether they were plain (unquoted): only plain scalars are typed
//! as numbers, booleans or null, as in YAML 1.2's core schema; `"3"` stays a string.

use std::sync::Arc;

use marked_yaml::{LoadError, LoaderOptions};
use serde_json::Value;
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::ScanError;

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
    /// Where each character of `text` was written in the file. Escapes (`\"`, `''`), folded
    /// line breaks and block indentation make this differ from `content` plus an offset.
    /// `None` when unknown (a scalar not read from YAML); positions are then computed.
    pub chars: Option<Arc<[Pos]>>,
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
    /// Exact whatever the scalar's style: quotes, escapes, folding and block indentation are
    /// accounted for. A position just past the end of the text points just past its last
    /// character.
    pub fn pos_at(&self, line: usize, column: usize) -> Pos {
        let line = line.max(1);
        let column = column.max(1);
        if let Some(chars) = &self.chars {
            let mut index = 0;
            for (i, l) in self.text.split('\n').enumerate() {
                if i + 1 == line {
                    index += (column - 1).min(l.chars().count());
                    break;
                }
                index += l.chars().count() + 1;
            }
            return char_pos(chars, index, self.content);
        }
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
        if let Some(chars) = &self.chars {
            return char_pos(chars, before.chars().count(), self.content);
        }
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.pos_at(line, column)
    }
}

/// The position of character `index` of a scalar, or just past its last character.
fn char_pos(chars: &[Pos], index: usize, content: Pos) -> Pos {
    match chars.get(index) {
        Some(p) => *p,
        None => chars.last().map_or(content, |p| p.shifted(1)),
    }
}

/// Where each character of a scalar's `text` is in `src`, the file from the scalar's start
/// (its opening `quote`, if it has one) on. The text is matched against the source: escapes in
/// double quotes, `''` in single quotes, and line breaks folded into spaces or stripped of
/// their indentation are stepped over. `None` if the text cannot be matched.
fn char_positions(src: &str, start: Pos, quote: Option<char>, text: &str) -> Option<Arc<[Pos]>> {
    let double = quote == Some('"');
    let single = quote == Some('\'');
    let mut source = src.chars().peekable();
    let (mut line, mut column) = (start.line, start.column);
    let mut advance = |source: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        match source.next() {
            Some('\n') => {
                line += 1;
                column = 1;
            }
            Some(_) => column += 1,
            None => {}
        }
        Pos {
            file: start.file,
            line,
            column,
        }
    };
    let mut here = start;
    if double || single {
        here = advance(&mut source);
    }
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        loop {
            let s = *source.peek()?;
            if double && s == '\\' {
                let at = here;
                here = advance(&mut source);
                let escaped = *source.peek()?;
                if escaped == '\n' || escaped == '\r' {
                    // An escaped line break: it and the next line's indentation give no text.
                    while source.peek().is_some_and(|c| c.is_whitespace()) {
                        here = advance(&mut source);
                    }
                    continue;
                }
                let digits = match escaped {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                for _ in 0..=digits {
                    here = advance(&mut source);
                }
                out.push(at);
                break;
            }
            if single && s == '\'' && c == '\'' {
                out.push(here);
                advance(&mut source);
                here = advance(&mut source);
                break;
            }
            if s == c || (c.is_whitespace() && s.is_whitespace()) {
                out.push(here);
                here = advance(&mut source);
                break;
            }
            here = advance(&mut source);
        }
    }
    Some(out.into())
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
        Ok(node) => {
            single_document(file, text)?;
            let lines: Vec<usize> = std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            Ok(convert(file, text, &lines, &node))
        }
        Err(err) => Err(load_error(file, text, &err)),
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

fn load_error(file: FileId, text: &str, err: &LoadError) -> Diagnostic {
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
            indicator_before(text, pos_of(file, Some(m)), '&'),
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
            indicator_before(text, pos_of(file, Some(m)), '!'),
            1,
            "YAML tags (`!tag`) are not supported in runbooks",
        ),
        LoadError::ScanError(m, e) => scan_error(file, text, e, pos_of(file, Some(m))),
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

/// A syntax error, at `fallback` when the scanner does not know where.
fn scan_error(file: FileId, text: &str, e: &ScanError, fallback: Pos) -> Diagnostic {
    // yaml-rust2 reports columns from 0 in its own marker; marked-yaml's is 1-based.
    let pos = yaml_pos(file, e.marker());
    let pos = if pos.line == 0 { fallback } else { pos };
    if e.info().contains("tab")
        && let Some(tab) = first_tab(file, text, pos.line)
    {
        return Diagnostic::new(tab, 1, "invalid YAML: a tab where only spaces may be")
            .help("indent with spaces: YAML does not allow tabs for indentation");
    }
    let d = Diagnostic::new(pos, 1, format!("invalid YAML: {}", e.info()));
    match unclosed_bracket(text, pos) {
        Some((open, at)) if at.line < pos.line => d.help(format!(
            "the `{open}` on line {}, column {} is never closed",
            at.line, at.column
        )),
        _ => d,
    }
}

/// The position of a yaml-rust2 marker (1-based line, 0-based column).
fn yaml_pos(file: FileId, mark: &yaml_rust2::scanner::Marker) -> Pos {
    Pos {
        file,
        line: mark.line(),
        column: mark.col() + 1,
    }
}

/// Refuses a second document: marked-yaml reads the first one only, and the rest of the file
/// would be silently ignored.
fn single_document(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let mut parser = Parser::new_from_str(text);
    let mut documents = 0;
    loop {
        match parser.next_token() {
            Ok((Event::DocumentStart, mark)) => {
                documents += 1;
                if documents > 1 {
                    let mut pos = yaml_pos(file, &mark);
                    let explicit = text
                        .lines()
                        .nth(pos.line.saturating_sub(1))
                        .is_some_and(|l| l.chars().skip(pos.column - 1).take(3).eq("---".chars()));
                    // An implicit start (after `...`) is marked where its first node was
                    // recognised, which for a mapping is past its first key: the earliest
                    // mark of the next events (or of the error they give) is where it starts.
                    if !explicit {
                        let mut first = mark;
                        for _ in 0..2 {
                            let next = match parser.next_token() {
                                Ok((_, m)) => m,
                                Err(e) => *e.marker(),
                            };
                            if next.index() < first.index() {
                                first = next;
                            }
                        }
                        pos = yaml_pos(file, &first);
                    }
                    return Err(Diagnostic::new(
                        pos,
                        if explicit { 3 } else { 1 },
                        "a second YAML document: a file holds one document",
                    )
                    .help("only the first would be read: remove the `---` line, or put each document in a file of its own"));
                }
            }
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok(_) => {}
            Err(e) => {
                let end = Pos {
                    file,
                    line: text.lines().count().max(1),
                    column: 1,
                };
                return Err(scan_error(file, text, &e, end));
            }
        }
    }
}

/// Where the `indicator` (`&` of an anchor, `!` of a tag) before `pos` on its line is: the
/// parser marks the node that follows it.
fn indicator_before(text: &str, pos: Pos, indicator: char) -> Pos {
    let Some(line) = text.lines().nth(pos.line.saturating_sub(1)) else {
        return pos;
    };
    let before: Vec<char> = line.chars().take(pos.column.saturating_sub(1)).collect();
    match before.iter().rposition(|&c| c == indicator) {
        // Step back over `!!` of a secondary tag.
        Some(mut i) => {
            while i > 0 && before[i - 1] == indicator {
                i -= 1;
            }
            Pos {
                column: i + 1,
                ..pos
            }
        }
        None => pos,
    }
}

/// The first tab in `text` on line `from` or later that is indentation or separation.
fn first_tab(file: FileId, text: &str, from: usize) -> Option<Pos> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find_map(|(i, line)| {
            let column = line.chars().position(|c| c == '\t')?;
            Some(Pos {
                file,
                line: i + 1,
                column: column + 1,
            })
        })
}

/// The innermost flow bracket (`[` or `{`) still open at `pos`, and where it was opened, by
/// a rough scan that knows quotes and comments. Only for a hint in a syntax error.
fn unclosed_bracket(text: &str, pos: Pos) -> Option<(char, Pos)> {
    let mut stack: Vec<(char, Pos)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut prev = '\n';
    for (i, line) in text.lines().enumerate().take(pos.line) {
        let mut chars = line.chars().enumerate().peekable();
        if quote.is_none() {
            prev = '\n';
        }
        while let Some((j, c)) = chars.next() {
            if i + 1 == pos.line && j + 1 >= pos.column {
                break;
            }
            match quote {
                Some('"') if c == '\\' => {
                    chars.next();
                }
                Some(q) if c == q => {
                    if q == '\'' && chars.peek().is_some_and(|&(_, n)| n == '\'') {
                        chars.next();
                    } else {
                        quote = None;
                    }
                }
                Some(_) => {}
                None => {
                    let starts_node =
                        matches!(prev, '\n' | ' ' | '[' | '{' | ',' | ':' | '-' | '?');
                    match c {
                        '#' if prev == '\n' || prev == ' ' => break,
                        '"' | '\'' if starts_node => quote = Some(c),
                        '[' | '{' if starts_node || !stack.is_empty() => stack.push((
                            c,
                            Pos {
                                line: i + 1,
                                column: j + 1,
                                ..pos
                            },
                        )),
                        ']' | '}' if !stack.is_empty() => {
                            stack.pop();
                        }
                        _ => {}
                    }
                }
            }
            prev = c;
        }
    }
    stack.pop()
}

fn convert(file: FileId, text: &str, lines: &[usize], node: &marked_yaml::Node) -> Node {
    match node {
        marked_yaml::Node::Scalar(s) => Node::Scalar(scalar(file, text, lines, s)),
        marked_yaml::Node::Mapping(m) => Node::Map(Map {
            // The parser marks a block mapping after its first key; point at that key.
            pos: match (pos_of(file, m.span().start()), m.iter().next()) {
                (pos, Some((k, _))) if !text[byte_at(text, lines, pos)..].starts_with('{') => {
                    pos_of(file, k.span().start())
                }
                (pos, _) => pos,
            },
            entries: m
                .iter()
                .map(|(k, v)| (scalar(file, text, lines, k), convert(file, text, lines, v)))
                .collect(),
        }),
        marked_yaml::Node::Sequence(s) => Node::Seq(Seq {
            pos: pos_of(file, s.span().start()),
            items: s.iter().map(|n| convert(file, text, lines, n)).collect(),
        }),
    }
}

/// `lines` holds the byte offset at which each line of `text` starts.
fn scalar(
    file: FileId,
    text: &str,
    lines: &[usize],
    s: &marked_yaml::types::MarkedScalarNode,
) -> Scalar {
    let pos = pos_of(file, s.span().start());
    let (before, src) = text.split_at(byte_at(text, lines, pos));
    // A block scalar's text may start with a quote too; its header is on an earlier line.
    let quote = src
        .chars()
        .next()
        .filter(|&c| !s.may_coerce() && (c == '"' || c == '\'') && !after_block_header(before));
    Scalar {
        text: s.as_str().to_owned(),
        pos,
        plain: s.may_coerce(),
        content: if quote.is_some() { pos.shifted(1) } else { pos },
        chars: char_positions(src, pos, quote, s.as_str()),
    }
}

/// The byte offset of `pos` in `text`, whose lines start at the offsets `lines`.
fn byte_at(text: &str, lines: &[usize], pos: Pos) -> usize {
    lines
        .get(pos.line.saturating_sub(1))
        .map_or(text.len(), |&start| {
            text[start..]
                .char_indices()
                .nth(pos.column.saturating_sub(1))
                .map_or(text.len(), |(i, _)| start + i)
        })
}

/// Whether a scalar starting after `before` is the content of a block scalar: only
/// indentation precedes it on its line, and the last line with text ends in a `|` or `>`
/// header (with any chomping and indentation indicators, and comment).
fn after_block_header(before: &str) -> bool {
    let mut lines = before.rsplit('\n');
    if !lines.next().unwrap_or_default().trim().is_empty() {
        return false;
    }
    lines
        .map(|l| l.split(" #").next().unwrap_or(l).trim_end())
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| {
            l.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+')
                .ends_with(['|', '>'])
        })
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

    /// `(line, column)` of character `index` of the scalar under `key`.
    fn at(m: &Map, key: &str, index: usize) -> (usize, usize) {
        let s = m.get(key).unwrap().as_scalar().unwrap();
        let offset = s
            .text
            .char_indices()
            .nth(index)
            .map_or(s.text.len(), |(i, _)| i);
        let p = s.pos_at_offset(offset);
        (p.line, p.column)
    }

    #[test]
    fn positions_step_over_escapes_folding_and_indentation() {
        let m = map(concat!(
            "a: \"\\\"é\\\" x\"\n", // a: "\"é\" x"
            "b: 'it''s x'\n",       // b: 'it''s x'
            "c: >\n  \"q\"\n  x\n", // folded, starting with a quote
            "d: \"one\n  x\"\n",    // a quoted scalar over two lines
            "e: one\n  x\n",        // a plain scalar over two lines
        ));
        let s = |k: &str| m.get(k).unwrap().as_scalar().unwrap().text.clone();
        assert_eq!(s("a"), "\"é\" x");
        assert_eq!(at(&m, "a", 4), (1, 11));
        assert_eq!(s("b"), "it's x");
        assert_eq!(at(&m, "b", 5), (2, 11));
        assert_eq!(s("c"), "\"q\" x\n");
        assert_eq!(at(&m, "c", 0), (4, 3));
        assert_eq!(at(&m, "c", 4), (5, 3));
        assert_eq!(at(&m, "d", 4), (7, 3));
        assert_eq!(at(&m, "e", 4), (9, 3));
        // Just past the end.
        assert_eq!(at(&m, "e", 5), (9, 4));
    }

    #[test]
    fn syntax_errors_name_the_bracket_left_open() {
        let d = parse(0, "a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(
            d.help.as_deref(),
            Some("the `[` on line 1, column 4 is never closed")
        );
        let d = parse(0, "a: \"[\"\nb: c: d\n").unwrap_err();
        assert_eq!(d.help, None, "{d:?}");
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_places() {
        let d = parse(0, "a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(d.message, "duplicate key `a`");
        assert_eq!(d.pos.map(|p| (p.line, p.column)), Some((3, 1)));
        assert_eq!(d.label.as_deref(), Some("first given on line 1"));
    }

    #[test]
    fn a_second_document_is_refused_where_it_starts() {
        let at = |text: &str| {
            let d = parse(0, text).unwrap_err();
            assert!(d.message.starts_with("a second YAML document"), "{d:?}");
            d.pos.map(|p| (p.line, p.column, d.len))
        };
        assert_eq!(at("a: 1\n---\nb: 2\n"), Some((2, 1, 3)));
        assert_eq!(at("a: 1\n...\nb: 2\n"), Some((3, 1, 1)));
        // An empty document after `---` is a document too.
        assert_eq!(at("---\na: 1\n--- # more\n"), Some((3, 1, 3)));
        // One document, started explicitly or ended explicitly, is fine.
        assert!(parse(0, "---\na: 1\n...\n").is_ok());
        assert!(parse(0, "a: 1\n...\n# a comment\n").is_ok());
        // What follows an end marker is a document, even if it is not valid YAML.
        assert_eq!(at("a: 1\n...\n]\n"), Some((3, 1, 1)));
        assert_eq!(at("a: 1\n...\n  - x\n"), Some((3, 3, 1)));
    }

    #[test]
    fn syntax_errors_point_at_the_problem() {
        let d = parse(0, "a: [1, 2\nb: 3\n").unwrap_err();
        assert!(d.message.starts_with("invalid YAML: "), "{}", d.message);
        assert_eq!(d.pos.map(|p| p.line), Some(2));
    }
}
