//! Refusing a commit the disk cannot hold, before the store is half-way through it.
//!
//! sled reports `ENOSPC` from whichever write hits it — a blob, a log buffer, a snapshot — and
//! after that its in-memory state and its files disagree until it is reopened. Checking the free
//! space before each commit turns a full disk into a clean, early refusal that names the journal
//! and leaves the journal as it was: the run stops, and `resume` finishes it once there is room.
//! The check is advisory (another process can fill the disk between the check and the write), so
//! a write error is still handled where it happens.

use std::path::Path;

use crate::JournalError;

/// Space kept free beyond a commit's own bytes: two of sled's 512 KiB log segments (it may
/// start a new one mid-commit) and room for its page rewrites.
pub const RESERVE: u64 = 1024 * 1024;

/// How many bytes a commit of `payload` bytes may need on disk: the values themselves (as a log
/// entry or a blob), the pages that index them, and the reserve.
pub fn needed(payload: u64) -> u64 {
    payload.saturating_mul(2).saturating_add(RESERVE)
}

/// Fails with [`JournalError::NoSpace`] when the file system of `dir` has less than
/// [`needed`]`(payload)` bytes available to us.
pub fn check(dir: &Path, payload: u64) -> Result<(), JournalError> {
    let needed = needed(payload);
    let available = available(dir).map_err(|source| JournalError::Io {
        action: "check the free space of",
        path: dir.to_path_buf(),
        source,
    })?;
    if available < needed {
        return Err(JournalError::NoSpace {
            dir: dir.to_path_buf(),
            available,
            needed,
        });
    }
    Ok(())
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn available(dir: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok(stat.blocks_available().saturating_mul(stat.fragment_size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_needs_its_bytes_twice_plus_the_reserve() {
        assert_eq!(needed(0), RESERVE);
        assert_eq!(needed(200 * 1024), 400 * 1024 + RESERVE);
        assert_eq!(needed(u64::MAX), u64::MAX);
    }

    #[test]
    fn an_impossible_commit_is_refused_naming_the_journal() {
        let tmp = tempfile::tempdir().unwrap();
        let err = check(tmp.path(), u64::MAX / 4).unwrap_err();
        match &err {
            JournalError::NoSpace { dir, needed, .. } => {
                assert_eq!(dir, tmp.path());
                assert_eq!(*needed, super::needed(u64::MAX / 4));
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert!(err.to_string().contains(&tmp.path().display().to_string()));
        check(tmp.path(), 10).unwrap();
    }
}
