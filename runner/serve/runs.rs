//! The runs the holder of the journal executes — `serve`, or a `runbook run` in a terminal:
//! started by the API, a schedule or the holder's own command line, continued after approvals,
//! aborted, and (in `serve`) taken up again when a previous `serve` died while they ran.
//!
//! Each execution is a task with its own stop switch. An operation that may start one is
//! *admitted* first; once the holder stops admitting (it is letting the journal go), callers
//! get [`RunsError::Unavailable`] and nothing changes, and no execution is started after the
//! holder has seen the last one end — so a holder never exits under a run it accepted.
//! An abort of a run executing here stops it at a safe point and is journaled by its own task,
//! so whoever waits for that run's outcome sees it aborted, never merely interrupted.
//!
//! `serve` journals the runs it executes as owned (`serve/owned`), so the next `serve` knows
//! which runs to resume — those it was running — and leaves alone runs a person started and
//! interrupted from the command line. A command-line holder owns nothing: a run it executed
//! that was interrupted waits for a person's `resume`.
//!
//! On a journal shared by several executors (etcd, [`crate::serve::fleet`]) the same holds
//! through the fleet: `serve` marks the runs it executes adoptable, and whichever `serve` is up
//! when their owner goes carries them on ([`crate::serve::claimer`]). Every write is fenced by
//! the run's ownership; an execution whose write was refused because this executor no longer
//! owns the run (`Fenced`, `Owned`) ends there, writing nothing more — the run is another's.
//! Nothing is admitted while this executor's lease is not held.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runbook_journals::{Journal, JournalError, RunId, RunState, Trigger};
use runbook_steps::{CancelReason, CancelSource, Registry};
use tokio::sync::{Notify, oneshot};

use crate::engine::exec::ExecError;
use crate::engine::log::Observer;
use crate::engine::pause::{Pause, PauseRequest};
use crate::engine::{
    Abort, Aborting, Created, Engine, EngineError, GateMode, Outcome, Resume, Start,
};
use crate::failure::Kind;
use crate::library::{Library, Named};
use crate::resupply::Given;
use crate::schedule::Schedule;
use crate::schedule::scheduler::Launcher;
use crate::schedule::state::FireOutcome;
use crate::serve::fleet::Member;
use crate::serve::metrics::Metrics;

/// The meta key of the runs a `serve` is executing.
const OWNED: &str = "serve/owned";

/// How long a stopping holder, or an abort, waits for runs to reach a safe point.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How many executions in a row a failing store may stop before a run on a shared journal is
/// left for a person rather than taken up again.
const STORE_ATTEMPTS: u32 = 3;

/// What an operation on the runs met.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    /// The engine or the journal refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The holder is letting the journal go and admits nothing more.
    #[error("{0}")]
    Unavailable(String),
}

impl From<JournalError> for RunsError {
    fn from(e: JournalError) -> Self {
        Self::Engine(e.into())
    }
}

impl RunsError {
    /// Whether the journal's store failed (unreachable, without quorum): the same operation
    /// may succeed later.
    pub fn store_failed(&self) -> bool {
        matches!(self, Self::Engine(e) if matches!(fleet_error(e), Some(JournalError::Storage(_))))
    }

    /// The kind of failure, as the API and the command line name it.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Engine(e) => Kind::of_engine(e),
            Self::Unavailable(_) => Kind::Unavailable,
        }
    }
}

/// How an execution ended, for whoever started it here and waits for it.
pub type Done = oneshot::Receiver<Result<Outcome, EngineError>>;

/// An abort asked of a run that is executing: its task journals it once the run stopped.
struct AbortRequest {
    reason: Option<String>,
    no_cleanup: bool,
    who: String,
    reply: oneshot::Sender<Result<(), EngineError>>,
}

struct Active {
    stop: Arc<CancelSource>,
    abort: Option<AbortRequest>,
    /// Its executor stops at the next step boundary once this is asked.
    pause: Pause,
}

#[derive(Default)]
struct State {
    active: HashMap<RunId, Active>,
    /// Operations admitted and not yet done (each may start an execution).
    admitted: usize,
    /// Set once the holder admits nothing more.
    stopping: bool,
    /// Why every execution is being stopped (a signal), once it is.
    stop_reason: Option<String>,
}

