//! Finished runs kept outside the live store.
//!
//! sled 0.34 opens a database in time proportional to its size, so a journal that keeps every
//! finished run in its store makes every `resume` slower as history grows (a million records:
//! four times a fresh journal's). When enough finished runs have piled up, opening for writing
//! moves them here ([`crate::live_store`]) and writes a new, small live store.
//!
//! Layout, in `archive/` inside the journal directory:
//!
//! - `<RUN>.run` — the run's records, one line each: the JSON that the store kept after its CRC,
//!   byte for byte, so the run's hash chain (and the witness's entry) still covers them. Written
//!   to a temporary file, synced and renamed: a run's file is whole or absent.
//! - `witness` — the latest witness entries of runs that left the live store, moved out of the
//!   journal's witness when opening rewrites it ([`witness::split`]); read with the index.
//! - `index` — append-only, one line per archived run: `<RUN> <CRC32 hex> <summary JSON>`; the
//!   last line of a run counts (a run written again after it was archived is archived again).
//!   A torn last line (a crash while appending) is ignored: its run is still in the live store.
//!
//! A run is archived only when its records verify (contiguous, decodable, their chain equal to
//! the summary's and the witness's); reading it back checks all of that again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::witness::{self, Chain};
use crate::{JournalError, Record, RunId, RunState, RunSummary, io_at};

/// The archive's directory inside the journal directory.
pub(crate) const DIR: &str = "archive";
const INDEX: &str = "index";
const RUN_EXT: &str = "run";
const TMP_EXT: &str = "tmp";

/// A summary as read from the index: unreadable ones keep their run listed (see
/// `CachedSummary` in the sled journal).
pub(crate) type Summaries = BTreeMap<RunId, Result<RunSummary, String>>;

/// The archive directory of the journal in `journal`.
pub(crate) fn dir(journal: &Path) -> PathBuf {
    journal.join(DIR)
}

fn run_file(journal: &Path, id: RunId) -> PathBuf {
    dir(journal).join(format!("{id}.{RUN_EXT}"))
}

/// Whether run `id` has a file in the archive (whether or not the index lists it yet).
pub(crate) fn has_run(journal: &Path, id: RunId) -> bool {
    run_file(journal, id).exists()
}

/// Where a run's line is in the index, and the run's state: what the journal keeps in memory
/// of an archived run (its whole summary is read back from the line when asked for), so that
/// 100,000 archived runs cost a few MB, not a hundred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Place {
    /// The line's first byte in the index.
    pub(crate) offset: u64,
    /// The line's length, without its newline.
    pub(crate) len: u32,
    /// The run's state (finished: the archive holds no other).
    pub(crate) state: RunState,
}

/// An archived run as the index's last line of it reads: the line's place, what its summary
/// claims and its runbook's name (one allocation per runbook), or why the summary cannot be
/// read.
pub(crate) type Scanned = Result<(Place, witness::Claim, Arc<str>), String>;

/// The archived runs as the index lists them (none if there is no archive), read without
/// holding their summaries: one pass finds each run's last line, a second parses those lines,
/// one at a time. Reads only.
pub(crate) fn scan(journal: &Path) -> Result<BTreeMap<RunId, Scanned>, JournalError> {
    let path = dir(journal).join(INDEX);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_at("read", &path)(e)),
    };
    let mut last: std::collections::HashMap<RunId, u64> = std::collections::HashMap::new();
    each_line(&file, |offset, line| {
        if let Some((id, ..)) = split_line(line, true) {
            last.insert(id, offset);
        }
    })
    .map_err(io_at("read", &path))?;
    let mut out = BTreeMap::new();
    // Each runbook's name allocated once, not once per run.
    let mut books: std::collections::HashSet<Arc<str>> = std::collections::HashSet::new();
    each_line(&file, |offset, line| {
        let Some((id, crc, json)) = split_line(line, false) else {
            return;
        };
        if last.get(&id) != Some(&offset) {
            return;
        }
        let scanned = match (summary_of(id, crc, json), u32::try_from(line.len())) {
            (Ok(s), Ok(len)) => Ok((
                Place {
                    offset,
                    len,
                    state: s.state,
                },
                witness::Claim::of(&s),
                match books.get(s.runbook.as_str()) {
                    Some(book) => book.clone(),
                    None => {
                        let book: Arc<str> = s.runbook.into();
                        books.insert(book.clone());
                        book
                    }
                },
            )),
            (Ok(_), Err(_)) => Err("its archive index line is over 4 GiB".to_owned()),
            (Err(detail), _) => Err(detail),
        };
        out.insert(id, scanned);
    })
    .map_err(io_at("read", &path))?;
    Ok(out)
}

