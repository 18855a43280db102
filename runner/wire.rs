//! The messages between the command line and the process that holds the journal — `runbook
//! serve`, or a `runbook run` in a terminal — one set of serde structs that both sides use, for
//! the HTTP API of `serve` and for the local socket every holder answers on (the same API).
//!
//! The contract: a field is added with a default (an older peer leaves it out), never renamed
//! or given another meaning; errors travel as [`ErrorBody`], whose [`Kind`] is what the command
//! line's exit code follows. Secret parameter values travel only in requests (`params`) and
//! only over the owner-only socket or the API's authenticated connection; no answer carries
//! one in clear (records and details are redacted before they are journaled).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use runbook_journals::{GateTimeout, Record, RunId, RunState, RunSummary, Trigger};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::failure::Kind;
use crate::schedule::state::Fired;
use crate::schedule::{CatchUp, Overlap};

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What kind of failure it is, for programs. Absent from answers of a `serve` older than
    /// this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// For parameter values that are missing, wrong or not allowed: each problem, and the
    /// parameter it is about (so a form can show it at its field). Absent for other failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamError>,
}

/// One problem with the parameter values of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamError {
    /// The parameter it is about; absent when it is about no single declared parameter (a
    /// name the runbook does not declare is named here too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// What is wrong, for people (the command line's message).
    pub error: String,
}

/// `GET /whoami`: who the caller acts as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// The name actions are recorded under.
    pub name: String,
}

/// `GET /holder`: the process that holds the journal and answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// Its process id.
    pub pid: u32,
    /// What it is: `serve`, or the command that holds the journal (`run`, `resume`, …).
    pub command: String,
    /// Whether it fires schedules (only `serve` does).
    #[serde(default)]
    pub schedules: bool,
}

/// One runbook of `GET /runbooks`: what a caller may start by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunbookInfo {
    /// The name it is started by.
    pub name: String,
    /// `runbook` (what people run) or `part` (a name with a `/`: a driver, a procedure other
    /// runbooks call), as `runbook list` groups them.
    #[serde(default = "runbook_kind")]
    pub kind: String,
    /// Where it was found, as shown to people.
    pub origin: String,
    /// Its description, if it loads.
    pub description: Option<String>,
    /// Its parameters, if it loads (`None`: it does not).
    pub params: Option<Vec<ParamInfo>>,
    /// Why it does not load (its problems, with file, line and column), if it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn runbook_kind() -> String {
    "runbook".into()
}

/// A parameter of a [`RunbookInfo`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamInfo {
    /// Its name.
    pub name: String,
    /// `string`, `int`, `bool`, `list` or `map`.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether a value must be given.
    pub required: bool,
    /// Its default value.
    pub default: Option<Value>,
    /// Whether it is secret (never shown, never journaled).
    pub secret: bool,
    /// What it is for.
    pub description: Option<String>,
    /// The environment variable its value may come from.
    #[serde(default)]
    pub env: Option<String>,
    /// The file its value may come from.
    #[serde(default)]
    pub file: Option<String>,
    /// The only values allowed.
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    /// The regular expression a string value must match.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The secret store its value is read from when none is given (`OpenBao PATH#FIELD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl ParamInfo {
    /// A declared parameter as callers see it: a secret's default is masked.
    pub fn of(p: &crate::model::Param) -> Self {
        Self {
            name: p.name.clone(),
            ty: p.ty.as_str().to_owned(),
            required: p.required,
            default: if p.secret {
                p.default
                    .as_ref()
                    .map(|_| Value::String(crate::secrets::MASK.to_owned()))
            } else {
                p.default.clone()
            },
            secret: p.secret,
            description: p.description.clone(),
            env: p.env.clone(),
            file: p.file.clone(),
            allowed: p.allowed.clone(),
            pattern: p.pattern.as_ref().map(|r| r.as_str().to_owned()),
            from: p.from.as_ref().map(|f| format!("OpenBao {}", f.describe())),
        }
    }
}

/// `POST /runs`: start a run of a runbook found by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartRun {
    /// The runbook's name (never a path).
    pub runbook: String,
    /// Parameter values (strings, or JSON values for lists, maps, numbers).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Approve every gate.
    #[serde(default)]
    pub yes: bool,
}

/// `POST /plan`: what a run of a runbook found by name would do, as `runbook plan` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRun {
    /// The runbook's name (never a path).
    pub runbook: String,
    /// Parameter values, as for [`StartRun`].
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Run the prechecks (read-only), as `runbook plan` does unless `--no-prechecks`.
    #[serde(default = "yes")]
    pub prechecks: bool,
}

