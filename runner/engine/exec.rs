//! Executing a run's steps over its journal.
//!
//! The executor walks the runbook in order. At every step it first asks the journal: a step
//! with a recorded outcome is not run again (its output is replayed), a step in flight is
//! decided by the in-flight policy, and only a step the journal has never seen runs fresh. Each
//! step it reaches is compared with the journal's record at the same replay position; a
//! difference is an error naming the position, the expected and the recorded step.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use runbook_journals::{Event, JournalError, OperatorAction, RunId, RunState, SkipReason};
use runbook_steps::{BoxFuture, Cancel, Registry};
use serde_json::{Value, json};

use crate::engine::GateMode;
use crate::engine::ctx::Ctx;
use crate::engine::decide::{self, AfterFailure, Attention, Class, Clock, Facts, Next, Record};
use crate::engine::log::{RunLog, Shipped};
use crate::engine::pause::{Pause, PauseRequest};
use crate::engine::view::{RunView, StepStatus, TransitionError};
use crate::link::Book;
use crate::model::{Action, Step};
use crate::secrets::MASK;

/// What a list of steps (or one step) leaves the run with.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next step.
    Next,
    /// Stop walking: the run fails, parks, needs an operator or was interrupted.
    Stop(Stop),
}

/// Why the walk stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A step failed for good.
    Failed {
        /// The failed step.
        path: String,
        /// Why.
        error: String,
    },
    /// A gate waits for a verdict.
    Parked {
        /// The gate.
        path: String,
    },
    /// A step in flight when the process died is not safe to run again.
    Attention {
        /// The step.
        path: String,
        /// What it was doing.
        detail: String,
    },
    /// We were asked to stop.
    Interrupted {
        /// The signal's name.
        signal: String,
    },
    /// An operator paused the run; it stopped at a step boundary.
    Paused(PauseRequest),
}

/// What a wait cut short by a pause reports in place of a signal's name ("interrupted by a
/// pause while waiting"); the run then stops as paused, not interrupted.
pub const PAUSE: &str = "a pause";

/// Errors that stop the executor itself (not a step).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A record did not fit the run's state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The runbook and the journal disagree about what happened.
    #[error(
        "the journal does not match the runbook at replay position {index}: the runbook asks for {expected}, the journal recorded {recorded}"
    )]
    Mismatch {
        /// 1-based position in the replay order.
        index: usize,
        /// What the runbook asks for here.
        expected: String,
        /// What the journal holds here.
        recorded: String,
    },
}

/// The result of one attempt of a retryable step (effect, wait, script).
pub(crate) enum Attempt {
    /// It produced an output.
    Ok(Value),
    /// It failed; `retryable` is false for failures that cannot change (a bad template).
    Failed {
        error: String,
        output: Option<Value>,
        retryable: bool,
    },
    /// We stopped it.
    Interrupted { reason: String, signal: String },
}

/// One execution of a run by this process.
pub struct Exec<'a> {
    /// The run.
    pub id: RunId,
    /// Where events go.
    pub log: &'a RunLog,
    /// The run as journaled so far (kept current with every append).
    pub view: RunView,
    /// The runbook and everything it calls.
    pub book: &'a Book,
    /// Step kinds.
    pub registry: &'a Registry,
    /// How many paths the journal held when this execution began (the replay part).
    pub replay_len: usize,
    /// The next replay position to compare.
    pub cursor: usize,
    /// Fires on Ctrl-C / SIGTERM.
    pub interrupt: Cancel,
    /// An operator's pause: the walk stops at the next step boundary.
    pub pause: Pause,
    /// The step being walked belongs to a called runbook: no pause is taken there.
    pub in_call: bool,
    /// How gates are answered.
    pub gates: GateMode,
    /// Who is executing (for `--yes` approvals).
    pub who: String,
    /// Events folded into the view but not yet journaled: they ride on the next commit.
    pub pending: Vec<Event>,
    /// Riding events already handed to the journal ([`ships_early`]), oldest first, not yet
    /// known to be durable: every commit awaits them first. (In a mutex only so that `Exec`
    /// stays `Sync`: a future is `Send`, not `Sync`.)
    pub shipped: std::sync::Mutex<VecDeque<Shipped<'a>>>,
    /// The seq of the last record handed to the journal (durable once `shipped` is empty).
    pub committed: u64,
    /// The time.
    pub clock: Arc<dyn Clock>,
    /// Set while this execution is one of several running at once (a parallel loop's
    /// iteration or branch): commits go through the shared ledger, not `pending`/`committed`.
    pub ledger: Option<crate::engine::parallel::SharedLedger>,
    /// What this execution journaled through the ledger (redacted, with when), for its
    /// parent's view.
    pub journaled_at: Vec<(chrono::DateTime<Utc>, Event)>,
}

