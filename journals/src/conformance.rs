//! The conformance suite: what every [`Journal`] backend must do, checked the same way for each
//! (the memory journal, sled, and any backend added later). Each check gets a fresh, empty
//! journal from the factory.

use std::sync::Arc;

use serde_json::json;

use crate::{Event, Journal, JournalError, RunId, RunStarted, RunState};

/// A fresh journal, and whatever must live as long as it (a temporary directory).
pub type Fresh = (Arc<dyn Journal>, Box<dyn std::any::Any>);

/// A named check of one behaviour.
type Check = (&'static str, fn(&dyn Journal));

/// Runs every check against journals made by `make`.
pub fn all(make: &dyn Fn() -> Fresh) {
    let checks: &[Check] = &[
        ("the first event is run_started", first_event_is_run_started),
        (
            "records are numbered from 1 and read back",
            records_round_trip,
        ),
        (
            "append checks the expected last record",
            append_is_fenced_by_seq,
        ),
        (
            "an existing run is not created twice",
            runs_are_created_once,
        ),
        ("unknown runs are reported", unknown_runs_are_reported),
        ("locks are held until the run ends", locks_until_the_end),
        (
            "a run ended in its first write takes no lock",
            no_lock_for_a_run_ended_at_once,
        ),
        (
            "a reopened run takes its lock again, unless another run holds it",
            reopening_takes_the_lock_again,
        ),
        ("summaries follow the records", summaries_follow_the_records),
        ("runs are found by id prefix", runs_are_found_by_prefix),
        (
            "unfinished, newest and per-state listings agree with the runs",
            listings_agree_with_the_runs,
        ),
        ("meta values round trip", meta_round_trips),
        ("meta values swap only from the expected value", meta_swaps),
        ("an async append is an append", async_append_is_an_append),
    ];
    for (name, check) in checks {
        let (journal, _guard) = make();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(journal.as_ref());
        }));
        assert!(outcome.is_ok(), "conformance check failed: {name}");
    }
    let (journal, _guard) = make();
    concurrent_appends_all_land(&journal);
}

pub(crate) fn started(lock: Option<&str>) -> Event {
    Event::RunStarted(RunStarted {
        runbook: "conformance".into(),
        params: serde_json::Map::new(),
        sources: Vec::new(),
        links: std::collections::BTreeMap::new(),
        lock: lock.map(str::to_owned),
        started_by: "tester".into(),
        engine_version: "0".into(),
        trigger: None,
    })
}

pub(crate) fn step(path: &str) -> Event {
    Event::StepStarted {
        path: path.into(),
        kind: "shell".into(),
        attempt: 1,
        idempotent: true,
        intent: json!({ "describe": path }),
    }
}

pub(crate) fn state(state: RunState) -> Event {
    Event::StateChanged {
        state,
        reason: None,
    }
}

