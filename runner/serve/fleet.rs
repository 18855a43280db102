//! This process as an executor of a journal shared by several executors (the etcd journal):
//! its membership of the fleet ([`runbook_journals::Fleet`]) and what it does as the lease's
//! standing changes.
//!
//! The contract:
//! - **One membership per process**, joined when the process executes runs (`serve`, or a
//!   command that executes a run) under a name (`--executor-name`, by default `HOST-PID`) and a
//!   lease TTL (`--lease-ttl`). Its identity is the name and the lease.
//! - **Suspended** (the lease was not renewed for a whole TTL: etcd unreachable or without
//!   quorum): every run executing here is stopped at a safe point — their writes would be
//!   fenced anyway, and their steps must not go on where the journal cannot follow. Nothing
//!   new is admitted ([`Member::held`]). Back to **held**: the claimer resumes the runs this
//!   executor still owns ([`crate::serve::claimer`]).
//! - **Lost** (the store said the lease is gone): the runs are stopped the same way, and once
//!   none executes any more the process joins again under a new lease — a new identity, so it
//!   never writes as the old one; whatever the old one owned is another's, or free.
//! - **Leaving** (a graceful stop): the lease is revoked, so every run it owned is free at once
//!   for another executor to take up.
//! - **Routing**: an operation on a run that another executor owns is sent to that executor
//!   ([`crate::serve::forward`]); one nobody owns is claimed and done here.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use runbook_journals::{Fleet, Journal, JournalError, RunId, Standing};
use runbook_steps::Cancel;

use crate::serve::claimer;
use crate::serve::gate_timers::GateTimers;
use crate::serve::inbox;
use crate::serve::runs::Runs;
use crate::ui::OutputMode;
use crate::ui::json::ServeEvent;

/// Joins the fleet (again): a new lease, a new identity.
pub type Join = Arc<dyn Fn() -> Result<Arc<dyn Fleet>, JournalError> + Send + Sync>;

/// A journal shared by several executors, and how this process joins their fleet.
#[derive(Clone)]
pub struct Shared {
    /// The journal.
    pub journal: Arc<dyn Journal>,
    /// Joins the fleet.
    pub join: Join,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// How long a membership that lost its lease waits for its runs to stop before joining again.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// How long between attempts to join again after the lease was lost.
const REJOIN_EVERY: Duration = Duration::from_secs(1);

/// Where an operation on a run is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Here: this executor owns the run (now, or already), or the run has ended.
    Here,
    /// In the executor that owns the run.
    Owner(String),
}

/// This process's membership of the fleet.
pub struct Member {
    join: Join,
    current: RwLock<Arc<dyn Fleet>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("me", &self.me()).finish()
    }
}

impl Member {
    /// Joins the fleet with `join` (blocks on the store).
    pub fn join(join: Join) -> Result<Arc<Self>, JournalError> {
        let fleet = join()?;
        Ok(Arc::new(Self {
            join,
            current: RwLock::new(fleet),
        }))
    }

    /// The fleet as this membership sees it now (it changes when the lease was lost).
    pub fn fleet(&self) -> Arc<dyn Fleet> {
        self.current.read().expect("fleet").clone()
    }

    /// This executor's identity now.
    pub fn me(&self) -> String {
        self.fleet().me()
    }

    /// Whether the lease is held: runs may be written and started.
    pub fn held(&self) -> bool {
        *self.fleet().standing().borrow() == Standing::Held
    }

    /// Joins again under a new lease (blocks on the store); the old identity is never used
    /// again.
    fn rejoin(&self) -> Result<Arc<dyn Fleet>, JournalError> {
        let fleet = (self.join)()?;
        *self.current.write().expect("fleet") = fleet.clone();
        Ok(fleet)
    }

    /// Leaves the fleet: every run this executor still owns is free for another at once.
    pub fn leave(&self) {
        self.fleet().leave();
    }

    /// Who owns run `id` now, if anyone.
    pub fn owner(&self, id: RunId) -> Result<Option<String>, JournalError> {
        self.fleet().owner(id)
    }

    /// Where an operation on run `id` is to be done: here when this executor owns it or takes
    /// it now (an unfinished run nobody owns is claimed), or the run has ended (an operation on
    /// it is refused or takes it up again here); else in its owner. Blocks on the store.
    pub fn route(&self, journal: &dyn Journal, id: RunId) -> Result<Route, JournalError> {
        let fleet = self.fleet();
        let me = fleet.me();
        // Claims race with other executors' claimers: a few rounds settle who owns it.
        for _ in 0..3 {
            match fleet.owner(id)? {
                Some(owner) if owner != me => return Ok(Route::Owner(owner)),
                Some(_) => return Ok(Route::Here),
                None => {}
            }
            if journal.summary(id)?.state.is_terminal() || fleet.claim(id)? {
                return Ok(Route::Here);
            }
        }
        match fleet.owner(id)? {
            Some(owner) if owner != me => Ok(Route::Owner(owner)),
            _ => Ok(Route::Here),
        }
    }

