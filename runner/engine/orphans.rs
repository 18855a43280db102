//! Processes a run's previous executor left behind: before a run goes on (`resume`, a gate's
//! verdict) or ends (`abort`), every process of an attempt whose end the journal does not know
//! is stopped, and the run waits until they are gone.
//!
//! The journal names each attempt in its `step_started` record, durable before the attempt's
//! processes started; each process carries the same name in its environment (see
//! [`runbook_steps::orphans`]). An attempt has ended when a `step_succeeded`, `step_failed` or
//! `step_interrupted` record says so — what it left running then is left alone. A probe's
//! attempts are never journaled, so a probe's processes are always stopped: a probe only
//! reads, and nothing of it may outlive its executor. A run whose every started attempt has an
//! end (parked on a timer, say) had nothing in flight: `/proc` is not searched at all, which
//! keeps resuming many runs cheap; a probe run outside a step in flight (a precheck's, a
//! `check`'s) is then left to the watchdog.
//!
//! Call this only for a run that no task of this process executes: its processes in flight
//! would count as left behind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use runbook_journals::{Event, Orphans, Record, RunId};
use runbook_steps::orphans::{Attempt, stop_orphans};
use serde_json::Value;

/// How long a stopped process gets between SIGTERM and SIGKILL when its step's intent names no
/// `grace` (the longest of the kinds' defaults, so no kind's processes are cut short).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// What a run's journal knows about its attempts.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// Attempts with a recorded end, by path and number.
    ended: HashSet<(String, u32)>,
    /// Attempts that started, by path and number.
    started: HashSet<(String, u32)>,
    /// The `grace` each started attempt's intent gives.
    grace: HashMap<(String, u32), Duration>,
}

impl Attempts {
    /// Folds a run's records.
    pub(crate) fn of(records: &[Record]) -> Self {
        let mut attempts = Self::default();
        for record in records {
            match &record.event {
                Event::StepStarted {
                    path,
                    attempt,
                    intent,
                    ..
                } => {
                    attempts.started.insert((path.clone(), *attempt));
                    if let Some(grace) = grace_of(intent) {
                        attempts.grace.insert((path.clone(), *attempt), grace);
                    }
                }
                Event::StepSucceeded { path, attempt, .. }
                | Event::StepFailed { path, attempt, .. }
                | Event::StepInterrupted { path, attempt, .. } => {
                    attempts.ended.insert((path.clone(), *attempt));
                }
                _ => {}
            }
        }
        attempts
    }

    /// Whether an attempt started without a recorded end: only then can an executor have
    /// died with processes of the run in flight that its watchdog did not know of (a
    /// probe's, of a step in flight, included), so only then is `/proc` searched.
    pub(crate) fn any_unfinished(&self) -> bool {
        self.started.iter().any(|key| !self.ended.contains(key))
    }

    /// The grace to stop a process of `attempt` with, if it is one of run `id`'s and its end
    /// is not known; `None` to leave it alone.
    pub(crate) fn orphan(&self, id: RunId, attempt: &Attempt) -> Option<Duration> {
        if attempt.run_id != id.to_string() {
            return None;
        }
        let key = (attempt.path.clone(), attempt.attempt);
        if self.ended.contains(&key) {
            return None;
        }
        Some(self.grace.get(&key).copied().unwrap_or(DEFAULT_GRACE))
    }
}

/// The `grace` of a journaled intent (`{describe, spec}`), if its spec has a valid one.
fn grace_of(intent: &Value) -> Option<Duration> {
    match intent.get("spec")?.get("grace")? {
        Value::String(text) => crate::load::parse_duration(text).ok(),
        Value::Number(n) => crate::load::parse_duration(&n.to_string()).ok(),
        _ => None,
    }
}

/// Stops what run `id`'s earlier executors left running of attempts without a recorded end,
/// waits until it is gone, and says what was stopped — on stderr at once too, since a resume
/// that a precheck then refuses journals nothing of it.
pub(crate) fn stop_left_over(id: RunId, records: &[Record]) -> Vec<Orphans> {
    let attempts = Attempts::of(records);
    if !attempts.any_unfinished() {
        return Vec::new();
    }
    let orphans: Vec<Orphans> = stop_orphans(&|attempt: &Attempt| attempts.orphan(id, attempt))
        .into_iter()
        .map(|s| Orphans {
            path: s.attempt.path,
            attempt: s.attempt.attempt,
            pids: s.pids,
            how: s.how,
        })
        .collect();
    for line in describe(&orphans) {
        tracing::warn!(run = %id, "{line}");
    }
    orphans
}

