//! What `wait: { for: … }` waits for: pure functions of an observed object, which may be
//! absent (a GET that answered 404). The caller owns the polling and the timeout, as in
//! kube-runtime's `await_condition`; these functions only look at one snapshot, so they are
//! tested on inline samples without any server.

use std::fmt;

use serde_json::Value;

/// A named condition a `wait` can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// A Pod's `Ready` condition is `True`; a workload's ready replicas reach its replicas.
    Ready,
    /// A workload's controller has rolled every replica onto the current template.
    RolloutComplete,
    /// The object is gone (the GET answers 404).
    Deleted,
    /// A Job's `Complete` condition is `True` (its `Failed` condition ends the wait).
    JobComplete,
}

/// The names accepted in `for:`.
pub(crate) const WANTS: &[&str] = &["ready", "rollout-complete", "deleted", "job-complete"];

impl Want {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "ready" => Some(Self::Ready),
            "rollout-complete" => Some(Self::RolloutComplete),
            "deleted" => Some(Self::Deleted),
            "job-complete" => Some(Self::JobComplete),
            _ => None,
        }
    }

    /// The kinds this condition is defined for, if it is not defined for every kind.
    pub(crate) fn kinds(self) -> Option<&'static [&'static str]> {
        match self {
            Self::Ready | Self::Deleted => None,
            Self::RolloutComplete => Some(&["Deployment", "StatefulSet", "DaemonSet"]),
            Self::JobComplete => Some(&["Job"]),
        }
    }

    /// Looks at one observation of a `kind` object.
    pub(crate) fn check(self, kind: &str, object: Option<&Value>) -> Verdict {
        match self {
            Self::Ready => ready(kind, object),
            Self::RolloutComplete => rollout_complete(kind, object),
            Self::Deleted => deleted(object),
            Self::JobComplete => job_complete(object),
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready => "ready",
            Self::RolloutComplete => "rollout-complete",
            Self::Deleted => "deleted",
            Self::JobComplete => "job-complete",
        })
    }
}

/// What one observation says about a condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The condition holds.
    Met,
    /// Not yet; why, for the timeout message (e.g. "2 of 3 replicas ready").
    Pending(String),
    /// It can no longer hold (a failed Job); why.
    Failed(String),
}

fn pending(reason: impl Into<String>) -> Verdict {
    Verdict::Pending(reason.into())
}

/// `path` (dot-separated) inside `object`.
fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(object, |v, key| v.get(key))
}

/// An integer at `path`, `default` when absent (the API leaves zero counts out).
fn int(object: &Value, path: &str, default: i64) -> i64 {
    at(object, path).and_then(Value::as_i64).unwrap_or(default)
}

/// The `status` of the condition of type `kind` in `status.conditions`, with its
/// reason and message.
fn condition<'a>(object: &'a Value, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    at(object, "status.conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
        .map(|c| {
            let text = |key| c.get(key).and_then(Value::as_str).unwrap_or("");
            (text("status"), text("reason"), text("message"))
        })
}

/// `spec.replicas`, which the API defaults to 1.
fn desired(object: &Value) -> i64 {
    int(object, "spec.replicas", 1)
}

/// Whether the controller has seen the latest spec.
fn observed(object: &Value) -> Result<(), Verdict> {
    let generation = int(object, "metadata.generation", 0);
    let seen = int(object, "status.observedGeneration", 0);
    if seen < generation {
        return Err(pending(format!(
            "the controller has not observed generation {generation} yet (observed {seen})"
        )));
    }
    Ok(())
}

