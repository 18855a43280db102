//! A schedule's journaled state: the last fire handled, what each fire led to, whether it is
//! paused, and the fire being started (written before the run is created, so that a crash in
//! between is finished on restart instead of fired again or lost).
//!
//! Several executors may share a journal and fire the same schedules: every change is a
//! compare-and-set over the bytes it was read from ([`ScheduleState::save_over`]), so of two
//! executors deciding the same fire one wins and the other learns it lost, having written
//! nothing.

use chrono::{DateTime, Utc};
use runbook_journals::{Journal, JournalError, RunId};
use serde::{Deserialize, Serialize};

/// How many fires each schedule remembers.
const HISTORY: usize = 100;

/// What one fire led to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "outcome", content = "detail")]
pub enum FireOutcome {
    /// A run started.
    Started,
    /// Skipped: a run of the schedule was unfinished (`overlap: skip`).
    Skipped,
    /// Waiting for the unfinished run to end (`overlap: queue`).
    Queued,
    /// The run could not start (a held lock, a parameter problem): why.
    Refused(String),
    /// Missed while nothing was serving, and not caught up.
    Missed,
}

impl FireOutcome {
    /// The outcome's name, for metrics and output.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Skipped => "skipped",
            Self::Queued => "queued",
            Self::Refused(_) => "refused",
            Self::Missed => "missed",
        }
    }
}

/// One fire and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fired {
    /// The scheduled time.
    pub fire: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub outcome: FireOutcome,
    /// The run it started, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunId>,
    /// When it was handled.
    pub at: DateTime<Utc>,
}

/// A fire recorded before its run is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The scheduled time.
    pub fire: DateTime<Utc>,
    /// The id the run gets.
    pub run: RunId,
}

/// Everything journaled about one schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The latest scheduled time handled (fired, skipped, queued or missed).
    pub last_fire: Option<DateTime<Utc>>,
    /// Paused schedules do not fire.
    #[serde(default)]
    pub paused: bool,
    /// Fires waiting for an unfinished run (`overlap: queue`), oldest first.
    #[serde(default)]
    pub queued: Vec<DateTime<Utc>>,
    /// The fire being started.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The latest run the schedule started.
    #[serde(default)]
    pub last_run: Option<RunId>,
    /// Recent fires, oldest first.
    #[serde(default)]
    pub history: Vec<Fired>,
}

fn key(name: &str) -> String {
    format!("schedule/{name}")
}

/// How many times [`ScheduleState::update`] reads again after another executor changed the state.
const UPDATE_ATTEMPTS: usize = 20;

/// The stored bytes a state was read from (none: never saved). A save over them succeeds only if
/// nobody saved another state meanwhile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen(Option<Vec<u8>>);

impl ScheduleState {
    /// Pauses or resumes. A resumed schedule fires from now on: what fell due while it was
    /// paused is not caught up.
    pub fn set_paused(&mut self, paused: bool) {
        if self.paused && !paused {
            self.last_fire = Some(Utc::now());
        }
        self.paused = paused;
    }

    /// The state of schedule `name` (default when never fired).
    pub fn load(journal: &dyn Journal, name: &str) -> Result<Self, JournalError> {
        Self::load_seen(journal, name).map(|(state, _)| state)
    }

    /// The state of schedule `name` and the bytes it was read from, to save over.
    pub fn load_seen(journal: &dyn Journal, name: &str) -> Result<(Self, Seen), JournalError> {
        match journal.get_meta(&key(name))? {
            Some(bytes) => {
                let state = serde_json::from_slice(&bytes)
                    .map_err(|e| JournalError::Storage(Box::new(e)))?;
                Ok((state, Seen(Some(bytes))))
            }
            None => Ok((Self::default(), Seen(None))),
        }
    }

    /// Writes the state durably if the stored one is still what `seen` holds, and then makes
    /// `seen` the new bytes; `Ok(false)`, nothing written, if another executor saved first.
    pub fn save_over(
        &self,
        journal: &dyn Journal,
        name: &str,
        seen: &mut Seen,
    ) -> Result<bool, JournalError> {
        let bytes = serde_json::to_vec(self).expect("schedule state serializes");
        if !journal.swap_meta(&key(name), seen.0.as_deref(), &bytes)? {
            return Ok(false);
        }
        seen.0 = Some(bytes);
        Ok(true)
    }

    /// Applies `change` to the stored state of `name` and saves it, reading again and applying
    /// it again whenever another executor saved first; returns the state saved.
    pub fn update(
        journal: &dyn Journal,
        name: &str,
        mut change: impl FnMut(&mut Self),
    ) -> Result<Self, JournalError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let (mut state, mut seen) = Self::load_seen(journal, name)?;
            change(&mut state);
            if state.save_over(journal, name, &mut seen)? {
                return Ok(state);
            }
        }
        Err(JournalError::MetaChanged(key(name)))
    }

    /// Writes the state durably, whatever is stored (tests set up states with it).
    #[cfg(test)]
    pub fn save(&self, journal: &dyn Journal, name: &str) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(self).expect("schedule state serializes");
        journal.put_meta(&key(name), &bytes)
    }

    /// Records what a fire led to.
    pub fn record(&mut self, fire: DateTime<Utc>, outcome: FireOutcome, run: Option<RunId>) {
        self.history.push(Fired {
            fire,
            outcome,
            run,
            at: Utc::now(),
        });
        if self.history.len() > HISTORY {
            let extra = self.history.len() - HISTORY;
            self.history.drain(..extra);
        }
    }
}
