//! The files a runbook is made of, and positions in them.
//!
//! Every loaded file gets a [`FileId`]; every parsed node keeps a [`Pos`] into it, so any
//! problem found later (validation, a Rhai compile error, a bad template) can point at
//! `file:line:column` and show the offending text.

use std::fmt;
use std::path::PathBuf;

/// Index of a file in [`Sources`].
pub type FileId = usize;

/// A 1-based line and column in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pos {
    /// The file.
    pub file: FileId,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl Pos {
    /// A position `columns` characters further on the same line.
    #[must_use]
    pub fn shifted(self, columns: usize) -> Self {
        Self {
            column: self.column + columns,
            ..self
        }
    }
}

/// One loaded file.
#[derive(Clone, Debug)]
pub struct File {
    /// Where it came from, as shown to users: a path, or `bundled:NAME`.
    pub origin: String,
    /// The file on disk, if it is one (bundled files have none).
    pub path: Option<PathBuf>,
    /// Its text.
    pub text: String,
}

/// Every file loaded for a runbook and the runbooks it calls.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<File>,
}

impl Sources {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file and returns its id; a file with the same origin and text is added once.
    pub fn add(&mut self, file: File) -> FileId {
        if let Some(id) = self
            .files
            .iter()
            .position(|f| f.origin == file.origin && f.text == file.text)
        {
            return id;
        }
        self.files.push(file);
        self.files.len() - 1
    }

    /// The file with id `id`.
    pub fn get(&self, id: FileId) -> &File {
        &self.files[id]
    }

    /// All files, in the order they were added.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The text of line `line` (1-based) of a file, without its newline.
    pub fn line(&self, pos: Pos) -> Option<&str> {
        self.files
            .get(pos.file)?
            .text
            .lines()
            .nth(pos.line.checked_sub(1)?)
    }

    /// Formats a position as `origin:line:column`.
    pub fn display(&self, pos: Pos) -> PosDisplay<'_> {
        PosDisplay { sources: self, pos }
    }
}

/// `origin:line:column`, for messages.
pub struct PosDisplay<'a> {
    sources: &'a Sources,
    pos: Pos,
}

impl fmt::Display for PosDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self
            .sources
            .files
            .get(self.pos.file)
            .map_or("?", |f| f.origin.as_str());
        write!(f, "{origin}:{}:{}", self.pos.line, self.pos.column)
    }
}