    /// Acts on the lease's standing for as long as `stop` is not cancelled: answers the
    /// requests sent to this executor, claims runs to carry on (when `runs` adopts them), stops
    /// runs when the lease is suspended or lost, and joins again after a loss.
    pub fn spawn(
        self: &Arc<Self>,
        runs: &Arc<Runs>,
        timers: Option<Arc<GateTimers>>,
        output: OutputMode,
        stop: Cancel,
    ) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let runs = Arc::clone(runs);
        tokio::spawn(async move { me.supervise(&runs, timers, output, stop).await })
    }

    async fn supervise(
        self: Arc<Self>,
        runs: &Arc<Runs>,
        timers: Option<Arc<GateTimers>>,
        output: OutputMode,
        stop: Cancel,
    ) {
        loop {
            let fleet = self.fleet();
            let mut tasks = Vec::new();
            if let Some(rx) = fleet.inbox() {
                tasks.push(inbox::spawn(rx, Arc::clone(runs), output));
            }
            if runs.adopts() {
                tasks.push(claimer::spawn(
                    Arc::clone(&fleet),
                    Arc::clone(runs),
                    timers.clone(),
                    output,
                ));
            }
            let lost = tokio::select! {
                _ = stop.cancelled() => false,
                () = watch_standing(&fleet, runs, output) => true,
            };
            for task in &tasks {
                task.abort();
            }
            if !lost {
                return;
            }
            // Nothing of the old identity may write after the new one exists: the runs stopped
            // (their writes fenced) are waited for first.
            if tokio::time::timeout(STOP_WAIT, runs.until_none_active())
                .await
                .is_err()
            {
                tracing::warn!("some runs did not stop within a minute of the lease's loss");
            }
            loop {
                let me = Arc::clone(&self);
                match tokio::task::spawn_blocking(move || me.rejoin()).await {
                    Ok(Ok(fleet)) => {
                        let event = ServeEvent {
                            executor: Some(fleet.me()),
                            at: Some(chrono::Utc::now()),
                            ..ServeEvent::new("joined")
                        };
                        crate::serve::say(output, &event, || {
                            format!("joined the fleet again as executor {}", fleet.me())
                        });
                        break;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "failed to join the fleet again"),
                    Err(e) => tracing::warn!(error = %e, "failed to join the fleet again"),
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    () = tokio::time::sleep(REJOIN_EVERY) => {}
                }
            }
        }
    }
}

/// Follows the lease's standing; stops every run here when it is suspended or lost, and
/// returns once it is lost.
async fn watch_standing(fleet: &Arc<dyn Fleet>, runs: &Arc<Runs>, output: OutputMode) {
    let mut standing = fleet.standing();
    let me = fleet.me();
    loop {
        let now = *standing.borrow_and_update();
        match now {
            Standing::Held => {}
            Standing::Suspended => {
                let stopped = runs.interrupt_all(&format!(
                    "the suspension of executor {me}'s lease (the store does not answer)"
                ));
                let event = ServeEvent {
                    executor: Some(me.clone()),
                    at: Some(chrono::Utc::now()),
                    ..ServeEvent::new("suspended")
                };
                crate::serve::say(output, &event, || {
                    format!(
                        "the lease of executor {me} is not renewed (the store does not answer): {stopped} run(s) stopped at a safe point; they go on once it is"
                    )
                });
            }
            Standing::Lost => {
                let stopped = runs.interrupt_all(&format!("the loss of executor {me}'s lease"));
                let event = ServeEvent {
                    executor: Some(me.clone()),
                    at: Some(chrono::Utc::now()),
                    ..ServeEvent::new("lost")
                };
                crate::serve::say(output, &event, || {
                    format!(
                        "the lease of executor {me} is gone: {stopped} run(s) stopped without writing; joining again under a new lease"
                    )
                });
                return;
            }
        }
        if standing.changed().await.is_err() {
            // The fleet went away (left): nothing more to follow.
            std::future::pending::<()>().await;
        }
        if *standing.borrow() == Standing::Held && now != Standing::Held {
            let event = ServeEvent {
                executor: Some(me.clone()),
                at: Some(chrono::Utc::now()),
                ..ServeEvent::new("held")
            };
            crate::serve::say(output, &event, || {
                format!("the lease of executor {me} is renewed again")
            });
        }
    }
}
