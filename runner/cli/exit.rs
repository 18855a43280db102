//! Exit codes, decided here once: from how a run settled ([`of_outcome`]) or from the kind of
//! failure a command met ([`of_kind`]) — the same whether the command ran here or the holder
//! of the journal ran it for us and sent the kind with its answer.

use crate::engine::Outcome;
use crate::failure::Kind;

/// Everything succeeded.
pub const OK: i32 = 0;
/// A step failed, or the operation failed.
pub const FAILED: i32 = 1;
/// Bad input: a broken runbook, a wrong parameter, a command that does not fit.
pub const BAD_INPUT: i32 = 2;
/// The run is parked at a gate, or paused.
pub const PARKED: i32 = 3;
/// The run needs an operator's decision.
pub const ATTENTION: i32 = 4;

/// The exit code of a command that executed a run until `outcome`: 0 succeeded, 1 failed or
/// aborted (from another shell: the run did not do what was asked of it), 3 parked or paused, 4 needs
/// attention, 128+N for signal N. (`abort` itself exits 0: it did what it was asked.)
pub fn of_outcome(outcome: &Outcome) -> i32 {
    match outcome {
        Outcome::Succeeded => OK,
        Outcome::Failed { .. } | Outcome::Aborted => FAILED,
        Outcome::Parked { .. } | Outcome::Paused { .. } => PARKED,
        Outcome::NeedsAttention { .. } => ATTENTION,
        Outcome::Interrupted { signal } => match signal.as_str() {
            "SIGTERM" => 128 + 15,
            "SIGHUP" => 128 + 1,
            _ => 128 + 2,
        },
    }
}

/// The exit code of a command that failed with a failure of `kind`.
pub fn of_kind(kind: Kind) -> i32 {
    match kind {
        Kind::BadInput | Kind::NotFound | Kind::Refused => BAD_INPUT,
        Kind::NeedsDecision => ATTENTION,
        Kind::LockHeld
        | Kind::PrecheckFailed
        | Kind::Unauthorized
        | Kind::Unavailable
        | Kind::Failed => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_aborted_under_its_command_is_a_failure_and_signals_are_128_plus_n() {
        assert_eq!(of_outcome(&Outcome::Succeeded), 0);
        assert_eq!(of_outcome(&Outcome::Aborted), 1);
        assert_eq!(
            of_outcome(&Outcome::Parked {
                path: "confirm".into(),
                prompt: "go?".into()
            }),
            3
        );
        for (signal, code) in [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)] {
            assert_eq!(
                of_outcome(&Outcome::Interrupted {
                    signal: signal.into()
                }),
                code
            );
        }
    }

    #[test]
    fn a_held_lock_is_1_and_a_refusal_is_2() {
        assert_eq!(of_kind(Kind::LockHeld), 1);
        assert_eq!(of_kind(Kind::Refused), 2);
        assert_eq!(of_kind(Kind::NeedsDecision), 4);
        assert_eq!(of_kind(Kind::Unavailable), 1);
    }
}
