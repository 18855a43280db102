//! The engine's only way to the journal: every event is redacted, appended durably, and then
//! shown to observers (the terminal, `--output json`, the follow file). Nothing reaches an
//! observer before it is durable, and nothing reaches the journal unredacted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use runbook_journals::{Event, Journal, JournalError, Record, RunId};

use crate::secrets::Redactor;
use crate::wire::OutputChunk;

/// Something that wants to see a run's records as they become durable.
pub trait Observer: Send + Sync {
    /// A record was committed.
    fn record(&self, run: RunId, record: &Record);

    /// Transient news that is not journaled (a wait's latest poll).
    fn progress(&self, run: RunId, path: &str, note: &str) {
        let _ = (run, path, note);
    }

    /// A gate's question is being asked on the terminal (`asking`), or was answered: an
    /// observer that redraws the terminal must leave it alone meanwhile.
    fn prompting(&self, run: RunId, asking: bool) {
        let _ = (run, asking);
    }

    /// Whether it follows running steps' output ([`Observer::output`]); when none of a run's
    /// observers does, the output is not streamed at all.
    fn wants_output(&self) -> bool {
        false
    }

    /// A part of a running step's output, masked, not journaled (see
    /// [`crate::engine::live`]). Called on the task that reads the step's process: it must not
    /// block.
    fn output(&self, chunk: &OutputChunk) {
        let _ = chunk;
    }
}

