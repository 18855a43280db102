//! The follow file: each run's committed records mirrored as JSON lines beside the journal,
//! so `runbook log RUN --follow` can watch a run while another process holds the journal.
//! The journal stays the only source of truth; this file is a redacted, append-only view.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use runbook_journals::{Record, RunId};

use crate::engine::log::Observer;
use crate::ui::json::record_line;

/// Where the follow file of a run lives.
pub fn follow_path(journal_dir: &Path, run: RunId) -> PathBuf {
    journal_dir.join("follow").join(format!("{run}.jsonl"))
}

/// Appends every committed record of the runs it sees to their follow files.
pub struct FollowFile {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl FollowFile {
    /// Mirrors into `journal_dir/follow/`.
    pub fn new(journal_dir: &Path) -> Self {
        use std::os::unix::fs::DirBuilderExt as _;
        let dir = journal_dir.join("follow");
        // Owner-only, like the journal: the records are redacted, but they are still the
        // operator's business.
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        Self {
            dir,
            lock: Mutex::new(()),
        }
    }
}

impl Observer for FollowFile {
    fn record(&self, run: RunId, record: &Record) {
        let _guard = self.lock.lock();
        let path = self.dir.join(format!("{run}.jsonl"));
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            let _ = writeln!(f, "{}", record_line(run, record));
        }
    }
}
