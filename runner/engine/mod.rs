//! The engine: starting, resuming, deciding and aborting runs over the journal.
//!
//! A run is an explicit state machine over its journal (see [`view`]): every operation here
//! reads the run's records, checks the operation is allowed in the run's state, appends what
//! it decides, and lets the executor ([`exec`]) walk the steps, replaying what the journal
//! knows and running only what it does not.

pub mod actions;
pub mod control;
pub mod ctx;
pub mod decide;
pub mod exec;
pub mod live;
pub mod log;
mod orphans;
pub mod parallel;
pub mod pause;
pub mod plan;
pub mod prompt;
pub mod readonly;
mod verdict;
pub mod view;

use std::fmt::Write as _;
use std::sync::Arc;

use runbook_journals::{
    Event, Journal, JournalError, OperatorAction, RunId, RunStarted, RunState, SkipReason,
};
use runbook_steps::{Cancel, Registry};
use serde_json::{Map, Value, json};

use crate::diag::Diagnostics;
use crate::library::{Files, Library, LiveFiles, PinnedFiles};
use crate::link::{self, Assume, Book, Resolver};
use crate::model::Runbook;
use crate::resupply::{self, Given};
use crate::secrets::Redactor;
use crate::source::Sources;
use crate::ui::hint;
use ctx::Ctx;
use exec::{Exec, ExecError, Flow, Stop};
use log::{Observer, RunLog};
use pause::{Pause, PauseRequest};
use view::{RunView, TransitionError};

/// How gates are answered when a run reaches one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateMode {
    /// Approve every gate (`--yes`), except four-eyes gates for the run's starter.
    Yes,
    /// Ask on the terminal.
    Prompt,
    /// Park the run at the gate and exit (`--detach`, or no terminal).
    Detach,
}

/// How an execution of a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step succeeded.
    Succeeded,
    /// A step failed (or a precheck refused the run).
    Failed {
        /// The failed step, if a step failed.
        path: Option<String>,
        /// Why.
        error: String,
    },
    /// Parked at a gate.
    Parked {
        /// The gate.
        path: String,
        /// Its prompt.
        prompt: String,
    },
    /// A step in flight when a process died needs an operator's decision.
    NeedsAttention {
        /// The step.
        path: String,
        /// What it was doing.
        detail: String,
    },
    /// Stopped by a signal.
    Interrupted {
        /// The signal's name.
        signal: String,
    },
    /// Aborted by an operator.
    Aborted,
    /// Paused by an operator at a step boundary.
    Paused {
        /// Who paused it.
        by: String,
        /// Why.
        comment: Option<String>,
    },
}

