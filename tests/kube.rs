//! The `kube` step kind end to end, against a real Kubernetes control plane
//! (`testbeds/kubernetes.sh`: etcd, kube-apiserver 1.36 with RBAC, the real controller-manager —
//! Deployment, ReplicaSet, StatefulSet, DaemonSet and Job controllers, the garbage collector, the
//! namespace controller — and scheduler, with kwok playing the kubelet of the nodes). What the
//! tests claim about the cluster is read back from the API server with kubectl, not taken from
//! the runbook's output.
//!
//! `exec` and `logs` go through the API server to kwok as they would go to a kubelet: the API
//! server takes the step's websocket (`v5.channel.k8s.io`) and speaks SPDY to kwok's
//! `/exec` endpoint on the node's port, and proxies `/containerLogs`. kwok runs the command as
//! a local process in the directory a kwok `Exec` object names for the pod, and serves the log
//! file a kwok `Logs` object names (the testbed runs kwok with `--enable-crds`). Two things kwok
//! v0.8.0 does not do as a kubelet does, so they are not proven here:
//!
//! - a non-zero exit comes back as an `InternalError` status whose message ends in `exit status
//!   N`, not as the kubelet's `NonZeroExitCode` status with the code as its `ExitCode` cause
//!   (kwok wraps the process's exit error, so `ServeExec` does not recognise it). The step turns
//!   `NonZeroExitCode` into `exit_code` — proven end to end by the one test here that still
//!   uses the fake API of `fake_kube` (`a_non_zero_exit_code_…`) and by unit tests;
//! - kwok never closes the command's stdin when the client closes it (it copies the stream into
//!   the pipe and leaves the pipe open), so a command that reads stdin to its end never ends;
//!   stdin is proven with a command that reads one line.
//!
//! The tests of this file share one control plane (it takes 15–30 s to start here), each in
//! its own namespace; it is destroyed when the last of them is done with it.

// Kubernetes kinds (ReplicaSet, DaemonSet) are prose in these docs, not code.
#![allow(clippy::doc_markdown)]

use std::io::{BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_kube::{ExecCall, FakeKube, Options};
use crate::support::clusters::{Cluster, testbed};
use crate::support::{Output, Sandbox};

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

/// kubectl on the shared cluster as its admin, and a namespace of the test's own.
struct Kube {
    cluster: Arc<Cluster>,
    ns: String,
}

impl Kube {
    /// The cluster, with namespace `ns` created for the test.
    fn new(ns: &str) -> Self {
        let kube = Self {
            cluster: cluster(),
            ns: ns.to_owned(),
        };
        kube.ok(&["create", "namespace", ns]);
        kube
    }

    fn kubeconfig(&self) -> PathBuf {
        self.cluster.kubeconfig()
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut child = Command::new(self.cluster.var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=30s")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        child.wait_with_output().expect("kubectl")
    }

    /// kubectl's stdout; panics with its stderr if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of one manifest (JSON), in the test's namespace unless it names one.
    fn apply(&self, manifest: &Value) {
        let ns = manifest["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&self.ns);
        let out = self.kubectl(&["apply", "-n", ns, "-f", "-"], Some(&manifest.to_string()));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest:#}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An object as the API server has it; `None` when it does not exist. `ns` "" for a
    /// cluster-scoped kind.
    fn get_in(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let mut args = vec![
            "get",
            kind,
            name,
            "-o",
            "json",
            "--ignore-not-found",
            "--show-managed-fields",
        ];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let text = self.ok(&args);
        (!text.trim().is_empty()).then(|| serde_json::from_str(&text).expect("kubectl JSON"))
    }

    /// An object of the test's namespace.
    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        self.get_in(kind, &self.ns, name)
    }

    /// The objects of a kind in the test's namespace (with a label selector, or "").
    fn items(&self, kind: &str, selector: &str) -> Vec<Value> {
        let mut args = vec!["get", kind, "-n", &self.ns, "-o", "json"];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let list: Value = serde_json::from_str(&self.ok(&args)).expect("kubectl JSON");
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// Names of the objects of a kind in the test's namespace, sorted.
    fn names(&self, kind: &str, selector: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .items(kind, selector)
            .iter()
            .map(|o| name(o).to_owned())
            .collect();
        names.sort();
        names
    }

    /// Polls `condition` every 100 ms until it holds; panics after `limit`.
    fn wait_until(&self, what: &str, limit: Duration, mut condition: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + limit;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Creates a StatefulSet and waits until the controller has all its pods Ready.
    fn seed_statefulset(&self, name: &str, replicas: i64, image: &str) {
        self.apply(&statefulset(name, replicas, image));
        self.wait_until(
            &format!("StatefulSet {name} to have {replicas} ready replicas"),
            Duration::from_secs(60),
            |k| {
                k.get("statefulset", name)
                    .is_some_and(|s| s["status"]["readyReplicas"] == replicas)
            },
        );
    }

    /// Writes the runbook (with `$KC` the admin kubeconfig and `$NS` the test's namespace)
    /// and runs it; returns its output and the run's records.
    fn run(&self, sb: &Sandbox, yaml: &str, code: i32) -> (Output, Vec<Value>) {
        let kubeconfig = self.kubeconfig();
        let yaml = yaml
            .replace("$KC", kubeconfig.to_str().expect("utf-8 path"))
            .replace("$NS", &self.ns);
        sb.write("kube.yaml", &yaml);
        let out = sb
            .cmd(&["run", "kube.yaml"])
            .env_remove("KUBECONFIG")
            .env_remove("RUNBOOK_KUBECONFIG")
            .code(code);
        let records = sb.records(&sb.only_run());
        (out, records)
    }
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("")
}

/// The output a step succeeded with.
fn output(records: &[Value], path: &str) -> Value {
    records
        .iter()
        .find(|r| r["event"] == "step_succeeded" && r["path"] == path)
        .map_or_else(
            || panic!("no step_succeeded for {path} in {records:#?}"),
            |r| r["output"].clone(),
        )
}

/// The last failure of a step: (error, output).
fn failure(records: &[Value], path: &str) -> (String, Value) {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == "step_failed" && r["path"] == path)
        .map_or_else(
            || panic!("no step_failed for {path} in {records:#?}"),
            |r| {
                (
                    r["error"].as_str().unwrap_or("").to_owned(),
                    r["output"].clone(),
                )
            },
        )
}

fn assert_contains(out: &Output, text: &str) {
    assert!(
        out.stdout.contains(text) || out.stderr.contains(text),
        "{}",
        out.explain(&format!("expected the output to contain `{text}`"))
    );
}

fn statefulset(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/version": "2.6.1"}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "openbao", "image": image}]},
            },
        },
    })
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                     {"name": "sidecar", "image": "envoy:1.30"},
                 ]}}},
    })
}

fn pod(name: &str, labels: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]}})
}

/// A pod that no node takes: it stays Pending.
fn pending_pod(name: &str, labels: &Value) -> Value {
    let mut pod = pod(name, labels);
    pod["spec"]["nodeSelector"] = json!({"runbook.test/nowhere": "true"});
    pod
}

fn ready(object: &Value) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Pods as `kubectl get pods --watch` reports them, from before a runbook runs to after it.
struct PodWatch {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    reader: Option<JoinHandle<()>>,
}

