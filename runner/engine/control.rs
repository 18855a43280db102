//! The engine's own step kinds (gate, sleep, foreach, call, wait) and running effect kinds with
//! the engine-owned timeout and interruption.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use runbook_journals::{Event, GateTimeout, RunState};
use runbook_steps::{CancelReason, CancelSource, StepContext, StepError, StepKind};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::engine::GateMode;
use crate::engine::ctx::{Ctx, short};
use crate::engine::decide;
use crate::engine::exec::{Attempt, CheckError, Exec, ExecError, Flow, Stop};
use crate::engine::live::LiveOutput;
use crate::model::{Action, Check, Concurrency, Expr, Setting, Step, Template, Wait};

/// How long a probe may take when it sets no `timeout` of its own.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a step may take to wind down after it was told to stop.
const WIND_DOWN: Duration = Duration::from_secs(30);

/// The outcome of one probe.
pub(crate) enum Probe {
    /// It produced an output (possibly while failing: a 503 is still an answer).
    Output(Value, Option<String>),
    /// It failed without an output.
    Failed(String),
    /// We were asked to stop.
    Interrupted(String),
}

impl Exec<'_> {
    /// One attempt of an effect kind: render, journal the intent, run.
    pub(crate) async fn effect_attempt(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &Ctx,
        kind_name: &str,
        spec: &Value,
        attempt: u32,
    ) -> Result<Attempt, ExecError> {
        let kind = self
            .registry
            .get(kind_name)
            .expect("kinds are checked at load");
        let rendered = match ctx.render_effect(kind, spec) {
            Ok(effect) => {
                effect.learn_secrets(self.log.redactor());
                coerce(kind, effect.spec)
            }
            Err(e) => {
                self.emit([Event::StepStarted {
                    path: path.to_owned(),
                    kind: kind_name.to_owned(),
                    attempt,
                    idempotent: true,
                    intent: json!({ "describe": format!("{kind_name} (spec not rendered)") }),
                }])
                .await?;
                return Ok(Attempt::Failed {
                    error: format!("failed to render the {kind_name} spec: {e}"),
                    output: None,
                    retryable: false,
                });
            }
        };
        let idempotent = step
            .idempotent
            .unwrap_or_else(|| kind.idempotent(&rendered));
        let describe = format!("{kind_name}: {}", kind.describe(&rendered));
        self.emit([Event::StepStarted {
            path: path.to_owned(),
            kind: kind_name.to_owned(),
            attempt,
            idempotent,
            intent: json!({ "describe": describe, "spec": rendered }),
        }])
        .await?;
        // A secret step's output is never shown, not even masked.
        let live = (!step.secret && self.log.follows_output())
            .then(|| Arc::new(LiveOutput::new(self.log.clone(), self.id, path, attempt)));
        let result = self
            .run_kind(kind, rendered, path, attempt, step.timeout, live.clone())
            .await;
        if let Some(live) = live {
            live.finish();
        }
        Ok(match result {
            Ok(output) => Attempt::Ok(output),
            Err(StepError::Cancelled {
                reason: CancelReason::Interrupted(signal),
                message,
                ..
            }) => Attempt::Interrupted {
                reason: message,
                signal,
            },
            Err(e @ StepError::Spec { .. }) => Attempt::Failed {
                error: e.to_string(),
                output: None,
                retryable: false,
            },
            Err(e) => Attempt::Failed {
                error: e.to_string(),
                output: e.output().cloned(),
                retryable: true,
            },
        })
    }

    /// Runs a kind with the engine's timeout and interruption, its output shown to `live` as
    /// it comes.
    pub(crate) async fn run_kind(
        &self,
        kind: &dyn StepKind,
        spec: Value,
        path: &str,
        attempt: u32,
        timeout: Option<Duration>,
        live: Option<Arc<LiveOutput>>,
    ) -> Result<Value, StepError> {
        let source = CancelSource::new();
        let mut ctx = StepContext::new(self.id.to_string(), path, attempt, source.token());
        ctx.conditions = Some(Arc::new(RhaiConditions));
        ctx.output = live.map(|l| l as Arc<dyn runbook_steps::OutputSink>);
        let span = tracing::info_span!("step", run = %self.id, path, attempt, kind = kind.name());
        let fut = kind.run(spec, &ctx).instrument(span);
        tokio::pin!(fut);
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut stopping: Option<tokio::time::Instant> = None;
        loop {
            let timer = async {
                match (stopping, deadline) {
                    (Some(hard), _) => tokio::time::sleep_until(hard).await,
                    (None, Some(d)) => tokio::time::sleep_until(d).await,
                    (None, None) => std::future::pending().await,
                }
            };
            tokio::select! {
                result = &mut fut => return result,
                reason = self.interrupt.cancelled(), if stopping.is_none() => {
                    source.cancel(reason);
                    stopping = Some(tokio::time::Instant::now() + WIND_DOWN);
                }
                () = timer => {
                    if stopping.is_some() {
                        let reason = source.reason().unwrap_or(CancelReason::Interrupted("SIGKILL".into()));
                        return Err(StepError::Cancelled {
                            message: format!("{reason}; the step did not wind down within {} and was abandoned", humantime::format_duration(WIND_DOWN)),
                            reason,
                            output: None,
                        });
                    }
                    source.cancel(CancelReason::Timeout(timeout.unwrap_or_default()));
                    stopping = Some(tokio::time::Instant::now() + WIND_DOWN);
                }
            }
        }
    }

    /// Runs a probe (an effect or a script) once, not journaled.
    pub(crate) async fn probe(&self, probe: &Step, path: &str, ctx: &Ctx) -> Probe {
        match &probe.action {
            Action::Script(expr) => match ctx.eval(expr, None, &self.book.sources) {
                Ok(v) => Probe::Output(v, None),
                Err(e) => Probe::Failed(e),
            },
            Action::Effect { kind, spec } => {
                let kind = self.registry.get(kind).expect("kinds are checked at load");
                let rendered = match ctx.render_effect(kind, spec) {
                    Ok(effect) => {
                        effect.learn_secrets(self.log.redactor());
                        coerce(kind, effect.spec)
                    }
                    Err(e) => return Probe::Failed(format!("failed to render the probe: {e}")),
                };
                let timeout = probe.timeout.unwrap_or(PROBE_TIMEOUT);
                match self
                    .run_kind(
                        kind,
                        rendered,
                        &format!("{path}.probe"),
                        1,
                        Some(timeout),
                        None,
                    )
                    .await
                {
                    Ok(v) => Probe::Output(v, None),
                    Err(StepError::Cancelled {
                        reason: CancelReason::Interrupted(signal),
                        ..
                    }) => Probe::Interrupted(signal),
                    Err(e) => match e.output() {
                        Some(o) => Probe::Output(o.clone(), Some(e.to_string())),
                        None => Probe::Failed(e.to_string()),
                    },
                }
            }
            _ => Probe::Failed("a probe must be an effect or a script".into()),
        }
    }

    /// Polls a wait's probe until its condition holds or its timeout passes.
    pub(crate) async fn poll(&self, path: &str, ctx: &Ctx, wait: &Wait) -> Attempt {
        let timeout = match wait_timeout(wait, ctx) {
            Ok(t) => t,
            Err(error) => {
                return Attempt::Failed {
                    error,
                    output: None,
                    retryable: false,
                };
            }
        };
        let deadline = Instant::now() + timeout;
        let mut polls = 0u32;
        let mut last_output = None;
        loop {
            polls += 1;
            let last = match self.probe(&wait.probe, path, ctx).await {
                Probe::Output(output, error) => {
                    match ctx.eval_bool(&wait.until, Some(&output), &self.book.sources) {
                        Ok(true) => return Attempt::Ok(output),
                        Ok(false) => {
                            let note = error.unwrap_or_else(|| summary(&output));
                            last_output = Some(output);
                            format!("not yet: {note}")
                        }
                        Err(e) => {
                            last_output = Some(output);
                            format!("condition could not be evaluated: {e}")
                        }
                    }
                }
                Probe::Failed(e) => e,
                Probe::Interrupted(signal) => {
                    return Attempt::Interrupted {
                        reason: format!("interrupted by {signal} while waiting"),
                        signal,
                    };
                }
            };
            self.log
                .progress(self.id, path, &format!("poll {polls}: {last}"));
            if Instant::now() + wait.every >= deadline {
                return Attempt::Failed {
                    error: format!(
                        "`{}` did not hold within {} ({polls} polls); last: {last}",
                        wait.until.src.trim(),
                        humantime::format_duration(timeout)
                    ),
                    output: last_output,
                    retryable: true,
                };
            }
            if let Err(signal) = self.pause(wait.every).await {
                return Attempt::Interrupted {
                    reason: format!("interrupted by {signal} while waiting"),
                    signal,
                };
            }
        }
    }

    /// Asks a step's `check` whether its effect is in place already.
    pub(crate) async fn check(
        &self,
        step: &Step,
        path: &str,
        ctx: &Ctx,
    ) -> Result<bool, CheckError> {
        match step.check.as_ref().expect("caller checked") {
            Check::Expr(expr) => ctx
                .eval_bool(expr, None, &self.book.sources)
                .map_err(CheckError::Failed),
            Check::Probe { probe, until } => {
                match self.probe(probe, &format!("{path}.check"), ctx).await {
                    Probe::Output(output, _) => ctx
                        .eval_bool(until, Some(&output), &self.book.sources)
                        .map_err(CheckError::Failed),
                    Probe::Failed(e) => Err(CheckError::Failed(e)),
                    Probe::Interrupted(s) => Err(CheckError::Interrupted(s)),
                }
            }
        }
    }

    /// A gate: open it (journaled, with who must approve and what its expiry means), then
    /// wait for a verdict by `--yes`, the terminal, or `approve`/`reject` later (parking the
    /// run). Reached after its expiry, it journals the expiry and does what `on_timeout` says.
    pub(crate) async fn gate(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
    ) -> Result<Flow, ExecError> {
        let Action::Gate {
            prompt,
            timeout,
            four_eyes,
            rules,
        } = &step.action
        else {
            unreachable!("the walker calls gate for gates only")
        };
        if !self.view.gates.contains_key(path) {
            let text = match ctx.render(&prompt.text, None) {
                Ok(t) => t,
                Err(e) => {
                    return self
                        .fail_unstarted(
                            step,
                            path,
                            ctx,
                            format!("failed to render the prompt: {e}"),
                        )
                        .await;
                }
            };
            let expires_at = timeout.map(|t| decide::after(self.clock.now(), t));
            self.emit([
                Event::StepStarted {
                    path: path.to_owned(),
                    kind: "gate".into(),
                    attempt: 1,
                    idempotent: true,
                    intent: json!({ "describe": format!("gate: {text}") }),
                },
                Event::GateOpened {
                    path: path.to_owned(),
                    prompt: text,
                    expires_at,
                    four_eyes: *four_eyes,
                    approvals: rules.approvals,
                    approvers: rules.approvers.clone(),
                    on_timeout: rules.on_timeout,
                },
            ])
            .await?;
        }
        loop {
            let gate = self.view.gates[path].clone();
            let state = decide::gate(
                gate.decision.as_ref().map(|(approved, _, _)| *approved),
                gate.expired,
                gate.expires_at,
                gate.on_timeout,
                self.clock.now(),
            );
            match state {
                decide::Gate::Decided { approved } => {
                    let (_, by, comment) = gate.decision.expect("decided");
                    if approved {
                        let approvals: Vec<Value> = gate
                            .approved_by
                            .iter()
                            .map(|(by, comment, at)| json!({ "by": by, "comment": comment, "at": at }))
                            .collect();
                        let output = json!({ "approved": true, "by": by, "comment": comment, "approvals": approvals });
                        return self
                            .gate_passed(step, path, ctx, output, gate.opened_at)
                            .await;
                    }
                    let error = match comment {
                        Some(c) => format!("rejected by {by}: {c}"),
                        None => format!("rejected by {by}"),
                    };
                    return self
                        .gate_failed(step, path, ctx, error, gate.opened_at)
                        .await;
                }
                decide::Gate::Expired {
                    at,
                    outcome,
                    journaled,
                } => {
                    if !journaled {
                        self.emit([Event::GateExpired {
                            path: path.to_owned(),
                            expired_at: at,
                            outcome,
                        }])
                        .await?;
                    }
                    let at = at.to_rfc3339();
                    let error = match outcome {
                        GateTimeout::Approve => {
                            let output = json!({
                                "approved": true,
                                "by": "timeout",
                                "expired_at": at,
                                "on_timeout": "approve",
                            });
                            return self
                                .gate_passed(step, path, ctx, output, gate.opened_at)
                                .await;
                        }
                        GateTimeout::Reject => format!(
                            "rejected by its timeout: nobody decided before the gate expired at {at} (on_timeout: reject)"
                        ),
                        GateTimeout::Fail => {
                            format!("nobody decided before the gate expired at {at}")
                        }
                    };
                    return self
                        .gate_failed(step, path, ctx, error, gate.opened_at)
                        .await;
                }
                decide::Gate::Open => {}
            }
            // Whether the one executing may approve now (`--yes`, the terminal): the same
            // rules as an `approve` command.
            // The gate is open here: neither decided nor expired, whatever the view says.
            let approved_by = crate::engine::verdict::approved_by(&gate);
            let facts = decide::GateFacts {
                decided: None,
                expired: false,
                ..crate::engine::verdict::facts(&gate, &approved_by, &self.view.started.started_by)
            };
            let mine = decide::verdict(&facts, &self.who, true, self.clock.now());
            match self.gates {
                GateMode::Yes if mine.is_ok() => {
                    self.emit([Event::GateDecided {
                        path: path.to_owned(),
                        approved: true,
                        by: format!("{} (--yes)", self.who),
                        comment: None,
                    }])
                    .await?;
                }
                GateMode::Prompt if mine.is_ok() => {
                    self.set_state(RunState::Waiting, Some(waiting_reason(path, &gate, None)))
                        .await?;
                    self.log.prompting(self.id, true);
                    let answer =
                        crate::engine::prompt::ask(&gate.prompt, gate.expires_at, &self.interrupt)
                            .await;
                    self.log.prompting(self.id, false);
                    let (approved, comment) = match answer {
                        crate::engine::prompt::Answer::Yes(comment) => (true, comment),
                        crate::engine::prompt::Answer::No(comment) => (false, comment),
                        crate::engine::prompt::Answer::Expired => continue,
                        crate::engine::prompt::Answer::Closed => {
                            return Ok(Flow::Stop(Stop::Parked {
                                path: path.to_owned(),
                            }));
                        }
                        crate::engine::prompt::Answer::Interrupted(signal) => {
                            return Ok(Flow::Stop(Stop::Interrupted { signal }));
                        }
                    };
                    self.emit([
                        Event::GateDecided {
                            path: path.to_owned(),
                            approved,
                            by: self.who.clone(),
                            comment,
                        },
                        Event::StateChanged {
                            state: RunState::Running,
                            reason: None,
                        },
                    ])
                    .await?;
                }
                _ => {
                    let refusal = match (self.gates, mine) {
                        (GateMode::Detach, _) | (_, Ok(_)) => None,
                        (_, Err(r)) => Some(r),
                    };
                    let reason =
                        waiting_reason(path, &gate, refusal.map(|r| (r, self.who.as_str())));
                    self.set_state(RunState::Waiting, Some(reason)).await?;
                    return Ok(Flow::Stop(Stop::Parked {
                        path: path.to_owned(),
                    }));
                }
            }
        }
    }

    /// A gate approved (by its approvers, or by its expiry): the step succeeds with `output`.
    async fn gate_passed(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        output: Value,
        opened_at: chrono::DateTime<Utc>,
    ) -> Result<Flow, ExecError> {
        if self.view.state == RunState::Waiting {
            self.set_state(RunState::Running, None).await?;
        }
        self.emit([Event::StepSucceeded {
            path: path.to_owned(),
            attempt: 1,
            output: output.clone(),
            duration_ms: duration_since(opened_at),
        }])
        .await?;
        ctx.set(step, output, "succeeded");
        Ok(Flow::Next)
    }

    async fn gate_failed(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        error: String,
        opened_at: chrono::DateTime<Utc>,
    ) -> Result<Flow, ExecError> {
        if self.view.state == RunState::Waiting {
            self.set_state(RunState::Running, None).await?;
        }
        self.fail_control(step, path, ctx, error, opened_at).await
    }

    /// A durable timer: the wake time is journaled when the sleep starts, so a resumed run wakes
    /// at the original time.
    pub(crate) async fn sleep(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        duration: &Template,
    ) -> Result<Flow, ExecError> {
        if !self.view.timers.contains_key(path) {
            let text = match ctx.render(&duration.text, None) {
                Ok(t) => t,
                Err(e) => {
                    return self
                        .fail_unstarted(
                            step,
                            path,
                            ctx,
                            format!("failed to render the duration: {e}"),
                        )
                        .await;
                }
            };
            let d = match crate::load::parse_duration(&text) {
                Ok(d) => d,
                Err(e) => {
                    return self
                        .fail_unstarted(step, path, ctx, format!("`{text}` is not a duration: {e}"))
                        .await;
                }
            };
            let wake_at = decide::after(self.clock.now(), d);
            self.emit([
                Event::StepStarted {
                    path: path.to_owned(),
                    kind: "sleep".into(),
                    attempt: 1,
                    idempotent: true,
                    intent: json!({ "describe": format!("sleep {text}") }),
                },
                Event::TimerSet {
                    path: path.to_owned(),
                    wake_at,
                },
            ])
            .await?;
        }
        let wake_at = self.view.timers[path];
        if !decide::remaining(wake_at, self.clock.now()).is_zero() {
            self.set_state(
                RunState::Sleeping,
                Some(format!("`{path}` sleeps until {}", wake_at.to_rfc3339())),
            )
            .await?;
            if let Err(signal) = self.pause_until(wake_at).await {
                return Ok(Flow::Stop(Stop::Interrupted { signal }));
            }
        }
        if self.view.state != RunState::Running {
            self.set_state(RunState::Running, None).await?;
        }
        let output =
            json!({ "wake_at": wake_at.to_rfc3339(), "woke_at": self.clock.now().to_rfc3339() });
        let started = self
            .view
            .step(path)
            .and_then(|s| s.started_at)
            .unwrap_or_else(Utc::now);
        self.emit([Event::StepSucceeded {
            path: path.to_owned(),
            attempt: 1,
            output: output.clone(),
            duration_ms: duration_since(started),
        }])
        .await?;
        ctx.set(step, output, "succeeded");
        Ok(Flow::Next)
    }

    /// The items of a `foreach`, evaluated now; the error says what went wrong.
    pub(crate) fn foreach_items(&self, items: &Expr, ctx: &Ctx) -> Result<Vec<Value>, String> {
        match ctx.eval(items, None, &self.book.sources) {
            Ok(Value::Array(list)) => Ok(list),
            Ok(other) => Err(format!(
                "`foreach` must give a list, but `{}` gave {}",
                items.src.trim(),
                short(&other)
            )),
            Err(e) => Err(format!("`foreach` failed: {e}")),
        }
    }

    /// A loop: the items are journaled when it starts, so a resume iterates the same items.
    pub(crate) async fn foreach(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
    ) -> Result<Flow, ExecError> {
        let Action::Foreach {
            items,
            var,
            steps: children,
            concurrency,
            templated,
        } = &step.action
        else {
            unreachable!("foreach() is for loops")
        };
        // Templated settings are rendered before anything starts; from the run's parameters and
        // earlier outputs, so a resume renders the same values.
        let concurrency = match loop_settings(*concurrency, templated, ctx) {
            Ok(c) => c,
            Err(error) => return self.fail_unstarted(step, path, ctx, error).await,
        };
        let list = if let Some(list) = self.view.items.get(path) {
            list.clone()
        } else {
            let list = match self.foreach_items(items, ctx) {
                Ok(list) => list,
                Err(error) => return self.fail_unstarted(step, path, ctx, error).await,
            };
            self.emit([
                Self::control_started(
                    path,
                    "foreach",
                    json!({ "describe": format!("foreach {var} in {} ({} items)", items.src.trim(), list.len()) }),
                ),
                Event::ItemsDecided {
                    path: path.to_owned(),
                    items: list.clone(),
                },
            ]).await?;
            list
        };
        if concurrency.overlaps() {
            return self
                .foreach_parallel(step, path, ctx, list, concurrency)
                .await;
        }
        let started = self
            .view
            .step(path)
            .and_then(|s| s.started_at)
            .unwrap_or_else(Utc::now);
        let mut outputs = Vec::with_capacity(list.len());
        for (i, item) in list.into_iter().enumerate() {
            let mut inner = ctx.clone();
            inner.vars.insert(var.to_owned(), item);
            inner.prefix = format!("{path}[{i}].");
            match self.steps(children, &mut inner).await? {
                Flow::Next => {
                    let mut own = serde_json::Map::new();
                    for id in children.iter().filter_map(|c| c.id.as_ref()) {
                        if let Some(v) = inner.steps.get(id) {
                            own.insert(id.clone(), v.get("output").cloned().unwrap_or(Value::Null));
                        }
                    }
                    outputs.push(Value::Object(own));
                }
                Flow::Stop(Stop::Failed {
                    path: failed,
                    error,
                }) => {
                    let error = format!("iteration {i} failed at `{failed}`: {error}");
                    return self.fail_control(step, path, ctx, error, started).await;
                }
                stop @ Flow::Stop(_) => return Ok(stop),
            }
        }
        let output = Value::Array(outputs);
        self.emit([Event::StepSucceeded {
            path: path.to_owned(),
            attempt: 1,
            output: output.clone(),
            duration_ms: duration_since(started),
        }])
        .await?;
        ctx.set(step, output, "succeeded");
        Ok(Flow::Next)
    }

    /// A call: another runbook's steps, journaled under this step's path.
    pub(crate) async fn call(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        runbook: &Template,
        params: &serde_json::Map<String, Value>,
    ) -> Result<Flow, ExecError> {
        let target = match ctx.render(&runbook.text, None) {
            Ok(t) => t,
            Err(e) => {
                return self
                    .fail_unstarted(
                        step,
                        path,
                        ctx,
                        format!("failed to render the call target: {e}"),
                    )
                    .await;
            }
        };
        let Some((origin, sub)) = self
            .book
            .called(&ctx.origin, &target)
            .map(|(o, b)| (o.to_owned(), b.clone()))
        else {
            let error = format!("the call target `{target}` was not resolved when the run started");
            return self.fail_unstarted(step, path, ctx, error).await;
        };
        let rendered = match ctx.render_value(&Value::Object(params.clone())) {
            Ok(Value::Object(m)) => m,
            Ok(_) => serde_json::Map::new(),
            Err(e) => {
                return self
                    .fail_unstarted(
                        step,
                        path,
                        ctx,
                        format!("failed to render the call's params: {e}"),
                    )
                    .await;
            }
        };
        let values = match crate::params::resolve_json(&sub, &rendered) {
            Ok(v) => v,
            Err(errors) => {
                return self
                    .fail_unstarted(step, path, ctx, errors.join("; "))
                    .await;
            }
        };
        for s in &values.secrets {
            self.log.redactor().add_value(s);
        }
        if self.view.step(path).is_none() {
            let intent =
                json!({ "describe": format!("call {target}"), "params": Value::Object(rendered) });
            self.emit([Self::control_started(path, "call", intent)])
                .await?;
        }
        let started = self
            .view
            .step(path)
            .and_then(|s| s.started_at)
            .unwrap_or_else(Utc::now);
        let mut inner = Ctx {
            taint: crate::engine::ctx::Taint::new(&sub, &values.clear, self.log.redactor()),
            book: sub.clone(),
            origin,
            params: Arc::new(Value::Object(values.clear)),
            steps: Value::Object(serde_json::Map::new()),
            vars: serde_json::Map::new(),
            run: ctx.run.clone(),
            prefix: format!("{path}.prechecks."),
        };
        let mut flow = self.steps(&sub.prechecks, &mut inner).await?;
        if matches!(flow, Flow::Next) {
            inner.prefix = format!("{path}.");
            flow = self.steps(&sub.steps, &mut inner).await?;
        }
        match flow {
            Flow::Next => {
                let output = match &sub.output {
                    Some(expr) => match inner.eval(expr, None, &self.book.sources) {
                        Ok(v) => v,
                        Err(e) => {
                            let error = format!("the called runbook's `output` failed: {e}");
                            return self.fail_control(step, path, ctx, error, started).await;
                        }
                    },
                    None => Value::Object(
                        inner
                            .steps
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| {
                                (k.clone(), v.get("output").cloned().unwrap_or(Value::Null))
                            })
                            .collect(),
                    ),
                };
                self.emit([Event::StepSucceeded {
                    path: path.to_owned(),
                    attempt: 1,
                    output: output.clone(),
                    duration_ms: duration_since(started),
                }])
                .await?;
                ctx.set(step, output, "succeeded");
                Ok(Flow::Next)
            }
            Flow::Stop(Stop::Failed {
                path: failed,
                error,
            }) => {
                let mut error = format!("`{target}` failed at `{failed}`: {error}");
                if !sub.on_failure.is_empty() {
                    inner.prefix = format!("{path}.on_failure.");
                    match self.steps(&sub.on_failure, &mut inner).await? {
                        Flow::Next => {}
                        Flow::Stop(Stop::Failed { path: p, error: e }) => {
                            use std::fmt::Write as _;
                            let _ = write!(error, "; its on_failure step `{p}` failed too: {e}");
                        }
                        stop @ Flow::Stop(_) => return Ok(stop),
                    }
                }
                self.fail_control(step, path, ctx, error, started).await
            }
            stop @ Flow::Stop(_) => Ok(stop),
        }
    }

    /// Records that a control step (a loop, a call, a gate, a parallel step) failed as a whole,
    /// then runs its `on_failure` steps.
    pub(crate) async fn fail_control(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        error: String,
        started: chrono::DateTime<Utc>,
    ) -> Result<Flow, ExecError> {
        self.emit([Event::StepFailed {
            path: path.to_owned(),
            attempt: 1,
            error: error.clone(),
            output: None,
            retry_at: None,
            duration_ms: duration_since(started),
            tolerated: step.continue_on_error,
        }])
        .await?;
        self.failure_tail(step, path, ctx, error, None, step.continue_on_error)
            .await
    }
}

