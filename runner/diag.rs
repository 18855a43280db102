//! Problems found in a runbook, reported all at once with their place in the file.
//!
//! A problem is an error (the runbook cannot run: `check` fails) or a warning (it can, but
//! something in it deserves a second look: `check` reports it and still succeeds).

use std::fmt::Write as _;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::source::{Pos, Sources};

/// How bad a problem is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
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

    /// Adds a hint.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
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

    /// Renders every problem, separated by blank lines.
    pub fn render(&self, sources: &Sources, color: bool) -> String {
        self.items
            .iter()
            .map(|d| d.render(sources, color))
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}
