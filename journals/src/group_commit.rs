//! When the journal's writer makes a batch durable: at once, or after a short wait for more
//! commits to share the sync (PostgreSQL's `commit_delay` with `commit_siblings`).
//!
//! The contract:
//!
//! - A writer alone, or one of fewer than [`Policy::siblings`] runs committing at the same time,
//!   is never delayed: its batch is synced as soon as it is drained. One run's latency is what
//!   it was without the policy.
//! - With at least `siblings` runs actively committing (each committed within
//!   [`Policy::window`] and its last commit did not park or end it), a batch waits for more
//!   commits until it holds every active run, or [`Policy::full`] runs, or it has been open
//!   [`Policy::max_delay`] — whichever comes first. No commit waits longer than `max_delay`
//!   for its sync to start.
//! - The decision is a pure function of ([`Load`], [`Policy`]): [`decide`]. The writer only
//!   counts and waits.
//!
//! Every sync saved is a flush and an `fdatasync` the processor does not
//! pay: on a machine whose cores are the limit (many runs of short shell steps), fewer syncs
//! is more commits per second; a commit waiting a few milliseconds costs nothing there, since
//! the other runs use the cores meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::RunId;

/// The knobs of the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// At least this many runs must be actively committing before any batch waits.
    pub siblings: usize,
    /// A batch holding commits of this many runs is synced at once: the sync is shared widely
    /// enough, waiting for more would only add latency.
    pub full: usize,
    /// The longest a batch stays open waiting for more commits.
    pub max_delay: Duration,
    /// A run counts as actively committing this long after its last commit.
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            siblings: 4,
            full: 16,
            // A few shell steps' processor time: 64 busy runs of shell steps on 2 cores then
            // share a sync among 11–16 commits (0.06–0.09 syncs per commit in bench/run). Short
            // against a step a person waits for, and only paid while several runs commit.
            max_delay: Duration::from_millis(10),
            window: Duration::from_millis(50),
        }
    }
}

/// What the writer knows when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Runs actively committing (see [`Active`]), those in the batch included.
    pub active: usize,
    /// Distinct runs with a commit in the open batch (a write of no run, such as a meta value,
    /// counts as one).
    pub batch_runs: usize,
    /// How long the batch has been open (since its first request arrived).
    pub open_for: Duration,
}

/// What the writer does with the open batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Make it durable now.
    SyncNow,
    /// Wait at most this long for more commits, then decide again.
    Wait(Duration),
}

/// The decision for an open batch.
pub fn decide(load: Load, policy: &Policy) -> Decision {
    if load.active < policy.siblings || load.batch_runs >= load.active.min(policy.full) {
        return Decision::SyncNow;
    }
    match policy.max_delay.checked_sub(load.open_for) {
        Some(left) if !left.is_zero() => Decision::Wait(left),
        _ => Decision::SyncNow,
    }
}

/// The runs actively committing: each run's last commit, forgotten once it is older than the
/// window or once that commit parked or ended the run.
#[derive(Debug, Default)]
pub struct Active {
    last: HashMap<RunId, Instant>,
}

impl Active {
    /// Run `run` committed at `now`.
    pub fn committed(&mut self, run: RunId, now: Instant) {
        self.last.insert(run, now);
    }

    /// Run `run` parked or ended: it commits nothing more for now.
    pub fn settled(&mut self, run: RunId) {
        self.last.remove(&run);
    }

    /// How many runs committed within `window` of `now`; older ones are forgotten.
    pub fn count(&mut self, now: Instant, window: Duration) -> usize {
        self.last
            .retain(|_, at| now.saturating_duration_since(*at) <= window);
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn load(active: usize, batch_runs: usize, open_ms: u64) -> Load {
        Load {
            active,
            batch_runs,
            open_for: MS * u32::try_from(open_ms).unwrap(),
        }
    }

    #[test]
    fn the_decision_table() {
        let p = Policy {
            siblings: 4,
            full: 16,
            max_delay: 4 * MS,
            window: 50 * MS,
        };
        let table = [
            // (active, in batch, open ms) → decision, why
            ((1, 1, 0), Decision::SyncNow, "a run alone is never delayed"),
            ((3, 1, 0), Decision::SyncNow, "fewer runs than siblings"),
            ((4, 1, 0), Decision::Wait(4 * MS), "enough siblings: wait"),
            (
                (4, 2, 1),
                Decision::Wait(3 * MS),
                "bounded from the opening",
            ),
            ((4, 4, 0), Decision::SyncNow, "every active run is in"),
            ((64, 15, 2), Decision::Wait(2 * MS), "not full yet"),
            ((64, 16, 0), Decision::SyncNow, "full: shared widely enough"),
            ((64, 3, 4), Decision::SyncNow, "open for max_delay"),
            ((64, 3, 9), Decision::SyncNow, "open past max_delay"),
            ((0, 1, 0), Decision::SyncNow, "no active count yet"),
        ];
        for ((active, batch_runs, open_ms), want, why) in table {
            assert_eq!(
                decide(load(active, batch_runs, open_ms), &p),
                want,
                "{why}: active {active}, batch {batch_runs}, open {open_ms} ms"
            );
        }
    }

    #[test]
    fn no_delay_configured_never_waits() {
        let p = Policy {
            max_delay: Duration::ZERO,
            ..Policy::default()
        };
        assert_eq!(decide(load(64, 1, 0), &p), Decision::SyncNow);
    }

    #[test]
    fn active_runs_age_out_and_settled_runs_leave_at_once() {
        let mut active = Active::default();
        let t0 = Instant::now();
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        active.committed(a, t0);
        active.committed(b, t0 + 10 * MS);
        active.committed(c, t0 + 20 * MS);
        assert_eq!(active.count(t0 + 20 * MS, 50 * MS), 3);
        active.settled(b);
        assert_eq!(active.count(t0 + 20 * MS, 50 * MS), 2);
        // a is 51 ms old, c 31 ms.
        assert_eq!(active.count(t0 + 51 * MS, 50 * MS), 1);
        // A commit brings a run back; c, 51 ms old, is gone.
        active.committed(a, t0 + 60 * MS);
        assert_eq!(active.count(t0 + 71 * MS, 50 * MS), 1);
        assert_eq!(active.count(t0 + 200 * MS, 50 * MS), 0);
    }
}