/// What can stop an engine operation before or outside the steps.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No runbook by that name or path.
    #[error("{}", not_found(.0))]
    NotFound(String),
    /// The runbook has problems (rendered with positions).
    #[error("{rendered}")]
    Invalid {
        /// The problems, rendered.
        rendered: String,
        /// How many are errors.
        count: usize,
        /// Each problem (warnings too), for machines.
        problems: Vec<crate::diag::Problem>,
    },
    /// Parameter values are missing or wrong.
    #[error("{}", lines(.0))]
    Params(Vec<crate::params::ParamProblem>),
    /// The operation does not fit the run's state.
    #[error("{0}")]
    Refused(String),
    /// A resume found a step that needs a decision.
    #[error("{0}")]
    NeedsDecision(String),
    /// A precheck failed on resume; nothing else changed.
    #[error("precheck `{id}` failed, so the run was not resumed: {error}")]
    Precheck {
        /// The precheck.
        id: String,
        /// Why.
        error: String,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The journal does not fit the runbook or itself.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// Problems one per line, as the command line prints them.
fn lines(problems: &[crate::params::ParamProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl From<TransitionError> for EngineError {
    fn from(e: TransitionError) -> Self {
        Self::Exec(ExecError::Transition(e))
    }
}

/// Starting a run.
pub struct Start<'a> {
    /// A runbook name or file path.
    pub target: &'a str,
    /// `-p name=value` pairs.
    pub params: &'a [(String, String)],
    /// The run's id, when the caller chose it beforehand (a schedule journals it first).
    pub id: Option<RunId>,
    /// What started the run, if not a person.
    pub trigger: Option<runbook_journals::Trigger>,
}

impl<'a> Start<'a> {
    /// A run of `target` with `params`, started by a person.
    pub fn new(target: &'a str, params: &'a [(String, String)]) -> Self {
        Self {
            target,
            params,
            id: None,
            trigger: None,
        }
    }
}

/// A run ready to execute: created (its lock taken), or checked and loaded for a resume.
pub struct Created {
    /// The run's id.
    pub id: RunId,
    view: RunView,
    book: Book,
    params: Map<String, Value>,
    log: RunLog,
    /// The events a resume appends once the prechecks passed.
    resume_events: Vec<Event>,
    /// The events that take up a failed run again, appended before its prechecks run.
    reopen: Vec<Event>,
}

/// Resuming a run.
#[derive(Clone, Default)]
pub struct Resume {
    /// Run the in-flight step at this path again.
    pub retry_step: Option<String>,
    /// Treat the in-flight step at this path as done.
    pub skip_step: Option<String>,
    /// Adopt the runbook files as they are now instead of the pinned ones.
    pub reload: bool,
    /// Parameter values given (only secret ones the run needs again pass; see [`resupply`]).
    pub params: Given,
    /// The operator accepts that a damaged run's history is what is intact of it, and the run
    /// continues from there (the next effect treated as possibly started).
    pub accept_loss: bool,
    /// Continue a paused run (`unpause`).
    pub unpause: bool,
    /// Why, in the operator's words (journaled with the decision).
    pub comment: Option<String>,
}

/// Aborting a run.
#[derive(Clone, Default)]
pub struct Abort {
    /// Why.
    pub reason: Option<String>,
    /// Skip the runbook's cleanup steps (`--no-cleanup`).
    pub no_cleanup: bool,
    /// Parameter values given (secret ones the cleanup steps need again).
    pub params: Given,
}

/// What an abort does next.
pub enum Aborting {
    /// It is journaled: there was no cleanup to run.
    Done(Outcome),
    /// The cleanup steps run, then the run ends aborted.
    Cleanup(Box<CleanupRun>),
}

/// An aborted run's cleanup steps, ready to run.
pub struct CleanupRun {
    log: RunLog,
    view: RunView,
    book: Book,
    params: Map<String, Value>,
    /// Where their records go: `on_abort.` or `on_failure.`.
    prefix: &'static str,
    steps: Vec<crate::model::Step>,
    why: String,
}

/// Runs runbooks against a journal.
pub struct Engine {
    /// The journal.
    pub journal: Arc<dyn Journal>,
    /// Step kinds.
    pub registry: Arc<Registry>,
    /// Who sees committed records.
    pub observers: Vec<Arc<dyn Observer>>,
    /// Fires on Ctrl-C / SIGTERM.
    pub interrupt: Cancel,
    /// An operator's pause of the run this engine executes.
    pub pause: Pause,
    /// Who is acting.
    pub who: String,
    /// How gates are answered.
    pub gates: GateMode,
    /// Where runbooks are found.
    pub library: Library,
}

/// The message for a runbook that cannot be found by name or path.
fn not_found(target: &str) -> String {
    if is_path(target) {
        return format!("no runbook file `{target}`");
    }
    match runbook_meant(target) {
        Some(name) => format!(
            "no runbook `{target}` in ./runbooks, $RUNBOOK_PATH or the bundled library; did you mean `{name}`?"
        ),
        None => format!(
            "no runbook `{target}` in ./runbooks, $RUNBOOK_PATH or the bundled library (`runbook list` shows them)"
        ),
    }
}

/// Whether a target not found names a file rather than a runbook.
fn is_path(target: &str) -> bool {
    let p = std::path::Path::new(target);
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
        || target.contains('/') && (target.starts_with('.') || p.is_absolute())
}

/// The runbook name a target that was not found probably meant.
pub fn runbook_meant(target: &str) -> Option<String> {
    if is_path(target) {
        return None;
    }
    let known = Library::from_env().list();
    crate::load::suggest(target, known.iter().map(|e| e.name.as_str())).map(str::to_owned)
}

/// Renders diagnostics into an [`EngineError::Invalid`].
pub fn invalid(diags: &Diagnostics, sources: &Sources) -> EngineError {
    EngineError::Invalid {
        rendered: diags.render(sources, false),
        count: diags.errors(),
        problems: diags.problems(sources),
    }
}

/// Loads and links a runbook as it is on disk now, for the given parameter values (`None`:
/// for checking, trying defaults and enum values).
pub fn load_live(
    target: &str,
    library: &Library,
    registry: &Registry,
    params: Option<&Map<String, Value>>,
) -> Result<Book, EngineError> {
    let origin = library
        .find(target)
        .ok_or_else(|| EngineError::NotFound(target.to_owned()))?;
    let assume = match params {
        Some(p) => Assume::Values(p),
        None => Assume::Everything,
    };
    link::link(
        &origin,
        &LiveFiles,
        &Resolver::Library(library),
        &assume,
        registry,
    )
    .map_err(|e| invalid(&e.diags, &e.sources))
}

/// Loads a run's main runbook from `files`, refusing it with all its problems if it has an
/// error; what it calls is linked from it afterwards (see [`link::Main::link`]), so the
/// runbook is read and loaded once.
pub(crate) fn load_main<'f>(
    origin: &str,
    files: &'f dyn Files,
    registry: &Registry,
) -> Result<link::Main<'f>, EngineError> {
    let main =
        link::load_main(origin, files, registry).map_err(|e| invalid(&e.diags, &e.sources))?;
    if main.problems().errors() > 0 {
        return Err(invalid(main.problems(), main.sources()));
    }
    Ok(main)
}

impl Engine {
    /// Links a loaded main runbook with what it calls from the library, for these values.
    fn link_main(
        &self,
        loaded: link::Main<'_>,
        values: &crate::params::Values,
    ) -> Result<Book, EngineError> {
        loaded
            .link(
                &Resolver::Library(&self.library),
                &Assume::Values(&values.clear),
                &self.registry,
            )
            .map_err(|e| invalid(&e.diags, &e.sources))
    }

    fn log(&self, redactor: Redactor) -> RunLog {
        RunLog::new(self.journal.clone(), redactor, self.observers.clone())
    }

    /// Starts a run.
    pub async fn start(&self, req: Start<'_>) -> Result<(RunId, Outcome), EngineError> {
        let created = self.create(req)?;
        let id = created.id;
        Ok((id, self.run_created(created).await?))
    }

    /// Executes a created run.
    pub async fn run_created(&self, created: Created) -> Result<Outcome, EngineError> {
        let Created {
            view,
            book,
            params,
            log,
            resume_events,
            reopen,
            ..
        } = created;
        self.execute(view, &book, params, &log, resume_events, reopen)
            .await
    }

    /// Creates a run: loads and links the runbook, resolves its parameters, and journals its
    /// first events, taking its lock. Nothing runs yet.
    pub fn create(&self, req: Start<'_>) -> Result<Created, EngineError> {
        let origin = self
            .library
            .find(req.target)
            .ok_or_else(|| EngineError::NotFound(req.target.to_owned()))?;
        let loaded = load_main(&origin, &LiveFiles, &self.registry)?;
        let main = loaded.runbook().clone();
        let values =
            crate::params::resolve(&main, req.params, None).map_err(EngineError::Params)?;
        crate::params::secrets_present(
            &main,
            &values,
            loaded.sources().files().iter().map(|f| f.text.as_str()),
        )
        .map_err(EngineError::Params)?;
        let book = self.link_main(loaded, &values)?;
        let redactor = values.redactor();
        let lock =
            match &main.lock {
                Some(t) => Some(
                    crate::template::render_str(&t.text, &json!({ "params": values.clear }))
                        .map_err(|e| {
                            EngineError::Params(vec![crate::params::ParamProblem::general(
                                format!("the lock key does not render: {}", e.message),
                            )])
                        })?,
                ),
                None => None,
            };
        // Whether the key depends on a secret: rendered over the secret parameters' shadow it
        // comes out different (a non-secret value that merely contains a secret's text does
        // not count).
        if let (Some(t), Some(l)) = (&main.lock, &lock) {
            let shadow = crate::secrets::shadow_params(&main, &values.clear);
            let over_shadow =
                crate::template::render_str(&t.text, &json!({ "params": shadow })).ok();
            if over_shadow.as_deref() != Some(l.as_str()) {
                return Err(EngineError::Params(vec![
                    crate::params::ParamProblem::general(
                        "the lock key is built from a secret parameter; lock keys are stored in clear, so build them from non-secret parameters",
                    ),
                ]));
            }
        }
        let id = req.id.unwrap_or_default();
        let started = RunStarted {
            runbook: main.name.clone(),
            params: values.journaled.clone(),
            sources: book.files.clone(),
            links: book.links.clone(),
            lock: lock.clone(),
            started_by: self.who.clone(),
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
            trigger: req.trigger,
        };
        let log = self.log(redactor);
        let records = log.create(
            id,
            lock.as_deref(),
            &[
                Event::RunStarted(started),
                Event::StateChanged {
                    state: RunState::Running,
                    reason: None,
                },
            ],
        )?;
        let view = RunView::from_records(id, &records)?;
        Ok(Created {
            id,
            view,
            book,
            params: values.clear,
            log,
            resume_events: Vec::new(),
            reopen: Vec::new(),
        })
    }

