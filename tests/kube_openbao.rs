//! `upgrade-openbao` with the `kubernetes` driver on a real control plane
//! (`testbeds/kubernetes.sh`: etcd, kube-apiserver, the real StatefulSet controller and
//! scheduler) whose OpenBao pods are real servers: the node agent (`testbeds/node-agent`)
//! is the kubelet of the node the pods are bound to, and starts each pod's server as the
//! testbed's OpenBao node for its ordinal, on the binary its image tag names; a pod is Ready
//! when its server answers the pod's readinessProbe (`/v1/sys/health?standbyok=true`).
//!
//! The runbook only patches the StatefulSet and waits; which pod is deleted and recreated, and
//! when, is the StatefulSet controller's doing. What the test asserts it reads from the API
//! server (a pod watch) and from the servers (versions, health, every acknowledged write).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::openbao::{Bao, assert_one_down_at_most, pids_per_node};
use crate::support::Sandbox;
use crate::support::clusters::{Cluster, testbed};
use crate::support::kubernetes::{PodEvent, PodWatch, kubectl, kubectl_json, pods_after};
use crate::support::node_agent::NodeAgent;

const NAMESPACE: &str = "vault-system";
const AGENT_NODE: &str = "agent-1";
const PODS: [&str; 3] = ["openbao-0", "openbao-1", "openbao-2"];

/// The agent's backend: pod `openbao-N` is the testbed's node N+1, started by its `node-N.cmd`
/// on the version the image tag names, probed on that node's address.
fn agent_config(bao: &Bao) -> Value {
    let dir = bao.cluster.path();
    json!({"backends": [{
        "name": "openbao",
        "selector": {"namespace": NAMESPACE, "statefulset": "openbao"},
        "container": "openbao",
        "command": ["bash", "-c",
            "echo {tag} > {dir}/node-{n1}.version; echo $$ > {dir}/node-{n1}.pid; exec bash {dir}/node-{n1}.cmd"],
        "log": "{dir}/node-{n1}.log",
        "probe_url": "{addr}{probe_path}",
        "vars": {"dir": dir},
        "members": bao.addrs.iter().map(|a| json!({"addr": a})).collect::<Vec<_>>(),
    }]})
}

/// The OpenBao Helm chart's StatefulSet in outline: parallel pod management (pods start
/// sealed, so none would be Ready before all exist), the readiness probe of the chart,
/// bound to the agent node.
fn statefulset(version: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "openbao", "namespace": NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "openbao"}},
        "spec": {
            "replicas": 3,
            "serviceName": "openbao-internal",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "openbao"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "openbao"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": AGENT_NODE},
                    "tolerations": [{"key": "runbook.testbed/agent-node", "operator": "Equal",
                                     "value": AGENT_NODE, "effect": "NoSchedule"}],
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "openbao",
                        "image": format!("openbao:{version}"),
                        "ports": [{"name": "http", "containerPort": 8200}],
                        "readinessProbe": {
                            "httpGet": {"path": "/v1/sys/health?standbyok=true", "port": 8200},
                            "periodSeconds": 1, "timeoutSeconds": 2, "failureThreshold": 2,
                        },
                    }],
                },
            },
        },
    })
}

/// Every pod of `names` exists and is Ready.
fn all_ready(pods: &std::collections::BTreeMap<String, PodEvent>) -> bool {
    PODS.iter()
        .all(|n| pods.get(*n).is_some_and(|p| p.ready && !p.deleting))
}

