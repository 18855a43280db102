//! The `kube` step kind end to end: the built binary runs small runbooks against the fake
//! Kubernetes API server in `fake_kube` (no real API server can run here; the fake follows the
//! documented behaviour of the real one, see its module docs).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::fake_kube::{ExecCall, FakeEvent, FakeKube, Options, PodInfo};
use crate::support::{Output, Sandbox};

/// Quick pods: the tests wait for several to start and become Ready.
fn quick() -> Options {
    Options {
        start_after: Duration::from_millis(40),
        ready_after: Duration::from_millis(120),
        terminate_after: Duration::from_millis(40),
        job_after: Duration::from_millis(300),
        ..Options::default()
    }
}

/// Writes the runbook (with `$KC` replaced by the fake's kubeconfig) and runs it.
fn run(sb: &Sandbox, fake: &FakeKube, yaml: &str, code: i32) -> (Output, Vec<Value>) {
    let yaml = yaml.replace("$KC", &fake.kubeconfig_path().display().to_string());
    sb.write("kube.yaml", &yaml);
    let out = sb
        .cmd(&["run", "kube.yaml"])
        .env_remove("KUBECONFIG")
        .env_remove("RUNBOOK_KUBECONFIG")
        .code(code);
    let records = sb.records(&sb.only_run());
    (out, records)
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

fn config_map(name: &str, data: &Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": "default", "labels": {"app": "demo"}},
           "data": data})
}

fn statefulset(name: &str, replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "vault-system",
                     "labels": {"app.kubernetes.io/version": "2.6.1"}},
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

/// Seeds a `StatefulSet` and waits until the controller has all its pods Ready.
fn seed_statefulset(fake: &FakeKube, name: &str, replicas: i64, image: &str) {
    fake.insert(statefulset(name, replicas, image));
    fake.wait_until(
        "the StatefulSet to be ready",
        Duration::from_secs(20),
        |f| {
            f.get("StatefulSet", "vault-system", name)
                .is_some_and(|s| s["status"]["readyReplicas"] == replicas)
        },
    );
}

#[test]
fn get_returns_the_object_and_a_missing_one_is_a_clear_404() {
    let fake = FakeKube::start(quick());
    fake.insert(config_map("settings", &json!({"mode": "ha"})));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r#"
runbook: kube-get
steps:
  - id: cm
    kube: { get: ConfigMap, name: settings, kubeconfig: $KC }
    assert: 'output.data.mode == "ha" && output.metadata.namespace == "default"'
"#,
        0,
    );
    let cm = output(&records, "cm");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["apiVersion"], "v1");
    assert!(cm["metadata"]["resourceVersion"].is_string(), "{cm}");

    let sb = Sandbox::new();
    let (out, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-get-missing
steps:
  - id: sts
    kube: { get: StatefulSet, name: openbao, namespace: vault-system, kubeconfig: $KC }
",
        1,
    );
    assert_contains(&out, "StatefulSet vault-system/openbao not found (404)");
    let (error, output) = failure(&records, "sts");
    assert_eq!(error, "StatefulSet vault-system/openbao not found (404)");
    assert_eq!(output["status"], 404);
    assert_eq!(output["reason"], "NotFound");
    assert_eq!(output["message"], "statefulsets.apps \"openbao\" not found");
}

#[test]
fn list_filters_by_label_and_field_selectors() {
    let fake = FakeKube::start(quick());
    let pod = |ns: &str, name: &str, app: &str, phase: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": {"app": app, "tier": "db"}},
               "spec": {"containers": [{"name": "main", "image": "busybox"}]},
               "status": {"phase": phase}})
    };
    fake.insert(pod("ops", "bao-0", "openbao", "Running"));
    fake.insert(pod("ops", "bao-1", "openbao", "Pending"));
    fake.insert(pod("ops", "nats-0", "nats", "Running"));
    fake.insert(pod("other", "bao-9", "openbao", "Running"));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r#"
