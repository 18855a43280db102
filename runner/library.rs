//! Finding runbooks: by name in `./runbooks`, `$RUNBOOK_PATH` and the bundled library, or by
//! file path; and reading the files they are made of, from disk, from the bundled library, or
//! (on resume) from the copy pinned in the journal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use include_dir::{Dir, include_dir};

use crate::source::{NotUtf8, decode};

/// The runbooks that ship inside the binary.
static BUNDLED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/runbooks");

/// The origin prefix of bundled files.
pub const BUNDLED_PREFIX: &str = "bundled:";

/// Reads the files a runbook is made of, by origin (an absolute path or `bundled:REL`).
pub trait Files {
    /// The text of the file at `origin` (UTF-8, without a byte order mark).
    fn read(&self, origin: &str) -> Result<String, ReadError>;
}

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// It is not there, or the system refused to read it.
    #[error("{0}")]
    Unavailable(String),
    /// It is there, but is not UTF-8 text.
    #[error(transparent)]
    NotUtf8(#[from] NotUtf8),
}

/// Files as they are now: on disk, or in the bundled library.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveFiles;

impl Files for LiveFiles {
    fn read(&self, origin: &str) -> Result<String, ReadError> {
        let bytes = match origin.strip_prefix(BUNDLED_PREFIX) {
            Some(rel) => BUNDLED
                .get_file(rel)
                .map(|f| f.contents().to_vec())
                .ok_or_else(|| ReadError::Unavailable(format!("no bundled file `{rel}`")))?,
            None => std::fs::read(origin)
                .map_err(|e| ReadError::Unavailable(format!("failed to read {origin}: {e}")))?,
        };
        Ok(decode(bytes)?)
    }
}

/// Files as a run pinned them; anything else is an error.
#[derive(Clone, Debug, Default)]
pub struct PinnedFiles {
    files: HashMap<String, String>,
}

impl PinnedFiles {
    /// Files from `(origin, text)` pairs.
    pub fn new(files: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            files: files.into_iter().collect(),
        }
    }
}

impl Files for PinnedFiles {
    fn read(&self, origin: &str) -> Result<String, ReadError> {
        self.files.get(origin).cloned().ok_or_else(|| {
            ReadError::Unavailable(format!("{origin} is not among the run's pinned files"))
        })
    }
}

/// The origin of a file named `rel` relative to the file at `base`.
pub fn join(base: &str, rel: &str) -> String {
    if let Some(base_rel) = base.strip_prefix(BUNDLED_PREFIX) {
        let dir = Path::new(base_rel).parent().unwrap_or(Path::new(""));
        return format!("{BUNDLED_PREFIX}{}", normalize(&dir.join(rel)).display());
    }
    if Path::new(rel).is_absolute() {
        return normalize(Path::new(rel)).display().to_string();
    }
    let dir = Path::new(base).parent().unwrap_or(Path::new("/"));
    normalize(&dir.join(rel)).display().to_string()
}

/// Resolves `.` and `..` without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Shows an origin the way a user would type it: relative to the working directory when the
/// file is below it.
pub fn display_origin(origin: &str) -> String {
    if origin.starts_with(BUNDLED_PREFIX) {
        return origin.to_owned();
    }
    if let Ok(cwd) = std::env::current_dir()
        && let Ok(rel) = Path::new(origin).strip_prefix(&cwd)
    {
        return rel.display().to_string();
    }
    origin.to_owned()
}

/// Where runbooks are looked up by name.
#[derive(Clone, Debug)]
pub struct Library {
    dirs: Vec<PathBuf>,
}

/// A runbook found in the library.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The name it is found by.
    pub name: String,
    /// Its origin (absolute path or `bundled:…`).
    pub origin: String,
}

