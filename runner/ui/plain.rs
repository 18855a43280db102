//! Plain lines for logs and pipes: one line per thing that happened, nothing redrawn.

use std::fmt::Write as _;

use runbook_journals::{Event, OperatorAction, Record, RunId, RunState, SkipReason};

use crate::engine::exec::describe_intent;
use crate::engine::log::Observer;
use crate::ui::{depth, duration, output};

/// Prints records as plain lines on stdout, a failed step's last lines of output under it
/// (every step's with `verbose`).
pub struct PlainLines {
    verbose: bool,
}

impl PlainLines {
    /// A new printer.
    pub fn new(verbose: bool) -> Self {
        Self { verbose }
    }
}

/// The lines of a step's output that follow its record's line: the last ones of a failed
/// attempt (of every attempt with `verbose`), indented under the step.
pub fn tail(record: &Record, verbose: bool) -> Vec<String> {
    let Some(path) = record.event.path() else {
        return Vec::new();
    };
    output::of_record(record, verbose)
        .map(|o| {
            output::tail(
                o,
                output::TAIL,
                &format!("{}       ", "  ".repeat(depth(path) + 1)),
            )
        })
        .unwrap_or_default()
}

/// An operator's comment as it follows what they did (`: why`), or nothing.
fn said(comment: Option<&str>) -> String {
    comment.map(|c| format!(": {c}")).unwrap_or_default()
}

/// The plain line for a record, if it deserves one.
pub fn line(run: RunId, record: &Record) -> Option<String> {
    let pad = |path: &str| "  ".repeat(depth(path) + 1);
    Some(match &record.event {
        Event::RunStarted(s) => {
            let params: Vec<String> = s
                .params
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            let mut line = format!("run {run}: {} started by {}", s.runbook, s.started_by);
            if !params.is_empty() {
                let _ = write!(line, " ({})", params.join(", "));
            }
            line
        }
        Event::SourceReloaded { .. } => {
            "  the run now follows the runbook files as they are on disk".into()
        }
        Event::Resumed { by, drift, orphans } => {
            let mut line = format!("run {run}: resumed by {by}");
            for text in crate::engine::orphans_stopped(orphans) {
                let _ = write!(line, "\n  warning: {text}");
            }
            for d in drift {
                let _ = write!(
                    line,
                    "\n  warning: {} was {} since the run started; the run continues with its pinned copy (resume --reload to adopt the change)",
                    crate::library::display_origin(&d.origin),
                    d.change
                );
            }
            line
        }
        Event::Precheck { id, ok: true, .. } => format!("  check  {id}"),
        Event::Precheck {
            id,
            ok: false,
            error,
        } => {
            format!("  FAILED precheck {id}: {}", error.as_deref().unwrap_or(""))
        }
        Event::StepStarted {
            path,
            intent,
            attempt,
            ..
        } => {
            let again = if *attempt > 1 {
                format!(" (attempt {attempt})")
            } else {
                String::new()
            };
            format!(
                "{}start  {path}{again}: {}",
                pad(path),
                describe_intent(intent)
            )
        }
        Event::StepSucceeded {
            path, duration_ms, ..
        } => {
            format!("{}ok     {path} ({})", pad(path), duration(*duration_ms))
        }
        Event::StepFailed {
            path,
            attempt,
            error,
            retry_at: Some(at),
            ..
        } => format!(
            "{}fail   {path}, attempt {attempt}: {error}; retrying at {}",
            pad(path),
            at.format("%H:%M:%S")
        ),
        Event::StepFailed {
            path,
            error,
            tolerated: true,
            ..
        } => {
            format!("{}fail   {path} (tolerated): {error}", pad(path))
        }
        Event::StepFailed { path, error, .. } => format!("{}FAILED {path}: {error}", pad(path)),
        Event::StepInterrupted { path, reason, .. } => {
            format!("{}stop   {path}: {reason}", pad(path))
        }
        Event::StepSkipped { path, reason } => {
            let why = match reason {
                SkipReason::When => "its `when` is false",
                SkipReason::Check => "its `check` says the effect is in place",
                SkipReason::Operator => "an operator skipped it",
            };
            format!("{}skip   {path} ({why})", pad(path))
        }
        Event::ItemsDecided { path, items } => {
            format!("{}items  {path}: {} items", pad(path), items.len())
        }
        Event::GateOpened { path, prompt, .. } => format!("{}gate   {path}: {prompt}", pad(path)),
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
            format!("{}{verdict} {path} by {by}{comment}", pad(path))
        }
        Event::GateExpired {
            path,
            expired_at,
            outcome,
        } => format!(
            "{}expired {path} at {} with nobody deciding (on_timeout: {outcome})",
            pad(path),
            expired_at.to_rfc3339()
        ),
        Event::TimerSet { path, wake_at } => {
            format!("{}sleep  {path} until {}", pad(path), wake_at.to_rfc3339())
        }
        Event::AttentionNeeded { path, detail } => {
            format!("  ATTENTION {path}: was in flight ({detail})")
        }
        Event::OperatorDecided {
            path,
            action,
            by,
            comment,
        } => {
            let action = match action {
                OperatorAction::Retry => "retry",
                OperatorAction::Skip => "skip",
            };
            format!(
                "  decided {path}: {action} by {by}{}",
                said(comment.as_deref())
            )
        }
        Event::RunReopened { by, comment } => {
            format!("run {run}: reopened by {by}{}", said(comment.as_deref()))
        }
        Event::Paused { by, comment } => {
            format!("run {run}: paused by {by}{}", said(comment.as_deref()))
        }
        Event::Unpaused { by, comment } => {
            format!("run {run}: unpaused by {by}{}", said(comment.as_deref()))
        }
        Event::AbortStarted { by, .. } => {
            format!("run {run}: aborted by {by}; running its cleanup steps")
        }
        Event::LossAccepted { kept, detail, by } => format!(
            "run {run}: {by} accepted the loss of its journal after record {kept} ({detail}); \
             the next step is treated as possibly started"
        ),
        // The step's own line said why it failed; the run's line does not say it again.
        Event::StateChanged {
            state: RunState::Failed,
            reason: Some(r),
        } if crate::engine::failed_step(r).is_some() => format!("run {run}: failed"),
        Event::StateChanged { state, reason } => match reason {
            Some(r) => format!("run {run}: {state}: {r}"),
            None => format!("run {run}: {state}"),
        },
    })
}

impl Observer for PlainLines {
    fn record(&self, run: RunId, record: &Record) {
        if let Some(line) = line(run, record) {
            let mut text = line + "\n";
            for more in tail(record, self.verbose) {
                text.push_str(&more);
                text.push('\n');
            }
            crate::ui::stdout::print_str(&text);
        }
    }

    fn progress(&self, _run: RunId, path: &str, note: &str) {
        crate::ui::stdout::outln!("{}wait   {path}: {note}", "  ".repeat(depth(path) + 1));
    }
}
