//! Where the live sled store of a journal is, who holds the journal, and compaction: moving
//! finished runs into the archive ([`crate::archive`]) and writing a new live store without them.
//! Compaction runs when a writer opens the journal and, while it holds it, on the journal's
//! writer thread after a commit that ended a run (`Store::compact_while_open`).
//!
//! The live store is the journal directory itself (journals from before compaction) or the
//! subdirectory named by the pointer file `store` (`live-000001`, …). A compaction, each step
//! durable before the next, so that a crash between any two leaves a journal that opens whole:
//!
//! 1. archive every finished run that verifies — its records file, then its index line;
//! 2. write the new store (`live-N+1`): every key of the old store but the archived runs'
//!    records and summaries; flush; sync every file and directory of it;
//! 3. replace the pointer file (write, sync, rename, sync the directory);
//! 4. remove the old store.
//!
//! Opening removes what an interrupted compaction left: stores the pointer does not name. A run
//! both archived and still in the live store (a crash after 1) is read from the live store.
//!
//! The journal is held through the lock file `lock` (an exclusive `flock` for a writer, a shared
//! one while a reader copies the store), so no other process opens a store that a compaction is
//! replacing.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::{JournalError, RunId, RunSummary, io_at, witness};

/// The pointer file naming the live store's subdirectory.
const POINTER: &str = "store";
/// The journal's lock file.
const LOCK: &str = "lock";
/// The prefix of live store subdirectories.
const LIVE: &str = "live-";

/// The records of finished runs in the live store above which it is compacted: about 7 MiB of
/// store (records of short steps), which adds ~3 ms to opening it (at 50,000 records, 31 MiB,
/// it added ~25 ms: a command on a journal that a `serve` had compacted as runs ended cost
/// 1.9× what it costs on a fresh one). A compaction while the journal is held makes commits
/// wait for it: ~1 ms per run archived (each run's file is synced), ~1 s for the ~900 runs of
/// four steps that make 10,000 records.
pub const ARCHIVE_AFTER: u64 = 10_000;

/// The sled files of a store (besides `blobs/`).
pub(crate) fn is_store_file(name: &str) -> bool {
    name == "db" || name == "conf" || name.starts_with("snap.")
}

/// Takes the journal's lock: exclusive for a writer, shared for a reader, waiting up to
/// `busy_wait` for a holder of the other kind. A reader takes it only if the file exists (a
/// reader creates nothing); `None` then.
pub(crate) fn lock(
    journal: &Path,
    exclusive: bool,
    busy_wait: Duration,
    holder: impl Fn() -> Option<String>,
) -> Result<Option<Flock<File>>, JournalError> {
    let path = journal.join(LOCK);
    let file = if exclusive {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
    } else {
        File::open(&path)
    };
    let file = match file {
        Ok(file) => file,
        Err(e) if !exclusive && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_at("open", &path)(e)),
    };
    let arg = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    lock_waiting(file, arg, &path, busy_wait, || JournalError::Busy {
        dir: journal.to_path_buf(),
        holder: holder(),
    })
    .map(Some)
}

/// `flock`s `file` (at `path`) as `arg` says, trying again for up to `busy_wait` while another
/// holds it, then failing with `busy()`.
pub(crate) fn lock_waiting(
    mut file: File,
    arg: FlockArg,
    path: &Path,
    busy_wait: Duration,
    busy: impl FnOnce() -> JournalError,
) -> Result<Flock<File>, JournalError> {
    let deadline = Instant::now() + busy_wait;
    loop {
        match Flock::lock(file, arg) {
            Ok(lock) => return Ok(lock),
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                if Instant::now() >= deadline {
                    return Err(busy());
                }
                file = back;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, errno)) => return Err(io_at("lock", path)(io::Error::from(errno))),
        }
    }
}

/// The live store's directory: the journal directory, or the subdirectory the pointer names.
pub(crate) fn current(journal: &Path) -> Result<PathBuf, JournalError> {
    let path = journal.join(POINTER);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim();
            if !valid_name(name) {
                return Err(io_at("read", &path)(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the pointer file names `{name}`, not a live store"),
                )));
            }
            Ok(journal.join(name))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(journal.to_path_buf()),
        Err(e) => Err(io_at("read", &path)(e)),
    }
}

