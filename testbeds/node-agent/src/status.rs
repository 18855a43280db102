//! A pod's status as a kubelet would report it, built from what the agent observed of the
//! pod's process: a pure function of the pod, the observation and the time.
//!
//! - Containers: the backed container is `waiting` (not started yet, cannot be started, or
//!   backing off before a restart), `running` (with `startedAt`) or `terminated` (exit code,
//!   signal, reason, times); `lastState` holds the previous termination, `restartCount` the
//!   restarts; `ready` is the readiness verdict while running (never while the pod is being
//!   deleted). The pod's other containers are never started by the agent and say so.
//! - Phase: `Pending` until the process first starts; `Running` while it runs or waits to be
//!   restarted; `Succeeded`/`Failed` when it ended for good (by its exit code).
//! - Conditions `PodScheduled`, `Initialized`, `ContainersReady`, `Ready` (which also needs the
//!   pod's readiness gates); a condition keeps its `lastTransitionTime` while its status stays,
//!   and conditions of other types (set by other components) are kept as they are.
//!
//! Times are whole seconds, as the API server stores them, so that a status read back equals
//! the one written and an unchanged status is never written again.

use chrono::{DateTime, SubsecRound, Utc};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The current time in whole seconds.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0)
}

/// How a process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    /// The exit code; 128 + N for signal N, as container runtimes report it.
    pub exit_code: i32,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// `Completed` (exit 0) or `Error`.
    pub reason: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

impl Terminated {
    /// From a wait status: ended by `signal`, or exited with `code`.
    pub fn from_exit(
        signal: Option<i32>,
        code: Option<i32>,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> Self {
        let exit_code = match signal {
            Some(s) => 128 + s,
            None => code.unwrap_or(-1),
        };
        Self {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
            started_at: started_at.trunc_subsecs(0),
            finished_at: finished_at.trunc_subsecs(0),
        }
    }
}

/// The state of the backed container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running: a kubelet reason (`ContainerCreating`, `CreateContainerConfigError`,
    /// `RunContainerError`, `CrashLoopBackOff`) and a message.
    Waiting {
        reason: String,
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running { started_at: DateTime<Utc> },
    /// Ended and will not be started again.
    Terminated(Terminated),
}

/// What the agent observed of a pod's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The container the process stands for.
    pub container: String,
    /// Its state.
    pub state: State,
    /// The previous termination.
    pub last: Option<Terminated>,
    /// How many times it was restarted.
    pub restart_count: i32,
    /// The startup probe succeeded (or there is none; only counts while running).
    pub started: bool,
    /// The readiness verdict (only counts while running).
    pub ready: bool,
    /// Whether a process has ever been started for this pod.
    pub ever_started: bool,
    /// Identifies the process (`runbook-node-agent://PID`) once one was started.
    pub container_id: Option<String>,
    /// Identifies what "image" ran: the backend and a digest of the rendered command.
    pub image_id: String,
    /// When the agent took the pod on.
    pub start_time: DateTime<Utc>,
    /// The node's address (the pod's too: processes listen on the node's loopback).
    pub node_ip: String,
    /// Whether the pod is being deleted.
    pub terminating: bool,
}

fn time(t: DateTime<Utc>) -> Time {
    Time(t)
}

fn terminated(t: &Terminated, container_id: Option<&String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        started_at: Some(time(t.started_at)),
        finished_at: Some(time(t.finished_at)),
        container_id: container_id.cloned(),
        message: None,
    }
}

/// The pod's phase.
pub fn phase(o: &Observed) -> &'static str {
    match &o.state {
        State::Running { .. } => "Running",
        State::Terminated(t) if t.exit_code == 0 => "Succeeded",
        State::Terminated(_) => "Failed",
        State::Waiting { .. } if o.ever_started => "Running",
        State::Waiting { .. } => "Pending",
    }
}

