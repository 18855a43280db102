//! Compaction and the archive, on real sled stores: what is read back after it is the same as
//! before, a crash between any two of its steps loses nothing, and archived runs can be written
//! again.

use super::*;
use crate::archive;
use crate::conformance::{started, state, step};
use crate::{Brief, Event, Journal, Record, RunState, RunSummary, SledJournal, SledOptions};

fn opts(archive_after: u64) -> SledOptions {
    SledOptions {
        archive_after,
        ..SledOptions::default()
    }
}

/// Never compacts.
const NEVER: u64 = u64::MAX;

fn add(journal: &SledJournal, id: RunId, events: &[Event]) -> Vec<Record> {
    let last = journal.summary(id).unwrap().last_seq;
    journal.append(id, last, events).unwrap()
}

/// A journal with two finished runs (one with a record large enough for sled to keep it in a
/// blob file), one unfinished run holding a lock, and a meta value. Returns the run ids.
fn history(dir: &Path) -> [RunId; 3] {
    let journal = SledJournal::open(dir, opts(NEVER)).unwrap();
    let [done, failed, open] = [RunId::new(), RunId::new(), RunId::new()];
    journal
        .create(done, Some("a"), &[started(Some("a"))])
        .unwrap();
    for i in 0..40 {
        add(&journal, done, &[step(&format!("s{i}"))]);
    }
    add(&journal, done, &[state(RunState::Succeeded)]);
    journal.create(failed, None, &[started(None)]).unwrap();
    add(&journal, failed, &[step(&"x".repeat(300_000))]);
    add(&journal, failed, &[state(RunState::Failed)]);
    journal
        .create(open, Some("b"), &[started(Some("b"))])
        .unwrap();
    add(&journal, open, &[step("waiting")]);
    journal.put_meta("schedule", b"next").unwrap();
    [done, failed, open]
}

/// [`history`], then its two finished runs archived: the run ids, and what a reader saw of the
/// finished runs before.
fn archived_history(dir: &Path) -> ([RunId; 3], Vec<String>) {
    let [done, failed, open] = history(dir);
    let before = seen_runs(
        &SledJournal::open(dir, opts(NEVER)).unwrap(),
        &[done, failed],
    );
    drop(SledJournal::open(dir, opts(10)).unwrap());
    ([done, failed, open], before)
}

/// The journal reports exactly `runs` as gone, and reading one fails as corrupt.
fn assert_gone(journal: &SledJournal, runs: &[RunId]) {
    let problems: Vec<String> = journal.problems().iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), runs.len(), "{problems:?}");
    for id in runs {
        assert!(
            problems
                .iter()
                .any(|p| p.contains(&id.to_string()) && p.contains("gone")),
            "{problems:?}"
        );
        assert!(matches!(
            journal.read(*id),
            Err(crate::JournalError::Corrupt { .. })
        ));
    }
}

/// Everything a reader sees: every run's summary and records, locks, meta, problems.
fn seen(journal: &SledJournal, runs: &[RunId]) -> String {
    let mut out = String::new();
    for id in runs {
        let summary = journal.summary(*id).unwrap();
        let records = journal.read(*id).unwrap();
        out += &serde_json::to_string(&summary).unwrap();
        out += "\n";
        out += &serde_json::to_string(&records).unwrap();
        out += "\n";
    }
    out + &format!(
        "locks a={:?} b={:?} meta={:?} problems={:?} listed={}\n",
        journal.lock_holder("a").unwrap(),
        journal.lock_holder("b").unwrap(),
        journal.get_meta("schedule").unwrap(),
        journal
            .problems()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        journal.runs().unwrap().len()
    )
}

fn stores(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| valid_name(n) || n == "db")
        .collect();
    names.sort();
    names
}