fn valid_name(name: &str) -> bool {
    name.strip_prefix(LIVE)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The number of the live store in `store` (0 for the journal directory itself).
fn generation(journal: &Path, store: &Path) -> u64 {
    if store == journal {
        return 0;
    }
    store
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix(LIVE))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Removes the stores an interrupted compaction left beside the live one (the writer holds
/// the journal's lock).
pub(crate) fn clean(journal: &Path, live: &Path) -> Result<(), JournalError> {
    for entry in fs::read_dir(journal).map_err(io_at("list", journal))? {
        let entry = entry.map_err(io_at("list", journal))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if valid_name(name) && path != live {
            fs::remove_dir_all(&path).map_err(io_at("remove", &path))?;
        }
    }
    if live != journal {
        remove_store_files(journal)?;
    }
    Ok(())
}

/// Removes the sled files of the store kept in `dir` itself (the layout before compaction).
fn remove_store_files(dir: &Path) -> Result<(), JournalError> {
    for entry in fs::read_dir(dir).map_err(io_at("list", dir))? {
        let entry = entry.map_err(io_at("list", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_store_file(name) {
            fs::remove_file(&path).map_err(io_at("remove", &path))?;
        } else if name == "blobs" {
            fs::remove_dir_all(&path).map_err(io_at("remove", &path))?;
        }
    }
    Ok(())
}

/// The records of the live store's runs: of finished runs (a compaction moves them out) and of
/// unfinished ones (a compaction copies them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) finished: u64,
    pub(crate) unfinished: u64,
}

impl Tally {
    /// Counts the records of the live store's (readable) summaries.
    pub(crate) fn of<'a>(summaries: impl IntoIterator<Item = &'a RunSummary>) -> Self {
        let mut tally = Self::default();
        for summary in summaries {
            if summary.state.is_terminal() {
                tally.finished += summary.last_seq;
            } else {
                tally.unfinished += summary.last_seq;
            }
        }
        tally
    }

    /// Whether the store is to be compacted: it holds at least `threshold` records of finished
    /// runs, and at least as many as the unfinished runs' that a compaction copies. After a
    /// compaction of this process failed while the store held `failed_at` records of finished
    /// runs, only once `threshold` more have finished since: a failure that lasts (a full disk)
    /// costs one attempt per `threshold` records, not one per run that ends, and one that passes
    /// does not leave a long-lived process's store growing until it restarts.
    pub(crate) fn due(self, threshold: u64, failed_at: Option<u64>) -> bool {
        let Self {
            finished,
            unfinished,
        } = self;
        let again = failed_at.is_none_or(|at| finished >= at.saturating_add(threshold));
        finished > 0 && finished >= threshold && finished >= unfinished && again
    }
}

/// Where a compaction stops on purpose, for the crash tests: the steps of the module's doc.
/// In-process tests stop there through `compact`'s `stop`; the end-to-end tests have the process
/// SIGKILL itself there with `RUNBOOK_TEST_KILL_IN_COMPACTION=archived|written|switched`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// After the runs are archived.
    Archived,
    /// After the new store is durable, before the pointer names it.
    Written,
    /// After the pointer names the new store, before the old one is removed.
    Switched,
}

impl Step {
    /// Whether the compaction stops after this step: `stop` names it, or the process dies here.
    fn stops(self, stop: Option<Self>) -> bool {
        let name = match self {
            Self::Archived => "archived",
            Self::Written => "written",
            Self::Switched => "switched",
        };
        if std::env::var("RUNBOOK_TEST_KILL_IN_COMPACTION").is_ok_and(|v| v == name) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
            std::process::abort();
        }
        stop == Some(self)
    }
}

/// The runs a compaction archived, each with its place in the archive's index.
type Placed = Vec<(RunId, crate::archive::Place)>;

/// What a compaction did.
#[derive(Debug)]
pub(crate) struct Compacted {
    /// The live store now.
    pub(crate) live: PathBuf,
    /// The runs archived, each with its place in the archive's index.
    pub(crate) places: Placed,
}

/// Why a compaction did not finish.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Before the pointer changed: the old store is still the live one, and can be used.
    Kept(JournalError),
    /// The pointer was replaced, but the change may not be durable: neither store may be
    /// written now (a commit to the new one could be lost with the pointer, one to the old one
    /// would be hidden by it).
    Unsettled(JournalError),
}

/// A compaction of `journal`'s live store `old`, opened as `db`, holding `summaries`, with what
/// the witness saw durable.
#[derive(Clone, Copy)]
pub(crate) struct Compaction<'a> {
    pub(crate) journal: &'a Path,
    pub(crate) old: &'a Path,
    pub(crate) db: &'a sled::Db,
    pub(crate) summaries: &'a BTreeMap<RunId, Result<RunSummary, String>>,
    pub(crate) witnessed: &'a BTreeMap<RunId, witness::Entry>,
    /// The new store's page cache while it is written.
    pub(crate) cache_capacity_bytes: u64,
}

