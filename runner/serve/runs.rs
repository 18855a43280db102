//! The runs `serve` executes: started by the API or a schedule, continued after approvals,
//! and taken up again when a previous `serve` died while they ran.
//!
//! Each execution is a task with its own stop switch. The runs a `serve` is executing are
//! journaled as owned (`serve/owned`), so the next `serve` knows which runs to resume — those
//! it was running — and leaves alone runs a person started and interrupted from the command
//! line.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runbook_journals::{Journal, JournalError, RunId, RunState, Trigger};
use runbook_steps::{CancelReason, CancelSource, Registry};
use tokio::task::JoinHandle;

use crate::engine::log::Observer;
use crate::engine::{Created, Engine, EngineError, GateMode, Outcome, Resume, Start};
use crate::library::{Library, Named};
use crate::resupply::Given;
use crate::schedule::Schedule;
use crate::schedule::scheduler::Launcher;
use crate::schedule::state::FireOutcome;
use crate::serve::metrics::Metrics;

/// The meta key of the runs a `serve` is executing.
const OWNED: &str = "serve/owned";

/// How long a stopping `serve` waits for its runs to reach a safe point.
const STOP_WAIT: Duration = Duration::from_secs(60);

struct Active {
    stop: Arc<CancelSource>,
    task: Option<JoinHandle<()>>,
}

/// The runs a `serve` executes.
pub struct Runs {
    journal: Arc<dyn Journal>,
    registry: Arc<Registry>,
    library: Library,
    observers: Vec<Arc<dyn Observer>>,
    metrics: Option<Arc<Metrics>>,
    active: Mutex<HashMap<RunId, Active>>,
    /// Signalled whenever a run's task ends.
    ended: std::sync::Condvar,
    owned: Mutex<BTreeSet<RunId>>,
    /// The parameters given for each run this process started or continued, kept in memory
    /// only (never journaled: secret values among them) until the run ends, so that
    /// approving, resuming or waking a run needs no secret given again while this `serve`
    /// lives. After a restart they come from `env:` or must be given with the decision.
    given: Mutex<HashMap<RunId, Vec<(String, String)>>>,
    stopping: std::sync::atomic::AtomicBool,
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

/// A run to create: from an API request, or from a schedule (whose runbook the operator
/// wrote down, by name or path).
struct Launch<'a> {
    target: &'a str,
    params: &'a [(String, String)],
    who: &'a str,
    yes: bool,
    id: Option<RunId>,
    trigger: Option<Trigger>,
}