runbook: kube-list
steps:
  - id: by-label
    kube: { list: Pod, namespace: ops, labels: "app=openbao,tier in (db)", kubeconfig: $KC }
  - id: by-map
    kube: { list: pods, namespace: ops, labels: { app: nats }, kubeconfig: $KC }
  - id: running
    kube: { list: Pod, namespace: ops, labels: "app!=nats", fields: "status.phase=Running", kubeconfig: $KC }
  - id: everywhere
    kube: { list: po, labels: "app=openbao", kubeconfig: $KC }
"#,
        0,
    );
    let names = |path: &str| -> Vec<String> {
        output(&records, path)["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("by-label"), ["bao-0", "bao-1"]);
    assert_eq!(names("by-map"), ["nats-0"]);
    assert_eq!(names("running"), ["bao-0"]);
    assert_eq!(names("everywhere"), ["bao-0", "bao-1", "bao-9"]);
    // Items of a list carry their kind, filled in by the step.
    assert_eq!(output(&records, "by-map")["items"][0]["kind"], "Pod");
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/pods?")),
        "no namespace lists across all namespaces: {requests:#?}"
    );

    // An unsupported field is the server's 400, reported as such.
    let sb = Sandbox::new();
    let (out, _) = run(
        &sb,
        &fake,
        r#"
runbook: kube-list-bad
steps:
  - id: bad
    kube: { list: ConfigMap, namespace: ops, fields: "status.phase=Running", kubeconfig: $KC }
"#,
        1,
    );
    assert_contains(
        &out,
        "failed listing configmaps in ops (status.phase=Running): field label not supported: \
         status.phase (400 BadRequest)",
    );
}

#[test]
fn apply_creates_then_updates_with_runbook_as_the_field_manager() {
    let fake = FakeKube::start(quick());
    let yaml = |mode: &str| {
        format!(
            r#"
runbook: kube-apply
steps:
  - id: apply
    kube:
      kubeconfig: $KC
      namespace: ops
      apply:
        apiVersion: v1
        kind: ConfigMap
        metadata: {{ name: upgrade-status, labels: {{ owner: runbook }} }}
        data: {{ state: "{mode}" }}
"#
        )
    };
    // Like the real server, the fake refuses to create objects in a namespace that is not there.
    let sb = Sandbox::new();
    let (out, _) = run(&sb, &fake, &yaml("Upgrading"), 1);
    assert_contains(
        &out,
        "failed applying ConfigMap ops/upgrade-status: namespaces \"ops\" not found (404)",
    );
    fake.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}}));
    let sb = Sandbox::new();
    let (_, records) = run(&sb, &fake, &yaml("Upgrading"), 0);
    let created = output(&records, "apply");
    assert_eq!(created["data"]["state"], "Upgrading");
    assert_eq!(created["metadata"]["namespace"], "ops");
    let managers = &created["metadata"]["managedFields"];
    assert_eq!(managers[0]["manager"], "runbook", "{created}");
    assert_eq!(managers[0]["operation"], "Apply");
    assert_eq!(managers[0]["fieldsV1"]["f:data"], json!({"f:state": {}}));

    // Someone else adds a key; applying again updates ours and keeps theirs.
    let mut stored = fake.get("ConfigMap", "ops", "upgrade-status").unwrap();
    let rv = stored["metadata"]["resourceVersion"].clone();
    stored["data"]["note"] = json!("by hand");
    fake.insert(stored);
    let sb = Sandbox::new();
    let (_, records) = run(&sb, &fake, &yaml("Done"), 0);
    let updated = output(&records, "apply");
    assert_eq!(updated["data"], json!({"state": "Done", "note": "by hand"}));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_ne!(updated["metadata"]["resourceVersion"], rv);
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r
            .starts_with("PATCH /api/v1/namespaces/ops/configmaps/upgrade-status?")
            && r.contains("fieldManager=runbook")
            && r.ends_with("[application/apply-patch+yaml]")),
        "{requests:#?}"
    );
}

