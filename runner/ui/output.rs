//! A step's own output in human output: the last lines of its stdout and stderr under a step
//! that failed (under every step with `-v`), and all of it for `runbook log RUN --step PATH`.
//!
//! Only what the journal holds is shown, and the journal holds step outputs masked (the run's
//! log redacts every event before it is appended or observed), so no secret appears here in
//! clear. Escape sequences and control characters of a step's output are dropped: a command's
//! colours or cursor movements must not redraw the live tree or retitle the terminal.

use runbook_journals::{Event, Record, SkipReason};
use serde_json::Value;

/// How many lines of each stream are shown under a step.
pub const TAIL: usize = 10;

/// The streams a step's output may carry, in the order they are shown (stderr last, nearest
/// the eye, because that is where a command says why it failed).
const STREAMS: [&str; 2] = ["stdout", "stderr"];

/// The output a record's step line is followed by: a failed attempt's always, a succeeded
/// one's with `verbose`.
pub fn of_record(record: &Record, verbose: bool) -> Option<&Value> {
    match &record.event {
        Event::StepFailed { output, .. } => output.as_ref(),
        Event::StepSucceeded { output, .. } if verbose => Some(output),
        _ => None,
    }
}

/// The last `max` lines of each non-empty stream of `output`, each stream under a label, every
/// line starting with `indent`. Empty for an output without streams (an HTTP response).
pub fn tail(output: &Value, max: usize, indent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in STREAMS {
        let Some(text) = output.get(name).and_then(Value::as_str) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            continue;
        }
        let shown = &lines[lines.len().saturating_sub(max)..];
        if shown.len() < lines.len() {
            out.push(format!(
                "{indent}{name} (last {} of {} lines):",
                shown.len(),
                lines.len()
            ));
        } else {
            out.push(format!("{indent}{name}:"));
        }
        out.extend(shown.iter().map(|l| format!("{indent}  {}", clean(l))));
    }
    out
}

/// All of each stream of `output`, labelled (an empty stream says so); an output without
/// streams is shown as JSON.
pub fn whole(output: &Value, indent: &str) -> Vec<String> {
    if !STREAMS
        .iter()
        .any(|s| output.get(s).is_some_and(Value::is_string))
    {
        let json = serde_json::to_string_pretty(output).expect("values serialize");
        return std::iter::once(format!("{indent}output:"))
            .chain(json.lines().map(|l| format!("{indent}  {}", clean(l))))
            .collect();
    }
    let mut out = Vec::new();
    for name in STREAMS {
        let Some(text) = output.get(name).and_then(Value::as_str) else {
            continue;
        };
        let count = text.lines().count();
        if count == 0 {
            out.push(format!("{indent}{name}: (empty)"));
            continue;
        }
        out.push(format!("{indent}{name} ({count} lines):"));
        out.extend(text.lines().map(|l| format!("{indent}  {}", clean(l))));
    }
    out
}

/// Every attempt of step `path` in a run's records, each labelled (number, start, how it
/// ended) with its whole output under it. `Err` carries the run's step paths nearest `path`,
/// nearest first, when the run has no such step.
pub fn attempts(records: &[Record], path: &str) -> Result<Vec<String>, Vec<String>> {
    let mut out = Vec::new();
    let mut open: Option<u32> = None;
    for r in records.iter().filter(|r| r.event.path() == Some(path)) {
        let at = r.at.format("%Y-%m-%d %H:%M:%S UTC");
        match &r.event {
            Event::StepStarted {
                attempt, intent, ..
            } => {
                if let Some(n) = open.replace(*attempt) {
                    out.push(format!(
                        "attempt {n}: did not finish (its process went away)"
                    ));
                }
                out.push(format!(
                    "attempt {attempt}: started {at}: {}",
                    crate::engine::exec::describe_intent(intent)
                ));
            }
            Event::StepSucceeded {
                attempt,
                output,
                duration_ms,
                ..
            } => {
                open = None;
                out.push(format!(
                    "attempt {attempt}: succeeded after {}",
                    crate::ui::duration(*duration_ms)
                ));
                out.extend(whole(output, "  "));
            }
            Event::StepFailed {
                attempt,
                error,
                output,
                duration_ms,
                ..
            } => {
                open = None;
                out.push(format!(
                    "attempt {attempt}: failed after {}: {error}",
                    crate::ui::duration(*duration_ms)
                ));
                match output {
                    Some(o) => out.extend(whole(o, "  ")),
                    None => out.push("  (no output)".into()),
                }
            }
            Event::StepInterrupted {
                attempt, reason, ..
            } => {
                open = None;
                out.push(format!("attempt {attempt}: stopped {at}: {reason}"));
            }
            Event::StepSkipped { reason, .. } => {
                let why = match reason {
                    SkipReason::When => "its `when` is false",
                    SkipReason::Check => "its `check` says the effect is in place",
                    SkipReason::Operator => "an operator skipped it",
                };
                out.push(format!("skipped {at}: {why}"));
            }
            _ => {}
        }
    }
    if let Some(n) = open {
        out.push(format!("attempt {n}: in flight (no output yet)"));
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let mut paths: Vec<&str> = Vec::new();
    for p in records.iter().filter_map(|r| r.event.path()) {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    paths.sort_by(|a, b| strsim::jaro_winkler(path, b).total_cmp(&strsim::jaro_winkler(path, a)));
    Err(paths.into_iter().take(5).map(str::to_owned).collect())
}

/// A line of a step's output as it may be printed on a terminal: escape sequences dropped,
/// tabs as spaces, other control characters as `?`.
pub fn clean(line: &str) -> String {
    console::strip_ansi_codes(line)
        .chars()
        .map(|c| match c {
            '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tail_keeps_the_last_lines_of_each_stream_and_says_how_many_there_were() {
        let stdout = (1..=20)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let output = json!({ "exit_code": 3, "stdout": stdout, "stderr": "bad thing\n" });
        assert_eq!(
            tail(&output, 3, "  "),
            [
                "  stdout (last 3 of 20 lines):",
                "    line 18",
                "    line 19",
                "    line 20",
                "  stderr:",
                "    bad thing",
            ]
        );
    }

    #[test]
    fn empty_streams_and_outputs_without_streams_show_nothing_under_a_step() {
        assert!(tail(&json!({ "stdout": "", "stderr": "" }), 10, "").is_empty());
        assert!(tail(&json!({ "status": 500, "body": "x" }), 10, "").is_empty());
    }

    #[test]
    fn the_whole_output_labels_each_stream_and_shows_other_outputs_as_json() {
        assert_eq!(
            whole(&json!({ "stdout": "a\nb\n", "stderr": "" }), ""),
            ["stdout (2 lines):", "  a", "  b", "stderr: (empty)"]
        );
        assert_eq!(
            whole(&json!({ "status": 200 }), ""),
            ["output:", "  {", "    \"status\": 200", "  }"]
        );
    }

    #[test]
    fn escape_sequences_and_control_characters_cannot_reach_the_terminal() {
        assert_eq!(
            clean("\u{1b}[31mred\u{1b}[0m\tand\u{7}bell\r"),
            "red and?bell?"
        );
    }
}