#[test]
fn finished_runs_move_to_the_archive_and_read_back_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = history(tmp.path());
    let before = seen(&SledJournal::open(tmp.path(), opts(NEVER)).unwrap(), &runs);
    assert_eq!(stores(tmp.path()), ["db"]);

    let journal = SledJournal::open(tmp.path(), opts(10)).unwrap();
    assert_eq!(seen(&journal, &runs), before);
    // The finished runs are in the archive and no longer in the live store, which is new.
    assert_eq!(stores(tmp.path()), ["live-000001"]);
    for id in &runs[..2] {
        assert!(archive::dir(tmp.path()).join(format!("{id}.run")).is_file());
        assert!(journal.store.is_archived(*id));
        assert!(
            journal
                .store
                .db()
                .get(crate::sled_journal::summary_key(*id))
                .unwrap()
                .is_none()
        );
    }
    assert!(!journal.store.is_archived(runs[2]));
    // The unfinished run goes on in the new store, its lock kept.
    add(&journal, runs[2], &[state(RunState::Succeeded)]);
    assert_eq!(journal.lock_holder("b").unwrap(), None);
    let after = seen(&journal, &runs);
    drop(journal);

    // Reopened: the same, from the archive and the new store; read-only views too.
    assert_eq!(
        seen(&SledJournal::open(tmp.path(), opts(NEVER)).unwrap(), &runs),
        after
    );
    let view = SledJournal::open_read_only(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(seen(&view, &runs), after);
    // The next compaction archives the third run too, into the next store.
    drop(view);
    let journal = SledJournal::open(tmp.path(), opts(1)).unwrap();
    assert_eq!(seen(&journal, &runs), after);
    assert_eq!(stores(tmp.path()), ["live-000002"]);
    assert!(runs.iter().all(|id| journal.store.is_archived(*id)));
}

#[test]
fn a_compaction_removes_the_follow_mirrors_of_the_runs_it_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let [done, failed, open] = history(tmp.path());
    fs::create_dir(tmp.path().join(crate::follow_mirror::DIR)).unwrap();
    for id in [done, failed, open] {
        fs::write(crate::follow_mirror::path(tmp.path(), id), "{}\n").unwrap();
    }
    let journal = SledJournal::open(tmp.path(), opts(10)).unwrap();
    assert!(journal.store.is_archived(done) && journal.store.is_archived(failed));
    for id in [done, failed] {
        assert!(!crate::follow_mirror::path(tmp.path(), id).exists());
    }
    // The unfinished run may still be watched: its mirror stays, and goes when it is archived.
    assert!(crate::follow_mirror::path(tmp.path(), open).exists());
    add(&journal, open, &[state(RunState::Succeeded)]);
    drop(journal);
    drop(SledJournal::open(tmp.path(), opts(1)).unwrap());
    assert!(!crate::follow_mirror::path(tmp.path(), open).exists());
    assert_eq!(
        fs::read_dir(tmp.path().join(crate::follow_mirror::DIR))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_archive_is_read_only_when_a_run_outside_the_live_store_is_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let ([done, failed, open], before) = archived_history(tmp.path());
    // Writing to the live run and starting another: the archive's index is not read.
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(journal.summary(open).unwrap().last_seq, 2);
    assert_eq!(journal.read(open).unwrap().len(), 2);
    assert_eq!(journal.resolve(&open.to_string()).unwrap(), open);
    let next = RunId::new();
    journal.create(next, None, &[started(None)]).unwrap();
    add(&journal, open, &[step("goes on")]);
    assert!(!journal.store.archive_is_loaded());
    // A run that was archived cannot be created again, still without reading the index.
    assert!(journal.create(done, None, &[started(None)]).is_err());
    assert!(!journal.store.archive_is_loaded());
    // An archived run asked for by id, a prefix or a listing: read then, and the same as before.
    assert_eq!(journal.read(done).unwrap().len(), 42);
    assert!(journal.store.archive_is_loaded());
    assert_eq!(journal.resolve(&failed.to_string()).unwrap(), failed);
    assert_eq!(journal.runs().unwrap().len(), 4);
    drop(journal);
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(journal.runs().unwrap().len(), 4);
    assert_eq!(seen_runs(&journal, &[done, failed]), before);
    drop(journal);

    // The index gone: the runs the witness saw durable are reported as gone when it is read —
    // by a listing, not by the live run's commands.
    fs::remove_file(archive::dir(tmp.path()).join("index")).unwrap();
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    add(&journal, open, &[state(RunState::Succeeded)]);
    assert!(!journal.store.archive_is_loaded());
    assert_gone(&journal, &[done, failed]);
}

