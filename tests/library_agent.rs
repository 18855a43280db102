//! The GPU-cluster operator's runbooks (`install-cluster-agent`, `reregister-cluster-agent`,
//! `uninstall-cluster-agent`) against a real Kubernetes control plane (`testbeds/kubernetes.sh`:
//! the real API server, controller-manager and scheduler, kwok nodes) and the real helm, with
//! the stand-in chart `testbeds/charts/nvca-operator` and the stand-in operator
//! `testbeds/nvca-operator.py` (the operator cannot run here: see that file for what it does).
//! What the tests claim is read back from the API server with kubectl and from helm, never
//! from the runbooks' output.
//!
//! The tests of this file share one control plane and take turns (the operator's CRDs and
//! namespaces are cluster-wide); each starts from a cluster without the operator.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, repo};
use crate::support::kubernetes::{kubectl, kubectl_json};
use crate::support::{Cmd, Output, Sandbox, wait_for};

const NS: &str = "nvca-operator";
const AGENT_NS: &str = "nvca-system";
const WORKLOAD_NS: &str = "nvcf-backend";
const RELEASE: &str = "nvca-operator";
const CRDS: [&str; 3] = [
    "nvcfbackends.nvcf.nvidia.io",
    "miniservices.nvcf.nvidia.io",
    "storagerequests.nvcf.nvidia.io",
];

/// The control plane of this file's tests, created by the first that needs it; with the kwok
/// `ClusterExec` that makes `kubectl exec` into an operator pod run a local command (the
/// bootstrap CLI of the stand-in) as the pod's process would.
fn cluster() -> Arc<Cluster> {
    static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(Cluster::kubernetes(&["--nodes", "1"]));
    let exec = json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterExec",
        "metadata": {"name": "nvca-operator"},
        "spec": {"selector": {"matchNamespaces": [NS]},
                 "execs": [{"local": {"workDir": cluster.path(), "envs": [
                     {"name": "NVCA_TESTBED_CLUSTER", "value": cluster.path()},
                     {"name": "POD_NAMESPACE", "value": NS}]}}]}
    });
    kubectl(&cluster, &["apply", "-f", "-"], Some(&exec.to_string()));
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// One test at a time on the shared cluster.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stand-in operator, running until dropped.
struct Operator {
    child: Child,
}