impl Library {
    /// `./runbooks`, then each directory of `$RUNBOOK_PATH`, then the bundled library.
    pub fn from_env() -> Self {
        let mut dirs = Vec::new();
        if let Ok(cwd) = std::env::current_dir() {
            dirs.push(cwd.join("runbooks"));
        }
        if let Some(path) = std::env::var_os("RUNBOOK_PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()));
        }
        Self { dirs }
    }

    /// Finds a runbook by name, or by path when `name_or_path` names an existing file or ends
    /// in `.yaml`/`.yml`.
    pub fn find(&self, name_or_path: &str) -> Option<String> {
        let p = Path::new(name_or_path);
        if name_or_path.starts_with(BUNDLED_PREFIX) {
            return Some(name_or_path.to_owned());
        }
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let looks_like_path = matches!(ext.as_deref(), Some("yaml" | "yml"))
            || name_or_path.starts_with("./")
            || name_or_path.starts_with("../")
            || p.is_absolute();
        if looks_like_path || p.is_file() {
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir().ok()?.join(p)
            };
            return abs.is_file().then(|| normalize(&abs).display().to_string());
        }
        for dir in &self.dirs {
            for candidate in candidates(dir, name_or_path) {
                if candidate.is_file() {
                    return Some(normalize(&candidate).display().to_string());
                }
            }
        }
        for rel in [
            format!("{name_or_path}.yaml"),
            format!("{name_or_path}.yml"),
            format!("{name_or_path}/runbook.yaml"),
        ] {
            if BUNDLED.get_file(&rel).is_some() {
                return Some(format!("{BUNDLED_PREFIX}{rel}"));
            }
        }
        None
    }

    /// Finds a runbook by its name only, never by path: in `./runbooks`, `$RUNBOOK_PATH` and the
    /// bundled library, the places [`Library::list`] lists. What an HTTP caller asks `serve` to
    /// run goes through here, so a caller can run what the operator put in the library and
    /// nothing else readable on the server's disk.
    pub fn find_name(&self, name: &str) -> Result<Named, ByNameError> {
        check_name(name).map_err(|why| ByNameError::NotAName {
            name: name.to_owned(),
            why,
        })?;
        for dir in &self.dirs {
            for candidate in candidates(dir, name) {
                if candidate.is_file() {
                    return Ok(Named {
                        name: name.to_owned(),
                        origin: normalize(&candidate).display().to_string(),
                    });
                }
            }
        }
        for rel in [
            format!("{name}.yaml"),
            format!("{name}.yml"),
            format!("{name}/runbook.yaml"),
        ] {
            if BUNDLED.get_file(&rel).is_some() {
                return Ok(Named {
                    name: name.to_owned(),
                    origin: format!("{BUNDLED_PREFIX}{rel}"),
                });
            }
        }
        Err(ByNameError::NotFound {
            name: name.to_owned(),
        })
    }

    /// Every runbook by name; a name found in an earlier place hides later ones.
    pub fn list(&self) -> Vec<Entry> {
        let mut found: BTreeMap<String, String> = BTreeMap::new();
        for dir in &self.dirs {
            let mut files = Vec::new();
            walk_disk(dir, &mut files);
            for path in files {
                if let Some(name) = name_of(path.strip_prefix(dir).unwrap_or(&path)) {
                    found
                        .entry(name)
                        .or_insert_with(|| normalize(&path).display().to_string());
                }
            }
        }
        let mut bundled = Vec::new();
        walk_bundled(&BUNDLED, &mut bundled);
        for rel in bundled {
            if let Some(name) = name_of(&rel) {
                found
                    .entry(name)
                    .or_insert_with(|| format!("{BUNDLED_PREFIX}{}", rel.display()));
            }
        }
        found
            .into_iter()
            .map(|(name, origin)| Entry { name, origin })
            .collect()
    }
}

/// A runbook found by name (see [`Library::find_name`]); only that lookup makes one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    name: String,
    origin: String,
}

