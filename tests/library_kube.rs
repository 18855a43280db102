//! The control-plane runbooks of the library (`restart-service`, `restart-namespace`,
//! `scale-service`, `spot-upgrade-chart`) on a real Kubernetes control plane
//! (`testbeds/kubernetes.sh`: etcd, kube-apiserver, the real controller-manager and scheduler,
//! kwok nodes that play the kubelet) with the real helm. What each test claims it reads from the
//! API server with kubectl and from the releases with helm, never from the runbook's output.
//!
//! The tests of this file share one control plane, each in its own namespace; it is destroyed
//! when the last of them is done with it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::openbao::Bao;
use crate::rotation::after_resume;
use crate::support::clusters::Cluster;
use crate::support::kubernetes::{PodEvent, PodWatch, kubectl, kubectl_json, pods_after};
use crate::support::{Cmd, Sandbox, wait_for};

/// The control plane of this file's tests, created by the first that needs it.
fn cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::kubernetes(&["--nodes", "2"]));
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// `runbook ARGS` in `sb` against `k8s`, with the testbed's helm.
fn runbook_cmd(sb: &Sandbox, k8s: &Cluster, args: &[&str]) -> Cmd {
    sb.cmd(args)
        .env("RUNBOOK_HELM", k8s.var("HELM"))
        .env("RUNBOOK_KUBECONFIG", k8s.kubeconfig())
        .env_remove("KUBECONFIG")
}

/// `runbook run FILE FLAGS -p PAIR…` of the bundled runbook `name`.
fn run_runbook(sb: &Sandbox, k8s: &Cluster, name: &str, flags: &[&str], pairs: &[String]) -> Cmd {
    let mut args = vec!["run".to_owned(), name.to_owned()];
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    args.extend(params(pairs));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    runbook_cmd(sb, k8s, &args)
}

/// `-p` for each `name=value`.
fn params(pairs: &[String]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|p| ["-p".to_owned(), p.clone()])
        .collect()
}

fn apply(k8s: &Cluster, ns: &str, object: &Value) {
    kubectl(
        k8s,
        &["apply", "-n", ns, "-f", "-"],
        Some(&object.to_string()),
    );
}

fn namespace(k8s: &Cluster, ns: &str) {
    kubectl(k8s, &["create", "namespace", ns], None);
}

/// A Deployment of `replicas` pods on the kwok nodes; `broken` ones select a node nobody has,
/// so their pods stay Pending and their rollout hits its 5-second progress deadline.
fn deployment(name: &str, replicas: u32, broken: bool) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": "registry.local/nvcf-api:1.0.0"}]}}},
    });
    if broken {
        d["spec"]["progressDeadlineSeconds"] = json!(5);
        d["spec"]["template"]["spec"]["nodeSelector"] = json!({"runbook.test/nowhere": "true"});
    }
    d
}

/// A 3-pod `StatefulSet` with `labels` (`OrderedReady`, as the charts have it).
fn statefulset(name: &str, labels: &Value) -> Value {
    let mut all = json!({"app": name});
    for (k, v) in labels.as_object().expect("a map") {
        all[k] = v.clone();
    }
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": all},
        "spec": {"replicas": 3, "serviceName": name, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": name, "image": format!("registry.local/{name}:1.0.0")}]}}},
    })
}

fn get(k8s: &Cluster, kind: &str, name: &str, ns: &str) -> Value {
    kubectl_json(k8s, &["get", kind, name, "-n", ns])
}

/// Waits until a Deployment or StatefulSet has all its replicas updated and Ready.
fn wait_rolled_out(k8s: &Cluster, kind: &str, name: &str, ns: &str) {
    kubectl(
        k8s,
        &["rollout", "status", kind, name, "-n", ns, "--timeout=120s"],
        None,
    );
}

