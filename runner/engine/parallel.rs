//! Iterations and branches that run at once: a `foreach` with `parallel`/`batch`, and the
//! `parallel:` step.
//!
//! Each iteration (or branch) is walked by its own [`Exec`], all of them on the caller's task,
//! so nothing here needs a thread. They share one [`Ledger`]: the run's riding events and the
//! seq of its last commit, behind an async lock that is held across a commit, so the journal's
//! expected-seq appends stay in order and each event that must be durable before an effect is
//! durable before that effect starts — the write-ahead promise is the one of a serial walk.
//! Each iteration sees the run as it was when the loop began plus its own records; its paths
//! (`LOOP[i].…`, `STEP.BRANCH…`) are its own, so no iteration reads another's state. On a resume
//! each iteration's replay is checked against the journal's records under its own path, in
//! their order (the journal interleaves iterations as they ran). When the iterations are done,
//! the parent folds every record they journaled into its view and goes on.
//!
//! Which iteration starts when is [`crate::model::next_move`], a pure function; iterations start
//! in item order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use runbook_journals::{Event, JournalError, Record, RunId};
use serde_json::{Map, Value, json};

use crate::engine::ctx::Ctx;
use crate::engine::exec::{Exec, ExecError, Flow, Stop};
use crate::engine::log::RunLog;
use crate::model::{Action, Concurrency, End, Move, Progress, Step, next_move};

/// The commits of executions running at once.
pub type SharedLedger = Arc<tokio::sync::Mutex<Ledger>>;

/// What executions running at once share: the events riding on the next commit and the seq of
/// the last record made durable.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Events not yet durable, in the order they were recorded.
    pub pending: Vec<Event>,
    /// The seq of the last durable record.
    pub committed: u64,
}

impl Ledger {
    /// Makes every riding event durable.
    pub async fn flush(&mut self, log: &RunLog, id: RunId) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        let records = log.commit(id, self.committed, events).await?;
        if let Some(last) = records.last() {
            self.committed = last.seq;
        }
        Ok(())
    }
}

