//! Real clusters for end-to-end tests, created by the project's testbed scripts on loopback in
//! a temporary directory and destroyed when dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `testbeds/SCRIPT ARGS…`; panics with its output if it fails.
pub fn testbed(script: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("testbeds").join(script))
        .args(args)
        .output()
        .expect("run testbed script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "testbeds/{script} {} failed ({:?}); run testbeds/install.sh first if servers are missing\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A cluster created by a testbed script.
pub struct Cluster {
    /// The cluster directory.
    pub dir: PathBuf,
    script: &'static str,
    _tmp: tempfile::TempDir,
    /// `cluster.env`.
    pub env: HashMap<String, String>,
}

impl Cluster {
    fn create(script: &'static str, args: &[&str]) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("runbook-cluster-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let dir = tmp.path().join("c");
        let mut all = vec!["create", dir.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        testbed(script, &all);
        let env = read_env(&dir.join("cluster.env"));
        Self {
            dir,
            script,
            _tmp: tmp,
            env,
        }
    }

    /// A 3-node OpenBao Raft cluster on `version`.
    pub fn openbao(version: &str) -> Self {
        Self::create("openbao.sh", &["--version", version])
    }

    /// A single OpenBao node on `version`.
    pub fn openbao_single(version: &str) -> Self {
        Self::create("openbao.sh", &["--version", version, "--nodes", "1"])
    }

    /// A 3-member etcd cluster.
    pub fn etcd() -> Self {
        Self::create("etcd.sh", &[])
    }

    /// A 3-node NATS cluster with JetStream on `version` (2.9 or 2.15).
    pub fn nats(version: &str) -> Self {
        Self::create("nats.sh", &["--version", version])
    }

    /// Apache Cassandra (`testbeds/cassandra.sh`); `args` as the script takes them
    /// (`--nodes N`, `--auth`).
    pub fn cassandra(args: &[&str]) -> Self {
        Self::create("cassandra.sh", args)
    }

    /// A Kubernetes control plane (`testbeds/kubernetes.sh`): etcd, kube-apiserver with RBAC,
    /// the controller-manager, the scheduler and kwok nodes; `args` as the script takes them
    /// (`--nodes N`, `--agent-node NAME`).
    pub fn kubernetes(args: &[&str]) -> Self {
        Self::create("kubernetes.sh", args)
    }

    /// The cluster-admin kubeconfig of a Kubernetes testbed.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The cluster directory as a string.
    pub fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    /// A value of `cluster.env`.
    pub fn var(&self, key: &str) -> String {
        self.env
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in cluster.env"))
    }

    /// The pid recorded for a member file stem (`node-1`, `m2`, `n3`).
    pub fn pid(&self, member: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("{member}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// A JSON file in the cluster directory.
    pub fn json(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join(name)).expect("read"))
            .expect("json")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("testbeds").join(self.script))
            .args(["destroy", self.dir.to_str().unwrap_or_default()])
            .output();
    }
}

fn read_env(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .expect("cluster.env")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

/// A blocking HTTP client for monitors and test clients (short timeouts).
pub fn http() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_millis(500))
        .timeout(Duration::from_secs(5))
        .build()
}

/// The JSON a GET of `url` answers with; panics naming `url` when it does not.
pub fn get_json(agent: &ureq::Agent, url: &str) -> serde_json::Value {
    agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .into_json()
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// The status of a GET (None when the server does not answer).
pub fn status_of(agent: &ureq::Agent, url: &str) -> Option<u16> {
    match agent.get(url).call() {
        Ok(r) => Some(r.status()),
        Err(ureq::Error::Status(code, _)) => Some(code),
        Err(_) => None,
    }
}

/// Whether server `m` was down in sample `i` of a rolling restart: not answering, and not the
/// same process that answered before and answers after (no pid, or a new process after the gap:
/// it was being restarted). A process that goes on answering after a sample it missed was only
/// slow to answer — a probe that timed out on a loaded machine, not a server down.
pub(crate) fn down<S>(
    samples: &[(Instant, Vec<S>)],
    i: usize,
    m: usize,
    answers: impl Fn(&S) -> bool,
    pid: impl Fn(&S) -> Option<u32>,
) -> bool {
    let now = &samples[i].1[m];
    if answers(now) {
        return false;
    }
    let answered = |s: &(Instant, Vec<S>)| answers(&s.1[m]).then(|| pid(&s.1[m]));
    let before = samples[..i].iter().rev().find_map(answered);
    let after = samples[i + 1..].iter().find_map(answered);
    match (pid(now), before, after) {
        (Some(now), Some(Some(b)), Some(Some(a))) => !(now == b && now == a),
        _ => true,
    }
}

/// A thread that samples something every `every` until stopped, keeping every sample.
pub struct Sampler<T: Send + 'static> {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(Instant, T)>>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Sampler<T> {
    /// Starts sampling.
    pub fn start(every: Duration, mut sample: impl FnMut() -> T + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: a test that forgets to stop its sampler still ends.
            let deadline = Instant::now() + Duration::from_secs(900);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                let value = sample();
                v.lock().expect("samples").push((Instant::now(), value));
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Stops and returns every sample.
    pub fn finish(mut self) -> Vec<(Instant, T)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

impl<T: Send + 'static> Drop for Sampler<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