/// The kinds of steps whose start rides on the next commit: they have no effect of their own,
/// and what they lead to (a gate opening, a timer, an effect's start) commits.
const RIDING_STARTS: &[&str] = &["script", "foreach", "parallel", "call", "gate", "sleep"];

/// Whether an event must be durable before the run goes on: an effect is about to start, the
/// run is about to wait (a gate, a timer, a poll, a retry's back-off) or stop. Everything else
/// (outcomes, skips, decisions, loop items) rides on the next such commit, which is made before
/// anything that could depend on it happens — so each effectful step costs one sync.
pub fn must_commit(event: &Event) -> bool {
    match event {
        Event::StepStarted { kind, .. } => !RIDING_STARTS.contains(&kind.as_str()),
        Event::StepFailed { retry_at, .. } => retry_at.is_some(),
        Event::GateOpened { .. }
        | Event::TimerSet { .. }
        | Event::StateChanged { .. }
        | Event::AttentionNeeded { .. }
        | Event::StepInterrupted { .. }
        | Event::LossAccepted { .. } => true,
        Event::RunReopened { .. }
        | Event::Paused { .. }
        | Event::Unpaused { .. }
        | Event::AbortStarted { .. }
        | Event::RunStarted(_)
        | Event::SourceReloaded { .. }
        | Event::Precheck { .. }
        | Event::Resumed { .. }
        | Event::StepSucceeded { .. }
        | Event::StepSkipped { .. }
        | Event::ItemsDecided { .. }
        | Event::GateDecided { .. }
        | Event::GateExpired { .. }
        | Event::OperatorDecided { .. } => false,
    }
}

/// How many riding events a run holds at most before it hands them to the journal ahead of
/// its next commit (see [`ships_early`]).
pub const RIDE_CHUNK: usize = 512;

/// Whether the riding events should go to the journal now, without waiting for the next
/// commit: once [`RIDE_CHUNK`] of them wait and the last ends a step. A long stretch of steps
/// without an external effect (a chain of `script:` steps) then has its records written by the
/// journal's writer while the run goes on, instead of all at once at its end; nothing waits
/// for them until the next commit, which awaits them first, so the write-ahead promise is
/// unchanged. Cutting only after a step's outcome means a crash leaves the journal at a step
/// boundary, as a crash before an effectful step's intent would.
pub fn ships_early(pending: &[Event]) -> bool {
    pending.len() >= RIDE_CHUNK
        && matches!(
            pending.last(),
            Some(Event::StepSucceeded { .. } | Event::StepSkipped { .. })
        )
}