impl PodWatch {
    /// Starts watching the test's namespace and waits until the pods there now (`existing`)
    /// have been listed.
    fn start(kube: &Kube, existing: usize) -> Self {
        let mut child = Command::new(kube.cluster.var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(kube.kubeconfig())
            .args([
                "get",
                "pods",
                "-n",
                &kube.ns,
                "--watch",
                "--output-watch-events",
            ])
            .args(["-o", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl --watch");
        let stdout = child.stdout.take().expect("piped");
        let events: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            let stream = serde_json::Deserializer::from_reader(BufReader::new(stdout));
            for event in stream.into_iter::<Value>().map_while(Result::ok) {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(event);
            }
        });
        let watch = Self {
            child,
            events,
            reader: Some(reader),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while watch.len() < existing {
            assert!(
                Instant::now() < deadline,
                "kubectl --watch listed {} of {existing} pods",
                watch.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        watch
    }

    fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Stops the watch; every event seen.
    fn stop(mut self) -> Vec<Value> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each pod's lifecycle in the order the watch saw it, from event `from` on: `created NAME`,
/// `ready NAME TAG` (its Ready condition became True, with its image's tag), `terminating
/// NAME` (marked for deletion, or gone). Each pod (by uid) reaches each state once.
fn transitions(events: &[Value], from: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let object = &event["object"];
        let uid = object["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        let pod = name(object);
        let tag = object["spec"]["containers"][0]["image"]
            .as_str()
            .and_then(|i| i.rsplit_once(':'))
            .map_or("", |(_, tag)| tag);
        let mut reached = Vec::new();
        if event["type"] == "ADDED" {
            reached.push(("created", format!("created {pod}")));
        }
        if ready(object) {
            reached.push(("ready", format!("ready {pod} {tag}")));
        }
        if event["type"] == "DELETED" || !object["metadata"]["deletionTimestamp"].is_null() {
            reached.push(("terminating", format!("terminating {pod}")));
        }
        for (state, text) in reached {
            if seen.insert((uid.clone(), state)) && i >= from {
                out.push(text);
            }
        }
    }
    out
}

#[test]
fn get_returns_the_object_as_the_api_server_has_it_and_a_missing_one_is_a_clear_404() {
    let kube = Kube::new("kube-get");
    kube.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "kube-get",
        "--from-literal=mode=ha",
    ]);
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r#"
runbook: kube-get
steps:
  - id: cm
    kube: { get: ConfigMap, name: settings, namespace: $NS, kubeconfig: $KC }
    assert: 'output.data.mode == "ha" && output.metadata.namespace == "$NS"'
  - id: ns
    kube: { get: ns, name: $NS, kubeconfig: $KC }
"#,
        0,
    );
    let cm = output(&records, "cm");
    let stored = kube.get("configmap", "settings").expect("stored");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["metadata"]["uid"], stored["metadata"]["uid"]);
    assert_eq!(
        cm["metadata"]["resourceVersion"],
        stored["metadata"]["resourceVersion"]
    );
    // A cluster-scoped kind ignores the namespace.
    assert_eq!(output(&records, "ns")["status"]["phase"], "Active");

    let sb = Sandbox::new();
    let (out, records) = kube.run(
        &sb,
        r"
runbook: kube-get-missing
steps:
  - id: sts
    kube: { get: StatefulSet, name: openbao, namespace: $NS, kubeconfig: $KC }
",
        1,
    );
    assert_contains(&out, "StatefulSet kube-get/openbao not found (404)");
    let (error, output) = failure(&records, "sts");
    assert_eq!(error, "StatefulSet kube-get/openbao not found (404)");
    assert_eq!(
        output,
        json!({"status": 404, "reason": "NotFound",
               "message": "statefulsets.apps \"openbao\" not found"})
    );
}

#[test]
fn list_filters_by_label_and_field_selectors() {
    let kube = Kube::new("kube-list");
    kube.ok(&["create", "namespace", "kube-list-other"]);
    let labels = |app: &str| json!({"app": app, "tier": "db", "suite": "kube-list"});
    kube.apply(&pod("bao-0", &labels("openbao")));
    kube.apply(&pending_pod("bao-1", &labels("openbao")));
    kube.apply(&pod("nats-0", &labels("nats")));
    let mut other = pod("bao-9", &labels("openbao"));
    other["metadata"]["namespace"] = json!("kube-list-other");
    kube.apply(&other);
    kube.wait_until("the scheduled pods to run", Duration::from_secs(60), |k| {
        ["bao-0", "nats-0"].iter().all(|p| {
            k.get("pod", p)
                .is_some_and(|p| p["status"]["phase"] == "Running")
        }) && k
            .get_in("pod", "kube-list-other", "bao-9")
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r#"
runbook: kube-list
steps:
  - id: by-label
    kube: { list: Pod, namespace: $NS, labels: "app=openbao,tier in (db)", kubeconfig: $KC }
  - id: by-map
    kube: { list: pods, namespace: $NS, labels: { app: nats }, kubeconfig: $KC }
  - id: running
    kube: { list: Pod, namespace: $NS, labels: "app!=nats", fields: "status.phase=Running", kubeconfig: $KC }
  - id: everywhere
    kube: { list: po, labels: "app=openbao,suite=kube-list", kubeconfig: $KC }
"#,
        0,
    );
    // Sorted: the server lists in the order of its storage keys.
    let names = |path: &str| -> Vec<String> {
        let mut names: Vec<String> = output(&records, path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["metadata"]["namespace"].as_str().unwrap(),
                    name(i)
                )
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names("by-label"), ["kube-list/bao-0", "kube-list/bao-1"]);
    assert_eq!(names("by-map"), ["kube-list/nats-0"]);
    assert_eq!(names("running"), ["kube-list/bao-0"]);
    assert_eq!(
        names("everywhere"),
        [
            "kube-list-other/bao-9",
            "kube-list/bao-0",
            "kube-list/bao-1"
        ]
    );
    // Items of a list carry their kind, filled in by the step.
    assert_eq!(output(&records, "by-map")["items"][0]["kind"], "Pod");
    assert_eq!(output(&records, "by-map")["items"][0]["apiVersion"], "v1");
    // What the selectors found is what the server has.
    assert_eq!(
        kube.names("pods", "app=openbao"),
        ["bao-0", "bao-1"],
        "kubectl sees the same pods"
    );

    // A field the server cannot select on is its 400, reported as such.
    let sb = Sandbox::new();
    let (out, _) = kube.run(
        &sb,
        r#"
runbook: kube-list-bad
steps:
  - id: bad
    kube: { list: ConfigMap, namespace: $NS, fields: "status.phase=Running", kubeconfig: $KC }
"#,
        1,
    );
    assert_contains(
        &out,
        "failed listing configmaps in kube-list (status.phase=Running): \"status.phase\" is not \
         a known field selector: only \"metadata.name\", \"metadata.namespace\" (400 BadRequest)",
    );
}

#[test]
fn apply_is_server_side_as_runbook_and_keeps_the_fields_of_other_managers() {
    let kube = Kube::new("kube-apply");
    let yaml = |ns: &str, mode: &str, force: bool| {
        format!(
            r#"
runbook: kube-apply
steps:
  - id: apply
    kube:
      kubeconfig: $KC
      namespace: {ns}
      force: {force}
      apply:
        apiVersion: v1
        kind: ConfigMap
        metadata: {{ name: upgrade-status, labels: {{ owner: runbook }} }}
        data: {{ state: "{mode}" }}
"#
        )
    };
    // The real server refuses to create objects in a namespace that is not there.
    let sb = Sandbox::new();
    let (out, _) = kube.run(&sb, &yaml("kube-apply-missing", "Upgrading", false), 1);
    assert_contains(
        &out,
        "failed applying ConfigMap kube-apply-missing/upgrade-status: namespaces \
         \"kube-apply-missing\" not found (404)",
    );
    let sb = Sandbox::new();
    let (_, records) = kube.run(&sb, &yaml("$NS", "Upgrading", false), 0);
    let created = output(&records, "apply");
    let stored = kube.get("configmap", "upgrade-status").expect("created");
    assert_eq!(stored["data"], json!({"state": "Upgrading"}));
    assert_eq!(stored["metadata"]["labels"]["owner"], "runbook");
    assert_eq!(created["metadata"]["uid"], stored["metadata"]["uid"]);
    let managers = stored["metadata"]["managedFields"].as_array().unwrap();
    let ours = managers
        .iter()
        .find(|m| m["manager"] == "runbook")
        .unwrap_or_else(|| panic!("no manager `runbook` in {managers:#?}"));
    assert_eq!(ours["operation"], "Apply");
    assert_eq!(ours["fieldsV1"]["f:data"], json!({"f:state": {}}));

    // An operator adds a key with their own server-side apply; applying ours again updates our
    // field and leaves theirs.
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "upgrade-status"}, "data": {"note": "by hand"}});
    let out = kube.kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager=operator",
            "-n",
            "kube-apply",
            "-f",
            "-",
        ],
        Some(&theirs.to_string()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = Sandbox::new();
    kube.run(&sb, &yaml("$NS", "Done", false), 0);
    let stored = kube.get("configmap", "upgrade-status").unwrap();
    assert_eq!(stored["data"], json!({"state": "Done", "note": "by hand"}));
    assert_eq!(stored["metadata"]["uid"], created["metadata"]["uid"]);

    // A field another manager owns is theirs: applying it is the server's 409 conflict,
    // unless `force` takes it over.
    let claim = json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "upgrade-status"}, "data": {"state": "Frozen"}});
    let out = kube.kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=operator",
            "-n",
            "kube-apply",
            "-f",
            "-",
        ],
        Some(&claim.to_string()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = Sandbox::new();
    let (out, records) = kube.run(&sb, &yaml("$NS", "Done", false), 1);
    assert_contains(
        &out,
        "conflict applying ConfigMap kube-apply/upgrade-status: Apply failed with 1 conflict: \
         conflict with \"operator\": .data.state (409)",
    );
    assert_eq!(failure(&records, "apply").1["reason"], "Conflict");
    assert_eq!(
        kube.get("configmap", "upgrade-status").unwrap()["data"]["state"],
        "Frozen"
    );
    let sb = Sandbox::new();
    kube.run(&sb, &yaml("$NS", "Done", true), 0);
    let stored = kube.get("configmap", "upgrade-status").unwrap();
    assert_eq!(stored["data"]["state"], "Done");
    let owners: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"]["f:data"].get("f:state").is_some())
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["runbook"], "force took the field over");
}

