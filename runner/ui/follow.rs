//! The follow file: each run's committed records mirrored as JSON lines beside the journal,
//! so `runbook log RUN --follow` can watch a run while another process holds the journal.
//! The journal stays the only source of truth; this file is a redacted, append-only view.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use runbook_journals::{Record, RunId};

use crate::engine::log::Observer;
use crate::ui::json::record_line;

/// Where the follow file of a run lives (the journal removes it when it archives the run).
pub fn follow_path(journal_dir: &Path, run: RunId) -> PathBuf {
    runbook_journals::follow_mirror::path(journal_dir, run)
}

/// Appends every committed record of the runs it sees to their follow files.
pub struct FollowFile {
    /// The journal directory.
    journal: PathBuf,
    /// The follow file written last, kept open: a run writes two records a step, and opening
    /// and closing its file each time cost more than the writes. One, so that a `serve` with
    /// thousands of runs holds one descriptor.
    last: Mutex<Option<(RunId, File)>>,
}

impl FollowFile {
    /// Mirrors into `journal_dir/follow/`.
    pub fn new(journal_dir: &Path) -> Self {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = journal_dir.join(runbook_journals::follow_mirror::DIR);
        // Owner-only, like the journal: the records are redacted, but they are still the
        // operator's business.
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        Self {
            journal: journal_dir.to_path_buf(),
            last: Mutex::new(None),
        }
    }
}

impl Observer for FollowFile {
    fn record(&self, run: RunId, record: &Record) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.as_ref().is_none_or(|(id, _)| *id != run) {
            *last = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(follow_path(&self.journal, run))
                .ok()
                .map(|f| (run, f));
        }
        if let Some((_, f)) = last.as_mut() {
            // One write per line (O_APPEND): a reader never sees a line without its end.
            let mut line = record_line(run, record);
            line.push('\n');
            if f.write_all(line.as_bytes()).is_err() {
                *last = None;
            }
        }
    }
}
