//! The live step tree on a terminal (standard error): a spinner per running step, a tick or
//! cross with its duration when it ends, the latest poll of a wait, and the last lines of a
//! failed step's output (of every step with `-v`).
//!
//! Contract:
//! - The live region (the steps of the top-level steps not yet finished) is redrawn in place
//!   and always fits the terminal ([`model`]); a top-level step's lines are printed once above
//!   it when that step finishes, and everything still on show when the run stops.
//! - While a gate's question is asked on the terminal ([`Observer::prompting`]) nothing is
//!   drawn: the live region is cleared, lines to print wait, and drawing resumes under the
//!   answer. A redraw would otherwise erase the question and the answer being typed.

mod model;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use runbook_journals::{Event, Record, RunId, SkipReason};

use crate::engine::exec::describe_intent;
use crate::engine::log::Observer;
use crate::ui::{depth, duration, output};

use model::Model;

/// How often spinners turn.
const TICK: Duration = Duration::from_millis(120);

/// Whether and how the live region is drawn.
enum Region {
    /// Nothing on show, nothing drawn.
    Idle,
    /// Drawn by this bar.
    Live(ProgressBar),
    /// A question is being asked: lines to print once it is answered.
    Suspended(Vec<String>),
}

/// Draws the step tree.
pub struct TreeView {
    model: Arc<Mutex<Model>>,
    region: Mutex<Region>,
    verbose: bool,
}

impl TreeView {
    /// A new tree; `verbose` shows the last lines of every step's output, not only a failed
    /// one's.
    pub fn new(verbose: bool) -> Self {
        Self {
            model: Arc::new(Mutex::new(Model::default())),
            region: Mutex::new(Region::Idle),
            verbose,
        }
    }

    /// Changes the model, prints what it hands out above the live region, and starts or stops
    /// drawing as the region fills or empties.
    fn apply(&self, change: impl FnOnce(&mut Model) -> Vec<String>) {
        // The region's lock is taken first and held while drawing; the bar's own draws take
        // the model's lock (in `bar`), so the model's is never held while drawing.
        let mut region = self.region.lock().expect("tree poisoned");
        let (lines, empty) = {
            let mut model = self.model.lock().expect("tree poisoned");
            let lines = change(&mut model);
            (lines, model.is_empty())
        };
        match &mut *region {
            Region::Suspended(pending) => pending.extend(lines),
            Region::Live(bar) => {
                if !lines.is_empty() {
                    bar.println(lines.join("\n"));
                }
                if empty {
                    bar.finish_and_clear();
                    *region = Region::Idle;
                }
            }
            Region::Idle => {
                print_lines(&lines);
                if !empty {
                    *region = Region::Live(bar(self.model.clone()));
                }
            }
        }
    }

    fn line(&self, text: String) {
        self.apply(|_| vec![text]);
    }

    fn tail(&self, record: &Record, path: &str) -> Vec<String> {
        output::of_record(record, self.verbose)
            .map(|o| output::tail(o, output::TAIL, &format!("{}    ", pad(path))))
            .unwrap_or_default()
    }
}

/// A bar whose one line is the live region, as `model` renders it for the terminal's size.
fn bar(model: Arc<Mutex<Model>>) -> ProgressBar {
    let draw = move |_: &ProgressState, w: &mut dyn fmt::Write| {
        let (rows, cols) = console::Term::stderr().size();
        let lines = model.lock().expect("tree poisoned").render(
            Instant::now(),
            usize::from(rows).saturating_sub(1),
            usize::from(cols),
        );
        let _ = w.write_str(&lines.join("\n"));
    };
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{tree}")
            .expect("valid template")
            .with_key("tree", draw),
    );
    bar.enable_steady_tick(TICK);
    bar
}

fn print_lines(lines: &[String]) {
    use std::io::Write as _;
    if lines.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
}

fn pad(path: &str) -> String {
    "  ".repeat(depth(path) + 1)
}