#[test]
fn merge_json_and_strategic_patches_change_the_object() {
    let kube = Kube::new("kube-patch");
    kube.apply(&deployment("web", 2));
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r#"
runbook: kube-patch
steps:
  - id: merge
    kube: { patch: Deployment, name: web, namespace: $NS, kubeconfig: $KC,
            merge: { metadata: { labels: { tier: frontend } }, spec: { replicas: 3 } } }
  - id: json
    kube: { patch: Deployment, name: web, namespace: $NS, kubeconfig: $KC,
            json: [ { op: replace, path: /spec/replicas, value: 4 },
                    { op: add, path: /metadata/annotations/patched, value: "yes" } ] }
  - id: strategic
    kube: { patch: Deployment, name: web, namespace: $NS, kubeconfig: $KC,
            strategic: { spec: { template: { spec: { containers: [ { name: web, image: "nginx:1.27" } ] } } } } }
"#,
        0,
    );
    assert_eq!(output(&records, "merge")["spec"]["replicas"], 3);
    assert_eq!(output(&records, "json")["spec"]["replicas"], 4);
    let stored = kube.get("deployment", "web").unwrap();
    assert_eq!(stored["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(stored["metadata"]["annotations"]["patched"], "yes");
    assert_eq!(stored["spec"]["replicas"], 4);
    let containers = stored["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2, "merged by name: {containers:#?}");
    assert_eq!(containers[0]["image"], "nginx:1.27");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(containers[1]["name"], "sidecar");
    // Three writes changed the spec: the generation counts them.
    assert_eq!(stored["metadata"]["generation"], 4);
    assert_eq!(output(&records, "strategic")["metadata"]["generation"], 4);
}

#[test]
fn a_patch_with_a_stale_resource_version_fails_with_the_servers_409_conflict() {
    let kube = Kube::new("kube-conflict");
    kube.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "upgrade-status"}, "data": {"state": "Idle"}}));
    let rv = kube.get("configmap", "upgrade-status").unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let yaml = format!(
        r#"
runbook: kube-conflict
steps:
  - id: first
    kube: {{ patch: ConfigMap, name: upgrade-status, namespace: $NS, kubeconfig: $KC,
            resource_version: "{rv}", merge: {{ data: {{ state: Upgrading }} }} }}
  - id: stale
    kube: {{ patch: ConfigMap, name: upgrade-status, namespace: $NS, kubeconfig: $KC,
            resource_version: "{rv}", merge: {{ data: {{ state: Degraded }} }} }}
"#
    );
    let sb = Sandbox::new();
    let (out, records) = kube.run(&sb, &yaml, 1);
    let message = "conflict patching ConfigMap kube-conflict/upgrade-status (merge): the object \
                   has been modified (409)";
    assert_contains(&out, message);
    let (error, output) = failure(&records, "stale");
    assert_eq!(error, message);
    assert_eq!(output["status"], 409);
    assert_eq!(output["reason"], "Conflict");
    let stored = kube.get("configmap", "upgrade-status").unwrap();
    assert_eq!(
        stored["data"]["state"], "Upgrading",
        "the stale write was refused"
    );

    // The same precondition on a JSON patch.
    let sb = Sandbox::new();
    let yaml = format!(
        r#"
runbook: kube-conflict-json
steps:
  - id: stale
    kube: {{ patch: ConfigMap, name: upgrade-status, namespace: $NS, kubeconfig: $KC,
            resource_version: "{rv}", json: [ {{ op: replace, path: /data/state, value: Degraded }} ] }}
"#
    );
    let (out, _) = kube.run(&sb, &yaml, 1);
    assert_contains(&out, "(json): the object has been modified (409)");
    assert_eq!(
        kube.get("configmap", "upgrade-status").unwrap(),
        stored,
        "nothing changed"
    );
}

#[test]
fn foreground_delete_waits_for_the_garbage_collector_and_orphan_keeps_the_dependents() {
    let kube = Kube::new("kube-delete");
    kube.apply(&deployment("fg", 2));
    kube.apply(&deployment("orphan", 2));
    kube.wait_until("four pods Ready", Duration::from_secs(60), |k| {
        let pods = k.items("pods", "");
        pods.len() == 4 && pods.iter().all(ready)
    });
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-delete
steps:
  - id: fg
    kube: { delete: Deployment, name: fg, namespace: $NS, propagation: Foreground,
            wait: true, timeout: 60s, kubeconfig: $KC }
  - id: again
    kube: { delete: Deployment, name: fg, namespace: $NS, kubeconfig: $KC }
  - id: orphan
    kube: { delete: deploy, name: orphan, namespace: $NS, propagation: orphan,
            wait: true, timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(
        output(&records, "fg"),
        json!({"deleted": true, "gone": true})
    );
    // Deleting what is gone already is not an error: the effect is in place.
    assert_eq!(
        output(&records, "again"),
        json!({"deleted": false, "gone": true})
    );
    assert_eq!(
        output(&records, "orphan"),
        json!({"deleted": true, "gone": true})
    );
    // Foreground: the garbage collector removed the ReplicaSet and its pods before the
    // Deployment went, so when the step returned they were gone.
    assert!(kube.get("deployment", "fg").is_none());
    assert!(kube.names("replicasets", "app=fg").is_empty());
    assert!(kube.names("pods", "app=fg").is_empty());
    // Orphan: the ReplicaSet and its pods stay, no longer owned.
    assert!(kube.get("deployment", "orphan").is_none());
    let sets = kube.items("replicasets", "app=orphan");
    assert_eq!(sets.len(), 1);
    assert!(
        sets[0]["metadata"]["ownerReferences"].is_null(),
        "{:#}",
        sets[0]["metadata"]
    );
    let pods = kube.items("pods", "app=orphan");
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(ready));
}

