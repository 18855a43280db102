//! The reconcile loop: for every pod bound to the node, the local process that backs it.
//!
//! Each round (on any pod change, process exit or readiness flip, and every 500 ms) the agent
//! looks at every pod of the node and:
//!
//! - a new pod is bound to its backend (see [`crate::config`]); one that matches none, or
//!   whose command cannot be rendered, is reported `CreateContainerConfigError` and not run;
//! - a pod without a process gets one started; a process that ended is restarted per the
//!   pod's `restartPolicy` (`Always`; `OnFailure` unless it exited 0; `Never`) after a back-off
//!   of 1 s doubling to 30 s (reset once a process ran for 30 s), reported `CrashLoopBackOff`;
//! - a process whose startup probe failed (see [`crate::probe`]) is stopped as below and then
//!   restarted per the pod's `restartPolicy`, as a kubelet kills and restarts such a container;
//! - a pod being deleted (it has a `deletionTimestamp`) gets `SIGTERM` sent to its process
//!   group, then `SIGKILL` once the grace period is over (the backend's `grace_period`, else the pod's
//!   `deletionGracePeriodSeconds`, else its `terminationGracePeriodSeconds`); once the process
//!   has ended the pod's final status is posted and the pod is deleted with grace 0 (with its
//!   uid as precondition), as a kubelet does, which is what lets a StatefulSet controller create
//!   the pod's successor;
//! - a pod that disappeared (deleted with grace 0 by someone else) has its process stopped the
//!   same way;
//! - the pod's status ([`crate::status`]) is written (merge patch on `status`, with the pod's uid,
//!   so a status never lands on a successor of the same name) when it differs from the pod's.
//!
//! API calls are retried a bounded number of times ([`crate::retry`]); what still fails is
//! tried again on the next round. On shutdown every process is stopped as if its pod were
//! deleted (SIGTERM, grace, SIGKILL) and its pod reported not ready.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::config::{Binding, Config};
use crate::pods::Cache;
use crate::probe::{Prober, Probes};
use crate::process::Process;
use crate::retry::retry;
use crate::status::{self, Observed, State, Terminated};

