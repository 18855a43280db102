//! Real etcd servers on loopback for the etcd journal's tests: one member, or a cluster of
//! three, in a temporary directory, ended on drop. A member can be frozen (SIGSTOP) and
//! continued (SIGCONT) by its process id.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::etcd_journal::{EtcdJournal, Inner};
use crate::etcd_url::EtcdTarget;

/// etcd members started for one test.
pub(crate) struct TestEtcd {
    children: Vec<Child>,
    /// Each member's client and peer port.
    ports: Vec<(u16, u16)>,
    dir: tempfile::TempDir,
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SIGKILL ends a frozen member too.
            let _ = child.kill();
            let _ = child.wait();
        }
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

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl TestEtcd {
    /// One member.
    pub(crate) fn start() -> Self {
        Self::cluster(1)
    }

    /// `n` members forming one cluster.
    pub(crate) fn cluster(n: usize) -> Self {
        let mut etcd = Self {
            children: Vec::new(),
            ports: (0..n).map(|_| (free_port(), free_port())).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        etcd.children = (0..n).map(|i| etcd.spawn(i)).collect();
        for i in 0..n {
            etcd.await_listening(i);
        }
        etcd
    }

    /// Starts member `i` (again: its data directory then says which cluster it is in).
    fn spawn(&self, i: usize) -> Child {
        let initial = self
            .ports
            .iter()
            .enumerate()
            .map(|(m, (_, peer))| format!("m{m}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let (port, peer) = self.ports[i];
        let client = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("etcd{i}.log")))
            .unwrap();
        Command::new(etcd_binary())
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(self.dir.path().join(format!("data{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts")
    }

    fn await_listening(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.ports[i].0)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills member `i` (SIGKILL: every connection to it breaks) and starts it again on the
    /// same ports and data.
    pub(crate) fn restart(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        self.children[i] = self.spawn(i);
        self.await_listening(i);
    }

    /// A journal under `prefix` on every member.
    pub(crate) fn journal(&self, prefix: &str) -> EtcdJournal {
        self.journal_on(
            &(0..self.ports.len()).collect::<Vec<_>>(),
            prefix,
            Duration::from_secs(5),
        )
    }

    /// A journal under `prefix` on the given members, each request waiting at most `timeout`;
    /// waits (bounded) until the cluster answers.
    pub(crate) fn journal_on(
        &self,
        members: &[usize],
        prefix: &str,
        timeout: Duration,
    ) -> EtcdJournal {
        let hosts = members
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.ports[i].0))
            .collect::<Vec<_>>()
            .join(",");
        let target = EtcdTarget::parse(&format!("etcd://{hosts}/{prefix}")).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdJournal::open(&target, timeout) {
                Ok(j) => return j,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "etcd not ready yet");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("etcd did not answer: {e}"),
            }
        }
    }

    /// Which member leads now (asked of each member).
    pub(crate) fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for i in 0..self.ports.len() {
                let j = self.journal_on(&[i], "leader", Duration::from_secs(5));
                let (me, leader) = raw(&j, |inner| async move {
                    let status = inner.client.maintenance_client().status().await.unwrap();
                    (status.header().unwrap().member_id(), status.leader())
                });
                if me == leader {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no etcd member leads");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, member: usize, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.children[member].id()).unwrap());
        nix::sys::signal::kill(pid, signal).expect("the test's own etcd takes the signal");
    }

    /// Freezes member `member` (SIGSTOP): it answers nothing, and its connections stay open.
    pub(crate) fn freeze(&self, member: usize) {
        self.signal(member, nix::sys::signal::Signal::SIGSTOP);
    }

    /// Lets a frozen member go on (SIGCONT).
    pub(crate) fn thaw(&self, member: usize) {
        self.signal(member, nix::sys::signal::Signal::SIGCONT);
    }
}

/// Runs `f` on the journal's own runtime (the tests reach etcd behind the journal's back).
pub(crate) fn raw<T: Send + 'static, Fut>(j: &EtcdJournal, f: impl FnOnce(Arc<Inner>) -> Fut) -> T
where
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let fut = f(j.inner.clone());
    crate::etcd_journal::wait(j.handle(), async move { Ok(fut.await) }).unwrap()
}
