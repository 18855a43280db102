//! Reports over the journal: `status`, `history`, `log`.

use std::fmt::Write as _;

use runbook_journals::{Record, RunId, RunState};

use crate::engine::exec::describe_intent;
use crate::engine::view::{RunView, StepStatus};
use crate::ui::{duration, output};
use crate::wire::ListedRun;

/// The state as users should read it: a run left `running` or `sleeping` by a process that
/// is gone is interrupted. `active` says the process holding the journal executes the run;
/// otherwise none does (the journal's holder tells, and with no holder nobody runs anything).
pub fn effective_state(state: RunState, active: bool) -> String {
    match state {
        RunState::Running | RunState::Sleeping if active => state.to_string(),
        RunState::Running => "interrupted (process gone)".into(),
        RunState::Sleeping => "sleeping (process gone: resume to wake it)".into(),
        other => other.to_string(),
    }
}

/// One line per run: id, runbook, state, started, by, reason.
pub fn table<'a>(runs: impl IntoIterator<Item = &'a ListedRun>) -> String {
    let runs: Vec<&ListedRun> = runs.into_iter().collect();
    // On a journal shared by several executors, which one owns each run.
    let owners = runs.iter().any(|r| r.owner.is_some());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<26}  {:<24}  {:<16}  {:<20}  {:<10}  ",
        "RUN", "RUNBOOK", "STATE", "STARTED", "BY"
    );
    if owners {
        let _ = write!(out, "{:<24}  ", "OWNER");
    }
    let _ = writeln!(out, "REASON");
    for ListedRun {
        summary: r,
        active,
        owner,
    } in runs
    {
        let state = match r.state {
            RunState::Running | RunState::Sleeping if *active => r.state.to_string(),
            RunState::Running | RunState::Sleeping => "interrupted".to_owned(),
            s => s.to_string(),
        };
        let _ = write!(
            out,
            "{:<26}  {:<24}  {:<16}  {:<20}  {:<10}  ",
            r.id,
            r.runbook,
            state,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.started_by,
        );
        if owners {
            let _ = write!(out, "{:<24}  ", owner.as_deref().unwrap_or("-"));
        }
        let _ = writeln!(out, "{}", r.reason.as_deref().unwrap_or(""));
    }
    out
}

/// A run in detail: state, steps in order (a failed step's last lines of output under it,
/// every step's with `verbose`), open gate or needed decision with the commands.
/// `active`: the process holding the journal executes it right now.
pub fn detail(view: &RunView, active: bool, verbose: bool) -> String {
    let id = view.id;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {id}  {}  {}",
        view.started.runbook,
        effective_state(view.state, active)
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
        let shown = match &step.status {
            StepStatus::Failed { output, .. } => output.as_ref(),
            StepStatus::Succeeded { output } if verbose => Some(output),
            _ => None,
        };
        for line in shown
            .map(|o| output::tail(o, output::TAIL, "        "))
            .unwrap_or_default()
        {
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some((path, gate)) = view.open_gate() {
        let _ = writeln!(out, "  gate `{path}` is open: {}", gate.prompt);
        if let Some(exp) = gate.expires_at {
            let _ = writeln!(
                out,
                "    expires {} (then on_timeout: {})",
                exp.format("%Y-%m-%d %H:%M:%S UTC"),
                gate.on_timeout
            );
        }
        if gate.approvals > 1 {
            let names: Vec<&str> = gate
                .approved_by
                .iter()
                .map(|(b, _, _)| b.as_str())
                .collect();
            let _ = writeln!(
                out,
                "    approvals: {} of {}{}",
                names.len(),
                gate.approvals,
                if names.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names.join(", "))
                }
            );
        }
        if !gate.approvers.is_empty() {
            let _ = writeln!(out, "    approvers: {}", gate.approvers.join(", "));
        }
        let runbook = crate::ui::hint::runbook();
        let _ = writeln!(out, "    approve: {runbook} approve {id} --comment \"…\"");
        let _ = writeln!(out, "    reject:  {runbook} reject {id} --comment \"…\"");
    }
    for (path, gate) in &view.gates {
        if let (None, Some(outcome)) = (&gate.decision, gate.expired) {
            let _ = writeln!(
                out,
                "  gate `{path}` expired with nobody deciding (on_timeout: {outcome})"
            );
        }
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
    } else if !active
        && (matches!(
            view.state,
            RunState::Running | RunState::Interrupted | RunState::Sleeping
        ) || (view.state == RunState::Waiting && view.open_gate().is_none()))
    {
        let _ = writeln!(
            out,
            "  continue with: {} resume {id}",
            crate::ui::hint::runbook()
        );
    } else if view.state == RunState::Paused {
        let rb = crate::ui::hint::runbook();
        let _ = writeln!(out, "  continue with: {rb} unpause {id} --comment \"…\"");
        let _ = writeln!(out, "  or end it:     {rb} abort {id}");
    } else if view.state == RunState::Failed
        && let Some(path) = view.failed().last()
    {
        let [retry, skip] = crate::engine::attention_commands(id, path);
        let _ = writeln!(out, "  take it up again once the cause is fixed:");
        let _ = writeln!(out, "    {retry} --comment \"…\"   # run it again");
        let _ = writeln!(out, "    {skip} --comment \"…\"    # treat it as done");
    }
    out
}