    /// Resumes a run that is not finished.
    pub async fn resume(&self, id: RunId, req: Resume) -> Result<Outcome, EngineError> {
        let prepared = self.prepare_resume(id, &req)?;
        self.run_created(prepared).await
    }

    /// Checks that a run can be resumed and loads it (pinned files, parameters, operator
    /// decisions); nothing is appended until it executes.
    pub fn prepare_resume(&self, id: RunId, req: &Resume) -> Result<Created, EngineError> {
        let (records, loss) = match self.journal.read(id) {
            Ok(_) if req.accept_loss => {
                return Err(EngineError::Refused(format!(
                    "the journal of run {id} is intact: there is no loss to accept"
                )));
            }
            Ok(records) => (records, None),
            Err(JournalError::Corrupt { seq, detail, .. }) if req.accept_loss => {
                let records = self.journal.salvage(id)?;
                if records.is_empty() {
                    return Err(EngineError::Refused(format!(
                        "none of run {id}'s records can be read, so it cannot be continued; \
                         `runbook abort {id}` ends it"
                    )));
                }
                (records, Some(format!("record {seq}: {detail}")))
            }
            Err(JournalError::Corrupt { seq, detail, .. }) => {
                return Err(EngineError::NeedsDecision(loss_message(id, seq, &detail)));
            }
            Err(e) => return Err(e.into()),
        };
        let mut view = RunView::from_records(id, &records)?;
        let decision = match (&req.retry_step, &req.skip_step) {
            (Some(_), Some(_)) => {
                return Err(EngineError::Refused(
                    "give either --retry-step or --skip-step, not both".into(),
                ));
            }
            (Some(p), None) => Some((p.clone(), OperatorAction::Retry)),
            (None, Some(p)) => Some((p.clone(), OperatorAction::Skip)),
            (None, None) => None,
        };
        let reopening = view.state == RunState::Failed;
        if reopening {
            self.check_reopen(&view, decision.as_ref())?;
        } else if view.state.is_terminal() {
            return Err(EngineError::Refused(format!(
                "run {id} has ended ({}); start a new run instead",
                view.state
            )));
        }
        if view.state == RunState::Paused && !req.unpause {
            return Err(EngineError::Refused(format!(
                "run {id} is paused ({}); `{} unpause {id}` continues it",
                view.reason.as_deref().unwrap_or("by an operator"),
                hint::runbook()
            )));
        }
        if req.unpause && view.state != RunState::Paused {
            return Err(EngineError::Refused(format!(
                "run {id} is not paused (it is {})",
                view.state
            )));
        }
        // Before anything is decided about a step in flight: nothing of its earlier attempt
        // may still be running beside what is decided.
        let stopped = orphans::stop_left_over(id, &records);
        let mut events = Vec::new();
        let mut reopen = Vec::new();
        if reopening && let Some((path, action)) = &decision {
            let verb = match action {
                OperatorAction::Retry => "retry",
                OperatorAction::Skip => "skip",
            };
            reopen.push(Event::RunReopened {
                by: self.who.clone(),
                comment: req.comment.clone(),
            });
            reopen.push(Event::StateChanged {
                state: RunState::Running,
                reason: Some(format!("reopened by {} to {verb} step `{path}`", self.who)),
            });
            // A retry of a loop or a call retries what failed inside it too.
            let inner = format!("{path}[");
            let child = format!("{path}.");
            for failed in view.failed() {
                let below = failed.starts_with(&inner) || failed.starts_with(&child);
                if failed == path || (*action == OperatorAction::Retry && below) {
                    events.push(self.operator_decided(failed, *action, req.comment.as_ref()));
                }
            }
            if *action == OperatorAction::Skip {
                events.push(skipped_by_operator(path));
            }
        } else if let Some((path, action)) = &decision {
            let in_flight = view.in_flight();
            let attention = view.attention.as_ref().map(|(p, _)| p.as_str());
            // A step that needs attention without ever having started as far as the journal
            // knows: a secret output to get again, or the first step after a journal loss.
            let recover = attention == Some(path.as_str())
                && view
                    .step(path)
                    .is_none_or(|s| matches!(s.status, view::StepStatus::Succeeded { .. }));
            if !in_flight.contains(&path.as_str()) && !recover {
                let listed = if in_flight.is_empty() {
                    "no step is in flight".to_owned()
                } else {
                    format!("in flight: {}", in_flight.join(", "))
                };
                return Err(EngineError::Refused(format!(
                    "step `{path}` of run {id} is not in flight ({listed})"
                )));
            }
            events.push(self.operator_decided(path, *action, req.comment.as_ref()));
            if *action == OperatorAction::Skip {
                events.push(skipped_by_operator(path));
            }
        } else if view.state == RunState::NeedsAttention
            && let Some((path, detail)) = &view.attention
        {
            return Err(EngineError::NeedsDecision(attention_message(
                id, path, detail,
            )));
        }
        let pinned = PinnedFiles::new(
            view.sources
                .iter()
                .map(|f| (f.origin.clone(), f.content.clone())),
        );
        let drift = if req.reload { Vec::new() } else { drift(&view) };
        let main_origin = view
            .sources
            .first()
            .map(|f| f.origin.clone())
            .ok_or_else(|| EngineError::Refused(format!("run {id} has no pinned source")))?;
        let files: &dyn Files = if req.reload { &LiveFiles } else { &pinned };
        let loaded = load_main(&main_origin, files, &self.registry)?;
        let main = loaded.runbook().clone();
        let given = resupply::merge(
            &main.name,
            &main.params,
            &view.started.params,
            &req.params,
            resupply::source_of,
        )
        .map_err(|refusals| {
            EngineError::Params(refusals.iter().map(resupply::Refusal::problem).collect())
        })?;
        let values = crate::params::resolve(&main, &given, Some(&view.started.params))
            .map_err(EngineError::Params)?;
        let book = if req.reload {
            let book = self.link_main(loaded, &values)?;
            events.insert(
                0,
                Event::SourceReloaded {
                    sources: book.files.clone(),
                    links: book.links.clone(),
                },
            );
            book
        } else {
            loaded
                .link(
                    &Resolver::Pinned(&view.links),
                    &Assume::Values(&values.clear),
                    &self.registry,
                )
                .map_err(|e| invalid(&e.diags, &e.sources))?
        };
        let redactor = values.redactor();
        let mut resume_events = vec![Event::Resumed {
            by: self.who.clone(),
            drift,
            orphans: stopped,
        }];
        if req.unpause {
            resume_events.push(Event::Unpaused {
                by: self.who.clone(),
                comment: req.comment.clone(),
            });
        }
        resume_events.extend(events);
        resume_events.push(Event::StateChanged {
            state: RunState::Running,
            reason: None,
        });
        let log = self.log(redactor);
        if let Some(detail) = loss {
            // The operator's decision is journaled now: it is what makes the run writable again.
            let records = log.accept_loss(
                id,
                &[Event::LossAccepted {
                    kept: view.last_seq,
                    detail,
                    by: self.who.clone(),
                }],
            )?;
            for record in &records {
                view.apply(record)?;
            }
        }
        Ok(Created {
            id,
            view,
            book,
            params: values.clear,
            log,
            resume_events,
            reopen,
        })
    }

