//! The watchdog: a small process, one per executor, that outlives the executor only to stop
//! what the executor had in flight.
//!
//! It reads [`Message`]s, one JSON object per line, on its standard input, a pipe whose write
//! end only the executor holds (close-on-exec, so no step's process inherits it). End of file
//! means the executor is gone — it exited, or was killed, even by SIGKILL — and the watchdog
//! then stops every group still tracked and every process that carries the attempt of one
//! ([`super::stop`]), and exits. An executor that ends normally has untracked everything, so
//! its watchdog exits at once.
//!
//! It runs in a process group of its own and blocks the signals that a terminal or a
//! supervisor sends to a whole group (SIGINT, SIGTERM, SIGHUP, SIGQUIT): its life is bound to
//! the pipe, not to them. SIGKILL still ends it; what it would have stopped is then stopped by
//! the next `resume` or `abort` of the run.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use serde::{Deserialize, Serialize};

use super::Attempt;
use super::stop::{self, Group, Stopped, Targets};

/// The first argument that makes the `runbook` binary a watchdog.
pub const WATCHDOG_ARG: &str = "__watchdog";

/// What the executor tells its watchdog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Message {
    /// A step's process group started.
    Track {
        /// The group.
        group: Group,
        /// The attempt it runs.
        attempt: Attempt,
        /// The step's grace between SIGTERM and SIGKILL, in milliseconds.
        grace_ms: u64,
    },
    /// The group's leader was reaped: the step's command ended, and whatever it left running
    /// is its own business.
    Untrack {
        /// The group's id.
        pgid: i32,
    },
}

/// What the watchdog tracks: every group in flight, by id.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    groups: BTreeMap<i32, (Group, Attempt, Duration)>,
}

impl Tracked {
    /// Applies one line of the protocol; a line that does not parse is ignored (the executor
    /// and its watchdog are the same binary, so it is not expected).
    pub(crate) fn apply(&mut self, line: &str) {
        match serde_json::from_str::<Message>(line) {
            Ok(Message::Track {
                group,
                attempt,
                grace_ms,
            }) => {
                self.groups.insert(
                    group.pgid,
                    (group, attempt, Duration::from_millis(grace_ms)),
                );
            }
            Ok(Message::Untrack { pgid }) => {
                self.groups.remove(&pgid);
            }
            Err(_) => {}
        }
    }

    /// The groups in flight.
    pub(crate) fn groups(&self) -> Vec<(Group, Attempt, Duration)> {
        self.groups.values().cloned().collect()
    }
}

/// Reads `input` to its end, then stops what is still tracked.
pub(crate) fn watch(input: impl BufRead) -> Vec<Stopped> {
    let mut tracked = Tracked::default();
    for line in input.lines() {
        match line {
            Ok(line) => tracked.apply(&line),
            // The pipe broke: the executor is gone as surely as at end of file.
            Err(_) => break,
        }
    }
    let groups = tracked.groups();
    if groups.is_empty() {
        return Vec::new();
    }
    let in_flight: Vec<Attempt> = groups.iter().map(|(_, a, _)| a.clone()).collect();
    let grace_of = |attempt: &Attempt| {
        groups
            .iter()
            .filter(|(_, a, _)| a == attempt)
            .map(|(_, _, grace)| *grace)
            .max()
    };
    let orphan = |attempt: &Attempt| {
        if in_flight.contains(attempt) {
            grace_of(attempt)
        } else {
            None
        }
    };
    stop::stop(&Targets {
        groups: &groups,
        orphan: &orphan,
    })
}

/// The watchdog process: blocks group-wide signals, watches its standard input, and returns
/// the exit code once the executor is gone and its groups are stopped.
pub fn main() -> i32 {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        blocked.add(signal);
    }
    // Only this thread exists; if blocking fails the watchdog still works, it is merely
    // easier to stop by accident.
    let _ = blocked.thread_block();
    // Started as `/proc/self/exe`, it would be listed as `exe`.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_name(c"runbook");
    watch(std::io::stdin().lock());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(path: &str) -> Attempt {
        Attempt {
            run_id: "R".into(),
            path: path.into(),
            attempt: 1,
        }
    }

    fn track(pgid: i32, path: &str, grace_ms: u64) -> String {
        serde_json::to_string(&Message::Track {
            group: Group {
                pgid,
                start: Some(7),
            },
            attempt: attempt(path),
            grace_ms,
        })
        .unwrap()
    }

    #[test]
    fn untracked_groups_are_forgotten_and_bad_lines_ignored() {
        let mut tracked = Tracked::default();
        tracked.apply(&track(10, "a", 5000));
        tracked.apply(&track(11, "b", 250));
        tracked.apply("not json");
        tracked.apply(r#"{"op":"explode"}"#);
        tracked.apply(&serde_json::to_string(&Message::Untrack { pgid: 10 }).unwrap());
        tracked.apply(&serde_json::to_string(&Message::Untrack { pgid: 99 }).unwrap());
        assert_eq!(
            tracked.groups(),
            [(
                Group {
                    pgid: 11,
                    start: Some(7)
                },
                attempt("b"),
                Duration::from_millis(250)
            )]
        );
    }

    #[test]
    fn the_wire_format_is_one_json_object_per_message() {
        assert_eq!(
            track(10, "roll[2].leader", 5000),
            r#"{"op":"track","group":{"pgid":10,"start":7},"attempt":{"run_id":"R","path":"roll[2].leader","attempt":1},"grace_ms":5000}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::Untrack { pgid: 10 }).unwrap(),
            r#"{"op":"untrack","pgid":10}"#
        );
    }

    #[test]
    fn an_executor_that_untracked_everything_leaves_nothing_to_stop() {
        let input = format!(
            "{}\n{}\n",
            track(10, "a", 5000),
            serde_json::to_string(&Message::Untrack { pgid: 10 }).unwrap()
        );
        assert!(watch(input.as_bytes()).is_empty());
    }
}