/// How runs of this holder are set up.
pub struct Config {
    /// The journal.
    pub journal: Arc<dyn Journal>,
    /// Step kinds.
    pub registry: Arc<Registry>,
    /// Where runbooks are found.
    pub library: Library,
    /// Who sees every run's records.
    pub observers: Vec<Arc<dyn Observer>>,
    /// Metrics, in `serve`.
    pub metrics: Option<Arc<Metrics>>,
    /// Journal the runs it executes as owned, for the next `serve` to resume (`serve` only);
    /// on a journal shared by several executors, mark them adoptable instead.
    pub owns: bool,
    /// This process's membership of the fleet, on a journal shared by several executors.
    pub fleet: Option<Arc<Member>>,
    /// Write the output of each run started or continued for another command to
    /// `DIR/RUN.log` (a holder whose own output is one terminal).
    pub logs: Option<PathBuf>,
    /// How records are written to those files.
    pub log_mode: crate::ui::OutputMode,
}

/// How a run started or continued by the holder's own command executes: its gates, and who
/// sees its records (in place of its log file).
pub struct Here {
    /// How its gates are answered.
    pub gates: GateMode,
    /// Its observers besides every run's.
    pub observers: Vec<Arc<dyn Observer>>,
}

/// How one execution is to run.
struct Exec {
    gates: GateMode,
    observers: Option<Vec<Arc<dyn Observer>>>,
    done: Option<oneshot::Sender<Result<Outcome, EngineError>>>,
}

impl Exec {
    fn api(gates: GateMode) -> Self {
        Self {
            gates,
            observers: None,
            done: None,
        }
    }

    fn here(here: Here) -> (Self, Done) {
        let (tx, rx) = oneshot::channel();
        (
            Self {
                gates: here.gates,
                observers: Some(here.observers),
                done: Some(tx),
            },
            rx,
        )
    }
}

/// The runs a holder executes.
pub struct Runs {
    journal: Arc<dyn Journal>,
    registry: Arc<Registry>,
    library: Library,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Arc<Metrics>>,
    logs: Option<PathBuf>,
    log_mode: crate::ui::OutputMode,
    state: Mutex<State>,
    /// Signalled whenever a run's execution ends (for threads).
    ended: std::sync::Condvar,
    /// Signalled whenever an execution or an admitted operation ends (for tasks).
    changed: Notify,
    /// The runs this `serve` executes (`None`: a holder that owns none, or one that marks them
    /// adoptable in the fleet instead).
    owned: Option<Mutex<BTreeSet<RunId>>>,
    /// This process's membership of the fleet, on a journal shared by several executors.
    fleet: Option<Arc<Member>>,
    /// Marks the runs it executes adoptable (`serve` on a shared journal).
    adopts: bool,
    /// Executions in a row that a failure of the journal's store stopped, per run.
    store_failures: Mutex<HashMap<RunId, u32>>,
    /// The parameters given for each run this process started or continued, kept in memory
    /// only (never journaled: secret values among them) until the run ends, so that
    /// approving, resuming or waking a run needs no secret given again while this holder
    /// lives. After a restart they come from `env:` or must be given with the decision.
    given: Mutex<HashMap<RunId, Vec<(String, String)>>>,
}

/// How a caller of the API asks for a run.
pub struct StartRequest {
    /// The runbook, found by name (never a path a caller chose).
    pub runbook: Named,
    /// `name=value` pairs.
    pub params: Vec<(String, String)>,
    /// Who starts it.
    pub who: String,
    /// Approve its gates (`--yes`).
    pub yes: bool,
}

/// A run to create: from an API request, from a schedule (whose runbook the operator
/// wrote down, by name or path), or from the holder's own command line.
struct Launch<'a> {
    target: &'a str,
    params: &'a [(String, String)],
    who: &'a str,
    id: Option<RunId>,
    trigger: Option<Trigger>,
}

/// An admitted operation; dropping it lets the holder stop once nothing else runs.
struct Ticket<'a>(&'a Runs);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.state.lock().expect("runs").admitted -= 1;
        self.0.changed.notify_waiters();
    }
}

