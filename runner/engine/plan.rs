//! `runbook plan`: what a run would do, without doing it. Parameters are resolved, prechecks
//! (read-only by contract) run against a throwaway in-memory journal, and each step is shown
//! rendered as far as the values known before the run allow.

use std::fmt::Write as _;
use std::sync::Arc;

use runbook_journals::{Event, MemoryJournal, RunId, RunStarted, RunState};
use runbook_steps::Registry;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::engine::ctx::{Ctx, short};
use crate::engine::exec::Exec;
use crate::engine::log::RunLog;
use crate::engine::view::RunView;
use crate::engine::{Engine, EngineError, GateMode};
use crate::model::{Action, Step};
use crate::secrets::Redactor;

/// What a run would do.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The runbook's name.
    pub runbook: String,
    /// Where it was found.
    pub origin: String,
    /// Parameter values, secrets masked.
    pub params: Map<String, Value>,
    /// The lock key the run would take, and the run holding it now if any.
    pub lock: Option<String>,
    /// The run holding the lock now.
    pub lock_holder: Option<String>,
    /// Each precheck and its result (`None` when prechecks were not run).
    pub prechecks: Vec<(String, Option<Result<(), String>>)>,
    /// The steps, one line each, nested by depth.
    pub steps: Vec<(usize, String, String)>,
}

impl Engine {
    /// Plans a run of `target` with `params`.
    pub async fn plan(
        &self,
        target: &str,
        params: &[(String, String)],
        run_prechecks: bool,
    ) -> Result<Plan, EngineError> {
        let origin = self
            .library
            .find(target)
            .ok_or_else(|| EngineError::NotFound(target.to_owned()))?;
        let loaded = crate::engine::load_main(&origin, &crate::library::LiveFiles, &self.registry)?;
        let main = loaded.runbook().clone();
        let values = crate::params::resolve(&main, params, None).map_err(EngineError::Params)?;
        let book = self.link_main(loaded, &values)?;
        let lock = match &main.lock {
            Some(t) => {
                let key =
                    crate::template::render_str(&t.text, &json!({ "params": values.clear })).ok();
                let shadow = crate::secrets::shadow_params(&main, &values.clear);
                let over_shadow =
                    crate::template::render_str(&t.text, &json!({ "params": shadow })).ok();
                if key == over_shadow {
                    key
                } else {
                    Some("(built from a secret parameter: a run would be refused)".to_owned())
                }
            }
            None => None,
        };
        let lock_holder = match &lock {
            Some(l) => self.journal.lock_holder(l)?.map(|r| r.to_string()),
            None => None,
        };
        let redactor = values.redactor();
        let memory: Arc<dyn runbook_journals::Journal> = Arc::new(MemoryJournal::new());
        let log = RunLog::new(memory, redactor.clone(), Vec::new());
        let id = RunId::new();
        let records = log.create(
            id,
            None,
            &[
                Event::RunStarted(RunStarted {
                    runbook: main.name.clone(),
                    params: values.journaled.clone(),
                    sources: Vec::new(),
                    links: book.links.clone(),
                    lock: None,
                    started_by: self.who.clone(),
                    engine_version: env!("CARGO_PKG_VERSION").into(),
                    trigger: None,
                }),
                Event::StateChanged {
                    state: RunState::Running,
                    reason: None,
                },
            ],
        )?;
        let view = RunView::from_records(id, &records)?;
        let mut ctx = Ctx {
            taint: crate::engine::ctx::Taint::new(&main, &values.clear, &redactor),
            book: book.main().clone(),
            origin: book.origin.clone(),
            params: Arc::new(Value::Object(values.clear.clone())),
            steps: Value::Object(Map::new()),
            vars: Map::new(),
            run: Arc::new(
                json!({ "id": id.to_string(), "runbook": main.name, "started_at": view.created_at.to_rfc3339(), "started_by": self.who }),
            ),
            prefix: String::new(),
        };
        let mut prechecks = Vec::new();
        if run_prechecks {
            let mut exec = Exec {
                id,
                log: &log,
                view,
                book: &book,
                registry: &self.registry,
                replay_len: 0,
                cursor: 0,
                interrupt: self.interrupt.clone(),
                pause: self.pause.clone(),
                in_call: false,
                gates: GateMode::Detach,
                who: self.who.clone(),
                pending: Vec::new(),
                shipped: std::sync::Mutex::default(),
                committed: records.last().map_or(0, |r| r.seq),
                clock: std::sync::Arc::new(crate::engine::decide::SystemClock),
                ledger: None,
                journaled_at: Vec::new(),
            };
            let failed = self.prechecks(&mut exec, &main, &mut ctx).await?;
            for (i, check) in main.prechecks.iter().enumerate() {
                let id = check.segment(i);
                let result = match &failed {
                    Err((fid, e)) if *fid == id => Some(Err(redactor.text(e))),
                    _ if ctx.steps.get(&id).is_some() || check.id.is_none() => Some(Ok(())),
                    _ => None,
                };
                prechecks.push((id, result));
            }
        } else {
            prechecks = main
                .prechecks
                .iter()
                .enumerate()
                .map(|(i, c)| (c.segment(i), None))
                .collect();
        }
        let mut steps = Vec::new();
        let registry = &*self.registry;
        lines(&main.steps, &ctx, registry, 0, "", &redactor, &mut steps);
        if !main.on_failure.is_empty() {
            steps.push((0, "on_failure".into(), String::new()));
            lines(
                &main.on_failure,
                &ctx,
                registry,
                1,
                "on_failure.",
                &redactor,
                &mut steps,
            );
        }
        Ok(Plan {
            runbook: main.name.clone(),
            origin: crate::library::display_origin(&origin),
            params: values.journaled,
            lock,
            lock_holder,
            prechecks,
            steps,
        })
    }
}

