//! A StatefulSet whose pods are a testbed cluster's real servers, rolled by a runbook's
//! `kubernetes` driver on the Kubernetes testbed: the StatefulSet (in the outline of the
//! system's Helm chart), the node agent's backend that runs each pod as the testbed's member
//! for its ordinal, and what a correct roll looks like from the API server.
//!
//! The contract with the testbed scripts (`openbao.sh`, `etcd.sh`, `nats.sh`): member N (1-based,
//! ordinal N-1) is started by `CLUSTER/<stem>N.cmd`, which execs the server; it writes to
//! `<stem>N.log` and its pid is `<stem>N.pid`; where the version is chosen per member, the command
//! reads it from `<stem>N.version` (the agent writes the image tag there).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Cmd;
use super::clusters::{Cluster, testbed};
use super::kubernetes::{PodEvent, PodWatch, kubectl, kubectl_json, pods_after};
use super::node_agent::NodeAgent;

/// The testbed's node whose kubelet is the node agent.
pub const AGENT_NODE: &str = "agent-1";

/// What [`Workload::check_roll`] asks of a roll besides the order and pace of replacements.
#[derive(Clone, Copy)]
pub struct RollChecks {
    /// Each new pod is first Running and not Ready (its server cannot be ready at once).
    pub unready_first: bool,
    /// Never two pods unready at once, old ones included (their servers' readiness holds
    /// while another member restarts).
    pub one_unready_at_most: bool,
}

/// A system run as a 3-pod StatefulSet backed by a testbed cluster.
pub struct Workload {
    /// The StatefulSet (the Helm release) and its container.
    pub name: &'static str,
    pub namespace: &'static str,
    /// The chart's headless Service (the pods' DNS names).
    pub service: &'static str,
    /// The testbed script that made the cluster (`etcd.sh`).
    pub script: &'static str,
    /// The member files' stem in the cluster directory (`node-`, `m`, `n`).
    pub stem: &'static str,
    /// The testbed's start command picks the binary from `<stem>N.version`.
    pub versioned: bool,
    /// The container port the probes target, the readiness probe's path, and the startup
    /// probe's if the chart has one (no probe counts before it succeeds).
    pub port: u16,
    pub probe_path: &'static str,
    pub startup_path: Option<&'static str>,
}

impl Workload {
    /// The pods by ordinal.
    pub fn pods(&self) -> Vec<String> {
        (0..3).map(|n| format!("{}-{n}", self.name)).collect()
    }

    /// The agent's backend: pod `NAME-N` is the testbed's member N+1, started by its `.cmd` on
    /// the version the image tag names (when the testbed picks versions), probed at
    /// `bases[N]` + each probe's path.
    pub fn agent_config(&self, cluster: &Cluster, bases: &[String]) -> Value {
        let member = format!("{{dir}}/{}{{n1}}", self.stem);
        let version = if self.versioned {
            format!("echo {{tag}} > {member}.version; ")
        } else {
            String::new()
        };
        json!({"backends": [{
            "name": self.name,
            "selector": {"namespace": self.namespace, "statefulset": self.name},
            "container": self.name,
            "command": ["bash", "-c",
                format!("{version}echo $$ > {member}.pid; exec bash {member}.cmd")],
            "log": format!("{member}.log"),
            "probe_url": "{base}{probe_path}",
            "vars": {"dir": cluster.path()},
            "members": bases.iter().map(|b| json!({"base": b})).collect::<Vec<_>>(),
        }]})
    }

