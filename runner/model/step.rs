//! Steps: the common fields every step has, and what each kind of step does.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::source::Pos;
use crate::yaml::Scalar;

/// A compiled Rhai expression and where it was written.
#[derive(Clone, Debug)]
pub struct Expr {
    /// The source text.
    pub src: String,
    /// The YAML scalar holding it (for positions of errors inside it).
    pub scalar: Scalar,
    /// The compiled form.
    pub ast: Arc<rhai::AST>,
    /// The earlier steps it reads (`None`: it may read any).
    pub refs: crate::refs::StepRefs,
}

/// A Handlebars template string and where it was written.
#[derive(Clone, Debug)]
pub struct Template {
    /// The template text.
    pub text: String,
    /// Where it is.
    pub pos: Pos,
}

/// `retry: { attempts, backoff, factor, max_backoff }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Retry {
    /// Total attempts, including the first (≥ 1).
    pub attempts: u32,
    /// Wait before the second attempt.
    pub backoff: Duration,
    /// Each further wait is the previous times this.
    pub factor: f64,
    /// No wait is longer than this.
    pub max_backoff: Duration,
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exp = self
            .factor
            .powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = (self.backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// `check:` — is the step's effect already in place?
#[derive(Clone, Debug)]
pub enum Check {
    /// A bare Rhai expression; true means the effect is in place.
    Expr(Expr),
    /// A read-only probe step and a condition over its output.
    Probe {
        /// The probe.
        probe: Box<Step>,
        /// True means the effect is in place.
        until: Expr,
    },
}

/// `wait: { probe, until, every, timeout }`.
#[derive(Clone, Debug)]
pub struct Wait {
    /// The read-only step run on every poll.
    pub probe: Box<Step>,
    /// The condition over the probe's output.
    pub until: Expr,
    /// Time between polls.
    pub every: Duration,
    /// Give up after this long (the default when `timeout_template` is given).
    pub timeout: Duration,
    /// A `timeout` that is a template over `params` and outputs (a runbook's timeout taken
    /// from a parameter), rendered and parsed when the wait starts.
    pub timeout_template: Option<Template>,
}

/// `gate: { approvals, approvers, on_timeout }`: how many people must approve, who may decide,
/// and what it means when nobody decides in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateRules {
    /// Distinct people who must approve (≥ 1).
    pub approvals: u32,
    /// Who may approve or reject; empty means anyone.
    pub approvers: Vec<String>,
    /// What the gate's expiry means.
    pub on_timeout: runbook_journals::GateTimeout,
}

impl Default for GateRules {
    fn default() -> Self {
        Self {
            approvals: 1,
            approvers: Vec::new(),
            on_timeout: runbook_journals::GateTimeout::default(),
        }
    }
}

/// What a step does.
#[derive(Clone, Debug)]
pub enum Action {
    /// An effectful kind from `runbook-steps` (shell, http, kube, helm, nats) with its unrendered spec.
    Effect {
        /// The kind's name.
        kind: String,
        /// The spec, templates not yet rendered.
        spec: Value,
    },
    /// A Rhai script; its value is the output.
    Script(Expr),
    /// Poll a probe until a condition holds.
    Wait(Wait),
    /// Wait for a person to approve.
    Gate {
        /// What the approver is asked.
        prompt: Template,
        /// Fail the gate if nobody decides in time.
        timeout: Option<Duration>,
        /// The approver must not be the person who started the run.
        four_eyes: bool,
        /// Who must approve, and what the expiry means.
        rules: GateRules,
    },
    /// A durable timer.
    Sleep(Template),
    /// Run nested steps once per item.
    Foreach {
        /// The expression giving the items.
        items: Expr,
        /// The loop variable's name.
        var: String,
        /// The nested steps.
        steps: Vec<Step>,
        /// How iterations may overlap (none: one after the other), as far as written as
        /// values.
        concurrency: crate::model::Concurrency,
        /// The settings written as templates, rendered when the loop starts.
        templated: Vec<(crate::model::Setting, Template)>,
    },
    /// Run the branches at once; the step fails if a branch fails (after all have finished).
    Parallel {
        /// One step per branch.
        branches: Vec<Step>,
    },
    /// Run another runbook's steps under this step's path.
    Call {
        /// The called runbook's name or path (a template over `params`).
        runbook: Template,
        /// Its parameters (templates).
        params: serde_json::Map<String, Value>,
    },
}

impl Action {
    /// The kind's name as journaled (`shell`, `gate`, `foreach`, …).
    pub fn kind(&self) -> &str {
        match self {
            Self::Effect { kind, .. } => kind,
            Self::Script(_) => "script",
            Self::Wait(_) => "wait",
            Self::Gate { .. } => "gate",
            Self::Sleep(_) => "sleep",
            Self::Foreach { .. } => "foreach",
            Self::Parallel { .. } => "parallel",
            Self::Call { .. } => "call",
        }
    }
}

/// One step with its common fields.
#[derive(Clone, Debug)]
pub struct Step {
    /// Unique among its siblings; `None` means the step is named by its position.
    pub id: Option<String>,
    /// A human name.
    pub name: Option<String>,
    /// Run only if this is true (decided once and journaled).
    pub when: Option<Expr>,
    /// Stop the attempt after this long.
    pub timeout: Option<Duration>,
    /// Try again on failure.
    pub retry: Option<Retry>,
    /// A condition over `output` that must hold for the step to succeed.
    pub assert: Option<Expr>,
    /// The message when `assert` fails (a template).
    pub message: Option<Template>,
    /// Overrides the kind's default: is running it twice harmless?
    pub idempotent: Option<bool>,
    /// Is the effect already in place? (true skips the step; makes resuming safe.)
    pub check: Option<Check>,
    /// Steps to run if this step fails for good.
    pub on_failure: Vec<Step>,
    /// A failure does not fail the run.
    pub continue_on_error: bool,
    /// The step's output is secret: redacted in the journal and output.
    pub secret: bool,
    /// What the step does.
    pub action: Action,
    /// Where the step starts.
    pub pos: Pos,
}

impl Step {
    /// The path segment naming this step among its siblings (its id, or `#N`, 1-based).
    pub fn segment(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("#{}", index + 1))
    }

    /// A label for output: the name, else the id, else the kind.
    pub fn label(&self) -> &str {
        self.name
            .as_deref()
            .or(self.id.as_deref())
            .unwrap_or_else(|| self.action.kind())
    }
}
