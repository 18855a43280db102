//! A schedule's journaled state: the last fire handled, what each fire led to, whether it is
//! paused, and the fire being started (written before the run is created, so that a crash in
//! between is finished on restart instead of fired again or lost).

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
        match journal.get_meta(&key(name))? {
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| JournalError::Storage(Box::new(e)))
            }
            None => Ok(Self::default()),
        }
    }

    /// Writes the state durably.
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