impl Compaction<'_> {
    /// Compacts: see the module's doc. Returns where the live store is now; `stop` ends it
    /// early as a crash there would (tests).
    pub(crate) fn run(self, stop: Option<Step>) -> Result<Compacted, Failure> {
        let (next, places) = self.archive_and_write(stop).map_err(Failure::Kept)?;
        let Self { journal, old, .. } = self;
        let Some(next) = next else {
            return Ok(Compacted {
                live: old.to_path_buf(),
                places,
            });
        };

        // 3. The pointer names the new store.
        let name = next
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let tmp = journal.join(format!("{POINTER}.tmp"));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                io::Write::write_all(&mut file, format!("{name}\n").as_bytes())?;
                file.sync_all()
            })
            .map_err(|e| Failure::Kept(io_at("write", &tmp)(e)))?;
        fs::rename(&tmp, journal.join(POINTER))
            .map_err(|e| Failure::Kept(io_at("rename", &tmp)(e)))?;
        sync_dir(journal).map_err(Failure::Unsettled)?;
        // Stopped or not, the new store is the live one now; the old one is left to the caller.
        let _ = Step::Switched.stops(stop);
        // 4. (The caller drops the old store; opening removes it, see [`clean`].)
        Ok(Compacted { live: next, places })
    }

    /// Steps 1 and 2: archives the finished runs that verify and writes the new store. The new
    /// store's directory, or `None` if `stop` ended it after archiving or writing.
    fn archive_and_write(
        self,
        stop: Option<Step>,
    ) -> Result<(Option<PathBuf>, Placed), JournalError> {
        use crate::sled_journal::{event_key, json_part, sled_error, summary_key};
        let Self {
            journal,
            old,
            db,
            summaries,
            witnessed,
            cache_capacity_bytes,
        } = self;
        // 1. Archive the finished runs whose records verify.
        let mut archive = crate::archive::Writer::start(journal)?;
        for (id, summary) in summaries {
            let Ok(summary) = summary else { continue };
            if !summary.state.is_terminal() {
                continue;
            }
            let Some(values) = verified_values(db, summary, witnessed.get(id).copied()) else {
                tracing::warn!(run = %id, "a finished run's records do not verify; it stays in the live store");
                continue;
            };
            archive.put(summary, values.iter().map(|v| json_part(v)))?;
        }
        let archived = archive.finish()?;
        if Step::Archived.stops(stop) {
            return Ok((None, archived));
        }

        // 2. The new store: everything but the archived runs' records and summaries.
        let next = journal.join(format!("{LIVE}{:06}", generation(journal, old) + 1));
        if next.exists() {
            fs::remove_dir_all(&next).map_err(io_at("remove", &next))?;
        }
        {
            let new_db = sled::Config::new()
                .path(&next)
                .cache_capacity(cache_capacity_bytes)
                .flush_every_ms(None)
                .open()
                .map_err(|e| sled_error("create", &next, e))?;
            let gone: std::collections::HashSet<[u8; 17]> = archived
                .iter()
                .map(|(id, _)| {
                    let mut k = [0; 17];
                    k.copy_from_slice(&event_key(*id, 0)[..17]);
                    k
                })
                .chain(archived.iter().map(|(id, _)| summary_key(*id)))
                .collect();
            let mut batch = sled::Batch::default();
            let mut queued = 0;
            for entry in db.iter() {
                let (key, value) = entry.map_err(|e| sled_error("read", old, e))?;
                if key.len() >= 17 && gone.contains(&key[..17]) {
                    continue;
                }
                batch.insert(key, value);
                queued += 1;
                if queued == 4096 {
                    new_db
                        .apply_batch(std::mem::take(&mut batch))
                        .map_err(|e| sled_error("write to", &next, e))?;
                    queued = 0;
                }
            }
            new_db
                .apply_batch(batch)
                .map_err(|e| sled_error("write to", &next, e))?;
            new_db
                .flush()
                .map_err(|e| sled_error("write to", &next, e))?;
        }
        sync_tree(&next)?;
        sync_dir(journal)?;
        if Step::Written.stops(stop) {
            return Ok((None, archived));
        }
        Ok((Some(next), archived))
    }
}

/// The stored values of a finished run's records if they verify: contiguous from 1 to its
/// last seq, each passing its checksum and naming its seq, their chain equal to the summary's
/// and (where it has an entry at the last seq) the witness's.
fn verified_values(
    db: &sled::Db,
    summary: &RunSummary,
    witnessed: Option<witness::Entry>,
) -> Option<Vec<sled::IVec>> {
    use crate::sled_journal::{decode_record, event_key, json_part};
    let id = summary.id;
    let mut chain = witness::chain_start(id);
    let mut values = Vec::with_capacity(usize::try_from(summary.last_seq).unwrap_or(0));
    for entry in db.range(event_key(id, 1)..=event_key(id, summary.last_seq)) {
        let (_, value) = entry.ok()?;
        let record = decode_record(&value).ok()?;
        if record.seq != values.len() as u64 + 1 {
            return None;
        }
        chain = witness::chain_next(&chain, json_part(&value));
        if witnessed.is_some_and(|w| w.seq == record.seq && w.chain != chain) {
            return None;
        }
        values.push(value);
    }
    let summarised = summary.chain.as_deref().and_then(witness::chain_from_hex)?;
    let whole = values.len() as u64 == summary.last_seq && summarised == chain;
    (whole && witnessed.is_none_or(|w| w.seq <= summary.last_seq)).then_some(values)
}

/// `fsync`s every file and directory under `dir`, and `dir` itself.
fn sync_tree(dir: &Path) -> Result<(), JournalError> {
    for entry in fs::read_dir(dir).map_err(io_at("list", dir))? {
        let entry = entry.map_err(io_at("list", dir))?;
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree(&path)?;
        } else {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_at("sync", &path))?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at("sync directory", dir))
}

#[cfg(test)]
mod tests;