fn seqs(records: &[crate::Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn first_event_is_run_started(j: &dyn Journal) {
    let id = RunId::new();
    assert!(j.create(id, None, &[step("a")]).is_err());
    assert!(j.create(id, None, &[]).is_err());
    assert!(matches!(j.summary(id), Err(JournalError::NoSuchRun(_))));
}

fn records_round_trip(j: &dyn Journal) {
    let id = RunId::new();
    let created = j
        .create(id, None, &[started(None), state(RunState::Running)])
        .unwrap();
    assert_eq!(seqs(&created), [1, 2]);
    let appended = j.append(id, 2, &[step("a"), step("b")]).unwrap();
    assert_eq!(seqs(&appended), [3, 4]);
    let all = j.read(id).unwrap();
    assert_eq!(all, [created, appended.clone()].concat());
    assert_eq!(j.read_after(id, 2).unwrap(), appended);
    assert!(j.read_after(id, 4).unwrap().is_empty());
    assert_eq!(j.append(id, 4, &[]).unwrap(), []);
}

fn append_is_fenced_by_seq(j: &dyn Journal) {
    let id = RunId::new();
    j.create(id, None, &[started(None)]).unwrap();
    j.append(id, 1, &[step("a")]).unwrap();
    for stale in [0, 1, 3] {
        match j.append(id, stale, &[step("b")]) {
            Err(JournalError::Conflict {
                run,
                expected,
                found,
            }) => assert_eq!((run, expected, found), (id, stale, 2)),
            other => panic!("expected a conflict for {stale}, got {other:?}"),
        }
    }
    assert_eq!(
        seqs(&j.read(id).unwrap()),
        [1, 2],
        "a refused append wrote nothing"
    );
    assert_eq!(seqs(&j.append(id, 2, &[step("b")]).unwrap()), [3]);
}

fn runs_are_created_once(j: &dyn Journal) {
    let id = RunId::new();
    j.create(id, None, &[started(None)]).unwrap();
    assert!(matches!(
        j.create(id, None, &[started(None)]),
        Err(JournalError::RunExists(r)) if r == id
    ));
}

fn unknown_runs_are_reported(j: &dyn Journal) {
    let id = RunId::new();
    for err in [
        j.read(id).unwrap_err(),
        j.summary(id).unwrap_err(),
        j.append(id, 0, &[step("a")]).unwrap_err(),
    ] {
        assert!(matches!(err, JournalError::NoSuchRun(_)), "{err:?}");
    }
}

fn locks_until_the_end(j: &dyn Journal) {
    let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
    j.create(a, Some("k"), &[started(Some("k"))]).unwrap();
    assert_eq!(j.lock_holder("k").unwrap(), Some(a));
    match j.create(b, Some("k"), &[started(Some("k"))]) {
        Err(JournalError::LockHeld { key, holder }) => assert_eq!((key.as_str(), holder), ("k", a)),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    j.append(a, 1, &[state(RunState::Waiting)]).unwrap();
    j.append(a, 2, &[state(RunState::Interrupted)]).unwrap();
    assert_eq!(
        j.lock_holder("k").unwrap(),
        Some(a),
        "unfinished runs keep it"
    );
    j.append(a, 3, &[state(RunState::Failed)]).unwrap();
    assert_eq!(
        j.lock_holder("k").unwrap(),
        None,
        "a terminal state releases it"
    );
    j.create(c, Some("k"), &[started(Some("k"))]).unwrap();
    assert_eq!(j.lock_holder("k").unwrap(), Some(c));
}

fn reopening_takes_the_lock_again(j: &dyn Journal) {
    let (a, b) = (RunId::new(), RunId::new());
    let reopen = || Event::RunReopened {
        by: "ops".into(),
        comment: None,
    };
    j.create(a, Some("k"), &[started(Some("k"))]).unwrap();
    j.append(a, 1, &[state(RunState::Failed)]).unwrap();
    j.create(b, Some("k"), &[started(Some("k"))]).unwrap();
    match j.append(a, 2, &[reopen(), state(RunState::Running)]) {
        Err(JournalError::LockHeld { key, holder }) => assert_eq!((key.as_str(), holder), ("k", b)),
        other => panic!("expected LockHeld, got {other:?}"),
    }
    assert_eq!(j.summary(a).unwrap().last_seq, 2, "nothing was written");
    j.append(b, 1, &[state(RunState::Succeeded)]).unwrap();
    j.append(a, 2, &[reopen(), state(RunState::Running)])
        .unwrap();
    assert_eq!(j.lock_holder("k").unwrap(), Some(a));
    assert_eq!(j.summary(a).unwrap().state, RunState::Running);
    j.append(a, 4, &[state(RunState::Succeeded)]).unwrap();
    assert_eq!(j.lock_holder("k").unwrap(), None);
}

fn no_lock_for_a_run_ended_at_once(j: &dyn Journal) {
    let (a, b) = (RunId::new(), RunId::new());
    j.create(a, Some("k"), &[started(Some("k")), state(RunState::Failed)])
        .unwrap();
    assert_eq!(j.lock_holder("k").unwrap(), None);
    assert_eq!(j.summary(a).unwrap().state, RunState::Failed);
    j.create(b, Some("k"), &[started(Some("k"))]).unwrap();
}

fn summaries_follow_the_records(j: &dyn Journal) {
    let id = RunId::new();
    j.create(id, Some("lk"), &[started(Some("lk"))]).unwrap();
    j.append(
        id,
        1,
        &[Event::StateChanged {
            state: RunState::Waiting,
            reason: Some("at a gate".into()),
        }],
    )
    .unwrap();
    let s = j.summary(id).unwrap();
    assert_eq!(s.id, id);
    assert_eq!(s.runbook, "conformance");
    assert_eq!(s.started_by, "tester");
    assert_eq!(s.state, RunState::Waiting);
    assert_eq!(s.reason.as_deref(), Some("at a gate"));
    assert_eq!(s.lock.as_deref(), Some("lk"));
    assert_eq!(s.last_seq, 2);
    let two = RunId::new();
    j.create(two, None, &[started(None)]).unwrap();
    let ids: Vec<RunId> = j.runs().unwrap().iter().map(|s| s.id).collect();
    let mut expected = vec![id, two];
    expected.sort();
    assert_eq!(ids, expected, "oldest (smallest id) first");
}

fn listings_agree_with_the_runs(j: &dyn Journal) {
    use std::collections::HashMap;
    let ended = [
        RunState::Succeeded,
        RunState::Failed,
        RunState::Aborted,
        RunState::Succeeded,
    ];
    let open = [RunState::Waiting, RunState::Paused, RunState::Running];
    let mut ids = Vec::new();
    for (i, end) in ended.iter().chain(&open).enumerate() {
        // Ids in the order of creation, as ULIDs made one after another are.
        let id: RunId = format!("01ARZ3NDEKTSV4RRFFQ69G5F{:02}", 10 + i)
            .parse()
            .unwrap();
        j.create(id, None, &[started(None)]).unwrap();
        if *end != RunState::Running {
            j.append(id, 1, &[state(*end)]).unwrap();
        }
        ids.push(id);
    }
    let unfinished: Vec<RunId> = j.unfinished_runs().iter().map(|s| s.id).collect();
    assert_eq!(unfinished, ids[ended.len()..], "unfinished, oldest first");

    let newest: Vec<RunId> = j
        .newest_runs(&|_| true, &mut |_| true, 3)
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        newest,
        [ids[6], ids[5], ids[4]],
        "the three newest, newest first"
    );
    let succeeded: Vec<RunId> = j
        .newest_runs(&|_| true, &mut |s| s.state == RunState::Succeeded, 10)
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(succeeded, [ids[3], ids[0]], "filtered before the limit");
    let by_state: Vec<RunId> = j
        .newest_runs(&|b| b.state == RunState::Succeeded, &mut |_| true, 10)
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        by_state, succeeded,
        "a filter on states told apart, the same runs"
    );
    assert!(j.newest_runs(&|_| true, &mut |_| true, 0).is_empty());

    let counts = j.state_counts();
    let expected: HashMap<RunState, u64> = [
        (RunState::Succeeded, 2),
        (RunState::Failed, 1),
        (RunState::Aborted, 1),
        (RunState::Waiting, 1),
        (RunState::Paused, 1),
        (RunState::Running, 1),
    ]
    .into();
    assert_eq!(counts, expected);
    assert!(j.live_problems().is_empty() && j.problems().is_empty());
}

fn runs_are_found_by_prefix(j: &dyn Journal) {
    let a: RunId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    let b: RunId = "01ARZ3NDEKZZZZZZZZZZZZZZZZ".parse().unwrap();
    for id in [a, b] {
        j.create(id, None, &[started(None)]).unwrap();
    }
    assert_eq!(j.resolve("01arz3ndekt").unwrap(), a);
    assert!(matches!(
        j.resolve("01ARZ3NDEK"),
        Err(JournalError::Ambiguous { candidates, .. }) if candidates == [a, b]
    ));
    assert!(matches!(j.resolve("7ZZ"), Err(JournalError::NoSuchRun(_))));
}

fn meta_swaps(j: &dyn Journal) {
    assert!(
        !j.swap_meta("s", Some(b"0"), b"1").unwrap(),
        "absent is not 0"
    );
    assert_eq!(j.get_meta("s").unwrap(), None);
    assert!(j.swap_meta("s", None, b"1").unwrap());
    assert!(
        !j.swap_meta("s", None, b"2").unwrap(),
        "present is not absent"
    );
    assert!(!j.swap_meta("s", Some(b"0"), b"2").unwrap());
    assert_eq!(j.get_meta("s").unwrap().as_deref(), Some(&b"1"[..]));
    assert!(j.swap_meta("s", Some(b"1"), b"2").unwrap());
    assert_eq!(j.get_meta("s").unwrap().as_deref(), Some(&b"2"[..]));
}

fn meta_round_trips(j: &dyn Journal) {
    assert_eq!(j.get_meta("m").unwrap(), None);
    j.put_meta("m", b"1").unwrap();
    j.put_meta("m", b"2").unwrap();
    assert_eq!(j.get_meta("m").unwrap().as_deref(), Some(&b"2"[..]));
}

fn async_append_is_an_append(j: &dyn Journal) {
    let id = RunId::new();
    j.create(id, None, &[started(None)]).unwrap();
    let records = block_on(j.append_async(id, 1, vec![step("a")])).unwrap();
    assert_eq!(seqs(&records), [2]);
    assert!(matches!(
        block_on(j.append_async(id, 1, vec![step("b")])),
        Err(JournalError::Conflict { .. })
    ));
    assert_eq!(j.read(id).unwrap().len(), 2);
}

fn concurrent_appends_all_land(j: &Arc<dyn Journal>) {
    const THREADS: usize = 8;
    const APPENDS: u64 = 25;
    let ids: Vec<RunId> = (0..THREADS).map(|_| RunId::new()).collect();
    for id in &ids {
        j.create(*id, None, &[started(None)]).unwrap();
    }
    let handles: Vec<_> = ids
        .iter()
        .map(|&id| {
            let j = Arc::clone(j);
            std::thread::spawn(move || {
                for i in 0..APPENDS {
                    j.append(id, 1 + i, &[step(&format!("s{i}"))]).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for id in &ids {
        assert_eq!(
            seqs(&j.read(*id).unwrap()),
            (1..=1 + APPENDS).collect::<Vec<_>>()
        );
    }
}

/// Runs a future to completion on this thread (the journal's futures need no runtime).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(100));
    }
}
