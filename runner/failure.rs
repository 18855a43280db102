//! What kind of failure an operation met: the one classification of engine and journal errors.
//!
//! The command line derives its exit code from a [`Kind`] (`cli::exit`) and the API its HTTP
//! status; the holder of the journal sends the kind with every error answer
//! ([`crate::wire::ErrorBody`]), so the command line talking to it exits exactly as it would
//! have run locally — a held lock is 1 either way — without reading meaning into message text.

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
    /// The holder of the journal is letting it go (a `serve` stopping, a `runbook run` whose
    /// runs are done): the command is to be taken up again once it has.
    Unavailable,
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
            // Another executor sharing the journal owns the run: the operation is its to do.
            JournalError::Owned { .. } => Self::Refused,
            // This executor lost its lease: another takes over; ask again there.
            JournalError::Fenced { .. } => Self::Unavailable,
            _ => Self::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_owned_by_another_executor_is_refused_and_a_lost_lease_is_unavailable() {
        let run = runbook_journals::RunId(ulid::Ulid::nil());
        assert_eq!(
            Kind::of_journal(&JournalError::Owned {
                run,
                owner: "b/1".into()
            }),
            Kind::Refused
        );
        assert_eq!(
            Kind::of_journal(&JournalError::Fenced {
                run,
                detail: "lease gone".into()
            }),
            Kind::Unavailable
        );
    }

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
}
