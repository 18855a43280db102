//! What expressions and templates see at a point of a run: `params`, `steps.<id>.output`, the
//! loop variable and `run`. Siblings inside a loop iteration shadow outer steps of the same id.
//!
//! Secrets are followed through every evaluation (see [`crate::secrets`]): beside the real
//! values the context keeps their *shadow* — secret parameters and secret step outputs replaced
//! by different values of the same shape, and every other value with the secrets it contains
//! replaced. While the context holds anything secret, each template and each expression whose
//! result is kept (not a condition) is evaluated over both, and whatever differs in the result
//! is learned by the run's redactor before anything is journaled or printed.

use std::borrow::Cow;
use std::sync::Arc;

use runbook_steps::StepKind;
use serde_json::{Map, Value};

use crate::model::{Expr, Runbook, Step};
use crate::refs::StepRefs;
use crate::secrets::Redactor;
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
    /// What derives from secrets here.
    pub taint: Taint,
}

/// The secrets of a context: the run's redactor and the shadow of the values that hold secrets.
#[derive(Clone, Debug, Default)]
pub struct Taint {
    /// The run's redactor (shared by every context of the run).
    pub redactor: Redactor,
    /// `params` with every secret parameter, and every secret inside a parameter, replaced.
    pub params: Arc<Value>,
    /// The shadow of each step entry (`{output, status}`) that differs from its real value.
    pub steps: Map<String, Value>,
    /// Whether a secret parameter or a secret step output is in this context.
    pub holds_secrets: bool,
}

impl Taint {
    /// The taint of a context over `params` of `book`, with the run's `redactor`.
    pub fn new(book: &Runbook, params: &Map<String, Value>, redactor: &Redactor) -> Self {
        let shadow = params
            .iter()
            .map(|(name, value)| {
                let shadow = if book.param(name).is_some_and(|p| p.secret) {
                    crate::secrets::perturb_value(value)
                } else {
                    redactor.shadow(value)
                };
                (name.clone(), shadow)
            })
            .collect();
        Self {
            redactor: redactor.clone(),
            params: Arc::new(Value::Object(shadow)),
            steps: Map::new(),
            holds_secrets: book.params.iter().any(|p| p.secret),
        }
    }
}

impl Ctx {
    /// The path of a step in this context.
    pub fn path(&self, segment: &str) -> String {
        format!("{}{segment}", self.prefix)
    }

    /// Records a step's outcome so later steps can refer to it.
    pub fn set(&mut self, step: &Step, output: Value, status: &str) {
        let tracking = self.tracking();
        if let (Some(id), Value::Object(steps)) = (&step.id, &mut self.steps) {
            let shadow = if step.secret {
                self.taint.holds_secrets = true;
                Some(crate::secrets::perturb_value(&output))
            } else if tracking {
                Some(self.taint.redactor.shadow(&output)).filter(|s| *s != output)
            } else {
                None
            };
            let entry = |output: Value| {
                let mut entry = Map::new();
                entry.insert("output".into(), output);
                entry.insert("status".into(), Value::String(status.to_owned()));
                Value::Object(entry)
            };
            match shadow {
                Some(s) => self.taint.steps.insert(id.clone(), entry(s)),
                None => self.taint.steps.remove(id),
            };
            steps.insert(id.clone(), entry(output));
        }
    }

    /// Whether evaluations here must be followed for secrets.
    fn tracking(&self) -> bool {
        self.taint.holds_secrets || !self.taint.redactor.is_empty()
    }

    /// The shadow of [`Ctx::value`].
    fn shadow_value(&self, output: Option<&Value>, refs: &StepRefs) -> Value {
        let r = &self.taint.redactor;
        let mut root = Map::new();
        root.insert("params".into(), (*self.taint.params).clone());
        let mut steps = self.steps_seen(refs).into_owned();
        if let Value::Object(map) = &mut steps {
            for (id, shadow) in &self.taint.steps {
                if map.contains_key(id) {
                    map.insert(id.clone(), shadow.clone());
                }
            }
        }
        root.insert("steps".into(), steps);
        root.insert("run".into(), (*self.run).clone());
        for (k, v) in &self.vars {
            root.insert(k.clone(), r.shadow(v));
        }
        if let Some(o) = output {
            root.insert("output".into(), r.shadow(o));
        }
        Value::Object(root)
    }

