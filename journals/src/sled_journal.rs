//! The sled-backed [`Journal`].
//!
//! Layout: one sled tree, keys prefixed by kind so that one `apply_batch` can write a run's
//! events, its summary and its lock atomically:
//!
//! - `e` + run id (16 bytes) + seq (u64 big-endian) → CRC32 (4 bytes LE) + JSON [`Record`]
//! - `s` + run id → CRC32 + JSON [`RunSummary`] (with the hash chain over the run's records)
//! - `l` + lock key → run id (16 bytes)
//! - `m` + meta key → raw bytes
//! - `q` + run id + kept seq + seq → a record set aside when an operator accepted the loss of
//!   the records before it (`resume --accept-loss`); kept for forensics, never read as history
//!
//! Durability: sled's `flush()` only writes (the published 0.34 also waited in
//! `sync_file_range`, which does not reach the disk's cache; runbook's copy of sled does not,
//! see vendor/sled/VENDORED.md), and its own fsync runs on a 500 ms timer we turn off. So every
//! commit `fdatasync`s sled's log file (and any new blob files) itself — the one sync a commit
//! pays — and concurrent commits share that sync (group commit).
//!
//! Integrity: every record carries a CRC32 and its run's sequence number, every summary the hash
//! chain over its run's records, and the witness file ([`crate::witness`]) remembers, outside
//! sled, how many records each run had and their chain once they were durable. Opening compares
//! the two; a run whose store lost or changed records is *untrusted*: reading it reports the first
//! bad record, appending to it is refused, and only [`Journal::accept_loss`] (an operator's
//! decision) continues it.
//!
//! Opening for reading only ([`SledJournal::open_read_only`]) works on a private copy of the
//! store ([`crate::view_copy`]), so a command that only reads never changes a byte of the journal.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use chrono::Utc;

use crate::error_chain;
use crate::held::{Books, CachedSummary, Held, Indexed, Snapshot};
use crate::sled_writer::{Op, Reply};
use crate::witness::{self, Chain};
use crate::{Event, Journal, JournalError, JournalStats, Pending, Record, RunId, RunSummary};

const EVENT: u8 = b'e';
const SUMMARY: u8 = b's';
const LOCK: u8 = b'l';
const META: u8 = b'm';
const QUARANTINE: u8 = b'q';

/// Length of an event key: prefix, run id, seq.
const EVENT_KEY_LEN: usize = 1 + 16 + 8;

/// The file, inside the journal directory, in which the opening process describes itself.
const HOLDER_FILE: &str = "holder";

/// The substring sled 0.34 puts in the error it returns when another handle holds the db lock.
const SLED_LOCK_ERROR: &str = "could not acquire lock";

const POISONED: &str = "journal mutex poisoned";

/// How many runs a listing looks at under the summaries' lock at a time ([`Journal::newest_runs`]).
const LISTING_CHUNK: usize = 256;

/// Tuning for [`SledJournal::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SledOptions {
    /// Size of sled's page cache. sled's own default (1 GiB) bloats memory, so it is always set.
    /// 8 MiB: commits touch only the newest pages of each run, summaries are kept in memory
    /// apart from sled, and a run's records read once (a resume, `log`) stream through; with
    /// 10,000 runs parked in `serve` the cache is full, and 16 MiB put its RSS at 78–84 MiB
    /// against 68–74 MiB with 8 (`bench/run --only rss`).
    pub cache_capacity_bytes: u64,
    /// How long to keep trying when the journal is held by someone else. A process killed
    /// while it was starting a child can leave its lock with that child for the moment
    /// between fork and exec (the child's copy of the descriptor closes only at exec), so
    /// the next command may briefly find the journal busy.
    pub busy_wait: std::time::Duration,
    /// How many records of finished runs the live store may hold before opening for writing
    /// moves those runs to the archive and writes a new live store ([`crate::live_store`]):
    /// [`crate::ARCHIVE_AFTER`], or `RUNBOOK_JOURNAL_ARCHIVE_AFTER` from the environment.
    pub archive_after: u64,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity_bytes: 8 * 1024 * 1024,
            busy_wait: std::time::Duration::from_secs(2),
            archive_after: std::env::var("RUNBOOK_JOURNAL_ARCHIVE_AFTER")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(crate::ARCHIVE_AFTER),
        }
    }
}

/// What is wrong with an untrusted run: the first bad record and what is wrong with it.
type Problem = (u64, String);

/// What only the sync leader touches.
#[derive(Debug)]
struct Syncer {
    /// sled's log file, opened read-only: `fdatasync` works on any descriptor of the file.
    db_file: File,
    /// Blob files already known to be durable.
    known_blobs: HashSet<OsString>,
    /// sled's count of blob files written ([`sled::blobs_written`]) when the blob directory
    /// was last listed: while it stays the same, no blob appeared and the listing is skipped.
    listed_at: Option<u64>,
}

/// Whether the journal may be written, and what that needs.
enum Mode {
    /// Held for writing: commits are witnessed.
    Write(witness::Writer),
    /// A read-only view over a copy of the store, removed when the journal is dropped.
    Read(#[allow(dead_code)] tempfile::TempDir),
}

/// The sled store the journal reads and writes now.
struct Live {
    /// Where sled's files are: the live store ([`crate::live_store`]), or a copy of it for a
    /// read-only view.
    files: PathBuf,
    db: sled::Db,
}

/// The live store's tree, read while the store cannot be replaced.
pub(crate) struct Db<'a>(RwLockReadGuard<'a, Live>);

impl std::ops::Deref for Db<'_> {
    type Target = sled::Db;
    fn deref(&self) -> &sled::Db {
        &self.0.db
    }
}

/// A [`Journal`] stored in a sled database, one process at a time. Reads go to the tree;
/// writes go to the journal's writer thread ([`crate::sled_writer`]).
pub struct SledJournal {
    pub(crate) store: Arc<Store>,
    /// `None` in a read-only view.
    writer: Option<crate::sled_writer::Handle>,
}

/// The journal's state, shared by readers and the writer thread.
pub(crate) struct Store {
    /// The journal directory.
    pub(crate) dir: PathBuf,
    /// The live store: replaced when the writer compacts it ([`Store::compact_while_open`]).
    live: RwLock<Live>,
    /// How the journal was opened.
    opts: SledOptions,
    mode: Mode,
    /// The journal's lock, held while the journal is open for writing.
    held: Option<nix::fcntl::Flock<File>>,
    /// Runs read from the archive ([`crate::archive`]): their records are not in the store.
    /// Only those whose summaries were loaded ([`Store::load_archive`]) or that this process
    /// archived.
    archived: Mutex<HashSet<RunId>>,
    /// Whether the archive's index was loaded into `summaries` and `archived`. Opening does not
    /// read it: a command about a live run (`run`, `resume`, `approve`) costs the same however
    /// many finished runs the archive holds; the first listing, or a run not in the live store,
    /// loads it (once). Taken before `archived`, `summaries`, `witnessed` and `untrusted`.
    archive_loaded: Mutex<bool>,
    /// The records of finished runs the live store held when this process's last compaction
    /// failed before the pointer changed (none since it succeeded): the next attempt waits for
    /// as many more again ([`crate::live_store::Tally::due`]).
    compaction_failed: Mutex<Option<u64>>,
    /// Every run's summary, loaded at open and kept current by the writer (after its batch is
    /// applied); an archived run's as its place in the archive's index ([`Held`]). Ordered by
    /// id, which is creation order.
    summaries: Mutex<BTreeMap<RunId, Held>>,
    /// The runbooks' names of the runs held as places (taken after `summaries`, never before).
    books: Mutex<Books>,
    /// The latest witness entry of each run: what it had once its last commit was durable.
    /// Of the runs not in the live store, only once the archive is loaded (their entries may
    /// be in the archive's witness).
    witnessed: Mutex<BTreeMap<RunId, witness::Entry>>,
    /// Runs whose history cannot be trusted, with the first bad record.
    untrusted: Mutex<BTreeMap<RunId, Problem>>,
    /// Witness entries that could not be read (their runs are checked against older entries).
    witness_damage: Vec<u64>,
    /// Set once a write or sync failed: after that we cannot know what reached the disk (a
    /// failed fsync may drop the dirty pages), so the journal refuses further writes.
    failed: Mutex<Option<String>>,
    syncer: Mutex<Syncer>,
    commits: AtomicU64,
    syncs: AtomicU64,
}

impl std::fmt::Debug for SledJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledJournal")
            .field("dir", &self.store.dir)
            .finish_non_exhaustive()
    }
}

impl SledJournal {
    /// Opens (creating if needed, owner-only) the journal in `dir` for writing; fails with
    /// [`JournalError::Busy`] if another handle holds it.
    pub fn open(dir: &Path, opts: SledOptions) -> Result<Self, JournalError> {
        Self::open_stopping(dir, opts, None)
    }