    /// The chart's StatefulSet in outline: parallel pod management (no member is healthy
    /// before a quorum of them runs, so none would be Ready before all exist), the chart's
    /// probes, bound to the agent node.
    pub fn statefulset(&self, image: &str) -> Value {
        let labels = json!({"app.kubernetes.io/name": self.name});
        let mut container = json!({
            "name": self.name,
            "image": image,
            "ports": [{"name": "probe", "containerPort": self.port}],
            "readinessProbe": {
                "httpGet": {"path": self.probe_path, "port": self.port},
                "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 2,
            },
        });
        if let Some(path) = self.startup_path {
            container["startupProbe"] = json!({
                "httpGet": {"path": path, "port": self.port},
                "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 90,
            });
        }
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "replicas": 3,
                "serviceName": self.service,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": AGENT_NODE},
                        "tolerations": [{"key": "runbook.testbed/agent-node", "operator": "Equal",
                                         "value": AGENT_NODE, "effect": "NoSchedule"}],
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container],
                    },
                },
            },
        })
    }

    /// Stops the testbed's own processes: from here on the agent starts each member again
    /// when the StatefulSet controller creates its pod.
    pub fn hand_over(&self, cluster: &Cluster) {
        for n in ["1", "2", "3"] {
            testbed(self.script, &["stop", cluster.path(), n]);
        }
    }

    /// Creates the namespace, starts a pod watch in it, creates the StatefulSet on `image`
    /// and waits until `agent` runs the three servers.
    pub fn deploy<'a>(&'a self, k8s: &'a Cluster, agent: NodeAgent, image: &str) -> Deployment<'a> {
        kubectl(k8s, &["create", "namespace", self.namespace], None);
        let watch = PodWatch::start(k8s, self.namespace);
        kubectl(
            k8s,
            &["apply", "-f", "-"],
            Some(&self.statefulset(image).to_string()),
        );
        let pods = self.pods();
        watch.wait_until(
            "the agent to start the three servers",
            Duration::from_secs(120),
            |now| {
                pods.iter()
                    .all(|n| now.get(n).is_some_and(|p| p.phase == "Running"))
            },
        );
        Deployment {
            workload: self,
            k8s,
            watch,
            agent,
        }
    }

    /// Every pod exists and is Ready.
    pub fn all_ready(&self, now: &BTreeMap<String, PodEvent>) -> bool {
        self.pods()
            .iter()
            .all(|n| now.get(n).is_some_and(|p| p.ready && !p.deleting))
    }

    /// The StatefulSet's current and update revisions, and the whole object.
    pub fn revisions(&self, k8s: &Cluster) -> (String, String, Value) {
        let sts = kubectl_json(
            k8s,
            &["get", "statefulset", self.name, "-n", self.namespace],
        );
        let rev = |k: &str| sts["status"][k].as_str().unwrap_or_default().to_owned();
        (rev("currentRevision"), rev("updateRevision"), sts)
    }

    /// The StatefulSet controller finished a rollout away from `previous`: one revision, all
    /// three replicas updated and Ready, the template's image `image`, the partition back at
    /// 0. Returns the new revision.
    pub fn assert_rolled_out(&self, k8s: &Cluster, previous: &str, image: &str) -> String {
        let (current, updated, sts) = self.revisions(k8s);
        assert_ne!(updated, previous, "{sts:#}");
        assert_eq!(current, updated, "{sts:#}");
        assert_eq!(sts["status"]["readyReplicas"], 3, "{sts:#}");
        assert_eq!(sts["status"]["updatedReplicas"], 3, "{sts:#}");
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["image"], image,
            "{sts:#}"
        );
        assert_eq!(
            sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0,
            "{sts:#}"
        );
        updated
    }

    /// What a roll must look like in the pod events from `from` on (read through the API
    /// server): the StatefulSet controller replaced every pod exactly once (a new pod it
    /// deleted again before it was ever Ready aside), highest ordinal first, each new pod on
    /// `revision` and `image`; with `checks.unready_first`, each new pod ran unready before it
    /// was Ready; each was Ready before the controller began deleting the next; at no moment did the roll have two of the three pods out of service (missing,
    /// terminating, or replaced and not yet Ready); and with `checks.one_unready_at_most`, at no
    /// moment were two pods unavailable for any reason (an old pod unready counts too).
    pub fn check_roll(
        &self,
        events: &[PodEvent],
        from: usize,
        revision: &str,
        image: &str,
        checks: RollChecks,
    ) -> Result<(), String> {
        let pods = self.pods();
        let during = &events[from..];
        let before: BTreeSet<String> = pods_after(&events[..from])
            .into_values()
            .map(|p| p.uid)
            .collect();
        let mut replaced: Vec<&PodEvent> = Vec::new();
        for e in during {
            if !before.contains(&e.uid) && !replaced.iter().any(|r| r.uid == e.uid) {
                replaced.push(e);
            }
        }
        // A new pod deleted before it was ever Ready is no replacement: the real StatefulSet
        // controller may delete a pod it has just created, still Pending, and create it again
        // (a sync on a stale read; seen in CI for `restart-service`, tests/library_kube.rs). It
        // never ran, so it cost no availability; a pod Ready and then deleted still counts.
        replaced.retain(|r| {
            let mine = || during.iter().filter(|e| e.uid == r.uid);
            mine().any(|e| e.ready) || !mine().any(|e| e.deleting || e.kind == "DELETED")
        });
        let order: Vec<&str> = replaced.iter().map(|e| e.name.as_str()).collect();
        let top_down: Vec<&str> = pods.iter().rev().map(String::as_str).collect();
        if order != top_down {
            return Err(format!("pods replaced in the order {order:?}"));
        }
        for r in &replaced {
            if (r.revision.as_str(), r.image.as_str()) != (revision, image) {
                return Err(format!(
                    "{} was recreated on revision {} with image {}, not {revision} with {image}",
                    r.name, r.revision, r.image
                ));
            }
            let mine: Vec<&PodEvent> = during.iter().filter(|e| e.uid == r.uid).collect();
            let first_ready = mine
                .iter()
                .position(|e| e.ready)
                .ok_or_else(|| format!("the new {} was never Ready", r.name))?;
            if checks.unready_first
                && !mine[..first_ready]
                    .iter()
                    .any(|e| e.phase == "Running" && !e.ready)
            {
                return Err(format!(
                    "the new {} was Ready without first running unready",
                    r.name
                ));
            }
        }
        for pair in replaced.windows(2) {
            let (done, next) = (pair[0], pair[1]);
            let ready_at = during
                .iter()
                .find(|e| e.uid == done.uid && e.ready)
                .map(|e| e.at);
            let next_deleted_at = during
                .iter()
                .find(|e| e.name == next.name && before.contains(&e.uid) && e.deleting)
                .map(|e| e.at);
            match (ready_at, next_deleted_at) {
                (Some(r), Some(d)) if r <= d => {}
                (_, None) => return Err(format!("the old {} was never deleted", next.name)),
                _ => {
                    return Err(format!(
                        "{} was deleted before the new {} was Ready",
                        next.name, done.name
                    ));
                }
            }
        }
        for i in from..events.len() {
            let now = pods_after(&events[..=i]);
            let out = |n: &str| match now.get(n) {
                None => true,
                Some(p) if p.deleting => true,
                Some(p) if !before.contains(&p.uid) => {
                    !events[from..=i].iter().any(|e| e.uid == p.uid && e.ready)
                }
                Some(p) => checks.one_unready_at_most && !p.ready,
            };
            let unavailable: Vec<&str> =
                pods.iter().map(String::as_str).filter(|n| out(n)).collect();
            if unavailable.len() > 1 {
                return Err(format!("{unavailable:?} unavailable at once (event {i})"));
            }
        }
        Ok(())
    }
}

