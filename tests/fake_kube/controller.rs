//! The fake's control plane, one loop every 25 ms:
//!
//! - a kubelet: Pending → Running after `start_after` (then `on_pod_started`), Ready after
//!   `ready_after` or as `readiness` says (polled every 100 ms on a blocking thread, both ways),
//!   and terminating pods gone after `terminate_after` and `on_pod_stopped`;
//! - the StatefulSet controller, as the real one behaves with `podManagementPolicy:
//!   OrderedReady` and `RollingUpdate`: pods are created in ordinal order, each once the
//!   previous is Running and Ready; surplus pods are deleted highest first; pods at or above
//!   the partition whose revision is not the update revision are deleted one at a time,
//!   highest ordinal first, and only when every pod is Running and Ready — so each is replaced
//!   and Ready before the next goes. `currentRevision` moves to `updateRevision` once every
//!   replica is updated and ready;
//! - Deployments, DaemonSets (one fake node) and Jobs in simplified form (status after a delay,
//!   no pods), PersistentVolumeClaims bound at once;
//! - a garbage collector: dependents of deleted owners (Background), foreground deletion,
//!   finalizer-free objects marked for deletion, terminating namespaces.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::store::{
    Inner, State, Via, at, first_image, key, now_rfc3339, obj_at, resource, str_at,
};
use super::{FakeEvent, PodInfo};

const TICK: Duration = Duration::from_millis(25);
const PROBE_EVERY: Duration = Duration::from_millis(100);

pub async fn run(state: Arc<State>) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let mut inner = state.lock();
        kubelet(&state, &mut inner);
        statefulsets(&mut inner);
        simple_workloads(&state, &mut inner);
        garbage_collector(&mut inner);
    }
}

pub fn pod_info(pod: &Value) -> PodInfo {
    let owner = at(pod, "metadata.ownerReferences")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("kind").and_then(Value::as_str) == Some("StatefulSet"))
        })
        .and_then(|r| r.get("name").and_then(Value::as_str))
        .map(str::to_owned);
    let name = str_at(pod, "metadata.name").to_owned();
    let ordinal = owner
        .as_ref()
        .and_then(|sts| name.strip_prefix(&format!("{sts}-")))
        .and_then(|o| o.parse().ok());
    PodInfo {
        namespace: str_at(pod, "metadata.namespace").to_owned(),
        name,
        ordinal,
        statefulset: owner,
        image: first_image(pod),
        revision: str_at(pod, "metadata.labels.controller-revision-hash").to_owned(),
    }
}

fn condition(pod: &Value, kind: &str) -> bool {
    at(pod, "status.conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn terminating(object: &Value) -> bool {
    at(object, "metadata.deletionTimestamp").is_some()
}

pub fn running_and_ready(pod: &Value) -> bool {
    !terminating(pod) && str_at(pod, "status.phase") == "Running" && condition(pod, "Ready")
}

fn pod_status(pod: &Value, ready: bool, pod_ip: &str, started: &str) -> Value {
    let flag = if ready { "True" } else { "False" };
    let now = now_rfc3339();
    let statuses: Vec<Value> = at(pod, "spec.containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({"name": c.get("name").cloned().unwrap_or(json!("main")),
                           "image": c.get("image").cloned().unwrap_or(json!("")),
                           "ready": ready, "started": true, "restartCount": 0,
                           "state": {"running": {"startedAt": started}}})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "phase": "Running",
        "podIP": pod_ip,
        "startTime": started,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            {"type": "Initialized", "status": "True", "lastTransitionTime": started},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": statuses,
    })
}

fn set_status(inner: &mut Inner, kind: &str, ns: &str, name: &str, status: Value) {
    let res = resource(kind).expect("served kind");
    let Some(object) = inner.get(res, ns, name) else {
        return;
    };
    if object.get("status") == Some(&status) {
        return;
    }
    let mut object = object.clone();
    object["status"] = status;
    let _ = inner.write(res, ns, name, object, Via::Status, None);
}

