//! The etcd fleet against real etcd servers started on loopback for each test.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::etcd_testbed::{TestEtcd, raw};
use crate::fleet::{Fleet, Standing};
use crate::{Event, Journal, JournalError, RunId, RunStarted, RunState};

fn started() -> Event {
    Event::RunStarted(RunStarted {
        runbook: "fleet".into(),
        params: serde_json::Map::new(),
        sources: Vec::new(),
        links: std::collections::BTreeMap::new(),
        lock: None,
        started_by: "tester".into(),
        engine_version: "0".into(),
        trigger: None,
    })
}

fn step(path: &str) -> Event {
    Event::StepSucceeded {
        path: path.into(),
        attempt: 1,
        output: json!({}),
        duration_ms: 1,
    }
}

fn ended() -> Event {
    Event::StateChanged {
        state: RunState::Succeeded,
        reason: None,
    }
}

/// Runs `fut` to its end, failing the test if that takes longer than `secs`.
fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { tokio::time::timeout(Duration::from_secs(secs), fut).await })
        .unwrap_or_else(|_| panic!("{what} did not happen within {secs} s"))
}

fn reach(standing: &mut watch::Receiver<Standing>, want: Standing, secs: u64) {
    within(secs, &format!("standing {want:?}"), async {
        standing.wait_for(|s| *s == want).await.map(drop)
    })
    .unwrap();
}

/// The lease id an identity names.
fn lease_of(me: &str) -> i64 {
    let hex = me.rsplit_once('/').unwrap().1;
    u64::from_str_radix(hex, 16).unwrap() as i64
}