#[test]
fn scale_grows_a_statefulset_in_ordinal_order_and_shrinks_it_from_the_top() {
    let kube = Kube::new("kube-scale");
    kube.seed_statefulset("openbao", 3, "openbao/openbao:2.6.1");
    let watch = PodWatch::start(&kube, 3);
    let from = watch.len();
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-scale
steps:
  - id: up
    kube: { scale: StatefulSet, name: openbao, namespace: $NS, replicas: 5, kubeconfig: $KC }
  - id: five
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, for: ready, every: 100ms,
            timeout: 60s, kubeconfig: $KC }
  - id: down
    kube: { scale: sts, name: openbao, namespace: $NS, replicas: 2, kubeconfig: $KC }
  - id: two
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, every: 100ms, timeout: 60s,
            condition: 'object.status.replicas == 2 && object.status.readyReplicas == 2',
            kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "up")["spec"]["replicas"], 5);
    assert_eq!(output(&records, "five")["status"]["readyReplicas"], 5);
    kube.wait_until("openbao-2 to go", Duration::from_secs(30), |k| {
        k.get("pod", "openbao-2").is_none()
    });
    let events = watch.stop();
    // OrderedReady: each new pod was created after the one before it was Ready; scaling down
    // removed the highest ordinal first.
    assert_eq!(
        transitions(&events, from),
        [
            "created openbao-3",
            "ready openbao-3 2.6.1",
            "created openbao-4",
            "ready openbao-4 2.6.1",
            "terminating openbao-4",
            "terminating openbao-3",
            "terminating openbao-2",
        ]
    );
    assert_eq!(
        kube.names("pods", "app=openbao"),
        ["openbao-0", "openbao-1"]
    );
    assert_eq!(
        kube.get("statefulset", "openbao").unwrap()["spec"]["replicas"],
        2
    );
}

#[test]
fn restart_makes_the_deployment_controller_roll_a_new_replicaset() {
    let kube = Kube::new("kube-restart");
    kube.apply(&deployment("web", 2));
    kube.wait_until("two web pods Ready", Duration::from_secs(60), |k| {
        let pods = k.items("pods", "app=web");
        pods.len() == 2 && pods.iter().all(ready)
    });
    let before: Vec<String> = kube
        .items("pods", "app=web")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned())
        .collect();
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-restart
steps:
  - id: restart
    kube: { restart: Deployment, name: web, namespace: $NS, kubeconfig: $KC }
  - id: rolled
    kube: { wait: Deployment, name: web, namespace: $NS, for: rollout-complete, every: 100ms,
            timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    let at = output(&records, "restart")["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    let web = kube.get("deployment", "web").unwrap();
    assert_eq!(web["metadata"]["generation"], 2);
    assert_eq!(
        web["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(web["status"]["updatedReplicas"], 2);
    // The controller made a second ReplicaSet from the annotated template and scaled the
    // first to zero.
    let sets = kube.items("replicasets", "app=web");
    assert_eq!(sets.len(), 2, "{sets:#?}");
    let annotated = |rs: &Value| {
        rs["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            == at.as_str()
    };
    let new = sets
        .iter()
        .find(|rs| annotated(rs))
        .expect("the new ReplicaSet");
    let old = sets
        .iter()
        .find(|rs| !annotated(rs))
        .expect("the old ReplicaSet");
    assert_eq!(new["spec"]["replicas"], 2);
    assert_eq!(new["status"]["readyReplicas"], 2);
    assert_eq!(old["spec"]["replicas"], 0);
    kube.wait_until("the old pods to go", Duration::from_secs(30), |k| {
        k.items("pods", "app=web").len() == 2
    });
    let pods = kube.items("pods", "app=web");
    for pod in &pods {
        assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], name(new));
        assert!(
            !before.contains(&pod["metadata"]["uid"].as_str().unwrap().to_owned()),
            "every pod was replaced"
        );
        assert!(ready(pod));
    }
}

#[test]
fn an_image_change_rolls_the_statefulset_highest_ordinal_first_and_wait_sees_it_complete() {
    let kube = Kube::new("kube-roll");
    kube.seed_statefulset("openbao", 3, "openbao/openbao:2.6.1");
    let watch = PodWatch::start(&kube, 3);
    let from = watch.len();
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-roll
steps:
  - id: image
    kube: { patch: StatefulSet, name: openbao, namespace: $NS, kubeconfig: $KC,
            strategic: { spec: { template: { spec: { containers: [ { name: openbao, image: 'openbao/openbao:2.7.2' } ] } } } } }
  - id: rolled
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, for: rollout-complete,
            every: 100ms, timeout: 90s, kubeconfig: $KC }
",
        0,
    );
    let events = watch.stop();
    let sts = kube.get("statefulset", "openbao").unwrap();
    assert_eq!(sts["status"]["updatedReplicas"], 3);
    assert_eq!(sts["status"]["readyReplicas"], 3);
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    assert_eq!(
        output(&records, "rolled")["status"]["updateRevision"],
        sts["status"]["updateRevision"]
    );
    for pod in kube.items("pods", "app=openbao") {
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "openbao/openbao:2.7.2"
        );
    }
    // The controller replaced one pod at a time, highest ordinal first, each replacement
    // Ready before the next pod was deleted. On a loaded machine the controller has once
    // replaced an already updated pod again after the roll (cause not found; the runbook
    // patched once): such later replacements of pods on the new image are tolerated, never a
    // replacement out of order or one that brings the old image back.
    let roll: Vec<String> = transitions(&events, from)
        .into_iter()
        .filter(|t| !t.starts_with("created"))
        .collect();
    let (roll, after) = roll.split_at(roll.len().min(6));
    for pair in after.chunks(2) {
        assert!(
            matches!(pair, [t, r] if t.starts_with("terminating ")
                && *r == format!("ready {} 2.7.2", &t["terminating ".len()..])),
            "after the roll, only updated pods replaced by updated pods: {after:?}"
        );
    }
    assert_eq!(
        roll,
        [
            "terminating openbao-2",
            "ready openbao-2 2.7.2",
            "terminating openbao-1",
            "ready openbao-1 2.7.2",
            "terminating openbao-0",
            "ready openbao-0 2.7.2",
        ]
    );
}

#[test]
fn a_partition_holds_the_lower_ordinals_on_their_revision() {
    let kube = Kube::new("kube-partition");
    kube.seed_statefulset("openbao", 3, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-partition
steps:
  - id: hold
    kube: { patch: StatefulSet, name: openbao, namespace: $NS, kubeconfig: $KC,
            merge: { spec: { updateStrategy: { rollingUpdate: { partition: 2 } },
                     template: { spec: { containers: [ { name: openbao, image: 'openbao/openbao:2.7.2' } ] } } } } }
  - id: rolled
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, for: rollout-complete,
            every: 100ms, timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "rolled")["status"]["updatedReplicas"], 1);
    let sts = kube.get("statefulset", "openbao").unwrap();
    assert_eq!(sts["status"]["updatedReplicas"], 1, "{sts:#}");
    assert_eq!(sts["status"]["readyReplicas"], 3);
    assert_ne!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    let image = |pod: &str| kube.get("pod", pod).unwrap()["spec"]["containers"][0]["image"].clone();
    assert_eq!(image("openbao-2"), "openbao/openbao:2.7.2");
    assert_eq!(image("openbao-1"), "openbao/openbao:2.6.1");
    assert_eq!(image("openbao-0"), "openbao/openbao:2.6.1");
    let revision = |pod: &str| {
        kube.get("pod", pod).unwrap()["metadata"]["labels"]["controller-revision-hash"].clone()
    };
    assert_eq!(revision("openbao-2"), sts["status"]["updateRevision"]);
    assert_eq!(revision("openbao-0"), sts["status"]["currentRevision"]);
}

