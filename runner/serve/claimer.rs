//! The claimer of a `serve` on a journal shared by several executors: it carries on the runs
//! an executor that went away was executing.
//!
//! Runs a `serve` executes are marked adoptable ([`runbook_journals::Fleet::adopt`]). Whenever
//! an owner lets go or its lease expires ([`runbook_journals::Fleet::orphaned`]), on a timer
//! (half the TTL: a wake-up may be missed), and when this executor's lease is renewed after a
//! suspension, the claimer looks at every adoptable run that does not execute here:
//!
//! - owned by another executor: left alone;
//! - ended: no longer adoptable;
//! - owned by nobody: claimed — the claim is atomic, so one executor wins — then, as after a
//!   crash of a single `serve` (`serve/owned`): a run that was running, sleeping or
//!   interrupted is resumed under the journal's in-flight rules (an in-flight step that is not
//!   safe to run again stops the run in needs-attention); a run parked at a gate, paused or
//!   needing attention is held — its gates' expiries armed here, its decisions answered here;
//! - owned by this executor but not executing (it was stopped by a suspension of the lease):
//!   resumed the same way.
//!
//! A run whose resume fails for a reason that a retry cannot change (a secret parameter this
//! executor does not have, a runbook that no longer matches its journal) is left where it is,
//! said once, and not tried again by this executor; one whose resume met a failure of the store
//! is tried again in the next round.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runbook_journals::{Fleet, JournalError, RunId, RunState, Standing};
use tokio::sync::broadcast::error::RecvError;

use crate::engine::Resume;
use crate::serve::gate_timers::GateTimers;
use crate::serve::runs::{Runs, RunsError};
use crate::ui::OutputMode;
use crate::ui::json::ServeEvent;

/// The claimer's state across its rounds.
struct Claimer {
    fleet: Arc<dyn Fleet>,
    runs: Arc<Runs>,
    timers: Option<Arc<GateTimers>>,
    output: OutputMode,
    /// Runs this claimer holds parked, with their last record then: their gates are armed
    /// again only once the run moved on.
    held: Mutex<HashMap<RunId, u64>>,
    /// Runs whose resume failed for good here.
    given_up: Mutex<HashSet<RunId>>,
}

/// What a round does with one adoptable run.
#[derive(Debug, PartialEq, Eq)]
enum Act {
    /// Nothing: another executor owns it, or it executes here.
    Leave,
    /// It ended: no longer adoptable.
    Unadopt,
    /// Resume it (claimed, or owned here and stopped).
    Resume,
    /// Hold it parked (claimed): arm its gates when it waits at one.
    Hold { waiting: bool },
}

/// What to do with an adoptable run in `state`, owned by `owner`, as executor `me`; `mine_now`
/// says whether the claim (when it was nobody's) succeeded.
fn decide(state: RunState, owner: Option<&str>, me: &str, mine_now: bool) -> Act {
    if state.is_terminal() {
        return Act::Unadopt;
    }
    let mine = match owner {
        Some(o) => o == me,
        None => mine_now,
    };
    if !mine {
        return Act::Leave;
    }
    match state {
        RunState::Running | RunState::Sleeping | RunState::Interrupted => Act::Resume,
        RunState::Waiting => Act::Hold { waiting: true },
        _ => Act::Hold { waiting: false },
    }
}

/// Starts the claimer of `runs` over `fleet`; gates of runs it holds are armed on `timers`.
pub fn spawn(
    fleet: Arc<dyn Fleet>,
    runs: Arc<Runs>,
    timers: Option<Arc<GateTimers>>,
    output: OutputMode,
) -> tokio::task::JoinHandle<()> {
    let claimer = Arc::new(Claimer {
        fleet,
        runs,
        timers,
        output,
        held: Mutex::new(HashMap::new()),
        given_up: Mutex::new(HashSet::new()),
    });
    tokio::spawn(async move { claimer.run().await })
}

