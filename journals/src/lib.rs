//! runbook-journals: the durable, append-only record of every run.
//!
//! The [`Journal`] trait is what the engine relies on:
//!
//! - **Write-ahead.** [`Journal::append`] returns only once its events are durable — written and
//!   `fdatasync`ed, so they survive a power loss, not only a killed process. The engine appends
//!   `StepStarted` before a step's effect begins and `StepSucceeded` before the next step starts.
//! - **Group commit.** Appends from concurrent runs in one process share one sync.
//! - **Locks.** [`Journal::create`] takes the run's lock key atomically with its first events and
//!   refuses if another unfinished run holds it; a terminal `StateChanged` releases it.
//! - **Integrity.** Every record carries a checksum and a contiguous sequence number, and a
//!   witness kept outside the store remembers how many records each run had once they were
//!   durable and the hash chain over them; reading a run whose records were lost, torn or changed
//!   is an error that names the run and the record, never a silently shortened history, and such
//!   a run takes no more writes until an operator accepts the loss ([`Journal::accept_loss`]).
//! - **Reading changes nothing.** A journal opened read-only never writes a byte of the
//!   journal directory.
//!
//! The journal never sees secrets in clear: the runner redacts every event before appending.
//!
//! Backends: [`SledJournal`] (a directory, the default), [`EtcdJournal`] (an etcd cluster, for
//! runs that must outlive their machine; durable when etcd's quorum has it; several executors
//! share it through [`EtcdJournal::join`], see [`fleet`]) and [`MemoryJournal`] (dry runs,
//! tests).

mod archive;
#[cfg(test)]
pub mod conformance;
mod error_chain;
mod etcd_fleet;
mod etcd_journal;
#[cfg(test)]
mod etcd_testbed;
pub mod etcd_url;
mod etcd_watch;
mod event;
pub mod fleet;
pub mod follow_mirror;
mod group_commit;
mod held;
mod live_store;
mod memory;
mod sled_journal;
mod sled_writer;
pub mod space;
mod view_copy;
pub mod witness;

use std::collections::HashMap;
use std::path::PathBuf;

pub use error_chain::{error_chain, error_texts};
pub use etcd_fleet::{ANSWER_TTL, EtcdFleet, FleetError};
pub use etcd_journal::{EtcdError, EtcdJournal, PATIENCE};
pub use etcd_url::{EtcdTarget, EtcdTls, EtcdUrlError};
pub use event::{
    Brief, Drift, Event, GateTimeout, OperatorAction, Orphans, Record, RunId, RunStarted, RunState,
    RunSummary, SkipReason, SourceFile, Trigger,
};
pub use fleet::{Fleet, Incoming, Standing};
pub use live_store::ARCHIVE_AFTER;
pub use memory::MemoryJournal;
pub use sled_journal::{SledJournal, SledOptions};

/// What can go wrong with a journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the journal directory.
    #[error("journal {dir} is in use by another runbook process{}", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Busy {
        /// The journal directory.
        dir: PathBuf,
        /// What the holder wrote about itself (pid and command), if readable.
        holder: Option<String>,
    },
    /// An append expected the run to end at another record: someone else wrote to it.
    #[error(
        "run {run} was written meanwhile: the writer expected its last record to be {expected}, but it is {found}"
    )]
    Conflict {
        /// The run.
        run: RunId,
        /// The last seq the writer saw.
        expected: u64,
        /// The last seq the journal holds.
        found: u64,
    },
    /// The lock key is held by an unfinished run.
    #[error("lock `{key}` is held by run {holder}")]
    LockHeld {
        /// The lock key.
        key: String,
        /// The run holding it.
        holder: RunId,
    },
    /// The run is owned by another executor sharing the journal ([`fleet`]): nothing written.
    #[error("run {run} is executed by {owner}; nothing was written")]
    Owned {
        /// The run.
        run: RunId,
        /// The executor owning it.
        owner: String,
    },
    /// This executor lost its ownership of the run (its lease expired or was revoked): it must
    /// not write to it again; nothing was written.
    #[error("this executor no longer owns run {run} ({detail}); nothing was written")]
    Fenced {
        /// The run.
        run: RunId,
        /// What the store said.
        detail: String,
    },
    /// A compare-and-set of a meta value found another value than expected (used inside
    /// backends; [`Journal::swap_meta`] answers `false` instead).
    #[error("meta value `{0}` changed meanwhile")]
    MetaChanged(String),
    /// No run has this id (or id prefix).
    #[error("no run matches `{0}`")]
    NoSuchRun(String),
    /// An id prefix matches more than one run.
    #[error("run id prefix `{prefix}` is ambiguous: it matches {}", candidates.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// The runs it matches.
        candidates: Vec<RunId>,
    },
    /// A run with this id exists already.
    #[error("run {0} exists already")]
    RunExists(RunId),
    /// A stored record failed its checksum, did not decode, or broke the sequence.
    #[error("journal of run {run} is corrupt at record {seq}: {detail}")]
    Corrupt {
        /// The run.
        run: RunId,
        /// The first bad record's sequence number.
        seq: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// The journal was opened read-only.
    #[error("the journal {0} is open for reading only")]
    ReadOnly(PathBuf),
    /// The disk holding the journal is (nearly) full: nothing was written.
    #[error(
        "the journal {dir} is out of space: {available} bytes free, a commit needs {needed}; nothing was written — free space, then resume the run"
    )]
    NoSpace {
        /// The journal directory.
        dir: PathBuf,
        /// Bytes available.
        available: u64,
        /// Bytes the commit needs (with a reserve).
        needed: u64,
    },
    /// The storage engine failed.
    #[error("failed to access the journal storage")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A file operation failed (sync, holder file, directory).
    #[error("failed to {action} {path}")]
    Io {
        /// What we tried.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl JournalError {
    /// The one run `candidates` (the runs whose id starts with `prefix`) names, or the error
    /// saying there is none or more than one.
    pub fn one_run(prefix: &str, candidates: Vec<RunId>) -> Result<RunId, Self> {
        match candidates.as_slice() {
            [one] => Ok(*one),
            [] => Err(Self::NoSuchRun(prefix.to_owned())),
            _ => Err(Self::Ambiguous {
                prefix: prefix.to_owned(),
                candidates,
            }),
        }
    }
}

