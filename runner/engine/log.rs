//! The engine's only way to the journal: every event is redacted, appended durably, and then
//! shown to observers (the terminal, `--output json`, the follow file). Nothing reaches an
//! observer before it is durable, and nothing reaches the journal unredacted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runbook_journals::{Event, Journal, JournalError, Record, RunId};

use crate::secrets::Redactor;

/// Something that wants to see a run's records as they become durable.
pub trait Observer: Send + Sync {
    /// A record was committed.
    fn record(&self, run: RunId, record: &Record);

    /// Transient news that is not journaled (a wait's latest poll).
    fn progress(&self, run: RunId, path: &str, note: &str) {
        let _ = (run, path, note);
    }
}

/// A journal plus the run's redactor and observers.
#[derive(Clone)]
pub struct RunLog {
    journal: Arc<dyn Journal>,
    redactor: Redactor,
    observers: Vec<Arc<dyn Observer>>,
}

impl RunLog {
    /// A log over `journal` that redacts with `redactor` and notifies `observers`.
    pub fn new(
        journal: Arc<dyn Journal>,
        redactor: Redactor,
        observers: Vec<Arc<dyn Observer>>,
    ) -> Self {
        Self {
            journal,
            redactor,
            observers,
        }
    }

    /// The run's redactor.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<dyn Journal> {
        &self.journal
    }

    /// Creates a run (taking its lock) with its first events.
    pub fn create(
        &self,
        id: RunId,
        lock: Option<&str>,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        let events: Vec<Event> = events.iter().map(|e| self.redact(e)).collect();
        let records = self.journal.create(id, lock, &events)?;
        self.committed(id, &records);
        Ok(records)
    }

    /// Appends events durably.
    pub fn append(&self, id: RunId, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let events: Vec<Event> = events.iter().map(|e| self.redact(e)).collect();
        let records = self.journal.append(id, &events)?;
        self.committed(id, &records);
        Ok(records)
    }

    /// Tells observers about a transient event.
    pub fn progress(&self, id: RunId, path: &str, note: &str) {
        let note = self.redactor.text(note);
        for o in &self.observers {
            o.progress(id, path, &note);
        }
    }

    fn committed(&self, id: RunId, records: &[Record]) {
        failpoint::after_commit();
        for record in records {
            for o in &self.observers {
                o.record(id, record);
            }
        }
    }

    /// The event with every known secret masked.
    pub fn redact(&self, event: &Event) -> Event {
        if self.redactor.is_empty() {
            return event.clone();
        }
        let value = serde_json::to_value(event).expect("events serialize");
        serde_json::from_value(self.redactor.value(&value)).unwrap_or_else(|_| event.clone())
    }
}

/// A test-only failpoint: `RUNBOOK_TEST_KILL_AFTER_COMMIT=N` makes the process SIGKILL itself
/// right after its N-th journal commit became durable. The kill-matrix tests use it to stop a
/// run at every commit in turn.
pub mod failpoint {
    use super::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static COMMITS: AtomicU64 = AtomicU64::new(0);

    fn target() -> Option<u64> {
        static TARGET: OnceLock<Option<u64>> = OnceLock::new();
        *TARGET.get_or_init(|| {
            std::env::var("RUNBOOK_TEST_KILL_AFTER_COMMIT")
                .ok()
                .and_then(|v| v.parse().ok())
        })
    }

    /// Counts a commit, and dies if the failpoint names it.
    pub fn after_commit() {
        let n = COMMITS.fetch_add(1, Ordering::SeqCst) + 1;
        if target() == Some(n) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
            // SIGKILL cannot be caught; this is never reached.
            std::process::abort();
        }
    }

    /// Commits made by this process so far.
    pub fn commits() -> u64 {
        COMMITS.load(Ordering::SeqCst)
    }
}
