//! Finding runbooks: by name in `./runbooks`, `$RUNBOOK_PATH` and the bundled library, or by
//! file path; and reading the files they are made of, from disk, from the bundled library, or
//! (on resume) from the copy pinned in the journal.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use include_dir::{Dir, include_dir};

/// The runbooks that ship inside the binary.
static BUNDLED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/runbooks");

/// The origin prefix of bundled files.
pub const BUNDLED_PREFIX: &str = "bundled:";

/// Reads the files a runbook is made of, by origin (an absolute path or `bundled:REL`).
pub trait Files {
    /// The text of the file at `origin`.
    fn read(&self, origin: &str) -> Result<String, String>;
}

/// Files as they are now: on disk, or in the bundled library.
#[derive(Clone, Copy, Debug, Default)]
pub struct LiveFiles;

impl Files for LiveFiles {
    fn read(&self, origin: &str) -> Result<String, String> {
        if let Some(rel) = origin.strip_prefix(BUNDLED_PREFIX) {
            return BUNDLED
                .get_file(rel)
                .and_then(|f| f.contents_utf8())
                .map(str::to_owned)
                .ok_or_else(|| format!("no bundled file `{rel}`"));
        }
        std::fs::read_to_string(origin).map_err(|e| format!("failed to read {origin}: {e}"))
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
    fn read(&self, origin: &str) -> Result<String, String> {
        self.files
            .get(origin)
            .cloned()
            .ok_or_else(|| format!("{origin} is not among the run's pinned files"))
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