/// Events handed to the journal ([`RunLog::ship`]): their records once durable.
pub type Shipped<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Record>, JournalError>> + Send + 'a>,
>;

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

    /// Appends events durably after record `expected` (the run's last as the caller knows it),
    /// blocking this thread until they are durable. For one-off writes outside a run's
    /// execution (a verdict, an abort); an execution commits with [`RunLog::commit`].
    pub fn append(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        let events: Vec<Event> = events.iter().map(|e| self.redact(e)).collect();
        let records = self.journal.append(id, expected, &events)?;
        self.committed(id, &records);
        Ok(records)
    }

    /// Appends events durably after record `expected`, awaiting durability without holding a
    /// thread (the journal's writer answers when the commit is synced). The events are masked
    /// where they are, not copied: a commit carries every event that rode on it.
    pub async fn commit(
        &self,
        id: RunId,
        expected: u64,
        events: Vec<Event>,
    ) -> Result<Vec<Record>, JournalError> {
        self.ship(id, expected, events).await
    }

    /// Like [`RunLog::commit`], but the events are handed to the journal at once: it works on
    /// them whether or not the returned future is polled yet (every backend's
    /// [`Journal::append_async`] starts when called). Observers hear of the records when the
    /// future is awaited, so futures awaited in order tell them in order.
    pub fn ship(&self, id: RunId, expected: u64, mut events: Vec<Event>) -> Shipped<'_> {
        for event in &mut events {
            self.redact_in_place(event);
        }
        let pending = self.journal.append_async(id, expected, events);
        Box::pin(async move {
            let records = pending.await?;
            self.committed(id, &records);
            Ok(records)
        })
    }

    /// Appends the first events after an operator accepted a journal loss (see
    /// [`Journal::accept_loss`]).
    pub fn accept_loss(&self, id: RunId, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let events: Vec<Event> = events.iter().map(|e| self.redact(e)).collect();
        let records = self.journal.accept_loss(id, &events)?;
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

    /// Whether any observer follows running steps' output.
    pub fn follows_output(&self) -> bool {
        self.observers.iter().any(|o| o.wants_output())
    }

    /// Tells the observers that follow output about a part of a running step's output (masked
    /// already: see [`crate::engine::live`]).
    pub fn output(&self, chunk: &OutputChunk) {
        for o in &self.observers {
            if o.wants_output() {
                o.output(chunk);
            }
        }
    }

    /// Tells observers that a gate's question is being asked on the terminal, or was answered.
    pub fn prompting(&self, id: RunId, asking: bool) {
        for o in &self.observers {
            o.prompting(id, asking);
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
    ///
    /// Field by field, so that masking can never break the event's shape: masking the whole
    /// event as JSON turns numbers into `"***"` and then no longer decodes — and an event that
    /// does not decode must not fall back to its clear form. Only fields that carry data from
    /// the runbook, its parameters or its steps are masked; paths, kinds, counters and states
    /// come from the engine.
    pub fn redact(&self, event: &Event) -> Event {
        let mut event = event.clone();
        self.redact_in_place(&mut event);
        event
    }

    /// [`RunLog::redact`] of an event the caller owns.
    pub fn redact_in_place(&self, event: &mut Event) {
        if self.redactor.is_empty() {
            return;
        }
        let r = &self.redactor;
        let text = |s: &mut String| *s = r.text(s);
        match event {
            Event::RunStarted(started) => {
                for v in started.params.values_mut() {
                    *v = r.value(v);
                }
            }
            Event::StepStarted { intent, .. } => *intent = r.value(intent),
            Event::StepSucceeded { output, .. } => *output = r.value(output),
            Event::StepFailed { error, output, .. } => {
                text(error);
                if let Some(o) = output {
                    *o = r.value(o);
                }
            }
            Event::StepInterrupted { reason, .. } => text(reason),
            Event::ItemsDecided { items, .. } => {
                for v in items {
                    *v = r.value(v);
                }
            }
            Event::GateOpened { prompt, .. } => text(prompt),
            Event::AttentionNeeded { detail, .. } | Event::LossAccepted { detail, .. } => {
                text(detail);
            }
            Event::StateChanged { reason, .. } | Event::AbortStarted { reason, .. } => {
                reason.iter_mut().for_each(text);
            }
            Event::GateDecided { comment, .. }
            | Event::OperatorDecided { comment, .. }
            | Event::RunReopened { comment, .. }
            | Event::Paused { comment, .. }
            | Event::Unpaused { comment, .. } => comment.iter_mut().for_each(text),
            Event::Precheck { error, .. } => error.iter_mut().for_each(text),
            Event::SourceReloaded { .. }
            | Event::Resumed { .. }
            | Event::StepSkipped { .. }
            | Event::TimerSet { .. }
            | Event::GateExpired { .. } => {}
        }
    }
}

/// Test-only failpoints: `RUNBOOK_TEST_KILL_AFTER_COMMIT=N` makes the process SIGKILL itself
/// right after its N-th journal commit became durable (the kill-matrix tests stop a run at
/// every commit in turn); `RUNBOOK_TEST_KILL_AFTER_SHIP=N` right after the N-th chunk of riding
/// events handed to the journal ahead of a commit ([`crate::engine::exec::ships_early`]) became
/// durable, with nothing after it.
pub mod failpoint {
    use super::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    /// A count of events and the one, named by an environment variable, to die at.
    struct Point {
        var: &'static str,
        count: AtomicU64,
        target: OnceLock<Option<u64>>,
    }

    impl Point {
        const fn new(var: &'static str) -> Self {
            Self {
                var,
                count: AtomicU64::new(0),
                target: OnceLock::new(),
            }
        }

        /// Counts one; whether it is the one named.
        fn hit(&self) -> bool {
            let target = *self
                .target
                .get_or_init(|| std::env::var(self.var).ok().and_then(|v| v.parse().ok()));
            target.is_some() && target == Some(self.count.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    static COMMIT: Point = Point::new("RUNBOOK_TEST_KILL_AFTER_COMMIT");
    static SHIP: Point = Point::new("RUNBOOK_TEST_KILL_AFTER_SHIP");

    /// Counts a commit, and dies if the failpoint names it.
    pub fn after_commit() {
        if COMMIT.hit() {
            die();
        }
    }

    /// Counts a chunk of riding events just handed to the journal; whether the failpoint names
    /// it (the caller then waits until it is durable and [`die`]s).
    pub fn kills_after_ship() -> bool {
        SHIP.hit()
    }

    /// SIGKILLs this process.
    pub fn die() -> ! {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        // SIGKILL cannot be caught; this is never reached.
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_journals::MemoryJournal;
    use serde_json::json;

    #[test]
    fn masking_keeps_the_event_whole_and_never_falls_back_to_clear() {
        let redactor = Redactor::new();
        // A secret that is also a digit of the event's own counters.
        redactor.add("1");
        redactor.add("s3cr3t");
        let log = RunLog::new(Arc::new(MemoryJournal::new()), redactor, Vec::new());
        let event = Event::StepFailed {
            path: "a".into(),
            attempt: 1,
            error: "login failed for s3cr3t".into(),
            output: Some(json!({ "stderr": "s3cr3t\n", "code": 1, "other": 11 })),
            retry_at: None,
            duration_ms: 1,
            tolerated: false,
        };
        let Event::StepFailed {
            attempt,
            error,
            output,
            duration_ms,
            ..
        } = log.redact(&event)
        else {
            panic!("the event changed its kind");
        };
        assert_eq!((attempt, duration_ms), (1, 1));
        assert_eq!(error, "login failed for ***");
        // A short secret is masked as a whole value only: `1` is, `11` is not.
        assert_eq!(
            output,
            Some(json!({ "stderr": "***\n", "code": "***", "other": 11 }))
        );
    }
}