/// First back-off before a restart.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest back-off; a process that ran this long resets the back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A status just written is not written again this soon (the watch has not brought it back).
const ECHO_WAIT: Duration = Duration::from_secs(2);
/// Default grace period, as the API server defaults `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Whether a process that ended with `exit_code` is started again under `policy`.
pub fn restarts(policy: Option<&str>, exit_code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The back-off before restarting a process that ran for `ran`, when the back-off in effect
/// is `current`: a process that ran long enough starts over from the first back-off.
pub fn backoff_for(current: Duration, ran: Duration) -> Duration {
    if ran >= BACKOFF_MAX {
        BACKOFF_START
    } else {
        current
    }
}

/// The back-off in effect after one was used.
pub fn doubled(used: Duration) -> Duration {
    (used * 2).min(BACKOFF_MAX)
}

/// Identifies what ran for a binding: the backend and a digest of the image reference and
/// the rendered command.
fn image_id(b: &Binding) -> String {
    let mut h = Sha256::new();
    h.update(b.image.as_bytes());
    h.update([0]);
    for part in &b.argv {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in &b.env {
        h.update(format!("{k}={v}").as_bytes());
        h.update([0]);
    }
    let hex = h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    format!("runbook-node-agent://{}@sha256:{hex}", b.backend)
}

/// The grace period for stopping `pod`'s process.
fn grace(pod: Option<&Pod>, binding: Option<&Binding>) -> Duration {
    if let Some(g) = binding.and_then(|b| b.grace_period) {
        return g;
    }
    let secs = pod.and_then(|p| {
        p.metadata
            .deletion_grace_period_seconds
            .or_else(|| p.spec.as_ref()?.termination_grace_period_seconds)
    });
    secs.and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_GRACE, Duration::from_secs)
}

struct Stopping {
    deadline: Instant,
    killed: bool,
}

/// Everything the agent tracks for one pod.
struct Runtime {
    namespace: String,
    name: String,
    binding: Result<Binding, String>,
    /// The container the process stands for (the first one when the pod cannot be bound, so
    /// that the reason is reported on it).
    container: String,
    image_id: String,
    start_time: DateTime<Utc>,
    process: Option<Process>,
    prober: Option<Prober>,
    /// The current process has ended and that was handled.
    exit_seen: bool,
    /// How the current (or last) process ended, until it is started again.
    current_exit: Option<Terminated>,
    /// How the one before it ended.
    previous_exit: Option<Terminated>,
    restart_count: i32,
    restart_at: Option<Instant>,
    /// The back-off before the next restart.
    backoff: Duration,
    spawn_error: Option<String>,
    /// Ended and will not be started again.
    done: bool,
    stopping: Option<Stopping>,
    /// The pod is gone from the API (or this agent deleted it).
    gone: bool,
    deleted: bool,
    grace: Duration,
    last_sent: Option<(serde_json::Value, Instant)>,
}

impl Runtime {
    fn running(&self) -> bool {
        self.process.is_some() && !self.exit_seen
    }

    fn observed(&self, node_ip: &str, terminating: bool) -> Observed {
        let crash_loop = self.current_exit.is_some() && !self.done && !self.running();
        let state = if let (true, Some(p)) = (self.running(), &self.process) {
            State::Running {
                started_at: p.started_at,
            }
        } else if let (Some(t), true) = (&self.current_exit, self.done) {
            State::Terminated(t.clone())
        } else if crash_loop {
            State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {} restarting failed container",
                    humantime::format_duration(self.backoff)
                )),
            }
        } else if let Err(e) = &self.binding {
            State::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(e.clone()),
            }
        } else if let Some(e) = &self.spawn_error {
            State::Waiting {
                reason: "RunContainerError".into(),
                message: Some(e.clone()),
            }
        } else {
            State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            }
        };
        Observed {
            container: self.container.clone(),
            state,
            last: if crash_loop {
                self.current_exit.clone()
            } else {
                self.previous_exit.clone()
            },
            restart_count: self.restart_count,
            started: self.prober.as_ref().is_none_or(|p| p.health().started),
            ready: self.prober.as_ref().is_none_or(|p| p.health().ready),
            ever_started: self.process.is_some(),
            container_id: self
                .process
                .as_ref()
                .map(|p| format!("runbook-node-agent://{}", p.pid())),
            image_id: self.image_id.clone(),
            start_time: self.start_time,
            node_ip: node_ip.to_owned(),
            terminating,
        }
    }
}

/// The agent: the node's pods, their processes, and the API to report to.
pub struct Agent {
    config: Config,
    node: String,
    node_ip: String,
    client: Client,
    http: reqwest::Client,
    pods: Cache,
    changed: Arc<Notify>,
    runtimes: BTreeMap<String, Runtime>,
}

impl Agent {
    /// An agent for `node` reporting its pods at `node_ip`; `changed` wakes it.
    pub fn new(
        config: Config,
        node: String,
        node_ip: String,
        client: Client,
        pods: Cache,
        changed: Arc<Notify>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client without TLS settings builds");
        Self {
            config,
            node,
            node_ip,
            client,
            http,
            pods,
            changed,
            runtimes: BTreeMap::new(),
        }
    }