fn backed_status(image: String, o: &Observed) -> ContainerStatus {
    let running = matches!(o.state, State::Running { .. });
    let state = match &o.state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t, o.container_id.as_ref())),
            ..ContainerState::default()
        },
    };
    ContainerStatus {
        name: o.container.clone(),
        image,
        image_id: o.image_id.clone(),
        container_id: o.container_id.clone(),
        ready: running && o.ready && !o.terminating,
        started: Some(running && o.started),
        restart_count: o.restart_count,
        state: Some(state),
        last_state: Some(o.last.as_ref().map_or_else(ContainerState::default, |t| {
            ContainerState {
                terminated: Some(terminated(t, None)),
                ..ContainerState::default()
            }
        })),
        ..ContainerStatus::default()
    }
}

fn unbacked_status(name: String, image: String, backed: &str) -> ContainerStatus {
    ContainerStatus {
        name,
        image,
        image_id: String::new(),
        ready: false,
        started: Some(false),
        restart_count: 0,
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("NotRunByNodeAgent".into()),
                message: Some(format!(
                    "the node agent runs one process per pod, for container `{backed}`"
                )),
            }),
            ..ContainerState::default()
        }),
        last_state: Some(ContainerState::default()),
        ..ContainerStatus::default()
    }
}

/// `want` as a condition, keeping `prev`'s transition time when its status is the same.
fn condition(
    prev: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: DateTime<Utc>,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let before = prev.iter().find(|c| c.type_ == type_);
    let since = match before {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(time(now)),
    };
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        last_transition_time: since,
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        ..PodCondition::default()
    }
}

/// The pod's status from what the agent observed, at `now`.
pub fn pod_status(pod: &Pod, o: &Observed, now: DateTime<Utc>) -> PodStatus {
    let now = now.trunc_subsecs(0);
    let prev = pod.status.as_ref();
    let prev_conditions: &[PodCondition] =
        prev.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let spec = pod.spec.as_ref();
    let containers: Vec<ContainerStatus> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            if c.name == o.container {
                backed_status(image, o)
            } else {
                unbacked_status(c.name.clone(), image, &o.container)
            }
        })
        .collect();
    let unready: Vec<&str> = containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_ready = unready.is_empty();
    let unready_message = Some(format!(
        "containers with unready status: [{}]",
        unready.join(" ")
    ));
    // Readiness gates: conditions other components set; the pod is Ready only with all True.
    let gates_open: Vec<&str> = spec
        .and_then(|s| s.readiness_gates.as_deref())
        .unwrap_or_default()
        .iter()
        .map(|g| g.condition_type.as_str())
        .filter(|t| {
            !prev_conditions
                .iter()
                .any(|c| c.type_ == *t && c.status == "True")
        })
        .collect();
    let (ready, ready_reason, ready_message) = if !containers_ready {
        (false, "ContainersNotReady", unready_message.clone())
    } else if !gates_open.is_empty() {
        (
            false,
            "ReadinessGatesNotReady",
            Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist or is not True",
                gates_open.join(", ")
            )),
        )
    } else {
        (true, "", None)
    };
    let ours = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];
    let mut conditions = vec![
        condition(prev_conditions, "PodScheduled", true, None, None, now),
        condition(prev_conditions, "Initialized", true, None, None, now),
        condition(
            prev_conditions,
            "ContainersReady",
            containers_ready,
            Some("ContainersNotReady".into()),
            unready_message,
            now,
        ),
        condition(
            prev_conditions,
            "Ready",
            ready,
            Some(ready_reason.into()),
            ready_message,
            now,
        ),
    ];
    conditions.extend(
        prev_conditions
            .iter()
            .filter(|c| !ours.contains(&c.type_.as_str()))
            .cloned(),
    );
    let pod_ip = o.ever_started.then(|| o.node_ip.clone());
    PodStatus {
        phase: Some(phase(o).to_owned()),
        conditions: Some(conditions),
        container_statuses: Some(containers),
        host_ip: Some(o.node_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: o.node_ip.clone(),
        }]),
        pod_ip: pod_ip.clone(),
        pod_ips: pod_ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(time(o.start_time)),
        qos_class: prev.and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The fields of a status this module decides, as JSON: what is compared with the pod's