/// One unit of a parallel step: an iteration of a loop or a branch.
enum Unit<'s> {
    /// The loop's nested steps with the loop variable bound to an item.
    Iteration { steps: &'s [Step] },
    /// One branch step (its index among the branches).
    Branch { step: &'s Step, index: usize },
}

/// What a finished unit left.
struct Finished {
    index: usize,
    flow: Flow,
    ctx: Ctx,
    journaled: Vec<(DateTime<Utc>, Event)>,
}

/// Whether `path` is `unit` or lies below it.
fn below(path: &str, unit: &str) -> bool {
    path.strip_prefix(unit)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

impl<'a> Exec<'a> {
    /// A loop whose iterations overlap (`parallel`, `batch`, `max_unavailable`). The loop's
    /// start and items are journaled already.
    pub(crate) async fn foreach_parallel(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        list: Vec<Value>,
        concurrency: Concurrency,
    ) -> Result<Flow, ExecError> {
        let Action::Foreach {
            var,
            steps: children,
            ..
        } = &step.action
        else {
            unreachable!("foreach_parallel() is for loops")
        };
        let total = list.len();
        let limits = concurrency.limits(total);
        let mut items = list.into_iter();
        let units = (0..total).map(|_| Unit::Iteration { steps: children });
        let done = self
            .run_units(path, ctx, units.collect(), limits, |i, inner| {
                inner
                    .vars
                    .insert(var.to_owned(), items.next().unwrap_or(Value::Null));
                inner.prefix = format!("{path}[{i}].");
            })
            .await?;
        let (results, end) = done;
        let mut outputs = Vec::with_capacity(total);
        let mut failures = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            match result {
                Some(Finished {
                    flow: Flow::Next,
                    ctx: inner,
                    ..
                }) => {
                    let mut own = Map::new();
                    for id in children.iter().filter_map(|c| c.id.as_ref()) {
                        if let Some(v) = inner.steps.get(id) {
                            own.insert(id.clone(), v.get("output").cloned().unwrap_or(Value::Null));
                        }
                    }
                    outputs.push(Value::Object(own));
                }
                Some(Finished {
                    flow: Flow::Stop(Stop::Failed { path: p, error }),
                    ..
                }) => {
                    failures.push(format!("iteration {i} failed at `{p}`: {error}"));
                    outputs.push(Value::Null);
                }
                _ => outputs.push(Value::Null),
            }
        }
        self.conclude(step, path, ctx, end, failures, Value::Array(outputs), total)
            .await
    }

    /// A `parallel:` step: every branch at once.
    pub(crate) async fn branches(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        branches: &[Step],
    ) -> Result<Flow, ExecError> {
        if self.view.step(path).is_none() {
            let describe = format!("parallel: {} branches at once", branches.len());
            self.emit([Self::control_started(
                path,
                "parallel",
                json!({ "describe": describe }),
            )])
            .await?;
        }
        let total = branches.len();
        let limits = Concurrency {
            parallel: u32::try_from(total).ok(),
            ..Concurrency::default()
        }
        .limits(total);
        let units = branches
            .iter()
            .enumerate()
            .map(|(index, step)| Unit::Branch { step, index })
            .collect();
        let (results, end) = self
            .run_units(path, ctx, units, limits, |_, inner| {
                inner.prefix = format!("{path}.");
            })
            .await?;
        let mut output = Map::new();
        let mut failures = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            let branch = &branches[i];
            match result {
                Some(Finished {
                    flow: Flow::Next,
                    ctx: inner,
                    ..
                }) => {
                    if let Some(id) = &branch.id {
                        let v = inner.steps.get(id).and_then(|v| v.get("output")).cloned();
                        output.insert(id.clone(), v.unwrap_or(Value::Null));
                    }
                }
                Some(Finished {
                    flow: Flow::Stop(Stop::Failed { path: p, error }),
                    ..
                }) => failures.push(format!(
                    "branch `{}` failed at `{p}`: {error}",
                    branch.segment(i)
                )),
                _ => {}
            }
        }
        self.conclude(step, path, ctx, end, failures, Value::Object(output), total)
            .await
    }

    /// Records how a parallel step ended.
    #[allow(clippy::too_many_arguments)]
    async fn conclude(
        &mut self,
        step: &Step,
        path: &str,
        ctx: &mut Ctx,
        end: (End, Option<Stop>),
        failures: Vec<String>,
        output: Value,
        total: usize,
    ) -> Result<Flow, ExecError> {
        let started = self
            .view
            .step(path)
            .and_then(|s| s.started_at)
            .unwrap_or_else(Utc::now);
        let duration_ms = u64::try_from((Utc::now() - started).num_milliseconds()).unwrap_or(0);
        let error = match end {
            (End::Halted, Some(stop)) => return Ok(Flow::Stop(stop)),
            (End::Halted, None) => unreachable!("a halt comes with the stop that caused it"),
            (End::Done, _) => {
                self.emit([Event::StepSucceeded {
                    path: path.to_owned(),
                    attempt: 1,
                    output: output.clone(),
                    duration_ms,
                }])
                .await?;
                ctx.set(step, output, "succeeded");
                return Ok(Flow::Next);
            }
            (End::TooManyFailures, _) => format!(
                "{} of {total} failed, more than it tolerates: {}",
                failures.len(),
                failures.join("; ")
            ),
            (End::Unavailable, _) => format!(
                "{} of {total} failed and fill `max_unavailable`, so no more can start: {}",
                failures.len(),
                failures.join("; ")
            ),
        };
        self.fail_control(step, path, ctx, error, started).await
    }

    /// Runs `units` as [`next_move`] allows, each in its own execution over a shared ledger;
    /// `setup` gives each unit's context its variable and path prefix. Returns what each unit
    /// left (by index; `None` for units never started) and how the whole ended (with the first
    /// stop that halted it).
    async fn run_units(
        &mut self,
        path: &str,
        ctx: &Ctx,
        units: Vec<Unit<'_>>,
        limits: crate::model::Limits,
        mut setup: impl FnMut(usize, &mut Ctx),
    ) -> Result<(Vec<Option<Finished>>, (End, Option<Stop>)), ExecError> {
        let total = units.len();
        if self.ledger.is_none() {
            // The ledger commits after `committed`: what was shipped must be durable first.
            self.settle().await?;
        }
        let (ledger, created) = match &self.ledger {
            Some(l) => (l.clone(), false),
            None => (
                Arc::new(tokio::sync::Mutex::new(Ledger {
                    pending: std::mem::take(&mut self.pending),
                    committed: self.committed,
                })),
                true,
            ),
        };
        let mut results: Vec<Option<Finished>> = (0..total).map(|_| None).collect();
        let mut progress = Progress {
            total,
            ..Progress::default()
        };
        let mut halt: Option<Stop> = None;
        let mut running = FuturesUnordered::new();
        let mut error: Option<ExecError> = None;
        let end = loop {
            match next_move(&limits, &progress) {
                Move::Start(i) => {
                    let mut inner = ctx.clone();
                    setup(i, &mut inner);
                    let unit_path = match &units[i] {
                        Unit::Iteration { .. } => format!("{path}[{i}]"),
                        Unit::Branch { step, index } => inner.path(&step.segment(*index)),
                    };
                    let mut child = self.child(&ledger, &unit_path);
                    let unit = match &units[i] {
                        Unit::Iteration { steps } => Unit::Iteration { steps },
                        Unit::Branch { step, index } => Unit::Branch {
                            step,
                            index: *index,
                        },
                    };
                    progress.started += 1;
                    progress.running += 1;
                    running.push(async move {
                        let flow = match unit {
                            Unit::Iteration { steps } => child.steps(steps, &mut inner).await,
                            Unit::Branch { step, index } => {
                                child.step(step, index, &mut inner).await
                            }
                        };
                        (i, flow, inner, child.journaled_at)
                    });
                }
                Move::Wait => {
                    let Some((index, flow, inner, journaled)) = running.next().await else {
                        unreachable!("next_move waits only while units run");
                    };
                    progress.running -= 1;
                    progress.finished += 1;
                    let flow = match flow {
                        Ok(flow) => flow,
                        Err(e) => {
                            // The journal failed: nothing more may start; the others finish
                            // what they are doing (their commits fail the same way).
                            error.get_or_insert(e);
                            progress.halted = true;
                            Flow::Stop(Stop::Interrupted {
                                signal: "journal error".into(),
                            })
                        }
                    };
                    match &flow {
                        Flow::Next => {}
                        Flow::Stop(Stop::Failed { .. }) => progress.failed += 1,
                        Flow::Stop(stop) => {
                            progress.halted = true;
                            halt.get_or_insert_with(|| stop.clone());
                        }
                    }
                    results[index] = Some(Finished {
                        index,
                        flow,
                        ctx: inner,
                        journaled,
                    });
                }
                Move::End(end) => break end,
            }
        };
        drop(running);
        // Every unit's records, unit by unit (each in its own order), into this execution's view.
        let mut finished: Vec<&Finished> = results.iter().flatten().collect();
        finished.sort_by_key(|f| f.index);
        for f in finished {
            for (at, event) in &f.journaled {
                let record = Record {
                    seq: self.view.last_seq + 1,
                    at: *at,
                    event: event.clone(),
                };
                self.view.apply(&record)?;
                if self.ledger.is_some() {
                    self.journaled_at.push((*at, event.clone()));
                }
            }
        }
        if created {
            let ledger = Arc::try_unwrap(ledger)
                .expect("the units are done, so nobody else holds the ledger")
                .into_inner();
            self.pending = ledger.pending;
            self.committed = ledger.committed;
        }
        self.skip_descendants(path, true);
        if let Some(e) = error {
            return Err(e);
        }
        Ok((results, (end, halt)))
    }

    /// An execution for one unit below `unit_path`: the run as this one sees it, and for the
    /// replay only the journal's records under the unit.
    fn child(&self, ledger: &SharedLedger, unit_path: &str) -> Exec<'a> {
        let mut view = self.view.clone();
        let from = self.cursor.min(self.replay_len);
        view.order = self.view.order[from..self.replay_len]
            .iter()
            .filter(|(p, _)| below(p, unit_path))
            .cloned()
            .collect();
        let replay_len = view.order.len();
        Exec {
            id: self.id,
            log: self.log,
            view,
            book: self.book,
            registry: self.registry,
            replay_len,
            cursor: 0,
            interrupt: self.interrupt.clone(),
            pause: self.pause.clone(),
            in_call: self.in_call,
            gates: self.gates,
            who: self.who.clone(),
            pending: Vec::new(),
            shipped: std::sync::Mutex::default(),
            committed: 0,
            clock: self.clock.clone(),
            ledger: Some(ledger.clone()),
            journaled_at: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::below;

    #[test]
    fn a_unit_owns_its_path_and_what_lies_below_it() {
        let table = [
            ("roll[2]", "roll[2]", true),
            ("roll[2].restart", "roll[2]", true),
            ("roll[2][0].x", "roll[2]", true),
            ("roll[20].restart", "roll[2]", false),
            ("both.a", "both.a", true),
            ("both.a.on_failure.x", "both.a", true),
            ("both.ab", "both.a", false),
            ("both", "both.a", false),
        ];
        for (path, unit, expected) in table {
            assert_eq!(below(path, unit), expected, "{path} below {unit}");
        }
    }
}