    /// Reconciles until `shutdown` resolves, then stops every process.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.reconcile().await;
            tokio::select! {
                () = &mut shutdown => break,
                () = self.changed.notified() => {}
                _ = tick.tick() => {}
            }
        }
        self.shutdown().await;
    }

    async fn reconcile(&mut self) {
        let pods = self.pods.snapshot();
        for (uid, rt) in &mut self.runtimes {
            if !pods.contains_key(uid) && !rt.gone {
                rt.gone = true;
                tracing::info!(pod = %format!("{}/{}", rt.namespace, rt.name), "pod removed from the API");
            }
        }
        let uids: std::collections::BTreeSet<String> =
            self.runtimes.keys().chain(pods.keys()).cloned().collect();
        for uid in uids {
            self.reconcile_pod(&uid, pods.get(&uid)).await;
        }
        self.runtimes.retain(|_, rt| !rt.gone || rt.running());
    }

    fn bind(&self, pod: &Pod) -> Result<Binding, String> {
        match self.config.backend_for(pod) {
            Some(b) => b.bind(pod, &self.node, &self.node_ip),
            None => Err("no backend in the node agent's config matches this pod".into()),
        }
    }

    async fn reconcile_pod(&mut self, uid: &str, pod: Option<&Pod>) {
        if !self.runtimes.contains_key(uid) {
            let Some(pod) = pod else { return };
            let binding = self.bind(pod);
            let name = pod.metadata.name.clone().unwrap_or_default();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            match &binding {
                Ok(b) => {
                    tracing::info!(pod = %format!("{namespace}/{name}"), backend = %b.backend, image = %b.image, "pod bound to the node");
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "pod cannot be run");
                }
            }
            let image_id = binding.as_ref().map(image_id).unwrap_or_default();
            let container = match &binding {
                Ok(b) => b.container.clone(),
                Err(_) => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            };
            let start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map_or_else(status::now, |t| t.0);
            let grace = grace(Some(pod), binding.as_ref().ok());
            self.runtimes.insert(
                uid.to_owned(),
                Runtime {
                    namespace,
                    name,
                    binding,
                    container,
                    image_id,
                    start_time,
                    process: None,
                    prober: None,
                    exit_seen: false,
                    current_exit: None,
                    previous_exit: None,
                    restart_count: 0,
                    restart_at: None,
                    backoff: BACKOFF_START,
                    spawn_error: None,
                    done: false,
                    stopping: None,
                    gone: false,
                    deleted: false,
                    grace,
                    last_sent: None,
                },
            );
        }
        let terminating = pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        let policy = pod.and_then(|p| p.spec.as_ref()?.restart_policy.clone());
        let rt = self.runtimes.get_mut(uid).expect("inserted above");
        let who = format!("{}/{}", rt.namespace, rt.name);
        observe_exit(rt, &who, policy.as_deref(), terminating);
        if terminating {
            if let Some(p) = pod {
                rt.grace = grace(Some(p), rt.binding.as_ref().ok());
            }
            if rt.running() {
                stop_step(rt, &who);
            } else if let (Some(pod), false) = (pod, rt.deleted) {
                rt.done = true;
                self.sync_status(uid, pod, true).await;
                self.delete(uid).await;
                return;
            }
        } else {
            let rt = self.runtimes.get_mut(uid).expect("present");
            let startup_failed = rt
                .prober
                .as_ref()
                .is_some_and(|p| p.health().startup_failed);
            if rt.running() && (startup_failed || rt.stopping.is_some()) {
                if rt.stopping.is_none() {
                    tracing::warn!(pod = %who, "the startup probe failed; restarting the process");
                }
                stop_step(rt, &who);
            }
            let due = rt.restart_at.is_none_or(|at| Instant::now() >= at);
            if rt.binding.is_ok() && !rt.done && !rt.running() && due {
                self.start(uid);
            }
        }
        if let Some(pod) = pod {
            self.sync_status(uid, pod, terminating).await;
        }
    }

    fn start(&mut self, uid: &str) {
        let rt = self.runtimes.get_mut(uid).expect("present");
        let Ok(b) = &rt.binding else { return };
        let who = format!("{}/{}", rt.namespace, rt.name);
        match Process::spawn(&b.argv, &b.env, b.log.as_deref(), self.changed.clone()) {
            Ok(p) => {
                tracing::info!(pod = %who, pid = p.pid(), image = %b.image, restart = rt.restart_count + i32::from(rt.current_exit.is_some()), "process started");
                if let Some(t) = rt.current_exit.take() {
                    rt.previous_exit = Some(t);
                    rt.restart_count += 1;
                    rt.backoff = doubled(rt.backoff);
                }
                rt.prober = (b.probes != Probes::default()).then(|| {
                    Prober::start(b.probes.clone(), self.http.clone(), self.changed.clone())
                });
                rt.stopping = None;
                rt.process = Some(p);
                rt.exit_seen = false;
                rt.restart_at = None;
                rt.spawn_error = None;
            }
            Err(e) => {
                tracing::warn!(pod = %who, error = %e, "cannot start the process");
                rt.spawn_error = Some(e.to_string());
                rt.restart_at = Some(Instant::now() + rt.backoff);
                rt.backoff = doubled(rt.backoff);
            }
        }
    }

    /// Writes the pod's status if it differs from what the API has.
    async fn sync_status(&mut self, uid: &str, pod: &Pod, terminating: bool) {
        let rt = self.runtimes.get_mut(uid).expect("present");
        if rt.deleted {
            return;
        }
        let desired =
            status::pod_status(pod, &rt.observed(&self.node_ip, terminating), status::now());
        let want = status::owned_fields(&desired);
        let have = pod.status.as_ref().map(status::owned_fields);
        if have.as_ref() == Some(&want) {
            return;
        }
        if rt
            .last_sent
            .as_ref()
            .is_some_and(|(sent, at)| *sent == want && at.elapsed() < ECHO_WAIT)
        {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &rt.namespace);
        let body = serde_json::json!({ "metadata": { "uid": uid }, "status": want });
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&body));
        match retry("post the pod status", || {
            api.patch_status(&rt.name, &pp, &patch)
        })
        .await
        {
            Ok(_) => {
                tracing::debug!(pod = %rt.name, "status posted");
                rt.last_sent = Some((want, Instant::now()));
            }
            // The pod is gone or was replaced by a successor of the same name.
            Err(e) if matches!(e.code(), Some(404 | 409 | 422)) => {
                tracing::debug!(pod = %rt.name, error = %e, "status not posted");
            }
            Err(e) => tracing::warn!(pod = %rt.name, error = %e, "status not posted; trying again"),
        }
    }

    /// Deletes the pod with grace 0 now that its process has ended.
    async fn delete(&mut self, uid: &str) {
        let rt = self.runtimes.get_mut(uid).expect("present");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &rt.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match retry("delete the pod", || api.delete(&rt.name, &params)).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{}/{}", rt.namespace, rt.name), "pod deleted (its process has ended)");
                rt.deleted = true;
            }
            Err(e) if matches!(e.code(), Some(404 | 409)) => rt.deleted = true,
            Err(e) => tracing::warn!(pod = %rt.name, error = %e, "pod not deleted; trying again"),
        }
    }

    /// Stops every process (SIGTERM, each one's grace period, SIGKILL) and reports its pod
    /// not ready.
    async fn shutdown(&mut self) {
        tracing::info!(
            processes = self.runtimes.values().filter(|r| r.running()).count(),
            "shutting down"
        );
        let longest = self
            .runtimes
            .values()
            .filter(|r| r.running())
            .map(|r| r.grace)
            .max()
            .unwrap_or_default();
        for rt in self.runtimes.values_mut().filter(|r| r.running()) {
            rt.stopping = Some(Stopping {
                deadline: Instant::now() + rt.grace,
                killed: false,
            });
            rt.process
                .as_ref()
                .expect("running")
                .signal(Signal::SIGTERM);
        }
        let until = Instant::now() + longest + Duration::from_secs(10);
        while Instant::now() < until {
            let mut waiting = false;
            for rt in self.runtimes.values_mut() {
                if !rt.running() {
                    continue;
                }
                if rt.process.as_ref().expect("running").exit().is_some() {
                    rt.exit_seen = true;
                    continue;
                }
                waiting = true;
                let who = format!("{}/{}", rt.namespace, rt.name);
                stop_step(rt, &who);
            }
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pods = self.pods.snapshot();
        for (uid, rt) in &mut self.runtimes {
            if let Some(p) = &rt.process {
                rt.current_exit = p.exit();
                rt.exit_seen = true;
                rt.done = true;
                rt.prober = None;
            }
            rt.last_sent = None;
            let Some(pod) = pods.get(uid) else { continue };
            let desired = status::pod_status(pod, &rt.observed(&self.node_ip, true), status::now());
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &rt.namespace);
            let body = serde_json::json!({ "metadata": { "uid": uid }, "status": status::owned_fields(&desired) });
            let (pp, patch) = (PatchParams::default(), Patch::Merge(&body));
            let report = api.patch_status(&rt.name, &pp, &patch);
            match tokio::time::timeout(Duration::from_secs(5), report).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(pod = %rt.name, error = %e, "final status not posted"),
                Err(_) => {
                    tracing::warn!(pod = %rt.name, "final status not posted: no answer in 5 s");
                }
            }
        }
        tracing::info!("every process stopped");
    }
}

