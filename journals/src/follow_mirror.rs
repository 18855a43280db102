//! The follow mirrors beside a journal: `follow/RUN.jsonl`, each run's committed records as
//! redacted JSON lines, appended by the process executing the run so that `runbook log RUN
//! --follow` can watch it while that process holds the journal. The journal is the only source
//! of truth; a mirror is a view of a run while it may be watched. A compaction removes the
//! mirrors of the runs it moves to the archive, so a journal that a long-lived `serve` keeps
//! open holds mirrors of its live runs and recent finished ones, not one file per run it ever
//! executed.

use std::io;
use std::path::{Path, PathBuf};

use crate::RunId;

/// The mirrors' directory, in the journal directory.
pub const DIR: &str = "follow";

/// Where the mirror of run `run` of the journal in `journal_dir` is.
pub fn path(journal_dir: &Path, run: RunId) -> PathBuf {
    journal_dir.join(DIR).join(format!("{run}.jsonl"))
}

/// Removes the mirrors of `runs` (a run without one is fine): how many were removed, and the
/// first failure to remove one, if any (the others are still tried). Not synced: a mirror that
/// a crash brings back is only a view of an archived run.
pub(crate) fn remove(journal_dir: &Path, runs: &[RunId]) -> (usize, Option<(PathBuf, io::Error)>) {
    let mut removed = 0;
    let mut failed = None;
    for run in runs {
        let mirror = path(journal_dir, *run);
        match std::fs::remove_file(&mirror) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                failed.get_or_insert((mirror, e));
            }
        }
    }
    (removed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_the_mirrors_named_and_only_those() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(DIR)).unwrap();
        let [a, b, kept, without] = [RunId::new(), RunId::new(), RunId::new(), RunId::new()];
        for run in [a, b, kept] {
            std::fs::write(path(tmp.path(), run), "{}\n").unwrap();
        }
        let (removed, failed) = remove(tmp.path(), &[a, b, without]);
        assert_eq!(removed, 2);
        assert!(failed.is_none());
        assert!(!path(tmp.path(), a).exists() && !path(tmp.path(), b).exists());
        assert!(path(tmp.path(), kept).exists());
    }

    #[test]
    fn a_mirror_that_cannot_be_removed_is_told_and_the_others_still_go() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(DIR)).unwrap();
        let [stuck, other] = [RunId::new(), RunId::new()];
        // A directory where the mirror should be: `remove_file` refuses it.
        std::fs::create_dir(path(tmp.path(), stuck)).unwrap();
        std::fs::write(path(tmp.path(), other), "{}\n").unwrap();
        let (removed, failed) = remove(tmp.path(), &[stuck, other]);
        assert_eq!(removed, 1);
        assert_eq!(failed.expect("a failure").0, path(tmp.path(), stuck));
        assert!(!path(tmp.path(), other).exists());
    }
}