#[test]
fn merge_json_and_strategic_patches_change_the_object() {
    let fake = FakeKube::start(quick());
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                     {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]},
                     {"name": "sidecar", "image": "envoy:1.30"},
                 ]}}},
    }));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r#"
runbook: kube-patch
steps:
  - id: merge
    kube: { patch: Deployment, name: web, kubeconfig: $KC,
            merge: { metadata: { labels: { tier: frontend } }, spec: { replicas: 3 } } }
  - id: json
    kube: { patch: Deployment, name: web, kubeconfig: $KC,
            json: [ { op: replace, path: /spec/replicas, value: 4 },
                    { op: add, path: /metadata/annotations, value: { patched: "yes" } } ] }
  - id: strategic
    kube: { patch: Deployment, name: web, kubeconfig: $KC,
            strategic: { spec: { template: { spec: { containers: [ { name: web, image: "nginx:1.27" } ] } } } } }
"#,
        0,
    );
    let merged = output(&records, "merge");
    assert_eq!(merged["spec"]["replicas"], 3);
    assert_eq!(merged["metadata"]["labels"]["tier"], "frontend");
    let patched = output(&records, "json");
    assert_eq!(patched["spec"]["replicas"], 4);
    assert_eq!(patched["metadata"]["annotations"]["patched"], "yes");
    let strategic = output(&records, "strategic");
    let containers = &strategic["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers.as_array().unwrap().len(),
        2,
        "merged by name: {containers}"
    );
    assert_eq!(containers[0]["image"], "nginx:1.27");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(containers[1]["name"], "sidecar");
    // Each write bumped the generation (the spec changed each time).
    assert_eq!(strategic["metadata"]["generation"], 4);
    let types: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH"))
        .filter_map(|r| {
            r.split('[')
                .nth(1)
                .map(|t| t.trim_end_matches(']').to_owned())
        })
        .collect();
    assert_eq!(
        types,
        [
            "application/merge-patch+json",
            "application/json-patch+json",
            "application/strategic-merge-patch+json"
        ]
    );
}

#[test]
fn a_patch_with_a_stale_resource_version_fails_naming_the_409_conflict() {
    let fake = FakeKube::start(quick());
    let stored = fake.insert(config_map("upgrade-status", &json!({"state": "Idle"})));
    let rv = stored["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let yaml = format!(
        r#"
runbook: kube-conflict
steps:
  - id: first
    kube: {{ patch: ConfigMap, name: upgrade-status, kubeconfig: $KC, resource_version: "{rv}",
            merge: {{ data: {{ state: Upgrading }} }} }}
  - id: stale
    kube: {{ patch: ConfigMap, name: upgrade-status, kubeconfig: $KC, resource_version: "{rv}",
            merge: {{ data: {{ state: Degraded }} }} }}
"#
    );
    let sb = Sandbox::new();
    let (out, records) = run(&sb, &fake, &yaml, 1);
    assert_eq!(output(&records, "first")["data"]["state"], "Upgrading");
    let message = "conflict patching ConfigMap default/upgrade-status (merge): the object has been \
                   modified (409)";
    assert_contains(&out, message);
    let (error, output) = failure(&records, "stale");
    assert_eq!(error, message);
    assert_eq!(output["status"], 409);
    assert_eq!(output["reason"], "Conflict");
    assert_eq!(
        fake.get("ConfigMap", "default", "upgrade-status").unwrap()["data"]["state"],
        "Upgrading",
        "the stale write was refused"
    );

    // The same precondition on a JSON patch.
    let sb = Sandbox::new();
    let yaml = format!(
        r#"
runbook: kube-conflict-json
steps:
  - id: stale
    kube: {{ patch: ConfigMap, name: upgrade-status, kubeconfig: $KC, resource_version: "{rv}",
            json: [ {{ op: replace, path: /data/state, value: Degraded }} ] }}
"#
    );
    let (out, _) = run(&sb, &fake, &yaml, 1);
    assert_contains(&out, "(json): the object has been modified (409)");
}

