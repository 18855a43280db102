//! `serve.json` in the journal directory: how a program of the journal's owner on this machine
//! reaches the HTTP API of the `serve` that holds the journal (its pid, its URL, and a token
//! only the owner can read, which may act for anyone). The command line itself goes through
//! the journal's local socket instead ([`crate::serve::local`]).

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

    /// Removes the file.
    pub fn remove(journal_dir: &Path) {
        let _ = std::fs::remove_file(path(journal_dir));
    }
}