fn yes() -> bool {
    true
}

/// The answer to `POST /plan`: `runbook plan --output json`'s content, with named fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The runbook's name.
    pub runbook: String,
    /// Where it was found.
    pub origin: String,
    /// The parameter values the run would start with, secrets masked.
    pub params: Map<String, Value>,
    /// The lock key the run would take.
    pub lock: Option<String>,
    /// The run holding that lock now (a run now would be refused).
    pub lock_holder: Option<String>,
    /// Each precheck, in order.
    pub prechecks: Vec<PlannedCheck>,
    /// Each step, in order, nested by depth.
    pub steps: Vec<PlannedStep>,
}

/// A precheck of a [`PlannedRun`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedCheck {
    /// Its id.
    pub id: String,
    /// `ok`, `failed`, or `not-run` (prechecks not asked for, or not reached).
    pub status: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A step of a [`PlannedRun`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// How deep it is nested (0: a step of the runbook).
    pub depth: usize,
    /// Its path (`roll[*].restart` inside a loop).
    pub path: String,
    /// What it would do, rendered as far as the values known before the run allow, masked.
    pub text: String,
}

/// `POST /runs/{id}/approve` and `/reject`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decide {
    /// Why.
    #[serde(default)]
    pub comment: Option<String>,
    /// The gate's path, when the run has several open.
    #[serde(default)]
    pub step: Option<String>,
    /// Secret parameters given again (only those the holder was not given).
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// `POST /runs/{id}/resume`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeRun {
    /// Run the in-flight step at this path again.
    #[serde(default)]
    pub retry_step: Option<String>,
    /// Treat the in-flight step at this path as done.
    #[serde(default)]
    pub skip_step: Option<String>,
    /// Adopt the runbook files as they are now.
    #[serde(default)]
    pub reload: bool,
    /// Go on from what is intact of a damaged run.
    #[serde(default)]
    pub accept_loss: bool,
    /// Continue a paused run (`POST /runs/{id}/unpause` sets it).
    #[serde(default)]
    pub unpause: bool,
    /// Why (journaled with the operator's decision).
    #[serde(default)]
    pub comment: Option<String>,
    /// Secret parameters given again.
    #[serde(default)]
    pub params: Map<String, Value>,
}

/// `POST /runs/{id}/abort`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortRun {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Skip the runbook's cleanup steps.
    #[serde(default)]
    pub no_cleanup: bool,
}

/// `POST /runs/{id}/pause`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRun {
    /// Why.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The answer to a pause: the run's state now — `paused`, or still `running` or `sleeping`
/// when its step in flight had not finished within a minute (it pauses once it does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PausedRun {
    /// The run.
    pub run: RunId,
    /// Its state now.
    pub state: RunState,
    /// Why it is in that state, as journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to starting, approving, rejecting or resuming a run: the run now executes in
/// the holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The run.
    pub run: RunId,
    /// The run's last record before this action: a follower that comes later counts a park
    /// only after it.
    pub since: u64,
    /// For a verdict: whether it approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Where the holder writes the run's output, when it writes it to a file of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// The answer to an abort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aborted {
    /// The run.
    pub run: RunId,
    /// Its state now (`aborted`).
    pub state: RunState,
    /// Who aborted it, and why, as journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One run of `GET /runs` (newest first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedRun {
    /// The run's summary.
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Whether it executes right now: in the holder, or — on a journal shared by several
    /// executors — in the executor that owns it.
    #[serde(default)]
    pub active: bool,
    /// The executor that owns it, on a journal shared by several executors (etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A record with its run: an element of `GET /runs/{id}/records`, the data of an event of
/// `GET /runs/{id}/events`, a line of `--output json` and of the follow mirror. `R` is
/// [`Record`] to read and `&Record` to write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord<R = Record> {
    /// The run.
    pub run: RunId,
    /// The record.
    #[serde(flatten)]
    pub record: R,
}