/// Ready: a `Pod`'s `Ready` condition is `True`; a `Deployment`, `StatefulSet` or `ReplicaSet`
/// has `readyReplicas == spec.replicas`; a `DaemonSet` has every scheduled pod ready; a `Job`
/// counts when it completed; a `PersistentVolumeClaim` when `Bound`; a `Namespace` when
/// `Active`; any other object when it has a `Ready` condition that is `True`, or exists if it
/// has none.
pub(crate) fn ready(kind: &str, object: Option<&Value>) -> Verdict {
    let Some(object) = object else {
        return pending("it does not exist");
    };
    match kind {
        "Pod" => match condition(object, "Ready") {
            Some(("True", _, _)) => Verdict::Met,
            Some((_, reason, message)) => {
                let phase = at(object, "status.phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown");
                let mut why = format!("phase {phase}, Ready is not True");
                if !reason.is_empty() {
                    why = format!("{why} ({reason}");
                    if !message.is_empty() {
                        why = format!("{why}: {message}");
                    }
                    why.push(')');
                }
                pending(why)
            }
            None => {
                let phase = at(object, "status.phase")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown");
                pending(format!("phase {phase}, no Ready condition yet"))
            }
        },
        "Deployment" | "StatefulSet" | "ReplicaSet" => {
            let want = desired(object);
            let have = int(object, "status.readyReplicas", 0);
            if have >= want {
                Verdict::Met
            } else {
                pending(format!("{have} of {want} replicas ready"))
            }
        }
        "DaemonSet" => {
            let want = int(object, "status.desiredNumberScheduled", 0);
            let have = int(object, "status.numberReady", 0);
            if at(object, "status.desiredNumberScheduled").is_none() {
                pending("the controller has not reported a status yet")
            } else if have >= want {
                Verdict::Met
            } else {
                pending(format!("{have} of {want} scheduled pods ready"))
            }
        }
        "Job" => job_complete(Some(object)),
        "PersistentVolumeClaim" | "Namespace" => {
            let want = if kind == "Namespace" {
                "Active"
            } else {
                "Bound"
            };
            match at(object, "status.phase").and_then(Value::as_str) {
                Some(phase) if phase == want => Verdict::Met,
                Some(phase) => pending(format!("phase {phase}, not {want}")),
                None => pending(format!("no phase yet, not {want}")),
            }
        }
        _ => match condition(object, "Ready") {
            Some(("True", _, _)) | None => Verdict::Met,
            Some((status, reason, _)) => pending(format!("Ready is {status} {reason}")),
        },
    }
}

