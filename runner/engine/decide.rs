//! The executor's decisions, as pure functions of what the journal recorded, what the step is
//! and the time: what to do with a step the walk reaches (replay it, run it, continue it, ask
//! its `check`, stop for an operator), whether a failed attempt is retried and when, whether a
//! timer is due, where a gate stands. The async walker ([`super::exec`], [`super::control`])
//! only carries them out; these are table-tested here without a runtime, a disk or a clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use runbook_journals::GateTimeout;

use crate::model::{Action, Retry};

/// The time, as the executor sees it (a port, so that decisions can be driven by a test clock).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What a step does, as far as resuming it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// It changes something outside (shell, http, kube, helm, …).
    Effect,
    /// It only reads: a `wait` polls, a `script` computes.
    Read,
    /// It is control: a gate, a sleep, a loop, a call — each resumes where it stands.
    Control,
}

impl Class {
    /// The class of an action.
    pub fn of(action: &Action) -> Self {
        match action {
            Action::Effect { .. } => Self::Effect,
            Action::Wait(_) | Action::Script(_) => Self::Read,
            Action::Gate { .. }
            | Action::Sleep(_)
            | Action::Foreach { .. }
            | Action::Parallel { .. }
            | Action::Call { .. } => Self::Control,
        }
    }
}

/// What the journal holds for a step, reduced to what the decision needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing: the walk has never reached it.
    None,
    /// It succeeded; `masked` when its output was secret and so not journaled.
    Succeeded { attempts: u32, masked: bool },
    /// It was skipped (`when`, `check`, an operator).
    Skipped,
    /// It failed for good (possibly tolerated).
    Failed,
    /// An attempt failed and the next one is due at a journaled time.
    RetryPending {
        attempt: u32,
        retry_at: DateTime<Utc>,
    },
    /// It started (or was interrupted) and never finished.
    InFlight { attempt: u32 },
}

/// What else is known about the step when deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// What it does.
    pub class: Class,
    /// Whether its journaled start says running it twice is harmless.
    pub idempotent: bool,
    /// Whether it has a `check` that can tell whether its effect is in place.
    pub has_check: bool,
    /// Whether an operator said `--retry-step` for it.
    pub operator_retry: bool,
}

/// Why the run stops for an operator at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attention {
    /// An effect started and never finished, and running it again is not known to be safe.
    InFlight,
    /// Its output was secret (not journaled) and getting it again is not known to be safe.
    SecretOutput,
}

/// What the walker does with the step it reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Never seen: decide `when`, ask `check`, then run attempt 1.
    Fresh,
    /// Replay the journaled outcome (succeeded, skipped or failed) without running anything.
    Replay,
    /// Run attempt `attempt` — once `after` has passed, when it is given.
    Begin {
        attempt: u32,
        after: Option<DateTime<Utc>>,
    },
    /// Ask the step's `check`: present skips it, absent runs attempt `attempt`, no answer
    /// stops for an operator.
    AskCheck { attempt: u32 },
    /// Stop in `needs-attention`.
    Attention(Attention),
}

/// The decision for a step the walk reached, from its record (README, the journal, item 3).
pub fn next(record: Record, facts: Facts, now: DateTime<Utc>) -> Next {
    match record {
        Record::None => Next::Fresh,
        Record::Succeeded { attempts, masked } => {
            if !masked {
                return Next::Replay;
            }
            if facts.idempotent || facts.operator_retry {
                Next::Begin {
                    attempt: attempts + 1,
                    after: None,
                }
            } else {
                Next::Attention(Attention::SecretOutput)
            }
        }
        Record::Skipped | Record::Failed => Next::Replay,
        Record::RetryPending { attempt, retry_at } => Next::Begin {
            attempt: attempt + 1,
            after: (retry_at > now).then_some(retry_at),
        },
        Record::InFlight { attempt } => in_flight(attempt, facts),
    }
}

/// The in-flight policy: a step that started and never finished.
fn in_flight(attempt: u32, facts: Facts) -> Next {
    let again = Next::Begin {
        attempt: attempt + 1,
        after: None,
    };
    match facts.class {
        // A control step with a `check` (a driver's restart whose effect is checkable: the
        // member runs the target version and is healthy) asks it first: present skips what
        // is left of it — the member is not restarted again — absent continues where it
        // stands. An operator's --retry-step continues without asking.
        Class::Control if facts.has_check && !facts.operator_retry => Next::AskCheck { attempt },
        // Control steps continue where they stand (a gate stays open, a timer keeps its wake
        // time, a loop or a call replays what it did).
        Class::Control => Next::Begin {
            attempt,
            after: None,
        },
        // Reading twice is harmless.
        Class::Read => again,
        Class::Effect if facts.operator_retry || facts.idempotent => again,
        Class::Effect if facts.has_check => Next::AskCheck {
            attempt: attempt + 1,
        },
        Class::Effect => Next::Attention(Attention::InFlight),
    }
}