/// Lets step kinds evaluate runbook conditions (Rhai) over an object they watch.
#[derive(Debug)]
pub(crate) struct RhaiConditions;

impl runbook_steps::Conditions for RhaiConditions {
    fn holds(&self, expr: &str, value: &Value) -> Result<bool, String> {
        let ast = crate::script::compile(expr).map_err(|e| e.message)?;
        crate::script::eval_bool(&ast, &[("object", value), ("output", value)])
            .map_err(|e| e.message)
    }
}

/// A probe's output in a few words for progress notes: an HTTP status and JSON body, an exit
/// code and the last line of output, or the value itself.
fn summary(output: &Value) -> String {
    if let Some(status) = output.get("status").and_then(Value::as_u64) {
        return match output.get("json") {
            Some(json) => format!("status {status}, {}", short(json)),
            None => format!("status {status}"),
        };
    }
    if let Some(code) = output.get("exit_code") {
        let last = ["stdout", "stderr"]
            .iter()
            .filter_map(|k| output.get(*k).and_then(Value::as_str))
            .find_map(|s| s.lines().rev().find(|l| !l.trim().is_empty()))
            .unwrap_or_default();
        return format!("exit code {code} {}", last.trim())
            .trim_end()
            .to_owned();
    }
    short(output)
}