#[test]
fn ready_waits_for_pods_statefulsets_and_daemonsets_and_a_rhai_condition() {
    let kube = Kube::new("kube-ready");
    kube.apply(&statefulset("openbao", 3, "openbao/openbao:2.6.1"));
    kube.apply(&json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}}},
    }));
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-ready
steps:
  - id: three
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, every: 100ms, timeout: 60s,
            condition: 'object.status.readyReplicas == 3', kubeconfig: $KC }
  - id: pod
    kube: { wait: Pod, name: openbao-2, namespace: $NS, for: ready, every: 100ms, timeout: 60s,
            kubeconfig: $KC }
  - id: agent
    kube: { wait: DaemonSet, name: agent, namespace: $NS, for: ready, every: 100ms,
            timeout: 60s, kubeconfig: $KC }
  - id: restarted
    kube: { restart: ds, name: agent, namespace: $NS, kubeconfig: $KC }
  - id: agent-rolled
    kube: { wait: DaemonSet, name: agent, namespace: $NS, for: rollout-complete, every: 100ms,
            timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "three")["status"]["readyReplicas"], 3);
    assert!(ready(&output(&records, "pod")));
    // One agent pod per kwok node.
    assert_eq!(output(&records, "agent")["status"]["numberReady"], 2);
    let sts = kube.get("statefulset", "openbao").unwrap();
    assert_eq!(sts["status"]["readyReplicas"], 3);
    let ds = kube.get("daemonset", "agent").unwrap();
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 2);
    assert_eq!(ds["status"]["numberAvailable"], 2);
    assert_eq!(ds["status"]["observedGeneration"], 2);
}

#[test]
fn job_complete_waits_for_the_job_and_a_failed_job_fails_with_its_reason() {
    let kube = Kube::new("kube-job");
    let job = |name: &str, fail: bool| {
        let mut labels = json!({"job": name});
        if fail {
            // kwok's stage fails a running pod with this label (exit 1).
            labels["pod-container-running-failed.stage.kwok.x-k8s.io"] = json!("true");
        }
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
               "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": labels},
                   "spec": {"restartPolicy": "Never",
                            "containers": [{"name": "m", "image": "migrate:1"}]}}}})
    };
    kube.apply(&job("migrate", false));
    kube.apply(&job("broken", true));
    let sb = Sandbox::new();
    let (out, records) = kube.run(
        &sb,
        r"
runbook: kube-job
steps:
  - id: migrate
    kube: { wait: Job, name: migrate, namespace: $NS, for: job-complete, every: 100ms, timeout: 60s, kubeconfig: $KC }
  - id: broken
    kube: { wait: Job, name: broken, namespace: $NS, for: job-complete, every: 100ms, timeout: 60s, kubeconfig: $KC }
",
        1,
    );
    assert_eq!(output(&records, "migrate")["status"]["succeeded"], 1);
    assert_contains(
        &out,
        "waiting for Job kube-job/broken to be job-complete failed: the job failed: \
         BackoffLimitExceeded: Job has reached the specified backoff limit",
    );
    let (_, last) = failure(&records, "broken");
    assert_eq!(
        last["status"]["failed"], 1,
        "the last observed Job is the output"
    );
    let condition = |job: &str, kind: &str| {
        kube.get("job", job).unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    assert!(condition("migrate", "Complete"));
    assert!(condition("broken", "Failed"));
    assert_eq!(
        kube.items("pods", "job=migrate")[0]["status"]["phase"],
        "Succeeded"
    );
}

#[test]
fn a_wait_that_times_out_names_the_condition_and_what_it_saw() {
    let kube = Kube::new("kube-timeout");
    let mut sts = statefulset("openbao", 3, "openbao/openbao:2.6.1");
    // No node takes the pods: openbao-0 stays Pending.
    sts["spec"]["template"]["spec"]["nodeSelector"] = json!({"runbook.test/nowhere": "true"});
    kube.apply(&sts);
    kube.wait_until("openbao-0 to exist", Duration::from_secs(30), |k| {
        k.get("pod", "openbao-0").is_some()
    });
    let sb = Sandbox::new();
    let (out, records) = kube.run(
        &sb,
        r#"
runbook: kube-timeout
steps:
  - id: ready
    kube: { wait: StatefulSet, name: openbao, namespace: $NS, for: ready, every: 100ms,
            timeout: 2s, kubeconfig: $KC }
    continue_on_error: true
  - id: never
    kube: { wait: Pod, name: openbao-0, namespace: $NS, every: 100ms, timeout: 1s,
            condition: 'object.status.phase == "Succeeded"', kubeconfig: $KC }
"#,
        1,
    );
    assert_contains(
        &out,
        "timed out after 2s waiting for StatefulSet kube-timeout/openbao to be ready: 0 of 3 \
         replicas ready",
    );
    assert_contains(
        &out,
        "timed out after 1s waiting for Pod kube-timeout/openbao-0 to satisfy \
         `object.status.phase == \"Succeeded\"`: the condition is false",
    );
    let (_, last) = failure(&records, "ready");
    assert_eq!(last["spec"]["replicas"], 3);
    assert_eq!(failure(&records, "never").1["status"]["phase"], "Pending");
    // OrderedReady: with openbao-0 never Ready, the controller made no other pod.
    assert_eq!(kube.names("pods", "app=openbao"), ["openbao-0"]);
}

#[test]
fn a_rollout_past_its_progress_deadline_fails_the_wait_before_its_timeout() {
    let kube = Kube::new("kube-deadline");
    let mut web = deployment("web", 1);
    // Its pod is never scheduled; the controller gives up after one second.
    web["spec"]["progressDeadlineSeconds"] = json!(1);
    web["spec"]["template"]["spec"]["nodeSelector"] = json!({"runbook.test/nowhere": "true"});
    kube.apply(&web);
    let sb = Sandbox::new();
    let started = Instant::now();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-deadline
steps:
  - id: rolled
    kube: { wait: Deployment, name: web, namespace: $NS, for: rollout-complete, every: 200ms,
            timeout: 5m, kubeconfig: $KC }
",
        1,
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the wait ended when the deadline passed, not at its timeout"
    );
    let (error, last) = failure(&records, "rolled");
    let progressing = |k: &Kube| {
        k.get("deployment", "web").unwrap()["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .cloned()
            .expect("a Progressing condition")
    };
    // On a loaded machine the pod may be created after the first deadline passed: the
    // controller then counts that as progress (True, `ReplicaSetUpdated`) and gives up again a
    // second later. What the run saw is the settled verdict.
    kube.wait_until(
        "the Progressing condition to settle at False",
        Duration::from_secs(60),
        |k| progressing(k)["status"] == "False",
    );
    let progressing = progressing(&kube);
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert_eq!(
        error,
        format!(
            "waiting for Deployment kube-deadline/web to be rollout-complete failed: progress \
             deadline exceeded: {}",
            progressing["message"].as_str().unwrap()
        )
    );
    assert_eq!(last["metadata"]["name"], "web");
}