impl Runs {
    /// A manager of the runs executed with `config`.
    pub fn new(config: Config) -> Result<Arc<Self>, JournalError> {
        let owned = if config.owns && config.fleet.is_none() {
            let owned: BTreeSet<RunId> = match config.journal.get_meta(OWNED)? {
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                None => BTreeSet::new(),
            };
            Some(Mutex::new(owned))
        } else {
            None
        };
        Ok(Arc::new(Self {
            journal: config.journal,
            registry: config.registry,
            library: config.library,
            observers: config.observers,
            metrics: config.metrics,
            logs: config.logs,
            log_mode: config.log_mode,
            state: Mutex::new(State::default()),
            ended: std::sync::Condvar::new(),
            changed: Notify::new(),
            owned,
            adopts: config.owns && config.fleet.is_some(),
            fleet: config.fleet,
            store_failures: Mutex::new(HashMap::new()),
            given: Mutex::new(HashMap::new()),
        }))
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// This process's membership of the fleet, on a journal shared by several executors.
    pub fn member(&self) -> Option<&Arc<Member>> {
        self.fleet.as_ref()
    }

    /// Whether the runs executed here are marked adoptable in the fleet (`serve` on a shared
    /// journal).
    pub fn adopts(&self) -> bool {
        self.adopts
    }

    /// The library runbooks are found in.
    pub fn library(&self) -> &Library {
        &self.library
    }

    /// Where the output of run `id` goes when it executes for another command, if to a file.
    pub fn log_path(&self, id: RunId) -> Option<PathBuf> {
        self.logs.as_ref().map(|dir| dir.join(format!("{id}.log")))
    }

    fn engine(
        &self,
        id: RunId,
        who: &str,
        gates: GateMode,
        stop: &CancelSource,
        own: Option<Vec<Arc<dyn Observer>>>,
    ) -> Engine {
        let mut observers = self.observers.clone();
        match own {
            Some(own) => observers.extend(own),
            None => {
                if let Some(path) = self.log_path(id) {
                    observers.push(Arc::new(crate::ui::LogFile::new(&path, self.log_mode)));
                }
            }
        }
        Engine {
            journal: self.journal.clone(),
            registry: self.registry.clone(),
            observers,
            interrupt: stop.token(),
            pause: crate::engine::pause::Pause::new(),
            who: who.to_owned(),
            gates,
            library: self.library.clone(),
        }
    }

    fn save_owned(&self, owned: &BTreeSet<RunId>) {
        let bytes = serde_json::to_vec(owned).expect("ids serialize");
        if let Err(e) = self.journal.put_meta(OWNED, &bytes) {
            tracing::error!(error = %e, "failed to journal the runs serve owns");
        }
    }

    fn own(&self, id: RunId) {
        if self.adopts
            && let Some(member) = &self.fleet
            && let Err(e) = member.fleet().adopt(id, true)
        {
            tracing::error!(run = %id, error = %e, "failed to mark a run adoptable");
        }
        if let Some(owned) = &self.owned {
            let mut owned = owned.lock().expect("runs");
            if owned.insert(id) {
                self.save_owned(&owned);
            }
        }
    }

    /// Forgets run `id` as one this `serve` (or the next) is to execute.
    fn disown(&self, id: RunId) {
        if self.adopts
            && let Some(member) = &self.fleet
            && let Err(e) = member.fleet().adopt(id, false)
        {
            tracing::error!(run = %id, error = %e, "failed to mark a run no longer adoptable");
        }
        if let Some(owned) = &self.owned {
            let mut owned = owned.lock().expect("runs");
            if owned.remove(&id) {
                self.save_owned(&owned);
            }
        }
    }

    /// Whether run `id` is executing in this holder.
    pub fn is_active(&self, id: RunId) -> bool {
        self.state.lock().expect("runs").active.contains_key(&id)
    }

    /// The runs executing in this holder.
    pub fn active(&self) -> Vec<RunId> {
        let mut ids: Vec<RunId> = self
            .state
            .lock()
            .expect("runs")
            .active
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    fn admit(&self) -> Result<Ticket<'_>, RunsError> {
        let mut state = self.state.lock().expect("runs");
        self.unavailable(&state)?;
        state.admitted += 1;
        Ok(Ticket(self))
    }

    /// Whether new runs can start here now: not when the holder is letting the journal go, nor
    /// while this executor has no lease on a shared journal.
    pub fn ready(&self) -> Result<(), RunsError> {
        self.unavailable(&self.state.lock().expect("runs"))
    }

    fn unavailable(&self, state: &State) -> Result<(), RunsError> {
        if state.stopping {
            return Err(RunsError::Unavailable(format!(
                "the process holding the journal (pid {}) is letting it go; try again",
                std::process::id()
            )));
        }
        if let Some(member) = &self.fleet
            && !member.held()
        {
            return Err(RunsError::Unavailable(format!(
                "executor {} has no lease on the journal right now (its store does not answer, or it is joining again); try again",
                member.me()
            )));
        }
        Ok(())
    }

    /// Refuses an operation on a run this holder is executing right now.
    fn not_active(&self, id: RunId) -> Result<(), EngineError> {
        // A run whose journal already says it parked or ended is only winding its task down
        // (its last commit is seen before the task returns): give it a moment.
        let settled = || self.journal.summary(id).is_ok_and(|s| s.state.is_settled());
        let state = self.state.lock().expect("runs");
        let (state, _) = self
            .ended
            .wait_timeout_while(state, Duration::from_secs(2), |state| {
                state.active.contains_key(&id) && settled()
            })
            .expect("runs");
        if state.active.contains_key(&id) {
            let asking = self
                .journal
                .summary(id)
                .is_ok_and(|s| s.state == RunState::Waiting);
            return Err(EngineError::Refused(if asking {
                format!(
                    "run {id} is asking for a verdict on the terminal of the process that executes it (pid {}); answer there, or abort the run",
                    std::process::id()
                )
            } else {
                format!(
                    "run {id} is executing right now; wait until it parks or ends (or abort it)"
                )
            }));
        }
        Ok(())
    }

    /// Executes a prepared run in a task of its own.
    fn spawn(
        self: &Arc<Self>,
        engine: Engine,
        stop: Arc<CancelSource>,
        created: Created,
        exec: Exec,
    ) {
        let id = created.id;
        self.own(id);
        let me = self.clone();
        let mut state = self.state.lock().expect("runs");
        // Admitted before the holder began to stop: it stops with the others.
        if let Some(reason) = &state.stop_reason {
            stop.cancel(CancelReason::Interrupted(reason.clone()));
        }
        state.active.insert(
            id,
            Active {
                stop,
                abort: None,
                pause: engine.pause.clone(),
            },
        );
        drop(state);
        tokio::spawn(async move {
            let mut outcome = engine.run_created(created).await;
            let abort = me
                .state
                .lock()
                .expect("runs")
                .active
                .get_mut(&id)
                .and_then(|a| a.abort.take());
            // An execution whose write was refused because the run is another executor's
            // now writes nothing more: not an abort either.
            let abort = match (abort, &outcome) {
                (Some(req), Err(e)) if not_ours(e) => {
                    let _ = req.reply.send(Err(EngineError::Refused(format!(
                        "run {id} was taken over by another executor before the abort could be journaled here ({e}); abort it again"
                    ))));
                    None
                }
                (abort, _) => abort,
            };
            if let Some(req) = abort {
                // The cleanup's records go where this execution's went.
                let engine = me.engine(
                    id,
                    &req.who,
                    GateMode::Detach,
                    &CancelSource::new(),
                    exec.observers.clone(),
                );
                let abort = Abort {
                    reason: req.reason,
                    no_cleanup: req.no_cleanup,
                    params: me.with_given(id, &[]),
                };
                let aborted = abort_run(engine, id, abort).await;
                match aborted {
                    Ok(o) => {
                        let _ = req.reply.send(Ok(()));
                        outcome = Ok(o);
                    }
                    Err(e) => {
                        let _ = req.reply.send(Err(e));
                    }
                }
            }
            me.finished(id, &outcome);
            if let Some(done) = exec.done {
                let _ = done.send(outcome);
            }
        });
    }

    /// Bookkeeping when an execution returns: a run that parked, ended or needs a person is no
    /// longer owned; one stopped by a `serve`'s shutdown stays owned so the next `serve`
    /// resumes it.
    fn finished(&self, id: RunId, outcome: &Result<Outcome, EngineError>) {
        let stopping = {
            let mut state = self.state.lock().expect("runs");
            state.active.remove(&id);
            state.stop_reason.is_some()
        };
        self.ended.notify_all();
        self.changed.notify_waiters();
        if matches!(
            outcome,
            Ok(Outcome::Succeeded | Outcome::Failed { .. } | Outcome::Aborted)
        ) {
            self.given.lock().expect("runs").remove(&id);
        }
        if self.fleet.is_some() {
            self.finished_in_fleet(id, outcome);
            return;
        }
        let keep = match outcome {
            Ok(Outcome::Interrupted { .. }) => stopping,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "run stopped with an error");
                false
            }
        };
        if !keep {
            self.disown(id);
        }
    }

    /// Bookkeeping on a shared journal: a run that ended is no longer adoptable; one that
    /// parked or stopped stays adoptable (and owned here until this executor goes); one whose
    /// write was refused because another executor wrote it or owns it now is left alone —
    /// nothing more is written, not even its adoption; one that a failure of the store stopped
    /// is taken up again by the claimer once the store answers (a few times); any other error
    /// leaves a run this executor still owns to a person.
    fn finished_in_fleet(&self, id: RunId, outcome: &Result<Outcome, EngineError>) {
        if outcome.is_ok() {
            self.store_failures.lock().expect("runs").remove(&id);
        }
        let e = match outcome {
            Ok(Outcome::Succeeded | Outcome::Failed { .. } | Outcome::Aborted) => {
                self.disown(id);
                return;
            }
            Ok(_) => return,
            Err(e) => e,
        };
        match fleet_error(e) {
            _ if not_ours(e) => {
                tracing::warn!(run = %id, error = %e, "stopped: another executor has the run");
                eprintln!("run {id} stopped here without writing anything more: {e}");
            }
            Some(JournalError::Storage(_)) => {
                let failures = {
                    let mut counts = self.store_failures.lock().expect("runs");
                    let n = counts.entry(id).or_insert(0);
                    *n += 1;
                    *n
                };
                tracing::warn!(run = %id, error = %e, failures, "run stopped: the journal's store failed");
                if failures >= STORE_ATTEMPTS {
                    eprintln!(
                        "run {id} stopped {failures} times in a row on a failure of the journal's store ({e}); it is left for `runbook resume {id}`"
                    );
                    self.store_failures.lock().expect("runs").remove(&id);
                    self.disown_if_mine(id);
                }
            }
            _ => {
                tracing::warn!(run = %id, error = %e, "run stopped with an error");
                self.disown_if_mine(id);
            }
        }
    }

    /// Forgets run `id` as adoptable if this executor still owns it (a run another executor
    /// took meanwhile is that one's to keep adoptable).
    fn disown_if_mine(&self, id: RunId) {
        let Some(member) = &self.fleet else {
            return;
        };
        if member.owner(id).ok().flatten() == Some(member.me()) {
            self.disown(id);
        }
    }

    /// Starts a run for a caller of the API; returns its id once it is created (its lock
    /// taken).
    pub fn start(self: &Arc<Self>, req: &StartRequest) -> Result<RunId, RunsError> {
        let gates = if req.yes {
            GateMode::Yes
        } else {
            GateMode::Detach
        };
        self.launch(
            &Launch {
                target: req.runbook.origin(),
                params: &req.params,
                who: &req.who,
                id: None,
                trigger: None,
            },
            Exec::api(gates),
        )
    }

    /// What a run of `runbook` with `params` would do, as `runbook plan` shows it, for `who`:
    /// the parameters resolved by the rules a start applies, the prechecks run (read-only)
    /// if `prechecks`. Journals nothing; its own thread, as the prechecks and a secret store's
    /// reads may block.
    pub async fn plan(
        &self,
        runbook: &Named,
        params: &[(String, String)],
        who: &str,
        prechecks: bool,
    ) -> Result<crate::engine::plan::Plan, RunsError> {
        let engine = Engine {
            journal: self.journal.clone(),
            registry: self.registry.clone(),
            observers: Vec::new(),
            interrupt: CancelSource::new().token(),
            pause: Pause::new(),
            who: who.to_owned(),
            gates: GateMode::Detach,
            library: self.library.clone(),
        };
        let target = runbook.origin().to_owned();
        let params = params.to_vec();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(engine.plan(&target, &params, prechecks))
        })
        .await
        .map_err(|e| EngineError::Refused(format!("the plan failed: {e}")))?
        .map_err(RunsError::from)
    }

    /// Starts a run of `target` (a name or a file) for the holder's own command line, as
    /// `here` says; returns its id once it is created, and how it ends.
    pub fn start_here(
        self: &Arc<Self>,
        target: &str,
        params: &[(String, String)],
        who: &str,
        id: Option<RunId>,
        here: Here,
    ) -> Result<(RunId, Done), RunsError> {
        let (exec, done) = Exec::here(here);
        let id = self.launch(
            &Launch {
                target,
                params,
                who,
                id,
                trigger: None,
            },
            exec,
        )?;
        Ok((id, done))
    }

    fn launch(self: &Arc<Self>, req: &Launch<'_>, exec: Exec) -> Result<RunId, RunsError> {
        let _ticket = self.admit()?;
        let id = req.id.unwrap_or_default();
        let stop = Arc::new(CancelSource::new());
        let engine = self.engine(id, req.who, exec.gates, &stop, exec.observers.clone());
        let created = engine.create(Start {
            target: req.target,
            params: req.params,
            id: Some(id),
            trigger: req.trigger.clone(),
        })?;
        self.remember(id, req.params);
        self.spawn(engine, stop, created, exec);
        Ok(id)
    }

    /// Keeps `params` as given for run `id` (later values win over earlier ones).
    fn remember(&self, id: RunId, params: &[(String, String)]) {
        if !params.is_empty() {
            self.given
                .lock()
                .expect("runs")
                .entry(id)
                .or_default()
                .extend_from_slice(params);
        }
    }

    /// The parameters given for run `id` so far (held), and `now`.
    fn with_given(&self, id: RunId, now: &[(String, String)]) -> Given {
        let held = self
            .given
            .lock()
            .expect("runs")
            .get(&id)
            .cloned()
            .unwrap_or_default();
        Given {
            now: now.to_vec(),
            held,
        }
    }

    /// Resumes a run for a caller of the API.
    pub fn resume(self: &Arc<Self>, id: RunId, req: &Resume, who: &str) -> Result<(), RunsError> {
        self.resume_with(id, req, who, Exec::api(GateMode::Detach))
    }

    /// Resumes a run for the holder's own command line, as `here` says; returns how it ends.
    pub fn resume_here(
        self: &Arc<Self>,
        id: RunId,
        req: &Resume,
        who: &str,
        here: Here,
    ) -> Result<Done, RunsError> {
        let (exec, done) = Exec::here(here);
        self.resume_with(id, req, who, exec)?;
        Ok(done)
    }

    fn resume_with(
        self: &Arc<Self>,
        id: RunId,
        req: &Resume,
        who: &str,
        exec: Exec,
    ) -> Result<(), RunsError> {
        self.continue_run(id, who, &req.params.now, exec, |engine, params| {
            engine.prepare_resume(
                id,
                &Resume {
                    params,
                    ..req.clone()
                },
            )
        })
    }

    /// Approves or rejects a run's open gate for a caller of the API and continues the run.
    pub fn decide(
        self: &Arc<Self>,
        id: RunId,
        verdict: Verdict,
        params: &[(String, String)],
        who: &str,
    ) -> Result<(), RunsError> {
        self.decide_with(id, verdict, params, who, Exec::api(GateMode::Detach))
    }

    /// Approves or rejects a run's open gate for the holder's own command line and continues
    /// the run as `here` says; returns how it ends.
    pub fn decide_here(
        self: &Arc<Self>,
        id: RunId,
        verdict: Verdict,
        params: &[(String, String)],
        who: &str,
        here: Here,
    ) -> Result<Done, RunsError> {
        let (exec, done) = Exec::here(here);
        self.decide_with(id, verdict, params, who, exec)?;
        Ok(done)
    }

    fn decide_with(
        self: &Arc<Self>,
        id: RunId,
        verdict: Verdict,
        params: &[(String, String)],
        who: &str,
        exec: Exec,
    ) -> Result<(), RunsError> {
        let Verdict {
            approved,
            step,
            comment,
        } = verdict;
        self.continue_run(id, who, params, exec, |engine, params| {
            engine.prepare_decide(id, approved, step.as_deref(), comment, &params)
        })
    }

    /// Continues run `id` as `who` once `prepare` has made it ready, with the parameters held
    /// for it and those given `now` (remembered too once the engine let them through).
    fn continue_run(
        self: &Arc<Self>,
        id: RunId,
        who: &str,
        now: &[(String, String)],
        exec: Exec,
        prepare: impl FnOnce(&Engine, Given) -> Result<Created, EngineError>,
    ) -> Result<(), RunsError> {
        let _ticket = self.admit()?;
        self.not_active(id)?;
        let stop = Arc::new(CancelSource::new());
        let engine = self.engine(id, who, exec.gates, &stop, exec.observers.clone());
        let prepared = prepare(&engine, self.with_given(id, now))?;
        self.remember(id, now);
        self.spawn(engine, stop, prepared, exec);
        Ok(())
    }

    /// Aborts a run; one executing here is stopped at a safe point first (its step in flight
    /// stopped), and its own task runs the cleanup steps (unless `no_cleanup`) and journals the
    /// abort.
    pub async fn abort(
        self: &Arc<Self>,
        id: RunId,
        reason: Option<String>,
        no_cleanup: bool,
        who: &str,
    ) -> Result<(), RunsError> {
        let asked = {
            let mut state = self.state.lock().expect("runs");
            match state.active.get_mut(&id) {
                Some(active) if active.abort.is_some() => {
                    return Err(
                        EngineError::Refused(format!("run {id} is being aborted already")).into(),
                    );
                }
                Some(active) => {
                    let (reply, answer) = oneshot::channel();
                    active.abort = Some(AbortRequest {
                        reason: reason.clone(),
                        no_cleanup,
                        who: who.to_owned(),
                        reply,
                    });
                    active
                        .stop
                        .cancel(CancelReason::Interrupted(format!("an abort by {who}")));
                    Some(answer)
                }
                None => None,
            }
        };
        if let Some(answer) = asked {
            return match tokio::time::timeout(STOP_WAIT, answer).await {
                Ok(Ok(result)) => result.map_err(RunsError::from),
                Ok(Err(_)) => Err(EngineError::Refused(format!(
                    "run {id} stopped without journaling the abort; abort it again"
                ))
                .into()),
                Err(_) => Err(EngineError::Refused(format!(
                    "run {id} did not reach a safe point within {}; it is aborted once it does",
                    humantime::format_duration(STOP_WAIT)
                ))
                .into()),
            };
        }
        let _ticket = self.admit()?;
        let engine = self.engine(id, who, GateMode::Detach, &CancelSource::new(), None);
        let abort = Abort {
            reason,
            no_cleanup,
            params: self.with_given(id, &[]),
        };
        abort_run(engine, id, abort).await?;
        self.given.lock().expect("runs").remove(&id);
        Ok(())
    }

    /// Pauses a run: one executing here stops at its next step boundary (the step in flight
    /// finishes; a wait or sleep is cut short) and its own task journals the pause — this waits
    /// for that, a minute at most; one that no process executes is paused at once.
    pub async fn pause(
        self: &Arc<Self>,
        id: RunId,
        comment: Option<String>,
        who: &str,
    ) -> Result<RunState, RunsError> {
        let asked = {
            let state = self.state.lock().expect("runs");
            match state.active.get(&id) {
                Some(active) if active.abort.is_some() => {
                    return Err(EngineError::Refused(format!(
                        "run {id} is being aborted; there is nothing to pause"
                    ))
                    .into());
                }
                Some(_)
                    if self
                        .journal
                        .summary(id)
                        .is_ok_and(|s| s.state == RunState::Waiting) =>
                {
                    return Err(EngineError::Refused(format!(
                        "run {id} is asking for a verdict on the terminal of the process that executes it (pid {}); nothing runs until it is answered, so there is nothing to pause",
                        std::process::id()
                    ))
                    .into());
                }
                Some(active) => {
                    let request = PauseRequest {
                        by: who.to_owned(),
                        comment: comment.clone(),
                    };
                    if !active.pause.ask(request) {
                        return Err(EngineError::Refused(format!(
                            "run {id} is pausing already: it stops at its next step boundary"
                        ))
                        .into());
                    }
                    true
                }
                None => false,
            }
        };
        if asked {
            self.until_inactive(id, STOP_WAIT).await;
            return Ok(self.journal.summary(id)?.state);
        }
        let engine = self.engine(id, who, GateMode::Detach, &CancelSource::new(), None);
        tokio::task::spawn_blocking(move || engine.pause_stopped(id, comment.as_deref()))
            .await
            .map_err(|e| EngineError::Refused(format!("the pause failed: {e}")))??;
        Ok(self.journal.summary(id)?.state)
    }

    /// Waits until run `id` no longer executes here, at most `within`.
    async fn until_inactive(&self, id: RunId, within: Duration) {
        let _ = tokio::time::timeout(within, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if !self.is_active(id) {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }

    /// Resumes the runs a previous `serve` was executing when it stopped or died.
    pub fn resume_owned(self: &Arc<Self>) -> Vec<(RunId, Result<(), RunsError>)> {
        let Some(owned) = &self.owned else {
            return Vec::new();
        };
        let owned: Vec<RunId> = owned.lock().expect("runs").iter().copied().collect();
        let mut out = Vec::new();
        for id in owned {
            let state = self.journal.summary(id).map(|s| s.state);
            let result = match state {
                Ok(RunState::Running | RunState::Sleeping | RunState::Interrupted) => {
                    self.resume(id, &Resume::default(), "serve")
                }
                Ok(_) | Err(JournalError::NoSuchRun(_)) => {
                    self.disown(id);
                    continue;
                }
                Err(e) => Err(e.into()),
            };
            if let Err(e) = &result {
                tracing::warn!(run = %id, error = %e, "could not resume a run");
                self.disown(id);
            }
            out.push((id, result));
        }
        out
    }

    /// Stops admitting, stops every run at a safe point (journaled as interrupted; in `serve`
    /// still owned) and waits for them, at most a minute.
    pub async fn shutdown(&self, signal: &str) {
        {
            let mut state = self.state.lock().expect("runs");
            state.stopping = true;
            state.stop_reason = Some(signal.to_owned());
            for active in state.active.values() {
                active
                    .stop
                    .cancel(CancelReason::Interrupted(signal.to_owned()));
            }
        }
        if tokio::time::timeout(STOP_WAIT, self.idle(false))
            .await
            .is_err()
        {
            tracing::warn!("some runs did not reach a safe point within a minute");
        }
    }

    /// Stops every run executing here at a safe point, for `why` (journaled as what
    /// interrupted it, if the journal still takes its writes), without closing the holder:
    /// the lease of this executor was suspended or lost. Returns how many it stopped.
    pub fn interrupt_all(&self, why: &str) -> usize {
        let state = self.state.lock().expect("runs");
        for active in state.active.values() {
            active
                .stop
                .cancel(CancelReason::Interrupted(why.to_owned()));
        }
        state.active.len()
    }

    /// Waits until no run executes here.
    pub async fn until_none_active(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.state.lock().expect("runs").active.is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// Waits until no run executes here and no admitted operation is under way; then, if
    /// `close`, admits nothing more — in one step, so nothing slips in between.
    pub async fn idle(&self, close: bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.state.lock().expect("runs");
                if state.active.is_empty() && state.admitted == 0 {
                    if close {
                        state.stopping = true;
                    }
                    return;
                }
            }
            changed.await;
        }
    }
}