    /// [`SledJournal::open`], with a compaction that stops at `stop` as a crash there would
    /// (the crash tests).
    pub(crate) fn open_stopping(
        dir: &Path,
        opts: SledOptions,
        stop: Option<crate::live_store::Step>,
    ) -> Result<Self, JournalError> {
        let created = !dir.exists();
        create_private_dir(dir)?;
        restrict(dir, 0o700)?;
        let lock = crate::live_store::lock(dir, true, opts.busy_wait, || read_holder(dir))?;
        let files = crate::live_store::current(dir)?;
        crate::live_store::clean(dir, &files)?;

        let witnessed = witness::read(dir)
            .map_err(|source| io_error("read", &dir.join(witness::FILE), source))?;
        let db = open_sled(&files, opts, || read_holder(dir))?;
        let live = load_summaries(&db)?;
        let (db_file, known_blobs) = settle_store(dir, &files)?;
        if created && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent, "sync directory")?;
        }

        let summaries = live;
        // Rewrite the witness to one entry per live run when it has grown long — unless some
        // entry is damaged: then the file is evidence, and stays as it is. The latest entries of
        // runs no longer live go to the archive's witness first, read with the archive's index:
        // opening reads what the live runs need, however many runs the archive holds. A witness
        // that is missing while the store holds runs (deleted, or a journal from before
        // witnesses) is started from the store and the archive as they are now.
        let split = witness::split(&witnessed, |id| summaries.contains_key(&id), witness::SLACK);
        let compact = if let Some(split) = split {
            if !split.moved.is_empty() {
                crate::archive::keep_witnessed(dir, &split.moved)?;
            }
            Some(split.kept)
        } else if !witnessed.present && !summaries.is_empty() {
            tracing::warn!(
                dir = %dir.display(),
                "the journal has no witness file; starting one from the store as it is now"
            );
            Some(witness_from(&with_archived(dir, summaries.clone())?.0))
        } else {
            None
        };
        let writer = witness::Writer::open(dir, compact.as_ref())
            .map_err(|source| io_error("open", &dir.join(witness::FILE), source))?;

        let holder_path = dir.join(HOLDER_FILE);
        write_private(&holder_path, holder_description().as_bytes())
            .map_err(|source| io_error("write holder file", &holder_path, source))?;

        let mut store = Store::assemble(
            dir,
            &files,
            db,
            db_file,
            Mode::Write(writer),
            summaries,
            opts,
        );
        store.syncer.get_mut().expect(POISONED).known_blobs = known_blobs;
        store.held = lock;
        store.verify_against(compact.as_ref().unwrap_or(&witnessed));
        // Before the writer starts: a store that cannot be written (the pointer changed but
        // may not be durable) is not opened.
        store.compact(stop)?;
        let store = Arc::new(store);
        let writer = crate::sled_writer::Handle::start(Arc::clone(&store))
            .map_err(|source| io_error("start the writer of", dir, source))?;
        Ok(Self {
            store,
            writer: Some(writer),
        })
    }

    /// Opens a read-only view of the journal in `dir`: a private copy of its store, verified
    /// against its witness. Nothing in `dir` is created or changed; a missing journal is an
    /// empty one. Fails with [`JournalError::Busy`] while another process holds the journal.
    pub fn open_read_only(dir: &Path, opts: SledOptions) -> Result<Self, JournalError> {
        // Read before copying: every witnessed commit was durable in the store before its entry
        // was written, so the copy taken after holds at least what this says. (A store that is
        // gone while the witness remains reports every run the witness knows.)
        // The shared lock keeps a writer (and its compaction) out while the store is copied.
        let shared = crate::live_store::lock(dir, false, opts.busy_wait, || read_holder(dir))?;
        let files = crate::live_store::current(dir)?;
        let witnessed = witness::read(dir)
            .map_err(|source| io_error("read", &dir.join(witness::FILE), source))?;
        let copy = if files.join("db").exists() {
            crate::view_copy::copy_store(&files, opts.busy_wait, || read_holder(dir))?
        } else {
            tempfile::Builder::new()
                .prefix("runbook-journal-view-")
                .tempdir()
                .map_err(|source| io_error("create an empty view of", dir, source))?
        };
        let (copy, db, unreadable) = match open_sled(copy.path(), opts, || None) {
            Ok(db) => (copy, db, None),
            // The store cannot be opened at all: the runs the witness knows are named, each
            // reported as damaged, instead of one error that names none of them.
            Err(e) if !witnessed.runs.is_empty() => {
                let empty = tempfile::Builder::new()
                    .prefix("runbook-journal-view-")
                    .tempdir()
                    .map_err(|source| io_error("create an empty view of", dir, source))?;
                let db = open_sled(empty.path(), opts, || None)?;
                (empty, db, Some(error_chain(&e)))
            }
            Err(e) => return Err(e),
        };
        let store = copy.path().to_path_buf();
        let db_path = store.join("db");
        let db_file = File::open(&db_path).map_err(|source| io_error("open", &db_path, source))?;
        let summaries = load_summaries(&db)?;
        drop(shared);
        let mut journal =
            Store::assemble(dir, &store, db, db_file, Mode::Read(copy), summaries, opts);
        journal.verify_against(&witnessed);
        if let Some(error) = unreadable {
            let untrusted = journal.untrusted.get_mut().expect(POISONED);
            for (id, entry) in &witnessed.runs {
                untrusted.insert(
                    *id,
                    (
                        1,
                        format!(
                            "the journal's store cannot be read ({error}); it held {} records \
                             of this run",
                            entry.seq
                        ),
                    ),
                );
            }
        }
        Ok(Self {
            store: Arc::new(journal),
            writer: None,
        })
    }

    /// The directory the journal lives in.
    pub fn dir(&self) -> &Path {
        &self.store.dir
    }

    /// Damaged witness entries found at open (indexes; `u64::MAX` for the header).
    pub fn witness_damage(&self) -> &[u64] {
        &self.store.witness_damage
    }

    fn writer(&self) -> Result<&crate::sled_writer::Handle, JournalError> {
        self.writer
            .as_ref()
            .ok_or_else(|| JournalError::ReadOnly(self.store.dir.clone()))
    }
}