/// A kwok `Exec` object: `exec` in `pod` runs a local process in `dir` with `POD_NAME` set.
fn exec_in(pod: &str, dir: &Path) -> Value {
    json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Exec", "metadata": {"name": pod},
           "spec": {"execs": [{"local": {"workDir": dir.to_str().unwrap(),
                                         "envs": [{"name": "POD_NAME", "value": pod}]}}]}})
}

#[test]
fn exec_runs_the_command_through_the_api_server_and_the_node() {
    let kube = Kube::new("kube-exec");
    kube.apply(&pod("tools", &json!({"app": "tools"})));
    kube.apply(&pending_pod("waiting", &json!({"app": "waiting"})));
    let sb = Sandbox::new();
    let node_dir = sb.path().join("node");
    std::fs::create_dir_all(&node_dir).unwrap();
    kube.apply(&exec_in("tools", &node_dir));
    kube.wait_until("pod tools to be Ready", Duration::from_secs(60), |k| {
        k.get("pod", "tools").is_some_and(|p| ready(&p))
    });
    let (out, records) = kube.run(
        &sb,
        r#"
runbook: kube-exec
steps:
  - id: status
    kube: { exec: tools, namespace: $NS, container: main, kubeconfig: $KC,
            command: [sh, -c, 'echo "in $POD_NAME"; echo warning >&2; echo sealed=false > state'] }
    assert: 'output.exit_code == 0 && output.stdout.contains("in tools")'
  - id: stdin
    kube: { exec: tools, namespace: $NS, kubeconfig: $KC, stdin: "line one\n",
            command: [sh, -c, 'read line; echo "got $line"'] }
  - id: denied
    kube: { exec: tools, namespace: $NS, kubeconfig: $KC, command: [sh, -c, 'echo denied >&2; exit 3'] }
    continue_on_error: true
  - id: container
    kube: { exec: tools, namespace: $NS, container: nope, kubeconfig: $KC, command: [ls] }
    continue_on_error: true
  - id: pending
    kube: { exec: waiting, namespace: $NS, kubeconfig: $KC, command: [ls] }
    continue_on_error: true
  - id: ghost
    kube: { exec: ghost, namespace: $NS, kubeconfig: $KC, command: [ls] }
"#,
        1,
    );
    assert_eq!(
        output(&records, "status"),
        json!({"stdout": "in tools\n", "stderr": "warning\n", "exit_code": 0})
    );
    // The command ran where the node runs the pod's processes.
    assert_eq!(
        std::fs::read_to_string(node_dir.join("state")).unwrap(),
        "sealed=false\n"
    );
    assert_eq!(output(&records, "stdin")["stdout"], "got line one\n");
    // kwok reports a non-zero exit as an internal error naming the exit status (a kubelet
    // sends NonZeroExitCode, see the module doc); the step fails with it and keeps stderr.
    let (error, denied) = failure(&records, "denied");
    assert!(
        error.starts_with(
            "`sh -c 'echo denied >&2; exit 3'` in Pod kube-exec/tools failed: Internal error \
             occurred:"
        ) && error.ends_with("exit status 3"),
        "{error}"
    );
    assert_eq!(denied["stderr"], "denied\n");
    // The API server refuses the upgrade with a 400 whose body the client does not keep; the
    // step says why from the pod.
    assert_eq!(
        failure(&records, "container").0,
        "failed running a command in Pod kube-exec/tools: container nope is not valid for pod \
         tools (its containers: main) (400 BadRequest)"
    );
    assert_eq!(
        failure(&records, "pending").0,
        "failed running a command in Pod kube-exec/waiting: pod waiting does not have a host \
         assigned (phase Pending) (400 BadRequest)"
    );
    assert_contains(&out, "Pod kube-exec/ghost not found (404)");
}

#[test]
fn a_non_zero_exit_code_of_a_kubelet_is_the_outputs_exit_code() {
    // The one part of exec kwok cannot show (see the module doc): a kubelet's NonZeroExitCode
    // status, here from the fake API server of `fake_kube`.
    let calls: Arc<Mutex<Vec<ExecCall>>> = Arc::default();
    let seen = calls.clone();
    let fake = FakeKube::start(Options {
        exec: Some(Arc::new(move |call: &ExecCall| {
            seen.lock().unwrap().push(call.clone());
            (String::new(), "Error: permission denied\n".into(), 2)
        })),
        ..Options::default()
    });
    fake.insert(json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "openbao-0", "namespace": "default"},
                       "spec": {"containers": [{"name": "openbao", "image": "openbao:2.6.1"}]},
                       "status": {"phase": "Running"}}));
    let sb = Sandbox::new();
    let yaml = format!(
        r"
runbook: kube-exit-code
steps:
  - id: denied
    kube: {{ exec: openbao-0, command: [bao, operator, step-down], kubeconfig: {} }}
",
        fake.kubeconfig_path().display()
    );
    sb.write("kube.yaml", &yaml);
    let out = sb
        .cmd(&["run", "kube.yaml"])
        .env_remove("KUBECONFIG")
        .env_remove("RUNBOOK_KUBECONFIG")
        .code(1);
    let records = sb.records(&sb.only_run());
    assert_contains(
        &out,
        "`bao operator step-down` in Pod default/openbao-0 exited with code 2: Error: \
         permission denied",
    );
    let (_, denied) = failure(&records, "denied");
    assert_eq!(
        denied,
        json!({"stdout": "", "stderr": "Error: permission denied\n", "exit_code": 2})
    );
    assert_eq!(
        calls.lock().unwrap()[0].command,
        ["bao", "operator", "step-down"]
    );
}

#[test]
fn logs_return_the_tail_of_a_pods_log_from_the_node() {
    let kube = Kube::new("kube-logs");
    kube.apply(&pod("openbao-0", &json!({"app": "openbao"})));
    let sb = Sandbox::new();
    // The container runtime's log format, which the node serves: time, stream, tag, line.
    let line = |at: chrono::DateTime<chrono::Utc>, stream: &str, text: &str| {
        format!(
            "{} {stream} F {text}\n",
            at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        )
    };
    let now = chrono::Utc::now();
    let log = [
        line(now - chrono::Duration::hours(2), "stdout", "line 1"),
        line(now, "stdout", "line 2"),
        line(now, "stderr", "line 3"),
        line(now, "stdout", "line 4"),
    ]
    .concat();
    let current = sb.write("node/openbao-0.log", &log);
    let previous = sb.write(
        "node/openbao-0.previous.log",
        &line(
            now - chrono::Duration::minutes(1),
            "stdout",
            "before the restart",
        ),
    );
    kube.apply(
        &json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                       "metadata": {"name": "openbao-0"},
                       "spec": {"logs": [{"containers": ["main"],
                                          "logsFile": current.to_str().unwrap(),
                                          "previousLogsFile": previous.to_str().unwrap()}]}}),
    );
    kube.wait_until("openbao-0 to run", Duration::from_secs(60), |k| {
        k.get("pod", "openbao-0").is_some_and(|p| ready(&p))
    });
    let (out, records) = kube.run(
        &sb,
        r"
runbook: kube-logs
steps:
  - id: all
    kube: { logs: openbao-0, namespace: $NS, kubeconfig: $KC }
  - id: tail
    kube: { logs: openbao-0, namespace: $NS, container: main, tail: 2, kubeconfig: $KC }
  - id: recent
    kube: { logs: openbao-0, namespace: $NS, since: 5m, kubeconfig: $KC }
  - id: previous
    kube: { logs: openbao-0, namespace: $NS, previous: true, kubeconfig: $KC }
  - id: wrong
    kube: { logs: openbao-0, namespace: $NS, container: nope, kubeconfig: $KC }
",
        1,
    );
    assert_eq!(
        output(&records, "all"),
        json!({"text": "line 1\nline 2\nline 3\nline 4\n"})
    );
    assert_eq!(
        output(&records, "tail"),
        json!({"text": "line 3\nline 4\n"})
    );
    assert_eq!(
        output(&records, "recent"),
        json!({"text": "line 2\nline 3\nline 4\n"})
    );
    assert_eq!(
        output(&records, "previous"),
        json!({"text": "before the restart\n"})
    );
    assert_contains(
        &out,
        "failed reading logs of Pod kube-logs/openbao-0: container nope is not valid for pod \
         openbao-0 (400 BadRequest)",
    );
}

