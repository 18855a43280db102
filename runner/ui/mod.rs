//! What people and machines see: a live step tree on a terminal, plain lines otherwise, one
//! JSON object per line with `--output json`, and reports (`status`, `log`, `history`).
//!
//! Every observer sees only committed, redacted records.

mod follow;
pub mod hint;
pub mod json;
mod logfile;
pub mod output;
pub mod plain;
pub mod report;
pub mod stdout;
mod tree;

use std::io::IsTerminal as _;
use std::sync::Arc;

pub use follow::{FollowFile, follow_path};
pub use json::JsonLines;
pub use logfile::{LogFile, open_log};
pub use plain::PlainLines;
pub use tree::TreeView;

use crate::engine::log::Observer;

/// How output is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// For people: a live tree on a terminal, plain lines otherwise.
    Human,
    /// One JSON object per line.
    Json,
}

/// The observer for the chosen output mode; `verbose` shows the last lines of every step's
/// output in human output, not only a failed step's.
pub fn observer(mode: OutputMode, verbose: bool) -> Arc<dyn Observer> {
    match mode {
        OutputMode::Json => Arc::new(JsonLines),
        // The tree draws on standard error; its lines are for a person only when both
        // streams reach the terminal.
        OutputMode::Human if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() => {
            Arc::new(TreeView::new(verbose))
        }
        OutputMode::Human => Arc::new(PlainLines::new(verbose)),
    }
}

/// How deep a step path is nested (`a` 0, `a[1].b` 1, `a[1].b.on_failure.c` 2).
pub fn depth(path: &str) -> usize {
    path.split('.')
        .filter(|s| *s != "on_failure" && *s != "on_abort" && *s != "prechecks")
        .count()
        .saturating_sub(1)
}

/// Formats milliseconds as `0.12s`, `12.3s`, `2m03s`.
pub fn duration(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}