impl Store {
    fn assemble(
        dir: &Path,
        files: &Path,
        db: sled::Db,
        db_file: File,
        mode: Mode,
        summaries: BTreeMap<RunId, CachedSummary>,
        opts: SledOptions,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            live: RwLock::new(Live {
                files: files.to_path_buf(),
                db,
            }),
            opts,
            mode,
            held: None,
            archived: Mutex::new(HashSet::new()),
            archive_loaded: Mutex::new(false),
            compaction_failed: Mutex::new(None),
            summaries: Mutex::new(
                summaries
                    .into_iter()
                    .map(|(id, summary)| (id, Held::whole(summary)))
                    .collect(),
            ),
            books: Mutex::new(Books::default()),
            witnessed: Mutex::new(BTreeMap::new()),
            untrusted: Mutex::new(BTreeMap::new()),
            witness_damage: Vec::new(),
            failed: Mutex::new(None),
            syncer: Mutex::new(Syncer {
                db_file,
                // A writer's open settles the blobs already there (`settle_blobs`); a reader
                // never syncs.
                known_blobs: HashSet::new(),
                listed_at: None,
            }),
            commits: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
        }
    }

    /// Compares every run's summary with what the witness saw durable; marks runs that lost or
    /// changed records as untrusted.
    fn verify_against(&mut self, witnessed: &witness::Witnessed) {
        {
            let summaries = self.summaries.get_mut().expect(POISONED);
            let untrusted = self.untrusted.get_mut().expect(POISONED);
            // A run not in the live store may be in the archive: it is compared when the
            // archive is loaded ([`Store::load_archive`]).
            for (id, entry) in &witnessed.runs {
                if let Some(summary) = summaries.get(id).and_then(Held::as_whole)
                    && let Some(problem) = compare(Found::of(summary), entry)
                {
                    untrusted.insert(*id, problem);
                }
            }
        }
        *self.witnessed.get_mut().expect(POISONED) = witnessed.runs.clone();
        if !witnessed.damaged.is_empty() {
            tracing::warn!(
                dir = %self.dir.display(),
                entries = ?witnessed.damaged,
                "some entries of the journal's witness are damaged; the runs they were about are \
                 checked against earlier entries"
            );
        }
        self.witness_damage.clone_from(&witnessed.damaged);
    }

    /// The live store's tree (reads hold off its replacement while they last).
    pub(crate) fn db(&self) -> Db<'_> {
        Db(self.live.read().expect(POISONED))
    }

    fn summaries(&self) -> MutexGuard<'_, BTreeMap<RunId, Held>> {
        self.summaries.lock().expect(POISONED)
    }

    /// Makes sure run `id` is known if the journal has it: loads the archive when `id` is not
    /// in the live store. Not to be called holding `summaries`, `archived`, `witnessed` or
    /// `untrusted`.
    fn know(&self, id: RunId) -> Result<(), JournalError> {
        if self.summaries().contains_key(&id) {
            return Ok(());
        }
        self.load_archive()
    }

    /// Loads the archive's index, once: the archived runs' summaries join the live ones (a run
    /// in both is read from the live store), the archive's witness joins the journal's, and the
    /// witness's entries of runs that are not in the live store are compared now — with the
    /// archived summary, or as a run gone from the journal.
    fn load_archive(&self) -> Result<(), JournalError> {
        let mut loaded = self.archive_loaded.lock().expect(POISONED);
        if *loaded {
            return Ok(());
        }
        // Read without the summaries' lock: commits go on meanwhile.
        let index = crate::archive::scan(&self.dir)?;
        let kept = crate::archive::witnessed(&self.dir)?;
        if !kept.damaged.is_empty() {
            tracing::warn!(
                dir = %self.dir.display(),
                entries = ?kept.damaged,
                "entries of the archive's witness fail their checksum; the runs they were of \
                 are checked against the archive's own checksums only"
            );
        }
        let problems: Vec<(RunId, Problem)> = {
            let mut archived = self.archived.lock().expect(POISONED);
            let mut summaries = self.summaries();
            let mut books = self.books.lock().expect(POISONED);
            for (id, line) in &index {
                if let std::collections::btree_map::Entry::Vacant(slot) = summaries.entry(*id) {
                    // Held as its place: the summary is read back from the index when asked for.
                    slot.insert(match line {
                        Ok((place, _, runbook)) => {
                            Held::Indexed(Indexed::new(*place, books.number(runbook)))
                        }
                        Err(detail) => Held::whole(Err(detail.clone())),
                    });
                    archived.insert(*id);
                }
            }
            drop(books);
            let mut witnessed = self.witnessed.lock().expect(POISONED);
            // The journal's own witness is the later word on a run in both.
            for (id, entry) in kept.runs {
                witnessed.entry(id).or_insert(entry);
            }
            // An archived run is compared with its index line (one this process archived whose
            // line the index read lacks, with what it held of it), a run in no store as gone.
            witnessed
                .iter()
                .filter(|(id, _)| archived.contains(id) || !summaries.contains_key(id))
                .filter_map(|(id, entry)| {
                    let found = match index.get(id) {
                        Some(Ok((_, claim, _))) => Found::Claims(*claim),
                        Some(Err(_)) => Found::Unreadable,
                        None => match summaries.get(id) {
                            Some(Held::Whole(summary)) => Found::of(summary),
                            // Gone from the store, or its index line gone from the index.
                            None | Some(Held::Indexed(_)) => Found::Gone,
                        },
                    };
                    compare(found, entry).map(|p| (*id, p))
                })
                .collect()
        };
        drop(index);
        let mut untrusted = self.untrusted.lock().expect(POISONED);
        for (id, problem) in problems {
            untrusted.entry(id).or_insert(problem);
        }
        *loaded = true;
        Ok(())
    }

    pub(crate) fn problem(&self, id: RunId) -> Option<JournalError> {
        if let Err(e) = self.know(id) {
            return Some(e);
        }
        self.untrusted
            .lock()
            .expect(POISONED)
            .get(&id)
            .map(|(seq, detail)| JournalError::Corrupt {
                run: id,
                seq: *seq,
                detail: detail.clone(),
            })
    }

    fn distrust(&self, id: RunId, seq: u64, detail: String) {
        self.untrusted
            .lock()
            .expect(POISONED)
            .entry(id)
            .or_insert((seq, detail));
    }

    pub(crate) fn cached_summary(&self, id: RunId) -> Result<RunSummary, JournalError> {
        self.know(id)?;
        let place = match self.summaries().get(&id) {
            None => return Err(JournalError::NoSuchRun(id.to_string())),
            Some(Held::Whole(summary)) => {
                return match summary.as_ref() {
                    Ok(summary) => Ok(summary.clone()),
                    Err(detail) => Err(corrupt_summary(id, detail)),
                };
            }
            Some(Held::Indexed(run)) => run.place(),
        };
        match crate::archive::read_places(&self.dir, &[(id, place)]).pop() {
            Some(Ok(summary)) => Ok(summary),
            Some(Err(detail)) => Err(corrupt_summary(id, &detail)),
            None => Err(JournalError::NoSuchRun(id.to_string())),
        }
    }

    /// The summaries of `taken`, in order, each with whether it was read back: whole ones as
    /// taken, indexed ones read back from the archive's index (one whose line no longer reads
    /// is left out, and warned about).
    fn read_back(&self, taken: Vec<(RunId, Snapshot)>) -> Vec<(RunSummary, bool)> {
        let places: Vec<(RunId, crate::archive::Place)> = taken
            .iter()
            .filter_map(|(id, s)| match s {
                Snapshot::Indexed(place) => Some((*id, *place)),
                Snapshot::Whole(_) => None,
            })
            .collect();
        let mut read = crate::archive::read_places(&self.dir, &places).into_iter();
        taken
            .into_iter()
            .filter_map(|(id, s)| match s {
                Snapshot::Whole(summary) => Some((summary, false)),
                Snapshot::Indexed(_) => match read.next() {
                    Some(Ok(summary)) => Some((summary, true)),
                    Some(Err(detail)) => {
                        tracing::warn!(run = %id, detail, "an archived run's summary cannot be read back");
                        None
                    }
                    None => None,
                },
            })
            .collect()
    }

    /// The witness writer, or the read-only refusal.
    fn witness_writer(&self) -> Result<&witness::Writer, JournalError> {
        match &self.mode {
            Mode::Write(writer) => Ok(writer),
            Mode::Read(_) => Err(JournalError::ReadOnly(self.dir.clone())),
        }
    }

    /// Refuses to write once a write or sync has failed (see [`Store::failed`]), and in a
    /// read-only view.
    pub(crate) fn check_writable(&self) -> Result<(), JournalError> {
        self.witness_writer()?;
        match &*self.failed.lock().expect(POISONED) {
            None => Ok(()),
            Some(msg) => Err(self.failed_error(msg)),
        }
    }

    pub(crate) fn failed_error(&self, msg: &str) -> JournalError {
        io_error(
            "write to",
            &self.dir,
            io::Error::other(format!(
                "an earlier write failed ({msg}); nothing more is written by this process, and \
                 the journal is consistent up to its last durable commit"
            )),
        )
    }

    /// Remembers that a write failed: nothing more is written.
    pub(crate) fn fail(&self, msg: &str) {
        let mut failed = self.failed.lock().expect(POISONED);
        if failed.is_none() {
            *failed = Some(msg.to_owned());
        }
    }

    /// Marks the journal failed with `e` and returns it.
    fn fail_with(&self, e: JournalError) -> JournalError {
        self.fail(&error_chain(&e));
        e
    }

    /// Applies `batch` to the tree (not yet durable).
    pub(crate) fn apply(&self, batch: sled::Batch) -> Result<(), JournalError> {
        self.db()
            .apply_batch(batch)
            .map_err(|e| self.fail_with(sled_error("write to", &self.dir, e)))?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes sled's buffers and makes them durable.
    pub(crate) fn sync_now(&self) -> Result<(), JournalError> {
        let mut syncer = self.syncer.lock().expect(POISONED);
        // Values above sled's blob threshold were written to their own files while the batch
        // was applied; sync them before the log that points at them.
        self.sync_new_blobs(&mut syncer)?;
        self.db()
            .flush()
            .map_err(|e| sled_error("write to", &self.dir, e))?;
        // Flushing may rewrite large pages as blobs too.
        self.sync_new_blobs(&mut syncer)?;
        syncer
            .db_file
            .sync_data()
            .map_err(|source| io_error("sync", &self.db().0.files.join("db"), source))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync_new_blobs(&self, syncer: &mut Syncer) -> Result<(), JournalError> {
        // Only blobs that appeared since the last commit are synced one by one: those a
        // previous process left were settled at open. Nothing to look for while sled wrote
        // no blob since the last listing (read before listing: a blob written meanwhile
        // changes the count again).
        let written = sled::blobs_written();
        if syncer.listed_at == Some(written) {
            return Ok(());
        }
        let blobs = self.db().0.files.join("blobs");
        let entries = match fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io_error("list", &blobs, source)),
        };
        let mut present = HashSet::new();
        let mut appeared = false;
        for entry in entries {
            let entry = entry.map_err(|source| io_error("list", &blobs, source))?;
            let name = entry.file_name();
            if !syncer.known_blobs.contains(&name) {
                let path = entry.path();
                match File::open(&path).and_then(|f| f.sync_data()) {
                    Ok(()) => appeared = true,
                    // sled removes blobs it no longer needs, possibly right after we listed it.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(io_error("sync", &path, source)),
                }
            }
            present.insert(name);
        }
        if appeared {
            sync_path(&blobs, "sync directory")?;
        }
        // Forget blobs sled has removed, so the set does not grow forever.
        syncer.known_blobs = present;
        syncer.listed_at = Some(written);
        Ok(())
    }

    /// Records durable commits in the witness (one write for all of them).
    pub(crate) fn witness(&self, entries: &[witness::Entry]) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.witness_writer()?.append(entries).map_err(|msg| {
            io_error(
                "write to",
                &self.dir.join(witness::FILE),
                io::Error::other(msg),
            )
        })?;
        let mut witnessed = self.witnessed.lock().expect(POISONED);
        for entry in entries {
            witnessed.insert(entry.run, *entry);
        }
        if entries.iter().any(|e| e.kind == witness::Kind::Accept) {
            let mut untrusted = self.untrusted.lock().expect(POISONED);
            for entry in entries.iter().filter(|e| e.kind == witness::Kind::Accept) {
                untrusted.remove(&entry.run);
            }
        }
        Ok(())
    }

    /// Compacts the live store while the journal is open (see [`crate::live_store`]) when it
    /// holds enough records of finished runs: called by the writer thread, the only one that
    /// writes, after a commit that ended a run. Readers go on reading the old store meanwhile;
    /// the new one replaces it once no read is under way. A failure before the pointer changed
    /// leaves everything as it was (tried again once as many more records of finished runs are
    /// in the store); one after it refuses every further write, as a failed sync does.
    pub(crate) fn compact_while_open(&self) {
        if let Err(e) = self.compact(None) {
            self.fail(&error_chain(&e));
        }
    }

    /// Compacts the live store if it is due (see [`crate::live_store`]); `stop` ends the
    /// compaction after a step as a crash there would (tests: the old store is then left for
    /// the next open to remove). An error only when the store can no longer be written: the
    /// pointer changed but may not be durable, or the new store does not open.
    pub(crate) fn compact(
        &self,
        stop: Option<crate::live_store::Step>,
    ) -> Result<(), JournalError> {
        if self.witness_writer().is_err() {
            return Ok(());
        }
        let failed_at = *self.compaction_failed.lock().expect(POISONED);
        let (live, tally): (BTreeMap<RunId, CachedSummary>, _) = {
            let archived = self.archived.lock().expect(POISONED);
            let summaries = self.summaries();
            // Runs not archived are held whole.
            let live = || {
                summaries
                    .iter()
                    .filter(|(id, _)| !archived.contains(id))
                    .filter_map(|(id, held)| held.as_whole().map(|s| (id, s)))
            };
            // Cloned only when due: this runs after every commit that ends a run.
            let tally = crate::live_store::Tally::of(live().filter_map(|(_, s)| s.as_ref().ok()));
            if !tally.due(self.opts.archive_after, failed_at) {
                return Ok(());
            }
            (live().map(|(id, s)| (*id, s.clone())).collect(), tally)
        };
        let witnessed = self.witnessed.lock().expect(POISONED).clone();
        let (old, db) = {
            let current = self.db();
            (current.0.files.clone(), current.0.db.clone())
        };
        let compacted = crate::live_store::Compaction {
            journal: &self.dir,
            old: &old,
            db: &db,
            summaries: &live,
            witnessed: &witnessed,
            cache_capacity_bytes: self.opts.cache_capacity_bytes,
        }
        .run(stop);
        drop(db);
        let done = match compacted {
            Ok(done) if done.live != old => {
                *self.compaction_failed.lock().expect(POISONED) = None;
                done
            }
            Ok(_) => return Ok(()),
            // Compaction only makes opening faster: the journal goes on as it was.
            Err(crate::live_store::Failure::Kept(e)) => {
                *self.compaction_failed.lock().expect(POISONED) = Some(tally.finished);
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %error_chain(&e),
                    finished_records = tally.finished,
                    "could not compact the journal's live store; it stays as it is, and is \
                     compacted again once as many more records of finished runs are in it"
                );
                return Ok(());
            }
            Err(crate::live_store::Failure::Unsettled(e)) => return Err(e),
        };
        let archived: Vec<RunId> = done.places.iter().map(|(id, _)| *id).collect();
        // The pointer names the new store: from here on only it may be written.
        let db = open_sled(&done.live, self.opts, || None)?;
        let (db_file, known_blobs) = settle_store(&self.dir, &done.live)?;
        {
            // Locks in the order every other path takes them: the syncer (`sync_now`), the
            // store, the archived runs (`read_after`). Readers decide where a run is under the
            // store's read lock, so they see the new store and the runs moved out of it together.
            let mut syncer = self.syncer.lock().expect(POISONED);
            let mut live = self.live.write().expect(POISONED);
            *live = Live {
                files: done.live.clone(),
                db,
            };
            self.archived
                .lock()
                .expect(POISONED)
                .extend(archived.iter().copied());
            // Their summaries are held as their places in the index from now on.
            let mut summaries = self.summaries();
            let mut books = self.books.lock().expect(POISONED);
            for (id, place) in &done.places {
                if let Some(held) = summaries.get_mut(id)
                    && let Held::Whole(summary) = held
                    && let Ok(summary) = summary.as_ref()
                {
                    *held = Held::Indexed(Indexed::new(*place, books.number(&summary.runbook)));
                }
            }
            syncer.db_file = db_file;
            syncer.known_blobs = known_blobs;
        }
        // The archived runs are read from the archive now: their follow mirrors go.
        let (mirrors, failed) = crate::follow_mirror::remove(&self.dir, &archived);
        if let Some((path, e)) = failed {
            tracing::warn!(
                path = %path.display(),
                error = %e,
                "could not remove the follow mirror of a run moved to the archive"
            );
        }
        if stop.is_none()
            && let Err(e) = crate::live_store::clean(&self.dir, &done.live)
        {
            tracing::warn!(
                dir = %self.dir.display(),
                error = %error_chain(&e),
                "could not remove the replaced live store; the next open does"
            );
        }
        tracing::info!(
            dir = %self.dir.display(),
            runs = archived.len(),
            mirrors,
            "moved finished runs to the journal's archive and wrote a new live store"
        );
        Ok(())
    }

    /// Whether the archive's index was loaded (tests).
    #[cfg(test)]
    pub(crate) fn archive_is_loaded(&self) -> bool {
        *self.archive_loaded.lock().expect(POISONED)
    }

    /// Whether run `id`'s summary is held as its place in the archive's index (tests).
    #[cfg(test)]
    pub(crate) fn is_indexed(&self, id: RunId) -> bool {
        matches!(self.summaries().get(&id), Some(Held::Indexed(_)))
    }

    /// Whether run `id` is read from the archive.
    pub(crate) fn is_archived(&self, id: RunId) -> bool {
        // A run not known yet is looked for in the archive first (an error there: not read
        // from it).
        let _ = self.know(id);
        self.archived.lock().expect(POISONED).contains(&id)
    }

    /// The verified records of archived run `id`, each with its JSON as stored.
    fn archived_records(
        &self,
        summary: &RunSummary,
    ) -> Result<crate::archive::Lines, JournalError> {
        let witnessed = self
            .witnessed
            .lock()
            .expect(POISONED)
            .get(&summary.id)
            .copied();
        crate::archive::read(&self.dir, summary, witnessed)
    }

    /// Before a write to a run that was archived (a retry or an accepted loss reopens it): puts
    /// its records — all of them, or the `intact` prefix — back into `batch`, so that the live
    /// store holds the whole run again. The bytes it put back if it did (for the free-space
    /// check); once the batch is applied, call [`Store::unarchived`].
    pub(crate) fn restore_archived(
        &self,
        batch: &mut sled::Batch,
        summary: &RunSummary,
        intact: bool,
    ) -> Result<Option<usize>, JournalError> {
        let id = summary.id;
        if !self.is_archived(id) {
            return Ok(None);
        }
        let records = if intact {
            crate::archive::prefix(&self.dir, id).0
        } else {
            self.archived_records(summary)?
        };
        let mut bytes = 0;
        for (record, json) in records {
            let value = stored_value(&json);
            bytes += EVENT_KEY_LEN + value.len();
            batch.insert(&event_key(id, record.seq)[..], value);
        }
        Ok(Some(bytes))
    }

    /// Run `id` is in the live store again (its restoring batch was applied): it is read from
    /// there, and archived again by a later compaction once it is over.
    pub(crate) fn unarchived(&self, id: RunId) {
        self.archived.lock().expect(POISONED).remove(&id);
    }

    /// Whether run `id` exists (readable or not). Does not load the archive: a run created
    /// now is looked for there by its file.
    pub(crate) fn has_run(&self, id: RunId) -> bool {
        if self.summaries().contains_key(&id) {
            return true;
        }
        let loaded = *self.archive_loaded.lock().expect(POISONED);
        !loaded && crate::archive::has_run(&self.dir, id)
    }

    /// Keeps a written run's summary current for readers.
    pub(crate) fn set_summary(&self, summary: RunSummary) {
        self.summaries()
            .insert(summary.id, Held::whole(Ok(summary)));
    }

    /// Refuses a commit of `payload` bytes the disk cannot hold.
    pub(crate) fn check_space(&self, payload: usize) -> Result<(), JournalError> {
        crate::space::check(&self.dir, payload as u64)
    }

    /// The chain over a run's records as stored, for a summary written before chains were kept.
    pub(crate) fn chain_of_stored(&self, id: RunId, last_seq: u64) -> Result<Chain, JournalError> {
        let mut chain = witness::chain_start(id);
        for seq in 1..=last_seq {
            let value = self
                .db()
                .get(event_key(id, seq))
                .map_err(|e| sled_error("read", &self.dir, e))?
                .ok_or_else(|| JournalError::Corrupt {
                    run: id,
                    seq,
                    detail: format!("record {seq} missing"),
                })?;
            chain = witness::chain_next(&chain, json_part(&value));
        }
        Ok(chain)
    }

    /// Reads and verifies the records of `id` with `seq > after`, up to `last_seq`; a full read
    /// (`after == 0`) also checks the hash chain against the summary and the witness.
    fn verified_records(
        &self,
        db: &sled::Db,
        id: RunId,
        after: u64,
        summary: &RunSummary,
    ) -> Result<Vec<Record>, JournalError> {
        let last_seq = summary.last_seq;
        let corrupt = |seq: u64, detail: String| JournalError::Corrupt {
            run: id,
            seq,
            detail,
        };
        let start = event_key(id, after.saturating_add(1));
        let end = event_key(id, u64::MAX);
        let mut records = Vec::new();
        let mut expected = after.saturating_add(1);
        let witnessed = self.witnessed.lock().expect(POISONED).get(&id).copied();
        let mut chain = (after == 0).then(|| witness::chain_start(id));
        for entry in db.range(start..=end) {
            // A value sled cannot produce (a lost blob file, a damaged page) is a damaged record.
            let (key, value) = entry.map_err(|e| {
                corrupt(
                    expected,
                    format!(
                        "record {expected} cannot be read from the store: {}",
                        error_chain(&sled_error("read", &self.dir, e))
                    ),
                )
            })?;
            let key_seq = event_key_seq(&key).ok_or_else(|| {
                corrupt(
                    expected,
                    format!(
                        "malformed key of {} bytes after record {}",
                        key.len(),
                        expected - 1
                    ),
                )
            })?;
            if key_seq > last_seq {
                // Part of a batch still being applied: not yet in the summary we read, and
                // readers are not isolated from a batch in progress.
                break;
            }
            if key_seq != expected {
                let detail = if records.is_empty() {
                    format!("record {expected} missing: the next record found is {key_seq}")
                } else {
                    format!(
                        "record {expected} missing: log jumps from {} to {key_seq}",
                        expected - 1
                    )
                };
                return Err(corrupt(expected, detail));
            }
            let record = decode_record(&value).map_err(|detail| corrupt(key_seq, detail))?;
            if record.seq != key_seq {
                return Err(corrupt(
                    key_seq,
                    format!("key says {key_seq} but record says {}", record.seq),
                ));
            }
            if let Some(c) = chain.as_mut() {
                *c = witness::chain_next(c, json_part(&value));
                if let Some(w) = witnessed.filter(|w| w.seq == key_seq)
                    && w.chain != *c
                {
                    return Err(corrupt(
                        key_seq,
                        format!(
                            "the records up to {key_seq} are not those that were made durable \
                             (their hash chain differs from the witness's)"
                        ),
                    ));
                }
            }
            records.push(record);
            expected = key_seq + 1;
        }
        let last_found = expected - 1;
        if last_found < last_seq {
            let log_end = if records.is_empty() {
                // Nothing after `after`: report where the log really ends.
                db.range(event_key(id, 0)..=event_key(id, after))
                    .next_back()
                    .transpose()
                    .map_err(|e| sled_error("read", &self.dir, e))?
                    .and_then(|(key, _)| event_key_seq(&key))
                    .unwrap_or(0)
            } else {
                last_found
            };
            return Err(corrupt(
                last_found + 1,
                format!(
                    "the log ends at record {log_end} but the run's summary says {last_seq} \
                     (torn tail)"
                ),
            ));
        }
        if let (Some(c), Some(expected)) = (chain, summary.chain.as_deref())
            && witness::chain_from_hex(expected) != Some(c)
        {
            return Err(corrupt(
                last_seq,
                "the run's records do not match its summary's hash chain".to_owned(),
            ));
        }
        Ok(records)
    }

    /// The longest prefix of a run's stored records that is intact: contiguous from 1, each
    /// passing its checksum and decoding, with the chain over them.
    fn intact_prefix(&self, id: RunId) -> (Vec<Record>, Chain) {
        // Held while deciding where the run is: a compaction replaces the store and moves runs
        // to the archive at once.
        let db = self.db();
        if self.is_archived(id) {
            let (records, chain, _) = crate::archive::prefix(&self.dir, id);
            return (records.into_iter().map(|(r, _)| r).collect(), chain);
        }
        let mut records = Vec::new();
        let mut chain = witness::chain_start(id);
        for entry in db.range(event_key(id, 1)..=event_key(id, u64::MAX)) {
            let Ok((key, value)) = entry else { break };
            let expected = records.len() as u64 + 1;
            if event_key_seq(&key) != Some(expected) {
                break;
            }
            match decode_record(&value) {
                Ok(record) if record.seq == expected => {
                    chain = witness::chain_next(&chain, json_part(&value));
                    records.push(record);
                }
                _ => break,
            }
        }
        (records, chain)
    }

    pub(crate) fn lock_value(&self, key: &str) -> Result<Option<RunId>, JournalError> {
        let Some(value) = self
            .db()
            .get(lock_key(key))
            .map_err(|e| sled_error("read", &self.dir, e))?
        else {
            return Ok(None);
        };
        let bytes: [u8; 16] = value.as_ref().try_into().map_err(|_| {
            storage(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "lock `{key}` holds {} bytes, not a 16-byte run id",
                    value.len()
                ),
            ))
        })?;
        Ok(Some(RunId::from_bytes(bytes)))
    }
}

