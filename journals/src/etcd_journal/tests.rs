//! The etcd journal against a real, single-member etcd started on loopback for each test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{EtcdJournal, Inner};
use crate::etcd_url::EtcdTarget;
use crate::{Event, Journal, JournalError, RunId, RunStarted};

/// A single-member etcd in a temporary directory, ended on drop.
struct TestEtcd {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The etcd binary: `$ETCD`, or where testbeds/install.sh puts it (Debian's etcd-server).
fn etcd_binary() -> PathBuf {
    let candidates = std::env::var_os("ETCD")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/etcd", "/usr/sbin/etcd"].map(PathBuf::from));
    for path in candidates {
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "the etcd journal's tests need an etcd server binary, and none was found ($ETCD, \
         /usr/bin/etcd, /usr/sbin/etcd): install it with testbeds/install.sh (Debian: \
         apt-get install etcd-server), or point $ETCD at one"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl TestEtcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new(etcd_binary())
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("t={peer_url}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("etcd.log")).unwrap())
            .spawn()
            .expect("etcd starts");
        let etcd = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    fn journal(&self, prefix: &str) -> EtcdJournal {
        let target =
            EtcdTarget::parse(&format!("etcd://127.0.0.1:{}/{prefix}", self.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdJournal::open(&target, Duration::from_secs(5)) {
                Ok(j) => return j,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "etcd not ready yet");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("etcd did not answer: {e}"),
            }
        }
    }
}

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

/// Runs `f` on the journal's own runtime (the tests reach etcd behind the journal's back).
fn raw<T: Send + 'static, Fut>(j: &EtcdJournal, f: impl FnOnce(Arc<Inner>) -> Fut) -> T
where
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let fut = f(j.inner.clone());
    j.call(move |_| async move { Ok(fut.await) }).unwrap()
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
    let text = crate::sled_journal::error_chain(&err);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
}
