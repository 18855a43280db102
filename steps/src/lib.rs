//! runbook-steps: the effectful step kinds.
//!
//! A step kind turns a *rendered* spec (a JSON value in which every template has been filled in)
//! into an output (another JSON value). That is all it does: retries, timeouts, `when`,
//! `assert`, `check`, journaling and resuming live in the engine, once, for every kind.
//!
//! # Why a step may run more than once
//!
//! The engine journals `StepStarted` before calling [`StepKind::run`] and `StepSucceeded` after
//! it returns. A step can therefore run again for the same path when
//!
//! - an attempt failed and the step has `retry`;
//! - the process died while the step was in flight and the run was resumed: the engine re-runs
//!   the step only if it is *idempotent* (running it twice has the same effect as once) or its
//!   `check` says the effect is absent, and otherwise stops the run for an operator to decide.
//!
//! [`StepKind::idempotent`] gives the default for a spec (a GET is idempotent, a POST is not; a
//! shell command is not, because nothing is known about it); a runbook may override it with the
//! step's `idempotent` field.

mod cancel;
pub mod child_env;
mod cql;
mod helm;
mod http;
mod iso8601;
mod kube;
mod live;
mod nats;
pub mod orphans;
mod posix_shell;
mod shell;
mod sql;
mod ssh;
mod statements;
#[cfg(test)]
mod test_support;
mod util;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

pub use self::kube::Kube;
pub use cancel::{Cancel, CancelReason, CancelSource};
pub use cql::Cql;
pub use helm::Helm;
pub use http::Http;
pub use live::{OutputSink, OutputStream};
pub use nats::Nats;
pub use posix_shell::{ScriptSource, script_source};
pub use shell::Shell;
pub use sql::Sql;
pub use util::install_crypto_provider;

/// A boxed future, as the object-safe [`StepKind::run`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a step kind knows about the attempt it runs.
#[derive(Clone, Debug)]
pub struct StepContext {
    /// The run's id.
    pub run_id: String,
    /// The step's path in the run, e.g. `roll[2].leader`.
    pub path: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Fires when the engine wants the step stopped (its timeout passed, or Ctrl-C).
    pub cancel: Cancel,
    /// Evaluates runbook conditions (Rhai) for kinds that wait on one, e.g. a Kubernetes
    /// object condition; provided by the runner.
    pub conditions: Option<Arc<dyn Conditions>>,
    /// Where a kind that runs a process hands its output while the step runs (none: nobody
    /// follows it live); provided by the runner.
    pub output: Option<Arc<dyn OutputSink>>,
}

impl StepContext {
    /// A context with no condition evaluator.
    pub fn new(
        run_id: impl Into<String>,
        path: impl Into<String>,
        attempt: u32,
        cancel: Cancel,
    ) -> Self {
        Self {
            run_id: run_id.into(),
            path: path.into(),
            attempt,
            cancel,
            conditions: None,
            output: None,
        }
    }
}

/// Evaluates runbook conditions (Rhai expressions) over a value, so that step kinds can wait
/// for a condition without knowing the expression language. The runner implements it.
pub trait Conditions: Send + Sync + std::fmt::Debug {
    /// Whether `expr` holds with the value bound as `object` (and `output`).
    fn holds(&self, expr: &str, value: &Value) -> Result<bool, String>;
}

/// Why a step attempt did not produce an output.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The rendered spec does not fit the kind (a missing field, a wrong type).
    #[error("invalid {kind} spec: {message}")]
    Spec {
        /// The step kind.
        kind: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The step ran and failed; `output` holds what it produced (exit code, stderr, status).
    #[error("{message}")]
    Failed {
        /// What went wrong, in a sentence.
        message: String,
        /// What the step produced before it failed.
        output: Option<Value>,
    },
    /// The engine stopped the step ([`StepContext::cancel`] fired) and the step wound down.
    #[error("{message}")]
    Cancelled {
        /// Why it was stopped.
        reason: CancelReason,
        /// How the step ended, in a sentence (e.g. "killed with SIGTERM after 5s timeout").
        message: String,
        /// What the step produced before it was stopped.
        output: Option<Value>,
    },
}

