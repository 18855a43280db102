//! What the sled journal keeps in memory of each run's summary: a live run's whole summary, an
//! archived run's state, runbook and the place of its line in the archive's index.
//!
//! A journal that a `serve` keeps open for a year of five-minute rotations holds 100,000
//! archived runs; their whole summaries took ~0.7 KB each in memory (70 MB), their places take
//! 16 bytes and the map's own (the runbook is a number; its name is held once). A listing reads back only
//! the summaries it may return: those whose state and runbook its filter lets through.

use std::collections::HashMap;

use crate::archive::Place;
use crate::{Brief, RunState, RunSummary};

/// A run's summary, or why it cannot be read: a summary that fails its checksum stays listed so
/// that the run can still be named, and every access to it reports the corruption.
pub(crate) type CachedSummary = Result<RunSummary, String>;

/// One run's summary as held.
#[derive(Debug)]
pub(crate) enum Held {
    /// The whole summary (or why it cannot be read): a live run's, or an archived run's whose
    /// index line does not read.
    Whole(Box<CachedSummary>),
    /// An archived run: its summary is read back from its place in the index when asked for.
    Indexed(Indexed),
}

impl Held {
    pub(crate) fn whole(summary: CachedSummary) -> Self {
        Self::Whole(Box::new(summary))
    }

    /// The whole summary, if it is held.
    pub(crate) fn as_whole(&self) -> Option<&CachedSummary> {
        match self {
            Self::Whole(summary) => Some(summary),
            Self::Indexed(_) => None,
        }
    }

    /// The run's state, if its summary can be read.
    pub(crate) fn state(&self) -> Option<RunState> {
        match self {
            Self::Whole(summary) => summary.as_ref().as_ref().ok().map(|s| s.state),
            Self::Indexed(run) => Some(run.state),
        }
    }
}

/// An archived run as held, in 16 bytes: where its summary's line is in the index, its state,
/// and its runbook's number in the journal's [`Books`] — what a listing's filter can tell
/// without reading the summary back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Indexed {
    offset: u64,
    len: u32,
    book: u16,
    state: RunState,
}

// The point of it: as small as a place alone.
const _: () = assert!(std::mem::size_of::<Indexed>() == 16);
const _: () = assert!(std::mem::size_of::<Held>() == 16);

impl Indexed {
    pub(crate) fn new(place: Place, book: u16) -> Self {
        Self {
            offset: place.offset,
            len: place.len,
            book,
            state: place.state,
        }
    }

    /// Where its summary is read back from.
    pub(crate) fn place(&self) -> Place {
        Place {
            offset: self.offset,
            len: self.len,
            state: self.state,
        }
    }
}

/// The names of the runbooks of the runs held as [`Indexed`], each once, by number.
#[derive(Debug, Default)]
pub(crate) struct Books {
    names: Vec<Box<str>>,
    numbers: HashMap<Box<str>, u16>,
}

impl Books {
    /// A number no runbook has: the runbook of a run held with it is not known (past 65,535
    /// runbooks), and a listing reads such a run back to test it.
    const UNKNOWN: u16 = u16::MAX;

    /// The number of runbook `name`, given it if it has none yet.
    pub(crate) fn number(&mut self, name: &str) -> u16 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        let Ok(n) = u16::try_from(self.names.len()) else {
            return Self::UNKNOWN;
        };
        if n == Self::UNKNOWN {
            return Self::UNKNOWN;
        }
        self.names.push(name.into());
        self.numbers.insert(name.into(), n);
        n
    }

    /// What a listing can tell of `run` before reading its summary back; `None` if its
    /// runbook is not known.
    pub(crate) fn brief(&self, run: &Indexed) -> Option<Brief<'_>> {
        let runbook = self.names.get(usize::from(run.book))?;
        Some(Brief {
            state: run.state,
            runbook,
        })
    }
}

/// A summary taken under the journal's lock for a listing, read back after it is released.
#[derive(Debug)]
pub(crate) enum Snapshot {
    Whole(RunSummary),
    Indexed(Place),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(offset: u64, state: RunState) -> Place {
        Place {
            offset,
            len: 10,
            state,
        }
    }

    #[test]
    fn a_run_held_by_number_tells_its_runbook_and_state_and_gives_its_place_back() {
        let mut books = Books::default();
        let (rotate, deploy) = (books.number("rotate"), books.number("deploy"));
        assert_ne!(rotate, deploy);
        assert_eq!(books.number("rotate"), rotate, "one number per name");
        let run = Indexed::new(place(4096, RunState::Failed), deploy);
        assert_eq!(run.place(), place(4096, RunState::Failed));
        assert_eq!(
            books.brief(&run),
            Some(Brief {
                state: RunState::Failed,
                runbook: "deploy"
            })
        );
    }

    #[test]
    fn past_the_last_number_a_runbook_is_unknown_and_its_runs_are_not_ruled_out() {
        let mut books = Books::default();
        for i in 0..Books::UNKNOWN {
            assert_eq!(books.number(&format!("book-{i}")), i);
        }
        let late = books.number("one too many");
        assert_eq!(late, Books::UNKNOWN);
        assert_eq!(books.number("book-7"), 7, "the known ones keep theirs");
        let run = Indexed::new(place(0, RunState::Succeeded), late);
        assert_eq!(books.brief(&run), None);
    }
}