impl Runs {
    /// A manager over `journal`, notifying `observers` of every record.
    pub fn new(
        journal: Arc<dyn Journal>,
        registry: Arc<Registry>,
        library: Library,
        observers: Vec<Arc<dyn Observer>>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Arc<Self>, JournalError> {
        let owned: BTreeSet<RunId> = match journal.get_meta(OWNED)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            None => BTreeSet::new(),
        };
        Ok(Arc::new(Self {
            journal,
            registry,
            library,
            observers,
            metrics,
            active: Mutex::new(HashMap::new()),
            ended: std::sync::Condvar::new(),
            owned: Mutex::new(owned),
            given: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// The library runbooks are found in.
    pub fn library(&self) -> &Library {
        &self.library
    }

    fn engine(&self, who: &str, gates: GateMode, stop: &CancelSource) -> Engine {
        Engine {
            journal: self.journal.clone(),
            registry: self.registry.clone(),
            observers: self.observers.clone(),
            interrupt: stop.token(),
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

    /// Forgets run `id` as one this `serve` (or the next) is to execute.
    fn disown(&self, id: RunId) {
        let mut owned = self.owned.lock().expect("runs");
        if owned.remove(&id) {
            self.save_owned(&owned);
        }
    }

    /// Whether run `id` is executing in this `serve`.
    pub fn is_active(&self, id: RunId) -> bool {
        self.active.lock().expect("runs").contains_key(&id)
    }

    /// Refuses an operation on a run this `serve` is executing right now.
    fn not_active(&self, id: RunId) -> Result<(), EngineError> {
        // A run whose journal already says it parked or ended is only winding its task down
        // (its last commit is seen before the task returns): give it a moment.
        let settled = || self.journal.summary(id).is_ok_and(|s| s.state.is_settled());
        let active = self.active.lock().expect("runs");
        let (active, _) = self
            .ended
            .wait_timeout_while(active, Duration::from_secs(2), |active| {
                active.contains_key(&id) && settled()
            })
            .expect("runs");
        if active.contains_key(&id) {
            return Err(EngineError::Refused(format!(
                "run {id} is executing right now; wait until it parks or ends (or abort it)"
            )));
        }
        drop(active);
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::Refused("serve is stopping".into()));
        }
        Ok(())
    }

    /// Executes a prepared run in a task of its own.
    fn spawn(self: &Arc<Self>, engine: Engine, stop: Arc<CancelSource>, created: Created) {
        let id = created.id;
        {
            let mut owned = self.owned.lock().expect("runs");
            owned.insert(id);
            self.save_owned(&owned);
        }
        let me = self.clone();
        let mut active = self.active.lock().expect("runs");
        let task = tokio::spawn(async move {
            let outcome = engine.run_created(created).await;
            me.finished(id, &outcome);
        });
        active.insert(
            id,
            Active {
                stop,
                task: Some(task),
            },
        );
    }

    /// Bookkeeping when an execution returns: a run that parked, ended or needs a person is no
    /// longer owned; one stopped by our shutdown stays owned so the next `serve` resumes it.
    fn finished(&self, id: RunId, outcome: &Result<Outcome, EngineError>) {
        self.active.lock().expect("runs").remove(&id);
        self.ended.notify_all();
        if matches!(
            outcome,
            Ok(Outcome::Succeeded | Outcome::Failed { .. } | Outcome::Aborted)
        ) {
            self.given.lock().expect("runs").remove(&id);
        }
        let keep = match outcome {
            Ok(Outcome::Interrupted { .. }) => {
                self.stopping.load(std::sync::atomic::Ordering::SeqCst)
            }
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

    /// Starts a run; returns its id once it is created (its lock taken).
    pub fn start(self: &Arc<Self>, req: &StartRequest) -> Result<RunId, EngineError> {
        self.launch(&Launch {
            target: req.runbook.origin(),
            params: &req.params,
            who: &req.who,
            yes: req.yes,
            id: None,
            trigger: None,
        })
    }

    fn launch(self: &Arc<Self>, req: &Launch<'_>) -> Result<RunId, EngineError> {
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::Refused("serve is stopping".into()));
        }
        let stop = Arc::new(CancelSource::new());
        let gates = if req.yes {
            GateMode::Yes
        } else {
            GateMode::Detach
        };
        let engine = self.engine(req.who, gates, &stop);
        let created = engine.create(Start {
            target: req.target,
            params: req.params,
            id: req.id,
            trigger: req.trigger.clone(),
        })?;
        let id = created.id;
        self.remember(id, req.params);
        self.spawn(engine, stop, created);
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

    /// Resumes a run.
    pub fn resume(self: &Arc<Self>, id: RunId, req: &Resume, who: &str) -> Result<(), EngineError> {
        self.continue_run(id, who, &req.params.now, |engine, params| {
            engine.prepare_resume(
                id,
                &Resume {
                    params,
                    ..req.clone()
                },
            )
        })
    }

    /// Approves or rejects a run's open gate and continues the run.
    pub fn decide(
        self: &Arc<Self>,
        id: RunId,
        approved: bool,
        step: Option<&str>,
        comment: Option<String>,
        params: &[(String, String)],
        who: &str,
    ) -> Result<(), EngineError> {
        self.continue_run(id, who, params, |engine, params| {
            engine.prepare_decide(id, approved, step, comment, &params)
        })
    }

    /// Continues run `id` as `who` once `prepare` has made it ready, with the parameters held
    /// for it and those given `now` (remembered too once the engine let them through).
    fn continue_run(
        self: &Arc<Self>,
        id: RunId,
        who: &str,
        now: &[(String, String)],
        prepare: impl FnOnce(&Engine, Given) -> Result<Created, EngineError>,
    ) -> Result<(), EngineError> {
        self.not_active(id)?;
        let stop = Arc::new(CancelSource::new());
        let engine = self.engine(who, GateMode::Detach, &stop);
        let prepared = prepare(&engine, self.with_given(id, now))?;
        self.remember(id, now);
        self.spawn(engine, stop, prepared);
        Ok(())
    }

    /// Aborts a run; one executing now is stopped at a safe point first.
    pub async fn abort(
        &self,
        id: RunId,
        reason: Option<String>,
        who: &str,
    ) -> Result<(), EngineError> {
        let task = {
            let mut active = self.active.lock().expect("runs");
            active.get_mut(&id).and_then(|a| {
                a.stop
                    .cancel(CancelReason::Interrupted(format!("an abort by {who}")));
                a.task.take()
            })
        };
        if let Some(task) = task {
            let _ = tokio::time::timeout(STOP_WAIT, task).await;
        }
        let stop = CancelSource::new();
        self.engine(who, GateMode::Detach, &stop)
            .abort(id, reason)?;
        Ok(())
    }

    /// Resumes the runs a previous `serve` was executing when it stopped or died.
    pub fn resume_owned(self: &Arc<Self>) -> Vec<(RunId, Result<(), EngineError>)> {
        let owned: Vec<RunId> = self.owned.lock().expect("runs").iter().copied().collect();
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
                Err(e) => Err(EngineError::Journal(e)),
            };
            if let Err(e) = &result {
                tracing::warn!(run = %id, error = %e, "could not resume a run");
                self.disown(id);
            }
            out.push((id, result));
        }
        out
    }

    /// Stops every run at a safe point (journaled as interrupted, still owned) and waits for
    /// them, at most a minute.
    pub async fn shutdown(&self, signal: &str) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let tasks: Vec<JoinHandle<()>> = {
            let mut active = self.active.lock().expect("runs");
            active
                .values_mut()
                .filter_map(|a| {
                    a.stop.cancel(CancelReason::Interrupted(signal.to_owned()));
                    a.task.take()
                })
                .collect()
        };
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(STOP_WAIT, all).await.is_err() {
            tracing::warn!("some runs did not reach a safe point within a minute");
        }
    }
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
            .launch(&Launch {
                target: &schedule.runbook,
                params: &params,
                who: &format!("schedule:{}", schedule.name),
                yes: false,
                id: Some(id),
                trigger: Some(Trigger {
                    schedule: schedule.name.clone(),
                    fire_time: fire,
                }),
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
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