#[test]
fn the_unfinished_runs_and_their_problems_are_told_without_reading_the_archive() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let ([done, failed, open], _) = archived_history(tmp.path());
    // The journal's witness still names the archived runs (nothing split it yet), and a run
    // the witness saw durable that is neither live nor archived: gone.
    let witnessed = witness::read(tmp.path()).unwrap();
    assert!(witnessed.runs.contains_key(&done) && witnessed.runs.contains_key(&failed));
    let ghost = RunId::new();
    let mut entry = witnessed.runs[&open];
    entry.run = ghost;
    OpenOptions::new()
        .append(true)
        .open(tmp.path().join(witness::FILE))
        .unwrap()
        .write_all(&entry.encode())
        .unwrap();

    for view in [
        SledJournal::open_read_only(tmp.path(), opts(NEVER)).unwrap(),
        SledJournal::open(tmp.path(), opts(NEVER)).unwrap(),
    ] {
        let unfinished: Vec<RunId> = view.unfinished_runs().iter().map(|s| s.id).collect();
        assert_eq!(unfinished, [open]);
        let problems: Vec<String> = view
            .live_problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(&ghost.to_string()) && problems[0].contains("gone"),
            "{problems:?}"
        );
        assert!(!view.store.archive_is_loaded(), "the archive is not read");
        // Listing the newest runs reads it: the archived runs are there, each as it ended.
        let newest: Vec<(RunId, RunState)> = view
            .newest_runs(&|_| true, &mut |_| true, 10)
            .iter()
            .map(|s| (s.id, s.state))
            .collect();
        let mut expected = vec![
            (done, RunState::Succeeded),
            (failed, RunState::Failed),
            (open, RunState::Running),
        ];
        expected.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        assert_eq!(newest, expected);
        assert!(view.store.archive_is_loaded());
        assert_eq!(view.problems().len(), 1, "the same ghost, nothing more");
        assert_eq!(view.live_problems().len(), 1);
        drop(view);
    }
}