/// One line per attempt, for a message: "step `slow` (attempt 1): 2 stopped with SIGTERM".
pub(crate) fn describe(orphans: &[Orphans]) -> Vec<String> {
    orphans
        .iter()
        .map(|o| {
            format!(
                "processes of step `{}` (attempt {}) outlived the executor that started them: {} (pids {})",
                o.path,
                o.attempt,
                o.how,
                o.pids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn record(seq: u64, event: Event) -> Record {
        Record {
            seq,
            at: Utc::now(),
            event,
        }
    }

    fn started(path: &str, attempt: u32, spec: &Value) -> Event {
        Event::StepStarted {
            path: path.into(),
            kind: "shell".into(),
            attempt,
            idempotent: false,
            intent: json!({ "describe": "shell: …", "spec": spec }),
        }
    }

    fn attempt(run: RunId, path: &str, n: u32) -> Attempt {
        Attempt {
            run_id: run.to_string(),
            path: path.into(),
            attempt: n,
        }
    }

    #[test]
    fn only_attempts_of_this_run_without_a_recorded_end_are_orphans() {
        let id = RunId::new();
        let records = [
            record(1, started("daemon", 1, &json!({ "run": "d &" }))),
            record(
                2,
                Event::StepSucceeded {
                    path: "daemon".into(),
                    attempt: 1,
                    output: json!({}),
                    duration_ms: 1,
                },
            ),
            record(
                3,
                started("flaky", 1, &json!({ "run": "x", "grace": "2s" })),
            ),
            record(
                4,
                Event::StepFailed {
                    path: "flaky".into(),
                    attempt: 1,
                    error: "exit 1".into(),
                    output: None,
                    retry_at: Some(Utc::now()),
                    duration_ms: 1,
                    tolerated: false,
                },
            ),
            record(5, started("flaky", 2, &json!({ "run": "x", "grace": 3 }))),
            record(6, started("stopped", 1, &json!({ "run": "x" }))),
            record(
                7,
                Event::StepInterrupted {
                    path: "stopped".into(),
                    attempt: 1,
                    reason: "SIGINT".into(),
                },
            ),
            record(
                8,
                started("slow", 1, &json!({ "run": "x", "grace": "{{bad}}" })),
            ),
        ];
        let attempts = Attempts::of(&records);
        assert!(attempts.any_unfinished());
        assert!(!Attempts::of(&records[..4]).any_unfinished());
        assert!(!Attempts::of(&[]).any_unfinished());
        // Ended one way or another: left alone.
        assert_eq!(attempts.orphan(id, &attempt(id, "daemon", 1)), None);
        assert_eq!(attempts.orphan(id, &attempt(id, "flaky", 1)), None);
        assert_eq!(attempts.orphan(id, &attempt(id, "stopped", 1)), None);
        // In flight, with the grace its intent gives (a bare number is seconds).
        assert_eq!(
            attempts.orphan(id, &attempt(id, "flaky", 2)),
            Some(Duration::from_secs(3))
        );
        // In flight with a grace that does not parse, a probe, an attempt the journal never
        // saw start: the default.
        for (path, n) in [("slow", 1), ("wait.probe", 1), ("later", 1)] {
            assert_eq!(
                attempts.orphan(id, &attempt(id, path, n)),
                Some(DEFAULT_GRACE),
                "{path}"
            );
        }
        // Another run's processes are never this run's business.
        let other = RunId::new();
        assert_eq!(attempts.orphan(id, &attempt(other, "slow", 1)), None);
    }

    #[test]
    fn the_message_names_the_step_the_attempt_and_the_processes() {
        let lines = describe(&[Orphans {
            path: "slow".into(),
            attempt: 2,
            pids: vec![10, 11],
            how: "2 stopped with SIGTERM".into(),
        }]);
        assert_eq!(
            lines,
            [
                "processes of step `slow` (attempt 2) outlived the executor that started them: 2 stopped with SIGTERM (pids 10, 11)"
            ]
        );
    }
}