/// Why a run waits at a gate, in words: who may still approve, how many approvals are in,
/// and — when the one executing could not approve it (`refused`) — why not.
fn waiting_reason(
    path: &str,
    gate: &crate::engine::view::GateView,
    refused: Option<(decide::Refusal, &str)>,
) -> String {
    use std::fmt::Write as _;
    let mut reason = format!("waiting for approval at `{path}`");
    if gate.approvals > 1 {
        let names: Vec<&str> = gate
            .approved_by
            .iter()
            .map(|(b, _, _)| b.as_str())
            .collect();
        let _ = write!(reason, " ({} of {} approvals", names.len(), gate.approvals);
        if !names.is_empty() {
            let _ = write!(reason, ": {}", names.join(", "));
        }
        reason.push(')');
    }
    match refused {
        Some((decide::Refusal::Starter, who)) => {
            let _ = write!(
                reason,
                " by someone other than {who}, who started the run (four-eyes gate)"
            );
        }
        Some((decide::Refusal::NotAnApprover, who)) => {
            let _ = write!(
                reason,
                " by one of {} ({who} is not among them)",
                gate.approvers.join(", ")
            );
        }
        Some((decide::Refusal::Twice { .. }, who)) => {
            let _ = write!(reason, " by someone other than {who}, who approved already");
        }
        _ if !gate.approvers.is_empty() => {
            let _ = write!(reason, " by one of {}", gate.approvers.join(", "));
        }
        _ => {}
    }
    reason
}