/// `cmd` talking to the testbed's API server: the driver's kube steps read
/// `RUNBOOK_KUBECONFIG`, and no kubeconfig of the machine's may leak in.
fn against(cmd: Cmd, k8s: &Cluster) -> Cmd {
    cmd.env("RUNBOOK_KUBECONFIG", k8s.kubeconfig())
        .env_remove("KUBECONFIG")
}

/// The agent kept its node Ready: long past the node lifecycle controller's grace period
/// (50 s since `agent_started`) the node is Ready, not tainted by it, and its Lease is held
/// by it. A test that got here sooner waits out the rest of those 60 s: what is asserted is
/// that nothing happened to the node meanwhile, which no condition can announce.
pub fn assert_node_kept_ready(k8s: &Cluster, agent_started: Instant) {
    const PAST_GRACE: Duration = Duration::from_secs(60);
    if let Some(rest) = PAST_GRACE.checked_sub(agent_started.elapsed()) {
        std::thread::sleep(rest);
    }
    let node = kubectl_json(k8s, &["get", "node", AGENT_NODE]);
    let ready = node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    assert_eq!(
        ready.map(|c| &c["status"]),
        Some(&json!("True")),
        "{node:#}"
    );
    let taints: Vec<&str> = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(taints, ["runbook.testbed/agent-node"], "{node:#}");
    let lease = kubectl_json(k8s, &["get", "lease", AGENT_NODE, "-n", "kube-node-lease"]);
    assert_eq!(lease["spec"]["holderIdentity"], AGENT_NODE, "{lease:#}");
}