#[test]
fn delete_with_wait_returns_once_the_object_is_gone() {
    let fake = FakeKube::start(quick());
    seed_statefulset(&fake, "nats", 2, "nats:2.10");
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-delete
steps:
  - id: delete
    kube: { delete: StatefulSet, name: nats, namespace: vault-system, propagation: Foreground,
            wait: true, timeout: 20s, kubeconfig: $KC }
  - id: again
    kube: { delete: StatefulSet, name: nats, namespace: vault-system, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(
        output(&records, "delete"),
        json!({"deleted": true, "gone": true})
    );
    // Deleting what is gone already is not an error: the effect is in place.
    assert_eq!(
        output(&records, "again"),
        json!({"deleted": false, "gone": true})
    );
    assert!(fake.get("StatefulSet", "vault-system", "nats").is_none());
    assert!(
        fake.list("Pod", "vault-system").is_empty(),
        "foreground deletion removed the pods first"
    );
    let events = fake.events();
    assert!(
        events.contains(&FakeEvent::PodDeleted {
            pod: "nats-1".into()
        }),
        "{events:#?}"
    );
}

#[test]
fn scale_sets_replicas_and_the_controller_follows() {
    let fake = FakeKube::start(quick());
    seed_statefulset(&fake, "openbao", 3, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-scale
steps:
  - id: scale
    kube: { scale: StatefulSet, name: openbao, namespace: vault-system, replicas: 5, kubeconfig: $KC }
  - id: ready
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, for: ready, every: 100ms,
            timeout: 30s, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "scale")["spec"]["replicas"], 5);
    let sts = output(&records, "ready");
    assert_eq!(sts["status"]["readyReplicas"], 5);
    assert!(fake.get("Pod", "vault-system", "openbao-4").is_some());
    // Pods were created in order, each after the previous was Ready.
    let events = fake.events();
    let at = |e: &FakeEvent| events.iter().position(|x| x == e).unwrap();
    assert!(
        at(&FakeEvent::PodReady {
            pod: "openbao-3".into()
        }) < at(&events
            .iter()
            .find(|e| matches!(e, FakeEvent::PodCreated { pod, .. } if pod == "openbao-4"))
            .unwrap()
            .clone())
    );
}