    /// Checks that a failed run may be taken up again as the operator asks: a decision on a
    /// step whose failure ended the run, which is not a gate (a rejection is a verdict, not a
    /// failure to retry), and the run's lock free.
    fn check_reopen(
        &self,
        view: &RunView,
        decision: Option<&(String, OperatorAction)>,
    ) -> Result<(), EngineError> {
        let id = view.id;
        let failed = view.failed();
        let Some((path, _)) = decision else {
            let why = view.reason.as_deref().unwrap_or("it failed");
            return Err(EngineError::Refused(match failed.last() {
                Some(step) => {
                    let [retry, skip] = attention_commands(id, step);
                    format!(
                        "run {id} ended failed ({why}); to take it up again, decide about the step that failed:\n    {retry} --comment \"…\"   # run it again\n    {skip} --comment \"…\"    # treat it as done"
                    )
                }
                None => format!(
                    "run {id} ended failed before any step failed ({why}); it can be taken up again with --retry-step or --skip-step only at a failed step, so start a new run instead"
                ),
            }));
        };
        if !failed.contains(&path.as_str()) {
            let listed = if failed.is_empty() {
                "no step failed".to_owned()
            } else {
                format!("failed: {}", failed.join(", "))
            };
            return Err(EngineError::Refused(format!(
                "step `{path}` of run {id} did not fail ({listed})"
            )));
        }
        if actions::is_verdict(view, path) {
            return Err(EngineError::Refused(format!(
                "step `{path}` of run {id} is a gate that was decided; a verdict is not retried: start a new run instead"
            )));
        }
        if let Some(key) = &view.started.lock
            && let Some(holder) = self.journal.lock_holder(key)?
            && holder != id
        {
            return Err(JournalError::LockHeld {
                key: key.clone(),
                holder,
            }
            .into());
        }
        Ok(())
    }

    /// This operator's decision about a step, journaled with who and why.
    fn operator_decided(
        &self,
        path: &str,
        action: OperatorAction,
        comment: Option<&String>,
    ) -> Event {
        Event::OperatorDecided {
            path: path.to_owned(),
            action,
            by: self.who.clone(),
            comment: comment.cloned(),
        }
    }

    /// Approves or rejects the open gate of a run, then continues it.
    pub async fn decide(
        &self,
        id: RunId,
        approved: bool,
        step: Option<&str>,
        comment: Option<String>,
        params: &Given,
    ) -> Result<Outcome, EngineError> {
        let prepared = self.prepare_decide(id, approved, step, comment, params)?;
        self.run_created(prepared).await
    }

