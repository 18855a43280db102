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

use std::time::{Duration, Instant};

use crate::openbao::{Bao, assert_one_down_at_most, pids_per_node};
use crate::support::Sandbox;
use crate::support::clusters::{Cluster, testbed};
use crate::support::kubernetes::pods_after;
use crate::support::node_agent::NodeAgent;
use crate::support::rollout::{RollChecks, Workload, assert_node_kept_ready, with_kubernetes};

/// The OpenBao chart's StatefulSet; its pods are the testbed's nodes (`node-N.cmd` picks the
/// binary from `node-N.version`), Ready when `/v1/sys/health?standbyok=true` says unsealed.
const OPENBAO: Workload = Workload {
    name: "openbao",
    namespace: "vault-system",
    service: "openbao-internal",
    script: "openbao.sh",
    stem: "node-",
    versioned: true,
    port: 8200,
    probe_path: "/v1/sys/health?standbyok=true",
    startup_path: None,
};

/// A new pod runs sealed, so unready, until the runbook unseals it; the other two stay Ready.
const SEALED_FIRST: RollChecks = RollChecks {
    unready_first: true,
    one_unready_at_most: true,
};

#[test]
fn upgrade_and_restart_with_the_kubernetes_driver_on_a_real_control_plane_replace_pods_from_the_top_one_ready_pod_at_a_time()
 {
    // The two testbeds come up together (~25 s each).
    let (bao, k8s) = with_kubernetes(|| Bao::from_cluster(Cluster::openbao("2.6.2")));
    OPENBAO.hand_over(&bao.cluster);
    let agent = NodeAgent::start(&k8s, &OPENBAO.agent_config(&bao.cluster, &bao.addrs));
    let agent_started = Instant::now();
    let sts = OPENBAO.deploy(&k8s, agent, "openbao:2.6.2");
    // Restarted OpenBao servers are sealed, so not Ready, until someone unseals them (the
    // chart leaves that to an operator or an auto-unseal sidecar; here the test does it).
    let before_unseal = pods_after(&sts.watch.events());
    assert!(
        OPENBAO.pods().iter().all(|n| !before_unseal[n].ready),
        "{}",
        sts.explain("a sealed server's pod was Ready")
    );
    for n in ["1", "2", "3"] {
        testbed("openbao.sh", &["unseal", bao.cluster.path(), n]);
    }
    sts.wait_all_ready("the three pods to be Ready", Duration::from_secs(120));
    let first_revision = sts.revision();
    assert_eq!(bao.versions(), ["2.6.2"; 3]);
    // Ready pods answer as standbys even before a leader is elected; the client needs one.
    testbed("openbao.sh", &["wait-healthy", bao.cluster.path()]);

    // The upgrade, with a client writing throughout and every server's health sampled.
    let upgrade_from = sts.mark();
    let mark = bao.log_mark();
    let monitor = bao.monitor();
    let writer = bao.writer();
    let sb = Sandbox::new();
    let run = |runbook: &str, extra: &[&str]| {
        let addrs = format!("addrs={}", bao.addrs.join(","));
        let mut args = vec!["run", runbook, "-p", "driver=kubernetes", "-p", &addrs];
        args.extend_from_slice(extra);
        args.push("--yes");
        sts.run(bao.runbook(&sb, &args), runbook)
    };
    let took = run(
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

    // The servers run the new version (read from each of them).
    assert_eq!(bao.versions(), ["2.7.2"; 3]);

    // The StatefulSet controller finished the rollout: one revision, all Ready, the image
    // the runbook set; the pods were replaced from the top, each new one unready (sealed)
    // until unsealed.
    let upgraded = sts.assert_rolled(
        upgrade_from,
        &first_revision,
        "openbao:2.7.2",
        SEALED_FIRST,
        took,
    );

    // Seen from the servers: never more than one down, the active node stepped down before
    // its pod was deleted, each server restarted exactly once, no acknowledged write lost.
    assert_one_down_at_most(&samples);
    mark.assert_stepped_down_before_stopping();
    assert_eq!(pids_per_node(&samples), [2, 2, 2]);
    assert!(
        acked.len() > 20,
        "the client made little progress: {} writes",
        acked.len()
    );
    bao.assert_writes(&acked);

    // A rolling restart on the same version: only the pod template's annotation changes, and
    // the controller replaces the pods again the same way.
    testbed("openbao.sh", &["wait-healthy", bao.cluster.path()]);
    let restart_from = sts.mark();
    let took = run("rolling-restart-openbao", &[]);
    sts.assert_rolled(restart_from, &upgraded, "openbao:2.7.2", SEALED_FIRST, took);
    assert_eq!(bao.versions(), ["2.7.2"; 3]);

    assert_node_kept_ready(&k8s, agent_started);
}