/// Whether an effect reached first after an operator accepted a journal loss may run: it may
/// have started before the loss, unrecorded. `None` when it may; the caller's `check` (when it
/// has one) is asked next as for any fresh step.
pub fn after_loss(facts: Facts) -> Option<Attention> {
    let safe =
        facts.class != Class::Effect || facts.has_check || facts.operator_retry || facts.idempotent;
    (!safe).then_some(Attention::InFlight)
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Attempt `attempt` runs at `at` (journaled, so a resumed run keeps it).
    Retry { attempt: u32, at: DateTime<Utc> },
    /// The step failed for good; `tolerated` when `continue_on_error` lets the run go on.
    Fail { tolerated: bool },
}

/// Whether attempt `attempt` that failed (`retryable`: the failure may pass) is tried again.
pub fn after_failure(
    retry: Option<&Retry>,
    attempt: u32,
    retryable: bool,
    continue_on_error: bool,
    now: DateTime<Utc>,
) -> AfterFailure {
    match retry {
        Some(retry) if retryable && attempt < retry.attempts => AfterFailure::Retry {
            attempt: attempt + 1,
            at: now
                + chrono::Duration::from_std(retry.delay_after(attempt))
                    .unwrap_or(chrono::Duration::zero()),
        },
        _ => AfterFailure::Fail {
            tolerated: continue_on_error,
        },
    }
}

/// How long until `when`; zero once it has passed (a timer journaled before a crash that is
/// already due fires at once, never sleeps its whole length again).
pub fn remaining(when: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (when - now).to_std().unwrap_or_default()
}

/// A time `d` after `now`, saturating.
pub fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where an open gate stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Decided: rejected by someone, or approved by as many people as it needs.
    Decided { approved: bool },
    /// Nobody decided before it expired at `at`; `outcome` is what that means. `journaled`
    /// when the expiry is on record already (a replay), else it is to be journaled now.
    Expired {
        at: DateTime<Utc>,
        outcome: GateTimeout,
        journaled: bool,
    },
    /// Still open.
    Open,
}

/// Where a gate stands: a journaled verdict or expiry wins (it was taken in time, and is
/// replayed as it was); otherwise the gate expires at its journaled time, meaning what its
/// `on_timeout` says.
pub fn gate(
    decision: Option<bool>,
    expired: Option<GateTimeout>,
    expires_at: Option<DateTime<Utc>>,
    on_timeout: GateTimeout,
    now: DateTime<Utc>,
) -> Gate {
    if let Some(approved) = decision {
        return Gate::Decided { approved };
    }
    match (expired, expires_at) {
        (Some(outcome), at) => Gate::Expired {
            at: at.unwrap_or(now),
            outcome,
            journaled: true,
        },
        (None, Some(at)) if now >= at => Gate::Expired {
            at,
            outcome: on_timeout,
            journaled: false,
        },
        _ => Gate::Open,
    }
}

/// Whether a verdict given at `now` comes too late for a gate expiring at `expires_at`.
pub fn too_late(expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    expires_at.is_some_and(|t| now >= t)
}

/// The person behind a journaled `by`: `--yes` approvals are journaled as `NAME (--yes)`.
pub fn identity(by: &str) -> &str {
    by.strip_suffix(" (--yes)").unwrap_or(by)
}

/// A gate as the journal has it, for judging one person's verdict on it.
#[derive(Clone, Copy, Debug)]
pub struct GateFacts<'a> {
    /// The run's starter may not approve.
    pub four_eyes: bool,
    /// Distinct people who must approve.
    pub approvals: u32,
    /// Who may decide; empty means anyone.
    pub approvers: &'a [String],
    /// Who approved so far (as journaled).
    pub approved_by: &'a [&'a str],
    /// A verdict that decided it, if any.
    pub decided: Option<bool>,
    /// Whether its expiry is journaled.
    pub expired: bool,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who started the run.
    pub starter: &'a str,
}

/// What a person's verdict does to a gate that accepts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// It decides the gate (a rejection, or the last approval it needed).
    Decides,
    /// It is approval `have` of the `need` the gate waits for.
    Counts { have: u32, need: u32 },
}