/// A listing's filter: what it tells from a run's state and runbook alone, and what it wants of
/// a summary.
type Filter = (fn(Brief<'_>) -> bool, fn(&RunSummary) -> bool);

#[test]
fn archived_runs_are_held_as_places_and_listed_as_if_held_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    // 600 finished runs (every third failed) and two unfinished ones among them, every fifth
    // of runbook `rotate`, the others of `conformance`.
    let mut ids = Vec::new();
    for i in 0..602 {
        let id = RunId::new();
        let mut start = started(None);
        if let Event::RunStarted(s) = &mut start
            && i % 5 == 0
        {
            s.runbook = "rotate".into();
        }
        journal.create(id, None, &[start]).unwrap();
        let end = match i {
            100 | 500 => RunState::Waiting,
            i if i % 3 == 0 => RunState::Failed,
            _ => RunState::Succeeded,
        };
        add(&journal, id, &[state(end)]);
        ids.push(id);
    }
    let whole = journal.readable_runs();
    drop(journal);

    // Archived at the next open, then asked for by a listing: held as places in the index.
    let journal = SledJournal::open(tmp.path(), opts(10)).unwrap();
    assert_eq!(journal.readable_runs(), whole, "read back the same");
    assert!(journal.store.is_indexed(ids[0]) && journal.store.is_indexed(ids[601]));
    assert!(
        !journal.store.is_indexed(ids[100]),
        "an unfinished run stays whole"
    );
    assert_eq!(journal.summary(ids[3]).unwrap(), whole[3]);

    // Every listing agrees with the same listing over the whole summaries, across the chunks
    // it reads the held runs in.
    // A filter on states and runbooks is told to the journal, which reads back (and offers to
    // `wanted`) only the archived runs it lets through.
    let filters: [(&str, Filter); 8] = [
        ("all", (|_| true, |_| true)),
        ("failed", (|_| true, |s| s.state == RunState::Failed)),
        (
            "failed, by state",
            (|b| b.state == RunState::Failed, |_| true),
        ),
        ("unfinished", (|_| true, |s| !s.state.is_terminal())),
        (
            "unfinished, by state",
            (|b| !b.state.is_terminal(), |_| true),
        ),
        ("rotate, by runbook", (|b| b.runbook == "rotate", |_| true)),
        (
            "failed rotate, by both",
            (
                |b| b.runbook == "rotate" && b.state == RunState::Failed,
                |_| true,
            ),
        ),
        ("none", (|_| true, |_| false)),
    ];
    for (name, (could, filter)) in filters {
        for limit in [0, 1, 255, 256, 257, 400, 1000] {
            let mut offered = 0;
            let got = journal.newest_runs(
                &could,
                &mut |s| {
                    offered += 1;
                    assert!(could(s.brief()), "{name}: {:?} offered", s.brief());
                    filter(s)
                },
                limit,
            );
            let want: Vec<RunSummary> = whole
                .iter()
                .rev()
                .filter(|s| could(s.brief()) && filter(s))
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(got, want, "{name}, limit {limit}");
            if limit == 1000 {
                let could_be = whole.iter().filter(|s| could(s.brief())).count();
                assert!(could_be > 0, "{name}: some runs to offer");
                assert_eq!(
                    offered, could_be,
                    "{name}: each run `could` lets through, once"
                );
            }
        }
    }
    let mut counts = std::collections::HashMap::new();
    for s in &whole {
        *counts.entry(s.state).or_insert(0) += 1;
    }
    assert_eq!(journal.state_counts(), counts);
    assert_eq!(
        journal.unfinished_runs(),
        [whole[100].clone(), whole[500].clone()]
    );

    // A run that ends in this process is archived by its writer (once enough records of
    // finished runs are in the live store) and held as its place too.
    add(&journal, ids[500], &[state(RunState::Succeeded)]);
    for _ in 0..5 {
        let id = RunId::new();
        journal.create(id, None, &[started(None)]).unwrap();
        add(&journal, id, &[state(RunState::Succeeded)]);
    }
    // The writer compacts after answering the commit that ended a run, before the next one.
    journal.put_meta("barrier", b"").unwrap();
    assert!(journal.store.is_archived(ids[500]));
    assert!(journal.store.is_indexed(ids[500]));
    let after = journal.summary(ids[500]).unwrap();
    assert_eq!(after.state, RunState::Succeeded);
    assert_eq!(
        journal.newest_runs(&|_| true, &mut |s| s.id == ids[500], 5),
        [after]
    );
    assert!(journal.problems().is_empty(), "{:?}", journal.problems());
}

#[test]
fn opening_moves_the_witness_entries_of_runs_no_longer_live_to_the_archive() {
    use std::io::Write as _;
    let tmp = tempfile::tempdir().unwrap();
    let ([done, failed, open], before) = archived_history(tmp.path());
    let witnessed = witness::read(tmp.path()).unwrap();
    assert_eq!(witnessed.runs.len(), 3);
    // The witness grows past its slack as a long-lived holder's commits make it grow (here
    // with the entries it holds, written again).
    let mut file = OpenOptions::new()
        .append(true)
        .open(tmp.path().join(witness::FILE))
        .unwrap();
    for _ in 0..=witness::SLACK / 3 {
        for entry in witnessed.runs.values() {
            file.write_all(&entry.encode()).unwrap();
        }
    }
    drop(file);

    // Opening keeps the live run's entry and moves the others' to the archive's witness,
    // without reading the archive's index.
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert!(!journal.store.archive_is_loaded());
    let kept = witness::read(tmp.path()).unwrap();
    assert_eq!(kept.runs.keys().copied().collect::<Vec<_>>(), [open]);
    assert_eq!(kept.entries, 1);
    let moved = archive::witnessed(tmp.path()).unwrap();
    let mut archived_runs = vec![done, failed];
    archived_runs.sort();
    assert_eq!(
        moved.runs.keys().copied().collect::<Vec<_>>(),
        archived_runs
    );
    assert!(moved.runs.iter().all(|(id, e)| witnessed.runs[id] == *e));
    assert_eq!(seen_runs(&journal, &[done, failed]), before);
    drop(journal);
    // The next open rewrites nothing; a crash between the two writes (the entries in both
    // files) reads the same.
    let mut file = OpenOptions::new()
        .append(true)
        .open(tmp.path().join(witness::FILE))
        .unwrap();
    for entry in moved.runs.values() {
        file.write_all(&entry.encode()).unwrap();
    }
    drop(file);
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(witness::read(tmp.path()).unwrap().entries, 3);
    assert_eq!(seen_runs(&journal, &[done, failed]), before);
    drop(journal);

    // The archive's witness still accuses: with the index gone (and the journal's own witness
    // holding the live run only), the archived runs are reported gone.
    drop(witness::Writer::open(tmp.path(), Some(&kept)).unwrap());
    fs::remove_file(archive::dir(tmp.path()).join("index")).unwrap();
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_gone(&journal, &[done, failed]);
}

#[test]
fn a_crash_between_any_two_steps_of_a_compaction_loses_nothing() {
    for stop in [Step::Archived, Step::Written, Step::Switched] {
        let tmp = tempfile::tempdir().unwrap();
        let runs = history(tmp.path());
        let before = seen(&SledJournal::open(tmp.path(), opts(NEVER)).unwrap(), &runs);
        drop(SledJournal::open_stopping(tmp.path(), opts(10), Some(stop)).unwrap());
        // What the crash left, as the next open finds it.
        let live = match stop {
            Step::Archived | Step::Written => ["db"],
            Step::Switched => ["live-000001"],
        };
        let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
        assert_eq!(seen(&journal, &runs), before, "after a crash at {stop:?}");
        assert_eq!(
            stores(tmp.path()),
            live,
            "leftovers removed after a crash at {stop:?}"
        );
        // Writing goes on: the unfinished run, and a retried finished one.
        add(&journal, runs[2], &[step("after")]);
        add(
            &journal,
            runs[1],
            &[Event::RunReopened {
                by: "op".into(),
                comment: None,
            }],
        );
        let after = seen(&journal, &runs);
        drop(journal);
        let journal = SledJournal::open(tmp.path(), opts(10)).unwrap();
        assert_eq!(
            seen(&journal, &runs),
            after,
            "compacted after a crash at {stop:?}"
        );
        assert!(journal.problems().is_empty());
    }
}

#[test]
fn a_run_written_after_it_was_archived_is_whole_in_the_live_store_again() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = history(tmp.path());
    let journal = SledJournal::open(tmp.path(), opts(10)).unwrap();
    let failed = runs[1];
    assert!(journal.store.is_archived(failed));
    let last = journal.summary(failed).unwrap().last_seq;
    // A writer that read an older history is refused, as on a live run.
    assert!(matches!(
        journal.append(failed, last - 1, &[step("late")]),
        Err(JournalError::Conflict { .. })
    ));
    add(
        &journal,
        failed,
        &[
            Event::RunReopened {
                by: "op".into(),
                comment: None,
            },
            step("again"),
        ],
    );
    assert!(!journal.store.is_archived(failed));
    let records = journal.read(failed).unwrap();
    assert_eq!(records.len() as u64, last + 2);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == i as u64 + 1)
    );
    let seen_now = seen(&journal, &runs);
    drop(journal);
    // Not compacted: the live store's copy is read, the archive's older one ignored.
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(seen(&journal, &runs), seen_now);
    assert!(!journal.store.is_archived(failed));
}