/// `GET /runs/{id}`, and `status RUN --output json`: a run as its records tell it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run.
    pub run: RunId,
    /// The runbook's name.
    pub runbook: String,
    /// Its state.
    pub state: RunState,
    /// Why it is in that state, when known.
    pub reason: Option<String>,
    /// Who started it.
    pub started_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last record was written.
    pub updated_at: DateTime<Utc>,
    /// What started it, if not a person.
    pub trigger: Option<Trigger>,
    /// The lock key it holds (until it ends).
    pub lock: Option<String>,
    /// Its steps, in the order they started.
    pub steps: Vec<StepDetail>,
    /// Its gates, open or decided.
    pub gates: Vec<GateDetail>,
    /// The gate it waits at.
    pub open_gate: Option<OpenGate>,
    /// The step that needs an operator's decision.
    pub attention: Option<Attention>,
    /// What happened that an on-call person must hear about, oldest first: the events webhooks
    /// are told (only in the holder's answers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub happened: Vec<Happened>,
    /// Whether it executes right now, in the holder or in the executor that owns it (only in
    /// the holder's answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// What an operator may do to it now (the web page's buttons): decided from its records
    /// alone, by [`crate::engine::actions`], by the same rules that refuse the others.
    #[serde(default)]
    pub actions: Vec<RunAction>,
    /// The executor that owns it, on a journal shared by several executors (etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Something an operator may do to a run as it stands: an API call and a button of its page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAction {
    /// What.
    pub action: ActionKind,
    /// The step it names: the open gate (approve, reject), or the step that failed or needs
    /// a decision (retry, skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

/// The kinds of [`RunAction`], each one call of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// `POST /runs/{id}/approve` with the gate as `step`.
    Approve,
    /// `POST /runs/{id}/reject` with the gate as `step`.
    Reject,
    /// `POST /runs/{id}/pause`: stop at the next step boundary.
    Pause,
    /// `POST /runs/{id}/unpause`.
    Unpause,
    /// `POST /runs/{id}/resume` with `retry_step`.
    Retry,
    /// `POST /runs/{id}/resume` with `skip_step`.
    Skip,
    /// `POST /runs/{id}/abort` (with or without `no_cleanup`).
    Abort,
}

/// A step of a [`RunDetail`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepDetail {
    /// Its path.
    pub path: String,
    /// Its kind.
    pub kind: Option<String>,
    /// `running`, `succeeded`, `failed`, ….
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// How long it took.
    pub duration_ms: Option<u64>,
    /// What it does, in one line.
    pub describe: String,
    /// Why it failed (or will be retried).
    pub error: Option<String>,
}

/// An event of a run worth telling an on-call person (a webhook's `event`, on the web page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Happened {
    /// `gate-opened`, `gate-expired`, `run-needs-attention`, `run-aborted`, `run-failed`,
    /// `run-succeeded`.
    pub event: String,
    /// When it was journaled.
    pub at: DateTime<Utc>,
    /// The gate, for gate events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What happened, in words (the webhook's text without the run's name).
    pub text: String,
}

/// A gate of a [`RunDetail`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateDetail {
    /// Its path.
    pub path: String,
    /// What it asks.
    pub prompt: String,
    /// When it fails by itself.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether the run's starter may not approve it.
    pub four_eyes: bool,
    /// The verdict, once given.
    pub decision: Option<Verdict>,
    /// Distinct people who must approve.
    #[serde(default = "one")]
    pub approvals: u32,
    /// Who may decide (empty: anyone).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Who approved so far.
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// What its expiry means (`approve`, `reject`, `fail`).
    #[serde(default)]
    pub on_timeout: GateTimeout,
    /// Set once it expired with nobody deciding: what that meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired: Option<GateTimeout>,
}

fn one() -> u32 {
    1
}

/// A gate's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Approved (or rejected).
    pub approved: bool,
    /// By whom.
    pub by: String,
    /// Why.
    pub comment: Option<String>,
}

/// The gate a run waits at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenGate {
    /// Its path.
    pub path: String,
    /// What it asks.
    pub prompt: String,
    /// Whether the run's starter may not approve it.
    pub four_eyes: bool,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// What its expiry means.
    #[serde(default)]
    pub on_timeout: GateTimeout,
    /// Distinct people who must approve.
    #[serde(default = "one")]
    pub approvals: u32,
    /// Who may decide (empty: anyone).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Who approved so far.
    #[serde(default)]
    pub approved_by: Vec<String>,
}

/// The step a run needs a decision about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attention {
    /// Its path.
    pub path: String,
    /// What it was doing.
    pub detail: String,
    /// The two commands that decide.
    pub commands: Vec<String>,
}

