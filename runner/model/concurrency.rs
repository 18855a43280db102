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
//!
//! Each setting may be a template (`batch: "{{params.batch}}"`), rendered when the loop starts
//! and read by the same rules as a value written in the YAML ([`Concurrency::set`]).

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

/// One of a loop's overlap settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// `parallel`
    Parallel,
    /// `batch`
    Batch,
    /// `max_failures`
    MaxFailures,
    /// `max_unavailable`
    MaxUnavailable,
}

impl Setting {
    /// Its key in the YAML.
    pub fn key(self) -> &'static str {
        match self {
            Self::Parallel => "parallel",
            Self::Batch => "batch",
            Self::MaxFailures => "max_failures",
            Self::MaxUnavailable => "max_unavailable",
        }
    }

    /// The least count it takes.
    pub fn min(self) -> u64 {
        match self {
            Self::MaxFailures => 0,
            _ => 1,
        }
    }

    /// Whether it takes a percentage of the items too.
    pub fn takes_percent(self) -> bool {
        matches!(self, Self::Batch | Self::MaxFailures)
    }
}

/// Reads `text` as `setting`'s value: a whole number of at least its minimum or, where the
/// setting takes one, a percentage from 1% to 100%. The error says what was wrong, naming the
/// setting.
pub fn parse_setting(setting: Setting, text: &str) -> Result<Amount, String> {
    let key = setting.key();
    let min = setting.min();
    let text = text.trim();
    if setting.takes_percent()
        && let Some(pct) = text.strip_suffix('%')
    {
        return match pct.trim().parse::<u32>() {
            Ok(p) if (1..=100).contains(&p) => Ok(Amount::Percent(p)),
            _ => Err(format!(
                "`{key}`: a percentage goes from 1% to 100%, not {text:?}"
            )),
        };
    }
    let what = if setting.takes_percent() {
        format!(
            "`{key}` is a whole number (at least {min}) or a percentage such as \"25%\", not {text:?}"
        )
    } else {
        format!("`{key}` is a whole number (at least {min}), not {text:?}")
    };
    match text.parse::<u64>() {
        Ok(n) if n < min => Err(format!("`{key}` must be at least {min}, not {n}")),
        Ok(n) => u32::try_from(n).map(Amount::Count).map_err(|_| what),
        Err(_) => Err(what),
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

    /// Sets `setting` from its text (a rendered template), by the rules of [`parse_setting`].
    pub fn set(&mut self, setting: Setting, text: &str) -> Result<(), String> {
        let amount = parse_setting(setting, text)?;
        let count = match amount {
            Amount::Count(n) => Some(n),
            Amount::Percent(_) => None,
        };
        match setting {
            Setting::Parallel => self.parallel = count,
            Setting::Batch => self.batch = Some(amount),
            Setting::MaxFailures => self.max_failures = Some(amount),
            Setting::MaxUnavailable => self.max_unavailable = count,
        }
        Ok(())
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

    #[test]
    fn a_setting_reads_like_the_yaml_value() {
        use Setting::{Batch, MaxFailures, MaxUnavailable, Parallel};
        let table: [(Setting, &str, Result<Amount, &str>); 12] = [
            (Parallel, "3", Ok(Amount::Count(3))),
            (Parallel, " 3 ", Ok(Amount::Count(3))),
            (Parallel, "0", Err("`parallel` must be at least 1, not 0")),
            (
                Parallel,
                "50%",
                Err("`parallel` is a whole number (at least 1)"),
            ),
            (
                MaxUnavailable,
                "x",
                Err("`max_unavailable` is a whole number"),
            ),
            (Batch, "25%", Ok(Amount::Percent(25))),
            (Batch, "0%", Err("a percentage goes from 1% to 100%")),
            (Batch, "101%", Err("a percentage goes from 1% to 100%")),
            (
                Batch,
                "",
                Err("`batch` is a whole number (at least 1) or a percentage"),
            ),
            (MaxFailures, "0", Ok(Amount::Count(0))),
            (
                MaxFailures,
                "-1",
                Err("`max_failures` is a whole number (at least 0)"),
            ),
            (
                MaxFailures,
                "99999999999",
                Err("`max_failures` is a whole number"),
            ),
        ];
        for (setting, text, want) in table {
            match (parse_setting(setting, text), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{setting:?} {text:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{setting:?} {text:?}: {got}"),
                (got, want) => panic!("{setting:?} {text:?}: {got:?}, want {want:?}"),
            }
        }
        let mut c = Concurrency::default();
        c.set(Parallel, "2").unwrap();
        c.set(MaxFailures, "10%").unwrap();
        assert_eq!(c.parallel, Some(2));
        assert_eq!(c.max_failures, Some(Amount::Percent(10)));
        assert!(c.overlaps());
    }

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