/// Calls `each` with the offset and bytes (without the newline) of every whole line of `file`,
/// from its start; a last line without its newline (torn) is left out.
fn each_line(file: &File, mut each: impl FnMut(u64, &[u8])) -> io::Result<()> {
    use std::io::{Seek as _, SeekFrom};
    let mut reader = BufReader::with_capacity(1 << 16, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        if n > 1 {
            each(offset, &line[..n - 1]);
        }
        offset += n as u64;
    }
}

/// An index line's run, checksum and summary JSON; `None` for a line that is not one (warned
/// about when `warn`).
fn split_line(line: &[u8], warn: bool) -> Option<(RunId, &[u8], &[u8])> {
    let mut parts = line.splitn(3, |b| *b == b' ');
    let (Some(id), Some(crc), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
        if warn {
            tracing::warn!("ignoring a malformed line of the journal's archive index");
        }
        return None;
    };
    let id = std::str::from_utf8(id)
        .ok()
        .and_then(|s| s.parse::<RunId>().ok());
    if id.is_none() && warn {
        tracing::warn!("ignoring an archive index line that names no run");
    }
    Some((id?, crc, json))
}

/// The summaries of the archived runs (none if there is no archive). Reads only.
pub(crate) fn load(journal: &Path) -> Result<Summaries, JournalError> {
    let path = dir(journal).join(INDEX);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Summaries::new()),
        Err(e) => return Err(io_at("read", &path)(e)),
    };
    Ok(parse_index(&bytes))
}

/// The summaries of archived runs `wanted`, each read back from its place in the index (one
/// open of the index for all of them): as the index was read when the places were taken, or
/// why a line no longer reads the same.
pub(crate) fn read_places(
    journal: &Path,
    wanted: &[(RunId, Place)],
) -> Vec<Result<RunSummary, String>> {
    use std::os::unix::fs::FileExt as _;
    if wanted.is_empty() {
        return Vec::new();
    }
    let path = dir(journal).join(INDEX);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            let detail = format!("the archive's index {} cannot be read: {e}", path.display());
            return wanted.iter().map(|_| Err(detail.clone())).collect();
        }
    };
    let mut line = Vec::new();
    wanted
        .iter()
        .map(|(id, place)| {
            line.resize(place.len as usize, 0);
            file.read_exact_at(&mut line, place.offset)
                .map_err(|e| format!("its archive index line cannot be read: {e}"))?;
            match parse_line(&line) {
                Some((named, summary)) if named == *id => summary,
                _ => Err("its archive index line is no longer where it was read".to_owned()),
            }
        })
        .collect()
}

/// The index's lines, last line per run winning; a torn last line is left out.
fn parse_index(bytes: &[u8]) -> Summaries {
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => &bytes[..=end],
        None => return Summaries::new(),
    };
    complete
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect()
}

/// One index line (without its newline): its run and the run's summary, or why the summary
/// cannot be read; `None` for a line that names no run.
fn parse_line(line: &[u8]) -> Option<(RunId, Result<RunSummary, String>)> {
    let (id, crc, json) = split_line(line, true)?;
    Some((id, summary_of(id, crc, json)))
}

