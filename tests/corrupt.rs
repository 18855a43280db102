//! A corrupt or torn journal is detected, reported with the run and the record, and left as
//! it is: `log` and `resume` refuse to work from it and repair nothing silently.

use std::path::Path;
use std::time::Duration;

use runbook_journals::RunId;

use crate::support::{Sandbox, wait_for};

const GATED: &str = r#"
runbook: gated
steps:
  - id: a
    shell: { run: "echo a >> out.txt" }
  - id: confirm
    gate: "continue?"
  - id: b
    shell: { run: "echo b >> out.txt" }
"#;

/// A run parked at its gate; returns it and its number of records.
fn parked(sb: &Sandbox) -> (String, usize) {
    sb.write("gated.yaml", GATED);
    sb.cmd(&["run", "gated.yaml"]).code(3);
    let run = sb.only_run();
    let count = sb.records(&run).len();
    (run, count)
}

/// The sled key of record `seq` of `run` (see `journals/src/sled_journal.rs`).
fn event_key(run: &str, seq: u64) -> Vec<u8> {
    let id: RunId = run.parse().expect("a run id");
    let mut key = vec![b'e'];
    key.extend_from_slice(&id.to_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Opens the journal with sled directly, as the journal does: without sled's background
/// flusher, which would keep the directory locked for a moment after the handle is dropped.
fn open(journal: &Path) -> sled::Db {
    let mut db = None;
    wait_for("the journal to be free", Duration::from_secs(5), || {
        db = sled::Config::new()
            .path(journal)
            .flush_every_ms(None)
            .open()
            .ok();
        db.is_some()
    });
    db.expect("opened")
}

/// Every key and value of the journal's tree, for comparing before and after.
fn dump(journal: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    open(journal)
        .iter()
        .map(|e| {
            let (k, v) = e.expect("read");
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn with_db(journal: &Path, f: impl FnOnce(&sled::Db)) {
    let db = open(journal);
    f(&db);
    db.flush().expect("flush");
}

/// `log` and `resume` both fail naming `needle`, and leave every byte of the tree as it was.
fn assert_refused_untouched(sb: &Sandbox, run: &str, needle: &str) {
    let before = dump(&sb.journal());
    for args in [vec!["log", run], vec!["resume", run]] {
        let out = sb.cmd(&args).run();
        assert!(
            out.code().is_some_and(|c| c != 0),
            "{}",
            out.explain(&format!("`{}` must fail", args.join(" ")))
        );
        assert!(
            out.stderr.contains(needle),
            "{}",
            out.explain(&format!("`{}` must say `{needle}`", args.join(" ")))
        );
    }
    assert!(
        dump(&sb.journal()) == before,
        "the failed commands changed the journal"
    );
    assert_eq!(sb.read("out.txt"), "a\n", "nothing ran");
}

#[test]
fn a_flipped_byte_in_the_last_record_is_reported_and_left_alone() {
    let sb = Sandbox::new();
    let (run, count) = parked(&sb);
    let seq = count as u64;
    let key = event_key(&run, seq);
    let mut corrupted = Vec::new();
    with_db(&sb.journal(), |db| {
        let value = db.get(&key).expect("get").expect("the last record exists");
        let mut bytes = value.to_vec();
        // Past the 4-byte checksum, inside the JSON.
        let at = 4 + (bytes.len() - 4) / 2;
        bytes[at] ^= 0x01;
        db.insert(&key, bytes.clone()).expect("insert");
        corrupted = bytes;
    });

    assert_refused_untouched(
        &sb,
        &run,
        &format!("journal of run {run} is corrupt at record {seq}: checksum mismatch"),
    );
    let after = dump(&sb.journal());
    let stored = after
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone());
    assert_eq!(
        stored,
        Some(corrupted),
        "the corrupt record is kept as it was"
    );
}

#[test]
fn a_torn_tail_is_reported_and_left_alone() {
    let sb = Sandbox::new();
    let (run, count) = parked(&sb);
    let seq = count as u64;
    with_db(&sb.journal(), |db| {
        db.remove(event_key(&run, seq))
            .expect("remove")
            .expect("the last record existed");
    });

    assert_refused_untouched(
        &sb,
        &run,
        &format!(
            "journal of run {run} is corrupt at record {seq}: the log ends at record {} but the run's summary says {seq} (torn tail)",
            seq - 1
        ),
    );
}
