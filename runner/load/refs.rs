//! Load-time checks of what expressions and templates refer to: `steps.X` must name a step
//! that runs before, `params.X` a declared parameter.

use std::sync::Arc;

use crate::diag::Diagnostic;
use crate::load::fields::{Fields, suggest};
use crate::yaml::Scalar;

/// What an expression or template at some point of a runbook may refer to.
///
/// Every step of a list sees the ids of the steps before it; scopes share them (persistent
/// structures) so that reading a runbook of n steps costs n, not n².
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Steps whose outputs exist at this point, in order.
    ids: rpds::VectorSync<String>,
    /// The same, for lookups.
    id_set: rpds::HashTrieSetSync<String>,
    /// Steps of the same lists that run later (for a better message).
    later: Option<Arc<Later>>,
    /// Loop variables in scope.
    pub vars: Vec<String>,
    /// Whether `output` (the step's own output) is available.
    pub output: bool,
}

/// The steps of a list after some point, then those after the enclosing lists' points.
#[derive(Debug)]
pub struct Later {
    ids: Arc<[String]>,
    from: usize,
    outer: Option<Arc<Later>>,
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

    /// A step's output exists from here on.
    pub fn push_id(&mut self, id: &str) {
        self.ids.push_back_mut(id.to_owned());
        self.id_set.insert_mut(id.to_owned());
    }

    /// Whether the output of step `id` exists here.
    pub fn has(&self, id: &str) -> bool {
        self.id_set.contains(id)
    }

    /// The steps whose outputs exist here, in order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(String::as_str)
    }

    /// This scope for the step at `at` of a list whose step ids are `list` (in order):
    /// the ones after it run later.
    #[must_use]
    pub fn at(&self, list: &Arc<[String]>, at: usize, outer: Option<&Arc<Later>>) -> Self {
        Self {
            later: Some(Arc::new(Later {
                ids: list.clone(),
                from: at + 1,
                outer: outer.cloned(),
            })),
            ..self.clone()
        }
    }

    /// What runs later than this scope's point, as [`Scope::at`] takes it.
    pub fn later(&self) -> Option<&Arc<Later>> {
        self.later.as_ref()
    }

    /// Whether step `id` runs after this point in one of the enclosing lists.
    fn runs_later(&self, id: &str) -> bool {
        let mut next = self.later.as_deref();
        while let Some(l) = next {
            if l.ids
                .get(l.from..)
                .is_some_and(|ids| ids.iter().any(|x| x == id))
            {
                return true;
            }
            next = l.outer.as_deref();
        }
        false
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
            if !scope.has(&r.id) {
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
                "steps" if !scope.has(second) => {
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
        Some(s) => d.did_you_mean(s),
        None if names.params.is_empty() => d.help("the runbook declares no `params`"),
        None => d.help(format!("parameters are: {}", names.params.join(", "))),
    }
}

fn unknown_step(pos: crate::source::Pos, id: &str, scope: &Scope) -> Diagnostic {
    let len = id.chars().count();
    if scope.runs_later(id) {
        return Diagnostic::new(
            pos,
            len,
            format!("step `{id}` runs after this point; its output is not available here"),
        );
    }
    let mut d = Diagnostic::new(pos, len, format!("unknown step `{id}`"));
    if let Some(s) = suggest(id, scope.ids()) {
        d = d.did_you_mean(s);
    } else {
        d = d.label("no step with this id runs before this point");
    }
    d
}