/// The summary of run `id` in an index line with checksum `crc`, or why it cannot be read.
fn summary_of(id: RunId, crc: &[u8], json: &[u8]) -> Result<RunSummary, String> {
    std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .filter(|crc| *crc == crc32fast::hash(json))
        .ok_or_else(|| "its archive index line fails its checksum".to_owned())
        .and_then(|_| {
            serde_json::from_slice::<RunSummary>(json)
                .map_err(|e| format!("its archive index line does not decode: {e}"))
        })
        .and_then(|s| {
            if s.id == id {
                Ok(s)
            } else {
                Err(format!("its archive index line names run {}", s.id))
            }
        })
}

/// The archive's witness: the latest witness entry of each run that left the live store, moved
/// out of the journal's witness when opening rewrites it ([`witness::split`]), so that opening
/// reads entries of live runs only. Read with the index ([`witnessed`]).
fn witness_file(journal: &Path) -> PathBuf {
    dir(journal).join(witness::FILE)
}

/// The archive's directory, created (owner-only, durably) if it is not there yet.
fn create_dir(journal: &Path) -> Result<PathBuf, JournalError> {
    let archive = dir(journal);
    if !archive.is_dir() {
        fs::DirBuilder::new()
            .mode_private()
            .create(&archive)
            .map_err(io_at("create", &archive))?;
        sync(journal)?;
    }
    Ok(archive)
}

/// Appends witness entries of runs no longer live to the archive's witness, durably (the
/// archive's directory is created if need be). Before the journal's witness is rewritten
/// without them: a crash in between leaves an entry in both, and the two agree.
pub(crate) fn keep_witnessed(
    journal: &Path,
    entries: &[witness::Entry],
) -> Result<(), JournalError> {
    create_dir(journal)?;
    let path = witness_file(journal);
    witness::append_durably(&path, entries).map_err(io_at("append to", &path))
}

/// The archive's witness (empty if there is none). Reads only.
pub(crate) fn witnessed(journal: &Path) -> Result<witness::Witnessed, JournalError> {
    let path = witness_file(journal);
    witness::read_file(&path).map_err(io_at("read", &path))
}

/// Writes runs into the archive: each run's file whole (synced, renamed), then their index lines
/// in one synced append. A crash before the index line leaves the run where it was: only in the
/// live store, its file unused.
pub(crate) struct Writer {
    journal: PathBuf,
    lines: Vec<u8>,
    /// Each queued line's run, state, start in `lines` and length.
    queued: Vec<(RunId, RunState, usize, usize)>,
}

impl Writer {
    /// Starts archiving into `journal`'s archive, removing what an interrupted one left behind.
    pub(crate) fn start(journal: &Path) -> Result<Self, JournalError> {
        let archive = create_dir(journal)?;
        for entry in fs::read_dir(&archive).map_err(io_at("list", &archive))? {
            let path = entry.map_err(io_at("list", &archive))?.path();
            if path.extension().is_some_and(|e| e == TMP_EXT) {
                fs::remove_file(&path).map_err(io_at("remove", &path))?;
            }
        }
        Ok(Self {
            journal: journal.to_path_buf(),
            lines: Vec::new(),
            queued: Vec::new(),
        })
    }