fn kubelet(state: &State, inner: &mut Inner) {
    let pod_res = resource("Pod").expect("pods");
    let options = &state.options;
    let keys: Vec<(String, String)> = inner.pods.keys().cloned().collect();
    for (ns, name) in keys {
        let Some(pod) = inner.get(pod_res, &ns, &name).cloned() else {
            inner.pods.remove(&(ns, name));
            continue;
        };
        let info = pod_info(&pod);
        let life = inner
            .pods
            .get_mut(&(ns.clone(), name.clone()))
            .expect("tracked");
        if let Some(since) = life.terminating_at {
            let hook = life.stopped_hook.get_or_insert_with(|| {
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                match (&options.on_pod_stopped, life.running_at.is_some()) {
                    (Some(hook), true) => {
                        let (hook, done, info) = (hook.clone(), done.clone(), info.clone());
                        tokio::task::spawn_blocking(move || {
                            hook(&info);
                            done.store(true, Ordering::SeqCst);
                        });
                    }
                    _ => done.store(true, Ordering::SeqCst),
                }
                done
            });
            if hook.load(Ordering::SeqCst) && since.elapsed() >= options.terminate_after {
                inner.remove(pod_res, &ns, &name);
            }
            continue;
        }
        match life.running_at {
            None => {
                if life.created.elapsed() < options.start_after {
                    continue;
                }
                life.running_at = Some(Instant::now());
                life.started_hook_begun = true;
                match &options.on_pod_started {
                    Some(hook) => {
                        let (hook, done, info) =
                            (hook.clone(), life.started_hook_done.clone(), info.clone());
                        tokio::task::spawn_blocking(move || {
                            hook(&info);
                            done.store(true, Ordering::SeqCst);
                        });
                    }
                    None => life.started_hook_done.store(true, Ordering::SeqCst),
                }
                let n = inner.rv % 250 + 1;
                let started = now_rfc3339();
                let status = pod_status(&pod, false, &format!("10.0.0.{n}"), &started);
                set_status(inner, "Pod", &ns, &name, status);
                inner.event(FakeEvent::PodRunning { pod: name.clone() });
                inner.log(
                    &ns,
                    &name,
                    &format!("container started (image {})", info.image),
                );
            }
            Some(running_at) => {
                if !life.started_hook_done.load(Ordering::SeqCst) {
                    continue;
                }
                let ready_now = condition(&pod, "Ready");
                let want = match &options.readiness {
                    None => running_at.elapsed() >= options.ready_after || ready_now,
                    Some(probe) => {
                        let due = life.last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY);
                        if due && !life.probe_in_flight.load(Ordering::SeqCst) {
                            life.last_probe = Some(Instant::now());
                            life.probe_in_flight.store(true, Ordering::SeqCst);
                            let (probe, slot, busy, info) = (
                                probe.clone(),
                                life.probe.clone(),
                                life.probe_in_flight.clone(),
                                info.clone(),
                            );
                            tokio::task::spawn_blocking(move || {
                                let ok = probe(&info);
                                slot.store(if ok { 2 } else { 1 }, Ordering::SeqCst);
                                busy.store(false, Ordering::SeqCst);
                            });
                        }
                        match life.probe.load(Ordering::SeqCst) {
                            2 => true,
                            1 => false,
                            _ => ready_now,
                        }
                    }
                };
                if want != ready_now {
                    let started = str_at(&pod, "status.startTime").to_owned();
                    let ip = str_at(&pod, "status.podIP").to_owned();
                    let status = pod_status(&pod, want, &ip, &started);
                    set_status(inner, "Pod", &ns, &name, status);
                    inner.event(if want {
                        FakeEvent::PodReady { pod: name.clone() }
                    } else {
                        FakeEvent::PodUnready { pod: name.clone() }
                    });
                    let line = if want {
                        "readiness probe succeeded"
                    } else {
                        "readiness probe failed"
                    };
                    inner.log(&ns, &name, line);
                }
            }
        }
    }
}

