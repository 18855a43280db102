//! Reports over the journal: `status`, `history`, `log`.

use std::fmt::Write as _;

use runbook_journals::{Record, RunId, RunState, RunSummary};

use crate::engine::exec::describe_intent;
use crate::engine::view::{RunView, StepStatus};
use crate::ui::duration;

/// The state as users should read it: a run left `running` or `sleeping` by a process that
/// is gone is interrupted (whoever can read the journal holds it, so no process runs it).
pub fn effective_state(state: RunState) -> String {
    match state {
        RunState::Running => "interrupted (process gone)".into(),
        RunState::Sleeping => "sleeping (process gone: resume to wake it)".into(),
        other => other.to_string(),
    }
}

/// One line per run: id, runbook, state, started, by, reason.
pub fn table<'a>(runs: impl IntoIterator<Item = &'a RunSummary>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}  {:<24}  {:<16}  {:<20}  {:<10}  REASON",
        "RUN", "RUNBOOK", "STATE", "STARTED", "BY"
    );
    for r in runs {
        let state = match r.state {
            RunState::Running | RunState::Sleeping => "interrupted".to_owned(),
            s => s.to_string(),
        };
        let _ = writeln!(
            out,
            "{:<26}  {:<24}  {:<16}  {:<20}  {:<10}  {}",
            r.id,
            r.runbook,
            state,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.started_by,
            r.reason.as_deref().unwrap_or("")
        );
    }
    out
}

/// A run in detail: state, steps in order, open gate or needed decision with the commands.
pub fn detail(view: &RunView) -> String {
    let id = view.id;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {id}  {}  {}",
        view.started.runbook,
        effective_state(view.state)
    );
    let _ = writeln!(
        out,
        "  started {} by {}; last change {}",
        view.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        view.started.started_by,
        view.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(lock) = &view.started.lock {
        let held = if view.state.is_terminal() {
            "released"
        } else {
            "held"
        };
        let _ = writeln!(out, "  lock {lock} ({held})");
    }
    if let Some(reason) = &view.reason {
        let _ = writeln!(out, "  {reason}");
    }
    let mut steps: Vec<(&String, &crate::engine::view::StepView)> = view.steps.iter().collect();
    steps.sort_by_key(|(_, s)| s.first_seq);
    if !steps.is_empty() {
        let _ = writeln!(out, "  steps:");
    }
    for (path, step) in steps {
        let took = step.duration_ms.map(duration).unwrap_or_default();
        let extra = match &step.status {
            StepStatus::Failed { error, .. } => format!("  {error}"),
            StepStatus::RetryPending {
                retry_at, error, ..
            } => {
                format!("  {error}; next attempt at {}", retry_at.format("%H:%M:%S"))
            }
            StepStatus::Started { .. } | StepStatus::Interrupted { .. } => {
                format!("  {}", describe_intent(&step.intent))
            }
            _ => String::new(),
        };
        let attempts = if step.attempts > 1 {
            format!(" ({} attempts)", step.attempts)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "    {:<20} {path}{attempts} {took}{extra}",
            step.status.word()
        );
    }
    if let Some((path, gate)) = view.open_gate() {
        let _ = writeln!(out, "  gate `{path}` is open: {}", gate.prompt);
        if let Some(exp) = gate.expires_at {
            let _ = writeln!(out, "    expires {}", exp.format("%Y-%m-%d %H:%M:%S UTC"));
        }
        let _ = writeln!(out, "    approve: runbook approve {id} --comment \"…\"");
        let _ = writeln!(out, "    reject:  runbook reject {id} --comment \"…\"");
    }
    for (path, gate) in &view.gates {
        if let Some((approved, by, comment)) = &gate.decision {
            let verdict = if *approved { "approved" } else { "rejected" };
            let comment = comment
                .as_ref()
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            let _ = writeln!(out, "  gate `{path}` {verdict} by {by}{comment}");
        }
    }
    if view.state == RunState::NeedsAttention
        && let Some((path, detail)) = &view.attention
    {
        let _ = writeln!(
            out,
            "{}",
            crate::engine::attention_message(id, path, detail)
        );
    } else if matches!(
        view.state,
        RunState::Running | RunState::Interrupted | RunState::Sleeping
    ) || (view.state == RunState::Waiting && view.open_gate().is_none())
    {
        let _ = writeln!(out, "  continue with: runbook resume {id}");
    }
    out
}

/// A run as JSON, for `status RUN --output json` and the HTTP API: its state, its steps in
/// order (status, attempts, duration, what a step in flight was doing), its gates, and the
/// decision it waits for, if any.
pub fn run_json(view: &RunView) -> serde_json::Value {
    use serde_json::json;
    let mut steps: Vec<_> = view.steps.iter().collect();
    steps.sort_by_key(|(_, s)| s.first_seq);
    let steps: Vec<_> = steps
        .into_iter()
        .map(|(p, s)| {
            json!({
                "path": p,
                "kind": s.kind,
                "status": s.status.word(),
                "attempts": s.attempts,
                "duration_ms": s.duration_ms,
                "describe": describe_intent(&s.intent),
                "error": match &s.status {
                    StepStatus::Failed { error, .. } | StepStatus::RetryPending { error, .. } => Some(error.clone()),
                    _ => None,
                },
            })
        })
        .collect();
    let gates: Vec<_> = view
        .gates
        .iter()
        .map(|(p, g)| {
            json!({
                "path": p,
                "prompt": g.prompt,
                "expires_at": g.expires_at,
                "four_eyes": g.four_eyes,
                "decision": g.decision.as_ref().map(|(approved, by, comment)| json!({
                    "approved": approved, "by": by, "comment": comment,
                })),
            })
        })
        .collect();
    json!({
        "run": view.id.to_string(),
        "runbook": view.started.runbook,
        "state": view.state,
        "reason": view.reason,
        "started_by": view.started.started_by,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "trigger": view.started.trigger,
        "lock": view.started.lock,
        "steps": steps,
        "gates": gates,
        "open_gate": view.open_gate().map(|(p, g)| json!({ "path": p, "prompt": g.prompt, "four_eyes": g.four_eyes })),
        "attention": view.attention.as_ref().map(|(p, d)| json!({
            "path": p,
            "detail": d,
            "commands": crate::engine::attention_commands(view.id, p),
        })),
    })
}

/// One record as a log line: seq, time, what happened.
pub fn log_line(run: RunId, r: &Record) -> Option<String> {
    let text = crate::ui::plain::line(run, r)?;
    Some(format!(
        "{:>4}  {}  {}",
        r.seq,
        r.at.format("%Y-%m-%d %H:%M:%S%.3f"),
        text.trim_start()
    ))
}
