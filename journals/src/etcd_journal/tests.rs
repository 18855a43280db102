//! The etcd journal against a real, single-member etcd started on loopback for each test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::EtcdJournal;
use crate::etcd_testbed::{TestEtcd, free_port, raw};
use crate::etcd_url::EtcdTarget;
use crate::{Event, Journal, JournalError, RunId, RunStarted};

fn started() -> Event {
    Event::RunStarted(RunStarted {
        runbook: "etcd".into(),
        params: serde_json::Map::new(),
        sources: Vec::new(),
        links: std::collections::BTreeMap::new(),
        lock: None,
        started_by: "tester".into(),
        engine_version: "0".into(),
        trigger: None,
    })
}

fn output(bytes: usize) -> Event {
    Event::StepSucceeded {
        path: "big".into(),
        attempt: 1,
        output: json!({ "stdout": "x".repeat(bytes) }),
        duration_ms: 1,
    }
}

#[test]
fn the_etcd_journal_conforms() {
    let etcd = TestEtcd::start();
    let n = std::sync::atomic::AtomicUsize::new(0);
    crate::conformance::all(&|| {
        let prefix = format!(
            "conformance-{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        (Arc::new(etcd.journal(&prefix)), Box::new(()))
    });
}

#[test]
fn large_outputs_round_trip_in_pieces_and_prefixes_keep_journals_apart() {
    let etcd = TestEtcd::start();
    let j = etcd.journal("big");
    let id = RunId::new();
    j.create(id, None, &[started()]).unwrap();
    // Larger than etcd's 1.5 MiB request limit: three pieces.
    let records = j
        .append(id, 1, &[output(3 * super::CHUNK - 4096), output(10)])
        .unwrap();
    assert_eq!(j.read(id).unwrap()[1..], records[..]);
    let pieces = raw(&j, move |inner| async move {
        let dir = format!("{}b/", inner.run_dir(id));
        inner
            .range(dir.clone().into_bytes(), super::prefix_end(&dir), 0, true)
            .await
            .unwrap()
            .len()
    });
    assert_eq!(pieces, 3, "3 MiB of output in 1 MiB pieces");
    let other = etcd.journal("other");
    assert!(other.runs().unwrap().is_empty());
    assert!(matches!(other.summary(id), Err(JournalError::NoSuchRun(_))));
}

#[test]
fn lost_or_changed_records_are_reported_not_skipped() {
    let etcd = TestEtcd::start();
    let j = etcd.journal("damage");
    let (lost, changed, piece) = (RunId::new(), RunId::new(), RunId::new());
    for id in [lost, changed, piece] {
        j.create(id, None, &[started()]).unwrap();
        j.append(id, 1, &[output(10), output(2 * 1024 * 1024), output(10)])
            .unwrap();
    }
    raw(&j, move |inner| async move {
        let mut kv = inner.client.kv_client();
        kv.delete(inner.event_key(lost, 2), None).await.unwrap();
        let key = inner.event_key(changed, 4);
        let value = kv.get(key.clone(), None).await.unwrap().kvs()[0]
            .value()
            .to_vec();
        let at = value.windows(4).position(|w| w == b"xxxx").unwrap();
        let mut tampered = value;
        tampered[at] = b'y';
        kv.put(key, tampered, None).await.unwrap();
        let blobs = format!("{}b/", inner.run_dir(piece));
        let kvs = inner
            .range(
                blobs.clone().into_bytes(),
                super::prefix_end(&blobs),
                0,
                true,
            )
            .await
            .unwrap();
        kv.delete(kvs[1].key().to_vec(), None).await.unwrap();
    });
    let detail = |id: RunId| match j.read(id) {
        Err(JournalError::Corrupt { run, seq, detail }) => {
            assert_eq!(run, id);
            (seq, detail)
        }
        other => panic!("expected a corrupt run, got {other:?}"),
    };
    let (seq, d) = detail(lost);
    assert_eq!(seq, 2);
    assert!(d.contains("record 2 missing"), "{d}");
    let (seq, d) = detail(changed);
    assert_eq!(seq, 4);
    assert!(d.contains("checksum"), "{d}");
    let (seq, d) = detail(piece);
    assert_eq!(seq, 3);
    assert!(d.contains("piece 1"), "{d}");
}

#[test]
fn an_unreachable_cluster_is_named_in_the_error() {
    let port = free_port();
    let target = EtcdTarget::parse(&format!("etcd://127.0.0.1:{port}/p")).unwrap();
    let err = EtcdJournal::open(&target, Duration::from_secs(2)).unwrap_err();
    let text = crate::error_chain(&err);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}

#[test]
fn a_write_whose_answer_was_lost_counts_as_done_when_tried_again() {
    use crate::LockChange;
    let etcd = TestEtcd::start();
    let j = etcd.journal("ambiguous");
    let id = RunId::new();
    // Each call is one try; `true` says an earlier try's answer was lost (a time-out).
    let insert = |ambiguous: bool| {
        raw(&j, move |inner| async move {
            inner
                .insert_once(id, None, true, &[started()], ambiguous)
                .await
        })
    };
    let created = insert(false).unwrap();
    assert_eq!(
        insert(true).unwrap(),
        created,
        "that earlier try created it"
    );
    assert!(matches!(insert(false), Err(JournalError::RunExists(_))));

    let write = |ambiguous: bool, path: &'static str| {
        raw(&j, move |inner| async move {
            inner
                .write_once(id, 1, &[output(1), step(path)], LockChange::Keep, ambiguous)
                .await
        })
    };
    let written = write(false, "a").unwrap();
    assert_eq!(
        write(true, "a").unwrap(),
        written,
        "that earlier try wrote them"
    );
    assert!(matches!(
        write(false, "a"),
        Err(JournalError::Conflict {
            expected: 1,
            found: 3,
            ..
        })
    ));
    assert!(
        matches!(write(true, "b"), Err(JournalError::Conflict { .. })),
        "other records are someone else's write"
    );
    assert_eq!(j.read(id).unwrap().len(), 3);

    // A swap recognises its own earlier try by its receipt, not by the value.
    let swap = |receipt: &'static str, ambiguous: bool| {
        raw(&j, move |inner| async move {
            let stored = inner.meta_key("fire");
            let receipt = format!("{}/receipts/{receipt}", inner.prefix);
            inner
                .swap_once(&stored, None, b"t1", &receipt, ambiguous)
                .await
        })
    };
    assert!(swap("r1", false).unwrap());
    assert!(swap("r1", true).unwrap(), "the earlier try swapped");
    assert!(
        !swap("r2", true).unwrap(),
        "the same value, swapped in by another"
    );
    assert_eq!(j.get_meta("fire").unwrap().as_deref(), Some(&b"t1"[..]));
}

fn step(path: &str) -> Event {
    Event::StepSucceeded {
        path: path.into(),
        attempt: 1,
        output: json!({}),
        duration_ms: 1,
    }
}