/// Milliseconds since `t`.
fn duration_since(t: chrono::DateTime<Utc>) -> u64 {
    u64::try_from((Utc::now() - t).num_milliseconds().max(0)).unwrap_or(0)
}

/// Turns rendered strings into the integers and booleans a kind's fields declare, so a
/// template such as `"{{params.port}}0"` still gives a number where one is expected.
pub(crate) fn coerce(kind: &dyn StepKind, spec: Value) -> Value {
    let Value::Object(mut map) = spec else {
        return spec;
    };
    for field in kind.fields() {
        let Some(Value::String(s)) = map.get(field.name) else {
            continue;
        };
        let typed = match field.ty {
            runbook_steps::FieldType::Int => s.trim().parse::<i64>().ok().map(Value::from),
            runbook_steps::FieldType::Bool => match s.trim() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
            _ => None,
        };
        if let Some(v) = typed {
            map.insert(field.name.to_owned(), v);
        }
    }
    Value::Object(map)
}

/// A wait in one line, for the journal's intent and `plan`: its condition, its interval and its
/// timeout (the template's text when it cannot be rendered yet).
pub(crate) fn describe_wait(wait: &Wait, ctx: &Ctx) -> String {
    let timeout = match (wait_timeout(wait, ctx), &wait.timeout_template) {
        (Ok(t), _) => humantime::format_duration(t).to_string(),
        (Err(_), Some(template)) => template.text.clone(),
        (Err(e), None) => e,
    };
    format!(
        "wait until {} (every {}, up to {timeout})",
        wait.until.src.trim(),
        humantime::format_duration(wait.every)
    )
}

/// How long a wait may take: its `timeout`, or what its template renders to now.
pub(crate) fn wait_timeout(wait: &Wait, ctx: &Ctx) -> Result<Duration, String> {
    let Some(template) = &wait.timeout_template else {
        return Ok(wait.timeout);
    };
    let text = ctx
        .render(&template.text, None)
        .map_err(|e| format!("failed to render the wait's `timeout`: {e}"))?;
    crate::load::parse_duration(&text).map_err(|e| {
        format!(
            "the wait's `timeout` `{}` is `{text}`, not a duration: {e}",
            template.text
        )
    })
}

/// A loop's overlap settings with its templated ones rendered and read by the rules of a value
/// written in the YAML; the error names the setting, what it rendered and why it is refused.
fn loop_settings(
    mut concurrency: Concurrency,
    templated: &[(Setting, Template)],
    ctx: &Ctx,
) -> Result<Concurrency, String> {
    for (setting, template) in templated {
        let text = ctx
            .render(&template.text, None)
            .map_err(|e| format!("`{}`: {e}", setting.key()))?;
        concurrency
            .set(*setting, &text)
            .map_err(|e| format!("{e} (rendered from {:?})", template.text))?;
    }
    Ok(concurrency)
}