#[test]
fn restart_sets_the_restarted_at_annotation_like_kubectl() {
    let fake = FakeKube::start(quick());
    fake.insert(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-restart
steps:
  - id: restart
    kube: { restart: Deployment, name: web, kubeconfig: $KC }
  - id: rolled
    kube: { wait: Deployment, name: web, for: rollout-complete, every: 100ms, timeout: 20s, kubeconfig: $KC }
",
        0,
    );
    let restarted = output(&records, "restart");
    let at = restarted["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(chrono::DateTime::parse_from_rfc3339(&at).is_ok(), "{at}");
    assert_eq!(restarted["metadata"]["generation"], 2);
    let rolled = output(&records, "rolled");
    assert_eq!(rolled["status"]["observedGeneration"], 2);
    assert_eq!(rolled["status"]["updatedReplicas"], 2);
}

#[test]
fn an_image_change_rolls_the_statefulset_highest_ordinal_first_and_wait_sees_it_complete() {
    let fake = FakeKube::start(quick());
    seed_statefulset(&fake, "openbao", 3, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-roll
steps:
  - id: image
    kube: { patch: StatefulSet, name: openbao, namespace: vault-system, kubeconfig: $KC,
            strategic: { spec: { template: { spec: { containers: [ { name: openbao, image: 'openbao/openbao:2.7.2' } ] } } } } }
  - id: rolled
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, for: rollout-complete,
            every: 100ms, timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    let sts = output(&records, "rolled");
    assert_eq!(sts["status"]["updatedReplicas"], 3);
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    for ordinal in 0..3 {
        let pod = fake
            .get("Pod", "vault-system", &format!("openbao-{ordinal}"))
            .unwrap();
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            "openbao/openbao:2.7.2"
        );
    }
    // The controller replaced one pod at a time, highest ordinal first, and each replacement
    // was Ready before the next pod was deleted.
    let events = fake.events();
    let rolled_from = events
        .iter()
        .position(
            |e| matches!(e, FakeEvent::ImageChanged { image, .. } if image.ends_with("2.7.2")),
        )
        .unwrap();
    let roll: Vec<&FakeEvent> = events[rolled_from + 1..]
        .iter()
        .filter(|e| {
            matches!(
                e,
                FakeEvent::PodTerminating { .. } | FakeEvent::PodReady { .. }
            )
        })
        .collect();
    let expected: Vec<FakeEvent> = [2, 1, 0]
        .iter()
        .flat_map(|o| {
            [
                FakeEvent::PodTerminating {
                    pod: format!("openbao-{o}"),
                },
                FakeEvent::PodReady {
                    pod: format!("openbao-{o}"),
                },
            ]
        })
        .collect();
    assert_eq!(roll, expected.iter().collect::<Vec<_>>(), "{events:#?}");
}

#[test]
fn a_partition_holds_the_lower_ordinals_on_their_revision() {
    let fake = FakeKube::start(quick());
    seed_statefulset(&fake, "openbao", 3, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-partition
steps:
  - id: hold
    kube: { patch: StatefulSet, name: openbao, namespace: vault-system, kubeconfig: $KC,
            merge: { spec: { updateStrategy: { rollingUpdate: { partition: 2 } },
                     template: { spec: { containers: [ { name: openbao, image: 'openbao/openbao:2.7.2' } ] } } } } }
  - id: rolled
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, for: rollout-complete,
            every: 100ms, timeout: 30s, kubeconfig: $KC }
",
        0,
    );
    let sts = output(&records, "rolled");
    assert_eq!(sts["status"]["updatedReplicas"], 1, "{sts}");
    assert_ne!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    let image = |o: u32| {
        fake.get("Pod", "vault-system", &format!("openbao-{o}"))
            .unwrap()["spec"]["containers"][0]["image"]
            .clone()
    };
    assert_eq!(image(2), "openbao/openbao:2.7.2");
    assert_eq!(image(1), "openbao/openbao:2.6.1");
    assert_eq!(image(0), "openbao/openbao:2.6.1");
    let events = fake.events();
    assert!(events.contains(&FakeEvent::PartitionChanged {
        sts: "openbao".into(),
        partition: 2
    }));
    assert!(!events.contains(&FakeEvent::PodTerminating {
        pod: "openbao-1".into()
    }));
}

#[test]
fn wait_with_a_rhai_condition_over_the_object() {
    let fake = FakeKube::start(quick());
    fake.insert(statefulset("openbao", 3, "openbao/openbao:2.6.1"));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-condition
steps:
  - id: three
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, every: 100ms, timeout: 30s,
            condition: 'object.status.readyReplicas == 3', kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "three")["status"]["readyReplicas"], 3);
}

#[test]
fn job_complete_waits_for_the_job_and_a_failed_job_fails_with_its_reason() {
    let fake = FakeKube::start(Options {
        job_outcome: Some(Arc::new(|_, name| name != "broken")),
        ..quick()
    });
    let job = |name: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"template": {"spec": {"restartPolicy": "Never",
                   "containers": [{"name": "m", "image": "migrate:1"}]}}}})
    };
    fake.insert(job("migrate"));
    fake.insert(job("broken"));
    let sb = Sandbox::new();
    let (out, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-job
steps:
  - id: migrate
    kube: { wait: Job, name: migrate, for: job-complete, every: 100ms, timeout: 20s, kubeconfig: $KC }
  - id: broken
    kube: { wait: Job, name: broken, for: job-complete, every: 100ms, timeout: 20s, kubeconfig: $KC }
",
        1,
    );
    assert_eq!(output(&records, "migrate")["status"]["succeeded"], 1);
    assert_contains(
        &out,
        "waiting for Job default/broken to be job-complete failed: the job failed: \
         BackoffLimitExceeded: Job has reached the specified backoff limit",
    );
    let (_, last) = failure(&records, "broken");
    assert_eq!(
        last["status"]["failed"], 1,
        "the last observed Job is the output"
    );
}