impl StepError {
    /// The partial output carried by a failure, if any.
    pub fn output(&self) -> Option<&Value> {
        match self {
            Self::Spec { .. } => None,
            Self::Failed { output, .. } | Self::Cancelled { output, .. } => output.as_ref(),
        }
    }
}

/// The shape of one field of a kind's spec, checked when a runbook is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A string (may be a template).
    String,
    /// An integer (or a template rendering to one).
    Int,
    /// A boolean (or a template).
    Bool,
    /// A duration such as `30s` or `5m`.
    Duration,
    /// A list.
    List,
    /// A mapping.
    Map,
    /// Anything.
    Any,
    /// A runbook condition (Rhai) over `object`, compiled when the runbook is loaded.
    Expr,
}

/// One field of a kind's spec.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The field's name in YAML.
    pub name: &'static str,
    /// Its shape.
    pub ty: FieldType,
    /// Whether it must be given.
    pub required: bool,
}

impl Field {
    /// An optional field.
    pub const fn optional(name: &'static str, ty: FieldType) -> Self {
        Self {
            name,
            ty,
            required: false,
        }
    }

    /// A required field.
    pub const fn required(name: &'static str, ty: FieldType) -> Self {
        Self {
            name,
            ty,
            required: true,
        }
    }
}

/// An effectful step kind. One module per kind, one line in [`Registry::builtin`].
pub trait StepKind: Send + Sync {
    /// The key that selects this kind in a runbook (`shell:`).
    fn name(&self) -> &'static str;

    /// The spec's fields, for load-time checks and "did you mean" suggestions.
    fn fields(&self) -> &'static [Field];

    /// Checks a spec's shape beyond field names and types; returns problems as
    /// `(field, message)`, where `field` is a field's name or a JSON Pointer to a place inside
    /// one (`/statements/1/sq`: the key `sq` of the second statement), which `check` points
    /// at. Templates are not rendered yet, so string values may be templates.
    fn validate(&self, spec: &Value) -> Vec<(String, String)> {
        let _ = spec;
        Vec::new()
    }

    /// The strings of a spec that a POSIX shell will parse as a script, as JSON Pointers
    /// (`/run`, `/args/2`, `/stdin`).
    ///
    /// The runner renders the templates of these strings in shell context: every value is
    /// quoted for its place in the script, so a value is always data, never code. Every other
    /// string is rendered as it is (an argv element goes to its program without a shell). The
    /// runner asks once on the spec as written (for `runbook check`; a program named by a
    /// template is unknown then) and again on the rendered spec of each attempt, so a kind
    /// should answer from the spec's literal shape alone. The default: none.
    fn shell_scripts(&self, spec: &Value) -> Vec<String> {
        let _ = spec;
        Vec::new()
    }

    /// Whether running this spec twice has the same effect as running it once.
    fn idempotent(&self, spec: &Value) -> bool;

    /// A one-line summary of what the rendered spec does, for logs and attention messages.
    fn describe(&self, spec: &Value) -> String;

    /// Runs one attempt. Must return promptly with [`StepError::Cancelled`] once
    /// `ctx.cancel` fires, after stopping whatever it started.
    fn run<'a>(
        &'a self,
        spec: Value,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<Value, StepError>>;
}

/// The step kinds a runner knows, by name.
pub struct Registry {
    kinds: BTreeMap<&'static str, Box<dyn StepKind>>,
}

impl Registry {
    /// Every built-in kind.
    pub fn builtin() -> Self {
        let mut registry = Self {
            kinds: BTreeMap::new(),
        };
        registry.register(Box::new(Shell));
        registry.register(Box::new(Http));
        registry.register(Box::new(Kube));
        registry.register(Box::new(Helm));
        registry.register(Box::new(Nats));
        registry.register(Box::new(Sql));
        registry.register(Box::new(Cql));
        registry
    }

    /// Adds a kind (replacing one of the same name).
    pub fn register(&mut self, kind: Box<dyn StepKind>) {
        self.kinds.insert(kind.name(), kind);
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn StepKind> {
        self.kinds.get(name).map(AsRef::as_ref)
    }

    /// The names of all kinds, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