/// One line per step: what it would do, rendered where the values are known.
fn lines(
    steps: &[Step],
    ctx: &Ctx,
    registry: &Registry,
    depth: usize,
    prefix: &str,
    redactor: &Redactor,
    out: &mut Vec<(usize, String, String)>,
) {
    for (i, step) in steps.iter().enumerate() {
        let path = format!("{prefix}{}", step.segment(i));
        let mut text = match &step.action {
            // Masked before shortening: a cut secret would no longer be recognised.
            Action::Effect { kind, spec } => match registry
                .get(kind)
                .ok_or_else(String::new)
                .and_then(|k| ctx.render_effect(k, spec))
            {
                Ok(effect) => {
                    effect.learn_secrets(redactor);
                    format!("{kind} {}", short(&redactor.value(&effect.spec)))
                }
                Err(_) => format!("{kind} {} (depends on earlier steps)", short(spec)),
            },
            Action::Script(e) => format!("script {}", e.src.trim()),
            Action::Wait(w) => crate::engine::control::describe_wait(w, ctx),
            Action::Gate { prompt, .. } => match ctx.render(&prompt.text, None) {
                Ok(p) => format!("gate: {p}"),
                Err(_) => format!("gate: {}", prompt.text),
            },
            Action::Sleep(d) => format!(
                "sleep {}",
                ctx.render(&d.text, None).unwrap_or_else(|_| d.text.clone())
            ),
            Action::Foreach { items, var, .. } => {
                match ctx.eval(items, None, &crate::source::Sources::new()) {
                    Ok(v) => format!("foreach {var} in {}", short(&redactor.value(&v))),
                    Err(_) => format!(
                        "foreach {var} in {} (depends on earlier steps)",
                        items.src.trim()
                    ),
                }
            }
            Action::Parallel { branches } => {
                format!("parallel ({} branches at once)", branches.len())
            }
            Action::Call { runbook, .. } => format!(
                "call {}",
                ctx.render(&runbook.text, None)
                    .unwrap_or_else(|_| runbook.text.clone())
            ),
        };
        if let Some(when) = &step.when {
            let verdict = match ctx.eval_bool(when, None, &crate::source::Sources::new()) {
                Ok(true) => "runs".to_owned(),
                Ok(false) => "skipped".to_owned(),
                Err(_) => "decided at run time".to_owned(),
            };
            let _ = write!(text, "  [when {}: {verdict}]", when.src.trim());
        }
        out.push((depth, path.clone(), redactor.text(&text)));
        if let Action::Foreach { steps: inner, .. } = &step.action {
            lines(
                inner,
                ctx,
                registry,
                depth + 1,
                &format!("{path}[*]."),
                redactor,
                out,
            );
        }
        if let Action::Parallel { branches } = &step.action {
            lines(
                branches,
                ctx,
                registry,
                depth + 1,
                &format!("{path}."),
                redactor,
                out,
            );
        }
        if !step.on_failure.is_empty() {
            lines(
                &step.on_failure,
                ctx,
                registry,
                depth + 1,
                &format!("{path}.on_failure."),
                redactor,
                out,
            );
        }
    }
}