#[test]
fn exec_returns_stdout_and_the_exit_code_and_a_non_zero_exit_fails() {
    let calls: Arc<Mutex<Vec<ExecCall>>> = Arc::default();
    let seen = calls.clone();
    let fake = FakeKube::start(Options {
        exec: Some(Arc::new(move |call: &ExecCall| {
            seen.lock().unwrap().push(call.clone());
            match call.command.as_slice() {
                [bao, status] if bao == "bao" && status == "status" => {
                    ("Sealed false\nHA Mode active\n".into(), String::new(), 0)
                }
                [cat] if cat == "cat" => (call.stdin.clone(), String::new(), 0),
                _ => (String::new(), "Error: permission denied\n".into(), 2),
            }
        })),
        ..quick()
    });
    seed_statefulset(&fake, "openbao", 1, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (out, records) = run(
        &sb,
        &fake,
        r#"
runbook: kube-exec
steps:
  - id: status
    kube: { exec: openbao-0, namespace: vault-system, container: openbao, command: [bao, status], kubeconfig: $KC }
    assert: 'output.exit_code == 0 && output.stdout.contains("HA Mode active")'
  - id: stdin
    kube: { exec: openbao-0, namespace: vault-system, command: [cat], stdin: "line one\n", kubeconfig: $KC }
  - id: denied
    kube: { exec: openbao-0, namespace: vault-system, command: [bao, operator, step-down], kubeconfig: $KC }
"#,
        1,
    );
    assert_eq!(
        output(&records, "status"),
        json!({"stdout": "Sealed false\nHA Mode active\n", "stderr": "", "exit_code": 0})
    );
    assert_eq!(output(&records, "stdin")["stdout"], "line one\n");
    assert_contains(
        &out,
        "`bao operator step-down` in Pod vault-system/openbao-0 exited with code 2: Error: \
         permission denied",
    );
    let (_, denied) = failure(&records, "denied");
    assert_eq!(denied["exit_code"], 2);
    assert_eq!(denied["stderr"], "Error: permission denied\n");
    let calls = calls.lock().unwrap();
    assert_eq!(calls[0].container, "openbao");
    assert_eq!(calls[1].stdin, "line one\n");
}

#[test]
fn logs_return_the_tail_of_a_pods_log() {
    let fake = FakeKube::start(quick());
    seed_statefulset(&fake, "openbao", 1, "openbao/openbao:2.6.1");
    for n in 1..=5 {
        fake.append_log("vault-system", "openbao-0", &format!("line {n}"));
    }
    let sb = Sandbox::new();
    let (out, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-logs
steps:
  - id: tail
    kube: { logs: openbao-0, namespace: vault-system, container: openbao, tail: 2, since: 5m, kubeconfig: $KC }
  - id: wrong
    kube: { logs: openbao-0, namespace: vault-system, container: nope, kubeconfig: $KC }
",
        1,
    );
    assert_eq!(
        output(&records, "tail"),
        json!({"text": "line 4\nline 5\n"})
    );
    assert_contains(
        &out,
        "failed reading logs of Pod vault-system/openbao-0: container nope is not valid for pod \
         openbao-0 (400 BadRequest)",
    );
}

#[test]
fn a_wrong_token_is_reported_as_unauthorized() {
    let fake = FakeKube::start(quick());
    let wrong = fake.kubeconfig_with_token("not-the-token");
    let sb = Sandbox::new();
    let yaml = format!(
        "runbook: kube-401\nsteps:\n  - id: get\n    kube: {{ get: ConfigMap, name: x, kubeconfig: {} }}\n",
        wrong.display()
    );
    sb.write("kube.yaml", &yaml);
    let out = sb.cmd(&["run", "kube.yaml"]).code(1);
    assert_contains(
        &out,
        &format!(
            "unauthorized: the Kubernetes API at {} rejected the credentials from kubeconfig {} \
             (context fake) while getting ConfigMap default/x (401 Unauthorized)",
            fake.url(),
            wrong.display()
        ),
    );
}

#[test]
fn a_wait_that_times_out_names_the_condition_and_what_it_saw() {
    let fake = FakeKube::start(Options {
        readiness: Some(Arc::new(|pod: &PodInfo| pod.ordinal != Some(1))),
        ..quick()
    });
    fake.insert(statefulset("openbao", 3, "openbao/openbao:2.6.1"));
    let sb = Sandbox::new();
    let (out, records) = run(
        &sb,
        &fake,
        r#"
runbook: kube-timeout
steps:
  - id: ready
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, for: ready, every: 100ms,
            timeout: 2s, kubeconfig: $KC }
  - id: never
    kube: { wait: Pod, name: openbao-1, namespace: vault-system, every: 100ms, timeout: 1s,
            condition: 'object.status.phase == "Succeeded"', kubeconfig: $KC }
    continue_on_error: true
"#,
        1,
    );
    // OrderedReady: pod 1 never becomes Ready, so pod 2 is never created.
    assert_contains(
        &out,
        "timed out after 2s waiting for StatefulSet vault-system/openbao to be ready: 1 of 3 \
         replicas ready",
    );
    let (_, last) = failure(&records, "ready");
    assert_eq!(last["status"]["readyReplicas"], 1);
    assert!(fake.get("Pod", "vault-system", "openbao-2").is_none());
}

