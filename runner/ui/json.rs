//! `--output json`: one JSON object per committed record, on stdout.

use std::io::Write as _;

use runbook_journals::{Record, RunId};
use serde_json::{Value, json};

use crate::engine::log::Observer;

/// Prints records as JSON lines.
pub struct JsonLines;

/// A record as a JSON line object: `{"run": …, "seq": …, "at": …, "event": …, …}`.
pub fn record_json(run: RunId, record: &Record) -> Value {
    let mut v = serde_json::to_value(record).expect("records serialize");
    if let Value::Object(map) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert("run".into(), json!(run.to_string()));
        out.extend(std::mem::take(map));
        return Value::Object(out);
    }
    v
}

impl Observer for JsonLines {
    fn record(&self, run: RunId, record: &Record) {
        let line = record_json(run, record).to_string();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}
