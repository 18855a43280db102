//! The records a run journal holds.
//!
//! A journal is an append-only log of [`Event`]s per run. Events record *intent* ("step X started,
//! doing Y") apart from *outcome* ("X produced Z"), and every decision the engine takes (the items
//! of a loop, a gate's verdict, a timer's wake time) so that a resumed run replays them instead of
//! deciding again. Everything in here has already been redacted by the runner: the journal stores
//! what it is given and never sees a secret in clear.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run's identity: a ULID, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub ulid::Ulid);

impl RunId {
    /// A fresh id for a run created now; ids made in this process are strictly increasing,
    /// even within one millisecond, so listings keep creation order.
    pub fn new() -> Self {
        static GENERATOR: std::sync::Mutex<ulid::Generator> =
            std::sync::Mutex::new(ulid::Generator::new());
        let mut generator = GENERATOR.lock().expect("run id generator poisoned");
        match generator.generate() {
            Ok(id) => Self(id),
            // 2^80 ids in one millisecond: fall back to a random one.
            Err(overflow) => Self(overflow.commit_overflow_random()),
        }
    }

    /// The id as 16 big-endian bytes; byte order equals creation order.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    /// The inverse of [`RunId::to_bytes`].
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(ulid::Ulid::from_bytes(bytes))
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = ulid::DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ulid::Ulid::from_string(s).map(Self)
    }
}

/// Where a run stands. Terminal states release the run's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// A process is executing the run (or was, and died: see [`RunState::Interrupted`]).
    Running,
    /// Parked at a gate until someone approves or rejects it.
    Waiting,
    /// Parked on a durable timer whose wake time is journaled.
    Sleeping,
    /// The executing process was stopped (Ctrl-C, SIGTERM) or is gone; `resume` continues.
    Interrupted,
    /// A non-idempotent step was in flight when the process died; an operator must decide.
    NeedsAttention,
    /// Every step succeeded.
    Succeeded,
    /// A step failed (and `on_failure` ran), a precheck refused the run, or a gate was rejected.
    Failed,
    /// An operator aborted the run.
    Aborted,
    /// An operator paused the run at a step boundary; `unpause` continues it. It keeps its lock.
    Paused,
}

impl RunState {
    /// Whether the run is over for good: it holds no lock and cannot be resumed.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Aborted)
    }

    /// Whether the run ended or stopped for a person (or a signal): what a follower waits for.
    pub fn is_settled(self) -> bool {
        self.is_terminal()
            || matches!(
                self,
                Self::Waiting | Self::NeedsAttention | Self::Interrupted | Self::Paused
            )
    }

    /// The kebab-case name used in output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Sleeping => "sleeping",
            Self::Interrupted => "interrupted",
            Self::NeedsAttention => "needs-attention",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
            Self::Paused => "paused",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file of a runbook's source as it was when the run started (or was reloaded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    /// Where the file was found: a path, or `bundled:NAME` for the built-in library.
    pub origin: String,
    /// Lowercase hex SHA-256 of `content`.
    pub sha256: String,
    /// The file's text.
    pub content: String,
}

/// A difference between a run's pinned source and what is on disk now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The file's origin as pinned.
    pub origin: String,
    /// What changed: "modified", "missing".
    pub change: String,
}

/// Processes of one attempt that outlived the executor that started them, and were stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphans {
    /// The step (a probe's path for a probe's processes).
    pub path: String,
    /// The attempt that started them.
    pub attempt: u32,
    /// Their process ids.
    pub pids: Vec<u32>,
    /// How they ended ("2 stopped with SIGTERM").
    pub how: String,
}

/// Why a step did not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Its `when` evaluated to false.
    When,
    /// Its `check` reported the effect already in place.
    Check,
    /// An operator chose `resume --skip-step`.
    Operator,
}

/// What an operator decided for a step that needed attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorAction {
    /// Run the step again.
    Retry,
    /// Treat the step as done without running it.
    Skip,
}

/// What a gate's expiry means when nobody decided in time (`on_timeout:`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateTimeout {
    /// The gate counts as approved and the run goes on.
    Approve,
    /// The gate counts as rejected, as if a person had rejected it.
    Reject,
    /// The gate step fails with an expiry error (the behaviour before `on_timeout` existed).
    #[default]
    Fail,
}