#[test]
fn the_kubeconfig_comes_from_the_environment_and_the_context_gives_the_namespace() {
    let fake = FakeKube::start(Options {
        namespace: "ops".into(),
        ..quick()
    });
    let mut cm = config_map("from-env", &json!({"k": "v"}));
    cm["metadata"]["namespace"] = json!("ops");
    fake.insert(cm);
    let sb = Sandbox::new();
    sb.write(
        "kube.yaml",
        r"
runbook: kube-env
steps:
  - id: cm
    kube: { get: cm, name: from-env }
  - id: other
    kube: { list: ConfigMap, namespace: other, context: other }
",
    );
    sb.cmd(&["run", "kube.yaml"])
        .env_remove("KUBECONFIG")
        .env("RUNBOOK_KUBECONFIG", fake.kubeconfig_path())
        .ok();
    let records = sb.records(&sb.only_run());
    assert_eq!(output(&records, "cm")["metadata"]["namespace"], "ops");
    assert_eq!(output(&records, "other"), json!({"items": []}));
}

#[test]
fn a_kind_that_is_not_built_in_is_found_by_discovery() {
    let fake = FakeKube::start(quick());
    fake.insert(json!({"apiVersion": "runbook.test/v1", "kind": "Widget",
                       "metadata": {"name": "w1", "namespace": "default"},
                       "spec": {"size": 1}}));
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-discovery
steps:
  - id: pinned
    kube: { get: Widget, api_version: runbook.test/v1, name: w1, kubeconfig: $KC }
  - id: searched
    kube: { patch: Widget, name: w1, merge: { spec: { size: 2 } }, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "pinned")["spec"]["size"], 1);
    assert_eq!(output(&records, "searched")["spec"]["size"], 2);
    let requests = fake.requests();
    assert!(
        requests.iter().any(|r| r == "GET /apis/runbook.test/v1"),
        "{requests:#?}"
    );
    assert!(requests.iter().any(|r| r == "GET /apis"), "{requests:#?}");
}

