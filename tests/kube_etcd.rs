//! `rolling-restart-etcd` with the `kubernetes` driver on a real control plane
//! (`testbeds/kubernetes.sh`: kube-apiserver, the real StatefulSet controller and scheduler)
//! whose etcd pods are real servers: the node agent (`testbeds/node-agent`) is the kubelet of the
//! node the pods are bound to and starts each pod as the testbed's etcd member for its ordinal
//! (Debian's etcd 3.4, `testbeds/etcd.sh`); a pod is Ready when its member answers the pod's
//! readinessProbe (`/health`, 503 without a quorum).
//!
//! The runbook moves leadership, patches the StatefulSet and waits; which pod is deleted and
//! recreated, and when, is the StatefulSet controller's doing. What the test asserts it reads
//! from the API server (a pod watch) and from the members (health, leadership, pids, their
//! logs, every acknowledged write). The roll is a restart, not an upgrade: etcd upgrades one
//! minor version at a time, and only 3.4 and the control plane's 3.6 are installed.

use std::time::Duration;

use crate::etcd::{Etcd, acknowledged, assert_journaled_handovers, snapshots};
use crate::support::Sandbox;
use crate::support::clusters::Cluster;
use crate::support::node_agent::NodeAgent;
use crate::support::rollout::{RollChecks, Workload, with_kubernetes};

/// An etcd chart's StatefulSet; its pods are the testbed's members (`mN.cmd`, which starts
/// the member with `--initial-cluster-state existing` once it has data).
const ETCD: Workload = Workload {
    name: "etcd",
    namespace: "etcd",
    service: "etcd-headless",
    script: "etcd.sh",
    stem: "m",
    versioned: false,
    port: 2379,
    probe_path: "/health",
    startup_path: None,
};

/// The image the chart runs; the tag is the Debian build the testbed has.
const IMAGE: &str = "quay.io/coreos/etcd:v3.4.23";

/// A restarted member is healthy within a probe period or so, and the other two stay healthy
/// (a quorum) throughout.
const ROLL: RollChecks = RollChecks {
    unready_first: false,
    one_unready_at_most: true,
};

#[test]
fn rolling_restart_with_the_kubernetes_driver_on_a_real_control_plane_moves_the_leader_first_and_replaces_pods_from_the_top()
 {
    let (cluster, k8s) = with_kubernetes(Cluster::etcd);
    ETCD.hand_over(&cluster);
    let etcd = Etcd::from_cluster(cluster);
    let agent = NodeAgent::start(&k8s, &ETCD.agent_config(&etcd.cluster, &etcd.endpoints));
    let sts = ETCD.deploy(&k8s, agent, IMAGE);
    sts.wait_all_ready("the three pods to be Ready", Duration::from_secs(120));
    let first_revision = sts.revision();
    let versions = etcd.versions();
    assert!(
        versions.iter().all(|v| v.starts_with("3.4.")),
        "{versions:?}"
    );

    // The rolling restart, with a client writing throughout and every member sampled.
    let from = sts.mark();
    let mark = etcd.log_mark();
    let monitor = etcd.monitor();
    let writer = etcd.writer();
    let sb = Sandbox::new();
    let took = sts.run(
        sb.cmd(&[
            "run",
            "rolling-restart-etcd",
            "-p",
            "driver=kubernetes",
            "-p",
            &format!("endpoints={}", etcd.endpoints.join(",")),
            "-p",
            &format!("snapshot_dir={}", sb.path().display()),
            "-p",
            &format!("etcdctl={}", etcd.cluster.var("ETCDCTL_BIN")),
        ]),
        "the rolling restart",
    );
    let acked = acknowledged(writer.finish());
    let samples = monitor.finish();

    // The StatefulSet controller replaced every pod, from the top, each Ready before the next
    // went, on the new revision (only the restart annotation changed: the same image).
    sts.assert_rolled(from, &first_revision, IMAGE, ROLL, took);

    // Seen from the members: never more than one down, each restarted exactly once, the
    // leader handed over before its pod was deleted, no acknowledged write lost.
    etcd.assert_rolled(&samples, &mark);
    assert_journaled_handovers(&sb);
    etcd.assert_writes(&acked);
    assert_eq!(etcd.versions(), versions);
    assert_eq!(snapshots(&sb), 1, "the snapshot is saved first");
}
