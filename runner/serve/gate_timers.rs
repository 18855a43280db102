//! `serve` applies a gate's expiry on time, with nobody touching the run.
//!
//! A run parked at a gate is not executing: nothing in it would notice the expiry until
//! someone approved, rejected or resumed it — holding its lock meanwhile. [`GateTimers`] is
//! an engine [`Observer`]: when a run parks (a committed `state_changed` to `waiting`) it reads
//! the run's open gates and arms one timer per gate with an expiry. At the expiry, if the gate
//! is still open and the run is not executing, it resumes the run as `serve`; the engine, now
//! past the journaled expiry, journals `gate_expired` and does what the gate's `on_timeout`
//! says. A gate decided before its expiry is left alone when its timer fires.
//!
//! On start, [`GateTimers::arm_waiting`] arms the gates of every run parked in the journal, so
//! parked runs survive a restart: a gate whose expiry passed while `serve` was down is applied
//! at once. Timers are in memory only — the expiry itself is journaled (`gate_opened`), which
//! is what makes this re-arming possible.
//!
//! A run whose secret parameters this `serve` does not hold (it was restarted, and they come
//! from no `env:`) cannot be resumed: its expiry is then applied by the next person's
//! `resume`, and `serve` says so on its standard error.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use runbook_journals::{Event, Journal, Record, RunId, RunState};
use tokio::sync::mpsc;

use crate::engine::Resume;
use crate::engine::decide;
use crate::engine::log::Observer;
use crate::engine::view::RunView;
use crate::serve::runs::{Runs, RunsError};
use crate::ui::OutputMode;
use crate::ui::json::ServeEvent;

/// How often a timer that fired looks again while the run is executing (it may be parking).
const BUSY_POLL: Duration = Duration::from_millis(100);

/// How long a timer that fired waits for an executing run before it leaves the expiry to it.
const BUSY_LIMIT: Duration = Duration::from_secs(120);

/// The identity that resumes a run to apply a gate's expiry.
pub const WHO: &str = "serve";

/// Gate expiry timers. See the module documentation.
pub struct GateTimers {
    journal: Arc<dyn Journal>,
    runs: OnceLock<Weak<Runs>>,
    /// Gates with a timer armed: (run, gate path).
    armed: Mutex<HashSet<(RunId, String)>>,
    /// Runs that parked, for the task that reads their gates.
    parked: mpsc::UnboundedSender<RunId>,
    /// How serve prints what it does.
    output: OutputMode,
}

impl GateTimers {
    /// Timers over `journal`; they act once [`GateTimers::attach`] gave them the runs.
    ///
    /// Must be called inside a tokio runtime: it spawns the task that arms timers.
    pub fn new(journal: Arc<dyn Journal>, output: OutputMode) -> Arc<Self> {
        let (parked, mut rx) = mpsc::unbounded_channel();
        let timers = Arc::new(Self {
            journal,
            runs: OnceLock::new(),
            armed: Mutex::new(HashSet::new()),
            parked,
            output,
        });
        let weak = Arc::downgrade(&timers);
        tokio::spawn(async move {
            while let Some(id) = rx.recv().await {
                let Some(timers) = weak.upgrade() else { return };
                timers.arm(id).await;
            }
        });
        timers
    }

    /// Gives the timers the runs they resume.
    pub fn attach(&self, runs: &Arc<Runs>) {
        let _ = self.runs.set(Arc::downgrade(runs));
    }

    /// Arms the gates of run `id`, parked, soon (from any thread): a run whose executor went
    /// away, now held by this one.
    pub fn arm_later(&self, id: RunId) {
        let _ = self.parked.send(id);
    }

    /// Arms the gates of every run parked in the journal (at start); returns the gates armed
    /// with their expiry.
    pub async fn arm_waiting(self: &Arc<Self>) -> Vec<(RunId, String, DateTime<Utc>)> {
        let journal = Arc::clone(&self.journal);
        let waiting: Vec<RunId> = tokio::task::spawn_blocking(move || {
            journal
                .unfinished_runs()
                .into_iter()
                .filter(|s| s.state == RunState::Waiting)
                .map(|s| s.id)
                .collect()
        })
        .await
        .unwrap_or_default();
        let mut armed = Vec::new();
        for id in waiting {
            armed.extend(self.arm(id).await);
        }
        armed
    }

    /// Arms a timer for each open gate of run `id` that expires and has none yet.
    async fn arm(self: &Arc<Self>, id: RunId) -> Vec<(RunId, String, DateTime<Utc>)> {
        let mut armed = Vec::new();
        for (path, at) in self.expiring(id).await {
            if !self
                .armed
                .lock()
                .expect("gate timers")
                .insert((id, path.clone()))
            {
                continue;
            }
            armed.push((id, path.clone(), at));
            let me = Arc::clone(self);
            tokio::spawn(async move {
                let wait = decide::remaining(at, Utc::now());
                tokio::time::sleep(wait).await;
                me.armed
                    .lock()
                    .expect("gate timers")
                    .remove(&(id, path.clone()));
                me.fire(id, &path).await;
            });
        }
        armed
    }

    /// The open gates of run `id` that expire, with their expiry.
    async fn expiring(&self, id: RunId) -> Vec<(String, DateTime<Utc>)> {
        let journal = Arc::clone(&self.journal);
        let view = tokio::task::spawn_blocking(move || {
            let records = journal.read(id).ok()?;
            RunView::from_records(id, &records).ok()
        })
        .await
        .ok()
        .flatten();
        let Some(view) = view else {
            return Vec::new();
        };
        view.open_gates()
            .into_iter()
            .filter_map(|(path, g)| g.expires_at.map(|at| (path.to_owned(), at)))
            .collect()
    }

    /// The expiry of gate `path` of run `id` is due: resume the run if the gate is still open
    /// and nothing executes the run (an executing run applies the expiry itself when it
    /// reaches the gate; one that is parking is waited for).
    async fn fire(&self, id: RunId, path: &str) {
        let Some(runs) = self.runs.get().and_then(Weak::upgrade) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + BUSY_LIMIT;
        loop {
            if !self.expiring(id).await.iter().any(|(p, _)| p == path) {
                return;
            }
            if !runs.is_active(id) {
                let resumed = tokio::task::spawn_blocking({
                    let runs = Arc::clone(&runs);
                    move || runs.resume(id, &Resume::default(), WHO)
                })
                .await;
                match resumed {
                    Ok(Ok(())) => {
                        let event = ServeEvent {
                            run: Some(id),
                            step: Some(path),
                            ..ServeEvent::new("gate_expired")
                        };
                        crate::serve::say(self.output, &event, || {
                            format!("gate `{path}` of run {id} expired: applying its on_timeout")
                        });
                        return;
                    }
                    // Taken up by someone in between: go round and look again.
                    Ok(Err(_)) if runs.is_active(id) => {}
                    // serve is stopping: the next one arms the gate again.
                    Ok(Err(RunsError::Unavailable(_))) => return,
                    Ok(Err(e)) => {
                        eprintln!(
                            "could not apply the expiry of gate `{path}` of run {id}: {e}; `runbook resume {id}` applies it"
                        );
                        return;
                    }
                    Err(e) => {
                        eprintln!("could not apply the expiry of gate `{path}` of run {id}: {e}");
                        return;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(BUSY_POLL).await;
        }
    }
}

impl Observer for GateTimers {
    fn record(&self, run: RunId, record: &Record) {
        if let Event::StateChanged {
            state: RunState::Waiting,
            ..
        } = record.event
        {
            // Closed only when the runtime goes down: nothing is left to arm then.
            let _ = self.parked.send(run);
        }
    }
}