#[test]
fn a_damaged_archive_file_is_reported_at_the_record_that_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = history(tmp.path());
    drop(SledJournal::open(tmp.path(), opts(10)).unwrap());
    let file = archive::dir(tmp.path()).join(format!("{}.run", runs[0]));
    let text = fs::read_to_string(&file).unwrap();
    // Record 5's step path changed: it still decodes, but the hash chain breaks there.
    let lines: Vec<&str> = text.lines().collect();
    let changed = lines[4].replacen("s3", "s9", 1);
    assert_ne!(changed, lines[4]);
    let mut edited = lines.clone();
    edited[4] = &changed;
    fs::write(&file, edited.join("\n") + "\n").unwrap();
    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    let err = journal.read(runs[0]).unwrap_err();
    assert!(
        matches!(&err, JournalError::Corrupt { run, .. } if *run == runs[0]),
        "{err}"
    );
    // A cut file names the first record missing.
    fs::write(&file, lines[..7].join("\n") + "\n").unwrap();
    let journal = {
        drop(journal);
        SledJournal::open(tmp.path(), opts(NEVER)).unwrap()
    };
    let err = journal.read(runs[0]).unwrap_err();
    assert!(
        matches!(&err, JournalError::Corrupt { seq: 8, .. }),
        "{err}"
    );
    // The other runs read as before, and writing to the damaged run is refused.
    journal.read(runs[1]).unwrap();
    assert!(journal.append(runs[0], 42, &[step("more")]).is_err());
}