    /// Writes run `id`'s file from its records' JSON, in order, and queues its index line.
    pub(crate) fn put<'a>(
        &mut self,
        summary: &RunSummary,
        records: impl Iterator<Item = &'a [u8]>,
    ) -> Result<(), JournalError> {
        let path = run_file(&self.journal, summary.id);
        let tmp = path.with_extension(TMP_EXT);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_private()
            .open(&tmp)
            .map_err(io_at("create", &tmp))?;
        let mut out = BufWriter::with_capacity(1 << 16, file);
        for json in records {
            out.write_all(json)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(io_at("write", &tmp))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| io_at("write", &tmp)(e.into_error()))?;
        file.sync_data().map_err(io_at("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_at("rename", &tmp))?;
        let json = serde_json::to_vec(summary)
            .map_err(|e| io_at("encode a summary for", &path)(io::Error::other(e)))?;
        let crc = crc32fast::hash(&json);
        let start = self.lines.len();
        self.lines
            .extend_from_slice(format!("{} {crc:08x} ", summary.id).as_bytes());
        self.lines.extend_from_slice(&json);
        self.queued
            .push((summary.id, summary.state, start, self.lines.len() - start));
        self.lines.push(b'\n');
        Ok(())
    }

    /// Makes the renamed files durable, then appends and syncs the index lines: from here on
    /// the runs are archived. Returns each archived run's place in the index.
    pub(crate) fn finish(self) -> Result<Vec<(RunId, Place)>, JournalError> {
        if self.lines.is_empty() {
            return Ok(Vec::new());
        }
        let archive = dir(&self.journal);
        sync(&archive)?;
        let index = archive.join(INDEX);
        let created = !index.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode_private()
            .open(&index)
            .map_err(io_at("open", &index))?;
        // An append cut short (a full disk, a kill between two pages of the write) left a line
        // without its end: it is ended first, so that the first new line is a line of its own
        // and not the torn one's tail (whose run is still in the live store, which wins).
        let (length, torn) = tail_of(&file).map_err(io_at("read", &index))?;
        if torn {
            tracing::warn!(index = %index.display(), "ending a line of the archive's index cut short by an earlier append");
        }
        let end: &[u8] = if torn { b"\n" } else { b"" };
        file.write_all(end)
            .and_then(|()| file.write_all(&self.lines))
            .and_then(|()| file.sync_data())
            .map_err(io_at("append to", &index))?;
        if created {
            sync(&archive)?;
        }
        let base = length + u64::from(torn);
        self.queued
            .into_iter()
            .map(|(id, state, start, len)| {
                let len = u32::try_from(len).map_err(|_| {
                    io_at("append to", &index)(io::Error::other("an index line over 4 GiB"))
                })?;
                Ok((
                    id,
                    Place {
                        offset: base + start as u64,
                        len,
                        state,
                    },
                ))
            })
            .collect()
    }
}

/// `file`'s length, and whether its last line was cut short (it does not end with a newline).
fn tail_of(file: &File) -> io::Result<(u64, bool)> {
    use std::os::unix::fs::FileExt as _;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, false));
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok((len, last[0] != b'\n'))
}

fn sync(path: &Path) -> Result<(), JournalError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_at("sync", path))
}

/// Owner-only modes for what the archive creates.
trait Private {
    fn mode_private(&mut self) -> &mut Self;
}

impl Private for fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::DirBuilderExt::mode(self, 0o700)
    }
}

impl Private for OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// The records of archived run `id`, verified as a full read of the store is: contiguous from 1,
/// each decoding to its seq, `summary.last_seq` of them, their chain equal to the summary's and,
/// where the witness has an entry, to the witness's. Each record comes with its JSON as stored.
pub(crate) fn read(
    journal: &Path,
    summary: &RunSummary,
    witnessed: Option<witness::Entry>,
) -> Result<Lines, JournalError> {
    let id = summary.id;
    let corrupt = |seq: u64, detail: String| JournalError::Corrupt {
        run: id,
        seq,
        detail,
    };
    let (records, chain, stop) = prefix(journal, id);
    if let Some((seq, detail)) = stop.filter(|(seq, _)| *seq <= summary.last_seq) {
        return Err(corrupt(seq, detail));
    }
    let mut chain_at = witness::chain_start(id);
    for (record, json) in &records {
        chain_at = witness::chain_next(&chain_at, json);
        if let Some(w) = witnessed.filter(|w| w.seq == record.seq)
            && w.chain != chain_at
        {
            return Err(corrupt(
                record.seq,
                format!(
                    "the archived records up to {} are not those that were made durable (their \
                     hash chain differs from the witness's)",
                    record.seq
                ),
            ));
        }
    }
    let found = records.len() as u64;
    if found != summary.last_seq {
        return Err(corrupt(
            found.min(summary.last_seq) + 1,
            format!(
                "the archive holds {found} records of the run but its summary says {}",
                summary.last_seq
            ),
        ));
    }
    if summary.chain.as_deref().and_then(witness::chain_from_hex) != Some(chain) {
        return Err(corrupt(
            summary.last_seq,
            "the run's archived records do not match its summary's hash chain".to_owned(),
        ));
    }
    Ok(records)
}