#[test]
fn a_runbook_with_kube_mistakes_is_refused_at_load_time() {
    let sb = Sandbox::new();
    sb.write(
        "bad.yaml",
        r"
runbook: kube-bad
steps:
  - id: a
    kube: { patch: StatefulSet, name: x, merge: {}, json: [] }
  - id: b
    kube: { wait: StatefulSet, name: x, for: healthy }
  - id: c
    kube: { get: Pod, name: x, replicas: 3 }
",
    );
    let out = sb.cmd(&["check", "bad.yaml"]).code(2);
    for text in [
        "`patch` takes one of `merge`, `json` or `strategic`, not `merge` and `json`",
        "`for` must be one of ready, rollout-complete, deleted, job-complete",
        "`replicas` does not apply to `get`",
    ] {
        assert_contains(&out, text);
    }
}

/// The hybrid mode that tests of real servers build on: the fake's pod lifecycle drives real
/// local processes (here `sleep`), one per ordinal, restarted on the version in the image tag,
/// and a pod is Ready only while its process runs.
#[test]
fn pod_hooks_restart_real_processes_during_a_rolling_update() {
    type Procs = Arc<Mutex<std::collections::HashMap<u32, std::process::Child>>>;
    let procs: Procs = Arc::default();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (started, stopped, alive) = (procs.clone(), procs.clone(), procs.clone());
    let (start_log, stop_log) = (log.clone(), log.clone());
    let fake = FakeKube::start(Options {
        on_pod_started: Some(Arc::new(move |pod: &PodInfo| {
            let ordinal = pod.ordinal.expect("a StatefulSet pod");
            let child = std::process::Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("spawn sleep");
            started.lock().unwrap().insert(ordinal, child);
            start_log
                .lock()
                .unwrap()
                .push(format!("start {ordinal} {}", pod.image_tag()));
        })),
        on_pod_stopped: Some(Arc::new(move |pod: &PodInfo| {
            let ordinal = pod.ordinal.expect("a StatefulSet pod");
            if let Some(mut child) = stopped.lock().unwrap().remove(&ordinal) {
                let _ = child.kill();
                let _ = child.wait();
            }
            stop_log.lock().unwrap().push(format!("stop {ordinal}"));
        })),
        readiness: Some(Arc::new(move |pod: &PodInfo| {
            let mut procs = alive.lock().unwrap();
            pod.ordinal
                .and_then(|o| procs.get_mut(&o))
                .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        })),
        ..quick()
    });
    seed_statefulset(&fake, "openbao", 3, "openbao/openbao:2.6.1");
    let sb = Sandbox::new();
    let (_, records) = run(
        &sb,
        &fake,
        r"
runbook: kube-hybrid
steps:
  - id: image
    kube: { patch: StatefulSet, name: openbao, namespace: vault-system, kubeconfig: $KC,
            strategic: { spec: { template: { spec: { containers: [ { name: openbao, image: 'openbao/openbao:2.7.2' } ] } } } } }
  - id: rolled
    kube: { wait: StatefulSet, name: openbao, namespace: vault-system, for: rollout-complete,
            every: 100ms, timeout: 60s, kubeconfig: $KC }
",
        0,
    );
    assert_eq!(output(&records, "rolled")["status"]["readyReplicas"], 3);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "start 0 2.6.1",
            "start 1 2.6.1",
            "start 2 2.6.1",
            "stop 2",
            "start 2 2.7.2",
            "stop 1",
            "start 1 2.7.2",
            "stop 0",
            "start 0 2.7.2",
        ]
    );
    let mut procs = procs.lock().unwrap();
    assert_eq!(procs.len(), 3);
    for child in procs.values_mut() {
        assert!(matches!(child.try_wait(), Ok(None)), "every process runs");
        let _ = child.kill();
        let _ = child.wait();
    }
}
