//! How a loop's iterations may overlap: `parallel`, `batch`, `max_failures`, `max_unavailable`,
//! and the pure decision of what a parallel loop does next.
//!
//! The rules (README, "Parallel loops"):
//! - `parallel: N` — at most N iterations run at once; a finished one makes room for the next.
//! - `batch: N | "P%"` — iterations go in waves of that size; a wave starts only when every
//!   iteration of the previous one has finished. Within a wave all run at once unless `parallel`
//!   is smaller. A percentage is of the item count, rounded down, at least 1.
//! - `max_failures: N | "P%"` — failed iterations the loop tolerates (default 0). Once more
//!   have failed, no new iteration starts; those running finish; the loop fails. A percentage
//!   is of the item count, rounded down. Tolerated failures leave `null` in the loop's output.
//! - `max_unavailable: N` — iterations running plus iterations that failed never exceed N (a
//!   failed member stays unavailable). When failures alone reach N nothing can start and the
//!   loop fails.
//!
//! Iterations always start in item order, so a resume finds the started ones as a prefix.

/// A count, or a percentage of the items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// This many.
    Count(u32),
    /// This percentage of the item count.
    Percent(u32),
}

impl Amount {
    /// The count over `total` items, rounded down.
    pub fn of(self, total: usize) -> usize {
        match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => total * p as usize / 100,
        }
    }
}

/// A loop's overlap settings as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Concurrency {
    /// At most this many at once.
    pub parallel: Option<u32>,
    /// Waves of this size.
    pub batch: Option<Amount>,
    /// Failed iterations tolerated.
    pub max_failures: Option<Amount>,
    /// Running plus failed iterations at most.
    pub max_unavailable: Option<u32>,
}

/// The settings resolved against an item count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many at once (≥ 1).
    pub window: usize,
    /// Wave size, if waves.
    pub wave: Option<usize>,
    /// Failures tolerated.
    pub max_failures: usize,
    /// Running plus failed at most.
    pub max_unavailable: usize,
}

impl Concurrency {
    /// Whether iterations may overlap at all (otherwise the loop runs them one by one).
    pub fn overlaps(&self) -> bool {
        self.parallel.is_some() || self.batch.is_some() || self.max_unavailable.is_some()
    }

    /// The limits over `total` items.
    pub fn limits(&self, total: usize) -> Limits {
        let wave = self.batch.map(|b| b.of(total).max(1));
        let window = match (self.parallel, wave) {
            (Some(p), Some(w)) => (p as usize).min(w),
            (Some(p), None) => p as usize,
            (None, Some(w)) => w,
            (None, None) => 1,
        }
        .max(1);
        Limits {
            window,
            wave,
            max_failures: self.max_failures.map_or(0, |m| m.of(total)),
            max_unavailable: self
                .max_unavailable
                .map_or(usize::MAX, |u| (u as usize).max(1)),
        }
    }
}

/// Where a parallel loop stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Items in the loop.
    pub total: usize,
    /// Iterations started (they start in order: the next one to start has this index).
    pub started: usize,
    /// Iterations running now.
    pub running: usize,
    /// Iterations that finished (succeeded or failed).
    pub finished: usize,
    /// Iterations that failed.
    pub failed: usize,
    /// An iteration stopped for something else than a failure (an interruption, a gate, an
    /// operator): nothing new starts.
    pub halted: bool,
}

/// What a parallel loop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// Start the iteration with this index.
    Start(usize),
    /// Wait for a running iteration to finish.
    Wait,
    /// Nothing runs and nothing more may start: the loop ends.
    End(End),
}

/// How a loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every iteration finished and failures stayed within `max_failures`.
    Done,
    /// More iterations failed than `max_failures` allows.
    TooManyFailures,
    /// Failed iterations alone fill `max_unavailable`: nothing more can start.
    Unavailable,
    /// An iteration stopped the loop (interruption, gate, operator).
    Halted,
}