/// The `kubectl rollout restart` annotation of a workload's pod template.
fn restarted_at(k8s: &Cluster, name: &str, ns: &str) -> Option<String> {
    get(k8s, "deployment", name, ns)["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .map(str::to_owned)
}

/// The `ReplicaSets` of a Deployment: (`pod-template-hash`, `spec.replicas`, `readyReplicas`).
fn replica_sets(k8s: &Cluster, name: &str, ns: &str) -> Vec<(String, u64, u64)> {
    let list = kubectl_json(
        k8s,
        &["get", "replicasets", "-n", ns, "-l", &format!("app={name}")],
    );
    let mut sets: Vec<(String, u64, u64)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["labels"]["pod-template-hash"]
                    .as_str()
                    .expect("hash")
                    .to_owned(),
                rs["spec"]["replicas"].as_u64().expect("replicas"),
                rs["status"]["readyReplicas"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    sets.sort();
    sets
}

#[test]
fn restart_service_rolls_a_deployment_and_a_statefulset_from_the_top_one_ready_pod_at_a_time() {
    let k8s = cluster();
    let ns = "lib-restart";
    namespace(&k8s, ns);
    apply(&k8s, ns, &deployment("api", 2, false));
    apply(&k8s, ns, &statefulset("queue", &json!({})));
    wait_rolled_out(&k8s, "deployment", "api", ns);
    wait_rolled_out(&k8s, "statefulset", "queue", ns);
    let sb = Sandbox::new();

    // A Deployment: a new ReplicaSet with every replica Ready, the old one scaled to zero.
    let before = replica_sets(&k8s, "api", ns);
    assert_eq!(before.len(), 1, "{before:?}");
    let started = Instant::now();
    run_runbook(
        &sb,
        &k8s,
        "restart-service",
        &["--yes"],
        &[format!("namespace={ns}"), "name=api".into()],
    )
    .ok();
    assert!(restarted_at(&k8s, "api", ns).is_some());
    let after = replica_sets(&k8s, "api", ns);
    assert_eq!(after.len(), 2, "{after:?}");
    let old = &before[0].0;
    for (hash, replicas, ready) in &after {
        if hash == old {
            assert_eq!((*replicas, *ready), (0, 0), "the old ReplicaSet: {after:?}");
        } else {
            assert_eq!((*replicas, *ready), (2, 2), "the new ReplicaSet: {after:?}");
        }
    }
    let d = get(&k8s, "deployment", "api", ns);
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d:#}");
    assert_eq!(d["status"]["availableReplicas"], 2, "{d:#}");
    eprintln!("deployment restarted in {:?}", started.elapsed());

    // A StatefulSet: its old pods replaced 2, 1, 0, each once, each new pod Ready before the next
    // old one is deleted; the partition back at 0.
    let watch = PodWatch::start(&k8s, ns);
    watch.wait_until(
        "the watch to list the pods",
        Duration::from_secs(30),
        |now| (0..3).all(|n| now.contains_key(&format!("queue-{n}"))),
    );
    let first = watch.events();
    let old_uids: BTreeMap<String, String> = pods_after(&first)
        .into_iter()
        .filter(|(n, _)| n.starts_with("queue-"))
        .map(|(n, p)| (n, p.uid))
        .collect();
    run_runbook(
        &sb,
        &k8s,
        "restart-service",
        &["--yes"],
        &[
            format!("namespace={ns}"),
            "name=queue".into(),
            "kind=StatefulSet".into(),
            "timeout=2m".into(),
        ],
    )
    .ok();
    let events = watch.events();
    assert_statefulset_rolled(&events[first.len()..], &old_uids, &watch, || {
        roll_context(&k8s, ns)
    });
    let sts = get(&k8s, "statefulset", "queue", ns);
    assert_eq!(
        sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0,
        "{sts:#}"
    );
    assert_eq!(
        sts["status"]["currentRevision"], sts["status"]["updateRevision"],
        "{sts:#}"
    );
    assert_eq!(sts["status"]["readyReplicas"], 3, "{sts:#}");
}

/// What the cluster says of a roll in namespace `ns`: its Events (who created and deleted the
/// pods, and why), the StatefulSets' revisions, and the controller-manager's log lines about it.
fn roll_context(k8s: &Cluster, ns: &str) -> String {
    let events = kubectl(
        k8s,
        &[
            "get",
            "events",
            "-n",
            ns,
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "custom-columns=AT:.metadata.creationTimestamp,LAST:.lastTimestamp,COUNT:.count,REPORTER:.reportingComponent,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message",
        ],
        None,
    );
    let revisions = kubectl(
        k8s,
        &[
            "get",
            "controllerrevisions",
            "-n",
            ns,
            "-o",
            "custom-columns=NAME:.metadata.name,REVISION:.revision,CREATED:.metadata.creationTimestamp",
        ],
        None,
    );
    let log =
        std::fs::read_to_string(k8s.dir.join("kube-controller-manager.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(ns)).collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("events:\n{events}\nrevisions:\n{revisions}\ncontroller-manager:\n{tail}")
}

/// From the pod events of a roll: each old pod deleted once, highest ordinal first, none
/// deleted before the pod replaced just before it was Ready again, and no new pod replaced
/// once it was Ready.
fn assert_statefulset_rolled(
    events: &[PodEvent],
    old_uids: &BTreeMap<String, String>,
    watch: &PodWatch,
    context: impl Fn() -> String,
) {
    let timeline = watch.timeline(events);
    // The order the old pods went away in (their first deletion mark, or their DELETED).
    let mut gone: Vec<String> = Vec::new();
    for e in events {
        let old = old_uids.get(&e.name).is_some_and(|u| *u == e.uid);
        if old && (e.deleting || e.kind == "DELETED") && !gone.contains(&e.name) {
            gone.push(e.name.clone());
        }
    }
    assert_eq!(gone, ["queue-2", "queue-1", "queue-0"], "{timeline}");
    // Before queue-N-1's old pod is marked for deletion, queue-N's new pod is Ready.
    for (next, prev) in [("queue-1", "queue-2"), ("queue-0", "queue-1")] {
        let deleted_at = events
            .iter()
            .position(|e| {
                e.name == next && old_uids[next] == e.uid && (e.deleting || e.kind == "DELETED")
            })
            .expect("deleted");
        let ready_before = events[..deleted_at]
            .iter()
            .any(|e| e.name == prev && old_uids[prev] != e.uid && e.ready);
        assert!(
            ready_before,
            "{next} went before the new {prev} was Ready:\n{timeline}"
        );
    }
    // Each ordinal ends with one new pod, Ready; a new pod that went away was never Ready. The
    // real StatefulSet controller may delete a pod it has just created at the update revision,
    // still Pending, and create it again (seen twice in CI under load: its Events say
    // "SuccessfulDelete" by statefulset-controller milliseconds after the create, beside its log's
    // "read version … is not as new as written version" requeue — a pass on a stale read). The
    // runbook deletes no pod; that costs no availability, as the pod never ran. A pod that was
    // Ready and then deleted would be a second disruption, and fails here.
    let now = pods_after(events);
    for n in 0..3 {
        let name = format!("queue-{n}");
        let pod = now
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing:\n{timeline}"));
        assert_ne!(pod.uid, old_uids[&name], "{name} not replaced:\n{timeline}");
        assert!(pod.ready, "{name} not Ready:\n{timeline}");
        let replaced_after_ready: BTreeSet<&str> = events
            .iter()
            .filter(|e| e.name == name && e.uid != old_uids[&name] && e.uid != pod.uid && e.ready)
            .map(|e| e.uid.as_str())
            .collect();
        assert!(
            replaced_after_ready.is_empty(),
            "{name}: a new pod was Ready and then replaced ({replaced_after_ready:?}):\n{timeline}\n{}",
            context()
        );
    }
}

#[test]
fn restart_namespace_restarts_every_deployment_in_waves_and_stops_past_the_failure_threshold() {
    let k8s = cluster();
    let sb = Sandbox::new();

    // Every Deployment restarted: each has the annotation and a new ReplicaSet, all Ready.
    let ns = "lib-restart-all";
    namespace(&k8s, ns);
    let names = ["alpha", "bravo", "charlie", "delta"];
    for n in names {
        apply(&k8s, ns, &deployment(n, 1, false));
    }
    for n in names {
        wait_rolled_out(&k8s, "deployment", n, ns);
    }
    run_runbook(
        &sb,
        &k8s,
        "restart-namespace",
        &["--yes"],
        &[format!("namespace={ns}"), "timeout=2m".into()],
    )
    .ok();
    for n in names {
        assert!(restarted_at(&k8s, n, ns).is_some(), "{n} not restarted");
        let sets = replica_sets(&k8s, n, ns);
        assert_eq!(sets.len(), 2, "{n}: {sets:?}");
        assert!(
            sets.contains(&(
                sets.iter()
                    .find(|s| s.1 == 1)
                    .expect("the new set")
                    .0
                    .clone(),
                1,
                1
            )),
            "{n}: {sets:?}"
        );
    }

    // One Deployment cannot become ready: its wave finishes, the loop fails, and the
    // Deployments of the next wave are never restarted.
    let ns = "lib-restart-threshold";
    namespace(&k8s, ns);
    let good = ["a-api", "b-sis", "d-ess", "e-invocation"];
    for n in good {
        apply(&k8s, ns, &deployment(n, 1, false));
    }
    apply(&k8s, ns, &deployment("c-broken", 1, true));
    for n in good {
        wait_rolled_out(&k8s, "deployment", n, ns);
    }
    let out = run_runbook(
        &sb,
        &k8s,
        "restart-namespace",
        &["--yes"],
        &[
            format!("namespace={ns}"),
            "timeout=1m".into(),
            // Waves of two, no failure tolerated (the parameters, not the defaults).
            "batch=2".into(),
            "max_failures=0".into(),
        ],
    )
    .code(1);
    assert!(
        out.stdout.contains("c-broken") || out.stderr.contains("c-broken"),
        "{}",
        out.explain("the failed Deployment named")
    );
    // The first two waves (a, b; c, d) were restarted; the third (e) was not.
    for n in ["a-api", "b-sis", "c-broken", "d-ess"] {
        assert!(restarted_at(&k8s, n, ns).is_some(), "{n} not restarted");
    }
    {
        let n = "e-invocation";
        assert_eq!(
            restarted_at(&k8s, n, ns),
            None,
            "{n} restarted past the threshold"
        );
        assert_eq!(
            replica_sets(&k8s, n, ns).len(),
            1,
            "{n} has a new ReplicaSet"
        );
    }
    for n in ["a-api", "b-sis", "d-ess"] {
        let d = get(&k8s, "deployment", n, ns);
        assert_eq!(d["status"]["updatedReplicas"], 1, "{n}: {d:#}");
        assert_eq!(d["status"]["availableReplicas"], 1, "{n}: {d:#}");
    }
}

#[test]
fn scale_service_comes_back_to_the_journaled_count_after_a_kill_and_refuses_infrastructure() {
    let k8s = cluster();
    let ns = "lib-scale";
    namespace(&k8s, ns);
    apply(&k8s, ns, &deployment("worker", 3, false));
    apply(
        &k8s,
        ns,
        &statefulset("cassandra", &json!({"app.kubernetes.io/name": "cassandra"})),
    );
    wait_rolled_out(&k8s, "deployment", "worker", ns);
    wait_rolled_out(&k8s, "statefulset", "cassandra", ns);
    let replicas = |kind: &str, name: &str| {
        let o = get(&k8s, kind, name, ns);
        (
            o["spec"]["replicas"].as_u64().expect("replicas"),
            o["status"]["readyReplicas"].as_u64().unwrap_or(0),
        )
    };

    // An infrastructure StatefulSet is refused, nothing scaled.
    let sb = Sandbox::new();
    let out = run_runbook(
        &sb,
        &k8s,
        "scale-service",
        &["--yes"],
        &[
            format!("namespace={ns}"),
            "name=cassandra".into(),
            "kind=StatefulSet".into(),
        ],
    )
    .code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("is an infrastructure StatefulSet (cassandra)")
            && said.contains("acknowledge_outage=true"),
        "{}",
        out.explain("the refusal")
    );
    assert_eq!(replicas("statefulset", "cassandra"), (3, 3));

    // Acknowledged: down to 0, held at the gate (the pods gone), approved, back to 3.
    let sb = Sandbox::new();
    run_runbook(
        &sb,
        &k8s,
        "scale-service",
        &[],
        &[
            format!("namespace={ns}"),
            "name=cassandra".into(),
            "kind=StatefulSet".into(),
            "acknowledge_outage=true".into(),
            "timeout=2m".into(),
        ],
    )
    .code(3);
    assert_eq!(replicas("statefulset", "cassandra"), (0, 0));
    let pods = kubectl_json(&k8s, &["get", "pods", "-n", ns, "-l", "app=cassandra"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(0), "{pods:#}");
    let run = sb.only_run();
    runbook_cmd(&sb, &k8s, &["approve", &run]).ok();
    assert_eq!(replicas("statefulset", "cassandra"), (3, 3));

    // Killed once the scale-down is done: the resume scales back to the 3 journaled before,
    // not to the 0 the Deployment has by then.
    let pairs = [
        format!("namespace={ns}"),
        "name=worker".into(),
        "timeout=2m".into(),
    ];
    let (sb, run) = (1..=20)
        .find_map(|n| {
            let sb = Sandbox::new();
            let out = run_runbook(&sb, &k8s, "scale-service", &["--yes"], &pairs)
                .env("RUNBOOK_TEST_KILL_AFTER_COMMIT", n.to_string())
                .run();
            let run = sb.only_run();
            let last = sb.records(&run).last().cloned().expect("a record");
            if out.signal() == Some(9) && last["event"] == "step_started" && last["path"] == "gone"
            {
                return Some((sb, run));
            }
            // Not there yet: put the Deployment back as it was for the next try.
            kubectl(
                &k8s,
                &["scale", "deployment", "worker", "-n", ns, "--replicas=3"],
                None,
            );
            wait_rolled_out(&k8s, "deployment", "worker", ns);
            None
        })
        .expect("no kill left the run right after its scale-down");
    assert_eq!(
        replicas("deployment", "worker").0,
        0,
        "scaled down before the kill"
    );
    runbook_cmd(&sb, &k8s, &["resume", &run, "--yes"]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    assert_eq!(replicas("deployment", "worker"), (3, 3));
}

/// A chart of a Deployment-based service (the users' NVCF API chart in outline), version
/// `version`; with `broken` its pods select a node nobody has and never become Ready.
fn api_chart(dir: &Path, version: &str, app_version: &str, broken: bool) -> String {
    let root = dir.join(format!("api-{version}"));
    std::fs::create_dir_all(root.join("templates")).expect("mkdir");
    std::fs::write(
        root.join("Chart.yaml"),
        format!("apiVersion: v2\nname: api\ntype: application\nversion: {version}\nappVersion: \"{app_version}\"\n"),
    )
    .expect("Chart.yaml");
    std::fs::write(
        root.join("values.yaml"),
        "replicaCount: 1\ngreeting: default\nimage:\n  repository: registry.local/nvcf-api\n",
    )
    .expect("values.yaml");
    let node_selector = if broken {
        "      nodeSelector:\n        runbook.test/nowhere: \"true\"\n"
    } else {
        ""
    };
    std::fs::write(
        root.join("templates/deployment.yaml"),
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Release.Name }}}}
  labels: {{ app: {{{{ .Release.Name }}}} }}
spec:
  replicas: {{{{ .Values.replicaCount }}}}
  selector: {{ matchLabels: {{ app: {{{{ .Release.Name }}}} }} }}
  template:
    metadata:
      labels: {{ app: {{{{ .Release.Name }}}} }}
      annotations: {{ greeting: {{{{ .Values.greeting | quote }}}} }}
    spec:
{node_selector}      containers:
        - name: api
          image: "{{{{ .Values.image.repository }}}}:{{{{ .Chart.AppVersion }}}}"
"#
        ),
    )
    .expect("deployment.yaml");
    root.to_str().expect("utf-8").to_owned()
}