/// `GET /schedules` (and `schedule list --output json`): a schedule with its journaled state
/// and next fire times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleStatus {
    /// Its name.
    pub name: String,
    /// The runbook it runs, as shown to people.
    pub runbook: String,
    /// Its cron expression.
    pub cron: String,
    /// The time zone the expression is read in.
    pub timezone: String,
    /// What happens to a fire while a run of it is unfinished.
    pub overlap: Overlap,
    /// What happens to fires missed while nothing was serving.
    pub catch_up: CatchUp,
    /// Whether it is paused.
    pub paused: bool,
    /// Its latest fire time handled.
    pub last_fire: Option<DateTime<Utc>>,
    /// The run its latest fire started.
    pub last_run: Option<RunId>,
    /// Fires waiting for an unfinished run to end.
    pub queued: Vec<DateTime<Utc>>,
    /// Its next fire times (none while paused).
    pub next: Vec<DateTime<Utc>>,
    /// Its latest fires, newest first.
    pub history: Vec<RecentFire>,
}

/// A fire of a [`ScheduleStatus`], with the state of the run it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentFire {
    /// The fire and what it led to.
    #[serde(flatten)]
    pub fired: Fired,
    /// The state of the run it started, as the journal has it now (absent when it started
    /// none, or the run is not in the journal any more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
}

/// The data of an `output` event of `GET /runs/{id}/events?output=true`: a part of a running
/// step's stdout or stderr, masked as the journal masks it, sent as soon as it was read (see
/// `engine::live`). Not journaled: the step's whole output is journaled with its outcome, and
/// that is the truth once it comes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The run.
    pub run: RunId,
    /// The step's path.
    pub path: String,
    /// The attempt it belongs to.
    pub attempt: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// Where `text` begins in the stream's masked text of this attempt (in bytes of UTF-8): a
    /// part that joins what a follower has is at its length; a larger offset means parts were
    /// missed (or dropped from the start of a long output).
    pub offset: u64,
    /// The text.
    pub text: String,
}

/// An operation that continues a run in the foreground of whoever holds the journal: what the
/// command line asks for with `run`, `resume`, `approve` and `reject`, and what `--detach` hands
/// the background process that goes on with it — on its standard input, never on its command
/// line, where every user of the machine could read a secret parameter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Start a run.
    Start {
        /// A runbook name or file.
        target: String,
        /// `name=value` pairs.
        params: Vec<(String, String)>,
        /// The run's id, when chosen beforehand.
        id: Option<RunId>,
    },
    /// Resume a run.
    Resume {
        /// A run id or prefix.
        run: String,
        /// Run the in-flight step at this path again.
        retry_step: Option<String>,
        /// Treat the in-flight step at this path as done.
        skip_step: Option<String>,
        /// Adopt the runbook files as they are now.
        reload: bool,
        /// Go on from what is intact of a damaged run.
        accept_loss: bool,
        /// Continue a paused run.
        unpause: bool,
        /// Why.
        comment: Option<String>,
        /// `name=value` pairs.
        params: Vec<(String, String)>,
    },
    /// Approve or reject a run's open gate and continue the run.
    Decide {
        /// A run id or prefix.
        run: String,
        /// Approve (or reject).
        approved: bool,
        /// The gate's path.
        step: Option<String>,
        /// Why.
        comment: Option<String>,
        /// `name=value` pairs.
        params: Vec<(String, String)>,
    },
}

/// The line the background process of `--detach` writes on its standard output once the run
/// executes (or the holder of the journal took it on): the command line that started it
/// prints where the run goes on, and returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachedReady {
    /// The run.
    pub run: RunId,
    /// The process that executes it.
    pub pid: u32,
    /// Where its output goes, when to a file of its own.
    pub log: Option<PathBuf>,
}

/// A decision on a run, sent through the store to the executor that owns the run (on a journal
/// shared by several executors, [`runbook_journals::Fleet::ask`]): the owner performs it as if
/// its own API had been called by `who`, and answers with an [`OwnerAnswer`]. It travels
/// through the store, so it never carries a secret value: the asker refuses a decision that
/// gives a secret parameter instead of sending it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OwnerRequest {
    /// The run.
    pub run: RunId,
    /// Who decides (recorded in the run's journal as the decider).
    pub who: String,
    /// What is asked.
    pub action: OwnerAction,
}

