//! `serve.json` in the journal directory: how the command line on this machine reaches the
//! `serve` that holds the journal (its pid, its URL, and a token only the owner can read).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `serve` tells local command lines about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServeInfo {
    /// The `serve` process.
    pub pid: u32,
    /// Its base URL, e.g. `http://127.0.0.1:8427`.
    pub url: String,
    /// The token of the local command line.
    pub token: String,
}

/// Where the file lives.
pub fn path(journal_dir: &Path) -> PathBuf {
    journal_dir.join("serve.json")
}

impl ServeInfo {
    /// Writes the file, readable by its owner only.
    pub fn write(&self, journal_dir: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let p = path(journal_dir);
        let tmp = p.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(
            serde_json::to_string_pretty(self)
                .expect("info serializes")
                .as_bytes(),
        )?;
        f.sync_all()?;
        std::fs::rename(tmp, p)
    }

    /// Reads the file, if a `serve` whose process still runs wrote it.
    pub fn read_live(journal_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path(journal_dir)).ok()?;
        let info: Self = serde_json::from_str(&text).ok()?;
        let alive = std::fs::read_to_string(format!("/proc/{}/status", info.pid)).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        });
        alive.then_some(info)
    }

    /// Removes the file.
    pub fn remove(journal_dir: &Path) {
        let _ = std::fs::remove_file(path(journal_dir));
    }
}
