//! A read-only view of a journal: its store copied aside, so that reading never changes a byte.
//!
//! sled has no read-only mode: every open walks the log from its last snapshot, writes a new
//! snapshot file when the log moved on, and overwrites the unused tail of the active segment —
//! and after damage its recovery zeroes whatever follows the first bad message. A command that
//! only reads (`status`, `log`, `history`, `schedule list`) therefore opens a private copy of the
//! store files, taken under a shared lock on sled's lock file so that no writer changes them
//! meanwhile. The copy costs one read of the store (`copy_file_range`, in the kernel) and lives
//! in the temporary directory until the view is dropped.

use std::fs::{self, File};
use std::path::Path;
use std::time::Duration;

use nix::fcntl::FlockArg;

use crate::live_store::{is_store_file, lock_waiting};
use crate::{JournalError, io_at};

/// Copies the sled store of the journal in `dir` into a new owner-only temporary directory.
/// Fails with [`JournalError::Busy`] when a writer holds the journal for longer than
/// `busy_wait`.
pub fn copy_store(
    dir: &Path,
    busy_wait: Duration,
    holder: impl Fn() -> Option<String>,
) -> Result<tempfile::TempDir, JournalError> {
    let db = dir.join("db");
    let file = File::open(&db).map_err(io_at("open", &db))?;
    // Shared: readers may copy side by side; sled's own exclusive lock keeps writers out.
    let _lock = lock_waiting(file, FlockArg::LockSharedNonblock, &db, busy_wait, || {
        JournalError::Busy {
            dir: dir.to_path_buf(),
            holder: holder(),
        }
    })?;

    let copy = tempfile::Builder::new()
        .prefix("runbook-journal-view-")
        .tempdir()
        .map_err(io_at("create a temporary copy of", dir))?;
    for entry in fs::read_dir(dir).map_err(io_at("list", dir))? {
        let entry = entry.map_err(io_at("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_store_file(name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::copy(entry.path(), copy.path().join(name)).map_err(io_at("copy", &entry.path()))?;
        }
    }
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        let target = copy.path().join("blobs");
        fs::create_dir(&target).map_err(io_at("create", &target))?;
        for entry in fs::read_dir(&blobs).map_err(io_at("list", &blobs))? {
            let entry = entry.map_err(io_at("list", &blobs))?;
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                fs::copy(entry.path(), target.join(entry.file_name()))
                    .map_err(io_at("copy", &entry.path()))?;
            }
        }
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::Flock;

    #[test]
    fn copies_the_store_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["db", "conf", "snap.0000000000001", "witness", "holder"] {
            fs::write(tmp.path().join(name), name).unwrap();
        }
        fs::create_dir(tmp.path().join("blobs")).unwrap();
        fs::write(tmp.path().join("blobs").join("17"), "blob").unwrap();
        fs::create_dir(tmp.path().join("follow")).unwrap();
        let copy = copy_store(tmp.path(), Duration::ZERO, || None).unwrap();
        let mut names: Vec<String> = fs::read_dir(copy.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["blobs", "conf", "db", "snap.0000000000001"]);
        assert_eq!(
            fs::read_to_string(copy.path().join("blobs/17")).unwrap(),
            "blob"
        );
    }

    #[test]
    fn a_held_journal_is_busy() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("db"), "").unwrap();
        let held = Flock::lock(
            File::open(tmp.path().join("db")).unwrap(),
            FlockArg::LockExclusiveNonblock,
        )
        .unwrap();
        let err = copy_store(tmp.path(), Duration::from_millis(50), || {
            Some("pid 1".into())
        })
        .unwrap_err();
        assert!(
            matches!(&err, JournalError::Busy { holder: Some(h), .. } if h == "pid 1"),
            "{err:?}"
        );
        drop(held);
        copy_store(tmp.path(), Duration::ZERO, || None).unwrap();
    }
}
