//! Children die with their executor: no step ever runs beside a process of its own earlier
//! attempt.
//!
//! A step's command runs in a process group of its own (so Ctrl-C reaches only runbook, and a
//! stop reaches everything the command started). Without more, a group outlives an executor
//! that dies without cleaning up — SIGKILL, the OOM killer, a panic in the wrong place — and a
//! later `resume --retry-step` would run the step again beside it. Two mechanisms prevent it:
//!
//! 1. **The watchdog** ([`watchdog_main`]). Each executor starts one small process with its first
//!    step process (or ahead of it, [`prestart`]) and tells it about every group as it starts and as its leader is reaped.
//!    The watchdog holds the read end of a pipe whose write end only the executor holds, so it
//!    sees end of file the instant the executor is gone, however it went. It then stops every
//!    group still in flight the way the engine stops a step: SIGTERM to every process of it,
//!    the step's `grace`, SIGKILL to what is left. Then it exits; an executor that ends
//!    normally has nothing in flight, and its watchdog exits at once.
//! 2. **Resume and abort** ([`stop_orphans`]). Every step process carries its attempt's
//!    identity in its environment ([`Attempt`]: `RUNBOOK_RUN_ID`, `RUNBOOK_STEP_PATH`,
//!    `RUNBOOK_STEP_ATTEMPT`), and its descendants inherit it. The journal has the same three
//!    in the step's intent, durable before the process started. Before a resumed (or aborted)
//!    run decides anything about a step in flight, the runner stops every process whose
//!    attempt the journal knows no end of, and the group each such process leads, and waits
//!    for them to be gone. This covers the watchdog's grace not being over yet, a watchdog
//!    killed along with its executor (`pkill -9 runbook`), and one that could not start.
//!
//! Both look processes up by their start time as well as their pid (from `/proc/PID/stat`), so
//! a reused pid is never signalled. A step whose command ended is no longer in flight: what it
//! left running on purpose (`daemon &`) is left alone by both.
//!
//! What neither reaches: a process that leaves the group (`setsid`) *and* clears its
//! environment; processes of another user (`sudo`), which runbook could not signal anyway.
//!
//! Not used: `PR_SET_PDEATHSIG` on the direct child. It would need `pre_exec` (unsafe code,
//! which this workspace forbids) or an extra exec per step; it reaches only the direct child,
//! not the grandchildren the watchdog stops anyway; it fires when the *thread* that spawned
//! the child exits, which a runtime's thread pool does when it likes; and it is cleared when a
//! set-user-id program is executed.

mod attempt;
mod procfs;
mod stop;
mod tracker;
mod watchdog;

use std::time::Duration;

pub use attempt::{ATTEMPT_VAR, Attempt, RUN_ID_VAR, STEP_PATH_VAR};
pub use stop::Stopped;
pub use tracker::{install, prestart};
pub(crate) use tracker::{mark, track};
pub use watchdog::{WATCHDOG_ARG, main as watchdog_main};

pub(crate) use procfs::parse_stat;

/// Stops every process whose attempt `orphan` names (giving it the grace `orphan` returns),
/// with the groups such processes lead; blocks until they are gone (at most the longest grace
/// plus a few seconds). What was stopped, per attempt. This process is never stopped.
pub fn stop_orphans(orphan: &dyn Fn(&Attempt) -> Option<Duration>) -> Vec<Stopped> {
    stop::stop(&stop::Targets {
        groups: &[],
        orphan,
    })
}

#[cfg(test)]
mod tests;
