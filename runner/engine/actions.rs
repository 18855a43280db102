//! What an operator may do to a run as it stands — the `actions` of `GET /runs/{id}` and of
//! `status RUN --output json`, and so the buttons of the run's web page.
//!
//! The contract: an action is listed exactly when the engine would take it up, apart from
//! what changes from one moment to the next (a lock another run took meanwhile, a process
//! still winding down, a secret the holder must be given again) — those the call itself
//! refuses, with the reason. It is decided from the run's records alone ([`of_view`]), by one
//! pure function of its state and the steps a decision would name ([`allowed`]), so that the
//! page, the API and the command line agree: pause where [`super::refuse_pause`] lets it,
//! abort where the state machine reaches `aborted`, retry and skip of the step that failed
//! (never of a decided gate: a verdict is not retried) or of the step that needs a decision,
//! approve and reject of each open gate, unpause of a paused run.

use runbook_journals::RunState;

use crate::engine::view::RunView;
use crate::wire::{ActionKind, RunAction};

/// What the actions depend on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Standing<'a> {
    /// The run's state.
    pub state: Option<RunState>,
    /// The gates waiting for a verdict.
    pub open_gates: Vec<&'a str>,
    /// The step whose failure ended the run, when it can be taken up again there.
    pub failed_step: Option<&'a str>,
    /// The step that needs an operator's decision.
    pub attention: Option<&'a str>,
}

/// The actions a run in `standing` allows, in the order a page shows them.
pub fn allowed(standing: &Standing<'_>) -> Vec<RunAction> {
    use RunState::{
        Aborted, Failed, Interrupted, NeedsAttention, Paused, Running, Sleeping, Succeeded, Waiting,
    };
    let Some(state) = standing.state else {
        return Vec::new();
    };
    let on = |action, step: Option<&str>| RunAction {
        action,
        step: step.map(str::to_owned),
    };
    let decide = |step: Option<&str>| match step {
        Some(path) => vec![
            on(ActionKind::Retry, Some(path)),
            on(ActionKind::Skip, Some(path)),
        ],
        None => Vec::new(),
    };
    let mut out = Vec::new();
    match state {
        Waiting => {
            for gate in &standing.open_gates {
                out.push(on(ActionKind::Approve, Some(gate)));
                out.push(on(ActionKind::Reject, Some(gate)));
            }
        }
        Running | Sleeping | Interrupted => out.push(on(ActionKind::Pause, None)),
        Paused => out.push(on(ActionKind::Unpause, None)),
        NeedsAttention => out.extend(decide(standing.attention)),
        Failed => out.extend(decide(standing.failed_step)),
        Succeeded | Aborted => {}
    }
    if !state.is_terminal() {
        out.push(on(ActionKind::Abort, None));
    }
    out
}

/// The actions run `view` allows.
pub fn of_view(view: &RunView) -> Vec<RunAction> {
    let failed = view.failed();
    allowed(&Standing {
        state: Some(view.state),
        open_gates: view.open_gates().into_iter().map(|(p, _)| p).collect(),
        failed_step: failed
            .last()
            .copied()
            .filter(|path| !is_verdict(view, path)),
        attention: view.attention.as_ref().map(|(p, _)| p.as_str()),
    })
}

