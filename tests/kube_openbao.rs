//! `upgrade-openbao` with the `kubernetes` driver, against the fake Kubernetes API server
//! (no real API server can be had here). The fake's StatefulSet controller drives REAL OpenBao
//! processes: when it recreates pod `openbao-N` on a new image tag, the test stops node N and
//! starts it on that version; a pod is Ready when its node answers the Helm chart's readiness
//! probe (`/v1/sys/health?standbyok=true`). So the runbook's Kubernetes side is proven against
//! the fake, and its OpenBao side against the real servers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_kube::{FakeEvent, FakeKube, Options, PodInfo};
use crate::support::Sandbox;
use crate::support::clusters::{Cluster, http, status_of};

/// The real node behind pod ordinal `ordinal` (node-1 is ordinal 0).
fn node(ordinal: u32) -> u32 {
    ordinal + 1
}

fn running(dir: &std::path::Path, n: u32) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(format!("node-{n}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let zombie = status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'));
    (!zombie).then_some(pid)
}

/// Starts node `n` on `version` unless it already runs that version (the pods the controller
/// creates first are the nodes the testbed started).
fn start_node(dir: &std::path::Path, n: u32, version: &str) {
    let current =
        std::fs::read_to_string(dir.join(format!("node-{n}.version"))).unwrap_or_default();
    if running(dir, n).is_some() && current.trim() == version {
        return;
    }
    let d = dir.display();
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "echo {version} > {d}/node-{n}.version; setsid nohup bash {d}/node-{n}.cmd >> {d}/node-{n}.log 2>&1 < /dev/null & echo $! > {d}/node-{n}.pid"
        ))
        .status()
        .expect("start node");
    assert!(status.success());
}

/// Stops node `n` (SIGTERM, then waits for it to exit).
fn stop_node(dir: &std::path::Path, n: u32) {
    let Some(pid) = running(dir, n) else {
        return;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::SIGTERM,
    );
    crate::support::wait_for("the node to stop", Duration::from_secs(60), || {
        running(dir, n) != Some(pid)
    });
}

#[test]
fn upgrade_with_the_kubernetes_driver_lowers_the_partition_from_the_top_one_ready_pod_at_a_time() {
    let bao = Cluster::openbao("2.6.2");
    let dir = bao.dir.clone();
    let addrs: Vec<String> = (1..=3).map(|i| bao.var(&format!("BAO_ADDR_{i}"))).collect();
    let init = bao.json("init.json");
    let (start_dir, stop_dir, probe_addrs) = (dir.clone(), dir.clone(), addrs.clone());
    let fake = FakeKube::start(Options {
        namespace: "vault-system".into(),
        start_after: Duration::from_millis(50),
        terminate_after: Duration::from_millis(50),
        on_pod_started: Some(Arc::new(move |pod: &PodInfo| {
            let ordinal = pod.ordinal.expect("a StatefulSet pod");
            start_node(&start_dir, node(ordinal), pod.image_tag());
        })),
        on_pod_stopped: Some(Arc::new(move |pod: &PodInfo| {
            stop_node(&stop_dir, node(pod.ordinal.expect("a StatefulSet pod")));
        })),
        readiness: Some(Arc::new(move |pod: &PodInfo| {
            let agent = http();
            let addr = &probe_addrs[pod.ordinal.expect("ordinal") as usize];
            status_of(&agent, &format!("{addr}/v1/sys/health?standbyok=true")) == Some(200)
        })),
        ..Options::default()
    });
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "openbao", "namespace": "vault-system"},
        "spec": {
            "replicas": 3,
            "serviceName": "openbao-internal",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "openbao"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "openbao"}},
                "spec": {"containers": [{"name": "openbao", "image": "quay.io/openbao/openbao:2.6.2"}]},
            },
        },
    }));
    fake.wait_until("the pods to be Ready", Duration::from_secs(60), |f| {
        f.get("StatefulSet", "vault-system", "openbao")
            .is_some_and(|s| s["status"]["readyReplicas"] == 3)
    });

    let sb = Sandbox::new();
    let out = sb
        .cmd(&[
            "run",
            "upgrade-openbao",
            "-p",
            "to_version=2.7.2",
            "-p",
            "driver=kubernetes",
            "-p",
            &format!("addrs={}", addrs.join(",")),
            "-p",
            "snapshot=false",
            "--yes",
        ])
        .env("RUNBOOK_KUBECONFIG", fake.kubeconfig_path())
        .env_remove("KUBECONFIG")
        .env("BAO_TOKEN", init["root_token"].as_str().expect("token"))
        .env(
            "BAO_UNSEAL_KEY",
            init["unseal_keys_b64"][0].as_str().expect("key"),
        )
        .ok();

    // The servers run the new version (read from them).
    let agent = http();
    for a in &addrs {
        let v: Value = agent
            .get(&format!("{a}/v1/sys/seal-status"))
            .call()
            .expect("seal-status")
            .into_json()
            .expect("json");
        assert_eq!(
            v["version"],
            "2.7.2",
            "{}",
            out.explain("after the upgrade")
        );
    }
    let sts = fake
        .get("StatefulSet", "vault-system", "openbao")
        .expect("sts");
    assert_eq!(
        sts["spec"]["template"]["spec"]["containers"][0]["image"],
        "quay.io/openbao/openbao:2.7.2"
    );
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
    assert_eq!(sts["status"]["readyReplicas"], 3);
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );

    // The partition went down from the highest ordinal, and each recreated pod was Ready
    // before the partition moved past it.
    let timeline = fake.timeline();
    let partitions: Vec<(usize, i64)> = timeline
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match &s.event {
            FakeEvent::PartitionChanged { sts, partition } if sts == "openbao" => {
                Some((i, *partition))
            }
            _ => None,
        })
        .collect();
    let values: Vec<i64> = partitions.iter().map(|(_, p)| *p).collect();
    let hold = values
        .iter()
        .position(|p| *p == 3)
        .expect("the driver holds every pod first (partition = replicas)");
    assert_eq!(&values[hold..], [3, 2, 1, 0], "partition order: {values:?}");
    let at = |partition: i64| {
        partitions[hold..]
            .iter()
            .find(|(_, p)| *p == partition)
            .expect("partition")
            .0
    };
    for (moved_to, pod) in [(1, "openbao-2"), (0, "openbao-1")] {
        let lowered_to_pod = at(moved_to + 1);
        let moved_on = at(moved_to);
        let between = &timeline[lowered_to_pod..moved_on];
        let created = between
            .iter()
            .position(|s| matches!(&s.event, FakeEvent::PodCreated { pod: p, .. } if p == pod))
            .unwrap_or_else(|| {
                panic!("{pod} was not recreated before the partition moved to {moved_to}")
            });
        assert!(
            between[created..]
                .iter()
                .any(|s| matches!(&s.event, FakeEvent::PodReady { pod: p } if p == pod)),
            "{pod} was not Ready before the partition moved to {moved_to}"
        );
    }
    // Every pod was recreated exactly once by the upgrade.
    for pod in ["openbao-0", "openbao-1", "openbao-2"] {
        let recreated = timeline[partitions[hold].0..]
            .iter()
            .filter(|s| matches!(&s.event, FakeEvent::PodCreated { pod: p, .. } if p == pod))
            .count();
        assert_eq!(recreated, 1, "{pod} recreated {recreated} times");
    }
}