impl GateTimeout {
    /// The kebab-case name used in runbooks and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Fail => "fail",
        }
    }

    /// Whether this is the default (`fail`), for leaving it out of records.
    pub fn is_default(&self) -> bool {
        *self == Self::Fail
    }
}

impl fmt::Display for GateTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn one() -> u32 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The first event of every run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// The runbook's name.
    pub runbook: String,
    /// Parameter values after defaults, secrets redacted.
    pub params: serde_json::Map<String, Value>,
    /// Every file the run depends on, pinned; the first is the runbook itself.
    pub sources: Vec<SourceFile>,
    /// How each `call` target was resolved: `CALLER-ORIGIN|TARGET` → origin.
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, String>,
    /// The rendered lock key, if the runbook declares one.
    pub lock: Option<String>,
    /// Who started the run.
    pub started_by: String,
    /// The version of runbook that started the run.
    pub engine_version: String,
    /// What started the run, when not a person: a schedule and the fire time it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// A schedule's fire that started a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// The schedule's name.
    pub schedule: String,
    /// The time the schedule was due (not when the run actually started).
    pub fire_time: DateTime<Utc>,
}

/// Something the engine did or decided, in the order it happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run was created.
    RunStarted(RunStarted),
    /// An operator resumed the run with the runbook files as they are now (`resume --reload`).
    SourceReloaded {
        /// The newly pinned files.
        sources: Vec<SourceFile>,
        /// How each `call` target was resolved.
        #[serde(default)]
        links: std::collections::BTreeMap<String, String>,
    },
    /// A precheck ran (they run again on every resume; this is a record, not a decision).
    Precheck {
        /// The precheck's id.
        id: String,
        /// Whether it passed.
        ok: bool,
        /// Why it failed, if it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A process took the run up again.
    Resumed {
        /// Who resumed it.
        by: String,
        /// Files that changed since the run was pinned.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        drift: Vec<Drift>,
        /// Processes of attempts in flight that outlived the run's previous executor, stopped
        /// before anything was decided about those attempts.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        orphans: Vec<Orphans>,
    },
    /// Intent: a step's effect is about to begin. Durable before the effect starts.
    StepStarted {
        /// The step's path, e.g. `roll[2].leader`.
        path: String,
        /// The step's kind (`shell`, `gate`, `foreach`, …).
        kind: String,
        /// 1 for the first attempt.
        attempt: u32,
        /// Whether running the step again is harmless.
        idempotent: bool,
        /// What the step is about to do: its rendered spec, redacted.
        intent: Value,
    },
    /// Outcome: the step produced an output.
    StepSucceeded {
        /// The step's path.
        path: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// The step's output, redacted.
        output: Value,
        /// Wall time of the attempt.
        duration_ms: u64,
    },
    /// Outcome: an attempt failed. With `retry_at` another attempt follows at that time.
    StepFailed {
        /// The step's path.
        path: String,
        /// The attempt that failed.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// What the step produced before failing, if anything (exit code, stderr, status).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Value>,
        /// When the next attempt is due; absent when this failure is final.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
        /// Wall time of the attempt.
        duration_ms: u64,
        /// The failure was tolerated (`continue_on_error`); the run goes on.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tolerated: bool,
    },
    /// Outcome: we stopped the step (Ctrl-C, SIGTERM); it did not fail.
    StepInterrupted {
        /// The step's path.
        path: String,
        /// The attempt that was cut short.
        attempt: u32,
        /// How it was stopped and how the child ended.
        reason: String,
    },
    /// Decision: the step will not run.
    StepSkipped {
        /// The step's path.
        path: String,
        /// Why.
        reason: SkipReason,
    },
    /// Decision: the items a `foreach` iterates over, fixed when the loop starts.
    ItemsDecided {
        /// The foreach step's path.
        path: String,
        /// The items.
        items: Vec<Value>,
    },
    /// A gate is open and waits for a verdict.
    GateOpened {
        /// The gate step's path.
        path: String,
        /// The rendered prompt.
        prompt: String,
        /// When the gate fails by itself if nobody decides.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
        /// The approver must not be the person who started the run.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        four_eyes: bool,
        /// How many distinct people must approve (at least 1).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        approvals: u32,
        /// Who may decide; empty means anyone.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        approvers: Vec<String>,
        /// What the expiry means.
        #[serde(default, skip_serializing_if = "GateTimeout::is_default")]
        on_timeout: GateTimeout,
    },
    /// Decision: one person's verdict on a gate. A rejection decides the gate; an approval
    /// decides it once `approvals` distinct people have approved.
    GateDecided {
        /// The gate step's path.
        path: String,
        /// Approved (true) or rejected.
        approved: bool,
        /// The identity that decided.
        by: String,
        /// The decider's comment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Decision: nobody decided a gate before it expired; `outcome` is what that means.
    GateExpired {
        /// The gate step's path.
        path: String,
        /// When it expired (its journaled expiry, not when the expiry was noticed).
        expired_at: DateTime<Utc>,
        /// What the expiry means for the gate.
        outcome: GateTimeout,
    },
    /// Decision: a durable timer's wake time, fixed when the sleep starts.
    TimerSet {
        /// The sleep step's path.
        path: String,
        /// When the run wakes.
        wake_at: DateTime<Utc>,
    },
    /// A step was in flight when its process died and it is not safe to run again.
    AttentionNeeded {
        /// The step's path.
        path: String,
        /// What the step was doing (its journaled intent).
        detail: String,
    },
    /// Decision: an operator's verdict on a step that needed attention, or on the failed step
    /// of a run taken up again ([`Event::RunReopened`]).
    OperatorDecided {
        /// The step's path.
        path: String,
        /// Retry or skip.
        action: OperatorAction,
        /// Who decided.
        by: String,
        /// Why, in the operator's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Decision: an operator took up a run that had ended failed, to retry or skip the step
    /// that failed. The failure stays in the history before this record; what failed (the step,
    /// the loops and calls around it, and the `on_failure` steps that ran for it) counts as
    /// not finished from here on. The run takes its lock again in the same write.
    RunReopened {
        /// Who took the run up.
        by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Decision: an operator paused the run; it stopped at a step boundary.
    Paused {
        /// Who paused it.
        by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Decision: an operator continued a paused run.
    Unpaused {
        /// Who continued it.
        by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
    /// Decision: an operator aborted the run and its cleanup steps (`on_abort`, or `on_failure`
    /// when the runbook has no `on_abort`) run next; the run ends aborted after them.
    AbortStarted {
        /// Who aborted it.
        by: String,
        /// Why.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Decision: an operator accepted that the run's history is what is intact of it — the
    /// records after `kept` were lost or damaged (and are set aside, not deleted). The step the
    /// run reaches next may have started before the loss, so it is treated as in flight.
    LossAccepted {
        /// The last intact record.
        kept: u64,
        /// What was wrong with the journal.
        detail: String,
        /// Who decided.
        by: String,
    },
    /// The run's state changed.
    StateChanged {
        /// The new state.
        state: RunState,
        /// Why, in words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Event {
    /// The step path this event is about, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::StepStarted { path, .. }
            | Self::StepSucceeded { path, .. }
            | Self::StepFailed { path, .. }
            | Self::StepInterrupted { path, .. }
            | Self::StepSkipped { path, .. }
            | Self::ItemsDecided { path, .. }
            | Self::GateOpened { path, .. }
            | Self::GateDecided { path, .. }
            | Self::GateExpired { path, .. }
            | Self::TimerSet { path, .. }
            | Self::AttentionNeeded { path, .. }
            | Self::OperatorDecided { path, .. } => Some(path),
            Self::RunStarted(_)
            | Self::SourceReloaded { .. }
            | Self::Precheck { .. }
            | Self::Resumed { .. }
            | Self::LossAccepted { .. }
            | Self::RunReopened { .. }
            | Self::Paused { .. }
            | Self::Unpaused { .. }
            | Self::AbortStarted { .. }
            | Self::StateChanged { .. } => None,
        }
    }

    /// The event's tag as it appears in JSON (`step_started`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunStarted(_) => "run_started",
            Self::SourceReloaded { .. } => "source_reloaded",
            Self::Precheck { .. } => "precheck",
            Self::Resumed { .. } => "resumed",
            Self::StepStarted { .. } => "step_started",
            Self::StepSucceeded { .. } => "step_succeeded",
            Self::StepFailed { .. } => "step_failed",
            Self::StepInterrupted { .. } => "step_interrupted",
            Self::StepSkipped { .. } => "step_skipped",
            Self::ItemsDecided { .. } => "items_decided",
            Self::GateOpened { .. } => "gate_opened",
            Self::GateDecided { .. } => "gate_decided",
            Self::GateExpired { .. } => "gate_expired",
            Self::TimerSet { .. } => "timer_set",
            Self::AttentionNeeded { .. } => "attention_needed",
            Self::OperatorDecided { .. } => "operator_decided",
            Self::LossAccepted { .. } => "loss_accepted",
            Self::RunReopened { .. } => "run_reopened",
            Self::Paused { .. } => "paused",
            Self::Unpaused { .. } => "unpaused",
            Self::AbortStarted { .. } => "abort_started",
            Self::StateChanged { .. } => "state_changed",
        }
    }
}

/// An event as stored: its position in the run's log and when it was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// 1-based position in the run's log; contiguous.
    pub seq: u64,
    /// When the event was appended.
    pub at: DateTime<Utc>,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// A run's summary, kept beside its log so listings need not read every event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: RunId,
    /// The runbook's name.
    pub runbook: String,
    /// The latest state.
    pub state: RunState,
    /// Why the run is in that state, when known.
    #[serde(default)]
    pub reason: Option<String>,
    /// The lock key the run holds (until it ends).
    #[serde(default)]
    pub lock: Option<String>,
    /// Who started it.
    pub started_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event was written.
    pub updated_at: DateTime<Utc>,
    /// The seq of its last event.
    pub last_seq: u64,
    /// The hash chain over the run's records as stored (hex), which the journal's witness
    /// vouches for; absent in summaries written before chains were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

/// What a listing can tell of a run before its whole summary is read: the sled journal holds
/// each archived run as this and the place of its summary in the archive's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Brief<'a> {
    /// The run's latest state.
    pub state: RunState,
    /// The runbook's name.
    pub runbook: &'a str,
}

impl RunSummary {
    /// What a listing can tell of the run before reading the rest of its summary.
    pub fn brief(&self) -> Brief<'_> {
        Brief {
            state: self.state,
            runbook: &self.runbook,
        }
    }

    /// The summary of a run `id` before its first record, as of `at`: running, no records.
    pub fn empty(id: RunId, at: DateTime<Utc>) -> Self {
        Self {
            id,
            runbook: String::new(),
            state: RunState::Running,
            reason: None,
            lock: None,
            started_by: String::new(),
            created_at: at,
            updated_at: at,
            last_seq: 0,
            chain: None,
        }
    }

    /// Folds one more record into the summary.
    pub fn apply(&mut self, record: &Record) {
        self.updated_at = record.at;
        self.last_seq = record.seq;
        match &record.event {
            Event::RunStarted(started) => {
                self.runbook.clone_from(&started.runbook);
                self.lock.clone_from(&started.lock);
                self.started_by.clone_from(&started.started_by);
                self.created_at = record.at;
            }
            Event::StateChanged { state, reason } => {
                self.state = *state;
                self.reason.clone_from(reason);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_record_written_before_orphans_were_kept_still_reads() {
        let old = r#"{"seq":5,"at":"2025-01-02T03:04:05Z","event":"resumed","by":"ops"}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert_eq!(
            record.event,
            Event::Resumed {
                by: "ops".into(),
                drift: Vec::new(),
                orphans: Vec::new(),
            }
        );
        // Written again, it is byte for byte what it was: nothing stopped, nothing added.
        assert_eq!(serde_json::to_string(&record).unwrap(), old);
    }

    #[test]
    fn stopped_orphans_are_kept_with_the_resume() {
        let event = Event::Resumed {
            by: "ops".into(),
            drift: Vec::new(),
            orphans: vec![Orphans {
                path: "slow".into(),
                attempt: 1,
                pids: vec![4242, 4243],
                how: "2 stopped with SIGTERM".into(),
            }],
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"event":"resumed","by":"ops","orphans":[{"path":"slow","attempt":1,"pids":[4242,4243],"how":"2 stopped with SIGTERM"}]}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }
}