/// What an [`OwnerRequest`] asks of the owner: the body of the API call it stands for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", content = "body", rename_all = "snake_case")]
pub enum OwnerAction {
    /// `POST /runs/{id}/approve`.
    Approve(Decide),
    /// `POST /runs/{id}/reject`.
    Reject(Decide),
    /// `POST /runs/{id}/resume` (and `/unpause`).
    Resume(ResumeRun),
    /// `POST /runs/{id}/abort`.
    Abort(AbortRun),
    /// `POST /runs/{id}/pause`.
    Pause(PauseRun),
}

impl OwnerAction {
    /// The parameters given with it (names and values).
    pub fn params(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Approve(d) | Self::Reject(d) => Some(&d.params),
            Self::Resume(r) => Some(&r.params),
            Self::Abort(_) | Self::Pause(_) => None,
        }
    }
}

/// The owner's answer to an [`OwnerRequest`]: what its API would have answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", content = "body", rename_all = "snake_case")]
pub enum OwnerAnswer {
    /// The run goes on in the owner (approve, reject, resume).
    Accepted(Accepted),
    /// The run is aborted.
    Aborted(Aborted),
    /// The run is paused (or pauses once its step in flight ends).
    Paused(PausedRun),
    /// The owner refused or failed, of this kind.
    Error(ErrorBody),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_travels_with_its_run_first_and_reads_back_the_same() {
        let record = Record {
            seq: 3,
            at: DateTime::from_timestamp(1_700_000_000, 0).expect("a time"),
            event: runbook_journals::Event::StateChanged {
                state: RunState::Waiting,
                reason: Some("waiting for approval at `confirm`".into()),
            },
        };
        let run = RunId(ulid::Ulid::nil());
        let text = serde_json::to_string(&RunRecord {
            run,
            record: &record,
        })
        .expect("serializes");
        assert!(
            text.starts_with(r#"{"run":"00000000000000000000000000","seq":3,"#),
            "{text}"
        );
        let back: RunRecord = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, RunRecord { run, record });
    }

    #[test]
    fn the_error_kind_travels_as_a_kebab_case_word_and_may_be_absent() {
        let body = ErrorBody {
            error: "run x needs attention".into(),
            kind: Some(Kind::NeedsDecision),
            params: Vec::new(),
        };
        let text = serde_json::to_string(&body).expect("serializes");
        assert_eq!(
            text,
            r#"{"error":"run x needs attention","kind":"needs-decision"}"#
        );
        assert_eq!(
            serde_json::from_str::<ErrorBody>(&text).expect("parses"),
            body
        );
        let old: ErrorBody = serde_json::from_str(r#"{"error":"boom"}"#).expect("parses");
        assert_eq!(old.kind, None);
    }

    #[test]
    fn a_request_to_the_owner_and_its_answer_travel_tagged_and_read_back_the_same() {
        let request = OwnerRequest {
            run: RunId(ulid::Ulid::nil()),
            who: "alice".into(),
            action: OwnerAction::Approve(Decide {
                comment: Some("green".into()),
                ..Decide::default()
            }),
        };
        let text = serde_json::to_string(&request).expect("serializes");
        assert_eq!(
            text,
            r#"{"run":"00000000000000000000000000","who":"alice","action":{"action":"approve","body":{"comment":"green","step":null,"params":{}}}}"#
        );
        assert_eq!(
            serde_json::from_str::<OwnerRequest>(&text).expect("parses"),
            request
        );
        let answer = OwnerAnswer::Error(ErrorBody {
            error: "run x is not waiting at a gate".into(),
            kind: Some(Kind::Refused),
            params: Vec::new(),
        });
        let text = serde_json::to_string(&answer).expect("serializes");
        assert_eq!(
            text,
            r#"{"answer":"error","body":{"error":"run x is not waiting at a gate","kind":"refused"}}"#
        );
        assert_eq!(
            serde_json::from_str::<OwnerAnswer>(&text).expect("parses"),
            answer
        );
    }

    #[test]
    fn requests_from_an_older_or_terser_caller_take_their_defaults() {
        let start: StartRun = serde_json::from_str(r#"{"runbook":"hello"}"#).expect("parses");
        assert_eq!(
            start,
            StartRun {
                runbook: "hello".into(),
                ..StartRun::default()
            }
        );
        let decide: Decide = serde_json::from_str("{}").expect("parses");
        assert_eq!(decide, Decide::default());
        let accepted: Accepted =
            serde_json::from_str(r#"{"run":"00000000000000000000000000","since":0}"#)
                .expect("parses");
        assert_eq!(accepted.log, None);
    }
}
