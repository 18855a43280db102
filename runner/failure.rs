//! What kind of failure an operation met: the one classification of engine and journal errors.
//!
//! The command line derives its exit code from a [`Kind`] (`cli::CliError::exit_code`) and
//! `serve` its HTTP status; `serve` sends the kind with every error answer ([`ErrorBody`]), so
//! the command line talking to a `serve` exits exactly as it would have run locally — a held
//! lock is 1 either way — without reading meaning into message text.

use runbook_journals::JournalError;
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;

/// The kind of a failure, as both sides of the HTTP API name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The request itself is wrong: a broken runbook, a parameter that is wrong, missing or not
    /// allowed, a runbook given by path where only names are run, an ambiguous run id.
    BadInput,
    /// No such runbook or run.
    NotFound,
    /// The operation does not fit the run's state, or the caller may not do it.
    Refused,
    /// Another unfinished run holds the lock the run needs.
    LockHeld,
    /// A step was in flight when the run stopped, and an operator must decide about it.
    NeedsDecision,
    /// A precheck failed, so the run was not resumed.
    PrecheckFailed,
    /// No or an unknown bearer token.
    Unauthorized,
    /// Anything else: the journal, I/O, a run that does not fit its runbook.
    Failed,
}

impl Kind {
    /// The kind of an engine error.
    pub fn of_engine(e: &EngineError) -> Self {
        match e {
            EngineError::NotFound(_) => Self::NotFound,
            EngineError::Invalid { .. } | EngineError::Params(_) => Self::BadInput,
            EngineError::Refused(_) => Self::Refused,
            EngineError::NeedsDecision(_) => Self::NeedsDecision,
            EngineError::Precheck { .. } => Self::PrecheckFailed,
            EngineError::Journal(j) => Self::of_journal(j),
            EngineError::Exec(_) => Self::Failed,
        }
    }

    /// The kind of a journal error.
    pub fn of_journal(e: &JournalError) -> Self {
        match e {
            JournalError::NoSuchRun(_) => Self::NotFound,
            JournalError::Ambiguous { .. } => Self::BadInput,
            JournalError::LockHeld { .. } => Self::LockHeld,
            _ => Self::Failed,
        }
    }
}

/// The body of every error answer of the HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What kind of failure it is, for programs. Absent from answers of a `serve` older than
    /// this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_its_own_kind_whether_the_engine_or_the_journal_reports_it() {
        let held = || JournalError::LockHeld {
            key: "app/x".into(),
            holder: runbook_journals::RunId(ulid::Ulid::nil()),
        };
        assert_eq!(Kind::of_journal(&held()), Kind::LockHeld);
        assert_eq!(
            Kind::of_engine(&EngineError::Journal(held())),
            Kind::LockHeld
        );
    }

    #[test]
    fn the_kind_travels_as_a_kebab_case_word_and_may_be_absent() {
        let body = ErrorBody {
            error: "run x needs attention".into(),
            kind: Some(Kind::NeedsDecision),
        };
        let text = serde_json::to_string(&body).expect("serializes");
        assert_eq!(
            text,
            r#"{"error":"run x needs attention","kind":"needs-decision"}"#
        );
        assert_eq!(
            serde_json::from_str::<ErrorBody>(&text).expect("parses"),
            body
        );
        let old: ErrorBody = serde_json::from_str(r#"{"error":"boom"}"#).expect("parses");
        assert_eq!(old.kind, None);
    }
}