/// Brings up a server testbed (`make`) and a Kubernetes testbed with the agent node together
/// (each takes ~20 s, mostly waiting).
pub fn with_kubernetes<T: Send>(make: impl FnOnce() -> T + Send) -> (T, Cluster) {
    std::thread::scope(|s| {
        let servers = s.spawn(make);
        let k8s = s.spawn(|| Cluster::kubernetes(&["--nodes", "1", "--agent-node", AGENT_NODE]));
        (
            servers.join().expect("server testbed"),
            k8s.join().expect("kubernetes testbed"),
        )
    })
}

/// A [`Workload`] deployed on the Kubernetes testbed: its pod watch and the node agent that
/// runs its servers (both stopped when dropped, the watch first).
pub struct Deployment<'a> {
    pub workload: &'a Workload,
    pub k8s: &'a Cluster,
    pub watch: PodWatch,
    pub agent: NodeAgent,
}

impl Deployment<'_> {
    /// `what`, with every pod event so far and the agent's log, for a failure message.
    pub fn explain(&self, what: &str) -> String {
        format!(
            "{what}\n--- pod events ---\n{}\n--- node agent ---\n{}",
            self.watch.timeline(&self.watch.events()),
            self.agent.log()
        )
    }

    /// Waits (up to `timeout`) until every pod is Ready.
    pub fn wait_all_ready(&self, what: &str, timeout: Duration) {
        self.watch
            .wait_until(what, timeout, |now| self.workload.all_ready(now));
    }

    /// The StatefulSet's update revision now.
    pub fn revision(&self) -> String {
        self.workload.revisions(self.k8s).1
    }

    /// How many pod events the watch has seen: where a roll's events start.
    pub fn mark(&self) -> usize {
        self.watch.events().len()
    }

    /// Runs `cmd` (a `runbook run` of `what`) against the cluster: it must exit 0, after
    /// which every pod is Ready again within 30 s. Returns how long the run took.
    pub fn run(&self, cmd: Cmd, what: &str) -> Duration {
        let at = Instant::now();
        let out = against(cmd, self.k8s).run();
        let took = at.elapsed();
        // Shown with --nocapture: what testbeds/README.md reports.
        eprintln!("{what} took {took:.1?}");
        assert_eq!(out.code(), Some(0), "{}", self.explain(&out.explain(what)));
        self.wait_all_ready(
            &format!("the three pods to be Ready after {what}"),
            Duration::from_secs(30),
        );
        took
    }

    /// The roll since event `from` away from revision `previous` finished
    /// ([`Workload::assert_rolled_out`]) and went as [`Workload::check_roll`] demands; `took`
    /// is said on failure. Returns the new revision.
    pub fn assert_rolled(
        &self,
        from: usize,
        previous: &str,
        image: &str,
        checks: RollChecks,
        took: Duration,
    ) -> String {
        let w = self.workload;
        let revision = w.assert_rolled_out(self.k8s, previous, image);
        if let Err(e) = w.check_roll(&self.watch.events(), from, &revision, image, checks) {
            panic!("{e}\n{}", self.explain(&format!("the run took {took:?}")));
        }
        revision
    }
}

/// `check_roll` on pod events written by hand: what it accepts of the real controller and what
/// it refuses. No cluster.
#[cfg(test)]
mod check_roll_tests {
    use std::time::{Duration, Instant};

    use super::*;

    const WORKLOAD: Workload = Workload {
        name: "q",
        namespace: "ns",
        service: "q",
        script: "none.sh",
        stem: "m",
        versioned: false,
        port: 1,
        probe_path: "/",
        startup_path: None,
    };