#[test]
fn two_executors_fence_each_other_and_a_journal_that_has_not_joined_writes_no_owned_run() {
    let etcd = TestEtcd::start();
    let (ja, jb, jc) = (
        etcd.journal("fleet"),
        etcd.journal("fleet"),
        etcd.journal("fleet"),
    );
    let a = ja.join("a", Duration::from_secs(10)).unwrap();
    let b = jb.join("b", Duration::from_secs(10)).unwrap();
    assert!(
        a.me().starts_with("a/") && a.me().len() == 2 + 16,
        "{}",
        a.me()
    );
    assert_eq!(a.ttl(), Duration::from_secs(10));
    let mut members = b.members().unwrap();
    members.sort();
    assert_eq!(members, [a.me(), b.me()]);

    // The write that creates a run takes it; another executor, and a journal that has not
    // joined, cannot write it — nothing is written.
    let id = RunId::new();
    ja.create(id, None, &[started()]).unwrap();
    assert_eq!(b.owner(id).unwrap(), Some(a.me()));
    match jb.append(id, 1, &[step("b")]) {
        Err(JournalError::Owned { run, owner }) => assert_eq!((run, owner), (id, a.me())),
        other => panic!("expected Owned, got {other:?}"),
    }
    assert!(matches!(
        jc.append(id, 1, &[step("c")]),
        Err(JournalError::Owned { .. })
    ));
    assert!(!b.claim(id).unwrap(), "owned by A");
    assert!(a.claim(id).unwrap(), "A owns it already");
    ja.append(id, 1, &[step("a")]).unwrap();
    assert_eq!(jc.read(id).unwrap().len(), 2);
    assert!(matches!(
        b.claim(RunId::new()),
        Err(JournalError::NoSuchRun(_))
    ));

    // A run nobody owns: the journal that has not joined writes it and takes nothing; a joined
    // executor takes it by writing it.
    let free = RunId::new();
    jc.create(free, None, &[started()]).unwrap();
    jc.append(free, 1, &[step("c")]).unwrap();
    assert_eq!(a.owner(free).unwrap(), None);
    jb.append(free, 2, &[step("b")]).unwrap();
    assert_eq!(a.owner(free).unwrap(), Some(b.me()));
    let mut owners = a.owners().unwrap();
    owners.sort();
    let mut expected = vec![(id, a.me()), (free, b.me())];
    expected.sort();
    assert_eq!(owners, expected);

    // Letting go wakes the claimers; only the owner can let go.
    let mut orphaned = a.orphaned();
    a.release(free).unwrap();
    assert_eq!(a.owner(free).unwrap(), Some(b.me()), "A does not own it");
    b.release(free).unwrap();
    assert_eq!(within(10, "orphaned", orphaned.recv()).unwrap(), free);
    assert!(a.claim(free).unwrap());
    // The terminal write lets go in the same write.
    ja.append(free, 3, &[ended()]).unwrap();
    assert_eq!(b.owner(free).unwrap(), None);

    // Runs to carry on when their owner goes.
    a.adopt(id, true).unwrap();
    assert_eq!(b.adoptable().unwrap(), [id]);
    a.adopt(id, false).unwrap();
    assert!(b.adoptable().unwrap().is_empty());

    // A's lease ends behind its back (as when it expires while A is frozen): B takes the run,
    // and A's next write is fenced — nothing written — and A's standing is Lost.
    let lease = lease_of(&a.me());
    raw(&jc, move |inner| async move {
        inner.client.lease_client().revoke(lease).await.unwrap();
    });
    assert_eq!(b.owner(id).unwrap(), None);
    assert!(b.claim(id).unwrap());
    match ja.append(id, 2, &[step("zombie")]) {
        Err(JournalError::Fenced { run, detail }) => {
            assert_eq!(run, id);
            assert!(detail.contains(&a.me()), "{detail}");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(
        jc.read(id).unwrap().len(),
        2,
        "the fenced write wrote nothing"
    );
    assert_eq!(*a.standing().borrow(), Standing::Lost);
    assert!(matches!(a.claim(free), Err(JournalError::Fenced { .. })));
    jb.append(id, 2, &[step("b")]).unwrap();

    // Leaving frees B's runs at once and fences B.
    b.leave();
    assert_eq!(*b.standing().borrow(), Standing::Lost);
    assert_eq!(a.owner(id).unwrap(), None);
    assert!(matches!(
        jb.append(id, 3, &[step("b")]),
        Err(JournalError::Fenced { .. })
    ));
    jc.append(id, 3, &[ended()]).unwrap();
}

#[test]
fn a_request_reaches_its_addressee_and_comes_back_answered_dropped_or_timed_out() {
    let etcd = TestEtcd::start();
    let (ja, jb) = (etcd.journal("ask"), etcd.journal("ask"));
    let a = ja.join("a", Duration::from_secs(10)).unwrap();
    let b = jb.join("b", Duration::from_secs(10)).unwrap();

    // Asked before B reads its inbox: the inbox starts with the requests already there.
    let first = a.ask(
        &b.me(),
        json!({ "approve": "confirm" }),
        Duration::from_secs(10),
    );
    let mut inbox = b.inbox().unwrap();
    assert!(b.inbox().is_none(), "only the first call gets the inbox");
    let a_me = a.me();
    let answerer = std::thread::spawn(move || {
        within(30, "three requests", async {
            let request = inbox.recv().await.unwrap();
            assert_eq!(request.from, a_me);
            let step = request.body["approve"].clone();
            request.reply.send(json!({ "approved": step })).unwrap();
            drop(inbox.recv().await.unwrap());
            // Kept unanswered until the asker gave up.
            inbox.recv().await.unwrap()
        })
    });
    assert_eq!(
        within(15, "the answer", first).unwrap(),
        json!({ "approved": "confirm" })
    );
    let dropped = a.ask(&b.me(), json!({ "abort": true }), Duration::from_secs(10));
    assert_eq!(
        within(15, "the dropped answer", dropped).unwrap(),
        json!({ "error": "dropped" })
    );
    let unanswered = a.ask(&b.me(), json!({ "pause": true }), Duration::from_secs(1));
    let err = within(15, "the time-out", unanswered).unwrap_err();
    let text = crate::error_chain(&err);
    assert!(
        text.contains(&format!("executor {} did not answer within 1s", b.me())),
        "{text}"
    );
    let kept = answerer.join().unwrap();
    assert_eq!(kept.body, json!({ "pause": true }));
    let requests = raw(&ja, |inner| async move {
        let dir = format!("{}/inbox/", inner.prefix);
        inner
            .range(dir.clone().into_bytes(), super::prefix_end(&dir), 0, true)
            .await
            .unwrap()
            .len()
    });
    assert_eq!(requests, 0, "the unanswered request was withdrawn");

    let nobody = a.ask("c/0000000000000001", json!({}), Duration::from_secs(10));
    let err = within(5, "refusing an unknown executor", nobody).unwrap_err();
    assert!(
        crate::error_chain(&err).contains("executor c/0000000000000001 is not in the fleet"),
        "{err}"
    );
    assert!(matches!(
        jb.join("b/x", Duration::from_secs(10)),
        Err(JournalError::Storage(_))
    ));
}

#[test]
fn a_store_frozen_past_the_ttl_suspends_the_lease_then_expires_it_and_the_run_goes_to_another() {
    let etcd = TestEtcd::start();
    let short = Duration::from_secs(1);
    let (ja, jb, jc) = (
        etcd.journal_on(&[0], "frozen", short),
        etcd.journal("frozen"),
        etcd.journal_on(&[0], "frozen", short),
    );
    let a = ja.join("a", Duration::from_secs(2)).unwrap();
    let b = jb.join("b", Duration::from_secs(60)).unwrap();
    let id = RunId::new();
    ja.create(id, None, &[started()]).unwrap();
    let free = RunId::new();
    jc.create(free, None, &[started()]).unwrap();
    let mut orphaned = b.orphaned();
    let mut standing = a.standing();

    etcd.freeze(0);
    reach(&mut standing, Standing::Suspended, 10);
    // A write while etcd does not answer keeps trying for the journal's patience, then fails.
    jc.set_patience(Duration::from_millis(1500));
    let err = jc.append(free, 1, &[step("c")]).unwrap_err();
    let text = crate::error_chain(&err);
    assert!(text.contains("did not take a write within 1.5s"), "{text}");
    assert!(jc.inner.retries.load(Ordering::Relaxed) > 0);
    // A read too, and it says that it was a read.
    let err = jc.read(free).unwrap_err();
    let text = crate::error_chain(&err);
    assert!(text.contains("did not answer a read within 1.5s"), "{text}");
    etcd.thaw(0);

    // etcd's clock ran while it was frozen: it expires A's lease as soon as it goes on.
    reach(&mut standing, Standing::Lost, 10);
    assert_eq!(within(10, "orphaned", orphaned.recv()).unwrap(), id);
    assert!(b.claim(id).unwrap());
    assert!(matches!(
        ja.append(id, 1, &[step("a")]),
        Err(JournalError::Fenced { .. })
    ));
    jb.append(id, 1, &[step("b")]).unwrap();
    assert_eq!(
        jc.read(free).unwrap().len(),
        1,
        "the failed write wrote nothing"
    );
}

#[test]
fn quorum_loss_suspends_the_lease_without_losing_it_and_a_write_waits_to_land_once() {
    let etcd = TestEtcd::cluster(3);
    let leader = etcd.leader();
    let j = Arc::new(etcd.journal_on(&[leader], "quorum", Duration::from_secs(1)));
    let a = j.join("a", Duration::from_secs(2)).unwrap();
    let id = RunId::new();
    j.create(id, None, &[started()]).unwrap();
    let mut standing = a.standing();

    let followers: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
    for &m in &followers {
        etcd.freeze(m);
    }
    reach(&mut standing, Standing::Suspended, 15);
    let writer = std::thread::spawn({
        let j = j.clone();
        move || j.append(id, 1, &[step("during the outage")])
    });
    within(15, "a retried write", async {
        while j.inner.retries.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for &m in &followers {
        etcd.thaw(m);
    }
    // A new leader renews every lease: the executor holds its lease, and its runs, again.
    reach(&mut standing, Standing::Held, 20);
    let written = writer.join().unwrap().unwrap();
    assert_eq!(written[0].seq, 2);
    let records = j.read(id).unwrap();
    assert_eq!(records.len(), 2, "the write landed once: {records:?}");
    assert_eq!(a.owner(id).unwrap(), Some(a.me()));
    j.append(id, 2, &[ended()]).unwrap();
}

#[test]
fn a_read_during_a_quorum_loss_waits_for_the_quorum_and_then_answers() {
    let etcd = TestEtcd::cluster(3);
    let leader = etcd.leader();
    let j = Arc::new(etcd.journal_on(&[leader], "quorum-read", Duration::from_secs(1)));
    let id = RunId::new();
    j.create(id, None, &[started()]).unwrap();
    j.append(id, 1, &[step("before the outage")]).unwrap();

    let followers: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
    for &m in &followers {
        etcd.freeze(m);
    }
    // A linearizable read needs the quorum: it gets no answer (or "no leader") and is tried
    // again, as a write is, instead of failing the command or the resume that asked.
    let reader = std::thread::spawn({
        let j = j.clone();
        move || (j.read(id), j.summary(id))
    });
    within(15, "a retried read", async {
        while j.inner.retries.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(!reader.is_finished(), "the read waits for the quorum");
    for &m in &followers {
        etcd.thaw(m);
    }
    let (records, summary) = reader.join().unwrap();
    let records = records.expect("the read answers once the quorum is back");
    assert_eq!(records.len(), 2, "{records:?}");
    assert_eq!(summary.expect("the summary too").last_seq, 2);
}

#[test]
fn watches_outlive_an_etcd_restart_and_an_owner_that_died_is_orphaned_within_its_ttl() {
    let mut etcd = TestEtcd::start();
    let (ja, jb) = (etcd.journal("restart"), etcd.journal("restart"));
    let a = ja.join("a", Duration::from_secs(2)).unwrap();
    let b = jb.join("b", Duration::from_secs(30)).unwrap();
    let id = RunId::new();
    ja.create(id, None, &[started()]).unwrap();
    let mut orphaned = b.orphaned();
    let mut inbox = b.inbox().unwrap();

    // Every stream to etcd breaks; the inbox and the orphan watch are created again.
    etcd.restart(0);
    let question = a.ask(
        &b.me(),
        json!({ "after": "restart" }),
        Duration::from_secs(20),
    );
    let asked = within(20, "the request after the restart", inbox.recv()).unwrap();
    asked.reply.send(json!({ "ok": true })).unwrap();
    assert_eq!(
        within(20, "the answer", question).unwrap(),
        json!({ "ok": true })
    );

    // A dies without leaving: its run is orphaned once its lease expires (its TTL, plus the
    // second etcd adds to every lease when it is elected after a restart, plus etcd's
    // expiry check every 500 ms).
    drop(a);
    drop(ja);
    let died = std::time::Instant::now();
    assert_eq!(within(10, "orphaned", orphaned.recv()).unwrap(), id);
    assert!(
        died.elapsed() < Duration::from_secs(6),
        "orphaned after {:?}",
        died.elapsed()
    );
    assert!(b.claim(id).unwrap());
    jb.append(id, 1, &[ended()]).unwrap();
}