/// A kubeconfig for the cluster's API server with `user` (a kubeconfig `user:` mapping) and
/// the CA in `ca` (PEM).
fn kubeconfig_with(dir: &Path, file: &str, server: &str, ca: &[u8], user: &Value) -> PathBuf {
    use base64::Engine as _;
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "wrong", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "wrong",
    });
    let path = dir.join(file);
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// `openssl` with `args`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_credentials_are_a_401_naming_the_kubeconfig_and_an_unknown_server_ca_is_refused() {
    use base64::Engine as _;
    let kube = Kube::new("kube-401");
    let sb = Sandbox::new();
    let dir = sb.path();
    let server = kube.cluster.var("API_SERVER");
    let ca = std::fs::read(kube.cluster.dir.join("pki/ca.crt")).unwrap();
    // A client certificate for system:masters, signed by a CA the API server does not know.
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-subj",
            "/CN=other",
            "-days",
            "1",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "mallory.key",
            "-out",
            "mallory.csr",
            "-subj",
            "/O=system:masters/CN=mallory",
        ],
    );
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "mallory.csr",
            "-CA",
            "other-ca.crt",
            "-CAkey",
            "other-ca.key",
            "-set_serial",
            "7",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            "mallory.crt",
        ],
    );
    let b64 = |file: &str| {
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join(file)).unwrap())
    };
    let token = kubeconfig_with(
        dir,
        "token",
        &server,
        &ca,
        &json!({"token": "not-the-token"}),
    );
    let forged = kubeconfig_with(
        dir,
        "forged",
        &server,
        &ca,
        &json!({"client-certificate-data": b64("mallory.crt"),
                "client-key-data": b64("mallory.key")}),
    );
    let other_ca = std::fs::read(dir.join("other-ca.crt")).unwrap();
    let untrusted = kubeconfig_with(dir, "untrusted", &server, &other_ca, &json!({"token": "x"}));
    let (out, _) = kube.run(
        &sb,
        &format!(
            r"
runbook: kube-401
steps:
  - id: token
    kube: {{ get: ConfigMap, name: x, namespace: $NS, kubeconfig: {} }}
    continue_on_error: true
  - id: forged
    kube: {{ get: ConfigMap, name: x, namespace: $NS, kubeconfig: {} }}
    continue_on_error: true
  - id: untrusted
    kube: {{ get: ConfigMap, name: x, namespace: $NS, kubeconfig: {} }}
",
            token.display(),
            forged.display(),
            untrusted.display()
        ),
        1,
    );
    for file in [&token, &forged] {
        assert_contains(
            &out,
            &format!(
                "unauthorized: the Kubernetes API at {server} rejected the credentials from \
                 kubeconfig {} (context wrong) while getting ConfigMap kube-401/x (401 \
                 Unauthorized)",
                file.display()
            ),
        );
    }
    assert_contains(
        &out,
        &format!(
            "failed to reach the Kubernetes API at {server} while getting ConfigMap kube-401/x: \
             invalid peer certificate: UnknownIssuer"
        ),
    );
    // Said once, by the step: not again by the HTTP client's log without its context.
    assert!(
        !out.stderr.contains("failed with error"),
        "{}",
        out.explain("no log line of kube-client")
    );
}

#[test]
fn a_user_without_rights_is_forbidden_until_a_role_allows_it() {
    let kube = Kube::new("kube-rbac");
    kube.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "upgrade-status"}, "data": {"state": "Idle"}}));
    let alice = testbed("kubernetes.sh", &["user", kube.cluster.path(), "alice"]);
    let alice = alice.trim();
    let yaml = format!(
        r"
runbook: kube-rbac
steps:
  - id: read
    kube: {{ get: ConfigMap, name: upgrade-status, namespace: $NS, kubeconfig: {alice} }}
  - id: write
    kube: {{ patch: ConfigMap, name: upgrade-status, namespace: $NS, kubeconfig: {alice},
            merge: {{ data: {{ state: Upgrading }} }} }}
"
    );
    let sb = Sandbox::new();
    let (out, records) = kube.run(&sb, &yaml, 1);
    let message = "forbidden getting ConfigMap kube-rbac/upgrade-status: configmaps \
                   \"upgrade-status\" is forbidden: User \"alice\" cannot get resource \
                   \"configmaps\" in API group \"\" in the namespace \"kube-rbac\" (403)";
    assert_contains(&out, message);
    assert_eq!(failure(&records, "read").1["reason"], "Forbidden");

    // A Role that lets alice read ConfigMaps: the read goes through, the write is still refused.
    kube.ok(&[
        "create",
        "role",
        "reader",
        "-n",
        "kube-rbac",
        "--verb=get,list",
        "--resource=configmaps",
    ]);
    kube.ok(&[
        "create",
        "rolebinding",
        "alice-reads",
        "-n",
        "kube-rbac",
        "--role=reader",
        "--user=alice",
    ]);
    let sb = Sandbox::new();
    let (out, records) = kube.run(&sb, &yaml, 1);
    assert_eq!(output(&records, "read")["data"]["state"], "Idle");
    assert_contains(
        &out,
        "forbidden patching ConfigMap kube-rbac/upgrade-status (merge): configmaps \
         \"upgrade-status\" is forbidden: User \"alice\" cannot patch resource \"configmaps\" in \
         API group \"\" in the namespace \"kube-rbac\" (403)",
    );
    assert_eq!(
        kube.get("configmap", "upgrade-status").unwrap()["data"]["state"],
        "Idle"
    );
}

#[test]
fn the_kubeconfig_comes_from_the_environment_and_the_context_gives_the_namespace() {
    let kube = Kube::new("kube-env");
    kube.ok(&[
        "create",
        "configmap",
        "from-env",
        "-n",
        "kube-env",
        "--from-literal=k=v",
    ]);
    // The admin kubeconfig with two more contexts: one whose namespace is kube-env.
    let mut config: Value =
        serde_json::from_str(&kube.ok(&["config", "view", "--raw", "-o", "json"])).unwrap();
    let context = config["contexts"][0]["context"].clone();
    let mut ops = context.clone();
    ops["namespace"] = json!("kube-env");
    config["contexts"] = json!([{"name": "ops", "context": ops},
                                {"name": "other", "context": context}]);
    config["current-context"] = json!("ops");
    let sb = Sandbox::new();
    let path = sb.write("kubeconfig", &config.to_string());
    sb.write(
        "kube.yaml",
        r"
runbook: kube-env
steps:
  - id: cm
    kube: { get: cm, name: from-env }
  - id: other
    kube: { list: ConfigMap, context: other, labels: { never: set } }
",
    );
    sb.cmd(&["run", "kube.yaml"])
        .env_remove("KUBECONFIG")
        .env("RUNBOOK_KUBECONFIG", &path)
        .ok();
    let records = sb.records(&sb.only_run());
    assert_eq!(output(&records, "cm")["metadata"]["namespace"], "kube-env");
    assert_eq!(output(&records, "other"), json!({"items": []}));
}

