//! `install-infrastructure` (phase 1 of our users' install guide) end to end, with the real
//! helm v3 on a real Kubernetes control plane (`testbeds/kubernetes.sh`: etcd, kube-apiserver,
//! the controller-manager and scheduler; kwok nodes play the kubelet) and the stand-in charts
//! of `testbeds/charts`. The guide's checks read real servers where the testbed can make them
//! real:
//!
//! - `kubectl exec openbao-server-N -- bao status`: kwok runs the command locally (a kwok
//!   `Exec` object per pod) against the real OpenBao server N+1 of a 3-node Raft cluster
//!   (`testbeds/openbao.sh`, initialized and unsealed by the testbed, not by the chart's Job);
//! - `kubectl exec cassandra-0 -- nodetool status`: the real `nodetool` of a real Cassandra
//!   (`testbeds/cassandra.sh`, one node: the guide's `replicaCount: 1` for local development);
//! - `kubectl logs nats-0 -c nats`: the log of a real NATS server of a 3-node cluster
//!   (a kwok `Logs` object), where the guide looks for the cluster having formed;
//! - the Cassandra initialize Job's pods run on the node agent's node (`testbeds/node-agent`)
//!   as real processes: the first attempt of each install fails (exit 1, as while the ring
//!   forms), the next runs a real `cqlsh` that creates a keyspace.
//!
//! The server pods themselves (their Ready state) and the other hook Jobs are kwok's; the
//! unseal Secret is the stand-in chart's post-install hook object (the real Job writes it).
//! What the tests claim is read from helm, the API server and the servers, not from the run.
//!
//! The tests of this file share one control plane and one set of servers, each test in
//! namespaces of its own.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, repo};
use crate::support::node_agent::NodeAgent;
use crate::support::rollout::AGENT_NODE;
use crate::support::{Output, Sandbox, wait_for};

/// The control plane, the servers behind its pods, and the node agent.
struct Bed {
    k8s: Cluster,
    bao: Cluster,
    nats: Cluster,
    cassandra: Cluster,
    _agent: NodeAgent,
}

fn bed() -> Arc<Bed> {
    static SHARED: Mutex<Weak<Bed>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(bed) = shared.upgrade() {
        return bed;
    }
    let (k8s, bao, nats, cassandra) = std::thread::scope(|s| {
        let k8s = s.spawn(|| Cluster::kubernetes(&["--nodes", "2", "--agent-node", AGENT_NODE]));
        let bao = s.spawn(|| Cluster::openbao("2.6.2"));
        let nats = s.spawn(|| Cluster::nats("2.15"));
        let cassandra = s.spawn(|| Cluster::cassandra(&[]));
        (
            k8s.join().expect("kubernetes"),
            bao.join().expect("openbao"),
            nats.join().expect("nats"),
            cassandra.join().expect("cassandra"),
        )
    });
    // The initialize Job's pods: the first attempt of each namespace fails, as the real Job's
    // do while the ring forms; the next creates the keyspace on the real Cassandra.
    let init = cassandra.dir.join("initialize.sh");
    std::fs::write(
        &init,
        format!(
            "set -eu\nif mkdir \"{dir}/failed-once-$1\" 2>/dev/null; then\n  echo 'Cassandra is not ready yet' >&2; exit 1\nfi\nks=\"init_$(echo \"$1\" | tr - _)\"\nexec bash {script} cqlsh {dir} -e \"CREATE KEYSPACE IF NOT EXISTS $ks WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}\"\n",
            dir = cassandra.path(),
            script = repo().join("testbeds/cassandra.sh").display(),
        ),
    )
    .expect("write initialize.sh");
    let agent = NodeAgent::start(
        &k8s,
        &json!({"backends": [{
            "name": "cassandra-initialize",
            "selector": {"labels": {"app.kubernetes.io/component": "initialization"}},
            "command": ["bash", init.to_str().expect("utf-8"), "{namespace}"],
            "log": format!("{}/initialize-{{pod}}.log", cassandra.path()),
        }]}),
    );
    let bed = Arc::new(Bed {
        k8s,
        bao,
        nats,
        cassandra,
        _agent: agent,
    });
    *shared = Arc::downgrade(&bed);
    bed
}