/// The [`JournalError::Io`] of doing `action` on `path`, for `map_err`.
pub(crate) fn io_at(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError::Io {
        action,
        path,
        source,
    }
}

/// Fails unless the first of a new run's events is `RunStarted`.
fn check_first(id: RunId, events: &[Event]) -> Result<(), JournalError> {
    match events.first() {
        Some(Event::RunStarted(_)) => Ok(()),
        first => Err(JournalError::Storage(Box::new(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the first event of run {id} must be run_started, not {}",
                first.map_or("nothing", Event::name)
            ),
        )))),
    }
}

/// What a write does to the run's lock: the last state it moves the run to decides; a write
/// that reopens an ended run ([`Event::RunReopened`]) takes it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockChange {
    /// The lock stays as it is.
    Keep,
    /// The run ends: its lock is released.
    Release,
    /// The run was over and goes on: it takes its lock again, unless another run holds it
    /// ([`JournalError::LockHeld`], nothing written).
    Retake,
}

impl LockChange {
    /// What writing `events` does to the lock.
    pub fn of(events: &[Event]) -> Self {
        let last = events.iter().rev().find_map(|e| match e {
            Event::StateChanged { state, .. } => Some(*state),
            _ => None,
        });
        match last {
            Some(state) if state.is_terminal() => Self::Release,
            _ if events
                .iter()
                .any(|e| matches!(e, Event::RunReopened { .. })) =>
            {
                Self::Retake
            }
            _ => Self::Keep,
        }
    }
}

/// Whether `events` move the run to a terminal state (which releases its lock).
pub fn ends_run(events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, Event::StateChanged { state, .. } if state.is_terminal()))
}

/// Counters that tests and benchmarks read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Calls to `create` or `append` that wrote something.
    pub commits: u64,
    /// `fdatasync` calls issued on the journal's files (group commit makes this ≤ `commits`).
    pub syncs: u64,
}

/// A journal write that completes when it is durable.
pub type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<Record>, JournalError>> + Send + 'static>,
>;

/// A durable, append-only event log per run.
///
/// The provided methods hold the rules every backend shares (the first event of a run is
/// `RunStarted`; a run that ends in its first write takes no lock; a terminal `StateChanged`
/// releases the lock); a backend implements the storage: [`Journal::insert`] and
/// [`Journal::write`]. The conformance suite ([`conformance`]) checks every backend against them.
pub trait Journal: Send + Sync {
    /// Creates run `id` with its first events (the first must be `RunStarted`) and, if `lock` is
    /// given, takes that lock key. Atomic and durable on return. Fails with
    /// [`JournalError::LockHeld`] naming the holder if an unfinished run holds the key.
    fn create(
        &self,
        id: RunId,
        lock: Option<&str>,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        check_first(id, events)?;
        self.insert(id, lock, !ends_run(events), events)
    }

    /// Appends events to run `id`, whose last record must be `expected` (the seq the writer
    /// last saw); fails with [`JournalError::Conflict`] otherwise, writing nothing. Atomic and
    /// durable on return; returns the records as stored. A `StateChanged` to a terminal state
    /// releases the run's lock in the same write; a `RunReopened` takes it again (failing with
    /// [`JournalError::LockHeld`], nothing written, if another run holds it meanwhile).
    fn append(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        if events.is_empty() {
            self.summary(id)?;
            return Ok(Vec::new());
        }
        self.write(id, expected, events, LockChange::of(events))
    }

    /// [`Journal::append`] without blocking the caller's thread: the future resolves once the
    /// records are durable. Backends that write on a thread of their own override it. The
    /// append is under way when this returns, not when the future is first polled, so a
    /// caller may hand over several appends in a row (each expecting the seq the one before
    /// ends at) and await them later, in order.
    fn append_async(&self, id: RunId, expected: u64, events: Vec<Event>) -> Pending {
        let result = self.append(id, expected, &events);
        Box::pin(std::future::ready(result))
    }