/// Notes that the current process ended (once), and whether and when it starts again.
fn observe_exit(rt: &mut Runtime, who: &str, policy: Option<&str>, terminating: bool) {
    let Some(p) = &rt.process else { return };
    if rt.exit_seen {
        return;
    }
    let Some(t) = p.exit() else { return };
    rt.exit_seen = true;
    rt.prober = None;
    let ran = (t.finished_at - t.started_at).to_std().unwrap_or_default();
    tracing::info!(pod = %who, pid = p.pid(), exit_code = t.exit_code, signal = ?t.signal, "process ended");
    if terminating || !restarts(policy, t.exit_code) {
        rt.done = true;
    } else {
        rt.backoff = backoff_for(rt.backoff, ran);
        rt.restart_at = Some(Instant::now() + rt.backoff);
        tracing::info!(pod = %who, backoff = %humantime::format_duration(rt.backoff), "restarting after a back-off");
    }
    rt.current_exit = Some(t);
}

/// One step of stopping a running process: SIGTERM first, SIGKILL once the grace is over.
fn stop_step(rt: &mut Runtime, who: &str) {
    let Some(p) = &rt.process else { return };
    match &mut rt.stopping {
        None => {
            tracing::info!(pod = %who, pid = p.pid(), grace = %humantime::format_duration(rt.grace), "stopping the process (SIGTERM)");
            p.signal(Signal::SIGTERM);
            rt.stopping = Some(Stopping {
                deadline: Instant::now() + rt.grace,
                killed: false,
            });
        }
        Some(s) if !s.killed && Instant::now() >= s.deadline => {
            tracing::warn!(pod = %who, pid = p.pid(), "grace period over; SIGKILL");
            p.signal(Signal::SIGKILL);
            s.killed = true;
        }
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_whether_an_ended_process_runs_again() {
        assert!(restarts(None, 0));
        assert!(restarts(Some("Always"), 0));
        assert!(restarts(Some("OnFailure"), 1));
        assert!(!restarts(Some("OnFailure"), 0));
        assert!(!restarts(Some("Never"), 1));
    }

    #[test]
    fn the_backoff_doubles_to_a_limit_and_resets_after_a_long_run() {
        let s = Duration::from_secs;
        assert_eq!(doubled(s(1)), s(2));
        assert_eq!(doubled(s(16)), s(30));
        assert_eq!(doubled(s(30)), s(30));
        assert_eq!(backoff_for(s(8), s(2)), s(8));
        assert_eq!(backoff_for(s(30), s(31)), s(1));
    }

    #[test]
    fn the_grace_period_is_the_backends_else_the_pods() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 45},
        }))
        .expect("pod");
        assert_eq!(grace(Some(&pod), None), Duration::from_secs(45));
        let mut deleting = pod.clone();
        deleting.metadata.deletion_grace_period_seconds = Some(5);
        assert_eq!(grace(Some(&deleting), None), Duration::from_secs(5));
        assert_eq!(grace(None, None), DEFAULT_GRACE);
    }
}
