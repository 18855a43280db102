//! The files a runbook is made of, and positions in them.
//!
//! Every loaded file gets a [`FileId`]; every parsed node keeps a [`Pos`] into it, so any
//! problem found later (validation, a Rhai compile error, a bad template) can point at
//! `file:line:column` and show the offending text.
//!
//! Files are UTF-8 text. [`decode`] turns a file's bytes into that text: a leading byte order
//! mark is dropped (so line 1's columns count as an editor shows them), and bytes that are not
//! UTF-8 are an error naming the first bad byte's line and column.

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

/// The byte order mark some editors put at the start of UTF-8 files.
const BOM: &str = "\u{feff}";

/// A file that is not UTF-8 text: where its first bad byte is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("byte 0x{byte:02x} at line {line}, column {column} is not UTF-8 text")]
pub struct NotUtf8 {
    /// The file's text with each bad sequence replaced by U+FFFD, to show the line.
    pub lossy: String,
    /// The first byte that is not UTF-8.
    pub byte: u8,
    /// Its 1-based line.
    pub line: usize,
    /// Its 1-based column, in characters (the bytes before it on its line are valid text).
    pub column: usize,
}

/// A file's text from its bytes: UTF-8, without a leading byte order mark.
pub fn decode(bytes: Vec<u8>) -> Result<String, NotUtf8> {
    match String::from_utf8(bytes) {
        Ok(text) => Ok(match text.strip_prefix(BOM) {
            Some(rest) => rest.to_owned(),
            None => text,
        }),
        Err(e) => {
            let bytes = e.into_bytes();
            let body = bytes.strip_prefix(BOM.as_bytes()).unwrap_or(&bytes);
            let valid = std::str::from_utf8(body).map_or_else(|e| e.valid_up_to(), str::len);
            // Everything before the first bad byte is valid, so this cannot fail.
            let before = std::str::from_utf8(&body[..valid]).unwrap_or_default();
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            Err(NotUtf8 {
                lossy: String::from_utf8_lossy(body).into_owned(),
                byte: body[valid],
                line: before.matches('\n').count() + 1,
                column: before[line_start..].chars().count() + 1,
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_drops_a_leading_byte_order_mark_only() {
        assert_eq!(decode(b"\xef\xbb\xbfa: 1\n".to_vec()).unwrap(), "a: 1\n");
        assert_eq!(decode(b"a: \xef\xbb\xbf".to_vec()).unwrap(), "a: \u{feff}");
        assert_eq!(decode(b"a: 1".to_vec()).unwrap(), "a: 1");
    }

    #[test]
    fn decode_names_the_first_bad_byte_by_line_and_character_column() {
        let e = decode(b"\xef\xbb\xbfa: 1\nb: \xc3\xa9\xff\xfe\n".to_vec()).unwrap_err();
        assert_eq!((e.byte, e.line, e.column), (0xff, 2, 5));
        assert_eq!(e.lossy, "a: 1\nb: é\u{fffd}\u{fffd}\n");
        assert_eq!(
            e.to_string(),
            "byte 0xff at line 2, column 5 is not UTF-8 text"
        );
        // A multi-byte sequence cut short: its first byte is the one shown.
        let e = decode(b"x\xe2\x82".to_vec()).unwrap_err();
        assert_eq!((e.byte, e.line, e.column), (0xe2, 1, 2));
    }
}
