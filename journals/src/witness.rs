//! The witness: what the journal once made durable, kept where the store's own recovery cannot
//! erase it.
//!
//! sled recovers from a damaged log by cutting it at the first bad message, so a flipped bit or a
//! torn tail can silently roll a run back to an earlier state — its summary and records agreeing
//! with each other, and both wrong. The witness is a separate append-only file in the journal
//! directory: after every commit has become durable, and before the commit is acknowledged, one
//! fixed-size entry per run says "run R had `seq` records, and the hash chain over them was `H`".
//! Opening the journal compares every run with its latest entry:
//!
//! - the store has fewer records than the witness saw → records were lost (named by number);
//! - the same number but another chain → a record was replaced;
//! - more records → the witness lags (it is synced lazily, see below): normal, and the records
//!   beyond it carry their own checksums.
//!
//! Entries are written with `write(2)` before the commit is acknowledged, so they survive a
//! killed process exactly like the store's own pages do. They are `fdatasync`ed lazily (by a
//! background thread, at most [`SYNC_EVERY`] after the write, and on close) instead of once per
//! commit: an entry is only ever written after the store made its commit durable, so a witness
//! that lags after a power loss under-reports and never accuses a healthy journal, and the commit
//! path keeps one sync.
//!
//! An operator who decides to go on with a damaged run (`resume --accept-loss`) writes an
//! [`Kind::Accept`] entry: it replaces the run's expectation even though it counts fewer records.
//!
//! Layout: an 8-byte magic, then 64-byte entries: kind (1), reserved (7), run id (16), seq (8,
//! LE), chain (28: a truncated SHA-256), CRC32 of the first 60 bytes (4, LE). A trailing partial
//! entry (a write cut short by a crash) is ignored; an entry whose CRC fails is skipped and
//! reported.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::RunId;

/// The witness file's name inside the journal directory.
pub const FILE: &str = "witness";

const MAGIC: &[u8; 8] = b"RBWITNS1";
const ENTRY: usize = 64;

/// How long a written entry may wait for its `fdatasync`. A witness that lags after a power
/// loss only under-reports, so this trades nothing a journal promises; at 200 ms a run of
/// short steps paid a witness sync every few dozen commits on top of one per commit.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// A chain hash: SHA-256 truncated to 28 bytes.
pub type Chain = [u8; 28];

/// The chain of a run with no records yet.
pub fn chain_start(run: RunId) -> Chain {
    let mut h = Sha256::new();
    h.update(b"runbook journal chain v1");
    h.update(run.to_bytes());
    truncate(&h.finalize())
}

/// The chain after one more record, given the record's stored bytes.
pub fn chain_next(prev: &Chain, record: &[u8]) -> Chain {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(record);
    truncate(&h.finalize())
}

fn truncate(digest: &[u8]) -> Chain {
    let mut out = [0; 28];
    out.copy_from_slice(&digest[..28]);
    out
}

/// Hex, for summaries and messages.
pub fn chain_hex(chain: &Chain) -> String {
    use std::fmt::Write as _;
    chain.iter().fold(String::with_capacity(56), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// What a run's summary says of its records — how many, and their chain — which the witness's
/// latest entry is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The run's last seq.
    pub(crate) last_seq: u64,
    /// The chain over its records.
    pub(crate) chain: Claimed,
}

/// The chain a summary holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// None: a summary written before chains were kept.
    Unchained,
    /// Something that is not a chain.
    Bad,
    /// A chain.
    Chain(Chain),
}

impl Claim {
    /// What `summary` claims.
    pub(crate) fn of(summary: &crate::RunSummary) -> Self {
        Self {
            last_seq: summary.last_seq,
            chain: match summary.chain.as_deref().map(chain_from_hex) {
                None => Claimed::Unchained,
                Some(None) => Claimed::Bad,
                Some(Some(chain)) => Claimed::Chain(chain),
            },
        }
    }
}