    /// Journals a verdict on a run's open gate and prepares the run to continue.
    pub fn prepare_decide(
        &self,
        id: RunId,
        approved: bool,
        step: Option<&str>,
        comment: Option<String>,
        params: &Given,
    ) -> Result<Created, EngineError> {
        let resume = Resume {
            params: params.clone(),
            ..Resume::default()
        };
        let records = self.journal.read(id)?;
        let view = RunView::from_records(id, &records)?;
        let open = view.open_gates();
        let (path, gate) = match step {
            Some(p) => match open.iter().find(|(gp, _)| *gp == p) {
                Some(found) => *found,
                None => {
                    return Err(EngineError::Refused(match view.gates.get(p) {
                        Some(g) => verdict::closed(id, p, g, &view),
                        None => format!("run {id} has no gate `{p}`"),
                    }));
                }
            },
            None => match open.as_slice() {
                [one] => *one,
                [] => {
                    // A verdict journaled by a process that died before acting on it: the
                    // same verdict again just continues the run.
                    let pending = view.gates.iter().find(|(p, g)| {
                        g.decision.as_ref().is_some_and(|d| d.0 == approved)
                            && view.step(p).is_some_and(|s| !s.status.is_final())
                    });
                    if pending.is_some() {
                        return self.prepare_resume(id, &resume);
                    }
                    // The gate the run last opened, if any, says why there is nothing to
                    // decide: decided already, or expired.
                    let last = view
                        .gates
                        .iter()
                        .max_by_key(|(_, g)| g.opened_at)
                        .map(|(p, g)| verdict::closed(id, p, g, &view));
                    return Err(EngineError::Refused(last.unwrap_or_else(|| {
                        format!("run {id} is not waiting at a gate (it is {})", view.state)
                    })));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|(p, _)| *p).collect();
                    return Err(EngineError::Refused(format!(
                        "run {id} has several open gates ({}); name one with --step",
                        names.join(", ")
                    )));
                }
            },
        };
        if view.state.is_terminal() {
            return Err(EngineError::Refused(format!(
                "run {id} has ended ({}); there is nothing to approve",
                view.state
            )));
        }
        // Refused (too late, not an approver, the starter of a four-eyes gate, a second
        // approval by one person): nothing is journaled and the run stays as it is.
        verdict::judge(
            id,
            path,
            gate,
            &view,
            &self.who,
            approved,
            chrono::Utc::now(),
        )
        .map_err(EngineError::Refused)?;
        // The run must be able to go on (its secret parameters given again, its runbook still
        // loading) before the verdict is journaled: a verdict that cannot be acted on would
        // leave the gate decided and the run stuck.
        let mut prepared = self.prepare_resume(id, &resume)?;
        // Through the run's own log: the comment is free text, scrubbed of the run's secrets.
        let records = prepared.log.append(
            id,
            prepared.view.last_seq,
            &[Event::GateDecided {
                path: path.to_owned(),
                approved,
                by: self.who.clone(),
                comment,
            }],
        )?;
        for record in &records {
            prepared.view.apply(record)?;
        }
        Ok(prepared)
    }

    /// Aborts a run that is not finished, releasing its lock: its cleanup steps run first
    /// (`on_abort`, or `on_failure` when the runbook has no `on_abort`), unless `no_cleanup`.
    /// Reads and the abort without cleanup happen on this thread (call it where blocking is
    /// fine); the cleanup steps run as any steps do.
    pub async fn abort(&self, id: RunId, req: Abort) -> Result<Outcome, EngineError> {
        match self.prepare_abort(id, &req)? {
            Aborting::Done(outcome) => Ok(outcome),
            Aborting::Cleanup(cleanup) => self.clean_up(*cleanup).await,
        }
    }

    /// Checks that run `id` can be aborted and stops what an executor that died left running
    /// of it. Without cleanup steps to run, journals the abort and is done; otherwise returns
    /// the cleanup to run ([`Engine::clean_up`]).
    pub fn prepare_abort(&self, id: RunId, req: &Abort) -> Result<Aborting, EngineError> {
        // Aborting is an operator's decision too: a run whose journal is damaged can be ended
        // from what is intact of it.
        let (records, loss) = match self.journal.read(id) {
            Ok(records) => (records, None),
            Err(JournalError::Corrupt { seq, detail, .. }) => {
                let records = self.journal.salvage(id)?;
                if records.is_empty() {
                    return Err(JournalError::Corrupt {
                        run: id,
                        seq,
                        detail,
                    }
                    .into());
                }
                (records, Some(format!("record {seq}: {detail}")))
            }
            Err(e) => return Err(e.into()),
        };
        let view = RunView::from_records(id, &records)?;
        if view.state.is_terminal() {
            return Err(EngineError::Refused(format!(
                "run {id} has ended ({}) already",
                view.state
            )));
        }
        let mut why = match &req.reason {
            Some(r) => format!("aborted by {}: {r}", self.who),
            None => format!("aborted by {}", self.who),
        };
        // What an executor that died left running of the run goes with it.
        for line in orphans::describe(&orphans::stop_left_over(id, &records)) {
            why.push_str("; ");
            why.push_str(&line);
        }
        // The cleanup runs over the run's pinned runbook and its parameters; a run whose
        // history is damaged, or whose runbook or secrets cannot be had, is ended without it,
        // saying why: an abort must always be possible.
        let cleanup = if req.no_cleanup {
            why.push_str(" (no cleanup: --no-cleanup)");
            None
        } else if loss.is_some() {
            None
        } else {
            match self.pinned(&view, &req.params) {
                Ok((book, values)) => {
                    let main = book.main().clone();
                    let (prefix, steps) = if main.on_abort.is_empty() {
                        ("on_failure.", main.on_failure.clone())
                    } else {
                        ("on_abort.", main.on_abort.clone())
                    };
                    (!steps.is_empty()).then(|| CleanupRun {
                        log: self.log(values.redactor()),
                        view: view.clone(),
                        book,
                        params: values.clear,
                        prefix,
                        steps,
                        why: why.clone(),
                    })
                }
                Err(e) => {
                    let _ = write!(why, "; its cleanup steps did not run: {e}");
                    None
                }
            }
        };
        if let Some(cleanup) = cleanup {
            return Ok(Aborting::Cleanup(Box::new(cleanup)));
        }
        let aborted = Event::StateChanged {
            state: RunState::Aborted,
            reason: Some(why),
        };
        // The reason is free text: scrubbed of the run's secrets this process can know — those
        // from `env:`/`file:` and those given with this abort (or held for the run by `serve`).
        let secrets = self.known_secrets(&view);
        let masked = |name: &str| {
            view.started.params.get(name) == Some(&Value::String(crate::secrets::MASK.into()))
        };
        for (name, value) in req.params.now.iter().chain(&req.params.held) {
            if masked(name) {
                secrets.add(value);
            }
        }
        let log = self.log(secrets);
        match loss {
            None => log.append(id, view.last_seq, &[aborted])?,
            Some(detail) => log.accept_loss(
                id,
                &[
                    Event::LossAccepted {
                        kept: view.last_seq,
                        detail,
                        by: self.who.clone(),
                    },
                    aborted,
                ],
            )?,
        };
        Ok(Aborting::Done(Outcome::Aborted))
    }

    /// Runs an aborted run's cleanup steps, then ends it aborted. The step that was in flight
    /// was stopped before (its process group killed, journaled as interrupted); the cleanup
    /// sees the outputs of the steps that had finished.
    pub async fn clean_up(&self, cleanup: CleanupRun) -> Result<Outcome, EngineError> {
        let CleanupRun {
            log,
            view,
            book,
            params,
            prefix,
            steps,
            mut why,
        } = cleanup;
        let main = book.main().clone();
        let mut ctx = Self::context(&view, &book, params, &log);
        for (i, step) in main.steps.iter().enumerate() {
            if let Some(view::StepStatus::Succeeded { output }) =
                view.step(&step.segment(i)).map(|s| &s.status)
            {
                ctx.set(step, output.clone(), "succeeded");
            }
        }
        ctx.prefix = prefix.to_owned();
        let mut exec = self.executor(view, &book, &log);
        // Nothing to compare: the cleanup steps are not part of the walk the journal replays.
        exec.cursor = exec.replay_len;
        exec.emit([
            Event::AbortStarted {
                by: self.who.clone(),
                reason: Some(why.clone()),
            },
            Event::StateChanged {
                state: RunState::Running,
                reason: Some(format!("{why}; running its cleanup steps")),
            },
        ])
        .await?;
        match exec.steps(&steps, &mut ctx).await? {
            Flow::Next => {
                let _ = write!(why, "; cleanup ran");
            }
            Flow::Stop(Stop::Failed { path, error }) => {
                let _ = write!(why, "; cleanup step `{path}` failed: {error}");
            }
            Flow::Stop(Stop::Parked { path }) => {
                let _ = write!(
                    why,
                    "; cleanup stopped at gate `{path}`, which nobody can approve once the run is aborted"
                );
            }
            Flow::Stop(Stop::Attention { path, detail }) => {
                let _ = write!(why, "; cleanup stopped at step `{path}`: {detail}");
            }
            Flow::Stop(Stop::Interrupted { signal }) => {
                let _ = write!(why, "; cleanup interrupted by {signal}");
            }
            Flow::Stop(Stop::Paused(_)) => {}
        }
        exec.set_state(RunState::Aborted, Some(why)).await?;
        Ok(Outcome::Aborted)
    }

    /// The run's pinned runbook, and its parameters (secret ones from their source or as
    /// given).
    fn pinned(
        &self,
        view: &RunView,
        given: &Given,
    ) -> Result<(Book, crate::params::Values), EngineError> {
        let id = view.id;
        let pinned = PinnedFiles::new(
            view.sources
                .iter()
                .map(|f| (f.origin.clone(), f.content.clone())),
        );
        let main_origin = view
            .sources
            .first()
            .map(|f| f.origin.clone())
            .ok_or_else(|| EngineError::Refused(format!("run {id} has no pinned source")))?;
        let loaded = load_main(&main_origin, &pinned, &self.registry)?;
        let main = loaded.runbook().clone();
        let given = resupply::merge(
            &main.name,
            &main.params,
            &view.started.params,
            given,
            resupply::source_of,
        )
        .map_err(|refusals| {
            EngineError::Params(refusals.iter().map(resupply::Refusal::problem).collect())
        })?;
        let values = crate::params::resolve(&main, &given, Some(&view.started.params))
            .map_err(EngineError::Params)?;
        let book = loaded
            .link(
                &Resolver::Pinned(&view.links),
                &Assume::Values(&values.clear),
                &self.registry,
            )
            .map_err(|e| invalid(&e.diags, &e.sources))?;
        Ok((book, values))
    }

    /// Pauses a run that no process executes (interrupted, or stopped on a timer): it stays
    /// put, keeping its lock, until `unpause`. One that executes is paused through its
    /// executor ([`Pause`]).
    pub fn pause_stopped(&self, id: RunId, comment: Option<&str>) -> Result<(), EngineError> {
        let records = self.journal.read(id)?;
        let view = RunView::from_records(id, &records)?;
        refuse_pause(&view)?;
        let log = self.log(self.known_secrets(&view));
        log.append(
            id,
            view.last_seq,
            &[
                Event::Paused {
                    by: self.who.clone(),
                    comment: comment.map(str::to_owned),
                },
                Event::StateChanged {
                    state: RunState::Paused,
                    reason: Some(paused_reason(&self.who, comment)),
                },
            ],
        )?;
        Ok(())
    }

    /// The run's secret parameters as far as this process can know them without being given
    /// them (their `env:` or `file:`), to scrub free text an operator typed.
    fn known_secrets(&self, view: &RunView) -> Redactor {
        let Some(main_origin) = view.sources.first().map(|f| f.origin.clone()) else {
            return Redactor::new();
        };
        let pinned = PinnedFiles::new(
            view.sources
                .iter()
                .map(|f| (f.origin.clone(), f.content.clone())),
        );
        let mut sources = Sources::new();
        crate::load::load(&main_origin, &pinned, &mut sources, &self.registry)
            .ok()
            .and_then(|main| crate::params::resolve(&main, &[], Some(&view.started.params)).ok())
            .map(|values| values.redactor())
            .unwrap_or_default()
    }

    /// The context steps are evaluated in, at the start of a walk.
    fn context(view: &RunView, book: &Book, params: Map<String, Value>, log: &RunLog) -> Ctx {
        let main = book.main().clone();
        let run = json!({
            "id": view.id.to_string(),
            "runbook": view.started.runbook,
            "started_at": view.created_at.to_rfc3339(),
            "started_by": view.started.started_by,
            "trigger": view.started.trigger.as_ref().map(|t| json!({
                "schedule": t.schedule,
                "fire_time": t.fire_time.to_rfc3339(),
            })),
            "unfinished": unfinished(view),
        });
        let taint = ctx::Taint::new(&main, &params, log.redactor());
        Ctx {
            book: main,
            origin: book.origin.clone(),
            params: Arc::new(Value::Object(params)),
            steps: Value::Object(Map::new()),
            vars: Map::new(),
            run: Arc::new(run),
            prefix: String::new(),
            taint,
        }
    }

    /// An executor of the run as `view` has it, replaying what it holds.
    fn executor<'a>(&'a self, view: RunView, book: &'a Book, log: &'a RunLog) -> Exec<'a> {
        let committed = view.last_seq;
        Exec {
            id: view.id,
            log,
            replay_len: view.order.len(),
            view,
            book,
            registry: &self.registry,
            cursor: 0,
            interrupt: self.interrupt.clone(),
            pause: self.pause.clone(),
            in_call: false,
            gates: self.gates,
            who: self.who.clone(),
            pending: Vec::new(),
            shipped: std::sync::Mutex::default(),
            committed,
            clock: Arc::new(decide::SystemClock),
            ledger: None,
            journaled_at: Vec::new(),
        }
    }

    /// Runs prechecks, then the steps, then decides how the run ends.
    async fn execute(
        &self,
        view: RunView,
        book: &Book,
        params: Map<String, Value>,
        log: &RunLog,
        resume_events: Vec<Event>,
        reopen: Vec<Event>,
    ) -> Result<Outcome, EngineError> {
        let main = book.main().clone();
        let mut ctx = Self::context(&view, book, params, log);
        let resuming = !resume_events.is_empty();
        let mut exec = self.executor(view, book, log);
        let reopened = !reopen.is_empty();
        if reopened {
            // Journaled first, taking the lock again: the prechecks' results belong to a run
            // that goes on. The walk replays the history as the reopening leaves it.
            exec.emit(reopen).await?;
            exec.replay_len = exec.view.order.len();
        }
        if let Err((pid, error)) = self.prechecks(&mut exec, &main, &mut ctx).await? {
            // Errors go to the terminal as they are, not through the journal: mask them here.
            let error = log.redactor().text(&error);
            if reopened {
                // Taken up again and refused: it ends failed again, its lock released.
                exec.set_state(
                    RunState::Failed,
                    Some(format!(
                        "precheck `{pid}` refused taking the run up again: {error}"
                    )),
                )
                .await?;
                return Err(EngineError::Precheck { id: pid, error });
            }
            if resuming {
                // The refused resume is journaled (its prechecks' results), nothing else.
                exec.flush().await?;
                return Err(EngineError::Precheck { id: pid, error });
            }
            exec.set_state(
                RunState::Failed,
                Some(format!("precheck `{pid}` refused the run: {error}")),
            )
            .await?;
            return Ok(Outcome::Failed {
                path: None,
                error: format!("precheck `{pid}` refused the run: {error}"),
            });
        }
        if resuming {
            exec.emit(resume_events).await?;
        }
        let flow = exec.steps(&main.steps, &mut ctx).await?;
        let outcome = self.finish(&mut exec, &main, &mut ctx, flow).await?;
        // What rode on a commit that never came: a parallel loop's iterations that finished
        // after another parked the run at its gate.
        exec.flush().await?;
        Ok(outcome)
    }

    async fn finish(
        &self,
        exec: &mut Exec<'_>,
        main: &Runbook,
        ctx: &mut Ctx,
        flow: Flow,
    ) -> Result<Outcome, EngineError> {
        let stop = match flow {
            Flow::Next => {
                exec.set_state(RunState::Succeeded, None).await?;
                return Ok(Outcome::Succeeded);
            }
            Flow::Stop(stop) => stop,
        };
        match stop {
            Stop::Failed { path, error } => {
                let mut reason = failed_reason(&path, &error);
                if !main.on_failure.is_empty() {
                    let mut handler = ctx.clone();
                    handler.prefix = "on_failure.".into();
                    match exec.steps(&main.on_failure, &mut handler).await? {
                        Flow::Next => {}
                        Flow::Stop(Stop::Failed { path: p, error: e }) => {
                            use std::fmt::Write as _;
                            let _ = write!(reason, "; on_failure step `{p}` failed too: {e}");
                        }
                        Flow::Stop(other) => return Self::stopped(exec, other).await,
                    }
                }
                exec.set_state(RunState::Failed, Some(reason)).await?;
                Ok(Outcome::Failed {
                    path: Some(path),
                    error: exec.log.redactor().text(&error),
                })
            }
            other => Self::stopped(exec, other).await,
        }
    }

    async fn stopped(exec: &mut Exec<'_>, stop: Stop) -> Result<Outcome, EngineError> {
        match stop {
            Stop::Parked { path } => {
                let prompt = exec
                    .view
                    .gates
                    .get(&path)
                    .map(|g| g.prompt.clone())
                    .unwrap_or_default();
                Ok(Outcome::Parked { path, prompt })
            }
            Stop::Attention { path, detail } => {
                exec.emit([
                    Event::AttentionNeeded {
                        path: path.clone(),
                        detail: detail.clone(),
                    },
                    Event::StateChanged {
                        state: RunState::NeedsAttention,
                        reason: Some(format!(
                            "step `{path}` was in flight and is not safe to run again"
                        )),
                    },
                ])
                .await?;
                Ok(Outcome::NeedsAttention { path, detail })
            }
            Stop::Interrupted { signal } if signal == exec::PAUSE => {
                let request = exec.pause.asked().unwrap_or_else(|| PauseRequest {
                    by: "an operator".into(),
                    comment: None,
                });
                Self::paused(exec, request).await
            }
            Stop::Interrupted { signal } => {
                exec.set_state(
                    RunState::Interrupted,
                    Some(format!("interrupted by {signal}")),
                )
                .await?;
                Ok(Outcome::Interrupted { signal })
            }
            Stop::Paused(request) => Self::paused(exec, request).await,
            Stop::Failed { path, error } => Ok(Outcome::Failed {
                path: Some(path),
                error: exec.log.redactor().text(&error),
            }),
        }
    }

    /// Journals a pause the walk stopped for.
    async fn paused(exec: &mut Exec<'_>, request: PauseRequest) -> Result<Outcome, EngineError> {
        exec.emit([
            Event::Paused {
                by: request.by.clone(),
                comment: request.comment.clone(),
            },
            Event::StateChanged {
                state: RunState::Paused,
                reason: Some(paused_reason(&request.by, request.comment.as_deref())),
            },
        ])
        .await?;
        Ok(Outcome::Paused {
            by: request.by,
            comment: request.comment,
        })
    }

    /// Runs every precheck (never memoized: they run again on every resume) and journals the
    /// results. Returns the first failure.
    async fn prechecks(
        &self,
        exec: &mut Exec<'_>,
        main: &Runbook,
        ctx: &mut Ctx,
    ) -> Result<Result<(), (String, String)>, EngineError> {
        let mut events = Vec::new();
        let mut failure = None;
        for (i, check) in main.prechecks.iter().enumerate() {
            let id = check.segment(i);
            let result = match exec.read_only(check, &format!("prechecks.{id}"), ctx).await {
                Ok(None) => {
                    ctx.set(check, Value::Null, "skipped");
                    continue;
                }
                Ok(Some(output)) => Ok(output),
                Err(e) => Err(e),
            };
            match result {
                Ok(output) => {
                    if check.secret {
                        exec.log.redactor().add_output(&output);
                    }
                    ctx.set(check, output, "succeeded");
                    events.push(Event::Precheck {
                        id,
                        ok: true,
                        error: None,
                    });
                }
                Err(error) => {
                    events.push(Event::Precheck {
                        id: id.clone(),
                        ok: false,
                        error: Some(error.clone()),
                    });
                    failure = Some((id, error));
                    break;
                }
            }
        }
        if !events.is_empty() {
            exec.emit(events).await?;
        }
        Ok(failure.map_or(Ok(()), Err))
    }
}

