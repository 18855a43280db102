//! A run as its journal tells it: the state machine folded over the run's records.
//!
//! Each record is a transition; [`RunView::apply`] checks it is allowed from the current state
//! (a step cannot succeed before it started, a finished run cannot change) and refuses it
//! otherwise, naming the record. The engine replays this view on resume; `status` and `log`
//! show it.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use runbook_journals::{
    Event, GateTimeout, OperatorAction, Record, RunId, RunStarted, RunState, SkipReason, SourceFile,
};
use serde_json::Value;

/// The kinds of steps without an external effect of their own.
const CONTROL_KINDS: &[&str] = &[
    "script", "wait", "gate", "sleep", "foreach", "parallel", "call",
];

/// Where a step stands.
#[derive(Clone, Debug, PartialEq)]
pub enum StepStatus {
    /// An attempt started and nothing about its end is known (in flight, or the process died).
    Started {
        /// The attempt.
        attempt: u32,
    },
    /// An attempt failed; the next is due at `retry_at`.
    RetryPending {
        /// The attempt that failed.
        attempt: u32,
        /// When the next attempt is due.
        retry_at: DateTime<Utc>,
        /// Why it failed.
        error: String,
    },
    /// We stopped the attempt (Ctrl-C); its effect may be partial.
    Interrupted {
        /// The attempt.
        attempt: u32,
        /// How it ended.
        reason: String,
    },
    /// The step produced an output.
    Succeeded {
        /// The output (redacted).
        output: Value,
    },
    /// The step failed for good.
    Failed {
        /// Why.
        error: String,
        /// What it produced.
        output: Option<Value>,
        /// The run went on regardless (`continue_on_error`).
        tolerated: bool,
    },
    /// The step did not run.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
}

impl StepStatus {
    /// Whether the step is done, one way or another.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::Skipped { .. }
        )
    }

    /// A short word for output.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Started { .. } => "running",
            Self::RetryPending { .. } => "retrying",
            Self::Interrupted { .. } => "interrupted",
            Self::Succeeded { .. } => "ok",
            Self::Failed {
                tolerated: true, ..
            } => "failed (tolerated)",
            Self::Failed { .. } => "failed",
            Self::Skipped { .. } => "skipped",
        }
    }
}

/// One step as journaled.
#[derive(Clone, Debug, PartialEq)]
pub struct StepView {
    /// The kind recorded when it first started (or `None` if it was only ever skipped).
    pub kind: Option<String>,
    /// Its state.
    pub status: StepStatus,
    /// Whether the last attempt was idempotent.
    pub idempotent: bool,
    /// The highest attempt number started.
    pub attempts: u32,
    /// The last attempt's intent (rendered spec, redacted).
    pub intent: Value,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached its current status.
    pub updated_at: DateTime<Utc>,
    /// Wall time of the last finished attempt.
    pub duration_ms: Option<u64>,
    /// The seq of the record that first mentioned it.
    pub first_seq: u64,
}

/// A gate as journaled.
#[derive(Clone, Debug, PartialEq)]
pub struct GateView {
    /// The rendered prompt.
    pub prompt: String,
    /// When it fails by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// The verdict, once given: approved, by, comment.
    pub decision: Option<(bool, String, Option<String>)>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// The approver must not be the person who started the run.
    pub four_eyes: bool,
    /// Distinct people who must approve.
    pub approvals: u32,
    /// Who may decide; empty means anyone.
    pub approvers: Vec<String>,
    /// What its expiry means.
    pub on_timeout: GateTimeout,
    /// The approvals given so far, in order: who, their comment, when.
    pub approved_by: Vec<(String, Option<String>, DateTime<Utc>)>,
    /// Set once its expiry was journaled: what the expiry meant.
    pub expired: Option<GateTimeout>,
}

impl GateView {
    /// Whether a person's approval would still count: nobody rejected it, it has not
    /// expired (as journaled) and it lacks approvals.
    pub fn undecided(&self) -> bool {
        self.decision.is_none() && self.expired.is_none()
    }
}

