//! A fake Kubernetes API server for the e2e tests of the `kube` step kind and the
//! `kubernetes` driver. No real API server can run here, so this one follows the documented
//! behaviour of the real one for what the runbooks use:
//!
//! - the REST paths of the core, `apps` and `batch` groups (plus `runbook.test/v1` Widgets, a
//!   stand-in for a custom resource) and the discovery documents kube-rs reads;
//! - GET (objects; lists with label and field selectors), POST (409 AlreadyExists), PUT (409
//!   Conflict on a stale `metadata.resourceVersion`), PATCH as merge, JSON, strategic-merge and
//!   server-side apply (managedFields), DELETE with propagation, and `Status` error bodies;
//! - `metadata.resourceVersion` from one global counter, `metadata.generation` bumped when the
//!   spec changes, status only through the `status` subresource, API defaulting of
//!   StatefulSets;
//! - bearer-token authentication (401 without the kubeconfig's token);
//! - controllers: StatefulSets as the real controller rolls them (OrderedReady creation,
//!   RollingUpdate with partition: highest ordinal first, one pod at a time, each after the
//!   previous replacement is Running and Ready), Deployments, DaemonSets and Jobs in
//!   simplified form, a "kubelet" that starts pods and decides readiness, and a garbage
//!   collector for owned pods;
//! - the websocket `exec` subresource (`v5.channel.k8s.io` / `v4.channel.k8s.io`) and `log`.
//!
//! Hooks let a test drive real processes from pod lifecycle events (`on_pod_started`,
//! `on_pod_stopped`, `readiness`), so a runbook's Kubernetes driver can roll real servers.

#![allow(dead_code)]
// Kubernetes kinds (StatefulSet, DaemonSet) are prose in these docs, not code.
#![allow(clippy::doc_markdown)]

mod controller;
mod exec;
mod patch;
mod selector;
mod server;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use store::State;

/// What a hook knows about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name, e.g. `openbao-2`.
    pub name: String,
    /// The ordinal, for pods of a StatefulSet.
    pub ordinal: Option<u32>,
    /// The owning StatefulSet's name, if any.
    pub statefulset: Option<String>,
    /// The image of the pod's first container.
    pub image: String,
    /// The pod's `controller-revision-hash` label ("" if none).
    pub revision: String,
}

impl PodInfo {
    /// The tag of [`PodInfo::image`] (`openbao/openbao:2.7.2` → `2.7.2`), "" if none.
    pub fn image_tag(&self) -> &str {
        let last = self.image.rsplit('/').next().unwrap_or("");
        last.split_once(':').map_or("", |(_, tag)| tag)
    }
}

/// Something the fake's controllers or API did, for assertions on order and timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeEvent {
    /// A StatefulSet's `spec.updateStrategy.rollingUpdate.partition` was set (at creation, or
    /// changed by a write).
    PartitionChanged { sts: String, partition: i64 },
    /// A StatefulSet's first container image was set or changed by a write.
    ImageChanged { sts: String, image: String },
    /// A pod was created (by the API or a controller).
    PodCreated {
        pod: String,
        revision: String,
        image: String,
    },
    /// A pod's container started (phase Running); `on_pod_started` runs now.
    PodRunning { pod: String },
    /// A pod's Ready condition became True.
    PodReady { pod: String },
    /// A pod's Ready condition became False again (its readiness said so).
    PodUnready { pod: String },
    /// A pod's deletion was asked for (it is terminating); `on_pod_stopped` runs now.
    PodTerminating { pod: String },
    /// A pod is gone from the API.
    PodDeleted { pod: String },
}

/// A FakeEvent with the time it happened.
#[derive(Clone, Debug)]
pub struct Stamped {
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub event: FakeEvent,
}

/// One `exec` the fake received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCall {
    pub namespace: String,
    pub pod: String,
    /// The container asked for (the first container's name when not given).
    pub container: String,
    pub command: Vec<String>,
    /// What the client sent on stdin (empty without `stdin=true`).
    pub stdin: String,
}

/// What an exec handler answers: `(stdout, stderr, exit code)`.
pub type ExecReply = (String, String, i32);