/// Whether an execution stopped because another executor wrote or owns the run (on a shared
/// journal): then this one must write nothing more of it.
fn not_ours(e: &EngineError) -> bool {
    matches!(
        fleet_error(e),
        Some(
            JournalError::Owned { .. }
                | JournalError::Fenced { .. }
                | JournalError::Conflict { .. }
        )
    )
}

/// The journal's error behind an engine error, if one is.
fn fleet_error(e: &EngineError) -> Option<&JournalError> {
    match e {
        EngineError::Journal(j) | EngineError::Exec(ExecError::Journal(j)) => Some(j),
        _ => None,
    }
}

/// Aborts run `id` with `engine`: the checks and the journal's reads on the blocking pool,
/// then its cleanup steps, if it has any to run.
async fn abort_run(engine: Engine, id: RunId, req: Abort) -> Result<Outcome, EngineError> {
    let (engine, prepared) = tokio::task::spawn_blocking(move || {
        let prepared = engine.prepare_abort(id, &req);
        (engine, prepared)
    })
    .await
    .map_err(|e| EngineError::Refused(format!("the abort failed: {e}")))?;
    match prepared? {
        Aborting::Done(outcome) => Ok(outcome),
        Aborting::Cleanup(cleanup) => engine.clean_up(*cleanup).await,
    }
}