impl Claimer {
    async fn run(self: Arc<Self>) {
        let mut orphaned = self.fleet.orphaned();
        let mut standing = self.fleet.standing();
        let mut tick =
            tokio::time::interval((self.fleet.ttl() / 2).max(Duration::from_millis(500)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                got = orphaned.recv() => match got {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => orphaned = self.fleet.orphaned(),
                },
                _ = tick.tick() => {}
                changed = standing.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if *standing.borrow() != Standing::Held {
                continue;
            }
            let me = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || me.round()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %runbook_journals::error_chain(&e), "the claimer could not look at the runs");
                }
                Err(e) => tracing::warn!(error = %e, "the claimer's round failed"),
            }
        }
    }

    /// One look at every adoptable run (blocks on the store).
    fn round(&self) -> Result<(), JournalError> {
        let me = self.fleet.me();
        let owners: HashMap<RunId, String> = self.fleet.owners()?.into_iter().collect();
        for id in self.fleet.adoptable()? {
            if self.runs.is_active(id) || self.given_up.lock().expect("claimer").contains(&id) {
                continue;
            }
            let owner = owners.get(&id).map(String::as_str);
            if owner.is_some_and(|o| o != me) {
                self.held.lock().expect("claimer").remove(&id);
                continue;
            }
            let (state, last_seq) = match self.runs.journal().summary(id) {
                Ok(summary) => (summary.state, summary.last_seq),
                Err(JournalError::NoSuchRun(_)) => {
                    self.fleet.adopt(id, false)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mine_now = owner.is_none() && !state.is_terminal() && self.fleet.claim(id)?;
            match decide(state, owner, &me, mine_now) {
                Act::Leave => {}
                Act::Unadopt => self.fleet.adopt(id, false)?,
                Act::Resume => self.resume(id, &me, owner.is_none()),
                Act::Hold { waiting } => {
                    let seen = self.held.lock().expect("claimer").insert(id, last_seq);
                    if waiting
                        && seen != Some(last_seq)
                        && let Some(timers) = &self.timers
                    {
                        timers.arm_later(id);
                    }
                    if owner.is_none() {
                        self.say("holding", id, &me, || {
                            format!(
                                "holding run {id} ({state}), whose executor went away: its decisions and gate expiries are this executor's"
                            )
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn resume(&self, id: RunId, me: &str, taken_over: bool) {
        match self.runs.resume(id, &Resume::default(), me) {
            Ok(()) => {
                let what = if taken_over {
                    "taking over"
                } else {
                    "resuming"
                };
                self.say("resuming", id, me, || {
                    if taken_over {
                        format!("{what} run {id}, whose executor went away")
                    } else {
                        format!("{what} run {id}, stopped while the lease was suspended")
                    }
                });
            }
            // Stopping, or the lease went meanwhile, or the store did not answer: a later round
            // (or another executor) takes it up.
            Err(RunsError::Unavailable(_)) => {}
            Err(e) if e.store_failed() || self.runs.is_active(id) => {
                tracing::warn!(run = %id, error = %runbook_journals::error_chain(&e), "could not take up a run yet");
            }
            Err(e) => {
                self.given_up.lock().expect("claimer").insert(id);
                let event = ServeEvent {
                    run: Some(id),
                    detail: Some(e.to_string()),
                    ..ServeEvent::new("resume_failed")
                };
                crate::serve::say(self.output, &event, || {
                    format!("could not take up run {id}: {e}; `runbook resume {id}` decides")
                });
            }
        }
    }

    fn say(&self, what: &str, id: RunId, me: &str, human: impl FnOnce() -> String) {
        let event = ServeEvent {
            run: Some(id),
            executor: Some(me.to_owned()),
            ..ServeEvent::new(what)
        };
        crate::serve::say(self.output, &event, human);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_nobody_owns_is_resumed_or_held_by_its_state_once_claimed() {
        let me = "b/2";
        assert_eq!(decide(RunState::Running, None, me, true), Act::Resume);
        assert_eq!(decide(RunState::Sleeping, None, me, true), Act::Resume);
        assert_eq!(decide(RunState::Interrupted, None, me, true), Act::Resume);
        assert_eq!(
            decide(RunState::Waiting, None, me, true),
            Act::Hold { waiting: true }
        );
        assert_eq!(
            decide(RunState::Paused, None, me, true),
            Act::Hold { waiting: false }
        );
        assert_eq!(
            decide(RunState::NeedsAttention, None, me, true),
            Act::Hold { waiting: false }
        );
        // Another claimer was faster.
        assert_eq!(decide(RunState::Running, None, me, false), Act::Leave);
    }

    #[test]
    fn a_run_of_another_executor_is_left_alone_and_an_ended_one_unadopted() {
        let me = "b/2";
        assert_eq!(
            decide(RunState::Running, Some("a/1"), me, false),
            Act::Leave
        );
        assert_eq!(
            decide(RunState::Waiting, Some("a/1"), me, false),
            Act::Leave
        );
        for ended in [RunState::Succeeded, RunState::Failed, RunState::Aborted] {
            assert_eq!(decide(ended, None, me, false), Act::Unadopt);
            assert_eq!(decide(ended, Some("a/1"), me, false), Act::Unadopt);
        }
    }

    #[test]
    fn a_run_still_owned_here_but_stopped_by_a_suspension_is_resumed() {
        let me = "b/2";
        assert_eq!(
            decide(RunState::Interrupted, Some(me), me, false),
            Act::Resume
        );
        assert_eq!(decide(RunState::Running, Some(me), me, false), Act::Resume);
    }
}
