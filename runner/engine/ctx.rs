//! What expressions and templates see at a point of a run: `params`, `steps.<id>.output`, the
//! loop variable and `run`. Siblings inside a loop iteration shadow outer steps of the same id.

use std::sync::Arc;

use runbook_steps::StepKind;
use serde_json::{Map, Value};

use crate::model::{Expr, Runbook, Step};
use crate::source::Sources;

/// The data context at a point of a run.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// The runbook being executed (the main one, or a called one).
    pub book: Arc<Runbook>,
    /// Its origin, for resolving its calls.
    pub origin: String,
    /// Its parameter values, secrets in clear.
    pub params: Arc<Value>,
    /// Outputs of steps that ran before: an object `id → { output, status }` (kept as the value
    /// expressions see, so an evaluation does not copy it).
    pub steps: Value,
    /// Loop variables.
    pub vars: Map<String, Value>,
    /// `run.id`, `run.started_at`, `run.runbook`.
    pub run: Arc<Value>,
    /// Path prefix of this context's steps (`""`, `roll[2].`).
    pub prefix: String,
}

impl Ctx {
    /// The path of a step in this context.
    pub fn path(&self, segment: &str) -> String {
        format!("{}{segment}", self.prefix)
    }

    /// Records a step's outcome so later steps can refer to it.
    pub fn set(&mut self, step: &Step, output: Value, status: &str) {
        if let (Some(id), Value::Object(steps)) = (&step.id, &mut self.steps) {
            let mut entry = Map::new();
            entry.insert("output".into(), output);
            entry.insert("status".into(), Value::String(status.to_owned()));
            steps.insert(id.clone(), Value::Object(entry));
        }
    }

    /// The context as one JSON value, for templates; `output` added when given.
    pub fn value(&self, output: Option<&Value>) -> Value {
        let mut root = Map::new();
        root.insert("params".into(), (*self.params).clone());
        root.insert("steps".into(), self.steps.clone());
        root.insert("run".into(), (*self.run).clone());
        for (k, v) in &self.vars {
            root.insert(k.clone(), v.clone());
        }
        if let Some(o) = output {
            root.insert("output".into(), o.clone());
        }
        Value::Object(root)
    }

    /// Evaluates an expression in this context.
    pub fn eval(
        &self,
        expr: &Expr,
        output: Option<&Value>,
        sources: &Sources,
    ) -> Result<Value, String> {
        let mut vars: Vec<(&str, &Value)> = vec![
            ("params", &self.params),
            ("steps", &self.steps),
            ("run", &self.run),
        ];
        for (k, v) in &self.vars {
            vars.push((k.as_str(), v));
        }
        if let Some(o) = output {
            vars.push(("output", o));
        }
        crate::script::eval(&expr.ast, &vars).map_err(|e| locate(expr, &e, sources))
    }

    /// Evaluates a condition in this context.
    pub fn eval_bool(
        &self,
        expr: &Expr,
        output: Option<&Value>,
        sources: &Sources,
    ) -> Result<bool, String> {
        match self.eval(expr, output, sources)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {} where true or false was expected (at {})",
                expr.src.trim(),
                short(&other),
                sources.display(expr.scalar.content)
            )),
        }
    }

    /// Renders a template string.
    pub fn render(&self, text: &str, output: Option<&Value>) -> Result<String, String> {
        crate::template::render_str(text, &self.value(output)).map_err(|e| e.message)
    }

    /// Renders every template inside a value.
    pub fn render_value(&self, value: &Value) -> Result<Value, String> {
        crate::template::render_value(value, &self.value(None)).map_err(|e| e.message)
    }

    /// Renders an effect's spec: every template, and those of the strings `kind` hands to a
    /// shell in shell context (values quoted for their place). The kind is asked on the
    /// rendered spec, so a program named by a template counts too. Also returns each value
    /// put into a shell string with the text it became there.
    pub fn render_effect(&self, kind: &dyn StepKind, spec: &Value) -> Result<Effect, String> {
        let ctx = self.value(None);
        let mut rendered =
            crate::template::render_value(spec, &ctx).map_err(|e| e.message.clone())?;
        let mut quoted = Vec::new();
        for pointer in kind.shell_scripts(&rendered) {
            // A script that is not a template string as written (a whole argv from one
            // value, say) was put there by a value: nothing of it is trusted shell text, and
            // it was rendered as that value.
            let Some(Value::String(tpl)) = spec.pointer(&pointer) else {
                continue;
            };
            let field = pointer.trim_start_matches('/').replace('/', ".");
            let text = crate::template::render_shell(tpl, &ctx)
                .map_err(|e| format!("`{field}`: {}", e.message))?;
            if let Some(slot) = rendered.pointer_mut(&pointer) {
                *slot = Value::String(text.text);
            }
            quoted.extend(text.values);
        }
        Ok(Effect {
            spec: rendered,
            quoted,
        })
    }
}

/// An effect's rendered spec.
#[derive(Debug)]
pub struct Effect {
    /// The spec, ready for its kind.
    pub spec: Value,
    /// Each value put into a shell string, and the text it became there.
    pub quoted: Vec<(String, String)>,
}

impl Effect {
    /// Teaches `redactor` the quoted form of every value holding a secret that was put into
    /// a shell string: quoting can change a secret's text (`it's` becomes `it'\''s`), and the
    /// rendered command is journaled.
    pub fn learn_secrets(&self, redactor: &crate::secrets::Redactor) {
        for (value, written) in &self.quoted {
            if redactor.text(value) != *value {
                redactor.add_derived(written);
            }
        }
    }
}

/// A script error with the place in the runbook it comes from.
fn locate(expr: &Expr, e: &crate::script::ScriptError, sources: &Sources) -> String {
    let pos = expr
        .scalar
        .pos_at(e.line.unwrap_or(1), e.column.unwrap_or(1));
    format!("{} (at {})", e.message, sources.display(pos))
}

/// A value shortened for messages.
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}
