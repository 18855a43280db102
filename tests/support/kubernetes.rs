//! Talking to a Kubernetes testbed from tests: the real `kubectl` with the cluster-admin
//! kubeconfig, and a watch of pods through the API server that keeps every change it saw.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::clusters::Cluster;

/// Runs `kubectl ARGS` (with `stdin` if given) against `cluster`; panics with its output if it
/// fails; returns stdout.
pub fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(cluster.var("KUBECTL"))
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .arg("--request-timeout=30s")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write kubectl's stdin");
    }
    let out = child.wait_with_output().expect("kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `kubectl ARGS -o json`, parsed.
pub fn kubectl_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(cluster, &all, None)).expect("kubectl printed JSON")
}

/// One change to one pod, as the watch delivered it.
#[derive(Clone, Debug)]
pub struct PodEvent {
    /// When the test received it.
    pub at: Instant,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: String,
    pub name: String,
    pub uid: String,
    /// The `controller-revision-hash` label (the StatefulSet revision the pod was made from).
    pub revision: String,
    /// `status.phase`.
    pub phase: String,
    /// The pod's `Ready` condition is True.
    pub ready: bool,
    /// It has a `deletionTimestamp`.
    pub deleting: bool,
    /// The image of its first container.
    pub image: String,
}

impl PodEvent {
    fn from_watch(at: Instant, v: &Value) -> Option<Self> {
        let kind = v["type"].as_str()?.to_owned();
        let pod = &v["object"];
        let text = |p: &Value| p.as_str().unwrap_or_default().to_owned();
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Some(Self {
            at,
            kind,
            name: text(&pod["metadata"]["name"]),
            uid: text(&pod["metadata"]["uid"]),
            revision: text(&pod["metadata"]["labels"]["controller-revision-hash"]),
            phase: text(&pod["status"]["phase"]),
            ready,
            deleting: !pod["metadata"]["deletionTimestamp"].is_null(),
            image: text(&pod["spec"]["containers"][0]["image"]),
        })
    }

    /// One line for a failure message.
    pub fn line(&self, since: Instant) -> String {
        format!(
            "{:>8.3}s {:<8} {} uid={} rev={} phase={} ready={} deleting={} image={}",
            self.at.saturating_duration_since(since).as_secs_f64(),
            self.kind,
            self.name,
            &self.uid.get(..8).unwrap_or(&self.uid),
            self.revision,
            self.phase,
            self.ready,
            self.deleting,
            self.image
        )
    }
}

/// The latest state of each pod after `events` (deleted pods absent), by name.
pub fn pods_after(events: &[PodEvent]) -> BTreeMap<String, PodEvent> {
    let mut now = BTreeMap::new();
    for e in events {
        if e.kind == "DELETED" {
            if now.get(&e.name).is_some_and(|p: &PodEvent| p.uid == e.uid) {
                now.remove(&e.name);
            }
        } else {
            now.insert(e.name.clone(), e.clone());
        }
    }
    now
}

/// `kubectl get pods --watch` in a namespace, every event kept; stopped when dropped.
pub struct PodWatch {
    child: Child,
    events: Arc<Mutex<Vec<PodEvent>>>,
    reader: Option<JoinHandle<()>>,
    /// When the watch started.
    pub started: Instant,
}

impl PodWatch {
    /// Starts watching the pods of `namespace`.
    pub fn start(cluster: &Cluster, namespace: &str) -> Self {
        let mut child = Command::new(cluster.var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(cluster.kubeconfig())
            .args([
                "get",
                "pods",
                "-n",
                namespace,
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get pods --watch");
        let stdout = child.stdout.take().expect("stdout");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(stdout).into_iter::<Value>();
            for v in stream.map_while(Result::ok) {
                if let Some(e) = PodEvent::from_watch(Instant::now(), &v) {
                    sink.lock().unwrap_or_else(PoisonError::into_inner).push(e);
                }
            }
        });
        Self {
            child,
            events,
            reader: Some(reader),
            started: Instant::now(),
        }
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<PodEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits (up to `timeout`) until `done` holds for the pods as the watch sees them now.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&BTreeMap<String, PodEvent>) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if done(&pods_after(&events)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; pod events:\n{}",
                self.timeline(&events)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `events` one per line, timed from the watch's start.
    pub fn timeline(&self, events: &[PodEvent]) -> String {
        events
            .iter()
            .map(|e| e.line(self.started))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