    /// Events in order, a millisecond apart: (kind, pod, uid, phase, ready, deleting).
    fn events(rows: &[(&str, &str, &str, &str, bool, bool)]) -> Vec<PodEvent> {
        let t0 = Instant::now();
        rows.iter()
            .enumerate()
            .map(|(i, (kind, name, uid, phase, ready, deleting))| PodEvent {
                at: t0 + Duration::from_millis(u64::try_from(i).unwrap()),
                kind: (*kind).into(),
                name: (*name).into(),
                uid: (*uid).into(),
                revision: if uid.starts_with("old") { "r1" } else { "r2" }.into(),
                phase: (*phase).into(),
                ready: *ready,
                deleting: *deleting,
                image: "img".into(),
            })
            .collect()
    }

    /// The three old pods, Ready; then the roll.
    fn roll(rows: &[(&str, &str, &str, &str, bool, bool)]) -> Vec<PodEvent> {
        let mut all = vec![
            ("ADDED", "q-0", "old0", "Running", true, false),
            ("ADDED", "q-1", "old1", "Running", true, false),
            ("ADDED", "q-2", "old2", "Running", true, false),
        ];
        all.extend_from_slice(rows);
        events(&all)
    }

    /// Old pod `n` deleted, its new pod `uid` added Pending, then Running unready, then Ready.
    fn replace(
        n: u8,
        uid: &'static str,
    ) -> Vec<(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        bool,
        bool,
    )> {
        let name = ["q-0", "q-1", "q-2"][usize::from(n)];
        let old = ["old0", "old1", "old2"][usize::from(n)];
        vec![
            ("MODIFIED", name, old, "Running", true, true),
            ("DELETED", name, old, "Running", true, true),
            ("ADDED", name, uid, "Pending", false, false),
            ("MODIFIED", name, uid, "Running", false, false),
            ("MODIFIED", name, uid, "Running", true, false),
        ]
    }

    fn check(rows: &[(&str, &str, &str, &str, bool, bool)]) -> Result<(), String> {
        let checks = RollChecks {
            unready_first: true,
            one_unready_at_most: false,
        };
        WORKLOAD.check_roll(&roll(rows), 3, "r2", "img", checks)
    }

    #[test]
    fn a_roll_from_the_top_one_ready_pod_at_a_time_passes() {
        let rows: Vec<_> = [replace(2, "new2"), replace(1, "new1"), replace(0, "new0")].concat();
        assert_eq!(check(&rows), Ok(()));
    }

    #[test]
    fn a_new_pod_the_controller_deletes_while_pending_and_creates_again_is_no_second_replacement() {
        let mut rows = vec![
            ("MODIFIED", "q-2", "old2", "Running", true, true),
            ("DELETED", "q-2", "old2", "Running", true, true),
            ("ADDED", "q-2", "stale", "Pending", false, false),
            ("MODIFIED", "q-2", "stale", "Pending", false, true),
            ("DELETED", "q-2", "stale", "Pending", false, true),
            ("ADDED", "q-2", "new2", "Pending", false, false),
            ("MODIFIED", "q-2", "new2", "Running", false, false),
            ("MODIFIED", "q-2", "new2", "Running", true, false),
        ];
        rows.extend([replace(1, "new1"), replace(0, "new0")].concat());
        assert_eq!(check(&rows), Ok(()));
    }

    #[test]
    fn a_new_pod_deleted_after_it_was_ready_is_a_second_replacement() {
        let mut rows = replace(2, "new2");
        rows.extend([
            ("MODIFIED", "q-2", "new2", "Running", true, true),
            ("DELETED", "q-2", "new2", "Running", true, true),
        ]);
        rows.extend([replace(2, "again2"), replace(1, "new1"), replace(0, "new0")].concat());
        // (`replace` deletes the old pod again first: those rows name a pod already gone.)
        let err = check(&rows).unwrap_err();
        assert!(err.contains("order"), "{err}");
    }

    #[test]
    fn a_roll_out_of_order_or_too_early_fails() {
        let rows: Vec<_> = [replace(1, "new1"), replace(2, "new2"), replace(0, "new0")].concat();
        assert!(check(&rows).unwrap_err().contains("order"));
        // q-1's old pod deleted before the new q-2 is Ready.
        let mut rows = replace(2, "new2");
        let ready = rows.pop().unwrap();
        rows.extend(replace(1, "new1"));
        rows.push(ready);
        rows.extend(replace(0, "new0"));
        let err = check(&rows).unwrap_err();
        assert!(err.contains("before the new q-2 was Ready"), "{err}");
    }
}
