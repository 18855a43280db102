//! The sled journal's writer: one thread owns every write to the store.
//!
//! Writers send a request over a channel with a way to answer; the thread drains everything
//! queued, applies each request to the tree (refusing what does not fit: a stale expected seq,
//! a held lock, a damaged run, a full disk), makes them all durable with one flush and one
//! `fdatasync`, witnesses them, and answers every writer. Concurrent runs therefore share syncs
//! (group commit) without any of them blocking a thread of their own: an async caller awaits its
//! answer ([`Journal::append_async`](crate::Journal::append_async)). When several runs are
//! committing at once, a batch may stay open a few milliseconds for more of them before it is
//! synced ([`crate::group_commit`]: never for a run alone); what is applied meanwhile is not
//! answered, and so not acted on, before it is durable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use chrono::Utc;

use crate::group_commit::{Active, Decision, Load, Policy, decide};
use crate::sled_journal::Store;
use crate::{Event, JournalError, Record, RunId, RunSummary, witness};

/// At most this many requests share one sync.
const MAX_GROUP: usize = 1024;

/// What a writer asks for.
pub enum Op {
    /// Create a run.
    Insert {
        /// The run.
        id: RunId,
        /// Its lock key.
        lock: Option<String>,
        /// Whether the run takes the lock (not when its first write ends it).
        take_lock: bool,
        /// Its first events.
        events: Vec<Event>,
    },
    /// Append to a run whose last record is `expected`.
    Write {
        /// The run.
        id: RunId,
        /// The seq the writer last saw.
        expected: u64,
        /// The events.
        events: Vec<Event>,
        /// What the events do to the run's lock.
        lock: crate::LockChange,
    },
    /// Continue a damaged run from its intact prefix.
    AcceptLoss {
        /// The run.
        id: RunId,
        /// The first events after the prefix.
        events: Vec<Event>,
    },
    /// Write a meta value.
    PutMeta {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Write a meta value if the key holds `expected` (`None`: absent); fails with
    /// [`JournalError::MetaChanged`] otherwise. The writer thread is the journal's only writer,
    /// so its read and its write are one step.
    SwapMeta {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<Vec<u8>>,
        /// The new value.
        value: Vec<u8>,
    },
}

/// How the writer answers.
pub enum Reply {
    /// A thread waiting on a channel.
    Blocking(mpsc::SyncSender<Result<Vec<Record>, JournalError>>),
    /// A future.
    Async(tokio::sync::oneshot::Sender<Result<Vec<Record>, JournalError>>),
}

impl Reply {
    fn send(self, result: Result<Vec<Record>, JournalError>) {
        // A writer that stopped waiting (a dropped future) no longer wants the answer.
        match self {
            Self::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Self::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// One request.
pub struct Request {
    /// What to do.
    pub op: Op,
    /// Where the answer goes.
    pub reply: Reply,
}

/// The writer thread, as its journal holds it.
pub struct Handle {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Starts the writer of `store`.
    pub fn start(store: Arc<Store>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(&store, &rx))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Sends `op`; the answer comes through `reply`. A writer that is gone answers at once.
    pub fn submit(&self, op: Op, reply: Reply) {
        let request = Request { op, reply };
        if let Some(tx) = &self.tx
            && let Err(mpsc::SendError(request)) = tx.send(request)
        {
            request.reply.send(Err(gone()));
        }
    }

    /// Sends `op` and waits for its answer on this thread.
    pub fn call(&self, op: Op) -> Result<Vec<Record>, JournalError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(op, Reply::Blocking(tx));
        rx.recv().unwrap_or_else(|_| Err(gone()))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the channel lets the thread finish what is queued and end.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gone() -> JournalError {
    JournalError::Storage(Box::new(std::io::Error::other(
        "the journal's writer has stopped",
    )))
}

/// The writer's loop: drain, apply, wait for siblings if the policy says so, sync once,
/// witness, answer.
fn run(store: &Store, rx: &mpsc::Receiver<Request>) {
    let policy = Policy::default();
    let mut active = Active::default();
    while let Ok(first) = rx.recv() {
        let mut batch = Batch::open(Instant::now());
        batch.take(store, first, &mut active);
        loop {
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => batch.take(store, request, &mut active),
                    Err(_) => break,
                }
            }
            if batch.len() >= MAX_GROUP {
                break;
            }
            let now = Instant::now();
            let load = Load {
                active: active.count(now, policy.window),
                batch_runs: batch.runs(),
                open_for: now.saturating_duration_since(batch.opened),
            };
            match decide(load, &policy) {
                Decision::SyncNow => break,
                Decision::Wait(left) => match rx.recv_timeout(left) {
                    Ok(request) => batch.take(store, request, &mut active),
                    Err(_) => break,
                },
            }
        }
        batch.settle(&mut active);
        let ended = batch.ended;
        batch.sync(store);
        if ended {
            store.compact_while_open();
        }
    }
}

/// The requests applied since the last sync, waiting for it.
struct Batch {
    opened: Instant,
    applied: Vec<(Reply, Vec<Record>, Option<witness::Entry>)>,
    /// Requests taken (applied or refused): what [`MAX_GROUP`] bounds.
    taken: usize,
    /// The runs written, with whether the write parked or ended the run.
    runs: HashMap<RunId, bool>,
    /// Whether a write of no run (a meta value) is in the batch.
    other: bool,
    /// Whether a write ended a run (after which the live store may be due a compaction).
    ended: bool,
}

impl Batch {
    fn open(now: Instant) -> Self {
        Self {
            opened: now,
            applied: Vec::new(),
            taken: 0,
            runs: HashMap::new(),
            ended: false,
            other: false,
        }
    }

    fn len(&self) -> usize {
        self.taken
    }

    /// Distinct writers in the batch.
    fn runs(&self) -> usize {
        self.runs.len() + usize::from(self.other)
    }

    /// Applies `request`; a refused one is answered at once.
    fn take(&mut self, store: &Store, request: Request, active: &mut Active) {
        self.taken += 1;
        let run = match &request.op {
            Op::Insert { id, .. } | Op::Write { id, .. } | Op::AcceptLoss { id, .. } => Some(*id),
            Op::PutMeta { .. } | Op::SwapMeta { .. } => None,
        };
        match apply(store, request.op) {
            Ok((records, entry)) => {
                match run {
                    Some(id) => {
                        active.committed(id, Instant::now());
                        let settles = records.iter().any(|r| {
                            matches!(&r.event, Event::StateChanged { state, .. } if state.is_settled())
                        });
                        self.runs.insert(id, settles);
                        self.ended |= records.iter().any(|r| {
                            matches!(&r.event, Event::StateChanged { state, .. } if state.is_terminal())
                        });
                    }
                    None => self.other = true,
                }
                self.applied.push((request.reply, records, entry));
            }
            Err(e) => request.reply.send(Err(e)),
        }
    }

    /// Runs this batch parked or ended no longer count as committing.
    fn settle(&self, active: &mut Active) {
        for (id, settled) in &self.runs {
            if *settled {
                active.settled(*id);
            }
        }
    }

    /// Makes the batch durable with one sync, witnesses it, and answers every writer.
    fn sync(self, store: &Store) {
        if self.applied.is_empty() {
            return;
        }
        let entries: Vec<witness::Entry> = self.applied.iter().filter_map(|(_, _, e)| *e).collect();
        match store.sync_now().and_then(|()| store.witness(&entries)) {
            Ok(()) => {
                for (reply, records, _) in self.applied {
                    reply.send(Ok(records));
                }
            }
            Err(e) => {
                let msg = crate::error_chain(&e);
                store.fail(&msg);
                for (reply, _, _) in self.applied {
                    reply.send(Err(store.failed_error(&msg)));
                }
            }
        }
    }
}

/// Applies one request to the tree (not yet durable); returns its records and what the
/// witness is to record once they are durable.
fn apply(store: &Store, op: Op) -> Result<(Vec<Record>, Option<witness::Entry>), JournalError> {
    store.check_writable()?;
    match op {
        Op::Insert {
            id,
            lock,
            take_lock,
            events,
        } => insert(store, id, lock.as_deref(), take_lock, events),
        Op::Write {
            id,
            expected,
            events,
            lock,
        } => write(store, id, expected, events, lock),
        Op::AcceptLoss { id, events } => store.accept_loss_batch(id, events),
        Op::PutMeta { key, value } => {
            store.check_space(key.len() + value.len())?;
            let mut batch = sled::Batch::default();
            batch.insert(crate::sled_journal::meta_key(&key), value);
            store.apply(batch)?;
            Ok((Vec::new(), None))
        }
        Op::SwapMeta {
            key,
            expected,
            value,
        } => {
            let stored = crate::sled_journal::meta_key(&key);
            let now = store
                .db()
                .get(&stored)
                .map_err(|e| crate::sled_journal::sled_error("read", &store.dir, e))?;
            if now.as_deref() != expected.as_deref() {
                return Err(JournalError::MetaChanged(key));
            }
            store.check_space(key.len() + value.len())?;
            let mut batch = sled::Batch::default();
            batch.insert(stored, value);
            store.apply(batch)?;
            Ok((Vec::new(), None))
        }
    }
}

fn insert(
    store: &Store,
    id: RunId,
    lock: Option<&str>,
    take_lock: bool,
    events: Vec<Event>,
) -> Result<(Vec<Record>, Option<witness::Entry>), JournalError> {
    use crate::sled_journal::{add_records, encode, lock_key, summary_key};
    if store.has_run(id) {
        return Err(JournalError::RunExists(id));
    }
    if let Some(key) = lock
        && let Some(holder) = store.lock_value(key)?
    {
        return Err(JournalError::LockHeld {
            key: key.to_owned(),
            holder,
        });
    }
    let now = Utc::now();
    let mut summary = RunSummary::empty(id, now);
    let records = make_records(events, 1, now);
    let mut batch = sled::Batch::default();
    let added = add_records(
        &mut batch,
        id,
        witness::chain_start(id),
        &records,
        &mut summary,
    )?;
    // The summary names the lock the run asked for, whatever `RunStarted` says.
    summary.lock = lock.map(str::to_owned);
    if let Some(key) = lock.filter(|_| take_lock) {
        batch.insert(lock_key(key), &id.to_bytes()[..]);
    }
    let encoded = encode(&summary)?;
    store.check_space(added.bytes + encoded.len())?;
    batch.insert(&summary_key(id)[..], encoded);
    let entry = entry(witness::Kind::Commit, &summary, added.chain);
    store.apply(batch)?;
    store.set_summary(summary);
    Ok((records, Some(entry)))
}

fn write(
    store: &Store,
    id: RunId,
    expected: u64,
    events: Vec<Event>,
    lock: crate::LockChange,
) -> Result<(Vec<Record>, Option<witness::Entry>), JournalError> {
    use crate::sled_journal::{add_records, encode, lock_key, summary_key};
    if let Some(problem) = store.problem(id) {
        return Err(problem);
    }
    let mut summary = store.cached_summary(id)?;
    if summary.last_seq != expected {
        return Err(JournalError::Conflict {
            run: id,
            expected,
            found: summary.last_seq,
        });
    }
    let start = match summary.chain.as_deref().map(witness::chain_from_hex) {
        Some(Some(chain)) => chain,
        Some(None) => {
            return Err(crate::sled_journal::corrupt_summary(
                id,
                "its hash chain is not readable",
            ));
        }
        // Written before chains were kept: computed once from the records.
        None => store.chain_of_stored(id, summary.last_seq)?,
    };
    let records = make_records(events, summary.last_seq + 1, Utc::now());
    let mut batch = sled::Batch::default();
    let restored = store.restore_archived(&mut batch, &summary, false)?;
    let added = add_records(&mut batch, id, start, &records, &mut summary)?;
    if let Some(key) = summary.lock.clone() {
        let holder = store.lock_value(&key)?;
        match lock {
            crate::LockChange::Release if holder == Some(id) => {
                batch.remove(lock_key(&key));
            }
            crate::LockChange::Retake => match holder {
                Some(other) if other != id => {
                    return Err(JournalError::LockHeld { key, holder: other });
                }
                Some(_) => {}
                None => batch.insert(lock_key(&key), &id.to_bytes()[..]),
            },
            _ => {}
        }
    }
    let encoded = encode(&summary)?;
    store.check_space(added.bytes + encoded.len() + restored.unwrap_or(0))?;
    batch.insert(&summary_key(id)[..], encoded);
    let entry = entry(witness::Kind::Commit, &summary, added.chain);
    store.apply(batch)?;
    if restored.is_some() {
        store.unarchived(id);
    }
    store.set_summary(summary);
    Ok((records, Some(entry)))
}

/// The witness entry for a run's summary after a write.
pub fn entry(kind: witness::Kind, summary: &RunSummary, chain: witness::Chain) -> witness::Entry {
    witness::Entry {
        kind,
        run: summary.id,
        seq: summary.last_seq,
        chain,
    }
}

/// Records for `events`, numbered from `first_seq`, all written `at`.
pub fn make_records(events: Vec<Event>, first_seq: u64, at: chrono::DateTime<Utc>) -> Vec<Record> {
    (first_seq..)
        .zip(events)
        .map(|(seq, event)| Record { seq, at, event })
        .collect()
}
