//! The live step tree on a terminal: a spinner per running step, a tick or cross with its
//! duration when it ends, and the latest poll of a wait.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use runbook_journals::{Event, Record, RunId, SkipReason};

use crate::engine::exec::describe_intent;
use crate::engine::log::Observer;
use crate::ui::{depth, duration};

/// Draws the step tree.
pub struct TreeView {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl TreeView {
    /// A new tree.
    pub fn new() -> Self {
        Self {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: String) {
        let _ = self.multi.println(text);
    }

    fn finish(&self, path: &str, text: String) {
        let bar = self.bars.lock().expect("tree poisoned").remove(path);
        match bar {
            Some(bar) => {
                bar.set_style(ProgressStyle::with_template("{msg}").expect("valid template"));
                bar.finish_with_message(text);
            }
            None => self.line(text),
        }
    }
}

impl Default for TreeView {
    fn default() -> Self {
        Self::new()
    }
}

fn pad(path: &str) -> String {
    "  ".repeat(depth(path) + 1)
}

impl Observer for TreeView {
    fn record(&self, run: RunId, record: &Record) {
        match &record.event {
            Event::RunStarted(s) => {
                self.line(format!(
                    "run {run}: {} (started by {})",
                    s.runbook, s.started_by
                ));
            }
            Event::StepStarted { path, intent, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{prefix}{spinner} {msg} {elapsed:.dim}")
                        .expect("valid template"),
                );
                bar.set_prefix(pad(path));
                bar.set_message(format!("{path}  {}", describe_intent(intent)));
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Some(old) = self
                    .bars
                    .lock()
                    .expect("tree poisoned")
                    .insert(path.clone(), bar)
                {
                    old.finish_and_clear();
                }
            }
            Event::StepSucceeded {
                path, duration_ms, ..
            } => {
                self.finish(
                    path,
                    format!("{}✓ {path}  {}", pad(path), duration(*duration_ms)),
                );
            }
            Event::StepFailed {
                path,
                error,
                retry_at: Some(at),
                ..
            } => {
                self.finish(
                    path,
                    format!(
                        "{}↻ {path}  {error}; retrying at {}",
                        pad(path),
                        at.format("%H:%M:%S")
                    ),
                );
            }
            Event::StepFailed {
                path,
                error,
                tolerated,
                ..
            } => {
                let mark = if *tolerated { "✗ (tolerated)" } else { "✗" };
                self.finish(path, format!("{}{mark} {path}  {error}", pad(path)));
            }
            Event::StepInterrupted { path, reason, .. } => {
                self.finish(path, format!("{}■ {path}  {reason}", pad(path)));
            }
            Event::StepSkipped { path, reason } => {
                let why = match reason {
                    SkipReason::When => "when is false",
                    SkipReason::Check => "already in place",
                    SkipReason::Operator => "skipped by an operator",
                };
                self.finish(path, format!("{}- {path}  ({why})", pad(path)));
            }
            Event::GateOpened { path, prompt, .. } => {
                if let Some(bar) = self.bars.lock().expect("tree poisoned").get(path) {
                    bar.set_message(format!("{path}  ⏸ {prompt}"));
                }
            }
            Event::GateDecided {
                path,
                approved,
                by,
                comment,
            } => {
                let verdict = if *approved { "approved" } else { "rejected" };
                let comment = comment
                    .as_ref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                self.line(format!("{}{verdict} by {by}{comment}", pad(path)));
            }
            Event::GateExpired { path, outcome, .. } => {
                self.line(format!(
                    "{}expired with nobody deciding (on_timeout: {outcome})",
                    pad(path)
                ));
            }
            Event::Resumed { by, drift, orphans } => {
                self.line(format!("run {run}: resumed by {by}"));
                for text in crate::engine::orphans_stopped(orphans) {
                    self.line(format!("  warning: {text}"));
                }
                for d in drift {
                    self.line(format!(
                        "  warning: {} was {} since the run started; the run continues with its pinned copy",
                        crate::library::display_origin(&d.origin),
                        d.change
                    ));
                }
            }
            Event::Precheck { id, ok, error } => {
                if *ok {
                    self.line(format!("  ✓ precheck {id}"));
                } else {
                    self.line(format!(
                        "  ✗ precheck {id}  {}",
                        error.as_deref().unwrap_or("")
                    ));
                }
            }
            Event::StateChanged { .. }
            | Event::ItemsDecided { .. }
            | Event::TimerSet { .. }
            | Event::AttentionNeeded { .. }
            | Event::OperatorDecided { .. }
            | Event::RunReopened { .. }
            | Event::Paused { .. }
            | Event::Unpaused { .. }
            | Event::AbortStarted { .. }
            | Event::SourceReloaded { .. } => {}
            Event::LossAccepted { kept, by, .. } => {
                self.line(format!(
                    "  the journal's records after {kept} were lost; {by} accepted it"
                ));
            }
        }
    }

    fn progress(&self, _run: RunId, path: &str, note: &str) {
        if let Some(bar) = self.bars.lock().expect("tree poisoned").get(path) {
            bar.set_message(format!("{path}  {note}"));
        }
    }
}
