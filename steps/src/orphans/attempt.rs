//! Which attempt a process belongs to: every process a step starts carries its run id, step
//! path and attempt number in its environment, and its descendants inherit them. The journal
//! records the same three with the step's intent before the process starts, so a process found
//! later can be matched to an attempt the journal knows the end of — or does not.

use serde::{Deserialize, Serialize};

use crate::StepContext;

/// The run's id.
pub const RUN_ID_VAR: &str = "RUNBOOK_RUN_ID";
/// The step's path in the run, e.g. `roll[2].leader`.
pub const STEP_PATH_VAR: &str = "RUNBOOK_STEP_PATH";
/// The attempt number, 1 for the first.
pub const ATTEMPT_VAR: &str = "RUNBOOK_STEP_ATTEMPT";

/// One attempt of one step of one run, as its processes carry it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attempt {
    /// The run's id.
    pub run_id: String,
    /// The step's path (a probe's path for a probe: `wait.probe`, `step.check.probe`).
    pub path: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl Attempt {
    /// The attempt a step context stands for.
    pub fn of(ctx: &StepContext) -> Self {
        Self {
            run_id: ctx.run_id.clone(),
            path: ctx.path.clone(),
            attempt: ctx.attempt,
        }
    }

    /// The environment variables that mark a process as this attempt's.
    pub fn vars(&self) -> [(&'static str, String); 3] {
        [
            (RUN_ID_VAR, self.run_id.clone()),
            (STEP_PATH_VAR, self.path.clone()),
            (ATTEMPT_VAR, self.attempt.to_string()),
        ]
    }

    /// The attempt named by an environment as `/proc/PID/environ` holds it (`NAME=value`
    /// entries separated by NUL bytes); `None` unless all three variables are there and sound.
    pub fn from_environ(environ: &[u8]) -> Option<Self> {
        let (mut run_id, mut path, mut attempt) = (None, None, None);
        for entry in environ.split(|b| *b == 0) {
            let Some(eq) = entry.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (name, value) = (&entry[..eq], &entry[eq + 1..]);
            let slot = match name {
                n if n == RUN_ID_VAR.as_bytes() => &mut run_id,
                n if n == STEP_PATH_VAR.as_bytes() => &mut path,
                n if n == ATTEMPT_VAR.as_bytes() => &mut attempt,
                _ => continue,
            };
            // The first definition wins, as it does for getenv(3).
            if slot.is_none() {
                *slot = std::str::from_utf8(value).ok();
            }
        }
        let (run_id, path) = (run_id?, path?);
        if run_id.is_empty() || path.is_empty() {
            return None;
        }
        Some(Self {
            run_id: run_id.to_owned(),
            path: path.to_owned(),
            attempt: attempt?.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step `{}` (attempt {}) of run {}",
            self.path, self.attempt, self.run_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environ(entries: &[&str]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for e in entries {
            bytes.extend_from_slice(e.as_bytes());
            bytes.push(0);
        }
        bytes
    }

    #[test]
    fn an_attempt_survives_the_round_trip_through_an_environment() {
        let attempt = Attempt {
            run_id: "01JD0000000000000000000000".into(),
            path: "roll[2].leader".into(),
            attempt: 3,
        };
        let mut entries: Vec<String> = vec!["PATH=/bin".into(), "EMPTY=".into(), "NOEQUALS".into()];
        entries.extend(attempt.vars().iter().map(|(k, v)| format!("{k}={v}")));
        entries.push("A=b=c".into());
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        assert_eq!(Attempt::from_environ(&environ(&refs)), Some(attempt));
    }

    #[test]
    fn an_environment_without_all_three_sound_variables_names_no_attempt() {
        let full = [
            "RUNBOOK_RUN_ID=r",
            "RUNBOOK_STEP_PATH=p",
            "RUNBOOK_STEP_ATTEMPT=1",
        ];
        assert!(Attempt::from_environ(&environ(&full)).is_some());
        for missing in 0..full.len() {
            let mut partial = full.to_vec();
            partial.remove(missing);
            assert_eq!(
                Attempt::from_environ(&environ(&partial)),
                None,
                "{partial:?}"
            );
        }
        let bad_number = [
            "RUNBOOK_RUN_ID=r",
            "RUNBOOK_STEP_PATH=p",
            "RUNBOOK_STEP_ATTEMPT=x",
        ];
        assert_eq!(Attempt::from_environ(&environ(&bad_number)), None);
        let empty_run = [
            "RUNBOOK_RUN_ID=",
            "RUNBOOK_STEP_PATH=p",
            "RUNBOOK_STEP_ATTEMPT=1",
        ];
        assert_eq!(Attempt::from_environ(&environ(&empty_run)), None);
        // A variable whose name merely starts with one of ours is someone else's.
        let prefixed = [
            "RUNBOOK_RUN_ID_X=r",
            "RUNBOOK_STEP_PATH=p",
            "RUNBOOK_STEP_ATTEMPT=1",
        ];
        assert_eq!(Attempt::from_environ(&environ(&prefixed)), None);
        assert_eq!(Attempt::from_environ(b""), None);
    }

    #[test]
    fn the_first_definition_of_a_variable_wins_as_for_getenv() {
        let twice = [
            "RUNBOOK_RUN_ID=first",
            "RUNBOOK_STEP_PATH=p",
            "RUNBOOK_STEP_ATTEMPT=1",
            "RUNBOOK_RUN_ID=second",
        ];
        assert_eq!(
            Attempt::from_environ(&environ(&twice)).map(|a| a.run_id),
            Some("first".into())
        );
    }
}