/// The whole run as journaled.
#[derive(Clone, Debug)]
pub struct RunView {
    /// The run's id.
    pub id: RunId,
    /// Its first event.
    pub started: RunStarted,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its current state.
    pub state: RunState,
    /// Why it is in that state.
    pub reason: Option<String>,
    /// Steps by path.
    pub steps: HashMap<String, StepView>,
    /// Paths in the order they first appeared (the replay order), with the kind recorded.
    pub order: Vec<(String, Option<String>)>,
    /// Items of every `foreach` that started.
    pub items: HashMap<String, Vec<Value>>,
    /// Gates by path.
    pub gates: BTreeMap<String, GateView>,
    /// Wake times of durable timers by path.
    pub timers: HashMap<String, DateTime<Utc>>,
    /// The step that needs an operator's decision, with what it was doing.
    pub attention: Option<(String, String)>,
    /// Operator decisions not yet acted on.
    pub decisions: HashMap<String, OperatorAction>,
    /// The files the run is pinned to now.
    pub sources: Vec<SourceFile>,
    /// How `call` targets resolve.
    pub links: BTreeMap<String, String>,
    /// Set when an operator accepted the loss of the journal after this record and no step
    /// has been journaled since: the step the run reaches next may have started unrecorded.
    pub loss_after: Option<u64>,
    /// The seq of the last record.
    pub last_seq: u64,
    /// When the last record was written.
    pub updated_at: DateTime<Utc>,
}

/// A record that does not fit the run's state.
#[derive(Debug, thiserror::Error)]
#[error("journal record {seq} ({event}) does not fit the run's state: {detail}")]
pub struct TransitionError {
    /// The record.
    pub seq: u64,
    /// Its event name.
    pub event: &'static str,
    /// What is wrong.
    pub detail: String,
}

impl RunView {
    /// Folds a run's records, checking every transition.
    pub fn from_records(id: RunId, records: &[Record]) -> Result<Self, TransitionError> {
        let first = records.first().ok_or_else(|| TransitionError {
            seq: 1,
            event: "none",
            detail: "the run has no records".into(),
        })?;
        let Event::RunStarted(started) = &first.event else {
            return Err(TransitionError {
                seq: first.seq,
                event: first.event.name(),
                detail: "a run must begin with run_started".into(),
            });
        };
        let mut view = Self {
            id,
            sources: started.sources.clone(),
            links: started.links.clone(),
            started: started.clone(),
            created_at: first.at,
            state: RunState::Running,
            reason: None,
            steps: HashMap::new(),
            order: Vec::new(),
            items: HashMap::new(),
            gates: BTreeMap::new(),
            timers: HashMap::new(),
            attention: None,
            decisions: HashMap::new(),
            loss_after: None,
            last_seq: first.seq,
            updated_at: first.at,
        };
        for record in &records[1..] {
            view.apply(record)?;
        }
        Ok(view)
    }

    /// The step at `path`.
    pub fn step(&self, path: &str) -> Option<&StepView> {
        self.steps.get(path)
    }

    fn fail(record: &Record, detail: impl Into<String>) -> TransitionError {
        TransitionError {
            seq: record.seq,
            event: record.event.name(),
            detail: detail.into(),
        }
    }

