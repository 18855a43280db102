//! What the sled journal keeps in memory of each run's summary: a live run's whole summary, an
//! archived run's state and the place of its line in the archive's index.
//!
//! A journal that a `serve` keeps open for a year of five-minute rotations holds 100,000
//! archived runs; their whole summaries took ~0.7 KB each in memory (70 MB), their places take
//! a few dozen bytes. A listing reads back only the summaries it returns.

use crate::archive::Place;
use crate::{RunState, RunSummary};

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
    Indexed(Place),
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
            Self::Indexed(place) => Some(place.state),
        }
    }
}

/// A summary taken under the journal's lock for a listing, read back after it is released.
#[derive(Debug)]
pub(crate) enum Snapshot {
    Whole(RunSummary),
    Indexed(Place),
}
