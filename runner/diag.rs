//! Problems found in a runbook, reported all at once with their place in the file.
//!
//! A problem is an error (the runbook cannot run: `check` fails) or a warning (it can, but
//! something in it deserves a second look: `check` reports it and still succeeds).

use std::fmt::Write as _;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::source::{Pos, Sources};

/// How bad a problem is (`error` or `warning` in JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The runbook cannot run.
    #[default]
    Error,
    /// The runbook runs; the author should look again.
    Warning,
}

/// One problem in a runbook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Where it is; `None` for problems about a file as a whole.
    pub pos: Option<Pos>,
    /// How many characters from `pos` to underline (at least one).
    pub len: usize,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
    /// A label under the underlined text.
    pub label: Option<String>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `pos`, underlining `len` characters.
    pub fn new(pos: Pos, len: usize, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            pos: Some(pos),
            len: len.max(1),
            message: message.into(),
            label: None,
            help: None,
        }
    }

    /// A problem with no position.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            pos: None,
            len: 1,
            message: message.into(),
            label: None,
            help: None,
        }
    }

    /// Makes the problem a warning.
    #[must_use]
    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    /// Whether the problem stops the runbook from running.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Adds a label under the underlined text.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Says what was probably meant, under the underlined text (`did you mean `x`?`).
    #[must_use]
    pub fn did_you_mean(mut self, meant: &str) -> Self {
        self.label = Some(format!("{MEANT_BEFORE}{meant}{MEANT_AFTER}"));
        self
    }

    /// What a [`Diagnostic::did_you_mean`] label says was meant. (Read back from the label
    /// rather than kept beside it: a diagnostic travels in `Result`s, and stays small.)
    pub fn meant(&self) -> Option<&str> {
        self.label
            .as_deref()?
            .strip_prefix(MEANT_BEFORE)?
            .strip_suffix(MEANT_AFTER)
    }

    /// Adds a hint.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The problem with its place resolved against `sources`, for machines.
    pub fn problem(&self, sources: &Sources) -> Problem {
        let place = self.pos.map(|pos| {
            let file = sources
                .files()
                .get(pos.file)
                .map_or_else(|| "?".to_owned(), |f| f.origin.clone());
            (file, pos.line, pos.column)
        });
        Problem {
            severity: self.severity,
            file: place.as_ref().map(|p| p.0.clone()),
            line: place.as_ref().map(|p| p.1),
            column: place.as_ref().map(|p| p.2),
            message: self.message.clone(),
            suggestion: self.meant().map(str::to_owned),
            help: self.help.clone(),
        }
    }

    /// Renders the problem as `error: …` (or `warning: …`) with `--> file:line:col`, the
    /// source line and a caret.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        let renderer = if color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let level = match self.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let title = level.primary_title(self.message.as_str());
        if let Some((pos, line)) = self.pos.and_then(|p| locate(sources, p)) {
            let start = byte_offset(line, pos.column);
            let end = byte_offset(line, pos.column + self.len)
                .max(start + 1)
                .min(line.len().max(start + 1));
            let mut annotation = AnnotationKind::Primary.span(start..end);
            if let Some(label) = &self.label {
                annotation = annotation.label(label.as_str());
            }
            let mut groups = vec![
                title.element(
                    Snippet::source(line)
                        .line_start(pos.line)
                        .path(sources.get(pos.file).origin.as_str())
                        .annotation(annotation),
                ),
            ];
            if let Some(help) = &self.help {
                groups.push(Group::with_title(
                    Level::HELP.secondary_title(help.as_str()),
                ));
            }
            return renderer.render(&groups).clone();
        }
        let mut out = renderer.render(&[Group::with_title(title)]).clone();
        if let Some(pos) = self.pos {
            let _ = write!(out, "\n --> {}", sources.display(pos));
        }
        if let Some(help) = &self.help {
            let _ = write!(out, "\nhelp: {help}");
        }
        out
    }
}

/// How a label says what a misspelling probably meant: `did you mean `x`?`.
const MEANT_BEFORE: &str = "did you mean `";
const MEANT_AFTER: &str = "`?";

/// A problem as `--output json` prints it. The field names are a contract (see the README's
/// "JSON output"): added to, never renamed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `error` or `warning`.
    pub severity: Severity,
    /// The file as shown to people (a path, or `bundled:NAME` for the bundled library);
    /// `None` for a problem that has no place (a runbook not found).
    pub file: Option<String>,
    /// 1-based line.
    pub line: Option<usize>,
    /// 1-based column, in characters.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
    /// What was probably meant, for a misspelling (`shell` for `shel`).
    pub suggestion: Option<String>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Problem {
    /// A problem with no place: `message` is all there is.
    pub fn general(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: None,
            line: None,
            column: None,
            message: message.into(),
            suggestion: None,
            help: None,
        }
    }
}

/// The position and its line. A position past the last line (a parser reporting the end of
/// the file after its final newline) is moved to the end of the last line, to show it.
fn locate(sources: &Sources, pos: Pos) -> Option<(Pos, &str)> {
    if let Some(line) = sources.line(pos) {
        return Some((pos, line));
    }
    let text = &sources.files().get(pos.file)?.text;
    let count = text.lines().count();
    let last = text.lines().last()?;
    (pos.line > count).then(|| {
        let end = Pos {
            line: count,
            column: last.chars().count() + 1,
            ..pos
        };
        (end, last)
    })
}

/// Byte offset of a 1-based character column in `line` (past the end when the column is).
fn byte_offset(line: &str, column: usize) -> usize {
    line.char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i)
}

/// Problems collected in one pass over a runbook (and the runbooks it calls).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.items.push(diagnostic);
    }

    /// Records every problem of another collection.
    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// How many of them are errors.
    pub fn errors(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    /// The problems, in file order.
    pub fn items(&self) -> &[Diagnostic] {
        &self.items
    }

    /// Sorts problems by file and position, so output follows the file.
    pub fn sort(&mut self) {
        self.items
            .sort_by_key(|d| d.pos.map(|p| (p.file, p.line, p.column)));
        self.items.dedup();
    }

    /// Every problem with its place resolved, for machines.
    pub fn problems(&self, sources: &Sources) -> Vec<Problem> {
        self.items.iter().map(|d| d.problem(sources)).collect()
    }

    /// Renders every problem, separated by blank lines.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        self.items
            .iter()
            .map(|d| d.render(sources, color))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}