/// Files that changed on disk since the run pinned them.
pub fn drift(view: &RunView) -> Vec<runbook_journals::Drift> {
    view.sources
        .iter()
        .filter_map(|f| match LiveFiles.read(&f.origin) {
            Ok(text) if link::sha256(&text) == f.sha256 => None,
            Ok(_) => Some(runbook_journals::Drift {
                origin: f.origin.clone(),
                change: "modified".into(),
            }),
            Err(_) => Some(runbook_journals::Drift {
                origin: f.origin.clone(),
                change: "missing".into(),
            }),
        })
        .collect()
}

/// A failed run's reason when a step failed it (`step `roll` failed: …`); it may go on with
/// what its `on_failure` steps met.
fn failed_reason(path: &str, error: &str) -> String {
    format!("step `{path}` failed: {error}")
}

/// The step a failed run's reason says failed it, if a step did (see [`failed_reason`]): human
/// output says the failure with the step, and the run's end only names it.
pub fn failed_step(reason: &str) -> Option<&str> {
    reason
        .strip_prefix("step `")?
        .split_once("` failed: ")
        .map(|(path, _)| path)
}

/// The two commands that decide about a step that needs attention: run it again, or treat it
/// as done. The path is shell-quoted (`roll[2].restart` is a glob to some shells).
pub fn attention_commands(id: RunId, path: &str) -> [String; 2] {
    let quoted = shell_words::quote(path);
    [
        format!("{} resume {id} --retry-step {quoted}", hint::runbook()),
        format!("{} resume {id} --skip-step {quoted}", hint::runbook()),
    ]
}

