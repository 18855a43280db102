//! What the live tree shows: the steps of the top-level steps not yet finished, as a tree, fit
//! to the terminal's height.
//!
//! Contract:
//! - A top-level step's subtree stays here until that step has finished; then all its lines are
//!   handed out once, in tree order, to be printed above the live region, and it leaves.
//! - [`Model::render`] never returns more lines than it is given rows: when the full tree is
//!   taller, finished subtrees collapse into their parent's line (`roll  (5 of 8 done)`), then
//!   finished steps beside running ones are left out, and last the lines that still do not fit
//!   are counted instead of shown. A region that fits the terminal is what keeps a redraw from
//!   moving the cursor above the screen, which corrupts the scrollback.
//! - Lines are never wider than the columns given, so that none wraps into a second row.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::ui::depth;

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const FRAME: Duration = Duration::from_millis(120);

/// Where a step is.
#[derive(Debug)]
enum State {
    /// An attempt runs (or waits: a gate, a sleep, a poll): what it does.
    Running { since: Instant, what: String },
    /// An attempt failed and another is due: its line and the output under it.
    Retrying { line: String, tail: Vec<String> },
    /// Finished (succeeded, failed, skipped, stopped): its line.
    Done(String),
}

#[derive(Debug)]
struct Node {
    children: Vec<String>,
    state: State,
    /// Lines under the step's own (its output, a verdict), already indented.
    notes: Vec<String>,
    /// A loop's number of items, once decided.
    items: Option<usize>,
}

/// The steps on show, keyed by path, and the top-level ones in order.
#[derive(Debug, Default)]
pub struct Model {
    nodes: HashMap<String, Node>,
    roots: Vec<String>,
}

/// How much a render leaves out.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Detail {
    /// Everything.
    Full,
    /// Finished groups of children (a loop's iterations, a called runbook's steps) counted in
    /// their parent's line.
    Collapsed,
    /// Only steps not finished.
    Unfinished,
}

impl Model {
    /// Whether nothing is on show.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// An attempt of `path` started, doing `what`.
    pub fn start(&mut self, path: &str, what: String, now: Instant) {
        let running = State::Running { since: now, what };
        if let Some(node) = self.nodes.get_mut(path) {
            // Another attempt: the lines of the one before stay, under the step.
            match std::mem::replace(&mut node.state, running) {
                State::Retrying { line, tail } => {
                    node.notes.push(format!("  {line}"));
                    node.notes.extend(tail);
                }
                State::Done(line) => node.notes.push(format!("  {line}")),
                State::Running { .. } => {}
            }
            return;
        }
        self.insert(path, running);
    }

    /// What a running step does now (a gate's prompt, a wait's last poll).
    pub fn doing(&mut self, path: &str, what: String) {
        if let Some(Node {
            state: State::Running { what: w, .. },
            ..
        }) = self.nodes.get_mut(path)
        {
            *w = what;
        }
    }

    /// A loop's number of items.
    pub fn items(&mut self, path: &str, n: usize) {
        if let Some(node) = self.nodes.get_mut(path) {
            node.items = Some(n);
        }
    }

    /// Lines under a step; returned to be printed at once when the step is not on show.
    pub fn note(&mut self, path: &str, lines: Vec<String>) -> Vec<String> {
        match self.nodes.get_mut(path) {
            Some(node) => {
                node.notes.extend(lines);
                Vec::new()
            }
            None => lines,
        }
    }

    /// An attempt failed and another is due.
    pub fn retrying(&mut self, path: &str, line: String, notes: Vec<String>) {
        if !self.nodes.contains_key(path) {
            self.insert(
                path,
                State::Running {
                    since: Instant::now(),
                    what: String::new(),
                },
            );
        }
        let node = self.nodes.get_mut(path).expect("just inserted");
        node.state = State::Retrying { line, tail: notes };
    }

    /// A step finished with `line`, `notes` under it. Returns the lines to print above the live
    /// region: those of its top-level step, once that has finished.
    pub fn finish(&mut self, path: &str, line: String, notes: Vec<String>) -> Vec<String> {
        if !self.nodes.contains_key(path) {
            self.insert(path, State::Done(String::new()));
        }
        let node = self.nodes.get_mut(path).expect("just inserted");
        node.state = State::Done(line);
        node.notes.extend(notes);
        let mut out = Vec::new();
        while let Some(root) = self.roots.first() {
            // Top-level steps leave in order: a finished one waits for those started before.
            if !matches!(self.nodes[root].state, State::Done(_)) {
                break;
            }
            let root = self.roots.remove(0);
            self.take(&root, &mut out);
        }
        out
    }