    /// The entries of `steps` an evaluation reading `refs` sees: only those it names, so
    /// that its cost does not grow with everything the run has produced (see [`crate::refs`]).
    fn steps_seen(&self, refs: &StepRefs) -> Cow<'_, Value> {
        match (refs, &self.steps) {
            (Some(ids), Value::Object(all)) => Cow::Owned(Value::Object(
                ids.iter()
                    .filter_map(|id| all.get(id).map(|v| (id.clone(), v.clone())))
                    .collect(),
            )),
            _ => Cow::Borrowed(&self.steps),
        }
    }

    /// Learns as secret what of `real` depends on a secret: `shadow` is the same evaluation over
    /// the shadow (an error there means the result cannot be told apart: all of it is learned).
    fn learn<T>(&self, real: &Value, shadow: Result<Value, T>) {
        match shadow {
            Ok(s) => self.taint.redactor.taint(real, &s),
            Err(_) => self.taint.redactor.taint_all(real),
        }
    }

    /// The context as one JSON value, for templates; `output` added when given.
    pub fn value(&self, output: Option<&Value>) -> Value {
        self.value_reading(output, &None)
    }

    /// [`Ctx::value`] with only the step entries in `refs`.
    fn value_reading(&self, output: Option<&Value>, refs: &StepRefs) -> Value {
        let mut root = Map::new();
        root.insert("params".into(), (*self.params).clone());
        root.insert("steps".into(), self.steps_seen(refs).into_owned());
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
        let steps = self.steps_seen(&expr.refs);
        let mut vars: Vec<(&str, &Value)> = vec![
            ("params", &self.params),
            ("steps", &steps),
            ("run", &self.run),
        ];
        for (k, v) in &self.vars {
            vars.push((k.as_str(), v));
        }
        if let Some(o) = output {
            vars.push(("output", o));
        }
        let real = crate::script::eval(&expr.ast, &vars).map_err(|e| locate(expr, &e, sources))?;
        if self.tracking() {
            let Value::Object(shadow) = self.shadow_value(output, &expr.refs) else {
                unreachable!("the shadow root is an object")
            };
            let vars: Vec<(&str, &Value)> = shadow.iter().map(|(k, v)| (k.as_str(), v)).collect();
            self.learn(&real, crate::script::eval(&expr.ast, &vars));
        }
        Ok(real)
    }

    /// Evaluates a condition's expression: a boolean is not followed for secrets (a condition
    /// over a secret is not the secret).
    fn eval_condition(
        &self,
        expr: &Expr,
        output: Option<&Value>,
        sources: &Sources,
    ) -> Result<Value, String> {
        let steps = self.steps_seen(&expr.refs);
        let mut vars: Vec<(&str, &Value)> = vec![
            ("params", &self.params),
            ("steps", &steps),
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
        match self.eval_condition(expr, output, sources)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!(
                "`{}` gave {} where true or false was expected (at {})",
                expr.src.trim(),
                // Masked before shortening: a cut secret would no longer be recognised.
                short(&self.taint.redactor.value(&other)),
                sources.display(expr.scalar.content)
            )),
        }
    }

    /// Renders a template string.
    pub fn render(&self, text: &str, output: Option<&Value>) -> Result<String, String> {
        let refs = crate::refs::in_template(text);
        let real = crate::template::render_str(text, &self.value_reading(output, &refs))
            .map_err(|e| e.message)?;
        if self.tracking() {
            let shadow = crate::template::render_str(text, &self.shadow_value(output, &refs));
            self.learn(&Value::String(real.clone()), shadow.map(Value::String));
        }
        Ok(real)
    }

    /// Renders every template inside a value.
    pub fn render_value(&self, value: &Value) -> Result<Value, String> {
        let refs = crate::refs::in_templates(value);
        let real = crate::template::render_value(value, &self.value_reading(None, &refs))
            .map_err(|e| e.message)?;
        if self.tracking() {
            self.learn(
                &real,
                crate::template::render_value(value, &self.shadow_value(None, &refs)),
            );
        }
        Ok(real)
    }

    /// Renders an effect's spec: every template, and those of the strings `kind` hands to a
    /// shell in shell context (values quoted for their place). The kind is asked on the
    /// rendered spec, so a program named by a template counts too. Also returns each value
    /// put into a shell string with the text it became there.
    pub fn render_effect(&self, kind: &dyn StepKind, spec: &Value) -> Result<Effect, String> {
        let refs = crate::refs::in_templates(spec);
        let real = effect(kind, spec, &self.value_reading(None, &refs))?;
        if self.tracking() {
            let shadow = effect(kind, spec, &self.shadow_value(None, &refs));
            // The one-line description is journaled too, and quotes the spec its own way.
            let describe = Value::String(kind.describe(&real.spec));
            self.learn(
                &describe,
                shadow
                    .as_ref()
                    .map(|s| Value::String(kind.describe(&s.spec))),
            );
            self.learn(&real.spec, shadow.map(|s| s.spec));
        }
        Ok(real)
    }
}

/// Renders an effect's spec over the context value `ctx` (see [`Ctx::render_effect`]).
fn effect(kind: &dyn StepKind, spec: &Value, ctx: &Value) -> Result<Effect, String> {
    let mut rendered = crate::template::render_value(spec, ctx).map_err(|e| e.message.clone())?;
    let mut quoted = Vec::new();
    for pointer in kind.shell_scripts(&rendered) {
        // A script that is not a template string as written (a whole argv from one value,
        // say) was put there by a value: nothing of it is trusted shell text, and it was
        // rendered as that value.
        let Some(Value::String(tpl)) = spec.pointer(&pointer) else {
            continue;
        };
        let field = pointer.trim_start_matches('/').replace('/', ".");
        let text = crate::template::render_shell(tpl, ctx)
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