/// The next move of a parallel loop.
pub fn next_move(limits: &Limits, p: &Progress) -> Move {
    let idle = p.running == 0;
    let end = |why| if idle { Move::End(why) } else { Move::Wait };
    if p.halted {
        return end(End::Halted);
    }
    if p.failed > limits.max_failures {
        return end(End::TooManyFailures);
    }
    if p.started >= p.total {
        return end(End::Done);
    }
    if p.failed >= limits.max_unavailable {
        return end(End::Unavailable);
    }
    if let Some(wave) = limits.wave
        && p.started % wave == 0
        && p.finished < p.started
    {
        return Move::Wait;
    }
    if p.running >= limits.window || p.running + p.failed >= limits.max_unavailable {
        return Move::Wait;
    }
    Move::Start(p.started)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(c: Concurrency, total: usize) -> Limits {
        c.limits(total)
    }

    #[test]
    fn limits_resolve_counts_and_percentages() {
        let c = |parallel, batch, max_failures, max_unavailable| Concurrency {
            parallel,
            batch,
            max_failures,
            max_unavailable,
        };
        let table = [
            // parallel alone: a window, no waves, no failure tolerated
            (c(Some(3), None, None, None), 8, (3, None, 0, usize::MAX)),
            // batch alone: waves, the whole wave at once
            (
                c(None, Some(Amount::Count(2)), None, None),
                8,
                (2, Some(2), 0, usize::MAX),
            ),
            // 25% of 8 = 2; 10% of 8 rounds down to 0
            (
                c(
                    None,
                    Some(Amount::Percent(25)),
                    Some(Amount::Percent(10)),
                    None,
                ),
                8,
                (2, Some(2), 0, usize::MAX),
            ),
            // a percentage never makes an empty wave
            (
                c(None, Some(Amount::Percent(10)), None, None),
                3,
                (1, Some(1), 0, usize::MAX),
            ),
            // parallel smaller than the wave limits each wave
            (
                c(Some(2), Some(Amount::Count(4)), None, None),
                8,
                (2, Some(4), 0, usize::MAX),
            ),
            (
                c(Some(3), None, Some(Amount::Count(1)), Some(2)),
                8,
                (3, None, 1, 2),
            ),
        ];
        for (given, total, (window, wave, max_failures, max_unavailable)) in table {
            assert_eq!(
                given.limits(total),
                Limits {
                    window,
                    wave,
                    max_failures,
                    max_unavailable
                },
                "{given:?} over {total}"
            );
        }
    }

    #[test]
    fn the_next_move_follows_window_waves_and_thresholds() {
        let window3 = limits(
            Concurrency {
                parallel: Some(3),
                ..Concurrency::default()
            },
            8,
        );
        let waves2 = limits(
            Concurrency {
                batch: Some(Amount::Count(2)),
                max_failures: Some(Amount::Count(1)),
                ..Concurrency::default()
            },
            8,
        );
        let unavailable2 = limits(
            Concurrency {
                parallel: Some(3),
                max_failures: Some(Amount::Count(5)),
                max_unavailable: Some(2),
                ..Concurrency::default()
            },
            8,
        );
        let at = |started, running, finished, failed| Progress {
            total: 8,
            started,
            running,
            finished,
            failed,
            halted: false,
        };
        let table = [
            // the window fills, then waits, then refills as one finishes
            (window3, at(0, 0, 0, 0), Move::Start(0)),
            (window3, at(2, 2, 0, 0), Move::Start(2)),
            (window3, at(3, 3, 0, 0), Move::Wait),
            (window3, at(3, 2, 1, 0), Move::Start(3)),
            // one failure is too many by default: nothing new, wait for the rest, then end
            (window3, at(4, 2, 2, 1), Move::Wait),
            (window3, at(4, 0, 4, 1), Move::End(End::TooManyFailures)),
            (window3, at(8, 1, 7, 0), Move::Wait),
            (window3, at(8, 0, 8, 0), Move::End(End::Done)),
            // waves: the second starts only when the first has finished whole
            (waves2, at(1, 1, 0, 0), Move::Start(1)),
            (waves2, at(2, 1, 1, 0), Move::Wait),
            (waves2, at(2, 0, 2, 0), Move::Start(2)),
            // one failure is tolerated, the next wave starts
            (waves2, at(2, 0, 2, 1), Move::Start(2)),
            // two failures in a wave: later waves never start
            (waves2, at(4, 0, 4, 2), Move::End(End::TooManyFailures)),
            (waves2, at(8, 0, 8, 1), Move::End(End::Done)),
            // max_unavailable counts failed members as unavailable
            (unavailable2, at(2, 2, 0, 0), Move::Wait),
            (unavailable2, at(3, 1, 2, 1), Move::Wait),
            (unavailable2, at(3, 0, 3, 1), Move::Start(3)),
            (unavailable2, at(3, 0, 3, 2), Move::End(End::Unavailable)),
            (unavailable2, at(3, 1, 2, 2), Move::Wait),
        ];
        for (limits, progress, expected) in table {
            assert_eq!(
                next_move(&limits, &progress),
                expected,
                "{limits:?} at {progress:?}"
            );
        }
    }

    #[test]
    fn a_halt_starts_nothing_and_ends_when_idle() {
        let l = limits(
            Concurrency {
                parallel: Some(4),
                ..Concurrency::default()
            },
            8,
        );
        let mut p = Progress {
            total: 8,
            started: 2,
            running: 1,
            finished: 1,
            failed: 0,
            halted: true,
        };
        assert_eq!(next_move(&l, &p), Move::Wait);
        p.running = 0;
        assert_eq!(next_move(&l, &p), Move::End(End::Halted));
    }
}