/// Records read from the archive, each with its JSON as stored.
pub(crate) type Lines = Vec<(Record, Vec<u8>)>;

/// The longest intact prefix of archived run `id` (each line decoding to the next seq), the
/// chain over it, and where and why it stops if it does before the file's end.
pub(crate) fn prefix(journal: &Path, id: RunId) -> (Lines, Chain, Option<(u64, String)>) {
    let mut records = Vec::new();
    let mut chain = witness::chain_start(id);
    let path = run_file(journal, id);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            let detail = format!("its archive file {} cannot be read: {e}", path.display());
            return (records, chain, Some((1, detail)));
        }
    };
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let expected = records.len() as u64 + 1;
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return (records, chain, None),
            Ok(_) if line.last() != Some(&b'\n') => {
                let detail = format!("archived record {expected} is cut short");
                return (records, chain, Some((expected, detail)));
            }
            Ok(_) => {}
            Err(e) => {
                let detail = format!("archived record {expected} cannot be read: {e}");
                return (records, chain, Some((expected, detail)));
            }
        }
        line.pop();
        match serde_json::from_slice::<Record>(&line) {
            Ok(record) if record.seq == expected => {
                chain = witness::chain_next(&chain, &line);
                records.push((record, line.clone()));
            }
            Ok(record) => {
                let detail = format!(
                    "archived record {expected} missing: the file has record {} there",
                    record.seq
                );
                return (records, chain, Some((expected, detail)));
            }
            Err(e) => {
                let detail = format!("archived record {expected} does not decode: {e}");
                return (records, chain, Some((expected, detail)));
            }
        }
    }
}

