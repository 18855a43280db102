//! API errors as operators read them: the object, what was being done, the HTTP status and
//! the server's reason, e.g. `StatefulSet vault-system/openbao not found (404)`. A failure
//! carries `{status, reason, message}` as its output, so a `wait` or `check` probe can still
//! look at a 404.

use ::kube::core::ErrorResponse;
use serde_json::{Value, json};

use super::client::Conn;
use crate::StepError;
use crate::util::cause;

/// What an operation was acting on, for messages: `StatefulSet vault-system/openbao`.
pub(crate) fn what(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

fn status_output(response: &ErrorResponse) -> Value {
    json!({
        "status": response.code,
        "reason": response.reason,
        "message": response.message,
    })
}

/// A conflict's message without the `Operation cannot be fulfilled on KIND "NAME": ` preamble
/// and the "; please apply your changes…" advice. Other conflicts (a server-side apply's
/// `Apply failed with 1 conflict: conflict with "kubectl": .data.state`) are kept whole.
fn short(message: &str) -> &str {
    let Some(rest) = message.strip_prefix("Operation cannot be fulfilled on ") else {
        return message.trim();
    };
    let rest = rest.split_once("\": ").map_or(rest, |(_, rest)| rest);
    rest.split(';').next().unwrap_or(rest).trim()
}

/// A failed API call. `verb` is the gerund ("patching"); `object` what it was on.
pub(crate) fn api_error(conn: &Conn, verb: &str, object: &str, error: ::kube::Error) -> StepError {
    match error {
        ::kube::Error::Api(response) => {
            let message = response_message(conn, verb, object, &response);
            StepError::Failed {
                message,
                output: Some(status_output(&response)),
            }
        }
        ::kube::Error::UpgradeConnection(
            ::kube::client::UpgradeConnectionError::ProtocolSwitch(status),
        ) => refused_upgrade(
            conn,
            verb,
            object,
            (status.as_u16(), status.canonical_reason().unwrap_or("")),
            format!("the server answered {status} instead of upgrading"),
        ),
        other => transport_error(conn, verb, object, &other),
    }
}

/// An exec (or other upgrade) the server refused with `(code, reason phrase)`: the HTTP client
/// keeps the status of a refused upgrade but not the server's `Status` body, so `why` is said
/// instead.
pub(crate) fn refused_upgrade(
    conn: &Conn,
    verb: &str,
    object: &str,
    (code, phrase): (u16, &str),
    why: String,
) -> StepError {
    let response = ErrorResponse {
        status: "Failure".into(),
        message: why,
        reason: phrase.replace(' ', ""),
        code,
    };
    StepError::Failed {
        message: response_message(conn, verb, object, &response),
        output: Some(status_output(&response)),
    }
}

/// Why the API server refuses an exec into `pod` (a Pod as JSON) for `container`, as it says
/// itself in the body of its 400 answer: the container is not the pod's, none was named in a
/// pod of several, or the pod is not on a node yet. `None` when the pod looks fine.
pub(crate) fn exec_refusal(pod: &Value, container: Option<&str>) -> Option<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let names = |key: &str| -> Vec<&str> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default()
    };
    let containers = names("containers");
    match container {
        Some(wanted) => {
            let known = ["containers", "initContainers", "ephemeralContainers"]
                .iter()
                .any(|key| names(key).contains(&wanted));
            if !known {
                return Some(format!(
                    "container {wanted} is not valid for pod {name} (its containers: {})",
                    containers.join(", ")
                ));
            }
        }
        None if containers.len() > 1 => {
            return Some(format!(
                "a container name must be specified for pod {name}, choose one of: {}",
                containers.join(", ")
            ));
        }
        None => {}
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Unknown");
        return Some(format!(
            "pod {name} does not have a host assigned (phase {phase})"
        ));
    }
    None
}

/// A failure to talk to the server at all (connection refused, TLS, a body that is not JSON).
pub(crate) fn transport_error(
    conn: &Conn,
    verb: &str,
    object: &str,
    error: &::kube::Error,
) -> StepError {
    let message = match error {
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => format!(
            "failed to reach the Kubernetes API at {} while {verb} {object}: {}",
            conn.server,
            cause(error)
        ),
        other => format!("failed {verb} {object}: {}", cause(other)),
    };
    StepError::Failed {
        message,
        output: None,
    }
}