/// Decides whether a running pod is Ready (polled like a readiness probe).
pub type Readiness = Arc<dyn Fn(&PodInfo) -> bool + Send + Sync>;
/// Called on a blocking thread at a pod lifecycle event.
pub type PodHook = Arc<dyn Fn(&PodInfo) + Send + Sync>;
/// Runs an exec.
pub type ExecHandler = Arc<dyn Fn(&ExecCall) -> ExecReply + Send + Sync>;
/// Decides whether a Job succeeds (`true`) or fails, by `(namespace, name)`.
pub type JobOutcome = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// How the fake behaves.
#[derive(Clone)]
pub struct Options {
    /// The bearer token the kubeconfig carries and the server demands.
    pub token: String,
    /// The kubeconfig context's namespace.
    pub namespace: String,
    /// Pending → Running (container started) after this long.
    pub start_after: Duration,
    /// Running → Ready after this long, unless `readiness` decides.
    pub ready_after: Duration,
    /// A terminating pod is gone after this long (and after `on_pod_stopped` returned).
    pub terminate_after: Duration,
    /// A Job completes (or fails) after this long; Deployments and DaemonSets become
    /// available after `ready_after`.
    pub job_after: Duration,
    /// Polled (every 100 ms, on a blocking thread) to decide a running pod's readiness.
    pub readiness: Option<Readiness>,
    /// Called when a pod's container starts, before readiness is first polled.
    pub on_pod_started: Option<PodHook>,
    /// Called when a pod starts terminating; the pod is gone only after it returned.
    pub on_pod_stopped: Option<PodHook>,
    /// Runs `exec`; without one, every exec answers "exec is not configured" with code 126.
    pub exec: Option<ExecHandler>,
    /// Decides Jobs; without one, every Job succeeds.
    pub job_outcome: Option<JobOutcome>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: "fake-token-0123456789".into(),
            namespace: "default".into(),
            start_after: Duration::from_millis(100),
            ready_after: Duration::from_millis(300),
            terminate_after: Duration::from_millis(100),
            job_after: Duration::from_millis(500),
            readiness: None,
            on_pod_started: None,
            on_pod_stopped: None,
            exec: None,
            job_outcome: None,
        }
    }
}

/// A running fake API server with its controllers. Dropping it stops everything.
pub struct FakeKube {
    state: Arc<State>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 (a free port) and writes a kubeconfig for it.
    pub fn start(options: Options) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("fake-kube")
            .build()
            .expect("fake kube runtime");
        let state = Arc::new(State::new(options));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind fake kube");
        let addr = listener.local_addr().expect("local addr");
        runtime.spawn(server::serve(listener, state.clone()));
        runtime.spawn(controller::run(state.clone()));
        let dir = tempfile::Builder::new()
            .prefix("fake-kube-")
            .tempdir()
            .expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let fake = Self {
            state,
            addr,
            dir,
            kubeconfig: kubeconfig.clone(),
            runtime: Some(runtime),
        };
        let token = fake.state.options.token.clone();
        fake.write_kubeconfig(&kubeconfig, &token);
        fake
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The kubeconfig (context `fake`, the options' namespace and token).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Writes a kubeconfig for this server with another token (to test a 401), returns its path.
    pub fn kubeconfig_with_token(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("kubeconfig-{}", token.len()));
        self.write_kubeconfig(&path, token);
        path
    }

    fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  \
             cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: \
             fake\n    user: tester\n    namespace: {ns}\n- name: other\n  context:\n    \
             cluster: fake\n    user: tester\n    namespace: other\nusers:\n- name: tester\n  \
             user:\n    token: {token}\n",
            url = self.url(),
            ns = self.state.options.namespace,
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Stores an object as a seed (status kept as given; a missing namespace is created).
    /// Returns the stored object, with resourceVersion, uid and defaults filled in.
    pub fn insert(&self, object: Value) -> Value {
        self.state.seed(object)
    }

    /// The stored object of `kind` (a kind, plural or short name).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.state.get(kind, namespace, name)
    }

    /// Every stored object of `kind` in `namespace` ("" for all), sorted by name.
    pub fn list(&self, kind: &str, namespace: &str) -> Vec<Value> {
        self.state.list(kind, namespace)
    }

    /// Appends a line to a pod's log (the fake also logs container starts).
    pub fn append_log(&self, namespace: &str, pod: &str, line: &str) {
        self.state.append_log(namespace, pod, line);
    }

    /// What happened so far, in order.
    pub fn events(&self) -> Vec<FakeEvent> {
        self.timeline().into_iter().map(|s| s.event).collect()
    }

    /// What happened so far, with times.
    pub fn timeline(&self) -> Vec<Stamped> {
        self.state.timeline()
    }

    /// Every request so far as `METHOD path?query [content-type]`.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests()
    }

    /// Polls `condition` every 20 ms until it holds or `limit` passes; panics with `what` and
    /// the event history then.
    pub fn wait_until(&self, what: &str, limit: Duration, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