/// The lines of archived run `id`'s file after its first `skip`, as they are (whether they
/// decode or not): what an accepted loss sets aside. None if the file cannot be read.
pub(crate) fn lines_after(journal: &Path, id: RunId, skip: u64) -> Vec<Vec<u8>> {
    let Ok(bytes) = fs::read(run_file(journal, id)) else {
        return Vec::new();
    };
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_keeps_the_last_line_of_each_run_and_drops_a_torn_tail() {
        let a = RunId::new();
        let b = RunId::new();
        let line = |id: RunId, seq: u64| {
            let mut s = RunSummary::empty(id, chrono::Utc::now());
            s.last_seq = seq;
            let json = serde_json::to_vec(&s).unwrap();
            let mut out = format!("{id} {:08x} ", crc32fast::hash(&json)).into_bytes();
            out.extend_from_slice(&json);
            out.push(b'\n');
            out
        };
        let mut bytes = line(a, 3);
        bytes.extend(line(b, 4));
        bytes.extend(line(a, 7));
        let torn = line(b, 9);
        bytes.extend_from_slice(&torn[..torn.len() - 5]);
        let got = parse_index(&bytes);
        assert_eq!(got[&a].as_ref().unwrap().last_seq, 7);
        assert_eq!(got[&b].as_ref().unwrap().last_seq, 4);

        // A line whose checksum fails keeps its run listed, as damaged.
        let mut bad = line(a, 8);
        let at = bad.len() - 3;
        bad[at] ^= 1;
        let got = parse_index(&bad);
        assert!(got[&a].as_ref().unwrap_err().contains("checksum"));
    }

    fn archive_run(journal: &Path, id: RunId, seq: u64) -> Vec<(RunId, Place)> {
        let mut summary = RunSummary::empty(id, chrono::Utc::now());
        summary.state = RunState::Succeeded;
        summary.last_seq = seq;
        let mut writer = Writer::start(journal).unwrap();
        writer
            .put(&summary, std::iter::once(b"{}".as_slice()))
            .unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn an_append_after_a_torn_index_line_starts_a_line_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        archive_run(tmp.path(), a, 2);
        // An append cut short: half of b's line, no end.
        let index = dir(tmp.path()).join(INDEX);
        let whole = fs::read(&index).unwrap();
        archive_run(tmp.path(), b, 3);
        let mut torn = fs::read(&index).unwrap();
        torn.truncate(whole.len() + (torn.len() - whole.len()) / 2);
        fs::write(&index, &torn).unwrap();
        assert_eq!(
            load(tmp.path()).unwrap().len(),
            1,
            "the torn line is not read"
        );

        // The next archive lists its run, and the runs before it as they were.
        archive_run(tmp.path(), c, 4);
        let got = load(tmp.path()).unwrap();
        assert_eq!(got[&c].as_ref().unwrap().last_seq, 4, "{got:?}");
        assert_eq!(got[&a].as_ref().unwrap().last_seq, 2);
        // The torn line is one of its own: its run is listed as damaged (the live store, which
        // still holds it, wins over it), not glued to the next run's line.
        assert!(
            got[&b].as_ref().unwrap_err().contains("checksum"),
            "{got:?}"
        );
        assert!(fs::read(&index).unwrap().ends_with(b"\n"));
        // Scanned for places, the same.
        let scanned = scan(tmp.path()).unwrap();
        assert_eq!(scanned.len(), 3);
        assert_eq!(scanned[&c].as_ref().unwrap().1.last_seq, 4);
        assert!(scanned[&b].as_ref().unwrap_err().contains("checksum"));
    }

    #[test]
    fn a_summary_is_read_back_from_its_place_in_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (RunId::new(), RunId::new());
        let mut places = archive_run(tmp.path(), a, 2);
        places.extend(archive_run(tmp.path(), b, 5));
        // A failed run archived again (retried, ended again): its last line counts.
        let mut summary = RunSummary::empty(a, chrono::Utc::now());
        summary.state = RunState::Failed;
        summary.last_seq = 9;
        summary.runbook = "rotate".into();
        let mut writer = Writer::start(tmp.path()).unwrap();
        writer
            .put(&summary, std::iter::once(b"{}".as_slice()))
            .unwrap();
        let again = writer.finish().unwrap();
        assert_eq!(again[0].1.state, RunState::Failed);

        // The places the writer gave are those a reader of the index finds.
        let scanned = scan(tmp.path()).unwrap();
        assert_eq!(scanned.len(), 2);
        let (place, claim, runbook) = scanned[&a].as_ref().unwrap();
        assert_eq!((*place, claim.last_seq), (again[0].1, 9));
        assert_eq!(&**runbook, "rotate", "the last line's runbook");
        assert_eq!(scanned[&b].as_ref().unwrap().0, places[1].1);
        let read = read_places(tmp.path(), &[places[1], again[0], places[0]]);
        assert_eq!(read[0].as_ref().unwrap().last_seq, 5);
        assert_eq!(read[1].as_ref().unwrap().last_seq, 9);
        assert_eq!(read[1].as_ref().unwrap().state, RunState::Failed);
        assert_eq!(
            read[2].as_ref().unwrap().last_seq,
            2,
            "an earlier line still reads"
        );
        // A place that names another run's line (the index replaced) is refused.
        let wrong = read_places(tmp.path(), &[(b, places[0].1)]);
        assert!(
            wrong[0].as_ref().unwrap_err().contains("no longer"),
            "{wrong:?}"
        );
        fs::remove_file(dir(tmp.path()).join(INDEX)).unwrap();
        let gone = read_places(tmp.path(), &[places[1]]);
        assert!(
            gone[0].as_ref().unwrap_err().contains("cannot be read"),
            "{gone:?}"
        );
    }
}