#[test]
fn the_journal_lock_keeps_a_second_writer_and_readers_out() {
    let tmp = tempfile::tempdir().unwrap();
    let quick = SledOptions {
        busy_wait: Duration::from_millis(50),
        ..opts(NEVER)
    };
    let held = SledJournal::open(tmp.path(), quick).unwrap();
    assert!(matches!(
        SledJournal::open(tmp.path(), quick),
        Err(JournalError::Busy { .. })
    ));
    assert!(matches!(
        SledJournal::open_read_only(tmp.path(), quick),
        Err(JournalError::Busy { .. })
    ));
    drop(held);
    SledJournal::open_read_only(tmp.path(), quick).unwrap();
}

/// Runs as (records, state).
type Runs<'a> = &'a [(u64, crate::RunState)];

#[test]
fn compaction_is_due_on_enough_records_of_finished_runs() {
    use crate::RunState::{Aborted, Failed, Running, Succeeded, Waiting};
    let summary = |seq: u64, state: crate::RunState| {
        let mut s = RunSummary::empty(RunId::new(), chrono::Utc::now());
        s.last_seq = seq;
        s.state = state;
        (s.id, Ok::<_, String>(s))
    };
    // (runs, threshold, finished records when this process's last compaction failed, due)
    let table: &[(Runs, u64, Option<u64>, bool)] = &[
        (&[], 10, None, false),
        (&[], 0, None, false),
        (&[(9, Succeeded)], 10, None, false),
        (&[(10, Succeeded)], 10, None, true),
        (&[(4, Failed), (6, Aborted)], 10, None, true),
        (
            &[(100, Running), (100, Waiting), (9, Failed)],
            10,
            None,
            false,
        ),
        // Not while copying what is unfinished would cost more than it saves.
        (&[(10, Succeeded), (11, Running)], 10, None, false),
        (
            &[(20, Succeeded), (11, Running), (9, Waiting)],
            10,
            None,
            true,
        ),
        // After a failure at 12 finished records: again only once 10 more have finished.
        (&[(12, Succeeded), (9, Failed)], 10, Some(12), false),
        (&[(12, Succeeded), (10, Failed)], 10, Some(12), true),
        (
            &[(12, Succeeded), (10, Failed), (30, Running)],
            10,
            Some(12),
            false,
        ),
        (&[(40, Succeeded)], 10, Some(12), true),
        (&[(40, Succeeded)], 10, Some(u64::MAX), false),
    ];
    for (runs, threshold, failed_at, want) in table {
        let map: BTreeMap<_, _> = runs.iter().map(|(seq, st)| summary(*seq, *st)).collect();
        let tally = Tally::of(map.values().flatten());
        assert_eq!(
            tally.due(*threshold, *failed_at),
            *want,
            "{runs:?} at {threshold} after a failure at {failed_at:?}"
        );
    }
}

