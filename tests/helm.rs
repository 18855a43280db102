//! The `helm` step end to end, against a real Kubernetes control plane
//! (`testbeds/kubernetes.sh`: etcd, kube-apiserver with RBAC, the real controller-manager and
//! scheduler, kwok nodes that play the kubelet) and the real helm v3 binary, with the stand-in
//! charts of `testbeds/charts`. What the tests claim about a release is read from the release
//! itself — by running helm and kubectl, not from the runbook's output.
//!
//! The tests of this file share one control plane (it takes 15–30 s to start here), each in
//! its own namespace; it is destroyed when the last of them is done with it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use serde_json::{Value, json};

use crate::support::clusters::{Cluster, repo};
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

/// The real helm and kubectl on the cluster, as an operator checks what a runbook did.
struct Tools<'a> {
    cluster: &'a Cluster,
}

impl Tools<'_> {
    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new(self.cluster.var(tool))
            .args(args)
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig())
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// A JSON answer of helm or kubectl; panics with its stderr if it fails.
    fn json(&self, tool: &str, args: &[&str]) -> Value {
        let out = self.run(tool, args);
        assert!(
            out.status.success(),
            "{tool} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{tool} {}: not JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// `helm history RELEASE -o json`: (revision, status, description) of each revision.
    fn history(&self, release: &str, ns: &str) -> Vec<(u64, String, String)> {
        self.json("HELM", &["history", release, "-n", ns, "-o", "json"])
            .as_array()
            .expect("a list")
            .iter()
            .map(|r| {
                (
                    r["revision"].as_u64().expect("revision"),
                    r["status"].as_str().expect("status").to_owned(),
                    r["description"].as_str().expect("description").to_owned(),
                )
            })
            .collect()
    }

    /// `helm get values RELEASE -o json`: the values the release was given.
    fn values(&self, release: &str, ns: &str) -> Value {
        self.json("HELM", &["get", "values", release, "-n", ns, "-o", "json"])
    }

    /// `helm status RELEASE -o json`: (revision, status, description).
    fn status(&self, release: &str, ns: &str) -> (u64, String, String) {
        let status = self.json("HELM", &["status", release, "-n", ns, "-o", "json"]);
        (
            status["version"].as_u64().expect("version"),
            status["info"]["status"]
                .as_str()
                .expect("status")
                .to_owned(),
            status["info"]["description"]
                .as_str()
                .expect("description")
                .to_owned(),
        )
    }

    /// An object as the API server has it.
    fn get(&self, kind: &str, name: &str, ns: &str) -> Value {
        self.json("KUBECTL", &["get", kind, name, "-n", ns, "-o", "json"])
    }

    /// (image, spec.replicas, status.readyReplicas) of a StatefulSet.
    fn statefulset(&self, name: &str, ns: &str) -> (String, u64, u64) {
        let sts = self.get("statefulset", name, ns);
        (
            sts["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .expect("image")
                .to_owned(),
            sts["spec"]["replicas"].as_u64().expect("replicas"),
            sts["status"]["readyReplicas"].as_u64().unwrap_or(0),
        )
    }
}

fn chart(name: &str) -> String {
    repo()
        .join("testbeds/charts")
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_owned()
}

/// The runs of a sandbox, oldest first.
fn runs(sb: &Sandbox) -> Vec<String> {
    let out = sb.cmd(&["history", "--output", "json"]).ok();
    let mut ids: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// The record of `event` for the step at `path` in a run's records.
fn record<'a>(records: &'a [Value], event: &str, path: &str) -> &'a Value {
    records
        .iter()
        .rev()
        .find(|r| r["event"] == event && r["path"] == path)
        .unwrap_or_else(|| panic!("no {event} for {path} in {records:#?}"))
}

fn assert_contains(out: &Output, needle: &str) {
    assert!(
        out.stdout.contains(needle) || out.stderr.contains(needle),
        "{}",
        out.explain(&format!("expected output containing {needle:?}"))
    );
}

/// An operator's spot upgrade of a chart (as the users' guide describes it): note the current
/// revision, upgrade with the new values, and if the upgrade fails, roll back to the revision
/// noted before.
const UPGRADE: &str = r#"
runbook: upgrade-chart
description: Upgrade a chart's release; roll back to the revision before if the upgrade fails
params:
  namespace: { type: string, required: true }
  release:   { type: string, required: true }
  chart:     { type: string, required: true }
  tag:       { type: string, required: true }
  replicas:  { type: int, default: 3 }
  fail:      { type: bool, default: false }
steps:
  - id: current
    helm: { list: true, namespace: "{{params.namespace}}", filter: "^{{params.release}}$" }
  - id: before
    script: |
      let found = steps.current.output.releases;
      if found.len() > 0 { found[0].revision } else { 0 }
  - id: upgrade
    helm:
      upgrade: "{{params.release}}"
      chart: "{{params.chart}}"
      namespace: "{{params.namespace}}"
      create_namespace: true
      set:
        image: { tag: "{{params.tag}}" }
        replicaCount: "{{params.replicas}}"
        migrations: { fail: "{{params.fail}}" }
      wait: true
      wait_for_jobs: true
      timeout: 2m
    assert: 'output.release.status == "deployed"'
    on_failure:
      - id: rollback
        when: 'steps.before.output > 0 && steps.upgrade.output.release.status == "failed"'
        helm: { rollback: "{{params.release}}", namespace: "{{params.namespace}}",
                revision: "{{steps.before.output}}", wait: true, timeout: 2m }
        assert: 'output.release.status == "deployed"'
"#;

#[test]
fn a_failed_upgrade_is_rolled_back_by_on_failure_to_the_revision_noted_before() {
    let cluster = cluster();
    let tools = Tools { cluster: &cluster };
    let (ns, release) = ("vault-system", "openbao-server");
    let sb = Sandbox::new();
    sb.write("upgrade.yaml", UPGRADE);
    let run = |tag: &str, replicas: u32, fail: bool, code: i32| {
        sb.cmd(&[
            "run",
            "upgrade.yaml",
            "--yes",
            "-p",
            &format!("namespace={ns}"),
            "-p",
            &format!("release={release}"),
            "-p",
            &format!("chart={}", chart("openbao")),
            "-p",
            &format!("tag={tag}"),
            "-p",
            &format!("replicas={replicas}"),
            "-p",
            &format!("fail={fail}"),
        ])
        .env("RUNBOOK_HELM", cluster.var("HELM"))
        .env("RUNBOOK_KUBECONFIG", cluster.kubeconfig())
        .env_remove("KUBECONFIG")
        .code(code)
    };

    // Install: helm waited for the StatefulSet's pods and the hook Jobs.
    run("2.6.2", 3, false, 0);
    assert_eq!(
        tools.statefulset(release, ns),
        ("registry.local/openbao:2.6.2".to_owned(), 3, 3)
    );
    for job in ["initialize-cluster", "migrations"] {
        let job = tools.get("job", &format!("{release}-{job}"), ns);
        assert_eq!(job["status"]["succeeded"], 1, "{job:#}");
    }
    assert_eq!(
        tools.history(release, ns),
        [(1, "deployed".to_owned(), "Install complete".to_owned())]
    );

    // Upgrade with a new image and one more replica; the values keep their types.
    run("2.7.2", 4, false, 0);
    assert_eq!(
        tools.statefulset(release, ns),
        ("registry.local/openbao:2.7.2".to_owned(), 4, 4)
    );
    let good = json!({"image": {"tag": "2.7.2"}, "replicaCount": 4, "migrations": {"fail": false}});
    assert_eq!(tools.values(release, ns), good);

    // An upgrade whose post-upgrade Job fails: the step fails with helm's error, and
    // `on_failure` rolls back to revision 2.
    let out = run("2.8.0", 5, true, 1);
    assert_contains(
        &out,
        "helm upgrade vault-system/openbao-server failed: UPGRADE FAILED: post-upgrade hooks \
         failed: 1 error occurred: * job openbao-server-migrations failed: BackoffLimitExceeded",
    );
    let failed_run = runs(&sb).pop().expect("a run");
    let records = sb.records(&failed_run);
    let failed = &record(&records, "step_failed", "upgrade")["output"];
    assert_eq!(failed["release"]["status"], "failed");
    assert_eq!(failed["release"]["revision"], 3);
    assert_eq!(failed["exit_code"], 1);
    let rolled = &record(&records, "step_succeeded", "upgrade.on_failure.rollback")["output"];
    assert_eq!(rolled["release"]["revision"], 4);

    // The release itself: deployed, superseded, failed, then the rollback to 2 deployed.
    let history = tools.history(release, ns);
    let states: Vec<(u64, &str)> = history.iter().map(|(r, s, _)| (*r, s.as_str())).collect();
    assert_eq!(
        states,
        [
            (1, "superseded"),
            (2, "superseded"),
            (3, "failed"),
            (4, "deployed")
        ]
    );
    assert!(
        history[2]
            .2
            .contains("post-upgrade hooks failed: 1 error occurred"),
        "{history:?}"
    );
    assert_eq!(history[3].2, "Rollback to 2");
    assert_eq!(tools.values(release, ns), good);
    // The API server has the old StatefulSet again, all replicas Ready (the rollback waited).
    assert_eq!(
        tools.statefulset(release, ns),
        ("registry.local/openbao:2.7.2".to_owned(), 4, 4)
    );
}

#[test]
fn secret_values_reach_the_release_but_never_the_journal_the_output_or_the_disk() {
    let cluster = cluster();
    let tools = Tools { cluster: &cluster };
    let (ns, release) = ("nats-system", "nats");
    let sb = Sandbox::new();
    // The binary and the cluster named in the spec this time, not in the environment.
    sb.write(
        "install.yaml",
        r#"
runbook: install-nats
params:
  kubeconfig: { type: string, required: true }
  helm:       { type: string, required: true }
  chart:      { type: string, required: true }
  token:      { type: string, secret: true, env: NATS_TOKEN }
steps:
  - id: install
    helm:
      upgrade: nats
      chart: "{{params.chart}}"
      namespace: nats-system
      create_namespace: true
      kubeconfig: "{{params.kubeconfig}}"
      helm: "{{params.helm}}"
      values: { replicaCount: 2, auth: { enabled: true } }
      set: { auth: { token: "{{params.token}}" } }
      wait: true
      wait_for_jobs: true
      timeout: 2m
  - id: saved
    helm: { get_values: nats, namespace: nats-system, kubeconfig: "{{params.kubeconfig}}",
            helm: "{{params.helm}}" }
    assert: 'output.auth.enabled && output.replicaCount == 2'
"#,
    );
    let token = "nats-s3cret-token-4711";
    let tmp = sb.path().join("tmp");
    std::fs::create_dir(&tmp).expect("mkdir");
    let out = sb
        .cmd(&[
            "run",
            "install.yaml",
            "--yes",
            "-p",
            &format!("kubeconfig={}", cluster.kubeconfig().display()),
            "-p",
            &format!("helm={}", cluster.var("HELM")),
            "-p",
            &format!("chart={}", chart("nats")),
        ])
        .env("NATS_TOKEN", token)
        .env("TMPDIR", &tmp)
        .env_remove("RUNBOOK_HELM")
        .env_remove("RUNBOOK_KUBECONFIG")
        .env_remove("KUBECONFIG")
        .ok();

    // The release got the token, merged into the values given inline.
    assert_eq!(
        tools.values(release, ns),
        json!({"replicaCount": 2, "auth": {"enabled": true, "token": token}})
    );
    assert_eq!(
        tools.statefulset(release, ns),
        ("registry.local/nats-server:2.10.29".to_owned(), 2, 2)
    );
    // Nowhere else.
    assert!(
        !out.stdout.contains(token) && !out.stderr.contains(token),
        "{}",
        out.explain("the token in the output")
    );
    let journal = String::from_utf8_lossy(&sb.journal_bytes()).into_owned();
    assert!(!journal.contains(token), "the token is in the journal");
    let records = sb.records(&sb.only_run());
    let saved = &record(&records, "step_succeeded", "saved")["output"];
    assert_eq!(saved["auth"]["token"], "***", "{saved}");
    // The values file helm read is gone with its directory.
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .expect("read tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}

/// Whether a live process has `needle` in its command line.
fn process_with(needle: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .find_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .next()?
                .to_owned();
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (state != "Z" && cmdline.contains(needle)).then_some(cmdline)
        })
}

#[test]
fn a_timed_out_upgrade_stops_helm_which_leaves_the_release_failed_not_pending() {
    let cluster = cluster();
    let tools = Tools { cluster: &cluster };
    let (ns, release) = ("cassandra-system", "cassandra");
    let sb = Sandbox::new();
    // The step's own timeout, when given, well before helm's: then the engine stops helm.
    let runbook = |step_timeout: &str| {
        format!(
            r#"
runbook: upgrade-cassandra
params:
  chart:   {{ type: string, required: true }}
  pending: {{ type: bool, default: false }}
steps:
  - id: upgrade
    {step_timeout}
    helm:
      upgrade: cassandra
      chart: "{{{{params.chart}}}}"
      namespace: cassandra-system
      create_namespace: true
      set: {{ migrations: {{ pending: "{{{{params.pending}}}}" }} }}
      wait: true
      wait_for_jobs: true
      timeout: 5m
"#
        )
    };
    sb.write("cassandra.yaml", &runbook(""));
    sb.write("cassandra-limited.yaml", &runbook("timeout: 6s"));
    let run = |file: &str, pending: bool, code: i32| {
        sb.cmd(&[
            "run",
            file,
            "--yes",
            "-p",
            &format!("chart={}", chart("cassandra")),
            "-p",
            &format!("pending={pending}"),
        ])
        .env("RUNBOOK_HELM", cluster.var("HELM"))
        .env("RUNBOOK_KUBECONFIG", cluster.kubeconfig())
        .env_remove("KUBECONFIG")
        .code(code)
    };
    run("cassandra.yaml", false, 0);
    assert_eq!(tools.status(release, ns).1, "deployed");

    // The migrations Job's pod never starts: helm would wait 5 minutes; the step stops it.
    let out = run("cassandra-limited.yaml", true, 1);
    assert_contains(
        &out,
        "timed out after 6s; helm upgrade --install cassandra-system/cassandra",
    );
    assert_contains(&out, "stopped with SIGTERM");
    let helm_of_this_test = format!("upgrade cassandra {}", chart("cassandra"));
    assert_eq!(process_with(&helm_of_this_test), None, "helm still runs");
    // helm recorded the upgrade as failed when it was stopped: not `pending-upgrade`, which
    // would refuse every later upgrade until an operator rolled back by hand.
    let (revision, status, description) = tools.status(release, ns);
    assert_eq!(
        (revision, status.as_str(), description.as_str()),
        (
            2,
            "failed",
            "Upgrade \"cassandra\" failed: context canceled"
        )
    );

    // So the next upgrade goes through.
    run("cassandra.yaml", false, 0);
    assert_eq!(tools.status(release, ns).0, 3);
    assert_eq!(tools.status(release, ns).1, "deployed");
}

#[test]
fn a_helm_step_with_mistakes_is_refused_at_load_with_each_problem_at_its_place() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        "runbook: bad\nsteps:\n  - id: up\n    helm: { upgrade: OpenBao, chart: ./c, set: { image.tag: x }, nmespace: x }\n",
    );
    let out = sb.cmd(&["check", "bad.yaml"]).code(2);
    assert_eq!(
        out.stderr,
        "error: `upgrade`: release name `OpenBao` is not valid: use lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit
 --> bad.yaml:4:13
  |
4 |     helm: { upgrade: OpenBao, chart: ./c, set: { image.tag: x }, nmespace: x }
  |             ^^^^^^^

error: `set` takes nested mappings, not dotted paths: write `image: { tag: … }` for `image.tag`
 --> bad.yaml:4:43
  |
4 |     helm: { upgrade: OpenBao, chart: ./c, set: { image.tag: x }, nmespace: x }
  |                                           ^^^

error: unknown field `nmespace` in `helm`
 --> bad.yaml:4:66
  |
4 |     helm: { upgrade: OpenBao, chart: ./c, set: { image.tag: x }, nmespace: x }
  |                                                                  ^^^^^^^^ did you mean `namespace`?

error: 3 problems found
"
    );
}

#[test]
fn the_stand_in_charts_lint_clean_with_the_real_helm() {
    let Some(helm) = testbeds_helm() else {
        panic!("helm is not installed; run testbeds/install.sh");
    };
    for name in ["openbao", "nats", "cassandra"] {
        let out = Command::new(&helm)
            .args(["lint", "--strict", &chart(name)])
            .output()
            .expect("run helm lint");
        assert!(
            out.status.success(),
            "helm lint {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The testbeds' helm, as `testbeds/paths.sh` finds it.
fn testbeds_helm() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg("-c")
        .arg("TB_NEED=HELM source \"$1\" && printf %s \"$HELM\"")
        .arg("paths")
        .arg(repo().join("testbeds/paths.sh"))
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && Path::new(&path).is_file()).then(|| PathBuf::from(path))
}