/// One install's namespaces and what backs their pods.
struct Install {
    bed: Arc<Bed>,
    nats: String,
    vault: String,
    cass: String,
    sb: Sandbox,
}

impl Install {
    /// Namespaces `<prefix>-nats`, `-vault`, `-cass`, with the kwok objects that make the
    /// guide's `exec` and `logs` reach the real servers, and the values files.
    fn new(prefix: &str) -> Self {
        let bed = bed();
        let install = Self {
            nats: format!("{prefix}-nats"),
            vault: format!("{prefix}-vault"),
            cass: format!("{prefix}-cass"),
            bed,
            sb: Sandbox::new(),
        };
        for ns in [&install.nats, &install.vault, &install.cass] {
            install.kubectl(&["create", "namespace", ns]);
        }
        let bin = |var: &str| {
            Path::new(&install.bed.bao.var(var))
                .parent()
                .expect("bin dir")
                .to_str()
                .expect("utf-8")
                .to_owned()
        };
        let path = format!("{}:/usr/bin:/bin", bin("BAO_BIN_2_6_2"));
        for n in 0..3 {
            let addr = install.bed.bao.var(&format!("BAO_ADDR_{}", n + 1));
            install.apply(&exec_object(
                &format!("openbao-server-{n}"),
                &install.vault,
                &[("PATH", &path), ("BAO_ADDR", &addr)],
            ));
        }
        let tools = install.sb.path().join("tools");
        std::fs::create_dir_all(&tools).expect("mkdir tools");
        let nodetool = tools.join("nodetool");
        std::fs::write(
            &nodetool,
            format!(
                "#!/bin/bash\nexec bash {} nodetool {} \"$@\"\n",
                repo().join("testbeds/cassandra.sh").display(),
                install.bed.cassandra.path()
            ),
        )
        .expect("write nodetool");
        std::fs::set_permissions(
            &nodetool,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod nodetool");
        let path = format!("{}:/usr/bin:/bin", tools.display());
        install.apply(&exec_object(
            "cassandra-0",
            &install.cass,
            &[("PATH", &path)],
        ));
        // kwok serves a log file in a container runtime's (CRI) format: the real server's
        // lines, each with a timestamp and its stream.
        let log = install.sb.path().join("nats-0.log");
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let real = std::fs::read_to_string(install.bed.nats.dir.join("n1.log")).expect("n1.log");
        let mut cri = String::new();
        for line in real.lines() {
            writeln!(cri, "{at} stderr F {line}").expect("a String takes every write");
        }
        std::fs::write(&log, cri).expect("write the CRI log");
        install.apply(&json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
            "metadata": {"name": "nats-0", "namespace": install.nats},
            "spec": {"logs": [{"containers": ["nats"], "logsFile": log.to_str().expect("utf-8")}]}}));
        install.sb.write("nats-values.yaml", "replicaCount: 3\n");
        install.sb.write("openbao-values.yaml", "replicaCount: 3\n");
        install.sb.write(
            "cassandra-values.yaml",
            &format!(
                "replicaCount: 1\ninitialization:\n  nodeSelector: {{kubernetes.io/hostname: {AGENT_NODE}}}\n  tolerations:\n    - {{key: runbook.testbed/agent-node, operator: Equal, value: {AGENT_NODE}, effect: NoSchedule}}\n"
            ),
        );
        install
    }

    fn tool(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.bed.k8s.var(tool))
            .args(args)
            .arg("--kubeconfig")
            .arg(self.bed.k8s.kubeconfig())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let out = self.tool("KUBECTL", args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, tool: &str, args: &[&str]) -> Value {
        let out = self.tool(tool, args);
        assert!(
            out.status.success(),
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn apply(&self, object: &Value) {
        let file = self.sb.write(
            &format!("obj-{}.json", rand_name()),
            &serde_json::to_string(object).expect("json"),
        );
        self.kubectl(&["apply", "-f", file.to_str().expect("utf-8")]);
    }

    fn get(&self, kind: &str, name: &str, ns: &str) -> Value {
        self.json("KUBECTL", &["get", kind, name, "-n", ns, "-o", "json"])
    }

    /// `helm history`: (revision, status) of each revision; empty when there is no release.
    fn history(&self, release: &str, ns: &str) -> Vec<(u64, String)> {
        let out = self.tool("HELM", &["history", release, "-n", ns, "-o", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .expect("json")
            .as_array()
            .expect("list")
            .iter()
            .map(|r| {
                (
                    r["revision"].as_u64().expect("revision"),
                    r["status"].as_str().expect("status").to_owned(),
                )
            })
            .collect()
    }

    /// `runbook run install-infrastructure` with this install's charts, values and namespaces.
    fn cmd(&self, extra: &[&str]) -> crate::support::Cmd {
        let charts = repo().join("testbeds/charts");
        let p = |k: &str, v: &str| format!("{k}={v}");
        let values = |f: &str| self.sb.path().join(f).to_str().expect("utf-8").to_owned();
        let mut args: Vec<String> = vec!["run".into(), "install-infrastructure".into()];
        for (k, v) in [
            ("nats_chart", charts.join("nats").display().to_string()),
            (
                "openbao_chart",
                charts.join("openbao").display().to_string(),
            ),
            (
                "cassandra_chart",
                charts.join("cassandra").display().to_string(),
            ),
            ("nats_values", values("nats-values.yaml")),
            ("openbao_values", values("openbao-values.yaml")),
            ("cassandra_values", values("cassandra-values.yaml")),
            ("nats_namespace", self.nats.clone()),
            ("openbao_namespace", self.vault.clone()),
            ("cassandra_namespace", self.cass.clone()),
            ("timeout", "3m".into()),
            ("verify_timeout", "2m".into()),
        ] {
            args.push("-p".into());
            args.push(p(k, &v));
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.sb
            .cmd(&args)
            .env("RUNBOOK_HELM", self.bed.k8s.var("HELM"))
            .env("RUNBOOK_KUBECONFIG", self.bed.k8s.kubeconfig())
            .env_remove("KUBECONFIG")
    }

    /// The three releases' `helm history`.
    fn histories(&self) -> [Vec<(u64, String)>; 3] {
        [
            self.history("nats", &self.nats),
            self.history("openbao-server", &self.vault),
            self.history("cassandra", &self.cass),
        ]
    }

    /// The end state of a good install, read from helm, the API server and the servers.
    fn assert_installed(&self) {
        for (release, ns) in [
            ("nats", &self.nats),
            ("openbao-server", &self.vault),
            ("cassandra", &self.cass),
        ] {
            let status = self.json("HELM", &["status", release, "-n", ns, "-o", "json"]);
            assert_eq!(
                status["info"]["status"], "deployed",
                "{release}: {status:#}"
            );
            let sts = self.get("statefulset", release, ns);
            assert_eq!(
                sts["status"]["readyReplicas"], sts["spec"]["replicas"],
                "{release}: {sts:#}"
            );
        }
        for job in ["initialize-cluster", "migrations"] {
            let j = self.get("job", &format!("openbao-server-{job}"), &self.vault);
            assert!(complete(&j), "{j:#}");
        }
        assert!(complete(&self.get(
            "job",
            "cassandra-migrations",
            &self.cass
        )));
        let init = self.get("job", "cassandra-initialize-cluster", &self.cass);
        assert!(complete(&init), "{init:#}");
        assert_eq!(init["status"]["succeeded"], 1, "{init:#}");
        // The unseal Secret the auto-unseal sidecar reads.
        self.get("secret", "openbao-server-unseal", &self.vault);
        // Every OpenBao server behind a pod is initialized and unsealed (asked of the server).
        for n in 1..=3 {
            let url = format!(
                "{}/v1/sys/seal-status",
                self.bed.bao.var(&format!("BAO_ADDR_{n}"))
            );
            let seal = crate::support::clusters::get_json(&crate::support::clusters::http(), &url);
            assert_eq!(
                (seal["initialized"].as_bool(), seal["sealed"].as_bool()),
                (Some(true), Some(false)),
                "{url}: {seal}"
            );
        }
        // The initialize Job's successful attempt created its keyspace on the real Cassandra.
        let keyspaces = crate::support::clusters::testbed(
            "cassandra.sh",
            &[
                "cqlsh",
                self.bed.cassandra.path(),
                "-e",
                "DESCRIBE KEYSPACES",
            ],
        );
        let ks = format!("init_{}", self.cass.replace('-', "_"));
        assert!(keyspaces.contains(&ks), "{ks} not in {keyspaces}");
    }

    /// The pods of the Cassandra initialize Job: (failed, succeeded).
    fn init_pods(&self) -> (usize, usize) {
        let pods = self.json(
            "KUBECTL",
            &[
                "get",
                "pods",
                "-n",
                &self.cass,
                "-l",
                "job-name=cassandra-initialize-cluster",
                "-o",
                "json",
            ],
        );
        let phases: Vec<&str> = pods["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|p| p["status"]["phase"].as_str().unwrap_or(""))
            .collect();
        (
            phases.iter().filter(|p| **p == "Failed").count(),
            phases.iter().filter(|p| **p == "Succeeded").count(),
        )
    }

    /// When the API server created an object (`metadata.creationTimestamp`).
    fn created(&self, kind: &str, name: &str, ns: &str) -> String {
        self.get(kind, name, ns)["metadata"]["creationTimestamp"]
            .as_str()
            .expect("creationTimestamp")
            .to_owned()
    }
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// A kwok `Exec` object: `exec` in `pod` runs the command locally with `envs`.
fn exec_object(pod: &str, ns: &str, envs: &[(&str, &str)]) -> Value {
    let envs: Vec<Value> = envs
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    json!({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Exec",
           "metadata": {"name": pod, "namespace": ns},
           "spec": {"execs": [{"local": {"envs": envs}}]}})
}

fn complete(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

fn states(h: &[(u64, String)]) -> Vec<(u64, &str)> {
    h.iter().map(|(r, s)| (*r, s.as_str())).collect()
}

fn assert_contains(out: &Output, needle: &str) {
    assert!(
        out.stdout.contains(needle) || out.stderr.contains(needle),
        "{}",
        out.explain(&format!("expected output containing {needle:?}"))
    );
}

#[test]
fn a_fresh_install_orders_nats_before_openbao_tolerates_a_failed_init_pod_and_a_second_run_is_harmless()
 {
    let install = Install::new("fresh");
    install.cmd(&["--yes"]).ok();
    install.assert_installed();
    for h in install.histories() {
        assert_eq!(states(&h), [(1, "deployed")]);
    }
    // One initialization attempt failed (the agent's process exited 1), the next completed,
    // and the install went on.
    assert_eq!(install.init_pods(), (1, 1));
    // OpenBao's release was created only after NATS was healthy: its first object is younger
    // than the moment the last NATS pod became Ready (times from the API server).
    let nats_ready = (0..3)
        .map(|n| {
            let pod = install.get("pod", &format!("nats-{n}"), &install.nats);
            pod["status"]["conditions"]
                .as_array()
                .expect("conditions")
                .iter()
                .find(|c| c["type"] == "Ready")
                .expect("Ready")["lastTransitionTime"]
                .as_str()
                .expect("time")
                .to_owned()
        })
        .max()
        .expect("three pods");
    let openbao_created = install.created("statefulset", "openbao-server", &install.vault);
    assert!(
        openbao_created >= nats_ready,
        "OpenBao's StatefulSet created at {openbao_created}, NATS Ready only at {nats_ready}"
    );
    // Cassandra went in alongside NATS, before OpenBao.
    let cassandra_created = install.created("statefulset", "cassandra", &install.cass);
    assert!(
        cassandra_created <= openbao_created,
        "{cassandra_created} > {openbao_created}"
    );

    // Again: every release gets one more revision (the guide's idempotent upgrade), nothing
    // is failed, the first-install Jobs are not run again.
    let init_uid =
        install.get("job", "openbao-server-initialize-cluster", &install.vault)["metadata"]["uid"]
            .clone();
    install.cmd(&["--yes"]).ok();
    for h in install.histories() {
        assert_eq!(states(&h), [(1, "superseded"), (2, "deployed")]);
    }
    assert_eq!(
        install.get("job", "openbao-server-initialize-cluster", &install.vault)["metadata"]["uid"],
        init_uid
    );
    assert_eq!(install.init_pods(), (1, 1));
    install.assert_installed();
}

#[test]
fn stale_resources_of_a_failed_openbao_install_are_removed_only_after_the_gate_is_approved() {
    let install = Install::new("stale");
    // A failed earlier install: its migrations Job failed, the release is `failed`, and the
    // hook objects (the unseal Secret, the Jobs) stay behind.
    let out = Command::new(install.bed.k8s.var("HELM"))
        .args(["upgrade", "--install", "openbao-server"])
        .arg(repo().join("testbeds/charts/openbao"))
        .args([
            "-n",
            &install.vault,
            "--wait",
            "--wait-for-jobs",
            "--timeout",
            "2m",
        ])
        .args(["--set", "migrations.fail=true"])
        .arg("--kubeconfig")
        .arg(install.bed.k8s.kubeconfig())
        .output()
        .expect("helm");
    assert!(!out.status.success(), "the failed install succeeded");
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [(1, "failed")]
    );
    let stale_secret =
        install.get("secret", "openbao-server-unseal", &install.vault)["metadata"]["uid"].clone();

    // Without --yes the run parks at the gate, naming what it would delete; nothing is gone.
    let out = install.cmd(&[]).code(3);
    assert_contains(&out, "release openbao-server (failed, revision 1)");
    assert_contains(&out, "Secret openbao-server-unseal");
    assert_contains(&out, "Job openbao-server-migrations");
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [(1, "failed")]
    );
    assert_eq!(
        install.get("secret", "openbao-server-unseal", &install.vault)["metadata"]["uid"],
        stale_secret
    );
    install.get("job", "openbao-server-migrations", &install.vault);

    // Approved: the release is uninstalled, the leftovers deleted, and the install succeeds
    // (over the leftover unseal Secret it would fail: "already exists").
    let run = install.sb.only_run();
    install
        .sb
        .cmd(&["approve", &run])
        .env("RUNBOOK_HELM", install.bed.k8s.var("HELM"))
        .env("RUNBOOK_KUBECONFIG", install.bed.k8s.kubeconfig())
        .env_remove("KUBECONFIG")
        .ok();
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [(1, "deployed")]
    );
    let fresh =
        install.get("secret", "openbao-server-unseal", &install.vault)["metadata"]["uid"].clone();
    assert_ne!(fresh, stale_secret, "the leftover unseal Secret was kept");
    install.assert_installed();
}

/// Whether a live helm process has all of `needles` in its command line.
fn helm_running(needles: &[&str]) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                return false;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            !zombie && needles.iter().all(|n| cmdline.contains(n))
        })
}

#[test]
fn a_run_killed_during_the_openbao_install_resumes_without_applying_a_revision_twice() {
    let install = Install::new("killed");
    let mut child = install.cmd(&["--yes"]).spawn();
    // Drained to files, so that the run never blocks on a full pipe and an early exit is
    // explained.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (out_file, err_file) = (
        install.sb.path().join("run.out"),
        install.sb.path().join("run.err"),
    );
    let mut out_sink = std::fs::File::create(&out_file).expect("run.out");
    let mut err_sink = std::fs::File::create(&err_file).expect("run.err");
    std::thread::spawn(move || std::io::copy(&mut out, &mut out_sink));
    std::thread::spawn(move || std::io::copy(&mut err, &mut err_sink));
    // Killed while its helm installs OpenBao: the release exists, `pending-install`, and helm
    // waits for the pods and Jobs.
    let needles = ["upgrade", "openbao-server", install.vault.as_str()];
    // (The /proc scan is cheap; `helm history` only once that helm runs.)
    wait_for("helm installing OpenBao", Duration::from_secs(180), || {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the run ended ({status}) before helm installed OpenBao:\n{}\n{}",
                std::fs::read_to_string(&out_file).unwrap_or_default(),
                std::fs::read_to_string(&err_file).unwrap_or_default()
            );
        }
        helm_running(&needles)
    });
    wait_for("the release pending", Duration::from_secs(60), || {
        states(&install.history("openbao-server", &install.vault)) == [(1, "pending-install")]
    });
    assert!(helm_running(&needles), "no helm holds the release");
    child.kill().expect("SIGKILL the executor");
    child.wait().expect("reap");
    let run = install.sb.only_run();
    assert_eq!(
        install.sb.status(&run)["state"],
        "running",
        "killed mid-run"
    );
    let at_kill: Vec<String> = install
        .sb
        .records(&run)
        .iter()
        .filter(|r| r["path"] == "openbao")
        .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        at_kill,
        ["step_started"],
        "killed with the OpenBao install in flight"
    );
    // The helm it started does not outlive it, and leaves the release pending.
    wait_for("the orphaned helm to end", Duration::from_secs(180), || {
        !helm_running(&needles)
    });
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [(1, "pending-install")]
    );
    let resume = || {
        install
            .sb
            .cmd(&["resume", &run, "--yes"])
            .env("RUNBOOK_HELM", install.bed.k8s.var("HELM"))
            .env("RUNBOOK_KUBECONFIG", install.bed.k8s.kubeconfig())
            .env_remove("KUBECONFIG")
    };
    // A resume does not guess: the check refuses to decide on a pending release, says how to
    // clear it, and nothing is installed.
    let out = resume().run();
    assert!(
        !out.status.success(),
        "{}",
        out.explain("resumed over a pending release")
    );
    assert_contains(&out, "release openbao-server is pending-install");
    assert_contains(&out, "helm uninstall openbao-server");
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [(1, "pending-install")]
    );
    // The operator clears it as told and retries the step: OpenBao is installed once.
    let out = install.tool(
        "HELM",
        &[
            "uninstall",
            "openbao-server",
            "-n",
            &install.vault,
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        states(&install.history("openbao-server", &install.vault)),
        [],
        "the pending release is gone: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A run stopped for an operator goes on only by their decision: the step retried.
    let out = resume().run();
    assert_eq!(
        out.code(),
        Some(4),
        "{}",
        out.explain("a plain resume asks again")
    );
    let out = install
        .sb
        .cmd(&[
            "resume",
            &run,
            "--yes",
            "--retry-step",
            "openbao",
            "--comment",
            "cleared the pending install",
        ])
        .env("RUNBOOK_HELM", install.bed.k8s.var("HELM"))
        .env("RUNBOOK_KUBECONFIG", install.bed.k8s.kubeconfig())
        .env_remove("KUBECONFIG")
        .run();
    assert!(out.status.success(), "{}", out.explain("the retry"));
    // One revision per release: none applied twice, none lost.
    for h in install.histories() {
        assert_eq!(states(&h), [(1, "deployed")]);
    }
    install.assert_installed();
}
