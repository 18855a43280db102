//! Running steps that only read — prechecks — without journaling them as steps: they run again
//! on every resume, so their outputs are fresh, never replayed.

use runbook_steps::BoxFuture;
use serde_json::{Map, Value};

use crate::engine::control::Probe;
use crate::engine::ctx::Ctx;
use crate::engine::exec::{Attempt, Exec};
use crate::model::{Action, Step};

impl Exec<'_> {
    /// Runs a read-only step (an effect, a script, a wait, or a loop of those) and checks its
    /// `assert`. `Ok(None)` when its `when` is false. Errors are messages naming the failing
    /// nested step, if any.
    pub(crate) fn read_only<'s>(
        &'s self,
        step: &'s Step,
        path: &'s str,
        ctx: &'s mut Ctx,
    ) -> BoxFuture<'s, Result<Option<Value>, String>> {
        Box::pin(async move {
            if let Some(when) = &step.when {
                match ctx.eval_bool(when, None, &self.book.sources) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {}
                    Err(e) => return Err(format!("`when` failed: {e}")),
                }
            }
            let output = match &step.action {
                Action::Wait(wait) => match self.poll(path, ctx, wait).await {
                    Attempt::Ok(v) => v,
                    Attempt::Failed { error, .. } => return Err(error),
                    Attempt::Interrupted { signal, .. } => {
                        return Err(format!("interrupted by {signal}"));
                    }
                },
                Action::Foreach {
                    items, var, steps, ..
                } => {
                    let list = self.foreach_items(items, ctx)?;
                    let mut outputs = Vec::with_capacity(list.len());
                    for (i, item) in list.into_iter().enumerate() {
                        let mut inner = ctx.clone();
                        inner.vars.insert(var.clone(), item);
                        let mut own = Map::new();
                        for (j, child) in steps.iter().enumerate() {
                            let child_path = format!("{path}[{i}].{}", child.segment(j));
                            let out = self
                                .read_only(child, &child_path, &mut inner)
                                .await
                                .map_err(|e| format!("`{child_path}`: {e}"))?;
                            let status = if out.is_some() {
                                "succeeded"
                            } else {
                                "skipped"
                            };
                            let value = out.unwrap_or(Value::Null);
                            if let Some(id) = &child.id {
                                own.insert(id.clone(), value.clone());
                            }
                            inner.set(child, value, status);
                        }
                        outputs.push(Value::Object(own));
                    }
                    Value::Array(outputs)
                }
                _ => match self.probe(step, path, ctx).await {
                    Probe::Output(v, None) => v,
                    Probe::Output(_, Some(e)) | Probe::Failed(e) => return Err(e),
                    Probe::Interrupted(s) => return Err(format!("interrupted by {s}")),
                },
            };
            if let Some(assert) = &step.assert {
                match ctx.eval_bool(assert, Some(&output), &self.book.sources) {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(step.message.as_ref().map_or_else(
                            || format!("assertion failed: {}", assert.src.trim()),
                            |m| {
                                ctx.render(&m.text, Some(&output))
                                    .unwrap_or_else(|_| m.text.clone())
                            },
                        ));
                    }
                    Err(e) => return Err(format!("`assert` failed: {e}")),
                }
            }
            Ok(Some(output))
        })
    }
}