    /// Applies one more record.
    pub fn apply(&mut self, record: &Record) -> Result<(), TransitionError> {
        let reopens =
            self.state == RunState::Failed && matches!(record.event, Event::RunReopened { .. });
        if self.state.is_terminal() && !reopens {
            return Err(Self::fail(
                record,
                format!("the run already ended ({})", self.state),
            ));
        }
        let at = record.at;
        // The suspicion after a journal loss lasts until an effect starts or is skipped by
        // its check or an operator: control steps and `when` decisions are re-taken freely.
        if match &record.event {
            Event::StepStarted { kind, .. } => !CONTROL_KINDS.contains(&kind.as_str()),
            Event::StepSkipped { reason, .. } => *reason != SkipReason::When,
            _ => false,
        } {
            self.loss_after = None;
        }
        match &record.event {
            Event::RunStarted(_) => return Err(Self::fail(record, "the run started twice")),
            Event::SourceReloaded { sources, links } => {
                self.sources.clone_from(sources);
                self.links.clone_from(links);
            }
            Event::Resumed { .. } => {
                self.attention = None;
            }
            Event::StepStarted {
                path,
                kind,
                attempt,
                idempotent,
                intent,
            } => {
                let seq = record.seq;
                let entry = self.steps.entry(path.clone()).or_insert_with(|| StepView {
                    kind: None,
                    status: StepStatus::Started { attempt: 0 },
                    idempotent: *idempotent,
                    attempts: 0,
                    intent: Value::Null,
                    started_at: Some(at),
                    updated_at: at,
                    duration_ms: None,
                    first_seq: seq,
                });
                if entry.first_seq == seq {
                    self.order.push((path.clone(), Some(kind.clone())));
                } else if matches!(
                    entry.status,
                    StepStatus::Skipped { .. } | StepStatus::Failed { .. }
                ) {
                    return Err(Self::fail(
                        record,
                        format!(
                            "step `{path}` started again after it was {}",
                            entry.status.word()
                        ),
                    ));
                }
                if let Some(k) = &entry.kind
                    && k != kind
                {
                    return Err(Self::fail(
                        record,
                        format!("step `{path}` was a {k} step and is now a {kind} step"),
                    ));
                }
                entry.kind = Some(kind.clone());
                entry.status = StepStatus::Started { attempt: *attempt };
                entry.attempts = entry.attempts.max(*attempt);
                entry.idempotent = *idempotent;
                entry.intent = intent.clone();
                entry.updated_at = at;
                entry.started_at.get_or_insert(at);
                self.decisions.remove(path);
            }
            Event::StepSucceeded {
                path,
                output,
                duration_ms,
                ..
            } => {
                let step = self.started(record, path)?;
                step.status = StepStatus::Succeeded {
                    output: output.clone(),
                };
                step.duration_ms = Some(*duration_ms);
                step.updated_at = at;
            }
            Event::StepFailed {
                path,
                attempt,
                error,
                output,
                retry_at,
                duration_ms,
                tolerated,
            } => {
                let step = self.started(record, path)?;
                step.status = match retry_at {
                    Some(when) => StepStatus::RetryPending {
                        attempt: *attempt,
                        retry_at: *when,
                        error: error.clone(),
                    },
                    None => StepStatus::Failed {
                        error: error.clone(),
                        output: output.clone(),
                        tolerated: *tolerated,
                    },
                };
                step.duration_ms = Some(*duration_ms);
                step.updated_at = at;
            }
            Event::StepInterrupted {
                path,
                attempt,
                reason,
            } => {
                let step = self.started(record, path)?;
                step.status = StepStatus::Interrupted {
                    attempt: *attempt,
                    reason: reason.clone(),
                };
                step.updated_at = at;
            }
            Event::StepSkipped { path, reason } => {
                let seq = record.seq;
                let entry = self.steps.entry(path.clone()).or_insert_with(|| StepView {
                    kind: None,
                    status: StepStatus::Skipped {
                        reason: reason.clone(),
                    },
                    idempotent: true,
                    attempts: 0,
                    intent: Value::Null,
                    started_at: None,
                    updated_at: at,
                    duration_ms: None,
                    first_seq: seq,
                });
                if entry.first_seq == seq {
                    self.order.push((path.clone(), None));
                } else if entry.status.is_final() {
                    return Err(Self::fail(
                        record,
                        format!(
                            "step `{path}` was skipped after it was {}",
                            entry.status.word()
                        ),
                    ));
                }
                entry.status = StepStatus::Skipped {
                    reason: reason.clone(),
                };
                entry.updated_at = at;
                self.decisions.remove(path);
            }
            Event::ItemsDecided { path, items } => {
                if self.items.contains_key(path) {
                    return Err(Self::fail(
                        record,
                        format!("items of `{path}` decided twice"),
                    ));
                }
                self.items.insert(path.clone(), items.clone());
            }
            Event::GateOpened {
                path,
                prompt,
                expires_at,
                four_eyes,
                approvals,
                approvers,
                on_timeout,
            } => {
                if self.gates.contains_key(path) {
                    return Err(Self::fail(record, format!("gate `{path}` opened twice")));
                }
                self.gates.insert(
                    path.clone(),
                    GateView {
                        prompt: prompt.clone(),
                        expires_at: *expires_at,
                        decision: None,
                        opened_at: at,
                        four_eyes: *four_eyes,
                        approvals: (*approvals).max(1),
                        approvers: approvers.clone(),
                        on_timeout: *on_timeout,
                        approved_by: Vec::new(),
                        expired: None,
                    },
                );
            }
            Event::GateDecided {
                path,
                approved,
                by,
                comment,
            } => {
                let Some(gate) = self.gates.get_mut(path) else {
                    return Err(Self::fail(record, format!("gate `{path}` is not open")));
                };
                if gate.decision.is_some() {
                    return Err(Self::fail(
                        record,
                        format!("gate `{path}` was decided already"),
                    ));
                }
                if gate.expired.is_some() {
                    return Err(Self::fail(record, format!("gate `{path}` has expired")));
                }
                if *approved {
                    let who = crate::engine::decide::identity(by);
                    if gate
                        .approved_by
                        .iter()
                        .any(|(b, _, _)| crate::engine::decide::identity(b) == who)
                    {
                        return Err(Self::fail(
                            record,
                            format!("{who} approved gate `{path}` twice"),
                        ));
                    }
                    gate.approved_by.push((by.clone(), comment.clone(), at));
                    if gate.approved_by.len() >= usize::try_from(gate.approvals).unwrap_or(1) {
                        let names: Vec<&str> = gate
                            .approved_by
                            .iter()
                            .map(|(b, _, _)| b.as_str())
                            .collect();
                        let comments: Vec<&str> = gate
                            .approved_by
                            .iter()
                            .filter_map(|(_, c, _)| c.as_deref())
                            .collect();
                        gate.decision = Some((
                            true,
                            names.join(", "),
                            (!comments.is_empty()).then(|| comments.join("; ")),
                        ));
                    }
                } else {
                    gate.decision = Some((false, by.clone(), comment.clone()));
                }
            }
            Event::GateExpired { path, outcome, .. } => {
                let Some(gate) = self.gates.get_mut(path) else {
                    return Err(Self::fail(record, format!("gate `{path}` is not open")));
                };
                if gate.decision.is_some() || gate.expired.is_some() {
                    return Err(Self::fail(
                        record,
                        format!("gate `{path}` was decided already"),
                    ));
                }
                gate.expired = Some(*outcome);
            }
            Event::TimerSet { path, wake_at } => {
                if self.timers.contains_key(path) {
                    return Err(Self::fail(record, format!("timer `{path}` set twice")));
                }
                self.timers.insert(path.clone(), *wake_at);
            }
            Event::AttentionNeeded { path, detail } => {
                self.attention = Some((path.clone(), detail.clone()));
            }
            Event::RunReopened { .. } => {
                if !reopens {
                    return Err(Self::fail(
                        record,
                        format!(
                            "only a failed run can be reopened, and it is {}",
                            self.state
                        ),
                    ));
                }
                self.reopen();
                // The run goes on from here: `StateChanged` to running follows in the same write.
                self.state = RunState::Running;
                self.reason = None;
            }
            // Records of what was checked or decided; the state changes that go with them
            // come as their own records.
            Event::Precheck { .. }
            | Event::Paused { .. }
            | Event::Unpaused { .. }
            | Event::AbortStarted { .. } => {}
            Event::OperatorDecided { path, action, .. } => {
                self.decisions.insert(path.clone(), *action);
                if self.attention.as_ref().is_some_and(|(p, _)| p == path) {
                    self.attention = None;
                }
            }
            Event::LossAccepted { kept, .. } => {
                self.loss_after = Some(*kept);
            }
            Event::StateChanged { state, reason } => {
                if !transition_allowed(self.state, *state) {
                    return Err(Self::fail(
                        record,
                        format!("a run cannot go from {} to {state}", self.state),
                    ));
                }
                self.state = *state;
                self.reason.clone_from(reason);
            }
        }
        self.last_seq = record.seq;
        self.updated_at = at;
        Ok(())
    }