/// The inverse of [`chain_hex`].
pub fn chain_from_hex(hex: &str) -> Option<Chain> {
    if hex.len() != 56 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0; 28];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// What an entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A commit became durable.
    Commit = 1,
    /// An operator accepted the run's history as it is now, shorter than witnessed before.
    Accept = 2,
}

/// One entry: the state of a run at a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What kind of entry.
    pub kind: Kind,
    /// The run.
    pub run: RunId,
    /// How many records the run had.
    pub seq: u64,
    /// The chain over them.
    pub chain: Chain,
}

impl Entry {
    /// The entry's 64 bytes.
    pub fn encode(&self) -> [u8; ENTRY] {
        let mut out = [0; ENTRY];
        out[0] = self.kind as u8;
        out[8..24].copy_from_slice(&self.run.to_bytes());
        out[24..32].copy_from_slice(&self.seq.to_le_bytes());
        out[32..60].copy_from_slice(&self.chain);
        let crc = crc32fast::hash(&out[..60]);
        out[60..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes 64 bytes; `None` if the checksum or the kind is wrong.
    pub fn decode(bytes: &[u8; ENTRY]) -> Option<Self> {
        let crc = u32::from_le_bytes(bytes[60..].try_into().ok()?);
        if crc != crc32fast::hash(&bytes[..60]) {
            return None;
        }
        let kind = match bytes[0] {
            1 => Kind::Commit,
            2 => Kind::Accept,
            _ => return None,
        };
        Some(Self {
            kind,
            run: RunId::from_bytes(bytes[8..24].try_into().ok()?),
            seq: u64::from_le_bytes(bytes[24..32].try_into().ok()?),
            chain: bytes[32..60].try_into().ok()?,
        })
    }
}

/// The witness as read: each run's latest entry, and what could not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Witnessed {
    /// The latest entry of each run, in file order.
    pub runs: BTreeMap<RunId, Entry>,
    /// Indexes (0-based) of entries whose checksum failed.
    pub damaged: Vec<u64>,
    /// How many entries the file holds (damaged ones included).
    pub entries: u64,
    /// Whether the file exists at all.
    pub present: bool,
}

/// Reads the witness of the journal in `dir`. A missing file is an empty witness.
pub fn read(dir: &Path) -> io::Result<Witnessed> {
    read_file(&dir.join(FILE))
}

/// Reads a witness file: the journal's, or the archive's ([`crate::archive`]). A missing file
/// is an empty witness.
pub fn read_file(path: &Path) -> io::Result<Witnessed> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut bytes)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Witnessed::default()),
        Err(e) => return Err(e),
    }
    Ok(parse(&bytes))
}

/// Parses a witness file's bytes (pure, for tests).
pub fn parse(bytes: &[u8]) -> Witnessed {
    let mut out = Witnessed {
        present: true,
        ..Witnessed::default()
    };
    let body = match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(body) => body,
        None if bytes.len() < MAGIC.len() => return out,
        None => {
            // A damaged header: the entries may still be fine, so read on.
            out.damaged.push(u64::MAX);
            &bytes[MAGIC.len()..]
        }
    };
    for (index, chunk) in body.chunks_exact(ENTRY).enumerate() {
        out.entries += 1;
        let chunk: &[u8; ENTRY] = chunk.try_into().expect("exact chunk");
        match Entry::decode(chunk) {
            Some(entry) => {
                out.runs.insert(entry.run, entry);
            }
            None if chunk.iter().all(|&b| b == 0) => {
                // Preallocated or zeroed space after a crash: not an entry.
            }
            None => out.damaged.push(index as u64),
        }
    }
    out
}

/// How many entries a witness may hold beyond two per run it keeps before opening rewrites it.
pub const SLACK: u64 = 1024;

/// What opening for writing does with a witness that has grown: the entries it keeps (the latest
/// of each run in the live store) and those it moves to the archive's witness (the latest of
/// every other run — archived, or gone and to be reported when the archive is read).
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// The journal's witness as rewritten.
    pub kept: Witnessed,
    /// Appended to the archive's witness first.
    pub moved: Vec<Entry>,
}