impl Exec<'_> {
    /// Records events: folds them into the view at once (as they will be journaled, redacted),
    /// and makes them durable now if one of them must be ([`must_commit`]), with everything
    /// that was riding; otherwise they ride on the next commit.
    ///
    /// The events are taken, not copied: with no secret to mask, the view folds each event
    /// itself and it then rides as it is (masking happens again at the commit, with whatever
    /// the run has learned by then).
    pub async fn emit(&mut self, events: impl Into<Vec<Event>>) -> Result<(), ExecError> {
        let events: Vec<Event> = events.into();
        let at = chrono::Utc::now();
        let mut riding = Vec::with_capacity(events.len());
        for event in events {
            let (masked, clear) = if self.log.redactor().is_empty() {
                (event, None)
            } else {
                (self.log.redact(&event), Some(event))
            };
            let record = runbook_journals::Record {
                seq: self.view.last_seq + 1,
                at,
                event: masked,
            };
            self.view.apply(&record)?;
            if self.ledger.is_some() {
                self.journaled_at.push((at, record.event.clone()));
            }
            riding.push(clear.unwrap_or(record.event));
        }
        let must = riding.iter().any(must_commit);
        if let Some(ledger) = &self.ledger {
            let mut ledger = ledger.lock().await;
            ledger.pending.append(&mut riding);
            // The units share the ledger, so what rides is cut when any of them reaches the
            // chunk's size at a step's end, and made durable at once (the other units wait
            // for the ledger meanwhile): a parallel loop of thousands of `script:` iterations
            // holds at most a chunk, not all of them until the next commit.
            let early = !must && ships_early(&ledger.pending);
            if must || early {
                ledger.flush(self.log, self.id).await?;
            }
            if early && crate::engine::log::failpoint::kills_after_ship() {
                crate::engine::log::failpoint::die();
            }
            return Ok(());
        }
        self.pending.append(&mut riding);
        if must {
            self.flush().await?;
        } else if ships_early(&self.pending) {
            self.ship();
            if crate::engine::log::failpoint::kills_after_ship() {
                self.settle().await?;
                crate::engine::log::failpoint::die();
            }
        }
        Ok(())
    }

    /// Makes every riding event durable.
    pub async fn flush(&mut self) -> Result<(), ExecError> {
        if let Some(ledger) = &self.ledger {
            return Ok(ledger.lock().await.flush(self.log, self.id).await?);
        }
        self.ship();
        self.settle().await
    }

    /// Hands the riding events to the journal without waiting for them to be durable.
    fn ship(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending);
        let count = events.len() as u64;
        let shipped = self.log.ship(self.id, self.committed, events);
        self.shipped
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(shipped);
        // The journal writes them as the records after `committed` or refuses them (and
        // everything after them) with an error that `settle` returns.
        self.committed += count;
    }

    /// Waits until everything handed to the journal is durable, in order.
    pub(crate) async fn settle(&mut self) -> Result<(), ExecError> {
        while let Some(shipped) = self
            .shipped
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
        {
            shipped.await?;
        }
        Ok(())
    }

    /// The start of a control step (a loop, a call, a parallel step): journaled once, the first
    /// time the walk reaches it; it rides on the next commit.
    pub(crate) fn control_started(path: &str, kind: &str, intent: Value) -> Event {
        Event::StepStarted {
            path: path.to_owned(),
            kind: kind.to_owned(),
            attempt: 1,
            idempotent: true,
            intent,
        }
    }

    /// Moves the run to `state` unless it is there already.
    pub async fn set_state(
        &mut self,
        state: RunState,
        reason: Option<String>,
    ) -> Result<(), ExecError> {
        if self.view.state == state && self.view.reason == reason {
            return Ok(());
        }
        self.emit([Event::StateChanged { state, reason }]).await
    }

    /// Runs a list of steps in order.
    pub fn steps<'s>(
        &'s mut self,
        steps: &'s [Step],
        ctx: &'s mut Ctx,
    ) -> BoxFuture<'s, Result<Flow, ExecError>> {
        Box::pin(async move {
            for (i, s) in steps.iter().enumerate() {
                match self.step(s, i, ctx).await? {
                    Flow::Next => {}
                    stop @ Flow::Stop(_) => return Ok(stop),
                }
            }
            Ok(Flow::Next)
        })
    }

    /// Compares the step reached now with the journal's record at the same replay position.
    fn replay_check(&mut self, path: &str, step: &Step) -> Result<(), ExecError> {
        if self.cursor >= self.replay_len {
            return Ok(());
        }
        let (recorded_path, recorded_kind) = self.view.order[self.cursor].clone();
        let kind = step.action.kind();
        let same_kind = recorded_kind.as_deref().is_none_or(|k| k == kind);
        if recorded_path != path || !same_kind {
            return Err(ExecError::Mismatch {
                index: self.cursor + 1,
                expected: format!("`{path}` ({kind})"),
                recorded: format!(
                    "`{recorded_path}` ({})",
                    recorded_kind.as_deref().unwrap_or("skipped")
                ),
            });
        }
        self.cursor += 1;
        Ok(())
    }

    /// Moves the replay cursor past the recorded descendants of a step whose outcome is
    /// replayed without running it (a finished loop or call is not walked again). Descendants
    /// under `PATH.on_failure.` stay when `keep_handlers`: a replayed failure runs its handlers.
    pub(crate) fn skip_descendants(&mut self, path: &str, keep_handlers: bool) {
        let nested = format!("{path}[");
        let child = format!("{path}.");
        let handlers = format!("{path}.on_failure.");
        while self.cursor < self.replay_len {
            let recorded = &self.view.order[self.cursor].0;
            let below = recorded.starts_with(&nested) || recorded.starts_with(&child);
            if !below || (keep_handlers && recorded.starts_with(&handlers)) {
                break;
            }
            self.cursor += 1;
        }
    }

    /// Runs (or replays) one step.
    pub(crate) fn step<'s>(
        &'s mut self,
        step: &'s Step,
        index: usize,
        ctx: &'s mut Ctx,
    ) -> BoxFuture<'s, Result<Flow, ExecError>> {
        Box::pin(async move {
            let path = ctx.path(&step.segment(index));
            self.replay_check(&path, step)?;
            let recorded = self
                .view
                .step(&path)
                .map(|s| (s.status.clone(), s.attempts));
            let record = match &recorded {
                None => Record::None,
                Some((StepStatus::Succeeded { output }, attempts)) => Record::Succeeded {
                    attempts: *attempts,
                    masked: step.secret && *output == Value::String(MASK.into()),
                },
                Some((StepStatus::Skipped { .. }, _)) => Record::Skipped,
                Some((StepStatus::Failed { .. }, _)) => Record::Failed,
                Some((
                    StepStatus::RetryPending {
                        attempt, retry_at, ..
                    },
                    _,
                )) => Record::RetryPending {
                    attempt: *attempt,
                    retry_at: *retry_at,
                },
                Some((
                    StepStatus::Started { attempt } | StepStatus::Interrupted { attempt, .. },
                    _,
                )) => Record::InFlight { attempt: *attempt },
            };
            let facts = self.facts(step, &path);
            let next = decide::next(record, facts, self.clock.now());
            // A `call` is one step to its caller (a driver's "stop, start" must not be left
            // half done): a pause is taken before it or after it, never inside.
            self.in_call = !Arc::ptr_eq(&ctx.book, self.book.main());
            // A step boundary: nothing of this step starts or continues once a pause is asked
            // (what is only replayed goes on, so the run stops where work would begin).
            if !matches!(next, Next::Replay)
                && !self.in_call
                && let Some(request) = self.pause.asked()
            {
                return Ok(Flow::Stop(Stop::Paused(request)));
            }
            match next {
                Next::Fresh => self.fresh(step, &path, ctx).await,
                Next::Replay => self.replay(step, &path, ctx, recorded).await,
                Next::Begin { attempt, after } => {
                    if let Some(at) = after
                        && let Err(signal) = self.pause_until(at).await
                    {
                        return Ok(Flow::Stop(Stop::Interrupted { signal }));
                    }
                    self.begin(step, &path, ctx, attempt).await
                }
                Next::AskCheck { attempt } => self.in_flight_check(step, &path, ctx, attempt).await,
                Next::Attention(why) => Ok(Flow::Stop(Stop::Attention {
                    detail: self.attention(why, &path),
                    path,
                })),
            }
        })
    }

    /// What the decisions need to know of a step besides its record.
    fn facts(&self, step: &Step, path: &str) -> Facts {
        Facts {
            class: Class::of(&step.action),
            idempotent: self.view.step(path).is_some_and(|s| s.idempotent),
            has_check: step.check.is_some(),
            operator_retry: self.view.decisions.get(path) == Some(&OperatorAction::Retry),
        }
    }

    /// What a stop for an operator says about the step.
    fn attention(&self, why: Attention, path: &str) -> String {
        match why {
            Attention::InFlight => self
                .view
                .step(path)
                .map_or_else(String::new, |s| describe_intent(&s.intent)),
            Attention::SecretOutput => "its output is secret and was not journaled, and running \
                                        it again is not known to be safe"
                .into(),
        }
    }

    /// Replays a journaled outcome: nothing runs, later steps see what it gave.
    async fn replay(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        recorded: Option<(StepStatus, u32)>,
    ) -> Result<Flow, ExecError> {
        match recorded.map(|(status, _)| status) {
            Some(StepStatus::Succeeded { output }) => {
                self.skip_descendants(path, false);
                // A script's output was journaled with what derives from secrets masked;
                // scripts have no effect, so the value is computed again for later steps.
                let output = match &step.action {
                    Action::Script(expr) if holds_mask(&output) => {
                        ctx.eval(expr, None, &self.book.sources).unwrap_or(output)
                    }
                    _ => output,
                };
                ctx.set(step, output, "succeeded");
                Ok(Flow::Next)
            }
            Some(StepStatus::Failed {
                error,
                output,
                tolerated,
            }) => {
                self.skip_descendants(path, !step.on_failure.is_empty());
                self.failure_tail(step, path, ctx, error, output, tolerated)
                    .await
            }
            _ => {
                self.skip_descendants(path, false);
                ctx.set(step, Value::Null, "skipped");
                Ok(Flow::Next)
            }
        }
    }

    /// A step the journal has never seen: decide `when`, ask `check`, then run it.
    async fn fresh(&mut self, step: &Step, path: &str, ctx: &mut Ctx) -> Result<Flow, ExecError> {
        if let Some(when) = &step.when {
            match ctx.eval_bool(when, None, &self.book.sources) {
                Ok(true) => {}
                Ok(false) => {
                    self.emit([Event::StepSkipped {
                        path: path.to_owned(),
                        reason: SkipReason::When,
                    }])
                    .await?;
                    ctx.set(step, Value::Null, "skipped");
                    return Ok(Flow::Next);
                }
                Err(e) => {
                    return self
                        .fail_unstarted(step, path, ctx, format!("`when` failed: {e}"))
                        .await;
                }
            }
        }
        if let Some(kept) = self.view.loss_after
            && let Some(stop) = self.after_loss(step, path, ctx, kept)
        {
            return Ok(Flow::Stop(stop));
        }
        if step.check.is_some() {
            match self.check(step, path, ctx).await {
                Ok(true) => {
                    self.emit([Event::StepSkipped {
                        path: path.to_owned(),
                        reason: SkipReason::Check,
                    }])
                    .await?;
                    ctx.set(step, Value::Null, "skipped");
                    return Ok(Flow::Next);
                }
                Ok(false) => {}
                Err(CheckError::Interrupted(signal)) => {
                    return Ok(Flow::Stop(Stop::Interrupted { signal }));
                }
                Err(CheckError::Failed(e)) => {
                    return self
                        .fail_unstarted(step, path, ctx, format!("`check` failed: {e}"))
                        .await;
                }
            }
        }
        self.begin(step, path, ctx, 1).await
    }

    /// The first effect a run reaches after an operator accepted a journal loss may have
    /// started before the loss, unrecorded: it runs only if that is known to be safe — an
    /// operator said retry, its `check` will tell (the caller asks it next), or running it twice
    /// is harmless — and otherwise the run stops for a decision.
    fn after_loss(&self, step: &Step, path: &str, ctx: &Ctx, kept: u64) -> Option<Stop> {
        let Action::Effect { kind, spec } = &step.action else {
            return None;
        };
        let mut facts = self.facts(step, path);
        decide::after_loss(facts)?;
        let registered = self.registry.get(kind).expect("kinds are checked at load");
        let rendered = ctx.render_effect(registered, spec).ok().map(|effect| {
            effect.learn_secrets(self.log.redactor());
            effect.spec
        });
        // Never started as far as the journal knows: whether it is idempotent is its own say.
        facts.idempotent = step
            .idempotent
            .unwrap_or_else(|| rendered.as_ref().is_some_and(|r| registered.idempotent(r)));
        decide::after_loss(facts)?;
        let what = rendered.map_or_else(
            || format!("a {kind} step"),
            |r| format!("{kind}: {}", registered.describe(&r)),
        );
        Some(Stop::Attention {
            path: path.to_owned(),
            detail: format!(
                "{what} — the journal lost its records after record {kept}, so it may have \
                 started before"
            ),
        })
    }

    /// Starts (or continues) a step's action.
    async fn begin(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        attempt: u32,
    ) -> Result<Flow, ExecError> {
        match &step.action {
            Action::Effect { .. } | Action::Wait(_) | Action::Script(_) => {
                self.attempts(step, path, ctx, attempt).await
            }
            Action::Gate { .. } => self.gate(step, path, ctx).await,
            Action::Sleep(duration) => self.sleep(step, path, ctx, duration).await,
            Action::Foreach { .. } => self.foreach(step, path, ctx).await,
            Action::Parallel { branches } => self.branches(step, path, ctx, branches).await,
            Action::Call { runbook, params } => self.call(step, path, ctx, runbook, params).await,
        }
    }

    /// An effect (or a call, a loop…) that started and never finished, with a `check`:
    /// present skips it, absent runs attempt `attempt` (a control step continues where it
    /// stands), no answer stops for an operator.
    async fn in_flight_check(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        attempt: u32,
    ) -> Result<Flow, ExecError> {
        match self.check(step, path, ctx).await {
            Ok(true) => {
                // What a control step did before is left as journaled, not replayed.
                self.skip_descendants(path, false);
                self.emit([Event::StepSkipped {
                    path: path.to_owned(),
                    reason: SkipReason::Check,
                }])
                .await?;
                ctx.set(step, Value::Null, "skipped");
                Ok(Flow::Next)
            }
            Ok(false) => self.begin(step, path, ctx, attempt).await,
            Err(CheckError::Interrupted(signal)) => Ok(Flow::Stop(Stop::Interrupted { signal })),
            Err(CheckError::Failed(e)) => Ok(Flow::Stop(Stop::Attention {
                path: path.to_owned(),
                detail: format!(
                    "{}; its `check` could not tell whether the effect is in place: {e}",
                    self.attention(Attention::InFlight, path)
                ),
            })),
        }
    }

    /// Runs attempts of an effect, wait or script until one succeeds or retries run out.
    async fn attempts(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        mut attempt: u32,
    ) -> Result<Flow, ExecError> {
        loop {
            let started = Instant::now();
            let result = match &step.action {
                Action::Effect { kind, spec } => {
                    self.effect_attempt(step, path, ctx, kind, spec, attempt)
                        .await?
                }
                Action::Wait(wait) => {
                    self.emit([Event::StepStarted {
                        path: path.to_owned(),
                        kind: "wait".into(),
                        attempt,
                        idempotent: true,
                        intent: json!({
                            "describe": super::control::describe_wait(wait, ctx),
                        }),
                    }])
                    .await?;
                    self.poll(path, ctx, wait).await
                }
                Action::Script(expr) => {
                    self.emit([Event::StepStarted {
                        path: path.to_owned(),
                        kind: "script".into(),
                        attempt,
                        idempotent: true,
                        intent: json!({ "describe": format!("script {}", first_line(&expr.src)) }),
                    }])
                    .await?;
                    match ctx.eval(expr, None, &self.book.sources) {
                        Ok(v) => Attempt::Ok(v),
                        Err(error) => Attempt::Failed {
                            error,
                            output: None,
                            retryable: true,
                        },
                    }
                }
                _ => unreachable!("attempts() is for effects, waits and scripts"),
            };
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let (error, output, retryable) = match result {
                Attempt::Ok(output) => match self.assert(step, ctx, &output) {
                    Ok(()) => {
                        return self
                            .succeed(step, path, ctx, output, attempt, duration_ms)
                            .await;
                    }
                    Err(e) => (e, Some(output), true),
                },
                Attempt::Failed {
                    error,
                    output,
                    retryable,
                } => (error, output, retryable),
                Attempt::Interrupted { reason, signal } => {
                    self.emit([Event::StepInterrupted {
                        path: path.to_owned(),
                        attempt,
                        reason,
                    }])
                    .await?;
                    return Ok(Flow::Stop(Stop::Interrupted { signal }));
                }
            };
            // A secret step's output is secret whole, failed or not: the journal gets the mask,
            // and its strings are learned so that the error text is scrubbed of them.
            let output = match output {
                Some(o) if step.secret => {
                    self.log.redactor().add_output(&o);
                    Some(Value::String(MASK.into()))
                }
                other => other,
            };
            let tolerated = match decide::after_failure(
                step.retry.as_ref(),
                attempt,
                retryable,
                step.continue_on_error,
                self.clock.now(),
            ) {
                AfterFailure::Retry {
                    attempt: next,
                    at: retry_at,
                } => {
                    self.emit([Event::StepFailed {
                        path: path.to_owned(),
                        attempt,
                        error,
                        output,
                        retry_at: Some(retry_at),
                        duration_ms,
                        tolerated: false,
                    }])
                    .await?;
                    if let Err(signal) = self.pause_until(retry_at).await {
                        return Ok(Flow::Stop(Stop::Interrupted { signal }));
                    }
                    attempt = next;
                    continue;
                }
                AfterFailure::Fail { tolerated } => tolerated,
            };
            self.emit([Event::StepFailed {
                path: path.to_owned(),
                attempt,
                error: error.clone(),
                output: output.clone(),
                retry_at: None,
                duration_ms,
                tolerated,
            }])
            .await?;
            return self
                .failure_tail(step, path, ctx, error, output, tolerated)
                .await;
        }
    }

    /// Checks `assert` over a step's output.
    fn assert(&self, step: &Step, ctx: &Ctx, output: &Value) -> Result<(), String> {
        let Some(assert) = &step.assert else {
            return Ok(());
        };
        match ctx.eval_bool(assert, Some(output), &self.book.sources) {
            Ok(true) => Ok(()),
            Ok(false) => {
                // A message that cannot be rendered says so beside its text, rather than
                // passing for a rendered one.
                let message = step.message.as_ref().map(|m| {
                    ctx.render(&m.text, Some(output)).unwrap_or_else(|e| {
                        format!("{} (the message could not be rendered: {e})", m.text.trim())
                    })
                });
                Err(match message {
                    Some(m) => format!("assertion failed: {m}"),
                    None => format!("assertion failed: {}", assert.src.trim()),
                })
            }
            Err(e) => Err(format!("`assert` failed: {e}")),
        }
    }

    /// Journals a success and makes the output visible to later steps.
    async fn succeed(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        output: Value,
        attempt: u32,
        duration_ms: u64,
    ) -> Result<Flow, ExecError> {
        let journaled = if step.secret {
            self.log.redactor().add_output(&output);
            Value::String(MASK.into())
        } else {
            output.clone()
        };
        self.emit([Event::StepSucceeded {
            path: path.to_owned(),
            attempt,
            output: journaled,
            duration_ms,
        }])
        .await?;
        ctx.set(step, output, "succeeded");
        Ok(Flow::Next)
    }

    /// Records a failure that happened before the step's effect could start (a `when` that
    /// does not evaluate, a template that does not render).
    pub(crate) async fn fail_unstarted(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        error: String,
    ) -> Result<Flow, ExecError> {
        let attempt = self.view.step(path).map_or(1, |s| s.attempts.max(1));
        if !matches!(
            self.view.step(path).map(|s| &s.status),
            Some(StepStatus::Started { .. })
        ) {
            self.emit([Event::StepStarted {
                path: path.to_owned(),
                kind: step.action.kind().to_owned(),
                attempt,
                idempotent: true,
                intent: json!({ "describe": format!("{} (not started)", step.action.kind()) }),
            }])
            .await?;
        }
        self.emit([Event::StepFailed {
            path: path.to_owned(),
            attempt,
            error: error.clone(),
            output: None,
            retry_at: None,
            duration_ms: 0,
            tolerated: step.continue_on_error,
        }])
        .await?;
        self.failure_tail(step, path, ctx, error, None, step.continue_on_error)
            .await
    }

    /// After a step failed for good: its `on_failure` steps, then go on (tolerated) or stop.
    pub(crate) async fn failure_tail(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        error: String,
        output: Option<Value>,
        tolerated: bool,
    ) -> Result<Flow, ExecError> {
        let mut error = error;
        if !step.on_failure.is_empty() {
            let mut handler = ctx.clone();
            handler.prefix = format!("{path}.on_failure.");
            handler.set(step, output.clone().unwrap_or(Value::Null), "failed");
            match self.steps(&step.on_failure, &mut handler).await? {
                Flow::Next => {}
                Flow::Stop(Stop::Failed { path: p, error: e }) => {
                    use std::fmt::Write as _;
                    let _ = write!(error, "; its on_failure step `{p}` failed too: {e}");
                }
                stop @ Flow::Stop(_) => return Ok(stop),
            }
        }
        if tolerated {
            ctx.set(step, output.unwrap_or(Value::Null), "failed");
            return Ok(Flow::Next);
        }
        Ok(Flow::Stop(Stop::Failed {
            path: path.to_owned(),
            error,
        }))
    }

    /// Sleeps until `when`, or returns the signal's name if interrupted first.
    pub(crate) async fn pause_until(&self, when: chrono::DateTime<Utc>) -> Result<(), String> {
        self.pause(decide::remaining(when, self.clock.now())).await
    }

    /// Sleeps `wait`, or returns the signal's name if interrupted first ([`PAUSE`] if an
    /// operator paused the run: waiting is cut short, to go on after the pause).
    pub(crate) async fn pause(&self, wait: std::time::Duration) -> Result<(), String> {
        if wait.is_zero() {
            return match self.interrupt.reason() {
                Some(r) => Err(signal_name(&r)),
                None => Ok(()),
            };
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => Ok(()),
            reason = self.interrupt.cancelled() => Err(signal_name(&reason)),
            _ = self.pause.wait(), if !self.in_call => Err(PAUSE.to_owned()),
        }
    }
}