#[test]
fn a_failed_compaction_is_tried_again_once_as_many_more_records_have_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let journal = SledJournal::open(tmp.path(), opts(50)).unwrap();
    let store = || current(tmp.path()).unwrap();
    let first = store();
    // The name of the next store is taken by a file: writing it fails, before the pointer changes.
    let next = tmp
        .path()
        .join(format!("{LIVE}{:06}", generation(tmp.path(), &first) + 1));
    fs::write(&next, b"in the way").unwrap();
    // 22 records per run; due at 50.
    let finish = |round: usize| {
        let id = RunId::new();
        journal.create(id, None, &[started(None)]).unwrap();
        for i in 0..20 {
            add(&journal, id, &[step(&format!("r{round}s{i}"))]);
        }
        add(&journal, id, &[state(RunState::Succeeded)]);
        // The writer compacts after it answered the commit that ended the run, before it
        // takes the next request: this one waits for it.
        journal.put_meta("barrier", b"").unwrap();
        id
    };
    let mut runs: Vec<RunId> = (0..3).map(finish).collect();
    // 66 finished records: the compaction was due and failed; the journal goes on as it was.
    assert_eq!(store(), first);
    assert!(next.is_file());
    assert!(runs.iter().all(|id| !journal.store.is_archived(*id)));
    assert!(journal.problems().is_empty());
    // The obstacle goes, but 88 and 110 finished records are not 50 more than 66: no attempt.
    fs::remove_file(&next).unwrap();
    runs.push(finish(3));
    runs.push(finish(4));
    assert_eq!(store(), first);
    assert!(!next.exists());
    // 132: tried again, and done.
    runs.push(finish(5));
    assert_eq!(store(), next);
    assert!(next.is_dir());
    assert!(runs.iter().all(|id| journal.store.is_archived(*id)));
    assert!(journal.problems().is_empty());
    let seen_open = seen_runs(&journal, &runs);
    drop(journal);
    let reopened = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(seen_runs(&reopened, &runs), seen_open);
}

#[test]
fn only_live_store_names_are_taken_from_the_pointer() {
    for (name, ok) in [
        ("live-000001", true),
        ("live-7", true),
        ("live-", false),
        ("../etc", false),
        ("live-1/..", false),
        ("db", false),
    ] {
        assert_eq!(valid_name(name), ok, "{name}");
    }
}

#[test]
fn what_a_compaction_writes_is_its_owners_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    history(&dir);
    drop(SledJournal::open(&dir, opts(10)).unwrap());
    let mut stack = vec![dir.clone()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700,
            "{d:?}"
        );
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if d.file_name().is_none_or(|n| n != "blobs") {
                let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode & 0o077, 0, "{path:?} is {mode:o}");
                seen += 1;
            }
        }
    }
    assert!(
        dir.join("archive").join("index").is_file() && seen > 6,
        "{seen}"
    );
}