/// `helm ARGS -o json` against the testbed.
fn helm_json(k8s: &Cluster, args: &[&str]) -> Value {
    let out = Command::new(k8s.var("HELM"))
        .args(args)
        .args(["-o", "json", "--kubeconfig"])
        .arg(k8s.kubeconfig())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("helm printed JSON")
}

/// `helm history`: (revision, status, chart, description) of each revision.
fn history(k8s: &Cluster, release: &str, ns: &str) -> Vec<(u64, String, String, String)> {
    helm_json(k8s, &["history", release, "-n", ns])
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (
                r["revision"].as_u64().expect("revision"),
                s("status"),
                s("chart"),
                s("description"),
            )
        })
        .collect()
}

#[test]
fn spot_upgrade_chart_upgrades_with_the_values_rolls_back_a_failure_and_never_upgrades_twice() {
    let k8s = cluster();
    let (ns, release) = ("lib-spot", "api");
    let sb = Sandbox::new();
    let charts = sb.path().join("charts");
    let v1 = api_chart(&charts, "1.0.0", "2.0.0", false);
    let v2 = api_chart(&charts, "1.1.0", "2.1.0", false);
    let v3 = api_chart(&charts, "1.2.0", "2.2.0", true);
    let v4 = api_chart(&charts, "1.3.0", "2.3.0", false);
    // The operator's install, with their values.
    let values = sb.write("api-values.yaml", "replicaCount: 2\ngreeting: hello\n");
    let install = Command::new(k8s.var("HELM"))
        .args([
            "upgrade",
            "--install",
            release,
            &v1,
            "-n",
            ns,
            "--create-namespace",
            "--wait",
            "-f",
        ])
        .arg(&values)
        .arg("--kubeconfig")
        .arg(k8s.kubeconfig())
        .output()
        .expect("helm install");
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let operator_values = json!({"replicaCount": 2, "greeting": "hello"});
    let backups = sb.path().join("backups");
    let run = |chart: &str, version: &str, extra: &[String], code: i32| {
        let mut p = vec![
            format!("release={release}"),
            format!("namespace={ns}"),
            format!("chart={chart}"),
            format!("version={version}"),
            format!("backup_dir={}", backups.display()),
            "timeout=20s".into(),
            "health_timeout=1m".into(),
        ];
        p.extend_from_slice(extra);
        run_runbook(&sb, &k8s, "spot-upgrade-chart", &["--yes"], &p).code(code)
    };

    // A successful upgrade: revision 2 on chart 1.1.0, with the operator's values kept (the
    // backup was the values file), backed up from revision 1.
    run(&v2, "1.1.0", &[], 0);
    let listed = helm_json(&k8s, &["list", "-n", ns, "--filter", "^api$"]);
    let r = &listed[0];
    assert_eq!(
        (&r["revision"], &r["status"], &r["chart"], &r["app_version"]),
        (
            &json!("2"),
            &json!("deployed"),
            &json!("api-1.1.0"),
            &json!("2.1.0")
        ),
        "{listed:#}"
    );
    assert_eq!(
        helm_json(&k8s, &["get", "values", release, "-n", ns]),
        operator_values
    );
    let backup = backups.join(format!("{release}-{ns}-r1-values.yaml"));
    let text = std::fs::read_to_string(&backup).expect("the values backup");
    assert!(
        text.contains("greeting: hello") && text.contains("replicaCount: 2"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&backup)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let d = get(&k8s, "deployment", release, ns);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/nvcf-api:2.1.0"
    );
    assert_eq!(d["status"]["readyReplicas"], 2, "{d:#}");

    // A failing upgrade (its pods never become Ready) with a value changed alongside: helm's
    // wait fails, and the release is rolled back to revision 2 with the backed-up values.
    let out = run(&v3, "1.2.0", &[r#"set={"greeting":"changed"}"#.into()], 1);
    assert!(
        out.stdout
            .contains("UPGRADE FAILED: context deadline exceeded"),
        "{}",
        out.explain("helm's error")
    );
    // The run's log says the rollback reverted the values changed alongside.
    let records = sb.records(&sb.newest_run());
    let note = records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == "upgrade.on_failure.reverted")
        .expect("the rollback's note");
    let note = note["output"].as_str().expect("text");
    assert!(
        note.starts_with("rolled back to revision 2 (chart api-1.1.0, app 2.1.0)")
            && note.contains(r#"values changed alongside this upgrade (set: {"greeting":"changed"}) are reverted too"#),
        "{note}"
    );
    let h = history(&k8s, release, ns);
    let shape: Vec<(u64, &str, &str)> = h
        .iter()
        .map(|(r, s, c, _)| (*r, s.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        shape,
        [
            (1, "superseded", "api-1.0.0"),
            (2, "superseded", "api-1.1.0"),
            (3, "failed", "api-1.2.0"),
            (4, "deployed", "api-1.1.0"),
        ],
        "{h:?}"
    );
    assert_eq!(h[3].3, "Rollback to 2");
    assert_eq!(
        helm_json(
            &k8s,
            &["get", "values", release, "-n", ns, "--revision", "3"]
        ),
        json!({"replicaCount": 2, "greeting": "changed"})
    );
    assert_eq!(
        helm_json(&k8s, &["get", "values", release, "-n", ns]),
        operator_values
    );
    let d = get(&k8s, "deployment", release, ns);
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["greeting"],
        "hello"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/nvcf-api:2.1.0"
    );

    // SIGKILL right after helm finished the upgrade, before the run journaled it (a helm that
    // lingers after its upgrade, as a slow one would): the resume finds revision 5 deployed on
    // 1.3.0 and does not upgrade again.
    let marker = sb.path().join("upgraded");
    let slow_helm = sb.write(
        "slow-helm",
        &format!(
            "#!/bin/sh\n\"{}\" \"$@\"\nrc=$?\nif [ \"$1\" = upgrade ] && [ $rc = 0 ]; then touch \"{}\"; sleep 60; fi\nexit $rc\n",
            k8s.var("HELM"),
            marker.display()
        ),
    );
    std::fs::set_permissions(&slow_helm, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let pairs = [
        format!("release={release}"),
        format!("namespace={ns}"),
        format!("chart={v4}"),
        "version=1.3.0".into(),
        format!("backup_dir={}", backups.display()),
        "timeout=1m".into(),
    ];
    let mut child = run_runbook(&sb, &k8s, "spot-upgrade-chart", &["--yes"], &pairs)
        .env("RUNBOOK_HELM", &slow_helm)
        .spawn();
    wait_for(
        "helm to finish the upgrade",
        Duration::from_secs(120),
        || marker.exists(),
    );
    child.kill().expect("SIGKILL runbook");
    let _ = child.wait();
    let killed = sb.newest_run();
    assert_eq!(history(&k8s, release, ns).len(), 5);
    runbook_cmd(&sb, &k8s, &["resume", &killed, "--yes"]).ok();
    assert_eq!(sb.status(&killed)["state"], "succeeded");
    assert_eq!(
        after_resume(&sb.records(&killed), "upgrade"),
        ["step_skipped (check)"]
    );
    let h = history(&k8s, release, ns);
    assert_eq!(h.len(), 5, "upgraded twice: {h:?}");
    assert_eq!(
        (h[4].1.as_str(), h[4].2.as_str()),
        ("deployed", "api-1.3.0"),
        "{h:?}"
    );
    assert_eq!(
        helm_json(&k8s, &["get", "values", release, "-n", ns]),
        operator_values
    );
}

/// A kwok `Exec` object: `exec` in pod `pod` runs a local process in `dir` with `BAO_ADDR` set
/// to `addr`, so the pod's `bao status` asks that real OpenBao server.
fn exec_as_openbao(pod: &str, dir: &Path, addr: &str) -> Value {
    json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Exec", "metadata": {"name": pod},
           "spec": {"execs": [{"local": {"workDir": dir.to_str().expect("utf-8"),
                                         "envs": [{"name": "BAO_ADDR", "value": addr}]}}]}})
}

#[test]
fn restart_service_on_openbao_checks_every_pod_unsealed_with_bao_status_and_fails_on_a_sealed_one()
{
    // The two testbeds come up together.
    let bao = std::thread::spawn(|| Bao::from_cluster(Cluster::openbao("2.7.2")));
    let k8s = cluster();
    let bao = bao.join().expect("the OpenBao testbed");
    let ns = "lib-openbao";
    namespace(&k8s, ns);
    let sts = statefulset(
        "openbao-server",
        &json!({"app.kubernetes.io/name": "openbao"}),
    );
    apply(&k8s, ns, &sts);
    let sb = Sandbox::new();
    for (n, addr) in bao.addrs.iter().enumerate() {
        apply(
            &k8s,
            ns,
            &exec_as_openbao(&format!("openbao-server-{n}"), sb.path(), addr),
        );
    }
    wait_rolled_out(&k8s, "statefulset", "openbao-server", ns);
    let pairs = [
        format!("namespace={ns}"),
        "name=openbao-server".into(),
        "kind=StatefulSet".into(),
        format!("bao={}", bao.cluster.var("BAO_BIN_2_7_2")),
        "timeout=2m".into(),
        "unseal_timeout=10s".into(),
    ];

    // Detected as OpenBao by its label: after the roll, `bao status` ran in each pod (served
    // by the real server of its ordinal) and found it unsealed.
    let before = get(&k8s, "statefulset", "openbao-server", ns)["status"]["updateRevision"].clone();
    run_runbook(&sb, &k8s, "restart-service", &["--yes"], &pairs).ok();
    let sts = get(&k8s, "statefulset", "openbao-server", ns);
    assert_ne!(sts["status"]["updateRevision"], before, "{sts:#}");
    assert_eq!(
        sts["status"]["currentRevision"], sts["status"]["updateRevision"],
        "{sts:#}"
    );
    let records = sb.records(&sb.newest_run());
    for n in 0..3 {
        let path = format!("unsealed[{n}].status");
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "step_succeeded" && r["path"] == path),
            "no unsealed check of pod {n}: {records:#?}"
        );
    }

    // One server sealed (as a pod whose auto-unseal failed would be): the run restarts the pods
    // and then fails on that pod's seal status, naming it.
    let sealed = Command::new(bao.cluster.var("BAO_BIN_2_7_2"))
        .args(["operator", "seal"])
        .env("BAO_ADDR", &bao.addrs[1])
        .env("BAO_TOKEN", &bao.token)
        .output()
        .expect("bao operator seal");
    assert!(
        sealed.status.success(),
        "{}",
        String::from_utf8_lossy(&sealed.stderr)
    );
    let out = run_runbook(&sb, &k8s, "restart-service", &["--yes"], &pairs).code(1);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("unsealed[1].status") && said.contains("openbao-server-1"),
        "{}",
        out.explain("the sealed pod named")
    );
    let status = crate::support::clusters::get_json(
        &crate::support::clusters::http(),
        &format!("{}/v1/sys/seal-status", bao.addrs[1]),
    );
    assert_eq!(status["sealed"], true, "{status}");
}