    /// Everything on show, as final lines, leaving nothing (the run stopped).
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for root in std::mem::take(&mut self.roots) {
            self.take(&root, &mut out);
        }
        out
    }

    /// The live region: at most `rows` lines, none wider than `cols`.
    pub fn render(&self, now: Instant, rows: usize, cols: usize) -> Vec<String> {
        let rows = rows.max(1);
        let mut lines = Vec::new();
        for detail in [Detail::Full, Detail::Collapsed, Detail::Unfinished] {
            lines.clear();
            for root in &self.roots {
                self.lines(root, detail, Some(now), &mut lines);
            }
            if lines.len() <= rows {
                break;
            }
        }
        if lines.len() > rows {
            let more = lines.len() - (rows - 1);
            lines.truncate(rows - 1);
            lines.push(format!("  … and {more} more lines"));
        }
        lines
            .into_iter()
            .map(|l| console::truncate_str(&l, cols.max(2) - 1, "…").into_owned())
            .collect()
    }

    fn insert(&mut self, path: &str, state: State) {
        self.nodes.insert(
            path.to_owned(),
            Node {
                children: Vec::new(),
                state,
                notes: Vec::new(),
                items: None,
            },
        );
        match self.parent_of(path) {
            Some(parent) => {
                let parent = parent.to_owned();
                self.nodes
                    .get_mut(&parent)
                    .expect("a parent on show")
                    .children
                    .push(path.to_owned());
            }
            None => self.roots.push(path.to_owned()),
        }
    }

    /// The nearest step on show whose path `path` extends (`roll` for `roll[3].leader`).
    fn parent_of<'p>(&self, path: &'p str) -> Option<&'p str> {
        path.char_indices()
            .rev()
            .filter(|(_, c)| *c == '.' || *c == '[')
            .map(|(i, _)| &path[..i])
            .find(|prefix| self.nodes.contains_key(*prefix))
    }

    /// Removes `path`'s subtree, appending its final lines.
    fn take(&mut self, path: &str, out: &mut Vec<String>) {
        self.lines(path, Detail::Full, None, out);
        self.remove(path);
    }

    fn remove(&mut self, path: &str) {
        if let Some(node) = self.nodes.remove(path) {
            for child in node.children {
                self.remove(&child);
            }
        }
    }

    /// Whether `path` and everything under it finished.
    fn finished(&self, path: &str) -> bool {
        let node = &self.nodes[path];
        matches!(node.state, State::Done(_)) && node.children.iter().all(|c| self.finished(c))
    }

    /// `path`'s children in groups: a loop's children by iteration (`[3]`), others one by one.
    fn groups<'a>(&'a self, path: &str) -> Vec<Vec<&'a String>> {
        let node = &self.nodes[path];
        let mut groups: Vec<(Option<&str>, Vec<&String>)> = Vec::new();
        for child in &node.children {
            let rest = &child[path.len()..];
            let key = rest
                .strip_prefix('[')
                .and_then(|r| r.find(']'))
                .map(|end| &rest[..end + 2]);
            match groups.last_mut() {
                Some((Some(k), members)) if key == Some(*k) => members.push(child),
                _ => groups.push((key, vec![child])),
            }
        }
        groups.into_iter().map(|(_, members)| members).collect()
    }

    /// Appends `path`'s lines at `detail`; `now` is `None` for final lines (no spinner, no
    /// clock).
    fn lines(&self, path: &str, detail: Detail, now: Option<Instant>, out: &mut Vec<String>) {
        let node = &self.nodes[path];
        let mut shown = Vec::new();
        let mut done = 0;
        for group in self.groups(path) {
            if detail >= Detail::Collapsed && group.iter().all(|c| self.finished(c)) {
                done += 1;
            } else {
                shown.extend(group);
            }
        }
        let mut line = Self::own_line(path, node, now);
        if done > 0 {
            match node.items {
                Some(n) => {
                    let _ = write!(line, "  ({done} of {n} done)");
                }
                None => {
                    let _ = write!(line, "  ({done} done)");
                }
            }
        }
        let finished = self.finished(path);
        if detail == Detail::Unfinished && finished {
            return;
        }
        out.push(line);
        if detail < Detail::Unfinished || !finished {
            out.extend(node.notes.iter().cloned());
            if let State::Retrying { tail, .. } = &node.state {
                out.extend(tail.iter().cloned());
            }
        }
        for child in shown {
            self.lines(child, detail, now, out);
        }
    }

    fn own_line(path: &str, node: &Node, now: Option<Instant>) -> String {
        let pad = "  ".repeat(depth(path) + 1);
        match (&node.state, now) {
            (State::Done(line) | State::Retrying { line, .. }, _) => line.clone(),
            (State::Running { since, what }, Some(now)) => {
                let elapsed = now.saturating_duration_since(*since);
                let frame = SPINNER[(elapsed.as_millis() / FRAME.as_millis()) as usize % 10];
                let secs = elapsed.as_secs();
                let clock = if secs < 60 {
                    format!("{secs}s")
                } else {
                    format!("{}m{:02}s", secs / 60, secs % 60)
                };
                format!(
                    "{pad}{frame} {path}  {what} {}",
                    console::style(clock).dim()
                )
            }
            (State::Running { what, .. }, None) => format!("{pad}… {path}  {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(path: &str) -> String {
        format!("{}✓ {path}", "  ".repeat(depth(path) + 1))
    }

    /// A top-level loop `roll` of `items` iterations of steps `a`, `b`, `c`, the first
    /// `finished` of them done.
    fn rolling(items: usize, finished: usize) -> (Model, Instant) {
        let now = Instant::now();
        let mut m = Model::default();
        m.start("roll", "foreach".into(), now);
        m.items("roll", items);
        for i in 0..=finished.min(items - 1) {
            for s in ["a", "b", "c"] {
                let p = format!("roll[{i}].{s}");
                m.start(&p, "shell".into(), now);
                if i < finished {
                    assert!(m.finish(&p, done(&p), Vec::new()).is_empty());
                }
            }
        }
        (m, now)
    }

    #[test]
    fn a_tree_that_fits_is_shown_whole() {
        let (m, now) = rolling(2, 1);
        let lines = m.render(now, 20, 200);
        assert_eq!(lines.len(), 1 + 3 + 3, "{lines:#?}");
        assert_eq!(lines[1], done("roll[0].a"));
    }

    #[test]
    fn a_tree_taller_than_the_terminal_collapses_finished_iterations_into_their_loop() {
        let (m, now) = rolling(8, 5);
        let lines = m.render(now, 14, 200);
        assert!(lines.len() <= 14, "{lines:#?}");
        assert!(lines[0].contains("roll") && lines[0].contains("(5 of 8 done)"));
        assert!(lines.iter().all(|l| !l.contains("roll[0]")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("roll[5].c")), "{lines:#?}");
    }

    #[test]
    fn the_live_region_never_exceeds_the_rows_it_is_given() {
        let (m, now) = rolling(8, 5);
        for rows in 1..12 {
            let lines = m.render(now, rows, 30);
            assert!(lines.len() <= rows, "{rows}: {lines:#?}");
            assert!(lines.iter().all(|l| console::measure_text_width(l) < 30));
        }
    }

    #[test]
    fn a_finished_top_level_step_is_handed_out_once_whole_and_in_order() {
        let (mut m, _) = rolling(2, 1);
        for s in ["a", "b", "c"] {
            let p = format!("roll[1].{s}");
            assert!(m.finish(&p, done(&p), Vec::new()).is_empty());
        }
        let out = m.finish("roll", done("roll"), vec!["    note".into()]);
        let mut expected = vec![done("roll"), "    note".to_owned()];
        for i in 0..2 {
            for s in ["a", "b", "c"] {
                expected.push(done(&format!("roll[{i}].{s}")));
            }
        }
        assert_eq!(out, expected);
        assert!(m.is_empty());
        assert!(m.finish("next", done("next"), Vec::new()) == [done("next")]);
    }

    #[test]
    fn a_retried_step_keeps_the_line_of_its_failed_attempt() {
        let now = Instant::now();
        let mut m = Model::default();
        m.start("fetch", "http".into(), now);
        m.retrying(
            "fetch",
            "  ↻ fetch  503".into(),
            vec!["      stderr:".into()],
        );
        m.start("fetch", "http".into(), now);
        let out = m.finish("fetch", done("fetch"), Vec::new());
        assert_eq!(
            out,
            [
                done("fetch"),
                "    ↻ fetch  503".into(),
                "      stderr:".into()
            ]
        );
    }
}