impl Drop for SledJournal {
    fn drop(&mut self) {
        // The writer finishes what is queued and stops first.
        if self.writer.take().is_some() {
            // Only informational; a stale file is overwritten by the next open.
            let _ = fs::remove_file(self.store.dir.join(HOLDER_FILE));
        }
    }
}

/// What the journal holds of a run the witness saw.
#[derive(Clone, Copy, Debug)]
enum Found {
    /// Nothing: the run is in no store.
    Gone,
    /// A summary that cannot be read (reported as such).
    Unreadable,
    /// A summary, claiming this.
    Claims(witness::Claim),
}

impl Found {
    fn of(summary: &CachedSummary) -> Self {
        summary
            .as_ref()
            .map_or(Self::Unreadable, |s| Self::Claims(witness::Claim::of(s)))
    }
}

/// What is wrong with a run of which the journal holds `found`, given the witness's latest
/// entry.
fn compare(found: Found, entry: &witness::Entry) -> Option<Problem> {
    let witnessed = entry.seq;
    match found {
        Found::Gone => Some((
            1,
            format!(
                "the run is gone from the journal's store, which once held {witnessed} of its \
                 records"
            ),
        )),
        Found::Claims(s) if s.last_seq < witnessed => Some((
            s.last_seq + 1,
            format!(
                "records {}–{witnessed} are missing: {witnessed} were durable, and the store \
                 now ends at record {}",
                s.last_seq + 1,
                s.last_seq
            ),
        )),
        Found::Claims(s)
            if s.last_seq == witnessed
                && match s.chain {
                    witness::Claimed::Unchained => false,
                    witness::Claimed::Bad => true,
                    witness::Claimed::Chain(chain) => chain != entry.chain,
                } =>
        {
            Some((
                witnessed,
                format!(
                    "the run's {witnessed} records are not those that were made durable (their \
                     hash chain differs from the witness's)"
                ),
            ))
        }
        // A corrupt summary is reported as such already. Otherwise the witness lags (it is
        // synced lazily): the records beyond it carry their own checksums, and the chain is
        // checked where the witness has a say when they are read.
        Found::Unreadable | Found::Claims(_) => None,
    }
}

/// A witness holding each run's state as the store has it now.
fn witness_from(summaries: &BTreeMap<RunId, CachedSummary>) -> witness::Witnessed {
    let runs = summaries
        .iter()
        .filter_map(|(id, s)| {
            let s = s.as_ref().ok()?;
            let chain = witness::chain_from_hex(s.chain.as_deref()?)?;
            Some((
                *id,
                witness::Entry {
                    kind: witness::Kind::Commit,
                    run: *id,
                    seq: s.last_seq,
                    chain,
                },
            ))
        })
        .collect();
    witness::Witnessed {
        runs,
        present: true,
        ..witness::Witnessed::default()
    }
}

impl Journal for SledJournal {
    fn insert(
        &self,
        id: RunId,
        lock: Option<&str>,
        take_lock: bool,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        self.writer()?.call(Op::Insert {
            id,
            lock: lock.map(str::to_owned),
            take_lock,
            events: events.to_vec(),
        })
    }

    fn write(
        &self,
        id: RunId,
        expected: u64,
        events: &[Event],
        lock: crate::LockChange,
    ) -> Result<Vec<Record>, JournalError> {
        self.writer()?.call(Op::Write {
            id,
            expected,
            events: events.to_vec(),
            lock,
        })
    }

