//! Load-time checks of what expressions and templates refer to: `steps.X` must name a step
//! that runs before, `params.X` a declared parameter.

use crate::diag::Diagnostic;
use crate::load::fields::{Fields, suggest};
use crate::yaml::Scalar;

/// What an expression or template at some point of a runbook may refer to.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Steps whose outputs exist at this point.
    pub ids: Vec<String>,
    /// Steps of the same lists that run later (for a better message).
    pub later: Vec<String>,
    /// Loop variables in scope.
    pub vars: Vec<String>,
    /// Whether `output` (the step's own output) is available.
    pub output: bool,
}

impl Scope {
    /// This scope with the step's own `output` available.
    #[must_use]
    pub fn with_output(&self) -> Self {
        Self {
            output: true,
            ..self.clone()
        }
    }
}

/// Names the runbook declares, checked against references.
pub struct Names<'a> {
    /// Declared parameters.
    pub params: &'a [String],
}

impl Fields {
    /// Checks the `steps.X` references of a Rhai expression.
    pub fn check_expr_refs(&mut self, scalar: &Scalar, src: &str, scope: &Scope) {
        for r in crate::script::step_refs(src) {
            if !scope.ids.contains(&r.id) {
                let pos = scalar.pos_at_offset(r.offset);
                self.push(unknown_step(pos, &r.id, scope));
            }
        }
    }

    /// Checks the `steps.X` and `params.X` references of a template.
    pub fn check_template_refs(&mut self, scalar: &Scalar, names: &Names<'_>, scope: &Scope) {
        if !scalar.text.contains("{{") {
            return;
        }
        for path in crate::template::refs(&scalar.text) {
            let mut parts = path.split('.');
            let root = parts.next().unwrap_or_default();
            let Some(second) = parts.next() else {
                continue;
            };
            let second = second.trim_start_matches('[').trim_end_matches(']');
            let offset = scalar
                .text
                .find(&format!("{root}.{second}"))
                .map_or(0, |o| o + root.len() + 1);
            let pos = scalar.pos_at_offset(offset);
            match root {
                "steps" if !scope.ids.iter().any(|id| id == second) => {
                    self.push(unknown_step(pos, second, scope));
                }
                "params" if !names.params.iter().any(|p| p == second) => {
                    let mut d = Diagnostic::new(
                        pos,
                        second.chars().count(),
                        format!("unknown parameter `{second}`"),
                    );
                    if let Some(s) = suggest(second, names.params.iter().map(String::as_str)) {
                        d = d.label(format!("did you mean `{s}`?"));
                    }
                    self.push(d);
                }
                _ => {}
            }
        }
    }
}

fn unknown_step(pos: crate::source::Pos, id: &str, scope: &Scope) -> Diagnostic {
    let len = id.chars().count();
    if scope.later.iter().any(|l| l == id) {
        return Diagnostic::new(
            pos,
            len,
            format!("step `{id}` runs after this point; its output is not available here"),
        );
    }
    let mut d = Diagnostic::new(pos, len, format!("unknown step `{id}`"));
    if let Some(s) = suggest(id, scope.ids.iter().map(String::as_str)) {
        d = d.label(format!("did you mean `{s}`?"));
    } else {
        d = d.label("no step with this id runs before this point");
    }
    d
}