/// A run as the API and `status RUN --output json` show it: its state, its steps in order
/// (status, attempts, duration, what a step in flight was doing), its gates, and the decision
/// it waits for, if any.
pub fn run_detail(view: &RunView) -> crate::wire::RunDetail {
    use crate::wire::{Attention, GateDetail, OpenGate, RunDetail, StepDetail, Verdict};
    let mut steps: Vec<_> = view.steps.iter().collect();
    steps.sort_by_key(|(_, s)| s.first_seq);
    let steps = steps
        .into_iter()
        .map(|(p, s)| StepDetail {
            path: p.clone(),
            kind: s.kind.clone(),
            status: s.status.word().to_owned(),
            attempts: s.attempts,
            duration_ms: s.duration_ms,
            describe: describe_intent(&s.intent),
            error: match &s.status {
                StepStatus::Failed { error, .. } | StepStatus::RetryPending { error, .. } => {
                    Some(error.clone())
                }
                _ => None,
            },
        })
        .collect();
    let gates = view
        .gates
        .iter()
        .map(|(p, g)| GateDetail {
            path: p.clone(),
            prompt: g.prompt.clone(),
            expires_at: g.expires_at,
            four_eyes: g.four_eyes,
            decision: g.decision.as_ref().map(|(approved, by, comment)| Verdict {
                approved: *approved,
                by: by.clone(),
                comment: comment.clone(),
            }),
            approvals: g.approvals,
            approvers: g.approvers.clone(),
            approved_by: g.approved_by.iter().map(|(b, _, _)| b.clone()).collect(),
            on_timeout: g.on_timeout,
            expired: g.expired,
        })
        .collect();
    RunDetail {
        run: view.id,
        runbook: view.started.runbook.clone(),
        state: view.state,
        reason: view.reason.clone(),
        started_by: view.started.started_by.clone(),
        created_at: view.created_at,
        updated_at: view.updated_at,
        trigger: view.started.trigger.clone(),
        lock: view.started.lock.clone(),
        steps,
        gates,
        open_gate: view.open_gate().map(|(p, g)| OpenGate {
            path: p.to_owned(),
            prompt: g.prompt.clone(),
            four_eyes: g.four_eyes,
            expires_at: g.expires_at,
            on_timeout: g.on_timeout,
            approvals: g.approvals,
            approvers: g.approvers.clone(),
            approved_by: g.approved_by.iter().map(|(b, _, _)| b.clone()).collect(),
        }),
        happened: Vec::new(),
        attention: view.attention.as_ref().map(|(p, d)| Attention {
            path: p.clone(),
            detail: d.clone(),
            commands: crate::engine::attention_commands(view.id, p).to_vec(),
        }),
        active: None,
        actions: crate::engine::actions::of_view(view),
        owner: None,
    }
}

/// One record as a log line: seq, time, what happened; a failed attempt's last lines of
/// output under it.
pub fn log_line(run: RunId, r: &Record) -> Option<String> {
    let text = crate::ui::plain::line(run, r)?;
    let mut line = format!(
        "{:>4}  {}  {}",
        r.seq,
        r.at.format("%Y-%m-%d %H:%M:%S%.3f"),
        text.trim_start()
    );
    if let Some(o) = output::of_record(r, false) {
        for more in output::tail(o, output::TAIL, &" ".repeat(33)) {
            let _ = write!(line, "\n{more}");
        }
    }
    Some(line)
}
