//! The runbook model: what a loaded, validated runbook is. Produced by `crate::load`, executed
//! by `crate::engine`. Every node keeps its position for messages.

mod concurrency;
mod param;
mod step;

use std::sync::Arc;

pub use concurrency::{
    Amount, Concurrency, End, Limits, Move, Progress, Setting, next_move, parse_setting,
};
pub use param::{Param, ParamType};
pub use step::{Action, Check, Expr, GateRules, Retry, Step, Template, Wait};

use crate::script::LibScript;
use crate::source::{FileId, Pos};

/// A loaded runbook.
#[derive(Debug)]
pub struct Runbook {
    /// Its name (`runbook:`).
    pub name: String,
    /// One line on what it does.
    pub description: Option<String>,
    /// Declared parameters, in file order.
    pub params: Vec<Param>,
    /// The lock key template: one unfinished run per rendered key.
    pub lock: Option<Template>,
    /// Read-only checks that must pass before the run starts and on every resume.
    pub prechecks: Vec<Step>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Steps that run once if the run fails.
    pub on_failure: Vec<Step>,
    /// Steps that run when an operator aborts the run (absent: `on_failure` runs instead).
    pub on_abort: Vec<Step>,
    /// A Rhai expression over `steps` whose value is the runbook's output (what a `call` gets).
    pub output: Option<Expr>,
    /// When `serve` runs it by itself.
    pub schedules: Vec<crate::schedule::ScheduleSpec>,
    /// Rhai functions available to every expression of this runbook.
    pub functions: Option<Arc<LibScript>>,
    /// The runbook's file.
    pub file: FileId,
    /// Where `runbook:` is.
    pub pos: Pos,
}

impl Runbook {
    /// The parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
}