/// current status and written as a merge patch (lists are replaced whole by a merge patch,
/// which is why the conditions of other components are carried along).
pub fn owned_fields(status: &PodStatus) -> serde_json::Value {
    serde_json::json!({
        "phase": status.phase,
        "conditions": status.conditions,
        "containerStatuses": status.container_statuses,
        "hostIP": status.host_ip,
        "hostIPs": status.host_ips,
        "podIP": status.pod_ip,
        "podIPs": status.pod_ips,
        "startTime": status.start_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("time")
    }

    fn pod(extra: &serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": "openbao-2", "namespace": "vault-system"},
            "spec": {"containers": [{"name": "openbao", "image": "openbao:2.7.2"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort", "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2027-01-15T08:00:00Z"},
            ]},
        });
        if let (Some(base), Some(more)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in more {
                base.insert(k.clone(), val.clone());
            }
        }
        serde_json::from_value(v).expect("pod")
    }

    fn observed(state: State) -> Observed {
        Observed {
            container: "openbao".into(),
            state,
            last: None,
            restart_count: 0,
            started: true,
            ready: false,
            ever_started: true,
            container_id: Some("runbook-node-agent://4242".into()),
            image_id: "runbook-node-agent://openbao@sha256:ab".into(),
            start_time: at(0),
            node_ip: "127.0.0.1".into(),
            terminating: false,
        }
    }

    fn json_of(s: &PodStatus) -> serde_json::Value {
        serde_json::to_value(s).expect("json")
    }

    fn condition_of<'a>(s: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
        s["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|c| c["type"] == type_)
            .expect("condition")
    }

    #[test]
    fn a_running_process_that_answers_its_probe_is_a_ready_running_pod() {
        let mut o = observed(State::Running { started_at: at(3) });
        o.ready = true;
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["phase"], "Running");
        assert_eq!(
            (s["podIP"].as_str(), s["hostIP"].as_str()),
            (Some("127.0.0.1"), Some("127.0.0.1"))
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["ready"], true);
        assert_eq!(c["started"], true);
        assert_eq!(c["image"], "openbao:2.7.2");
        assert_eq!(c["imageID"], "runbook-node-agent://openbao@sha256:ab");
        assert_eq!(c["containerID"], "runbook-node-agent://4242");
        assert_eq!(c["state"]["running"]["startedAt"], "2027-01-15T08:00:03Z");
        for t in ["Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition_of(&s, t)["status"], "True", "{t}");
            assert_eq!(
                condition_of(&s, t)["lastTransitionTime"],
                "2027-01-15T08:00:05Z"
            );
        }
        // The scheduler's condition keeps its time.
        assert_eq!(
            condition_of(&s, "PodScheduled")["lastTransitionTime"],
            "2027-01-15T08:00:00Z"
        );
        assert_eq!(s["qosClass"], "BestEffort");
    }

    #[test]
    fn a_process_whose_startup_probe_has_not_succeeded_is_running_but_neither_started_nor_ready() {
        let mut o = observed(State::Running { started_at: at(3) });
        o.started = false;
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!((&c["started"], &c["ready"]), (&json!(false), &json!(false)));
        assert_eq!(condition_of(&s, "Ready")["status"], "False");
    }

    #[test]
    fn a_running_process_that_fails_its_probe_is_running_but_not_ready() {
        let o = observed(State::Running { started_at: at(3) });
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        let ready = condition_of(&s, "Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ContainersNotReady");
        assert_eq!(
            ready["message"],
            "containers with unready status: [openbao]"
        );
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut o = observed(State::Running { started_at: at(3) });
        o.ready = true;
        let mut p = pod(&json!({}));
        p.status = Some(pod_status(&p, &o, at(5)));
        let again = json_of(&pod_status(&p, &o, at(60)));
        assert_eq!(
            condition_of(&again, "Ready")["lastTransitionTime"],
            "2027-01-15T08:00:05Z"
        );
        o.ready = false;
        let flipped = json_of(&pod_status(&p, &o, at(61)));
        assert_eq!(
            condition_of(&flipped, "Ready")["lastTransitionTime"],
            "2027-01-15T08:01:01Z"
        );
        assert_eq!(
            condition_of(&flipped, "Initialized")["lastTransitionTime"],
            "2027-01-15T08:00:05Z"
        );
    }

    #[test]
    fn a_terminating_pod_is_not_ready_even_while_its_process_answers() {
        let mut o = observed(State::Running { started_at: at(3) });
        o.ready = true;
        o.terminating = true;
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        assert_eq!(condition_of(&s, "Ready")["status"], "False");
    }

    #[test]
    fn a_process_that_ended_is_terminated_with_its_exit_code_and_the_phase_follows() {
        let t = Terminated::from_exit(None, Some(0), at(3), at(9));
        let s = json_of(&pod_status(
            &pod(&json!({})),
            &observed(State::Terminated(t)),
            at(10),
        ));
        assert_eq!(s["phase"], "Succeeded");
        let term = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (term["exitCode"].as_i64(), term["reason"].as_str()),
            (Some(0), Some("Completed"))
        );
        assert_eq!(term["finishedAt"], "2027-01-15T08:00:09Z");

        let t = Terminated::from_exit(Some(9), None, at(3), at(9));
        let s = json_of(&pod_status(
            &pod(&json!({})),
            &observed(State::Terminated(t)),
            at(10),
        ));
        assert_eq!(s["phase"], "Failed");
        let term = &s["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (term["exitCode"].as_i64(), term["signal"].as_i64()),
            (Some(137), Some(9))
        );
    }

    #[test]
    fn a_restart_backing_off_is_waiting_with_the_last_termination() {
        let mut o = observed(State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some("back-off 2s".into()),
        });
        o.last = Some(Terminated::from_exit(None, Some(1), at(3), at(4)));
        o.restart_count = 1;
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["phase"], "Running");
        let c = &s["containerStatuses"][0];
        assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
        assert_eq!(c["restartCount"], 1);
    }

    #[test]
    fn before_the_first_start_the_pod_is_pending_without_a_pod_ip() {
        let mut o = observed(State::Waiting {
            reason: "CreateContainerConfigError".into(),
            message: Some("no member for ordinal 3".into()),
        });
        o.ever_started = false;
        o.container_id = None;
        let s = json_of(&pod_status(&pod(&json!({})), &o, at(5)));
        assert_eq!(s["phase"], "Pending");
        assert!(s.get("podIP").is_none());
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["message"],
            "no member for ordinal 3"
        );
    }

    #[test]
    fn other_containers_and_readiness_gates_keep_the_pod_unready() {
        let mut o = observed(State::Running { started_at: at(3) });
        o.ready = true;
        let p = pod(&json!({"spec": {
            "containers": [{"name": "openbao", "image": "openbao:2.7.2"}, {"name": "sidecar", "image": "s"}],
        }}));
        let s = json_of(&pod_status(&p, &o, at(5)));
        assert_eq!(
            s["containerStatuses"][1]["state"]["waiting"]["reason"],
            "NotRunByNodeAgent"
        );
        assert_eq!(
            condition_of(&s, "Ready")["message"],
            "containers with unready status: [sidecar]"
        );

        let gated = |status: &str| {
            pod(&json!({
                "spec": {"containers": [{"name": "openbao", "image": "x"}], "readinessGates": [{"conditionType": "example.com/lb"}]},
                "status": {"conditions": [{"type": "example.com/lb", "status": status}]},
            }))
        };
        let s = json_of(&pod_status(&gated("False"), &o, at(5)));
        assert_eq!(
            condition_of(&s, "Ready")["reason"],
            "ReadinessGatesNotReady"
        );
        // The gate's own condition is carried along, untouched.
        assert_eq!(condition_of(&s, "example.com/lb")["status"], "False");
        let s = json_of(&pod_status(&gated("True"), &o, at(5)));
        assert_eq!(condition_of(&s, "Ready")["status"], "True");
    }
}