    fn started(&mut self, record: &Record, path: &str) -> Result<&mut StepView, TransitionError> {
        match self.steps.get_mut(path) {
            Some(step) if matches!(step.status, StepStatus::Started { .. }) => Ok(step),
            Some(step) => {
                let word = step.status.word();
                Err(Self::fail(
                    record,
                    format!("step `{path}` has no attempt in flight (it is {word})"),
                ))
            }
            None => Err(Self::fail(record, format!("step `{path}` never started"))),
        }
    }

    /// The steps whose failure ended the run: every step that failed and was not tolerated,
    /// leaving out `on_failure` steps (what ran because of a failure), in journal order. A
    /// failed run has one such chain — the step that failed and the loops and calls around it.
    pub fn failed(&self) -> Vec<&str> {
        let failed: Vec<(&str, u64)> = self
            .steps
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s.status,
                    StepStatus::Failed {
                        tolerated: false,
                        ..
                    }
                )
            })
            .map(|(p, s)| (p.as_str(), s.first_seq))
            .collect();
        let handlers = handler_prefixes(failed.iter().map(|(p, _)| *p));
        let mut chain: Vec<(&str, u64)> = failed
            .into_iter()
            .filter(|(p, _)| !handlers.iter().any(|h| p.starts_with(h.as_str())))
            .collect();
        chain.sort_by_key(|(_, seq)| *seq);
        chain.into_iter().map(|(p, _)| p).collect()
    }

    /// Takes up a failed run again: the failed chain ([`RunView::failed`]) counts as cut
    /// short (in flight: walked again, the operator's decision applying), and what the
    /// `on_failure` steps of the run and of that chain did is set aside — they run again only
    /// if the run fails again. The records stay in the journal; only the fold forgets them.
    fn reopen(&mut self) {
        let chain: Vec<String> = self.failed().into_iter().map(str::to_owned).collect();
        let handlers = handler_prefixes(chain.iter().map(String::as_str));
        let handled = |p: &str| handlers.iter().any(|h| p.starts_with(h.as_str()));
        self.steps.retain(|p, _| !handled(p));
        self.order.retain(|(p, _)| !handled(p));
        self.items.retain(|p, _| !handled(p));
        self.gates.retain(|p, _| !handled(p));
        self.timers.retain(|p, _| !handled(p));
        self.decisions.retain(|p, _| !handled(p));
        for path in &chain {
            if let Some(step) = self.steps.get_mut(path) {
                step.status = StepStatus::Interrupted {
                    attempt: step.attempts.max(1),
                    reason: "it failed, and the run was reopened".into(),
                };
            }
        }
    }

    /// Steps with an attempt in flight or cut short: the ones a resume must decide about.
    pub fn in_flight(&self) -> Vec<&str> {
        let mut paths: Vec<(&str, u64)> = self
            .steps
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s.status,
                    StepStatus::Started { .. } | StepStatus::Interrupted { .. }
                )
            })
            .map(|(p, s)| (p.as_str(), s.first_seq))
            .collect();
        paths.sort_by_key(|(_, seq)| *seq);
        paths.into_iter().map(|(p, _)| p).collect()
    }

    /// The open gate a run waits at, if any.
    pub fn open_gate(&self) -> Option<(&str, &GateView)> {
        self.open_gates().into_iter().next()
    }

    /// Gates that wait for a verdict: undecided, and not failed by themselves (expired).
    pub fn open_gates(&self) -> Vec<(&str, &GateView)> {
        self.gates
            .iter()
            .filter(|(p, g)| g.undecided() && !self.step(p).is_some_and(|s| s.status.is_final()))
            .map(|(p, g)| (p.as_str(), g))
            .collect()
    }
}

