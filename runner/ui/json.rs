//! `--output json`: every command prints JSON documents, one per line on stdout, through
//! [`print`]; a run's records as they commit ([`JsonLines`]), and the documents of the commands
//! that are not records, defined here. The field names are a contract, listed in the README's
//! "JSON output": fields are added, never renamed or given another meaning. Nothing here is
//! printed in clear that the journal holds masked.

use runbook_journals::{Record, RunId};
use serde::Serialize;

use crate::diag::Problem;
use crate::engine::log::Observer;
use crate::model::{Action, Step};

/// Prints one JSON document as a line on stdout (a closed pipe is handled as
/// [`crate::ui::stdout`] says).
pub fn print(document: &impl Serialize) {
    let line = serde_json::to_string(document).expect("output documents serialize");
    crate::ui::stdout::outln!("{line}");
}

/// Prints records as JSON lines.
pub struct JsonLines;

/// A record as a JSON line: `{"run": …, "seq": …, "at": …, "event": …, …}`
/// ([`crate::wire::RunRecord`]).
pub fn record_line(run: RunId, record: &Record) -> String {
    serde_json::to_string(&crate::wire::RunRecord { run, record }).expect("records serialize")
}

impl Observer for JsonLines {
    fn record(&self, run: RunId, record: &Record) {
        print(&crate::wire::RunRecord { run, record });
    }
}

/// `check`: one problem of a target (`"event": "problem"`).
#[derive(Debug, Serialize)]
pub struct CheckProblem<'a> {
    /// Always `problem`.
    pub event: &'static str,
    /// The name or file given to `check`.
    pub target: &'a str,
    /// The problem.
    #[serde(flatten)]
    pub problem: &'a Problem,
}

/// `check`: the verdict on a target, after its problems (`"event": "checked"`).
#[derive(Debug, Serialize)]
pub struct Checked<'a> {
    /// Always `checked`.
    pub event: &'static str,
    /// The name or file given to `check`.
    pub target: &'a str,
    /// The runbook's name, when it loaded.
    pub runbook: Option<&'a str>,
    /// Where it was found, when it loaded.
    pub origin: Option<String>,
    /// Whether it can run (no errors; warnings allowed).
    pub ok: bool,
    /// How many errors.
    pub errors: usize,
    /// How many warnings.
    pub warnings: usize,
}

/// `show`: a runbook, its parameters and its steps.
#[derive(Debug, Serialize)]
pub struct Shown {
    /// Its name.
    pub runbook: String,
    /// Where it was found.
    pub origin: String,
    /// What it does.
    pub description: Option<String>,
    /// Its parameters, in file order (a secret's default is masked).
    pub params: Vec<crate::wire::ParamInfo>,
    /// The lock key template.
    pub lock: Option<String>,
    /// The prechecks.
    pub prechecks: Vec<ShownStep>,
    /// The steps.
    pub steps: Vec<ShownStep>,
    /// The steps run once if the run fails.
    pub on_failure: Vec<ShownStep>,
    /// The steps run when the run is aborted.
    pub on_abort: Vec<ShownStep>,
}

/// A step of [`Shown`].
#[derive(Debug, Serialize)]
pub struct ShownStep {
    /// Its id, or `#N` (its 1-based position) when it has none: its segment of a step path.
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// `shell`, `http`, `gate`, `foreach`, `parallel`, `call`, …
    pub kind: String,
    /// The runbook a `call` runs (a template).
    pub calls: Option<String>,
    /// The steps of a `foreach`, the branches of a `parallel`.
    pub steps: Vec<ShownStep>,
}

impl ShownStep {
    /// The steps as shown.
    pub fn list(steps: &[Step]) -> Vec<Self> {
        steps
            .iter()
            .enumerate()
            .map(|(i, s)| Self {
                id: s.segment(i),
                name: s.name.clone(),
                kind: s.action.kind().to_owned(),
                calls: match &s.action {
                    Action::Call { runbook, .. } => Some(runbook.text.clone()),
                    _ => None,
                },
                steps: match &s.action {
                    Action::Foreach { steps, .. } | Action::Parallel { branches: steps } => {
                        Self::list(steps)
                    }
                    _ => Vec::new(),
                },
            })
            .collect()
    }
}

/// `init`: the files written (`"event": "written"`).
#[derive(Debug, Serialize)]
pub struct Written {
    /// Always `written`.
    pub event: &'static str,
    /// The runbook written.
    pub runbook: String,
    /// Its file.
    pub file: String,
    /// The schema file written beside it for editors, if it was not there yet.
    pub schema: Option<String>,
}

/// `schedule pause|resume|trigger` (`"event": "schedule"`).
#[derive(Debug, Serialize)]
pub struct ScheduleChanged<'a> {
    /// Always `schedule`.
    pub event: &'static str,
    /// The schedule.
    pub schedule: &'a str,
    /// `paused`, `resumed`, or how a fire went (`started`, `skipped`, …).
    pub action: String,
    /// The run a fire started.
    pub run: Option<RunId>,
}

/// What `serve` says about itself, besides the records of the runs it executes
/// (`"event": "serve"`).
#[derive(Debug, Serialize)]
pub struct ServeEvent<'a> {
    /// Always `serve`.
    pub event: &'static str,
    /// `listening`, `resuming`, `resume_failed`, `gate_expires`, `gate_expired`, `stopping`,
    /// `stopped`; on a shared journal also `joined`, `holding`, `asked`, `suspended`, `held`,
    /// `lost`, `left`.
    pub what: &'a str,
    /// The API's URL (`listening`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<&'a str>,
    /// The journal directory (`listening`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// How many schedules it fires (`listening`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedules: Option<usize>,
    /// The run concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// The gate concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<&'a str>,
    /// When (`gate_expires`); when the lease's standing changed (`joined`, `suspended`,
    /// `held`, `lost`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// The signal (`stopping`) or the error (`resume_failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// On a journal shared by several executors: this executor's identity (`joined`,
    /// `resuming`, `holding`, `suspended`, `held`, `lost`, `left`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,
}

impl<'a> ServeEvent<'a> {
    /// An event with nothing but its name.
    pub fn new(what: &'a str) -> Self {
        Self {
            event: "serve",
            what,
            url: None,
            journal: None,
            schedules: None,
            run: None,
            step: None,
            at: None,
            detail: None,
            executor: None,
        }
    }
}