/// A namespaced custom resource definition of `kind` in `group` (plural: lower-case `kind`
/// and an s). Tests that run at once use different kinds: a kind served by two groups must be
/// named with its `api_version`.
fn crd(group: &str, kind: &str) -> Value {
    let singular = kind.to_lowercase();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": format!("{singular}s.{group}")},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"kind": kind, "plural": format!("{singular}s"),
                              "singular": singular, "listKind": format!("{kind}List")},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object",
                                      "x-kubernetes-preserve-unknown-fields": true}}}]}})
}

fn install_crd(kube: &Kube, group: &str, kind: &str) {
    kube.apply(&crd(group, kind));
    let name = format!("crd/{}s.{group}", kind.to_lowercase());
    kube.ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        &name,
    ]);
}

#[test]
fn a_kind_that_is_not_built_in_is_found_by_discovery() {
    let kube = Kube::new("kube-discovery");
    install_crd(&kube, "discovery.runbook.test", "Widget");
    kube.apply(
        &json!({"apiVersion": "discovery.runbook.test/v1", "kind": "Widget",
                       "metadata": {"name": "w1"}, "spec": {"size": 1}}),
    );
    let sb = Sandbox::new();
    let (_, records) = kube.run(
        &sb,
        r"
runbook: kube-discovery
steps:
  - id: pinned
    kube: { get: Widget, api_version: discovery.runbook.test/v1, name: w1, namespace: $NS, kubeconfig: $KC }
  - id: searched
    kube: { patch: Widget, name: w1, namespace: $NS, merge: { spec: { size: 2 } }, kubeconfig: $KC }
  - id: listed
    kube: { list: widgets, namespace: $NS, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "pinned")["spec"]["size"], 1);
    assert_eq!(output(&records, "searched")["spec"]["size"], 2);
    assert_eq!(
        output(&records, "listed")["items"][0]["apiVersion"],
        "discovery.runbook.test/v1"
    );
    assert_eq!(
        kube.get("widgets.discovery.runbook.test", "w1").unwrap()["spec"]["size"],
        2
    );
}

/// The users' "stuck-finalizer force cleanup" (guide 002): a namespace that is being deleted
/// but still holds objects with finalizers nobody will clear — list what holds it, take the
/// finalizers away, wait for it to go.
const FORCE_CLEANUP: &str = r#"
runbook: force-cleanup-namespace
description: Remove the finalizers that keep a Terminating namespace from going away
params:
  namespace: { type: string, required: true }
  kubeconfig: { type: string, required: true }
steps:
  - id: terminating
    kube: { get: Namespace, name: "{{params.namespace}}", kubeconfig: "{{params.kubeconfig}}" }
    assert: 'output.status.phase == "Terminating"'
    message: "{{params.namespace}} is not being deleted; delete it the ordinary way first"
  - id: everything
    kube: { list: "*", namespace: "{{params.namespace}}", kubeconfig: "{{params.kubeconfig}}" }
  - id: strip
    foreach: 'steps.everything.output.items.filter(|o| "finalizers" in o.metadata)'
    as: held
    steps:
      - id: finalizers
        kube: { patch: "{{held.kind}}", api_version: "{{held.apiVersion}}",
                name: "{{held.metadata.name}}", namespace: "{{params.namespace}}",
                merge: { metadata: { finalizers: null } }, kubeconfig: "{{params.kubeconfig}}" }
  - id: gone
    kube: { wait: Namespace, name: "{{params.namespace}}", for: deleted, every: 500ms,
            timeout: 3m, kubeconfig: "{{params.kubeconfig}}" }
"#;

#[test]
fn a_namespace_stuck_on_finalizers_is_cleaned_up_by_a_runbook() {
    let kube = Kube::new("kube-stuck");
    install_crd(&kube, "stuck.runbook.test", "Sprocket");
    let finalizers = json!(["runbook.test/never"]);
    kube.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "held", "finalizers": finalizers}}));
    kube.apply(&json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "kept",
                                    "finalizers": ["runbook.test/never", "runbook.test/also"]},
                       "stringData": {"k": "v"}}));
    kube.apply(
        &json!({"apiVersion": "stuck.runbook.test/v1", "kind": "Sprocket",
                       "metadata": {"name": "s1", "finalizers": finalizers},
                       "spec": {"size": 1}}),
    );
    kube.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "free"}}));

    // A runbook that refuses a namespace that is not being deleted.
    let sb = Sandbox::new();
    sb.write("cleanup.yaml", FORCE_CLEANUP);
    let kubeconfig = format!("kubeconfig={}", kube.kubeconfig().display());
    let out = sb
        .cmd(&[
            "run",
            "cleanup.yaml",
            "-p",
            "namespace=kube-stuck",
            "-p",
            &kubeconfig,
        ])
        .code(1);
    assert_contains(
        &out,
        "kube-stuck is not being deleted; delete it the ordinary way first",
    );

    kube.ok(&["delete", "namespace", "kube-stuck", "--wait=false"]);
    // The namespace controller deletes what it can and then reports what holds it.
    let condition = |k: &Kube, kind: &str| -> Option<String> {
        k.get_in("namespace", "", "kube-stuck")?["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")
            .and_then(|c| c["message"].as_str().map(str::to_owned))
    };
    kube.wait_until(
        "the namespace controller to report the finalizers",
        Duration::from_secs(60),
        |k| condition(k, "NamespaceFinalizersRemaining").is_some(),
    );
    assert_eq!(
        condition(&kube, "NamespaceFinalizersRemaining").unwrap(),
        "Some content in the namespace has finalizers remaining: runbook.test/also in 1 \
         resource instances, runbook.test/never in 3 resource instances"
    );
    let ns = kube.get_in("namespace", "", "kube-stuck").unwrap();
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(
        kube.get("configmap", "free").is_none(),
        "what had no finalizer is gone"
    );
    let held = kube
        .get("configmap", "held")
        .expect("held by its finalizer");
    assert!(held["metadata"]["deletionTimestamp"].is_string());

    let sb = Sandbox::new();
    sb.write("cleanup.yaml", FORCE_CLEANUP);
    sb.cmd(&[
        "run",
        "cleanup.yaml",
        "-p",
        "namespace=kube-stuck",
        "-p",
        &kubeconfig,
    ])
    .ok();
    let records = sb.records(&sb.only_run());
    let patched: Vec<String> = records
        .iter()
        .filter(|r| r["event"] == "step_succeeded")
        .filter(|r| r["path"].as_str().is_some_and(|p| p.starts_with("strip[")))
        .map(|r| {
            format!(
                "{} {}",
                r["output"]["kind"].as_str().unwrap(),
                name(&r["output"])
            )
        })
        .collect();
    assert_eq!(patched, ["ConfigMap held", "Secret kept", "Sprocket s1"]);
    assert!(
        kube.get_in("namespace", "", "kube-stuck").is_none(),
        "the namespace is gone"
    );
    assert!(kube.get("configmap", "held").is_none());
    assert!(kube.get("sprockets.stuck.runbook.test", "s1").is_none());
}

#[test]
fn a_runbook_with_kube_mistakes_is_refused_at_load_time() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r#"
runbook: kube-bad
steps:
  - id: a
    kube: { patch: StatefulSet, name: x, merge: {}, json: [] }
  - id: b
    kube: { wait: StatefulSet, name: x, for: healthy }
  - id: c
    kube: { get: Pod, name: x, replicas: 3 }
  - id: d
    kube: { list: "*" }
"#,
    );
    let out = sb.cmd(&["check", "bad.yaml"]).code(2);
    for text in [
        "`patch` takes one of `merge`, `json` or `strategic`, not `merge` and `json`",
        "`for` must be one of ready, rollout-complete, deleted, job-complete",
        "`replicas` does not apply to `get`",
        "`list: \"*\"` needs `namespace`: it lists every kind in one namespace",
    ] {
        assert_contains(&out, text);
    }
}