/// Rollout complete, as `kubectl rollout status` decides it: the controller observed the
/// latest generation and every replica runs the current template and is available.
/// A `StatefulSet`: all replicas ready and `currentRevision == updateRevision`, or with a
/// `partition`, `updatedReplicas >= replicas - partition` (a partitioned rollout is complete
/// when the pods at or above the partition are updated).
pub(crate) fn rollout_complete(kind: &str, object: Option<&Value>) -> Verdict {
    let Some(object) = object else {
        return pending("it does not exist");
    };
    if let Err(verdict) = observed(object) {
        return verdict;
    }
    match kind {
        "Deployment" => {
            let want = desired(object);
            let updated = int(object, "status.updatedReplicas", 0);
            let total = int(object, "status.replicas", 0);
            let available = int(object, "status.availableReplicas", 0);
            if let Some(("False", "ProgressDeadlineExceeded", message)) =
                condition(object, "Progressing")
            {
                return Verdict::Failed(format!("progress deadline exceeded: {message}"));
            }
            if updated < want {
                pending(format!("{updated} of {want} replicas updated"))
            } else if total > updated {
                pending(format!(
                    "{} old replicas are pending termination",
                    total - updated
                ))
            } else if available < updated {
                pending(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Verdict::Met
            }
        }
        "StatefulSet" => {
            let want = desired(object);
            let ready = int(object, "status.readyReplicas", 0);
            let updated = int(object, "status.updatedReplicas", 0);
            let partition = int(object, "spec.updateStrategy.rollingUpdate.partition", 0);
            if ready < want {
                return pending(format!("{ready} of {want} replicas ready"));
            }
            if partition > 0 {
                let needed = (want - partition).max(0);
                return if updated >= needed {
                    Verdict::Met
                } else {
                    pending(format!(
                        "{updated} of {needed} replicas at or above partition {partition} updated"
                    ))
                };
            }
            let current = at(object, "status.currentRevision").and_then(Value::as_str);
            let update = at(object, "status.updateRevision").and_then(Value::as_str);
            if current.is_some() && current == update {
                Verdict::Met
            } else {
                pending(format!(
                    "{updated} of {want} replicas updated (revision {} → {})",
                    current.unwrap_or("?"),
                    update.unwrap_or("?")
                ))
            }
        }
        "DaemonSet" => {
            let want = int(object, "status.desiredNumberScheduled", 0);
            let updated = int(object, "status.updatedNumberScheduled", 0);
            let available = int(object, "status.numberAvailable", 0);
            if updated < want {
                pending(format!("{updated} of {want} scheduled pods updated"))
            } else if available < want {
                pending(format!("{available} of {want} scheduled pods available"))
            } else {
                Verdict::Met
            }
        }
        other => Verdict::Failed(format!(
            "rollout-complete is defined for Deployment, StatefulSet and DaemonSet, not {other}"
        )),
    }
}

/// Deleted: the object is absent. An object with a `deletionTimestamp` is still there.
pub(crate) fn deleted(object: Option<&Value>) -> Verdict {
    match object {
        None => Verdict::Met,
        Some(object) => match at(object, "metadata.deletionTimestamp") {
            Some(_) => {
                let finalizers = at(object, "metadata.finalizers")
                    .and_then(Value::as_array)
                    .map(|f| {
                        f.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                if finalizers.is_empty() {
                    pending("it is being deleted")
                } else {
                    pending(format!("it is being deleted (finalizers: {finalizers})"))
                }
            }
            None => pending("it still exists"),
        },
    }
}

/// Job complete: the `Complete` condition is `True`. A `Failed` condition that is `True`
/// fails the wait with the Job's reason and message.
pub(crate) fn job_complete(object: Option<&Value>) -> Verdict {
    let Some(object) = object else {
        return pending("it does not exist");
    };
    if let Some(("True", reason, message)) = condition(object, "Failed") {
        let reason = if reason.is_empty() { "Failed" } else { reason };
        return if message.is_empty() {
            Verdict::Failed(format!("the job failed: {reason}"))
        } else {
            Verdict::Failed(format!("the job failed: {reason}: {message}"))
        };
    }
    if let Some(("True", _, _)) = condition(object, "Complete") {
        return Verdict::Met;
    }
    let succeeded = int(object, "status.succeeded", 0);
    let active = int(object, "status.active", 0);
    let completions = int(object, "spec.completions", 1);
    pending(format!(
        "{succeeded} of {completions} completions, {active} active"
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ready: &str) -> Value {
        json!({
            "kind": "Pod",
            "metadata": {"name": "openbao-0"},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": ready, "reason": "ContainersNotReady",
                     "message": "containers with unready status: [openbao]"},
                ],
            },
        })
    }

    fn sts(status: &Value, partition: Option<i64>) -> Value {
        let mut object = json!({
            "kind": "StatefulSet",
            "metadata": {"name": "openbao", "generation": 4},
            "spec": {"replicas": 3, "updateStrategy": {"type": "RollingUpdate"}},
            "status": status,
        });
        if let Some(p) = partition {
            object["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": p});
        }
        object
    }

    #[test]
    fn a_pod_is_ready_when_its_ready_condition_is_true() {
        assert_eq!(ready("Pod", Some(&pod("True"))), Verdict::Met);
        assert_eq!(
            ready("Pod", Some(&pod("False"))),
            pending(
                "phase Running, Ready is not True (ContainersNotReady: containers with unready \
                 status: [openbao])"
            )
        );
        let pending_pod = json!({"status": {"phase": "Pending"}});
        assert_eq!(
            ready("Pod", Some(&pending_pod)),
            pending("phase Pending, no Ready condition yet")
        );
        assert_eq!(ready("Pod", None), pending("it does not exist"));
    }

    #[test]
    fn a_workload_is_ready_when_ready_replicas_reach_spec_replicas() {
        let s = sts(&json!({"readyReplicas": 2, "replicas": 3}), None);
        assert_eq!(
            ready("StatefulSet", Some(&s)),
            pending("2 of 3 replicas ready")
        );
        let s = sts(&json!({"readyReplicas": 3, "replicas": 3}), None);
        assert_eq!(ready("StatefulSet", Some(&s)), Verdict::Met);
        // Zero counts are left out by the API; replicas defaults to 1.
        let d = json!({"spec": {}, "status": {}});
        assert_eq!(
            ready("Deployment", Some(&d)),
            pending("0 of 1 replicas ready")
        );
        let scaled_to_zero = json!({"spec": {"replicas": 0}, "status": {}});
        assert_eq!(ready("Deployment", Some(&scaled_to_zero)), Verdict::Met);
        let ds = json!({"status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        assert_eq!(
            ready("DaemonSet", Some(&ds)),
            pending("1 of 2 scheduled pods ready")
        );
        let ds = json!({"status": {"desiredNumberScheduled": 2, "numberReady": 2}});
        assert_eq!(ready("DaemonSet", Some(&ds)), Verdict::Met);
    }

    #[test]
    fn other_kinds_are_ready_by_phase_or_ready_condition() {
        let pvc = json!({"status": {"phase": "Pending"}});
        assert_eq!(
            ready("PersistentVolumeClaim", Some(&pvc)),
            pending("phase Pending, not Bound")
        );
        let pvc = json!({"status": {"phase": "Bound"}});
        assert_eq!(ready("PersistentVolumeClaim", Some(&pvc)), Verdict::Met);
        assert_eq!(
            ready("Namespace", Some(&json!({"status": {"phase": "Active"}}))),
            Verdict::Met
        );
        assert_eq!(ready("ConfigMap", Some(&json!({"data": {}}))), Verdict::Met);
        let widget = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Reconciling"}
        ]}});
        assert_eq!(
            ready("Widget", Some(&widget)),
            pending("Ready is False Reconciling")
        );
    }

    #[test]
    fn a_statefulset_rollout_completes_when_the_revisions_meet() {
        // The controller has not seen the latest spec yet.
        let s = json!({
            "metadata": {"generation": 5},
            "spec": {"replicas": 3},
            "status": {"observedGeneration": 4, "readyReplicas": 3,
                       "currentRevision": "a", "updateRevision": "a"},
        });
        assert_eq!(
            rollout_complete("StatefulSet", Some(&s)),
            pending("the controller has not observed generation 5 yet (observed 4)")
        );
        // Mid-rollout: two pods on the new revision, one being replaced.
        let s = sts(
            &json!({"observedGeneration": 4, "replicas": 3, "readyReplicas": 2,
                    "updatedReplicas": 2, "currentRevision": "openbao-a",
                    "updateRevision": "openbao-b"}),
            None,
        );
        assert_eq!(
            rollout_complete("StatefulSet", Some(&s)),
            pending("2 of 3 replicas ready")
        );
        let s = sts(
            &json!({"observedGeneration": 4, "replicas": 3, "readyReplicas": 3,
                    "updatedReplicas": 2, "currentRevision": "openbao-a",
                    "updateRevision": "openbao-b"}),
            None,
        );
        assert_eq!(
            rollout_complete("StatefulSet", Some(&s)),
            pending("2 of 3 replicas updated (revision openbao-a → openbao-b)")
        );
        let s = sts(
            &json!({"observedGeneration": 4, "replicas": 3, "readyReplicas": 3,
                    "updatedReplicas": 3, "currentRevision": "openbao-b",
                    "updateRevision": "openbao-b"}),
            None,
        );
        assert_eq!(rollout_complete("StatefulSet", Some(&s)), Verdict::Met);
    }

    #[test]
    fn a_partitioned_statefulset_rollout_completes_above_the_partition() {
        let status = |updated| {
            json!({"observedGeneration": 4, "replicas": 3, "readyReplicas": 3,
                   "updatedReplicas": updated, "currentRevision": "openbao-a",
                   "updateRevision": "openbao-b"})
        };
        let s = sts(&status(0), Some(2));
        assert_eq!(
            rollout_complete("StatefulSet", Some(&s)),
            pending("0 of 1 replicas at or above partition 2 updated")
        );
        let s = sts(&status(1), Some(2));
        assert_eq!(rollout_complete("StatefulSet", Some(&s)), Verdict::Met);
        // A partition at or above replicas updates nothing, and is complete at once.
        let s = sts(&status(0), Some(3));
        assert_eq!(rollout_complete("StatefulSet", Some(&s)), Verdict::Met);
    }

    #[test]
    fn a_deployment_rollout_waits_for_old_replicas_and_availability() {
        let d = |status: Value| json!({"metadata": {"generation": 2}, "spec": {"replicas": 3}, "status": status});
        let mid = d(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2,
                           "availableReplicas": 3}),
        );
        assert_eq!(
            rollout_complete("Deployment", Some(&mid)),
            pending("2 of 3 replicas updated")
        );
        let old_left = d(
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3,
                                "availableReplicas": 3}),
        );
        assert_eq!(
            rollout_complete("Deployment", Some(&old_left)),
            pending("1 old replicas are pending termination")
        );
        let unavailable = d(json!({"observedGeneration": 2, "replicas": 3,
                                   "updatedReplicas": 3, "availableReplicas": 2}));
        assert_eq!(
            rollout_complete("Deployment", Some(&unavailable)),
            pending("2 of 3 updated replicas available")
        );
        let done = d(
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                            "availableReplicas": 3}),
        );
        assert_eq!(rollout_complete("Deployment", Some(&done)), Verdict::Met);
        let stuck = d(json!({"observedGeneration": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-5d\" has timed out progressing."}
        ]}));
        assert_eq!(
            rollout_complete("Deployment", Some(&stuck)),
            Verdict::Failed(
                "progress deadline exceeded: ReplicaSet \"web-5d\" has timed out progressing."
                    .into()
            )
        );
    }

    #[test]
    fn a_daemonset_rollout_counts_scheduled_pods() {
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 2, "updatedNumberScheduled": 1, "numberAvailable": 2}});
        assert_eq!(
            rollout_complete("DaemonSet", Some(&ds)),
            pending("1 of 2 scheduled pods updated")
        );
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
            "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}});
        assert_eq!(rollout_complete("DaemonSet", Some(&ds)), Verdict::Met);
        assert_eq!(
            rollout_complete("ConfigMap", Some(&json!({}))),
            Verdict::Failed(
                "rollout-complete is defined for Deployment, StatefulSet and DaemonSet, not \
                 ConfigMap"
                    .into()
            )
        );
    }

    #[test]
    fn deleted_means_absent_not_terminating() {
        assert_eq!(deleted(None), Verdict::Met);
        assert_eq!(
            deleted(Some(&json!({"metadata": {"name": "x"}}))),
            pending("it still exists")
        );
        let terminating = json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z",
                                              "finalizers": ["foregroundDeletion"]}});
        assert_eq!(
            deleted(Some(&terminating)),
            pending("it is being deleted (finalizers: foregroundDeletion)")
        );
    }

    #[test]
    fn a_job_completes_or_fails_with_its_reason() {
        let running = json!({"spec": {"completions": 1}, "status": {"active": 1}});
        assert_eq!(
            job_complete(Some(&running)),
            pending("0 of 1 completions, 1 active")
        );
        let done = json!({"status": {"succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True"},
            {"type": "Complete", "status": "True"},
        ]}});
        assert_eq!(job_complete(Some(&done)), Verdict::Met);
        let failed = json!({"status": {"failed": 7, "conditions": [
            {"type": "FailureTarget", "status": "True"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"},
        ]}});
        assert_eq!(
            job_complete(Some(&failed)),
            Verdict::Failed(
                "the job failed: BackoffLimitExceeded: Job has reached the specified backoff \
                 limit"
                    .into()
            )
        );
        assert_eq!(ready("Job", Some(&done)), Verdict::Met);
        assert_eq!(job_complete(None), pending("it does not exist"));
    }

    #[test]
    fn wants_parse_and_name_their_kinds() {
        for name in WANTS {
            assert_eq!(Want::parse(name).unwrap().to_string(), *name);
        }
        assert_eq!(Want::parse("available"), None);
        assert_eq!(Want::Ready.kinds(), None);
        assert_eq!(Want::JobComplete.kinds(), Some(&["Job"][..]));
        assert_eq!(
            Want::Deleted.check("Pod", None),
            Verdict::Met,
            "check dispatches"
        );
    }
}