#[test]
fn an_accepted_loss_on_an_archived_run_goes_on_from_its_intact_prefix_and_keeps_the_rest_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = history(tmp.path());
    drop(SledJournal::open(tmp.path(), opts(10)).unwrap());
    let done = runs[0];
    let file = archive::dir(tmp.path()).join(format!("{done}.run"));
    let text = fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let total = lines.len();
    lines[7] = "not a record";
    fs::write(&file, lines.join("\n") + "\n").unwrap();

    let journal = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert!(matches!(
        journal.read(done),
        Err(JournalError::Corrupt { seq: 8, .. })
    ));
    let added = journal
        .accept_loss(
            done,
            &[Event::RunReopened {
                by: "op".into(),
                comment: None,
            }],
        )
        .unwrap();
    assert_eq!(added[0].seq, 8);
    assert!(!journal.store.is_archived(done));
    let records = journal.read(done).unwrap();
    assert_eq!(records.len(), 8);
    // The lines after the intact prefix, the bad one included, are kept aside in the store.
    let aside = journal
        .store
        .db()
        .scan_prefix([b'q'])
        .filter(|e| e.as_ref().is_ok_and(|(k, _)| k[1..17] == done.to_bytes()))
        .count();
    assert_eq!(aside, total - 7);
    let seen_now = seen(&journal, &runs);
    drop(journal);
    assert_eq!(
        seen(&SledJournal::open(tmp.path(), opts(NEVER)).unwrap(), &runs),
        seen_now
    );
}

#[test]
fn a_journal_kept_open_compacts_when_runs_end_while_readers_read_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let journal = Arc::new(SledJournal::open(tmp.path(), opts(50)).unwrap());
    let parked = RunId::new();
    journal
        .create(parked, Some("p"), &[started(Some("p"))])
        .unwrap();
    add(&journal, parked, &[step("gate")]);
    // Readers list and read every run over and over while runs end and the store is replaced.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (journal, stop) = (Arc::clone(&journal), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut reads = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    for summary in journal.runs().expect("listed") {
                        let records = journal.read(summary.id).expect("read");
                        // At least what was listed (the run may have gone on), 1… in order.
                        assert!(records.len() as u64 >= summary.last_seq);
                        assert!(records.iter().zip(1..).all(|(r, seq)| r.seq == seq));
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut finished = Vec::new();
    for round in 0..6 {
        let id = RunId::new();
        journal.create(id, None, &[started(None)]).unwrap();
        for i in 0..20 {
            add(&journal, id, &[step(&format!("r{round}s{i}"))]);
        }
        add(&journal, id, &[state(RunState::Succeeded)]);
        finished.push(id);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a reader failed") > 0);
    }
    // 22 records per run, compacted at 50: after the 3rd and the 6th run ended. The writer
    // compacts after it answered the commit that ended a run, before it takes the next request.
    journal.put_meta("barrier", b"").unwrap();
    assert_eq!(stores(tmp.path()), ["live-000002"]);
    assert!(finished.iter().all(|id| journal.store.is_archived(*id)));
    assert!(!journal.store.is_archived(parked));
    assert!(journal.problems().is_empty());
    // The parked run goes on in the new store; everything reads the same after a reopen.
    add(&journal, parked, &[state(RunState::Succeeded)]);
    let mut runs = finished.clone();
    runs.push(parked);
    let seen_open = seen_runs(&journal, &runs);
    drop(journal);
    let reopened = SledJournal::open(tmp.path(), opts(NEVER)).unwrap();
    assert_eq!(seen_runs(&reopened, &runs), seen_open);
}

/// Every run's summary and records.
fn seen_runs(journal: &SledJournal, runs: &[RunId]) -> Vec<String> {
    runs.iter()
        .map(|id| {
            format!(
                "{}{}",
                serde_json::to_string(&journal.summary(*id).unwrap()).unwrap(),
                serde_json::to_string(&journal.read(*id).unwrap()).unwrap()
            )
        })
        .collect()
}