/// Where the `on_failure` steps of the run and of each of `failed` are journaled.
fn handler_prefixes<'a>(failed: impl Iterator<Item = &'a str>) -> Vec<String> {
    std::iter::once("on_failure.".to_owned())
        .chain(failed.map(|p| format!("{p}.on_failure.")))
        .collect()
}

/// The run state machine's edges. (A failed run goes on only through `RunReopened`.)
pub fn transition_allowed(from: RunState, to: RunState) -> bool {
    use RunState::{
        Aborted, Failed, Interrupted, NeedsAttention, Paused, Running, Sleeping, Succeeded, Waiting,
    };
    match from {
        Running => true,
        Waiting => matches!(to, Running | Waiting | Aborted | Failed | Interrupted),
        Sleeping => matches!(to, Running | Sleeping | Interrupted | Aborted | Paused),
        Interrupted => matches!(to, Running | Interrupted | Aborted | Paused),
        NeedsAttention => matches!(to, Running | NeedsAttention | Aborted),
        Paused => matches!(to, Running | Paused | Aborted),
        Succeeded | Failed | Aborted => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn step_started(path: &str, attempt: u32) -> Event {
        Event::StepStarted {
            path: path.into(),
            kind: "shell".into(),
            attempt,
            idempotent: false,
            intent: json!({"run": "x"}),
        }
    }

    #[test]
    fn steps_move_from_started_to_an_outcome() {
        let records = vec![
            rec(1, started()),
            rec(2, step_started("a", 1)),
            rec(
                3,
                Event::StepSucceeded {
                    path: "a".into(),
                    attempt: 1,
                    output: json!(1),
                    duration_ms: 5,
                },
            ),
            rec(4, step_started("b", 1)),
        ];
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(
            view.step("a").unwrap().status,
            StepStatus::Succeeded { output: json!(1) }
        );
        assert_eq!(view.in_flight(), vec!["b"]);
        assert_eq!(
            view.order,
            vec![
                ("a".into(), Some("shell".into())),
                ("b".into(), Some("shell".into()))
            ]
        );
    }

    #[test]
    fn an_outcome_without_a_start_is_refused_naming_the_record() {
        let records = vec![
            rec(1, started()),
            rec(
                2,
                Event::StepSucceeded {
                    path: "a".into(),
                    attempt: 1,
                    output: json!(1),
                    duration_ms: 5,
                },
            ),
        ];
        let err = RunView::from_records(RunId::new(), &records).unwrap_err();
        assert_eq!(
            err.to_string(),
            "journal record 2 (step_succeeded) does not fit the run's state: step `a` never started"
        );
    }

    #[test]
    fn a_finished_run_accepts_nothing_more() {
        let records = vec![
            rec(1, started()),
            rec(
                2,
                Event::StateChanged {
                    state: RunState::Succeeded,
                    reason: None,
                },
            ),
            rec(3, step_started("a", 1)),
        ];
        let err = RunView::from_records(RunId::new(), &records).unwrap_err();
        assert!(
            err.to_string()
                .contains("the run already ended (succeeded)")
        );
    }

    #[test]
    fn retries_keep_the_first_position_in_the_replay_order() {
        let records = vec![
            rec(1, started()),
            rec(2, step_started("a", 1)),
            rec(
                3,
                Event::StepFailed {
                    path: "a".into(),
                    attempt: 1,
                    error: "boom".into(),
                    output: None,
                    retry_at: Some(Utc::now()),
                    duration_ms: 1,
                    tolerated: false,
                },
            ),
            rec(4, step_started("a", 2)),
        ];
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(view.order.len(), 1);
        assert_eq!(
            view.step("a").unwrap().status,
            StepStatus::Started { attempt: 2 }
        );
    }

    fn failed(path: &str) -> Event {
        Event::StepFailed {
            path: path.into(),
            attempt: 1,
            error: "boom".into(),
            output: None,
            retry_at: None,
            duration_ms: 1,
            tolerated: false,
        }
    }

    fn succeeded(path: &str) -> Event {
        Event::StepSucceeded {
            path: path.into(),
            attempt: 1,
            output: json!(1),
            duration_ms: 1,
        }
    }

    #[test]
    fn a_reopened_run_walks_its_failed_steps_again_and_forgets_what_its_handlers_did() {
        let events = vec![
            started(),
            step_started("a", 1),
            succeeded("a"),
            step_started("roll", 1),
            step_started("roll[0].x", 1),
            failed("roll[0].x"),
            step_started("roll[0].x.on_failure.note", 1),
            succeeded("roll[0].x.on_failure.note"),
            failed("roll"),
            step_started("on_failure.page", 1),
            succeeded("on_failure.page"),
            Event::StateChanged {
                state: RunState::Failed,
                reason: None,
            },
        ];
        let mut records: Vec<Record> = (1..).zip(events).map(|(seq, e)| rec(seq, e)).collect();
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(view.failed(), vec!["roll", "roll[0].x"]);

        let next = records.len() as u64 + 1;
        records.push(rec(
            next,
            Event::RunReopened {
                by: "ops".into(),
                comment: Some("disk replaced".into()),
            },
        ));
        records.push(rec(
            next + 1,
            Event::StateChanged {
                state: RunState::Running,
                reason: None,
            },
        ));
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(view.state, RunState::Running);
        assert_eq!(view.in_flight(), vec!["roll", "roll[0].x"]);
        assert!(view.step("a").unwrap().status.is_final());
        let order: Vec<&str> = view.order.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(order, vec!["a", "roll", "roll[0].x"]);
        assert!(view.failed().is_empty());

        // Only a failed run reopens.
        let mut twice = records.clone();
        twice.push(rec(
            next + 2,
            Event::RunReopened {
                by: "ops".into(),
                comment: None,
            },
        ));
        let err = RunView::from_records(RunId::new(), &twice).unwrap_err();
        assert!(
            err.to_string()
                .contains("only a failed run can be reopened")
        );
    }

    #[test]
    fn a_gate_is_approved_once_enough_distinct_people_approved_and_closes_to_more_verdicts() {
        let opened = Event::GateOpened {
            path: "g".into(),
            prompt: "Go?".into(),
            expires_at: None,
            four_eyes: false,
            approvals: 2,
            approvers: vec![],
            on_timeout: GateTimeout::Reject,
        };
        let decided = |by: &str, approved: bool| Event::GateDecided {
            path: "g".into(),
            approved,
            by: by.into(),
            comment: Some(format!("{by} says so")),
        };
        let mut records = vec![
            rec(1, started()),
            rec(2, opened),
            rec(3, decided("alice", true)),
        ];
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        let gate = &view.gates["g"];
        assert_eq!(gate.decision, None, "one of two approvals decides nothing");
        assert_eq!(gate.approved_by.len(), 1);
        assert_eq!(view.open_gates().len(), 1);

        // The same person again (even through --yes) does not fit the journal.
        records.push(rec(4, decided("alice (--yes)", true)));
        let err = RunView::from_records(RunId::new(), &records).unwrap_err();
        assert_eq!(
            err.to_string(),
            "journal record 4 (gate_decided) does not fit the run's state: alice approved gate `g` twice"
        );

        records[3] = rec(4, decided("bob", true));
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(
            view.gates["g"].decision,
            Some((
                true,
                "alice, bob".to_owned(),
                Some("alice says so; bob says so".to_owned())
            ))
        );
        assert!(view.open_gates().is_empty());

        // Decided: neither a verdict nor an expiry fits any more.
        for (late, name) in [
            (decided("carol", false), "gate_decided"),
            (
                Event::GateExpired {
                    path: "g".into(),
                    expired_at: Utc::now(),
                    outcome: GateTimeout::Reject,
                },
                "gate_expired",
            ),
        ] {
            let mut more = records.clone();
            more.push(rec(5, late));
            let err = RunView::from_records(RunId::new(), &more).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "journal record 5 ({name}) does not fit the run's state: gate `g` was decided already"
                )
            );
        }
    }

    #[test]
    fn an_expired_gate_is_no_longer_open_and_takes_no_verdict() {
        let records = vec![
            rec(1, started()),
            rec(
                2,
                Event::GateOpened {
                    path: "g".into(),
                    prompt: "Go?".into(),
                    expires_at: Some(Utc::now()),
                    four_eyes: false,
                    approvals: 1,
                    approvers: vec![],
                    on_timeout: GateTimeout::Approve,
                },
            ),
            rec(
                3,
                Event::GateExpired {
                    path: "g".into(),
                    expired_at: Utc::now(),
                    outcome: GateTimeout::Approve,
                },
            ),
        ];
        let view = RunView::from_records(RunId::new(), &records).unwrap();
        assert_eq!(view.gates["g"].expired, Some(GateTimeout::Approve));
        assert!(view.open_gates().is_empty());
        let mut more = records.clone();
        more.push(rec(
            4,
            Event::GateDecided {
                path: "g".into(),
                approved: true,
                by: "alice".into(),
                comment: None,
            },
        ));
        let err = RunView::from_records(RunId::new(), &more).unwrap_err();
        assert!(err.to_string().ends_with("gate `g` has expired"), "{err}");
    }

    #[test]
    fn state_machine_edges() {
        assert!(transition_allowed(RunState::Running, RunState::Paused));
        assert!(transition_allowed(RunState::Paused, RunState::Running));
        assert!(transition_allowed(RunState::Paused, RunState::Aborted));
        assert!(!transition_allowed(RunState::Paused, RunState::Succeeded));
        assert!(!transition_allowed(RunState::Failed, RunState::Running));
        assert!(transition_allowed(RunState::Waiting, RunState::Running));
        assert!(!transition_allowed(RunState::Succeeded, RunState::Running));
        assert!(!transition_allowed(RunState::Sleeping, RunState::Waiting));
        assert!(transition_allowed(
            RunState::NeedsAttention,
            RunState::Aborted
        ));
    }
}