/// What a roll must look like in the pod events from `from` on (read through the API server):
/// the StatefulSet controller replaced every pod exactly once, highest ordinal first, each new
/// pod on `revision` and `image`; each new pod ran unready (its server sealed) before it was
/// Ready; each was Ready before the controller began deleting the next; and at no moment were
/// two of the three pods unavailable (missing, terminating or unready).
fn check_roll(events: &[PodEvent], from: usize, revision: &str, image: &str) -> Result<(), String> {
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
    let order: Vec<&str> = replaced.iter().map(|e| e.name.as_str()).collect();
    if order != ["openbao-2", "openbao-1", "openbao-0"] {
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
        if !mine[..first_ready]
            .iter()
            .any(|e| e.phase == "Running" && !e.ready)
        {
            return Err(format!(
                "the new {} was Ready without first running unready (sealed)",
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
        let pods = pods_after(&events[..=i]);
        let unavailable: Vec<&str> = PODS
            .iter()
            .copied()
            .filter(|n| pods.get(*n).is_none_or(|p| !p.ready || p.deleting))
            .collect();
        if unavailable.len() > 1 {
            return Err(format!("{unavailable:?} unavailable at once (event {i})"));
        }
    }
    Ok(())
}

/// The StatefulSet's current and update revisions, and the whole object.
fn revisions(k8s: &Cluster) -> (String, String, Value) {
    let sts = kubectl_json(k8s, &["get", "statefulset", "openbao", "-n", NAMESPACE]);
    let rev = |k: &str| sts["status"][k].as_str().unwrap_or_default().to_owned();
    (rev("currentRevision"), rev("updateRevision"), sts)
}

#[test]
fn upgrade_and_restart_with_the_kubernetes_driver_on_a_real_control_plane_replace_pods_from_the_top_one_ready_pod_at_a_time()
 {
    // The two testbeds come up together (~25 s each).
    let (bao, k8s) = std::thread::scope(|s| {
        let bao = s.spawn(|| Cluster::openbao("2.6.2"));
        let k8s = s.spawn(|| Cluster::kubernetes(&["--nodes", "1", "--agent-node", AGENT_NODE]));
        (
            Bao::from_cluster(bao.join().expect("openbao testbed")),
            k8s.join().expect("kubernetes testbed"),
        )
    });
    // From here on the pods run the servers: the testbed's processes stop, and the agent
    // starts each again when the StatefulSet controller creates its pod.
    for n in ["1", "2", "3"] {
        testbed("openbao.sh", &["stop", bao.cluster.path(), n]);
    }
    let agent = NodeAgent::start(&k8s, &agent_config(&bao));
    let agent_started = Instant::now();
    let explain = |what: &str, watch: &PodWatch| {
        format!(
            "{what}\n--- pod events ---\n{}\n--- node agent ---\n{}",
            watch.timeline(&watch.events()),
            agent.log()
        )
    };

    kubectl(&k8s, &["create", "namespace", NAMESPACE], None);
    let watch = PodWatch::start(&k8s, NAMESPACE);
    kubectl(
        &k8s,
        &["apply", "-f", "-"],
        Some(&statefulset("2.6.2").to_string()),
    );
    watch.wait_until(
        "the agent to start the three servers",
        Duration::from_secs(120),
        |pods| {
            PODS.iter()
                .all(|n| pods.get(*n).is_some_and(|p| p.phase == "Running"))
        },
    );
    // Restarted OpenBao servers are sealed, so not Ready, until someone unseals them (the
    // chart leaves that to an operator or an auto-unseal sidecar; here the test does it).
    let before_unseal = pods_after(&watch.events());
    assert!(
        PODS.iter().all(|n| !before_unseal[*n].ready),
        "{}",
        explain("a sealed server's pod was Ready", &watch)
    );
    for n in ["1", "2", "3"] {
        testbed("openbao.sh", &["unseal", bao.cluster.path(), n]);
    }
    watch.wait_until(
        "the three pods to be Ready",
        Duration::from_secs(120),
        all_ready,
    );
    let (first_revision, _, _) = revisions(&k8s);
    assert_eq!(bao.versions(), ["2.6.2"; 3]);
    // Ready pods answer as standbys even before a leader is elected; the client needs one.
    testbed("openbao.sh", &["wait-healthy", bao.cluster.path()]);

    // The upgrade, with a client writing throughout and every server's health sampled.
    let upgrade_from = watch.events().len();
    let mark = bao.log_mark();
    let monitor = bao.monitor();
    let writer = bao.writer();
    let sb = Sandbox::new();
    let run = |runbook: &str, extra: &[&str]| {
        let addrs = format!("addrs={}", bao.addrs.join(","));
        let mut args = vec!["run", runbook, "-p", "driver=kubernetes", "-p", &addrs];
        args.extend_from_slice(extra);
        args.push("--yes");
        let at = Instant::now();
        let out = bao
            .runbook(&sb, &args)
            .env("RUNBOOK_KUBECONFIG", k8s.kubeconfig())
            .env_remove("KUBECONFIG")
            .run();
        (out, at.elapsed())
    };
    let (out, took) = run(
        "upgrade-openbao",
        &[
            "-p",
            "to_version=2.7.2",
            "-p",
            "image=openbao",
            "-p",
            "snapshot=false",
        ],
    );
    let acked = writer.finish();
    let samples = monitor.finish();
    assert_eq!(
        out.code(),
        Some(0),
        "{}",
        explain(&out.explain("the upgrade"), &watch)
    );
    watch.wait_until(
        "the three pods to be Ready after the upgrade",
        Duration::from_secs(30),
        all_ready,
    );
    let timeline = || explain(&format!("upgrade took {took:?}"), &watch);

    // The servers run the new version (read from each of them).
    assert_eq!(bao.versions(), ["2.7.2"; 3], "{}", timeline());

    // The StatefulSet controller finished the rollout: one revision, all Ready, the image
    // the runbook set.
    let (current, upgraded, sts) = revisions(&k8s);
    assert_ne!(upgraded, first_revision);
    assert_eq!(current, upgraded, "{sts:#}");
    assert_eq!(sts["status"]["readyReplicas"], 3, "{sts:#}");
    assert_eq!(sts["status"]["updatedReplicas"], 3, "{sts:#}");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "openbao:2.7.2"
    );
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    if let Err(e) = check_roll(&watch.events(), upgrade_from, &upgraded, "openbao:2.7.2") {
        panic!("{e}\n{}", timeline());
    }

    // Seen from the servers: never more than one down, the active node stepped down before
    // its pod was deleted, each server restarted exactly once, no acknowledged write lost.
    assert_one_down_at_most(&samples);
    mark.assert_stepped_down_before_stopping();
    assert_eq!(pids_per_node(&samples), [2, 2, 2], "{}", timeline());
    assert!(
        acked.len() > 20,
        "the client made little progress: {} writes",
        acked.len()
    );
    bao.assert_writes(&acked);

    // A rolling restart on the same version: only the pod template's annotation changes, and
    // the controller replaces the pods again the same way.
    testbed("openbao.sh", &["wait-healthy", bao.cluster.path()]);
    let restart_from = watch.events().len();
    let (out, took) = run("rolling-restart-openbao", &[]);
    assert_eq!(
        out.code(),
        Some(0),
        "{}",
        explain(&out.explain("the rolling restart"), &watch)
    );
    watch.wait_until(
        "the three pods to be Ready after the restart",
        Duration::from_secs(30),
        all_ready,
    );
    let (current, restarted, sts) = revisions(&k8s);
    assert_ne!(restarted, upgraded);
    assert_eq!(current, restarted, "{sts:#}");
    if let Err(e) = check_roll(&watch.events(), restart_from, &restarted, "openbao:2.7.2") {
        panic!(
            "{e}\n{}",
            explain(&format!("rolling restart took {took:?}"), &watch)
        );
    }
    assert_eq!(bao.versions(), ["2.7.2"; 3]);

    // The agent kept its node Ready: long past the node lifecycle controller's grace period
    // (50 s) the node is Ready, not tainted by it, and its Lease is held by it.
    assert!(agent_started.elapsed() > Duration::from_secs(60));
    let node = kubectl_json(&k8s, &["get", "node", AGENT_NODE]);
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
    let lease = kubectl_json(&k8s, &["get", "lease", AGENT_NODE, "-n", "kube-node-lease"]);
    assert_eq!(lease["spec"]["holderIdentity"], AGENT_NODE, "{lease:#}");
    drop(watch);
    drop(agent);
}