impl Operator {
    fn start(cluster: &Cluster) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.dir.join("nvca-operator.log"))
            .expect("the operator's log");
        let child = Command::new("python3")
            .arg(repo().join("testbeds/nvca-operator.py"))
            .args(["controller", "--cluster", cluster.path(), "--namespace", NS])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start testbeds/nvca-operator.py");
        Self { child }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of the bootstrap CLI in the operator pod (through kwok's `ClusterExec`).
fn bootstrap_command() -> String {
    format!(
        "bootstrap_command={},bootstrap",
        repo().join("testbeds/nvca-operator.py").display()
    )
}

/// Runs a tool of the cluster; its output whatever the exit code.
fn tool(cluster: &Cluster, name: &str, args: &[&str]) -> std::process::Output {
    Command::new(cluster.var(name))
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// Removes whatever an earlier test left of the operator (nothing, when it passed).
fn reset(cluster: &Cluster) {
    tool(
        cluster,
        "HELM",
        &[
            "uninstall",
            RELEASE,
            "-n",
            NS,
            "--ignore-not-found",
            "--wait",
        ],
    );
    let stuck = tool(
        cluster,
        "KUBECTL",
        &[
            "get",
            "nvcfbackends,miniservices,storagerequests",
            "-A",
            "-o",
            "json",
        ],
    );
    if let Ok(list) = serde_json::from_slice::<Value>(&stuck.stdout) {
        for o in list["items"].as_array().into_iter().flatten() {
            let kind = format!(
                "{}.nvcf.nvidia.io",
                o["kind"].as_str().unwrap_or_default().to_lowercase()
            );
            let (name, ns) = (&o["metadata"]["name"], &o["metadata"]["namespace"]);
            tool(
                cluster,
                "KUBECTL",
                &[
                    "patch",
                    &kind,
                    name.as_str().unwrap_or_default(),
                    "-n",
                    ns.as_str().unwrap_or_default(),
                    "--type",
                    "merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ],
            );
        }
    }
    let mut args = vec!["delete", "crd", "--ignore-not-found", "--wait"];
    args.extend(CRDS);
    tool(cluster, "KUBECTL", &args);
    tool(
        cluster,
        "KUBECTL",
        &[
            "delete",
            "ns",
            NS,
            AGENT_NS,
            WORKLOAD_NS,
            "--ignore-not-found",
            "--wait",
        ],
    );
}

/// A `runbook` command against the cluster, with its helm and kubeconfig.
fn runbook(sb: &Sandbox, cluster: &Cluster, helm: Option<&PathBuf>, args: &[&str]) -> Cmd {
    sb.cmd(args)
        .env(
            "RUNBOOK_HELM",
            helm.map_or_else(|| PathBuf::from(cluster.var("HELM")), Clone::clone),
        )
        .env("RUNBOOK_KUBECONFIG", cluster.kubeconfig())
        .env_remove("KUBECONFIG")
}

fn install(sb: &Sandbox, cluster: &Cluster) -> Output {
    let values = sb.write(
        "nvca-operator-values.yaml",
        "ngcConfig:\n  clusterSource: self-managed\n  serviceKey: unused\n  clusterName: gpu-a\n",
    );
    let chart = repo().join("testbeds/charts/nvca-operator");
    runbook(
        sb,
        cluster,
        None,
        &[
            "run",
            "install-cluster-agent",
            "--yes",
            "-p",
            &format!("chart={}", chart.display()),
            "-p",
            &format!("values={}", values.display()),
            "-p",
            "timeout=60s",
        ],
    )
    .ok()
}

fn uninstall_args(cluster: &Cluster, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "uninstall-cluster-agent", "--yes", "-p"]
        .map(str::to_owned)
        .to_vec();
    args.push(format!("kubectl={}", cluster.var("KUBECTL")));
    for p in extra {
        args.extend(["-p".to_owned(), (*p).to_owned()]);
    }
    args
}

fn get(cluster: &Cluster, what: &[&str]) -> Value {
    kubectl_json(
        cluster,
        &["get"].iter().chain(what).copied().collect::<Vec<_>>(),
    )
}

/// (clusterId, clusterGroupId) of the registration ConfigMap.
fn ids(cluster: &Cluster) -> (String, String) {
    let cm = get(
        cluster,
        &["configmap", "nvca-cluster-registration", "-n", NS],
    );
    let text = |k: &str| cm["data"][k].as_str().unwrap_or_default().to_owned();
    (text("clusterId"), text("clusterGroupId"))
}

/// The running, not deleting pods of a namespace.
fn running_pods(cluster: &Cluster, ns: &str) -> Vec<Value> {
    get(cluster, &["pods", "-n", ns])["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .cloned()
        .collect()
}

/// The value of env variable `name` in the first container of a pod template or pod spec.
fn env_of(spec: &Value, name: &str) -> String {
    spec["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

/// Whether `kubectl get ARGS` finds the objects (false on `NotFound`).
fn exists(cluster: &Cluster, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = tool(cluster, "KUBECTL", &all);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "kubectl get {args:?}: {err}"
    );
    false
}

/// Nothing of the operator is left: no release (helm), no CRD, none of its namespaces.
fn assert_nothing_left(cluster: &Cluster) {
    let releases = tool(cluster, "HELM", &["list", "-A", "-a", "-o", "json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&releases.stdout).expect("helm list JSON"),
        json!([]),
        "helm releases left"
    );
    let history = tool(cluster, "HELM", &["history", RELEASE, "-n", NS]);
    assert!(
        String::from_utf8_lossy(&history.stderr).contains("release: not found"),
        "helm history: {history:?}"
    );
    for crd in CRDS {
        assert!(!exists(cluster, &["crd", crd]), "CRD {crd} left");
    }
    for ns in [NS, AGENT_NS, WORKLOAD_NS] {
        assert!(!exists(cluster, &["namespace", ns]), "namespace {ns} left");
    }
}

/// The operator installed, read back: the release deployed, the operator pod running with every
/// container and the bootstrap init container completed, ids in the ConfigMap, the backend
/// resource with its finalizer and those ids, the agent Deployment and pod with them.
fn assert_installed(cluster: &Cluster) -> (String, String) {
    let status: Value = serde_json::from_slice(
        &tool(
            cluster,
            "HELM",
            &["status", RELEASE, "-n", NS, "-o", "json"],
        )
        .stdout,
    )
    .expect("helm status JSON");
    assert_eq!(status["info"]["status"], "deployed");
    let pods = running_pods(cluster, NS);
    assert_eq!(pods.len(), 1, "operator pods: {pods:#?}");
    let statuses = pods[0]["status"]["containerStatuses"]
        .as_array()
        .expect("statuses");
    assert_eq!(statuses.len(), 4);
    assert!(statuses.iter().all(|c| c["ready"] == true));
    let init = &pods[0]["status"]["initContainerStatuses"][0];
    assert_eq!(init["name"], "nvca-self-managed-bootstrap");
    assert_eq!(init["state"]["terminated"]["reason"], "Completed");
    let (id, group) = ids(cluster);
    assert!(
        is_uuid(&id) && is_uuid(&group) && id != group,
        "{id} {group}"
    );
    let backend = get(cluster, &["nvcfbackends", "gpu-a", "-n", NS]);
    assert_eq!(
        backend["metadata"]["finalizers"],
        json!(["nvcf.nvidia.io/agent-cleanup"])
    );
    assert_eq!(backend["status"]["clusterId"], id.as_str());
    assert_eq!(backend["status"]["clusterGroupId"], group.as_str());
    assert_eq!(
        backend["status"]["operatorPod"],
        pods[0]["metadata"]["name"]
    );
    let agent = get(cluster, &["deployment", "nvca", "-n", AGENT_NS]);
    assert_eq!(
        env_of(&agent["spec"]["template"]["spec"], "NVCF_CLUSTER_ID"),
        id
    );
    wait_for("the agent pod on the ids", Duration::from_secs(30), || {
        let pods = running_pods(cluster, AGENT_NS);
        pods.len() == 1 && env_of(&pods[0]["spec"], "NVCF_CLUSTER_ID") == id
    });
    (id, group)
}

#[test]
fn install_registers_the_cluster_and_the_operator_runs_the_agent_and_a_second_install_changes_nothing()
 {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let _operator = Operator::start(&cluster);
    let sb = Sandbox::new();

    install(&sb, &cluster);
    let (id, group) = assert_installed(&cluster);
    let pod = running_pods(&cluster, NS)[0]["metadata"]["uid"].clone();

    // Again: a new helm revision, the same registration, operator pod and backend.
    install(&sb, &cluster);
    assert_eq!(assert_installed(&cluster), (id, group));
    assert_eq!(running_pods(&cluster, NS)[0]["metadata"]["uid"], pod);
    let history: Value = serde_json::from_slice(
        &tool(
            &cluster,
            "HELM",
            &["history", RELEASE, "-n", NS, "-o", "json"],
        )
        .stdout,
    )
    .expect("helm history JSON");
    let states: Vec<&str> = history
        .as_array()
        .expect("revisions")
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(states, ["superseded", "deployed"]);

    runbook(
        &sb,
        &cluster,
        None,
        &uninstall_args(&cluster, &["delete_registration=true"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .ok();
    assert_nothing_left(&cluster);
}

#[test]
fn reregistration_gives_new_ids_that_only_the_restarted_operator_picks_up() {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let _operator = Operator::start(&cluster);
    let sb = Sandbox::new();
    install(&sb, &cluster);
    let (old_id, old_group) = assert_installed(&cluster);
    let old_pod = running_pods(&cluster, NS)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();

    runbook(
        &sb,
        &cluster,
        None,
        &[
            "run",
            "reregister-cluster-agent",
            "--yes",
            "-p",
            &bootstrap_command(),
            "-p",
            "timeout=60s",
        ],
    )
    .ok();

    // New ids in the ConfigMap, a new operator pod (its bootstrap completed again), and the
    // backend, the agent Deployment and the agent pod on the new ids.
    let (id, group) = assert_installed(&cluster);
    assert!(
        id != old_id && group != old_group,
        "ids unchanged: {id} {group}"
    );
    let pod = running_pods(&cluster, NS)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    assert_ne!(pod, old_pod, "the operator was not restarted");
    let deployment = get(&cluster, &["deployment", "nvca-operator", "-n", NS]);
    assert!(
        deployment["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{deployment:#}"
    );

    runbook(
        &sb,
        &cluster,
        None,
        &uninstall_args(&cluster, &["delete_registration=true"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .ok();
    assert_nothing_left(&cluster);
}

#[test]
fn uninstall_keeps_the_registration_for_a_reinstall_and_then_leaves_nothing() {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let _operator = Operator::start(&cluster);
    let sb = Sandbox::new();
    install(&sb, &cluster);
    let registered = assert_installed(&cluster);

    // The default keeps the registration ConfigMap (and its namespace); the rest is gone.
    runbook(
        &sb,
        &cluster,
        None,
        &uninstall_args(&cluster, &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .ok();
    assert_eq!(ids(&cluster), registered);
    assert!(!exists(&cluster, &["namespace", AGENT_NS]));
    assert!(!exists(&cluster, &["namespace", WORKLOAD_NS]));
    for crd in CRDS {
        assert!(!exists(&cluster, &["crd", crd]), "CRD {crd} left");
    }
    assert!(running_pods(&cluster, NS).is_empty());

    // A reinstall reuses the ids; then a full uninstall leaves nothing.
    install(&sb, &cluster);
    assert_eq!(assert_installed(&cluster), registered);
    runbook(
        &sb,
        &cluster,
        None,
        &uninstall_args(&cluster, &["delete_registration=true"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .ok();
    assert_nothing_left(&cluster);
}

#[test]
fn uninstall_is_refused_while_a_function_pod_runs_and_changes_nothing() {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let _operator = Operator::start(&cluster);
    let sb = Sandbox::new();
    install(&sb, &cluster);
    let registered = assert_installed(&cluster);
    kubectl(
        &cluster,
        &[
            "run",
            "fn-echo",
            "-n",
            WORKLOAD_NS,
            "--image",
            "registry.local/echo:1",
        ],
        None,
    );
    wait_for("the function pod to run", Duration::from_secs(30), || {
        running_pods(&cluster, WORKLOAD_NS).len() == 1
    });

    let args = uninstall_args(&cluster, &["delete_registration=true"]);
    let out = runbook(
        &sb,
        &cluster,
        None,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .code(1);
    assert!(
        out.stdout.contains("1 function pod(s) run in nvcf-backend")
            && out
                .stdout
                .contains("undeploy them through the NVCF API or CLI"),
        "{}",
        out.explain("the refusal")
    );
    // Nothing was touched.
    assert_eq!(assert_installed(&cluster), registered);
    assert!(
        get(&cluster, &["nvcfbackends", "gpu-a", "-n", NS])["metadata"]["deletionTimestamp"]
            .is_null()
    );

    // With the function undeployed, the uninstall goes through.
    kubectl(
        &cluster,
        &["delete", "pod", "fn-echo", "-n", WORKLOAD_NS, "--wait"],
        None,
    );
    runbook(
        &sb,
        &cluster,
        None,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .ok();
    assert_nothing_left(&cluster);
}

#[test]
fn a_stuck_finalizer_times_out_and_the_approved_force_cleanup_leaves_nothing() {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let operator = Operator::start(&cluster);
    let sb = Sandbox::new();
    install(&sb, &cluster);
    assert_installed(&cluster);
    // The operator stops (nobody will remove its finalizer), and a MiniService holds one too.
    drop(operator);
    let mini = json!({"apiVersion": "nvcf.nvidia.io/v1alpha1", "kind": "MiniService",
        "metadata": {"name": "cache", "namespace": AGENT_NS, "finalizers": ["nvcf.nvidia.io/cleanup"]}});
    kubectl(&cluster, &["apply", "-f", "-"], Some(&mini.to_string()));

    let args = uninstall_args(
        &cluster,
        &["delete_registration=true", "cleanup_timeout=3s"],
    );
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.retain(|a| *a != "--yes");
    let out = runbook(&sb, &cluster, None, &args).code(3);
    assert!(
        out.stderr.contains("did not release the backend")
            || out.stdout.contains("did not release the backend"),
        "{}",
        out.explain("the force gate")
    );
    // Parked at the gate: the backend is stuck on its finalizer, nothing else removed.
    let backend = get(&cluster, &["nvcfbackends", "gpu-a", "-n", NS]);
    assert!(
        backend["metadata"]["deletionTimestamp"].is_string(),
        "{backend:#}"
    );
    assert_eq!(
        backend["metadata"]["finalizers"],
        json!(["nvcf.nvidia.io/agent-cleanup"])
    );
    assert!(exists(&cluster, &["deployment", "nvca", "-n", AGENT_NS]));
    assert_eq!(
        tool(&cluster, "HELM", &["status", RELEASE, "-n", NS])
            .status
            .code(),
        Some(0),
        "the release was uninstalled before the gate"
    );

    let run = sb.newest_run();
    runbook(
        &sb,
        &cluster,
        None,
        &["approve", &run, "--comment", "operator gone"],
    )
    .ok();
    assert_nothing_left(&cluster);
}

#[test]
fn an_uninstall_killed_in_helm_uninstall_resumes_without_running_it_twice() {
    let cluster = cluster();
    let _turn = turn();
    reset(&cluster);
    let _operator = Operator::start(&cluster);
    let sb = Sandbox::new();
    install(&sb, &cluster);
    assert_installed(&cluster);

    // A helm that logs every call, and holds after a real `uninstall` until told to go on.
    let calls = sb.path().join("helm-calls");
    let hold = sb.path().join("hold");
    let held = sb.path().join("held");
    std::fs::write(&hold, "").expect("hold");
    let helm = sb.write(
        "helm",
        &format!(
            "#!/bin/sh\necho \"$1\" >> {calls}\n{real} \"$@\"\nrc=$?\n\
             if [ \"$1\" = uninstall ] && [ -e {hold} ]; then\n  touch {held}\n  \
             i=0; while [ -e {hold} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\nfi\nexit $rc\n",
            calls = calls.display(),
            real = cluster.var("HELM"),
            hold = hold.display(),
            held = held.display(),
        ),
    );
    std::fs::set_permissions(&helm, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let args = uninstall_args(&cluster, &["delete_registration=true"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = runbook(&sb, &cluster, Some(&helm), &args).spawn();
    wait_for(
        "helm uninstall to have run",
        Duration::from_secs(120),
        || held.exists(),
    );
    child.kill().expect("SIGKILL runbook");
    let _ = child.wait();
    std::fs::remove_file(&hold).expect("release the hold");
    // The release is gone; the run does not know it.
    assert_eq!(
        tool(&cluster, "HELM", &["status", RELEASE, "-n", NS])
            .status
            .code(),
        Some(1)
    );
    let run = sb.newest_run();
    assert_ne!(sb.status(&run)["state"], "succeeded", "killed mid-run");

    runbook(&sb, &cluster, Some(&helm), &["resume", &run]).ok();
    assert_eq!(sb.status(&run)["state"], "succeeded");
    let uninstalls = std::fs::read_to_string(&calls)
        .expect("helm calls")
        .lines()
        .filter(|l| *l == "uninstall")
        .count();
    assert_eq!(uninstalls, 1, "helm uninstall ran {uninstalls} times");
    let records = sb.records(&run);
    let resumed = records
        .iter()
        .rposition(|r| r["event"] == "resumed")
        .expect("resumed");
    let after: Vec<&str> = records[resumed..]
        .iter()
        .filter(|r| r["path"] == "uninstall")
        .map(|r| r["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(after, ["step_skipped"], "{:#?}", &records[resumed..]);
    assert_nothing_left(&cluster);
}

#[test]
fn the_operator_chart_lints_clean_and_refuses_a_missing_service_key() {
    let cluster = cluster();
    let chart = repo().join("testbeds/charts/nvca-operator");
    let chart = chart.to_str().expect("utf-8 path");
    let lint = |args: &[&str]| {
        Command::new(cluster.var("HELM"))
            .args(["lint", "--strict", chart])
            .args(args)
            .output()
            .expect("helm lint")
    };
    let ok = lint(&["--set", "ngcConfig.serviceKey=unused"]);
    assert!(ok.status.success(), "{ok:?}");
    // The real chart's schema requires it, though self-managed mode does not use it (helm
    // lint only notes a template's `fail`; rendering it fails).
    let missing = Command::new(cluster.var("HELM"))
        .args(["template", "nvca-operator", chart])
        .output()
        .expect("helm template");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("ngcConfig.serviceKey is required"),
        "{missing:?}"
    );
}