impl Named {
    /// The name it was found by.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it was found: an absolute path inside a library directory, or `bundled:…`.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

/// Why [`Library::find_name`] found no runbook.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ByNameError {
    /// The text is a path (or otherwise not a name); only names are looked up.
    #[error(
        "`{name}` is not a runbook name ({why}): runbooks are run by name here, looked up in {PLACES}"
    )]
    NotAName {
        /// The text given.
        name: String,
        /// What makes it not a name.
        why: &'static str,
    },
    /// No runbook has that name.
    #[error("no runbook named `{name}` in {PLACES}")]
    NotFound {
        /// The name given.
        name: String,
    },
}

/// Where runbooks are looked up by name, for messages.
const PLACES: &str = "./runbooks, $RUNBOOK_PATH and the bundled library";

/// Checks that `name` is a runbook name as [`Library::list`] gives them — words separated by
/// `/` (`drivers/local/etcd`) — and not a path: nothing absolute, no `.` or `..` segment and
/// no hidden file, no `\`, no `:` (`bundled:…`, drive letters), no `.yaml`/`.yml` ending, and
/// only letters, digits and `-_.+@` in each segment. Returns what is wrong otherwise.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.starts_with('/') || Path::new(name).is_absolute() {
        return Err("it is an absolute path");
    }
    if name.contains('\\') {
        return Err("it contains a backslash");
    }
    if name.contains(':') {
        return Err("it contains a colon");
    }
    if Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
    {
        return Err("it ends in .yaml or .yml, as a file does");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return Err("it has an empty path segment");
        }
        if segment.starts_with('.') {
            return Err("it has a segment starting with `.`, such as `.` or `..`");
        }
        if !segment
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '@'))
        {
            return Err("it has characters other than letters, digits, `-_.+@` and `/`");
        }
    }
    Ok(())
}

fn candidates(dir: &Path, name: &str) -> [PathBuf; 3] {
    [
        dir.join(format!("{name}.yaml")),
        dir.join(format!("{name}.yml")),
        dir.join(name).join("runbook.yaml"),
    ]
}

/// The name a runbook file is found by: its path without extension, or its folder for
/// `NAME/runbook.yaml`.
fn name_of(rel: &Path) -> Option<String> {
    let ext = rel.extension()?.to_str()?;
    if ext != "yaml" && ext != "yml" {
        return None;
    }
    let stem = rel.with_extension("");
    if stem.file_name()? == "runbook" {
        return Some(stem.parent()?.display().to_string()).filter(|s| !s.is_empty());
    }
    Some(stem.display().to_string())
}