/// `NAME-<10 hex>` from the pod template, like a ControllerRevision name.
fn revision(name: &str, template: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut hasher);
    format!("{name}-{:010x}", hasher.finish() & 0xff_ffff_ffff)
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    at(pod, "metadata.ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

fn new_pod(sts: &Value, template: &Value, ordinal: i64, rev: &str) -> (String, Value) {
    let sts_name = str_at(sts, "metadata.name");
    let name = format!("{sts_name}-{ordinal}");
    let mut metadata = template
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        metadata = json!({});
    }
    {
        let labels = obj_at(&mut metadata, "labels");
        labels.insert("controller-revision-hash".into(), json!(rev));
        labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
        labels.insert(
            "apps.kubernetes.io/pod-index".into(),
            json!(ordinal.to_string()),
        );
    }
    let m = metadata.as_object_mut().expect("object");
    m.insert("name".into(), json!(name));
    m.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts_name,
                "uid": str_at(sts, "metadata.uid"), "controller": true,
                "blockOwnerDeletion": true}]),
    );
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        s.insert("hostname".into(), json!(name));
        let service = str_at(sts, "spec.serviceName");
        if !service.is_empty() {
            s.insert("subdomain".into(), json!(service));
        }
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    (name, pod)
}

fn statefulsets(inner: &mut Inner) {
    let sts_res = resource("StatefulSet").expect("statefulsets");
    let pod_res = resource("Pod").expect("pods");
    let sets: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((r, _, _), _)| *r == sts_res.qualified())
        .map(|(_, v)| v.clone())
        .collect();
    for sts in sets {
        let ns = str_at(&sts, "metadata.namespace").to_owned();
        let name = str_at(&sts, "metadata.name").to_owned();
        let uid = str_at(&sts, "metadata.uid").to_owned();
        if terminating(&sts) {
            continue; // the garbage collector handles a foreground deletion
        }
        let replicas = at(&sts, "spec.replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let rolling = str_at(&sts, "spec.updateStrategy.type") != "OnDelete";
        let partition = at(&sts, "spec.updateStrategy.rollingUpdate.partition")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let parallel = str_at(&sts, "spec.podManagementPolicy") == "Parallel";
        let template = at(&sts, "spec.template").cloned().unwrap_or(json!({}));
        let update_rev = revision(&name, &template);
        let history = inner
            .revisions
            .entry((ns.clone(), name.clone()))
            .or_default();
        history.insert(update_rev.clone(), template.clone());
        let current_rev = match str_at(&sts, "status.currentRevision") {
            "" => update_rev.clone(),
            r => r.to_owned(),
        };
        let current_template = history
            .get(&current_rev)
            .cloned()
            .unwrap_or(template.clone());

        // This set's pods by ordinal.
        let mut pods: BTreeMap<i64, Value> = BTreeMap::new();
        for ((r, n, pod_name), pod) in &inner.objects {
            if *r != pod_res.qualified() || *n != ns || !owned_by(pod, &uid) {
                continue;
            }
            if let Some(ord) = pod_name
                .strip_prefix(&format!("{name}-"))
                .and_then(|o| o.parse::<i64>().ok())
            {
                pods.insert(ord, pod.clone());
            }
        }

        // 1. Create missing pods in order; with OrderedReady, wait for each to be ready.
        let mut blocked = false;
        for ord in 0..replicas {
            match pods.get(&ord) {
                None => {
                    let (rev, tpl) = if rolling && ord < partition {
                        (&current_rev, &current_template)
                    } else {
                        (&update_rev, &template)
                    };
                    let (pod_name, pod) = new_pod(&sts, tpl, ord, rev);
                    if let Ok(created) = inner.write(pod_res, &ns, &pod_name, pod, Via::Main, None)
                    {
                        pods.insert(ord, created);
                    }
                    if !parallel {
                        blocked = true;
                        break;
                    }
                }
                Some(pod) if !parallel && !running_and_ready(pod) => {
                    blocked = true;
                    break;
                }
                Some(_) => {}
            }
        }

        // 2. Scale down: surplus pods, highest ordinal first, one at a time.
        if !blocked {
            let surplus: Vec<i64> = pods.keys().copied().filter(|o| *o >= replicas).collect();
            if let Some(&highest) = surplus.iter().max() {
                let any_terminating = surplus.iter().any(|o| terminating(&pods[o]));
                if !any_terminating || parallel {
                    let pod_name = format!("{name}-{highest}");
                    inner.terminate_pod(&ns, &pod_name);
                }
                blocked = !parallel;
            }
        }

        // 3. Rolling update: from the highest ordinal down to the partition, one pod at a time.
        if !blocked && rolling {
            for ord in (partition.max(0)..replicas).rev() {
                let Some(pod) = pods.get(&ord) else {
                    break;
                };
                let pod_rev = str_at(pod, "metadata.labels.controller-revision-hash");
                if pod_rev != update_rev {
                    if !terminating(pod) {
                        let pod_name = format!("{name}-{ord}");
                        inner.terminate_pod(&ns, &pod_name);
                    }
                    break;
                }
                if !running_and_ready(pod) {
                    break;
                }
            }
        }

        // Status, from the pods as they are now.
        let live: Vec<&Value> = pods
            .iter()
            .filter(|(o, p)| **o < replicas && !terminating(p))
            .map(|(_, p)| p)
            .collect();
        let count = |f: &dyn Fn(&Value) -> bool| live.iter().filter(|p| f(p)).count() as i64;
        let ready = count(&running_and_ready);
        let updated =
            count(&|p| str_at(p, "metadata.labels.controller-revision-hash") == update_rev);
        let mut current =
            count(&|p| str_at(p, "metadata.labels.controller-revision-hash") == current_rev);
        let current_revision = if updated == replicas && ready == replicas {
            current = updated;
            update_rev.clone()
        } else {
            current_rev.clone()
        };
        let generation = at(&sts, "metadata.generation").cloned().unwrap_or(json!(1));
        let status = json!({
            "observedGeneration": generation,
            "replicas": live.len(),
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": current_revision,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        set_status(inner, "StatefulSet", &ns, &name, status);
    }
}

fn simple_workloads(state: &State, inner: &mut Inner) {
    let options = &state.options;
    for kind in ["Deployment", "DaemonSet", "Job", "PersistentVolumeClaim"] {
        let res = resource(kind).expect("served kind");
        let objects: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == res.qualified())
            .map(|(_, v)| v.clone())
            .collect();
        for object in objects {
            if terminating(&object) {
                continue;
            }
            let ns = str_at(&object, "metadata.namespace").to_owned();
            let name = str_at(&object, "metadata.name").to_owned();
            let generation = at(&object, "metadata.generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let k = key(res, &ns, &name);
            let entry = inner
                .rollouts
                .entry(k)
                .or_insert((generation, Instant::now()));
            if entry.0 != generation {
                *entry = (generation, Instant::now());
            }
            let since = entry.1.elapsed();
            let status = match kind {
                "Deployment" => {
                    let want = at(&object, "spec.replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    let done = since >= options.ready_after;
                    let (updated, available) = if done {
                        (want, want)
                    } else {
                        let before = at(&object, "status.availableReplicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0);
                        (0, before.min(want))
                    };
                    let progressing = if done {
                        "NewReplicaSetAvailable"
                    } else {
                        "ReplicaSetUpdated"
                    };
                    json!({"observedGeneration": generation, "replicas": want,
                    "updatedReplicas": updated, "readyReplicas": available,
                    "availableReplicas": available,
                    "unavailableReplicas": want - available,
                    "conditions": [
                        {"type": "Available",
                         "status": if available >= want { "True" } else { "False" },
                         "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": progressing},
                    ]})
                }
                "DaemonSet" => {
                    let done = since >= options.ready_after;
                    let n = i64::from(done);
                    json!({"observedGeneration": generation, "desiredNumberScheduled": 1,
                           "currentNumberScheduled": 1, "updatedNumberScheduled": n,
                           "numberReady": n, "numberAvailable": n, "numberMisscheduled": 0})
                }
                "Job" => {
                    let started = str_at(&object, "status.startTime");
                    let started = if started.is_empty() {
                        now_rfc3339()
                    } else {
                        started.to_owned()
                    };
                    if since < options.job_after {
                        json!({"active": 1, "startTime": started, "ready": 0, "terminating": 0})
                    } else if at(&object, "status.completionTime").is_some()
                        || at(&object, "status.failed").is_some()
                    {
                        continue; // finished already
                    } else {
                        let ok = options.job_outcome.as_ref().is_none_or(|f| f(&ns, &name));
                        let now = now_rfc3339();
                        if ok {
                            json!({"startTime": started, "completionTime": now, "succeeded": 1,
                                   "ready": 0, "terminating": 0, "conditions": [
                                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                                 "message": "Reached expected number of succeeded pods"},
                                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                                 "message": "Reached expected number of succeeded pods"}]})
                        } else {
                            json!({"startTime": started, "failed": 1, "ready": 0, "terminating": 0,
                                   "conditions": [
                                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"},
                                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "message": "Job has reached the specified backoff limit"}]})
                        }
                    }
                }
                _ => {
                    json!({"phase": "Bound", "accessModes": at(&object, "spec.accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                            "capacity": {"storage": at(&object, "spec.resources.requests.storage").cloned().unwrap_or(json!("1Gi"))}})
                }
            };
            set_status(inner, kind, &ns, &name, status);
        }
    }
}

fn garbage_collector(inner: &mut Inner) {
    let pod_res = resource("Pod").expect("pods");
    let uids: HashSet<String> = inner
        .objects
        .values()
        .map(|o| str_at(o, "metadata.uid").to_owned())
        .collect();
    // Background: dependents whose owner is gone.
    let orphans: Vec<(String, String)> = inner
        .objects
        .iter()
        .filter(|((r, _, _), _)| *r == pod_res.qualified())
        .filter(|(_, p)| !terminating(p))
        .filter(|(_, p)| {
            at(p, "metadata.ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    !refs.is_empty()
                        && refs.iter().all(|r| {
                            !uids.contains(r.get("uid").and_then(Value::as_str).unwrap_or(""))
                        })
                })
        })
        .map(|((_, ns, name), _)| (ns.clone(), name.clone()))
        .collect();
    for (ns, name) in orphans {
        inner.terminate_pod(&ns, &name);
    }
    // Objects marked for deletion.
    let marked: Vec<(super::store::Key, Value)> = inner
        .objects
        .iter()
        .filter(|((r, _, _), o)| *r != pod_res.qualified() && terminating(o))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for ((qualified, ns, name), object) in marked {
        let Some(res) = super::store::RESOURCES
            .iter()
            .find(|r| r.qualified() == qualified)
        else {
            continue;
        };
        let uid = str_at(&object, "metadata.uid").to_owned();
        let finalizers: Vec<String> = at(&object, "metadata.finalizers")
            .and_then(Value::as_array)
            .map(|f| {
                f.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if res.kind == "Namespace" {
            let contents: Vec<(String, String, String)> = inner
                .objects
                .keys()
                .filter(|(_, n, _)| *n == name)
                .cloned()
                .collect();
            if contents.is_empty() {
                inner.remove(res, "", &name);
            }
            for (q, n, item) in contents {
                if q == pod_res.qualified() {
                    inner.terminate_pod(&n, &item);
                } else if let Some(r) = super::store::RESOURCES.iter().find(|r| r.qualified() == q)
                {
                    inner.remove(r, &n, &item);
                }
            }
            continue;
        }
        if finalizers.iter().any(|f| f == "foregroundDeletion") {
            let dependents: Vec<(String, String, bool)> = inner
                .objects
                .iter()
                .filter(|((r, _, _), p)| *r == pod_res.qualified() && owned_by(p, &uid))
                .map(|((_, n, item), p)| (n.clone(), item.clone(), terminating(p)))
                .collect();
            if dependents.is_empty() {
                inner.edit(res, &ns, &name, |stored| {
                    if let Some(list) = stored
                        .get_mut("metadata")
                        .and_then(|m| m.get_mut("finalizers"))
                        .and_then(Value::as_array_mut)
                    {
                        list.retain(|f| f != "foregroundDeletion");
                    }
                });
            } else {
                for (n, item, already) in dependents {
                    if !already {
                        inner.terminate_pod(&n, &item);
                    }
                }
            }
            continue;
        }
        if finalizers.is_empty() {
            inner.remove(res, &ns, &name);
        }
    }
}