/// The record of a step an operator said to treat as done.
fn skipped_by_operator(path: &str) -> Event {
    Event::StepSkipped {
        path: path.to_owned(),
        reason: SkipReason::Operator,
    }
}

/// The message for a resume refused because the run's journal cannot be trusted.
pub fn loss_message(id: RunId, seq: u64, detail: &str) -> String {
    let runbook = hint::runbook();
    format!(
        "journal of run {id} is corrupt at record {seq}: {detail}\n  its history cannot be \
         trusted, so nothing was run: a step whose start was journaled must not run again \
         without your decision\n  \
         decide, then run one of:\n    {runbook} resume {id} --accept-loss   # go on from the \
         intact records; the next step is treated as possibly started\n    {runbook} abort {id}    \
         # end the run"
    )
}

/// One line per attempt whose processes outlived their executor and were stopped.
pub fn orphans_stopped(orphans: &[runbook_journals::Orphans]) -> Vec<String> {
    orphans::describe(orphans)
}

/// Refuses to pause a run that is not where a pause means anything: ended, paused already,
/// or stopped for a person's decision (a gate, a step that needs attention).
pub fn refuse_pause(view: &RunView) -> Result<(), EngineError> {
    let id = view.id;
    match view.state {
        RunState::Running | RunState::Sleeping | RunState::Interrupted => Ok(()),
        RunState::Paused => Err(EngineError::Refused(format!(
            "run {id} is paused already ({})",
            view.reason.as_deref().unwrap_or("by an operator")
        ))),
        RunState::Waiting => Err(EngineError::Refused(format!(
            "run {id} is waiting at a gate: nothing runs until someone approves or rejects it, so there is nothing to pause"
        ))),
        RunState::NeedsAttention => Err(EngineError::Refused(format!(
            "run {id} needs an operator's decision: nothing runs until `{} resume {id} --retry-step|--skip-step`, so there is nothing to pause",
            hint::runbook()
        ))),
        state => Err(EngineError::Refused(format!(
            "run {id} has ended ({state}); only a run that is not finished can be paused"
        ))),
    }
}