/// Whether step `path` of `view` is a gate — whose failure is a verdict (a rejection, an
/// expiry), which taking the run up again never re-decides.
pub fn is_verdict(view: &RunView, path: &str) -> bool {
    view.step(path)
        .and_then(|s| s.kind.as_deref())
        .is_some_and(|k| k == "gate")
        || view.gates.get(path).is_some_and(|g| g.decision.is_some())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use runbook_journals::{Event, GateTimeout, Record, RunId, RunStarted};
    use serde_json::json;

    use super::*;

    const ALL: [RunState; 9] = [
        RunState::Running,
        RunState::Waiting,
        RunState::Sleeping,
        RunState::Interrupted,
        RunState::NeedsAttention,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Aborted,
        RunState::Paused,
    ];

    /// The actions as `verb` or `verb:step` words, for compact tables.
    fn words(actions: &[RunAction]) -> String {
        actions
            .iter()
            .map(|a| {
                let verb = serde_json::to_value(a.action).unwrap();
                let verb = verb.as_str().unwrap().to_owned();
                match &a.step {
                    Some(step) => format!("{verb}:{step}"),
                    None => verb,
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn each_state_allows_what_its_table_row_says() {
        let gates = vec!["confirm", "roll[1].ok"];
        let rows: [(RunState, &str); 9] = [
            (RunState::Running, "pause abort"),
            (RunState::Sleeping, "pause abort"),
            (RunState::Interrupted, "pause abort"),
            (
                RunState::Waiting,
                "approve:confirm reject:confirm approve:roll[1].ok reject:roll[1].ok abort",
            ),
            (RunState::Paused, "unpause abort"),
            (RunState::NeedsAttention, "retry:work skip:work abort"),
            (RunState::Failed, "retry:flaky skip:flaky"),
            (RunState::Succeeded, ""),
            (RunState::Aborted, ""),
        ];
        for (state, want) in rows {
            let standing = Standing {
                state: Some(state),
                open_gates: if state == RunState::Waiting {
                    gates.clone()
                } else {
                    Vec::new()
                },
                failed_step: (state == RunState::Failed).then_some("flaky"),
                attention: (state == RunState::NeedsAttention).then_some("work"),
            };
            assert_eq!(words(&allowed(&standing)), want, "{state}");
        }
    }

    #[test]
    fn without_a_step_to_name_there_is_nothing_to_retry_or_approve() {
        let rows: [(RunState, &str); 4] = [
            // Failed before any step failed (a precheck, a lock), or at a rejected gate.
            (RunState::Failed, ""),
            // Needs attention for a journal loss it has not been told about yet.
            (RunState::NeedsAttention, "abort"),
            // Waiting while its gate expired (the run is about to fail by itself).
            (RunState::Waiting, "abort"),
            (RunState::Running, "pause abort"),
        ];
        for (state, want) in rows {
            let standing = Standing {
                state: Some(state),
                ..Standing::default()
            };
            assert_eq!(words(&allowed(&standing)), want, "{state}");
        }
        assert_eq!(words(&allowed(&Standing::default())), "");
    }

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            seq,
            at: Utc::now(),
            event,
        }
    }

    fn started() -> Event {
        Event::RunStarted(RunStarted {
            runbook: "t".into(),
            params: serde_json::Map::new(),
            sources: vec![],
            links: BTreeMap::new(),
            lock: None,
            started_by: "me".into(),
            engine_version: "0".into(),
            trigger: None,
        })
    }

    fn state(state: RunState) -> Event {
        Event::StateChanged {
            state,
            reason: None,
        }
    }

    fn view(events: Vec<Event>) -> RunView {
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| rec(i as u64 + 1, e))
            .collect();
        RunView::from_records(RunId::new(), &records).expect("a valid history")
    }

    fn step(path: &str, kind: &str) -> Event {
        Event::StepStarted {
            path: path.into(),
            kind: kind.into(),
            attempt: 1,
            idempotent: false,
            intent: json!({}),
        }
    }

    fn failed(path: &str) -> Event {
        Event::StepFailed {
            path: path.into(),
            attempt: 1,
            error: "exit 1".into(),
            output: None,
            retry_at: None,
            duration_ms: 1,
            tolerated: false,
        }
    }

    #[test]
    fn pause_and_abort_are_offered_exactly_where_the_engine_takes_them() {
        for s in ALL {
            let mut events = vec![started()];
            if s != RunState::Running {
                events.push(state(s));
            }
            let v = view(events);
            let actions = of_view(&v);
            let offers = |kind| actions.iter().any(|a| a.action == kind);
            assert_eq!(
                offers(ActionKind::Pause),
                crate::engine::refuse_pause(&v).is_ok(),
                "pause in {s}"
            );
            assert_eq!(
                offers(ActionKind::Abort),
                crate::engine::view::transition_allowed(s, RunState::Aborted),
                "abort in {s}"
            );
            assert_eq!(offers(ActionKind::Unpause), s == RunState::Paused);
        }
    }

    #[test]
    fn a_failed_run_is_taken_up_at_the_step_that_failed_not_at_its_on_failure_steps() {
        let v = view(vec![
            started(),
            step("first", "shell"),
            failed("first"),
            step("on_failure.tell", "shell"),
            failed("on_failure.tell"),
            state(RunState::Failed),
        ]);
        assert_eq!(words(&of_view(&v)), "retry:first skip:first");
    }

    #[test]
    fn a_rejected_gate_is_a_verdict_not_a_failure_to_retry() {
        let mut events = vec![
            started(),
            step("confirm", "gate"),
            Event::GateOpened {
                path: "confirm".into(),
                prompt: "go?".into(),
                expires_at: None,
                four_eyes: false,
                approvals: 1,
                approvers: vec![],
                on_timeout: GateTimeout::Fail,
            },
            state(RunState::Waiting),
        ];
        assert_eq!(
            words(&of_view(&view(events.clone()))),
            "approve:confirm reject:confirm abort",
            "an open gate is decided"
        );
        events.extend([
            Event::GateDecided {
                path: "confirm".into(),
                approved: false,
                by: "bob".into(),
                comment: None,
            },
            failed("confirm"),
            state(RunState::Failed),
        ]);
        let rejected = view(events);
        assert_eq!(rejected.failed(), ["confirm"]);
        assert_eq!(words(&of_view(&rejected)), "");
        let early = view(vec![started(), state(RunState::Failed)]);
        assert_eq!(words(&of_view(&early)), "", "failed before any step");
    }

    #[test]
    fn a_step_that_needs_attention_is_retried_or_skipped_by_its_path() {
        let v = view(vec![
            started(),
            step("roll[0].restart", "shell"),
            Event::AttentionNeeded {
                path: "roll[0].restart".into(),
                detail: "systemctl restart".into(),
            },
            state(RunState::NeedsAttention),
        ]);
        assert_eq!(
            words(&of_view(&v)),
            "retry:roll[0].restart skip:roll[0].restart abort"
        );
    }
}