    /// Backend: creates the run (refusing an existing id, and a `lock` another unfinished run
    /// holds), taking the lock when `take_lock`, and writes `events` as records 1…n.
    fn insert(
        &self,
        id: RunId,
        lock: Option<&str>,
        take_lock: bool,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError>;

    /// Backend: appends non-empty `events` to run `id` if its last record is `expected`,
    /// releasing or taking its lock again as `lock` says (refusing a lock another run holds).
    fn write(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
        lock: LockChange,
    ) -> Result<Vec<Record>, JournalError>;

    /// Every record of run `id`, in order, verified.
    fn read(&self, id: RunId) -> Result<Vec<Record>, JournalError>;

    /// Records of run `id` with `seq > after`, verified (for following a run).
    fn read_after(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError>;

    /// Summaries of all runs, oldest first; fails with the first integrity problem if the
    /// journal has any (see [`Journal::problems`]).
    fn runs(&self) -> Result<Vec<RunSummary>, JournalError>;

    /// Summaries of the runs whose summary can be read, oldest first — damaged runs included,
    /// as their summaries say; listings show them next to [`Journal::problems`].
    fn readable_runs(&self) -> Vec<RunSummary> {
        self.runs().unwrap_or_default()
    }

    /// Summaries of the runs that are not finished ([`RunState::is_terminal`]) and whose
    /// summary can be read, oldest first: what `status` lists. A backend that keeps finished
    /// runs apart (the sled journal's archive) answers without reading them.
    fn unfinished_runs(&self) -> Vec<RunSummary> {
        self.readable_runs()
            .into_iter()
            .filter(|s| !s.state.is_terminal())
            .collect()
    }

    /// The newest readable runs that `wanted` accepts, newest first, at most `limit`: what
    /// `history` and `GET /runs` list. Only the runs returned are copied. `could` tells from a
    /// run's [`Brief`] alone (its state and runbook) whether `wanted` may accept it: a backend
    /// that holds finished runs briefly apart from their summaries (the sled journal's archive)
    /// reads back only the summaries of runs `could` lets through.
    fn newest_runs(
        &self,
        could: &dyn Fn(Brief<'_>) -> bool,
        wanted: &mut dyn FnMut(&RunSummary) -> bool,
        limit: usize,
    ) -> Vec<RunSummary> {
        let mut runs = self.readable_runs();
        runs.reverse();
        runs.into_iter()
            .filter(|s| could(s.brief()) && wanted(s))
            .take(limit)
            .collect()
    }

    /// How many readable runs are in each state (the metrics' gauges), without copying any.
    fn state_counts(&self) -> HashMap<RunState, u64> {
        let mut counts = HashMap::new();
        for summary in self.readable_runs() {
            *counts.entry(summary.state).or_default() += 1;
        }
        counts
    }

    /// Every integrity problem known: runs whose summary is unreadable, or whose records were
    /// lost or changed since they were durable (each a [`JournalError::Corrupt`] naming the run
    /// and the first bad record).
    fn problems(&self) -> Vec<JournalError> {
        Vec::new()
    }

    /// The integrity problems known without reading finished runs kept apart (the sled
    /// journal's archive): every one of the runs [`Journal::unfinished_runs`] may list, and of
    /// the finished runs kept beside them. What `status` reports; [`Journal::problems`] for
    /// backends that keep nothing apart.
    fn live_problems(&self) -> Vec<JournalError> {
        self.problems()
    }

    /// The records of run `id` that can be trusted: all of them, or for a damaged run the
    /// longest intact prefix (what [`Journal::accept_loss`] continues from).
    fn salvage(&self, id: RunId) -> Result<Vec<Record>, JournalError> {
        self.read(id)
    }

    /// Appends to a damaged run after an operator accepted that its history is its intact
    /// prefix: the records after that prefix are set aside (kept, no longer history) and
    /// `events` follow the prefix. On a healthy run this is [`Journal::append`].
    fn accept_loss(&self, id: RunId, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let last = self.summary(id)?.last_seq;
        self.append(id, last, events)
    }

    /// The summary of run `id`.
    fn summary(&self, id: RunId) -> Result<RunSummary, JournalError>;

    /// Finds the run whose id starts with `prefix` (case-insensitive).
    fn resolve(&self, prefix: &str) -> Result<RunId, JournalError>;

    /// The run holding lock `key`, if any.
    fn lock_holder(&self, key: &str) -> Result<Option<RunId>, JournalError>;

    /// Reads a small value from the journal's key-value area (schedules and the like).
    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError>;

    /// Writes a small value to the key-value area, durably.
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), JournalError>;

    /// Writes `value` under `key` only if the key holds `expected` now (`None`: absent), in one
    /// atomic, durable step; `Ok(false)`, nothing written, otherwise. Several executors sharing
    /// a journal decide schedules' fires with it.
    fn swap_meta(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, JournalError>;

    /// Counters since the journal was opened.
    fn stats(&self) -> JournalStats;
}
