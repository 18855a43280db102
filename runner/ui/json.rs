//! `--output json`: one JSON object per committed record, on stdout.

use std::io::Write as _;

use runbook_journals::{Record, RunId};

use crate::engine::log::Observer;

/// Prints records as JSON lines.
pub struct JsonLines;

/// A record as a JSON line: `{"run": …, "seq": …, "at": …, "event": …, …}`
/// ([`crate::wire::RunRecord`]).
pub fn record_line(run: RunId, record: &Record) -> String {
    serde_json::to_string(&crate::wire::RunRecord { run, record }).expect("records serialize")
}

impl Observer for JsonLines {
    fn record(&self, run: RunId, record: &Record) {
        let line = record_line(run, record);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