fn response_message(conn: &Conn, verb: &str, object: &str, r: &ErrorResponse) -> String {
    let reason = if r.reason.is_empty() {
        String::new()
    } else {
        format!(" {}", r.reason)
    };
    match (r.code, r.reason.as_str()) {
        (401, _) => format!(
            "unauthorized: the Kubernetes API at {} rejected the credentials from {} while \
             {verb} {object} (401 Unauthorized)",
            conn.server, conn.origin
        ),
        (403, _) => format!("forbidden {verb} {object}: {} (403)", r.message),
        (404, _) if verb == "listing" => {
            format!("failed {verb} {object}: {} (404 NotFound)", r.message)
        }
        // Creating in a namespace that does not exist: the namespace is what is missing.
        (404, _) if r.message.starts_with("namespaces \"") && !object.starts_with("Namespace ") => {
            format!("failed {verb} {object}: {} (404)", r.message)
        }
        (404, _) => format!("{object} not found (404)"),
        (409, "AlreadyExists") => format!("{object} already exists (409)"),
        (409, _) => format!("conflict {verb} {object}: {} (409)", short(&r.message)),
        (422, _) => format!("invalid {verb} {object}: {} (422 Invalid)", r.message),
        (code, _) => {
            let mut text = format!("failed {verb} {object}: ");
            if r.message.is_empty() {
                text.push_str("the server gave no message");
            } else {
                text.push_str(&r.message);
            }
            format!("{text} ({code}{reason})")
        }
    }
}

/// A failed discovery of `what` (a kind, maybe with its group/version).
pub(crate) fn discovery_error(conn: &Conn, what: &str, error: ::kube::Error) -> StepError {
    match error {
        ::kube::Error::Discovery(e) => StepError::Failed {
            message: format!(
                "cannot find {what} on the API server at {}: {e}",
                conn.server
            ),
            output: None,
        },
        ::kube::Error::Api(r) if r.code == 404 => StepError::Failed {
            message: format!(
                "the API server at {} does not serve {what} (404)",
                conn.server
            ),
            output: Some(status_output(&r)),
        },
        other => api_error(conn, "discovering", what, other),
    }
}

/// Whether an error is worth another poll in a wait: the server was unreachable, overloaded or
/// failing (5xx, 429), not a wrong spec or missing rights.
pub(crate) fn transient(error: &::kube::Error) -> bool {
    match error {
        ::kube::Error::Api(r) => r.code >= 500 || r.code == 429,
        ::kube::Error::HyperError(_) | ::kube::Error::Service(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_quoted_short() {
        assert_eq!(
            short(
                "Operation cannot be fulfilled on statefulsets.apps \"openbao\": the object has \
                 been modified; please apply your changes to the latest version and try again"
            ),
            "the object has been modified"
        );
        assert_eq!(short("plain"), "plain");
        // Regression: the server-side apply conflict of a real API server was cut to
        // `.data.state`, the text after its last `": `.
        assert_eq!(
            short("Apply failed with 1 conflict: conflict with \"operator\": .data.state"),
            "Apply failed with 1 conflict: conflict with \"operator\": .data.state"
        );
        assert_eq!(
            short(
                "Operation cannot be fulfilled on namespaces \"ops\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            "the object has been modified"
        );
        assert_eq!(what("Pod", Some("ns"), "p"), "Pod ns/p");
        assert_eq!(what("Namespace", None, "ops"), "Namespace ops");
    }

    #[test]
    fn a_refused_exec_is_explained_from_the_pod() {
        let pod = |containers: &[&str], node: Option<&str>, phase: &str| {
            let containers: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
            let mut spec = json!({"containers": containers,
                                  "initContainers": [{"name": "init"}]});
            if let Some(node) = node {
                spec["nodeName"] = json!(node);
            }
            json!({"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}})
        };
        let running = pod(&["main", "sidecar"], Some("kwok-node-1"), "Running");
        assert_eq!(
            exec_refusal(&running, Some("nope")).as_deref(),
            Some("container nope is not valid for pod p (its containers: main, sidecar)")
        );
        assert_eq!(
            exec_refusal(&running, None).as_deref(),
            Some("a container name must be specified for pod p, choose one of: main, sidecar")
        );
        assert_eq!(exec_refusal(&running, Some("sidecar")), None);
        assert_eq!(exec_refusal(&running, Some("init")), None);
        let pending = pod(&["main"], None, "Pending");
        assert_eq!(
            exec_refusal(&pending, None).as_deref(),
            Some("pod p does not have a host assigned (phase Pending)")
        );
        assert_eq!(
            exec_refusal(&pod(&["main"], Some("n"), "Running"), None),
            None
        );
    }
}