/// Whether and how to rewrite the witness `witnessed` of a journal whose live store holds the
/// runs for which `live` is true: once it holds more than two entries per kept run and `slack`
/// besides (superseded entries, and entries of runs no longer live), and never while an entry
/// is damaged (the file is evidence then). A pure function.
pub fn split(witnessed: &Witnessed, live: impl Fn(RunId) -> bool, slack: u64) -> Option<Split> {
    if !witnessed.damaged.is_empty() {
        return None;
    }
    let (kept, moved): (BTreeMap<RunId, Entry>, BTreeMap<RunId, Entry>) =
        witnessed.runs.iter().partition(|(id, _)| live(**id));
    if witnessed.entries <= 2 * kept.len() as u64 + slack {
        return None;
    }
    Some(Split {
        kept: Witnessed {
            entries: kept.len() as u64,
            runs: kept,
            damaged: Vec::new(),
            present: true,
        },
        moved: moved.into_values().collect(),
    })
}

/// Appends `entries` to the witness file at `path` and makes them durable: the file is created
/// (owner-only, with its magic, the directory synced) when missing, and a partial entry a crash
/// left is dropped first. For the archive's witness, written only while the journal is held.
pub fn append_durably(path: &Path, entries: &[Entry]) -> io::Result<()> {
    let mut file = open_for_append(path)?;
    let mut bytes = Vec::with_capacity(ENTRY * entries.len());
    for entry in entries {
        bytes.extend_from_slice(&entry.encode());
    }
    file.write_all(&bytes)?;
    file.sync_data()
}

/// Opens (creating, owner-only, durably) a witness file for appending, aligned on an entry.
fn open_for_append(path: &Path) -> io::Result<File> {
    let mut file = owner_only()
        .append(true)
        .create(true)
        .read(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        file.write_all(MAGIC)?;
        file.sync_data()?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    } else {
        // Drop a partial entry left by a crash, so new entries stay aligned.
        let body = len.saturating_sub(MAGIC.len() as u64);
        let aligned = MAGIC.len() as u64 + body - body % ENTRY as u64;
        if aligned != len {
            file.set_len(aligned)?;
        }
    }
    Ok(file)
}

/// The witness of a journal held for writing: appends entries and syncs them lazily.
pub struct Writer {
    path: PathBuf,
    shared: Arc<Shared>,
    syncer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<WriterState>,
    wake: Condvar,
}

struct WriterState {
    file: File,
    dirty: bool,
    closing: bool,
    /// The first failure to write or sync; after it the journal refuses writes.
    failed: Option<String>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens (creating, owner-only) the witness of the journal in `dir` for appending. When
    /// `compact` is given, the file is first rewritten to hold just those entries (the latest
    /// of each run), atomically.
    pub fn open(dir: &Path, compact: Option<&Witnessed>) -> io::Result<Self> {
        let path = dir.join(FILE);
        if let Some(witnessed) = compact {
            let tmp = dir.join(format!("{FILE}.tmp"));
            let mut out = Vec::with_capacity(MAGIC.len() + ENTRY * witnessed.runs.len());
            out.extend_from_slice(MAGIC);
            for entry in witnessed.runs.values() {
                out.extend_from_slice(&entry.encode());
            }
            let mut f = owner_only()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&out)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            File::open(dir)?.sync_all()?;
        }
        let file = open_for_append(&path)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(WriterState {
                file,
                dirty: false,
                closing: false,
                failed: None,
            }),
            wake: Condvar::new(),
        });
        let syncer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("journal-witness".into())
                .spawn(move || sync_loop(&shared))?
        };
        Ok(Self {
            path,
            shared,
            syncer: Some(syncer),
        })
    }

    /// Appends entries (one `write`), to be synced within [`SYNC_EVERY`].
    pub fn append(&self, entries: &[Entry]) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(ENTRY * entries.len());
        for entry in entries {
            bytes.extend_from_slice(&entry.encode());
        }
        let mut state = self.shared.state.lock().expect("witness mutex poisoned");
        if let Some(failed) = &state.failed {
            return Err(failed.clone());
        }
        if let Err(e) = state.file.write_all(&bytes) {
            let msg = format!("failed to write {}: {e}", self.path.display());
            state.failed = Some(msg.clone());
            return Err(msg);
        }
        if !state.dirty {
            state.dirty = true;
            self.shared.wake.notify_all();
        }
        Ok(())
    }

    /// Syncs now whatever was written.
    pub fn sync(&self) -> Result<(), String> {
        let mut state = self.shared.state.lock().expect("witness mutex poisoned");
        sync_state(&mut state)
    }
}