/// Why a paused run is paused, as its state says it.
pub fn paused_reason(by: &str, comment: Option<&str>) -> String {
    match comment {
        Some(c) => format!("paused by {by}: {c}"),
        None => format!("paused by {by}"),
    }
}

/// The message for a run stopped on a step that needs a decision.
pub fn attention_message(id: RunId, path: &str, detail: &str) -> String {
    let [retry, skip] = attention_commands(id, path);
    format!(
        "step `{path}` of run {id} was in flight when the run stopped, and it is not safe to run again\n  it was doing: {detail}\n  decide, then run one of:\n    {retry}   # run it again\n    {skip}    # treat it as done",
    )
}

/// `run.unfinished`: the steps that started and never finished before this walk (a resume
/// after a crash: the call restarting a member, the stop inside it), outermost first, each with
/// its kind and journaled intent (a call's rendered params, secrets masked). Prechecks use it to
/// tolerate what the run itself was doing — the one member it had stopped.
fn unfinished(view: &RunView) -> Value {
    let mut open: Vec<(&String, &view::StepView)> = view
        .steps
        .iter()
        .filter(|(_, s)| {
            matches!(
                s.status,
                view::StepStatus::Started { .. } | view::StepStatus::Interrupted { .. }
            )
        })
        .collect();
    open.sort_by_key(|(_, s)| s.first_seq);
    Value::Array(
        open.into_iter()
            .map(|(path, s)| json!({ "path": path, "kind": s.kind, "intent": s.intent }))
            .collect(),
    )
}