impl Observer for TreeView {
    fn record(&self, run: RunId, record: &Record) {
        match &record.event {
            Event::RunStarted(s) => {
                self.line(format!(
                    "run {run}: {} (started by {})",
                    s.runbook, s.started_by
                ));
            }
            Event::StepStarted { path, intent, .. } => {
                let what = describe_intent(intent);
                self.apply(|m| {
                    m.start(path, what, Instant::now());
                    Vec::new()
                });
            }
            Event::StepSucceeded {
                path, duration_ms, ..
            } => {
                let line = format!("{}✓ {path}  {}", pad(path), duration(*duration_ms));
                let tail = self.tail(record, path);
                self.apply(|m| m.finish(path, line, tail));
            }
            Event::StepFailed {
                path,
                error,
                retry_at: Some(at),
                ..
            } => {
                let line = format!(
                    "{}↻ {path}  {error}; retrying at {}",
                    pad(path),
                    at.format("%H:%M:%S")
                );
                let tail = self.tail(record, path);
                self.apply(|m| {
                    m.retrying(path, line, tail);
                    Vec::new()
                });
            }
            Event::StepFailed {
                path,
                error,
                tolerated,
                ..
            } => {
                let mark = if *tolerated { "✗ (tolerated)" } else { "✗" };
                let line = format!("{}{mark} {path}  {error}", pad(path));
                let tail = self.tail(record, path);
                self.apply(|m| m.finish(path, line, tail));
            }
            Event::StepInterrupted { path, reason, .. } => {
                let line = format!("{}■ {path}  {reason}", pad(path));
                self.apply(|m| m.finish(path, line, Vec::new()));
            }
            Event::StepSkipped { path, reason } => {
                let why = match reason {
                    SkipReason::When => "when is false",
                    SkipReason::Check => "already in place",
                    SkipReason::Operator => "skipped by an operator",
                };
                let line = format!("{}- {path}  ({why})", pad(path));
                self.apply(|m| m.finish(path, line, Vec::new()));
            }
            Event::ItemsDecided { path, items } => {
                self.apply(|m| {
                    m.items(path, items.len());
                    Vec::new()
                });
            }
            Event::GateOpened { path, prompt, .. } => {
                let what = format!("⏸ {prompt}");
                self.apply(|m| {
                    m.doing(path, what);
                    Vec::new()
                });
            }
            Event::TimerSet { path, wake_at } => {
                let what = format!(
                    "sleeping until {}",
                    wake_at.with_timezone(&chrono::Local).format("%H:%M:%S")
                );
                self.apply(|m| {
                    m.doing(path, what);
                    Vec::new()
                });
            }
            Event::GateDecided {
                path,
                approved,
                by,
                comment,
            } => {
                let verdict = if *approved { "approved" } else { "rejected" };
                let comment = comment
                    .as_ref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default();
                let line = format!("{}    {verdict} by {by}{comment}", pad(path));
                self.apply(|m| m.note(path, vec![line]));
            }
            Event::GateExpired { path, outcome, .. } => {
                let line = format!(
                    "{}    expired with nobody deciding (on_timeout: {outcome})",
                    pad(path)
                );
                self.apply(|m| m.note(path, vec![line]));
            }
            Event::Resumed { by, drift, orphans } => {
                let mut lines = vec![format!("run {run}: resumed by {by}")];
                for text in crate::engine::orphans_stopped(orphans) {
                    lines.push(format!("  warning: {text}"));
                }
                for d in drift {
                    lines.push(format!(
                        "  warning: {} was {} since the run started; the run continues with its pinned copy",
                        crate::library::display_origin(&d.origin),
                        d.change
                    ));
                }
                self.apply(|_| lines);
            }
            Event::Precheck { id, ok, error } => {
                if *ok {
                    self.line(format!("  ✓ precheck {id}"));
                } else {
                    self.line(format!(
                        "  ✗ precheck {id}  {}",
                        error.as_deref().unwrap_or("")
                    ));
                }
            }
            // The run stopped: what is still on show is final. At a gate the run may go on
            // (the question is asked here), so the tree stays.
            Event::StateChanged { state, .. }
                if state.is_settled() && *state != runbook_journals::RunState::Waiting =>
            {
                self.apply(Model::drain);
            }
            Event::StateChanged { .. }
            | Event::AttentionNeeded { .. }
            | Event::OperatorDecided { .. }
            | Event::RunReopened { .. }
            | Event::Paused { .. }
            | Event::Unpaused { .. }
            | Event::AbortStarted { .. }
            | Event::SourceReloaded { .. } => {}
            Event::LossAccepted { kept, by, .. } => {
                self.line(format!(
                    "  the journal's records after {kept} were lost; {by} accepted it"
                ));
            }
        }
    }

    fn progress(&self, _run: RunId, path: &str, note: &str) {
        let what = note.to_owned();
        self.apply(|m| {
            m.doing(path, what);
            Vec::new()
        });
    }

    fn prompting(&self, _run: RunId, asking: bool) {
        let mut region = self.region.lock().expect("tree poisoned");
        if asking {
            match std::mem::replace(&mut *region, Region::Suspended(Vec::new())) {
                Region::Live(bar) => {
                    bar.disable_steady_tick();
                    bar.finish_and_clear();
                }
                Region::Suspended(pending) => *region = Region::Suspended(pending),
                Region::Idle => {}
            }
        } else if let Region::Suspended(pending) = std::mem::replace(&mut *region, Region::Idle) {
            print_lines(&pending);
            if !self.model.lock().expect("tree poisoned").is_empty() {
                *region = Region::Live(bar(self.model.clone()));
            }
        }
    }
}