/// Why a person's verdict on a gate is refused (and nothing is journaled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The gate was decided already.
    Decided { approved: bool },
    /// The gate expired (its expiry journaled, or its time passed and it is about to be).
    Expired { at: Option<DateTime<Utc>> },
    /// The gate names its approvers, and this person is not one of them.
    NotAnApprover,
    /// A four-eyes gate, and this person started the run.
    Starter,
    /// This person approved already; `have` of `need` approvals are in.
    Twice { have: u32, need: u32 },
}

/// Whether `who`'s verdict (`approved` or not) on a gate is accepted at `now`, and what it
/// does. Rejections are subject to the same list of approvers (a person who may not approve
/// may not veto either) but not to four eyes (a starter may always stop their own run).
pub fn verdict(
    g: &GateFacts<'_>,
    who: &str,
    approved: bool,
    now: DateTime<Utc>,
) -> Result<Counted, Refusal> {
    if let Some(approved) = g.decided {
        return Err(Refusal::Decided { approved });
    }
    if g.expired || too_late(g.expires_at, now) {
        return Err(Refusal::Expired { at: g.expires_at });
    }
    let who = identity(who);
    if !g.approvers.is_empty() && !g.approvers.iter().any(|a| a == who) {
        return Err(Refusal::NotAnApprover);
    }
    if !approved {
        return Ok(Counted::Decides);
    }
    if g.four_eyes && who == identity(g.starter) {
        return Err(Refusal::Starter);
    }
    let have = u32::try_from(g.approved_by.len()).unwrap_or(u32::MAX);
    let need = g.approvals.max(1);
    if g.approved_by.iter().any(|b| identity(b) == who) {
        return Err(Refusal::Twice { have, need });
    }
    if have + 1 >= need {
        Ok(Counted::Decides)
    } else {
        Ok(Counted::Counts {
            have: have + 1,
            need,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("a valid time")
    }

    const fn facts(class: Class, idempotent: bool, has_check: bool, retry: bool) -> Facts {
        Facts {
            class,
            idempotent,
            has_check,
            operator_retry: retry,
        }
    }

    const fn begin(attempt: u32) -> Next {
        Next::Begin {
            attempt,
            after: None,
        }
    }

    #[test]
    fn every_in_flight_case_of_the_journal_section() {
        use Class::{Control, Effect, Read};
        let now = t(0);
        let flying = Record::InFlight { attempt: 2 };
        // (facts: class, idempotent, has check, operator said retry) → decision
        for (f, want) in [
            // An effect not known to be safe stops for an operator…
            (
                facts(Effect, false, false, false),
                Next::Attention(Attention::InFlight),
            ),
            // …unless it is idempotent (run again), has a check (it decides), or an operator
            // said --retry-step (run again, even with a check: the operator decided).
            (facts(Effect, true, false, false), begin(3)),
            (
                facts(Effect, false, true, false),
                Next::AskCheck { attempt: 3 },
            ),
            (facts(Effect, true, true, false), begin(3)),
            (facts(Effect, false, false, true), begin(3)),
            (facts(Effect, false, true, true), begin(3)),
            // Waits and scripts only read: run again.
            (facts(Read, false, false, false), begin(3)),
            (facts(Read, false, true, false), begin(3)),
            // Gates, sleeps, loops and calls continue where they stand (same attempt).
            (facts(Control, false, false, false), begin(2)),
            (facts(Control, true, true, true), begin(2)),
            // …unless they have a check: present skips the rest, absent continues (attempt 2).
            (
                facts(Control, false, true, false),
                Next::AskCheck { attempt: 2 },
            ),
        ] {
            assert_eq!(next(flying, f, now), want, "{f:?}");
        }
    }

    #[test]
    fn recorded_outcomes_replay_and_pending_retries_wait_for_their_time() {
        let f = facts(Class::Effect, false, false, false);
        for (record, want) in [
            (Record::None, Next::Fresh),
            (
                Record::Succeeded {
                    attempts: 1,
                    masked: false,
                },
                Next::Replay,
            ),
            (Record::Skipped, Next::Replay),
            (Record::Failed, Next::Replay),
            (
                Record::RetryPending {
                    attempt: 1,
                    retry_at: t(30),
                },
                Next::Begin {
                    attempt: 2,
                    after: Some(t(30)),
                },
            ),
            // A retry whose time passed while the run was down runs at once.
            (
                Record::RetryPending {
                    attempt: 1,
                    retry_at: t(-5),
                },
                begin(2),
            ),
            (
                Record::RetryPending {
                    attempt: 3,
                    retry_at: t(0),
                },
                begin(4),
            ),
        ] {
            assert_eq!(next(record, f, t(0)), want, "{record:?}");
        }
    }

    #[test]
    fn a_secret_output_is_taken_again_only_when_that_is_safe() {
        let masked = Record::Succeeded {
            attempts: 2,
            masked: true,
        };
        for (f, want) in [
            (
                facts(Class::Effect, false, false, false),
                Next::Attention(Attention::SecretOutput),
            ),
            // A check cannot give the output back: it does not make re-running safe.
            (
                facts(Class::Effect, false, true, false),
                Next::Attention(Attention::SecretOutput),
            ),
            (facts(Class::Effect, true, false, false), begin(3)),
            (facts(Class::Effect, false, false, true), begin(3)),
        ] {
            assert_eq!(next(masked, f, t(0)), want, "{f:?}");
        }
    }

    #[test]
    fn after_a_journal_loss_only_effects_not_known_safe_stop() {
        use Class::{Control, Effect, Read};
        for (f, want) in [
            (
                facts(Effect, false, false, false),
                Some(Attention::InFlight),
            ),
            (facts(Effect, true, false, false), None),
            (facts(Effect, false, true, false), None),
            (facts(Effect, false, false, true), None),
            (facts(Read, false, false, false), None),
            (facts(Control, false, false, false), None),
        ] {
            assert_eq!(after_loss(f), want, "{f:?}");
        }
    }

    #[test]
    fn failed_attempts_retry_with_backoff_until_the_attempts_run_out() {
        let retry = Retry {
            attempts: 3,
            backoff: Duration::from_secs(2),
            factor: 2.0,
            max_backoff: Duration::from_secs(3),
        };
        let now = t(100);
        for (retry, attempt, retryable, tolerate, want) in [
            (
                None,
                1,
                true,
                false,
                AfterFailure::Fail { tolerated: false },
            ),
            (None, 1, true, true, AfterFailure::Fail { tolerated: true }),
            (
                Some(&retry),
                1,
                true,
                false,
                AfterFailure::Retry {
                    attempt: 2,
                    at: t(102),
                },
            ),
            // The second wait doubles, capped by max_backoff.
            (
                Some(&retry),
                2,
                true,
                false,
                AfterFailure::Retry {
                    attempt: 3,
                    at: t(103),
                },
            ),
            (
                Some(&retry),
                3,
                true,
                false,
                AfterFailure::Fail { tolerated: false },
            ),
            (
                Some(&retry),
                3,
                true,
                true,
                AfterFailure::Fail { tolerated: true },
            ),
            // A failure that cannot pass (a rendering error, say) is not retried.
            (
                Some(&retry),
                1,
                false,
                false,
                AfterFailure::Fail { tolerated: false },
            ),
        ] {
            assert_eq!(
                after_failure(retry, attempt, retryable, tolerate, now),
                want,
                "attempt {attempt}, retryable {retryable}"
            );
        }
    }

    #[test]
    fn timers_are_due_at_their_journaled_time_never_later() {
        assert_eq!(remaining(t(10), t(0)), Duration::from_secs(10));
        assert_eq!(remaining(t(10), t(10)), Duration::ZERO);
        assert_eq!(remaining(t(10), t(500)), Duration::ZERO);
        assert_eq!(after(t(0), Duration::from_secs(7)), t(7));
        assert_eq!(after(t(0), Duration::MAX), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn gates_are_decided_expired_or_open() {
        use GateTimeout::{Approve, Fail, Reject};
        // (decision, journaled expiry, expires at, on_timeout, now) → where it stands
        for (decision, expired, expires, on_timeout, now, want) in [
            (
                Some(true),
                None,
                None,
                Fail,
                t(0),
                Gate::Decided { approved: true },
            ),
            (
                Some(false),
                None,
                None,
                Fail,
                t(0),
                Gate::Decided { approved: false },
            ),
            // A verdict journaled before the expiry wins even when the run resumes later.
            (
                Some(true),
                None,
                Some(t(5)),
                Fail,
                t(9),
                Gate::Decided { approved: true },
            ),
            // Expiry: at the journaled time exactly, meaning what on_timeout says.
            (
                None,
                None,
                Some(t(5)),
                Fail,
                t(5),
                Gate::Expired {
                    at: t(5),
                    outcome: Fail,
                    journaled: false,
                },
            ),
            (
                None,
                None,
                Some(t(5)),
                Approve,
                t(50),
                Gate::Expired {
                    at: t(5),
                    outcome: Approve,
                    journaled: false,
                },
            ),
            // A journaled expiry replays what it meant then, even if on_timeout differs now.
            (
                None,
                Some(Reject),
                Some(t(5)),
                Approve,
                t(50),
                Gate::Expired {
                    at: t(5),
                    outcome: Reject,
                    journaled: true,
                },
            ),
            (None, None, Some(t(5)), Reject, t(4), Gate::Open),
            (None, None, None, Fail, t(4000), Gate::Open),
        ] {
            assert_eq!(gate(decision, expired, expires, on_timeout, now), want);
        }
        assert!(too_late(Some(t(5)), t(5)));
        assert!(!too_late(Some(t(5)), t(4)));
        assert!(!too_late(None, t(4)));
    }

    #[test]
    fn a_persons_verdict_counts_once_and_only_while_the_gate_is_open() {
        let listed = ["alice".to_owned(), "bob".to_owned(), "carol".to_owned()];
        let open = GateFacts {
            four_eyes: false,
            approvals: 2,
            approvers: &[],
            approved_by: &[],
            decided: None,
            expired: false,
            expires_at: Some(t(10)),
            starter: "dave",
        };
        let alice_in = GateFacts {
            approved_by: &["alice"],
            ..open
        };
        let alice_yes_in = GateFacts {
            approved_by: &["alice (--yes)"],
            ..open
        };
        let listed_gate = GateFacts {
            approvers: &listed,
            ..open
        };
        let four = GateFacts {
            four_eyes: true,
            approvals: 1,
            ..open
        };
        // (gate, who, approved, now) → accepted and what it does, or why not
        for (g, who, approved, now, want) in [
            // The first of two approvals counts; the second distinct one decides.
            (
                open,
                "alice",
                true,
                t(0),
                Ok(Counted::Counts { have: 1, need: 2 }),
            ),
            (alice_in, "bob", true, t(0), Ok(Counted::Decides)),
            // The same person twice counts once, whatever way they approved.
            (
                alice_in,
                "alice",
                true,
                t(0),
                Err(Refusal::Twice { have: 1, need: 2 }),
            ),
            (
                alice_yes_in,
                "alice",
                true,
                t(0),
                Err(Refusal::Twice { have: 1, need: 2 }),
            ),
            // A rejection decides at once, even after approvals.
            (alice_in, "bob", false, t(0), Ok(Counted::Decides)),
            (alice_in, "alice", false, t(0), Ok(Counted::Decides)),
            // Only listed approvers decide, either way.
            (
                listed_gate,
                "mallory",
                true,
                t(0),
                Err(Refusal::NotAnApprover),
            ),
            (
                listed_gate,
                "mallory",
                false,
                t(0),
                Err(Refusal::NotAnApprover),
            ),
            (
                listed_gate,
                "carol",
                true,
                t(0),
                Ok(Counted::Counts { have: 1, need: 2 }),
            ),
            // Four eyes: the starter may not approve, but may reject.
            (four, "dave", true, t(0), Err(Refusal::Starter)),
            (four, "dave (--yes)", true, t(0), Err(Refusal::Starter)),
            (four, "dave", false, t(0), Ok(Counted::Decides)),
            (four, "erin", true, t(0), Ok(Counted::Decides)),
            // Too late: at the expiry or after, even before the expiry is journaled.
            (
                open,
                "alice",
                true,
                t(10),
                Err(Refusal::Expired { at: Some(t(10)) }),
            ),
            (
                open,
                "alice",
                false,
                t(11),
                Err(Refusal::Expired { at: Some(t(10)) }),
            ),
            (
                GateFacts {
                    expired: true,
                    ..open
                },
                "alice",
                true,
                t(0),
                Err(Refusal::Expired { at: Some(t(10)) }),
            ),
            // Decided already: refused, either way.
            (
                GateFacts {
                    decided: Some(true),
                    ..open
                },
                "bob",
                true,
                t(0),
                Err(Refusal::Decided { approved: true }),
            ),
            (
                GateFacts {
                    decided: Some(false),
                    ..open
                },
                "bob",
                true,
                t(20),
                Err(Refusal::Decided { approved: false }),
            ),
        ] {
            assert_eq!(
                verdict(&g, who, approved, now),
                want,
                "{who} {approved} {g:?}"
            );
        }
        assert_eq!(identity("alice (--yes)"), "alice");
        assert_eq!(identity("alice"), "alice");
    }
}