/// A verdict on a gate.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// Approve (or reject).
    pub approved: bool,
    /// The gate's path, if the run has several open.
    pub step: Option<String>,
    /// Why.
    pub comment: Option<String>,
}

/// Schedules launch runs through the manager.
pub struct ScheduleLauncher {
    /// The runs.
    pub runs: Arc<Runs>,
}

impl Launcher for ScheduleLauncher {
    fn launch(&self, schedule: &Schedule, fire: DateTime<Utc>, id: RunId) -> Result<(), String> {
        let params = schedule.param_pairs();
        self.runs
            .launch(
                &Launch {
                    target: &schedule.runbook,
                    params: &params,
                    who: &format!("schedule:{}", schedule.name),
                    id: Some(id),
                    trigger: Some(Trigger {
                        schedule: schedule.name.clone(),
                        fire_time: fire,
                    }),
                },
                Exec::api(GateMode::Detach),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn ready(&self) -> Result<(), String> {
        self.runs.ready().map_err(|e| e.to_string())
    }

    fn unfinished(&self, id: RunId) -> bool {
        self.runs.is_active(id)
            || self
                .runs
                .journal
                .summary(id)
                .is_ok_and(|s| !s.state.is_terminal())
    }

    fn fired(&self, schedule: &str, outcome: &FireOutcome, lag: Duration) {
        if let Some(m) = &self.runs.metrics {
            m.schedule_fired(schedule, outcome.word(), lag);
        }
    }
}