    fn append_async(&self, id: RunId, expected: u64, events: Vec<Event>) -> Pending {
        let writer = match self.writer() {
            Ok(w) => w,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if events.is_empty() {
            let result = self.summary(id).map(|_| Vec::new());
            return Box::pin(std::future::ready(result));
        }
        let lock = crate::LockChange::of(&events);
        let (tx, rx) = tokio::sync::oneshot::channel();
        writer.submit(
            Op::Write {
                id,
                expected,
                events,
                lock,
            },
            Reply::Async(tx),
        );
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(JournalError::Storage(Box::new(io::Error::other(
                    "the journal's writer has stopped",
                ))))
            })
        })
    }

    fn read(&self, id: RunId) -> Result<Vec<Record>, JournalError> {
        self.read_after(id, 0)
    }

    fn read_after(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError> {
        self.store.read_after(id, after)
    }

    fn runs(&self) -> Result<Vec<RunSummary>, JournalError> {
        if let Some(problem) = self.problems().into_iter().next() {
            return Err(problem);
        }
        Ok(self.readable_runs())
    }

    fn readable_runs(&self) -> Vec<RunSummary> {
        let mut runs = self.newest_runs(&|_| true, &mut |_| true, usize::MAX);
        runs.reverse();
        runs
    }

    fn unfinished_runs(&self) -> Vec<RunSummary> {
        // The archive holds finished runs only (a run in both is read from the live store), so
        // it is not read: `status` costs the same beside 100,000 archived runs as beside none.
        self.store
            .summaries()
            .values()
            .filter_map(|held| held.as_whole()?.as_ref().ok())
            .filter(|s| !s.state.is_terminal())
            .cloned()
            .collect()
    }

    fn newest_runs(
        &self,
        could: &dyn Fn(crate::Brief<'_>) -> bool,
        wanted: &mut dyn FnMut(&RunSummary) -> bool,
        limit: usize,
    ) -> Vec<RunSummary> {
        if let Err(e) = self.store.load_archive() {
            tracing::warn!(error = %error_chain(&e), "could not read the journal's archive");
        }
        // Newest first, a chunk at a time: whole summaries are tested under the lock, archived
        // ones read back from the index (and tested) after it is released — only those `could`
        // lets through on their state and runbook, which are held with their places.
        let mut out = Vec::new();
        let mut below: Option<RunId> = None;
        while out.len() < limit {
            let mut taken = Vec::new();
            let mut last = None;
            {
                let summaries = self.store.summaries();
                let books = self.store.books.lock().expect(POISONED);
                let range = match below {
                    Some(id) => summaries.range(..id),
                    None => summaries.range(..),
                };
                for (id, held) in range.rev().take(LISTING_CHUNK) {
                    last = Some(*id);
                    match held {
                        Held::Whole(summary) => {
                            if let Ok(summary) = summary.as_ref()
                                && could(summary.brief())
                                && wanted(summary)
                            {
                                taken.push((*id, Snapshot::Whole(summary.clone())));
                            }
                        }
                        Held::Indexed(run) => {
                            // A run whose runbook is not known is read back and tested whole.
                            if books.brief(run).is_none_or(could) {
                                taken.push((*id, Snapshot::Indexed(run.place())));
                            }
                        }
                    }
                }
            }
            let Some(last) = last else { break };
            below = Some(last);
            // Whole ones were tested under the lock; those read back are tested now.
            let room = limit - out.len();
            out.extend(
                self.store
                    .read_back(taken)
                    .into_iter()
                    .filter(|(summary, read)| !read || (could(summary.brief()) && wanted(summary)))
                    .map(|(summary, _)| summary)
                    .take(room),
            );
        }
        out
    }

    fn state_counts(&self) -> std::collections::HashMap<crate::RunState, u64> {
        if let Err(e) = self.store.load_archive() {
            tracing::warn!(error = %error_chain(&e), "could not read the journal's archive");
        }
        let mut counts = std::collections::HashMap::new();
        for state in self.store.summaries().values().filter_map(Held::state) {
            *counts.entry(state).or_default() += 1;
        }
        counts
    }

    fn problems(&self) -> Vec<JournalError> {
        self.store.problems()
    }

    fn live_problems(&self) -> Vec<JournalError> {
        self.store.live_problems()
    }

    fn summary(&self, id: RunId) -> Result<RunSummary, JournalError> {
        self.store.cached_summary(id)
    }

    fn resolve(&self, prefix: &str) -> Result<RunId, JournalError> {
        self.store.resolve(prefix)
    }

    fn lock_holder(&self, key: &str) -> Result<Option<RunId>, JournalError> {
        self.store.lock_value(key)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, JournalError> {
        Ok(self
            .store
            .db()
            .get(meta_key(key))
            .map_err(|e| sled_error("read", &self.store.dir, e))?
            .map(|v| v.to_vec()))
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), JournalError> {
        self.writer()?
            .call(Op::PutMeta {
                key: key.to_owned(),
                value: value.to_vec(),
            })
            .map(|_| ())
    }

    fn swap_meta(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
    ) -> Result<bool, JournalError> {
        let swapped = self.writer()?.call(Op::SwapMeta {
            key: key.to_owned(),
            expected: expected.map(<[u8]>::to_vec),
            value: value.to_vec(),
        });
        match swapped {
            Ok(_) => Ok(true),
            Err(JournalError::MetaChanged(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn salvage(&self, id: RunId) -> Result<Vec<Record>, JournalError> {
        match self.read(id) {
            Ok(records) => Ok(records),
            Err(JournalError::Corrupt { .. }) => Ok(self.store.intact_prefix(id).0),
            Err(other) => Err(other),
        }
    }

    fn accept_loss(&self, id: RunId, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        if self.store.problem(id).is_none()
            && let Ok(summary) = self.store.cached_summary(id)
        {
            return self.append(id, summary.last_seq, events);
        }
        self.writer()?.call(Op::AcceptLoss {
            id,
            events: events.to_vec(),
        })
    }

    fn stats(&self) -> JournalStats {
        JournalStats {
            commits: self.store.commits.load(Ordering::Relaxed),
            syncs: self.store.syncs.load(Ordering::Relaxed),
        }
    }
}

impl Store {
    /// Records of run `id` with `seq > after`, verified.
    fn read_after(&self, id: RunId, after: u64) -> Result<Vec<Record>, JournalError> {
        if let Some(problem) = self.problem(id) {
            return Err(problem);
        }
        // The cached summary is updated only after its batch is fully applied, so every record
        // it counts is in the tree by now.
        let summary = self.cached_summary(id)?;
        if after >= summary.last_seq {
            return Ok(Vec::new());
        }
        // Held while deciding where the run is: a compaction replaces the store and moves runs
        // to the archive at once.
        let db = self.db();
        let read = if self.is_archived(id) {
            self.archived_records(&summary).map(|records| {
                records
                    .into_iter()
                    .map(|(record, _)| record)
                    .filter(|r| r.seq > after)
                    .collect()
            })
        } else {
            self.verified_records(&db, id, after, &summary)
        };
        drop(db);
        read.inspect_err(|e| {
            if let JournalError::Corrupt { seq, detail, .. } = e {
                self.distrust(id, *seq, detail.clone());
            }
        })
    }

    fn problems(&self) -> Vec<JournalError> {
        if let Err(e) = self.load_archive() {
            return vec![e];
        }
        self.known_problems()
    }

    /// The problems found without reading the archive: the live store's runs (compared with
    /// the witness at open), and the witnessed runs that are neither in the live store nor
    /// have a file in the archive (gone from the journal); whatever was found already.
    fn live_problems(&self) -> Vec<JournalError> {
        let loaded = self.archive_loaded.lock().expect(POISONED);
        let mut out = self.known_problems();
        if *loaded {
            return out;
        }
        let mut absent: Vec<(RunId, witness::Entry)> = {
            let summaries = self.summaries();
            let witnessed = self.witnessed.lock().expect(POISONED);
            witnessed
                .iter()
                .filter(|(id, _)| !summaries.contains_key(id))
                .map(|(id, entry)| (*id, *entry))
                .collect()
        };
        drop(loaded);
        {
            let untrusted = self.untrusted.lock().expect(POISONED);
            absent.retain(|(id, _)| !untrusted.contains_key(id));
        }
        // A witnessed run outside the live store with a file in the archive is compared when
        // the archive is read; one without is gone.
        out.extend(
            absent
                .iter()
                .filter(|(id, _)| !crate::archive::has_run(&self.dir, *id))
                .filter_map(|(id, entry)| {
                    compare(Found::Gone, entry).map(|(seq, detail)| JournalError::Corrupt {
                        run: *id,
                        seq,
                        detail,
                    })
                }),
        );
        out
    }

    /// The problems known so far: of the live store's runs (compared with the witness at
    /// open) and, once the archive was loaded, of the archived runs too.
    fn known_problems(&self) -> Vec<JournalError> {
        let mut out: Vec<JournalError> = self
            .summaries()
            .iter()
            .filter_map(|(id, held)| {
                let detail = held.as_whole()?.as_ref().err()?;
                Some(corrupt_summary(*id, detail))
            })
            .collect();
        let untrusted = self.untrusted.lock().expect(POISONED);
        out.extend(
            untrusted
                .iter()
                .map(|(id, (seq, detail))| JournalError::Corrupt {
                    run: *id,
                    seq: *seq,
                    detail: detail.clone(),
                }),
        );
        out
    }

    fn resolve(&self, prefix: &str) -> Result<RunId, JournalError> {
        let wanted = prefix.trim().to_ascii_uppercase();
        if wanted.is_empty() {
            return Err(JournalError::NoSuchRun(prefix.to_owned()));
        }
        // A whole id of a live run needs no listing (nor the archive).
        if let Ok(id) = wanted.parse::<RunId>()
            && self.summaries().contains_key(&id)
        {
            return Ok(id);
        }
        self.load_archive()?;
        let mut candidates: Vec<RunId> = self
            .summaries()
            .keys()
            .copied()
            .filter(|id| id.to_string().starts_with(&wanted))
            .collect();
        // A run the store lost entirely is still known to the witness, and can be named.
        for id in self.untrusted.lock().expect(POISONED).keys() {
            if id.to_string().starts_with(&wanted) && !candidates.contains(id) {
                candidates.push(*id);
            }
        }
        candidates.sort();
        JournalError::one_run(prefix, candidates)
    }

    /// The batch of [`Journal::accept_loss`] on a damaged run, applied (not yet durable).
    pub(crate) fn accept_loss_batch(
        &self,
        id: RunId,
        events: Vec<Event>,
    ) -> Result<(Vec<Record>, Option<witness::Entry>), JournalError> {
        let (kept, chain) = self.intact_prefix(id);
        let Some(first) = kept.first() else {
            return Err(JournalError::Corrupt {
                run: id,
                seq: 1,
                detail: "none of the run's records can be read, so there is nothing to continue"
                    .into(),
            });
        };
        let mut summary = RunSummary::empty(id, first.at);
        for record in &kept {
            summary.apply(record);
        }
        let old = self.cached_summary(id).ok();
        if let Some(old) = &old {
            summary.lock.clone_from(&old.lock);
        }
        let kept_seq = summary.last_seq;
        let witnessed = self
            .witnessed
            .lock()
            .expect(POISONED)
            .get(&id)
            .map_or(0, |w| w.seq);
        let upper = witnessed.max(old.map_or(0, |s| s.last_seq)).max(kept_seq);
        let mut batch = sled::Batch::default();
        // Set the records after the intact prefix aside instead of overwriting them; one that
        // cannot even be read (its blob file is gone) is only unlinked.
        let aside = |batch: &mut sled::Batch, seq: u64, value: &[u8]| {
            let mut key = Vec::with_capacity(1 + 16 + 8 + 8);
            key.push(QUARANTINE);
            key.extend_from_slice(&id.to_bytes());
            key.extend_from_slice(&kept_seq.to_be_bytes());
            key.extend_from_slice(&seq.to_be_bytes());
            batch.insert(key, value);
        };
        for seq in kept_seq + 1..=upper {
            let key = event_key(id, seq);
            match self.db().get(key) {
                Ok(Some(value)) => aside(&mut batch, seq, &value),
                Ok(None) => continue,
                Err(_) => {}
            }
            batch.remove(&key[..]);
        }
        for (key, value) in self
            .db()
            .range(event_key(id, upper + 1)..=event_key(id, u64::MAX))
            .flatten()
        {
            if let Some(seq) = event_key_seq(&key) {
                aside(&mut batch, seq, &value);
                batch.remove(key);
            }
        }
        let restored = self.restore_archived(&mut batch, &summary, true)?;
        if restored.is_some() {
            // An archived run's records after its intact prefix are set aside the same way.
            let rest = crate::archive::lines_after(&self.dir, id, kept_seq);
            for (seq, line) in (kept_seq + 1..).zip(rest) {
                aside(&mut batch, seq, &stored_value(&line));
            }
        }
        let records = crate::sled_writer::make_records(events, kept_seq + 1, Utc::now());
        let added = add_records(&mut batch, id, chain, &records, &mut summary)?;
        if let Some(key) = &summary.lock {
            let holder = self.lock_value(key)?;
            if summary.state.is_terminal() {
                if holder == Some(id) {
                    batch.remove(lock_key(key));
                }
            } else if holder.is_none() {
                batch.insert(lock_key(key), &id.to_bytes()[..]);
            }
        }
        let encoded = encode(&summary)?;
        self.check_space(added.bytes + encoded.len() + restored.unwrap_or(0))?;
        batch.insert(&summary_key(id)[..], encoded);
        let entry = crate::sled_writer::entry(witness::Kind::Accept, &summary, added.chain);
        self.apply(batch)?;
        if restored.is_some() {
            self.unarchived(id);
        }
        self.set_summary(summary);
        Ok((records, Some(entry)))
    }
}

/// Records encoded into a batch: the hash chain after the last, and roughly how many bytes
/// they take (for the free-space check).
pub(crate) struct Added {
    /// The chain after the last record.
    pub(crate) chain: Chain,
    /// Keys and values, as encoded.
    pub(crate) bytes: usize,
}

/// Encodes `records` into `batch`, folding them into `summary` and the chain from `chain`.
/// Each record is encoded once: the value stored, the chain and the size all come from it.
pub(crate) fn add_records(
    batch: &mut sled::Batch,
    id: RunId,
    mut chain: Chain,
    records: &[Record],
    summary: &mut RunSummary,
) -> Result<Added, JournalError> {
    let mut bytes = 0;
    for record in records {
        summary.apply(record);
        let value = encode(record)?;
        chain = witness::chain_next(&chain, json_part(&value));
        bytes += EVENT_KEY_LEN + value.len();
        batch.insert(&event_key(id, record.seq)[..], value);
    }
    summary.chain = Some(witness::chain_hex(&chain));
    Ok(Added { chain, bytes })
}

/// A stored value made from its JSON: CRC32 (little-endian), then the JSON (see [`encode`]).
fn stored_value(json: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(4 + json.len());
    value.extend_from_slice(&crc32fast::hash(json).to_le_bytes());
    value.extend_from_slice(json);
    value
}

/// The JSON of a stored value (after its CRC), which the hash chain covers.
pub(crate) fn json_part(value: &[u8]) -> &[u8] {
    value.get(4..).unwrap_or_default()
}

/// Opens sled in `dir`, waiting up to `opts.busy_wait` for a lock held by another handle.
fn open_sled(
    dir: &Path,
    opts: SledOptions,
    holder: impl Fn() -> Option<String>,
) -> Result<sled::Db, JournalError> {
    let deadline = std::time::Instant::now() + opts.busy_wait;
    loop {
        // sled 0.34 panics on some kinds of damage instead of returning an error: a panic
        // while opening is a damaged store, reported like one.
        let opened = std::panic::catch_unwind(|| {
            sled::Config::new()
                .path(dir)
                .cache_capacity(opts.cache_capacity_bytes)
                // We flush and sync on every commit ourselves; sled's timer would only add
                // syncs.
                .flush_every_ms(None)
                .open()
        })
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(sled::Error::Io(io::Error::other(format!(
                "the store is damaged: sled failed while recovering it ({what})"
            ))))
        });
        match opened {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(ref io)) if io.to_string().contains(SLED_LOCK_ERROR) => {
                if std::time::Instant::now() >= deadline {
                    return Err(JournalError::Busy {
                        dir: dir.to_path_buf(),
                        holder: holder(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(other) => return Err(sled_error("open the journal at", dir, other)),
        }
    }
}

/// Makes a live store's files its owner's only and durable as they are (sled creates its files
/// and directories without syncing their entries; a journal whose `db` entry is lost in a power
/// cut would come back empty). Returns its log file, for syncing, and its blob files.
fn settle_store(dir: &Path, files: &Path) -> Result<(File, HashSet<OsString>), JournalError> {
    if files != dir {
        restrict(files, 0o700)?;
    }
    for entry in fs::read_dir(files).map_err(|source| io_error("list", files, source))? {
        let entry = entry.map_err(|source| io_error("list", files, source))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if crate::live_store::is_store_file(&name) {
            restrict(&entry.path(), 0o600)?;
        } else if name == "blobs" {
            restrict(&entry.path(), 0o700)?;
        }
    }
    let db_path = files.join("db");
    let db_file = File::open(&db_path).map_err(|source| io_error("open", &db_path, source))?;
    sync_path(files, "sync directory")?;
    if files != dir {
        sync_path(dir, "sync directory")?;
    }
    let blobs = files.join("blobs");
    let known_blobs = if blobs.is_dir() {
        settle_blobs(&blobs)?
    } else {
        HashSet::new()
    };
    let conf = files.join("conf");
    if conf.is_file() {
        sync_path(&conf, "sync")?;
    }
    Ok((db_file, known_blobs))
}

/// The summaries of every run, live and archived (a run in both, after a compaction that was
/// cut short, is read from the live store), and which runs are read from the archive.
fn with_archived(
    dir: &Path,
    live: BTreeMap<RunId, CachedSummary>,
) -> Result<(BTreeMap<RunId, CachedSummary>, HashSet<RunId>), JournalError> {
    let mut all = crate::archive::load(dir)?;
    let archived = all
        .keys()
        .filter(|id| !live.contains_key(id))
        .copied()
        .collect();
    all.extend(live);
    Ok((all, archived))
}

/// Creates `dir` and its missing parents, readable by their owner only.
fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io_error("create journal directory", dir, source))
}

/// Takes group and other permissions away from `path` if it has any.
fn restrict(path: &Path, mode: u32) -> Result<(), JournalError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = fs::metadata(path).map_err(|source| io_error("inspect", path, source))?;
    if meta.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|source| io_error("restrict the permissions of", path, source))?;
    }
    Ok(())
}

/// Writes a small file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

pub(crate) fn event_key(id: RunId, seq: u64) -> [u8; EVENT_KEY_LEN] {
    let mut key = [0; EVENT_KEY_LEN];
    key[0] = EVENT;
    key[1..17].copy_from_slice(&id.to_bytes());
    key[17..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn event_key_seq(key: &[u8]) -> Option<u64> {
    let seq: [u8; 8] = key.get(17..)?.try_into().ok()?;
    Some(u64::from_be_bytes(seq))
}

pub(crate) fn summary_key(id: RunId) -> [u8; 17] {
    let mut key = [0; 17];
    key[0] = SUMMARY;
    key[1..].copy_from_slice(&id.to_bytes());
    key
}

pub(crate) fn lock_key(key: &str) -> Vec<u8> {
    prefixed(LOCK, key)
}

pub(crate) fn meta_key(key: &str) -> Vec<u8> {
    prefixed(META, key)
}

fn prefixed(prefix: u8, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(prefix);
    out.extend_from_slice(key.as_bytes());
    out
}

/// CRC32 (little-endian) of the JSON, then the JSON.
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, JournalError> {
    // Serialized in place after room for the CRC, so the JSON is not copied once more.
    let mut out = vec![0; 4];
    serde_json::to_writer(&mut out, value).map_err(storage)?;
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The inverse of [`encode`]; the error describes what is wrong, for a `Corrupt` detail.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let Some((crc, json)) = bytes.split_first_chunk::<4>() else {
        return Err(format!("truncated value of {} bytes", bytes.len()));
    };
    if u32::from_le_bytes(*crc) != crc32fast::hash(json) {
        return Err("checksum mismatch".to_owned());
    }
    serde_json::from_slice(json).map_err(|e| format!("undecodable record: {e}"))
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<Record, String> {
    decode(bytes)
}

fn load_summaries(db: &sled::Db) -> Result<BTreeMap<RunId, CachedSummary>, JournalError> {
    let mut summaries = BTreeMap::new();
    for entry in db.scan_prefix([SUMMARY]) {
        let (key, value) = entry.map_err(storage)?;
        let Ok(id_bytes) = <[u8; 16]>::try_from(&key[1..]) else {
            tracing::warn!(key = ?key, "ignoring a malformed summary key in the journal");
            continue;
        };
        let id = RunId::from_bytes(id_bytes);
        let summary = decode::<RunSummary>(&value).and_then(|s| {
            if s.id == id {
                Ok(s)
            } else {
                Err(format!(
                    "summary is stored under {id} but names run {}",
                    s.id
                ))
            }
        });
        summaries.insert(id, summary);
    }
    Ok(summaries)
}

pub(crate) fn corrupt_summary(run: RunId, detail: &str) -> JournalError {
    JournalError::Corrupt {
        run,
        seq: 0,
        detail: format!("the run's summary is unreadable: {detail}"),
    }
}

fn storage(e: impl std::error::Error + Send + Sync + 'static) -> JournalError {
    JournalError::Storage(Box::new(e))
}

/// A sled failure while doing `action` on the journal at `path`, with the OS error when there
/// is one (a full disk, a read-only file system, permissions).
pub(crate) fn sled_error(action: &'static str, path: &Path, e: sled::Error) -> JournalError {
    let source = match e {
        sled::Error::Io(io) => io,
        other => io::Error::other(other.to_string()),
    };
    io_error(action, path, source)
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> JournalError {
    JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes every blob file already in `blobs` durable, and returns their names: a previous
/// process may have died between writing a blob and syncing it. One `syncfs` of the filesystem
/// the journal lives on does it for all of them — one fdatasync per file made opening a large
/// journal cost a sync per blob (hundreds of them in a journal of a million events).
fn settle_blobs(blobs: &Path) -> Result<HashSet<OsString>, JournalError> {
    let mut names = HashSet::new();
    for entry in fs::read_dir(blobs).map_err(|source| io_error("list", blobs, source))? {
        let entry = entry.map_err(|source| io_error("list", blobs, source))?;
        names.insert(entry.file_name());
    }
    let dir = File::open(blobs).map_err(|source| io_error("open", blobs, source))?;
    if !names.is_empty() {
        nix::unistd::syncfs(&dir)
            .map_err(|errno| io_error("sync the filesystem of", blobs, io::Error::from(errno)))?;
    }
    dir.sync_all()
        .map_err(|source| io_error("sync directory", blobs, source))?;
    Ok(names)
}

/// `fsync`s a file or directory by path.
fn sync_path(path: &Path, action: &'static str) -> Result<(), JournalError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| io_error(action, path, source))
}

/// "pid 1234: runbook run hello -p to=2.7.2", for whoever finds the journal busy.
fn holder_description() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!("pid {}: {}", std::process::id(), describe_args(&args))
        .chars()
        .take(200)
        .collect()
}

/// A command line as the holder file shows it: parameter values (`-p NAME=VALUE`,
/// `--param NAME=VALUE`, `-pNAME=VALUE`, `--param=NAME=VALUE`) are left out — any of them may
/// be a secret, and the file outlives a killed process.
fn describe_args(args: &[String]) -> String {
    fn masked(assignment: &str) -> String {
        match assignment.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None => "***".to_owned(),
        }
    }
    let mut out = Vec::with_capacity(args.len());
    let mut value_next = false;
    for arg in args {
        if value_next {
            out.push(masked(arg));
            value_next = false;
        } else if arg == "-p" || arg == "--param" {
            out.push(arg.clone());
            value_next = true;
        } else if let Some(rest) = arg.strip_prefix("--param=") {
            out.push(format!("--param={}", masked(rest)));
        } else if let Some(rest) = arg.strip_prefix("-p").filter(|r| !r.is_empty()) {
            out.push(format!("-p{}", masked(rest)));
        } else {
            out.push(arg.clone());
        }
    }
    out.join(" ")
}

fn read_holder(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(HOLDER_FILE)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RunStarted, RunState};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn open(dir: &Path) -> SledJournal {
        SledJournal::open(dir, SledOptions::default()).expect("open journal")
    }

    fn started(runbook: &str, lock: Option<&str>) -> Event {
        Event::RunStarted(RunStarted {
            runbook: runbook.to_owned(),
            params: serde_json::Map::new(),
            sources: Vec::new(),
            links: std::collections::BTreeMap::new(),
            lock: lock.map(str::to_owned),
            started_by: "tester".to_owned(),
            engine_version: "0.1.0".to_owned(),
            trigger: None,
        })
    }

    fn step(path: &str) -> Event {
        Event::StepStarted {
            path: path.to_owned(),
            kind: "shell".to_owned(),
            attempt: 1,
            idempotent: true,
            intent: json!({"run": format!("echo {path}")}),
        }
    }

    fn state(state: RunState) -> Event {
        Event::StateChanged {
            state,
            reason: None,
        }
    }

    /// Appends after the run's last record.
    fn add(
        journal: &SledJournal,
        id: RunId,
        events: &[Event],
    ) -> Result<Vec<Record>, JournalError> {
        let last = journal.summary(id)?.last_seq;
        journal.append(id, last, events)
    }

    #[test]
    fn the_sled_journal_conforms() {
        crate::conformance::all(&|| {
            let tmp = tempfile::tempdir().unwrap();
            let journal = open(tmp.path());
            (Arc::new(journal), Box::new(tmp))
        });
    }

    fn seqs(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn reopen_after_drop_sees_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let a = RunId::new();
        let b = RunId::new();
        let (records_a, records_b) = {
            let journal = open(tmp.path());
            journal
                .create(a, Some("k"), &[started("one", Some("k"))])
                .unwrap();
            add(&journal, a, &[step("x"), step("y")]).unwrap();
            journal.create(b, None, &[started("two", None)]).unwrap();
            add(&journal, b, &[state(RunState::Succeeded)]).unwrap();
            journal.put_meta("schedule", b"every 5m").unwrap();
            (journal.read(a).unwrap(), journal.read(b).unwrap())
        };
        let journal = open(tmp.path());
        assert_eq!(journal.read(a).unwrap(), records_a);
        assert_eq!(journal.read(b).unwrap(), records_b);
        let runs = journal.runs().unwrap();
        // Ids made in the same millisecond order by their random part, so sort to compare.
        let mut expected = [a, b];
        expected.sort();
        assert_eq!(runs.iter().map(|s| s.id).collect::<Vec<_>>(), expected);
        let run_b = runs.iter().find(|s| s.id == b).unwrap();
        assert_eq!(run_b.state, RunState::Succeeded);
        assert_eq!(journal.lock_holder("k").unwrap(), Some(a));
        assert_eq!(
            journal.get_meta("schedule").unwrap().as_deref(),
            Some(&b"every 5m"[..])
        );
        assert_eq!(journal.get_meta("nothing").unwrap(), None);
        // Appends continue the sequence after a reopen.
        assert_eq!(seqs(&add(&journal, a, &[step("z")]).unwrap()), [4]);
        assert_eq!(
            journal.stats(),
            JournalStats {
                commits: 1,
                syncs: 1
            }
        );
    }

    #[test]
    fn large_values_survive_a_reopen() {
        // Above sled's blob threshold, so the value lands in `blobs/` (the path we sync by hand).
        let tmp = tempfile::tempdir().unwrap();
        let id = RunId::new();
        let big = "x".repeat(300 * 1024);
        {
            let journal = open(tmp.path());
            journal.create(id, None, &[started("big", None)]).unwrap();
            journal
                .append(
                    id,
                    1,
                    &[Event::StepSucceeded {
                        path: "dump".into(),
                        attempt: 1,
                        output: json!({ "stdout": &big }),
                        duration_ms: 1,
                    }],
                )
                .unwrap();
            let blobs = fs::read_dir(tmp.path().join("blobs")).unwrap().count();
            assert!(blobs > 0, "the big value should be a blob file");
        }
        let journal = open(tmp.path());
        let records = journal.read(id).unwrap();
        match &records[1].event {
            Event::StepSucceeded { output, .. } => assert_eq!(output["stdout"], json!(big)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_blob_written_after_commits_without_one_is_synced_by_its_own_commit() {
        // Commits without a blob skip the listing of `blobs/`; the commit that makes sled
        // write one still finds it (and so syncs it before the log that points at it).
        let tmp = tempfile::tempdir().unwrap();
        let id = RunId::new();
        let journal = open(tmp.path());
        journal.create(id, None, &[started("big", None)]).unwrap();
        add(&journal, id, &[step("small")]).unwrap();
        let known = |j: &SledJournal| j.store.syncer.lock().unwrap().known_blobs.clone();
        assert!(known(&journal).is_empty());
        add(
            &journal,
            id,
            &[Event::StepSucceeded {
                path: "small".into(),
                attempt: 1,
                output: json!({ "stdout": "x".repeat(300 * 1024) }),
                duration_ms: 1,
            }],
        )
        .unwrap();
        let on_disk: HashSet<OsString> = fs::read_dir(tmp.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(!on_disk.is_empty(), "the big value should be a blob file");
        assert!(
            on_disk.is_subset(&known(&journal)),
            "{on_disk:?} not all synced: {:?}",
            known(&journal)
        );
    }

    #[test]
    fn meta_round_trips_and_is_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = open(tmp.path());
        journal.put_meta("a", b"1").unwrap();
        journal.put_meta("a", b"2").unwrap();
        assert_eq!(journal.get_meta("a").unwrap(), Some(b"2".to_vec()));
        let stats = journal.stats();
        assert_eq!(stats.commits, 2);
        assert!(stats.syncs >= 2, "{stats:?}");
    }

    #[test]
    fn group_commit_shares_syncs() {
        const THREADS: usize = 8;
        const APPENDS: usize = 50;
        let tmp = tempfile::tempdir().unwrap();
        let journal = Arc::new(open(tmp.path()));
        let ids: Vec<RunId> = (0..THREADS).map(|_| RunId::new()).collect();
        for id in &ids {
            journal.create(*id, None, &[started("par", None)]).unwrap();
        }
        let before = journal.stats();
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let handles: Vec<_> = ids
            .iter()
            .map(|&id| {
                let journal = Arc::clone(&journal);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in 0..APPENDS {
                        add(&journal, id, &[step(&format!("s{i}"))]).unwrap();
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        for id in &ids {
            let records = journal.read(*id).unwrap();
            assert_eq!(seqs(&records), (1..=1 + APPENDS as u64).collect::<Vec<_>>());
        }
        let after = journal.stats();
        let commits = after.commits - before.commits;
        let syncs = after.syncs - before.syncs;
        assert_eq!(commits, (THREADS * APPENDS) as u64);
        assert!(syncs >= 1);
        assert!(syncs < commits, "{syncs} syncs for {commits} commits");
        eprintln!("group commit: {syncs} syncs for {commits} commits");
    }

    #[test]
    fn a_lone_append_is_synced() {
        let tmp = tempfile::tempdir().unwrap();
        let journal = open(tmp.path());
        let id = RunId::new();
        journal.create(id, None, &[started("lone", None)]).unwrap();
        let before = journal.stats();
        add(&journal, id, &[step("a")]).unwrap();
        let after = journal.stats();
        assert_eq!(after.commits, before.commits + 1);
        assert!(after.syncs > before.syncs, "{before:?} -> {after:?}");
    }

    /// Creates a run with five records in a fresh journal at `dir`, then closes it.
    fn five_records(dir: &Path) -> RunId {
        let id = RunId::new();
        let journal = open(dir);
        journal.create(id, None, &[started("c", None)]).unwrap();
        journal
            .append(id, 1, &[step("a"), step("b"), step("c"), step("d")])
            .unwrap();
        id
    }

    /// Edits the raw sled tree while no journal holds it. Opened as the journal opens it, without
    /// sled's background flusher (which would hold the directory's lock for a moment after this
    /// handle is dropped); the lock of a journal dropped just before can still be on its way
    /// out, so the open waits for it, within the bound a journal open uses.
    fn tamper(dir: &Path, edit: impl FnOnce(&sled::Db)) {
        let deadline = std::time::Instant::now() + SledOptions::default().busy_wait;
        let db = loop {
            match sled::Config::new().path(dir).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains(SLED_LOCK_ERROR)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("open {}: {e}", dir.display()),
            }
        };
        edit(&db);
        db.flush().unwrap();
    }

    #[test]
    fn a_checksum_mismatch_names_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        tamper(tmp.path(), |db| {
            let key = event_key(id, 3);
            let mut value = db.get(key).unwrap().unwrap().to_vec();
            let pos = 4 + value[4..].iter().position(|&b| b == b'b').unwrap();
            value[pos] = b'q'; // still valid JSON, so only the checksum can catch it
            db.insert(key, value).unwrap();
        });
        let journal = open(tmp.path());
        let err = journal.read(id).unwrap_err();
        match &err {
            JournalError::Corrupt { run, seq, detail } => {
                assert_eq!(*run, id);
                assert_eq!(*seq, 3);
                assert_eq!(detail, "checksum mismatch");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        // Once found damaged, the run is untrusted: every read names the first bad record.
        for after in [2, 3] {
            assert!(
                matches!(
                    journal.read_after(id, after),
                    Err(JournalError::Corrupt { seq: 3, .. })
                ),
                "after {after}"
            );
        }
        assert!(matches!(
            add(&journal, id, &[step("e")]),
            Err(JournalError::Corrupt { seq: 3, .. })
        ));
    }

    #[test]
    fn undecodable_missing_and_misplaced_records_are_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());

        let garbage = b"{not json".to_vec();
        let mut undecodable = crc32fast::hash(&garbage).to_le_bytes().to_vec();
        undecodable.extend_from_slice(&garbage);
        tamper(tmp.path(), |db| {
            db.insert(event_key(id, 2), undecodable).unwrap();
        });
        let err = open(tmp.path()).read(id).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { seq: 2, detail, .. } if detail.starts_with("undecodable record: ")),
            "{err:?}"
        );

        tamper(tmp.path(), |db| {
            db.remove(event_key(id, 2)).unwrap();
        });
        let err = open(tmp.path()).read(id).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { seq: 2, detail, .. } if detail == "record 2 missing: log jumps from 1 to 3"),
            "{err:?}"
        );

        tamper(tmp.path(), |db| {
            let four = db.get(event_key(id, 4)).unwrap().unwrap();
            db.insert(event_key(id, 2), four).unwrap();
        });
        let err = open(tmp.path()).read(id).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { seq: 2, detail, .. } if detail == "key says 2 but record says 4"),
            "{err:?}"
        );
    }

    #[test]
    fn a_torn_tail_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        tamper(tmp.path(), |db| {
            db.remove(event_key(id, 5)).unwrap();
        });
        let journal = open(tmp.path());
        let err = journal.read(id).unwrap_err();
        match &err {
            JournalError::Corrupt { run, seq, detail } => {
                assert_eq!(*run, id);
                assert_eq!(*seq, 5);
                assert_eq!(
                    detail,
                    "the log ends at record 4 but the run's summary says 5 (torn tail)"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let err = journal.read_after(id, 4).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { seq: 5, detail, .. } if detail.contains("ends at record 4")),
            "{err:?}"
        );
    }

    #[test]
    fn a_corrupt_summary_is_reported_not_hidden() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        tamper(tmp.path(), |db| {
            let mut value = db.get(summary_key(id)).unwrap().unwrap().to_vec();
            value[0] ^= 0xff;
            db.insert(summary_key(id), value).unwrap();
        });
        let journal = open(tmp.path());
        assert_eq!(journal.resolve(&id.to_string()).unwrap(), id);
        for err in [
            journal.summary(id).unwrap_err(),
            journal.read(id).unwrap_err(),
            journal.runs().unwrap_err(),
            add(&journal, id, &[step("e")]).unwrap_err(),
        ] {
            assert!(
                matches!(&err, JournalError::Corrupt { run, detail, .. } if *run == id && detail.contains("checksum mismatch")),
                "{err:?}"
            );
        }
    }

    /// Every file under `dir` with its bytes (the witness of "nothing changed").
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.insert(path.clone(), fs::read(&path).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_consistent_rollback_of_the_store_is_caught_by_the_witness() {
        // sled's recovery after damage cuts its log: the run's summary and records then agree
        // with each other, at an earlier state. Only the witness knows better.
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        let four = {
            let journal = open(tmp.path());
            let mut summary = journal.summary(id).unwrap();
            summary.last_seq = 4;
            summary.chain = Some(witness::chain_hex(
                &journal.store.chain_of_stored(id, 4).unwrap(),
            ));
            summary
        };
        tamper(tmp.path(), |db| {
            db.remove(event_key(id, 5)).unwrap();
            db.insert(summary_key(id), encode(&four).unwrap()).unwrap();
        });
        let journal = open(tmp.path());
        let problems = journal.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        match &problems[0] {
            JournalError::Corrupt { run, seq, detail } => {
                assert_eq!((*run, *seq), (id, 5));
                assert_eq!(
                    detail,
                    "records 5–5 are missing: 5 were durable, and the store now ends at record 4"
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(matches!(
            journal.read(id),
            Err(JournalError::Corrupt { seq: 5, .. })
        ));
        assert!(matches!(
            journal.runs(),
            Err(JournalError::Corrupt { seq: 5, .. })
        ));
        assert_eq!(journal.readable_runs().len(), 1);
        assert!(matches!(
            add(&journal, id, &[step("x")]),
            Err(JournalError::Corrupt { seq: 5, .. })
        ));
        // A read-only view sees the same.
        drop(journal);
        let view = SledJournal::open_read_only(tmp.path(), SledOptions::default()).unwrap();
        assert!(matches!(
            view.read(id),
            Err(JournalError::Corrupt { seq: 5, .. })
        ));
    }

    #[test]
    fn a_forged_record_with_a_valid_checksum_breaks_the_chain() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        tamper(tmp.path(), |db| {
            let key = event_key(id, 3);
            let value = db.get(key).unwrap().unwrap().to_vec();
            let json = String::from_utf8(value[4..].to_vec())
                .unwrap()
                .replace("echo b", "echo q");
            let mut forged = crc32fast::hash(json.as_bytes()).to_le_bytes().to_vec();
            forged.extend_from_slice(json.as_bytes());
            db.insert(key, forged).unwrap();
        });
        let journal = open(tmp.path());
        let err = journal.read(id).unwrap_err();
        assert!(
            matches!(&err, JournalError::Corrupt { run, seq: 5, detail } if *run == id && detail.contains("hash chain")),
            "{err:?}"
        );
    }

    #[test]
    fn a_read_only_view_changes_nothing_and_cannot_write() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        let before = snapshot(tmp.path());
        for _ in 0..3 {
            let view = SledJournal::open_read_only(tmp.path(), SledOptions::default()).unwrap();
            assert_eq!(seqs(&view.read(id).unwrap()), [1, 2, 3, 4, 5]);
            assert_eq!(view.runs().unwrap().len(), 1);
            assert!(matches!(
                add(&view, id, &[step("x")]),
                Err(JournalError::ReadOnly(_))
            ));
            assert!(matches!(
                view.put_meta("k", b"v"),
                Err(JournalError::ReadOnly(_))
            ));
        }
        assert_eq!(snapshot(tmp.path()), before);
        // A journal that does not exist reads as empty and is not created.
        let missing = tmp.path().join("nowhere");
        let view = SledJournal::open_read_only(&missing, SledOptions::default()).unwrap();
        assert!(view.runs().unwrap().is_empty());
        assert!(!missing.exists());
    }

    #[test]
    fn an_operator_can_accept_a_loss_and_go_on_from_the_intact_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        // Record 3 damaged: 1–2 are the intact prefix; 3–5 are set aside, not destroyed.
        tamper(tmp.path(), |db| {
            let mut value = db.get(event_key(id, 3)).unwrap().unwrap().to_vec();
            value[0] ^= 0xff;
            db.insert(event_key(id, 3), value).unwrap();
        });
        {
            let journal = open(tmp.path());
            assert!(journal.read(id).is_err());
            assert_eq!(seqs(&journal.salvage(id).unwrap()), [1, 2]);
            let records = journal.accept_loss(id, &[step("again")]).unwrap();
            assert_eq!(seqs(&records), [3]);
            assert!(journal.problems().is_empty());
            assert_eq!(seqs(&journal.read(id).unwrap()), [1, 2, 3]);
            add(&journal, id, &[step("more")]).unwrap();
        }
        let journal = open(tmp.path());
        assert!(journal.problems().is_empty(), "{:?}", journal.problems());
        let records = journal.read(id).unwrap();
        assert_eq!(seqs(&records), [1, 2, 3, 4]);
        assert_eq!(records[2].event.path(), Some("again"));
        let aside = journal.store.db().scan_prefix([QUARANTINE]).count();
        assert_eq!(aside, 3, "records 3–5 kept aside");
    }

    #[test]
    fn a_deleted_witness_is_started_again_from_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let id = five_records(tmp.path());
        fs::remove_file(tmp.path().join(witness::FILE)).unwrap();
        {
            let view = SledJournal::open_read_only(tmp.path(), SledOptions::default()).unwrap();
            assert_eq!(seqs(&view.read(id).unwrap()), [1, 2, 3, 4, 5]);
        }
        let journal = open(tmp.path());
        assert!(journal.problems().is_empty());
        drop(journal);
        let witnessed = witness::read(tmp.path()).unwrap();
        assert_eq!(witnessed.runs[&id].seq, 5);
    }

    #[test]
    fn journal_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let _journal = five_records(&dir);
        let journal = open(&dir);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for name in ["db", "conf", "witness", "holder"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        drop(journal);
        // A directory that others could read is closed on open.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let _journal = open(&dir);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn the_holder_file_never_shows_a_parameter_value() {
        let args: Vec<String> = [
            "runbook",
            "run",
            "deploy",
            "-p",
            "token=s3cret",
            "--param",
            "pin=1234",
            "-pkey=abc",
            "--param=pass=xyz",
            "--yes",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            describe_args(&args),
            "runbook run deploy -p token=*** --param pin=*** -pkey=*** --param=pass=*** --yes"
        );
    }

    #[test]
    fn a_second_open_is_busy_and_names_the_holder() {
        // sled's lock is an flock on `db`, which is per open file description: it conflicts
        // between two handles in one process too.
        let tmp = tempfile::tempdir().unwrap();
        let journal = open(tmp.path());
        let opts = SledOptions {
            busy_wait: std::time::Duration::from_millis(100),
            ..SledOptions::default()
        };
        let err = SledJournal::open(tmp.path(), opts).unwrap_err();
        match &err {
            JournalError::Busy { dir, holder } => {
                assert_eq!(dir, tmp.path());
                let holder = holder.as_deref().expect("holder read from the holder file");
                assert!(
                    holder.starts_with(&format!("pid {}: ", std::process::id())),
                    "{holder}"
                );
                assert!(holder.chars().count() <= 200);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert!(
            err.to_string()
                .contains("in use by another runbook process (pid ")
        );
        // The failed open did not disturb the holder.
        assert!(tmp.path().join(HOLDER_FILE).exists());
        drop(journal);
        assert!(!tmp.path().join(HOLDER_FILE).exists());
        let _again = open(tmp.path());
    }

    #[test]
    fn open_creates_missing_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("journal");
        let journal = open(&dir);
        assert_eq!(journal.dir(), dir);
        assert!(dir.join("db").is_file());
        assert!(journal.runs().unwrap().is_empty());
    }

    #[test]
    fn encoding_is_crc_then_json() {
        let summary_json = br#"{"a":1}"#;
        let encoded = encode(&json!({"a": 1})).unwrap();
        assert_eq!(&encoded[..4], &crc32fast::hash(summary_json).to_le_bytes());
        assert_eq!(&encoded[4..], summary_json);
        assert_eq!(
            decode::<serde_json::Value>(&encoded).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            decode::<serde_json::Value>(&encoded[..2]).unwrap_err(),
            "truncated value of 2 bytes"
        );
    }
}