/// Why a `check` gave no answer.
pub(crate) enum CheckError {
    /// It failed to run or evaluate.
    Failed(String),
    /// We were asked to stop.
    Interrupted(String),
}

/// The signal name of an interruption.
pub(crate) fn signal_name(reason: &runbook_steps::CancelReason) -> String {
    match reason {
        runbook_steps::CancelReason::Interrupted(s) => s.clone(),
        runbook_steps::CancelReason::Timeout(_) => "timeout".into(),
    }
}

/// What a journaled intent says the step was doing, on one line (a multi-line script shows its
/// first line).
pub fn describe_intent(intent: &Value) -> String {
    let text = intent
        .get("describe")
        .and_then(Value::as_str)
        .map_or_else(|| crate::engine::ctx::short(intent), str::to_owned);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    let more = lines.next().is_some();
    let mut out: String = first.chars().take(160).collect();
    if more || first.chars().count() > 160 {
        out.push_str(" …");
    }
    out
}

fn first_line(s: &str) -> String {
    let line = s.trim().lines().next().unwrap_or_default();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// Whether a journaled value has anything masked in it.
fn holds_mask(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains(MASK),
        Value::Array(items) => items.iter().any(holds_mask),
        Value::Object(map) => map.values().any(holds_mask),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(path: &str) -> Event {
        Event::StepStarted {
            path: path.to_owned(),
            kind: "script".to_owned(),
            attempt: 1,
            idempotent: true,
            intent: json!({}),
        }
    }

    fn succeeded(path: &str) -> Event {
        Event::StepSucceeded {
            path: path.to_owned(),
            attempt: 1,
            output: json!(1),
            duration_ms: 0,
        }
    }

    fn skipped(path: &str) -> Event {
        Event::StepSkipped {
            path: path.to_owned(),
            reason: SkipReason::When,
        }
    }

    /// `n` riding events of finished steps, then `last`.
    fn riding(n: usize, last: Event) -> Vec<Event> {
        let mut events: Vec<Event> = (0..n.div_ceil(2))
            .flat_map(|i| [started(&format!("s{i}")), succeeded(&format!("s{i}"))])
            .collect();
        events.truncate(n);
        events.push(last);
        events
    }

    #[test]
    fn riding_events_go_ahead_of_the_next_commit_only_in_full_chunks_at_a_steps_end() {
        let cases: &[(&str, Vec<Event>, bool)] = &[
            ("nothing riding", Vec::new(), false),
            (
                "a chunk less one, ending a step",
                riding(RIDE_CHUNK - 2, succeeded("x")),
                false,
            ),
            (
                "a full chunk ending with a success",
                riding(RIDE_CHUNK - 1, succeeded("x")),
                true,
            ),
            (
                "a full chunk ending with a skip",
                riding(RIDE_CHUNK - 1, skipped("x")),
                true,
            ),
            (
                "a full chunk ending with a start (a step half done)",
                riding(RIDE_CHUNK - 1, started("x")),
                false,
            ),
            (
                "more than a chunk, ending a step",
                riding(3 * RIDE_CHUNK, succeeded("x")),
                true,
            ),
            (
                "more than a chunk, a step in the middle",
                riding(3 * RIDE_CHUNK, started("x")),
                false,
            ),
        ];
        for (what, events, ships) in cases {
            assert_eq!(
                ships_early(events),
                *ships,
                "{what} ({} events)",
                events.len()
            );
        }
    }
}
