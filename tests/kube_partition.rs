//! The kubernetes driver's `finish` (issue 13): a run hands a StatefulSet's partition back to
//! what the operator had — after a failed roll as after a good one — instead of leaving every
//! pod held; read back from the API server (the fake one of `fake_kube`: its StatefulSet
//! controller honours partitions and revisions).

use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_kube::{FakeKube, Options};
use crate::support::Sandbox;

fn statefulset(partition: Option<i64>) -> Value {
    let mut sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "etcd", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "serviceName": "etcd",
            "selector": {"matchLabels": {"app": "etcd"}},
            "template": {
                "metadata": {"labels": {"app": "etcd"}},
                "spec": {"containers": [{"name": "etcd", "image": "quay.io/coreos/etcd:v3.4.30"}]},
            },
        },
    });
    if let Some(p) = partition {
        sts["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}});
    }
    sts
}

/// A roll that restarts the highest pod and then fails: `on_failure` runs `finish`.
const FAILING_ROLL: &str = r#"
runbook: roll
steps:
  - id: prepare
    call: { runbook: drivers/kubernetes/etcd, params: { action: prepare, version: v3.4.31, namespace: default } }
  - id: restart
    call: { runbook: drivers/kubernetes/etcd, params: { action: restart, member: 2, namespace: default } }
  - id: broken
    shell: { args: ["false"] }
on_failure:
  - id: release
    call: { runbook: drivers/kubernetes/etcd, params: { action: finish, namespace: default } }
"#;

const PREPARE_ONLY: &str = r"
runbook: prepare-only
steps:
  - id: prepare
    call: { runbook: drivers/kubernetes/etcd, params: { action: prepare, version: v3.4.31, namespace: default } }
";

fn partition(fake: &FakeKube) -> (Value, Value) {
    let sts = fake
        .get("StatefulSet", "default", "etcd")
        .expect("the StatefulSet");
    (
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"].clone(),
        sts["metadata"]["annotations"]["runbook.dev/partition-before"].clone(),
    )
}

fn ready(fake: &FakeKube) {
    fake.wait_until("3 pods Ready", Duration::from_secs(30), |f| {
        f.get("StatefulSet", "default", "etcd")
            .is_some_and(|s| s["status"]["readyReplicas"] == 3)
    });
}

#[test]
fn finish_hands_the_partition_back_after_a_failed_roll() {
    let fake = FakeKube::start(Options::default());
    fake.insert(statefulset(None));
    ready(&fake);
    let sb = Sandbox::new();
    sb.write("roll.yaml", FAILING_ROLL);
    let out = sb
        .cmd(&["run", "roll.yaml"])
        .env("KUBECONFIG", fake.kubeconfig_path())
        .env_remove("RUNBOOK_KUBECONFIG")
        .code(1);
    // Held at 3, lowered to 2 for the restart, then the failure: back to the operator's 0,
    // and the note of it gone.
    assert_eq!(partition(&fake), (json!(0), Value::Null), "{}", out.stdout);
    let records = sb.records(&sb.only_run());
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "step_succeeded" && r["path"] == "on_failure.release"),
        "finish did not run: {}",
        out.stdout
    );
}

#[test]
fn a_partition_held_by_a_run_that_never_finished_is_not_taken_for_the_operators() {
    let fake = FakeKube::start(Options::default());
    fake.insert(statefulset(Some(1)));
    ready(&fake);
    let sb = Sandbox::new();
    sb.write("prepare.yaml", PREPARE_ONLY);
    sb.write("roll.yaml", FAILING_ROLL);
    let kubeconfig = fake.kubeconfig_path().to_path_buf();
    // A run that held every pod and then stopped for good (never finished).
    sb.cmd(&["run", "prepare.yaml"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUNBOOK_KUBECONFIG")
        .ok();
    assert_eq!(partition(&fake), (json!(3), json!("1")));
    // The next run finds the partition held (3) but hands back the operator's 1.
    let out = sb
        .cmd(&["run", "roll.yaml"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("RUNBOOK_KUBECONFIG")
        .code(1);
    assert_eq!(partition(&fake), (json!(1), Value::Null), "{}", out.stdout);
}