fn walk_disk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk_disk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn walk_bundled(dir: &Dir<'static>, out: &mut Vec<PathBuf>) {
    for file in dir.files() {
        out.push(file.path().to_path_buf());
    }
    for sub in dir.dirs() {
        walk_bundled(sub, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_resolves_relative_to_the_base_file() {
        assert_eq!(join("/a/b/c.yaml", "lib.rhai"), "/a/b/lib.rhai");
        assert_eq!(join("/a/b/c.yaml", "../d/e.yaml"), "/a/d/e.yaml");
        assert_eq!(join("bundled:x/c.yaml", "lib.rhai"), "bundled:x/lib.rhai");
        assert_eq!(join("bundled:c.yaml", "./d.yaml"), "bundled:d.yaml");
    }

    #[test]
    fn only_names_pass_the_name_check() {
        for name in [
            "hello",
            "upgrade-openbao",
            "drivers/local/etcd",
            "v1.2_final+x@y",
            "ünïcode",
        ] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
        for (text, why) in [
            ("", "it is empty"),
            ("/etc/evil", "it is an absolute path"),
            ("/some/where/evil.yaml", "it is an absolute path"),
            (
                "../evil",
                "it has a segment starting with `.`, such as `.` or `..`",
            ),
            ("../evil.yaml", "it ends in .yaml or .yml, as a file does"),
            (
                "./hello",
                "it has a segment starting with `.`, such as `.` or `..`",
            ),
            (
                "a/../../b",
                "it has a segment starting with `.`, such as `.` or `..`",
            ),
            (
                ".hidden",
                "it has a segment starting with `.`, such as `.` or `..`",
            ),
            ("hello.yaml", "it ends in .yaml or .yml, as a file does"),
            ("hello.YML", "it ends in .yaml or .yml, as a file does"),
            ("a\\b", "it contains a backslash"),
            ("..\\evil", "it contains a backslash"),
            ("bundled:hello.yaml", "it contains a colon"),
            ("C:evil", "it contains a colon"),
            ("a//b", "it has an empty path segment"),
            ("a/", "it has an empty path segment"),
            (
                "~/evil",
                "it has characters other than letters, digits, `-_.+@` and `/`",
            ),
            (
                "a b",
                "it has characters other than letters, digits, `-_.+@` and `/`",
            ),
            (
                "a\0b",
                "it has characters other than letters, digits, `-_.+@` and `/`",
            ),
        ] {
            assert_eq!(check_name(text), Err(why), "{text:?}");
        }
    }

    #[test]
    fn find_name_looks_in_the_library_only_never_beside_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let lib = root.path().join("runbooks");
        std::fs::create_dir_all(lib.join("team")).expect("mkdir");
        std::fs::write(lib.join("mine.yaml"), "runbook: mine\n").expect("write");
        std::fs::write(lib.join("team/deploy.yml"), "runbook: deploy\n").expect("write");
        std::fs::write(root.path().join("evil.yaml"), "runbook: evil\n").expect("write");
        std::fs::write(root.path().join("evil"), "runbook: evil\n").expect("write");
        let library = Library {
            dirs: vec![lib.clone()],
        };

        let mine = library.find_name("mine").expect("found");
        assert_eq!(mine.name(), "mine");
        assert_eq!(mine.origin(), lib.join("mine.yaml").display().to_string());
        let deploy = library.find_name("team/deploy").expect("found");
        assert_eq!(
            deploy.origin(),
            lib.join("team/deploy.yml").display().to_string()
        );
        assert_eq!(
            library.find_name("hello").expect("bundled").origin(),
            "bundled:hello.yaml"
        );
        assert_eq!(
            library
                .find_name("drivers/local/etcd")
                .expect("bundled")
                .origin(),
            "bundled:drivers/local/etcd.yaml"
        );

        // The file beside the library, by every spelling that reaches it.
        let outside = root.path().join("evil.yaml").display().to_string();
        for text in [outside.as_str(), "../evil.yaml", "../evil", "evil.yaml"] {
            assert!(
                matches!(library.find_name(text), Err(ByNameError::NotAName { .. })),
                "{text}"
            );
        }
        assert_eq!(
            library.find_name("evil"),
            Err(ByNameError::NotFound {
                name: "evil".into()
            })
        );
        assert_eq!(
            library.find_name("x/evil").unwrap_err().to_string(),
            "no runbook named `x/evil` in ./runbooks, $RUNBOOK_PATH and the bundled library"
        );
        assert_eq!(
            library.find_name("../evil.yaml").unwrap_err().to_string(),
            "`../evil.yaml` is not a runbook name (it ends in .yaml or .yml, as a file does): runbooks are run by name here, looked up in ./runbooks, $RUNBOOK_PATH and the bundled library"
        );
    }

    #[test]
    fn names_come_from_paths() {
        assert_eq!(name_of(Path::new("hello.yaml")).as_deref(), Some("hello"));
        assert_eq!(
            name_of(Path::new("drivers/local.yml")).as_deref(),
            Some("drivers/local")
        );
        assert_eq!(
            name_of(Path::new("upgrade/runbook.yaml")).as_deref(),
            Some("upgrade")
        );
        assert_eq!(name_of(Path::new("lib.rhai")), None);
    }
}
