//! A run's output file: what a terminal would have shown of one run — plain lines, or JSON
//! lines with `--output json` — appended to a file of its own, for a run that executes where
//! nobody watches (in the background after `--detach`, or for another command in a holder whose
//! terminal shows its own run). The file is created owner-only in an owner-only directory;
//! what it holds is redacted, like every observer's records.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use runbook_journals::{Record, RunId};

use crate::engine::log::Observer;
use crate::ui::{OutputMode, depth};

/// Appends one run's records to its output file.
pub struct LogFile {
    path: PathBuf,
    /// Opened at the first line: a run that is never created leaves no file.
    file: Mutex<Opened>,
    mode: OutputMode,
}

enum Opened {
    NotYet,
    Open(File),
    Failed,
}

/// Opens (creating it and its directory, owner-only) the output file at `path` for appending.
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl LogFile {
    /// Writes to `path` as `mode` says. A file that cannot be opened is reported once, and the
    /// run goes on: its journal is the record that counts.
    pub fn new(path: &Path, mode: OutputMode) -> Self {
        Self {
            path: path.to_path_buf(),
            file: Mutex::new(Opened::NotYet),
            mode,
        }
    }

    fn write(&self, line: &str) {
        let mut file = self.file.lock().expect("log file");
        if let Opened::NotYet = *file {
            *file = match open_log(&self.path) {
                Ok(f) => Opened::Open(f),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write a run's output file");
                    Opened::Failed
                }
            };
        }
        if let Opened::Open(f) = &mut *file {
            // One write per line: lines of several writers (this, and the background process's
            // own messages) never interleave inside a line.
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    }
}

impl Observer for LogFile {
    fn record(&self, run: RunId, record: &Record) {
        match self.mode {
            OutputMode::Json => self.write(&crate::ui::json::record_line(run, record)),
            OutputMode::Human => {
                if let Some(line) = crate::ui::plain::line(run, record) {
                    self.write(&line);
                    for more in crate::ui::plain::tail(record, false) {
                        self.write(&more);
                    }
                }
            }
        }
    }

    fn progress(&self, _run: RunId, path: &str, note: &str) {
        if self.mode == OutputMode::Human {
            self.write(&format!(
                "{}wait   {path}: {note}",
                "  ".repeat(depth(path) + 1)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_journals::{Event, RunState};

    #[test]
    fn a_run_s_lines_are_appended_to_an_owner_only_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs").join("run.log");
        let log = LogFile::new(&path, OutputMode::Human);
        let run = RunId(ulid::Ulid::nil());
        let record = |seq, state| Record {
            seq,
            at: chrono::Utc::now(),
            event: Event::StateChanged {
                state,
                reason: None,
            },
        };
        let records = [record(2, RunState::Waiting), record(3, RunState::Succeeded)];
        for r in &records {
            log.record(run, r);
        }
        let text = std::fs::read_to_string(&path).expect("the file");
        let expected: Vec<String> = records
            .iter()
            .filter_map(|r| crate::ui::plain::line(run, r))
            .collect();
        assert_eq!(expected.len(), 2, "both records have a line");
        assert_eq!(text, format!("{}\n", expected.join("\n")));
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("dir")), 0o700);
    }
}