fn sync_state(state: &mut WriterState) -> Result<(), String> {
    if let Some(failed) = &state.failed {
        return Err(failed.clone());
    }
    if state.dirty {
        if let Err(e) = state.file.sync_data() {
            let msg = format!("failed to sync the journal's witness: {e}");
            state.failed = Some(msg.clone());
            return Err(msg);
        }
        state.dirty = false;
    }
    Ok(())
}

fn sync_loop(shared: &Shared) {
    let mut state = shared.state.lock().expect("witness mutex poisoned");
    loop {
        if state.closing {
            return;
        }
        if state.dirty {
            // Let more entries gather, then sync them together.
            let (next, _) = shared
                .wake
                .wait_timeout(state, SYNC_EVERY)
                .expect("witness mutex poisoned");
            state = next;
            if state.closing {
                return;
            }
            let _ = sync_state(&mut state);
        } else {
            state = shared.wake.wait(state).expect("witness mutex poisoned");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().expect("witness mutex poisoned");
            let _ = sync_state(&mut state);
            state.closing = true;
            self.shared.wake.notify_all();
        }
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
    }
}

/// Options for a new file readable and writable by its owner only.
fn owner_only() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(run: RunId, seq: u64) -> Entry {
        let mut chain = chain_start(run);
        for i in 0..seq {
            chain = chain_next(&chain, format!("record {i}").as_bytes());
        }
        Entry {
            kind: Kind::Commit,
            run,
            seq,
            chain,
        }
    }

    #[test]
    fn entries_round_trip_and_a_flipped_bit_is_caught() {
        let e = entry(RunId::new(), 7);
        let bytes = e.encode();
        assert_eq!(Entry::decode(&bytes), Some(e));
        for bit in [0, 9 * 8 + 3, 30 * 8, 50 * 8 + 7, 61 * 8 + 1] {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Entry::decode(&flipped), None, "bit {bit}");
        }
    }

    #[test]
    fn the_latest_entry_of_each_run_wins_and_damage_is_reported() {
        let (a, b) = (RunId::new(), RunId::new());
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&entry(a, 1).encode());
        bytes.extend_from_slice(&entry(b, 1).encode());
        let mut bad = entry(a, 2).encode();
        bad[40] ^= 0x10;
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&entry(b, 3).encode());
        let accept = Entry {
            kind: Kind::Accept,
            ..entry(b, 2)
        };
        bytes.extend_from_slice(&accept.encode());
        // A torn last entry.
        bytes.extend_from_slice(&entry(a, 9).encode()[..20]);
        let w = parse(&bytes);
        assert_eq!(w.runs[&a], entry(a, 1));
        assert_eq!(w.runs[&b], accept);
        assert_eq!(w.damaged, [2]);
        assert_eq!(w.entries, 5);
    }

    #[test]
    fn chains_differ_when_any_record_differs() {
        let run = RunId::new();
        let start = chain_start(run);
        let one = chain_next(&start, b"a");
        assert_ne!(chain_next(&one, b"b"), chain_next(&one, b"c"));
        assert_ne!(chain_start(RunId::new()), start);
        assert_eq!(chain_from_hex(&chain_hex(&one)), Some(one));
        assert_eq!(chain_from_hex("zz"), None);
    }

    /// (entries in the file, damaged entries, live runs, slack, the split)
    type SplitCase = (u64, Vec<u64>, Vec<RunId>, u64, Option<Split>);

    #[test]
    fn a_grown_witness_keeps_the_live_runs_and_moves_the_others() {
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        let witnessed = |entries: u64, damaged: Vec<u64>| Witnessed {
            runs: [entry(a, 3), entry(b, 5), entry(c, 1)]
                .into_iter()
                .map(|e| (e.run, e))
                .collect(),
            damaged,
            entries,
            present: true,
        };
        let kept = |runs: &[Entry]| Witnessed {
            runs: runs.iter().map(|e| (e.run, *e)).collect(),
            damaged: Vec::new(),
            entries: runs.len() as u64,
            present: true,
        };
        // Moved entries come in run order.
        let moved = |runs: &[Entry]| {
            let mut runs = runs.to_vec();
            runs.sort_by_key(|e| e.run);
            runs
        };
        let all = [entry(a, 3), entry(b, 5), entry(c, 1)];
        // (entries in the file, damaged entries, live runs, slack, the split)
        let table: Vec<SplitCase> = vec![
            // Not grown: two entries per kept run and the slack.
            (12, vec![], vec![a, b, c], 6, None),
            (10, vec![], vec![a], 8, None),
            // Grown with superseded entries of live runs only: rewritten, nothing moved.
            (
                13,
                vec![],
                vec![a, b, c],
                6,
                Some(Split {
                    kept: kept(&all),
                    moved: vec![],
                }),
            ),
            // Grown with runs no longer live: theirs move.
            (
                11,
                vec![],
                vec![a],
                8,
                Some(Split {
                    kept: kept(&all[..1]),
                    moved: moved(&all[1..]),
                }),
            ),
            (
                3,
                vec![],
                vec![],
                2,
                Some(Split {
                    kept: kept(&[]),
                    moved: moved(&all),
                }),
            ),
            // A damaged entry: the file is evidence and stays.
            (1000, vec![4], vec![a], 0, None),
        ];
        for (entries, damaged, live, slack, want) in table {
            let got = split(
                &witnessed(entries, damaged.clone()),
                |id| live.contains(&id),
                slack,
            );
            assert_eq!(
                got, want,
                "{entries} entries, damaged {damaged:?}, live {live:?}"
            );
        }
    }

    #[test]
    fn a_writer_appends_syncs_and_compacts() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (RunId::new(), RunId::new());
        {
            let w = Writer::open(tmp.path(), None).unwrap();
            w.append(&[entry(a, 1)]).unwrap();
            w.append(&[entry(a, 2), entry(b, 1)]).unwrap();
            w.sync().unwrap();
        }
        let read_back = read(tmp.path()).unwrap();
        assert_eq!(read_back.entries, 3);
        assert_eq!(read_back.runs[&a], entry(a, 2));
        {
            let _w = Writer::open(tmp.path(), Some(&read_back)).unwrap();
        }
        let compacted = read(tmp.path()).unwrap();
        assert_eq!(compacted.entries, 2);
        assert_eq!(compacted.runs, read_back.runs);
        let mode = fs::metadata(tmp.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_partial_entry_left_by_a_crash_is_cut_before_appending() {
        let tmp = tempfile::tempdir().unwrap();
        let a = RunId::new();
        {
            let w = Writer::open(tmp.path(), None).unwrap();
            w.append(&[entry(a, 1)]).unwrap();
        }
        let path = tmp.path().join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        {
            let w = Writer::open(tmp.path(), None).unwrap();
            w.append(&[entry(a, 2)]).unwrap();
        }
        let w = read(tmp.path()).unwrap();
        assert_eq!(w.damaged, Vec::<u64>::new());
        assert_eq!(w.runs[&a], entry(a, 2));
    }
}
