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
    /// Checks the `steps.X` and `params.X` references of a Rhai expression.
    pub fn check_expr_refs(&mut self, scalar: &Scalar, names: &Names<'_>, scope: &Scope) {
        for r in crate::script::step_refs(&scalar.text) {
            if !scope.ids.contains(&r.id) {
                let pos = scalar.pos_at_offset(r.offset);
                self.push(unknown_step(pos, &r.id, scope));
            }
        }
        for r in crate::script::param_refs(&scalar.text) {
            if !names.params.contains(&r.id) {
                let pos = scalar.pos_at_offset(r.offset);
                self.push(unknown_param(pos, &r.id, names));
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
            // The first place the reference is written whole (`params.nam`, not the start of
            // `params.name`).
            let written = format!("{root}.{second}");
            let offset = scalar
                .text
                .match_indices(&written)
                .map(|(o, _)| o)
                .find(|&o| {
                    !scalar.text[o + written.len()..]
                        .starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '-')
                })
                .map_or(0, |o| o + root.len() + 1);
            let pos = scalar.pos_at_offset(offset);
            match root {
                "steps" if !scope.ids.iter().any(|id| id == second) => {
                    self.push(unknown_step(pos, second, scope));
                }
                "params" if !names.params.iter().any(|p| p == second) => {
                    self.push(unknown_param(pos, second, names));
                }
                _ => {}
            }
        }
    }
}

fn unknown_param(pos: crate::source::Pos, name: &str, names: &Names<'_>) -> Diagnostic {
    let d = Diagnostic::new(
        pos,
        name.chars().count(),
        format!("unknown parameter `{name}`"),
    );
    match suggest(name, names.params.iter().map(String::as_str)) {
        Some(s) => d.label(format!("did you mean `{s}`?")),
        None if names.params.is_empty() => d.help("the runbook declares no `params`"),
        None => d.help(format!("parameters are: {}", names.params.join(", "))),
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
