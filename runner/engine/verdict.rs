//! A person's verdict on a gate, judged against the gate as journaled (its approvals so far,
//! its approvers, four eyes, its expiry) by [`decide::verdict`], and the words of a refusal.
//! A refused verdict journals nothing: the caller gets the message (the API answers 409, the
//! command line exits 2) and the run stays exactly as it was.

use chrono::{DateTime, Utc};
use runbook_journals::{GateTimeout, RunId};

use crate::engine::decide::{self, Refusal};
use crate::engine::view::{GateView, RunView};

/// Who has approved `gate` so far.
pub(crate) fn approved_by(gate: &GateView) -> Vec<&str> {
    gate.approved_by
        .iter()
        .map(|(b, _, _)| b.as_str())
        .collect()
}

/// What a verdict on `gate` is judged from, as journaled; `approved_by` is [`approved_by`].
pub(crate) fn facts<'a>(
    gate: &'a GateView,
    approved_by: &'a [&'a str],
    starter: &'a str,
) -> decide::GateFacts<'a> {
    decide::GateFacts {
        four_eyes: gate.four_eyes,
        approvals: gate.approvals,
        approvers: &gate.approvers,
        approved_by,
        decided: gate.decision.as_ref().map(|d| d.0),
        expired: gate.expired.is_some(),
        expires_at: gate.expires_at,
        starter,
    }
}

/// Whether `who`'s verdict on the open gate `path` is accepted at `now`; the refusal's
/// message if not.
pub(crate) fn judge(
    id: RunId,
    path: &str,
    gate: &GateView,
    view: &RunView,
    who: &str,
    approved: bool,
    now: DateTime<Utc>,
) -> Result<decide::Counted, String> {
    let approved_by = approved_by(gate);
    let facts = facts(gate, &approved_by, &view.started.started_by);
    decide::verdict(&facts, who, approved, now).map_err(|refusal| {
        let who = decide::identity(who);
        match refusal {
            Refusal::Decided { .. } | Refusal::Expired { .. } => closed(id, path, gate, view),
            Refusal::NotAnApprover => format!(
                "{who} may not decide gate `{path}` of run {id}: only {} may",
                gate.approvers.join(", ")
            ),
            Refusal::Starter => format!(
                "gate `{path}` needs a second person: {who} started run {id} and cannot approve it"
            ),
            Refusal::Twice { have, need } => format!(
                "{who} has approved gate `{path}` of run {id} already; an approval counts once per person ({have} of {need} approvals so far: {})",
                approved_by.join(", ")
            ),
        }
    })
}

/// Why a gate that is no longer open cannot be decided: who decided it, or when it expired
/// and what that meant.
pub(crate) fn closed(id: RunId, path: &str, gate: &GateView, view: &RunView) -> String {
    if let Some((approved, by, _)) = &gate.decision {
        let verdict = if *approved { "approved" } else { "rejected" };
        return format!(
            "gate `{path}` of run {id} was decided already: {verdict} by {by} (the run is {})",
            view.state
        );
    }
    let when = gate.expires_at.map_or_else(String::new, |t| {
        format!(
            " at {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    });
    match gate.expired {
        Some(outcome) => {
            let meant = match outcome {
                GateTimeout::Approve => "approved it",
                GateTimeout::Reject => "rejected it",
                GateTimeout::Fail => "failed it",
            };
            format!(
                "gate `{path}` of run {id} expired{when} with nobody deciding, which {meant} (on_timeout: {outcome}); it can no longer be decided (the run is {})",
                view.state
            )
        }
        None if gate.expires_at.is_some() => format!(
            "gate `{path}` of run {id} expired{when} with nobody deciding; it can no longer be decided (its on_timeout: {} applies when `serve` wakes the run, or on `runbook resume {id}`)",
            gate.on_timeout
        ),
        None => format!(
            "gate `{path}` of run {id} is not open (the run is {})",
            view.state
        ),
    }
}
